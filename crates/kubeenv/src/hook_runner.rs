//! The hook-Job runner: a **TEST DOUBLE** for the kubelet and the Job controller, which the
//! local control plane does not have (no kube-controller-manager, no nodes, no container
//! runtime). It is for tests of the Helm chart's hook Jobs and nothing else.
//!
//! It watches Jobs in one namespace and, for each new one, does what a node would do with its
//! pod, using a locally built binary in place of the image:
//! - the image's ENTRYPOINT, CMD and USER are read from a Dockerfile ([`ImageConfig`]), and the
//!   container's `command`/`args` are resolved against them with the container runtime's rules
//!   ([`resolve_argv`]); the entrypoint path maps to a copy of the binary;
//! - the process gets exactly the container's `env` plus what kubelet and runtime add
//!   (`KUBERNETES_SERVICE_HOST/PORT`, `HOSTNAME`, `HOME`, `PATH`);
//! - when the token is automounted ([`automount`]: pod field, else ServiceAccount field, else
//!   true), a TokenRequest token of the pod's ServiceAccount, the cluster CA and the namespace
//!   are bind-mounted read-only at `/var/run/secrets/kubernetes.io/serviceaccount` — in a
//!   private mount namespace per process (`unshare -m`), because kube-rs reads that fixed path
//!   and parallel tests need different tokens there;
//! - the root filesystem is remounted read-only when `readOnlyRootFilesystem` is set, and the
//!   process runs with the pod's uid/gid, `no_new_privs` and an empty capability bounding set as
//!   the security context asks (`setpriv`);
//! - `backoffLimit`, `podFailurePolicy` exit-code rules and `activeDeadlineSeconds` decide
//!   retries and the outcome ([`JobPolicy::after`]), and the Job status is written the way the
//!   API server (1.34 and 1.37) validates it: `startTime`/`active` first, then
//!   `SuccessCriteriaMet` before `Complete` (with `completionTime`), or `FailureTarget` before
//!   `Failed`.
//!
//! Differences from the real thing, on purpose: no Pod objects (so `kubectl logs`, Helm's
//! `helm.sh/hook-output-log-policy` and Helm's pod-based waits find nothing; the output is kept
//! in [`Execution`]s instead), no Events, a 1 s retry back-off instead of 10 s doubling, no
//! `onPodConditions` rules (no disruptions happen here), one container per pod, and scheduling
//! fields (`nodeSelector`, `tolerations`, `affinity`, `priorityClassName`, `resources`) ignored,
//! as there are no nodes. Anything else it cannot emulate (`valueFrom`, `envFrom`, `$(VAR)`
//! expansion, several containers, suspended or parallel Jobs) is refused and recorded as a
//! runner error rather than approximated; tests assert there were none
//! ([`HookRunner::assert_no_errors`]).
//!
//! Needs root for `unshare -m`, `mount` and `setpriv`; [`HookRunner::start`] says so instead of
//! failing obscurely.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::{Job, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{Container, PodSpec, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::time::Instant;

/// Where the kubelet mounts the ServiceAccount volume (and where kube-rs reads it).
const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Where the binary appears in the child's mount namespace (on the tmpfs over /var/run).
const IMAGE_BIN: &str = "/var/run/pause-ledger-image/pause-ledger";
/// The double's back-off between pod retries (the Job controller starts at 10 s).
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How often the Job list is polled.
const POLL: Duration = Duration::from_millis(100);
/// Job defaults (batch/v1 defaulting).
const DEFAULT_BACKOFF_LIMIT: i32 = 6;
const DEFAULT_GRACE_SECONDS: i64 = 30;
/// The Job controller's condition messages (pkg/controller/job), which `kubectl` and Helm show.
const DEADLINE_MESSAGE: &str = "Job was active longer than specified deadline";
const BACKOFF_MESSAGE: &str = "Job has reached the specified backoff limit";
const COMPLETE_MESSAGE: &str = "Reached expected number of succeeded pods";

/// Why the double could not start or read its input.
#[derive(Debug, thiserror::Error)]
pub enum HookRunnerError {
    /// A file could not be read or written.
    #[error("hook runner: {what}: {source}")]
    Io {
        /// What we were doing.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The Dockerfile uses a form the double cannot honour.
    #[error("hook runner: {0}")]
    Dockerfile(String),
    /// The double cannot run here (not root, a host tool missing, no port in the URL).
    #[error("hook runner: {0}")]
    Environment(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HookRunnerError {
    let what = what.into();
    move |source| HookRunnerError::Io { what, source }
}

/// What the image runs: ENTRYPOINT, CMD and USER from the Dockerfile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageConfig {
    /// `ENTRYPOINT [...]` (exec form).
    pub entrypoint: Vec<String>,
    /// `CMD [...]` (exec form).
    pub cmd: Vec<String>,
    /// `USER uid[:gid]`, numeric.
    pub user: Option<(u32, u32)>,
}

impl ImageConfig {
    /// Reads a Dockerfile; see [`Self::parse`].
    pub fn from_dockerfile(path: &Path) -> Result<ImageConfig, HookRunnerError> {
        let text = std::fs::read_to_string(path).map_err(io(format!("reading {}", path.display())))?;
        Self::parse(&text).map_err(|e| HookRunnerError::Dockerfile(format!("{}: {e}", path.display())))
    }

    /// The last stage's exec-form ENTRYPOINT/CMD and numeric USER; any other form is refused,
    /// since the double could not honour it.
    pub fn parse(text: &str) -> Result<ImageConfig, String> {
        let mut config = ImageConfig { entrypoint: vec![], cmd: vec![], user: None };
        for line in text.lines().map(str::trim) {
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            let exec_form = |rest: &str| -> Result<Vec<String>, String> {
                serde_json::from_str(rest.trim()).map_err(|e| format!("{word} is not exec form ({e}): {line}"))
            };
            match word.to_ascii_uppercase().as_str() {
                "FROM" => config = ImageConfig { entrypoint: vec![], cmd: vec![], user: None },
                "ENTRYPOINT" => config.entrypoint = exec_form(rest)?,
                "CMD" => config.cmd = exec_form(rest)?,
                "USER" => {
                    let (u, g) = rest.trim().split_once(':').unwrap_or((rest.trim(), ""));
                    let uid = u.parse().map_err(|_| format!("USER {u} is not numeric"))?;
                    let gid =
                        if g.is_empty() { 0 } else { g.parse().map_err(|_| format!("USER gid {g} is not numeric"))? };
                    config.user = Some((uid, gid));
                }
                _ => {}
            }
        }
        if config.entrypoint.is_empty() {
            return Err("no ENTRYPOINT".into());
        }
        Ok(config)
    }
}

/// The process argv for a container, as containerd's CRI plugin builds it (`WithProcessArgs`):
/// a non-empty `command` replaces ENTRYPOINT and drops CMD; otherwise ENTRYPOINT runs with
/// `args`, or with CMD when `args` is empty. The executable must be the image's entrypoint,
/// the only file the double can map.
pub fn resolve_argv(image: &ImageConfig, command: &[String], args: &[String]) -> Result<Vec<String>, String> {
    let mut argv = if command.is_empty() { image.entrypoint.clone() } else { command.to_vec() };
    if !args.is_empty() {
        argv.extend(args.iter().cloned());
    } else if command.is_empty() {
        argv.extend(image.cmd.iter().cloned());
    }
    match (argv.first(), image.entrypoint.first()) {
        (Some(exe), Some(entry)) if exe == entry => Ok(argv),
        (exe, entry) => Err(format!("executable {exe:?} is not the image's entrypoint {entry:?}")),
    }
}

/// Whether the kubelet mounts the ServiceAccount token: the pod's field, else the
/// ServiceAccount's, else true.
pub fn automount(pod: Option<bool>, service_account: Option<bool>) -> bool {
    pod.or(service_account).unwrap_or(true)
}

/// The first podFailurePolicy rule matching a container exit code: (index, action).
/// `onPodConditions` rules never match here: the double has no disruptions.
pub fn failure_action<'a>(rules: &'a [PodFailurePolicyRule], container: &str, code: i32) -> Option<(usize, &'a str)> {
    rules.iter().enumerate().find_map(|(i, r)| {
        let req = r.on_exit_codes.as_ref()?;
        if req.container_name.as_deref().is_some_and(|n| n != container) {
            return None;
        }
        let listed = req.values.contains(&code);
        let hit = match req.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        hit.then_some((i, r.action.as_str()))
    })
}

/// How one pod ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodEnd {
    /// The container exited with this code (128 + signal when killed).
    Exited(i32),
    /// `activeDeadlineSeconds` passed while it ran (or before it could start).
    DeadlineExceeded,
}

/// What the Job controller does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Next {
    /// The Job succeeded.
    Complete,
    /// Start another pod.
    Retry,
    /// The Job failed: the `Failed` condition's reason and message.
    Fail {
        /// `PodFailurePolicy`, `BackoffLimitExceeded` or `DeadlineExceeded`.
        reason: &'static str,
        /// The Job controller's message for it.
        message: String,
    },
}

/// The parts of a Job spec that decide its outcome, and the failures counted so far.
#[derive(Clone, Debug)]
pub struct JobPolicy {
    /// `spec.backoffLimit` (default 6).
    pub backoff_limit: i32,
    /// `spec.podFailurePolicy.rules`.
    pub rules: Vec<PodFailurePolicyRule>,
    /// The container's name (exit-code rules may name it).
    pub container: String,
    /// `status.failed`: pods counted as failed so far.
    pub failed: i32,
}

impl JobPolicy {
    /// The policy of `job`, nothing failed yet.
    pub fn of(job: &Job) -> JobPolicy {
        let spec = job.spec.as_ref();
        JobPolicy {
            backoff_limit: spec.and_then(|s| s.backoff_limit).unwrap_or(DEFAULT_BACKOFF_LIMIT),
            rules: spec.and_then(|s| s.pod_failure_policy.as_ref()).map(|p| p.rules.clone()).unwrap_or_default(),
            container: spec
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers.first())
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            failed: 0,
        }
    }

    /// Counts pod `pod` (`<namespace>/<name>`) that ended with `end` and decides, as the Job
    /// controller does: a FailJob rule fails the Job at once (`PodFailurePolicy`), an Ignore
    /// rule does not count the pod, any other failure counts against `backoffLimit`
    /// (`BackoffLimitExceeded` once more than that many failed), and a pod cut by the deadline
    /// fails the Job (`DeadlineExceeded`).
    pub fn after(&mut self, pod: &str, end: PodEnd) -> Next {
        let code = match end {
            PodEnd::Exited(0) => return Next::Complete,
            PodEnd::Exited(code) => code,
            PodEnd::DeadlineExceeded => {
                self.failed += 1;
                return Next::Fail { reason: "DeadlineExceeded", message: DEADLINE_MESSAGE.into() };
            }
        };
        match failure_action(&self.rules, &self.container, code) {
            Some((index, "FailJob")) => {
                self.failed += 1;
                return Next::Fail {
                    reason: "PodFailurePolicy",
                    message: format!(
                        "Container {} for pod {pod} failed with exit code {code} matching FailJob rule at index {index}",
                        self.container
                    ),
                };
            }
            Some((_, "Ignore")) => {}
            _ => self.failed += 1,
        }
        if self.failed > self.backoff_limit {
            Next::Fail { reason: "BackoffLimitExceeded", message: BACKOFF_MESSAGE.into() }
        } else {
            Next::Retry
        }
    }

    /// The deadline passed between two pods.
    pub fn deadline_passed(&self) -> Next {
        Next::Fail { reason: "DeadlineExceeded", message: DEADLINE_MESSAGE.into() }
    }
}

/// The resolved pod: what to run and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodRun {
    /// The container's name.
    pub container: String,
    /// `serviceAccountName` (default `default`).
    pub service_account: String,
    /// Whether the token is mounted ([`automount`]).
    pub automount: bool,
    /// The process argv ([`resolve_argv`]).
    pub argv: Vec<String>,
    /// The container's `env`, in order.
    pub env: Vec<(String, String)>,
    /// uid: container, else pod security context, else the image's USER.
    pub uid: Option<u32>,
    /// gid, likewise.
    pub gid: Option<u32>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privs: bool,
    /// `capabilities.drop` contains `ALL`.
    pub drop_all_caps: bool,
    /// `readOnlyRootFilesystem: true`.
    pub read_only_root: bool,
    /// `terminationGracePeriodSeconds` (default 30 s).
    pub grace: Duration,
}

impl PodRun {
    /// Reads a pod spec the way kubelet and runtime would interpret it; `sa_automount` is the
    /// ServiceAccount's `automountServiceAccountToken`. Refuses what the double cannot emulate.
    pub fn resolve(image: &ImageConfig, pod: &PodSpec, sa_automount: Option<bool>) -> Result<PodRun, String> {
        if pod.restart_policy.as_deref() != Some("Never") {
            return Err("only restartPolicy: Never is emulated".into());
        }
        if pod.init_containers.as_ref().is_some_and(|c| !c.is_empty()) || pod.containers.len() != 1 {
            return Err("exactly one container and no init containers are emulated".into());
        }
        let c: &Container = &pod.containers[0];
        if c.env_from.is_some() {
            return Err("envFrom is not emulated".into());
        }
        let argv =
            resolve_argv(image, c.command.as_deref().unwrap_or_default(), c.args.as_deref().unwrap_or_default())?;
        let mut env = Vec::new();
        for e in c.env.iter().flatten() {
            if e.value_from.is_some() {
                return Err(format!("env {} uses valueFrom, which is not emulated", e.name));
            }
            env.push((e.name.clone(), e.value.clone().unwrap_or_default()));
        }
        if argv.iter().chain(env.iter().map(|(_, v)| v)).any(|s| s.contains("$(")) {
            return Err("$(VAR) expansion is not emulated".into());
        }
        let pod_sc = pod.security_context.clone().unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        let uid = sc.run_as_user.or(pod_sc.run_as_user).map(|u| u as u32).or(image.user.map(|u| u.0));
        let gid = sc.run_as_group.or(pod_sc.run_as_group).map(|g| g as u32).or(image.user.map(|u| u.1));
        let non_root = sc.run_as_non_root.or(pod_sc.run_as_non_root).unwrap_or(false);
        if non_root && uid.unwrap_or(0) == 0 {
            // The kubelet refuses to start such a container (CreateContainerConfigError).
            return Err("runAsNonRoot with uid 0: the kubelet would not start it".into());
        }
        let drop_all_caps =
            sc.capabilities.as_ref().and_then(|c| c.drop.as_ref()).is_some_and(|d| d.iter().any(|d| d == "ALL"));
        Ok(PodRun {
            container: c.name.clone(),
            service_account: pod.service_account_name.clone().unwrap_or_else(|| "default".into()),
            automount: automount(pod.automount_service_account_token, sa_automount),
            argv,
            env,
            uid,
            gid,
            no_new_privs: sc.allow_privilege_escalation == Some(false),
            drop_all_caps,
            read_only_root: sc.read_only_root_filesystem == Some(true),
            grace: Duration::from_secs(
                pod.termination_grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS).max(0) as u64
            ),
        })
    }
}

/// One pod run.
#[derive(Clone, Debug)]
pub struct Execution {
    /// The Job's name.
    pub job: String,
    /// 1 for the first pod, 2 for the first retry, ...
    pub attempt: u32,
    /// The pod's ServiceAccount.
    pub service_account: String,
    /// argv after the mapped entrypoint.
    pub args: Vec<String>,
    /// The process environment.
    pub env: BTreeMap<String, String>,
    /// Exit code (128 + signal when killed).
    pub code: i32,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

#[derive(Default)]
struct State {
    executions: Vec<Execution>,
    errors: Vec<String>,
}

/// TEST DOUBLE of the kubelet and the Job controller: runs the Jobs of one namespace until
/// dropped (see the module docs for what it does and does not emulate).
pub struct HookRunner {
    namespace: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HookRunner {
    fn drop(&mut self) {
        // Aborting the watch task drops its JoinSet, which aborts the per-Job tasks; their
        // child processes are kill_on_drop.
        self.task.abort();
    }
}

/// Everything a per-Job task needs.
struct Inner {
    client: kube::Client,
    namespace: String,
    image: ImageConfig,
    binary: PathBuf,
    work: PathBuf,
    port: u16,
    ca_pem: String,
    tools: Tools,
    state: Arc<Mutex<State>>,
}

/// Absolute paths of the host tools (the child's env is cleared, so no PATH lookup there).
struct Tools {
    unshare: PathBuf,
    sh: PathBuf,
    setpriv: PathBuf,
    env: PathBuf,
    kill: PathBuf,
}

impl HookRunner {
    /// Starts watching Jobs in `namespace` (within a tokio runtime). `binary` stands in for the
    /// image's entrypoint; `server_url` and `ca_pem` are what a pod reaches the API server with.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        image: ImageConfig,
        binary: &Path,
        server_url: &str,
        ca_pem: &str,
    ) -> Result<HookRunner, HookRunnerError> {
        let status = std::fs::read_to_string("/proc/self/status").map_err(io("reading /proc/self/status"))?;
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next());
        if uid != Some("0") {
            return Err(HookRunnerError::Environment(
                "needs root (unshare -m, mount, setpriv: it plays the kubelet)".into(),
            ));
        }
        let port = server_url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .ok_or_else(|| HookRunnerError::Environment(format!("no port in {server_url}")))?;
        let tools = Tools {
            unshare: tool("unshare")?,
            sh: tool("sh")?,
            setpriv: tool("setpriv")?,
            env: tool("env")?,
            kill: tool("kill")?,
        };
        let work = work_dir()?.join(namespace);
        std::fs::create_dir_all(&work).map_err(io(format!("creating {}", work.display())))?;
        let state = Arc::new(Mutex::new(State::default()));
        let inner = Arc::new(Inner {
            client,
            namespace: namespace.to_string(),
            image,
            binary: image_copy(binary)?,
            work,
            port,
            ca_pem: ca_pem.to_string(),
            tools,
            state: state.clone(),
        });
        let task = tokio::spawn(watch(inner));
        Ok(HookRunner { namespace: namespace.to_string(), state, task })
    }

    /// Every pod run so far, in start order.
    pub fn executions(&self) -> Vec<Execution> {
        lock(&self.state).executions.clone()
    }

    /// The runs of Job `name`.
    pub fn executions_of(&self, name: &str) -> Vec<Execution> {
        self.executions().into_iter().filter(|e| e.job == name).collect()
    }

    /// Jobs the runner met but could not emulate (or could not finish), as messages.
    pub fn errors(&self) -> Vec<String> {
        lock(&self.state).errors.clone()
    }

    /// For tests: panics if the runner met a Job it could not emulate.
    pub fn assert_no_errors(&self) {
        let errors = self.errors();
        assert!(errors.is_empty(), "hook runner errors in {}: {errors:#?}", self.namespace);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's scratch dir: the binary copy and the token dirs, which reach the pod through
/// bind mounts (so the permissions of the path above them do not matter). Dirs of dead
/// processes are removed.
fn work_dir() -> Result<&'static Path, HookRunnerError> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(dir) = DIR.get() {
        return Ok(dir);
    }
    let tmp = std::env::temp_dir();
    let prefix = "pause-ledger-hook-runner-";
    if let Ok(entries) = std::fs::read_dir(&tmp) {
        for e in entries.flatten() {
            let name = e.file_name();
            if let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(prefix))
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let dir = tmp.join(format!("{prefix}{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io(format!("chmod {}", dir.display())))?;
    Ok(DIR.get_or_init(|| dir))
}

/// A root-owned, read-only copy of the binary, like the image's `/pause-ledger` (0555), so a
/// concurrent rebuild cannot swap it mid-test. One copy per process and source path.
fn image_copy(binary: &Path) -> Result<PathBuf, HookRunnerError> {
    static COPIES: Mutex<BTreeMap<PathBuf, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut copies = lock(&COPIES);
    if let Some(path) = copies.get(binary) {
        return Ok(path.clone());
    }
    let dir = work_dir()?.join(format!("image-{}", copies.len()));
    std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io(format!("chmod {}", dir.display())))?;
    let dest = dir.join("entrypoint");
    std::fs::copy(binary, &dest).map_err(io(format!("copying {}", binary.display())))?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o555))
        .map_err(io(format!("chmod {}", dest.display())))?;
    copies.insert(binary.to_path_buf(), dest.clone());
    Ok(dest)
}

async fn watch(inner: Arc<Inner>) {
    let api: Api<Job> = Api::namespaced(inner.client.clone(), &inner.namespace);
    let mut seen: HashSet<String> = HashSet::new();
    let mut running = tokio::task::JoinSet::new();
    loop {
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                for job in list.items {
                    let uid = job.metadata.uid.clone().unwrap_or_default();
                    if job.metadata.deletion_timestamp.is_some() || is_finished(&job) || !seen.insert(uid) {
                        continue;
                    }
                    let inner = inner.clone();
                    running.spawn(async move {
                        let name = job.metadata.name.clone().unwrap_or_default();
                        if let Err(e) = inner.run_job(job).await {
                            eprintln!("hook-runner: job {}/{name}: {e}", inner.namespace);
                            lock(&inner.state).errors.push(format!("job {name}: {e}"));
                        }
                    });
                }
            }
            Err(e) => eprintln!("hook-runner: listing jobs in {}: {e}", inner.namespace),
        }
        // Reap finished tasks so the set does not grow.
        while running.try_join_next().is_some() {}
        tokio::time::sleep(POLL).await;
    }
}

fn condition_true(job: &Job, kind: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == kind && c.status == "True"))
}

fn is_finished(job: &Job) -> bool {
    condition_true(job, "Complete") || condition_true(job, "Failed")
}

/// metav1.Time: RFC 3339, whole seconds.
fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn condition(kind: &str, reason: &str, message: &str, at: &str) -> Value {
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": at, "lastTransitionTime": at})
}

/// The terminal status writes, in order: the interim condition (`SuccessCriteriaMet` or
/// `FailureTarget`) alone, then with the final one (`Complete` with `completionTime`, or
/// `Failed`). The API server rejects a final condition without its interim one. `failure` is
/// the `Failed` reason and message; `None` means the Job completed.
fn terminal_statuses(failure: Option<(&str, &str)>, failed: i32, at: &str) -> [Value; 2] {
    let mut s = json!({"active": 0, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}, "failed": failed});
    let (interim, last) = match failure {
        Some((reason, message)) => {
            (condition("FailureTarget", reason, message, at), condition("Failed", reason, message, at))
        }
        None => {
            s["succeeded"] = json!(1);
            s["completionTime"] = json!(at);
            (
                condition("SuccessCriteriaMet", "CompletionsReached", COMPLETE_MESSAGE, at),
                condition("Complete", "CompletionsReached", COMPLETE_MESSAGE, at),
            )
        }
    };
    let mut first = s.clone();
    if let Some(first) = first.as_object_mut() {
        first.remove("completionTime");
    }
    first["conditions"] = json!([interim]);
    s["conditions"] = json!([interim, last]);
    [first, s]
}

impl Inner {
    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    async fn run_job(&self, job: Job) -> Result<(), String> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let spec = job.spec.clone().ok_or("no spec")?;
        if spec.suspend == Some(true) {
            return Err("suspended Jobs are not emulated".into());
        }
        if spec.completions.unwrap_or(1) != 1 || spec.parallelism.unwrap_or(1) != 1 {
            return Err("only completions=1, parallelism=1 is emulated".into());
        }
        let started = Instant::now();
        let deadline = spec.active_deadline_seconds.map(|s| started + Duration::from_secs(s.max(0) as u64));
        let mut policy = JobPolicy::of(&job);
        let pod = self.resolve_pod(&job).await?;
        self.patch_status(&name, &uid, json!({"startTime": now(), "active": 1, "ready": 1})).await?;

        let mut attempt = 0u32;
        let outcome = loop {
            attempt += 1;
            let end = self.run_pod(&name, &uid, attempt, &pod, deadline).await?;
            let pod_name = format!("{}/{name}-attempt{attempt}", self.namespace);
            match policy.after(&pod_name, end) {
                Next::Retry => {}
                done => break done,
            }
            self.patch_status(&name, &uid, json!({"failed": policy.failed, "active": 1, "ready": 1})).await?;
            tokio::time::sleep(RETRY_DELAY).await;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break policy.deadline_passed();
            }
        };
        let failure = match &outcome {
            Next::Fail { reason, message } => Some((*reason, message.as_str())),
            Next::Complete | Next::Retry => None,
        };
        for status in terminal_statuses(failure, policy.failed, &now()) {
            self.patch_status(&name, &uid, status).await?;
        }
        Ok(())
    }

    /// Merge-patches the status; the uid is a precondition, so a Job that Helm deleted and
    /// recreated under the same name is never written by the old run.
    async fn patch_status(&self, name: &str, uid: &str, status: Value) -> Result<(), String> {
        self.jobs()
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"uid": uid}, "status": status})),
            )
            .await
            .map(|_| ())
            .map_err(|e| format!("writing the status of {name}: {e}"))
    }

    /// Reads the ServiceAccount's automount default, then resolves the pod template.
    async fn resolve_pod(&self, job: &Job) -> Result<PodRun, String> {
        let pod = job.spec.as_ref().and_then(|s| s.template.spec.as_ref()).ok_or("no pod spec")?;
        let sa_name = pod.service_account_name.as_deref().unwrap_or("default");
        let sa_automount =
            match Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace).get_opt(sa_name).await {
                Ok(Some(sa)) => sa.automount_service_account_token,
                Ok(None) => None,
                Err(e) => return Err(format!("reading ServiceAccount {sa_name}: {e}")),
            };
        PodRun::resolve(&self.image, pod, sa_automount)
    }

    /// A TokenRequest token for the pod's ServiceAccount. A missing ServiceAccount is retried
    /// until the deadline, as the Job controller keeps retrying pod creation.
    async fn token(&self, sa: &str, deadline: Option<Instant>) -> Result<Option<String>, String> {
        let api: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec { expiration_seconds: Some(3600), ..Default::default() },
            ..Default::default()
        };
        let give_up = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(30));
        loop {
            match api.create_token_request(sa, &PostParams::default(), &request).await {
                Ok(t) => return Ok(t.status.map(|s| s.token)),
                Err(kube::Error::Api(s)) if s.code == 404 && Instant::now() < give_up => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
                Err(e) => return Err(format!("TokenRequest for {sa}: {e}")),
            }
        }
    }

    async fn run_pod(
        &self,
        job: &str,
        job_uid: &str,
        attempt: u32,
        pod: &PodRun,
        deadline: Option<Instant>,
    ) -> Result<PodEnd, String> {
        let dir = self.work.join(format!("{job_uid}-{attempt}"));
        let sa_dir = dir.join("serviceaccount");
        std::fs::create_dir_all(&sa_dir).map_err(|e| e.to_string())?;
        for d in [&dir, &sa_dir] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
        }
        if pod.automount {
            let Some(token) = self.token(&pod.service_account, deadline).await? else {
                return Ok(PodEnd::DeadlineExceeded);
            };
            for (file, content) in
                [("token", token.as_str()), ("ca.crt", self.ca_pem.as_str()), ("namespace", self.namespace.as_str())]
            {
                let path = sa_dir.join(file);
                std::fs::write(&path, content).map_err(|e| e.to_string())?;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).map_err(|e| e.to_string())?;
            }
        }

        let suffix: String = (0..5).map(|_| fastrand::alphanumeric().to_ascii_lowercase()).collect();
        let mut env: Vec<(String, String)> = vec![
            ("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
            ("HOSTNAME".into(), format!("{job}-{suffix}")),
            ("HOME".into(), "/".into()),
            ("KUBERNETES_SERVICE_HOST".into(), "127.0.0.1".into()),
            ("KUBERNETES_SERVICE_PORT".into(), self.port.to_string()),
        ];
        // The container's own env comes last and wins, as in a pod.
        env.extend(pod.env.iter().cloned());

        // unshare -m: a private mount namespace; sh mounts a tmpfs over /var/run (so nothing
        // on the host changes), binds the token dir read-only, optionally makes / read-only,
        // then execs setpriv -> env -i -> the binary (one PID throughout, so signals reach it).
        // The binary is bind-mounted to IMAGE_BIN as well: its copy may sit below a directory
        // the pod's uid cannot traverse (tools/test runs with a private 0700 TMPDIR).
        const SCRIPT: &str = r#"set -e
sa="$1"; automount="$2"; ro="$3"; bin="$4"; shift 4
mount -t tmpfs -o mode=0755,size=1m tmpfs /var/run
mkdir -p "$SA_DIR" "$(dirname "$IMAGE_BIN")"
: > "$IMAGE_BIN"
mount --bind "$bin" "$IMAGE_BIN"
if [ "$automount" = true ]; then
  mount --bind "$sa" "$SA_DIR"
  mount -o remount,bind,ro "$SA_DIR"
fi
if [ "$ro" = true ]; then mount -o remount,bind,ro /; fi
exec "$@""#;
        let script = SCRIPT.replace("$SA_DIR", SA_DIR).replace("$IMAGE_BIN", IMAGE_BIN);
        let tools = &self.tools;
        let mut cmd = tokio::process::Command::new(&tools.unshare);
        cmd.env_clear()
            .args(["--mount", "--propagation", "private", "--"])
            .arg(&tools.sh)
            .args(["-c", &script, "sh"])
            .arg(&sa_dir)
            .arg(pod.automount.to_string())
            .arg(pod.read_only_root.to_string())
            .arg(&self.binary)
            .arg(&tools.setpriv);
        if let Some(uid) = pod.uid {
            cmd.arg(format!("--reuid={uid}"));
        }
        if let Some(gid) = pod.gid {
            cmd.arg(format!("--regid={gid}")).arg("--clear-groups");
        }
        if pod.no_new_privs {
            cmd.arg("--no-new-privs");
        }
        if pod.drop_all_caps {
            cmd.args(["--bounding-set=-all", "--inh-caps=-all"]);
        }
        cmd.arg(&tools.env).arg("-i");
        for (k, v) in &env {
            cmd.arg(format!("{k}={v}"));
        }
        cmd.arg(IMAGE_BIN)
            .args(&pod.argv[1..])
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| format!("spawning unshare: {e}"))?;
        let pid = child.id().unwrap_or_default();
        let output = child.wait_with_output();
        tokio::pin!(output);
        let (out, end) = match deadline {
            Some(d) => match tokio::time::timeout_at(d, &mut output).await {
                Ok(out) => (out, None),
                Err(_) => {
                    // What the kubelet does at activeDeadlineSeconds: SIGTERM, then SIGKILL
                    // after the grace period (dropping the future kills the child).
                    let _ = std::process::Command::new(&tools.kill).args(["-TERM", &pid.to_string()]).status();
                    match tokio::time::timeout(pod.grace, &mut output).await {
                        Ok(out) => (out, Some(PodEnd::DeadlineExceeded)),
                        Err(_) => return Ok(PodEnd::DeadlineExceeded),
                    }
                }
            },
            None => (output.await, None),
        };
        let out = out.map_err(|e| format!("waiting for the pod process: {e}"))?;
        let code = out.status.code().unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
        eprintln!("hook-runner: {}/{job} attempt {attempt} as {} exited {code}", self.namespace, pod.service_account);
        lock(&self.state).executions.push(Execution {
            job: job.to_string(),
            attempt,
            service_account: pod.service_account.clone(),
            args: pod.argv[1..].to_vec(),
            env: env.into_iter().collect(),
            code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
        let _ = std::fs::remove_dir_all(&dir);
        Ok(end.unwrap_or(PodEnd::Exited(code)))
    }
}

/// Absolute path of a host tool.
fn tool(name: &str) -> Result<PathBuf, HookRunnerError> {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| HookRunnerError::Environment(format!("needs {name} (util-linux/coreutils/procps)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn image() -> ImageConfig {
        ImageConfig { entrypoint: strings(&["/pause-ledger"]), cmd: strings(&["--help"]), user: Some((65532, 65532)) }
    }

    #[test]
    fn dockerfile_last_stage_exec_form_and_numeric_user() {
        let text = "FROM golang AS build\nENTRYPOINT [\"/bin/sh\"]\nUSER 1000\n\
                    FROM scratch\nCOPY x /pause-ledger\nUSER 65532:65532\nENTRYPOINT [\"/pause-ledger\"]\nCMD [\"--help\"]\n";
        assert_eq!(ImageConfig::parse(text).unwrap(), image());
        assert_eq!(ImageConfig::parse("FROM scratch\nUSER 7\nENTRYPOINT [\"/x\"]").unwrap().user, Some((7, 0)));
        assert!(ImageConfig::parse("FROM scratch\nENTRYPOINT /x").unwrap_err().contains("not exec form"));
        assert!(ImageConfig::parse("FROM scratch\nUSER nonroot\nENTRYPOINT [\"/x\"]").unwrap_err().contains("numeric"));
        assert!(ImageConfig::parse("FROM scratch\nCMD [\"/x\"]").unwrap_err().contains("no ENTRYPOINT"));
    }

    #[test]
    fn the_repository_dockerfile_is_understood() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Dockerfile");
        let config = ImageConfig::from_dockerfile(&path).unwrap();
        assert_eq!(config.entrypoint, strings(&["/pause-ledger"]));
        assert_eq!(config.user, Some((65532, 65532)));
    }

    #[test]
    fn command_and_args_resolve_like_the_container_runtime() {
        let img = image();
        // Neither: ENTRYPOINT + CMD.
        assert_eq!(resolve_argv(&img, &[], &[]).unwrap(), strings(&["/pause-ledger", "--help"]));
        // args only: ENTRYPOINT + args, CMD dropped.
        assert_eq!(resolve_argv(&img, &[], &strings(&["restore"])).unwrap(), strings(&["/pause-ledger", "restore"]));
        // command only: command, CMD dropped.
        assert_eq!(resolve_argv(&img, &strings(&["/pause-ledger"]), &[]).unwrap(), strings(&["/pause-ledger"]));
        // both.
        assert_eq!(
            resolve_argv(&img, &strings(&["/pause-ledger", "-v"]), &strings(&["status"])).unwrap(),
            strings(&["/pause-ledger", "-v", "status"])
        );
        // Another executable cannot be mapped.
        let err = resolve_argv(&img, &strings(&["/bin/sh", "-c", "x"]), &[]).unwrap_err();
        assert!(err.contains("/bin/sh"), "{err}");
    }

    #[test]
    fn automount_pod_field_wins_then_service_account_then_true() {
        assert!(automount(None, None));
        assert!(!automount(None, Some(false)));
        assert!(automount(Some(true), Some(false)));
        assert!(!automount(Some(false), Some(true)));
    }

    fn rule(action: &str, operator: &str, values: &[i32], container: Option<&str>) -> PodFailurePolicyRule {
        serde_json::from_value(json!({
            "action": action,
            "onExitCodes": {"operator": operator, "values": values, "containerName": container},
        }))
        .unwrap()
    }

    fn policy(backoff_limit: i32, rules: Vec<PodFailurePolicyRule>) -> JobPolicy {
        JobPolicy { backoff_limit, rules, container: "restore".into(), failed: 0 }
    }

    #[test]
    fn failure_rules_match_in_order_by_code_and_container() {
        let rules = vec![
            rule("Ignore", "In", &[3], Some("other")),
            rule("FailJob", "In", &[2, 4, 5], Some("restore")),
            rule("Count", "NotIn", &[0, 1], None),
        ];
        assert_eq!(failure_action(&rules, "restore", 4), Some((1, "FailJob")));
        assert_eq!(failure_action(&rules, "restore", 3), Some((2, "Count")), "rule 0 names another container");
        assert_eq!(failure_action(&rules, "other", 3), Some((0, "Ignore")));
        assert_eq!(failure_action(&rules, "restore", 1), None);
        let conditions: PodFailurePolicyRule =
            serde_json::from_value(json!({"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}))
                .unwrap();
        assert_eq!(failure_action(&[conditions], "restore", 1), None, "no disruptions here");
    }

    #[test]
    fn success_completes_the_job() {
        let mut p = policy(1, vec![]);
        assert_eq!(p.after("ns/p", PodEnd::Exited(0)), Next::Complete);
        assert_eq!(p.failed, 0);
    }

    #[test]
    fn a_fail_fast_exit_code_fails_the_job_at_once() {
        let mut p = policy(6, vec![rule("FailJob", "In", &[2, 4], Some("restore"))]);
        let next = p.after("ns/job-attempt1", PodEnd::Exited(4));
        assert_eq!(
            next,
            Next::Fail {
                reason: "PodFailurePolicy",
                message:
                    "Container restore for pod ns/job-attempt1 failed with exit code 4 matching FailJob rule at index 0"
                        .into()
            }
        );
        assert_eq!(p.failed, 1);
    }

    #[test]
    fn other_failures_are_retried_up_to_the_backoff_limit() {
        let mut p = policy(1, vec![rule("FailJob", "In", &[4], None)]);
        assert_eq!(p.after("ns/a1", PodEnd::Exited(1)), Next::Retry);
        assert_eq!(p.failed, 1);
        assert_eq!(
            p.after("ns/a2", PodEnd::Exited(3)),
            Next::Fail { reason: "BackoffLimitExceeded", message: BACKOFF_MESSAGE.into() }
        );
        assert_eq!(p.failed, 2);
        let mut none = policy(0, vec![]);
        assert!(matches!(none.after("ns/a1", PodEnd::Exited(1)), Next::Fail { reason: "BackoffLimitExceeded", .. }));
    }

    #[test]
    fn ignored_failures_do_not_count() {
        let mut p = policy(0, vec![rule("Ignore", "In", &[7], None)]);
        assert_eq!(p.after("ns/a1", PodEnd::Exited(7)), Next::Retry);
        assert_eq!(p.failed, 0);
    }

    #[test]
    fn the_deadline_fails_the_job() {
        let mut p = policy(6, vec![]);
        assert_eq!(
            p.after("ns/a1", PodEnd::DeadlineExceeded),
            Next::Fail { reason: "DeadlineExceeded", message: DEADLINE_MESSAGE.into() }
        );
        assert_eq!(p.failed, 1);
        assert!(matches!(p.deadline_passed(), Next::Fail { reason: "DeadlineExceeded", .. }));
    }

    #[test]
    fn policy_is_read_from_the_job_with_defaults() {
        let job: Job = serde_json::from_value(json!({
            "spec": {"template": {"spec": {"containers": [{"name": "restore"}]}}},
        }))
        .unwrap();
        let p = JobPolicy::of(&job);
        assert_eq!((p.backoff_limit, p.container.as_str(), p.rules.len(), p.failed), (6, "restore", 0, 0));
    }

    #[test]
    fn terminal_statuses_put_the_interim_condition_first() {
        let done = terminal_statuses(None, 0, "2026-01-01T00:00:00Z");
        assert_eq!(done[0]["conditions"].as_array().unwrap().len(), 1);
        assert_eq!(done[0]["conditions"][0]["type"], "SuccessCriteriaMet");
        assert!(done[0].get("completionTime").is_none(), "no completionTime without Complete");
        assert_eq!(done[1]["conditions"][1]["type"], "Complete");
        assert_eq!(done[1]["completionTime"], "2026-01-01T00:00:00Z");
        assert_eq!((done[1]["succeeded"].as_i64(), done[1]["active"].as_i64()), (Some(1), Some(0)));

        let failed = terminal_statuses(Some(("BackoffLimitExceeded", BACKOFF_MESSAGE)), 2, "2026-01-01T00:00:00Z");
        assert_eq!(failed[0]["conditions"][0]["type"], "FailureTarget");
        assert_eq!(failed[1]["conditions"][1]["type"], "Failed");
        assert_eq!(failed[1]["conditions"][1]["reason"], "BackoffLimitExceeded");
        assert_eq!(failed[1]["failed"], 2);
        assert!(failed[1].get("completionTime").is_none() && failed[1].get("succeeded").is_none());
    }

    fn pod(value: Value) -> PodSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn pod_resolution_follows_kubelet_rules() {
        let spec = pod(json!({
            "restartPolicy": "Never",
            "serviceAccountName": "pl",
            "securityContext": {"runAsUser": 1000, "runAsNonRoot": true},
            "terminationGracePeriodSeconds": 20,
            "containers": [{
                "name": "restore", "args": ["restore"],
                "env": [{"name": "A", "value": "1"}, {"name": "B"}],
                "securityContext": {"runAsGroup": 2000, "allowPrivilegeEscalation": false,
                                    "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}},
            }],
        }));
        let run = PodRun::resolve(&image(), &spec, Some(false)).unwrap();
        assert_eq!(run.argv, strings(&["/pause-ledger", "restore"]));
        assert_eq!(run.env, vec![("A".into(), "1".into()), ("B".into(), String::new())]);
        assert_eq!((run.uid, run.gid), (Some(1000), Some(2000)));
        assert!(run.no_new_privs && run.drop_all_caps && run.read_only_root);
        assert!(!run.automount, "the ServiceAccount's false applies when the pod says nothing");
        assert_eq!((run.service_account.as_str(), run.container.as_str()), ("pl", "restore"));
        assert_eq!(run.grace, Duration::from_secs(20));

        // The image's USER when nothing overrides it; the default ServiceAccount.
        let plain = pod(json!({"restartPolicy": "Never", "containers": [{"name": "c"}]}));
        let run = PodRun::resolve(&image(), &plain, None).unwrap();
        assert_eq!((run.uid, run.gid, run.service_account.as_str()), (Some(65532), Some(65532), "default"));
        assert!(run.automount);
        assert_eq!(run.grace, Duration::from_secs(30));
    }

    #[test]
    fn pods_the_double_cannot_emulate_are_refused() {
        let refused = |spec: Value, needle: &str| {
            let err = PodRun::resolve(&image(), &pod(spec), None).unwrap_err();
            assert!(err.contains(needle), "{err}");
        };
        refused(json!({"restartPolicy": "OnFailure", "containers": [{"name": "c"}]}), "restartPolicy");
        refused(json!({"restartPolicy": "Never", "containers": [{"name": "a"}, {"name": "b"}]}), "one container");
        refused(
            json!({"restartPolicy": "Never", "containers": [{"name": "c", "envFrom": [{"configMapRef": {"name": "x"}}]}]}),
            "envFrom",
        );
        refused(
            json!({"restartPolicy": "Never", "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}),
            "valueFrom",
        );
        refused(json!({"restartPolicy": "Never", "containers": [{"name": "c", "args": ["$(X)"]}]}), "$(VAR)");
        refused(
            json!({"restartPolicy": "Never", "securityContext": {"runAsNonRoot": true, "runAsUser": 0}, "containers": [{"name": "c"}]}),
            "runAsNonRoot",
        );
        refused(json!({"restartPolicy": "Never", "containers": [{"name": "c", "command": ["/bin/sh"]}]}), "entrypoint");
    }
}
