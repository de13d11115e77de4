//! The executor: runs one history against the real API server and returns its [`Trace`],
//! everything the oracle judges by.
//!
//! Each history gets a fresh namespace (its objects, its ledger `<ns>/pause-ledger`). Every
//! pause-ledger process gets a fault proxy of its own when its operation has faults (so a
//! fault hits exactly the process it was drawn for), else talks to the API server directly.
//! Administrators, the upgrade script and the Rancher stand-in write straight to the API
//! server with admin credentials and their own field managers. After the last operation every
//! background process is awaited, the API server is up, the churn stops, and one final
//! fault-free `restore` runs; then the live objects and the ledger are read, and the watch log
//! is caught up to them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use fault_proxy::{FaultProxy, Faults, Stats};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kubeenv::ControlPlane;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::model::{
    AdminAction, FaultKind, FaultSpec, History, Initial, LEDGER, Obj, OnExisting, Op, PathFilter, Proc, ScriptForm,
    Targets,
};
use crate::observe::{Log, MakeClient, Observer};
use crate::process::{self, Cmd, Exited};
use crate::world::{self, PauseView};

/// `--timeout` of ordinary runs.
pub const SHORT_TIMEOUT_S: u64 = 20;
/// `--timeout` of runs in outage histories (an outage of up to 25 s fits).
pub const LONG_TIMEOUT_S: u64 = 60;
/// `--timeout` of the final restore.
pub const FINAL_TIMEOUT_S: u64 = 30;
/// `--request-timeout` of every run.
pub const REQUEST_TIMEOUT_S: u64 = 1;

/// What the history runs on.
#[derive(Clone)]
pub struct Env {
    /// The control plane (etcd + kube-apiserver).
    pub cp: Arc<ControlPlane>,
    /// The `pause-ledger` binary under test.
    pub pause_ledger: PathBuf,
    /// Scratch folder (kubeconfigs of the proxies, ledger files for `validate`).
    pub scratch: PathBuf,
    /// What the binary under test supports.
    pub caps: Caps,
}

/// Flags the binary under test may or may not have (today's and the fixed code differ).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Caps {
    /// `rescue --ledger NS/NAME` (rescue honours an existing ledger's `pausedBefore`).
    pub rescue_ledger: bool,
}

impl Env {
    /// An environment; probes the binary's flags.
    pub fn new(cp: Arc<ControlPlane>, pause_ledger: PathBuf, scratch: PathBuf) -> Env {
        let help = std::process::Command::new(&pause_ledger)
            .args(["rescue", "--help"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let caps = Caps { rescue_ledger: help.contains("--ledger") };
        Env { cp, pause_ledger, scratch, caps }
    }
}

/// Which pause-ledger command a process ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// `record`.
    Record,
    /// `restore`.
    Restore,
    /// `rescue`.
    Rescue,
    /// The final fault-free `restore`.
    FinalRestore,
}

/// One pause-ledger process.
#[derive(Clone, Debug, Serialize)]
pub struct ProcRecord {
    /// Unique within the history, in spawn order.
    pub id: usize,
    /// The operation it belongs to (`usize::MAX`: the final restore).
    pub op: usize,
    /// Which command.
    pub role: Role,
    /// Its arguments.
    pub args: Vec<String>,
    /// `record --upgrade`.
    pub upgrade: Option<String>,
    /// `record --on-existing`.
    pub on_existing: Option<OnExisting>,
    /// The ledger's data when it was spawned.
    pub ledger_at_spawn: Option<BTreeMap<String, String>>,
    /// `--timeout`, s.
    pub timeout_s: u64,
    /// `--max-delay`, s.
    pub max_delay_s: u64,
    /// Its fault mix.
    pub faults: FaultSpec,
    /// What its proxy injected.
    pub injected: BTreeMap<String, u64>,
    /// How it ended.
    pub exited: Exited,
}

/// One write by an administrator or the upgrade script (or the initial state's pauses).
#[derive(Clone, Debug, Serialize)]
pub struct WriteRecord {
    /// The operation (`usize::MAX`: the initial state).
    pub op: usize,
    /// On what.
    pub obj: Obj,
    /// What (human-readable).
    pub what: String,
    /// Field manager.
    pub manager: String,
    /// Sent, ms since the history started.
    pub sent_ms: f64,
    /// Answered.
    pub done_ms: f64,
    /// resourceVersion before (read just before the write; `None`: absent).
    pub rv_before: Option<u64>,
    /// resourceVersion after (`None`: failed or a delete).
    pub rv_after: Option<u64>,
    /// Why it failed.
    pub error: Option<String>,
}

impl WriteRecord {
    /// Whether it changed the object (a same-value patch changes nothing on the server).
    pub fn changed(&self) -> bool {
        self.error.is_none() && self.rv_after != self.rv_before
    }
}

/// A ledger the upgrade script created.
#[derive(Clone, Debug, Serialize)]
pub struct ScriptLedger {
    /// The operation.
    pub op: usize,
    /// Its form.
    pub form: ScriptForm,
    /// The charts it lists (and then paused).
    pub charts: Vec<Obj>,
    /// Ledger create sent, ms since the history started.
    pub start_ms: f64,
    /// Last pause answered.
    pub end_ms: f64,
}

/// An API-server outage.
#[derive(Clone, Debug, Default, Serialize)]
pub struct OutageRecord {
    /// The operation.
    pub op: usize,
    /// Stop requested, ms.
    pub stop_ms: f64,
    /// Stopped (process gone), ms.
    pub stopped_ms: f64,
    /// Start requested, ms.
    pub start_ms: f64,
    /// Ready again, ms.
    pub ready_ms: Option<f64>,
    /// What went wrong starting or stopping it.
    pub error: Option<String>,
}

/// The state right after a `record` process exited (I3).
#[derive(Clone, Debug, Serialize)]
pub struct RecordExit {
    /// The process.
    pub proc: usize,
    /// Another record process was still running.
    pub other_record_alive: bool,
    /// The objects.
    pub objects: BTreeMap<Obj, Option<PauseView>>,
    /// The ledger's data.
    pub ledger: Option<BTreeMap<String, String>>,
    /// Could not read them.
    pub error: Option<String>,
}

/// The state after the final restore.
#[derive(Clone, Debug, Serialize)]
pub struct FinalState {
    /// The final restore's process id.
    pub proc: usize,
    /// The objects.
    pub objects: BTreeMap<Obj, Option<PauseView>>,
    /// The ledger's data.
    pub ledger: Option<BTreeMap<String, String>>,
    /// `pause-ledger validate -o json` of that data: its digest.
    pub validate_digest: Option<String>,
    /// The watch log reached the final versions.
    pub caught_up: bool,
}

/// Everything one history did and saw.
#[derive(Clone, Debug, Serialize)]
pub struct Trace {
    /// The history.
    pub history: History,
    /// Its namespace.
    pub ns: String,
    /// The watch log.
    pub log: Log,
    /// Every pause-ledger process, in spawn order.
    pub procs: Vec<ProcRecord>,
    /// Every administrator and script write.
    pub writes: Vec<WriteRecord>,
    /// Ledgers the script created.
    pub script_ledgers: Vec<ScriptLedger>,
    /// API-server outages.
    pub outages: Vec<OutageRecord>,
    /// States right after each record exited.
    pub record_exits: Vec<RecordExit>,
    /// After the final restore.
    pub final_state: Option<FinalState>,
    /// For every recorded set the watch saw with a status next to it: the oracle's digest →
    /// `pause-ledger validate -o json`'s (so a changed digest derivation is followed, not
    /// flagged).
    pub digests: BTreeMap<String, String>,
    /// The executor's own problems (not violations): a history with any is reported as errored.
    pub errors: Vec<String>,
    /// What the executor skipped on purpose (an administrator cannot act while the API server
    /// is down).
    pub notes: Vec<String>,
    /// Wall time, ms.
    pub duration_ms: f64,
}

impl Trace {
    /// The process with this id.
    pub fn proc(&self, id: usize) -> Option<&ProcRecord> {
        self.procs.iter().find(|p| p.id == id)
    }

    /// Faults injected, by kind (proxies, kills, outages).
    pub fn faults(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for p in &self.procs {
            for (k, v) in &p.injected {
                *m.entry(k.clone()).or_default() += v;
            }
        }
        m.retain(|_, v| *v > 0);
        if !self.outages.is_empty() {
            m.insert("apiserver-outage".into(), self.outages.len() as u64);
        }
        m
    }

    /// Processes killed (the kill reached a running process).
    pub fn kills(&self) -> usize {
        self.procs.iter().filter(|p| p.exited.killed.is_some()).count()
    }
}

/// State shared by the history's tasks.
struct Shared {
    env: Env,
    ns: String,
    t0: Instant,
    client: Mutex<kube::Client>,
    next_proc: AtomicUsize,
    records_alive: AtomicUsize,
    api_down: AtomicBool,
    writes: Mutex<Vec<WriteRecord>>,
    record_exits: Mutex<Vec<RecordExit>>,
    errors: Mutex<Vec<String>>,
    notes: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn admin_client(cp: &ControlPlane) -> Option<kube::Client> {
    let mut config = cp.admin_config();
    config.connect_timeout = Some(Duration::from_secs(2));
    kube::Client::try_from(config).ok()
}

impl Shared {
    fn ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    fn client(&self) -> kube::Client {
        lock(&self.client).clone()
    }

    fn renew_client(&self) {
        if let Some(c) = admin_client(&self.env.cp) {
            *lock(&self.client) = c;
        }
    }

    fn error(&self, e: String) {
        tracing::debug!(ns = %self.ns, "{e}");
        lock(&self.errors).push(e);
    }

    /// One administrator or script write, recorded with the resourceVersions around it.
    async fn write<F, Fut>(&self, op: usize, obj: Obj, what: &str, manager: &str, f: F)
    where
        F: FnOnce(kube::Client) -> Fut,
        Fut: std::future::Future<Output = Result<u64, world::WorldError>>,
    {
        let client = self.client();
        let rv_before = world::current_rv(&client, &self.ns, obj).await.ok().flatten();
        let sent_ms = self.ms();
        let result = f(client).await;
        let done_ms = self.ms();
        let (rv_after, error) = match result {
            Ok(rv) => (Some(rv), None),
            Err(e) => (None, Some(e.to_string())),
        };
        lock(&self.writes).push(WriteRecord {
            op,
            obj,
            what: what.to_string(),
            manager: manager.to_string(),
            sent_ms,
            done_ms,
            rv_before,
            rv_after,
            error,
        });
    }
}

/// The proxy's fault mix for a spec.
pub fn faults_of(spec: &FaultSpec) -> Faults {
    let mut f = Faults {
        seed: spec.seed,
        retry_after_secs: spec.seed % 2,
        latency_min: Duration::from_millis(1100),
        latency_max: Duration::from_millis(2000),
        path_filter: match spec.filter {
            PathFilter::All => None,
            PathFilter::ManagedCharts => Some("managedcharts".into()),
            PathFilter::ConfigMaps => Some("configmaps".into()),
            PathFilter::CronJobs => Some("cronjobs".into()),
        },
        ..Faults::default()
    };
    let r = spec.rate;
    match spec.kind {
        FaultKind::None => {}
        FaultKind::ResetAfter => f.reset_after_forward_rate = r,
        FaultKind::ErrorAfter => f.error_after_forward_rate = r,
        FaultKind::Latency => f.latency_rate = r,
        FaultKind::ServerError => f.server_error_rate = r,
        FaultKind::Throttle => f.throttle_rate = r,
        FaultKind::ResetBefore => f.reset_rate = r,
        FaultKind::Mixed => {
            let q = r / 5.0;
            f.server_error_rate = q;
            f.throttle_rate = q;
            f.reset_rate = q;
            f.reset_after_forward_rate = q;
            f.error_after_forward_rate = q;
            f.latency_rate = q;
        }
    }
    f
}

fn injected(s: &Stats) -> BTreeMap<String, u64> {
    BTreeMap::from([
        ("5xx".to_string(), s.server_errors),
        ("429".to_string(), s.throttled),
        ("reset-before".to_string(), s.resets),
        ("reset-after-forward".to_string(), s.resets_after_forward),
        ("5xx-after-commit".to_string(), s.errors_after_forward),
        ("latency".to_string(), s.delayed),
    ])
}

/// How to run one pause-ledger process.
struct Launch {
    op: usize,
    role: Role,
    args: Vec<String>,
    upgrade: Option<String>,
    on_existing: Option<OnExisting>,
    proc: Proc,
    timeout_s: u64,
    max_delay_s: u64,
}

fn run_flags(timeout_s: u64, max_delay_s: u64) -> Vec<String> {
    [
        "--timeout",
        &format!("{timeout_s}s"),
        "--min-delay",
        "50ms",
        "--max-delay",
        &format!("{max_delay_s}s"),
        "--request-timeout",
        &format!("{REQUEST_TIMEOUT_S}s"),
        "--progress",
        "never",
        "-o",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

async fn launch(sh: Arc<Shared>, l: Launch) -> ProcRecord {
    let id = sh.next_proc.fetch_add(1, Ordering::SeqCst);
    let env = &sh.env;
    let proxy = if l.proc.faults.active() {
        match FaultProxy::start(env.cp.server_url(), env.cp.ca_pem(), faults_of(&l.proc.faults)) {
            Ok(p) => Some(p),
            Err(e) => {
                sh.error(format!("fault proxy for process {id}: {e}"));
                None
            }
        }
    } else {
        None
    };
    let kubeconfig = match &proxy {
        Some(p) => match p.write_kubeconfig(&env.scratch, env.cp.admin_token()) {
            Ok(k) => k,
            Err(e) => {
                sh.error(format!("kubeconfig for process {id}: {e}"));
                env.cp.kubeconfig_path().to_path_buf()
            }
        },
        None => env.cp.kubeconfig_path().to_path_buf(),
    };
    let ledger_at_spawn = world::ledger_data(&sh.client(), &sh.ns).await.ok().flatten();
    let cmd = Cmd {
        program: env.pause_ledger.clone(),
        args: l.args.clone(),
        env: vec![
            ("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()),
            ("PAUSE_LEDGER_KUBECONFIG".into(), kubeconfig.display().to_string()),
            ("HOSTNAME".into(), format!("histories-{id}")),
        ],
    };
    let is_record = l.role == Role::Record;
    if is_record {
        sh.records_alive.fetch_add(1, Ordering::SeqCst);
    }
    let hard_limit = Duration::from_secs(l.timeout_s + 15);
    let exited = process::run(&cmd, sh.t0, l.proc.kill, hard_limit).await;
    // Stop the proxy first: a request it still delays is then never applied, so the state
    // read below is the state the process left.
    let stats = proxy.as_ref().map(FaultProxy::stats).unwrap_or_default();
    if let Some(p) = proxy {
        p.stop();
        let _ = std::fs::remove_file(&kubeconfig);
    }
    if is_record {
        let others = sh.records_alive.fetch_sub(1, Ordering::SeqCst) > 1;
        let client = sh.client();
        let snapshot = async {
            let objects = world::live(&client, &sh.ns).await?;
            let ledger = world::ledger_data(&client, &sh.ns).await?;
            Ok::<_, world::WorldError>((objects, ledger))
        }
        .await;
        let rec = match snapshot {
            Ok((objects, ledger)) => RecordExit { proc: id, other_record_alive: others, objects, ledger, error: None },
            Err(e) => RecordExit {
                proc: id,
                other_record_alive: others,
                objects: BTreeMap::new(),
                ledger: None,
                error: Some(e.to_string()),
            },
        };
        lock(&sh.record_exits).push(rec);
    }
    ProcRecord {
        id,
        op: l.op,
        role: l.role,
        args: l.args,
        upgrade: l.upgrade,
        on_existing: l.on_existing,
        ledger_at_spawn,
        timeout_s: l.timeout_s,
        max_delay_s: l.max_delay_s,
        faults: l.proc.faults.clone(),
        injected: injected(&stats),
        exited,
    }
}

fn limits(p: &Proc) -> (u64, u64) {
    if p.long { (LONG_TIMEOUT_S, 2) } else { (SHORT_TIMEOUT_S, 1) }
}

fn launches(sh: &Shared, i: usize, op: &Op) -> Vec<Launch> {
    let ns = &sh.ns;
    let ledger = format!("{ns}/{LEDGER}");
    match op {
        Op::Record { upgrade, on_existing, targets, proc } => {
            let (t, d) = limits(proc);
            let mut args: Vec<String> =
                ["record", "--ledger", &ledger, "--upgrade", upgrade.id()].iter().map(|s| s.to_string()).collect();
            if *on_existing != OnExisting::Refuse {
                args.push(format!("--on-existing={}", on_existing.flag()));
            }
            match targets {
                Targets::Preset => args.extend(["--preset".into(), "harvester".into(), "-n".into(), ns.clone()]),
                Targets::Charts(c) => {
                    args.extend(["-n".into(), ns.clone()]);
                    args.extend(world::chart_names(c).iter().map(|s| s.to_string()));
                }
                Targets::CronJob => args.extend(
                    ["--api-version", "batch/v1", "--kind", "CronJob", "-n", ns, Obj::CronJob.name()]
                        .iter()
                        .map(|s| s.to_string()),
                ),
            }
            args.extend(run_flags(t, d));
            vec![Launch {
                op: i,
                role: Role::Record,
                args,
                upgrade: Some(upgrade.id().to_string()),
                on_existing: Some(*on_existing),
                proc: proc.clone(),
                timeout_s: t,
                max_delay_s: d,
            }]
        }
        Op::Restore { copies, force, settle, proc } => {
            let (t, d) = limits(proc);
            let mut args: Vec<String> =
                ["restore", "--ledger", &ledger, "--if-missing", "ok", "--propagation-window", "0s"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
            if *force {
                args.push("--force".into());
            }
            if *settle {
                args.extend(["--settle".into(), "2s".into()]);
            }
            args.extend(run_flags(t, d));
            (0..(*copies).max(1))
                .map(|c| {
                    let mut proc = proc.clone();
                    proc.faults.seed = proc.faults.seed.wrapping_add(u64::from(c) * 7919);
                    Launch {
                        op: i,
                        role: Role::Restore,
                        args: args.clone(),
                        upgrade: None,
                        on_existing: None,
                        proc,
                        timeout_s: t,
                        max_delay_s: d,
                    }
                })
                .collect()
        }
        Op::Rescue { proc } => {
            let (t, d) = limits(proc);
            let mut args: Vec<String> = [
                "rescue",
                "--preset",
                "harvester",
                "-n",
                ns,
                "--acknowledge-unknown-ownership",
                "--propagation-window",
                "0s",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if sh.env.caps.rescue_ledger {
                args.extend(["--ledger".into(), ledger.clone()]);
            }
            args.extend(run_flags(t, d));
            vec![Launch {
                op: i,
                role: Role::Rescue,
                args,
                upgrade: None,
                on_existing: None,
                proc: proc.clone(),
                timeout_s: t,
                max_delay_s: d,
            }]
        }
        _ => vec![],
    }
}

async fn admin(sh: &Shared, i: usize, obj: Obj, action: AdminAction) {
    use world::{ADMIN_ANNOTATE, ADMIN_CREATE, ADMIN_GITOPS, ADMIN_KUBECTL, KEEP_PAUSED, MARK};
    let ns = sh.ns.clone();
    let patch = |manager: &'static str, what: &'static str, body: Value| {
        let ns = ns.clone();
        async move {
            sh.write(i, obj, what, manager, |c| async move { world::merge_patch(&c, &ns, obj, manager, &body).await })
                .await
        }
    };
    match action {
        AdminAction::Pause => patch(ADMIN_KUBECTL, "pause", world::pause_body(obj, true)).await,
        AdminAction::Unpause => patch(ADMIN_KUBECTL, "unpause", world::pause_body(obj, false)).await,
        AdminAction::Repause => {
            patch(ADMIN_KUBECTL, "unpause", world::pause_body(obj, false)).await;
            patch(ADMIN_KUBECTL, "pause", world::pause_body(obj, true)).await;
        }
        AdminAction::SsaPause => {
            let ns = ns.clone();
            sh.write(i, obj, "server-side apply paused", ADMIN_GITOPS, |c| async move {
                world::apply_paused(&c, &ns, obj, ADMIN_GITOPS).await
            })
            .await
        }
        AdminAction::RemoveMark => {
            patch(ADMIN_ANNOTATE, "remove the mark", json!({"metadata": {"annotations": {MARK: null}}})).await
        }
        AdminAction::EditMark => {
            patch(ADMIN_ANNOTATE, "edit the mark", json!({"metadata": {"annotations": {MARK: "admin-edit"}}})).await
        }
        AdminAction::KeepPaused => {
            patch(ADMIN_ANNOTATE, "keep-paused", json!({"metadata": {"annotations": {KEEP_PAUSED: "true"}}})).await
        }
        AdminAction::RecreateRunning | AdminAction::RecreatePaused => {
            let paused = action == AdminAction::RecreatePaused;
            let (n1, n2) = (ns.clone(), ns.clone());
            sh.write(i, obj, "delete", ADMIN_CREATE, |c| async move { world::delete(&c, &n1, obj).await.map(|()| 0) })
                .await;
            let what = if paused { "create paused" } else { "create running" };
            sh.write(
                i,
                obj,
                what,
                ADMIN_CREATE,
                |c| async move { world::create(&c, &n2, obj, paused, ADMIN_CREATE).await },
            )
            .await;
        }
    }
}

async fn script(sh: &Shared, i: usize, form: ScriptForm, charts: &[usize]) -> Option<ScriptLedger> {
    use world::{MARK, SCRIPT_CREATE, SCRIPT_KUBECTL, SCRIPT_MARKED, SCRIPT_UPGRADE};
    let ns = &sh.ns;
    let names = world::chart_names(charts);
    let mut data = BTreeMap::new();
    match form {
        ScriptForm::MinimalNoUpgrade | ScriptForm::MinimalWithUpgrade => {
            data.insert("charts".to_string(), names.join(" "));
            data.insert("namespace".to_string(), ns.clone());
            if form == ScriptForm::MinimalWithUpgrade {
                data.insert("upgrade".to_string(), SCRIPT_UPGRADE.to_string());
            }
        }
        ScriptForm::FullCustomManager => {
            let mut y = format!(
                "version: pause-ledger/v1\nupgrade: {SCRIPT_UPGRADE}\npausedAt: 2026-01-01T00:00:00Z\nownership: marked\nfieldManager: {SCRIPT_MARKED}\nentries:\n"
            );
            for n in &names {
                y.push_str(&format!("  - namespace: {ns}\n    name: {n}\n"));
            }
            data.insert("ledger.yaml".to_string(), y);
        }
    }
    // Ledger first (create-only, like `kubectl create configmap`): pause only what it lists.
    let start_ms = sh.ms();
    if let Err(e) = world::create_ledger(&sh.client(), ns, data, SCRIPT_CREATE).await {
        tracing::debug!(ns = %ns, "script: {e}; paused nothing");
        return None;
    }
    for c in charts {
        let obj = Obj::Chart(*c);
        let ns = ns.clone();
        match form {
            ScriptForm::FullCustomManager => {
                let body = json!({"metadata": {"annotations": {MARK: SCRIPT_UPGRADE}}, "spec": {"paused": true}});
                sh.write(i, obj, "script: pause and mark", SCRIPT_MARKED, |cl| async move {
                    world::merge_patch(&cl, &ns, obj, SCRIPT_MARKED, &body).await
                })
                .await
            }
            _ => {
                sh.write(i, obj, "script: pause", SCRIPT_KUBECTL, |cl| async move {
                    world::merge_patch(&cl, &ns, obj, SCRIPT_KUBECTL, &world::pause_body(obj, true)).await
                })
                .await
            }
        }
    }
    Some(ScriptLedger {
        op: i,
        form,
        charts: charts.iter().map(|c| Obj::Chart(*c)).collect(),
        start_ms,
        end_ms: sh.ms(),
    })
}

async fn churn(sh: Arc<Shared>, chart: usize, writes: u8) {
    for n in 0..writes {
        if !sh.api_down.load(Ordering::SeqCst) {
            let _ = world::write_status(&sh.client(), &sh.ns, chart, n).await;
        }
        tokio::time::sleep(Duration::from_millis(60 + u64::from(n % 4) * 30)).await;
    }
}

/// `pause-ledger validate -o json` of the ledger data: its digest.
async fn validate_digest(env: &Env, ns: &str, data: &BTreeMap<String, String>) -> Option<String> {
    let path = env.scratch.join(format!("ledger-{ns}.json"));
    let manifest =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": LEDGER, "namespace": ns}, "data": data});
    std::fs::write(&path, manifest.to_string()).ok()?;
    let out = tokio::process::Command::new(&env.pause_ledger)
        .args(["validate", &path.display().to_string(), "-o", "json"])
        .env_clear()
        .output()
        .await
        .ok()?;
    let _ = std::fs::remove_file(&path);
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v.get("digest").and_then(Value::as_str).map(str::to_string)
}

/// Run `history` in a fresh namespace and return what happened.
pub async fn execute(env: &Env, history: &History) -> Trace {
    let t0 = Instant::now();
    let mut errors = Vec::new();
    let ns = match env.cp.namespace("h").await {
        Ok(ns) => ns,
        Err(e) => {
            return Trace {
                history: history.clone(),
                ns: String::new(),
                log: Log::default(),
                procs: vec![],
                writes: vec![],
                script_ledgers: vec![],
                outages: vec![],
                record_exits: vec![],
                final_state: None,
                digests: BTreeMap::new(),
                errors: vec![format!("namespace: {e}")],
                notes: vec![],
                duration_ms: 0.0,
            };
        }
    };
    let Some(client) = admin_client(&env.cp) else {
        errors.push("admin client".into());
        return Trace {
            history: history.clone(),
            ns,
            log: Log::default(),
            procs: vec![],
            writes: vec![],
            script_ledgers: vec![],
            outages: vec![],
            record_exits: vec![],
            final_state: None,
            digests: BTreeMap::new(),
            errors,
            notes: vec![],
            duration_ms: 0.0,
        };
    };
    let sh = Arc::new(Shared {
        env: env.clone(),
        ns: ns.clone(),
        t0,
        client: Mutex::new(client),
        next_proc: AtomicUsize::new(0),
        records_alive: AtomicUsize::new(0),
        api_down: AtomicBool::new(false),
        writes: Mutex::new(Vec::new()),
        record_exits: Mutex::new(Vec::new()),
        errors: Mutex::new(Vec::new()),
        notes: Mutex::new(Vec::new()),
    });
    let cp = env.cp.clone();
    let make: MakeClient = Arc::new(move || admin_client(&cp));
    let observer = Observer::start(make, &ns, t0).await;

    // The world: everything running, then the administrator's pauses before any upgrade.
    for (obj, init) in Obj::all().into_iter().zip(&history.initial) {
        if let Err(e) = world::create(&sh.client(), &ns, obj, false, world::SETUP).await {
            sh.error(format!("setup: {e}"));
        }
        if *init == Initial::AdminPaused {
            let n = ns.clone();
            sh.write(usize::MAX, obj, "pause (before the upgrade)", world::ADMIN_KUBECTL, |c| async move {
                world::merge_patch(&c, &n, obj, world::ADMIN_KUBECTL, &world::pause_body(obj, true)).await
            })
            .await;
        }
    }

    let mut procs: Vec<ProcRecord> = Vec::new();
    let mut background: Vec<JoinHandle<ProcRecord>> = Vec::new();
    let mut churns: Vec<JoinHandle<()>> = Vec::new();
    let mut restarts: Vec<JoinHandle<OutageRecord>> = Vec::new();
    let mut outages: Vec<OutageRecord> = Vec::new();
    let mut script_ledgers = Vec::new();
    for (i, op) in history.ops.iter().enumerate() {
        tracing::debug!(ns = %ns, "op {i}: {op}");
        match op {
            Op::Record { proc, .. } | Op::Restore { proc, .. } | Op::Rescue { proc } => {
                let handles: Vec<JoinHandle<ProcRecord>> =
                    launches(&sh, i, op).into_iter().map(|l| tokio::spawn(launch(sh.clone(), l))).collect();
                if proc.background {
                    background.extend(handles);
                } else {
                    for h in handles {
                        match h.await {
                            Ok(p) => procs.push(p),
                            Err(e) => sh.error(format!("process task: {e}")),
                        }
                    }
                }
            }
            Op::Admin { obj, action } => {
                if sh.api_down.load(Ordering::SeqCst) {
                    lock(&sh.notes).push(format!("op {i} skipped: the API server is down"));
                } else {
                    admin(&sh, i, *obj, *action).await;
                }
            }
            Op::Script { form, charts } => {
                if !sh.api_down.load(Ordering::SeqCst)
                    && let Some(s) = script(&sh, i, *form, charts).await
                {
                    script_ledgers.push(s);
                }
            }
            Op::Churn { chart, writes } => churns.push(tokio::spawn(churn(sh.clone(), *chart, *writes))),
            Op::Sleep { ms } => tokio::time::sleep(Duration::from_millis(u64::from(*ms))).await,
            Op::Wait => {
                for h in background.drain(..) {
                    match h.await {
                        Ok(p) => procs.push(p),
                        Err(e) => sh.error(format!("process task: {e}")),
                    }
                }
            }
            Op::Outage { down_ms } => {
                if sh.api_down.swap(true, Ordering::SeqCst) {
                    continue;
                }
                let mut rec = OutageRecord { op: i, stop_ms: sh.ms(), ..OutageRecord::default() };
                let cp = env.cp.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || cp.stop_apiserver()).await {
                    rec.error = Some(format!("stop: {e}"));
                }
                rec.stopped_ms = sh.ms();
                let down = Duration::from_millis(u64::from(*down_ms));
                let sh2 = sh.clone();
                restarts.push(tokio::spawn(async move {
                    tokio::time::sleep(down).await;
                    rec.start_ms = sh2.ms();
                    let cp = sh2.env.cp.clone();
                    match tokio::task::spawn_blocking(move || cp.start_apiserver()).await {
                        Ok(Ok(())) => rec.ready_ms = Some(sh2.ms()),
                        Ok(Err(e)) => rec.error = Some(format!("start: {e}")),
                        Err(e) => rec.error = Some(format!("start: {e}")),
                    }
                    sh2.renew_client();
                    sh2.api_down.store(false, Ordering::SeqCst);
                    rec
                }));
            }
        }
    }
    for h in background {
        match h.await {
            Ok(p) => procs.push(p),
            Err(e) => sh.error(format!("process task: {e}")),
        }
    }
    for r in restarts {
        match r.await {
            Ok(rec) => outages.push(rec),
            Err(e) => sh.error(format!("restart task: {e}")),
        }
    }
    if sh.api_down.load(Ordering::SeqCst) {
        // Belt and braces: never leave the shared control plane down.
        let cp = env.cp.clone();
        let _ = tokio::task::spawn_blocking(move || cp.start_apiserver()).await;
        sh.renew_client();
        sh.api_down.store(false, Ordering::SeqCst);
    }
    for c in churns {
        c.abort();
    }
    tokio::time::sleep(Duration::from_millis(150)).await;

    // The final fault-free restore.
    let (t, d) = (FINAL_TIMEOUT_S, 1);
    let ledger_ref = format!("{ns}/{LEDGER}");
    let mut args: Vec<String> =
        ["restore", "--ledger", &ledger_ref, "--if-missing", "ok", "--propagation-window", "0s"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    args.extend(run_flags(t, d));
    let proc = Proc { faults: FaultSpec::none(), kill: None, background: false, long: false };
    let final_proc = launch(
        sh.clone(),
        Launch {
            op: usize::MAX,
            role: Role::FinalRestore,
            args,
            upgrade: None,
            on_existing: None,
            proc,
            timeout_s: t,
            max_delay_s: d,
        },
    )
    .await;
    let final_id = final_proc.id;
    procs.push(final_proc);

    // Final state, and the watch caught up to it.
    let client = sh.client();
    let final_state = match world::live(&client, &ns).await {
        Ok(objects) => {
            let cm = Api::<DynamicObject>::namespaced_with(client.clone(), &ns, &world::configmaps())
                .get_opt(LEDGER)
                .await
                .ok()
                .flatten();
            let ledger_rv = cm.as_ref().map(|c| world::rv_of(&c.metadata.resource_version));
            let ledger = cm.map(|c| world::configmap_data(&c.data));
            let rvs: BTreeMap<Obj, Option<u64>> = objects.iter().map(|(o, v)| (*o, v.as_ref().map(|v| v.rv))).collect();
            let caught_up = observer.catch_up(&rvs, ledger_rv, Duration::from_secs(10)).await;
            if !caught_up {
                sh.error("the watch did not catch up with the final state within 10 s".into());
            }
            let validate_digest = match &ledger {
                Some(d) => validate_digest(env, &ns, d).await,
                None => None,
            };
            Some(FinalState { proc: final_id, objects, ledger, validate_digest, caught_up })
        }
        Err(e) => {
            sh.error(format!("final state: {e}"));
            None
        }
    };
    let log = observer.stop();
    cleanup(&client, &ns).await;
    let mut digests = BTreeMap::new();
    for l in log.ledgers.iter().filter(|l| l.data.contains_key("status.yaml")) {
        let mut recorded = l.data.clone();
        recorded.remove("status.yaml");
        if let Some(own) = crate::ledger_view::digest(&recorded)
            && !digests.contains_key(&own)
            && let Some(theirs) = validate_digest(env, &ns, &recorded).await
        {
            digests.insert(own, theirs);
        }
    }
    for p in &procs {
        // A flag the binary does not take: the history did not test what it says.
        if p.exited.code == Some(2) {
            let tail: Vec<String> = p.exited.stderr.iter().rev().take(3).map(|(_, l)| l.clone()).collect();
            sh.error(format!("{:?} process {} exited 2 (usage): {}", p.role, p.id, tail.join(" | ")));
        }
    }
    procs.sort_by_key(|p| p.id);
    errors.extend(lock(&sh.errors).drain(..));
    let mut writes = lock(&sh.writes).clone();
    writes.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
    let mut record_exits = lock(&sh.record_exits).clone();
    record_exits.sort_by_key(|r| r.proc);
    Trace {
        history: history.clone(),
        ns,
        log,
        procs,
        writes,
        script_ledgers,
        outages,
        record_exits,
        final_state,
        digests,
        errors,
        notes: lock(&sh.notes).clone(),
        duration_ms: t0.elapsed().as_secs_f64() * 1000.0,
    }
}

/// Delete the history's objects, ledger and Events (namespaces never finish terminating
/// without a controller-manager, so their content is removed instead).
async fn cleanup(client: &kube::Client, ns: &str) {
    for obj in [Obj::Chart(0), Obj::CronJob] {
        let api = world::api(client, ns, obj);
        let _ = api.delete_collection(&DeleteParams::default(), &ListParams::default()).await;
    }
    let cms: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &world::configmaps());
    let _ = cms.delete(LEDGER, &DeleteParams::default()).await;
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let _ = events.delete_collection(&DeleteParams::default(), &ListParams::default()).await;
}
