//! Exit codes: the one table that `--help`, docs/report.md and the chart's `failFastExitCodes`
//! are checked against (tests/exit_codes.rs).

use std::sync::LazyLock;

/// The process exit codes. Stable: CI pipelines and Helm hooks branch on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// 0: every entry is restored or needs nothing; also "nothing to do".
    Success,
    /// 1: an unexpected error, or a request that kept failing until its attempt budget was spent.
    Error,
    /// 2: usage error (bad flags, or `rescue` without the acknowledgement).
    Usage,
    /// 3: some entries failed (and none of the causes below applies).
    PartialFailure,
    /// 4: the ledger is invalid (or refused); nothing was patched.
    InvalidLedger,
    /// 5: RBAC refused a request; the message names the verb and resource.
    PermissionDenied,
    /// 6: the `--timeout` deadline passed before the run could finish.
    Deadline,
    /// 7: terminated by SIGTERM/SIGINT; status written for what was done.
    Terminated,
    /// 8: no ledger ConfigMap and `--if-missing=fail`.
    LedgerMissing,
    /// 9: record refused: another upgrade's unrestored ledger is in the way.
    LedgerConflict,
    /// 10: restore or record waited for a `record` still writing the ledger, until its own deadline.
    RecordInProgress,
    /// 11: a Harvester upgrade is still running: its charts are not unpaused under it.
    UpgradeRunning,
}

/// One row of the exit-code table.
#[derive(Clone, Copy, Debug)]
pub struct ExitInfo {
    /// The exit.
    pub exit: Exit,
    /// Its numeric code.
    pub code: i32,
    /// The one-word result in reports.
    pub word: &'static str,
    /// What it means (one line, for `--help`).
    pub meaning: &'static str,
    /// A rerun cannot change the result: the chart's Job fails at once (`failFastExitCodes`).
    pub fail_fast: bool,
}

/// Every exit code, in code order.
pub const EXIT_CODES: [ExitInfo; 12] = [
    ExitInfo {
        exit: Exit::Success,
        code: 0,
        word: "success",
        meaning: "everything restored or nothing to do (already running, gone, not ours, no ledger with --if-missing=ok)",
        fail_fast: false,
    },
    ExitInfo {
        exit: Exit::Error,
        code: 1,
        word: "error",
        meaning: "unexpected error (kubeconfig, internal), or a request kept failing until --max-attempts were spent",
        fail_fast: false,
    },
    ExitInfo {
        exit: Exit::Usage,
        code: 2,
        word: "usage",
        meaning: "usage error (bad flags; rescue without --acknowledge-unknown-ownership)",
        fail_fast: true,
    },
    ExitInfo {
        exit: Exit::PartialFailure,
        code: 3,
        word: "partial-failure",
        meaning: "partial failure: some entries could not be restored",
        fail_fast: false,
    },
    ExitInfo {
        exit: Exit::InvalidLedger,
        code: 4,
        word: "invalid-ledger",
        meaning: "invalid ledger: nothing was patched",
        fail_fast: true,
    },
    ExitInfo {
        exit: Exit::PermissionDenied,
        code: 5,
        word: "permission-denied",
        meaning: "permission denied: RBAC refused a request (the message names verb and resource)",
        fail_fast: true,
    },
    ExitInfo {
        exit: Exit::Deadline,
        code: 6,
        word: "deadline-exceeded",
        meaning: "deadline exceeded (--timeout)",
        fail_fast: true,
    },
    ExitInfo {
        exit: Exit::Terminated,
        code: 7,
        word: "terminated",
        meaning: "terminated by SIGTERM/SIGINT (status written)",
        fail_fast: false,
    },
    ExitInfo {
        exit: Exit::LedgerMissing,
        code: 8,
        word: "ledger-missing",
        meaning: "ledger missing with --if-missing=fail",
        fail_fast: true,
    },
    ExitInfo {
        exit: Exit::LedgerConflict,
        code: 9,
        word: "ledger-conflict",
        meaning: "record refused: another upgrade's unrestored ledger exists (see --on-existing)",
        fail_fast: true,
    },
    ExitInfo {
        exit: Exit::RecordInProgress,
        code: 10,
        word: "record-in-progress",
        meaning: "a record run is still writing the ledger (its intent phase) and did not finish before --timeout",
        fail_fast: false,
    },
    ExitInfo {
        exit: Exit::UpgradeRunning,
        code: 11,
        word: "upgrade-running",
        meaning: "a Harvester upgrade is still running: nothing unpaused under it (see --ignore-running-upgrade)",
        fail_fast: true,
    },
];

impl Exit {
    /// This exit's row of the table.
    pub fn info(self) -> &'static ExitInfo {
        // Every variant has a row (tests check the table is complete).
        EXIT_CODES.iter().find(|i| i.exit == self).unwrap_or(&EXIT_CODES[1])
    }

    /// The numeric code.
    pub fn code(self) -> i32 {
        self.info().code
    }

    /// A one-word name for reports.
    pub fn word(self) -> &'static str {
        self.info().word
    }

    /// The exit with this numeric code.
    pub fn from_code(code: i32) -> Option<Exit> {
        EXIT_CODES.iter().find(|i| i.code == code).map(|i| i.exit)
    }
}

/// The table printed in `--help`, built from [`EXIT_CODES`].
pub fn help_text() -> &'static str {
    static TEXT: LazyLock<String> = LazyLock::new(|| {
        let mut s = String::from("Exit codes:");
        for i in &EXIT_CODES {
            s.push_str(&format!("\n  {:<2} {}", i.code, i.meaning));
        }
        s
    });
    &TEXT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_complete_and_in_order() {
        for (n, i) in EXIT_CODES.iter().enumerate() {
            assert_eq!(i.code, n as i32, "{i:?}");
            assert_eq!(i.exit.info().code, i.code);
        }
        assert!(help_text().contains("9  record refused"));
    }
}
