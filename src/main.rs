//! The pause-ledger binary: parse flags, set up logging and signals, run a command, exit.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use pause_ledger::cli::{Cli, Command, LogFormat};
use pause_ledger::exit::Exit;
use pause_ledger::kube_access::{Access, ClientOptions, build_client};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = init_logging(&cli) {
        eprintln!("pause-ledger: {e:#}");
        return ExitCode::from(Exit::Usage.code() as u8);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
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
    ExitCode::from(exit.code() as u8)
}

fn init_logging(cli: &Cli) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cli.global.log_level)
        .with_context(|| format!("invalid --log-level {:?}", cli.global.log_level))?;
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
