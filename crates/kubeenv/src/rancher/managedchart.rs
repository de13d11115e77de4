//! Part 1 of the stand-in: Rancher's ManagedChart controller.
//!
//! Models rancher `pkg/controllers/provisioningv2/managedchart/managedchart.go` (`OnChange`,
//! `updateStatus`, `OnRepoChange`, the `mcc-from-bundle-trigger` related-resource watch) and the
//! generated generating/status handler it registers
//! (`pkg/generated/controllers/management.cattle.io/v3/managedchart.go`, condition `Defined`).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::names::{MAX_HELM_RELEASE_NAME_LENGTH, bundle_name};
use super::status::{self, Conditions};
use super::{FIELD_MANAGER_RANCHER, Mode, Shared, merge};
use crate::Error;

/// wrangler apply's set id for these Bundles (`"mcc-bundle"` in `Register`).
const SET_ID: &str = "mcc-bundle";
/// wrangler apply bookkeeping annotations (wrangler `pkg/apply`).
const APPLIED_ANNOTATION: &str = "objectset.rio.cattle.io/applied";
const ID_ANNOTATION: &str = "objectset.rio.cattle.io/id";
const OWNER_GVK_ANNOTATION: &str = "objectset.rio.cattle.io/owner-gvk";
const OWNER_NAME_ANNOTATION: &str = "objectset.rio.cattle.io/owner-name";
const OWNER_NAMESPACE_ANNOTATION: &str = "objectset.rio.cattle.io/owner-namespace";
/// client-go `ItemExponentialFailureRateLimiter(5ms, 1000s)`, the per-item part of
/// `DefaultControllerRateLimiter` wrangler's controllers use.
const BACKOFF_BASE: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1000);

struct Retry {
    failures: u32,
    at: Instant,
}

/// The ManagedChart controller of one namespace.
pub(super) struct ManagedChartController {
    namespace: String,
    charts: Api<DynamicObject>,
    bundles: Api<DynamicObject>,
    /// resourceVersion of each ManagedChart when it was last handled: a new one is an event.
    seen_charts: HashMap<String, String>,
    /// resourceVersion of each Bundle when last seen: a new one enqueues its owner.
    seen_bundles: HashMap<String, String>,
    retry: HashMap<String, Retry>,
}

impl ManagedChartController {
    pub(super) fn new(namespace: &str, charts: Api<DynamicObject>, bundles: Api<DynamicObject>) -> Self {
        ManagedChartController {
            namespace: namespace.to_string(),
            charts,
            bundles,
            seen_charts: HashMap::new(),
            seen_bundles: HashMap::new(),
            retry: HashMap::new(),
        }
    }

    /// One pass over the informer snapshot: handle every enqueued ManagedChart.
    pub(super) async fn tick(&mut self, charts: &[DynamicObject], bundles: &[DynamicObject], shared: &Shared) {
        let now = Instant::now();
        let mut queue = BTreeSet::new();
        let by_uid: HashMap<&str, &str> = charts.iter().filter_map(|c| Some((uid(c)?, name(c)?))).collect();
        for c in charts {
            if let Some(n) = name(c)
                && self.seen_charts.get(n).map(String::as_str) != Some(rv(c))
            {
                queue.insert(n.to_string());
            }
        }
        // `relatedresource.Watch(... OwnerResolver(true, "management.cattle.io/v3", "ManagedChart")
        // ...)`: any change of a Bundle enqueues the ManagedChart that owns it.
        for b in bundles {
            let Some(n) = name(b) else { continue };
            if self.seen_bundles.get(n).map(String::as_str) == Some(rv(b)) {
                continue;
            }
            self.seen_bundles.insert(n.to_string(), rv(b).to_string());
            if let Some(owner) = controller_owner(b).and_then(|uid| by_uid.get(uid)) {
                queue.insert(owner.to_string());
            }
        }
        self.seen_bundles.retain(|n, _| bundles.iter().any(|b| name(b) == Some(n.as_str())));
        // Errors come back after the rate limiter's delay.
        queue.extend(self.retry.iter().filter(|(_, r)| r.at <= now).map(|(n, _)| n.clone()));
        // `OnRepoChange`: a repository change (here: a mode change) enqueues the charts.
        queue.extend(shared.take_enqueued(charts.iter().filter_map(name)));
        self.remove_orphans(charts, bundles).await;
        for n in queue {
            if let Some(chart) = charts.iter().find(|c| name(c) == Some(n.as_str())) {
                self.sync(chart, bundles, shared).await;
            }
        }
        self.seen_charts.retain(|n, _| charts.iter().any(|c| name(c) == Some(n.as_str())));
        self.retry.retain(|n, _| charts.iter().any(|c| name(c) == Some(n.as_str())));
    }

    /// The generated status handler's `sync`: run the generating handler, set `Defined` from its
    /// error, write the status with `UpdateStatus` (PUT on `/status`) when it changed.
    async fn sync(&mut self, chart: &DynamicObject, bundles: &[DynamicObject], shared: &Shared) {
        let Some(chart_name) = name(chart).map(str::to_string) else { return };
        self.seen_charts.insert(chart_name.clone(), rv(chart).to_string());
        let now = status::now_rfc3339();
        let orig = status::bundle_status(chart.data.get("status").unwrap_or(&Value::Null));
        let mut new_status = orig.clone();
        let mode = shared.mode(&chart_name);
        let result = self.handle(chart, bundles, mode, &mut new_status).await;
        let err_text = result.err();
        if err_text.is_some() {
            // "Revert to old status on error".
            new_status = orig.clone();
        }
        Conditions::of(&mut new_status, &now).set_error("Defined", err_text.as_deref());
        let mut new_status = status::bundle_status(&new_status);
        let mut update_err = None;
        if new_status != orig {
            Conditions::of(&mut new_status, &now).last_updated("Defined");
            let mut obj = chart.clone();
            obj.data["status"] = new_status;
            let pp = PostParams { field_manager: Some(FIELD_MANAGER_RANCHER.into()), ..Default::default() };
            if let Err(e) = self.charts.replace_status(&chart_name, &pp, &obj).await {
                update_err = Some(e.to_string());
            }
        }
        match err_text.or(update_err) {
            None => {
                self.retry.remove(&chart_name);
            }
            Some(e) => {
                let failures = self.retry.get(&chart_name).map_or(0, |r| r.failures) + 1;
                let delay = BACKOFF_BASE.saturating_mul(2u32.saturating_pow(failures - 1)).min(BACKOFF_MAX);
                self.retry.insert(chart_name.clone(), Retry { failures, at: Instant::now() + delay });
                shared.count_failure(&chart_name);
                tracing::debug!(ns = %self.namespace, chart = %chart_name, error = %e, ?delay, "rancher stand-in: requeue");
            }
        }
    }

    /// The generating handler's `Handle` → `OnChange` → wrangler apply of the Bundle.
    async fn handle(
        &self,
        chart: &DynamicObject,
        bundles: &[DynamicObject],
        mode: Mode,
        status: &mut Value,
    ) -> Result<(), String> {
        let spec = chart.data.get("spec").cloned().unwrap_or(Value::Null);
        // `h.charts.Chart(...)` resolves the chart in the ClusterRepo first; failing, OnChange
        // returns before building the Bundle, so nothing (not `paused` either) reaches Fleet.
        if mode == Mode::ChartVersionNotFound {
            return Err(format!("no chart version found for {}-{}", str_of(&spec, "chart"), str_of(&spec, "version")));
        }
        let desired = self.desired_bundle(chart, &spec);
        let bundle_name = desired["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let current = bundles.iter().find(|b| name(b) == Some(bundle_name.as_str()));
        // `updateStatus`: the *current* Bundle's status, read from the cache before the apply,
        // replaces the ManagedChart's status wholesale (`status.BundleStatus = bundle.Status`).
        if let Some(b) = current {
            *status = status::bundle_status(b.data.get("status").unwrap_or(&Value::Null));
        }
        self.apply(&bundle_name, desired, current).await.map_err(|e| e.to_string())
    }

    /// The Bundle `OnChange` builds (fields Rancher copies, Go `omitempty` honoured).
    fn desired_bundle(&self, chart: &DynamicObject, spec: &Value) -> Value {
        let chart_name = name(chart).unwrap_or_default();
        let mut helm = Map::new();
        let release = str_of(spec, "releaseName");
        if !release.is_empty() {
            // `name.Limit(mcc.Spec.ReleaseName, capr.MaxHelmReleaseNameLength)`; release names
            // over the limit are not modelled (cut without wrangler's hash suffix).
            helm.insert(
                "releaseName".into(),
                json!(release.chars().take(MAX_HELM_RELEASE_NAME_LENGTH).collect::<String>()),
            );
        }
        put_str(&mut helm, spec, "version");
        put_nonzero(&mut helm, spec, "timeoutSeconds");
        put_present(&mut helm, spec, "values");
        put_true(&mut helm, spec, "force");
        put_true(&mut helm, spec, "takeOwnership");
        put_nonzero(&mut helm, spec, "maxHistory");
        let mut bundle_spec = Map::new();
        put_str(&mut bundle_spec, spec, "defaultNamespace");
        // `TargetNamespace: mcc.Spec.TargetNamespace` (json `namespace` on both sides).
        put_str(&mut bundle_spec, spec, "namespace");
        bundle_spec.insert("helm".into(), Value::Object(helm));
        put_str(&mut bundle_spec, spec, "serviceAccount");
        put_present(&mut bundle_spec, spec, "diff");
        // `Paused: mcc.Spec.Paused` with `omitempty`: absent when false.
        put_true(&mut bundle_spec, spec, "paused");
        put_present(&mut bundle_spec, spec, "rolloutStrategy");
        if spec.get("targets").and_then(Value::as_array).is_some_and(|t| !t.is_empty()) {
            bundle_spec.insert("targets".into(), spec["targets"].clone());
        }
        // The chart archive's files; here one file that changes with the chart version.
        bundle_spec.insert(
            "resources".into(),
            json!([{
                "name": "Chart.yaml",
                "content": format!(
                    "apiVersion: v2\nname: {}\nversion: {}\n",
                    str_of(spec, "chart"),
                    str_of(spec, "version")
                ),
            }]),
        );
        json!({
            "apiVersion": "fleet.cattle.io/v1alpha1",
            "kind": "Bundle",
            "metadata": {
                "name": bundle_name(chart_name),
                "namespace": self.namespace,
                "annotations": {
                    ID_ANNOTATION: SET_ID,
                    OWNER_GVK_ANNOTATION: "management.cattle.io/v3, Kind=ManagedChart",
                    OWNER_NAME_ANNOTATION: chart_name,
                    OWNER_NAMESPACE_ANNOTATION: self.namespace,
                },
                // `WithSetOwnerReference(true, true)`.
                "ownerReferences": [{
                    "apiVersion": "management.cattle.io/v3",
                    "kind": "ManagedChart",
                    "name": chart_name,
                    "uid": uid(chart).unwrap_or_default(),
                    "controller": true,
                    "blockOwnerDeletion": true,
                }],
            },
            "spec": bundle_spec,
        })
    }

    /// wrangler apply: create, or a three-way merge patch against the last applied object.
    async fn apply(&self, bundle_name: &str, mut desired: Value, current: Option<&DynamicObject>) -> Result<(), Error> {
        let applied = serde_json::to_string(&desired)?;
        desired["metadata"]["annotations"][APPLIED_ANNOTATION] = json!(applied);
        let Some(current) = current else {
            let obj: DynamicObject = serde_json::from_value(desired)?;
            let pp = PostParams { field_manager: Some(FIELD_MANAGER_RANCHER.into()), ..Default::default() };
            self.bundles.create(&pp, &obj).await?;
            return Ok(());
        };
        let current = serde_json::to_value(current)?;
        let original = current["metadata"]["annotations"][APPLIED_ANNOTATION]
            .as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .unwrap_or(Value::Null);
        let view = |v: &Value| {
            json!({
                "metadata": {
                    "annotations": v["metadata"]["annotations"],
                    "ownerReferences": v["metadata"]["ownerReferences"],
                },
                "spec": v["spec"],
            })
        };
        let patch = merge::three_way(&view(&original), &view(&desired), &view(&current));
        if patch.is_empty() {
            return Ok(());
        }
        let pp = PatchParams { field_manager: Some(FIELD_MANAGER_RANCHER.into()), ..Default::default() };
        self.bundles.patch(bundle_name, &pp, &Patch::Merge(Value::Object(patch))).await?;
        Ok(())
    }

    /// The generating handler's `Remove`: when a ManagedChart is gone, the objects applied for it
    /// are deleted (upstream also by ownerReference garbage collection, which no controller runs
    /// here).
    async fn remove_orphans(&self, charts: &[DynamicObject], bundles: &[DynamicObject]) {
        for b in bundles {
            let ours =
                b.metadata.annotations.as_ref().and_then(|a| a.get(ID_ANNOTATION)).map(String::as_str) == Some(SET_ID);
            let Some(owner) = controller_owner(b) else { continue };
            if !ours || charts.iter().any(|c| uid(c) == Some(owner)) {
                continue;
            }
            let Some(n) = name(b) else { continue };
            match self.bundles.delete(n, &DeleteParams::default()).await {
                Ok(_) => {
                    tracing::debug!(ns = %self.namespace, bundle = n, "rancher stand-in: owner gone, Bundle deleted")
                }
                Err(e) => {
                    tracing::debug!(ns = %self.namespace, bundle = n, error = %e, "rancher stand-in: delete failed")
                }
            }
        }
    }
}

fn name(o: &DynamicObject) -> Option<&str> {
    o.metadata.name.as_deref()
}

fn uid(o: &DynamicObject) -> Option<&str> {
    o.metadata.uid.as_deref()
}

fn rv(o: &DynamicObject) -> &str {
    o.metadata.resource_version.as_deref().unwrap_or_default()
}

/// The uid of the ManagedChart that controls `b`, if any.
pub(super) fn controller_owner(b: &DynamicObject) -> Option<&str> {
    b.metadata
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "ManagedChart" && o.api_version == "management.cattle.io/v3")
        .map(|o| o.uid.as_str())
}

/// The name of the ManagedChart that controls `b`, if any.
pub(super) fn controller_owner_name(b: &DynamicObject) -> Option<String> {
    let uid = controller_owner(b)?;
    b.metadata.owner_references.as_ref()?.iter().find(|o| o.uid == uid).map(|o| o.name.clone())
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn put_str(to: &mut Map<String, Value>, from: &Value, key: &str) {
    let s = str_of(from, key);
    if !s.is_empty() {
        to.insert(key.into(), json!(s));
    }
}

fn put_nonzero(to: &mut Map<String, Value>, from: &Value, key: &str) {
    if let Some(n) = from.get(key).and_then(Value::as_i64).filter(|n| *n != 0) {
        to.insert(key.into(), json!(n));
    }
}

fn put_true(to: &mut Map<String, Value>, from: &Value, key: &str) {
    if from.get(key).and_then(Value::as_bool) == Some(true) {
        to.insert(key.into(), json!(true));
    }
}

fn put_present(to: &mut Map<String, Value>, from: &Value, key: &str) {
    if let Some(v) = from.get(key).filter(|v| !v.is_null()) {
        to.insert(key.into(), v.clone());
    }
}
