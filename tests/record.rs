//! The pause side and the checks after restore, on the real API server with the Rancher
//! stand-in (a test double): record → restore round trips, a second upgrade refused, crash
//! safety, rescue, propagation, readiness, the re-pause guard, Events, and other kinds.

mod support;

use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::ApiResource;
use kubeenv::{Mode, RancherStandIn};
use serde_json::{Value, json};
use support::*;

/// Event reasons recorded in `ns` for object `name`.
async fn record(ns: &str, upgrade: &str, extra: &[&str]) -> Run {
    let ledger = format!("{ns}/pause-ledger");
    let mut args = vec!["record", "--ledger", &ledger, "--upgrade", upgrade, "-o", "json"];
    args.extend_from_slice(extra);
    run(&args).await
}

fn record_outcomes(r: &Run) -> std::collections::BTreeMap<String, String> {
    r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["object"]["name"].as_str().unwrap().to_string(), e["outcome"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_restore_round_trip_keeps_every_earlier_pause() {
    let ns = namespace("roundtrip").await;
    for n in ["harvester", "harvester-crd", "rancher-monitoring-crd", "rancher-logging-crd"] {
        create_chart(&ns, n).await;
    }
    set_paused_by_hand(&ns, "rancher-logging-crd", true).await;
    let r = record(&ns, "up-1", &["--preset", "harvester", "--namespace", &ns]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    let o = record_outcomes(&r);
    assert_eq!(o["harvester"], "paused");
    assert_eq!(o["harvester-crd"], "paused");
    assert_eq!(o["rancher-monitoring-crd"], "paused");
    assert_eq!(o["rancher-logging-crd"], "paused-before");
    let yaml = &ledger_data(&ns, "pause-ledger").await["ledger.yaml"];
    assert!(yaml.contains("pausedBefore"), "{yaml}");
    for n in ["harvester", "harvester-crd", "rancher-monitoring-crd"] {
        assert!(paused(&ns, n).await);
        assert_eq!(
            chart(&ns, n).await.pointer("/metadata/annotations/pause-ledger.io~1paused-by"),
            Some(&json!("up-1"))
        );
        assert!(event_reasons(&ns, n).await.contains(&"Paused".to_string()));
    }
    assert!(event_reasons(&ns, "pause-ledger").await.contains(&"Recorded".to_string()));

    // Recording again with the same id is idempotent (a rerun after a crash).
    let again = record(&ns, "up-1", &["--preset", "harvester", "--namespace", &ns]).await;
    assert_eq!(again.code, 0, "{again:#?}");
    assert_eq!(record_outcomes(&again)["harvester"], "already-ours");

    let r = restore(&format!("{ns}/pause-ledger"), &[]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    for n in ["harvester", "harvester-crd", "rancher-monitoring-crd"] {
        assert!(!paused(&ns, n).await, "{n}");
        assert!(event_reasons(&ns, n).await.contains(&"Restored".to_string()), "{n}");
    }
    assert!(paused(&ns, "rancher-logging-crd").await, "a pause from before the upgrade was undone");
    assert!(event_reasons(&ns, "pause-ledger").await.contains(&"RestoreSucceeded".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_upgrade_is_refused_while_the_first_is_unrestored() {
    let ns = namespace("second").await;
    for n in ["a", "b", "c"] {
        create_chart(&ns, n).await;
    }
    assert_eq!(record(&ns, "up-1", &["--namespace", &ns, "a"]).await.code, 0);
    let before = versions(&ns, &["b"]).await;
    let refused = record(&ns, "up-2", &["--namespace", &ns, "b"]).await;
    assert_eq!(refused.code, 9, "{refused:#?}");
    assert!(refused.json()["message"].as_str().unwrap().contains("up-1"), "{refused:#?}");
    assert_eq!(versions(&ns, &["b"]).await, before, "refused record paused something");

    // Merge: b is recorded in up-1's ledger, marked with up-1.
    let merged = record(&ns, "up-2", &["--namespace", &ns, "--on-existing", "merge", "b"]).await;
    assert_eq!(merged.code, 0, "{merged:#?}");
    assert_eq!(chart(&ns, "b").await.pointer("/metadata/annotations/pause-ledger.io~1paused-by"), Some(&json!("up-1")));
    // Take over: the ledger becomes up-3's and the old marks follow.
    let taken = record(&ns, "up-3", &["--namespace", &ns, "--on-existing", "take-over", "c"]).await;
    assert_eq!(taken.code, 0, "{taken:#?}");
    for n in ["a", "b", "c"] {
        assert_eq!(
            chart(&ns, n).await.pointer("/metadata/annotations/pause-ledger.io~1paused-by"),
            Some(&json!("up-3")),
            "{n}"
        );
    }
    let r = restore(&format!("{ns}/pause-ledger"), &[]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert!(r.outcomes().values().all(|o| o == "restored"), "{r:#?}");
    // Once restored, a new upgrade may record into the same ledger.
    assert_eq!(record(&ns, "up-4", &["--namespace", &ns, "a"]).await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_killed_mid_way_loses_no_pause() {
    let ns = namespace("record-crash").await;
    let names: Vec<String> = (0..40).map(|i| format!("r-{i:02}")).collect();
    create_charts(&ns, &names).await;
    set_paused_by_hand(&ns, "r-39", true).await;
    let (_proxy, slow) = slowed("managedcharts");
    let ledger = format!("{ns}/pause-ledger");
    let mut args = vec![
        "record",
        "--ledger",
        ledger.as_str(),
        "--upgrade",
        "up-crash",
        "--namespace",
        ns.as_str(),
        "--concurrency",
        "1",
        // The intent's lease outlives the run by the lease plus one request: kept short here.
        "--request-timeout",
        "2s",
    ];
    args.extend(names.iter().map(String::as_str));
    let mut child = command(&slow, &args).spawn().unwrap();
    let count_paused = || count_paused(&ns);
    eventually(Duration::from_secs(60), "some pauses", || async { count_paused().await >= 6 }).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let paused_now = count_paused().await;
    assert!(paused_now < 40, "record finished before the kill; nothing proven");
    // The intent was written before any pause: every pause made is in the ledger.
    let r = restore(&ledger, &[]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(count_paused().await, 1, "only the hand-paused chart stays paused");
    assert!(paused(&ns, "r-39").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescue_touches_only_the_presets_paused_charts_and_only_with_the_flag() {
    let ns = namespace("rescue").await;
    for n in ["harvester", "harvester-crd", "rancher-monitoring-crd", "rancher-logging-crd", "unrelated"] {
        create_chart(&ns, n).await;
    }
    set_paused_by_hand(&ns, "harvester-crd", true).await;
    set_paused_by_hand(&ns, "rancher-logging-crd", true).await;
    set_paused_by_hand(&ns, "unrelated", true).await;
    pause_as_upgrade(&ns, "rancher-monitoring-crd", "recorded-upgrade").await;
    let all = ["harvester", "harvester-crd", "rancher-monitoring-crd", "rancher-logging-crd", "unrelated"];
    let before = versions(&ns, &all).await;

    // A recorded upgrade found rancher-logging-crd paused before it: an administrator's.
    let ledger = format!(
        "version: pause-ledger/v1\nupgrade: recorded-upgrade\npausedAt: 2026-11-27T10:00:00Z\nentries:\n  - namespace: {ns}\n    name: rancher-monitoring-crd\npausedBefore:\n  - namespace: {ns}\n    name: rancher-logging-crd\n"
    );
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &ledger)]).await;
    let rescue = |extra: &[&str]| {
        let l = format!("{ns}/pause-ledger");
        let mut args = vec!["rescue", "--preset", "harvester", "--namespace", &ns, "--ledger", &l, "-o", "json"];
        args.extend_from_slice(extra);
        let args: Vec<String> = args.into_iter().map(String::from).collect();
        async move { run(&args.iter().map(String::as_str).collect::<Vec<_>>()).await }
    };

    let refused = rescue(&[]).await;
    assert_eq!(refused.code, 2, "{refused:#?}");
    assert!(refused.stderr.contains("will unpause") && refused.stderr.contains("harvester-crd"), "{}", refused.stderr);
    assert!(refused.stderr.contains("--acknowledge-unknown-ownership"), "{}", refused.stderr);
    let dry = rescue(&["--dry-run"]).await;
    assert_eq!(dry.code, 0, "{dry:#?}");
    assert_eq!(dry.outcomes()["harvester-crd"], "would-restore");
    assert_eq!(versions(&ns, &all).await, before, "refused or dry-run rescue changed something");

    let r = rescue(&["--acknowledge-unknown-ownership"]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    let o = r.outcomes();
    // Exactly what it listed: the one chart paused with nothing recorded about it.
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!(o["harvester-crd"], "restored");
    assert!(r.stderr.contains("lists it as paused before the upgrade"), "{}", r.stderr);
    for n in ["unrelated", "rancher-monitoring-crd", "rancher-logging-crd"] {
        assert!(paused(&ns, n).await, "{n}");
    }
    assert!(event_reasons(&ns, "harvester-crd").await.contains(&"RescueRestored".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rescue_acts_only_on_the_objects_it_listed_as_it_listed_them() {
    use tokio::io::AsyncBufReadExt as _;
    let ns = namespace("rescue-pin").await;
    for n in ["harvester", "harvester-crd", "rancher-monitoring-crd", "rancher-logging-crd"] {
        create_chart(&ns, n).await;
    }
    set_paused_by_hand(&ns, "harvester-crd", true).await;
    // Every chart request waits 1.5 s before it reaches the server: time to act in between.
    let (_proxy, slow) = proxied(fault_proxy::Faults {
        seed: 3,
        latency_rate: 1.0,
        latency_min: Duration::from_millis(1500),
        latency_max: Duration::from_millis(1500),
        path_filter: Some("managedcharts".into()),
        ..Default::default()
    });
    let args = [
        "rescue",
        "--preset",
        "harvester",
        "--namespace",
        &ns,
        "--acknowledge-unknown-ownership",
        "-o",
        "json",
        "--log-format",
        "json",
    ];
    let mut child = command(&slow, &args).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    // The list is shown once `harvester` (listed last) was found running.
    while let Some(line) = lines.next_line().await.unwrap() {
        log.push_str(&line);
        log.push('\n');
        if line.contains("running: ") && line.contains("/harvester\"") {
            break;
        }
    }
    // After the listing: an administrator pauses harvester, and pauses harvester-crd afresh.
    set_paused_by_hand(&ns, "harvester", true).await;
    set_paused_by_hand(&ns, "harvester-crd", false).await;
    set_paused_by_hand(&ns, "harvester-crd", true).await;
    while let Some(line) = lines.next_line().await.unwrap() {
        log.push_str(&line);
        log.push('\n');
    }
    let out = child.wait_with_output().await.unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {log}"));
    assert_eq!(out.status.code(), Some(0), "{report}\n{log}");
    let entries = report["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "only the listed chart: {report}");
    assert_eq!(entries[0]["object"]["name"], "harvester-crd");
    assert_eq!(entries[0]["outcome"], "not-ours", "{report}");
    assert!(entries[0]["detail"].as_str().unwrap().contains("changed after rescue listed it"), "{report}");
    assert!(paused(&ns, "harvester").await, "a chart paused after the listing was unpaused");
    assert!(paused(&ns, "harvester-crd").await, "a fresh pause after the listing was unpaused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_and_readiness_follow_rancher() {
    let ns = namespace("rancher").await;
    let rancher = RancherStandIn::spawn(admin(), &ns);
    for n in ["good", "missing-version", "slow"] {
        create_chart(&ns, n).await;
    }
    let bundles: Api<DynamicObject> = Api::namespaced_with(admin(), &ns, &kubeenv::crds::bundle_resource());
    for n in ["good", "missing-version", "slow"] {
        pause_as_upgrade(&ns, n, UPGRADE).await;
    }
    // Rancher carries the pause into every Bundle first.
    for n in ["good", "missing-version", "slow"] {
        let b = bundles.clone();
        let name = format!("mcc-{n}");
        eventually(Duration::from_secs(20), "bundles paused", || {
            let b = b.clone();
            let name = name.clone();
            async move {
                b.get_opt(&name)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|x| x.data.pointer("/spec/paused") == Some(&json!(true)))
            }
        })
        .await;
    }
    rancher.set_chart_mode("missing-version", Mode::ChartVersionNotFound);
    rancher.set_chart_mode("slow", Mode::Slow(Duration::from_secs(3)));
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &full_ledger(&ns, &["good", "missing-version", "slow"]))])
        .await;
    let started = std::time::Instant::now();
    let r = restore(&format!("{ns}/pause-ledger"), &["--propagation-window", "15s", "--wait-ready=20s"]).await;
    assert_eq!(r.code, 3, "not-propagated fails the run: {r:#?}");
    let report = r.json();
    let entry =
        |n: &str| report["entries"].as_array().unwrap().iter().find(|e| e["object"]["name"] == n).unwrap().clone();
    assert_eq!(entry("good")["outcome"], "restored");
    assert_eq!(entry("good")["propagated"], true);
    assert_eq!(entry("good")["ready"], true);
    let missing = entry("missing-version");
    assert_eq!(missing["outcome"], "not-propagated");
    assert!(missing["error"].as_str().unwrap().contains("no chart version found"), "{missing}");
    let slow = entry("slow");
    assert_eq!(slow["outcome"], "restored", "{slow}");
    assert_eq!(slow["ready"], true, "{slow}");
    assert!(started.elapsed() >= Duration::from_secs(3), "ready before the slow stand-in acted");
    assert!(event_reasons(&ns, "missing-version").await.contains(&"NotPropagated".to_string()));
    assert_eq!(bundles.get("mcc-missing-version").await.unwrap().data.pointer("/spec/paused"), Some(&json!(true)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repause_in_the_settle_window_is_detected_and_undone() {
    let ns = namespace("repause").await;
    for n in ["ours-again", "by-hand"] {
        create_chart(&ns, n).await;
        pause_as_upgrade(&ns, n, UPGRADE).await;
    }
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &full_ledger(&ns, &["ours-again", "by-hand"]))]).await;
    let ledger = format!("{ns}/pause-ledger");
    let child = command(cp().kubeconfig_path(), &["restore", "--ledger", &ledger, "-o", "json", "--settle", "6s"])
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(20), "first restore", || async {
        !paused(&ns, "ours-again").await && !paused(&ns, "by-hand").await
    })
    .await;
    // A still-running upgrade job pauses again (with its mark); an admin pauses the other by hand.
    pause_as_upgrade(&ns, "ours-again", UPGRADE).await;
    set_paused_by_hand(&ns, "by-hand", true).await;
    let out = child.wait_with_output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let entry =
        |n: &str| report["entries"].as_array().unwrap().iter().find(|e| e["object"]["name"] == n).unwrap().clone();
    assert_eq!(entry("ours-again")["outcome"], "restored");
    assert!(entry("ours-again")["repaused"].as_u64().unwrap() >= 1, "{report}");
    assert!(!paused(&ns, "ours-again").await, "the upgrade's re-pause was not undone");
    assert_eq!(entry("by-hand")["outcome"], "repaused");
    assert!(paused(&ns, "by-hand").await, "a hand re-pause was undone");
    assert!(event_reasons(&ns, "ours-again").await.contains(&"Repaused".to_string()));
    assert!(event_reasons(&ns, "by-hand").await.contains(&"Repaused".to_string()));
}

/// Create an object of any kind from JSON.
async fn create(ar: &ApiResource, ns: Option<&str>, body: Value) {
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(admin(), ns, ar),
        None => Api::all_with(admin(), ar),
    };
    let obj: DynamicObject = serde_json::from_value(body).unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

async fn get_field(ar: &ApiResource, ns: Option<&str>, name: &str, pointer: &str) -> Value {
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(admin(), ns, ar),
        None => Api::all_with(admin(), ar),
    };
    serde_json::to_value(api.get(name).await.unwrap()).unwrap().pointer(pointer).cloned().unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_pausable_kind_namespaced_or_cluster_scoped() {
    let ns = namespace("kinds").await;
    let ar = |g: &str, v: &str, k: &str, p: &str| {
        ApiResource::from_gvk_with_plural(&kube::core::GroupVersionKind::gvk(g, v, k), p)
    };
    let gitrepo = ar("fleet.cattle.io", "v1alpha1", "GitRepo", "gitrepos");
    let capi = ar("cluster.x-k8s.io", "v1beta1", "Cluster", "clusters");
    let flux = ar("helm.toolkit.fluxcd.io", "v2", "HelmRelease", "helmreleases");
    let deploy = ar("apps", "v1", "Deployment", "deployments");
    let cron = ar("batch", "v1", "CronJob", "cronjobs");
    create(
        &gitrepo,
        Some(&ns),
        json!({"apiVersion": "fleet.cattle.io/v1alpha1", "kind": "GitRepo", "metadata": {"name": "repo"}, "spec": {}}),
    )
    .await;
    create(
        &capi,
        Some(&ns),
        json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster", "metadata": {"name": "c1"}, "spec": {}}),
    )
    .await;
    create(&flux, Some(&ns), json!({"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "hr"}, "spec": {}})).await;
    let pod = json!({"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "x", "image": "x"}]}});
    create(
        &deploy,
        Some(&ns),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": pod}}),
    )
    .await;
    create(&cron, Some(&ns), json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly"},
        "spec": {"schedule": "0 1 * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "x"}]}}}}}})).await;
    // A cluster-scoped pausable kind of our own.
    let crds: Api<DynamicObject> = Api::all_with(
        admin(),
        &ApiResource::erase::<
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >(&()),
    );
    let crd_name = format!("widgets{}.example.com", ns.replace('-', ""));
    let plural = crd_name.split('.').next().unwrap().to_string();
    let kind = format!("Widget{}", ns.replace('-', "").to_uppercase());
    let _ = crds
        .create(&PostParams::default(), &serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": crd_name},
            "spec": {"group": "example.com", "scope": "Cluster",
                "names": {"plural": plural, "singular": plural.trim_end_matches('s'), "kind": kind, "listKind": format!("{kind}List")},
                "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object",
                    "properties": {"spec": {"type": "object", "properties": {"paused": {"type": "boolean"}}}}}}}]}
        })).unwrap())
        .await
        .unwrap();
    let widget = ar("example.com", "v1", &kind, &plural);
    eventually(Duration::from_secs(30), "CRD established", || {
        let w = widget.clone();
        async move { Api::<DynamicObject>::all_with(admin(), &w).list(&ListParams::default()).await.is_ok() }
    })
    .await;
    let widget_name = format!("{ns}-w");
    create(
        &widget,
        None,
        json!({"apiVersion": "example.com/v1", "kind": kind, "metadata": {"name": widget_name}, "spec": {}}),
    )
    .await;

    // (resource, apiVersion, kind, namespace, name, pause field pointer)
    type Case<'a> = (&'a ApiResource, &'a str, &'a str, Option<&'a str>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (&gitrepo, "fleet.cattle.io/v1alpha1", "GitRepo", Some(ns.as_str()), "repo", "/spec/paused"),
        (&capi, "cluster.x-k8s.io/v1beta1", "Cluster", Some(ns.as_str()), "c1", "/spec/paused"),
        (&flux, "helm.toolkit.fluxcd.io/v2", "HelmRelease", Some(ns.as_str()), "hr", "/spec/suspend"),
        (&deploy, "apps/v1", "Deployment", Some(ns.as_str()), "web", "/spec/paused"),
        (&cron, "batch/v1", "CronJob", Some(ns.as_str()), "nightly", "/spec/suspend"),
        (&widget, "example.com/v1", &kind, None, &widget_name, "/spec/paused"),
    ];
    let ledger = format!("{ns}/pause-ledger");
    for (_, api_version, kind, obj_ns, name, _) in &cases {
        let mut args = vec![
            "record",
            "--ledger",
            &ledger,
            "--upgrade",
            UPGRADE,
            "--api-version",
            api_version,
            "--kind",
            kind,
            "-o",
            "json",
        ];
        if let Some(n) = obj_ns {
            args.extend(["--namespace", n]);
        }
        args.push(name);
        let r = run(&args).await;
        assert_eq!(r.code, 0, "{kind}: {r:#?}");
    }
    for (ar, _, kind, obj_ns, name, pointer) in &cases {
        assert_eq!(get_field(ar, *obj_ns, name, pointer).await, json!(true), "{kind} not paused");
    }
    let r = restore(&ledger, &[]).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(r.json()["summary"]["restored"], cases.len(), "{r:#?}");
    for (ar, _, kind, obj_ns, name, pointer) in &cases {
        // Built-in kinds drop a false `paused` (omitempty): absent means running too.
        let v = get_field(ar, *obj_ns, name, pointer).await;
        assert!(v == json!(false) || v.is_null(), "{kind} not restored: {v}");
    }
    // A kind the server does not serve is a validation error, for record as for restore.
    let r = run(&[
        "record",
        "--ledger",
        &ledger,
        "--upgrade",
        "x",
        "--api-version",
        "example.com/v1",
        "--kind",
        "Gizmo",
        "-n",
        &ns,
        "g",
    ])
    .await;
    assert_eq!(r.code, 4, "{r:#?}");
}
