//! Why a command could not finish: one error type for every command, and the one place that
//! maps it to an exit code ([`RunError::exit`]).

use crate::api::ConfigError;
use crate::exit::Exit;
use crate::harvester::RunningUpgrade;
use crate::ledger::{LedgerError, LedgerRef};
use crate::ledger_store::StatusError;
use crate::pause::RecordError;
use crate::plan::PlanError;
use crate::retry::{ErrorClass, Failure, Stop};

/// A command that could not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No ledger ConfigMap (and `--if-missing=fail`).
    #[error("ledger {0} not found (--if-missing=fail)")]
    LedgerMissing(LedgerRef),
    /// The ledger (or a command's targets) is invalid: nothing was written.
    #[error(transparent)]
    InvalidLedger(#[from] LedgerError),
    /// The ledger has no ownership marks and `--allow-unmarked=false`.
    #[error(
        "ledger {0} is unmarked (ownership: unmarked): refused with --allow-unmarked=false, since whoever can write \
         the ledger could make this ServiceAccount unpause any paused object its RBAC allows; nothing was patched \
         (the chart's allowUnmarkedLedgers value allows it)"
    )]
    UnmarkedRefused(LedgerRef),
    /// A `record` run is still between its intent and its confirmation.
    #[error(
        "ledger {at} is being written by record run {run} (intent phase, lease still renewed): waited until this \
         run's deadline; run restore again once record has finished"
    )]
    RecordInProgress {
        /// The ledger.
        at: LedgerRef,
        /// The recording run.
        run: String,
    },
    /// A request failed for good.
    #[error(transparent)]
    Api(#[from] Failure),
    /// The pause side could not finish.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// Writing the status failed.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// A Harvester upgrade is still running.
    #[error(
        "Harvester upgrade {} is still running (state {}): its charts are resumed by Harvester when it completes, \
         fails or is deleted, and unpausing them under it brings back the race the pause prevents; nothing was \
         patched (--ignore-running-upgrade overrides)",
        .0.name, .0.state.as_deref().unwrap_or("unknown")
    )]
    UpgradeRunning(RunningUpgrade),
    /// SIGTERM/SIGINT before the command could finish.
    #[error("terminated {0}")]
    Terminated(&'static str),
    /// Bad usage that clap could not catch.
    #[error("{0}")]
    Usage(String),
    /// No usable Kubernetes configuration.
    #[error("connecting to Kubernetes: {0}")]
    Config(#[from] ConfigError),
    /// Reading a file.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
}

impl From<PlanError> for RunError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Ledger(l) => RunError::InvalidLedger(l),
            PlanError::Api(f) => RunError::Api(f),
        }
    }
}

impl RunError {
    /// The exit code this error ends the process with.
    pub fn exit(&self) -> Exit {
        match self {
            RunError::LedgerMissing(_) => Exit::LedgerMissing,
            RunError::InvalidLedger(_) | RunError::UnmarkedRefused(_) => Exit::InvalidLedger,
            RunError::RecordInProgress { .. } => Exit::RecordInProgress,
            RunError::UpgradeRunning(_) => Exit::UpgradeRunning,
            RunError::Api(f) | RunError::Status(StatusError::Api(f)) => failure_exit(f),
            RunError::Status(_) => Exit::PartialFailure,
            RunError::Record(e) => match e {
                RecordError::Conflict { .. } => Exit::LedgerConflict,
                RecordError::ExistingInvalid { .. } => Exit::InvalidLedger,
                RecordError::RecordInProgress { .. } => Exit::RecordInProgress,
                RecordError::Api(f) => failure_exit(f),
                RecordError::Encode(_) => Exit::Error,
            },
            RunError::Terminated(_) => Exit::Terminated,
            RunError::Usage(_) => Exit::Usage,
            RunError::Config(_) | RunError::Read { .. } => Exit::Error,
        }
    }
}

/// The exit code of a request that failed for good: RBAC 5; out of time 6 (only when the
/// deadline really passed); anything else, an attempt budget spent included, 1.
pub fn failure_exit(f: &Failure) -> Exit {
    match (f.class(), f.stop) {
        (ErrorClass::Forbidden, _) => Exit::PermissionDenied,
        (_, Stop::Deadline) => Exit::Deadline,
        _ => Exit::Error,
    }
}
