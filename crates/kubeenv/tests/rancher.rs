//! The Rancher/Fleet stand-in (a TEST DOUBLE) against the real kube-apiserver: one behaviour of
//! `/work/shared/RANCHER-FLEET.md` per test. One shared control plane; one namespace per test.

mod common;

use std::time::{Duration, Instant};

use common::{bundles, charts, cond, create_chart, eventually, json_of};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use pause_ledger_kubeenv::harvester::{self, managed_chart_spec};
use pause_ledger_kubeenv::rancher::{FIELD_MANAGER_RANCHER, bundle_name};
use pause_ledger_kubeenv::{ControlPlane, Mode, RancherStandIn};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(20);

async fn setup(prefix: &str) -> (kube::Client, String) {
    let cp = ControlPlane::shared().unwrap();
    let ns = cp.namespace(prefix).await.unwrap();
    (cp.admin_client().unwrap(), ns)
}

fn merge(field_manager: &str) -> PatchParams {
    PatchParams { field_manager: Some(field_manager.into()), ..Default::default() }
}

/// ManagedChart and Bundle as JSON.
async fn both(client: &kube::Client, ns: &str, chart: &str) -> (Value, Value) {
    let c = json_of(&charts(client, ns).get(chart).await.unwrap());
    let b = match bundles(client, ns).get_opt(&bundle_name(chart)).await.unwrap() {
        Some(b) => json_of(&b),
        None => Value::Null,
    };
    (c, b)
}

/// `status` of the Ready condition.
fn ready_status(obj: &Value) -> Option<String> {
    cond(obj, "Ready").and_then(|c| c["status"].as_str().map(str::to_string))
}

/// A chart whose Bundle is deployed and Ready, mirrored into the ManagedChart.
async fn ready_chart(client: &kube::Client, ns: &str, name: &str, version: &str) -> (Value, Value) {
    create_chart(client, ns, name, managed_chart_spec(name, version)).await.unwrap();
    let started = Instant::now();
    loop {
        let (c, b) = both(client, ns, name).await;
        let done = b["status"]["observedGeneration"] == b["metadata"]["generation"]
            && b["status"]["summary"]["ready"] == 1
            // Fleet's merge patch never sends a zero it did not change from: absent until it was 1.
            && b["status"]["unavailable"].as_i64().unwrap_or(0) == 0
            && c["status"]["observedGeneration"] == b["metadata"]["generation"]
            && c["status"]["summary"] == b["status"]["summary"];
        if done {
            return (c, b);
        }
        assert!(started.elapsed() < WAIT, "chart not deployed and mirrored:\n{c:#}\n{b:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn crds_are_structural_and_prune_unknown_fields() {
    let (client, ns) = setup("schema-prune").await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in ["managedcharts.management.cattle.io", "bundles.fleet.cattle.io"] {
        let crd = json_of(&crds.get(name).await.unwrap());
        let v = &crd["spec"]["versions"][0];
        for part in ["spec", "status"] {
            assert!(
                v["schema"]["openAPIV3Schema"]["properties"][part]["x-kubernetes-preserve-unknown-fields"].is_null()
            );
        }
        assert_eq!(v["subresources"], json!({ "status": {} }), "{name}");
    }
    let mc = json_of(&crds.get("managedcharts.management.cattle.io").await.unwrap());
    assert!(mc["spec"]["versions"][0]["additionalPrinterColumns"].is_null(), "wrangler adds no columns");

    let mut spec = managed_chart_spec("harvester", "1.0.0");
    spec["noSuchField"] = json!(1);
    spec["values"] = json!({ "free": { "form": true } });
    let created = json_of(&create_chart(&client, &ns, "harvester", spec).await.unwrap());
    assert!(created["spec"]["noSuchField"].is_null(), "unknown spec field kept: {created}");
    assert_eq!(created["spec"]["values"], json!({ "free": { "form": true } }), "values are free-form upstream too");
    let patched = charts(&client, &ns)
        .patch_status(
            "harvester",
            &merge("test"),
            &Patch::Merge(json!({ "status": { "bogus": 1, "display": { "bogus": 2, "state": "x" } } })),
        )
        .await
        .unwrap();
    let status = &json_of(&patched)["status"];
    assert!(status["bogus"].is_null() && status["display"]["bogus"].is_null(), "{status}");
    assert_eq!(status["display"]["state"], "x");

    let _rancher = RancherStandIn::spawn(client.clone(), &ns);
    let b =
        eventually("bundle", WAIT, || async { bundles(&client, &ns).get_opt("mcc-harvester").await.unwrap() }).await;
    let b = bundles(&client, &ns)
        .patch_status(
            b.metadata.name.as_deref().unwrap(),
            &merge("test"),
            &Patch::Merge(json!({ "status": { "bogus": 1, "summary": { "bogus": 2 } } })),
        )
        .await
        .unwrap();
    let status = &json_of(&b)["status"];
    assert!(status["bogus"].is_null() && status["summary"]["bogus"].is_null(), "{status}");
}

#[tokio::test]
async fn bundle_is_named_by_safe_concat_name_and_owned_by_its_chart() {
    let (client, ns) = setup("bundle-name").await;
    let _rancher = RancherStandIn::spawn(client.clone(), &ns);
    let long = "rancher-monitoring-crd-with-a-very-long-name-for-tests";
    let chart = json_of(&create_chart(&client, &ns, long, managed_chart_spec(long, "1.0.0")).await.unwrap());
    let expected = "mcc-rancher-monitoring-crd-with-a-very-long-nam-56e69";
    assert_eq!(bundle_name(long), expected);
    let b = eventually("bundle", WAIT, || async { bundles(&client, &ns).get_opt(expected).await.unwrap() }).await;
    assert!(bundles(&client, &ns).get_opt(&format!("mcc-{long}")).await.unwrap().is_none());
    let owner = &json_of(&b)["metadata"]["ownerReferences"];
    assert_eq!(
        owner,
        &json!([{
            "apiVersion": "management.cattle.io/v3", "kind": "ManagedChart", "name": long,
            "uid": chart["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true,
        }])
    );

    // The generating handler's Remove: the chart gone, its Bundle goes too.
    charts(&client, &ns).delete(long, &Default::default()).await.unwrap();
    eventually("bundle removed", WAIT, || async {
        bundles(&client, &ns).get_opt(expected).await.unwrap().is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn paused_is_copied_and_omitted_when_false() {
    let (client, ns) = setup("paused-copy").await;
    let _rancher = RancherStandIn::spawn(client.clone(), &ns);
    let (_, b) = ready_chart(&client, &ns, "harvester", "1.0.0").await;
    assert!(b["spec"].get("paused").is_none(), "{b}");

    harvester::pause_chart(&client, &ns, "harvester").await.unwrap();
    eventually("bundle paused", WAIT, || async {
        let (_, b) = both(&client, &ns, "harvester").await;
        (b["spec"]["paused"] == true).then_some(())
    })
    .await;

    // `kubectl patch --type merge` leaves `paused: false` on the ManagedChart; Rancher's Go
    // struct drops it from the Bundle.
    charts(&client, &ns)
        .patch("harvester", &merge("kubectl-patch"), &Patch::Merge(json!({ "spec": { "paused": false } })))
        .await
        .unwrap();
    let b = eventually("bundle unpaused", WAIT, || async {
        let (_, b) = both(&client, &ns, "harvester").await;
        (b["spec"]["paused"] != true).then_some(b)
    })
    .await;
    assert!(b["spec"].get("paused").is_none(), "absent, not false: {}", b["spec"]);
    let (c, _) = both(&client, &ns, "harvester").await;
    assert_eq!(c["spec"]["paused"], false);
}

#[tokio::test]
async fn observed_generation_is_the_bundle_generation() {
    let (client, ns) = setup("observed-gen").await;
    let _rancher = RancherStandIn::spawn(client.clone(), &ns);
    ready_chart(&client, &ns, "harvester", "1.0.0").await;
    // Spec changes Rancher does not copy into the Bundle: the chart's generation grows alone.
    for repo in ["a", "b", "c"] {
        charts(&client, &ns)
            .patch("harvester", &merge("test"), &Patch::Merge(json!({ "spec": { "repoName": repo } })))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (c, b) = both(&client, &ns, "harvester").await;
    assert_eq!(c["metadata"]["generation"], 4);
    assert_eq!(b["metadata"]["generation"], 1);
    assert_eq!(c["status"]["observedGeneration"], 1, "the Bundle's generation, not the chart's: {c}");

    // A version change reaches the Bundle: both grow by one, the gap stays.
    charts(&client, &ns)
        .patch("harvester", &merge("test"), &Patch::Merge(json!({ "spec": { "version": "1.1.0" } })))
        .await
        .unwrap();
    let (c, b) = eventually("new bundle generation mirrored", WAIT, || async {
        let (c, b) = both(&client, &ns, "harvester").await;
        (c["status"]["observedGeneration"] == 2 && c["status"]["unavailable"] == 0).then_some((c, b))
    })
    .await;
    assert_eq!((c["metadata"]["generation"].clone(), b["metadata"]["generation"].clone()), (json!(5), json!(2)));
    assert_eq!(b["status"]["observedGeneration"], 2);
}

#[tokio::test]
async fn status_is_copied_from_the_bundle_one_reconcile_late() {
    let (client, ns) = setup("status-copy").await;
    let _rancher = RancherStandIn::spawn(client.clone(), &ns);
    ready_chart(&client, &ns, "harvester", "1.0.0").await;
    charts(&client, &ns)
        .patch("harvester", &merge("test"), &Patch::Merge(json!({ "spec": { "version": "1.1.0" } })))
        .await
        .unwrap();
    // Sample both objects until the chart mirrors the new Bundle generation.
    let started = Instant::now();
    let mut lagging = None;
    loop {
        let (c, b) = both(&client, &ns, "harvester").await;
        let (mc_gen, b_gen) = (c["status"]["observedGeneration"].as_i64(), b["status"]["observedGeneration"].as_i64());
        if b_gen == Some(2) && mc_gen == Some(1) {
            lagging.get_or_insert((c.clone(), b.clone()));
        }
        if mc_gen == Some(2) {
            break;
        }
        assert!(started.elapsed() < WAIT, "chart never mirrored generation 2: {c}\n{b}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (c, b) = lagging.expect("Fleet had reconciled generation 2 while the chart still showed the old Bundle status");
    assert_eq!(c["spec"]["version"], "1.1.0");
    assert_eq!(b["spec"]["helm"]["version"], "1.1.0");
}

#[tokio::test]
async fn status_is_written_with_put_on_status() {
    let (client, ns) = setup("status-put").await;
    let _rancher = RancherStandIn::spawn(client.clone(), &ns);
    let (_, b) = ready_chart(&client, &ns, "harvester", "1.0.0").await;
    // Known fields the Bundle's status does not have: a merge patch of the copy would keep them.
    charts(&client, &ns)
        .patch_status(
            "harvester",
            &merge("test"),
            &Patch::Merge(json!({ "status": { "ociReference": "foreign", "display": { "readyClusters": "9/9" } } })),
        )
        .await
        .unwrap();
    let c = eventually("Rancher replaced the status", WAIT, || async {
        let (c, _) = both(&client, &ns, "harvester").await;
        (c["status"]["display"]["readyClusters"] == "1/1").then_some(c)
    })
    .await;
    assert!(c["status"]["ociReference"].is_null(), "wholesale copy, written with PUT: {}", c["status"]);
    assert_eq!(c["status"]["summary"], b["status"]["summary"]);
    let managed = c["metadata"]["managedFields"].as_array().unwrap();
    assert!(
        managed.iter().any(|m| m["manager"] == FIELD_MANAGER_RANCHER
            && m["subresource"] == "status"
            && m["operation"] == "Update"),
        "{managed:#?}"
    );
}

#[tokio::test]
async fn fleet_status_follows_the_summary() {
    let (client, ns) = setup("fleet-status").await;
    let _rancher = RancherStandIn::spawn(client.clone(), &ns);
    let (c, b) = ready_chart(&client, &ns, "harvester", "1.0.0").await;
    let s = &b["status"];
    assert_eq!(s["observedGeneration"], b["metadata"]["generation"]);
    assert_eq!(s["summary"], json!({ "ready": 1, "desiredReady": 1 }));
    assert_eq!(s["display"], json!({ "readyClusters": "1/1" }), "no state word when all is ready");
    assert_eq!(s["maxUnavailable"], 1);
    // Fleet's status merge patch leaves out a zero that was zero before: absent, read as 0.
    assert!(s["unavailable"].is_null(), "{s}");
    assert_eq!(c["status"]["unavailable"], 0, "Rancher's PUT of the Go struct writes every field");
    let ready = cond(&b, "Ready").unwrap();
    assert_eq!(ready["status"], "True");
    assert!(ready.get("message").is_none(), "{ready}");
    // The chart's status is the Bundle's plus `Defined`.
    let defined = cond(&c, "Defined").unwrap();
    assert_eq!(defined["status"], "True");
    assert_eq!(c["status"]["summary"], s["summary"]);
    assert_eq!(c["status"]["display"], s["display"]);

    // A chart without targets deploys nowhere: 0/0 and Ready.
    create_chart(&client, &ns, "untargeted", json!({ "chart": "untargeted", "version": "1" })).await.unwrap();
    let b = eventually("untargeted bundle reconciled", WAIT, || async {
        let (_, b) = both(&client, &ns, "untargeted").await;
        (b["status"]["observedGeneration"] == 1).then_some(b)
    })
    .await;
    assert_eq!(b["status"]["display"]["readyClusters"], "0/0");
    assert_eq!(ready_status(&b).as_deref(), Some("True"));
}

#[tokio::test]
async fn slow_rollout_reports_wait_applied_then_not_ready() {
    let (client, ns) = setup("slow").await;
    let rancher = RancherStandIn::spawn(client.clone(), &ns);
    ready_chart(&client, &ns, "harvester", "1.0.0").await;
    rancher.set_chart_mode("harvester", Mode::Slow(Duration::from_secs(3)));
    charts(&client, &ns)
        .patch("harvester", &merge("test"), &Patch::Merge(json!({ "spec": { "version": "1.1.0" } })))
        .await
        .unwrap();
    let mut states: Vec<(String, String)> = Vec::new();
    let started = Instant::now();
    loop {
        let (c, _) = both(&client, &ns, "harvester").await;
        let ready = cond(&c, "Ready").unwrap_or_default();
        let seen = (
            c["status"]["display"]["state"].as_str().unwrap_or_default().to_string(),
            ready["message"].as_str().unwrap_or_default().to_string(),
        );
        if states.last() != Some(&seen) {
            states.push(seen);
        }
        if c["status"]["observedGeneration"] == 2
            && c["status"]["summary"]["ready"] == 1
            && c["status"]["unavailable"] == 0
        {
            break;
        }
        assert!(started.elapsed() < WAIT, "{states:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let local = format!("[Cluster {ns}/local]");
    let wait_applied = ("WaitApplied".to_string(), format!("WaitApplied(1) {local}"));
    let not_ready = ("NotReady".to_string(), format!("NotReady(1) {local}"));
    let w = states.iter().position(|s| *s == wait_applied).unwrap_or_else(|| panic!("{states:?}"));
    let n = states.iter().position(|s| *s == not_ready).unwrap_or_else(|| panic!("{states:?}"));
    assert!(w < n, "{states:?}");
    assert!(started.elapsed() >= Duration::from_secs(3), "ready before the rollout ended");
}

#[tokio::test]
async fn stale_ready_reports_ready_while_unavailable() {
    let (client, ns) = setup("stale-ready").await;
    let rancher = RancherStandIn::spawn(client.clone(), &ns);
    ready_chart(&client, &ns, "harvester", "1.0.0").await;
    let before = both(&client, &ns, "harvester").await.0["status"]["observedGeneration"].as_i64().unwrap();
    rancher.set_chart_mode("harvester", Mode::StaleReady(Duration::from_secs(4)));
    let started = Instant::now();
    charts(&client, &ns)
        .patch("harvester", &merge("kubectl-patch"), &Patch::Merge(json!({ "spec": { "version": "1.1.0" } })))
        .await
        .unwrap();
    // rancher/fleet#5219: the new generation is observed, Ready=True and ready=1, yet the
    // deployment is not available.
    let c = eventually("stale Ready at the new generation", WAIT, || async {
        let (c, _) = both(&client, &ns, "harvester").await;
        (c["status"]["observedGeneration"].as_i64() > Some(before) && c["status"]["unavailable"] == 1).then_some(c)
    })
    .await;
    assert_eq!(ready_status(&c).as_deref(), Some("True"), "{}", c["status"]);
    assert_eq!(c["status"]["summary"]["ready"], 1);
    // Harvester's wait (with the 2026 `unavailable == 0` check) holds until the rollout is done.
    harvester::wait_managed_chart(&client, &ns, "harvester", "1.1.0", before, WAIT).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(4), "passed during the stale window");
}

#[tokio::test]
async fn chart_version_missing_leaves_the_bundle_untouched() {
    let (client, ns) = setup("no-version").await;
    let rancher = RancherStandIn::spawn(client.clone(), &ns);
    ready_chart(&client, &ns, "harvester", "1.0.0").await;
    harvester::pause_chart(&client, &ns, "harvester").await.unwrap();
    let paused = eventually("bundle paused", WAIT, || async {
        let (_, b) = both(&client, &ns, "harvester").await;
        (b["spec"]["paused"] == true).then_some(b)
    })
    .await;
    rancher.set_chart_mode("harvester", Mode::ChartVersionNotFound);
    charts(&client, &ns)
        .patch("harvester", &merge("kubectl-patch"), &Patch::Merge(json!({ "spec": { "paused": false } })))
        .await
        .unwrap();
    let c = eventually("Defined=False", WAIT, || async {
        let (c, _) = both(&client, &ns, "harvester").await;
        let defined = cond(&c, "Defined")?;
        (defined["status"] == "False").then_some(c)
    })
    .await;
    let defined = cond(&c, "Defined").unwrap();
    assert_eq!(defined["reason"], "Error");
    assert_eq!(defined["message"], "no chart version found for harvester-1.0.0");
    assert_eq!(ready_status(&c).as_deref(), Some("True"), "Ready keeps its stale value: {}", c["status"]);
    let (_, b) = both(&client, &ns, "harvester").await;
    assert_eq!(b["spec"]["paused"], true, "the Bundle was not applied");
    assert_eq!(b["metadata"]["generation"], paused["metadata"]["generation"]);

    // Requeued with exponential backoff (5 ms doubling): retries thin out instead of coming on
    // every 100 ms pass (which would make ~20 per window).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c1 = rancher.failed_reconciles("harvester");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c2 = rancher.failed_reconciles("harvester");
    assert!(c1 >= 5 && c2 - c1 <= 2, "{c1} failed reconciles in the first 2 s, {} in the next 2 s", c2 - c1);

    // The repository gets the version: the chart is enqueued and the unpause reaches Fleet.
    rancher.clear_chart_mode("harvester");
    eventually("the unpause reached the Bundle", WAIT, || async {
        let (_, b) = both(&client, &ns, "harvester").await;
        b["spec"].get("paused").is_none().then_some(())
    })
    .await;
    eventually("Defined=True", WAIT, || async {
        let (c, _) = both(&client, &ns, "harvester").await;
        let defined = cond(&c, "Defined")?;
        (defined["status"] == "True").then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_paused_fleet_cluster_blocks_rollout() {
    let (client, ns) = setup("cluster-paused").await;
    let rancher = RancherStandIn::spawn(client.clone(), &ns);
    ready_chart(&client, &ns, "harvester", "1.0.0").await;
    rancher.set_fleet_cluster_paused(true).await.unwrap();
    charts(&client, &ns)
        .patch("harvester", &merge("test"), &Patch::Merge(json!({ "spec": { "version": "1.1.0" } })))
        .await
        .unwrap();
    let local = format!("[Cluster {ns}/local]");
    let b = eventually("OutOfSync", WAIT, || async {
        let (_, b) = both(&client, &ns, "harvester").await;
        (b["status"]["observedGeneration"] == 2 && b["status"]["display"]["state"] == "OutOfSync").then_some(b)
    })
    .await;
    assert_eq!(b["status"]["summary"]["outOfSync"], 1);
    assert_eq!(b["status"]["summary"]["ready"], 0);
    let ready = cond(&b, "Ready").unwrap();
    assert_eq!(
        (ready["status"].as_str(), ready["message"].as_str()),
        (Some("False"), Some(&*format!("OutOfSync(1) {local}")))
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, b) = both(&client, &ns, "harvester").await;
    assert_eq!(b["status"]["display"]["state"], "OutOfSync", "rolled out while the cluster was paused");

    rancher.set_fleet_cluster_paused(false).await.unwrap();
    eventually("rolled out after the cluster resumed", WAIT, || async {
        let (_, b) = both(&client, &ns, "harvester").await;
        (b["status"]["summary"]["ready"] == 1 && b["status"]["unavailable"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_paused_bundle_stays_ready_until_its_content_changes() {
    let (client, ns) = setup("bundle-paused").await;
    let _rancher = RancherStandIn::spawn(client.clone(), &ns);
    ready_chart(&client, &ns, "harvester", "1.0.0").await;
    harvester::pause_chart(&client, &ns, "harvester").await.unwrap();
    let b = eventually("paused generation reconciled", WAIT, || async {
        let (_, b) = both(&client, &ns, "harvester").await;
        (b["spec"]["paused"] == true && b["status"]["observedGeneration"] == b["metadata"]["generation"]).then_some(b)
    })
    .await;
    assert_eq!(ready_status(&b).as_deref(), Some("True"), "paused, nothing staged: still Ready");
    charts(&client, &ns)
        .patch("harvester", &merge("test"), &Patch::Merge(json!({ "spec": { "version": "1.1.0" } })))
        .await
        .unwrap();
    eventually("staged change while paused: OutOfSync", WAIT, || async {
        let (_, b) = both(&client, &ns, "harvester").await;
        (b["status"]["display"]["state"] == "OutOfSync").then_some(())
    })
    .await;
}
