//! Helpers shared by the integration test binaries.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use kube::api::{Api, DynamicObject, PostParams};
use pause_ledger_kubeenv::crds;
use serde_json::{Value, json};

/// ManagedChart API in `ns`.
pub fn charts(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &crds::managed_chart_resource())
}

/// Fleet Bundle API in `ns`.
pub fn bundles(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &crds::bundle_resource())
}

/// A ManagedChart object with the given spec.
pub fn chart_object(ns: &str, name: &str, spec: Value) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "management.cattle.io/v3",
        "kind": "ManagedChart",
        "metadata": { "name": name, "namespace": ns },
        "spec": spec,
    }))
    .unwrap()
}

/// Creates a ManagedChart and returns the stored object.
pub async fn create_chart(
    client: &kube::Client,
    ns: &str,
    name: &str,
    spec: Value,
) -> Result<DynamicObject, kube::Error> {
    charts(client, ns).create(&PostParams::default(), &chart_object(ns, name, spec)).await
}

/// Polls `probe` every 50 ms until it yields `Some`, panicking with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The condition of `type_` in a ManagedChart's status, if any.
pub fn condition(chart: &DynamicObject, type_: &str) -> Option<Value> {
    chart.data["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned()
}

/// Whether the chart's status reflects its current generation.
pub fn observed(chart: &DynamicObject) -> bool {
    chart.data["status"]["observedGeneration"].as_i64() == chart.metadata.generation
}

/// An object as JSON.
pub fn json_of(obj: &impl serde::Serialize) -> Value {
    serde_json::to_value(obj).unwrap()
}

/// The condition of `type_` in an object's (JSON) status, if any.
pub fn cond(obj: &Value, type_: &str) -> Option<Value> {
    obj["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == type_).cloned()
}
