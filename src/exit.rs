//! Exit codes (documented in README.md, docs/exit-codes.md and `--help`).

/// The process exit codes. Stable: CI pipelines and Helm hooks branch on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: every entry is restored or needs nothing (already running, gone, not ours); also
    /// "nothing to do" (status already done, or no ledger with `--if-missing=ok`).
    Success,
    /// 1: an unexpected error (bad kubeconfig, internal error).
    Error,
    /// 2: usage error (bad flags); clap's own code.
    Usage,
    /// 3: some entries failed (and none of the causes below applies).
    PartialFailure,
    /// 4: the ledger is invalid; nothing was patched.
    InvalidLedger,
    /// 5: RBAC refused a request; the message names the verb and resource.
    PermissionDenied,
    /// 6: the `--timeout` deadline passed before every entry was settled.
    Deadline,
    /// 7: terminated by SIGTERM/SIGINT; status written for what was done.
    Terminated,
    /// 8: no ledger ConfigMap and `--if-missing=fail`.
    LedgerMissing,
    /// 9: record refused: another upgrade's unrestored ledger is in the way.
    LedgerConflict,
}

impl Exit {
    /// The numeric code.
    pub fn code(self) -> i32 {
        match self {
            Exit::Success => 0,
            Exit::Error => 1,
            Exit::Usage => 2,
            Exit::PartialFailure => 3,
            Exit::InvalidLedger => 4,
            Exit::PermissionDenied => 5,
            Exit::Deadline => 6,
            Exit::Terminated => 7,
            Exit::LedgerMissing => 8,
            Exit::LedgerConflict => 9,
        }
    }

    /// A one-word name for reports.
    pub fn word(self) -> &'static str {
        match self {
            Exit::Success => "success",
            Exit::Error => "error",
            Exit::Usage => "usage",
            Exit::PartialFailure => "partial-failure",
            Exit::InvalidLedger => "invalid-ledger",
            Exit::PermissionDenied => "permission-denied",
            Exit::Deadline => "deadline-exceeded",
            Exit::Terminated => "terminated",
            Exit::LedgerMissing => "ledger-missing",
            Exit::LedgerConflict => "ledger-conflict",
        }
    }
}

/// The table printed in `--help`.
pub const EXIT_CODES_HELP: &str = "Exit codes:
  0  success: everything restored or nothing to do (already running, gone, not ours, no ledger with --if-missing=ok)
  1  unexpected error (kubeconfig, internal)
  2  usage error
  3  partial failure: some entries could not be restored
  4  invalid ledger: nothing was patched
  5  permission denied: RBAC refused a request (the message names verb and resource)
  6  deadline exceeded (--timeout)
  7  terminated by SIGTERM/SIGINT (status written)
  8  ledger missing with --if-missing=fail
  9  record refused: another upgrade's unrestored ledger exists (see --on-existing)";
