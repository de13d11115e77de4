//! The chart's metadata and its rendering on a real API server.
//!
//! Rendering behaviour, one case per behaviour, lives in the helm-unittest suites
//! (`chart/pause-ledger/tests/*_test.yaml`, run by `tools/chart-test`). This file checks what
//! those cannot: that values.yaml and values.schema.json describe the same keys, that the
//! preset's names are the binary's, that Chart.yaml's icon and Artifact Hub image are what they
//! claim, that representative value sets render objects the real kube-apiserver accepts
//! (server-side dry run: its validation and admission run, nothing is persisted), that the
//! preset's Role keeps a restore to the preset's charts, and that docs/many-clusters.md's
//! fleet.yaml and per-context loop work.

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
use pause_ledger::preset::{HARVESTER_NAMESPACE, Preset};
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

/// The pinned `helm` of the major under test (`KUBEENV_HELM`, tools/kubeenv/build.sh), with homes of its own so nothing of the user's
/// Helm setup leaks in. Returns (exit code, stdout, stderr).
fn helm(args: &[&str]) -> (i32, String, String) {
    let major = kubeenv::binaries::Helm::from_env().expect("KUBEENV_HELM");
    let bin = kubeenv::binaries::helm(major).expect("pinned helm builds (tools/kubeenv/build.sh)");
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
    for preset in [Preset::Harvester, Preset::Harvester12, Preset::Harvester10] {
        let docs = render("preset", "tpl", "rel", &format!("preset: {{name: {}}}\n", preset.name()));
        let role = docs.iter().find(|d| d["kind"] == "Role").expect("a Role");
        let rule = role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resources"] == json!(["managedcharts"]))
            .expect("a ManagedChart rule");
        let granted: BTreeSet<&str> =
            rule["resourceNames"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        let restored: BTreeSet<&str> = preset.charts().iter().map(|(name, _)| *name).collect();
        assert_eq!(
            granted,
            restored,
            "{}: chart/pause-ledger/templates/_helpers.tpl presetNames vs src/preset.rs",
            preset.name()
        );
    }
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
    create(what, docs, true).await;
}

/// Creates the documents (what `kubectl create -f` does), or with `dry_run` only has the API
/// server validate and admit them.
async fn create(what: &str, docs: &[Value], dry_run: bool) {
    for doc in docs {
        let kind = doc["kind"].as_str().expect("kind");
        let ns = doc["metadata"]["namespace"].as_str().expect("every document names its namespace");
        ensure_namespace(ns).await;
        let api: Api<DynamicObject> = Api::namespaced_with(admin(), ns, &resource_of(kind));
        let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("object");
        if let Err(e) = api.create(&PostParams { dry_run, field_manager: None }, &obj).await {
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
        // fleet-local, and harvester-system (list Upgrades: is one still running?).
        renders: &[("Job", 1), ("Role", 2), ("RoleBinding", 2), ("ServiceAccount", 1)],
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
        // restore + record Roles in three namespaces, restore's in harvester-system too;
        // restore, record and rescue Jobs.
        renders: &[("Job", 3), ("Role", 7), ("RoleBinding", 7), ("ServiceAccount", 1)],
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preset_rbac_keeps_a_ledger_to_the_presets_charts() {
    use support::*;
    // A ledger that names a chart outside the preset (written by mistake, or by someone who can
    // write the ConfigMap): the chart's default RBAC lets the restore reach the preset's charts
    // only. Its Roles are created as rendered and the binary runs as its ServiceAccount.
    let rel = namespace("preset-rel").await;
    let fleet = namespace("preset-fleet").await;
    for name in ["harvester", "other"] {
        create_chart(&fleet, name).await;
        pause_as_upgrade(&fleet, name, UPGRADE).await;
    }
    write_ledger(&fleet, "pause-ledger", &[("ledger.yaml", &full_ledger(&fleet, &["harvester", "other"]))]).await;
    let values = format!("preset: {{namespace: {fleet}}}\nledger: {{namespace: {fleet}}}\n");
    let docs = render("preset RBAC", "pl", &rel, &values);
    let rbac: Vec<Value> = docs.iter().filter(|d| d["kind"] != "Job").cloned().collect();
    // The preset's namespace, and harvester-system (Harvester Upgrades).
    let expected: BTreeMap<String, usize> =
        [("Role".into(), 2), ("RoleBinding".into(), 2), ("ServiceAccount".into(), 1)].into();
    assert_eq!(kinds(&rbac), expected);
    create("preset RBAC", &rbac, false).await;
    let kubeconfig = cp().service_account_kubeconfig(&rel, "pl-pause-ledger").await.unwrap();

    let run = run_as(&kubeconfig, &["restore", "--ledger", &format!("{fleet}/pause-ledger"), "-o", "json"]).await;
    assert_eq!(run.code, 5, "permission denied for the chart outside the preset: {run:?}");
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    let entry = |name: &str| {
        report["entries"].as_array().unwrap().iter().find(|e| e["object"]["name"] == name).unwrap().clone()
    };
    assert_eq!(entry("harvester")["outcome"], "restored", "{report:#}");
    assert_eq!((&entry("other")["outcome"], &entry("other")["cause"]), (&json!("failed"), &json!("permission-denied")));
    assert!(!paused(&fleet, "harvester").await);
    assert!(paused(&fleet, "other").await, "outside the preset: still paused");
}

// docs/many-clusters.md: its fleet.yaml and its per-context loop, read from the document.

fn many_clusters_doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/many-clusters.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fenced code block of language `lang` whose first line starts with `first`.
fn code_block(doc: &str, lang: &str, first: &str) -> String {
    let fence = format!("```{lang}");
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.trim_end() != fence {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        if block.first().is_some_and(|l| l.starts_with(first)) {
            return block.join("\n") + "\n";
        }
    }
    panic!("docs/many-clusters.md has no ```{lang} block starting with {first:?}");
}

/// Fleet's merge of a target customization's Helm values over the bundle's (wrangler
/// `data.MergeMaps`, used by Fleet's options merge): maps merge key by key, recursively;
/// anything else, lists included, is replaced.
fn fleet_merge(base: &Value, overlay: &Value) -> Value {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            let mut merged = b.clone();
            for (k, v) in o {
                let next = match merged.get(k) {
                    Some(old) => fleet_merge(old, v),
                    None => v.clone(),
                };
                merged.insert(k.clone(), next);
            }
            Value::Object(merged)
        }
        _ => overlay.clone(),
    }
}

#[test]
fn fleet_merge_is_fleets() {
    let base = json!({"a": {"x": 1, "l": [1, 2]}, "b": 1});
    let overlay = json!({"a": {"y": 2, "l": [3]}, "b": {"c": 1}});
    assert_eq!(fleet_merge(&base, &overlay), json!({"a": {"x": 1, "y": 2, "l": [3]}, "b": {"c": 1}}));
}

fn env_of(job: &Value) -> BTreeMap<String, String> {
    job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap_or_default().to_string()))
        .collect()
}

fn job<'a>(docs: &'a [Value], component: &str) -> Option<&'a Value> {
    docs.iter().find(|d| d["kind"] == "Job" && d["metadata"]["labels"]["app.kubernetes.io/component"] == component)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_yaml_of_the_many_clusters_doc_renders_for_every_target() {
    let doc = many_clusters_doc();
    let fleet: Value = serde_saphyr::from_str(&code_block(&doc, "yaml", "# fleet.yaml")).expect("fleet.yaml parses");
    let git_repo: Value = serde_saphyr::from_str(&code_block(&doc, "yaml", "# gitrepo.yaml")).expect("GitRepo parses");
    assert_eq!(git_repo["kind"], "GitRepo");
    assert!(git_repo["spec"]["targets"][0]["clusterSelector"]["matchLabels"].is_object(), "targets by label");

    // The chart and image the doc deploys are this chart's.
    let chart = read_yaml(&chart_dir().join("Chart.yaml"));
    let helm_opts = &fleet["helm"];
    assert_eq!(helm_opts["version"], chart["version"], "fleet.yaml helm.version");
    assert_eq!(helm_opts["values"]["image"]["tag"], chart["appVersion"], "fleet.yaml image tag");
    let release = helm_opts["releaseName"].as_str().expect("helm.releaseName");
    let ns = fleet["defaultNamespace"].as_str().expect("defaultNamespace");
    let helm_timeout = helm_opts["timeoutSeconds"].as_i64().expect("helm.timeoutSeconds");

    // What Fleet passes: the base values for a cluster no customization matches, else the first
    // matching customization's values merged over them.
    let base = helm_opts["values"].clone();
    let mut targets = vec![("no customization".to_string(), base.clone())];
    for custom in fleet["targetCustomizations"].as_array().expect("targetCustomizations") {
        let name = custom["name"].as_str().expect("name").to_string();
        let labels = custom["clusterSelector"]["matchLabels"].as_object();
        assert!(labels.is_some_and(|l| !l.is_empty()), "{name}: targets clusters by label");
        targets.push((name, fleet_merge(&base, &custom["helm"]["values"])));
    }
    let names: Vec<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["no customization", "rescue", "unmarked-ledgers", "wait-ready"]);

    cp();
    for (name, values) in &targets {
        let what = format!("fleet target {name}");
        let docs = render(&what, release, ns, &serde_json::to_string(values).unwrap());
        let restore = job(&docs, "restore").unwrap_or_else(|| panic!("{what}: no restore Job"));
        let events = restore["metadata"]["annotations"]["helm.sh/hook"].as_str().unwrap();
        assert!(events.contains("post-install") && events.contains("post-upgrade"), "{what}: {events}");
        let env = env_of(restore);
        assert_eq!(env["PAUSE_LEDGER_LEDGER"], "fleet-local/pause-ledger", "{what}");
        assert_eq!(
            env["PAUSE_LEDGER_ALLOW_UNMARKED"],
            if name == "unmarked-ledgers" { "true" } else { "false" },
            "{what}"
        );
        assert_eq!(env.get("PAUSE_LEDGER_WAIT_READY").map(String::as_str), (name == "wait-ready").then_some("120s"));
        let rescue = job(&docs, "rescue");
        assert_eq!(rescue.is_some(), name == "rescue", "{what}: a rescue Job only where asked");
        if let Some(rescue) = rescue {
            assert_eq!(rescue["metadata"]["annotations"]["helm.sh/hook"], "post-install,post-upgrade", "{what}");
            assert_eq!(env_of(rescue)["PAUSE_LEDGER_ACKNOWLEDGE_UNKNOWN_OWNERSHIP"], "true", "{what}");
        }
        for j in docs.iter().filter(|d| d["kind"] == "Job") {
            assert_eq!(j["spec"]["template"]["metadata"]["annotations"]["pause-ledger.io/run"], "1", "{what}");
            let deadline = j["spec"]["activeDeadlineSeconds"].as_i64().unwrap();
            assert!(
                deadline < helm_timeout,
                "{what}: Fleet's Helm wait ({helm_timeout} s) must outlast the Job ({deadline} s)"
            );
        }
        // The preset's RBAC: the four Harvester charts by name, nothing wider.
        let role = docs.iter().find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "fleet-local").unwrap();
        let charts = role["rules"].as_array().unwrap().iter().find(|r| r["resources"] == json!(["managedcharts"]));
        assert_eq!(charts.unwrap()["resourceNames"].as_array().map(Vec::len), Some(4), "{what}");
        dry_run(&what, &docs).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_context_loop_of_the_many_clusters_doc_collects_exit_codes() {
    use support::*;
    let fleet = namespace("loop-fleet").await;
    create_chart(&fleet, "harvester").await;
    pause_as_upgrade(&fleet, "harvester", UPGRADE).await;
    write_ledger(&fleet, "pause-ledger", &[("ledger.yaml", &full_ledger(&fleet, &["harvester"]))]).await;

    // Two contexts on the one API server: "harvester-a" as an admin, "harvester-b" as a
    // ServiceAccount without any permission (a cluster where your credentials fall short).
    let admin_cfg = read_yaml(cp().kubeconfig_path());
    let sa_cfg = read_yaml(&cp().service_account_kubeconfig(&fleet, "no-rights").await.unwrap());
    let user = |cfg: &Value| cfg["users"][0].clone();
    let context = |name: &str, cfg: &Value| json!({"name": name, "context": {"cluster": cfg["contexts"][0]["context"]["cluster"], "user": cfg["users"][0]["name"]}});
    let kubeconfig = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin_cfg["clusters"],
        "users": [user(&admin_cfg), user(&sa_cfg)],
        "contexts": [context("harvester-a", &admin_cfg), context("harvester-b", &sa_cfg)],
        "current-context": "harvester-a",
    });
    let dir = scratch().join("run-everywhere");
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig_path = dir.join("kubeconfig");
    std::fs::write(&kubeconfig_path, serde_json::to_string(&kubeconfig).unwrap()).unwrap();
    let script = dir.join("run-everywhere");
    std::fs::write(&script, code_block(&many_clusters_doc(), "bash", "#!/usr/bin/env bash")).unwrap();
    let out_dir = dir.join("out");

    let ledger = format!("{fleet}/pause-ledger");
    let out = tokio::process::Command::new("bash")
        .arg(&script)
        .args(["restore", "--ledger", &ledger, "-o", "json", "--propagation-window=0s"])
        .env("KUBECONFIG", &kubeconfig_path)
        .env("OUT", &out_dir)
        .env("PAUSE_LEDGER", bin())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "one context failed\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 of 2 contexts failed"), "{stdout}");
    let summary = std::fs::read_to_string(out_dir.join("summary.tsv")).unwrap();
    assert_eq!(summary, "context\texit\nharvester-a\t0\nharvester-b\t5\n");

    let report = |ctx: &str| -> Value {
        let text = std::fs::read_to_string(out_dir.join(format!("{ctx}.out"))).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{ctx}.out is not the JSON report ({e}): {text}"))
    };
    assert_eq!(report("harvester-a")["result"], "success");
    assert_eq!(report("harvester-a")["entries"][0]["outcome"], "restored");
    assert!(!paused(&fleet, "harvester").await, "restored through context harvester-a");
    assert_eq!(report("harvester-b")["result"], "permission-denied");
    assert!(std::fs::metadata(out_dir.join("harvester-b.log")).unwrap().len() > 0, "its log is kept");
}
