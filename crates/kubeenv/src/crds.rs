//! CustomResourceDefinitions for the kinds pause-ledger touches. Rancher generates its CRDs at
//! runtime and ships no static YAML, so these are written from the documented fields.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};

use crate::Error;

/// Field manager for our server-side applies.
const FIELD_MANAGER: &str = "kubeenv";
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// `{"type": "object", "x-kubernetes-preserve-unknown-fields": true}`.
fn free_object() -> Value {
    json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// Converts a schema-checked literal into the typed CRD.
fn typed(value: Value) -> CustomResourceDefinition {
    // Built from literals in this file; `crds_parse` below proves each one deserialises.
    serde_json::from_value(value).expect("static CRD literal is a valid CustomResourceDefinition")
}

/// Rancher `ManagedChart` (`management.cattle.io/v3`), status = Fleet BundleStatus.
pub fn managed_chart() -> CustomResourceDefinition {
    let string = json!({ "type": "string" });
    let boolean = json!({ "type": "boolean" });
    let integer = json!({ "type": "integer" });
    let condition = json!({
        "type": "object",
        "properties": {
            "type": string, "status": string, "reason": string, "message": string,
            "lastUpdateTime": string, "lastTransitionTime": string,
        },
    });
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "paused": boolean,
                    "chart": string,
                    "repoName": string,
                    "releaseName": string,
                    "version": string,
                    "timeoutSeconds": integer,
                    "values": free_object(),
                    "force": boolean,
                    "takeOwnership": boolean,
                    "maxHistory": integer,
                    "defaultNamespace": string,
                    "namespace": string,
                    "serviceAccount": string,
                    "diff": free_object(),
                    "rolloutStrategy": free_object(),
                    "targets": { "type": "array", "items": free_object() },
                },
            },
            "status": {
                "type": "object",
                "properties": {
                    "conditions": { "type": "array", "items": condition },
                    "summary": {
                        "type": "object",
                        "properties": {
                            "notReady": integer, "waitApplied": integer, "errApplied": integer,
                            "outOfSync": integer, "modified": integer, "ready": integer,
                            "pending": integer, "desiredReady": integer,
                            "nonReadyResources": { "type": "array", "items": free_object() },
                        },
                    },
                    "display": {
                        "type": "object",
                        "properties": { "readyClusters": string, "state": string },
                    },
                    "observedGeneration": integer,
                },
            },
        },
    });
    typed(crd(
        "management.cattle.io",
        "v3",
        "ManagedChart",
        "managedcharts",
        schema,
        &[(".spec.paused", "Paused", "boolean"), (".status.display.state", "State", "string")],
    ))
}

/// A CRD whose spec has one boolean pause switch and keeps every other field.
fn switch_crd(group: &str, version: &str, kind: &str, plural: &str, switch: &str) -> Value {
    let mut properties = serde_json::Map::new();
    properties.insert(switch.to_string(), json!({ "type": "boolean" }));
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": properties,
            },
            "status": free_object(),
        },
    });
    let column = format!(".spec.{switch}");
    crd(group, version, kind, plural, schema, &[(&column, "Paused", "boolean")])
}

/// Fleet `Bundle` (`fleet.cattle.io/v1alpha1`), `spec.paused`.
pub fn fleet_bundle() -> CustomResourceDefinition {
    typed(switch_crd("fleet.cattle.io", "v1alpha1", "Bundle", "bundles", "paused"))
}

/// Fleet `GitRepo` (`fleet.cattle.io/v1alpha1`), `spec.paused`.
pub fn fleet_git_repo() -> CustomResourceDefinition {
    typed(switch_crd("fleet.cattle.io", "v1alpha1", "GitRepo", "gitrepos", "paused"))
}

/// Fleet `Cluster` (`fleet.cattle.io/v1alpha1`), `spec.paused`.
pub fn fleet_cluster() -> CustomResourceDefinition {
    typed(switch_crd("fleet.cattle.io", "v1alpha1", "Cluster", "clusters", "paused"))
}

/// Cluster API `Cluster` (`cluster.x-k8s.io/v1beta1`, namespaced), `spec.paused`.
pub fn capi_cluster() -> CustomResourceDefinition {
    typed(switch_crd("cluster.x-k8s.io", "v1beta1", "Cluster", "clusters", "paused"))
}

/// Flux `HelmRelease` (`helm.toolkit.fluxcd.io/v2`), `spec.suspend`.
pub fn flux_helm_release() -> CustomResourceDefinition {
    typed(switch_crd("helm.toolkit.fluxcd.io", "v2", "HelmRelease", "helmreleases", "suspend"))
}

/// Flux `Kustomization` (`kustomize.toolkit.fluxcd.io/v1`), `spec.suspend`.
pub fn flux_kustomization() -> CustomResourceDefinition {
    typed(switch_crd("kustomize.toolkit.fluxcd.io", "v1", "Kustomization", "kustomizations", "suspend"))
}

/// `ApiResource` of ManagedChart, for `Api<DynamicObject>`.
pub fn managed_chart_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("management.cattle.io", "v3", "ManagedChart");
    ApiResource::from_gvk_with_plural(&gvk, "managedcharts")
}

/// `ApiResource` of Fleet Bundle, for `Api<DynamicObject>`.
pub fn bundle_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("fleet.cattle.io", "v1alpha1", "Bundle");
    ApiResource::from_gvk_with_plural(&gvk, "bundles")
}

/// Every CRD [`crate::ControlPlane::start`] installs.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        managed_chart(),
        fleet_bundle(),
        fleet_git_repo(),
        fleet_cluster(),
        capi_cluster(),
        flux_helm_release(),
        flux_kustomization(),
    ]
}

/// All CRDs as one multi-document YAML text.
pub fn yaml() -> Result<String, Error> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}

fn crd(group: &str, version: &str, kind: &str, plural: &str, schema: Value, columns: &[(&str, &str, &str)]) -> Value {
    let columns: Vec<Value> = columns
        .iter()
        .map(|(path, name, ty)| json!({ "name": name, "type": ty, "jsonPath": path }))
        .chain(std::iter::once(json!({ "name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp" })))
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("{plural}.{group}") },
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": format!("{kind}List"),
                "plural": plural,
                "singular": kind.to_lowercase(),
            },
            "versions": [{
                "name": version,
                "served": true,
                "storage": true,
                "schema": { "openAPIV3Schema": schema },
                "subresources": { "status": {} },
                "additionalPrinterColumns": columns,
            }],
        },
    })
}

/// Server-side applies every CRD and waits until each is `Established`.
pub async fn install(client: &kube::Client) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let crds = all();
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(&name, &params, &Patch::Apply(crd)).await?;
    }
    for crd in &crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        wait_established(&api, &name).await?;
    }
    Ok(())
}

async fn wait_established(api: &Api<CustomResourceDefinition>, name: &str) -> Result<(), Error> {
    let deadline = Instant::now() + ESTABLISH_TIMEOUT;
    loop {
        let crd = api.get(name).await?;
        let established = crd
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::CrdNotEstablished { name: name.to_string(), timeout: ESTABLISH_TIMEOUT });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crds_parse() {
        let names: Vec<String> = all().into_iter().map(|c| c.metadata.name.unwrap_or_default()).collect();
        assert_eq!(
            names,
            [
                "managedcharts.management.cattle.io",
                "bundles.fleet.cattle.io",
                "gitrepos.fleet.cattle.io",
                "clusters.fleet.cattle.io",
                "clusters.cluster.x-k8s.io",
                "helmreleases.helm.toolkit.fluxcd.io",
                "kustomizations.kustomize.toolkit.fluxcd.io",
            ]
        );
    }

    #[test]
    fn yaml_lists_every_crd() {
        let text = yaml().unwrap();
        assert_eq!(text.matches("kind: CustomResourceDefinition").count(), all().len());
        assert!(text.contains("x-kubernetes-preserve-unknown-fields: true"));
    }
}
