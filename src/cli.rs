//! Command-line interface (clap derive). Every flag has an environment variable, so a Job
//! or Helm hook configures the tool through `env:` alone. Domain types (presets, the
//! existing-ledger policy, the report format) carry no clap traits; the `*Arg` enums here map
//! to them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tracing_subscriber::EnvFilter;

use crate::engine::WaveGate;
pub use crate::ledger::LedgerRef;
use crate::pause::OnExisting;
use crate::preset::Preset;
use crate::report::Format;

/// The longest duration any flag takes: far beyond any real run, and small enough that adding
/// it to a clock never overflows.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Restore what a platform upgrade paused, from the ledger the upgrade recorded.
#[derive(Debug, Parser)]
#[command(
    name = "pause-ledger",
    version,
    about,
    long_about = None,
    after_help = crate::exit::help_text(),
    after_long_help = crate::exit::help_text()
)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or the in-cluster ServiceAccount).
    #[arg(long, global = true, env = "PAUSE_LEDGER_KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, global = true, env = "PAUSE_LEDGER_CONTEXT")]
    pub context: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "PAUSE_LEDGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `pause_ledger=debug`.
    #[arg(long, global = true, env = "PAUSE_LEDGER_LOG", default_value = "info", value_parser = LogLevel::parse)]
    pub log_level: LogLevel,
}

/// A validated log filter (tracing EnvFilter syntax).
#[derive(Clone, Debug)]
pub struct LogLevel(String);

impl LogLevel {
    /// Parse and check a filter.
    pub fn parse(s: &str) -> Result<Self, String> {
        EnvFilter::try_new(s).map_err(|e| format!("{s:?} is not a log filter: {e}"))?;
        Ok(Self(s.to_string()))
    }

    /// The filter (checked at parse time).
    pub fn filter(&self) -> EnvFilter {
        EnvFilter::try_new(&self.0).unwrap_or_else(|_| EnvFilter::new("info"))
    }
}

/// Log formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line, carrying the run's and the entry's fields.
    Json,
}

/// Output formats for results on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputArg {
    /// A summary line (restore) or a table (status).
    Text,
    /// The documented JSON document (docs/report.md).
    Json,
}

impl From<OutputArg> for Format {
    fn from(o: OutputArg) -> Self {
        match o {
            OutputArg::Text => Format::Text,
            OutputArg::Json => Format::Json,
        }
    }
}

/// What to do when the ledger ConfigMap does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IfMissing {
    /// Nothing was recorded, so nothing to restore: exit 0 (what hooks want).
    Ok,
    /// Exit 8.
    Fail,
}

/// When to draw a progress bar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// When stderr is a terminal and logs are plain.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Presets on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PresetArg {
    /// Harvester v1.2+: harvester, harvester-crd, rancher-monitoring-crd, rancher-logging-crd in fleet-local.
    Harvester,
    /// Harvester v1.2–v1.4.3: also rancher-monitoring and rancher-logging.
    #[value(name = "harvester-1.2")]
    Harvester12,
    /// Harvester v1.0–v1.1: harvester, harvester-crd, rancher-monitoring, rancher-monitoring-crd.
    #[value(name = "harvester-1.0")]
    Harvester10,
}

impl From<PresetArg> for Preset {
    fn from(p: PresetArg) -> Self {
        match p {
            PresetArg::Harvester => Preset::Harvester,
            PresetArg::Harvester12 => Preset::Harvester12,
            PresetArg::Harvester10 => Preset::Harvester10,
        }
    }
}

/// `--on-existing` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnExistingArg {
    /// Refuse (exit 9): two upgrades must not share or overwrite one ledger by accident.
    Refuse,
    /// Add to the existing ledger, keeping its upgrade id (new pauses are marked with it).
    Merge,
    /// Make the ledger ours: new upgrade id, and the old entries' marks re-written to it.
    TakeOver,
}

impl From<OnExistingArg> for OnExisting {
    fn from(o: OnExistingArg) -> Self {
        match o {
            OnExistingArg::Refuse => OnExisting::Refuse,
            OnExistingArg::Merge => OnExisting::Merge,
            OnExistingArg::TakeOver => OnExisting::TakeOver,
        }
    }
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Unpause exactly what the ledger says the upgrade paused, then write the status back.
    Restore(RestoreArgs),
    /// The pause side: pause and mark objects (names, selector or preset) and write the ledger.
    Record(RecordArgs),
    /// For clusters whose upgrade recorded nothing: restore a preset's currently paused objects.
    Rescue(RescueArgs),
    /// Validate a ledger file offline (a ConfigMap manifest or a ledger.yaml document; `-` for stdin).
    Validate(ValidateArgs),
    /// Show the ledger, its restore status and the live state of every entry.
    Status(StatusArgs),
    /// Print a shell completion script: `source <(pause-ledger completion bash)`.
    Completion(CompletionArgs),
}

/// `completion` options.
#[derive(Debug, Args)]
pub struct CompletionArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

impl Command {
    /// The command's API limits (`--timeout` and the retry policy); `None` for commands that
    /// do not talk to the API.
    pub fn api(&self) -> Option<&ApiArgs> {
        match self {
            Command::Restore(a) => Some(&a.api),
            Command::Record(a) => Some(&a.api),
            Command::Rescue(a) => Some(&a.api),
            Command::Validate(a) => Some(&a.api),
            Command::Status(a) => Some(&a.api),
            Command::Completion(_) => None,
        }
    }
}

/// Where the ledger lives.
#[derive(Debug, Args, Clone)]
pub struct LedgerArg {
    /// The ledger ConfigMap as NAMESPACE/NAME.
    #[arg(long, env = "PAUSE_LEDGER_LEDGER", default_value = "fleet-local/pause-ledger", value_parser = parse_ledger_ref)]
    pub ledger: LedgerRef,
}

fn parse_ledger_ref(s: &str) -> Result<LedgerRef, String> {
    s.parse()
}

/// Parse a duration such as `240s`, `4m`, `1m30s`, or `0`; at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let d: jiff::SignedDuration = s.parse().map_err(|e| format!("{s:?} is not a duration like 240s or 4m: {e}"))?;
    let d = Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))?;
    if d > MAX_DURATION {
        return Err(format!("{s:?} is longer than the longest supported duration (30 days)"));
    }
    Ok(d)
}

/// Parse a duration that must not be zero.
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!("{s:?}: must be greater than 0"));
    }
    Ok(d)
}

/// How every command talks to the API server: one deadline and one retry policy.
#[derive(Debug, Args, Clone)]
pub struct ApiArgs {
    /// Overall deadline for the whole run (default leaves a minute of Helm's 5-minute hook
    /// timeout); must be greater than 0.
    #[arg(long, env = "PAUSE_LEDGER_TIMEOUT", default_value = "240s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
    /// Attempt budget per entry (answered requests and re-reads after a concurrent change);
    /// an unreachable API server spends time, not attempts.
    #[arg(long, env = "PAUSE_LEDGER_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: u32,
    /// First retry delay; delays double up to --max-delay, each drawn uniformly from [0, delay].
    #[arg(long, env = "PAUSE_LEDGER_MIN_DELAY", default_value = "200ms", value_parser = parse_positive_duration)]
    pub min_delay: Duration,
    /// Cap on one retry delay.
    #[arg(long, env = "PAUSE_LEDGER_MAX_DELAY", default_value = "10s", value_parser = parse_positive_duration)]
    pub max_delay: Duration,
    /// Limit on one HTTP request.
    #[arg(long, env = "PAUSE_LEDGER_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub request_timeout: Duration,
}

/// Options shared by the commands that write (`restore`, `rescue`, `record`).
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Entries handled at once within one order.
    #[arg(long, env = "PAUSE_LEDGER_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,
    /// Send every write with server-side dryRun=All (restore, rescue) or write nothing (record):
    /// RBAC and admission run, nothing changes, no status, no Events.
    #[arg(long, env = "PAUSE_LEDGER_DRY_RUN")]
    pub dry_run: bool,
    /// Result format on stdout.
    #[arg(long, short = 'o', env = "PAUSE_LEDGER_OUTPUT", value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    /// Progress bar on stderr.
    #[arg(long, env = "PAUSE_LEDGER_PROGRESS", value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// After SIGTERM/SIGINT, how long in-flight requests may finish before the status is written.
    #[arg(long, env = "PAUSE_LEDGER_GRACE", default_value = "3s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Create Kubernetes Events on the ledger and on every object touched.
    #[arg(long, env = "PAUSE_LEDGER_EVENTS", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub events: bool,
    /// At most this many Normal per-object Events (Restored, Paused) per run; Warnings are
    /// always created. Keeps a run over thousands of objects from flooding etcd with Events.
    #[arg(long, env = "PAUSE_LEDGER_MAX_OBJECT_EVENTS", default_value_t = 100)]
    pub max_object_events: usize,
}

/// `--wait-ready` without a value.
pub const DEFAULT_WAIT_READY: Duration = Duration::from_secs(120);

/// `--wave-gate` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum WaveGateArg {
    /// Only a failed restore blocks later orders.
    None,
    /// Also a ManagedChart whose unpause did not reach its Fleet Bundle.
    Propagated,
    /// Also an entry that is not ready (turns on --wait-ready, 120 s unless given).
    Ready,
}

impl From<WaveGateArg> for WaveGate {
    fn from(g: WaveGateArg) -> Self {
        match g {
            WaveGateArg::None => WaveGate::None,
            WaveGateArg::Propagated => WaveGate::Propagated,
            WaveGateArg::Ready => WaveGate::Ready,
        }
    }
}

/// Verification after restore.
#[derive(Debug, Args, Clone)]
pub struct VerifyArgs {
    /// What an order's entries must pass before the next order starts; an entry that fails it
    /// blocks the later orders (skipped, cause blocked).
    #[arg(long, env = "PAUSE_LEDGER_WAVE_GATE", value_enum, default_value_t = WaveGateArg::Propagated)]
    pub wave_gate: WaveGateArg,
    /// How long Rancher gets to carry a ManagedChart's unpause into Bundle mcc-<name>; 0 skips.
    #[arg(long, env = "PAUSE_LEDGER_PROPAGATION_WINDOW", default_value = "30s", value_parser = parse_duration)]
    pub propagation_window: Duration,
    /// Wait until each restored object is Ready at the generation our patch produced.
    #[arg(long, env = "PAUSE_LEDGER_WAIT_READY", value_parser = parse_duration, num_args = 0..=1, default_missing_value = "120s", value_name = "DURATION")]
    pub wait_ready: Option<Duration>,
    /// With --wait-ready: an object that is not ready fails the run (exit 3).
    #[arg(long, env = "PAUSE_LEDGER_FAIL_ON_NOT_READY")]
    pub fail_on_not_ready: bool,
    /// Watch restored objects this long for a re-pause (a still-running upgrade job); 0 skips.
    #[arg(long, env = "PAUSE_LEDGER_SETTLE", default_value = "0s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Unpause Harvester's charts even while a Harvester upgrade is still running (the latest
    /// upgrades.harvesterhci.io in harvester-system has not completed or failed).
    #[arg(long, env = "PAUSE_LEDGER_IGNORE_RUNNING_UPGRADE")]
    pub ignore_running_upgrade: bool,
}

/// `restore` options.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The ledger.
    #[command(flatten)]
    pub ledger: LedgerArg,
    /// What to do when the ledger ConfigMap does not exist.
    #[arg(long, env = "PAUSE_LEDGER_IF_MISSING", value_enum, default_value_t = IfMissing::Fail)]
    pub if_missing: IfMissing,
    /// Re-examine every entry even when the status says the ledger is already restored.
    #[arg(long, env = "PAUSE_LEDGER_FORCE")]
    pub force: bool,
    /// Accept ledgers without ownership marks ("still paused" is then the only check). The
    /// chart's hooks set false: whoever can write the ledger could otherwise make the hook's
    /// ServiceAccount unpause any paused object its RBAC allows.
    #[arg(long, env = "PAUSE_LEDGER_ALLOW_UNMARKED", default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub allow_unmarked: bool,
    /// API limits.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Run options.
    #[command(flatten)]
    pub run: RunArgs,
    /// Verification.
    #[command(flatten)]
    pub verify: VerifyArgs,
}

/// `record` options.
#[derive(Debug, Args)]
pub struct RecordArgs {
    /// The ledger.
    #[command(flatten)]
    pub ledger: LedgerArg,
    /// This upgrade's id (marks carry it; restore checks it).
    #[arg(long, env = "PAUSE_LEDGER_UPGRADE")]
    pub upgrade: String,
    /// Pause a preset's objects.
    #[arg(long, env = "PAUSE_LEDGER_PRESET", value_enum, conflicts_with_all = ["names", "selector"])]
    pub preset: Option<PresetArg>,
    /// Namespace of the named or selected objects (overrides the preset's namespace).
    #[arg(long, short = 'n', env = "PAUSE_LEDGER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Select objects by label instead of naming them.
    #[arg(long, short = 'l', env = "PAUSE_LEDGER_SELECTOR", conflicts_with = "names")]
    pub selector: Option<String>,
    /// apiVersion of the named or selected objects.
    #[arg(long, env = "PAUSE_LEDGER_API_VERSION", default_value = crate::kinds::MANAGED_CHART_API_VERSION)]
    pub api_version: String,
    /// Kind of the named or selected objects.
    #[arg(long, env = "PAUSE_LEDGER_KIND", default_value = crate::kinds::MANAGED_CHART_KIND)]
    pub kind: String,
    /// Pause field (default: the kind's, e.g. spec.suspend for CronJob, else spec.paused).
    #[arg(long, env = "PAUSE_LEDGER_FIELD")]
    pub field: Option<String>,
    /// Restore order of the named or selected objects (default: -crd charts 0, others 1).
    #[arg(long, env = "PAUSE_LEDGER_ORDER")]
    pub order: Option<i32>,
    /// When another upgrade's unrestored ledger exists.
    #[arg(long, env = "PAUSE_LEDGER_ON_EXISTING", value_enum, default_value_t = OnExistingArg::Refuse)]
    pub on_existing: OnExistingArg,
    /// API limits.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Run options.
    #[command(flatten)]
    pub run: RunArgs,
    /// Object names.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// `rescue` options.
#[derive(Debug, Args)]
pub struct RescueArgs {
    /// The preset whose currently paused objects are restored.
    #[arg(long, env = "PAUSE_LEDGER_PRESET", value_enum)]
    pub preset: PresetArg,
    /// A ledger whose `pausedBefore` objects rescue must leave alone, if it exists.
    #[command(flatten)]
    pub ledger: LedgerArg,
    /// Namespace override for the preset's objects.
    #[arg(long, short = 'n', env = "PAUSE_LEDGER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Required to write: nothing recorded who paused these objects, so one an administrator
    /// paused on purpose will be unpaused too.
    #[arg(long, env = "PAUSE_LEDGER_ACKNOWLEDGE_UNKNOWN_OWNERSHIP")]
    pub acknowledge_unknown_ownership: bool,
    /// API limits.
    #[command(flatten)]
    pub api: ApiArgs,
    /// Run options.
    #[command(flatten)]
    pub run: RunArgs,
    /// Verification.
    #[command(flatten)]
    pub verify: VerifyArgs,
}

/// `validate` options.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The file, or `-` for stdin.
    pub file: String,
    /// Also resolve every kind through the API server's discovery (what restore checks online).
    #[arg(long, env = "PAUSE_LEDGER_VALIDATE_CLUSTER")]
    pub cluster: bool,
    /// Result format on stdout.
    #[arg(long, short = 'o', env = "PAUSE_LEDGER_OUTPUT", value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    /// API limits (with --cluster).
    #[command(flatten)]
    pub api: ApiArgs,
}

/// `status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The ledger.
    #[command(flatten)]
    pub ledger: LedgerArg,
    /// Table or JSON.
    #[arg(long, short = 'o', env = "PAUSE_LEDGER_OUTPUT", value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    /// API limits.
    #[command(flatten)]
    pub api: ApiArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_and_refs() {
        assert_eq!(parse_duration("240s").unwrap(), Duration::from_secs(240));
        assert_eq!(parse_duration("4m").unwrap(), Duration::from_secs(240));
        assert_eq!(parse_duration("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_duration("0s").unwrap(), Duration::ZERO);
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("9999999999h").is_err(), "too long for a clock");
        assert!(parse_positive_duration("0").is_err());
        assert!(parse_ledger_ref("fleet-local").is_err());
        assert_eq!(parse_ledger_ref("a/b").unwrap().to_string(), "a/b");
        assert!(LogLevel::parse("info,pause_ledger=debug").is_ok());
        assert!(LogLevel::parse("info=[").is_err());
    }
}
