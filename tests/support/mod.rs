//! Shared helpers for the integration tests: one real control plane per test binary, one
//! namespace per test, the real `pause-ledger` binary run as a child process.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use kubeenv::{ControlPlane, crds};
use pause_ledger::kinds::FieldPath;
use pause_ledger::ownership::pause_patch;
use serde_json::{Value, json};

/// The upgrade id the tests record.
pub const UPGRADE: &str = "hvst-upgrade-test";

/// The shared control plane of this test binary, of the Kubernetes version `KUBEENV_KUBERNETES`
/// selects (default 1.34); which one is printed once.
pub fn cp() -> &'static ControlPlane {
    static ANNOUNCED: std::sync::Once = std::sync::Once::new();
    let cp = ControlPlane::shared().expect("control plane starts");
    ANNOUNCED.call_once(|| eprintln!("control plane: Kubernetes {} ({})", cp.server_version(), cp.server_url()));
    cp
}

/// An admin client.
pub fn admin() -> kube::Client {
    cp().admin_client().expect("admin client")
}

/// A fresh namespace for one test.
pub async fn namespace(prefix: &str) -> String {
    cp().namespace(prefix).await.expect("namespace")
}

/// The ManagedChart API in `ns`.
pub fn charts(ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(admin(), ns, &crds::managed_chart_resource())
}

/// Create a running (unpaused) ManagedChart that targets the local cluster, as Harvester's do
/// (without targets Fleet would deploy it nowhere).
pub async fn create_chart(ns: &str, name: &str) -> DynamicObject {
    let ar = crds::managed_chart_resource();
    let mut obj = DynamicObject::new(name, &ar).within(ns);
    obj.data = json!({"spec": {
        "chart": name, "version": "1.0.0", "paused": false, "targets": [{"clusterName": kubeenv::rancher::LOCAL_CLUSTER}],
    }});
    charts(ns).create(&PostParams::default(), &obj).await.expect("create chart")
}

/// Create many charts concurrently.
pub async fn create_charts(ns: &str, names: &[String]) {
    use futures::StreamExt;
    futures::stream::iter(names.iter())
        .map(|n| async move { create_chart(ns, n).await })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

/// Pause a chart the way the pause side does: mark + field manager `pause-ledger`, CAS. Rancher
/// writes the chart's status often while it rolls out, so a failed resourceVersion test is
/// retried on a fresh read.
pub async fn pause_as_upgrade(ns: &str, name: &str, upgrade: &str) {
    let api = charts(ns);
    let field = FieldPath::parse("spec.paused").expect("field");
    let access = pause_ledger::api::Access::new(admin(), Duration::from_secs(10));
    let path = format!("/apis/management.cattle.io/v3/namespaces/{ns}/managedcharts/{name}");
    for _ in 0..20 {
        let obj = api.get(name).await.expect("get chart");
        let value = serde_json::to_value(&obj).expect("json");
        let patch = pause_patch(&value, &field, upgrade).expect("pause patch").expect("not yet paused");
        match access.json_patch(name, &path, &patch, "pause-ledger", false).await {
            Ok(_) => return,
            Err(e) if e.is_failed_test() => {}
            Err(e) => panic!("pause as upgrade: {e:?}"),
        }
    }
    panic!("pause as upgrade: {ns}/{name} kept changing under 20 attempts");
}

/// Set `spec.paused` the way an administrator does with `kubectl patch --type merge`.
pub async fn set_paused_by_hand(ns: &str, name: &str, paused: bool) {
    charts(ns)
        .patch(
            name,
            &PatchParams { field_manager: Some("kubectl-patch".into()), ..Default::default() },
            &Patch::Merge(json!({"spec": {"paused": paused}})),
        )
        .await
        .expect("patch by hand");
}

/// Delete a chart.
pub async fn delete_chart(ns: &str, name: &str) {
    charts(ns).delete(name, &DeleteParams::default()).await.expect("delete");
}

/// A chart as JSON.
pub async fn chart(ns: &str, name: &str) -> Value {
    serde_json::to_value(charts(ns).get(name).await.expect("get chart")).expect("json")
}

/// `spec.paused` of a chart.
pub async fn paused(ns: &str, name: &str) -> bool {
    chart(ns, name).await.pointer("/spec/paused").and_then(Value::as_bool).unwrap_or(false)
}

/// resourceVersions of charts, to prove nothing was written.
pub async fn versions(ns: &str, names: &[&str]) -> Vec<String> {
    let mut v = Vec::new();
    for n in names {
        v.push(
            chart(ns, n).await.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or("").to_string(),
        );
    }
    v
}

/// Create (or replace) the ledger ConfigMap `ns/name` with `data`.
pub async fn write_ledger(ns: &str, name: &str, data: &[(&str, &str)]) {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin(), ns);
    let cm = k8s_openapi::api::core::v1::ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()),
        ..Default::default()
    };
    let _ = api.delete(name, &DeleteParams::default()).await;
    api.create(&PostParams::default(), &cm).await.expect("create ledger");
}

/// The ledger ConfigMap's data.
pub async fn ledger_data(ns: &str, name: &str) -> BTreeMap<String, String> {
    let api: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(admin(), ns);
    api.get(name).await.expect("get ledger").data.unwrap_or_default()
}

/// A full-form ledger document for ManagedCharts in `ns`.
pub fn full_ledger(ns: &str, names: &[&str]) -> String {
    let mut s = format!("version: pause-ledger/v1\nupgrade: {UPGRADE}\npausedAt: 2026-11-27T10:00:00Z\nentries:\n");
    for n in names {
        s.push_str(&format!("  - namespace: {ns}\n    name: {n}\n"));
    }
    s
}

/// What one run of the binary did.
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl std::fmt::Debug for Run {
    // Reports of thousands of entries would drown the failure message: keep the ends.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn clip(s: &str) -> String {
            if s.len() <= 4000 {
                return s.to_string();
            }
            let head: String = s.chars().take(1500).collect();
            let tail: String = s.chars().rev().take(2500).collect::<Vec<_>>().into_iter().rev().collect();
            format!("{head}\n[... {} bytes ...]\n{tail}", s.len() - 4000)
        }
        writeln!(f, "exit code {}", self.code)?;
        writeln!(f, "--- stdout\n{}", clip(&self.stdout))?;
        write!(f, "--- stderr\n{}", clip(&self.stderr))
    }
}

impl Run {
    /// stdout parsed as JSON (for `-o json`).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }

    /// Outcome per object name, from a JSON report.
    pub fn outcomes(&self) -> BTreeMap<String, String> {
        self.json()["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .map(|e| (e["object"]["name"].as_str().unwrap().to_string(), e["outcome"].as_str().unwrap().to_string()))
            .collect()
    }
}

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pause-ledger")
}

/// Run the binary with the admin kubeconfig.
pub async fn run(args: &[&str]) -> Run {
    run_as(cp().kubeconfig_path(), args).await
}

/// Run the binary with a given kubeconfig.
pub async fn run_as(kubeconfig: &Path, args: &[&str]) -> Run {
    let out = command(kubeconfig, args).output().await.expect("run pause-ledger");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `pause-ledger restore --ledger LEDGER -o json EXTRA...` with the admin kubeconfig.
pub async fn restore(ledger: &str, extra: &[&str]) -> Run {
    restore_as(cp().kubeconfig_path(), ledger, extra).await
}

/// `pause-ledger restore --ledger LEDGER -o json EXTRA...` with `kubeconfig`.
pub async fn restore_as(kubeconfig: &Path, ledger: &str, extra: &[&str]) -> Run {
    let mut args = vec!["restore", "--ledger", ledger, "-o", "json"];
    args.extend_from_slice(extra);
    run_as(kubeconfig, &args).await
}

/// The reasons of the Events pause-ledger created about object `name` in `ns`.
pub async fn event_reasons(ns: &str, name: &str) -> Vec<String> {
    let api: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(admin(), ns);
    let list = api.list(&Default::default()).await.expect("list events");
    list.items
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .filter(|e| e.reporting_component.as_deref() == Some("pause-ledger"))
        .filter_map(|e| e.reason)
        .collect()
}

/// A command for the binary (not started), stdout/stderr piped.
pub fn command(kubeconfig: &Path, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(bin());
    c.args(args)
        .env_clear()
        .env("PAUSE_LEDGER_KUBECONFIG", kubeconfig)
        .env("PAUSE_LEDGER_PROGRESS", "never")
        // No Rancher runs in most tests: Bundles never follow. Tests of propagation set it.
        .env("PAUSE_LEDGER_PROPAGATION_WINDOW", "0s")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// A kubeconfig for a ServiceAccount given `rules` (Role in `ns`, bound to it).
pub async fn service_account_with(ns: &str, sa: &str, rules: Value) -> PathBuf {
    let path = cp().service_account_kubeconfig(ns, sa).await.expect("sa kubeconfig");
    let roles: Api<DynamicObject> =
        Api::namespaced_with(admin(), ns, &ApiResource::erase::<k8s_openapi::api::rbac::v1::Role>(&()));
    let mut role = DynamicObject::new(sa, &ApiResource::erase::<k8s_openapi::api::rbac::v1::Role>(&())).within(ns);
    role.data = json!({"rules": rules});
    roles.create(&PostParams::default(), &role).await.expect("role");
    let rb_ar = ApiResource::erase::<k8s_openapi::api::rbac::v1::RoleBinding>(&());
    let bindings: Api<DynamicObject> = Api::namespaced_with(admin(), ns, &rb_ar);
    let mut rb = DynamicObject::new(sa, &rb_ar).within(ns);
    rb.data = json!({
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": sa},
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}],
    });
    bindings.create(&PostParams::default(), &rb).await.expect("rolebinding");
    path
}

/// RBAC rules the restore needs on a ledger `name` and ManagedCharts.
pub fn restore_rules(ledger: &str, chart_verbs: &[&str]) -> Value {
    json!([
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [ledger], "verbs": ["get", "patch"]},
        {"apiGroups": ["management.cattle.io"], "resources": ["managedcharts"], "verbs": chart_verbs},
    ])
}

/// Wait until `f` holds, polling; panics after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < end {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// `n` charts `<prefix>-NNN` in `ns`, created, paused by the upgrade, and listed in ledger
/// `ns/pause-ledger`. Returns the names and the ledger reference.
pub async fn seed_paused(ns: &str, prefix: &str, n: usize) -> (Vec<String>, String) {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    create_charts(ns, &names).await;
    use futures::StreamExt;
    futures::stream::iter(&names)
        .for_each_concurrent(16, |name| async move { pause_as_upgrade(ns, name, UPGRADE).await })
        .await;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    write_ledger(ns, "pause-ledger", &[("ledger.yaml", &full_ledger(ns, &refs))]).await;
    (names, format!("{ns}/pause-ledger"))
}

/// How many ManagedCharts in `ns` are paused.
pub async fn count_paused(ns: &str) -> usize {
    let list = charts(ns).list(&Default::default()).await.expect("list charts");
    list.items.iter().filter(|c| c.data.pointer("/spec/paused") == Some(&Value::Bool(true))).count()
}

/// A loopback fault proxy in front of the shared API server and an admin kubeconfig through it.
pub fn proxied(faults: fault_proxy::Faults) -> (fault_proxy::FaultProxy, PathBuf) {
    let proxy = fault_proxy::FaultProxy::start(cp().server_url(), cp().ca_pem(), faults).expect("proxy starts");
    let dir = std::env::temp_dir().join(format!("pl-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("proxy dir");
    let kubeconfig = proxy.write_kubeconfig(&dir, cp().admin_token()).expect("proxy kubeconfig");
    (proxy, kubeconfig)
}

/// Every request whose path contains `filter` delayed by 40-60 ms, so runs can be interrupted.
pub fn slowed(filter: &str) -> (fault_proxy::FaultProxy, PathBuf) {
    proxied(fault_proxy::Faults {
        seed: 5,
        latency_rate: 1.0,
        latency_min: Duration::from_millis(40),
        latency_max: Duration::from_millis(60),
        path_filter: Some(filter.into()),
        ..Default::default()
    })
}
