//! The restore status written back to the ledger ConfigMap under its own key
//! ([`crate::ledger::STATUS_KEY`]), so the recorded set is never rewritten.
//!
//! Writes are compare-and-set on the ConfigMap's resourceVersion; on a lost race the status
//! is read again and merged, so concurrent runs each add their results and none is lost.

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::kinds::ObjectRef;
use crate::kube_access::{Access, ApiError, configmap_path};
use crate::ledger::{Ledger, LedgerRef, STATUS_KEY};
use crate::report::{EntryReport, Outcome};
use crate::retry::{Budget, ErrorClass, Policy, classify, with_retry};

/// Version tag of the status document.
pub const STATUS_VERSION: &str = "pause-ledger/status/v1";

/// Overall state of a ledger's restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Every entry settled (restored, already running, gone, not ours): reruns are no-ops.
    Done,
    /// Some entries failed or were skipped: a rerun will try them again.
    Incomplete,
}

/// The status document.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDoc {
    /// [`STATUS_VERSION`].
    pub version: String,
    /// The upgrade id of the ledger.
    pub upgrade: String,
    /// Digest of the recorded set this status describes.
    pub ledger_digest: String,
    /// Overall state.
    pub state: State,
    /// How many runs wrote this status.
    pub runs: u32,
    /// When the last run started.
    pub last_run_started_at: Timestamp,
    /// When the last run wrote.
    pub updated_at: Timestamp,
    /// The last run's exit code.
    pub last_exit_code: i32,
    /// Per-entry status.
    pub entries: Vec<EntryStatus>,
}

/// One entry's status.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryStatus {
    /// The object.
    pub object: ObjectRef,
    /// Latest outcome (a restore stays "restored" when a later run finds it running).
    pub outcome: Outcome,
    /// Attempts over all runs.
    pub attempts: u32,
    /// First attempt, over all runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<Timestamp>,
    /// Latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Timestamp>,
    /// When it was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<Timestamp>,
    /// Latest error, if the latest outcome is failed/skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Latest explanation (e.g. why not ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Parse a status document; `None` if absent or unreadable (it is ours to overwrite).
pub fn parse(data: Option<&str>) -> Option<StatusDoc> {
    let text = data?;
    match serde_saphyr::from_str::<StatusDoc>(text) {
        Ok(d) if d.version == STATUS_VERSION => Some(d),
        Ok(d) => {
            tracing::warn!(version = %d.version, "ignoring status of another version");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "ignoring unreadable {STATUS_KEY}");
            None
        }
    }
}

/// Whether a status says the ledger is fully restored.
pub fn is_done(doc: &StatusDoc, ledger: &Ledger) -> bool {
    doc.state == State::Done && doc.ledger_digest == ledger.digest
}

/// Merge this run's results into a previous status of the same ledger.
pub fn merge(
    prev: Option<StatusDoc>,
    ledger: &Ledger,
    results: &[EntryReport],
    started_at: Timestamp,
    exit_code: i32,
) -> StatusDoc {
    let prev = prev.filter(|p| p.ledger_digest == ledger.digest);
    let mut by_obj: HashMap<ObjectRef, EntryStatus> =
        prev.as_ref().map(|p| p.entries.iter().map(|e| (e.object.clone(), e.clone())).collect()).unwrap_or_default();
    let now = Timestamp::now();
    for r in results {
        let old = by_obj.remove(&r.object);
        let restored_at = (r.outcome == Outcome::Restored).then_some(now).or(old.as_ref().and_then(|o| o.restored_at));
        // A concurrent or earlier run restored it; this run found it running: keep "restored".
        let outcome =
            if r.outcome == Outcome::AlreadyRunning && restored_at.is_some() { Outcome::Restored } else { r.outcome };
        let attempted = r.attempts > 0;
        by_obj.insert(
            r.object.clone(),
            EntryStatus {
                object: r.object.clone(),
                outcome,
                attempts: old.as_ref().map_or(0, |o| o.attempts) + r.attempts,
                first_attempt_at: old.as_ref().and_then(|o| o.first_attempt_at).or(r.started_at),
                last_attempt_at: if attempted { Some(now) } else { old.as_ref().and_then(|o| o.last_attempt_at) },
                restored_at,
                last_error: r.error.clone(),
                detail: r.detail.clone(),
            },
        );
    }
    // Keep ledger order.
    let entries: Vec<EntryStatus> = ledger.entries.iter().filter_map(|e| by_obj.remove(&e.object)).collect();
    let done = entries.len() == ledger.entries.len() && entries.iter().all(|e| e.outcome.is_final());
    StatusDoc {
        version: STATUS_VERSION.to_string(),
        upgrade: ledger.upgrade.clone(),
        ledger_digest: ledger.digest.clone(),
        state: if done { State::Done } else { State::Incomplete },
        runs: prev.as_ref().map_or(0, |p| p.runs) + 1,
        last_run_started_at: started_at,
        updated_at: now,
        last_exit_code: exit_code,
        entries,
    }
}

/// Errors writing the status.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The API refused or failed.
    #[error("writing {STATUS_KEY}: {0}")]
    Api(#[from] ApiError),
    /// The ledger ConfigMap disappeared.
    #[error("writing {STATUS_KEY}: the ledger ConfigMap is gone")]
    Gone,
    /// Serialization failed.
    #[error("writing {STATUS_KEY}: {0}")]
    Encode(String),
}

/// What one run contributes to the status.
#[derive(Clone, Copy, Debug)]
pub struct RunResult<'a> {
    /// Per-entry results.
    pub results: &'a [EntryReport],
    /// When the run started.
    pub started_at: Timestamp,
    /// Its exit code.
    pub exit_code: i32,
}

/// Write (merge) this run's results into the ledger ConfigMap, compare-and-set.
pub async fn write(
    access: &Access,
    at: &LedgerRef,
    ledger: &Ledger,
    run: RunResult<'_>,
    policy: &Policy,
    budget: &Budget,
) -> Result<StatusDoc, StatusError> {
    let path = configmap_path(&at.namespace, &at.name);
    let target = format!("ConfigMap {at}");
    loop {
        let cm = with_retry(policy, budget, &format!("get {target}"), || access.get(&target, &path))
            .await?
            .ok_or(StatusError::Gone)?;
        let rv = cm.pointer("/metadata/resourceVersion").and_then(Value::as_str).unwrap_or_default().to_string();
        let prev = parse(cm.pointer(&format!("/data/{STATUS_KEY}")).and_then(Value::as_str));
        let doc = merge(prev, ledger, run.results, run.started_at, run.exit_code);
        let text = serde_saphyr::to_string(&doc).map_err(|e| StatusError::Encode(e.to_string()))?;
        let mut ops = vec![json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})];
        if cm.get("data").is_none_or(Value::is_null) {
            ops.push(json!({"op": "add", "path": "/data", "value": {}}));
        }
        ops.push(json!({"op": "add", "path": format!("/data/{STATUS_KEY}"), "value": text}));
        let patch = Value::Array(ops);
        let sent = with_retry(policy, budget, &format!("patch {target}"), || {
            access.json_patch(&target, &path, &patch, crate::ledger::DEFAULT_FIELD_MANAGER, false)
        })
        .await;
        match sent {
            Ok(_) => return Ok(doc),
            Err(e) if classify(&e) == ErrorClass::TestFailed && budget.take() => {
                tracing::debug!("ledger ConfigMap changed while writing status; merging again");
            }
            Err(e) => return Err(e.into()),
        }
    }
}
