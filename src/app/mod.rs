//! The commands, wired together: ledger → plan → patches → outcomes → status → report.
//! Each command's work returns `Result<_, RunError>`; this module turns either into what is
//! printed on stdout and the exit code ([`RunError::exit`] is the only error → exit mapping).

mod record;
mod rescue;
mod restore;
mod status;
mod validate;

use std::io::IsTerminal;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::api::{Access, ClientOptions, build_client};
use crate::cli::{ApiArgs, Cli, Command, DEFAULT_WAIT_READY, Global, LogFormat, ProgressMode, RunArgs, VerifyArgs};
use crate::context::Context;
use crate::engine::{Engine, Progress, RestoreOptions, WaveGate};
use crate::error::RunError;
use crate::events::{Reason, Recorder};
use crate::exit::Exit;
use crate::guard::RepauseGuard;
use crate::outcome::{self, EntryReport, Outcome};
use crate::plan::Plan;
use crate::report::{self, Format, Report};
use crate::retry::Policy;
use crate::runtime::{Logs, watch_signals};
use crate::verify::{Verifier, VerifyOptions};

/// Run the command `cli` names; returns its exit code (results are on stdout, logs on stderr).
pub async fn run(cli: Cli, logs: Logs) -> Exit {
    let plain = cli.global.log_format == LogFormat::Plain;
    let cancel = CancellationToken::new();
    if let Err(e) = watch_signals(cancel.clone(), logs) {
        tracing::warn!(error = %e, "cannot watch SIGTERM/SIGINT");
    }
    let g = &cli.global;
    match &cli.command {
        Command::Restore(a) => restore::restore(g, a, cancel, plain).await,
        Command::Rescue(a) => rescue::rescue(g, a, cancel, plain).await,
        Command::Record(a) => record::record(g, a, cancel, plain).await,
        Command::Status(a) => status::status(g, a, cancel).await,
        Command::Validate(a) => validate::validate(g, a, cancel).await,
        Command::Completion(a) => {
            use clap::CommandFactory as _;
            clap_complete::generate(a.shell, &mut Cli::command(), "pause-ledger", &mut std::io::stdout());
            Exit::Success
        }
    }
}

/// Connect to the cluster `global` names, with `api`'s request timeout.
async fn connect(global: &Global, api: &ApiArgs) -> Result<Access, RunError> {
    let opts = ClientOptions { kubeconfig: global.kubeconfig.clone(), context: global.context.clone() };
    let client = build_client(&opts).await?;
    Ok(Access::new(client, api.request_timeout))
}

/// The retry policy the flags ask for.
fn policy(api: &ApiArgs) -> Policy {
    Policy { min_delay: api.min_delay, max_delay: api.max_delay, max_attempts: api.max_attempts }
}

/// A read-only command's context: the whole `--timeout`, no Events.
async fn read_only(global: &Global, api: &ApiArgs, cancel: CancellationToken) -> Result<Context, RunError> {
    let access = connect(global, api).await?;
    let deadline = Instant::now() + api.timeout;
    Ok(Context::new(access, policy(api), deadline, cancel, false))
}

/// One writing run (`restore`, `rescue`, `record`): its clock, contexts and output settings.
///
/// Time bound: `ctx` ends every request by the run's deadline and `entries` by the entries'
/// deadline (a reserve earlier), so each phase — entries, verification, Events, the status
/// write — ends by the deadline whatever its loops and retries do; what is left after it is
/// CPU work, the report on stdout and the log flush, cut off by the watchdog
/// ([`crate::runtime`]) at `--timeout` + 5 s.
struct Run<'a> {
    args: &'a RunArgs,
    plain_logs: bool,
    clock: Clock,
    /// Identifies this run's status write ([`crate::status_doc::run_id`]).
    run_id: String,
    /// What the report names as the ledger (`NS/NAME`, or `rescue:<preset>`).
    label: String,
    /// The upgrade id, once known.
    upgrade: OnceLock<String>,
    /// The whole run.
    ctx: Context,
    /// Entry work: ends a reserve before the deadline, leaving time to write the status.
    entries: Context,
    /// The span every log line of the run carries.
    span: tracing::Span,
}

/// When a run started.
#[derive(Clone, Copy)]
struct Clock {
    started: Instant,
    started_at: Timestamp,
}

impl Clock {
    fn now() -> Self {
        Self { started: Instant::now(), started_at: Timestamp::now() }
    }
}

impl<'a> Run<'a> {
    /// Start the clock and connect; on failure the report is printed and its exit returned.
    async fn start(
        global: &Global,
        api: &ApiArgs,
        args: &'a RunArgs,
        label: String,
        cancel: CancellationToken,
        plain_logs: bool,
    ) -> Result<Self, Exit> {
        let clock = Clock::now();
        let run_id = crate::status_doc::run_id(clock.started_at);
        let span = tracing::info_span!("run", ledger = %label, upgrade = tracing::field::Empty, run = %run_id);
        let access = match connect(global, api).instrument(span.clone()).await {
            Ok(a) => a,
            Err(e) => {
                let _enter = span.enter();
                tracing::error!("{e}");
                let exit = e.exit();
                let r = build_report(&label, "", args.dry_run, clock, 0, exit, vec![], e.to_string());
                r.print(Format::from(args.output));
                return Err(exit);
            }
        };
        let deadline = clock.started + api.timeout;
        let reserve = (api.timeout / 10).min(Duration::from_secs(10));
        let ctx = Context::new(access, policy(api), deadline, cancel, args.events && !args.dry_run);
        let entries = ctx.until(deadline - reserve);
        Ok(Self { args, plain_logs, clock, run_id, label, upgrade: OnceLock::new(), ctx, entries, span })
    }

    fn set_upgrade(&self, upgrade: &str) {
        let _ = self.upgrade.set(upgrade.to_string());
        self.span.record("upgrade", upgrade);
    }

    /// The report of this run.
    fn report(&self, exit: Exit, entries: Vec<EntryReport>, message: String) -> Report {
        let upgrade = self.upgrade.get().map_or("", String::as_str);
        let requests = self.ctx.access().requests();
        build_report(&self.label, upgrade, self.args.dry_run, self.clock, requests, exit, entries, message)
    }

    /// Print the report of a run that ended with `result`; returns its exit code.
    fn finish(&self, result: Result<Report, RunError>) -> Exit {
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                let _enter = self.span.enter();
                tracing::error!("{e}");
                self.report(e.exit(), vec![], e.to_string())
            }
        };
        r.print(Format::from(self.args.output));
        Exit::from_code(r.exit_code).unwrap_or(Exit::Error)
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

    /// Restore a plan wave by wave, each wave verified and gated, then guard it against a
    /// re-pause.
    async fn restore_plan(&self, plan: &Plan, opts: &RestoreOptions, verify: &VerifyArgs) -> Vec<EntryReport> {
        let bar = self.progress_bar(plan.len());
        let progress: Option<Progress> = bar.clone().map(|b| {
            let p: Progress = Arc::new(move |r: &EntryReport| {
                b.set_message(format!("{} {}", r.outcome, r.object.name));
                b.inc(1);
            });
            p
        });
        let ctx = &self.entries;
        let gate = WaveGate::from(verify.wave_gate);
        let v = VerifyOptions {
            propagation_window: verify.propagation_window,
            // Gating on readiness needs the readiness check.
            wait_ready: verify.wait_ready.or((gate == WaveGate::Ready).then_some(DEFAULT_WAIT_READY)),
            fail_on_not_ready: verify.fail_on_not_ready,
            poll: Duration::from_millis(250),
        };
        let verifier = Verifier::new(ctx, v, opts.concurrency);
        let verifier = (!opts.dry_run).then_some(&verifier);
        let mut results = Engine::new(ctx, opts, progress).run(plan, verifier, gate).await;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if !opts.dry_run {
            RepauseGuard::new(ctx, opts, verify.settle, v.poll).watch(plan, &mut results).await;
        }
        results
    }
}

/// A report (restore, rescue).
#[allow(clippy::too_many_arguments)]
fn build_report(
    label: &str,
    upgrade: &str,
    dry_run: bool,
    clock: Clock,
    requests: u64,
    exit: Exit,
    entries: Vec<EntryReport>,
    message: String,
) -> Report {
    Report {
        version: report::REPORT_VERSION.to_string(),
        ledger: label.to_string(),
        upgrade: upgrade.to_string(),
        dry_run,
        result: exit.word().to_string(),
        exit_code: exit.code(),
        message,
        started_at: clock.started_at,
        duration_ms: clock.started.elapsed().as_millis() as u64,
        requests,
        summary: outcome::summarize(&entries),
        entries,
        warnings: Vec::new(),
    }
}

/// Refuse while a Harvester upgrade is still running (unless told otherwise); a dry run only
/// warns.
async fn check_no_upgrade_running(run: &Run<'_>, verify: &VerifyArgs) -> Result<(), RunError> {
    if verify.ignore_running_upgrade {
        return Ok(());
    }
    match crate::harvester::running_upgrade(&run.entries).await? {
        Some(u) if run.args.dry_run => {
            tracing::warn!(upgrade = %u.name, "a Harvester upgrade is still running; a real run would refuse");
            Ok(())
        }
        Some(u) => Err(RunError::UpgradeRunning(u)),
        None => Ok(()),
    }
}

/// One Event per entry that needs one; routine ones (restored) capped at `max_normal`.
async fn emit_entry_events(events: &Recorder, results: &[EntryReport], restored: Reason, max_normal: usize) {
    let normal = std::sync::atomic::AtomicUsize::new(0);
    let normal = &normal;
    futures::stream::iter(results)
        .for_each_concurrent(16, |r| async move {
            let uid = r.uid.as_deref();
            let msg = |m: &str| m.to_string();
            let emitted: Option<(Reason, String)> = match r.outcome {
                // Warnings are always worth an Event; routine ones are capped.
                Outcome::Restored
                    if restored == Reason::Restored
                        && normal.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= max_normal =>
                {
                    None
                }
                Outcome::Restored => Some((restored, format!("{} set to false by pause-ledger", r.field))),
                Outcome::Failed => Some((Reason::RestoreFailed, msg(r.error.as_deref().unwrap_or("failed")))),
                Outcome::NotPropagated => Some((Reason::NotPropagated, msg(r.error.as_deref().unwrap_or("")))),
                Outcome::Repaused => Some((Reason::Repaused, msg(r.detail.as_deref().unwrap_or("")))),
                _ => None,
            };
            if let Some((reason, m)) = emitted {
                events.emit(&r.object, uid, reason, &m).await;
            }
            if r.outcome == Outcome::Restored && r.repaused > 0 {
                let m = format!("paused again {} time(s) after restore by this upgrade; restored again", r.repaused);
                events.emit(&r.object, uid, Reason::Repaused, &m).await;
            }
            if r.ready == Some(false) {
                let m = format!("not Ready: {}", r.ready_message.as_deref().unwrap_or(""));
                events.emit(&r.object, uid, Reason::NotReady, &m).await;
            }
        })
        .await;
}

/// The report's message for entry results.
fn summary_message(exit: Exit, results: &[EntryReport]) -> String {
    match exit {
        Exit::Success => "every entry settled".to_string(),
        _ => results.iter().find_map(|r| r.error.clone()).unwrap_or_else(|| "some entries did not settle".into()),
    }
}

/// `3 restored, 1 not-ours`.
fn counts(results: &[EntryReport]) -> String {
    let s = outcome::summarize(results);
    if s.is_empty() {
        return "no entries".into();
    }
    s.iter().map(|(o, n)| format!("{n} {o}")).collect::<Vec<_>>().join(", ")
}
