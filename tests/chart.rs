//! The chart's metadata and its rendering on a real API server.
//!
//! Rendering behaviour, one case per behaviour, lives in the helm-unittest suites
//! (`chart/pause-ledger/tests/*_test.yaml`, run by `tools/chart-test`). This file checks what
//! those cannot: that values.yaml and values.schema.json describe the same keys, that the
//! preset's names are the binary's, that Chart.yaml's icon and Artifact Hub image are what they
//! claim, and that representative value sets render objects the real kube-apiserver accepts
//! (server-side dry run: its validation and admission run, nothing is persisted).
#![forbid(unsafe_code)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use base64::Engine as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use pause_ledger::preset::{HARVESTER_CHARTS, HARVESTER_NAMESPACE};
use serde_json::{Value, json};
use support::{admin, cp};

fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("chart/pause-ledger")
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A scratch dir for this test process (Helm's homes, values files).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pause-ledger-chart-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    })
}

/// The pinned `helm` (tools/kubeenv/build.sh), with homes of its own so nothing of the user's
/// Helm setup leaks in. Returns (exit code, stdout, stderr).
fn helm(args: &[&str]) -> (i32, String, String) {
    let bin = kubeenv::binaries::bin_dir().expect("tools/kubeenv/build.sh").join("helm");
    let home = scratch().join("helm-home");
    let out = Command::new(&bin)
        .args(args)
        .env_clear()
        .env("HOME", &home)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", bin.display()));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm lint --strict` and `helm template` with `values` (YAML; empty: the defaults), as
/// documents (empty ones dropped).
fn render(what: &str, release: &str, ns: &str, values: &str) -> Vec<Value> {
    let chart = chart_dir().display().to_string();
    // Helm splits -f on commas: keep the file name to letters, digits and dashes.
    let stem: String = what.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    let file = scratch().join(format!("{stem}.values.yaml"));
    std::fs::write(&file, values).expect("values file");
    let file = file.display().to_string();
    let (code, stdout, stderr) = helm(&["lint", "--strict", &chart, "-f", &file]);
    assert_eq!(code, 0, "{what}: helm lint --strict\n{stdout}\n{stderr}");
    let (code, stdout, stderr) = helm(&["template", release, &chart, "-n", ns, "-f", &file]);
    assert_eq!(code, 0, "{what}: helm template\n{stderr}");
    serde_saphyr::from_multiple::<Value>(&stdout)
        .unwrap_or_else(|e| panic!("{what}: rendered YAML does not parse: {e}\n{stdout}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// Follows a local `$ref` (`#/definitions/<name>`).
fn resolve<'a>(root: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r.strip_prefix("#/definitions/").unwrap_or_else(|| panic!("unexpected $ref {r}"));
            resolve(root, &root["definitions"][name])
        }
        None => node,
    }
}

/// Every key values.yaml sets is in the schema and every property the schema lists is set in
/// values.yaml, down to objects the schema leaves free-form (resources, affinity, maps).
fn compare_keys(root: &Value, schema: &Value, values: &Value, path: &str, problems: &mut Vec<String>) {
    let schema = resolve(root, schema);
    let (Some(values), Some(props)) = (values.as_object(), schema.get("properties").and_then(Value::as_object)) else {
        return;
    };
    for (key, value) in values {
        match props.get(key) {
            Some(s) => compare_keys(root, s, value, &format!("{path}.{key}"), problems),
            None => problems.push(format!("values.yaml {path}.{key} is not in values.schema.json")),
        }
    }
    for key in props.keys() {
        // `global` is Helm's, for parent charts: allowed, never set here.
        let helms_own = path.is_empty() && key == "global";
        if !values.contains_key(key) && !helms_own {
            problems.push(format!("values.schema.json {path}.{key} is not in values.yaml"));
        }
    }
}

#[test]
fn values_yaml_and_the_schema_describe_the_same_keys() {
    let values = read_yaml(&chart_dir().join("values.yaml"));
    let schema: Value =
        serde_json::from_str(&std::fs::read_to_string(chart_dir().join("values.schema.json")).unwrap()).unwrap();
    assert_eq!(schema["additionalProperties"], false, "unknown top-level keys must be rejected");
    let mut problems = Vec::new();
    compare_keys(&schema, &schema, &values, "", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");

    // The comparison sees a difference (it can fail).
    let mut extra = values.clone();
    extra["run"]["retries"] = json!(3);
    extra["verify"].as_object_mut().unwrap().remove("settle");
    let mut problems = Vec::new();
    compare_keys(&schema, &schema, &extra, "", &mut problems);
    assert_eq!(
        problems,
        [
            "values.yaml .run.retries is not in values.schema.json",
            "values.schema.json .verify.settle is not in values.yaml",
        ]
    );
}

#[test]
fn the_preset_grants_exactly_the_charts_the_binary_restores() {
    let values = read_yaml(&chart_dir().join("values.yaml"));
    assert_eq!(values["preset"]["name"], "harvester");
    assert_eq!(values["preset"]["namespace"], HARVESTER_NAMESPACE);
    let docs = render("preset", "tpl", "rel", "");
    let role = docs.iter().find(|d| d["kind"] == "Role").expect("a Role");
    let rule = role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["managedcharts"]))
        .expect("a ManagedChart rule");
    let granted: BTreeSet<&str> = rule["resourceNames"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let restored: BTreeSet<&str> = HARVESTER_CHARTS.iter().map(|(name, _)| *name).collect();
    assert_eq!(granted, restored, "chart/pause-ledger/templates/_helpers.tpl presetNames vs src/preset.rs");
}

#[test]
fn the_icon_is_icon_svg_and_the_artifact_hub_image_is_the_default_one() {
    let chart = read_yaml(&chart_dir().join("Chart.yaml"));
    let svg = std::fs::read(chart_dir().join("icon.svg")).unwrap();
    assert!(svg.starts_with(b"<svg "), "icon.svg is an SVG document");
    let expected = format!("data:image/svg+xml;base64,{}", base64::engine::general_purpose::STANDARD.encode(&svg));
    assert_eq!(chart["icon"], expected, "Chart.yaml icon is not icon.svg: regenerate it");

    let values = read_yaml(&chart_dir().join("values.yaml"));
    let images: Value =
        serde_saphyr::from_str(chart["annotations"]["artifacthub.io/images"].as_str().expect("artifacthub.io/images"))
            .unwrap();
    let default =
        format!("{}:{}", values["image"]["repository"].as_str().unwrap(), chart["appVersion"].as_str().unwrap());
    assert_eq!(images, json!([{"name": "pause-ledger", "image": default}]));
    for key in ["artifacthub.io/license", "artifacthub.io/category", "artifacthub.io/changes"] {
        assert!(chart["annotations"][key].is_string(), "{key}");
    }
}

/// The ApiResource of a kind the chart renders; any other kind is a test failure.
fn resource_of(kind: &str) -> ApiResource {
    match kind {
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        "Role" => ApiResource::erase::<Role>(&()),
        "RoleBinding" => ApiResource::erase::<RoleBinding>(&()),
        "Job" => ApiResource::erase::<Job>(&()),
        other => panic!("the chart renders an unexpected kind {other}"),
    }
}

async fn ensure_namespace(name: &str) {
    let api: Api<Namespace> = Api::all(admin());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => panic!("namespace {name}: {e}"),
    }
}

/// Has the API server validate and admit every document, persisting nothing.
async fn dry_run(what: &str, docs: &[Value]) {
    for doc in docs {
        let kind = doc["kind"].as_str().expect("kind");
        let ns = doc["metadata"]["namespace"].as_str().expect("every document names its namespace");
        ensure_namespace(ns).await;
        let api: Api<DynamicObject> = Api::namespaced_with(admin(), ns, &resource_of(kind));
        let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("object");
        if let Err(e) = api.create(&PostParams { dry_run: true, field_manager: None }, &obj).await {
            panic!("{what}: API server rejected {kind} in {ns}: {e}\n{doc:#}");
        }
    }
}

fn kinds(docs: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for d in docs {
        *counts.entry(d["kind"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    counts
}

/// A dry-run case: its name, its values, and the objects it renders by kind.
struct DryRunCase {
    what: &'static str,
    values: &'static str,
    renders: &'static [(&'static str, usize)],
}

const DRY_RUN_CASES: &[DryRunCase] = &[
    DryRunCase {
        what: "defaults",
        values: "",
        renders: &[("Job", 1), ("Role", 1), ("RoleBinding", 1), ("ServiceAccount", 1)],
    },
    DryRunCase {
        what: "every value set",
        values: r#"
preset: {name: harvester, namespace: chart-t1}
targets:
  - {apiGroup: management.cattle.io, resource: managedcharts, namespaces: [chart-t1, chart-t2], resourceNames: [rancher-monitoring]}
  - {apiGroup: fleet.cattle.io, resource: bundles, namespaces: [chart-t1]}
  - {apiGroup: apps, resource: deployments, namespaces: [chart-t2]}
ledger: {namespace: chart-ledger, name: upgrade-ledger}
hooks: {postInstall: true, deletePolicy: "hook-succeeded,hook-failed", outputLogsOnFailure: false}
run: {timeoutSeconds: 120, logFormat: plain, logLevel: pause_ledger=debug, output: json, events: true}
verify: {propagationWindow: 20s, settle: 5s, waitReady: 60s, failOnNotReady: true}
restore: {ifMissing: fail, allowUnmarkedLedgers: true, extraArgs: ["--concurrency=4"], extraEnv: [{name: PAUSE_LEDGER_MAX_ATTEMPTS, value: "5"}]}
record: {enabled: true, upgrade: hvst-upgrade-1, onExisting: take-over, extraArgs: ["--concurrency=2"]}
rescue: {enabled: true, hook: true, acknowledgeUnknownOwnership: true, extraEnv: [{name: PAUSE_LEDGER_GRACE, value: 2s}]}
job: {backoffLimit: 3, activeDeadlineSeconds: 150, failFastExitCodes: [4, 5], terminationGracePeriodSeconds: 20}
image: {repository: registry.example.com/platform/pause-ledger, tag: "9.9.9", digest: "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", pullPolicy: Always}
imagePullSecrets: [{name: regcred}]
fullnameOverride: restorer
serviceAccount: {create: true, name: upgrade-restorer, annotations: {team: platform}}
rbac: {create: true, listTargets: true}
resources: {requests: {cpu: 50m, memory: 64Mi}, limits: {cpu: 500m, memory: 256Mi}}
nodeSelector: {node-role.kubernetes.io/control-plane: "true"}
tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]}]
priorityClassName: system-cluster-critical
podAnnotations: {example.com/audit: "true"}
podLabels: {example.com/team: platform}
jobAnnotations: {example.com/ticket: OPS-1}
"#,
        // restore + record Roles in three namespaces; restore, record and rescue Jobs.
        renders: &[("Job", 3), ("Role", 6), ("RoleBinding", 6), ("ServiceAccount", 1)],
    },
    DryRunCase {
        what: "no preset: record by name, pre-delete only, no Events, no propagation check",
        values: r#"
preset: {name: ""}
targets: [{apiGroup: management.cattle.io, resource: managedcharts, namespaces: [chart-t1]}]
hooks: {postUpgrade: false, postRollback: false}
run: {events: false}
verify: {propagationWindow: 0s}
record: {enabled: true, namespace: chart-t1, names: [app-a, app-b]}
"#,
        renders: &[("Job", 2), ("Role", 4), ("RoleBinding", 4), ("ServiceAccount", 1)],
    },
    DryRunCase {
        what: "RBAC and ServiceAccount of the cluster's own",
        values: "rbac: {create: false}\nserviceAccount: {create: false, name: platform-restorer}\n",
        renders: &[("Job", 1)],
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_value_sets_pass_server_side_dry_run() {
    cp();
    for DryRunCase { what, values, renders } in DRY_RUN_CASES {
        let docs = render(what, "tpl", "chart-rel", values);
        let expected: BTreeMap<String, usize> = renders.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        assert_eq!(kinds(&docs), expected, "{what}");
        dry_run(what, &docs).await;
    }
}
