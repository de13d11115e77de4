//! Bulk reads: one paginated LIST per (kind, namespace) instead of one GET per entry, for
//! ledgers with many entries of one kind in one namespace.
//!
//! Halves the requests of a large restore (LIST + PATCH per entry instead of GET + PATCH). Only
//! the fields a decision needs are kept per object, so memory stays flat with N. Optional by
//! design: a ServiceAccount without `list` (the chart grants get+patch by default) or a failed
//! LIST falls back to per-entry GETs, and the compare-and-set patch protects correctness either
//! way — a listed state that has gone stale fails the patch's resourceVersion test and the entry
//! is read again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::{Map, Value, json};

use crate::kinds::ObjectRef;
use crate::kube_access::{Access, Verb, object_path};
use crate::ownership::MARK_ANNOTATION;
use crate::plan::Step;
use crate::retry::{Budget, Policy, with_retry};

/// Groups smaller than this are read entry by entry (the Harvester preset has 4).
pub const MIN_GROUP: usize = 16;
/// Page size of the LIST.
const PAGE: usize = 500;

/// What a LIST saw, keyed by object; taken once per entry.
#[derive(Default)]
pub struct Snapshot {
    items: Mutex<HashMap<ObjectRef, Option<Value>>>,
}

impl Snapshot {
    /// `Some(Some(obj))`: listed; `Some(None)`: its group was listed and it was not there;
    /// `None`: unknown (read it yourself).
    pub fn take(&self, o: &ObjectRef) -> Option<Option<Value>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner()).remove(o)
    }

    /// Number of objects known.
    pub fn len(&self) -> usize {
        self.items.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether nothing is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// LIST every large group of `steps`.
pub async fn prefetch(access: &Access, steps: &[Step], policy: &Policy, deadline: tokio::time::Instant) -> Snapshot {
    let mut groups: BTreeMap<(String, String, Option<String>), Vec<&Step>> = BTreeMap::new();
    for s in steps {
        let o = &s.entry.object;
        groups.entry((o.api_version.clone(), o.kind.clone(), o.namespace.clone())).or_default().push(s);
    }
    let snapshot = Snapshot::default();
    for ((api_version, kind, ns), members) in groups {
        if members.len() < MIN_GROUP {
            continue;
        }
        let resolved = &members[0].resolved;
        let ns = ns.filter(|_| resolved.namespaced);
        let base = object_path(&api_version, &resolved.plural, ns.as_deref(), None);
        let wanted: HashMap<&str, &Step> = members.iter().map(|s| (s.entry.object.name.as_str(), *s)).collect();
        let mut found: HashMap<ObjectRef, Option<Value>> =
            members.iter().map(|s| (s.entry.object.clone(), None)).collect();
        let mut cont = String::new();
        let target = format!("{kind} in {}", ns.as_deref().unwrap_or("all namespaces"));
        let complete = loop {
            let mut uri = format!("{base}?limit={PAGE}");
            if !cont.is_empty() {
                uri.push_str("&continue=");
                uri.push_str(&cont);
            }
            let budget = Budget::new(policy.max_attempts, deadline);
            let page = with_retry(policy, &budget, &format!("list {target}"), || {
                access.request(Verb::List, &target, http::Method::GET, &uri, None)
            })
            .await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "bulk read unavailable; reading entries one by one");
                    break false;
                }
            };
            for item in page.get("items").and_then(Value::as_array).into_iter().flatten() {
                let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) else { continue };
                if let Some(step) = wanted.get(name) {
                    found.insert(step.entry.object.clone(), Some(compact(item, step)));
                }
            }
            match page.pointer("/metadata/continue").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cont = c.to_string(),
                _ => break true,
            }
        };
        if complete {
            tracing::debug!(kind = %kind, entries = members.len(), "read in bulk");
            snapshot.items.lock().unwrap_or_else(|e| e.into_inner()).extend(found);
        }
    }
    snapshot
}

/// Only what the ownership decision and the report need.
fn compact(item: &Value, step: &Step) -> Value {
    let meta = item.get("metadata").cloned().unwrap_or_default();
    let mut m = Map::new();
    for k in ["name", "namespace", "uid", "resourceVersion", "generation", "managedFields"] {
        if let Some(v) = meta.get(k) {
            m.insert(k.to_string(), v.clone());
        }
    }
    if let Some(mark) = meta.pointer("/annotations").and_then(|a| a.get(MARK_ANNOTATION)) {
        m.insert("annotations".into(), json!({ MARK_ANNOTATION: mark }));
    }
    let mut out = json!({ "metadata": Value::Object(m) });
    // Rebuild just the pause field's path.
    let segs: Vec<&str> = step.entry.field.segments().collect();
    if let Some(v) = item.pointer(&step.entry.field.pointer()) {
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
