//! Restore through a seeded fault-injecting proxy in front of the real kube-apiserver:
//! 5xx, 429 with Retry-After, connection resets (before and after the server applied the
//! request) and latency. Retries must show in the logs, everything must be restored within the
//! deadline, and an unbeatable fault rate must end with the deadline code and a true status.

mod support;

use std::time::Duration;

use fault_proxy::{FaultProxy, Faults};
use support::*;

fn proxy(faults: Faults) -> (FaultProxy, std::path::PathBuf) {
    proxied(faults)
}

async fn seed(prefix: &str, n: usize) -> (String, Vec<String>) {
    let ns = namespace(prefix).await;
    let (names, _) = seed_paused(&ns, "chart", n).await;
    // A decoy an administrator paused by hand: must stay paused whatever the faults.
    create_chart(&ns, "decoy").await;
    set_paused_by_hand(&ns, "decoy", true).await;
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.push("decoy");
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &full_ledger(&ns, &all))]).await;
    (ns, names)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_everything_through_faults_with_retries_logged() {
    let (ns, names) = seed("faults", 40).await;
    let (proxy, kubeconfig) = proxy(Faults {
        seed: 20261127,
        server_error_rate: 0.15,
        throttle_rate: 0.10,
        retry_after_secs: 1,
        reset_rate: 0.05,
        reset_after_forward_rate: 0.05,
        error_after_forward_rate: 0.0,
        latency_rate: 0.2,
        latency_min: Duration::from_millis(5),
        latency_max: Duration::from_millis(80),
        path_filter: None,
    });
    let ledger = format!("{ns}/pause-ledger");
    let r =
        restore_as(&kubeconfig, &ledger, &["--timeout", "120s", "--max-attempts", "30", "--log-format", "json"]).await;
    let stats = proxy.stats();
    assert_eq!(r.code, 0, "{stats:?}\n{r:#?}");
    let outcomes = r.outcomes();
    for n in &names {
        assert_eq!(outcomes[n], "restored", "{n}: {r:#?}");
        assert!(!paused(&ns, n).await, "{n} still paused");
    }
    assert_eq!(outcomes["decoy"], "not-ours");
    assert!(paused(&ns, "decoy").await, "the decoy was unpaused");
    assert!(stats.server_errors + stats.throttled + stats.resets + stats.resets_after_forward > 10, "{stats:?}");

    // Every retry is logged (JSON logs) with its delay.
    let retries: Vec<serde_json::Value> = r
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("retrying")))
        .collect();
    assert!(retries.len() >= 10, "{} retries logged: {}", retries.len(), r.stderr);
    assert!(retries.iter().all(|l| l["delay_ms"].is_u64()), "{retries:?}");
    // 429s came with Retry-After: 1, and the delay honoured it.
    assert!(
        retries.iter().any(|l| l["error"].as_str().is_some_and(|e| e.contains("429")) && l["delay_ms"] == 1000),
        "no Retry-After honoured: {retries:?}"
    );
    let status = &ledger_data(&ns, "pause-ledger").await["status.yaml"];
    assert!(status.contains("state: done"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbeatable_faults_end_at_the_deadline_with_a_true_status() {
    let (ns, names) = seed("unbeatable", 5).await;
    // Charts always fail; the ledger itself stays reachable so the status can be written.
    let (proxy, kubeconfig) = proxy(Faults {
        seed: 1,
        server_error_rate: 1.0,
        path_filter: Some("managedcharts".into()),
        ..Faults::default()
    });
    let ledger = format!("{ns}/pause-ledger");
    let started = std::time::Instant::now();
    let r = restore_as(&kubeconfig, &ledger, &["--timeout", "8s", "--max-attempts", "1000"]).await;
    let took = started.elapsed();
    assert_eq!(r.code, 6, "{r:#?}");
    assert!(took < Duration::from_secs(8) + Duration::from_secs(3), "overran the deadline: {took:?}");
    assert!(proxy.stats().server_errors > 5);
    let report = r.json();
    assert_eq!(report["result"], "deadline-exceeded");
    for e in report["entries"].as_array().unwrap() {
        assert_eq!(e["outcome"], "failed", "{e}");
        assert_eq!(e["cause"], "deadline", "{e}");
    }
    for n in &names {
        assert!(paused(&ns, n).await, "{n} changed although every request failed");
    }
    let status = &ledger_data(&ns, "pause-ledger").await["status.yaml"];
    assert!(status.contains("state: incomplete"), "{status}");
    assert!(status.contains("lastExitCode: 6"), "{status}");
    assert!(!status.contains("outcome: restored"), "{status}");

    // With the faults gone, a rerun converges.
    proxy.set_faults(Faults::default());
    let again = restore_as(&kubeconfig, &ledger, &[]).await;
    assert_eq!(again.code, 0, "{again:#?}");
    for n in &names {
        assert!(!paused(&ns, n).await);
    }
    assert!(paused(&ns, "decoy").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_are_still_counted_as_restored() {
    let (ns, names) = seed("lost-answers", 10).await;
    // Every first PATCH of a chart is applied upstream but its answer is lost.
    let (_proxy, kubeconfig) = proxy(Faults {
        seed: 3,
        reset_after_forward_rate: 0.5,
        path_filter: Some("managedcharts/chart".into()),
        ..Faults::default()
    });
    let ledger = format!("{ns}/pause-ledger");
    let r = restore_as(&kubeconfig, &ledger, &["--max-attempts", "30"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    let outcomes = r.outcomes();
    for n in &names {
        assert_eq!(outcomes[n], "restored", "{n}: {r:#?}");
    }
    let lost = r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"].as_str().is_some_and(|d| d.contains("answer to our patch was lost")))
        .count();
    assert!(lost > 0, "no patch answer was lost; the test proved nothing: {r:#?}");
}

/// A parent that reads stderr only after the exit (the bench did) lets 64 KiB of logs fill the
/// pipe; the run must go on regardless (logs are written by a thread of their own) and end by
/// its deadline with everything restored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unread_stderr_does_not_stall_the_run() {
    use tokio::io::AsyncReadExt as _;
    let (ns, names) = seed("unread-stderr", 40).await;
    let ledger = format!("{ns}/pause-ledger");
    // Trace logs in JSON: far more than a pipe holds, from a small ledger.
    let args = [
        "restore",
        "--ledger",
        &ledger,
        "-o",
        "json",
        "--timeout",
        "20s",
        "--log-level",
        "trace",
        "--log-format",
        "json",
    ];
    let mut child = command(cp().kubeconfig_path(), &args).spawn().expect("spawn pause-ledger");
    let mut stdout = child.stdout.take().expect("stdout");
    let report = tokio::spawn(async move {
        let mut s = String::new();
        stdout.read_to_string(&mut s).await.map(|_| s)
    });
    let Ok(status) = tokio::time::timeout(Duration::from_secs(20 + 30), child.wait()).await else {
        panic!("still running 30 s past its --timeout: blocked on its unread stderr");
    };
    let code = status.expect("wait").code();
    let mut stderr = Vec::new();
    child.stderr.take().expect("stderr").read_to_end(&mut stderr).await.expect("read stderr");
    // The pipe filled: the logs end long before the run's last line.
    let stderr = String::from_utf8_lossy(&stderr);
    assert!(!stderr.contains("status written"), "the logs fit the pipe; the test proved nothing: {stderr}");
    let report = report.await.expect("join").expect("read stdout");
    assert_eq!(code, Some(0), "{report}");
    for n in &names {
        assert!(!paused(&ns, n).await, "{n} still paused");
    }
}

/// Events the server never answers must not hold the run past its deadline, nor take the
/// status write's time: they end halfway to the deadline, the status is written, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_events_do_not_hold_the_run_past_its_deadline() {
    let (ns, names) = seed("silent-events", 5).await;
    let (_proxy, kubeconfig) = proxy(Faults {
        seed: 4,
        latency_rate: 1.0,
        latency_min: Duration::from_secs(60),
        latency_max: Duration::from_secs(60),
        path_filter: Some("/events".into()),
        ..Faults::default()
    });
    let ledger = format!("{ns}/pause-ledger");
    let started = std::time::Instant::now();
    // The default --request-timeout (10 s) is longer than the whole run may take.
    let r = restore_as(&kubeconfig, &ledger, &["--timeout", "5s"]).await;
    let took = started.elapsed();
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(took < Duration::from_secs(5) + Duration::from_secs(5), "overran the deadline: {took:?}\n{r:#?}");
    for n in &names {
        assert!(!paused(&ns, n).await, "{n} still paused");
    }
    let status = &ledger_data(&ns, "pause-ledger").await["status.yaml"];
    assert!(status.contains("state: done"), "{status}");
    assert!(r.stderr.contains("no answer to an Event in time"), "{}", r.stderr);
}

/// A status write the server applied but whose answer was lost must not count the run twice
/// (nor record another run's exit code): the retry finds its own run id in the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_write_whose_answer_was_lost_counts_the_run_once() {
    let (ns, _names) = seed("lost-status", 3).await;
    let (_proxy, kubeconfig) = proxy(Faults {
        seed: 11,
        reset_after_forward_rate: 0.5,
        path_filter: Some("configmaps/pause-ledger".into()),
        ..Faults::default()
    });
    let ledger = format!("{ns}/pause-ledger");
    let mut recognised = 0;
    for run in 1..=6 {
        let r = run_as(
            &kubeconfig,
            &["restore", "--ledger", &ledger, "--force", "--max-attempts", "30", "--log-level", "debug"],
        )
        .await;
        assert_eq!(r.code, 0, "run {run}: {r:#?}");
        recognised += r.stderr.matches("already carries this run's write").count();
        let status: serde_json::Value =
            serde_saphyr::from_str(&ledger_data(&ns, "pause-ledger").await["status.yaml"]).unwrap();
        assert_eq!(status["runs"], run, "run {run}: {status}");
        assert_eq!(status["lastExitCode"], 0, "run {run}: {status}");
    }
    assert!(recognised > 0, "no status answer was lost in 6 runs; the test proved nothing");
}
