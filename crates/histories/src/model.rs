//! What a history is: a small world (a few ManagedCharts and one CronJob in one namespace, one
//! ledger) and a list of operations by the actors that share it.
//!
//! Histories are plain data (serde), so a failing one can be printed, saved, replayed and shrunk
//! without its generator.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The ManagedCharts of every history: Harvester's preset (so `rescue --preset harvester` and
/// `record --preset harvester` act on them) plus one chart outside the preset.
pub const CHARTS: [&str; 5] =
    ["harvester-crd", "harvester", "rancher-monitoring-crd", "rancher-logging-crd", "extra-chart"];
/// How many of [`CHARTS`] belong to Harvester's preset.
pub const PRESET_CHARTS: usize = 4;
/// The object of the other kind: a `batch/v1` CronJob paused through `spec.suspend`.
pub const CRONJOB: &str = "nightly-backup";
/// The ledger ConfigMap's name (in the history's namespace).
pub const LEDGER: &str = "pause-ledger";

/// One object of the world; serialized as its name (`harvester`, `cronjob/nightly-backup`), so
/// it can key JSON maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Obj {
    /// `CHARTS[i]`.
    Chart(usize),
    /// [`CRONJOB`].
    CronJob,
}

impl Obj {
    /// Every object.
    pub fn all() -> Vec<Obj> {
        (0..CHARTS.len()).map(Obj::Chart).chain([Obj::CronJob]).collect()
    }

    /// metadata.name.
    pub fn name(self) -> &'static str {
        match self {
            Obj::Chart(i) => CHARTS.get(i).copied().unwrap_or("invalid-chart"),
            Obj::CronJob => CRONJOB,
        }
    }

    /// `kind`.
    pub fn kind(self) -> &'static str {
        match self {
            Obj::Chart(_) => "ManagedChart",
            Obj::CronJob => "CronJob",
        }
    }

    /// `apiVersion`.
    pub fn api_version(self) -> &'static str {
        match self {
            Obj::Chart(_) => "management.cattle.io/v3",
            Obj::CronJob => "batch/v1",
        }
    }

    /// The pause field, as a path of segments under the object.
    pub fn field(self) -> [&'static str; 2] {
        match self {
            Obj::Chart(_) => ["spec", "paused"],
            Obj::CronJob => ["spec", "suspend"],
        }
    }

    /// Look an object up by kind and name.
    pub fn from_kind_name(kind: &str, name: &str) -> Option<Obj> {
        match kind {
            "ManagedChart" => CHARTS.iter().position(|c| *c == name).map(Obj::Chart),
            "CronJob" if name == CRONJOB => Some(Obj::CronJob),
            _ => None,
        }
    }
}

impl From<Obj> for String {
    fn from(o: Obj) -> String {
        o.to_string()
    }
}

impl TryFrom<String> for Obj {
    type Error = String;
    fn try_from(s: String) -> Result<Obj, String> {
        match s.strip_prefix("cronjob/") {
            Some(n) => Obj::from_kind_name("CronJob", n),
            None => Obj::from_kind_name("ManagedChart", &s),
        }
        .ok_or_else(|| format!("{s:?} is no object of the histories' world"))
    }
}

impl fmt::Display for Obj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Obj::Chart(_) => write!(f, "{}", self.name()),
            Obj::CronJob => write!(f, "cronjob/{}", self.name()),
        }
    }
}

/// State of an object when the history starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Initial {
    /// Running (created with the pause field `false`).
    Running,
    /// Paused by an administrator before any upgrade (field manager `admin-kubectl`).
    AdminPaused,
}

/// The upgrade ids `record` is run with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Upgrade {
    /// `up-a`.
    A,
    /// `up-b`.
    B,
    /// `up-c`.
    C,
}

impl Upgrade {
    /// The id.
    pub fn id(self) -> &'static str {
        match self {
            Upgrade::A => "up-a",
            Upgrade::B => "up-b",
            Upgrade::C => "up-c",
        }
    }
}

/// `record --on-existing`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnExisting {
    /// Default: refuse another upgrade's unrestored ledger (exit 9).
    Refuse,
    /// `--on-existing=merge`.
    Merge,
    /// `--on-existing=take-over`.
    TakeOver,
}

impl OnExisting {
    /// The flag value.
    pub fn flag(self) -> &'static str {
        match self {
            OnExisting::Refuse => "refuse",
            OnExisting::Merge => "merge",
            OnExisting::TakeOver => "take-over",
        }
    }
}

/// What `record` pauses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Targets {
    /// `--preset harvester -n NS`.
    Preset,
    /// `-n NS NAME...` (ManagedCharts, indexes into [`CHARTS`]).
    Charts(Vec<usize>),
    /// `--api-version batch/v1 --kind CronJob -n NS nightly-backup`.
    CronJob,
}

/// Which requests a fault mix applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PathFilter {
    /// Every request.
    All,
    /// Requests whose path contains `managedcharts`.
    ManagedCharts,
    /// Requests whose path contains `configmaps` (the ledger).
    ConfigMaps,
    /// Requests whose path contains `cronjobs`.
    CronJobs,
}

/// The kind of fault a pause-ledger process sees through its own fault proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// No proxy: straight to the API server.
    None,
    /// Forwarded (applied), then the connection is reset: a lost answer.
    ResetAfter,
    /// Forwarded (applied), then a 500/504 instead of the answer: 5xx after commit.
    ErrorAfter,
    /// 1.1–2.0 s before forwarding, with `--request-timeout 1s`: timed out on the client,
    /// applied later.
    Latency,
    /// 5xx without forwarding.
    ServerError,
    /// 429 with `Retry-After` 0 or 1.
    Throttle,
    /// Reset before forwarding.
    ResetBefore,
    /// All of the above, a fifth of the rate each.
    Mixed,
}

impl FaultKind {
    /// Name used in results.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::None => "none",
            FaultKind::ResetAfter => "reset-after-forward",
            FaultKind::ErrorAfter => "5xx-after-commit",
            FaultKind::Latency => "latency>timeout",
            FaultKind::ServerError => "5xx",
            FaultKind::Throttle => "429",
            FaultKind::ResetBefore => "reset-before",
            FaultKind::Mixed => "mixed",
        }
    }
}

/// One process's fault mix (each pause-ledger process gets a proxy of its own).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// What.
    pub kind: FaultKind,
    /// Probability per eligible request.
    pub rate: f64,
    /// Which requests.
    pub filter: PathFilter,
    /// The proxy's seed.
    pub seed: u64,
}

impl FaultSpec {
    /// No faults, no proxy.
    pub fn none() -> Self {
        Self { kind: FaultKind::None, rate: 0.0, filter: PathFilter::All, seed: 0 }
    }

    /// Whether this process goes through a proxy.
    pub fn active(&self) -> bool {
        self.kind != FaultKind::None && self.rate > 0.0
    }
}

/// The signal a process is killed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Signal {
    /// SIGKILL: no cleanup at all.
    Kill,
    /// SIGTERM: pause-ledger settles in-flight requests and writes its status.
    Term,
}

/// Kill a process this long after it was spawned (a no-op if it has exited by then).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kill {
    /// Which signal.
    pub signal: Signal,
    /// Delay from spawn, ms.
    pub after_ms: u32,
}

/// How a pause-ledger process is run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Proc {
    /// Its faults.
    pub faults: FaultSpec,
    /// Killed at a random point, if at all.
    pub kill: Option<Kill>,
    /// Started and left running while the next operations happen (else awaited).
    pub background: bool,
    /// Outage histories: `--timeout 60s --max-delay 2s`, straight to the API server, so that an
    /// outage of up to ~25 s fits in the deadline.
    pub long: bool,
}

/// An administrator's (or another tool's) action on one object, straight to the API server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdminAction {
    /// `kubectl patch --type merge` of the pause field to `true` (manager `admin-kubectl`);
    /// a same-value patch when already paused.
    Pause,
    /// The same with `false`.
    Unpause,
    /// Unpause, then pause again, by hand.
    Repause,
    /// Server-side apply of the pause field `true` by a GitOps tool (manager `admin-gitops`,
    /// forced): co-owns the field when it is already `true`.
    SsaPause,
    /// `kubectl annotate pause-ledger.io/paused-by-` (manager `admin-annotate`).
    RemoveMark,
    /// `kubectl annotate pause-ledger.io/paused-by=admin-edit --overwrite`.
    EditMark,
    /// `kubectl annotate pause-ledger.io/keep-paused=true`: the explicit keep-paused intent.
    KeepPaused,
    /// Delete, then create again (manager `admin-create`), running.
    RecreateRunning,
    /// Delete, then create again, paused.
    RecreatePaused,
}

/// How the upgrade script actor writes its ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ScriptForm {
    /// Harvester's script: `kubectl create configmap --from-literal=charts=... namespace=...`
    /// (minimal form, no upgrade id, unmarked), then `kubectl patch` (manager `kubectl-patch`).
    MinimalNoUpgrade,
    /// The same with `upgrade=script-up` (still unmarked).
    MinimalWithUpgrade,
    /// A full-form ledger with `fieldManager: upgrade-script` and marks `script-up`, each object
    /// paused and marked in one merge patch by manager `upgrade-script`.
    FullCustomManager,
}

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Op {
    /// `pause-ledger record`.
    Record {
        /// `--upgrade`.
        upgrade: Upgrade,
        /// `--on-existing`.
        on_existing: OnExisting,
        /// What to pause.
        targets: Targets,
        /// How it runs.
        proc: Proc,
    },
    /// `pause-ledger restore` (`copies` at once).
    Restore {
        /// How many run at once.
        copies: u8,
        /// `--force`.
        force: bool,
        /// `--settle 2s` (the re-pause guard).
        settle: bool,
        /// How it runs (each copy gets the same settings, its own proxy).
        proc: Proc,
    },
    /// `pause-ledger rescue --preset harvester --acknowledge-unknown-ownership`.
    Rescue {
        /// How it runs.
        proc: Proc,
    },
    /// An administrator's action.
    Admin {
        /// On what.
        obj: Obj,
        /// What.
        action: AdminAction,
    },
    /// The upgrade script actor: create its ledger (create-only), and only if that worked,
    /// pause the charts it listed.
    Script {
        /// Ledger form.
        form: ScriptForm,
        /// Charts (indexes into [`CHARTS`]).
        charts: Vec<usize>,
    },
    /// The Rancher stand-in writes the chart's status this many times, ~100 ms apart, in the
    /// background (resourceVersion churn; status subresource, manager `rancher`).
    Churn {
        /// Which chart.
        chart: usize,
        /// How many writes.
        writes: u8,
    },
    /// Wait.
    Sleep {
        /// ms.
        ms: u32,
    },
    /// Wait for every background process.
    Wait,
    /// Stop kube-apiserver (every connection refused), start it again `down_ms` later; the
    /// next operations run meanwhile.
    Outage {
        /// How long it stays down, ms.
        down_ms: u32,
    },
}

/// One generated history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// The seed it was generated from (0 for hand-written ones).
    pub seed: u64,
    /// State of each object before the first operation ([`Obj::all`] order).
    pub initial: Vec<Initial>,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl History {
    /// Whether it stops the API server (such histories run alone: the outage hits every
    /// namespace).
    pub fn has_outage(&self) -> bool {
        self.ops.iter().any(|o| matches!(o, Op::Outage { .. }))
    }

    /// The same history with only the operations whose index is in `keep`.
    pub fn with_ops(&self, keep: &[usize]) -> History {
        History {
            seed: self.seed,
            initial: self.initial.clone(),
            ops: keep.iter().filter_map(|i| self.ops.get(*i).cloned()).collect(),
        }
    }
}

fn proc_note(p: &Proc) -> String {
    let mut s = String::new();
    if p.faults.active() {
        let filter = match p.faults.filter {
            PathFilter::All => "",
            PathFilter::ManagedCharts => " on managedcharts",
            PathFilter::ConfigMaps => " on configmaps",
            PathFilter::CronJobs => " on cronjobs",
        };
        s.push_str(&format!(" faults={}@{:.2}{filter}", p.faults.kind.name(), p.faults.rate));
    }
    if let Some(k) = p.kill {
        let sig = match k.signal {
            Signal::Kill => "KILL",
            Signal::Term => "TERM",
        };
        s.push_str(&format!(" SIG{sig}@{}ms", k.after_ms));
    }
    if p.background {
        s.push_str(" &");
    }
    if p.long {
        s.push_str(" (long)");
    }
    s
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Record { upgrade, on_existing, targets, proc } => {
                let t = match targets {
                    Targets::Preset => "--preset harvester".to_string(),
                    Targets::Charts(c) => c.iter().map(|i| Obj::Chart(*i).name()).collect::<Vec<_>>().join(" "),
                    Targets::CronJob => format!("cronjob/{CRONJOB}"),
                };
                let oe = if *on_existing == OnExisting::Refuse {
                    String::new()
                } else {
                    format!(" --on-existing={}", on_existing.flag())
                };
                write!(f, "record --upgrade {}{oe} {t}{}", upgrade.id(), proc_note(proc))
            }
            Op::Restore { copies, force, settle, proc } => {
                let n = if *copies > 1 { format!("{copies}x ") } else { String::new() };
                let force = if *force { " --force" } else { "" };
                let settle = if *settle { " --settle 2s" } else { "" };
                write!(f, "{n}restore{force}{settle}{}", proc_note(proc))
            }
            Op::Rescue { proc } => write!(f, "rescue --acknowledge-unknown-ownership{}", proc_note(proc)),
            Op::Admin { obj, action } => write!(f, "admin {action:?} {obj}"),
            Op::Script { form, charts } => {
                let names: Vec<&str> = charts.iter().map(|i| Obj::Chart(*i).name()).collect();
                write!(f, "script {form:?} {}", names.join(" "))
            }
            Op::Churn { chart, writes } => write!(f, "rancher status churn {} x{writes}", Obj::Chart(*chart).name()),
            Op::Sleep { ms } => write!(f, "sleep {ms}ms"),
            Op::Wait => write!(f, "wait for background processes"),
            Op::Outage { down_ms } => write!(f, "kube-apiserver down for {down_ms}ms"),
        }
    }
}

impl fmt::Display for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let paused: Vec<String> = Obj::all()
            .iter()
            .zip(&self.initial)
            .filter(|(_, i)| **i == Initial::AdminPaused)
            .map(|(o, _)| o.to_string())
            .collect();
        if paused.is_empty() {
            writeln!(f, "  initially: everything running")?;
        } else {
            writeln!(f, "  initially paused by an administrator: {}", paused.join(", "))?;
        }
        for (i, op) in self.ops.iter().enumerate() {
            writeln!(f, "  {i:>2}. {op}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_serialize_as_names() {
        for o in Obj::all() {
            let j = serde_json::to_string(&o).unwrap();
            assert_eq!(serde_json::from_str::<Obj>(&j).unwrap(), o);
        }
        assert_eq!(serde_json::to_string(&Obj::CronJob).unwrap(), "\"cronjob/nightly-backup\"");
        let m = std::collections::BTreeMap::from([(Obj::Chart(1), 1)]);
        assert_eq!(serde_json::to_string(&m).unwrap(), "{\"harvester\":1}");
        let h = crate::generate::generate(7);
        let back: History = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
        assert_eq!(back, h);
    }
}
