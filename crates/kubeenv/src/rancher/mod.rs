//! `RancherStandIn`: a TEST DOUBLE for Rancher's ManagedChart controller and Fleet's Bundle
//! controller (with a trivial agent for the local cluster), which cannot run here.
//!
//! Three parts, kept apart:
//! 1. [`managedchart`]: Rancher `pkg/controllers/provisioningv2/managedchart/managedchart.go`
//!    and its generated status handler: builds Bundle `SafeConcatName(53, "mcc", name)` with an
//!    ownerReference, copies `paused` (`omitempty`), copies the Bundle's status wholesale into
//!    the ManagedChart *before* applying the new Bundle, writes it with PUT on `/status`, sets
//!    `Defined`, requeues errors with backoff.
//! 2. [`fleet`]: Fleet `internal/cmd/controller/reconciler/bundle_controller.go`: promotes the
//!    staged deployment unless the Bundle or the Fleet `Cluster` is paused, sets
//!    `observedGeneration` to the Bundle's generation, `Ready` and `display` from the summary.
//! 3. The agent in [`fleet`]: applies and readies each deployment as the chart's [`Mode`] says.
//!
//! Controllers are polled, not watched: each tick lists ManagedCharts, Bundles and Fleet
//! Clusters of the namespace (the informer cache) and treats a changed resourceVersion as an
//! event. See `crates/kubeenv/README.md` for what is and is not modelled.

mod fleet;
mod managedchart;
mod merge;
mod names;
mod status;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::task::JoinHandle;

pub use fleet::LOCAL_CLUSTER;
pub use names::{MAX_HELM_RELEASE_NAME_LENGTH, bundle_name, safe_concat_name};

use crate::{Error, crds};

/// How often the stand-in reads the namespace (its stand-in for watch events).
const POLL: Duration = Duration::from_millis(100);
/// Field manager of Rancher's writes (the ManagedChart status, the Bundle apply).
pub const FIELD_MANAGER_RANCHER: &str = "rancher";
/// Field manager of Fleet's Bundle status writes.
pub const FIELD_MANAGER_FLEET: &str = "fleetcontroller";

/// How Rancher, Fleet and the agent treat a chart (failure modes of the stand-in).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// The chart resolves; the agent applies a new deployment on its next pass and it is ready
    /// at once.
    #[default]
    Normal,
    /// Rancher cannot resolve the chart ("no chart version found for <chart>-<version>"): the
    /// Bundle is not applied (so `paused` is not copied), `Defined` turns False with reason
    /// `Error`, `Ready` keeps its stale value, and the ManagedChart is requeued with backoff.
    /// Leaving this mode is a repository change: the chart is enqueued at once.
    ChartVersionNotFound,
    /// A slow rollout of this total length: the agent first reports the deployment not yet
    /// applied (`WaitApplied`), after half of it applies it (`NotReady`), then it is ready.
    Slow(Duration),
    /// rancher/fleet#5219: the agent stays silent this long after a new deployment, so the
    /// Bundle keeps the status of the reconcile that promoted it: `Ready=True`,
    /// `summary.ready=1`, but `unavailable=1`.
    StaleReady(Duration),
}

#[derive(Default)]
struct Modes {
    default: Mode,
    per_chart: HashMap<String, Mode>,
}

/// ManagedCharts to reconcile at once (`OnRepoChange`).
#[derive(Default)]
struct Enqueued {
    all: bool,
    names: HashSet<String>,
}

/// State shared by the handle and the reconcile task.
#[derive(Default)]
struct Shared {
    modes: Mutex<Modes>,
    enqueued: Mutex<Enqueued>,
    failures: Mutex<HashMap<String, u32>>,
}

/// Locks ignoring poisoning: the maps stay consistent after a panicking holder.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn mode(&self, chart: &str) -> Mode {
        let modes = lock(&self.modes);
        modes.per_chart.get(chart).copied().unwrap_or(modes.default)
    }

    fn default_mode(&self) -> Mode {
        lock(&self.modes).default
    }

    fn take_enqueued<'a>(&self, charts: impl Iterator<Item = &'a str>) -> Vec<String> {
        let mut e = lock(&self.enqueued);
        let all = std::mem::take(&mut e.all);
        let names = std::mem::take(&mut e.names);
        charts.filter(|c| all || names.contains(*c)).map(str::to_string).collect()
    }

    fn count_failure(&self, chart: &str) {
        *lock(&self.failures).entry(chart.to_string()).or_default() += 1;
    }
}

/// TEST DOUBLE of Rancher's ManagedChart controller plus Fleet's Bundle controller and agent,
/// reconciling one namespace (its `fleet-local`) from a tokio task.
pub struct RancherStandIn {
    namespace: String,
    client: kube::Client,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl RancherStandIn {
    /// Starts the stand-in for `namespace`; must be called within a tokio runtime.
    pub fn spawn(client: kube::Client, namespace: &str) -> RancherStandIn {
        let shared = Arc::new(Shared::default());
        let worker = Worker::new(client.clone(), namespace, shared.clone());
        RancherStandIn { namespace: namespace.to_string(), client, shared, task: Some(tokio::spawn(worker.run())) }
    }

    /// The namespace it reconciles.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Sets the mode of every chart without a per-chart mode.
    pub fn set_mode(&self, mode: Mode) {
        lock(&self.shared.modes).default = mode;
        lock(&self.shared.enqueued).all = true;
    }

    /// Sets the mode of one chart, overriding [`Self::set_mode`].
    pub fn set_chart_mode(&self, chart: &str, mode: Mode) {
        lock(&self.shared.modes).per_chart.insert(chart.to_string(), mode);
        lock(&self.shared.enqueued).names.insert(chart.to_string());
    }

    /// Drops the per-chart mode of `chart`; it follows the default again.
    pub fn clear_chart_mode(&self, chart: &str) {
        lock(&self.shared.modes).per_chart.remove(chart);
        lock(&self.shared.enqueued).names.insert(chart.to_string());
    }

    /// Pauses or unpauses the Fleet `Cluster` `local` of the namespace (created when absent):
    /// Fleet then stages but does not roll out new deployments (fleet `target.go` `IsPaused`).
    pub async fn set_fleet_cluster_paused(&self, paused: bool) -> Result<(), Error> {
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), &self.namespace, &crds::fleet_cluster_resource());
        let pp = PatchParams { field_manager: Some("kubeenv".into()), ..Default::default() };
        if api.get_opt(LOCAL_CLUSTER).await?.is_some() {
            api.patch(LOCAL_CLUSTER, &pp, &Patch::Merge(json!({ "spec": { "paused": paused } }))).await?;
        } else {
            let obj: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "fleet.cattle.io/v1alpha1",
                "kind": "Cluster",
                "metadata": { "name": LOCAL_CLUSTER, "namespace": self.namespace },
                "spec": { "paused": paused },
            }))?;
            api.create(&PostParams { field_manager: Some("kubeenv".into()), ..Default::default() }, &obj).await?;
        }
        Ok(())
    }

    /// How many reconciles of `chart` Rancher's controller failed and requeued so far.
    pub fn failed_reconciles(&self, chart: &str) -> u32 {
        lock(&self.shared.failures).get(chart).copied().unwrap_or(0)
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

struct Worker {
    namespace: String,
    charts: Api<DynamicObject>,
    bundles: Api<DynamicObject>,
    clusters: Api<DynamicObject>,
    shared: Arc<Shared>,
    rancher: managedchart::ManagedChartController,
    fleet: fleet::FleetController,
}

impl Worker {
    fn new(client: kube::Client, namespace: &str, shared: Arc<Shared>) -> Worker {
        let charts = Api::namespaced_with(client.clone(), namespace, &crds::managed_chart_resource());
        let bundles = Api::namespaced_with(client.clone(), namespace, &crds::bundle_resource());
        let clusters = Api::namespaced_with(client, namespace, &crds::fleet_cluster_resource());
        Worker {
            namespace: namespace.to_string(),
            rancher: managedchart::ManagedChartController::new(namespace, charts.clone(), bundles.clone()),
            fleet: fleet::FleetController::new(namespace, bundles.clone()),
            charts,
            bundles,
            clusters,
            shared,
        }
    }

    async fn run(mut self) {
        loop {
            if let Err(e) = self.tick().await {
                // Expected while a fault test has the API server down.
                tracing::debug!(ns = %self.namespace, error = %e, "rancher stand-in: list failed");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn tick(&mut self) -> Result<(), Error> {
        let lp = ListParams::default();
        // Bundles before ManagedCharts: an owner in the Bundle list is then in the chart list too,
        // so "owner gone" is never a listing race.
        let bundles = self.bundles.list(&lp).await?.items;
        let charts = self.charts.list(&lp).await?.items;
        let clusters = self.clusters.list(&lp).await?.items;
        self.rancher.tick(&charts, &bundles, &self.shared).await;
        let cluster = fleet::LocalCluster::from_list(&clusters);
        self.fleet.tick(&bundles, &cluster, &self.shared).await;
        Ok(())
    }
}

/// wrangler's condition timestamp, for the Harvester doubles.
pub(crate) fn status_now() -> String {
    status::now_rfc3339()
}
