//! The oracle's own reading of a ledger ConfigMap (docs/ledger.md), independent of
//! pause-ledger's parser and lenient about fields it does not know (the fixed code adds some):
//! which objects it lists as entries and as `pausedBefore`, its upgrade id, ownership mode and
//! field manager, its status document, and its digest.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::model::Obj;

/// What the oracle needs from a ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerView {
    /// `upgrade` (may be empty).
    pub upgrade: String,
    /// Unmarked (`ownership: unmarked`, or the minimal form without `ownership: marked`).
    pub unmarked: bool,
    /// `fieldManager` (default `pause-ledger`).
    pub field_manager: String,
    /// Objects of this history listed in `entries`.
    pub entries: Vec<Obj>,
    /// Objects of this history listed in `pausedBefore`.
    pub paused_before: Vec<Obj>,
    /// Written in the minimal form.
    pub minimal: bool,
}

/// The `status.yaml` fields the oracle checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StatusView {
    /// `ledgerDigest`.
    pub digest: String,
    /// `state`.
    pub state: String,
    /// Per listed entry: its outcome.
    pub outcomes: BTreeMap<Obj, String>,
}

fn obj_of(e: &Value) -> Option<Obj> {
    let kind = e.get("kind").and_then(Value::as_str).unwrap_or("ManagedChart");
    let name = e.get("name").and_then(Value::as_str)?;
    Obj::from_kind_name(kind, name)
}

/// Read a ledger's data; `None` when it holds no recognisable recorded set.
pub fn read(data: &BTreeMap<String, String>) -> Option<LedgerView> {
    if let Some(text) = data.get("ledger.yaml") {
        let v: Value = serde_saphyr::from_str(text).ok()?;
        let list = |k: &str| -> Vec<Obj> {
            v.get(k).and_then(Value::as_array).into_iter().flatten().filter_map(obj_of).collect()
        };
        return Some(LedgerView {
            upgrade: v.get("upgrade").and_then(Value::as_str).unwrap_or_default().to_string(),
            unmarked: v.get("ownership").and_then(Value::as_str) == Some("unmarked"),
            field_manager: v.get("fieldManager").and_then(Value::as_str).unwrap_or("pause-ledger").to_string(),
            entries: list("entries"),
            paused_before: list("pausedBefore"),
            minimal: false,
        });
    }
    let charts = data.get("charts")?;
    let entries = charts
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|t| !t.is_empty())
        .filter_map(|t| Obj::from_kind_name("ManagedChart", t.rsplit('/').next().unwrap_or(t)))
        .collect();
    Some(LedgerView {
        upgrade: data.get("upgrade").map(|s| s.trim().to_string()).unwrap_or_default(),
        unmarked: data.get("ownership").map(|s| s.trim()) != Some("marked"),
        field_manager: "pause-ledger".into(),
        entries,
        paused_before: vec![],
        minimal: true,
    })
}

/// Read `status.yaml` (full or compact form).
pub fn read_status(data: &BTreeMap<String, String>) -> Option<StatusView> {
    let v: Value = serde_saphyr::from_str(data.get("status.yaml")?).ok()?;
    let mut outcomes = BTreeMap::new();
    for e in v.get("entries").and_then(Value::as_array).into_iter().flatten() {
        if let (Some(o), Some(out)) = (e.get("object").and_then(obj_of), e.get("outcome").and_then(Value::as_str)) {
            outcomes.insert(o, out.to_string());
        }
    }
    Some(StatusView {
        digest: v.get("ledgerDigest").and_then(Value::as_str).unwrap_or_default().to_string(),
        state: v.get("state").and_then(Value::as_str).unwrap_or_default().to_string(),
        outcomes,
    })
}

/// The digest of the recorded set, as docs/ledger.md and src/ledger.rs define it: SHA-256 over
/// `key NUL value NUL` of the recorded keys (full form: `ledger.yaml`; minimal form: `charts`,
/// `namespace`, `upgrade`, `pausedAt`, `ownership`, those present, in that order), first 16
/// bytes in hex. Cross-checked against `pause-ledger validate -o json` after every history.
pub fn digest(data: &BTreeMap<String, String>) -> Option<String> {
    let keys: &[&str] = if data.contains_key("ledger.yaml") {
        &["ledger.yaml"]
    } else if data.contains_key("charts") {
        &["charts", "namespace", "upgrade", "pausedAt", "ownership"]
    } else {
        return None;
    };
    let mut h = Sha256::new();
    for k in keys {
        if let Some(v) = data.get(*k) {
            h.update(k.as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
    }
    Some(h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_the_full_form_leniently() {
        let d = data(&[(
            "ledger.yaml",
            "version: pause-ledger/v1\nupgrade: up-a\npausedAt: 2026-01-01T00:00:00Z\nownership: marked\n\
             intent: true\nentries:\n  - namespace: h-1\n    name: harvester\n    ownership: unmarked\n  - apiVersion: batch/v1\n    kind: CronJob\n    namespace: h-1\n    name: nightly-backup\n\
             pausedBefore:\n  - namespace: h-1\n    name: rancher-logging-crd\n",
        )]);
        let l = read(&d).unwrap();
        assert_eq!(l.upgrade, "up-a");
        assert!(!l.unmarked && !l.minimal);
        assert_eq!(l.entries, vec![Obj::Chart(1), Obj::CronJob]);
        assert_eq!(l.paused_before, vec![Obj::Chart(3)]);
        assert_eq!(l.field_manager, "pause-ledger");
    }

    #[test]
    fn reads_the_minimal_form() {
        let l = read(&data(&[("charts", "harvester, h-1/harvester-crd"), ("namespace", "h-1")])).unwrap();
        assert!(l.unmarked && l.minimal);
        assert_eq!(l.entries, vec![Obj::Chart(1), Obj::Chart(0)]);
        assert!(read(&data(&[("other", "x")])).is_none());
    }

    #[test]
    fn digest_matches_pause_ledgers_definition() {
        // The documented derivation, spelled out. That it is pause-ledger's too is checked
        // against `pause-ledger validate -o json` in every history (Trace::digests).
        let d = data(&[("charts", "harvester"), ("namespace", "fleet-local")]);
        let mut h = Sha256::new();
        h.update(b"charts\0harvester\0namespace\0fleet-local\0");
        let want: String = h.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect();
        assert_eq!(digest(&d).unwrap(), want);
        assert_eq!(digest(&d).unwrap().len(), 32);
    }

    #[test]
    fn reads_status() {
        let d = data(&[(
            "status.yaml",
            "version: pause-ledger/status/v1\nupgrade: up-a\nledgerDigest: abc\nstate: done\nentries:\n  - object: {apiVersion: management.cattle.io/v3, kind: ManagedChart, namespace: h, name: harvester}\n    outcome: restored\n",
        )]);
        let s = read_status(&d).unwrap();
        assert_eq!(s.digest, "abc");
        assert_eq!(s.state, "done");
        assert_eq!(s.outcomes.get(&Obj::Chart(1)).map(String::as_str), Some("restored"));
    }
}
