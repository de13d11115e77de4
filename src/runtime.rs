//! The process around a run: logging (a bounded, non-blocking writer), the watchdog that ends
//! a run still alive past its `--timeout`, and the signals that cancel it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

use crate::cli::{LogFormat, LogLevel};
use crate::exit::Exit;

/// How long a run may go on after its `--timeout` before the watchdog ends it (exit 6). Every
/// request already ends by the deadline ([`crate::context::Context`]); what is left is CPU
/// work, the report on stdout and the log flush (tracing-appender's guard waits at most
/// ~1.1 s), so this only cuts off a process blocked on output nobody reads. Bound: a run ends
/// by `--timeout` + 5 s.
pub const OVERRUN: Duration = Duration::from_secs(5);
/// Log lines held while stderr is not read (~200 bytes each); lines beyond it are dropped and
/// counted.
const LOG_QUEUE_LINES: usize = 16_384;

/// The log writer and its guard (dropping the guard flushes the queue, with a bounded wait).
#[derive(Clone)]
pub struct Logs {
    writer: NonBlocking,
    guard: Arc<Mutex<Option<WorkerGuard>>>,
}

impl Logs {
    /// Install the global subscriber: `format` on stderr, filtered by `level`.
    ///
    /// Logs go through a bounded queue and a thread of their own: a stderr nobody reads (a
    /// parent that reads it only after the exit, a stuck log shipper) must delay log lines,
    /// never the requests, retries and deadline that run on the async thread. Measured: without
    /// it, a full 64 KiB pipe froze a run until its reader woke up, 70 s past --timeout.
    ///
    /// JSON lines carry the fields of every open span: the run's (ledger, upgrade, run id) and
    /// the entry's (object).
    pub fn init(format: LogFormat, level: &LogLevel) -> Self {
        let (writer, guard) =
            NonBlockingBuilder::default().lossy(true).buffered_lines_limit(LOG_QUEUE_LINES).finish(std::io::stderr());
        use std::io::IsTerminal as _;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(level.filter())
            .with_writer(writer.clone())
            .with_ansi(std::io::stderr().is_terminal());
        match format {
            LogFormat::Plain => builder.with_target(false).init(),
            LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(true).init(),
        }
        Self { writer, guard: Arc::new(Mutex::new(Some(guard))) }
    }

    /// Say how many log lines were dropped (if any), then flush the queue (bounded wait).
    pub fn flush(&self) {
        let dropped = self.writer.error_counter().dropped_lines();
        if dropped > 0 {
            tracing::warn!(dropped, "{dropped} log lines were dropped: stderr was not read fast enough");
        }
        drop(self.guard.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// End the process with exit 6 if it is still running `limit` after now.
    pub fn start_watchdog(&self, limit: Duration) {
        let logs = self.clone();
        let spawned = std::thread::Builder::new().name("watchdog".into()).spawn(move || {
            std::thread::sleep(limit);
            tracing::error!("still running {limit:?} after the start, past --timeout: exiting (deadline exceeded)");
            logs.flush();
            std::process::exit(Exit::Deadline.code());
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the watchdog thread");
        }
    }
}

/// Cancel `cancel` on the first SIGTERM or SIGINT (Job deadline, eviction, Ctrl-C): nothing new
/// starts, in-flight requests get `--grace`, the status is written. A second signal means
/// "now": the process exits 7 at once, without waiting for the status write.
pub fn watch_signals(cancel: CancellationToken, logs: Logs) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        loop {
            let which = tokio::select! {
                Some(()) = term.recv() => "SIGTERM",
                Some(()) = int.recv() => "SIGINT",
                else => return,
            };
            if cancel.is_cancelled() {
                tracing::error!("{which} received again: exiting now (terminated), the status may not be written");
                logs.flush();
                std::process::exit(Exit::Terminated.code());
            } else {
                tracing::warn!("{which} received: starting nothing new, settling in-flight requests, writing status");
                cancel.cancel();
            }
        }
    });
    Ok(())
}
