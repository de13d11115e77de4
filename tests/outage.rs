//! An API server that is down for a minute — when a run starts, and in the middle of one — is
//! waited out within the run's deadline (exit 0, everything restored), and a run says
//! "deadline exceeded" (exit 6) only when its deadline really passed.
//!
//! A test binary of its own: it stops the API server of its own control plane. The server
//! restarts on the same port with the same etcd, so it also answers discovery before its CRDs
//! are registered again (the brief 404 a restore must not take for "kind not served").

mod support;

use std::process::Output;
use std::time::{Duration, Instant};

use support::*;

async fn stop_apiserver() {
    tokio::task::spawn_blocking(|| cp().stop_apiserver().expect("stop kube-apiserver")).await.unwrap();
}

async fn start_apiserver() {
    tokio::task::spawn_blocking(|| cp().start_apiserver().expect("start kube-apiserver")).await.unwrap();
}

fn report(out: &Output) -> Run {
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_waited_out_and_exit_6_means_the_deadline_passed() {
    let outage = Duration::from_secs(60);
    // Mid-run: enough entries, one at a time, that the run is still going when the server stops.
    let mid = namespace("outage-mid").await;
    let (mid_names, mid_ledger) = seed_paused(&mid, "m", 600).await;
    let start = namespace("outage-start").await;
    let (start_names, start_ledger) = seed_paused(&start, "s", 5).await;
    // Asks every 100 ms: it reaches the server the moment it listens again, before the CRDs are
    // registered (discovery answers 404 for them then).
    let eager = namespace("outage-eager").await;
    let (eager_names, eager_ledger) = seed_paused(&eager, "e", 3).await;
    let late = namespace("outage-late").await;
    let (_, late_ledger) = seed_paused(&late, "l", 3).await;

    let begun = Instant::now();
    let mid_run =
        command(cp().kubeconfig_path(), &["restore", "--ledger", &mid_ledger, "-o", "json", "--concurrency", "1"])
            .spawn()
            .unwrap();
    eventually(Duration::from_secs(60), "the first restores", || async { count_paused(&mid).await <= 590 }).await;
    stop_apiserver().await;
    let stopped = Instant::now();
    // At the start: the ledger read itself finds nothing listening.
    let start_run =
        command(cp().kubeconfig_path(), &["restore", "--ledger", &start_ledger, "-o", "json"]).spawn().unwrap();
    let eager_run = command(
        cp().kubeconfig_path(),
        &["restore", "--ledger", &eager_ledger, "-o", "json", "--min-delay", "20ms", "--max-delay", "100ms"],
    )
    .spawn()
    .unwrap();
    tokio::time::sleep(outage.saturating_sub(stopped.elapsed())).await;
    start_apiserver().await;

    for (child, ns, names) in
        [(mid_run, &mid, &mid_names), (start_run, &start, &start_names), (eager_run, &eager, &eager_names)]
    {
        let r = report(&child.wait_with_output().await.unwrap());
        assert_eq!(r.code, 0, "{ns}: {r:#?}");
        assert_eq!(count_paused(ns).await, 0, "{ns}: {r:#?}");
        assert_eq!(r.outcomes().len(), names.len(), "{ns}");
        assert!(r.stderr.contains("retrying"), "{ns}: retries are logged: {}", r.stderr);
    }
    assert!(begun.elapsed() < Duration::from_secs(240), "within the default --timeout: {:?}", begun.elapsed());

    // Longer than the run's deadline: exit 6, and only once the deadline passed.
    stop_apiserver().await;
    let t = Instant::now();
    let r = restore(&late_ledger, &["--timeout", "20s"]).await;
    let took = t.elapsed();
    start_apiserver().await;
    assert_eq!(r.code, 6, "{r:#?}");
    assert!(took >= Duration::from_secs(17), "exit 6 after {took:?}, before the deadline: {r:#?}");
    assert!(took < Duration::from_secs(25), "ended by --timeout + 5 s: {took:?}");
    assert!(r.json()["message"].as_str().unwrap().contains("deadline"), "{r:#?}");
    assert_eq!(count_paused(&late).await, 3, "nothing was written while the server was down");
}
