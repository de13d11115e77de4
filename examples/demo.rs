//! The demo: a local control plane, an interrupted Harvester upgrade, and pause-ledger
//! restoring exactly what the upgrade paused. Run it with `tools/demo` (builds the binary too).
//!
//! Usage: demo PATH-TO-pause-ledger-BINARY

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kubeenv::{ControlPlane, Mode, RancherStandIn, crds};
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
        // Shaped like Harvester's charts: they target the local cluster, so Fleet deploys them.
        mc.data = json!({"spec": kubeenv::harvester::managed_chart_spec(name, "1.5.0")});
        charts.create(&PostParams::default(), &mc).await?;
    }
    // TEST DOUBLE: stands in for Rancher's ManagedChart controller and Fleet (Bundles, status).
    let rancher = RancherStandIn::spawn(client.clone(), NS);
    wait_until(&charts, |c| c.pointer("/status/summary/ready") == Some(&json!(1))).await?;

    println!("\n== an administrator pauses rancher-logging-crd on purpose, before the upgrade");
    let admin = PatchParams { field_manager: Some("kubectl-patch".into()), ..Default::default() };
    charts.patch("rancher-logging-crd", &admin, &Patch::Merge(json!({"spec": {"paused": true}}))).await?;

    let kubeconfig = cp.kubeconfig_path().to_path_buf();
    let pl = |args: &[&str], kubeconfig: &std::path::Path| {
        println!("$ pause-ledger {}", args.join(" "));
        let mut c = std::process::Command::new(bin);
        c.args(args)
            .env("PAUSE_LEDGER_KUBECONFIG", kubeconfig)
            .env("PAUSE_LEDGER_PROGRESS", "never")
            .stdin(Stdio::null());
        let code = c.status().map(|s| s.code().unwrap_or(-1));
        if let Ok(code) = code {
            println!("(exit {code})\n");
        }
        code
    };
    let ledger = format!("{NS}/pause-ledger");
    println!(
        "\n== the upgrade {UPGRADE} pauses Harvester's charts through pause-ledger (marking each) and records the ledger"
    );
    pl(&["record", "--ledger", &ledger, "--upgrade", UPGRADE, "--preset", "harvester"], &kubeconfig)?;
    println!("== it bumps the charts to 1.6.0 while they are paused; harvester-crd 1.6.0 is not in the repository yet");
    rancher.set_chart_mode("harvester-crd", Mode::ChartVersionNotFound);
    for name in ["harvester", "harvester-crd", "rancher-monitoring-crd"] {
        charts.patch(name, &admin, &Patch::Merge(json!({"spec": {"version": "1.6.0"}}))).await?;
    }
    println!("== ...and the upgrade is cancelled. Its job dies; nothing unpauses the charts.");
    tokio::time::sleep(Duration::from_millis(500)).await;
    print_table(&client).await?;

    println!("\n== pause-ledger restore, as the least-privileged ServiceAccount the Helm hook uses");
    let hook = restricted_kubeconfig(cp, &client).await?;
    pl(&["restore", "--ledger", &ledger, "--dry-run"], &hook)?;
    let first = pl(&["restore", "--ledger", &ledger, "--propagation-window", "5s"], &hook)?;
    print_table(&client).await?;
    println!("   harvester-crd never reached its Bundle (Rancher says why, on condition Defined), so");
    println!("   harvester was held back: it must not roll out on top of stale CRDs.");

    println!(
        "\n== the repository gets harvester-crd 1.6.0; restore again, waiting for readiness the way Harvester judges it"
    );
    rancher.clear_chart_mode("harvester-crd");
    let second = pl(&["restore", "--ledger", &ledger, "--wait-ready=60s", "--fail-on-not-ready"], &hook)?;
    print_table(&client).await?;

    pl(&["status", "--ledger", &ledger], &hook)?;
    println!("== again: the status says done");
    let again = pl(&["restore", "--ledger", &ledger], &hook)?;
    if first != 3 || second != 0 || again != 0 {
        bail!("unexpected exit codes: {first}, {second}, {again} (want 3, 0, 0)");
    }
    Ok(())
}

/// Until every chart satisfies `ok`.
async fn wait_until(charts: &Api<DynamicObject>, ok: impl Fn(&Value) -> bool) -> anyhow::Result<()> {
    for _ in 0..200 {
        let mut all = true;
        for name in CHARTS {
            all &= ok(&serde_json::to_value(charts.get(name).await?)?);
        }
        if all {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the charts did not deploy")
}

/// A ServiceAccount with exactly what restore needs (the chart's rules): the ledger by name,
/// get/patch on charts, get on their Bundles, create on Events, and list on Harvester's
/// Upgrades (is one still running?).
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
    let system = kubeenv::harvester::HARVESTER_SYSTEM;
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), system);
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "pause-ledger"},
                "rules": [{"apiGroups": ["harvesterhci.io"], "resources": ["upgrades"], "verbs": ["list"]}]}))?,
        )
        .await?;
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> = Api::namespaced(client.clone(), system);
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
    println!(
        "\n{:<24} {:<8} {:<8} {:<20} {:<14} {:<8} {:<12} CONDITION",
        "MANAGEDCHART", "VERSION", "PAUSED", "MARK", "BUNDLE PAUSED", "READY", "UNAVAILABLE"
    );
    for name in CHARTS {
        let c = serde_json::to_value(charts.get(name).await?)?;
        let b = bundles.get_opt(&kubeenv::rancher::bundle_name(name)).await?.map(serde_json::to_value).transpose()?;
        let paused = c.pointer("/spec/paused").and_then(Value::as_bool).unwrap_or(false);
        let mark = c.pointer("/metadata/annotations/pause-ledger.io~1paused-by").and_then(Value::as_str).unwrap_or("-");
        // Rancher's Go struct omits `paused` when false: an existing Bundle without it runs.
        let bundle = b
            .as_ref()
            .map(|b| (b.pointer("/spec/paused").and_then(Value::as_bool) == Some(true)).to_string())
            .unwrap_or_else(|| "-".into());
        let ready = c
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|x| x["type"] == "Ready"))
            .and_then(|x| x["status"].as_str())
            .unwrap_or("-");
        let version = c.pointer("/spec/version").and_then(Value::as_str).unwrap_or("-");
        let summary = format!(
            "{}/{}",
            c.pointer("/status/summary/ready").and_then(Value::as_i64).unwrap_or(0),
            c.pointer("/status/summary/desiredReady").and_then(Value::as_i64).unwrap_or(0)
        );
        let unavailable = c.pointer("/status/unavailable").and_then(Value::as_i64).unwrap_or(0);
        println!(
            "{name:<24} {version:<8} {paused:<8} {mark:<20} {bundle:<14} {summary:<8} {unavailable:<12} Ready={ready}"
        );
    }
    Ok(())
}
