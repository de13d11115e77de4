//! Seeding the control plane: fresh namespaces of paused ManagedCharts (paused the way the
//! upgrade's pause side does it), decoys that must stay paused, and ledgers.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kubeenv::crds;
use pause_ledger::api::Access;
use pause_ledger::kinds::FieldPath;
use pause_ledger::ownership::{MARK_ANNOTATION, pause_patch};
use serde_json::{Value, json};

/// The upgrade id every benchmark ledger records.
pub const UPGRADE: &str = "hvst-upgrade-bench";
/// Another upgrade's id (decoys marked by it must stay paused).
pub const OTHER_UPGRADE: &str = "hvst-upgrade-older";
/// The field manager an administrator's `kubectl patch` shows up as.
pub const KUBECTL_MANAGER: &str = "kubectl-patch";
/// Requests in flight while seeding.
pub const SEED_CONCURRENCY: usize = 32;

/// The ManagedChart API in `ns`.
pub fn charts(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &crds::managed_chart_resource())
}

/// The collection path of ManagedCharts in `ns`.
pub fn chart_path(ns: &str, name: &str) -> String {
    format!("/apis/management.cattle.io/v3/namespaces/{ns}/managedcharts/{name}")
}

/// A chart spec of realistic size (what Rancher's managedcharts carry).
fn spec(name: &str, paused: bool) -> Value {
    json!({
        "chart": name,
        "repoName": "harvester-charts",
        "releaseName": name,
        "version": "1.5.1",
        "defaultNamespace": "harvester-system",
        "timeoutSeconds": 600,
        "paused": paused,
        "values": {
            "replicas": 3,
            "image": {"repository": format!("rancher/{name}"), "tag": "v1.5.1", "pullPolicy": "IfNotPresent"},
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
            "nodeSelector": {"kubernetes.io/os": "linux"},
        },
        "diff": {"comparePatches": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": name, "namespace": "harvester-system", "operations": [{"op": "remove", "path": "/spec/replicas"}]}]},
    })
}

/// Create a running chart as Rancher would (field manager `rancher`); returns it as JSON.
pub async fn create_running(client: &kube::Client, ns: &str, name: &str) -> Result<Value> {
    let ar = crds::managed_chart_resource();
    let mut obj = DynamicObject::new(name, &ar).within(ns);
    obj.data = json!({"spec": spec(name, false)});
    let pp = PostParams { field_manager: Some("rancher".into()), ..Default::default() };
    let created = charts(client, ns).create(&pp, &obj).await.with_context(|| format!("create chart {ns}/{name}"))?;
    Ok(serde_json::to_value(created)?)
}

/// Pause `obj` the way the pause side does (mark + field manager `pause-ledger`, one CAS
/// JSON Patch built by `pause_ledger::ownership::pause_patch`).
pub async fn pause_as_upgrade(access: &Access, ns: &str, obj: &Value, upgrade: &str) -> Result<()> {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).context("object without a name")?;
    let field = FieldPath::parse("spec.paused").map_err(anyhow::Error::msg)?;
    let patch = pause_patch(obj, &field, upgrade).map_err(anyhow::Error::msg)?.context("already paused")?;
    access
        .json_patch(name, &chart_path(ns, name), &patch, "pause-ledger", false)
        .await
        .with_context(|| format!("pause {ns}/{name}"))?;
    Ok(())
}

/// `kubectl patch --type merge -p '{"spec":{"paused":P}}'`, as an administrator does by hand.
pub async fn set_paused_by_hand(client: &kube::Client, ns: &str, name: &str, paused: bool) -> Result<()> {
    charts(client, ns)
        .patch(
            name,
            &PatchParams { field_manager: Some(KUBECTL_MANAGER.into()), ..Default::default() },
            &Patch::Merge(json!({"spec": {"paused": paused}})),
        )
        .await
        .with_context(|| format!("patch {ns}/{name} by hand"))?;
    Ok(())
}

/// Create `names` in `ns` and pause each as upgrade `UPGRADE` (2 requests each, concurrently).
pub async fn paused_charts(client: &kube::Client, ns: &str, names: &[String]) -> Result<()> {
    let access = Access::new(client.clone(), Duration::from_secs(30));
    futures::stream::iter(names)
        .map(|n| {
            let access = access.clone();
            async move {
                let obj = create_running(client, ns, n).await?;
                pause_as_upgrade(&access, ns, &obj, UPGRADE).await
            }
        })
        .buffer_unordered(SEED_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// Why a decoy is paused: none of these may be unpaused by a restore of our ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decoy {
    /// Paused by an administrator before the upgrade: no mark, `kubectl-patch` owns the field.
    HandPaused,
    /// Paused by the upgrade, then unpaused and re-paused by hand (mark left, field taken over).
    RePausedByHand,
    /// Paused and marked by another upgrade.
    OtherUpgrade,
}

/// The charts of one ledger, by what must happen to them.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Population {
    /// Namespace.
    pub ns: String,
    /// Paused by this upgrade: must end unpaused (else "lost").
    pub ours: Vec<String>,
    /// Must stay paused (else "wrongful unpause").
    pub decoys: Vec<(String, Decoy)>,
    /// Paused by the upgrade, unpaused by hand since: must end unpaused, untouched.
    pub running: Vec<String>,
    /// Recorded, then deleted.
    pub gone: Vec<String>,
}

impl Population {
    /// Every recorded name, decoys spread between our entries.
    pub fn ledger_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        let extras: Vec<&String> = self.decoys.iter().map(|(n, _)| n).chain(&self.running).chain(&self.gone).collect();
        let step = (self.ours.len() / extras.len().max(1)).max(1);
        let mut extra = extras.into_iter();
        for (i, n) in self.ours.iter().enumerate() {
            out.push(n.clone());
            if (i + 1) % step == 0
                && let Some(e) = extra.next()
            {
                out.push(e.clone());
            }
        }
        out.extend(extra.cloned());
        out
    }
}

/// Names `prefix-00000`…; every `crd_every`-th ends in `-crd` (restored in an earlier wave).
pub fn names(prefix: &str, n: usize, crd_every: Option<usize>) -> Vec<String> {
    (0..n)
        .map(|i| match crd_every {
            Some(k) if i % k == 0 => format!("{prefix}-{i:05}-crd"),
            _ => format!("{prefix}-{i:05}"),
        })
        .collect()
}

/// Seed a population: `ours` upgrade-paused charts, two decoys of each kind, one chart the
/// admin unpaused since, one deleted since. Returns what must happen to each.
pub async fn population(client: &kube::Client, ns: &str, ours: usize) -> Result<Population> {
    let ours_names = names("mc", ours, Some(10));
    paused_charts(client, ns, &ours_names).await?;
    let access = Access::new(client.clone(), Duration::from_secs(30));
    let mut decoys = Vec::new();
    for i in 0..2 {
        let n = format!("decoy-hand-{i}");
        create_running(client, ns, &n).await?;
        set_paused_by_hand(client, ns, &n, true).await?;
        decoys.push((n, Decoy::HandPaused));

        let n = format!("decoy-repaused-{i}");
        let obj = create_running(client, ns, &n).await?;
        pause_as_upgrade(&access, ns, &obj, UPGRADE).await?;
        set_paused_by_hand(client, ns, &n, false).await?;
        set_paused_by_hand(client, ns, &n, true).await?;
        decoys.push((n, Decoy::RePausedByHand));

        let n = format!("decoy-other-{i}");
        let obj = create_running(client, ns, &n).await?;
        pause_as_upgrade(&access, ns, &obj, OTHER_UPGRADE).await?;
        decoys.push((n, Decoy::OtherUpgrade));
    }
    let running = "unpaused-by-hand".to_string();
    let obj = create_running(client, ns, &running).await?;
    pause_as_upgrade(&access, ns, &obj, UPGRADE).await?;
    set_paused_by_hand(client, ns, &running, false).await?;
    let gone = "deleted-since".to_string();
    let obj = create_running(client, ns, &gone).await?;
    pause_as_upgrade(&access, ns, &obj, UPGRADE).await?;
    charts(client, ns).delete(&gone, &DeleteParams::default()).await.context("delete chart")?;
    Ok(Population { ns: ns.to_string(), ours: ours_names, decoys, running: vec![running], gone: vec![gone] })
}

/// A full-form ledger (`ledger.yaml`) recording `names` in `ns`.
pub fn full_ledger(ns: &str, names: &[String]) -> String {
    let mut s = format!("version: pause-ledger/v1\nupgrade: {UPGRADE}\npausedAt: 2026-11-27T10:00:00Z\nentries:\n");
    for n in names {
        s.push_str(&format!("  - namespace: {ns}\n    name: {n}\n"));
    }
    s
}

/// Create (or replace) ConfigMap `ns/name` with `data`.
pub async fn write_configmap(
    client: &kube::Client,
    ns: &str,
    name: &str,
    data: BTreeMap<String, String>,
) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(data),
        ..Default::default()
    };
    let _ = api.delete(name, &DeleteParams::default()).await;
    api.create(&PostParams::default(), &cm).await.with_context(|| format!("create ConfigMap {ns}/{name}"))?;
    Ok(())
}

/// Write the full-form ledger of `names` as ConfigMap `ns/name`.
pub async fn write_ledger(client: &kube::Client, ns: &str, name: &str, names: &[String]) -> Result<String> {
    let text = full_ledger(ns, names);
    write_configmap(client, ns, name, BTreeMap::from([(pause_ledger::ledger::LEDGER_KEY.to_string(), text.clone())]))
        .await?;
    Ok(text)
}

/// A ConfigMap's data.
pub async fn configmap_data(client: &kube::Client, ns: &str, name: &str) -> Result<BTreeMap<String, String>> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    Ok(api.get(name).await.with_context(|| format!("get ConfigMap {ns}/{name}"))?.data.unwrap_or_default())
}

/// One chart's live state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    /// `spec.paused`.
    pub paused: bool,
    /// The mark annotation.
    pub mark: Option<String>,
    /// metadata.resourceVersion.
    pub resource_version: String,
}

/// Every chart in `ns` (paginated list).
pub async fn live(client: &kube::Client, ns: &str) -> Result<BTreeMap<String, Live>> {
    let api = charts(client, ns);
    let mut out = BTreeMap::new();
    let mut lp = ListParams::default().limit(500);
    for _ in 0..1000 {
        let page = api.list(&lp).await.with_context(|| format!("list charts in {ns}"))?;
        for c in &page.items {
            let name = c.metadata.name.clone().unwrap_or_default();
            out.insert(
                name,
                Live {
                    paused: c.data.pointer("/spec/paused") == Some(&Value::Bool(true)),
                    mark: c.metadata.annotations.as_ref().and_then(|a| a.get(MARK_ANNOTATION).cloned()),
                    resource_version: c.metadata.resource_version.clone().unwrap_or_default(),
                },
            );
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => lp = lp.continue_token(&token),
            None => return Ok(out),
        }
    }
    bail!("listing charts in {ns} did not end")
}

/// How many charts in `ns` are paused.
pub async fn count_paused(client: &kube::Client, ns: &str) -> Result<usize> {
    Ok(live(client, ns).await?.values().filter(|l| l.paused).count())
}

/// Delete every chart in `ns` (one deletecollection), keeping etcd small between runs.
pub async fn delete_charts(client: &kube::Client, ns: &str) -> Result<()> {
    charts(client, ns)
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await
        .with_context(|| format!("delete charts in {ns}"))?;
    Ok(())
}
