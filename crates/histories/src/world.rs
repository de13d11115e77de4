//! The world of one history on the real API server: creating its objects, the administrators'
//! and the script's writes (straight to the API server, each with its own field manager), and
//! reading an object's pause-relevant state — the oracle's own reading, not pause-ledger's.

use std::collections::BTreeMap;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{CHARTS, LEDGER, Obj};

/// The mark annotation pause-ledger writes (its documented contract).
pub const MARK: &str = "pause-ledger.io/paused-by";
/// The explicit keep-paused intent an administrator sets.
pub const KEEP_PAUSED: &str = "pause-ledger.io/keep-paused";
/// pause-ledger's field manager.
pub const PAUSE_LEDGER: &str = "pause-ledger";
/// An administrator's `kubectl patch`.
pub const ADMIN_KUBECTL: &str = "admin-kubectl";
/// A GitOps tool's server-side apply.
pub const ADMIN_GITOPS: &str = "admin-gitops";
/// An administrator's `kubectl annotate`.
pub const ADMIN_ANNOTATE: &str = "admin-annotate";
/// An administrator's `kubectl create` of a deleted object.
pub const ADMIN_CREATE: &str = "admin-create";
/// Harvester's upgrade script (`kubectl patch`, unmarked pauses).
pub const SCRIPT_KUBECTL: &str = "kubectl-patch";
/// The upgrade script writing marked pauses with a custom field manager.
pub const SCRIPT_MARKED: &str = "upgrade-script";
/// The script's ledger ConfigMap writes (`kubectl create configmap`).
pub const SCRIPT_CREATE: &str = "kubectl-create";
/// The upgrade id the script writes into its ledgers (and marks, in the marked form).
pub const SCRIPT_UPGRADE: &str = "script-up";
/// Creates the world's objects at the start (running).
pub const SETUP: &str = "histories-setup";
/// The Rancher stand-in's status writes.
pub const RANCHER: &str = "rancher";
/// Every administrator field manager (the writers whose intent pause-ledger must respect).
pub const ADMINS: [&str; 4] = [ADMIN_KUBECTL, ADMIN_GITOPS, ADMIN_ANNOTATE, ADMIN_CREATE];

/// Errors of the world's own API calls.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// The API server refused or failed.
    #[error("{what}: {source}")]
    Api {
        /// What was attempted.
        what: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },
    /// A response could not be read.
    #[error("{0}")]
    Decode(String),
}

fn api_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> WorldError {
    let what = what.into();
    move |source| WorldError::Api { what, source }
}

/// The kube resource of an object's kind.
pub fn resource(obj: Obj) -> ApiResource {
    match obj {
        Obj::Chart(_) => ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("management.cattle.io", "v3", "ManagedChart"),
            "managedcharts",
        ),
        Obj::CronJob => ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("batch", "v1", "CronJob"), "cronjobs"),
    }
}

/// The ConfigMap resource.
pub fn configmaps() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("", "v1", "ConfigMap"), "configmaps")
}

/// The API of `obj`'s kind in `ns`.
pub fn api(client: &kube::Client, ns: &str, obj: Obj) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource(obj))
}

/// The object's body: running or paused, no annotations.
fn body(obj: Obj, paused: bool) -> Value {
    match obj {
        Obj::Chart(_) => json!({
            "apiVersion": obj.api_version(), "kind": obj.kind(),
            "metadata": {"name": obj.name()},
            "spec": {"chart": obj.name(), "repoName": "harvester-charts", "releaseName": obj.name(),
                     "version": "1.5.1", "defaultNamespace": "harvester-system", "paused": paused},
        }),
        Obj::CronJob => json!({
            "apiVersion": obj.api_version(), "kind": obj.kind(),
            "metadata": {"name": obj.name()},
            "spec": {"schedule": "0 3 * * *", "suspend": paused, "jobTemplate": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "backup", "image": "registry.example/backup:1"}]}}}}},
        }),
    }
}

/// Create `obj` with field manager `manager`; returns its resourceVersion.
pub async fn create(client: &kube::Client, ns: &str, obj: Obj, paused: bool, manager: &str) -> Result<u64, WorldError> {
    let o: DynamicObject = serde_json::from_value(body(obj, paused)).map_err(|e| WorldError::Decode(e.to_string()))?;
    let pp = PostParams { field_manager: Some(manager.into()), ..Default::default() };
    let created = api(client, ns, obj).create(&pp, &o).await.map_err(api_err(format!("create {obj}")))?;
    Ok(rv_of(&created.metadata.resource_version))
}

/// Delete `obj`.
pub async fn delete(client: &kube::Client, ns: &str, obj: Obj) -> Result<(), WorldError> {
    api(client, ns, obj)
        .delete(obj.name(), &DeleteParams::default())
        .await
        .map_err(api_err(format!("delete {obj}")))?;
    Ok(())
}

/// `metadata.resourceVersion` as a number: one etcd's revisions are ordered, which the oracle
/// uses to place versions within an object's history.
pub fn rv_of(rv: &Option<String>) -> u64 {
    rv.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// A merge patch of `obj` by `manager`; returns the resulting resourceVersion.
pub async fn merge_patch(
    client: &kube::Client,
    ns: &str,
    obj: Obj,
    manager: &str,
    patch: &Value,
) -> Result<u64, WorldError> {
    let pp = PatchParams { field_manager: Some(manager.into()), ..Default::default() };
    let o = api(client, ns, obj)
        .patch(obj.name(), &pp, &Patch::Merge(patch))
        .await
        .map_err(api_err(format!("patch {obj} as {manager}")))?;
    Ok(rv_of(&o.metadata.resource_version))
}

/// `{"spec": {"<pause field>": paused}}`.
pub fn pause_body(obj: Obj, paused: bool) -> Value {
    let [_, field] = obj.field();
    json!({"spec": {field: paused}})
}

/// Server-side apply of the pause field `true` by `manager`, forced (as GitOps tools do).
pub async fn apply_paused(client: &kube::Client, ns: &str, obj: Obj, manager: &str) -> Result<u64, WorldError> {
    let [_, field] = obj.field();
    let doc = json!({"apiVersion": obj.api_version(), "kind": obj.kind(), "metadata": {"name": obj.name()},
                     "spec": {field: true}});
    let pp = PatchParams::apply(manager).force();
    let o = api(client, ns, obj)
        .patch(obj.name(), &pp, &Patch::Apply(&doc))
        .await
        .map_err(api_err(format!("apply {obj} as {manager}")))?;
    Ok(rv_of(&o.metadata.resource_version))
}

/// The Rancher stand-in's status write (status subresource).
pub async fn write_status(client: &kube::Client, ns: &str, chart: usize, n: u8) -> Result<u64, WorldError> {
    let obj = Obj::Chart(chart);
    let patch = json!({"status": {"observedGeneration": i64::from(n), "summary": {"ready": i64::from(n % 2), "desiredReady": 1},
                                  "display": {"readyClusters": format!("{}/1", n % 2)}}});
    let pp = PatchParams { field_manager: Some(RANCHER.into()), ..Default::default() };
    let o = api(client, ns, obj)
        .patch_status(obj.name(), &pp, &Patch::Merge(&patch))
        .await
        .map_err(api_err(format!("status of {obj}")))?;
    Ok(rv_of(&o.metadata.resource_version))
}

/// The current resourceVersion of `obj` (`None`: absent).
pub async fn current_rv(client: &kube::Client, ns: &str, obj: Obj) -> Result<Option<u64>, WorldError> {
    let o = api(client, ns, obj).get_opt(obj.name()).await.map_err(api_err(format!("get {obj}")))?;
    Ok(o.map(|o| rv_of(&o.metadata.resource_version)))
}

/// Create the ledger ConfigMap (create-only) with `data`, as `manager`.
pub async fn create_ledger(
    client: &kube::Client,
    ns: &str,
    data: BTreeMap<String, String>,
    manager: &str,
) -> Result<(), WorldError> {
    let cm: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": LEDGER}, "data": data,
    }))
    .map_err(|e| WorldError::Decode(e.to_string()))?;
    let pp = PostParams { field_manager: Some(manager.into()), ..Default::default() };
    Api::<DynamicObject>::namespaced_with(client.clone(), ns, &configmaps())
        .create(&pp, &cm)
        .await
        .map_err(api_err("create the ledger ConfigMap"))?;
    Ok(())
}

/// The ledger ConfigMap's data (`None`: absent).
pub async fn ledger_data(client: &kube::Client, ns: &str) -> Result<Option<BTreeMap<String, String>>, WorldError> {
    let cm = Api::<DynamicObject>::namespaced_with(client.clone(), ns, &configmaps())
        .get_opt(LEDGER)
        .await
        .map_err(api_err("get the ledger"))?;
    Ok(cm.map(|cm| configmap_data(&cm.data)))
}

/// A ConfigMap's `data` from its JSON.
pub fn configmap_data(data: &Value) -> BTreeMap<String, String> {
    data.get("data")
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

/// An object's pause-relevant state, as the oracle reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseView {
    /// metadata.uid.
    pub uid: String,
    /// metadata.resourceVersion.
    pub rv: u64,
    /// The pause field is `true` (absent and `false` alike are "running").
    pub paused: bool,
    /// The mark annotation.
    pub mark: Option<String>,
    /// The keep-paused annotation is `"true"`.
    pub keep: bool,
    /// Field managers owning the pause field, main resource only (status subresource entries
    /// never count), sorted, each once.
    pub owners: Vec<String>,
}

impl PauseView {
    /// Read it from an object's JSON.
    pub fn of(obj: Obj, v: &Value) -> PauseView {
        let [a, b] = obj.field();
        let paused = v.get(a).and_then(|s| s.get(b)).and_then(Value::as_bool) == Some(true);
        let ann = v.pointer("/metadata/annotations");
        let annotation = |k: &str| ann.and_then(|a| a.get(k)).and_then(Value::as_str).map(str::to_string);
        let mut owners: Vec<String> = v
            .pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|e| e.get("subresource").and_then(Value::as_str).unwrap_or("").is_empty())
            .filter(|e| e.pointer(&format!("/fieldsV1/f:{a}/f:{b}")).is_some())
            .filter_map(|e| e.get("manager").and_then(Value::as_str).map(str::to_string))
            .collect();
        owners.sort();
        owners.dedup();
        PauseView {
            uid: v.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string(),
            rv: v
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0),
            paused,
            mark: annotation(MARK),
            keep: annotation(KEEP_PAUSED).as_deref() == Some("true"),
            owners,
        }
    }

    /// The single owner of the pause field, if there is exactly one.
    pub fn sole_owner(&self) -> Option<&str> {
        match self.owners.as_slice() {
            [one] => Some(one),
            _ => None,
        }
    }
}

/// Every object's current state (`None`: absent).
pub async fn live(client: &kube::Client, ns: &str) -> Result<BTreeMap<Obj, Option<PauseView>>, WorldError> {
    let mut out = BTreeMap::new();
    for obj in Obj::all() {
        let got = api(client, ns, obj).get_opt(obj.name()).await.map_err(api_err(format!("get {obj}")))?;
        let view = match got {
            Some(o) => {
                Some(PauseView::of(obj, &serde_json::to_value(&o).map_err(|e| WorldError::Decode(e.to_string()))?))
            }
            None => None,
        };
        out.insert(obj, view);
    }
    Ok(out)
}

/// Names of the charts, for `record` and the script.
pub fn chart_names(charts: &[usize]) -> Vec<&'static str> {
    charts.iter().filter_map(|i| CHARTS.get(*i).copied()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_owners_of_the_main_resource_only() {
        let v = json!({"metadata": {"uid": "u1", "resourceVersion": "42",
            "annotations": {MARK: "up-a", KEEP_PAUSED: "true"},
            "managedFields": [
                {"manager": "rancher", "operation": "Update", "subresource": "status", "fieldsV1": {"f:spec": {"f:paused": {}}}},
                {"manager": "admin-gitops", "operation": "Apply", "fieldsV1": {"f:spec": {"f:paused": {}}}},
                {"manager": "pause-ledger", "operation": "Update", "fieldsV1": {"f:spec": {"f:paused": {}}, "f:metadata": {}}},
                {"manager": "histories-setup", "operation": "Update", "fieldsV1": {"f:spec": {"f:chart": {}}}}
            ]},
            "spec": {"paused": true}});
        let p = PauseView::of(Obj::Chart(0), &v);
        assert!(p.paused && p.keep);
        assert_eq!(p.rv, 42);
        assert_eq!(p.mark.as_deref(), Some("up-a"));
        assert_eq!(p.owners, vec!["admin-gitops", "pause-ledger"]);
        assert_eq!(p.sole_owner(), None);
        let cj = json!({"metadata": {"managedFields": [{"manager": "m", "fieldsV1": {"f:spec": {"f:suspend": {}}}}]},
                        "spec": {"suspend": true}});
        let p = PauseView::of(Obj::CronJob, &cj);
        assert!(p.paused);
        assert_eq!(p.sole_owner(), Some("m"));
        assert!(!PauseView::of(Obj::Chart(0), &json!({"spec": {"paused": "yes"}})).paused);
    }
}
