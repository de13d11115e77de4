//! API-level behaviour of the local control plane: RBAC with TokenRequest tokens and CRD schema
//! validation (the Rancher stand-in has its own tests in `rancher.rs`). One shared control plane;
//! one namespace per test.

mod common;

use std::time::Duration;

use common::{charts, create_chart, eventually};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use pause_ledger_kubeenv::ControlPlane;
use serde_json::json;

const WAIT: Duration = Duration::from_secs(10);

fn unpause() -> Patch<serde_json::Value> {
    Patch::Merge(json!({ "spec": { "paused": false } }))
}

#[tokio::test]
async fn service_account_needs_rbac_to_unpause() {
    let cp = ControlPlane::shared().unwrap();
    let ns = cp.namespace("rbac").await.unwrap();
    let admin = cp.admin_client().unwrap();
    create_chart(&admin, &ns, "harvester", json!({ "paused": true })).await.unwrap();

    let sa = cp.service_account_client(&ns, "restorer").await.unwrap();
    let sa_charts = charts(&sa, &ns);
    let denied = sa_charts.patch("harvester", &PatchParams::default(), &unpause()).await.unwrap_err();
    match denied {
        kube::Error::Api(s) => assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden")),
        other => panic!("expected 403, got {other:?}"),
    }

    let role = Role {
        metadata: ObjectMeta { name: Some("chart-restorer".into()), ..Default::default() },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["management.cattle.io".into()]),
            resources: Some(vec!["managedcharts".into()]),
            verbs: vec!["get".into(), "patch".into()],
            ..Default::default()
        }]),
    };
    let binding = RoleBinding {
        metadata: ObjectMeta { name: Some("chart-restorer".into()), ..Default::default() },
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "chart-restorer".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "restorer".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    let pp = PostParams::default();
    Api::<Role>::namespaced(admin.clone(), &ns).create(&pp, &role).await.unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), &ns).create(&pp, &binding).await.unwrap();

    // The RBAC authorizer sees new bindings through an informer: allow it a moment.
    eventually("patch allowed by the new Role", WAIT, || async {
        sa_charts.patch("harvester", &PatchParams::default(), &unpause()).await.ok()
    })
    .await;
    let stored = charts(&admin, &ns).get("harvester").await.unwrap();
    assert_eq!(stored.data["spec"]["paused"], json!(false));

    // The written kubeconfig authenticates as the same ServiceAccount.
    let path = cp.service_account_kubeconfig(&ns, "restorer").await.unwrap();
    let kubeconfig = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    assert_eq!(config.default_namespace, ns);
    let from_file = kube::Client::try_from(config).unwrap();
    charts(&from_file, &ns).get("harvester").await.unwrap();
    let list = charts(&from_file, &ns).list(&Default::default()).await;
    assert!(matches!(list, Err(kube::Error::Api(ref s)) if s.code == 403), "list is not granted: {list:?}");
}

#[tokio::test]
async fn schema_violations_are_rejected_with_422() {
    let cp = ControlPlane::shared().unwrap();
    let ns = cp.namespace("schema").await.unwrap();
    let admin = cp.admin_client().unwrap();
    for (name, spec, field) in [
        ("bad-paused", json!({ "paused": "yes" }), "spec.paused"),
        ("bad-timeout", json!({ "timeoutSeconds": "30" }), "spec.timeoutSeconds"),
    ] {
        let err = create_chart(&admin, &ns, name, spec).await.unwrap_err();
        match err {
            kube::Error::Api(s) => {
                assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"), "{s:?}");
                assert!(s.message.contains(field), "{field} not named in {:?}", s.message);
            }
            other => panic!("expected 422, got {other:?}"),
        }
    }
    // A valid chart with every documented field is accepted and keeps them.
    let spec = json!({
        "paused": true, "chart": "harvester", "repoName": "harvester-charts",
        "releaseName": "harvester", "version": "1.5.0", "timeoutSeconds": 600,
        "values": { "a": { "b": 1 } }, "force": false, "takeOwnership": true, "maxHistory": 5,
        "defaultNamespace": "harvester-system", "namespace": "harvester-system",
        "serviceAccount": "default", "diff": { "comparePatches": [] },
        "rolloutStrategy": { "maxUnavailable": "10%" },
        "targets": [{ "clusterName": "local" }],
    });
    let stored = create_chart(&admin, &ns, "good", spec.clone()).await.unwrap();
    assert_eq!(stored.data["spec"], spec);
}
