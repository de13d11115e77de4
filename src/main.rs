//! The pause-ledger binary: parse flags, set up logging and the watchdog, run a command, exit.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use pause_ledger::cli::Cli;
use pause_ledger::exit::Exit;
use pause_ledger::runtime::{Logs, OVERRUN};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = Logs::init(cli.global.log_format, &cli.global.log_level);
    if let Some(api) = cli.command.api() {
        logs.start_watchdog(api.timeout.saturating_add(OVERRUN));
    }
    // One thread: the work is waiting on the API server. Measured at N=5000 against two worker
    // threads: peak RSS 17.1-17.3 vs 18.2-19.2 MiB (one malloc arena), CPU 1.4 vs 1.7 s, wall time
    // within noise (BENCHMARKS.md). The watchdog and the log writer keep their own threads.
    let exit = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => {
            let exit = runtime.block_on(pause_ledger::app::run(cli, logs.clone()));
            // Dropping the runtime would wait for blocking tasks (a DNS lookup) without a limit.
            runtime.shutdown_timeout(Duration::from_millis(200));
            exit
        }
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            Exit::Error
        }
    };
    logs.flush();
    ExitCode::from(exit.code() as u8)
}
