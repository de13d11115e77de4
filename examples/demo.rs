//! The demo: a local control plane, an interrupted Harvester upgrade, and pause-ledger
//! restoring exactly what the upgrade paused. Run it with `tools/demo` (builds the binary too).
//!
//! Usage: demo PATH-TO-pause-ledger-BINARY
#![forbid(unsafe_code)]

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kubeenv::{ControlPlane, RancherStandIn, crds};
use pause_ledger::kinds::FieldPath;
use pause_ledger::kube_access::Access;
use pause_ledger::ownership::pause_patch;
use serde_json::{Value, json};

const NS: &str = "fleet-local";
const UPGRADE: &str = "hvst-upgrade-7xk2p";
const CHARTS: [&str; 4] = ["harvester", "harvester-crd", "rancher-monitoring-crd", "rancher-logging-crd"];

fn main() -> anyhow::Result<()> {
    let bin = std::env::args().nth(1).context("usage: demo PATH-TO-pause-ledger")?;
    println!("== starting a local control plane (etcd + kube-apiserver, built from source)");
    let cp = ControlPlane::start().context("starting the control plane")?;
    println!(
        "   Kubernetes {} (KUBEENV_KUBERNETES={}) ready in {:.1?} at {}",
        cp.server_version(),
        cp.kubernetes(),
        cp.startup_duration(),
        cp.server_url()
    );
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(demo(&cp, &bin));
    drop(rt);
    drop(cp);
    println!("== control plane stopped");
    result
}

async fn demo(cp: &ControlPlane, bin: &str) -> anyhow::Result<()> {
    let client = cp.admin_client()?;
    let ns_api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    ns_api.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": NS}}))?).await?;
    let charts: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &crds::managed_chart_resource());
    let ar = crds::managed_chart_resource();
    for name in CHARTS {
        let mut mc = DynamicObject::new(name, &ar).within(NS);
        mc.data = json!({"spec": {"chart": name, "version": "1.6.0", "paused": false}});
        charts.create(&PostParams::default(), &mc).await?;
    }
    // TEST DOUBLE: stands in for Rancher's ManagedChart controller (Bundles mcc-*, Ready).
    let _rancher = RancherStandIn::spawn(client.clone(), NS);
    tokio::time::sleep(Duration::from_millis(500)).await;

    println!("\n== an administrator pauses rancher-logging-crd on purpose, before the upgrade");
    charts
        .patch(
            "rancher-logging-crd",
            &PatchParams { field_manager: Some("kubectl-patch".into()), ..Default::default() },
            &Patch::Merge(json!({"spec": {"paused": true}})),
        )
        .await?;

    println!("== the upgrade {UPGRADE} pauses the charts it needs (marking each) and records the ledger");
    let access = Access::new(client.clone(), Duration::from_secs(10));
    let field = FieldPath::parse("spec.paused").map_err(anyhow::Error::msg)?;
    let mut entries = String::new();
    for name in ["harvester-crd", "rancher-monitoring-crd", "harvester"] {
        let obj = serde_json::to_value(charts.get(name).await?)?;
        let Some(patch) = pause_patch(&obj, &field, UPGRADE).map_err(anyhow::Error::msg)? else {
            bail!("{name} was already paused");
        };
        let path = format!("/apis/management.cattle.io/v3/namespaces/{NS}/managedcharts/{name}");
        access.json_patch(name, &path, &patch, "pause-ledger", false).await?;
        entries.push_str(&format!("  - namespace: {NS}\n    name: {name}\n"));
    }
    let ledger = format!(
        "version: pause-ledger/v1\nupgrade: {UPGRADE}\npausedAt: {}\nentries:\n{entries}pausedBefore:\n  - namespace: {NS}\n    name: rancher-logging-crd\n",
        jiff::Timestamp::now()
    );
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), NS);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "pause-ledger"}, "data": {"ledger.yaml": ledger}}))?,
    )
    .await?;
    println!("\n--- ledger.yaml (ConfigMap {NS}/pause-ledger)\n{ledger}---");
    println!("== ...and the upgrade is cancelled. Its job dies; nothing unpauses the charts.");
    tokio::time::sleep(Duration::from_millis(500)).await;
    print_table(&client).await?;

    println!("\n== pause-ledger restore (as the least-privileged ServiceAccount the Helm hook uses)");
    let kubeconfig = restricted_kubeconfig(cp, &client).await?;
    let run = |extra: &'static [&'static str]| {
        let mut c = std::process::Command::new(bin);
        c.args(["restore", "--ledger", &format!("{NS}/pause-ledger"), "--progress", "never"])
            .args(extra)
            .env("PAUSE_LEDGER_KUBECONFIG", &kubeconfig)
            .stdin(Stdio::null());
        c
    };
    println!("$ pause-ledger restore --ledger {NS}/pause-ledger --dry-run");
    let status = run(&["--dry-run"]).status()?;
    println!("(exit {})\n", status.code().unwrap_or(-1));
    println!("$ pause-ledger restore --ledger {NS}/pause-ledger");
    let status = run(&[]).status()?;
    println!("(exit {})", status.code().unwrap_or(-1));
    tokio::time::sleep(Duration::from_millis(700)).await;
    print_table(&client).await?;

    println!("\n$ pause-ledger status --ledger {NS}/pause-ledger");
    std::process::Command::new(bin)
        .args(["status", "--ledger", &format!("{NS}/pause-ledger")])
        .env("PAUSE_LEDGER_KUBECONFIG", &kubeconfig)
        .status()?;
    println!("\n$ pause-ledger restore --ledger {NS}/pause-ledger   # again: the status says done");
    let again = run(&[]).status()?;
    println!("(exit {})", again.code().unwrap_or(-1));
    if status.code() != Some(0) || again.code() != Some(0) {
        bail!("restore did not succeed");
    }
    Ok(())
}

/// A ServiceAccount with exactly what restore needs (the chart's rules): the ledger by name,
/// get/patch on charts, get on their Bundles, create on Events.
async fn restricted_kubeconfig(cp: &ControlPlane, client: &kube::Client) -> anyhow::Result<std::path::PathBuf> {
    let path = cp.service_account_kubeconfig(NS, "pause-ledger").await?;
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), NS);
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "pause-ledger"},
                "rules": [
                    {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["pause-ledger"], "verbs": ["get", "patch"]},
                    {"apiGroups": ["management.cattle.io"], "resources": ["managedcharts"], "verbs": ["get", "patch"]},
                    // Propagation check: Rancher's generated Bundles, read only.
                    {"apiGroups": ["fleet.cattle.io"], "resources": ["bundles"], "verbs": ["get"]},
                    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
                ],
            }))?,
        )
        .await?;
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(client.clone(), NS);
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "pause-ledger"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pause-ledger"},
                "subjects": [{"kind": "ServiceAccount", "name": "pause-ledger", "namespace": NS}],
            }))?,
        )
        .await?;
    Ok(path)
}

async fn print_table(client: &kube::Client) -> anyhow::Result<()> {
    let charts: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &crds::managed_chart_resource());
    let bundles: Api<DynamicObject> = Api::namespaced_with(client.clone(), NS, &crds::bundle_resource());
    println!("{:<24} {:<8} {:<22} {:<16} READY", "MANAGEDCHART", "PAUSED", "MARK", "BUNDLE PAUSED");
    for name in CHARTS {
        let c = serde_json::to_value(charts.get(name).await?)?;
        let b = bundles.get_opt(&format!("mcc-{name}")).await?.map(serde_json::to_value).transpose()?;
        let paused = c.pointer("/spec/paused").and_then(Value::as_bool).unwrap_or(false);
        let mark = c.pointer("/metadata/annotations/pause-ledger.io~1paused-by").and_then(Value::as_str).unwrap_or("-");
        let bundle = b
            .as_ref()
            .and_then(|b| b.pointer("/spec/paused"))
            .and_then(Value::as_bool)
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into());
        let ready = c
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|x| x["type"] == "Ready"))
            .and_then(|x| x["status"].as_str())
            .unwrap_or("-");
        println!("{name:<24} {paused:<8} {mark:<22} {bundle:<16} {ready}");
    }
    Ok(())
}
