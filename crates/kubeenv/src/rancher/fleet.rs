//! Part 2 of the stand-in: Fleet's Bundle controller for the local cluster, and part 3: a
//! trivial agent that "deploys" each BundleDeployment according to the chart's [`Mode`].
//!
//! Models rancher/fleet `internal/cmd/controller/reconciler/bundle_controller.go` (`Reconcile`,
//! its watch predicates, `updateStatus`), `bundle_status.go` (`resetStatus`, `updateDisplay`),
//! `internal/cmd/controller/target/{target,status,partition,rollout}.go` and
//! `internal/cmd/controller/summary/summary.go`. BundleDeployments live in memory only.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::managedchart::controller_owner_name;
use super::status::{self, Conditions};
use super::{FIELD_MANAGER_FLEET, Mode, Shared, merge};
use crate::Error;

/// The cluster every Bundle here targets: Fleet's `Cluster` `local`, in the stand-in's namespace
/// (`fleet-local` upstream).
pub const LOCAL_CLUSTER: &str = "local";

/// fleet `BundleState`, with `StateRank` (`pkg/apis/fleet.cattle.io/v1alpha1/bundle_types.go`).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Ready,
    NotReady,
    WaitApplied,
    OutOfSync,
    Pending,
}

impl State {
    fn word(self) -> &'static str {
        match self {
            State::Ready => "Ready",
            State::NotReady => "NotReady",
            State::WaitApplied => "WaitApplied",
            State::OutOfSync => "OutOfSync",
            State::Pending => "Pending",
        }
    }

    fn rank(word: &str) -> u8 {
        match word {
            "ErrApplied" => 7,
            "WaitApplied" => 6,
            "Modified" => 5,
            "OutOfSync" => 4,
            "Pending" => 3,
            "NotReady" => 2,
            "Ready" => 1,
            _ => 0,
        }
    }

    /// The summary counter `IncrementState` bumps.
    fn counter(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::NotReady => "notReady",
            State::WaitApplied => "waitApplied",
            State::OutOfSync => "outOfSync",
            State::Pending => "pending",
        }
    }
}

/// The local cluster as Fleet sees it: its `Cluster` object, when one exists.
pub(super) struct LocalCluster {
    paused: bool,
    labels: BTreeMap<String, String>,
    /// What `clusterChangedPredicate` compares: labels, annotations, spec.
    key: String,
}

impl LocalCluster {
    /// From the Fleet `Cluster` objects of the namespace (absent: not paused, no labels).
    pub(super) fn from_list(clusters: &[DynamicObject]) -> LocalCluster {
        let Some(c) = clusters.iter().find(|c| c.metadata.name.as_deref() == Some(LOCAL_CLUSTER)) else {
            return LocalCluster { paused: false, labels: BTreeMap::new(), key: String::new() };
        };
        let key = json!([c.metadata.labels, c.metadata.annotations, c.data.get("spec")]).to_string();
        LocalCluster {
            paused: c.data.pointer("/spec/paused").and_then(Value::as_bool) == Some(true),
            labels: c.metadata.labels.clone().unwrap_or_default(),
            key,
        }
    }
}

/// One BundleDeployment: `spec.deploymentID`, `spec.stagedDeploymentID`,
/// `status.appliedDeploymentID`, `status.ready`, plus the agent's timers.
struct Deployment {
    bundle_uid: String,
    chart: Option<String>,
    deployment_id: String,
    staged_id: String,
    applied_id: String,
    ready: bool,
    /// The agent has reported on the current deployment ID (Slow: the WaitApplied report).
    reported: bool,
    promoted_at: Instant,
    ready_at: Option<Instant>,
    /// The agent changed the status: `bundleDeploymentStatusChangedPredicate` enqueues the Bundle.
    status_changed: bool,
    /// A staged change Fleet did not roll out (paused): the agent reports on the changed spec.
    staged_unreported: bool,
}

impl Deployment {
    fn new(bundle_uid: &str) -> Deployment {
        Deployment {
            bundle_uid: bundle_uid.to_string(),
            chart: None,
            deployment_id: String::new(),
            staged_id: String::new(),
            applied_id: String::new(),
            ready: false,
            reported: false,
            promoted_at: Instant::now(),
            ready_at: None,
            status_changed: false,
            staged_unreported: false,
        }
    }

    /// target `IsUnavailable`.
    fn is_unavailable(&self) -> bool {
        self.applied_id != self.deployment_id || !self.ready
    }

    /// summary `GetDeploymentState` (ErrApplied and Modified are not modelled).
    fn state(&self) -> State {
        if self.applied_id != self.deployment_id {
            State::WaitApplied
        } else if !self.ready {
            State::NotReady
        } else if self.deployment_id != self.staged_id {
            State::OutOfSync
        } else {
            State::Ready
        }
    }

    /// Part 3, the agent: deploys a new deployment ID the way the chart's mode says.
    fn agent_step(&mut self, mode: Mode, now: Instant) {
        if std::mem::take(&mut self.staged_unreported) {
            self.status_changed = true;
        }
        if self.deployment_id.is_empty() {
            return;
        }
        if self.applied_id != self.deployment_id {
            let elapsed = now.saturating_duration_since(self.promoted_at);
            match mode {
                Mode::Slow(d) => {
                    if !self.reported {
                        // The agent reports before it has applied: WaitApplied.
                        self.reported = true;
                        self.status_changed = true;
                    }
                    if elapsed >= d / 2 {
                        // Applied, the workload still rolling out: NotReady.
                        self.applied_id = self.deployment_id.clone();
                        self.ready = false;
                        self.ready_at = Some(now + (d - d / 2));
                        self.status_changed = true;
                    }
                }
                Mode::StaleReady(d) => {
                    // Silent until done: Fleet keeps the status of the promoting reconcile.
                    if elapsed >= d {
                        self.applied_id = self.deployment_id.clone();
                        self.ready = true;
                        self.status_changed = true;
                    }
                }
                Mode::Normal | Mode::ChartVersionNotFound => {
                    self.applied_id = self.deployment_id.clone();
                    self.ready = true;
                    self.status_changed = true;
                }
            }
        } else if let Some(at) = self.ready_at
            && now >= at
        {
            self.ready = true;
            self.ready_at = None;
            self.status_changed = true;
        }
    }
}

/// Fleet's Bundle controller for one namespace.
pub(super) struct FleetController {
    namespace: String,
    bundles: Api<DynamicObject>,
    deployments: HashMap<String, Deployment>,
    /// What the Bundle watch's predicates compare: generation, labels, annotations.
    seen: HashMap<String, String>,
    cluster_key: Option<String>,
}

impl FleetController {
    pub(super) fn new(namespace: &str, bundles: Api<DynamicObject>) -> Self {
        FleetController {
            namespace: namespace.to_string(),
            bundles,
            deployments: HashMap::new(),
            seen: HashMap::new(),
            cluster_key: None,
        }
    }

    /// Runs the agent, then reconciles every Bundle an event enqueued.
    pub(super) async fn tick(&mut self, bundles: &[DynamicObject], cluster: &LocalCluster, shared: &Shared) {
        let now = Instant::now();
        for d in self.deployments.values_mut() {
            let mode = d.chart.as_deref().map_or_else(|| shared.default_mode(), |c| shared.mode(c));
            d.agent_step(mode, now);
        }
        let names: BTreeSet<&str> = bundles.iter().filter_map(|b| b.metadata.name.as_deref()).collect();
        self.deployments.retain(|n, _| names.contains(n.as_str()));
        self.seen.retain(|n, _| names.contains(n.as_str()));
        // `clusterChangedPredicate`: a change of the cluster re-reconciles its Bundles.
        let cluster_changed = self.cluster_key.as_deref() != Some(cluster.key.as_str());
        self.cluster_key = Some(cluster.key.clone());
        let mut queue = Vec::new();
        for b in bundles {
            let Some(n) = b.metadata.name.as_deref() else { continue };
            // `GenerationChangedPredicate`, `AnnotationChangedPredicate`, `LabelChangedPredicate`:
            // the controller's own status writes do not enqueue the Bundle.
            let key = json!([b.metadata.generation, b.metadata.labels, b.metadata.annotations]).to_string();
            let changed = self.seen.get(n) != Some(&key);
            let bd_changed = self.deployments.get(n).is_some_and(|d| d.status_changed);
            if changed || bd_changed || cluster_changed {
                queue.push(n.to_string());
            }
        }
        for n in queue {
            match self.reconcile(&n, cluster).await {
                Ok(key) => {
                    self.seen.insert(n, key);
                }
                Err(e) => {
                    // Not marked seen: retried next tick.
                    tracing::debug!(ns = %self.namespace, bundle = %n, error = %e, "fleet stand-in: reconcile failed");
                }
            }
        }
    }

    /// `BundleReconciler.Reconcile` for the single local-cluster target. Returns the predicate
    /// key of the Bundle it reconciled.
    async fn reconcile(&mut self, name: &str, cluster: &LocalCluster) -> Result<String, Error> {
        let Some(bundle) = self.bundles.get_opt(name).await? else {
            self.deployments.remove(name);
            return Ok(String::new());
        };
        let key = json!([bundle.metadata.generation, bundle.metadata.labels, bundle.metadata.annotations]).to_string();
        let uid = bundle.metadata.uid.clone().unwrap_or_default();
        if self.deployments.get(name).is_some_and(|d| d.bundle_uid != uid) {
            self.deployments.remove(name);
        }
        let spec = bundle.data.get("spec").cloned().unwrap_or(Value::Null);
        let orig = status::bundle_status(bundle.data.get("status").unwrap_or(&Value::Null));
        let generation = bundle.metadata.generation.unwrap_or(0);
        let target_id = deployment_id(&spec);
        let rollout = spec.get("rolloutStrategy").cloned().unwrap_or(Value::Null);
        let chart = controller_owner_name(&bundle);
        let matched = targets_match(spec.get("targets"), cluster);
        let mut st = orig.clone();
        let now = status::now_rfc3339();

        // A new stand-in meets Bundles an earlier Fleet already deployed: adopt them as deployed.
        if matched && !self.deployments.contains_key(name) && orig["observedGeneration"].as_i64().unwrap_or(0) > 0 {
            let mut d = Deployment::new(&uid);
            d.deployment_id.clone_from(&target_id);
            d.staged_id.clone_from(&target_id);
            d.applied_id.clone_from(&target_id);
            d.ready = true;
            self.deployments.insert(name.to_string(), d);
        }
        if !matched {
            // `cleanupOrphanedBundleDeployments`.
            self.deployments.remove(name);
        }

        let cluster_key = format!("{}/{LOCAL_CLUSTER}", self.namespace);
        let count = usize::from(matched);
        let limits = limit(count, rollout.get("maxUnavailable"), LimitDefault::Percent100)
            .and_then(|max| Ok((max, limit(1, rollout.get("maxUnavailablePartitions"), LimitDefault::Zero)?)));
        let (max_unavailable, max_unavailable_partitions) = match limits {
            Ok(l) => l,
            Err(e) => {
                // `updateErrorStatus`.
                let msg = format!("failed to reset bundle status from targets: {e}");
                let mut c = Conditions::of(&mut st, &now);
                c.set_status_bool("Ready", false);
                c.message("Ready", &msg);
                self.write_status(name, &orig, st).await?;
                return Ok(key);
            }
        };

        // `resetStatus`: summary and unavailable from the BundleDeployments as they are now.
        let mut summary = json!({ "ready": 0, "desiredReady": 0 });
        let mut unavailable = 0;
        if matched {
            let state = self.deployments.get(name).map_or(State::Pending, Deployment::state);
            increment_state(&mut summary, &cluster_key, state);
            unavailable = i64::from(self.deployments.get(name).is_some_and(Deployment::is_unavailable));
        }
        // `UpdatePartitions`: fewer than 200 targets make one partition "All".
        let partition_summary = summary.clone();
        let mut partition_unavailable = unavailable;
        let mut newly_created = 0;
        if matched {
            let d = self.deployments.entry(name.to_string()).or_insert_with(|| {
                newly_created = 1;
                Deployment::new(&uid)
            });
            d.chart = chart;
            let restaged = d.staged_id != target_id;
            d.staged_id.clone_from(&target_id);
            let paused = spec.get("paused").and_then(Value::as_bool) == Some(true) || cluster.paused;
            // `updateDeploymentFromStaged`: promote unless the Bundle or the Cluster is paused
            // or the rollout's unavailable budget is spent.
            if !paused
                && !d.staged_id.is_empty()
                && d.deployment_id != d.staged_id
                && (unavailable < max_unavailable || d.is_unavailable())
                && (partition_unavailable < max_unavailable || d.is_unavailable())
            {
                if !d.is_unavailable() {
                    unavailable += 1;
                }
                d.deployment_id.clone_from(&d.staged_id);
                d.promoted_at = Instant::now();
                d.reported = false;
                d.ready_at = None;
            }
            d.status_changed = false;
            d.staged_unreported = restaged && d.deployment_id != d.staged_id;
            // `updatePartitionStatus`: a partition target must be available and up to date.
            let up_to_date = d.staged_id == target_id && d.deployment_id == target_id && d.applied_id == target_id;
            partition_unavailable = i64::from(!up_to_date || d.is_unavailable());
        }
        let unavailable_partitions = i64::from(partition_unavailable > max_unavailable);

        st["summary"] = summary.clone();
        st["newlyCreated"] = json!(newly_created);
        st["unavailable"] = json!(unavailable);
        st["maxUnavailable"] = json!(max_unavailable);
        st["unavailablePartitions"] = json!(unavailable_partitions);
        st["maxUnavailablePartitions"] = json!(max_unavailable_partitions);
        st["partitions"] = json!([{
            "name": "All",
            "count": count,
            "maxUnavailable": max_unavailable,
            "unavailable": partition_unavailable,
            "summary": partition_summary,
        }]);
        // "ResourceKey is deprecated and no longer used by the UI."
        st["resourceKey"] = Value::Null;
        // `summary.SetReadyConditions(&bundle.Status, "Cluster", bundle.Status.Summary)`.
        let message = ready_message(&summary, "Cluster");
        let mut c = Conditions::of(&mut st, &now);
        c.set_status_bool("Ready", message.is_empty());
        c.message("Ready", &message);
        st["observedGeneration"] = json!(generation);
        // `updateDisplay`.
        st["display"] = json!({
            "readyClusters": format!("{}/{}", summary["ready"], summary["desiredReady"]),
            "state": summary_state(&summary),
        });
        st["resourcesSha256Sum"] = json!(sha256_hex(&spec.get("resources").cloned().unwrap_or(Value::Null)));
        self.write_status(name, &orig, status::bundle_status(&st)).await?;
        Ok(key)
    }

    /// `updateStatus`: a JSON merge patch from the status read to the new one, skipped when empty.
    async fn write_status(&self, name: &str, orig: &Value, new: Value) -> Result<(), Error> {
        let patch = merge::three_way(orig, &new, orig);
        if patch.is_empty() {
            return Ok(());
        }
        let pp = PatchParams { field_manager: Some(FIELD_MANAGER_FLEET.into()), ..Default::default() };
        self.bundles.patch_status(name, &pp, &Patch::Merge(json!({ "status": patch }))).await?;
        Ok(())
    }
}

/// `IncrementState` for one target plus `DesiredReady++`.
fn increment_state(summary: &mut Value, cluster: &str, state: State) {
    let counter = state.counter();
    summary[counter] = json!(summary[counter].as_i64().unwrap_or(0) + 1);
    if state != State::Ready {
        summary["nonReadyResources"] = json!([{ "name": cluster, "bundleState": state.word() }]);
    }
    summary["desiredReady"] = json!(summary["desiredReady"].as_i64().unwrap_or(0) + 1);
}

/// summary `ReadyMessage`: `WaitApplied(1) [Cluster fleet-local/local]`, sorted, `; `-joined.
fn ready_message(summary: &Value, referenced_kind: &str) -> String {
    let mut messages = Vec::new();
    let resources = summary["nonReadyResources"].as_array().cloned().unwrap_or_default();
    for (word, counter) in [
        ("OutOfSync", "outOfSync"),
        ("NotReady", "notReady"),
        ("WaitApplied", "waitApplied"),
        ("ErrApplied", "errApplied"),
        ("Pending", "pending"),
        ("Modified", "modified"),
    ] {
        let count = summary[counter].as_i64().unwrap_or(0);
        if count <= 0 {
            continue;
        }
        if let Some(r) = resources.iter().find(|r| r["bundleState"] == word) {
            let name = r["name"].as_str().unwrap_or_default();
            match r["message"].as_str().filter(|m| !m.is_empty()) {
                None => messages.push(format!("{word}({count}) [{referenced_kind} {name}]")),
                Some(m) => messages.push(format!("{word}({count}) [{referenced_kind} {name}: {m}]")),
            }
        }
    }
    messages.sort();
    messages.join("; ")
}

/// summary `GetSummaryState`: the highest-ranked non-ready state, empty when all is ready.
fn summary_state(summary: &Value) -> String {
    let mut best = ("", 0);
    for r in summary["nonReadyResources"].as_array().into_iter().flatten() {
        let word = r["bundleState"].as_str().unwrap_or_default();
        if State::rank(word) > best.1 {
            best = (word, State::rank(word));
        }
    }
    best.0.to_string()
}

#[derive(Clone, Copy)]
enum LimitDefault {
    /// `defLimit = intstr.FromString("100%")`.
    Percent100,
    /// `defMaxUnavailablePartitions = intstr.FromInt(0)`.
    Zero,
}

/// target `limit`: a number or a percentage of `count`, at least 1 for percentages.
fn limit(count: usize, value: Option<&Value>, default: LimitDefault) -> Result<i64, String> {
    if count == 0 {
        return Ok(1);
    }
    let value = match value.filter(|v| !v.is_null()) {
        Some(v) => v.clone(),
        None => match default {
            LimitDefault::Percent100 => json!("100%"),
            LimitDefault::Zero => json!(0),
        },
    };
    if let Some(n) = value.as_i64() {
        return Ok(n);
    }
    let s = value.as_str().unwrap_or_default();
    // `IntValue()` of a string is its `Atoi`, 0 when it is not a number.
    if let Ok(n) = s.parse::<i64>()
        && n > 0
    {
        return Ok(n);
    }
    let Some(percent) = s.strip_suffix('%') else {
        return Err(format!("invalid maxUnavailable, must be int or percentage (ending with %): {s}"));
    };
    let percent: f64 = percent.parse().map_err(|e| format!("failed to parse {s}: {e}"))?;
    if percent <= 0.0 {
        return Ok(1);
    }
    // Go: `int(float64(count)*percent) / 100`.
    let n = ((count as f64) * percent) as i64 / 100;
    Ok(n.max(1))
}

/// A stand-in for fleet's `options.DeploymentID(manifest, opts)`: changes with the resources and
/// with the options that reach the agent; `paused`, rollout and targeting do not count.
fn deployment_id(spec: &Value) -> String {
    let mut options = spec.clone();
    if let Some(o) = options.as_object_mut() {
        for k in [
            "paused",
            "rolloutStrategy",
            "targets",
            "targetRestrictions",
            "resources",
            "diff",
            "namespaceLabels",
            "namespaceAnnotations",
            "correctDrift",
            "dependsOn",
            "contentsId",
            "valuesHash",
        ] {
            o.remove(k);
        }
    }
    let manifest = sha256_hex(&spec.get("resources").cloned().unwrap_or(Value::Null));
    format!("s-{manifest}:{}", sha256_hex(&options))
}

fn sha256_hex(v: &Value) -> String {
    Sha256::digest(v.to_string().as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether any Bundle target selects the local cluster (fleet `bundlematch.go`, reduced to one
/// cluster: cluster groups are not modelled and never match).
fn targets_match(targets: Option<&Value>, cluster: &LocalCluster) -> bool {
    targets.and_then(Value::as_array).into_iter().flatten().any(|t| {
        let by_name = t.get("clusterName").and_then(Value::as_str).filter(|s| !s.is_empty());
        let selector = t.get("clusterSelector").filter(|s| s.is_object());
        let by_group = t.get("clusterGroup").and_then(Value::as_str).is_some_and(|s| !s.is_empty())
            || t.get("clusterGroupSelector").is_some_and(Value::is_object);
        if by_group || (by_name.is_none() && selector.is_none()) {
            return false;
        }
        by_name.is_none_or(|n| n == LOCAL_CLUSTER) && selector.is_none_or(|s| selector_matches(s, &cluster.labels))
    })
}

/// `metav1.LabelSelectorAsSelector(...).Matches(labels)`.
fn selector_matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let labels_ok = match_labels.into_iter().flatten().all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    labels_ok
        && expressions.into_iter().flatten().all(|e| {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> = e["values"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            let have = labels.get(key).map(String::as_str);
            match e["operator"].as_str().unwrap_or_default() {
                "In" => have.is_some_and(|h| values.contains(&h)),
                "NotIn" => have.is_none_or(|h| !values.contains(&h)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(labels: &[(&str, &str)]) -> LocalCluster {
        LocalCluster {
            paused: false,
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            key: String::new(),
        }
    }

    #[test]
    fn harvester_targets_match_the_local_cluster() {
        let targets = json!([{
            "clusterName": "local",
            "clusterSelector": { "matchExpressions": [
                { "key": "provisioning.cattle.io/unmanaged-system-agent", "operator": "DoesNotExist" },
            ] },
        }]);
        assert!(targets_match(Some(&targets), &cluster(&[])));
        assert!(!targets_match(Some(&targets), &cluster(&[("provisioning.cattle.io/unmanaged-system-agent", "true")])));
        assert!(!targets_match(Some(&json!([{ "clusterName": "other" }])), &cluster(&[])));
        assert!(!targets_match(Some(&json!([{ "clusterGroup": "default" }])), &cluster(&[])));
        assert!(!targets_match(Some(&json!([{}])), &cluster(&[])));
        assert!(!targets_match(None, &cluster(&[])));
    }

    #[test]
    fn ready_message_is_fleet_style() {
        let mut s = json!({ "ready": 0, "desiredReady": 0 });
        increment_state(&mut s, "fleet-local/local", State::WaitApplied);
        assert_eq!(ready_message(&s, "Cluster"), "WaitApplied(1) [Cluster fleet-local/local]");
        assert_eq!(summary_state(&s), "WaitApplied");
        let mut ok = json!({ "ready": 0, "desiredReady": 0 });
        increment_state(&mut ok, "fleet-local/local", State::Ready);
        assert_eq!((ready_message(&ok, "Cluster").as_str(), summary_state(&ok).as_str()), ("", ""));
        assert_eq!(ok, json!({ "ready": 1, "desiredReady": 1 }));
    }

    #[test]
    fn limit_follows_fleet() {
        assert_eq!(limit(1, None, LimitDefault::Percent100), Ok(1));
        assert_eq!(limit(0, None, LimitDefault::Percent100), Ok(1));
        assert_eq!(limit(1, Some(&json!("10%")), LimitDefault::Percent100), Ok(1));
        assert_eq!(limit(50, Some(&json!("10%")), LimitDefault::Percent100), Ok(5));
        assert_eq!(limit(3, Some(&json!(2)), LimitDefault::Percent100), Ok(2));
        assert_eq!(limit(1, None, LimitDefault::Zero), Ok(0));
        assert!(limit(1, Some(&json!("ten")), LimitDefault::Percent100).is_err());
    }

    #[test]
    fn paused_is_not_part_of_the_deployment_id() {
        let a = json!({ "helm": { "version": "1" }, "resources": [{ "name": "x" }] });
        let mut b = a.clone();
        b["paused"] = json!(true);
        assert_eq!(deployment_id(&a), deployment_id(&b));
        b["helm"]["version"] = json!("2");
        assert_ne!(deployment_id(&a), deployment_id(&b));
    }

    #[test]
    fn agent_slow_reports_wait_applied_then_not_ready_then_ready() {
        let d0 = Instant::now();
        let mut d = Deployment::new("u");
        d.deployment_id = "x".into();
        d.staged_id = "x".into();
        d.promoted_at = d0;
        let slow = Mode::Slow(std::time::Duration::from_secs(2));
        d.agent_step(slow, d0);
        assert_eq!(d.state(), State::WaitApplied);
        d.agent_step(slow, d0 + std::time::Duration::from_secs(1));
        assert_eq!(d.state(), State::NotReady);
        d.agent_step(slow, d0 + std::time::Duration::from_secs(2));
        assert_eq!(d.state(), State::Ready);
    }
}
