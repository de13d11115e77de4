//! The Harvester TEST DOUBLES (Upgrade object, `resumeManagedCharts`, upgrade script steps)
//! against the real kube-apiserver, with the Rancher/Fleet stand-in where charts must roll out.

mod common;

use std::time::{Duration, Instant};

use common::{bundles, charts, cond, create_chart, eventually, json_of};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use pause_ledger_kubeenv::harvester::{
    self, FIELD_MANAGER_KUBECTL_PATCH, LATEST_UPGRADE_LABEL, PAUSED_SINCE_V1_2, PAUSED_V1_2_TO_V1_4_3,
    RESUME_ORDER_V1_7, UPGRADE_STATE_LABEL, UpgradeState, managed_chart_spec,
};
use pause_ledger_kubeenv::{ControlPlane, Mode, RancherStandIn};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);

async fn setup(prefix: &str) -> (kube::Client, String) {
    let cp = ControlPlane::shared().unwrap();
    let ns = cp.namespace(prefix).await.unwrap();
    (cp.admin_client().unwrap(), ns)
}

async fn chart(client: &kube::Client, ns: &str, name: &str) -> Value {
    json_of(&charts(client, ns).get(name).await.unwrap())
}

/// The managers that wrote `spec` of an object.
fn spec_managers(obj: &Value) -> Vec<String> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["fieldsV1"].get("f:spec").is_some())
        .map(|m| {
            format!("{}/{}", m["manager"].as_str().unwrap_or_default(), m["operation"].as_str().unwrap_or_default())
        })
        .collect()
}

/// Creates Harvester-shaped charts and waits until each is deployed and mirrored.
async fn deployed_charts(client: &kube::Client, ns: &str, names: &[&str], version: &str) {
    for n in names {
        create_chart(client, ns, n, managed_chart_spec(n, version)).await.unwrap();
    }
    for n in names {
        eventually("deployed", WAIT, || async {
            let c = chart(client, ns, n).await;
            (c["status"]["observedGeneration"].as_i64() >= Some(1) && c["status"]["summary"]["ready"] == 1)
                .then_some(())
        })
        .await;
    }
}

/// Waits until chart `name`'s Bundle is paused and the chart mirrors that Bundle generation (the
/// script reads `observedGeneration` before its patch; earlier it would read a stale one).
async fn paused_and_mirrored(client: &kube::Client, ns: &str, name: &str) -> Value {
    eventually("paused Bundle mirrored", WAIT, || async {
        let b = json_of(&bundles(client, ns).get(&format!("mcc-{name}")).await.unwrap());
        let c = chart(client, ns, name).await;
        let done = b["spec"]["paused"] == true
            && b["status"]["observedGeneration"] == b["metadata"]["generation"]
            && c["status"]["observedGeneration"] == b["metadata"]["generation"];
        done.then_some(b)
    })
    .await
}

#[tokio::test]
async fn upgrade_objects_carry_their_state_in_label_and_condition() {
    let (client, ns) = setup("upgrade-object").await;
    let up = harvester::create_upgrade(&client, &ns, "hvst-upgrade-1", "v1.6.0", UpgradeState::Running).await.unwrap();
    let v = json_of(&up);
    assert_eq!(v["metadata"]["labels"][LATEST_UPGRADE_LABEL], "true");
    assert_eq!(v["metadata"]["labels"][UPGRADE_STATE_LABEL], "UpgradingSystemServices");
    assert_eq!(cond(&v, "Completed").unwrap()["status"], "Unknown");
    assert_eq!(v["spec"]["logEnabled"], true, "defaulted by the schema");
    assert!(harvester::is_running(&up));

    // Found the way Harvester's docs list the ongoing upgrade.
    let lp = ListParams::default().labels(&format!("{LATEST_UPGRADE_LABEL}=true"));
    let listed = harvester::upgrades(&client, &ns).list(&lp).await.unwrap();
    assert_eq!(listed.items.len(), 1);

    let done = harvester::set_upgrade_state(&client, &ns, "hvst-upgrade-1", UpgradeState::Succeeded).await.unwrap();
    let v = json_of(&done);
    assert_eq!(v["metadata"]["labels"][UPGRADE_STATE_LABEL], "Succeeded");
    assert_eq!(cond(&v, "Completed").unwrap()["status"], "True");
    assert!(!harvester::is_running(&done));

    let failed =
        harvester::set_upgrade_state(&client, &ns, "hvst-upgrade-1", UpgradeState::Failed("job failed".into()))
            .await
            .unwrap();
    let v = json_of(&failed);
    assert_eq!(v["metadata"]["labels"][UPGRADE_STATE_LABEL], "Failed");
    let completed = cond(&v, "Completed").unwrap();
    assert_eq!((completed["status"].as_str(), completed["reason"].as_str()), (Some("False"), Some("job failed")));
    // Written with a full Update: no status subresource, as upstream.
    let managed = v["metadata"]["managedFields"].as_array().unwrap();
    assert!(managed.iter().all(|m| m.get("subresource").is_none()), "{managed:#?}");

    let unlabelled = harvester::set_latest(&client, &ns, "hvst-upgrade-1", false).await.unwrap();
    assert!(json_of(&unlabelled)["metadata"]["labels"].get(LATEST_UPGRADE_LABEL).is_none());
    assert!(harvester::upgrades(&client, &ns).list(&lp).await.unwrap().items.is_empty());

    // The structural schema prunes what the Go type does not have.
    let pp = PatchParams::default();
    let patched = harvester::upgrades(&client, &ns)
        .patch("hvst-upgrade-1", &pp, &Patch::Merge(json!({ "status": { "bogus": 1 }, "spec": { "bogus": 2 } })))
        .await
        .unwrap();
    let v = json_of(&patched);
    assert!(v["status"]["bogus"].is_null() && v["spec"]["bogus"].is_null(), "{v}");

    harvester::delete_upgrade(&client, &ns, "hvst-upgrade-1").await.unwrap();
    assert!(harvester::upgrades(&client, &ns).get_opt("hvst-upgrade-1").await.unwrap().is_none());
}

#[tokio::test]
async fn pause_step_is_a_kubectl_merge_patch_of_the_charts_that_exist() {
    let (client, ns) = setup("pause-step").await;
    for n in PAUSED_SINCE_V1_2 {
        create_chart(&client, &ns, n, managed_chart_spec(n, "1.4.3")).await.unwrap();
    }
    // v1.2–v1.4.3 name six charts; the two optional ones do not exist here.
    let paused = harvester::pause_charts(&client, &ns, &PAUSED_V1_2_TO_V1_4_3).await.unwrap();
    assert_eq!(paused, PAUSED_SINCE_V1_2);
    for n in PAUSED_SINCE_V1_2 {
        let c = chart(&client, &ns, n).await;
        assert_eq!(c["spec"]["paused"], true);
        assert!(
            spec_managers(&c).contains(&format!("{FIELD_MANAGER_KUBECTL_PATCH}/Update")),
            "{n}: {:?}",
            spec_managers(&c)
        );
    }
    // Like `kubectl patch` on a missing object.
    assert!(harvester::pause_chart(&client, &ns, "rancher-logging").await.is_err());
}

#[tokio::test]
async fn resume_managed_charts_updates_only_paused_named_charts() {
    let (client, ns) = setup("resume-ctrl").await;
    let _rancher = RancherStandIn::spawn(client.clone(), &ns);
    deployed_charts(&client, &ns, &["harvester", "harvester-crd", "custom"], "1.6.0").await;
    harvester::pause_chart(&client, &ns, "harvester").await.unwrap();
    harvester::pause_chart(&client, &ns, "custom").await.unwrap();
    eventually("paused bundles", WAIT, || async {
        let b = json_of(&bundles(&client, &ns).get("mcc-harvester").await.unwrap());
        (b["spec"]["paused"] == true).then_some(())
    })
    .await;

    let resumed = harvester::resume_managed_charts(&client, &ns).await.unwrap();
    assert_eq!(resumed, ["harvester"], "harvester-crd is not paused, custom is not in the list");
    let h = chart(&client, &ns, "harvester").await;
    assert!(h["spec"].get("paused").is_none(), "Go omitempty removes the key: {}", h["spec"]);
    // A full Update of the listed object: it carries that object's managedFields along, as
    // Harvester's Go client does, so no manager of its own shows up; kubectl-patch owned the
    // removed key and is gone from spec.
    assert!(!spec_managers(&h).iter().any(|m| m.starts_with(FIELD_MANAGER_KUBECTL_PATCH)), "{:?}", spec_managers(&h));
    assert_eq!(chart(&client, &ns, "custom").await["spec"]["paused"], true, "a pause it does not know about stays");
    eventually("the resume reached the Bundle", WAIT, || async {
        let b = json_of(&bundles(&client, &ns).get("mcc-harvester").await.unwrap());
        b["spec"].get("paused").is_none().then_some(())
    })
    .await;

    // A failed List is swallowed: nothing resumed, no error.
    let cp = ControlPlane::shared().unwrap();
    let no_list = cp.service_account_client(&ns, "no-rbac").await.unwrap();
    assert_eq!(harvester::resume_managed_charts(&no_list, &ns).await.unwrap(), Vec::<String>::new());

    // The first failed Update ends the pass: a client that may list but not update.
    harvester::pause_chart(&client, &ns, "harvester").await.unwrap();
    let list_only = list_only_client(&client, &ns).await;
    let err = harvester::resume_managed_charts(&list_only, &ns).await.unwrap_err();
    assert!(err.to_string().contains("forbidden"), "{err}");
    assert_eq!(chart(&client, &ns, "harvester").await["spec"]["paused"], true);
}

/// A ServiceAccount client allowed to get/list ManagedCharts in `ns`, nothing else.
async fn list_only_client(admin: &kube::Client, ns: &str) -> kube::Client {
    let role = Role {
        metadata: ObjectMeta { name: Some("list-charts".into()), ..Default::default() },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["management.cattle.io".into()]),
            resources: Some(vec!["managedcharts".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some("list-charts".into()), ..Default::default() },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "list-charts".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "lister".into(),
            namespace: Some(ns.into()),
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), ns).create(&PostParams::default(), &role).await.unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), ns).create(&PostParams::default(), &binding).await.unwrap();
    let client = ControlPlane::shared().unwrap().service_account_client(ns, "lister").await.unwrap();
    // The RBAC authorizer sees new bindings through an informer: allow it a moment.
    eventually("list allowed", WAIT, || async { charts(&client, ns).list(&ListParams::default()).await.ok() }).await;
    client
}

#[tokio::test]
async fn v1_7_resume_waits_in_order_for_each_new_bundle_generation() {
    let (client, ns) = setup("resume-v17").await;
    let rancher = RancherStandIn::spawn(client.clone(), &ns);
    deployed_charts(&client, &ns, &PAUSED_SINCE_V1_2, "1.6.0").await;
    harvester::pause_charts(&client, &ns, &PAUSED_SINCE_V1_2).await.unwrap();
    for n in PAUSED_SINCE_V1_2 {
        paused_and_mirrored(&client, &ns, n).await;
    }
    // harvester rolls out slowly; its wait must cover the whole rollout.
    rancher.set_chart_mode("harvester", Mode::StaleReady(Duration::from_secs(2)));
    let started = Instant::now();
    harvester::resume_all_v1_7(&client, &ns, "1.7.0", WAIT).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(2), "harvester's stale Ready passed the wait");
    let mut resumed_at = Vec::new();
    for n in RESUME_ORDER_V1_7 {
        let c = chart(&client, &ns, n).await;
        assert_eq!((c["spec"]["version"].as_str(), c["spec"]["paused"].as_bool()), (Some("1.7.0"), Some(false)));
        assert_eq!(c["spec"]["timeoutSeconds"], 601, "bumped to force a new generation");
        assert_eq!((c["status"]["summary"]["ready"].as_i64(), c["status"]["unavailable"].as_i64()), (Some(1), Some(0)));
        let b = json_of(&bundles(&client, &ns).get(&format!("mcc-{n}")).await.unwrap());
        assert!(b["spec"].get("paused").is_none() && b["spec"]["helm"]["version"] == "1.7.0", "{n}: {}", b["spec"]);
        // When the kubectl patch landed, from managedFields.
        let t = c["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["manager"] == FIELD_MANAGER_KUBECTL_PATCH && m["fieldsV1"]["f:spec"].get("f:version").is_some())
            .map(|m| m["time"].as_str().unwrap().to_string())
            .unwrap();
        resumed_at.push(t);
    }
    let mut sorted = resumed_at.clone();
    sorted.sort();
    assert_eq!(resumed_at, sorted, "resumed in order");
}

#[tokio::test]
async fn v1_9_step_unpauses_waits_and_pauses_harvester_again() {
    let (client, ns) = setup("repause-v19").await;
    let _rancher = RancherStandIn::spawn(client.clone(), &ns);
    deployed_charts(&client, &ns, &["harvester"], "1.9.0").await;
    harvester::pause_chart(&client, &ns, "harvester").await.unwrap();
    let paused = paused_and_mirrored(&client, &ns, "harvester").await;
    let values = json!({ "upgrade": { "step": "v1.9" } });
    let after = harvester::unpause_wait_repause_harvester_v1_9(&client, &ns, &values, WAIT).await.unwrap();
    let a = json_of(&after);
    assert_eq!(a["spec"]["paused"], true, "paused again by the upgrade itself");
    assert_eq!(a["spec"]["values"], values);
    // The Bundle went through an unpaused generation with the new values before the re-pause.
    let b = eventually("bundle paused again", WAIT, || async {
        let b = json_of(&bundles(&client, &ns).get("mcc-harvester").await.unwrap());
        (b["spec"]["paused"] == true && b["metadata"]["generation"].as_i64() >= Some(3)).then_some(b)
    })
    .await;
    assert_eq!(b["spec"]["helm"]["values"], values);
    assert!(b["metadata"]["generation"].as_i64() >= paused["metadata"]["generation"].as_i64().map(|g| g + 2));
}
