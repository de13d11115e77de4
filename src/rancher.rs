//! What pause-ledger knows about Rancher and Fleet objects (from upstream source; see
//! RANCHER-FLEET.md in the project brief): the Fleet Bundle a ManagedChart generates, why a
//! propagation failed, and readiness judged the way Harvester judges it. Pure functions.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// Rancher's limit on the generated Bundle's name (`capr.MaxHelmReleaseNameLength`).
const MAX_BUNDLE_NAME: usize = 53;

/// The Bundle Rancher generates for ManagedChart `chart`:
/// `capr.SafeConcatName(53, "mcc", name)` (rancher `pkg/controllers/provisioningv2/managedchart`).
pub fn bundle_name(chart: &str) -> String {
    safe_concat_name(MAX_BUNDLE_NAME, &["mcc", chart])
}

/// rancher `pkg/capr/common.go` `SafeConcatName`: the parts joined with `-`; when longer than
/// `max`, cut and suffixed with a short sha256 of the whole, at most `max` long. Bytes, like the
/// Go original (Kubernetes names are ASCII).
fn safe_concat_name(max: usize, parts: &[&str]) -> String {
    const HASH: usize = 6;
    let full = parts.join("-");
    let bytes = full.as_bytes();
    if bytes.len() <= max {
        return full;
    }
    if max <= 5 {
        return String::from_utf8_lossy(&bytes[..max]).into_owned();
    }
    let digest: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
    // The character where the cut falls: a valid trailing character keeps one more byte of
    // the name and one hex digit less of the hash.
    let cut = max - (HASH + 1);
    let c = bytes[cut];
    if c.is_ascii_lowercase() || c.is_ascii_digit() {
        format!("{}-{}", String::from_utf8_lossy(&bytes[..max - HASH]), &digest[..HASH - 1])
    } else {
        format!("{}-{}", String::from_utf8_lossy(&bytes[..cut]), &digest[..HASH])
    }
}

/// Whether `bundle` is the one Rancher generated for the ManagedChart with uid `chart_uid`:
/// its controller ownerReference names that uid. A Bundle without ownerReferences (written by
/// hand, or by a Rancher that sets none) is accepted by name.
pub fn owned_by(bundle: &Value, chart_uid: Option<&str>) -> bool {
    let refs = bundle.pointer("/metadata/ownerReferences").and_then(Value::as_array);
    match (refs, chart_uid) {
        (Some(refs), Some(uid)) if !refs.is_empty() => refs.iter().any(|r| r["uid"] == uid),
        _ => true,
    }
}

/// One status condition: (status, reason, message).
fn condition<'a>(obj: &'a Value, type_: &str) -> Option<(&'a str, &'a str, &'a str)> {
    let c = obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == type_)?;
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
    Some((s("status"), s("reason"), s("message")))
}

/// Why a ManagedChart's unpause did not reach its Bundle, as Rancher reports it: condition
/// `Defined` when it is False (Rancher could not build the Bundle, e.g. `no chart version
/// found`; `Ready` then keeps a stale value), else the `Ready` message.
pub fn propagation_cause(chart: &Value) -> String {
    match (condition(chart, "Defined"), condition(chart, "Ready")) {
        (Some(("False", reason, message)), _) => format!("Defined=False ({reason}): {message}"),
        (_, Some((status, _, message))) if !message.is_empty() => format!("Ready={status}: {message}"),
        (_, Some((status, _, _))) => format!("Ready={status}, no message"),
        _ => "no Ready or Defined condition".to_string(),
    }
}

/// Readiness of a ManagedChart the way Harvester's upgrade judges it
/// (`upgrade_manifests.sh` `wait_managed_chart`, its upgrade log controller, harvester#10693):
/// `status.observedGeneration` (the Bundle's, copied by Rancher) has grown past `before`, the
/// value read before our patch; `summary.desiredReady > 0` and `summary.ready ==
/// summary.desiredReady`; `unavailable == 0` (absent counts as 0); and the `Ready` condition
/// True. `Err` says what is missing. `before` is `None` for a chart we did not patch.
pub fn managed_chart_ready(chart: &Value, before: Option<i64>) -> Result<(), String> {
    let int = |p: &str| chart.pointer(p).and_then(Value::as_i64);
    let mut missing = Vec::new();
    if let Some(b) = before {
        let observed = int("/status/observedGeneration").unwrap_or(0);
        if observed <= b {
            missing.push(format!(
                "status.observedGeneration {observed} has not grown past {b}, the value before the unpause"
            ));
        }
    }
    let (ready, desired) =
        (int("/status/summary/ready").unwrap_or(0), int("/status/summary/desiredReady").unwrap_or(0));
    if desired == 0 || ready != desired {
        missing.push(format!("summary.ready {ready} of desiredReady {desired}"));
    }
    let unavailable = int("/status/unavailable").unwrap_or(0);
    if unavailable != 0 {
        missing.push(format!("unavailable {unavailable}"));
    }
    match condition(chart, "Ready") {
        Some(("True", _, _)) => {}
        Some((status, _, message)) => missing.push(format!("Ready={status}: {message}")),
        None => missing.push("no Ready condition".into()),
    }
    if let Some(("False", reason, message)) = condition(chart, "Defined") {
        missing.push(format!("Defined=False ({reason}): {message}"));
    }
    if missing.is_empty() {
        return Ok(());
    }
    let resources = non_ready_resources(chart);
    if !resources.is_empty() {
        missing.push(format!("not ready: {resources}"));
    }
    Err(missing.join("; "))
}

/// `summary.nonReadyResources` as `name (state: message)`, the first few.
fn non_ready_resources(chart: &Value) -> String {
    let Some(list) = chart.pointer("/status/summary/nonReadyResources").and_then(Value::as_array) else {
        return String::new();
    };
    let text = |r: &Value, k: &str| r.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    list.iter()
        .take(3)
        .map(|r| {
            let state = text(r, "bundleState");
            let message = text(r, "message");
            format!("{} ({state}{}{message})", text(r, "name"), if message.is_empty() { "" } else { ": " })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Readiness of other kinds with a `Ready` condition (Fleet, Flux, Cluster API): the
/// controller saw at least `generation` (ours, or the current one) and says Ready.
pub fn generation_ready(obj: &Value, generation: Option<i64>) -> Result<(), String> {
    let current = obj.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
    let want = generation.unwrap_or(current);
    let observed = obj.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0);
    if observed < want {
        return Err(format!("status.observedGeneration {observed} has not reached generation {want}"));
    }
    match condition(obj, "Ready") {
        Some(("True", _, _)) => Ok(()),
        Some((status, _, message)) => {
            Err(if message.is_empty() { format!("Ready={status}") } else { message.to_string() })
        }
        None => Err("no Ready condition".into()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bundle_names_follow_safe_concat_name() {
        assert_eq!(bundle_name("harvester"), "mcc-harvester");
        assert_eq!(bundle_name(&"a".repeat(49)).len(), 53, "exactly 53 is kept");
        // Expected values from the Go algorithm (computed independently, as in kubeenv's tests).
        assert_eq!(bundle_name(&"a".repeat(50)), "mcc-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-83fd2");
        assert_eq!(
            bundle_name("rancher-monitoring-crd-with-a-very-long-name-for-tests"),
            "mcc-rancher-monitoring-crd-with-a-very-long-nam-56e69"
        );
        let dash = format!("{}-{}", "a".repeat(42), "b".repeat(10));
        assert_eq!(bundle_name(&dash), "mcc-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-969ea6");
    }

    fn chart(observed: i64, ready: i64, desired: i64, unavailable: Option<i64>, cond: &str) -> Value {
        let mut c = json!({"status": {"observedGeneration": observed,
            "summary": {"ready": ready, "desiredReady": desired},
            "conditions": [{"type": "Ready", "status": cond, "message": "WaitApplied(1) [Cluster fleet-local/local]"}]}});
        if let Some(u) = unavailable {
            c["status"]["unavailable"] = json!(u);
        }
        c
    }

    #[test]
    fn readiness_as_harvester_judges_it() {
        assert!(managed_chart_ready(&chart(6, 1, 1, None, "True"), Some(5)).is_ok());
        assert!(managed_chart_ready(&chart(6, 1, 1, Some(0), "True"), Some(5)).is_ok());
        // The Bundle's counter did not move since before our patch: stale.
        let e = managed_chart_ready(&chart(5, 1, 1, None, "True"), Some(5)).unwrap_err();
        assert!(e.contains("has not grown past 5"), "{e}");
        // fleet#5219: Ready=True and ready=1 while a resource is unavailable.
        let e = managed_chart_ready(&chart(6, 1, 1, Some(1), "True"), Some(5)).unwrap_err();
        assert!(e.contains("unavailable 1"), "{e}");
        assert!(managed_chart_ready(&chart(6, 0, 0, None, "True"), Some(5)).unwrap_err().contains("desiredReady 0"));
        let e = managed_chart_ready(&chart(6, 0, 1, None, "False"), Some(5)).unwrap_err();
        assert!(e.contains("Ready=False: WaitApplied(1)"), "{e}");
        // Not patched by us: no growth required.
        assert!(managed_chart_ready(&chart(5, 1, 1, None, "True"), None).is_ok());
    }

    #[test]
    fn the_cause_of_a_failed_propagation_is_defined_when_it_is_false() {
        let c = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "message": ""},
            {"type": "Defined", "status": "False", "reason": "Error", "message": "no chart version found for harvester-1.6.0"},
        ]}});
        assert_eq!(propagation_cause(&c), "Defined=False (Error): no chart version found for harvester-1.6.0");
        let c = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "message": "OutOfSync(1)"}]}});
        assert_eq!(propagation_cause(&c), "Ready=False: OutOfSync(1)");
    }

    #[test]
    fn owner_by_uid_name_as_fallback() {
        let b = json!({"metadata": {"ownerReferences": [{"uid": "u1"}]}});
        assert!(owned_by(&b, Some("u1")) && !owned_by(&b, Some("u2")));
        assert!(owned_by(&json!({"metadata": {}}), Some("u1")));
    }
}
