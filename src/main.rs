//! The pause-ledger binary: parse flags, set up logging and signals, run a command, exit.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use pause_ledger::cli::{Cli, Command, LogFormat};
use pause_ledger::exit::Exit;
use pause_ledger::kube_access::{Access, ClientOptions, build_client};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// How long a run may go on after its `--timeout` before the watchdog ends it (exit 6). Every
/// request already ends by the deadline (`app::Run`); what is left is CPU work, the report on
/// stdout and the log flush (tracing-appender's guard waits at most ~1.1 s), so this only cuts
/// off a process blocked on output nobody reads. Bound: a run ends by `--timeout` + 5 s.
const OVERRUN: Duration = Duration::from_secs(5);
/// Log lines held while stderr is not read (~200 bytes each); lines beyond it are dropped and
/// counted.
const LOG_QUEUE_LINES: usize = 16_384;

/// The log writer's guard: dropping it flushes the queue (bounded wait). Shared with the watchdog.
type Guard = Arc<Mutex<Option<WorkerGuard>>>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Logs go through a bounded queue and a thread of their own: a stderr nobody reads (a parent
    // that reads it only after the exit, a stuck log shipper) must delay log lines, never the
    // requests, retries and deadline that run on the async threads. Measured: without it, a
    // full 64 KiB pipe froze a run until its reader woke up, 70 s past --timeout.
    let (writer, guard) =
        NonBlockingBuilder::default().lossy(true).buffered_lines_limit(LOG_QUEUE_LINES).finish(std::io::stderr());
    let guard: Guard = Arc::new(Mutex::new(Some(guard)));
    if let Err(e) = init_logging(&cli, writer.clone()) {
        eprintln!("pause-ledger: {e:#}");
        return ExitCode::from(Exit::Usage.code() as u8);
    }
    if let Some(timeout) = run_timeout(&cli.command) {
        watchdog(timeout.saturating_add(OVERRUN), guard.clone(), writer.clone());
    }
    // One thread: the work is waiting on the API server. Measured at N=5000 against two worker
    // threads: peak RSS 17.1-17.3 vs 18.2-19.2 MiB (one malloc arena), CPU 1.4 vs 1.7 s, wall time
    // within noise (BENCHMARKS.md). The watchdog and the log writer keep their own threads.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pause-ledger: cannot start the async runtime: {e}");
            return ExitCode::from(Exit::Error.code() as u8);
        }
    };
    let exit = runtime.block_on(async {
        match run(cli).await {
            Ok(exit) => exit,
            Err(e) => {
                tracing::error!("{e:#}");
                Exit::Error
            }
        }
    });
    // Dropping the runtime would wait for blocking tasks (a DNS lookup) without a limit.
    runtime.shutdown_timeout(Duration::from_millis(200));
    flush_logs(&guard, &writer);
    ExitCode::from(exit.code() as u8)
}

/// `--timeout` of the commands that have one.
fn run_timeout(c: &Command) -> Option<Duration> {
    match c {
        Command::Restore(a) => Some(a.run.timeout),
        Command::Record(a) => Some(a.run.timeout),
        Command::Rescue(a) => Some(a.run.timeout),
        Command::Validate(_) | Command::Status(_) => None,
    }
}

/// End the process with exit 6 if it is still running `limit` after its start.
fn watchdog(limit: Duration, guard: Guard, writer: NonBlocking) {
    let spawned = std::thread::Builder::new().name("watchdog".into()).spawn(move || {
        std::thread::sleep(limit);
        tracing::error!("still running {limit:?} after the start, past --timeout: exiting (deadline exceeded)");
        flush_logs(&guard, &writer);
        std::process::exit(Exit::Deadline.code());
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the watchdog thread");
    }
}

/// Say how many log lines were dropped (if any), then flush the queue (bounded wait).
fn flush_logs(guard: &Guard, writer: &NonBlocking) {
    let dropped = writer.error_counter().dropped_lines();
    if dropped > 0 {
        tracing::warn!(dropped, "{dropped} log lines were dropped: stderr was not read fast enough");
    }
    drop(guard.lock().unwrap_or_else(|e| e.into_inner()).take());
}

fn init_logging(cli: &Cli, writer: NonBlocking) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cli.global.log_level)
        .with_context(|| format!("invalid --log-level {:?}", cli.global.log_level))?;
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.global.log_format {
        LogFormat::Plain => builder.with_target(false).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
    }
    Ok(())
}

async fn access(cli: &Cli, request_timeout: std::time::Duration) -> anyhow::Result<Access> {
    let opts = ClientOptions { kubeconfig: cli.global.kubeconfig.clone(), context: cli.global.context.clone() };
    let client = build_client(&opts).await.context("connecting to Kubernetes")?;
    Ok(Access::new(client, request_timeout))
}

/// Cancel on the first SIGTERM or SIGINT (Job deadline, eviction, Ctrl-C).
fn watch_signals(cancel: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::warn!("{which} received: starting nothing new, settling in-flight requests, writing status");
        cancel.cancel();
    });
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<Exit> {
    let plain = cli.global.log_format == LogFormat::Plain;
    match &cli.command {
        Command::Restore(args) => {
            let cancel = CancellationToken::new();
            watch_signals(cancel.clone())?;
            let access = access(&cli, args.run.request_timeout).await?;
            Ok(pause_ledger::app::restore(args, access, cancel, plain).await)
        }
        Command::Record(args) => {
            let cancel = CancellationToken::new();
            watch_signals(cancel.clone())?;
            let access = access(&cli, args.run.request_timeout).await?;
            Ok(pause_ledger::app::record(args, access, cancel, plain).await)
        }
        Command::Rescue(args) => {
            let cancel = CancellationToken::new();
            watch_signals(cancel.clone())?;
            let access = access(&cli, args.run.request_timeout).await?;
            Ok(pause_ledger::app::rescue(args, access, cancel, plain).await)
        }
        Command::Validate(args) => {
            let access =
                if args.cluster { Some(access(&cli, std::time::Duration::from_secs(10)).await?) } else { None };
            Ok(pause_ledger::app::validate(args, access).await)
        }
        Command::Status(args) => {
            let access = access(&cli, args.request_timeout).await?;
            Ok(pause_ledger::app::status(args, access).await)
        }
    }
}
