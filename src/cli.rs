//! Command-line interface (clap derive). Every flag has an environment variable, so a Job
//! or Helm hook configures the tool through `env:` alone.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::exit::EXIT_CODES_HELP;
pub use crate::ledger::LedgerRef;

/// Restore what a platform upgrade paused, from the ledger the upgrade recorded.
#[derive(Debug, Parser)]
#[command(name = "pause-ledger", version, about, long_about = None, after_long_help = EXIT_CODES_HELP, after_help = EXIT_CODES_HELP)]
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
    #[arg(
        long,
        global = true,
        env = "PAUSE_LEDGER_KUBECONFIG",
        value_name = "FILE"
    )]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use.
    #[arg(long, global = true, env = "PAUSE_LEDGER_CONTEXT")]
    pub context: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, env = "PAUSE_LEDGER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax), e.g. `info` or `pause_ledger=debug`.
    #[arg(long, global = true, env = "PAUSE_LEDGER_LOG", default_value = "info")]
    pub log_level: String,
}

/// Log formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Output formats for results on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A summary line (restore) or a table (status).
    Text,
    /// The documented JSON document (docs/report.md).
    Json,
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

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Unpause exactly what the ledger says the upgrade paused, then write the status back.
    Restore(RestoreArgs),
    /// Validate a ledger file offline (a ConfigMap manifest or a ledger.yaml document; `-` for stdin).
    Validate(ValidateArgs),
    /// Show the ledger, its restore status and the live state of every entry.
    Status(StatusArgs),
}

/// Where the ledger lives.
#[derive(Debug, Args, Clone)]
pub struct LedgerArg {
    /// The ledger ConfigMap as NAMESPACE/NAME.
    #[arg(long, env = "PAUSE_LEDGER_LEDGER", default_value = "fleet-local/pause-ledger", value_parser = parse_ledger_ref)]
    pub ledger: LedgerRef,
}

fn parse_ledger_ref(s: &str) -> Result<LedgerRef, String> {
    let (ns, name) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not NAMESPACE/NAME"))?;
    crate::ledger::check_label(ns)?;
    crate::ledger::check_subdomain(name)?;
    Ok(LedgerRef {
        namespace: ns.to_string(),
        name: name.to_string(),
    })
}

/// Parse a duration such as `240s`, `4m`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d: jiff::SignedDuration = s
        .parse()
        .map_err(|e| format!("{s:?} is not a duration like 240s or 4m: {e}"))?;
    Duration::try_from(d).map_err(|_| format!("{s:?} must not be negative"))
}

/// `restore` options.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The ledger.
    #[command(flatten)]
    pub ledger: LedgerArg,
    /// Overall deadline for the whole run (default leaves a minute of Helm's 5-minute hook timeout).
    #[arg(long, env = "PAUSE_LEDGER_TIMEOUT", default_value = "240s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Entries restored at once within one order.
    #[arg(long, env = "PAUSE_LEDGER_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,
    /// Attempt budget per entry (requests and re-reads after a concurrent change).
    #[arg(long, env = "PAUSE_LEDGER_MAX_ATTEMPTS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_attempts: u32,
    /// First retry delay; delays double up to --max-delay, each drawn uniformly from [0, delay].
    #[arg(long, env = "PAUSE_LEDGER_MIN_DELAY", default_value = "200ms", value_parser = parse_duration)]
    pub min_delay: Duration,
    /// Cap on one retry delay.
    #[arg(long, env = "PAUSE_LEDGER_MAX_DELAY", default_value = "10s", value_parser = parse_duration)]
    pub max_delay: Duration,
    /// Limit on one HTTP request.
    #[arg(long, env = "PAUSE_LEDGER_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// What to do when the ledger ConfigMap does not exist.
    #[arg(long, env = "PAUSE_LEDGER_IF_MISSING", value_enum, default_value_t = IfMissing::Fail)]
    pub if_missing: IfMissing,
    /// Send every patch with server-side dryRun=All: RBAC and admission run, nothing changes,
    /// no status is written.
    #[arg(long, env = "PAUSE_LEDGER_DRY_RUN")]
    pub dry_run: bool,
    /// Re-examine every entry even when the status says the ledger is already restored.
    #[arg(long, env = "PAUSE_LEDGER_FORCE")]
    pub force: bool,
    /// Result format on stdout.
    #[arg(long, short = 'o', env = "PAUSE_LEDGER_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Progress bar on stderr.
    #[arg(long, env = "PAUSE_LEDGER_PROGRESS", value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    /// After SIGTERM/SIGINT, how long in-flight requests may finish before the status is written.
    #[arg(long, env = "PAUSE_LEDGER_GRACE", default_value = "3s", value_parser = parse_duration)]
    pub grace: Duration,
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
    #[arg(long, short = 'o', env = "PAUSE_LEDGER_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// `status` options.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The ledger.
    #[command(flatten)]
    pub ledger: LedgerArg,
    /// Table or JSON.
    #[arg(long, short = 'o', env = "PAUSE_LEDGER_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Limit on one HTTP request.
    #[arg(long, env = "PAUSE_LEDGER_REQUEST_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
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
        assert!(parse_duration("soon").is_err());
        assert!(parse_ledger_ref("fleet-local").is_err());
        assert_eq!(parse_ledger_ref("a/b").unwrap().to_string(), "a/b");
    }
}
