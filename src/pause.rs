//! The pause side: pause a set of objects, mark each one, and record them in the ledger.
//!
//! Crash safety comes from the order of writes: (1) the ledger is written first with the
//! *intent* (every object about to be paused), (2) objects are paused and marked, each with a
//! compare-and-set patch, (3) the ledger is rewritten with what actually happened. A crash after
//! (1) leaves entries that are still running (restore: already running) or paused and marked
//! (restore: restored): no pause is ever made that the ledger does not list.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::StreamExt;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};

use crate::api::Target;
use crate::context::Context;
use crate::kinds::ObjectRef;
use crate::ledger::{self, Entry, FORMAT_VERSION, Ledger};
use crate::ledger_store::LedgerStore;
use crate::ownership::{Decision, decide, mark_pointer, pause_patch, pause_state};
use crate::plan::{Plan, Step};
use crate::retry::{ErrorClass, Failure};
use crate::status_doc;

/// What to do when the ledger already holds an unrestored ledger of another upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExisting {
    /// Refuse (exit 9): two upgrades must not share or overwrite one ledger by accident.
    Refuse,
    /// Add to the existing ledger, keeping its upgrade id (new pauses are marked with it).
    Merge,
    /// Make the ledger ours: new upgrade id, and the old entries' marks re-written to it.
    TakeOver,
}

/// What record did with one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordOutcome {
    /// Paused and marked by this run.
    Paused,
    /// Already paused and marked by this upgrade (a rerun): kept.
    AlreadyOurs,
    /// Already paused by someone else: listed under pausedBefore, never restored.
    PausedBefore,
    /// Does not exist.
    Gone,
    /// Could not be paused.
    Failed,
    /// Dry run: would be paused.
    WouldPause,
}

/// One object's record result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordEntry {
    /// The object.
    pub object: Arc<ObjectRef>,
    /// What happened.
    pub outcome: RecordOutcome,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// metadata.uid, for Events.
    #[serde(skip)]
    pub uid: Option<String>,
    /// The failure was RBAC's (or an admission webhook's) refusal.
    #[serde(skip)]
    pub denied: bool,
}

impl RecordOutcome {
    /// The kebab-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordOutcome::Paused => "paused",
            RecordOutcome::AlreadyOurs => "already-ours",
            RecordOutcome::PausedBefore => "paused-before",
            RecordOutcome::Gone => "gone",
            RecordOutcome::Failed => "failed",
            RecordOutcome::WouldPause => "would-pause",
        }
    }
}

/// Why record stopped before pausing anything.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Another upgrade's unrestored ledger is in the way.
    #[error(
        "ledger {at} holds upgrade {existing:?}, which is not restored yet; refusing to record upgrade {ours:?} \
         (run `pause-ledger restore --ledger {at}` first, or pass --on-existing=merge|take-over)"
    )]
    Conflict {
        /// The ledger.
        at: String,
        /// Its upgrade.
        existing: String,
        /// Ours.
        ours: String,
    },
    /// The existing ledger is invalid.
    #[error("ledger {at} exists but is invalid (fix or delete it, or pass --on-existing=take-over): {source}")]
    ExistingInvalid {
        /// The ledger.
        at: String,
        /// Why.
        source: ledger::LedgerError,
    },
    /// An API request failed.
    #[error(transparent)]
    Api(#[from] Failure),
    /// Encoding the ledger failed.
    #[error("encoding the ledger: {0}")]
    Encode(String),
}

/// Settings.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    /// This upgrade's id.
    pub upgrade: String,
    /// Refuse, merge or take over.
    pub on_existing: OnExisting,
    /// Read and decide, pause nothing, write nothing.
    pub dry_run: bool,
    /// Objects paused at once.
    pub concurrency: usize,
}

/// The state of the ledger ConfigMap before we write.
struct Existing {
    rv: String,
    ledger: Option<Ledger>,
}

/// Record: write intent, pause and mark, confirm. Returns per-object results and the ledger.
pub async fn record(
    ctx: &Context,
    store: &LedgerStore,
    plan: &Plan,
    opts: &RecordOptions,
) -> Result<(Vec<RecordEntry>, String), RecordError> {
    let existing = read_existing(store, opts).await?;
    let prev = existing.as_ref().and_then(|e| e.ledger.clone());

    // Which id marks our pauses, and which old marks must be re-written (take-over).
    let mut upgrade = opts.upgrade.clone();
    let mut retake: Vec<Entry> = Vec::new();
    if let Some(p) = &prev
        && p.upgrade != opts.upgrade
    {
        match opts.on_existing {
            OnExisting::Merge => upgrade = p.upgrade.clone(),
            OnExisting::TakeOver => retake = p.entries.clone(),
            OnExisting::Refuse => {} // only reached when the old ledger is restored (read_existing)
        }
    }
    let keep_prev = prev.as_ref().is_some_and(|p| p.upgrade == upgrade || opts.on_existing != OnExisting::Refuse);

    // Read every target and decide.
    let steps: Vec<&Step> = plan.steps().collect();
    let reads: Vec<(&Step, Result<Option<Value>, Failure>)> = futures::stream::iter(steps)
        .map(|s| async move { (s, ctx.get(&Target::object(&s.entry.object, &s.resolved)).await) })
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    let mut results = Vec::new();
    let mut to_pause: Vec<&Step> = Vec::new();
    for (s, got) in reads {
        let object = s.entry.object.clone();
        let entry = |outcome, error: Option<String>, uid| RecordEntry {
            object: object.clone(),
            outcome,
            error,
            uid,
            denied: false,
        };
        match got {
            Err(e) if e.class() == ErrorClass::Forbidden => return Err(e.into()),
            Err(e) => results.push(entry(RecordOutcome::Failed, Some(e.to_string()), None)),
            Ok(None) => results.push(entry(RecordOutcome::Gone, None, None)),
            Ok(Some(obj)) => {
                let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string);
                match pause_state(&obj, &s.entry.field) {
                    Err(m) => results.push(entry(RecordOutcome::Failed, Some(m), uid)),
                    Ok(st) if st.paused == Some(true) => {
                        let ours = matches!(
                            decide(
                                &st,
                                &s.entry.field,
                                &upgrade,
                                ledger::Ownership::Marked,
                                ledger::DEFAULT_FIELD_MANAGER
                            ),
                            Decision::Restore { .. }
                        );
                        let outcome = if ours { RecordOutcome::AlreadyOurs } else { RecordOutcome::PausedBefore };
                        results.push(entry(outcome, None, uid));
                    }
                    Ok(_) => {
                        to_pause.push(s);
                        results.push(entry(
                            if opts.dry_run { RecordOutcome::WouldPause } else { RecordOutcome::Paused },
                            None,
                            uid,
                        ));
                    }
                }
            }
        }
    }
    let pausing: BTreeSet<Arc<ObjectRef>> = to_pause.iter().map(|s| s.entry.object.clone()).collect();
    let by_obj: BTreeMap<Arc<ObjectRef>, &Entry> = plan.steps().map(|s| (s.entry.object.clone(), &s.entry)).collect();
    let compose = |results: &[RecordEntry], intent: bool| -> Result<String, RecordError> {
        let mut entries: Vec<Entry> =
            if keep_prev { prev.as_ref().map(|p| p.entries.clone()).unwrap_or_default() } else { vec![] };
        let mut before: Vec<Arc<ObjectRef>> =
            if keep_prev { prev.as_ref().map(|p| p.paused_before.clone()).unwrap_or_default() } else { vec![] };
        for r in results {
            let listed = entries.iter().any(|e| e.object.identity() == r.object.identity());
            let want = match r.outcome {
                RecordOutcome::Paused | RecordOutcome::AlreadyOurs => true,
                RecordOutcome::Failed => intent && pausing.contains(&r.object),
                _ => false,
            };
            if want
                && !listed
                && let Some(e) = by_obj.get(&r.object)
            {
                entries.push((*e).clone());
            }
            if r.outcome == RecordOutcome::PausedBefore
                && !listed
                && !before.iter().any(|b| b.identity() == r.object.identity())
            {
                before.push(r.object.clone());
            }
        }
        let paused_at = prev.as_ref().filter(|_| keep_prev).and_then(|p| p.paused_at).unwrap_or_else(Timestamp::now);
        render(&upgrade, paused_at, &entries, &before)
    };

    if opts.dry_run {
        let yaml = compose(&results, false)?;
        return Ok((results, yaml));
    }

    // Take-over: re-mark the old upgrade's pauses with our id, each compare-and-set.
    for e in &retake {
        retake_mark(ctx, plan, e, &prev, &upgrade).await;
    }

    // (1) intent.
    let intent = compose(&results, true)?;
    let mut rv = match existing.as_ref() {
        None => store.create(&intent).await?,
        Some(e) => store.replace(&e.rv, &intent).await?,
    };

    // (2) pause and mark.
    let paused: Vec<(Arc<ObjectRef>, Result<(), PauseFailure>, bool)> = futures::stream::iter(to_pause)
        .map(|s| pause_one(ctx, s, &upgrade))
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    for (object, res, taken_by_other) in paused {
        if let Some(r) = results.iter_mut().find(|r| r.object == object) {
            match res {
                Ok(()) => {}
                Err(_) if taken_by_other => r.outcome = RecordOutcome::PausedBefore,
                Err(e) => {
                    r.outcome = RecordOutcome::Failed;
                    r.error = Some(e.message);
                    r.denied = e.denied;
                }
            }
        }
    }

    // (3) confirm.
    let confirmed = compose(&results, false)?;
    if confirmed != intent {
        rv = store.replace(&rv, &confirmed).await?;
    }
    tracing::debug!(resource_version = %rv, "ledger confirmed");
    Ok((results, confirmed))
}

async fn read_existing(store: &LedgerStore, opts: &RecordOptions) -> Result<Option<Existing>, RecordError> {
    let at = store.at();
    let Some(stored) = store.read().await? else {
        return Ok(None);
    };
    let rv = stored.resource_version;
    if stored.data.is_empty() {
        return Ok(Some(Existing { rv, ledger: None }));
    }
    let parsed = match ledger::parse_configmap_data(&stored.data) {
        Ok(l) => l,
        Err(source) if opts.on_existing == OnExisting::TakeOver => {
            tracing::warn!(error = %source, "taking over an invalid ledger");
            return Ok(Some(Existing { rv, ledger: None }));
        }
        Err(source) => return Err(RecordError::ExistingInvalid { at: at.to_string(), source }),
    };
    let restored = status_doc::parse(stored.status.as_deref()).is_some_and(|s| status_doc::is_done(&s, &parsed));
    if parsed.upgrade != opts.upgrade {
        if restored {
            // The previous cycle is complete: its ledger may be replaced.
            tracing::info!(previous = %parsed.upgrade, "replacing the restored ledger of a previous upgrade");
            return Ok(Some(Existing { rv, ledger: None }));
        }
        if opts.on_existing == OnExisting::Refuse {
            return Err(RecordError::Conflict {
                at: at.to_string(),
                existing: parsed.upgrade,
                ours: opts.upgrade.clone(),
            });
        }
    }
    Ok(Some(Existing { rv, ledger: Some(parsed) }))
}

fn render(
    upgrade: &str,
    paused_at: Timestamp,
    entries: &[Entry],
    before: &[Arc<ObjectRef>],
) -> Result<String, RecordError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Out<'a> {
        api_version: &'a str,
        kind: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<&'a str>,
        name: &'a str,
        field: &'a str,
        order: i32,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Doc<'a> {
        version: &'a str,
        upgrade: &'a str,
        paused_at: String,
        ownership: &'a str,
        entries: Vec<Out<'a>>,
        #[serde(skip_serializing_if = "<[Arc<ObjectRef>]>::is_empty")]
        paused_before: &'a [Arc<ObjectRef>],
    }
    let doc = Doc {
        version: FORMAT_VERSION,
        upgrade,
        paused_at: paused_at.to_string(),
        ownership: "marked",
        entries: entries
            .iter()
            .map(|e| Out {
                api_version: &e.object.api_version,
                kind: &e.object.kind,
                namespace: e.object.namespace.as_deref(),
                name: &e.object.name,
                field: e.field.as_str(),
                order: e.order,
            })
            .collect(),
        paused_before: before,
    };
    serde_saphyr::to_string(&doc).map_err(|e| RecordError::Encode(e.to_string()))
}

/// Pause and mark one object; `(object, result, paused by someone else meanwhile)`.
async fn pause_one(ctx: &Context, s: &Step, upgrade: &str) -> (Arc<ObjectRef>, Result<(), PauseFailure>, bool) {
    let object = s.entry.object.clone();
    let target = Target::object(&object, &s.resolved);
    let budget = ctx.budget();
    let failed = |f: Failure| PauseFailure { message: f.to_string(), denied: f.class() == ErrorClass::Forbidden };
    loop {
        let obj = match ctx.get_in(&budget, &target).await {
            Ok(Some(o)) => o,
            Ok(None) => return (object, Err(PauseFailure::other("deleted before it could be paused")), false),
            Err(f) => return (object, Err(failed(f)), false),
        };
        let patch = match pause_patch(&obj, &s.entry.field, upgrade) {
            Ok(Some(p)) => p,
            // Paused between our read and now, by someone else: theirs, not ours.
            Ok(None) => return (object, Err(PauseFailure::other("paused by someone else meanwhile")), true),
            Err(m) => return (object, Err(PauseFailure::other(m)), false),
        };
        match ctx.patch_in(&budget, &target, &patch, ledger::DEFAULT_FIELD_MANAGER, false).await {
            Ok(_) => return (object, Ok(()), false),
            Err(f) if f.class() == ErrorClass::TestFailed && budget.take() => continue,
            Err(f) => return (object, Err(failed(f)), false),
        }
    }
}

/// Why one object could not be paused.
struct PauseFailure {
    message: String,
    denied: bool,
}

impl PauseFailure {
    fn other(message: impl Into<String>) -> Self {
        Self { message: message.into(), denied: false }
    }
}

/// Take-over: re-write the old upgrade's mark to ours where the pause is still the old upgrade's.
async fn retake_mark(ctx: &Context, plan: &Plan, e: &Entry, prev: &Option<Ledger>, upgrade: &str) {
    let Some(old) = prev.as_ref() else { return };
    // The old entry's kind may not be among our targets: resolve it the same way.
    let resolved = match plan
        .steps()
        .find(|s| s.entry.object.api_version == e.object.api_version && s.entry.object.kind == e.object.kind)
    {
        Some(s) => s.resolved.clone(),
        None => match ctx.resolve(&e.object.api_version, &e.object.kind).await {
            Ok(Some(r)) => Arc::new(r),
            _ => return,
        },
    };
    let target = Target::object(&e.object, &resolved);
    let Ok(Some(obj)) = ctx.get(&target).await else {
        return;
    };
    let Ok(st) = pause_state(&obj, &e.field) else { return };
    if !matches!(decide(&st, &e.field, &old.upgrade, old.ownership, &old.field_manager), Decision::Restore { .. }) {
        return;
    }
    let patch = json!([
        {"op": "test", "path": "/metadata/resourceVersion", "value": st.resource_version},
        {"op": "add", "path": mark_pointer(), "value": upgrade},
    ]);
    if let Err(err) =
        ctx.access().json_patch(&target.name, &target.path, &patch, ledger::DEFAULT_FIELD_MANAGER, false).await
    {
        tracing::warn!(object = %target.name, error = %err, "could not take over the mark; it stays the old upgrade's");
    }
}
