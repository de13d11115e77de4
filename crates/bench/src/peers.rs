//! The peers pause-ledger is compared with, each run as its own process (so CPU time, peak RSS
//! and start-up are measured the same way for every peer), plus a prototype of the change the
//! benchmarks recommend for pause-ledger itself.
//!
//! Every peer reads the same ledger ConfigMap (one GET) and parses it with pause-ledger's own
//! parser, so they differ only in how they unpause.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use futures::StreamExt;
use http::Method;
use jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use pause_ledger::api::{Access, ApiError, ClientOptions, Verb, build_client, configmap_path};
use pause_ledger::context::Context;
use pause_ledger::ledger::{self, Ledger, LedgerRef};
use pause_ledger::ledger_store::LedgerStore;
use pause_ledger::outcome::{EntryReport, Outcome};
use pause_ledger::ownership::{Decision, Rule, decide, pause_state};
use pause_ledger::retry::{Budget, ErrorClass, Policy, classify};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Which peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerKind {
    /// (b) Harvester's controller: sequential GET + full Update (PUT) per chart.
    GetPut,
    /// (c) A tight merge-patch loop with bounded concurrency.
    MergePatch,
    /// (e) Prototype: one paginated LIST per namespace, then pause-ledger's ownership decision
    /// and CAS JSON Patch per entry (GET only when the CAS fails), then the status write.
    ListCas,
}

impl FromStr for PeerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "get-put" => Ok(Self::GetPut),
            "merge-patch" => Ok(Self::MergePatch),
            "list-cas" => Ok(Self::ListCas),
            _ => Err(format!("unknown peer {s:?} (get-put, merge-patch, list-cas)")),
        }
    }
}

/// Arguments of `pause-ledger-bench peer`.
#[derive(Clone, Debug)]
pub struct PeerArgs {
    /// Which peer.
    pub kind: PeerKind,
    /// Kubeconfig.
    pub kubeconfig: PathBuf,
    /// The ledger.
    pub ledger: LedgerRef,
    /// Requests in flight (merge-patch, list-cas).
    pub concurrency: usize,
    /// Build the client with TCP_NODELAY (kube-client 5 leaves Nagle on).
    pub nodelay: bool,
    /// list-cas: keep only what the decision needs per listed object (the pause field, mark,
    /// resourceVersion, and the managedFields entries owning the pause field, reduced to it).
    pub compact: bool,
}

/// What a peer prints on stdout (one JSON object).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct PeerOutput {
    /// HTTP requests it sent.
    pub requests: u64,
    /// Charts it unpaused.
    pub restored: u64,
    /// Charts it failed on.
    pub failed: u64,
    /// Its own wall time, ms.
    pub duration_ms: u64,
}

async fn read_ledger(access: &Access, at: &LedgerRef) -> Result<Ledger> {
    let cm = access.get("ledger", &configmap_path(&at.namespace, &at.name)).await?.context("no ledger")?;
    let data = cm
        .get("data")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(k, _)| k.as_str() != ledger::STATUS_KEY)
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Ok(ledger::parse_configmap_data(&data)?)
}

/// Run one peer to completion.
pub async fn run(args: &PeerArgs) -> Result<PeerOutput> {
    let started = Instant::now();
    let client = if args.nodelay {
        // pause-ledger's own client: TCP_NODELAY since the benchmark showed Nagle's cost.
        build_client(&ClientOptions { kubeconfig: Some(args.kubeconfig.clone()), context: None }).await?
    } else {
        nagle_client(&args.kubeconfig).await?
    };
    let access = Access::new(client.clone(), Duration::from_secs(30));
    let ledger = read_ledger(&access, &args.ledger).await?;
    let mut out = match args.kind {
        PeerKind::GetPut => get_put(&client, &ledger).await,
        PeerKind::MergePatch => merge_patch(&client, &ledger, args.concurrency).await,
        PeerKind::ListCas => list_cas(&access, &args.ledger, &ledger, args.concurrency, args.compact).await?,
    };
    if args.kind != PeerKind::ListCas {
        out.requests += access.requests();
    }
    out.duration_ms = started.elapsed().as_millis() as u64;
    Ok(out)
}

/// kube-client 5's stock client (`Client::try_from(Config)`, Nagle's algorithm on) with its
/// retries off: what pause-ledger used before it set TCP_NODELAY, kept as the baseline of the
/// (e) vs (f) comparison.
pub async fn nagle_client(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let mut config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    config.default_retry = false;
    Ok(kube::Client::try_from(config)?)
}

fn chart_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &kubeenv::crds::managed_chart_resource())
}

/// (b): GET then PUT the whole object with `spec.paused: false`, one chart after the other.
/// Like Harvester's controller it has no retry; unlike it, it goes on after a failure.
async fn get_put(client: &kube::Client, ledger: &Ledger) -> PeerOutput {
    let mut out = PeerOutput::default();
    for e in &ledger.entries {
        let ns = e.object.namespace.as_deref().unwrap_or_default();
        let api = chart_api(client, ns);
        out.requests += 1;
        let mut obj = match api.get(&e.object.name).await {
            Ok(o) => o,
            Err(_) => {
                out.failed += 1;
                continue;
            }
        };
        obj.data["spec"]["paused"] = Value::Bool(false);
        out.requests += 1;
        match api.replace(&e.object.name, &PostParams::default(), &obj).await {
            Ok(_) => out.restored += 1,
            Err(_) => out.failed += 1,
        }
    }
    out
}

/// (c): merge patch `{"spec":{"paused":false}}` per chart, `concurrency` in flight.
async fn merge_patch(client: &kube::Client, ledger: &Ledger, concurrency: usize) -> PeerOutput {
    let patch = Patch::Merge(json!({"spec": {"paused": false}}));
    let pp = PatchParams::default();
    let results: Vec<bool> = futures::stream::iter(&ledger.entries)
        .map(|e| {
            let api = chart_api(client, e.object.namespace.as_deref().unwrap_or_default());
            let (patch, pp) = (&patch, &pp);
            async move { api.patch(&e.object.name, pp, patch).await.is_ok() }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let restored = results.iter().filter(|ok| **ok).count() as u64;
    PeerOutput { requests: results.len() as u64, restored, failed: results.len() as u64 - restored, duration_ms: 0 }
}

/// (e): the recommended read path. One LIST per (namespace) page of 500 replaces one GET per
/// entry; the CAS patch (test of resourceVersion) keeps the decision and the write atomic, and
/// a failed test falls back to GET + decide again, as pause-ledger does today.
async fn list_cas(
    access: &Access,
    at: &LedgerRef,
    ledger: &Ledger,
    concurrency: usize,
    compact: bool,
) -> Result<PeerOutput> {
    let fields: HashMap<(String, String), &pause_ledger::kinds::FieldPath> = ledger
        .entries
        .iter()
        .map(|e| ((e.object.namespace.clone().unwrap_or_default(), e.object.name.clone()), &e.field))
        .collect();
    let started_at = Timestamp::now();
    let policy = Policy::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(240);
    // Discovery, as pause-ledger's plan does (one request per group/version).
    let resolved = access
        .resolve(pause_ledger::kinds::MANAGED_CHART_API_VERSION, pause_ledger::kinds::MANAGED_CHART_KIND)
        .await?
        .context("ManagedChart not served")?;
    let mut namespaces: Vec<&str> = ledger.entries.iter().filter_map(|e| e.object.namespace.as_deref()).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let mut listed: HashMap<(String, String), Value> = HashMap::new();
    // LIST page size (memory experiment: a page is parsed whole, so it bounds the transient peak).
    let page_size: usize = std::env::var("BENCH_LIST_PAGE").ok().and_then(|v| v.parse().ok()).unwrap_or(500);
    for ns in namespaces {
        let base = format!("/apis/management.cattle.io/v3/namespaces/{ns}/{}", resolved.plural);
        let mut cont: Option<String> = None;
        for _ in 0..10_000 {
            let uri = match &cont {
                Some(c) => format!("{base}?limit={page_size}&continue={c}"),
                None => format!("{base}?limit={page_size}"),
            };
            let page = access.request(Verb::List, &base, Method::GET, &uri, None).await?;
            for item in page.get("items").and_then(Value::as_array).into_iter().flatten() {
                if let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) {
                    let key = (ns.to_string(), name.to_string());
                    let kept = match (compact, fields.get(&key)) {
                        (true, Some(f)) => compact_object(item, f),
                        _ => item.clone(),
                    };
                    listed.insert(key, kept);
                }
            }
            cont = page
                .pointer("/metadata/continue")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_string);
            if cont.is_none() {
                break;
            }
        }
    }
    let mut by_order: std::collections::BTreeMap<i32, Vec<&ledger::Entry>> = Default::default();
    for e in &ledger.entries {
        by_order.entry(e.order).or_default().push(e);
    }
    let mut reports = Vec::new();
    for (_, wave) in by_order {
        let (listed, resolved) = (&listed, &resolved);
        let results: Vec<EntryReport> = futures::stream::iter(wave)
            .map(|e| async move {
                let key = (e.object.namespace.clone().unwrap_or_default(), e.object.name.clone());
                let first = listed.get(&key).cloned();
                let path = Access::path(resolved, &e.object);
                let budget = Budget::new(policy.max_attempts, deadline);
                let outcome = settle(access, ledger, e, &path, first, &budget).await;
                let mut r = EntryReport::new(e.object.clone(), e.field.clone(), e.order, outcome);
                r.attempts = budget.used();
                r.started_at = Some(Timestamp::now());
                if outcome == Outcome::Failed {
                    r.cause = Some(pause_ledger::outcome::Cause::Error);
                }
                r
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        reports.extend(results);
    }
    let exit = pause_ledger::outcome::exit_for(&reports);
    let id = pause_ledger::status_doc::run_id(started_at);
    let run = pause_ledger::status_doc::RunResult { id: &id, results: &reports, started_at, exit_code: exit.code() };
    let ctx = Context::new(access.clone(), policy, deadline, CancellationToken::new(), false);
    LedgerStore::new(&ctx, at).write_status(ledger, run).await?;
    let restored = reports.iter().filter(|r| r.outcome == Outcome::Restored).count() as u64;
    let failed = reports.iter().filter(|r| r.outcome == Outcome::Failed).count() as u64;
    Ok(PeerOutput { requests: access.requests(), restored, failed, duration_ms: 0 })
}

/// The object reduced to what `pause_state` reads: the pause field, mark, resourceVersion,
/// generation, and the main-resource managedFields entries that own the pause field (their
/// fieldsV1 reduced to that path). A few hundred bytes instead of the whole object.
pub fn compact_object(item: &Value, field: &pause_ledger::kinds::FieldPath) -> Value {
    let meta = &item["metadata"];
    let segs: Vec<&str> = field.segments().collect();
    let owners: Vec<Value> = meta["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e.get("subresource").and_then(Value::as_str).unwrap_or("").is_empty())
        .filter(|e| {
            let mut n = e.get("fieldsV1");
            for seg in &segs {
                n = n.and_then(|x| x.get(format!("f:{seg}")));
            }
            n.is_some()
        })
        .map(|e| {
            let fv = segs.iter().rev().fold(json!({}), |acc, seg| json!({ format!("f:{seg}"): acc }));
            json!({"manager": e["manager"], "operation": e["operation"], "fieldsV1": fv})
        })
        .collect();
    let mut out = json!({"metadata": {
        "name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"],
        "resourceVersion": meta["resourceVersion"], "generation": meta["generation"],
        "managedFields": owners,
    }});
    if let Some(mark) = meta.pointer("/annotations").and_then(|a| a.get(pause_ledger::ownership::MARK_ANNOTATION)) {
        out["metadata"]["annotations"] = json!({ pause_ledger::ownership::MARK_ANNOTATION: mark });
    }
    if let Some(v) = item.pointer(&field.pointer()) {
        let mut node = &mut out;
        for (i, seg) in segs.iter().enumerate() {
            if i + 1 == segs.len() {
                node[*seg] = v.clone();
            } else {
                if node.get(*seg).is_none() {
                    node[*seg] = json!({});
                }
                node = &mut node[*seg];
            }
        }
    }
    out
}

async fn settle(
    access: &Access,
    ledger: &Ledger,
    e: &ledger::Entry,
    path: &str,
    mut obj: Option<Value>,
    budget: &Budget,
) -> Outcome {
    let target = e.object.to_string();
    loop {
        if !budget.take() {
            return Outcome::Failed;
        }
        let Some(current) = obj.take() else {
            return Outcome::Gone;
        };
        let Ok(state) = pause_state(&current, &e.field) else {
            return Outcome::Failed;
        };
        let rule =
            Rule { ownership: ledger.ownership, marks: ["", &ledger.upgrade], field_manager: &ledger.field_manager };
        match decide(&state, &e.field, &rule) {
            Decision::AlreadyRunning { .. } => return Outcome::AlreadyRunning,
            Decision::NotOurs { .. } => return Outcome::NotOurs,
            Decision::Malformed { .. } => return Outcome::Failed,
            Decision::Restore { patch } => {
                match access.json_patch(&target, path, &patch, &ledger.field_manager, false).await {
                    Ok(_) => return Outcome::Restored,
                    Err(err) if classify(&err) == ErrorClass::TestFailed => {
                        // Changed since the LIST: read it again and decide again.
                        obj = match access.get(&target, path).await {
                            Ok(v) => v,
                            Err(_) => return Outcome::Failed,
                        };
                    }
                    Err(ApiError::Status { code: 404, .. }) => return Outcome::Gone,
                    Err(_) => return Outcome::Failed,
                }
            }
        }
    }
}

/// `pause-ledger-bench peer KIND --kubeconfig F --ledger NS/NAME [--concurrency K]`.
pub fn parse_args(args: &[String]) -> Result<PeerArgs> {
    let mut it = args.iter();
    let kind: PeerKind = it.next().context("peer KIND missing")?.parse().map_err(anyhow::Error::msg)?;
    let (mut kubeconfig, mut at, mut concurrency, mut nodelay, mut compact) = (None, None, 16usize, false, false);
    while let Some(a) = it.next() {
        let mut val = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--kubeconfig" => kubeconfig = Some(PathBuf::from(val()?)),
            "--ledger" => at = Some(val()?.parse::<LedgerRef>().map_err(anyhow::Error::msg)?),
            "--concurrency" => concurrency = val()?.parse()?,
            "--nodelay" => nodelay = true,
            "--compact" => compact = true,
            other => bail!("unknown peer argument {other}"),
        }
    }
    Ok(PeerArgs {
        kind,
        kubeconfig: kubeconfig.context("--kubeconfig missing")?,
        ledger: at.context("--ledger missing")?,
        concurrency,
        nodelay,
        compact,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_keeps_what_the_decision_needs() {
        let field = pause_ledger::kinds::FieldPath::parse("spec.paused").unwrap();
        let obj = json!({
            "metadata": {"name": "a", "resourceVersion": "7", "generation": 2,
                "annotations": {"pause-ledger.io/paused-by": "up-1", "other": "x"},
                "managedFields": [
                    {"manager": "rancher", "operation": "Update", "fieldsV1": {"f:spec": {"f:chart": {}, "f:values": {}}}},
                    {"manager": "pause-ledger", "operation": "Update", "fieldsV1": {"f:spec": {"f:paused": {}}, "f:metadata": {}}},
                    {"manager": "rancher", "operation": "Update", "subresource": "status", "fieldsV1": {"f:spec": {"f:paused": {}}}}
                ]},
            "spec": {"paused": true, "chart": "a", "values": {"big": "x"}}
        });
        let full = pause_ledger::ownership::pause_state(&obj, &field).unwrap();
        let small = compact_object(&obj, &field);
        assert_eq!(pause_ledger::ownership::pause_state(&small, &field).unwrap(), full);
        assert!(small.to_string().len() < obj.to_string().len());
        assert!(small.pointer("/spec/values").is_none());
    }

    #[test]
    fn parses_peer_args() {
        let a: Vec<String> = ["merge-patch", "--kubeconfig", "/k", "--ledger", "ns/l", "--concurrency", "4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let p = parse_args(&a).unwrap();
        assert_eq!(p.kind, PeerKind::MergePatch);
        assert_eq!(p.concurrency, 4);
        assert_eq!(p.ledger.to_string(), "ns/l");
        assert!(parse_args(&a[..1]).is_err());
        assert!("nope".parse::<PeerKind>().is_err());
    }
}
