//! CustomResourceDefinitions for the kinds pause-ledger touches.
//!
//! - `managedcharts.management.cattle.io`: Rancher ships no YAML; it generates the CRD at runtime
//!   with wrangler from the Go type (rancher `pkg/crds/dashboard/crds.go`:
//!   `crd.CRD{SchemaObject: v3.ManagedChart{}}.WithStatus()`, wrangler `pkg/crd/init.go`,
//!   `pkg/schemas/openapi/generate.go`). Written here in the shape wrangler produces: namespaced,
//!   status subresource, no printer columns, structural schema without
//!   `x-kubernetes-preserve-unknown-fields` on spec or status, strings/arrays/maps `nullable`,
//!   `IntOrString` as string, free-form only where the Go type is a map (`values`).
//! - `bundles.fleet.cattle.io`: shaped like rancher/fleet `charts/fleet-crd/templates/crds.yaml`
//!   (status fields as upstream, the two printer columns upstream has, no preserve-unknown
//!   outside Helm values). The spec lists the fields Rancher and the tests write, not every
//!   Fleet option: unlisted spec fields are pruned.
//! - `upgrades.harvesterhci.io`: our own structural schema from the facts Harvester's controller
//!   relies on (see [`crate::harvester`]); like upstream it has no status subresource.
//! - The other pausable kinds (Fleet GitRepo/Cluster, Cluster API Cluster, Flux) keep a minimal
//!   schema: one typed pause switch, everything else preserved.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, GroupVersionKind, Patch, PatchParams};
use serde_json::{Map, Value, json};

use crate::Error;

/// Field manager for our server-side applies.
const FIELD_MANAGER: &str = "kubeenv";
const ESTABLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Which generator's conventions a schema follows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Gen {
    /// wrangler `pkg/schemas/openapi/generate.go`: strings, arrays and maps are `nullable`,
    /// `IntOrString` is a plain string, nothing is `required`.
    Wrangler,
    /// controller-gen as used by rancher/fleet: `+nullable` only where marked, `IntOrString` as
    /// `x-kubernetes-int-or-string`, condition `type`/`status` required.
    ControllerGen,
}

impl Gen {
    fn string(self) -> Value {
        match self {
            Gen::Wrangler => json!({ "type": "string", "nullable": true }),
            Gen::ControllerGen => json!({ "type": "string" }),
        }
    }

    fn boolean(self) -> Value {
        json!({ "type": "boolean" })
    }

    fn integer(self) -> Value {
        json!({ "type": "integer" })
    }

    fn int64(self) -> Value {
        match self {
            Gen::Wrangler => self.integer(),
            Gen::ControllerGen => json!({ "type": "integer", "format": "int64" }),
        }
    }

    fn array(self, items: Value) -> Value {
        match self {
            Gen::Wrangler => json!({ "type": "array", "nullable": true, "items": items }),
            Gen::ControllerGen => json!({ "type": "array", "items": items }),
        }
    }

    fn string_map(self) -> Value {
        match self {
            Gen::Wrangler => {
                json!({ "type": "object", "nullable": true, "additionalProperties": { "type": "string" } })
            }
            Gen::ControllerGen => json!({ "type": "object", "additionalProperties": { "type": "string" } }),
        }
    }

    fn int_or_string(self) -> Value {
        match self {
            Gen::Wrangler => self.string(),
            Gen::ControllerGen => json!({
                "anyOf": [{ "type": "integer" }, { "type": "string" }],
                "x-kubernetes-int-or-string": true,
            }),
        }
    }

    /// A Go map of arbitrary values (`GenericMap`, Helm values): the one place that keeps unknown
    /// fields, as in both generators.
    fn free_object(self) -> Value {
        json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
    }

    fn object(self, properties: &[(&str, Value)]) -> Value {
        let props: Map<String, Value> = properties.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        json!({ "type": "object", "properties": props })
    }

    fn label_selector(self) -> Value {
        let requirement =
            self.object(&[("key", self.string()), ("operator", self.string()), ("values", self.array(self.string()))]);
        self.object(&[("matchLabels", self.string_map()), ("matchExpressions", self.array(requirement))])
    }

    /// wrangler `genericcondition.GenericCondition`.
    fn condition(self) -> Value {
        let mut c = self.object(&[
            ("type", self.string()),
            ("status", self.string()),
            ("reason", self.string()),
            ("message", self.string()),
            ("lastUpdateTime", self.string()),
            ("lastTransitionTime", self.string()),
        ]);
        if self == Gen::ControllerGen {
            c["required"] = json!(["status", "type"]);
        }
        c
    }

    /// fleet `HelmOptions`.
    fn helm_options(self) -> Value {
        let key_ref = self.object(&[("name", self.string()), ("namespace", self.string()), ("key", self.string())]);
        let mut release_name = self.string();
        if self == Gen::ControllerGen {
            release_name["maxLength"] = json!(53);
        }
        self.object(&[
            ("chart", self.string()),
            ("repo", self.string()),
            ("releaseName", release_name),
            ("version", self.string()),
            ("timeoutSeconds", self.integer()),
            ("values", self.free_object()),
            ("valuesFiles", self.array(self.string())),
            ("valuesFrom", self.array(self.object(&[("configMapKeyRef", key_ref.clone()), ("secretKeyRef", key_ref)]))),
            ("templateValues", self.string_map()),
            ("force", self.boolean()),
            ("takeOwnership", self.boolean()),
            ("maxHistory", self.integer()),
            ("atomic", self.boolean()),
            ("waitForJobs", self.boolean()),
            ("disablePreProcess", self.boolean()),
            ("disableDNS", self.boolean()),
            ("skipSchemaValidation", self.boolean()),
            ("disableDependencyUpdate", self.boolean()),
        ])
    }

    /// fleet `DiffOptions`.
    fn diff_options(self) -> Value {
        let operation = self.object(&[("op", self.string()), ("path", self.string()), ("value", self.string())]);
        let compare_patch = self.object(&[
            ("kind", self.string()),
            ("apiVersion", self.string()),
            ("namespace", self.string()),
            ("name", self.string()),
            ("operations", self.array(operation)),
            ("jsonPointers", self.array(self.string())),
        ]);
        self.object(&[("comparePatches", self.array(compare_patch))])
    }

    /// The subset of fleet `BundleDeploymentOptions` modelled here (inlined into Bundle spec and
    /// BundleTarget upstream).
    fn deployment_options(self) -> Vec<(&'static str, Value)> {
        vec![
            ("defaultNamespace", self.string()),
            ("namespace", self.string()),
            ("kustomize", self.object(&[("dir", self.string())])),
            ("helm", self.helm_options()),
            ("serviceAccount", self.string()),
            ("forceSyncGeneration", self.integer()),
            ("yaml", self.object(&[("overlays", self.array(self.string()))])),
            ("diff", self.diff_options()),
            ("keepResources", self.boolean()),
            ("deleteCRDResources", self.boolean()),
            ("deleteNamespace", self.boolean()),
            ("ignore", self.object(&[("conditions", self.array(self.string_map()))])),
            (
                "correctDrift",
                self.object(&[
                    ("enabled", self.boolean()),
                    ("force", self.boolean()),
                    ("keepFailHistory", self.boolean()),
                ]),
            ),
            ("namespaceLabels", self.string_map()),
            ("namespaceAnnotations", self.string_map()),
        ]
    }

    /// fleet `RolloutStrategy`.
    fn rollout_strategy(self) -> Value {
        let partition = self.object(&[
            ("name", self.string()),
            ("maxUnavailable", self.int_or_string()),
            ("clusterName", self.string()),
            ("clusterSelector", self.label_selector()),
            ("clusterGroup", self.string()),
            ("clusterGroupSelector", self.label_selector()),
        ]);
        self.object(&[
            ("maxUnavailable", self.int_or_string()),
            ("maxUnavailablePartitions", self.int_or_string()),
            ("autoPartitionSize", self.int_or_string()),
            ("autoPartitionThreshold", self.integer()),
            ("maxNew", self.integer()),
            ("partitions", self.array(partition)),
        ])
    }

    /// fleet `BundleTarget`.
    fn bundle_target(self) -> Value {
        let mut props = self.deployment_options();
        props.extend([
            ("name", self.string()),
            ("clusterName", self.string()),
            ("clusterSelector", self.label_selector()),
            ("clusterGroup", self.string()),
            ("clusterGroupSelector", self.label_selector()),
            ("doNotDeploy", self.boolean()),
        ]);
        self.object(&props)
    }

    /// fleet `BundleSummary`.
    fn summary(self) -> Value {
        let modified = self.object(&[
            ("kind", self.string()),
            ("apiVersion", self.string()),
            ("namespace", self.string()),
            ("name", self.string()),
            ("missing", self.boolean()),
            ("delete", self.boolean()),
            ("exist", self.boolean()),
            ("patch", self.string()),
        ]);
        let resource_summary = self.object(&[
            ("state", json!({ "type": "string" })),
            ("error", self.boolean()),
            ("transitioning", self.boolean()),
            ("message", json!({ "type": "array", "items": { "type": "string" } })),
        ]);
        let non_ready = self.object(&[
            ("uid", self.string()),
            ("kind", self.string()),
            ("apiVersion", self.string()),
            ("namespace", self.string()),
            ("name", self.string()),
            ("summary", resource_summary),
        ]);
        let non_ready_resource = self.object(&[
            ("name", self.string()),
            ("bundleState", self.string()),
            ("message", self.string()),
            ("modifiedStatus", self.array(modified)),
            ("nonReadyStatus", self.array(non_ready)),
        ]);
        self.object(&[
            ("notReady", self.integer()),
            ("waitApplied", self.integer()),
            ("errApplied", self.integer()),
            ("outOfSync", self.integer()),
            ("modified", self.integer()),
            ("ready", self.integer()),
            ("pending", self.integer()),
            ("desiredReady", self.integer()),
            ("nonReadyResources", self.array(non_ready_resource)),
        ])
    }

    /// fleet `BundleStatus`: the Bundle's status, and (embedded) the ManagedChart's.
    fn bundle_status(self) -> Value {
        let partition = self.object(&[
            ("name", self.string()),
            ("count", self.integer()),
            ("maxUnavailable", self.integer()),
            ("unavailable", self.integer()),
            ("summary", self.summary()),
        ]);
        let resource_key = self.object(&[
            ("kind", self.string()),
            ("apiVersion", self.string()),
            ("namespace", self.string()),
            ("name", self.string()),
        ]);
        self.object(&[
            ("conditions", self.array(self.condition())),
            ("summary", self.summary()),
            ("newlyCreated", self.integer()),
            ("unavailable", self.integer()),
            ("unavailablePartitions", self.integer()),
            ("maxUnavailable", self.integer()),
            ("maxUnavailablePartitions", self.integer()),
            ("partitions", self.array(partition)),
            ("display", self.object(&[("readyClusters", self.string()), ("state", self.string())])),
            ("resourceKey", self.array(resource_key)),
            ("ociReference", self.string()),
            ("observedGeneration", self.int64()),
            ("resourcesSha256Sum", self.string()),
        ])
    }
}

/// Converts a literal built in this file into the typed CRD.
fn typed(value: Value) -> CustomResourceDefinition {
    // Built from literals in this file; `crds_parse` below proves each one deserialises.
    serde_json::from_value(value).expect("static CRD literal is a valid CustomResourceDefinition")
}

/// Rancher `ManagedChart` (`management.cattle.io/v3`); status = Fleet `BundleStatus`, embedded.
///
/// Spec from rancher `pkg/apis/management.cattle.io/v3/managed_chart.go`.
pub fn managed_chart() -> CustomResourceDefinition {
    let g = Gen::Wrangler;
    let spec = g.object(&[
        ("paused", g.boolean()),
        ("chart", g.string()),
        ("repoName", g.string()),
        ("releaseName", g.string()),
        ("version", g.string()),
        ("timeoutSeconds", g.integer()),
        ("values", g.free_object()),
        ("force", g.boolean()),
        ("takeOwnership", g.boolean()),
        ("maxHistory", g.integer()),
        ("defaultNamespace", g.string()),
        ("namespace", g.string()),
        ("serviceAccount", g.string()),
        ("diff", g.diff_options()),
        ("rolloutStrategy", g.rollout_strategy()),
        ("targets", g.array(g.bundle_target())),
    ]);
    let schema = g.object(&[("spec", spec), ("status", g.bundle_status())]);
    typed(crd("management.cattle.io", "v3", "ManagedChart", "managedcharts", schema, &[], true))
}

/// Fleet `Bundle` (`fleet.cattle.io/v1alpha1`).
pub fn fleet_bundle() -> CustomResourceDefinition {
    let g = Gen::ControllerGen;
    let resource = g.object(&[("name", g.string()), ("content", g.string()), ("encoding", g.string())]);
    let mut spec = g.deployment_options();
    spec.extend([
        ("paused", g.boolean()),
        ("rolloutStrategy", g.rollout_strategy()),
        ("resources", g.array(resource)),
        ("targets", g.array(g.bundle_target())),
        ("contentsId", g.string()),
        ("valuesHash", g.string()),
    ]);
    let schema = g.object(&[("spec", g.object(&spec)), ("status", g.bundle_status())]);
    let columns = [
        json!({ "name": "BundleDeployments-Ready", "type": "string", "jsonPath": ".status.display.readyClusters" }),
        json!({ "name": "Status", "type": "string", "jsonPath": ".status.conditions[?(@.type==\"Ready\")].message" }),
    ];
    typed(crd("fleet.cattle.io", "v1alpha1", "Bundle", "bundles", schema, &columns, true))
}

/// Harvester `Upgrade` (`harvesterhci.io/v1beta1`, namespaced, in `harvester-system`).
///
/// TEST DOUBLE schema, written from the fields Harvester's upgrade controller uses
/// (`pkg/apis/harvesterhci.io/v1beta1/upgrade.go`): no status subresource, because Harvester
/// writes the status with a full Update.
pub fn harvester_upgrade() -> CustomResourceDefinition {
    let g = Gen::ControllerGen;
    let node_status = g.object(&[("state", g.string()), ("reason", g.string()), ("message", g.string())]);
    let spec = g.object(&[
        ("version", g.string()),
        ("image", g.string()),
        ("logEnabled", json!({ "type": "boolean", "default": true })),
        ("upgradeImage", g.string()),
    ]);
    let status = g.object(&[
        ("previousVersion", g.string()),
        ("imageID", g.string()),
        ("repoInfo", g.string()),
        ("singleNode", g.string()),
        ("nodeStatuses", json!({ "type": "object", "additionalProperties": node_status })),
        ("conditions", g.array(g.condition())),
        ("upgradeLog", g.string()),
    ]);
    let mut schema = g.object(&[("spec", spec), ("status", status)]);
    schema["required"] = json!(["spec"]);
    typed(crd("harvesterhci.io", "v1beta1", "Upgrade", "upgrades", schema, &[], false))
}

/// A CRD whose spec has one boolean pause switch and keeps every other field.
fn switch_crd(group: &str, version: &str, kind: &str, plural: &str, switch: &str) -> Value {
    let mut properties = Map::new();
    properties.insert(switch.to_string(), json!({ "type": "boolean" }));
    let schema = json!({
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": true,
                "properties": properties,
            },
            "status": { "type": "object", "x-kubernetes-preserve-unknown-fields": true },
        },
    });
    let column = json!({ "name": "Paused", "type": "boolean", "jsonPath": format!(".spec.{switch}") });
    crd(group, version, kind, plural, schema, &[column], true)
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

/// `ApiResource` of Fleet Cluster, for `Api<DynamicObject>`.
pub fn fleet_cluster_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("fleet.cattle.io", "v1alpha1", "Cluster");
    ApiResource::from_gvk_with_plural(&gvk, "clusters")
}

/// `ApiResource` of Harvester Upgrade, for `Api<DynamicObject>`.
pub fn harvester_upgrade_resource() -> ApiResource {
    let gvk = GroupVersionKind::gvk("harvesterhci.io", "v1beta1", "Upgrade");
    ApiResource::from_gvk_with_plural(&gvk, "upgrades")
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
        harvester_upgrade(),
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

fn crd(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    schema: Value,
    columns: &[Value],
    status_subresource: bool,
) -> Value {
    let mut version = json!({
        "name": version,
        "served": true,
        "storage": true,
        "schema": { "openAPIV3Schema": schema },
    });
    if status_subresource {
        version["subresources"] = json!({ "status": {} });
    }
    if !columns.is_empty() {
        version["additionalPrinterColumns"] = json!(columns);
    }
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
            "versions": [version],
        },
    })
}

/// Server-side applies every CRD, waits until each is `Established`, and creates the
/// `harvester-system` namespace.
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
    // Where Harvester keeps its Upgrades: present on every Harvester cluster, and the chart's
    // restore RBAC has a Role there.
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let ns = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": crate::harvester::HARVESTER_SYSTEM}});
    namespaces.patch(crate::harvester::HARVESTER_SYSTEM, &params, &Patch::Apply(ns)).await?;
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

    fn version_of(crd: &CustomResourceDefinition) -> Value {
        serde_json::to_value(&crd.spec.versions[0]).unwrap()
    }

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
                "upgrades.harvesterhci.io",
            ]
        );
    }

    #[test]
    fn managed_chart_and_bundle_keep_no_unknown_spec_or_status_fields() {
        for crd in [managed_chart(), fleet_bundle()] {
            let v = version_of(&crd);
            let props = &v["schema"]["openAPIV3Schema"]["properties"];
            for part in ["spec", "status"] {
                assert!(props[part]["x-kubernetes-preserve-unknown-fields"].is_null(), "{part} of {:?}", crd.metadata);
                assert!(props[part]["properties"].is_object());
            }
            assert_eq!(v["subresources"], json!({ "status": {} }));
        }
        // wrangler adds no printer columns; Fleet's chart has two on Bundle.
        assert!(version_of(&managed_chart())["additionalPrinterColumns"].is_null());
        assert_eq!(version_of(&fleet_bundle())["additionalPrinterColumns"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn status_fields_match_fleet_bundle_status() {
        let v = version_of(&fleet_bundle());
        let status = &v["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
        let mut keys: Vec<&str> = status.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "conditions",
                "display",
                "maxUnavailable",
                "maxUnavailablePartitions",
                "newlyCreated",
                "observedGeneration",
                "ociReference",
                "partitions",
                "resourceKey",
                "resourcesSha256Sum",
                "summary",
                "unavailable",
                "unavailablePartitions",
            ]
        );
        assert_eq!(status["conditions"]["items"]["required"], json!(["status", "type"]));
    }

    #[test]
    fn upgrade_has_no_status_subresource() {
        let v = version_of(&harvester_upgrade());
        assert!(v["subresources"].is_null());
        assert_eq!(v["schema"]["openAPIV3Schema"]["required"], json!(["spec"]));
    }

    #[test]
    fn yaml_lists_every_crd() {
        let text = yaml().unwrap();
        assert_eq!(text.matches("kind: CustomResourceDefinition").count(), all().len());
    }
}
