//! Fleet's `BundleStatus` as Go marshals it, and wrangler's condition helpers.
//!
//! Both controllers hold the status in a Go struct, so what they write is a JSON round trip of
//! rancher/fleet `pkg/apis/fleet.cattle.io/v1alpha1/bundle_types.go` `BundleStatus`: unknown
//! fields vanish, `omitempty` zero values vanish, the other zero values appear.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};

/// `time.Now().UTC().Format(time.RFC3339)`, the timestamp wrangler writes into conditions.
pub fn now_rfc3339() -> String {
    Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Copies `keys` from `from` into `to`: `(name, omitempty)`; absent values count as zero.
fn copy_fields(from: &Value, to: &mut Map<String, Value>, keys: &[(&str, Kind, bool)]) {
    for &(key, kind, omitempty) in keys {
        let value = from.get(key).cloned().unwrap_or(Value::Null);
        let value = match kind {
            Kind::Int => json!(value.as_i64().unwrap_or(0)),
            Kind::Str => json!(value.as_str().unwrap_or_default()),
            Kind::Raw => value,
        };
        let zero = match &value {
            Value::Null => true,
            Value::Number(n) => n.as_i64() == Some(0),
            Value::String(s) => s.is_empty(),
            Value::Bool(b) => !b,
            Value::Array(a) => a.is_empty(),
            Value::Object(_) => false,
        };
        let skip = value.is_null() || (omitempty && zero);
        if !skip {
            to.insert(key.to_string(), value);
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Str,
    Raw,
}

/// wrangler `genericcondition.GenericCondition`: `type` and `status` always, the rest omitempty.
fn condition(c: &Value) -> Value {
    let mut out = Map::new();
    copy_fields(
        c,
        &mut out,
        &[
            ("type", Kind::Str, false),
            ("status", Kind::Str, false),
            ("lastUpdateTime", Kind::Str, true),
            ("lastTransitionTime", Kind::Str, true),
            ("reason", Kind::Str, true),
            ("message", Kind::Str, true),
        ],
    );
    Value::Object(out)
}

fn non_ready_resource(r: &Value) -> Value {
    let mut out = Map::new();
    copy_fields(
        r,
        &mut out,
        &[
            ("name", Kind::Str, true),
            ("bundleState", Kind::Str, true),
            ("message", Kind::Str, true),
            ("modifiedStatus", Kind::Raw, true),
            ("nonReadyStatus", Kind::Raw, true),
        ],
    );
    Value::Object(out)
}

/// fleet `BundleSummary`: `ready` and `desiredReady` always, the other counters omitempty.
pub fn summary(s: &Value) -> Value {
    let mut out = Map::new();
    copy_fields(
        s,
        &mut out,
        &[
            ("notReady", Kind::Int, true),
            ("waitApplied", Kind::Int, true),
            ("errApplied", Kind::Int, true),
            ("outOfSync", Kind::Int, true),
            ("modified", Kind::Int, true),
            ("ready", Kind::Int, false),
            ("pending", Kind::Int, true),
            ("desiredReady", Kind::Int, false),
        ],
    );
    if let Some(list) = s.get("nonReadyResources").and_then(Value::as_array).filter(|l| !l.is_empty()) {
        out.insert("nonReadyResources".into(), Value::Array(list.iter().map(non_ready_resource).collect()));
    }
    Value::Object(out)
}

fn partition(p: &Value) -> Value {
    let mut out = Map::new();
    copy_fields(
        p,
        &mut out,
        &[
            ("name", Kind::Str, true),
            ("count", Kind::Int, true),
            ("maxUnavailable", Kind::Int, true),
            ("unavailable", Kind::Int, true),
        ],
    );
    out.insert("summary".into(), summary(p.get("summary").unwrap_or(&Value::Null)));
    Value::Object(out)
}

/// A status as a Go controller holding fleet `BundleStatus` writes it.
pub fn bundle_status(status: &Value) -> Value {
    let s = status;
    let mut out = Map::new();
    if let Some(conditions) = s.get("conditions").and_then(Value::as_array).filter(|c| !c.is_empty()) {
        out.insert("conditions".into(), Value::Array(conditions.iter().map(condition).collect()));
    }
    out.insert("summary".into(), summary(s.get("summary").unwrap_or(&Value::Null)));
    copy_fields(
        s,
        &mut out,
        &[
            ("newlyCreated", Kind::Int, true),
            ("unavailable", Kind::Int, false),
            ("unavailablePartitions", Kind::Int, false),
            ("maxUnavailable", Kind::Int, false),
            ("maxUnavailablePartitions", Kind::Int, false),
        ],
    );
    if let Some(parts) = s.get("partitions").and_then(Value::as_array).filter(|p| !p.is_empty()) {
        out.insert("partitions".into(), Value::Array(parts.iter().map(partition).collect()));
    }
    let mut display = Map::new();
    copy_fields(
        s.get("display").unwrap_or(&Value::Null),
        &mut display,
        &[("readyClusters", Kind::Str, true), ("state", Kind::Str, true)],
    );
    out.insert("display".into(), Value::Object(display));
    copy_fields(
        s,
        &mut out,
        &[
            ("resourceKey", Kind::Raw, true),
            ("ociReference", Kind::Str, true),
            ("observedGeneration", Kind::Int, false),
            ("resourcesSha256Sum", Kind::Str, true),
        ],
    );
    Value::Object(out)
}

/// wrangler `pkg/condition` on a status' `conditions` list.
pub struct Conditions<'a> {
    list: &'a mut Vec<Value>,
    now: &'a str,
}

impl<'a> Conditions<'a> {
    /// The conditions of `status` (created when absent).
    pub fn of(status: &'a mut Value, now: &'a str) -> Conditions<'a> {
        if !status.is_object() {
            *status = json!({});
        }
        let slot = &mut status["conditions"];
        if !slot.is_array() {
            *slot = json!([]);
        }
        let list = match slot {
            Value::Array(list) => list,
            // Just made an array above.
            _ => unreachable!("conditions is an array"),
        };
        Conditions { list, now }
    }

    /// `findOrCreateCond`: a new condition starts as `Unknown`.
    fn index(&mut self, type_: &str) -> usize {
        if let Some(i) = self.list.iter().position(|c| c["type"] == type_) {
            return i;
        }
        self.list.push(json!({ "type": type_, "status": "Unknown" }));
        self.list.len() - 1
    }

    /// `setValue`: writes the field and touches `lastUpdateTime` only when it changes.
    fn set(&mut self, type_: &str, field: &str, value: &str) {
        let i = self.index(type_);
        let cond = &mut self.list[i];
        if cond[field].as_str().unwrap_or_default() != value {
            cond[field] = json!(value);
            cond["lastUpdateTime"] = json!(self.now);
        }
    }

    /// `Cond.SetStatusBool`.
    pub fn set_status_bool(&mut self, type_: &str, value: bool) {
        self.set(type_, "status", if value { "True" } else { "False" });
    }

    /// `Cond.Message`.
    pub fn message(&mut self, type_: &str, message: &str) {
        self.set(type_, "message", message);
    }

    /// `Cond.SetError(obj, "", err)`: True with empty message and reason on success, else False
    /// with reason `Error` and the error text.
    pub fn set_error(&mut self, type_: &str, err: Option<&str>) {
        match err {
            None => {
                self.set(type_, "status", "True");
                self.set(type_, "message", "");
                self.set(type_, "reason", "");
            }
            Some(e) => {
                self.set(type_, "status", "False");
                self.set(type_, "message", e);
                self.set(type_, "reason", "Error");
            }
        }
    }

    /// `Cond.LastUpdated`.
    pub fn last_updated(&mut self, type_: &str) {
        let i = self.index(type_);
        self.list[i]["lastUpdateTime"] = json!(self.now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_round_trip_drops_unknown_and_omitempty_zero_fields() {
        let raw = json!({
            "foo": 1,
            "summary": { "ready": 1, "desiredReady": 1, "notReady": 0, "bar": 2 },
            "display": { "state": "" },
            "observedGeneration": 3,
            "conditions": [{ "type": "Ready", "status": "True", "reason": "", "x": 1 }],
        });
        assert_eq!(
            bundle_status(&raw),
            json!({
                "conditions": [{ "type": "Ready", "status": "True" }],
                "summary": { "ready": 1, "desiredReady": 1 },
                "unavailable": 0,
                "unavailablePartitions": 0,
                "maxUnavailable": 0,
                "maxUnavailablePartitions": 0,
                "display": {},
                "observedGeneration": 3,
            })
        );
        assert_eq!(bundle_status(&bundle_status(&raw)), bundle_status(&raw));
    }

    #[test]
    fn set_error_follows_wrangler() {
        let mut status = json!({});
        Conditions::of(&mut status, "t1").set_error("Defined", Some("no chart version found for a-1"));
        assert_eq!(
            status["conditions"][0],
            json!({
                "type": "Defined", "status": "False", "reason": "Error",
                "message": "no chart version found for a-1", "lastUpdateTime": "t1",
            })
        );
        // Unchanged values leave lastUpdateTime alone.
        Conditions::of(&mut status, "t2").set_error("Defined", Some("no chart version found for a-1"));
        assert_eq!(status["conditions"][0]["lastUpdateTime"], "t1");
        Conditions::of(&mut status, "t3").set_error("Defined", None);
        assert_eq!(
            bundle_status(&status)["conditions"][0],
            json!({ "type": "Defined", "status": "True", "lastUpdateTime": "t3" })
        );
    }
}
