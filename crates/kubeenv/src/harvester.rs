//! TEST DOUBLES of Harvester's side of a chart pause, which cannot run here: the `Upgrade`
//! object, the v1.5.1/v1.6 controller's `resumeManagedCharts`, and the upgrade script's pause
//! and resume steps, as plain functions against the API server.
//!
//! Sources: harvester `pkg/apis/harvesterhci.io/v1beta1/upgrade.go`,
//! `pkg/controller/master/upgrade/upgrade_controller.go`,
//! `package/upgrade/upgrade_manifests.sh`, `pkg/webhook/resources/machine/validator.go`, and
//! `/work/shared/RANCHER-FLEET.md` for the script steps of versions not in the source index.

use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::rancher::status_now;
use crate::{Error, crds};

/// The namespace of Harvester's `Upgrade` objects.
pub const HARVESTER_SYSTEM: &str = "harvester-system";
/// Label of the current upgrade (`harvesterLatestUpgradeLabel`).
pub const LATEST_UPGRADE_LABEL: &str = "harvesterhci.io/latestUpgrade";
/// Label with the upgrade's phase (`upgradeStateLabel`).
pub const UPGRADE_STATE_LABEL: &str = "harvesterhci.io/upgradeState";
/// The `Upgrade` condition Harvester's webhook reads: `Unknown` while the upgrade runs.
pub const COMPLETED_CONDITION: &str = "Completed";
/// Field manager of `kubectl patch` (the upgrade script).
pub const FIELD_MANAGER_KUBECTL_PATCH: &str = "kubectl-patch";
/// Field manager of Harvester's controller (client-go names it after the binary).
pub const FIELD_MANAGER_HARVESTER: &str = "harvester";

/// Charts the upgrade script pauses since v1.2, in namespace `fleet-local`.
pub const PAUSED_SINCE_V1_2: [&str; 4] =
    ["harvester", "harvester-crd", "rancher-monitoring-crd", "rancher-logging-crd"];
/// v1.2–v1.4.3: also `rancher-monitoring` and `rancher-logging` when they still existed.
pub const PAUSED_V1_2_TO_V1_4_3: [&str; 6] = [
    "harvester",
    "harvester-crd",
    "rancher-monitoring-crd",
    "rancher-logging-crd",
    "rancher-monitoring",
    "rancher-logging",
];
/// v1.0–v1.1.
pub const PAUSED_V1_0_TO_V1_1: [&str; 4] =
    ["harvester", "harvester-crd", "rancher-monitoring", "rancher-monitoring-crd"];
/// The names `resumeManagedCharts` (v1.5.1/v1.6) resumes, whoever paused them.
pub const RESUMED_BY_CONTROLLER: [&str; 4] = PAUSED_SINCE_V1_2;
/// The normal path's resume order (v1.7+), each followed by `wait_managed_chart`.
pub const RESUME_ORDER_V1_7: [&str; 4] =
    ["harvester-crd", "harvester", "rancher-monitoring-crd", "rancher-logging-crd"];

/// How often the script steps poll (the script sleeps 5 s; tests need less).
const POLL: Duration = Duration::from_millis(200);

/// The phase of an `Upgrade` (`setUpgradeCompletedCondition` and the state label).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpgradeState {
    /// `Completed=Unknown`, label `UpgradingSystemServices` (the phase whose manifests job
    /// pauses and resumes the charts).
    Running,
    /// `Completed=True`, label `Succeeded`.
    Succeeded,
    /// `Completed=False` with this reason, label `Failed`.
    Failed(String),
}

impl UpgradeState {
    fn label(&self) -> &'static str {
        match self {
            UpgradeState::Running => "UpgradingSystemServices",
            UpgradeState::Succeeded => "Succeeded",
            UpgradeState::Failed(_) => "Failed",
        }
    }

    fn condition(&self) -> (&'static str, &str) {
        match self {
            UpgradeState::Running => ("Unknown", ""),
            UpgradeState::Succeeded => ("True", ""),
            UpgradeState::Failed(reason) => ("False", reason),
        }
    }
}

/// The `Upgrade` API in `ns`.
pub fn upgrades(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &crds::harvester_upgrade_resource())
}

fn charts(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &crds::managed_chart_resource())
}

/// Sets the state label and the `Completed` condition the way Harvester's controller does
/// (wrangler condition helpers: `lastUpdateTime` touched on change).
fn apply_state(upgrade: &mut DynamicObject, state: &UpgradeState) {
    upgrade.metadata.labels.get_or_insert_default().insert(UPGRADE_STATE_LABEL.into(), state.label().into());
    let (status, reason) = state.condition();
    let now = status_now();
    let conditions = &mut upgrade.data["status"]["conditions"];
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    if let Value::Array(list) = conditions {
        let i = match list.iter().position(|c| c["type"] == COMPLETED_CONDITION) {
            Some(i) => i,
            None => {
                list.push(json!({ "type": COMPLETED_CONDITION, "status": "Unknown", "lastUpdateTime": now }));
                list.len() - 1
            }
        };
        let c = &mut list[i];
        for (field, value) in [("status", status), ("reason", reason), ("message", "")] {
            if c[field].as_str().unwrap_or_default() != value {
                c[field] = json!(value);
                c["lastUpdateTime"] = json!(now);
            }
        }
    }
}

/// Creates `Upgrade` `ns/name` to `version` in `state`, labelled as the latest upgrade.
pub async fn create_upgrade(
    client: &kube::Client,
    ns: &str,
    name: &str,
    version: &str,
    state: UpgradeState,
) -> Result<DynamicObject, Error> {
    let mut upgrade: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "harvesterhci.io/v1beta1",
        "kind": "Upgrade",
        "metadata": { "name": name, "namespace": ns, "labels": { LATEST_UPGRADE_LABEL: "true" } },
        "spec": { "version": version },
        "status": {},
    }))?;
    apply_state(&mut upgrade, &state);
    let pp = PostParams { field_manager: Some(FIELD_MANAGER_HARVESTER.into()), ..Default::default() };
    Ok(upgrades(client, ns).create(&pp, &upgrade).await?)
}

/// Moves `Upgrade` `ns/name` to `state` with a full Update, as Harvester's controller does
/// (`h.upgradeClient.Update(toUpdate)`: the CRD has no status subresource).
pub async fn set_upgrade_state(
    client: &kube::Client,
    ns: &str,
    name: &str,
    state: UpgradeState,
) -> Result<DynamicObject, Error> {
    let api = upgrades(client, ns);
    let mut upgrade = api.get(name).await?;
    apply_state(&mut upgrade, &state);
    let pp = PostParams { field_manager: Some(FIELD_MANAGER_HARVESTER.into()), ..Default::default() };
    Ok(api.replace(name, &pp, &upgrade).await?)
}

/// Sets or removes the latest-upgrade label of `Upgrade` `ns/name`.
pub async fn set_latest(client: &kube::Client, ns: &str, name: &str, latest: bool) -> Result<DynamicObject, Error> {
    let value = if latest { json!("true") } else { Value::Null };
    let patch = json!({ "metadata": { "labels": { LATEST_UPGRADE_LABEL: value } } });
    let pp = PatchParams { field_manager: Some(FIELD_MANAGER_HARVESTER.into()), ..Default::default() };
    Ok(upgrades(client, ns).patch(name, &pp, &Patch::Merge(patch)).await?)
}

/// Deletes `Upgrade` `ns/name` (a cancelled upgrade).
pub async fn delete_upgrade(client: &kube::Client, ns: &str, name: &str) -> Result<(), Error> {
    upgrades(client, ns).delete(name, &DeleteParams::default()).await?;
    Ok(())
}

/// Harvester's webhook rule: an upgrade runs while `Completed` is `Unknown`
/// (`pkg/webhook/resources/machine/validator.go`).
pub fn is_running(upgrade: &DynamicObject) -> bool {
    upgrade.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == COMPLETED_CONDITION && c["status"] == "Unknown")
}

/// A ManagedChart spec shaped like Harvester's: chart and release of the same name from the
/// `harvester-charts` repository, targeting the local cluster by name.
pub fn managed_chart_spec(chart: &str, version: &str) -> Value {
    json!({
        "chart": chart,
        "repoName": "harvester-charts",
        "releaseName": chart,
        "version": version,
        "defaultNamespace": HARVESTER_SYSTEM,
        "timeoutSeconds": 600,
        "targets": [{ "clusterName": crate::rancher::LOCAL_CLUSTER }],
    })
}

/// The v1.5.1/v1.6 controller's `resumeManagedCharts`, once: list the ManagedCharts of `ns`,
/// skip those not paused or not in [`RESUMED_BY_CONTROLLER`], write `paused=false` with a full
/// Update (with Go's `omitempty` the key disappears). A failed List is swallowed (`Ok` with
/// nothing resumed); the first failed Update ends the pass. Returns the charts it resumed.
pub async fn resume_managed_charts(client: &kube::Client, ns: &str) -> Result<Vec<String>, Error> {
    let api = charts(client, ns);
    let Ok(list) = api.list(&ListParams::default()).await else {
        return Ok(Vec::new());
    };
    let mut resumed = Vec::new();
    let pp = PostParams { field_manager: Some(FIELD_MANAGER_HARVESTER.into()), ..Default::default() };
    for listed in list.items {
        let name = listed.metadata.name.clone().unwrap_or_default();
        let mut chart = listed;
        // A controller's update: on a conflict (Rancher writing the status meanwhile) it reads
        // the chart again and retries, as a requeue would.
        for attempt in 1.. {
            if chart.data["spec"]["paused"] != json!(true) || !RESUMED_BY_CONTROLLER.contains(&name.as_str()) {
                break;
            }
            if let Some(spec) = chart.data["spec"].as_object_mut() {
                spec.remove("paused");
            }
            match api.replace(&name, &pp, &chart).await {
                Ok(_) => {
                    resumed.push(name.clone());
                    break;
                }
                Err(kube::Error::Api(e)) if e.code == 409 && attempt < 10 => {
                    let Some(again) = api.get_opt(&name).await? else { break };
                    chart = again;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(resumed)
}

/// The script's pause: `kubectl patch managedcharts ... --type merge -p '{"spec":{"paused":true}}'`.
pub async fn pause_chart(client: &kube::Client, ns: &str, name: &str) -> Result<DynamicObject, Error> {
    kubectl_patch(client, ns, name, json!({ "spec": { "paused": true } })).await
}

/// Pauses each of `names` that exists (the script checks the optional charts first); returns
/// the charts it paused.
pub async fn pause_charts(client: &kube::Client, ns: &str, names: &[&str]) -> Result<Vec<String>, Error> {
    let mut paused = Vec::new();
    for name in names {
        if charts(client, ns).get_opt(name).await?.is_some() {
            pause_chart(client, ns, name).await?;
            paused.push(name.to_string());
        }
    }
    Ok(paused)
}

async fn kubectl_patch(client: &kube::Client, ns: &str, name: &str, patch: Value) -> Result<DynamicObject, Error> {
    let pp = PatchParams { field_manager: Some(FIELD_MANAGER_KUBECTL_PATCH.into()), ..Default::default() };
    Ok(charts(client, ns).patch(name, &pp, &Patch::Merge(patch)).await?)
}

/// `upgrade_manifests.sh` `wait_managed_chart`: until `spec.version` is `version`,
/// `status.observedGeneration` is greater than `generation` (read before the patch),
/// `status.summary.ready == 1` and `status.unavailable == 0` (harvester#10693). The script waits
/// forever; this gives up after `timeout`.
pub async fn wait_managed_chart(
    client: &kube::Client,
    ns: &str,
    name: &str,
    version: &str,
    generation: i64,
    timeout: Duration,
) -> Result<DynamicObject, Error> {
    let api = charts(client, ns);
    let deadline = Instant::now() + timeout;
    let mut last = String::from("not read");
    loop {
        if let Some(chart) = api.get_opt(name).await? {
            let d = &chart.data;
            let observed = d["status"]["observedGeneration"].as_i64().unwrap_or(0);
            let ready = d["status"]["summary"]["ready"].as_i64();
            let unavailable = d["status"]["unavailable"].as_i64();
            if d["spec"]["version"] == version && observed > generation && ready == Some(1) && unavailable == Some(0) {
                return Ok(chart);
            }
            last = format!(
                "version {}, observedGeneration {observed}, summary.ready {ready:?}, unavailable {unavailable:?}, state {}",
                d["spec"]["version"], d["status"]["display"]["state"]
            );
        }
        if Instant::now() >= deadline {
            return Err(Error::WaitTimedOut { what: format!("ManagedChart {ns}/{name} at {version}"), timeout, last });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The v1.7+ resume of one chart: read `status.observedGeneration`, then one `kubectl patch`
/// that sets the version, unpauses, bumps `timeoutSeconds` ("to ensure observedGeneration is
/// updated") and, when given, replaces `values`; then [`wait_managed_chart`].
pub async fn resume_chart_v1_7(
    client: &kube::Client,
    ns: &str,
    name: &str,
    version: &str,
    values: Option<&Value>,
    timeout: Duration,
) -> Result<DynamicObject, Error> {
    let chart = charts(client, ns).get(name).await?;
    let generation = chart.data["status"]["observedGeneration"].as_i64().unwrap_or(0);
    let timeout_seconds = chart.data["spec"]["timeoutSeconds"].as_i64().unwrap_or(0) + 1;
    let mut spec = json!({ "version": version, "paused": false, "timeoutSeconds": timeout_seconds });
    if let Some(v) = values {
        spec["values"] = v.clone();
    }
    kubectl_patch(client, ns, name, json!({ "spec": spec })).await?;
    wait_managed_chart(client, ns, name, version, generation, timeout).await
}

/// The v1.7+ normal path: [`RESUME_ORDER_V1_7`], each resumed and awaited before the next
/// (charts that do not exist are skipped).
pub async fn resume_all_v1_7(client: &kube::Client, ns: &str, version: &str, timeout: Duration) -> Result<(), Error> {
    for name in RESUME_ORDER_V1_7 {
        if charts(client, ns).get_opt(name).await?.is_some() {
            resume_chart_v1_7(client, ns, name, version, None, timeout).await?;
        }
    }
    Ok(())
}

/// The v1.9 step: unpause `harvester` with a values patch, wait for it, then pause it again
/// with `kubectl patch`: a re-pause made by the upgrade itself.
pub async fn unpause_wait_repause_harvester_v1_9(
    client: &kube::Client,
    ns: &str,
    values: &Value,
    timeout: Duration,
) -> Result<DynamicObject, Error> {
    let chart = charts(client, ns).get("harvester").await?;
    let generation = chart.data["status"]["observedGeneration"].as_i64().unwrap_or(0);
    let version = chart.data["spec"]["version"].as_str().unwrap_or_default().to_string();
    kubectl_patch(client, ns, "harvester", json!({ "spec": { "paused": false, "values": values } })).await?;
    wait_managed_chart(client, ns, "harvester", &version, generation, timeout).await?;
    pause_chart(client, ns, "harvester").await
}
