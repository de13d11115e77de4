//! Ownership: deciding, from an object as the API server returned it, whether its pause is
//! still this upgrade's, and building the compare-and-set JSON Patches that pause and restore.
//!
//! A pause is the upgrade's (marked ledgers) when (a) the object carries the mark annotation
//! with one of the ledger's upgrade ids, and (b) its managedFields show the pause side's field
//! manager as the **only** owner of the pause field on the main resource. (b) catches what the
//! mark alone cannot: an administrator who unpaused and re-paused by hand (`kubectl patch` took
//! the field over), or a person or GitOps tool that server-side-applied `paused: true` while the
//! upgrade ran (the field is then shared: whoever else owns it wants it paused). In every mode
//! the keep-paused annotation is an administrator's explicit "leave this paused".
//!
//! Not detectable: a same-value write (`kubectl patch` of `paused: true` on an object already
//! paused) changes nothing on the server, so no managedFields entry records it.
//!
//! Every patch starts with a `test` of `metadata.resourceVersion`, so the decision and the
//! write are one atomic step: any write in between makes the server reject the patch and we
//! decide again.

use serde_json::{Value, json};

use crate::kinds::FieldPath;
use crate::ledger::Ownership;

/// The annotation the pause side sets to the upgrade id, and restore removes.
pub const MARK_ANNOTATION: &str = "pause-ledger.io/paused-by";
/// The annotation an administrator sets (to `"true"`) to keep an object paused: restore and
/// rescue never unpause an object that carries it.
pub const KEEP_PAUSED_ANNOTATION: &str = "pause-ledger.io/keep-paused";

/// The rule deciding whether one ledger entry's pause is still the upgrade's.
#[derive(Clone, Copy, Debug)]
pub struct Rule<'a> {
    /// Marked (mark and sole ownership) or unmarked ("still paused").
    pub ownership: Ownership,
    /// The mark values that are this ledger's: the entry's own and the ledger's `upgrade`.
    pub marks: [&'a str; 2],
    /// The field manager the pause side wrote with (and restore writes with).
    pub field_manager: &'a str,
}

impl Rule<'_> {
    /// Whether `mark` is one of this ledger's.
    pub fn is_ours(&self, mark: &str) -> bool {
        !mark.is_empty() && self.marks.contains(&mark)
    }
}

/// What restore should do with one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Still paused by this upgrade: send this patch.
    Restore {
        /// JSON Patch (RFC 6902) with `test` operations first.
        patch: Value,
    },
    /// Not paused; `cleanup` removes a stale mark of ours, if one is left.
    AlreadyRunning {
        /// Optional CAS patch removing our leftover mark.
        cleanup: Option<Value>,
    },
    /// Paused, but not by this upgrade.
    NotOurs {
        /// Why we think so.
        reason: String,
    },
    /// The pause field holds something other than a boolean.
    Malformed {
        /// What was found.
        reason: String,
    },
}

/// The object's state as far as pausing goes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PauseState {
    /// Value of the pause field (`None` when absent or null).
    pub paused: Option<bool>,
    /// The mark annotation's value, if any.
    pub mark: Option<String>,
    /// The keep-paused annotation is `"true"`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_paused: bool,
    /// Field managers that own the pause field on the main resource.
    pub field_owners: Vec<String>,
    /// metadata.resourceVersion.
    pub resource_version: String,
    /// metadata.generation.
    pub generation: Option<i64>,
    /// status.observedGeneration (for a ManagedChart, its Bundle's generation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// What a read of one object yields for the decision: its uid and pause state (or why the
/// state is unreadable). Small, so a bulk read of thousands of objects keeps only this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// metadata.uid.
    pub uid: Option<String>,
    /// The pause state; `Err` when the pause field is not a boolean.
    pub state: Result<PauseState, String>,
}

/// Reduce an object to what the decision needs.
pub fn observe(obj: &Value, field: &FieldPath) -> Observed {
    Observed {
        uid: obj.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string),
        state: pause_state(obj, field),
    }
}

/// Read the pause-relevant state of an object. `Err` when the pause field is not a boolean.
pub fn pause_state(obj: &Value, field: &FieldPath) -> Result<PauseState, String> {
    let raw = obj.pointer(&field.pointer());
    let paused = match raw {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(format!("{field} holds {other}, not a boolean")),
    };
    let annotation = |key: &str| obj.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str);
    Ok(PauseState {
        paused,
        mark: annotation(MARK_ANNOTATION).map(str::to_string),
        keep_paused: annotation(KEEP_PAUSED_ANNOTATION) == Some("true"),
        field_owners: field_owners(obj, field),
        resource_version: obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        generation: obj.pointer("/metadata/generation").and_then(Value::as_i64),
        observed_generation: obj.pointer("/status/observedGeneration").and_then(Value::as_i64),
    })
}

/// Managers whose managedFields entry (for the main resource, not a subresource) owns `field`.
fn field_owners(obj: &Value, field: &FieldPath) -> Vec<String> {
    let Some(entries) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return Vec::new();
    };
    let mut owners = Vec::new();
    for e in entries {
        let sub = e.get("subresource").and_then(Value::as_str).unwrap_or("");
        if !sub.is_empty() {
            continue;
        }
        let mut node = e.get("fieldsV1");
        for seg in field.segments() {
            node = node.and_then(|n| n.get(format!("f:{seg}")));
        }
        if node.is_some()
            && let Some(m) = e.get("manager").and_then(Value::as_str)
        {
            owners.push(m.to_string());
        }
    }
    owners
}

/// JSON Pointer to the mark annotation (`/` in the key escaped per RFC 6901).
pub fn mark_pointer() -> String {
    format!("/metadata/annotations/{}", MARK_ANNOTATION.replace('~', "~0").replace('/', "~1"))
}

/// Decide what to do with an object listed in the ledger.
pub fn decide(state: &PauseState, field: &FieldPath, rule: &Rule<'_>) -> Decision {
    let mark = state.mark.as_deref();
    let ours = mark.is_some_and(|m| rule.is_ours(m));
    if state.paused != Some(true) {
        let cleanup = ours.then(|| {
            json!([
                {"op": "test", "path": "/metadata/resourceVersion", "value": state.resource_version},
                {"op": "remove", "path": mark_pointer()},
            ])
        });
        return Decision::AlreadyRunning { cleanup };
    }
    if state.keep_paused {
        return Decision::NotOurs {
            reason: format!("kept paused by an administrator (annotation {KEEP_PAUSED_ANNOTATION}=true)"),
        };
    }
    match (rule.ownership, mark) {
        (_, Some(other)) if !ours => {
            return Decision::NotOurs { reason: format!("paused by upgrade {other:?} (annotation {MARK_ANNOTATION})") };
        }
        (Ownership::Marked, None) => {
            return Decision::NotOurs {
                reason: format!("paused, but without this upgrade's mark ({MARK_ANNOTATION}); paused by someone else"),
            };
        }
        (ownership, Some(_)) => {
            let fm = rule.field_manager;
            let others: Vec<&str> = state.field_owners.iter().map(String::as_str).filter(|m| *m != fm).collect();
            let owned = state.field_owners.iter().any(|m| m == fm);
            if ownership == Ownership::Marked && !owned {
                let by = if others.is_empty() { "an unknown manager".to_string() } else { others.join(", ") };
                return Decision::NotOurs {
                    reason: format!(
                        "marked by this upgrade, but {field} was last set by {by}, not {fm}: re-paused by hand"
                    ),
                };
            }
            // A co-owner next to ours wants it paused too. In unmarked mode "still paused" is the
            // rule, but an entry a record run since paused and marked carries this evidence too
            // (a GitOps tool's same-value apply).
            if owned && !others.is_empty() {
                return Decision::NotOurs {
                    reason: format!(
                        "marked by this upgrade, but {field} is also owned by {}: someone else wants it paused too",
                        others.join(", ")
                    ),
                };
            }
        }
        (Ownership::Unmarked, None) => {}
    }
    let mut ops = vec![
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": state.resource_version}),
        json!({"op": "test", "path": field.pointer(), "value": true}),
        json!({"op": "replace", "path": field.pointer(), "value": false}),
    ];
    if let Some(m) = mark {
        ops.insert(2, json!({"op": "test", "path": mark_pointer(), "value": m}));
        ops.push(json!({"op": "remove", "path": mark_pointer()}));
    }
    Decision::Restore { patch: Value::Array(ops) }
}

/// The pause side's patch: set the field to true and mark the object, conditional on the
/// resourceVersion we read. `None` when the object is already paused (not ours to record).
pub fn pause_patch(obj: &Value, field: &FieldPath, upgrade: &str) -> Result<Option<Value>, String> {
    let state = pause_state(obj, field)?;
    if state.paused == Some(true) {
        return Ok(None);
    }
    let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": state.resource_version})];
    if obj.pointer("/metadata/annotations").is_none_or(Value::is_null) {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": {}}));
    }
    ops.push(json!({"op": "add", "path": mark_pointer(), "value": upgrade}));
    // Create intermediate objects (e.g. `spec` on an object without one) on the way down.
    let segs: Vec<&str> = field.segments().collect();
    let mut path = String::new();
    for (i, seg) in segs.iter().enumerate() {
        path.push('/');
        path.push_str(seg);
        if i + 1 < segs.len() && obj.pointer(&path).is_none_or(Value::is_null) {
            ops.push(json!({"op": "add", "path": path, "value": {}}));
        }
    }
    ops.push(json!({"op": "add", "path": field.pointer(), "value": true}));
    Ok(Some(Value::Array(ops)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field() -> FieldPath {
        FieldPath::parse("spec.paused").unwrap()
    }

    fn obj(paused: Option<bool>, mark: Option<&str>, owner: &str) -> Value {
        let mut o = json!({
            "metadata": {"name": "harvester", "resourceVersion": "42", "generation": 3,
                "managedFields": [
                    {"manager": "rancher", "operation": "Update", "subresource": "status",
                     "fieldsV1": {"f:spec": {"f:paused": {}}}},
                    {"manager": owner, "operation": "Update", "fieldsV1": {"f:spec": {"f:paused": {}}}}
                ]},
            "spec": {"chart": "harvester"}
        });
        if let Some(p) = paused {
            o["spec"]["paused"] = json!(p);
        }
        if let Some(m) = mark {
            o["metadata"]["annotations"] = json!({MARK_ANNOTATION: m});
        }
        o
    }

    fn decide_on(o: &Value, ownership: Ownership) -> Decision {
        let s = pause_state(o, &field()).unwrap();
        decide(&s, &field(), &Rule { ownership, marks: ["", "up-1"], field_manager: "pause-ledger" })
    }

    #[test]
    fn restores_own_pause_atomically() {
        let d = decide_on(&obj(Some(true), Some("up-1"), "pause-ledger"), Ownership::Marked);
        let Decision::Restore { patch } = d else { panic!("{d:?}") };
        let ops = patch.as_array().unwrap();
        assert_eq!(ops[0], json!({"op": "test", "path": "/metadata/resourceVersion", "value": "42"}));
        assert!(
            ops.iter().any(|o| o["op"] == "remove" && o["path"] == "/metadata/annotations/pause-ledger.io~1paused-by")
        );
        assert!(ops.iter().any(|o| o["op"] == "replace" && o["value"] == false));
    }

    #[test]
    fn refuses_what_is_not_ours() {
        assert!(matches!(
            decide_on(&obj(Some(true), None, "kubectl-patch"), Ownership::Marked),
            Decision::NotOurs { .. }
        ));
        assert!(matches!(
            decide_on(&obj(Some(true), Some("up-0"), "pause-ledger"), Ownership::Marked),
            Decision::NotOurs { .. }
        ));
        assert!(matches!(
            decide_on(&obj(Some(true), Some("up-0"), "pause-ledger"), Ownership::Unmarked),
            Decision::NotOurs { .. }
        ));
        // Re-paused by hand: mark left in place, but kubectl now owns the field.
        let d = decide_on(&obj(Some(true), Some("up-1"), "kubectl-patch"), Ownership::Marked);
        let Decision::NotOurs { reason } = d else { panic!("{d:?}") };
        assert!(reason.contains("kubectl-patch"), "{reason}");
    }

    #[test]
    fn shared_ownership_and_keep_paused_are_not_ours() {
        // An administrator server-side-applied paused: true next to our Update entry.
        let mut o = obj(Some(true), Some("up-1"), "pause-ledger");
        o["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .push(json!({"manager": "admin", "operation": "Apply", "fieldsV1": {"f:spec": {"f:paused": {}}}}));
        let d = decide_on(&o, Ownership::Marked);
        let Decision::NotOurs { reason } = d else { panic!("{d:?}") };
        assert!(reason.contains("also owned by admin"), "{reason}");
        // The same under an unmarked entry: our mark next to a co-owner is evidence there too.
        let d = decide_on(&o, Ownership::Unmarked);
        let Decision::NotOurs { reason } = d else { panic!("{d:?}") };
        assert!(reason.contains("also owned by admin"), "{reason}");
        // Rancher's status writes (a subresource) do not count.
        assert!(matches!(
            decide_on(&obj(Some(true), Some("up-1"), "pause-ledger"), Ownership::Marked),
            Decision::Restore { .. }
        ));

        for ownership in [Ownership::Marked, Ownership::Unmarked] {
            let mut o = obj(Some(true), Some("up-1"), "pause-ledger");
            o["metadata"]["annotations"][KEEP_PAUSED_ANNOTATION] = json!("true");
            let d = decide_on(&o, ownership);
            let Decision::NotOurs { reason } = d else { panic!("{d:?}") };
            assert!(reason.contains("kept paused"), "{reason}");
        }
    }

    #[test]
    fn either_mark_of_the_ledger_is_ours() {
        let s = pause_state(&obj(Some(true), Some("old-up"), "pause-ledger"), &field()).unwrap();
        let rule = Rule { ownership: Ownership::Marked, marks: ["old-up", "up-1"], field_manager: "pause-ledger" };
        let Decision::Restore { patch } = decide(&s, &field(), &rule) else { panic!() };
        assert!(patch.as_array().unwrap().iter().any(|op| op["op"] == "test" && op["value"] == "old-up"));
        let rule = Rule { marks: ["", "up-1"], ..rule };
        assert!(matches!(decide(&s, &field(), &rule), Decision::NotOurs { .. }));
    }

    #[test]
    fn unmarked_falls_back_to_still_paused() {
        let d = decide_on(&obj(Some(true), None, "kubectl-patch"), Ownership::Unmarked);
        let Decision::Restore { patch } = d else { panic!("{d:?}") };
        assert_eq!(patch.as_array().unwrap().len(), 3);
    }

    #[test]
    fn running_objects() {
        assert_eq!(
            decide_on(&obj(Some(false), None, "x"), Ownership::Marked),
            Decision::AlreadyRunning { cleanup: None }
        );
        assert_eq!(decide_on(&obj(None, None, "x"), Ownership::Marked), Decision::AlreadyRunning { cleanup: None });
        let d = decide_on(&obj(Some(false), Some("up-1"), "x"), Ownership::Marked);
        assert!(matches!(d, Decision::AlreadyRunning { cleanup: Some(_) }));
    }

    #[test]
    fn malformed_field() {
        let mut o = obj(None, None, "x");
        o["spec"]["paused"] = json!("yes");
        assert!(pause_state(&o, &field()).is_err());
    }

    #[test]
    fn pause_patch_builds_path_and_mark() {
        let o = json!({"metadata": {"resourceVersion": "7"}});
        let p = pause_patch(&o, &field(), "up-1").unwrap().unwrap();
        let ops = p.as_array().unwrap();
        assert_eq!(ops.len(), 5, "{p}");
        assert!(pause_patch(&obj(Some(true), None, "x"), &field(), "up-1").unwrap().is_none());
    }
}
