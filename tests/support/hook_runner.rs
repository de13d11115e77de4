//! The hook-Job runner: a **TEST DOUBLE** for the kubelet and the Job controller, which the
//! test control plane does not have (no kube-controller-manager, no nodes, no container
//! runtime).
//!
//! It watches Jobs in one namespace and, for each new one, does what a node would do with its
//! pod, using the locally built `pause-ledger` binary in place of the image:
//! - the image's ENTRYPOINT and USER are read from the top-level `Dockerfile`, and the
//!   container's `command`/`args` are resolved against them with Kubernetes' rules; the
//!   entrypoint path maps to a copy of the binary;
//! - the process gets exactly the container's `env` plus what kubelet and runtime add
//!   (`KUBERNETES_SERVICE_HOST/PORT`, `HOSTNAME`, `HOME`, `PATH`);
//! - when the token is automounted (pod field, else ServiceAccount field, else true), a
//!   TokenRequest token of the pod's ServiceAccount, the cluster CA and the namespace are
//!   bind-mounted read-only at `/var/run/secrets/kubernetes.io/serviceaccount` — in a private
//!   mount namespace per process (`unshare -m`), because kube-rs reads that fixed path and
//!   parallel tests need different tokens there;
//! - the root filesystem is remounted read-only when `readOnlyRootFilesystem` is set, and the
//!   process runs with the pod's uid/gid, `no_new_privs` and an empty capability bounding set as
//!   the security context asks (`setpriv`);
//! - `backoffLimit`, `podFailurePolicy` exit-code rules and `activeDeadlineSeconds` decide
//!   retries and the outcome, and the Job status is written the way the 1.34 API server
//!   validates it: `startTime`/`active` first, then `SuccessCriteriaMet` before `Complete` (with
//!   `completionTime`), or `FailureTarget` before `Failed`.
//!
//! Differences from the real thing, on purpose: no Pod objects (so `kubectl logs` and Helm's
//! hook-output-log-policy find nothing; the output is kept in [`Execution`]s instead), a 1 s
//! retry back-off instead of 10 s doubling, no `onPodConditions` rules (no disruptions happen
//! here), one container per pod, and scheduling fields (`nodeSelector`, `tolerations`,
//! `affinity`, `priorityClassName`, `resources`) ignored, as there are no nodes. Anything else the double cannot emulate (`valueFrom`,
//! `envFrom`, `$(VAR)` expansion, several containers) is refused as a runner error rather
//! than approximated; tests assert there were none.
//!
//! Needs root for `unshare -m`, `mount` and `setpriv`; it says so instead of failing obscurely.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::{Job, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{Container, ServiceAccount};
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

/// What the image runs: ENTRYPOINT, CMD and USER from the Dockerfile.
#[derive(Clone, Debug)]
pub struct ImageConfig {
    /// `ENTRYPOINT [...]` (exec form).
    pub entrypoint: Vec<String>,
    /// `CMD [...]` (exec form).
    pub cmd: Vec<String>,
    /// `USER uid[:gid]`, numeric.
    pub user: Option<(u32, u32)>,
}

impl ImageConfig {
    /// Reads the exec-form ENTRYPOINT/CMD and a numeric USER; panics on any other form, since
    /// the double could not honour it.
    pub fn from_dockerfile(path: &Path) -> ImageConfig {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut config = ImageConfig { entrypoint: vec![], cmd: vec![], user: None };
        for line in text.lines().map(str::trim) {
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            let exec_form = |rest: &str| -> Vec<String> {
                serde_json::from_str(rest.trim())
                    .unwrap_or_else(|e| panic!("{word} in {} is not exec form ({e}): {line}", path.display()))
            };
            match word.to_ascii_uppercase().as_str() {
                "FROM" => config = ImageConfig { entrypoint: vec![], cmd: vec![], user: None },
                "ENTRYPOINT" => config.entrypoint = exec_form(rest),
                "CMD" => config.cmd = exec_form(rest),
                "USER" => {
                    let (u, g) = rest.trim().split_once(':').unwrap_or((rest.trim(), ""));
                    let uid: u32 = u.parse().unwrap_or_else(|_| panic!("USER {u} is not numeric"));
                    let gid = if g.is_empty() { 0 } else { g.parse().expect("numeric gid") };
                    config.user = Some((uid, gid));
                }
                _ => {}
            }
        }
        assert!(!config.entrypoint.is_empty(), "{} has no ENTRYPOINT", path.display());
        config
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

/// Runs the Jobs of one namespace until dropped.
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
    state: Arc<Mutex<State>>,
}

impl HookRunner {
    /// Starts watching Jobs in `namespace`. `binary` stands in for the image's entrypoint.
    pub fn start(
        client: kube::Client,
        namespace: &str,
        image: ImageConfig,
        binary: &Path,
        server_url: &str,
        ca_pem: &str,
    ) -> HookRunner {
        // unshare -m, mount and setpriv need root.
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().next());
        assert_eq!(
            uid,
            Some("0"),
            "the hook runner (test double of the kubelet) needs root: unshare -m, mount, setpriv"
        );
        let port = server_url
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or_else(|| panic!("no port in {server_url}"));
        let state = Arc::new(Mutex::new(State::default()));
        let inner = Arc::new(Inner {
            client,
            namespace: namespace.to_string(),
            image,
            binary: image_copy(binary),
            work: work_dir().join(namespace),
            port,
            ca_pem: ca_pem.to_string(),
            state: state.clone(),
        });
        std::fs::create_dir_all(&inner.work).expect("runner work dir");
        let task = tokio::spawn(watch(inner));
        HookRunner { namespace: namespace.to_string(), state, task }
    }

    /// Every pod run so far, in start order.
    pub fn executions(&self) -> Vec<Execution> {
        lock(&self.state).executions.clone()
    }

    /// The runs of Job `name`.
    pub fn executions_of(&self, name: &str) -> Vec<Execution> {
        self.executions().into_iter().filter(|e| e.job == name).collect()
    }

    /// Panics if the runner met a Job it could not emulate.
    pub fn assert_no_errors(&self) {
        let errors = &lock(&self.state).errors;
        assert!(errors.is_empty(), "hook runner errors in {}: {errors:#?}", self.namespace);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// This process's scratch dir: the binary copy and the token dirs, which reach the pod through
/// bind mounts (so the permissions of the path above them do not matter). Dirs of dead test
/// processes are removed.
fn work_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
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
        std::fs::create_dir_all(&dir).expect("runner dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        dir
    })
}

/// A root-owned, read-only copy of the binary, like the image's `/pause-ledger` (0555), so a
/// concurrent rebuild cannot swap it mid-test.
fn image_copy(binary: &Path) -> PathBuf {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let dir = work_dir().join("image");
        std::fs::create_dir_all(&dir).expect("image dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let dest = dir.join("pause-ledger");
        std::fs::copy(binary, &dest).expect("copy binary");
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        dest
    })
    .clone()
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

/// How one pod ended.
enum PodEnd {
    Exited(i32),
    DeadlineExceeded,
}

/// The resolved pod: what to run and how.
struct PodRun {
    service_account: String,
    automount: bool,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    uid: Option<u32>,
    gid: Option<u32>,
    no_new_privs: bool,
    drop_all_caps: bool,
    read_only_root: bool,
    grace: Duration,
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
        let backoff_limit = spec.backoff_limit.unwrap_or(DEFAULT_BACKOFF_LIMIT);
        let started = Instant::now();
        let deadline = spec.active_deadline_seconds.map(|s| started + Duration::from_secs(s as u64));
        let rules = spec.pod_failure_policy.as_ref().map(|p| p.rules.clone()).unwrap_or_default();
        let (container_name, pod) = self.resolve_pod(&job).await?;
        let start_time = now();
        self.patch_status(&name, &uid, json!({"startTime": start_time, "active": 1, "ready": 1})).await?;

        let mut failed = 0i32;
        let mut attempt = 0u32;
        let outcome: Result<(), (&str, String)> = loop {
            attempt += 1;
            let end = self.run_pod(&name, &uid, attempt, &pod, deadline).await?;
            let code = match end {
                PodEnd::DeadlineExceeded => {
                    failed += 1;
                    break Err(("DeadlineExceeded", "Job was active longer than specified deadline".into()));
                }
                PodEnd::Exited(0) => break Ok(()),
                PodEnd::Exited(code) => code,
            };
            let pod_name = format!("{name}-attempt{attempt}");
            match failure_action(&rules, &container_name, code) {
                Some((index, "FailJob")) => {
                    failed += 1;
                    break Err((
                        "PodFailurePolicy",
                        format!(
                            "Container {container_name} for pod {}/{pod_name} failed with exit code {code} matching FailJob rule at index {index}",
                            self.namespace
                        ),
                    ));
                }
                // Not counted against backoffLimit.
                Some((_, "Ignore")) => {}
                _ => failed += 1,
            }
            if failed > backoff_limit {
                break Err(("BackoffLimitExceeded", "Job has reached the specified backoff limit".into()));
            }
            self.patch_status(&name, &uid, json!({"failed": failed, "active": 1, "ready": 1})).await?;
            tokio::time::sleep(RETRY_DELAY).await;
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break Err(("DeadlineExceeded", "Job was active longer than specified deadline".into()));
            }
        };

        // The two-step terminal transition the 1.34 API server insists on.
        let t = now();
        let base = json!({"active": 0, "ready": 0, "terminating": 0, "uncountedTerminatedPods": {}});
        match outcome {
            Ok(()) => {
                let interim = condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    &t,
                );
                let mut s = base.clone();
                s["succeeded"] = json!(1);
                s["failed"] = json!(failed);
                s["conditions"] = json!([interim]);
                self.patch_status(&name, &uid, s.clone()).await?;
                s["conditions"] = json!([
                    interim,
                    condition("Complete", "CompletionsReached", "Reached expected number of succeeded pods", &t)
                ]);
                s["completionTime"] = json!(t);
                self.patch_status(&name, &uid, s).await
            }
            Err((reason, message)) => {
                let interim = condition("FailureTarget", reason, &message, &t);
                let mut s = base.clone();
                s["failed"] = json!(failed);
                s["conditions"] = json!([interim]);
                self.patch_status(&name, &uid, s.clone()).await?;
                s["conditions"] = json!([interim, condition("Failed", reason, &message, &t)]);
                self.patch_status(&name, &uid, s).await
            }
        }
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

    /// Reads the pod template the way kubelet and runtime would interpret it.
    async fn resolve_pod(&self, job: &Job) -> Result<(String, PodRun), String> {
        let template = job.spec.as_ref().map(|s| s.template.clone()).ok_or("no template")?;
        let pod = template.spec.ok_or("no pod spec")?;
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
        let service_account = pod.service_account_name.clone().unwrap_or_else(|| "default".into());
        // The kubelet resolves the automount default from the ServiceAccount.
        let sa_automount = match Api::<ServiceAccount>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(&service_account)
            .await
        {
            Ok(Some(sa)) => sa.automount_service_account_token,
            Ok(None) => None,
            Err(e) => return Err(format!("reading ServiceAccount {service_account}: {e}")),
        };
        let automount = pod.automount_service_account_token.or(sa_automount).unwrap_or(true);

        // Kubernetes: `command` replaces ENTRYPOINT (and drops CMD); `args` replaces CMD.
        let image = &self.image;
        let mut argv = match &c.command {
            Some(cmd) if !cmd.is_empty() => cmd.clone(),
            _ => image.entrypoint.clone(),
        };
        match &c.args {
            Some(a) => argv.extend(a.iter().cloned()),
            None if c.command.as_ref().is_none_or(|c| c.is_empty()) => argv.extend(image.cmd.iter().cloned()),
            None => {}
        }
        if argv[0] != image.entrypoint[0] {
            return Err(format!("executable {:?} is not the image's entrypoint {:?}", argv[0], image.entrypoint[0]));
        }
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
        Ok((
            c.name.clone(),
            PodRun {
                service_account,
                automount,
                argv,
                env,
                uid,
                gid,
                no_new_privs: sc.allow_privilege_escalation == Some(false),
                drop_all_caps,
                read_only_root: sc.read_only_root_filesystem == Some(true),
                grace: Duration::from_secs(
                    pod.termination_grace_period_seconds.unwrap_or(DEFAULT_GRACE_SECONDS).max(0) as u64,
                ),
            },
        ))
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
        let mut cmd = tokio::process::Command::new(tool("unshare"));
        cmd.env_clear()
            .args(["--mount", "--propagation", "private", "--"])
            .arg(tool("sh"))
            .args(["-c", &script, "sh"])
            .arg(&sa_dir)
            .arg(pod.automount.to_string())
            .arg(pod.read_only_root.to_string())
            .arg(&self.binary)
            .arg(tool("setpriv"));
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
        cmd.arg(tool("env")).arg("-i");
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
                    let _ = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status();
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
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        eprintln!("hook-runner: {}/{job} attempt {attempt} as {} exited {code}", self.namespace, pod.service_account);
        lock(&self.state).executions.push(Execution {
            job: job.to_string(),
            attempt,
            service_account: pod.service_account.clone(),
            args: pod.argv[1..].to_vec(),
            env: env.into_iter().collect(),
            code,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
        });
        let _ = std::fs::remove_dir_all(&dir);
        Ok(end.unwrap_or(PodEnd::Exited(code)))
    }
}

/// The first podFailurePolicy rule matching a container exit code: (index, action).
/// `onPodConditions` rules never match here: the double has no disruptions.
fn failure_action<'a>(rules: &'a [PodFailurePolicyRule], container: &str, code: i32) -> Option<(usize, &'a str)> {
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

fn condition(kind: &str, reason: &str, message: &str, at: &str) -> Value {
    json!({"type": kind, "status": "True", "reason": reason, "message": message,
           "lastProbeTime": at, "lastTransitionTime": at})
}

/// Absolute path of a host tool (the child's env is cleared, so no PATH lookup there).
fn tool(name: &str) -> PathBuf {
    ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("hook runner needs {name} (util-linux/coreutils)"))
}
