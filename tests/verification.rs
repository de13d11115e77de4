//! Verified means what Rancher, Fleet and Harvester mean (issue 13), against the stand-in that
//! behaves like upstream (`kubeenv::RancherStandIn` and `kubeenv::harvester`, TEST DOUBLES):
//! readiness judged the way Harvester judges it, propagation found by owner with Rancher's
//! cause, waves that wait, no restore under a running Harvester upgrade, and restores after a
//! Harvester upgrade interrupted at each point of its script.

mod support;

use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kubeenv::harvester::{self, UpgradeState};
use kubeenv::{Mode, RancherStandIn};
use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(40);
/// Tests that create Harvester `Upgrade` objects (cluster-wide in effect: harvester-system),
/// or restore Harvester's charts, run one at a time.
static HARVESTER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Harvester-shaped charts, running and deployed (Rancher mirrored their Bundles).
async fn deployed(ns: &str, names: &[&str]) {
    for n in names {
        let ar = kubeenv::crds::managed_chart_resource();
        let mut obj = DynamicObject::new(n, &ar).within(ns);
        obj.data = json!({"spec": harvester::managed_chart_spec(n, "1.5.0")});
        charts(ns).create(&PostParams::default(), &obj).await.unwrap();
    }
    for n in names {
        eventually(WAIT, "deployed", || async {
            let c = chart(ns, n).await;
            c.pointer("/status/observedGeneration").and_then(Value::as_i64) >= Some(1)
                && c.pointer("/status/summary/ready") == Some(&json!(1))
        })
        .await;
    }
}

/// Until Rancher carried the pause of `names` into their Bundles and mirrored them back.
async fn pause_mirrored(ns: &str, names: &[&str]) {
    let bundles: Api<DynamicObject> = Api::namespaced_with(admin(), ns, &kubeenv::crds::bundle_resource());
    for n in names {
        let name = kubeenv::rancher::bundle_name(n);
        eventually(WAIT, "paused Bundle mirrored", || async {
            let Ok(Some(b)) = bundles.get_opt(&name).await else { return false };
            let c = chart(ns, n).await;
            b.data.pointer("/spec/paused") == Some(&json!(true))
                && c.pointer("/status/observedGeneration") == Some(&json!(b.metadata.generation))
        })
        .await;
    }
}

/// Record the given charts (the recommended integration: pause through pause-ledger).
async fn record(ns: &str, upgrade: &str, names: &[&str]) -> Run {
    let ledger = format!("{ns}/pause-ledger");
    let mut args = vec!["record", "--ledger", &ledger, "--upgrade", upgrade, "--namespace", ns, "-o", "json"];
    args.extend_from_slice(names);
    let r = run(&args).await;
    assert_eq!(r.code, 0, "{r:#?}");
    r
}

fn entry(r: &Run, name: &str) -> Value {
    r.json()["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["object"]["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name}: {r:#?}"))
}

fn with_window(extra: &[&'static str]) -> Vec<&'static str> {
    let mut v = vec!["--propagation-window", "20s"];
    v.extend_from_slice(extra);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_judged_the_way_harvester_judges_it() {
    let ns = namespace("ready").await;
    let rancher = RancherStandIn::spawn(admin(), &ns);
    let names = ["good", "stale", "slow"];
    deployed(&ns, &names).await;
    record(&ns, "up-r", &names).await;
    pause_mirrored(&ns, &names).await;
    // fleet#5219: Ready=True and ready=1 while unavailable=1, for longer than we wait.
    rancher.set_chart_mode("stale", Mode::StaleReady(Duration::from_secs(30)));
    rancher.set_chart_mode("slow", Mode::Slow(Duration::from_secs(3)));
    // The upgrade's manifests bump each chart while it is paused: the Bundles stage a new
    // deployment that rolls out once unpaused.
    for n in names {
        charts(&ns)
            .patch(
                n,
                &PatchParams { field_manager: Some("kubectl-patch".into()), ..Default::default() },
                &Patch::Merge(json!({"spec": {"version": "1.6.0"}})),
            )
            .await
            .unwrap();
    }
    let r = restore(&format!("{ns}/pause-ledger"), &with_window(&["--wait-ready=12s", "--fail-on-not-ready"])).await;
    assert_eq!(r.code, 3, "{r:#?}");
    let good = entry(&r, "good");
    assert_eq!((good["outcome"].as_str(), good["ready"].as_bool()), (Some("restored"), Some(true)), "{good}");
    let before = good["observedGenerationBefore"].as_i64().expect("read before the patch");
    let now = chart(&ns, "good").await.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap();
    assert!(now > before, "ready only once observedGeneration grew past {before}: {now}");
    assert_eq!(entry(&r, "slow")["ready"], true, "{r:#?}");
    let stale = entry(&r, "stale");
    assert_eq!(stale["ready"], false, "{stale}");
    assert!(stale["readyMessage"].as_str().unwrap().contains("unavailable 1"), "{stale}");
    // The condition really said Ready=True: only unavailable told them apart.
    let c = chart(&ns, "stale").await;
    let ready = c["status"]["conditions"].as_array().unwrap().iter().find(|x| x["type"] == "Ready").unwrap().clone();
    assert_eq!(ready["status"], "True", "{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_chart_version_is_reported_from_defined_and_holds_back_the_next_order() {
    let _one = HARVESTER.lock().await;
    let ns = namespace("missing-version").await;
    let rancher = RancherStandIn::spawn(admin(), &ns);
    let names = ["harvester-crd", "harvester"];
    deployed(&ns, &names).await;
    record(&ns, "up-m", &names).await;
    pause_mirrored(&ns, &names).await;
    rancher.set_chart_mode("harvester-crd", Mode::ChartVersionNotFound);
    let ledger = format!("{ns}/pause-ledger");
    let r = restore(&ledger, &["--propagation-window", "4s"]).await;
    assert_eq!(r.code, 3, "{r:#?}");
    let crd = entry(&r, "harvester-crd");
    assert_eq!(crd["outcome"], "not-propagated", "{crd}");
    assert!(crd["error"].as_str().unwrap().contains("Defined=False (Error): no chart version found"), "{crd}");
    let h = entry(&r, "harvester");
    assert_eq!((h["outcome"].as_str(), h["cause"].as_str()), (Some("skipped"), Some("blocked")), "{h}");
    assert!(paused(&ns, "harvester").await, "harvester was rolled out on top of a chart that did not propagate");

    // The repository gets the version: the next restore propagates and lets harvester through.
    rancher.clear_chart_mode("harvester-crd");
    let r = restore(&ledger, &with_window(&[])).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(entry(&r, "harvester-crd")["propagated"], true);
    assert_eq!(entry(&r, "harvester")["outcome"], "restored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_gate_the_next_order_goes_on() {
    let _one = HARVESTER.lock().await;
    let ns = namespace("no-gate").await;
    let rancher = RancherStandIn::spawn(admin(), &ns);
    let names = ["harvester-crd", "harvester"];
    deployed(&ns, &names).await;
    record(&ns, "up-g", &names).await;
    pause_mirrored(&ns, &names).await;
    rancher.set_chart_mode("harvester-crd", Mode::ChartVersionNotFound);
    let r = restore(&format!("{ns}/pause-ledger"), &["--propagation-window", "3s", "--wave-gate", "none"]).await;
    assert_eq!(r.code, 3, "{r:#?}");
    assert_eq!(entry(&r, "harvester")["outcome"], "restored", "{r:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bundle_is_found_by_its_owner_and_a_missing_one_is_called_missing() {
    let ns = namespace("bundle-name").await;
    let mut rancher = RancherStandIn::spawn(admin(), &ns);
    let long = "a-chart-name-long-enough-that-rancher-hashes-its-bundle";
    deployed(&ns, &[long, "orphan"]).await;
    record(&ns, "up-b", &[long, "orphan"]).await;
    pause_mirrored(&ns, &[long, "orphan"]).await;
    assert_ne!(kubeenv::rancher::bundle_name(long), format!("mcc-{long}"));
    let ledger = format!("{ns}/pause-ledger");
    // The orphan's Bundle disappears and Rancher is gone: nothing will generate it again.
    rancher.stop();
    let bundles: Api<DynamicObject> = Api::namespaced_with(admin(), &ns, &kubeenv::crds::bundle_resource());
    bundles.delete(&kubeenv::rancher::bundle_name("orphan"), &Default::default()).await.unwrap();
    let _rancher = RancherStandIn::spawn(admin(), &ns);
    let r = restore(&ledger, &["--propagation-window", "3s", "--wave-gate", "none"]).await;
    assert_eq!(entry(&r, long)["propagated"], true, "{r:#?}");
    let orphan = entry(&r, "orphan");
    // The new stand-in regenerates it within the window, or the message says it is missing.
    if orphan["outcome"] == "not-propagated" {
        assert!(orphan["error"].as_str().unwrap().contains("does not exist"), "{orphan}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_unpaused_under_a_running_harvester_upgrade() {
    let _one = HARVESTER.lock().await;
    let system = ensure_namespace(harvester::HARVESTER_SYSTEM).await;
    let ns = namespace("upgrade-running").await;
    let _rancher = RancherStandIn::spawn(admin(), &ns);
    let names = ["harvester-crd", "harvester"];
    deployed(&ns, &names).await;
    record(&ns, "up-u", &names).await;
    let client = admin();
    harvester::create_upgrade(&client, &system, "hvst-upgrade-u", "v1.6.0", UpgradeState::Running).await.unwrap();
    let ledger = format!("{ns}/pause-ledger");
    let r = restore(&ledger, &[]).await;
    let r2 = run(&["rescue", "--preset", "harvester", "--namespace", &ns, "--acknowledge-unknown-ownership"]).await;
    harvester::set_upgrade_state(&client, &system, "hvst-upgrade-u", UpgradeState::Failed("cancelled".into()))
        .await
        .unwrap();
    let after_failure = restore(&ledger, &with_window(&[])).await;
    harvester::delete_upgrade(&client, &system, "hvst-upgrade-u").await.unwrap();
    assert_eq!(r.code, 11, "{r:#?}");
    assert!(r.json()["message"].as_str().unwrap().contains("harvester-system/hvst-upgrade-u"), "{r:#?}");
    assert_eq!(r2.code, 11, "{r2:#?}");
    assert_eq!(after_failure.code, 0, "a failed upgrade is over: {after_failure:#?}");
    assert!(!paused(&ns, "harvester").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_after_a_harvester_upgrade_interrupted_at_each_point() {
    let _one = HARVESTER.lock().await;
    let all = ["harvester", "harvester-crd", "rancher-monitoring-crd", "rancher-logging-crd"];
    let client = admin();
    // (point, what the upgrade did before it stopped)
    for point in ["after the pause", "after harvester-crd", "after harvester", "v1.5/v1.6 controller resumed"] {
        let ns = namespace("interrupted").await;
        let _rancher = RancherStandIn::spawn(admin(), &ns);
        deployed(&ns, &all).await;
        record(&ns, "hvst-upgrade-x", &all).await;
        pause_mirrored(&ns, &all).await;
        match point {
            "after harvester-crd" => {
                harvester::resume_chart_v1_7(&client, &ns, "harvester-crd", "1.6.0", None, WAIT).await.unwrap();
            }
            "after harvester" => {
                for n in ["harvester-crd", "harvester"] {
                    harvester::resume_chart_v1_7(&client, &ns, n, "1.6.0", None, WAIT).await.unwrap();
                }
            }
            "v1.5/v1.6 controller resumed" => {
                assert_eq!(harvester::resume_managed_charts(&client, &ns).await.unwrap().len(), 4);
            }
            _ => {}
        }
        let r =
            restore(&format!("{ns}/pause-ledger"), &with_window(&["--wait-ready=30s", "--fail-on-not-ready"])).await;
        assert_eq!(r.code, 0, "{point}: {r:#?}");
        for n in all {
            let e = entry(&r, n);
            assert!(matches!(e["outcome"].as_str(), Some("restored" | "already-running")), "{point}: {e}");
            assert_eq!((e["propagated"].as_bool(), e["ready"].as_bool()), (Some(true), Some(true)), "{point}: {e}");
            assert!(!paused(&ns, n).await, "{point}: {n}");
            assert_eq!(chart(&ns, n).await.pointer("/metadata/annotations/pause-ledger.io~1paused-by"), None);
        }
        assert!(r.json().get("warnings").is_none(), "{point}: {r:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harvesters_resume_controller_racing_the_restore_leaves_everything_running() {
    let _one = HARVESTER.lock().await;
    let all = ["harvester", "harvester-crd", "rancher-monitoring-crd", "rancher-logging-crd"];
    let ns = namespace("race").await;
    let _rancher = RancherStandIn::spawn(admin(), &ns);
    deployed(&ns, &all).await;
    record(&ns, "hvst-upgrade-race", &all).await;
    pause_mirrored(&ns, &all).await;
    let client = admin();
    let ledger = format!("{ns}/pause-ledger");
    let window = with_window(&[]);
    let (r, resumed) = tokio::join!(restore(&ledger, &window), harvester::resume_managed_charts(&client, &ns));
    // Its full Update may lose the race to our patch (409; Harvester requeues): either way is fine.
    if let Err(e) = resumed {
        assert!(e.to_string().contains("Conflict") || e.to_string().contains("409"), "{e}");
    }
    assert_eq!(r.code, 0, "{r:#?}");
    for n in all {
        assert!(!paused(&ns, n).await, "{n}");
        assert!(matches!(entry(&r, n)["outcome"].as_str(), Some("restored" | "already-running")), "{r:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upgrades_own_repause_through_pause_ledger_is_restored_an_admins_is_not() {
    let _one = HARVESTER.lock().await;
    let ns = namespace("v19").await;
    let _rancher = RancherStandIn::spawn(admin(), &ns);
    let names = ["harvester", "rancher-logging-crd"];
    deployed(&ns, &names).await;
    record(&ns, "hvst-upgrade-19", &names).await;
    pause_mirrored(&ns, &names).await;
    // v1.9: unpause harvester with a values patch and wait (the script), then pause it again —
    // through pause-ledger, the recommended integration (same upgrade id).
    let client = admin();
    let h = charts(&ns).get("harvester").await.unwrap();
    let before = h.data.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0);
    charts(&ns)
        .patch(
            "harvester",
            &PatchParams { field_manager: Some("kubectl-patch".into()), ..Default::default() },
            &Patch::Merge(json!({"spec": {"paused": false, "values": {"x": 1}}})),
        )
        .await
        .unwrap();
    harvester::wait_managed_chart(&client, &ns, "harvester", "1.5.0", before, WAIT).await.unwrap();
    record(&ns, "hvst-upgrade-19", &["harvester"]).await;
    // An administrator re-pauses the other chart by hand.
    set_paused_by_hand(&ns, "rancher-logging-crd", false).await;
    set_paused_by_hand(&ns, "rancher-logging-crd", true).await;
    let r = restore(&format!("{ns}/pause-ledger"), &with_window(&[])).await;
    assert_eq!(r.code, 0, "{r:#?}");
    assert_eq!(entry(&r, "harvester")["outcome"], "restored", "{r:#?}");
    assert!(!paused(&ns, "harvester").await);
    assert_eq!(entry(&r, "rancher-logging-crd")["outcome"], "not-ours", "{r:#?}");
    assert!(paused(&ns, "rancher-logging-crd").await, "an administrator's re-pause was undone");
    // The raw v1.9 script (kubectl patch) re-pause is an unknown writer's: kept, and said so.
    let raw = namespace("v19-raw").await;
    let _rancher2 = RancherStandIn::spawn(admin(), &raw);
    deployed(&raw, &["harvester"]).await;
    record(&raw, "hvst-upgrade-19", &["harvester"]).await;
    pause_mirrored(&raw, &["harvester"]).await;
    harvester::unpause_wait_repause_harvester_v1_9(&client, &raw, &json!({"x": 1}), WAIT).await.unwrap();
    let r = restore(&format!("{raw}/pause-ledger"), &with_window(&[])).await;
    let h = entry(&r, "harvester");
    assert_eq!(h["outcome"], "not-ours", "{h}");
    assert!(h["detail"].as_str().unwrap().contains("kubectl-patch"), "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chart_left_not_ready_is_a_warning_after_restore() {
    let _one = HARVESTER.lock().await;
    let ns = namespace("not-ready").await;
    let rancher = RancherStandIn::spawn(admin(), &ns);
    deployed(&ns, &["harvester", "rancher-monitoring"]).await;
    record(&ns, "up-w", &["harvester"]).await;
    pause_mirrored(&ns, &["harvester"]).await;
    // Another chart of the namespace, not in the ledger, is rolling out slowly.
    rancher.set_chart_mode("rancher-monitoring", Mode::Slow(Duration::from_secs(60)));
    charts(&ns)
        .patch("rancher-monitoring", &PatchParams::default(), &Patch::Merge(json!({"spec": {"version": "1.6.0"}})))
        .await
        .unwrap();
    eventually(WAIT, "rancher-monitoring not Ready", || async {
        chart(&ns, "rancher-monitoring").await["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "False")
    })
    .await;
    let r = restore(&format!("{ns}/pause-ledger"), &with_window(&[])).await;
    assert_eq!(r.code, 0, "{r:#?}");
    let warnings = r.json()["warnings"].clone();
    assert!(warnings.to_string().contains(&format!("{ns}/rancher-monitoring is not Ready")), "{r:#?}");
}

/// Create a namespace with a fixed name (harvester-system) if it does not exist.
async fn ensure_namespace(name: &str) -> String {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(admin());
    let ns = k8s_openapi::api::core::v1::Namespace {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        ..Default::default()
    };
    let _ = api.create(&PostParams::default(), &ns).await;
    name.to_string()
}
