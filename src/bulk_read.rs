//! Bulk reads: one paginated LIST per (kind, namespace) instead of one GET per entry, for
//! ledgers with many entries of one kind in one namespace.
//!
//! Halves the requests of a large restore (LIST + PATCH per entry instead of GET + PATCH). Each
//! listed object is reduced at once to what the decision needs ([`Observed`], ~200 bytes; a
//! ManagedChart with its managedFields is ~13 KB as a JSON value), and pages are small, so
//! memory stays nearly flat with N. Optional by
//! design: a ServiceAccount without `list` (the chart grants get+patch by default) or a failed
//! LIST falls back to per-entry GETs, and the compare-and-set patch protects correctness either
//! way — a listed state that has gone stale fails the patch's resourceVersion test and the entry
//! is read again.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::Value;

use crate::api::{Target, object_path};
use crate::context::Context;
use crate::ownership::{Observed, observe};
use crate::plan::Step;

/// Groups smaller than this are read entry by entry (the Harvester preset has 4).
pub const MIN_GROUP: usize = 16;
/// Page size of the LIST: a page is parsed whole, so this bounds the transient peak
/// (~100 × 13 KB); 5000 entries take 50 LISTs instead of 10, a few ms each.
const PAGE: usize = 100;

/// What a LIST saw, one slot per step of the wave (by index, so no key is copied); taken once
/// per entry.
#[derive(Default)]
pub struct Snapshot {
    slots: Mutex<Vec<Option<Option<Observed>>>>,
}

impl Snapshot {
    /// `Some(Some(obj))`: listed; `Some(None)`: its group was listed and it was not there;
    /// `None`: unknown (read it yourself). `step` is the entry's index in the wave.
    pub fn take(&self, step: usize) -> Option<Option<Observed>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).get_mut(step).and_then(Option::take)
    }
}

/// LIST every large group of `steps`.
pub async fn bulk_read(ctx: &Context, steps: &[Step]) -> Snapshot {
    let mut groups: BTreeMap<(&str, &str, Option<&str>), Vec<usize>> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        let o = &s.entry.object;
        groups.entry((&o.api_version, &o.kind, o.namespace.as_deref())).or_default().push(i);
    }
    let mut slots: Vec<Option<Option<Observed>>> = Vec::new();
    for ((api_version, kind, ns), members) in groups {
        if members.len() < MIN_GROUP {
            continue;
        }
        let resolved = &steps[members[0]].resolved;
        let ns = ns.filter(|_| resolved.namespaced);
        let base = object_path(api_version, &resolved.plural, ns, None);
        let wanted: HashMap<&str, usize> = members.iter().map(|&i| (steps[i].entry.object.name.as_str(), i)).collect();
        let mut found: HashMap<usize, Observed> = HashMap::new();
        let mut cont = String::new();
        let target = format!("{kind} in {}", ns.unwrap_or("all namespaces"));
        let complete = loop {
            if ctx.is_cancelled() {
                break false;
            }
            let mut uri = format!("{base}?limit={PAGE}");
            if !cont.is_empty() {
                uri.push_str("&continue=");
                uri.push_str(&cont);
            }
            let page = ctx.list_in(&ctx.budget(), &Target { name: target.clone(), path: uri }).await;
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::debug!(error = %e, "bulk read unavailable; reading entries one by one");
                    break false;
                }
            };
            for item in page.get("items").and_then(Value::as_array).into_iter().flatten() {
                let Some(name) = item.pointer("/metadata/name").and_then(Value::as_str) else { continue };
                if let Some(&i) = wanted.get(name) {
                    found.insert(i, observe(item, &steps[i].entry.field));
                }
            }
            match page.pointer("/metadata/continue").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cont = c.to_string(),
                _ => break true,
            }
        };
        if complete {
            tracing::debug!(kind = %kind, entries = members.len(), "read in bulk");
            if slots.is_empty() {
                slots.resize_with(steps.len(), || None);
            }
            for i in members {
                slots[i] = Some(found.remove(&i));
            }
        }
    }
    Snapshot { slots: Mutex::new(slots) }
}
