//! The commands, wired together: ledger → plan → patches → outcomes → status → report.
//! Each returns the exit code; results go to stdout, logs to stderr.

mod inspect;
mod record;
mod restore;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use inspect::{status, validate};
pub use record::record;
pub use restore::{rescue, restore};

use crate::cli::{LedgerRef, Output, ProgressMode, RunArgs};
use crate::exit::Exit;
use crate::kube_access::{Access, ApiError, configmap_data, configmap_path};
use crate::ledger;
use crate::report::{self, EntryReport, Report};
use crate::retry::{Budget, ErrorClass, Policy, classify, with_retry};

/// The ledger ConfigMap's recorded data, its status text and its uid. `Ok(None)`: absent.
type LedgerData = (BTreeMap<String, String>, Option<String>, Option<String>);

/// Read the ledger ConfigMap.
async fn read_ledger_data(
    access: &Access,
    at: &LedgerRef,
    policy: &Policy,
    deadline: Instant,
) -> Result<Option<LedgerData>, ApiError> {
    let target = format!("ConfigMap {at}");
    let path = configmap_path(&at.namespace, &at.name);
    let budget = Budget::new(policy.max_attempts, deadline);
    let cm = with_retry(policy, &budget, &format!("get {target}"), || access.get(&target, &path)).await?;
    Ok(cm.map(|cm| {
        let mut data = configmap_data(&cm);
        let status = data.remove(ledger::STATUS_KEY);
        let uid = cm.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string);
        (data, status, uid)
    }))
}

fn exit_for_api(e: &ApiError) -> Exit {
    match classify(e) {
        ErrorClass::Forbidden => Exit::PermissionDenied,
        // Retried until the budget or the deadline ran out: the run could not finish in time.
        ErrorClass::Transient => Exit::Deadline,
        _ => Exit::Error,
    }
}

/// One writing run's clock, limits and output settings.
///
/// Time bound: `access` ends every request by `deadline` (and the engine's by
/// `entries_deadline`), so each phase — entries, verification, Events, the status write, the
/// ledger's Event — ends by `deadline` whatever its loops and retries do; what is left after it
/// is CPU work, the report on stdout and the log flush, cut off by the binary's watchdog
/// (`main.rs`) at `--timeout` + 5 s.
struct Run<'a> {
    args: &'a RunArgs,
    /// Requests end by `deadline` ([`Access::with_deadline`]).
    access: Access,
    cancel: CancellationToken,
    plain_logs: bool,
    started: Instant,
    started_at: Timestamp,
    /// Identifies this run's status write ([`crate::status::run_id`]).
    run_id: String,
    /// The whole run's deadline.
    deadline: Instant,
    /// When entry work must stop, leaving time to write the status.
    entries_deadline: Instant,
    policy: Policy,
}

impl<'a> Run<'a> {
    fn new(args: &'a RunArgs, access: Access, cancel: CancellationToken, plain_logs: bool) -> Self {
        let started = Instant::now();
        let deadline = started + args.timeout;
        let reserve = (args.timeout / 10).min(Duration::from_secs(10));
        let started_at = Timestamp::now();
        Self {
            args,
            access: access.with_deadline(deadline),
            cancel,
            plain_logs,
            started,
            started_at,
            run_id: crate::status::run_id(started_at),
            deadline,
            entries_deadline: deadline - reserve,
            policy: Policy { min_delay: args.min_delay, max_delay: args.max_delay, max_attempts: args.max_attempts },
        }
    }

    /// Print the report and return the exit code.
    fn finish(&self, exit: Exit, ledger: String, upgrade: String, entries: Vec<EntryReport>, message: String) -> Exit {
        let r = Report {
            version: report::REPORT_VERSION.to_string(),
            ledger,
            upgrade,
            dry_run: self.args.dry_run,
            result: exit.word().to_string(),
            exit_code: exit.code(),
            message,
            started_at: self.started_at,
            duration_ms: self.started.elapsed().as_millis() as u64,
            requests: self.access.requests(),
            summary: report::summarize(&entries),
            entries,
        };
        print_report(&r, self.args.output);
        exit
    }

    fn progress_bar(&self, len: usize) -> Option<indicatif::ProgressBar> {
        let show = match self.args.progress {
            ProgressMode::Always => true,
            ProgressMode::Never => false,
            ProgressMode::Auto => self.plain_logs && std::io::stderr().is_terminal() && len > 1,
        };
        show.then(|| {
            let b = indicatif::ProgressBar::new(len as u64);
            if let Ok(style) =
                indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}")
            {
                b.set_style(style);
            }
            b
        })
    }
}

fn print_report(r: &Report, output: Output) {
    match output {
        Output::Json => {
            // Streamed: the report of a 5000-entry run is ~2.5 MB of text, not held in memory.
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = serde_json::to_writer_pretty(&mut out, r)
                .map_err(std::io::Error::from)
                .and_then(|()| std::io::Write::write_all(&mut out, b"\n"))
                .and_then(|()| std::io::Write::flush(&mut out));
            if let Err(e) = written {
                tracing::error!(error = %e, "cannot write the report");
            }
        }
        Output::Text => {
            for e in &r.entries {
                let note = e.error.as_deref().or(e.detail.as_deref()).unwrap_or("");
                let note = if note.is_empty() { String::new() } else { format!("  ({note})") };
                println!("{:<16} {}{note}", e.outcome.as_str(), e.object);
            }
            if r.entries.is_empty() && !r.message.is_empty() {
                println!("{}", r.message);
            }
            println!("{}", report::summary_line(r));
        }
    }
}
