//! `RancherStandIn`: a TEST DOUBLE for Rancher's ManagedChart controller, which cannot run here.
//!
//! It reproduces only what pause-ledger depends on: a ManagedChart's `spec.paused` reaches the
//! generated Fleet Bundle `mcc-<name>` only when the chart could be fetched, and
//! `status.observedGeneration` / the `Ready` condition tell whether the latest spec was handled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{Error, crds};

/// How often the stand-in lists ManagedCharts.
const POLL: Duration = Duration::from_millis(75);
/// Field manager of the Bundles it applies.
const FIELD_MANAGER: &str = "rancher-stand-in";

/// How the stand-in reacts to a new ManagedChart generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Mirror `spec.paused` into Bundle `mcc-<name>` and report Ready=True.
    #[default]
    Normal,
    /// Leave the Bundle untouched and report Ready=False
    /// "no chart version found for <chart>-<version>", as Rancher does when the repo lacks it.
    ChartVersionNotFound,
    /// Act like `Normal`, but only once the generation has been seen for this long.
    Slow(Duration),
}

#[derive(Default)]
struct Modes {
    default: Mode,
    per_chart: HashMap<String, Mode>,
}

impl Modes {
    fn for_chart(&self, name: &str) -> Mode {
        self.per_chart.get(name).copied().unwrap_or(self.default)
    }
}

/// TEST DOUBLE of Rancher's ManagedChart controller, reconciling one namespace from a tokio task.
///
/// For each ManagedChart whose `metadata.generation` differs from `status.observedGeneration` it
/// acts according to its [`Mode`]. Like Rancher's periodic resync, a chart left Ready=False is
/// retried once its mode is no longer `ChartVersionNotFound`.
pub struct RancherStandIn {
    namespace: String,
    modes: Arc<Mutex<Modes>>,
    task: Option<JoinHandle<()>>,
}

impl RancherStandIn {
    /// Starts the stand-in for `namespace`; must be called within a tokio runtime.
    pub fn spawn(client: kube::Client, namespace: &str) -> RancherStandIn {
        let modes = Arc::new(Mutex::new(Modes::default()));
        let charts = Api::namespaced_with(client.clone(), namespace, &crds::managed_chart_resource());
        let bundles = Api::namespaced_with(client, namespace, &crds::bundle_resource());
        let worker = Worker {
            namespace: namespace.to_string(),
            charts,
            bundles,
            modes: modes.clone(),
            first_seen: HashMap::new(),
        };
        RancherStandIn { namespace: namespace.to_string(), modes, task: Some(tokio::spawn(worker.run())) }
    }

    /// The namespace it watches.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Sets the mode for every chart without a per-chart mode.
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.modes).default = mode;
    }

    /// Sets the mode of one chart, overriding [`Self::set_mode`].
    pub fn set_chart_mode(&self, name: &str, mode: Mode) {
        lock(&self.modes).per_chart.insert(name.to_string(), mode);
    }

    /// Drops the per-chart mode of `name`; it follows the default again.
    pub fn clear_chart_mode(&self, name: &str) {
        lock(&self.modes).per_chart.remove(name);
    }

    /// Aborts the reconcile task (also done on drop).
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for RancherStandIn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Locks ignoring poisoning: the modes map stays consistent after a panicking holder.
fn lock(m: &Mutex<Modes>) -> MutexGuard<'_, Modes> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

struct Worker {
    namespace: String,
    charts: Api<DynamicObject>,
    bundles: Api<DynamicObject>,
    modes: Arc<Mutex<Modes>>,
    /// When each (chart, generation) was first seen, for `Mode::Slow`.
    first_seen: HashMap<(String, i64), Instant>,
}

impl Worker {
    async fn run(mut self) {
        loop {
            match self.charts.list(&ListParams::default()).await {
                Ok(list) => {
                    let live: Vec<(String, i64)> = list
                        .items
                        .iter()
                        .map(|c| (c.metadata.name.clone().unwrap_or_default(), generation(c)))
                        .collect();
                    self.first_seen.retain(|key, _| live.contains(key));
                    for chart in &list.items {
                        if let Err(e) = self.reconcile(chart).await {
                            tracing::warn!(
                                ns = %self.namespace,
                                chart = ?chart.metadata.name,
                                error = %e,
                                "rancher stand-in: reconcile failed"
                            );
                        }
                    }
                }
                // Expected while a fault test has the API server down.
                Err(e) => {
                    tracing::debug!(ns = %self.namespace, error = %e, "stand-in: list failed");
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn reconcile(&mut self, chart: &DynamicObject) -> Result<(), Error> {
        let Some(name) = chart.metadata.name.clone() else {
            return Ok(());
        };
        let generation = generation(chart);
        let status = chart.data.get("status");
        let observed = status.and_then(|s| s.get("observedGeneration")).and_then(Value::as_i64);
        let conditions: Vec<Value> =
            status.and_then(|s| s.get("conditions")).and_then(Value::as_array).cloned().unwrap_or_default();
        let ready = conditions.iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
        let mode = lock(&self.modes).for_chart(&name);
        let stale = observed != Some(generation);
        let retry = !ready && mode != Mode::ChartVersionNotFound;
        if !stale && !retry {
            return Ok(());
        }
        if let Mode::Slow(delay) = mode {
            let seen = *self.first_seen.entry((name.clone(), generation)).or_insert_with(Instant::now);
            if seen.elapsed() < delay {
                return Ok(());
            }
        }
        let spec = chart.data.get("spec").cloned().unwrap_or(Value::Null);
        let now = serde_json::to_value(Time(Timestamp::now()))?;
        let status = match mode {
            Mode::Normal | Mode::Slow(_) => {
                let paused = spec["paused"].as_bool().unwrap_or(false);
                self.apply_bundle(&name, &spec, paused).await?;
                json!({
                    "observedGeneration": generation,
                    "conditions": [
                        condition(&conditions, "Ready", "True", "", "", &now),
                        condition(&conditions, "Defined", "True", "", "", &now),
                    ],
                    "display": {
                        "readyClusters": "1/1",
                        "state": if paused { "paused" } else { "active" },
                    },
                    "summary": {
                        "notReady": 0, "waitApplied": 0, "errApplied": 0, "outOfSync": 0,
                        "modified": 0, "ready": 1, "pending": 0, "desiredReady": 1,
                    },
                })
            }
            Mode::ChartVersionNotFound => {
                let message = format!(
                    "no chart version found for {}-{}",
                    spec["chart"].as_str().unwrap_or_default(),
                    spec["version"].as_str().unwrap_or_default()
                );
                json!({
                    "observedGeneration": generation,
                    "conditions": [
                        condition(&conditions, "Ready", "False", "Error", &message, &now),
                        condition(&conditions, "Defined", "True", "", "", &now),
                    ],
                    "display": { "state": "error" },
                })
            }
        };
        // A merge patch on the status subresource, as a controller would send it.
        self.charts.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
        self.first_seen.remove(&(name, generation));
        Ok(())
    }

    async fn apply_bundle(&self, chart: &str, spec: &Value, paused: bool) -> Result<(), Error> {
        let name = format!("mcc-{chart}");
        let bundle = json!({
            "apiVersion": "fleet.cattle.io/v1alpha1",
            "kind": "Bundle",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": { "kubeenv.pause-ledger.dev/stand-in": "rancher" },
            },
            "spec": {
                "paused": paused,
                "helm": {
                    "chart": spec["chart"].as_str().unwrap_or_default(),
                    "version": spec["version"].as_str().unwrap_or_default(),
                },
            },
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.bundles.patch(&name, &params, &Patch::Apply(bundle)).await?;
        Ok(())
    }
}

fn generation(chart: &DynamicObject) -> i64 {
    chart.metadata.generation.unwrap_or(0)
}

/// A condition, keeping the previous `lastTransitionTime` when its status did not change.
fn condition(previous: &[Value], type_: &str, status: &str, reason: &str, message: &str, now: &Value) -> Value {
    let transition = previous
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == status)
        .and_then(|c| c.get("lastTransitionTime"))
        .cloned()
        .unwrap_or_else(|| now.clone());
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastUpdateTime": now,
        "lastTransitionTime": transition,
    })
}
