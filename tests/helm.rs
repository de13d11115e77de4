//! The Helm chart end to end: the real `helm` CLI installing, upgrading, rolling back and
//! uninstalling releases whose hooks record and restore what an upgrade paused, on the real
//! kube-apiserver; plus the chart's RBAC proven sufficient and minimal, and the manual-run
//! recipe. (Rendering: the helm-unittest suites in chart/pause-ledger/tests and tests/chart.rs.)
//!
//! Hook Jobs are executed by [`kubeenv::HookRunner`], a test double for the kubelet and the
//! Job controller (which this control plane lacks), and Rancher's ManagedChart → Bundle
//! propagation by `kubeenv::RancherStandIn` (also a test double). Everything else is real:
//! Helm's hook ordering, weights and delete policies, the chart's RBAC as enforced by the API
//! server, the ServiceAccount token the binary authenticates with, and the binary itself.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use kubeenv::hook_runner::{Execution, HookRunner, ImageConfig};
use kubeenv::{Helm, RancherStandIn};
use serde_json::{Value, json};
use support::*;

/// Helm's own per-call limit in these tests: far above what a hook needs here, well below
/// Helm's 5-minute default so a broken double fails fast.
const HELM_TIMEOUT: &str = "90s";
/// Verification windows for the e2e runs: the Rancher stand-in mirrors an unpause within
/// ~100 ms, and every second of --settle is a second of every restore.
const VERIFY: &str = "propagationWindow: 5s, settle: 1s";

/// The Job (and RBAC) name of `component` for release `release`.
fn job_name(release: &str, component: &str) -> String {
    format!("{release}-pause-ledger-{component}")
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn chart_dir() -> String {
    repo().join("chart/pause-ledger").display().to_string()
}

/// A scratch dir for this test process (Helm's config/cache/data homes, values files).
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = cp().dir().join("helm-tests");
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    })
}

/// Output of a CLI run.
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {}\n--- stdout\n{}\n--- stderr\n{}", self.code, self.stdout, self.stderr)
    }
}

/// The Helm major under test (`KUBEENV_HELM`, default 3) and its pinned binary (built by
/// tools/kubeenv/build.sh on first use). Prints both once, with the control plane's version.
fn helm_under_test() -> &'static (Helm, PathBuf) {
    static HELM: OnceLock<(Helm, PathBuf)> = OnceLock::new();
    HELM.get_or_init(|| {
        let major = Helm::from_env().expect("KUBEENV_HELM");
        let path = kubeenv::binaries::helm(major).expect("pinned helm builds");
        let version = std::process::Command::new(&path).args(["version", "--short"]).output().expect("helm version");
        eprintln!(
            "tests/helm.rs: {major} ({}, {}) against Kubernetes {}",
            String::from_utf8_lossy(&version.stdout).trim(),
            path.display(),
            cp().server_version()
        );
        (major, path)
    })
}

/// The Helm major under test.
fn helm_major() -> Helm {
    helm_under_test().0
}

/// Runs the pinned `helm` of the major under test against the test control plane, with its own
/// config/cache/data homes so nothing of the user's Helm setup leaks in.
async fn helm(args: &[&str]) -> Out {
    let home = scratch().join("helm-home");
    let out = tokio::process::Command::new(&helm_under_test().1)
        .args(args)
        .arg("--kubeconfig")
        .arg(cp().kubeconfig_path())
        .env_clear()
        .env("HOME", &home)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run helm");
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The chart README's (and NOTES') recipe for *why* a hook Job failed, which Helm 4 does not
/// print: the reason and message of the Job's `Failed` condition.
const WHY_JSONPATH: &str = r#"{range .status.conditions[?(@.type=="Failed")]}{.reason}: {.message}{"\n"}{end}"#;

/// Runs the recipe with the real `kubectl`: `<reason>: <message>` of failed Job `ns/job`.
async fn why_failed(ns: &str, job: &str) -> String {
    let out = tokio::process::Command::new("kubectl")
        .args(["-n", ns, "get", "job", job, "-o"])
        .arg(format!("jsonpath={WHY_JSONPATH}"))
        .arg("--kubeconfig")
        .arg(cp().kubeconfig_path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("kubectl runs (the README's recipe needs it)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "kubectl: {}{stdout}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// A failed hook as the person running `helm` sees it, in the wording of the Helm major under
/// test (measured; chart README, "Helm 3 and Helm 4"). Helm 3 names the Job's reason
/// (`* job <name> failed: <reason>` under `1 error occurred:`); Helm 4 names the Job and its
/// failed-pod count only (`resource Job/<ns>/<name> not ready. status: Failed, message: Job
/// Failed. failed: N/1`), and Helm 3's line again with `--wait=legacy` (`legacy`). `phase` is
/// what upgrade puts first (`post-upgrade hooks failed: `; rollback and uninstall put nothing).
/// Either way the README's kubectl recipe must give the reason.
async fn assert_hook_failed(out: &Out, phase: &str, ns: &str, job: &str, reason: &str, failed: u32, legacy: bool) {
    assert_ne!(out.code, 0, "the command must fail: {out:?}");
    eprintln!("measured, {} failing a hook for {reason}:\n{}", helm_major(), out.stderr.trim_end());
    let helm3 = format!("job {job} failed: {reason}");
    match helm_major() {
        Helm::V3 => {
            let line = format!("{phase}1 error occurred:\n\t* {helm3}");
            assert!(out.stderr.contains(&line), "{out:?}");
        }
        Helm::V4 if legacy => assert!(out.stderr.contains(&format!("{phase}{helm3}")), "{out:?}"),
        Helm::V4 => {
            let line = format!(
                "{phase}resource Job/{ns}/{job} not ready. status: Failed, message: Job Failed. failed: {failed}/1"
            );
            assert!(out.stderr.contains(&line), "{out:?}");
            assert!(!out.stderr.contains(reason), "Helm 4 now prints the reason: update the chart README. {out:?}");
        }
    }
    let why = why_failed(ns, job).await;
    eprintln!("measured, the README's recipe: {why}");
    assert!(why.starts_with(&format!("{reason}: ")), "the README's recipe: {why:?}");
}

/// Writes a values file and returns its path.
fn values_file(name: &str, yaml: &str) -> String {
    let path = scratch().join(format!("{name}.values.yaml"));
    std::fs::write(&path, yaml).expect("values file");
    path.display().to_string()
}

/// Values for a release whose ledger and ManagedCharts live in `fleet`, without the preset:
/// every ManagedChart of `fleet` may be restored (the ledgers here name charts of any name);
/// `verify` adds keys to the `verify` block.
fn release_values(fleet: &str, verify: &str) -> String {
    format!(
        "preset: {{name: \"\"}}\n\
         ledger: {{namespace: {fleet}, name: pause-ledger}}\n\
         targets:\n  - {{apiGroup: management.cattle.io, resource: managedcharts, namespaces: [{fleet}]}}\n\
         run: {{output: json}}\n\
         verify: {{{VERIFY}{verify}}}\n"
    )
}

/// Values for a release with the Harvester preset in `fleet`: the Jobs may touch its four
/// ManagedCharts, by name, and nothing else (the chart's default, moved to `fleet`).
fn preset_values(fleet: &str) -> String {
    format!(
        "preset: {{name: harvester, namespace: {fleet}}}\n\
         ledger: {{namespace: {fleet}, name: pause-ledger}}\n\
         run: {{output: json}}\n\
         verify: {{{VERIFY}}}\n"
    )
}

/// `helm template` → documents (empty ones dropped).
async fn template(release: &str, ns: &str, extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec!["template", release, chart.as_str(), "-n", ns];
    args.extend_from_slice(extra);
    let out = helm(&args).await;
    assert_eq!(out.code, 0, "helm template {extra:?}: {out:?}");
    serde_saphyr::from_multiple::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{}", out.stdout))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
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

/// Creates rendered documents through the API (what `kubectl create -f` does), or only has the
/// API server validate and admit them (`dryRun=All`).
async fn create_docs(docs: &[Value], dry_run: bool) {
    for doc in docs {
        let kind = doc["kind"].as_str().expect("kind");
        let ns = doc["metadata"]["namespace"].as_str().expect("every document names its namespace");
        let api: Api<DynamicObject> = Api::namespaced_with(admin(), ns, &resource_of(kind));
        let obj: DynamicObject = serde_json::from_value(doc.clone()).expect("object");
        if let Err(e) = api.create(&PostParams { dry_run, field_manager: None }, &obj).await {
            panic!("API server rejected {kind} in {ns}: {e}\n{doc:#}");
        }
    }
}

/// A test's release: its namespace, the fleet namespace (ledger and charts), the runner, the
/// Rancher stand-in and a values file.
struct Release {
    name: String,
    ns: String,
    fleet: String,
    values: String,
    runner: HookRunner,
    _rancher: RancherStandIn,
}

fn start_runner(ns: &str) -> HookRunner {
    let image = ImageConfig::from_dockerfile(&repo().join("Dockerfile")).expect("the Dockerfile is understood");
    HookRunner::start(admin(), ns, image, Path::new(bin()), cp().server_url(), cp().ca_pem())
        .expect("the hook runner starts")
}

impl Release {
    /// `extra_values` gets the fleet namespace and returns more top-level values, added to
    /// [`release_values`].
    async fn new(prefix: &str, extra_values: impl FnOnce(&str) -> String) -> Release {
        Release::with_values(prefix, |fleet| format!("{}{}", release_values(fleet, ""), extra_values(fleet))).await
    }

    /// `values` gets the fleet namespace and returns all the release's values.
    async fn with_values(prefix: &str, values: impl FnOnce(&str) -> String) -> Release {
        let ns = namespace(&format!("{prefix}-rel")).await;
        let fleet = namespace(&format!("{prefix}-fleet")).await;
        let values = values_file(&ns, &values(&fleet));
        Release {
            name: "pl".into(),
            runner: start_runner(&ns),
            _rancher: RancherStandIn::spawn(admin(), &fleet),
            ns,
            fleet,
            values,
        }
    }

    /// `helm <verb> <release> [chart -f values] -n <ns> [--timeout] <extra>`.
    async fn helm(&self, verb: &str, extra: &[&str]) -> Out {
        let chart = chart_dir();
        let mut args = vec![verb, self.name.as_str()];
        if matches!(verb, "install" | "upgrade") {
            args.extend([chart.as_str(), "-f", &self.values]);
        }
        args.extend(["-n", &self.ns]);
        if !matches!(verb, "status" | "history") {
            args.extend(["--timeout", HELM_TIMEOUT]);
        }
        args.extend_from_slice(extra);
        helm(&args).await
    }

    async fn ok(&self, verb: &str, extra: &[&str]) -> Out {
        let out = self.helm(verb, extra).await;
        self.runner.assert_no_errors();
        assert_eq!(out.code, 0, "helm {verb} {extra:?}: {out:?}\nruns: {:#?}", self.runner.executions());
        out
    }

    async fn status(&self) -> Value {
        serde_json::from_str(&self.ok("status", &["-o", "json"]).await.stdout).expect("helm status -o json")
    }

    /// ManagedCharts paused by an upgrade, and its ledger.
    async fn record_pause(&self, names: &[&str]) {
        for n in names {
            if charts(&self.fleet).get_opt(n).await.unwrap().is_none() {
                create_handled_chart(&self.fleet, n).await;
            }
            pause_as_upgrade(&self.fleet, n, UPGRADE).await;
        }
        write_ledger(&self.fleet, "pause-ledger", &[("ledger.yaml", &full_ledger(&self.fleet, names))]).await;
    }

    fn runs(&self, component: &str) -> Vec<Execution> {
        self.runner.executions_of(&job_name(&self.name, component))
    }

    /// The JSON report of the last run of `component`.
    fn last_report(&self, component: &str) -> Value {
        let runs = self.runs(component);
        let last = runs.last().unwrap_or_else(|| panic!("no {component} ran"));
        serde_json::from_str(&last.stdout).unwrap_or_else(|e| panic!("report is not JSON ({e}): {last:#?}"))
    }

    /// The chart's hook objects still present (SA and Jobs here, RBAC in `fleet`).
    async fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        let mut checks = vec![("ServiceAccount", self.ns.clone(), format!("{}-pause-ledger", self.name))];
        for c in ["restore", "record"] {
            checks.push(("Job", self.ns.clone(), job_name(&self.name, c)));
            checks.push(("Role", self.fleet.clone(), job_name(&self.name, c)));
            checks.push(("RoleBinding", self.fleet.clone(), job_name(&self.name, c)));
        }
        for (kind, ns, name) in checks {
            let api: Api<DynamicObject> = Api::namespaced_with(admin(), &ns, &resource_of(kind));
            if api.get_opt(&name).await.unwrap().is_some() {
                left.push(format!("{kind} {ns}/{name}"));
            }
        }
        left
    }

    async fn job(&self, component: &str) -> Option<Job> {
        Api::<Job>::namespaced(admin(), &self.ns).get_opt(&job_name(&self.name, component)).await.unwrap()
    }
}

fn outcomes(report: &Value) -> BTreeMap<String, String> {
    report["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| (e["object"]["name"].as_str().unwrap().to_string(), e["outcome"].as_str().unwrap().to_string()))
        .collect()
}

fn condition<'a>(job: &'a Job, kind: &str) -> Option<&'a JobCondition> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == kind && c.status == "True")
}

/// Creates a running ManagedChart and waits until the Rancher stand-in has handled it, so its
/// status write cannot race the compare-and-set patch of `pause_as_upgrade`.
async fn create_handled_chart(ns: &str, name: &str) {
    create_chart(ns, name).await;
    eventually(Duration::from_secs(20), "the Rancher stand-in to handle the chart", || async {
        let c = chart(ns, name).await;
        c.pointer("/status/observedGeneration").is_some()
            && c.pointer("/status/observedGeneration") == c.pointer("/metadata/generation")
    })
    .await;
}

#[test]
fn helm_under_test_is_the_selected_and_pinned_major() {
    let (major, path) = helm_under_test();
    assert_eq!(*major, Helm::from_env().unwrap());
    let out = std::process::Command::new(path).args(["version", "--template", "{{.Version}}"]).output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout).into_owned();
    let module = format!("helm.sh/helm/v{}", major.major());
    let go_mod = repo().join("tools/kubeenv").join(major.binary_name()).join("go.mod");
    let pinned = std::fs::read_to_string(&go_mod).unwrap();
    let pinned = pinned.lines().find_map(|l| l.strip_prefix(&format!("require {module} "))).expect("pinned");
    assert_eq!(version, pinned.trim(), "{}", path.display());
}

/// The chart README gives what the tests measure: each major's wording and the recipes.
#[test]
fn chart_readme_gives_each_helm_majors_wording_and_the_recipe() {
    let readme = std::fs::read_to_string(repo().join("chart/pause-ledger/README.md")).unwrap();
    for needle in [
        WHY_JSONPATH,
        "* job pl-pause-ledger-restore failed: PodFailurePolicy",
        "not ready. status: Failed, message: Job Failed. failed: 1/1",
        "`--wait=legacy`",
        "another operation (install/upgrade/rollback) is in progress",
    ] {
        assert!(readme.contains(needle), "chart README lacks {needle:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_rollback_and_uninstall_hooks_restore_what_the_upgrade_paused() {
    let rel = Release::new("cycle", |_| String::new()).await;
    let installed = rel.ok("install", &[]).await;
    // NOTES give the recipe for why a hook failed, which Helm 4 does not print.
    let recipe =
        format!("kubectl -n {} get job {} -o jsonpath='{WHY_JSONPATH}'", rel.ns, job_name(&rel.name, "restore"));
    assert!(installed.stdout.contains(&recipe), "{recipe}\n{installed:?}");
    assert!(rel.runner.executions().is_empty(), "install runs no hook");
    assert!(rel.job("restore").await.is_none());

    // 1. An upgrade paused two charts; an administrator had paused a third on purpose.
    create_handled_chart(&rel.fleet, "by-hand").await;
    set_paused_by_hand(&rel.fleet, "by-hand", true).await;
    rel.record_pause(&["harvester", "harvester-crd"]).await;
    let ledger = full_ledger(&rel.fleet, &["harvester", "harvester-crd", "by-hand"]);
    write_ledger(&rel.fleet, "pause-ledger", &[("ledger.yaml", &ledger)]).await;
    rel.ok("upgrade", &[]).await;
    let runs = rel.runs("restore");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    let run = &runs[0];
    assert_eq!(run.code, 0, "{run:#?}");
    // It ran as the chart's ServiceAccount, configured through env only, with no kubeconfig.
    assert_eq!(run.service_account, "pl-pause-ledger");
    assert_eq!(run.args, vec!["restore"]);
    assert_eq!(run.env["PAUSE_LEDGER_LEDGER"], format!("{}/pause-ledger", rel.fleet));
    assert!(!run.env.contains_key("PAUSE_LEDGER_KUBECONFIG"));
    // logFormat json (the chart's default): every stderr line is one JSON object.
    assert!(!run.stderr.is_empty());
    for line in run.stderr.lines() {
        let entry: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(entry["level"].is_string(), "{line}");
    }
    let report = rel.last_report("restore");
    let o = outcomes(&report);
    assert_eq!(o["harvester"], "restored");
    assert_eq!(o["harvester-crd"], "restored");
    assert_eq!(o["by-hand"], "not-ours");
    let entries = report["entries"].as_array().unwrap();
    assert!(
        entries.iter().filter(|e| e["outcome"] == "restored").all(|e| e["propagated"] == true),
        "verified against the Bundles: {report:#}"
    );
    assert!(!paused(&rel.fleet, "harvester").await);
    assert!(!paused(&rel.fleet, "harvester-crd").await);
    assert!(paused(&rel.fleet, "by-hand").await, "a hand pause stays");
    assert!(ledger_data(&rel.fleet, "pause-ledger").await["status.yaml"].contains("state: done"));
    assert!(event_reasons(&rel.fleet, "harvester").await.contains(&"Restored".to_string()));
    assert_eq!(rel.leftovers().await, Vec::<String>::new(), "hook-succeeded cleans up");
    let status = rel.status().await;
    assert_eq!(status["info"]["status"], "deployed");
    assert_eq!(status["version"], 2);

    // 2. The next upgrade paused them again and was rolled back: post-rollback restores.
    rel.record_pause(&["harvester", "harvester-crd"]).await;
    rel.ok("rollback", &["1"]).await;
    let runs = rel.runs("restore");
    assert_eq!(runs.iter().map(|r| r.code).collect::<Vec<_>>(), vec![0, 0]);
    assert_eq!(outcomes(&rel.last_report("restore"))["harvester"], "restored");
    assert!(!paused(&rel.fleet, "harvester").await);
    assert!(!paused(&rel.fleet, "harvester-crd").await);
    assert_eq!(rel.leftovers().await, Vec::<String>::new());
    assert_eq!(rel.status().await["version"], 3);

    // 3. Paused again, then uninstalled: pre-delete restores, then the release goes.
    rel.record_pause(&["harvester"]).await;
    rel.ok("uninstall", &[]).await;
    let runs = rel.runs("restore");
    assert_eq!(runs.iter().map(|r| r.code).collect::<Vec<_>>(), vec![0, 0, 0]);
    assert_eq!(outcomes(&rel.last_report("restore"))["harvester"], "restored");
    assert!(!paused(&rel.fleet, "harvester").await);
    let gone = rel.helm("status", &[]).await;
    assert_ne!(gone.code, 0, "release still there: {gone:?}");
    assert!(gone.stderr.contains("not found"), "{gone:?}");
    assert_eq!(rel.leftovers().await, Vec::<String>::new());
    rel.runner.assert_no_errors();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_upgrade_record_and_post_upgrade_restore_bracket_an_upgrade() {
    let rel =
        Release::with_values("record", |fleet| format!("{}record: {{enabled: true}}\n", preset_values(fleet))).await;
    for n in ["harvester", "harvester-crd", "rancher-monitoring-crd", "rancher-logging-crd"] {
        create_chart(&rel.fleet, n).await;
    }
    set_paused_by_hand(&rel.fleet, "rancher-logging-crd", true).await;
    rel.ok("install", &[]).await;
    assert!(rel.runner.executions().is_empty(), "install runs no hook");

    // helm upgrade: pre-upgrade record pauses and marks, (the upgrade), post-upgrade restores.
    rel.ok("upgrade", &[]).await;
    let all = rel.runner.executions();
    let order: Vec<(&str, i32)> = all.iter().map(|e| (e.job.as_str(), e.code)).collect();
    assert_eq!(order, vec![("pl-pause-ledger-record", 0), ("pl-pause-ledger-restore", 0)], "{all:#?}");
    let record = rel.last_report("record");
    assert_eq!(record["upgrade"], "pl-2", "<release>-<revision>");
    let o = outcomes(&record);
    assert_eq!(o["harvester"], "paused");
    assert_eq!(o["harvester-crd"], "paused");
    assert_eq!(o["rancher-monitoring-crd"], "paused");
    assert_eq!(o["rancher-logging-crd"], "paused-before");
    let restore = rel.last_report("restore");
    assert_eq!(restore["upgrade"], "pl-2");
    let o = outcomes(&restore);
    for n in ["harvester", "harvester-crd", "rancher-monitoring-crd"] {
        assert_eq!(o[n], "restored", "{restore:#}");
        assert!(!paused(&rel.fleet, n).await, "{n}");
    }
    assert!(!o.contains_key("rancher-logging-crd"), "paused before the upgrade: never in the entries");
    assert!(paused(&rel.fleet, "rancher-logging-crd").await, "the administrator's pause stays");
    assert!(event_reasons(&rel.fleet, "harvester").await.contains(&"Paused".to_string()));
    assert_eq!(rel.leftovers().await, Vec::<String>::new());

    // The next upgrade records again over the restored ledger and restores again.
    rel.ok("upgrade", &[]).await;
    assert_eq!(rel.runs("record").len(), 2);
    assert_eq!(rel.last_report("record")["upgrade"], "pl-3");
    assert_eq!(outcomes(&rel.last_report("restore"))["harvester"], "restored");
    assert!(!paused(&rel.fleet, "harvester").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_delete_with_nothing_recorded_lets_the_uninstall_through() {
    let rel = Release::new("nothing", |_| String::new()).await;
    rel.ok("install", &[]).await;
    rel.ok("uninstall", &[]).await;
    let runs = rel.runs("restore");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0].code, 0, "{:#?}", runs[0]);
    let report = rel.last_report("restore");
    assert_eq!(report["result"], "success");
    assert!(report["message"].as_str().unwrap().contains("nothing to restore"), "{report:#}");
    assert_ne!(rel.helm("status", &[]).await.code, 0, "release still there");
    assert_eq!(rel.leftovers().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_restore_fails_the_upgrade_and_a_fixed_one_recovers() {
    let rel = Release::new("failing", |_| String::new()).await;
    rel.ok("install", &[]).await;
    rel.record_pause(&["harvester"]).await;
    let restore = job_name(&rel.name, "restore");

    // An invalid ledger: exit 4 is a failFastExitCode, so one pod and the Job fails at once.
    let bad = full_ledger(&rel.fleet, &["harvester"]).replace("pause-ledger/v1", "pause-ledger/v9");
    write_ledger(&rel.fleet, "pause-ledger", &[("ledger.yaml", &bad)]).await;
    let out = rel.helm("upgrade", &[]).await;
    rel.runner.assert_no_errors();
    assert_hook_failed(&out, "post-upgrade hooks failed: ", &rel.ns, &restore, "PodFailurePolicy", 1, false).await;
    assert!(why_failed(&rel.ns, &restore).await.contains("failed with exit code 4 matching FailJob rule"));
    let codes = |rel: &Release| rel.runs("restore").iter().map(|r| r.code).collect::<Vec<_>>();
    assert_eq!(codes(&rel), vec![4]);
    assert!(paused(&rel.fleet, "harvester").await, "nothing patched");
    let job = rel.job("restore").await.expect("a failed Job is kept for its logs");
    assert_eq!(job.status.as_ref().unwrap().failed, Some(1));
    assert!(condition(&job, "Failed").is_some() && condition(&job, "FailureTarget").is_some());
    // Helm deletes the hooks that succeeded (SA, RBAC) even when a later one failed: no
    // permissions linger next to the failed Job.
    assert_eq!(rel.leftovers().await, vec![format!("Job {}/{restore}", rel.ns)]);
    assert_eq!(rel.status().await["info"]["status"], "failed");

    // A failure a retry might fix (exit 1, here an unknown kubeconfig context) is retried
    // backoffLimit (1) times, then the Job fails with BackoffLimitExceeded.
    write_ledger(&rel.fleet, "pause-ledger", &[("ledger.yaml", &full_ledger(&rel.fleet, &["harvester"]))]).await;
    let out = rel.helm("upgrade", &["--set-json", r#"restore.extraArgs=["--context=missing"]"#]).await;
    rel.runner.assert_no_errors();
    assert_hook_failed(&out, "post-upgrade hooks failed: ", &rel.ns, &restore, "BackoffLimitExceeded", 2, false).await;
    assert_eq!(codes(&rel), vec![4, 1, 1]);
    assert_eq!(rel.runs("restore")[2].attempt, 2);
    assert_eq!(rel.job("restore").await.unwrap().status.unwrap().failed, Some(2));

    // Fixed: the next upgrade replaces the failed Job (before-hook-creation) and restores.
    rel.ok("upgrade", &[]).await;
    assert_eq!(codes(&rel), vec![4, 1, 1, 0]);
    assert!(!paused(&rel.fleet, "harvester").await);
    assert_eq!(rel.leftovers().await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_rollback_and_uninstall_hooks_hold_the_release_until_fixed() {
    let rel = Release::new("failing-hooks", |_| String::new()).await;
    rel.ok("install", &[]).await;
    rel.ok("upgrade", &[]).await;
    rel.record_pause(&["harvester"]).await;
    let restore = job_name(&rel.name, "restore");
    let good = full_ledger(&rel.fleet, &["harvester"]);
    let bad = good.replace("pause-ledger/v1", "pause-ledger/v9");
    write_ledger(&rel.fleet, "pause-ledger", &[("ledger.yaml", &bad)]).await;

    // post-rollback fails: the rollback fails, in each major's wording, and the release is left
    // pending-rollback, which blocks upgrades (both majors, measured).
    let out = rel.helm("rollback", &["1"]).await;
    rel.runner.assert_no_errors();
    assert_hook_failed(&out, "", &rel.ns, &restore, "PodFailurePolicy", 1, false).await;
    assert_eq!(rel.status().await["info"]["status"], "pending-rollback");
    let blocked = rel.helm("upgrade", &[]).await;
    assert_ne!(blocked.code, 0, "{blocked:?}");
    assert!(blocked.stderr.contains("another operation (install/upgrade/rollback) is in progress"), "{blocked:?}");
    if helm_major() == Helm::V4 {
        // Helm 4 with Helm 3's waiter prints the reason again.
        let out = rel.helm("rollback", &["1", "--wait=legacy"]).await;
        rel.runner.assert_no_errors();
        assert_hook_failed(&out, "", &rel.ns, &restore, "PodFailurePolicy", 1, true).await;
    }
    // Fixed, a rollback again gets the release out of pending-rollback and restores.
    write_ledger(&rel.fleet, "pause-ledger", &[("ledger.yaml", &good)]).await;
    rel.ok("rollback", &["1"]).await;
    assert_eq!(rel.status().await["info"]["status"], "deployed");
    assert!(!paused(&rel.fleet, "harvester").await);

    // pre-delete fails: the uninstall fails and the release stays "uninstalling".
    rel.record_pause(&["harvester"]).await;
    write_ledger(&rel.fleet, "pause-ledger", &[("ledger.yaml", &bad)]).await;
    let out = rel.helm("uninstall", &[]).await;
    rel.runner.assert_no_errors();
    assert_hook_failed(&out, "", &rel.ns, &restore, "PodFailurePolicy", 1, false).await;
    assert_eq!(rel.status().await["info"]["status"], "uninstalling");
    assert!(paused(&rel.fleet, "harvester").await, "nothing patched");
    // The chart README's way out when the restore cannot be fixed: --no-hooks skips it, and the
    // charts stay paused.
    rel.ok("uninstall", &["--no-hooks"]).await;
    assert_ne!(rel.helm("status", &[]).await.code, 0, "release still there");
    assert!(paused(&rel.fleet, "harvester").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_deadline_stops_a_run_that_outlives_it() {
    // A run made to outlive its Job: the tool's own deadline raised past the Job's with a flag,
    // and the re-pause guard keeping it busy. At activeDeadlineSeconds the pod gets SIGTERM.
    let rel = Release::new("deadline", |_| String::new()).await;
    rel.ok("install", &[]).await;
    rel.record_pause(&["harvester"]).await;
    let started = std::time::Instant::now();
    let out = rel
        .helm(
            "upgrade",
            &[
                "--set",
                "job.activeDeadlineSeconds=20,run.timeoutSeconds=10,verify.settle=60s,verify.propagationWindow=0s",
                "--set-json",
                r#"restore.extraArgs=["--timeout=120s"]"#,
            ],
        )
        .await;
    rel.runner.assert_no_errors();
    let restore = job_name(&rel.name, "restore");
    assert_hook_failed(&out, "post-upgrade hooks failed: ", &rel.ns, &restore, "DeadlineExceeded", 1, false).await;
    assert!(started.elapsed() < Duration::from_secs(60), "{:?}", started.elapsed());
    let runs = rel.runs("restore");
    assert_eq!(runs.len(), 1, "{runs:#?}");
    // SIGTERM cut the re-pause guard short; the entry had settled, so the tool wrote the status
    // (done) and exited 7 (terminated); the Job failed all the same, for its deadline.
    assert!(runs[0].stderr.contains("SIGTERM received"), "{:#?}", runs[0]);
    assert_eq!(runs[0].code, 7, "{:#?}", runs[0]);
    assert!(!paused(&rel.fleet, "harvester").await, "restored before the deadline");
    assert!(ledger_data(&rel.fleet, "pause-ledger").await["status.yaml"].contains("state: done"));
    let job = rel.job("restore").await.unwrap();
    assert_eq!(condition(&job, "Failed").and_then(|c| c.reason.as_deref()), Some("DeadlineExceeded"));
}

/// The chart's SA, restore RBAC and one Job (`templates/job-<component>.yaml`), rendered with
/// `helm template --show-only` and created the way the README's manual-run recipe does
/// (`kubectl create -f`), then run by the runner; `edit` may change the documents first.
/// Returns the finished Job and its runs.
async fn manual_run(
    rel: &str,
    component: &str,
    values: &str,
    edit: impl FnOnce(&mut Vec<Value>),
) -> (Job, Vec<Execution>) {
    let values = values_file(&format!("{rel}-{component}"), values);
    let job = format!("templates/job-{component}.yaml");
    let only = ["templates/serviceaccount.yaml", "templates/rbac-restore.yaml", job.as_str()];
    let mut args = vec!["-f", values.as_str()];
    for t in &only {
        args.extend(["--show-only", t]);
    }
    let mut docs = template("pl", rel, &args).await;
    edit(&mut docs);
    let runner = start_runner(rel);
    create_docs(&docs, false).await;
    let jobs: Api<Job> = Api::namespaced(admin(), rel);
    let name = job_name("pl", component);
    let mut finished = None;
    for _ in 0..900 {
        let j = jobs.get(&name).await.unwrap();
        if condition(&j, "Complete").is_some() || condition(&j, "Failed").is_some() {
            finished = Some(j);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    runner.assert_no_errors();
    (finished.unwrap_or_else(|| panic!("{rel}: Job {name} did not finish")), runner.executions())
}

/// Removes `verb` from the rule for `resource` in the Role in `ns` (and the rule if it empties).
fn remove_verb(docs: &mut [Value], ns: &str, resource: &str, verb: &str) {
    let role = docs
        .iter_mut()
        .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == ns)
        .unwrap_or_else(|| panic!("no Role in {ns}"));
    let rules = role["rules"].as_array_mut().unwrap();
    let rule = rules
        .iter_mut()
        .find(|r| r["resources"] == json!([resource]))
        .unwrap_or_else(|| panic!("no rule for {resource}"));
    let verbs = rule["verbs"].as_array_mut().unwrap();
    let before = verbs.len();
    verbs.retain(|x| x != verb);
    assert_eq!(verbs.len(), before - 1, "{verb} is not in the {resource} rule");
    rules.retain(|r| !r["verbs"].as_array().unwrap().is_empty());
}

async fn allowed(user: &str, groups: &[String], attrs: Value) -> bool {
    let mut spec = json!({"user": user, "groups": groups});
    let key = if attrs.get("path").is_some() { "nonResourceAttributes" } else { "resourceAttributes" };
    spec[key] = attrs;
    let review = SubjectAccessReview {
        spec: serde_json::from_value::<SubjectAccessReviewSpec>(spec).unwrap(),
        ..Default::default()
    };
    let answer = Api::<SubjectAccessReview>::all(admin()).create(&PostParams::default(), &review).await;
    answer.expect("SubjectAccessReview").status.expect("status").allowed
}

/// Each (resource, verb) of the chart's restore Role, removed in turn: the run must fail for
/// that reason. `None`: the Role as rendered, which must be enough.
const RBAC_VARIANTS: [Option<(&str, &str)>; 7] = [
    None,
    Some(("configmaps", "get")),
    Some(("configmaps", "patch")),
    Some(("managedcharts", "get")),
    Some(("managedcharts", "patch")),
    Some(("bundles", "get")),
    Some(("events", "create")),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_rbac_is_sufficient_and_every_rule_is_needed() {
    let runs = RBAC_VARIANTS.iter().map(|removed| async move {
        let tag = removed.map_or("all".to_string(), |(r, v)| format!("{v}-{r}"));
        let rel = namespace(&format!("rbac-{tag}-rel")).await;
        let fleet = namespace(&format!("rbac-{tag}-fleet")).await;
        let rancher = RancherStandIn::spawn(admin(), &fleet);
        create_handled_chart(&fleet, "harvester").await;
        pause_as_upgrade(&fleet, "harvester", UPGRADE).await;
        write_ledger(&fleet, "pause-ledger", &[("ledger.yaml", &full_ledger(&fleet, &["harvester"]))]).await;
        // A short propagation window: without the Bundle rule the check runs to its end.
        let values = release_values(&fleet, ", propagationWindow: 3s");
        let (job, runs) = manual_run(&rel, "restore", &values, |docs| {
            if let Some((resource, verb)) = removed {
                remove_verb(docs, &fleet, resource, verb);
            }
        })
        .await;
        drop(rancher);
        (removed, rel, fleet, job, runs)
    });
    for (removed, rel, fleet, job, runs) in futures::future::join_all(runs).await {
        let what = format!("{removed:?}");
        let run = runs.last().unwrap_or_else(|| panic!("{what}: no run"));
        let report: Value =
            serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{what}: report ({e}): {run:#?}"));
        let errors: Vec<&str> = std::iter::once(&report["message"])
            .chain(report["entries"].as_array().unwrap().iter().map(|e| &e["error"]))
            .filter_map(Value::as_str)
            .collect();
        match removed {
            None => {
                assert_eq!(run.code, 0, "{run:#?}");
                assert!(condition(&job, "Complete").is_some());
                assert_eq!(outcomes(&report)["harvester"], "restored");
                assert_eq!(report["entries"][0]["propagated"], true, "{report:#}");
                assert!(!paused(&fleet, "harvester").await);
                assert!(ledger_data(&fleet, "pause-ledger").await["status.yaml"].contains("state: done"));
                assert!(event_reasons(&fleet, "harvester").await.contains(&"Restored".to_string()));
                assert!(event_reasons(&fleet, "pause-ledger").await.contains(&"RestoreSucceeded".to_string()));
                check_least_privilege(&rel, &fleet).await;
            }
            Some((resource @ ("configmaps" | "managedcharts"), verb)) => {
                // Exit 5 naming the refused verb and resource; the Job fails at once.
                assert_eq!((run.code, runs.len()), (5, 1), "{what}: {run:#?}");
                assert_eq!(report["result"], "permission-denied");
                let named = format!("cannot {verb} resource \"{resource}\"");
                assert!(errors.iter().any(|e| e.contains(&named)), "{what}: not named: {errors:#?}");
                assert_eq!(condition(&job, "Failed").and_then(|c| c.reason.as_deref()), Some("PodFailurePolicy"));
                if (*resource, *verb) == ("configmaps", "patch") {
                    // The restore happened; its status could not be written.
                    assert!(!paused(&fleet, "harvester").await);
                    assert!(!ledger_data(&fleet, "pause-ledger").await.contains_key("status.yaml"));
                } else {
                    assert!(paused(&fleet, "harvester").await, "{what}");
                }
            }
            Some(("bundles", _)) => {
                // The Bundle cannot be read: the unpause cannot be seen to reach Fleet, and the
                // tool says which permission is missing (exit 5, so the Job fails at once).
                assert_eq!(runs.iter().map(|r| r.code).collect::<Vec<_>>(), vec![5], "{what}: {runs:#?}");
                assert_eq!(outcomes(&report)["harvester"], "not-propagated", "{report:#}");
                let err = report["entries"][0]["error"].as_str().unwrap_or_default();
                assert!(err.contains("\"get\"") && err.contains("bundles"), "{what}: {err}");
                assert_eq!(condition(&job, "Failed").and_then(|c| c.reason.as_deref()), Some("PodFailurePolicy"));
            }
            Some(("events", _)) => {
                // Events are best effort: the restore succeeds, the refusal is logged once and
                // no Event exists.
                assert_eq!(run.code, 0, "{what}: {run:#?}");
                assert!(!paused(&fleet, "harvester").await);
                assert!(
                    run.stderr.contains("cannot create Events") && run.stderr.contains("cannot create resource"),
                    "{what}: {}",
                    run.stderr
                );
                assert!(event_reasons(&fleet, "harvester").await.is_empty());
                assert!(event_reasons(&fleet, "pause-ledger").await.is_empty());
            }
            Some(other) => unreachable!("{other:?}"),
        }
    }
}

/// What the chart's restore ServiceAccount may and may not do, asked of the API server's
/// authorizer.
async fn check_least_privilege(rel: &str, fleet: &str) {
    let user = format!("system:serviceaccount:{rel}:pl-pause-ledger");
    let groups = vec![
        "system:serviceaccounts".to_string(),
        format!("system:serviceaccounts:{rel}"),
        "system:authenticated".into(),
    ];
    let ra = |ns: &str, group: &str, resource: &str, verb: &str, name: &str| json!({"namespace": ns, "group": group, "resource": resource, "verb": verb, "name": name});
    let allow = [
        ra(fleet, "", "configmaps", "get", "pause-ledger"),
        ra(fleet, "", "configmaps", "patch", "pause-ledger"),
        ra(fleet, "management.cattle.io", "managedcharts", "get", "any"),
        ra(fleet, "management.cattle.io", "managedcharts", "patch", "any"),
        ra(fleet, "fleet.cattle.io", "bundles", "get", "mcc-any"),
        ra(fleet, "", "events", "create", ""),
        // Discovery: the default system:discovery binding, not the chart, allows it.
        json!({"path": "/apis/management.cattle.io/v3", "verb": "get"}),
        json!({"path": "/api/v1", "verb": "get"}),
    ];
    let deny = [
        ra(fleet, "", "configmaps", "get", "other"),
        ra(fleet, "", "configmaps", "list", ""),
        ra(fleet, "", "configmaps", "update", "pause-ledger"),
        ra(fleet, "", "configmaps", "delete", "pause-ledger"),
        ra(fleet, "", "configmaps", "create", ""),
        ra(fleet, "", "secrets", "get", "any"),
        ra(fleet, "management.cattle.io", "managedcharts", "list", ""),
        ra(fleet, "management.cattle.io", "managedcharts", "watch", ""),
        ra(fleet, "management.cattle.io", "managedcharts", "update", "any"),
        ra(fleet, "management.cattle.io", "managedcharts", "delete", "any"),
        ra(fleet, "fleet.cattle.io", "bundles", "patch", "mcc-any"),
        ra(fleet, "", "events", "patch", "x"),
        ra(fleet, "events.k8s.io", "events", "create", ""),
        ra(rel, "management.cattle.io", "managedcharts", "get", "any"),
        ra(rel, "", "configmaps", "get", "pause-ledger"),
        ra("", "management.cattle.io", "managedcharts", "get", "any"),
    ];
    for a in allow {
        assert!(allowed(&user, &groups, a.clone()).await, "denied: {a}");
    }
    for a in deny {
        assert!(!allowed(&user, &groups, a.clone()).await, "allowed: {a}");
    }
    let binding = Api::<ClusterRoleBinding>::all(admin()).get("system:discovery").await.unwrap();
    assert!(
        binding.subjects.unwrap().iter().any(|s| s.kind == "Group" && s.name == "system:authenticated"),
        "discovery is open to every authenticated user by default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_rescue_job_from_helm_template() {
    let rel = namespace("rescue-rel").await;
    let fleet = namespace("rescue-fleet").await;
    let _rancher = RancherStandIn::spawn(admin(), &fleet);
    for n in ["harvester", "harvester-crd", "rancher-monitoring-crd", "rancher-logging-crd"] {
        create_chart(&fleet, n).await;
    }
    // An aborted upgrade that recorded nothing left two charts paused.
    set_paused_by_hand(&fleet, "harvester", true).await;
    set_paused_by_hand(&fleet, "harvester-crd", true).await;
    let values = format!("{}rescue: {{enabled: true, acknowledgeUnknownOwnership: true}}\n", preset_values(&fleet));
    let (job, runs) = manual_run(&rel, "rescue", &values, |_| {}).await;
    assert!(condition(&job, "Complete").is_some(), "{runs:#?}");
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].args, vec!["rescue"]);
    let report: Value = serde_json::from_str(&runs[0].stdout).unwrap();
    let o = outcomes(&report);
    assert_eq!(o["harvester"], "restored");
    assert_eq!(o["harvester-crd"], "restored");
    assert_eq!(o.len(), 2, "rescue acts on the charts it listed, no others: {o:?}");
    assert!(!paused(&fleet, "harvester").await && !paused(&fleet, "harvester-crd").await);
    assert!(event_reasons(&fleet, "harvester").await.contains(&"RescueRestored".to_string()));
}
