//! `pause-ledger restore` against a real kube-apiserver: outcomes, ownership, validation,
//! RBAC, dry run, idempotency, concurrency and interruption.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_outcome_and_hand_pauses_stay() {
    let ns = namespace("outcomes").await;
    for n in ["ours", "ours-crd", "by-hand-before", "re-paused", "running", "deleted", "other-upgrade"] {
        create_chart(&ns, n).await;
    }
    // Before the upgrade an administrator paused one chart on purpose.
    set_paused_by_hand(&ns, "by-hand-before", true).await;
    // The upgrade pauses its charts (marks them).
    for n in ["ours", "ours-crd", "re-paused", "running", "deleted"] {
        pause_as_upgrade(&ns, n, UPGRADE).await;
    }
    pause_as_upgrade(&ns, "other-upgrade", "some-other-upgrade").await;
    // During the upgrade: one unpaused and re-paused by hand, one unpaused, one deleted.
    set_paused_by_hand(&ns, "re-paused", false).await;
    set_paused_by_hand(&ns, "re-paused", true).await;
    set_paused_by_hand(&ns, "running", false).await;
    delete_chart(&ns, "deleted").await;

    let names = ["ours", "ours-crd", "by-hand-before", "re-paused", "running", "deleted", "other-upgrade"];
    let ledger = full_ledger(&ns, &names);
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &ledger)]).await;

    let r = restore(&format!("{ns}/pause-ledger"), &[]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    let o = r.outcomes();
    assert_eq!(o["ours"], "restored");
    assert_eq!(o["ours-crd"], "restored");
    assert_eq!(o["by-hand-before"], "not-ours");
    assert_eq!(o["re-paused"], "not-ours");
    assert_eq!(o["running"], "already-running");
    assert_eq!(o["deleted"], "gone");
    assert_eq!(o["other-upgrade"], "not-ours");
    let report = r.json();
    let re_paused = report["entries"].as_array().unwrap().iter().find(|e| e["object"]["name"] == "re-paused").unwrap();
    assert!(re_paused["detail"].as_str().unwrap().contains("kubectl-patch"), "{re_paused}");

    // Live state: only the upgrade's own pauses were undone, and their marks removed.
    assert!(!paused(&ns, "ours").await);
    assert!(!paused(&ns, "ours-crd").await);
    assert!(paused(&ns, "by-hand-before").await);
    assert!(paused(&ns, "re-paused").await);
    assert!(paused(&ns, "other-upgrade").await);
    let ours = chart(&ns, "ours").await;
    assert!(ours.pointer("/metadata/annotations/pause-ledger.io~1paused-by").is_none(), "{ours}");

    // The recorded set is untouched; the status went to its own key.
    let data = ledger_data(&ns, "pause-ledger").await;
    assert_eq!(data["ledger.yaml"], ledger);
    let status = &data["status.yaml"];
    assert!(status.contains("state: done"), "{status}");
    assert!(status.contains("outcome: restored"), "{status}");

    // CRD charts first: every order-0 entry finished before any order-1 entry started.
    let entries = report["entries"].as_array().unwrap();
    let crd = entries.iter().find(|e| e["object"]["name"] == "ours-crd").unwrap();
    assert_eq!(crd["order"], 0);
    let crd_end: jiff::Timestamp = crd["startedAt"].as_str().unwrap().parse().unwrap();
    let crd_end = crd_end + jiff::SignedDuration::from_millis(crd["durationMs"].as_i64().unwrap());
    for e in entries.iter().filter(|e| e["order"] == 1 && e["startedAt"].is_string()) {
        let start: jiff::Timestamp = e["startedAt"].as_str().unwrap().parse().unwrap();
        assert!(start + jiff::SignedDuration::from_millis(1) >= crd_end, "{e} started before the CRD chart finished");
    }

    // A rerun is a no-op: the status says done.
    let again = restore(&format!("{ns}/pause-ledger"), &[]).await;
    assert_eq!(again.code, 0, "{again:#?}");
    assert!(again.json()["message"].as_str().unwrap().contains("already restored"), "{again:#?}");
    assert_eq!(again.json()["requests"], 1, "only the ledger was read");
    // --force re-examines and still changes nothing that is not ours.
    let forced = restore(&format!("{ns}/pause-ledger"), &["--force"]).await;
    assert_eq!(forced.code, 0, "{forced:#?}");
    assert_eq!(forced.outcomes()["ours"], "already-running");
    assert!(paused(&ns, "re-paused").await);
    assert!(ledger_data(&ns, "pause-ledger").await["status.yaml"].contains("outcome: restored"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minimal_form_unmarked_is_still_paused_only() {
    let ns = namespace("minimal").await;
    for n in ["harvester", "harvester-crd", "rancher-logging-crd"] {
        create_chart(&ns, n).await;
        set_paused_by_hand(&ns, n, true).await;
    }
    set_paused_by_hand(&ns, "rancher-logging-crd", false).await;
    write_ledger(
        &ns,
        "upgrade-ledger",
        &[("charts", "harvester harvester-crd rancher-logging-crd"), ("namespace", &ns)],
    )
    .await;
    let r = restore(&format!("{ns}/upgrade-ledger"), &[]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    let o = r.outcomes();
    assert_eq!(o["harvester"], "restored");
    assert_eq!(o["harvester-crd"], "restored");
    assert_eq!(o["rancher-logging-crd"], "already-running");
    assert!(r.stderr.contains("without ownership marks"), "the weaker check is announced: {}", r.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ledgers_patch_nothing_and_validate_agrees() {
    let ns = namespace("invalid").await;
    for n in ["a", "b"] {
        create_chart(&ns, n).await;
        pause_as_upgrade(&ns, n, UPGRADE).await;
    }
    let good = full_ledger(&ns, &["a", "b"]);
    let variants: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("bad yaml", vec![("ledger.yaml", format!("{good}  - [unclosed\n"))]),
        ("unknown version", vec![("ledger.yaml", good.replace("pause-ledger/v1", "pause-ledger/v7"))]),
        ("missing name", vec![("ledger.yaml", good.replace("    name: b\n", ""))]),
        ("wrong type", vec![("ledger.yaml", good.replace("    name: b\n", "    name: b\n    order: first\n"))]),
        ("invalid name", vec![("ledger.yaml", good.replace("name: b", "name: B_b"))]),
        ("duplicate", vec![("ledger.yaml", good.replace("name: b", "name: a"))]),
        (
            "unknown kind",
            vec![(
                "ledger.yaml",
                good.replace("    name: b\n", "    name: b\n    apiVersion: example.com/v1\n    kind: Gizmo\n"),
            )],
        ),
        ("unknown key", vec![("ledger.yaml", good.clone()), ("extra", "x".into())]),
        ("minimal without namespace", vec![("charts", "a b".into())]),
    ];
    let before = versions(&ns, &["a", "b"]).await;
    for (what, data) in &variants {
        let data: Vec<(&str, &str)> = data.iter().map(|(k, v)| (*k, v.as_str())).collect();
        write_ledger(&ns, "l", &data).await;
        let r = run(&["restore", "--ledger", &format!("{ns}/l")]).await;
        assert_eq!(r.code, 4, "{what}: {r:#?}");
        assert!(r.stderr.contains("invalid ledger"), "{what}: {}", r.stderr);
        assert_eq!(versions(&ns, &["a", "b"]).await, before, "{what}: something was written");
        assert!(!ledger_data(&ns, "l").await.contains_key("status.yaml"), "{what}: status written");

        // validate on the same content agrees (the unknown kind needs discovery: --cluster).
        let file = std::env::temp_dir().join(format!("pl-validate-{ns}-{}.yaml", what.replace(' ', "-")));
        let cm = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "l"},
            "data": data.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect::<serde_json::Map<_, _>>()});
        std::fs::write(&file, serde_json::to_string(&cm).unwrap()).unwrap();
        let file = file.to_str().unwrap();
        let v = run(&["validate", "--cluster", file]).await;
        assert_eq!(v.code, 4, "validate disagrees on {what}: {v:#?}");
        if *what != "unknown kind" {
            assert_eq!(run(&["validate", file]).await.code, 4, "offline validate disagrees on {what}");
        }
    }
    // The good ledger validates and restores.
    write_ledger(&ns, "l", &[("ledger.yaml", &good)]).await;
    let r = run(&["restore", "--ledger", &format!("{ns}/l")]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(!paused(&ns, "a").await && !paused(&ns, "b").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_denied_names_the_permission_and_dry_run_changes_nothing() {
    // Not one of Harvester's chart names: a ledger of those also needs `list` on Harvester's
    // Upgrades (is one running?), which this test is not about.
    let ns = namespace("rbac").await;
    create_chart(&ns, "monitoring-app").await;
    pause_as_upgrade(&ns, "monitoring-app", UPGRADE).await;
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &full_ledger(&ns, &["monitoring-app"]))]).await;
    let ledger = format!("{ns}/pause-ledger");

    let weak = service_account_with(&ns, "no-patch", restore_rules("pause-ledger", &["get"])).await;
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["restore", "--ledger", &ledger, "-o", "json"];
        args.extend_from_slice(extra);
        let r = run_as(&weak, &args).await;
        assert_eq!(r.code, 5, "{extra:?}: {r:#?}");
        let err = r.json()["entries"][0]["error"].as_str().unwrap().to_string();
        assert!(err.contains("\"patch\"") && err.contains("managedcharts") && err.contains(&ns), "{err}");
    }
    assert!(paused(&ns, "monitoring-app").await);

    let strong = service_account_with(&ns, "restorer", restore_rules("pause-ledger", &["get", "patch"])).await;
    let before = versions(&ns, &["monitoring-app"]).await;
    let status_before = ledger_data(&ns, "pause-ledger").await.get("status.yaml").cloned();
    let dry = restore_as(&strong, &ledger, &["--dry-run"]).await;
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert_eq!(dry.outcomes()["monitoring-app"], "would-restore");
    assert_eq!(versions(&ns, &["monitoring-app"]).await, before, "dry run wrote");
    assert_eq!(
        ledger_data(&ns, "pause-ledger").await.get("status.yaml").cloned(),
        status_before,
        "dry run wrote status"
    );

    let r = restore_as(&strong, &ledger, &[]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(!paused(&ns, "monitoring-app").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_ledger() {
    let ns = namespace("missing").await;
    let ledger = format!("{ns}/nothing-here");
    let ok = run(&["restore", "--ledger", &ledger, "--if-missing", "ok"]).await;
    assert_eq!(ok.code, 0, "{ok:#?}");
    let fail = run(&["restore", "--ledger", &ledger, "--if-missing", "fail"]).await;
    assert_eq!(fail.code, 8, "{fail:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_restores_restore_each_entry_once() {
    let ns = namespace("concurrent").await;
    let (names, ledger) = seed_paused(&ns, "chart", 60).await;
    let args = ["restore", "--ledger", &ledger, "-o", "json", "--concurrency", "4"];
    let (a, b) = tokio::join!(run(&args), run(&args));
    assert_eq!(a.code, 0, "{a:#?}");
    assert_eq!(b.code, 0, "{b:#?}");
    // If one run finished before the other read the status, the second is a no-op with no entries.
    let (oa, ob) = (a.outcomes(), b.outcomes());
    for n in &names {
        let restored = [oa.get(n), ob.get(n)].iter().filter(|o| o.map(String::as_str) == Some("restored")).count();
        assert_eq!(restored, 1, "{n} restored {restored} times: {:?} / {:?}", oa.get(n), ob.get(n));
        assert!(!paused(&ns, n).await);
    }
    let status = &ledger_data(&ns, "pause-ledger").await["status.yaml"];
    assert!(status.contains("state: done"), "{status}");
    assert_eq!(status.matches("outcome: restored").count(), names.len(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_run_converges_on_rerun_and_sigterm_writes_status() {
    let ns = namespace("killed").await;
    let (names, ledger) = seed_paused(&ns, "c", 60).await;
    let count_paused = || count_paused(&ns);
    // Slow every chart request down (no errors) so the runs can be interrupted mid-way.
    let (_proxy, slow) = slowed("managedcharts");
    let args = ["restore", "--ledger", ledger.as_str(), "--concurrency", "1", "-o", "json"];

    // SIGKILL once some, not all, are restored.
    let mut child = command(&slow, &args).spawn().unwrap();
    eventually(Duration::from_secs(60), "the first restores", || async { count_paused().await <= 55 }).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let left = count_paused().await;
    assert!(left > 0 && left < 60, "{left} paused: not killed mid-way");
    assert!(!ledger_data(&ns, "pause-ledger").await.contains_key("status.yaml"), "a killed run wrote status");

    // SIGTERM the next run mid-way: exit 7, status written for what was done, the rest skipped.
    let child = command(&slow, &args).spawn().unwrap();
    let pid = child.id().unwrap();
    eventually(Duration::from_secs(60), "more restores", || async { count_paused().await + 5 <= left }).await;
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(7), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["result"], "terminated");
    let still = count_paused().await;
    assert!(still > 0, "the terminated run finished everything; nothing proven");
    let skipped = report["summary"]["skipped"].as_u64().unwrap_or(0) as usize;
    assert!(skipped >= still.saturating_sub(1), "{skipped} skipped but {still} paused: {stdout}");
    let status = &ledger_data(&ns, "pause-ledger").await["status.yaml"];
    assert!(status.contains("state: incomplete"), "{status}");
    assert!(status.contains("outcome: skipped"), "{status}");
    assert!(status.contains("lastExitCode: 7"), "{status}");

    // A rerun converges: everything restored, nothing lost, no marks left.
    let r = run(&["restore", "--ledger", &ledger]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(count_paused().await, 0);
    let status = &ledger_data(&ns, "pause-ledger").await["status.yaml"];
    assert!(status.contains("state: done"), "{status}");
    for n in &names {
        let c = chart(&ns, n).await;
        assert!(c.pointer("/metadata/annotations/pause-ledger.io~1paused-by").is_none(), "{n} keeps its mark");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_command_shows_ledger_and_live_state() {
    let ns = namespace("status").await;
    for n in ["harvester", "harvester-crd"] {
        create_chart(&ns, n).await;
        pause_as_upgrade(&ns, n, UPGRADE).await;
    }
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &full_ledger(&ns, &["harvester", "harvester-crd"]))]).await;
    let ledger = format!("{ns}/pause-ledger");
    let s = run(&["status", "--ledger", &ledger, "-o", "json"]).await;
    assert_eq!(s.code, 0, "{s:#?}");
    let j = s.json();
    assert_eq!(j["upgrade"], UPGRADE);
    assert!(j["status"].is_null());
    assert_eq!(j["entries"][0]["live"]["paused"], true);
    assert_eq!(j["entries"][0]["live"]["mark"], UPGRADE);
    assert_eq!(run(&["restore", "--ledger", &ledger]).await.code, 0);
    let table = run(&["status", "--ledger", &ledger]).await;
    assert_eq!(table.code, 0, "{table:#?}");
    assert!(table.stdout.contains("status Done"), "{}", table.stdout);
    assert!(table.stdout.contains("restored"), "{}", table.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_ledgers_are_read_in_bulk_when_list_is_allowed() {
    let ns = namespace("bulk").await;
    let (names, ledger) = seed_paused(&ns, "b", 40).await;
    let ledger_yaml = ledger_data(&ns, "pause-ledger").await["ledger.yaml"].clone();

    // Without `list` (the chart's default RBAC) every entry is read on its own: GET + PATCH.
    let no_list = service_account_with(&ns, "no-list", restore_rules("pause-ledger", &["get", "patch"])).await;
    let r = restore_as(&no_list, &ledger, &["--events=false"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.json()["summary"]["restored"], 40);
    let per_entry = r.json()["requests"].as_u64().unwrap();
    assert!(per_entry >= 80, "{per_entry} requests");

    for n in &names {
        pause_as_upgrade(&ns, n, UPGRADE).await;
    }
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &ledger_yaml)]).await;
    let with_list =
        service_account_with(&ns, "with-list", restore_rules("pause-ledger", &["get", "list", "patch"])).await;
    let r = restore_as(&with_list, &ledger, &["--events=false"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.json()["summary"]["restored"], 40);
    let bulk = r.json()["requests"].as_u64().unwrap();
    assert!(bulk <= 40 + 8, "{bulk} requests: one LIST should replace the GETs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_flag_selects_the_kubeconfig_context() {
    let ns = namespace("context").await;
    create_chart(&ns, "harvester").await;
    pause_as_upgrade(&ns, "harvester", UPGRADE).await;
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &full_ledger(&ns, &["harvester"]))]).await;
    // The current context points nowhere; only --context reaches the cluster.
    let kubeconfig = serde_json::json!({
        "apiVersion": "v1", "kind": "Config", "current-context": "broken",
        "clusters": [
            {"name": "real", "cluster": {"server": cp().server_url(), "certificate-authority": cp().ca_path()}},
            {"name": "nowhere", "cluster": {"server": "https://127.0.0.1:1", "certificate-authority": cp().ca_path()}},
        ],
        "users": [{"name": "admin", "user": {"token": cp().admin_token()}}],
        "contexts": [
            {"name": "broken", "context": {"cluster": "nowhere", "user": "admin"}},
            {"name": "good", "context": {"cluster": "real", "user": "admin"}},
        ],
    });
    let path = std::env::temp_dir().join(format!("pl-context-{ns}.json"));
    std::fs::write(&path, kubeconfig.to_string()).unwrap();
    let ledger = format!("{ns}/pause-ledger");
    let broken = run_as(&path, &["restore", "--ledger", &ledger, "--timeout", "3s"]).await;
    assert_ne!(broken.code, 0, "{broken:#?}");
    assert!(paused(&ns, "harvester").await);
    let good = run_as(&path, &["restore", "--ledger", &ledger, "--context", "good", "-o", "json"]).await;
    assert_eq!(good.code, 0, "{good:#?}");
    assert!(!paused(&ns, "harvester").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_of_a_ledger_near_the_configmap_limit_is_written_compact() {
    // A ConfigMap holds at most 1 MiB of data. A ledger padded with YAML comments to ~1,020,000
    // bytes leaves ~28 KB, less than the full status of 120 entries (~300 bytes each): the
    // compact form must be written instead of a status the API server refuses.
    let ns = namespace("compact").await;
    let (names, ledger) = seed_paused(&ns, "c", 120).await;
    create_chart(&ns, "by-hand").await;
    set_paused_by_hand(&ns, "by-hand", true).await;
    let mut refs: Vec<&str> = names.iter().map(String::as_str).collect();
    refs.push("by-hand");
    let mut text = full_ledger(&ns, &refs);
    let line = format!("# {}\n", "padding ".repeat(12));
    while text.len() + line.len() < 1_020_000 {
        text.push_str(&line);
    }
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &text)]).await;

    let r = restore(&ledger, &["--events=false"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.json()["summary"]["restored"], 120, "{r:#?}");
    let data = ledger_data(&ns, "pause-ledger").await;
    let total: usize = data.values().map(String::len).sum();
    assert!(total <= 1024 * 1024, "{total} bytes");
    let status: Value = serde_saphyr::from_str(&data["status.yaml"]).unwrap();
    assert_eq!(status["state"], "done", "{status}");
    assert_eq!(status["counts"]["restored"], 120, "{status}");
    assert_eq!(status["counts"]["not-ours"], 1, "{status}");
    let letters = status["outcomes"].as_str().unwrap();
    assert_eq!(letters, format!("{}n", "r".repeat(120)));
    // Only the entry that needs a reader's attention is listed, with its explanation.
    let listed = status["entries"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{status}");
    assert_eq!(listed[0]["object"]["name"], "by-hand");
    assert!(listed[0]["detail"].is_string(), "{status}");
    assert_eq!(status["unlisted"], 120);

    // `status` expands the compact form: every entry shows its recorded outcome.
    let s = run(&["status", "--ledger", &ledger, "-o", "json"]).await;
    assert_eq!(s.code, 0, "{s:#?}");
    let rows = s.json()["entries"].as_array().unwrap().clone();
    assert_eq!(rows.iter().filter(|e| e["status"]["outcome"] == "restored").count(), 120);
    assert_eq!(s.json()["status"]["compact"], true);

    // A forced rerun merges into the compact status: restored entries stay "restored".
    let again = restore(&ledger, &["--events=false", "--force"]).await;
    assert_eq!(again.code, 0, "{again:#?}");
    assert_eq!(again.json()["summary"]["already-running"], 120);
    let status: Value = serde_saphyr::from_str(&ledger_data(&ns, "pause-ledger").await["status.yaml"]).unwrap();
    assert_eq!(status["counts"]["restored"], 120, "{status}");
    assert_eq!(status["runs"], 2, "{status}");
}
