//! The result model: what happened to each entry ([`Outcome`], [`Cause`], [`EntryReport`])
//! and the exit code the outcomes add up to.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::exit::Exit;
use crate::kinds::{FieldPath, ObjectRef};

/// What happened to one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Unpaused by this run (pause cleared and mark removed, atomically).
    Restored,
    /// Dry run: the server accepted the restore patch with dryRun=All; nothing changed.
    WouldRestore,
    /// Not paused (any more): nothing to do.
    AlreadyRunning,
    /// The object no longer exists (404).
    Gone,
    /// Paused, but not by this upgrade: left paused.
    NotOurs,
    /// Could not be restored; see the error.
    Failed,
    /// Not attempted: terminated, deadline reached, or an earlier order failed.
    Skipped,
    /// ManagedChart unpaused, but Rancher did not carry it into Bundle `mcc-<name>` in time.
    NotPropagated,
    /// Restored, then paused again by someone else within the settle window: left paused.
    Repaused,
}

impl Outcome {
    /// Whether the entry needs no further run.
    pub fn is_final(self) -> bool {
        matches!(self, Outcome::Restored | Outcome::AlreadyRunning | Outcome::Gone | Outcome::NotOurs)
    }

    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Restored => "restored",
            Outcome::WouldRestore => "would-restore",
            Outcome::AlreadyRunning => "already-running",
            Outcome::Gone => "gone",
            Outcome::NotOurs => "not-ours",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
            Outcome::NotPropagated => "not-propagated",
            Outcome::Repaused => "repaused",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an entry failed or was skipped, for the exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Cause {
    /// RBAC refused a request.
    PermissionDenied,
    /// The overall deadline was reached.
    Deadline,
    /// SIGTERM/SIGINT.
    Terminated,
    /// An earlier order had failures.
    Blocked,
    /// Unpaused, but the change did not reach the Fleet Bundle.
    NotPropagated,
    /// `--wait-ready --fail-on-not-ready` and the object did not become ready.
    NotReady,
    /// Anything else.
    Error,
}

/// One entry's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryReport {
    /// The object.
    pub object: Arc<ObjectRef>,
    /// Its pause field.
    pub field: FieldPath,
    /// Its order.
    pub order: i32,
    /// What happened.
    pub outcome: Outcome,
    /// Requests and re-decisions spent on it.
    pub attempts: u32,
    /// Wall time spent on it.
    pub duration_ms: u64,
    /// When work on it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// The last error, for failed/skipped entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failure/skip cause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<Cause>,
    /// Extra explanation (e.g. why not ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// metadata.generation after our patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// This run's patch unpaused it (whatever verification found afterwards).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpaused: bool,
    /// status.observedGeneration read right before our patch (readiness must see it grow).
    #[serde(default, rename = "observedGenerationBefore", skip_serializing_if = "Option::is_none")]
    pub observed_before: Option<i64>,
    /// metadata.uid (for Events).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// ManagedCharts: whether Rancher carried the unpause into Bundle `mcc-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagated: Option<bool>,
    /// With `--wait-ready`: Ready=True at observedGeneration ≥ our generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// The Ready condition's message when not ready or not propagated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_message: Option<String>,
    /// Times it was found paused again in the settle window.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub repaused: u32,
}

impl EntryReport {
    /// A report for `object` with `outcome` and nothing else filled in.
    pub fn new(object: Arc<ObjectRef>, field: FieldPath, order: i32, outcome: Outcome) -> Self {
        Self {
            object,
            field,
            order,
            outcome,
            attempts: 0,
            duration_ms: 0,
            started_at: None,
            error: None,
            cause: None,
            detail: None,
            generation: None,
            unpaused: false,
            observed_before: None,
            uid: None,
            propagated: None,
            ready: None,
            ready_message: None,
            repaused: 0,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The exit code entry results add up to (invalid ledger / missing ledger are decided earlier).
pub fn exit_for(entries: &[EntryReport]) -> Exit {
    let causes: Vec<Cause> = entries
        .iter()
        .filter(|e| {
            matches!(e.outcome, Outcome::Failed | Outcome::Skipped | Outcome::NotPropagated)
                || e.cause == Some(Cause::NotReady)
        })
        .map(|e| e.cause.unwrap_or(Cause::Error))
        .collect();
    if causes.is_empty() {
        Exit::Success
    } else if causes.contains(&Cause::Terminated) {
        Exit::Terminated
    } else if causes.contains(&Cause::PermissionDenied) {
        Exit::PermissionDenied
    } else if causes.contains(&Cause::Deadline) {
        Exit::Deadline
    } else {
        Exit::PartialFailure
    }
}

/// Count outcomes.
pub fn summarize(entries: &[EntryReport]) -> BTreeMap<Outcome, usize> {
    let mut m = BTreeMap::new();
    for e in entries {
        *m.entry(e.outcome).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(outcome: Outcome, cause: Option<Cause>) -> EntryReport {
        let object = ObjectRef { api_version: "v1".into(), kind: "K".into(), namespace: None, name: "n".into() };
        EntryReport { cause, ..EntryReport::new(object.into(), FieldPath::parse("spec.paused").unwrap(), 0, outcome) }
    }

    #[test]
    fn exit_codes() {
        assert_eq!(
            exit_for(&[e(Outcome::Restored, None), e(Outcome::NotOurs, None), e(Outcome::Gone, None)]),
            Exit::Success
        );
        assert_eq!(exit_for(&[e(Outcome::Failed, Some(Cause::Error))]), Exit::PartialFailure);
        assert_eq!(
            exit_for(&[e(Outcome::Failed, Some(Cause::PermissionDenied)), e(Outcome::Failed, None)]),
            Exit::PermissionDenied
        );
        assert_eq!(exit_for(&[e(Outcome::Skipped, Some(Cause::Deadline))]), Exit::Deadline);
        assert_eq!(
            exit_for(&[
                e(Outcome::Skipped, Some(Cause::Terminated)),
                e(Outcome::Failed, Some(Cause::PermissionDenied))
            ]),
            Exit::Terminated
        );
    }

    #[test]
    fn outcome_names_match_serde() {
        for o in [
            Outcome::Restored,
            Outcome::WouldRestore,
            Outcome::AlreadyRunning,
            Outcome::Gone,
            Outcome::NotOurs,
            Outcome::Failed,
            Outcome::Skipped,
        ] {
            assert_eq!(serde_json::to_value(o).unwrap(), serde_json::json!(o.as_str()));
        }
    }
}
