//! The three-way JSON merge patch wrangler's apply sends (wrangler `pkg/apply`, built on
//! apimachinery `jsonmergepatch.CreateThreeWayJSONMergePatch`).

use serde_json::{Map, Value};

/// The merge patch that turns `current` into `modified` for the fields `modified` sets, and
/// deletes fields the previous apply (`original`) set that `modified` no longer has. Fields
/// neither apply ever set are left alone, so a hand edit of such a field survives.
pub fn three_way(original: &Value, modified: &Value, current: &Value) -> Map<String, Value> {
    let empty = Map::new();
    let original = original.as_object().unwrap_or(&empty);
    let current = current.as_object().unwrap_or(&empty);
    let mut patch = Map::new();
    let Some(modified) = modified.as_object() else {
        return patch;
    };
    for (key, want) in modified {
        match (want, current.get(key)) {
            (Value::Object(_), Some(have @ Value::Object(_))) => {
                let before = original.get(key).cloned().unwrap_or(Value::Null);
                let sub = three_way(&before, want, have);
                if !sub.is_empty() {
                    patch.insert(key.clone(), Value::Object(sub));
                }
            }
            (_, Some(have)) if have == want => {}
            _ => {
                patch.insert(key.clone(), want.clone());
            }
        }
    }
    for key in original.keys() {
        if !modified.contains_key(key) && current.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    patch
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn removes_what_the_last_apply_set_and_keeps_foreign_fields() {
        let original = json!({ "spec": { "paused": true, "helm": { "version": "1" } } });
        let modified = json!({ "spec": { "helm": { "version": "2" } } });
        let current = json!({ "spec": { "paused": true, "helm": { "version": "1" }, "foreign": 1 } });
        let patch = three_way(&original, &modified, &current);
        assert_eq!(Value::Object(patch), json!({ "spec": { "paused": null, "helm": { "version": "2" } } }));
    }

    #[test]
    fn a_hand_edit_of_an_unmanaged_field_survives() {
        let applied = json!({ "spec": { "helm": {} } });
        let current = json!({ "spec": { "helm": {}, "paused": true } });
        assert!(three_way(&applied, &applied, &current).is_empty());
    }

    #[test]
    fn arrays_are_replaced_whole() {
        let original = json!({ "targets": [{ "clusterName": "a" }] });
        let modified = json!({ "targets": [{ "clusterName": "b" }] });
        let patch = three_way(&original, &modified, &original);
        assert_eq!(Value::Object(patch), modified);
    }
}
