//! The pause side: pause a set of objects, mark each one, and record them in the ledger.
//!
//! Crash safety comes from the order of writes: (1) the ledger is written first with the
//! *intent* (every object about to be paused, and an `intent` marker that restore waits for),
//! (2) objects are paused and marked, each with a compare-and-set patch (and, for
//! `--on-existing=take-over`, the old upgrade's marks re-written), (3) the ledger is rewritten
//! with what actually happened. A crash after (1) leaves entries that are still running
//! (restore: already running) or paused and marked (restore: restored): no pause is ever made
//! that the ledger does not list.
//!
//! What record believes is the object's state, not the answers it got: an object that carries
//! this upgrade's mark is ours (our pause was applied even if its answer was lost), and an
//! entry whose pause may or may not have been applied stays in the ledger.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::Target;
use crate::context::Context;
use crate::kinds::ObjectRef;
use crate::ledger::{self, DEFAULT_FIELD_MANAGER, Entry, FORMAT_VERSION, Intent, Ledger, Ownership};
use crate::ledger_store::{LedgerStore, SettleError};
use crate::ownership::{Decision, Rule, decide, mark_pointer, pause_patch, pause_state};
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
    /// `--on-existing=take-over`: an old entry's mark was re-written to this upgrade's id.
    TakenOver,
    /// `--on-existing=take-over`: an old entry's mark could not be re-written; the ledger
    /// keeps the old id for it, so restore still restores it.
    NotTakenOver,
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
            RecordOutcome::TakenOver => "taken-over",
            RecordOutcome::NotTakenOver => "not-taken-over",
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
    /// Another `record` run kept its intent lease renewed until this run's deadline.
    #[error(
        "ledger {at} is being written by record run {run} (intent phase, lease still renewed): waited until this \
         run's deadline; nothing was paused, run record again once that run has finished"
    )]
    RecordInProgress {
        /// The ledger.
        at: String,
        /// The other recording run.
        run: String,
    },
    /// An API request failed.
    #[error(transparent)]
    Api(#[from] Failure),
    /// Encoding the ledger failed, or the ledger to be written would not be valid.
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
    /// This run's id (the intent names it).
    pub run_id: String,
}

/// How long after its last renewal the intent's lease holds: record sends no pause or mark
/// once it lapsed, so a restore that saw the intent unchanged for longer acts safely.
const LEASE: Duration = Duration::from_secs(10);
/// How often the lease is renewed while record works.
const RENEW: Duration = Duration::from_secs(3);

/// The intent's lease (see [`crate::ledger::Intent`]).
struct Lease<'a> {
    store: &'a LedgerStore,
    current: Mutex<Intent>,
    /// When the last successful renewal (or the intent write) was sent.
    renewed: Mutex<Instant>,
    lost: AtomicBool,
}

impl Lease<'_> {
    /// Whether writes may still be sent.
    fn holds(&self) -> bool {
        !self.lost.load(Ordering::Relaxed) && Instant::now() < *lock(&self.renewed) + LEASE
    }

    /// Renew every [`RENEW`] until `stop`; once the lease lapsed or the intent was changed by
    /// someone else, it is lost for good (writes stop even if the server comes back).
    async fn keep(&self, stop: &CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RENEW) => {}
                _ = stop.cancelled() => return,
            }
            if !self.holds() {
                tracing::warn!("the intent's lease lapsed: no further pauses in this run");
                self.lost.store(true, Ordering::Relaxed);
                return;
            }
            let current = lock(&self.current).clone();
            let next = Intent { beat: current.beat + 1, ..current.clone() };
            let sent = Instant::now();
            match self.store.renew(&current, &next).await {
                Ok(()) => {
                    *lock(&self.current) = next;
                    *lock(&self.renewed) = sent;
                }
                Err(f) if f.class() == ErrorClass::TestFailed => {
                    tracing::warn!("the intent was changed by someone else: no further pauses in this run");
                    self.lost.store(true, Ordering::Relaxed);
                    return;
                }
                Err(f) => tracing::debug!(error = %f, "renewing the intent failed; trying again"),
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The failure of a write not sent because the lease is gone.
fn lease_lost() -> Paused {
    Paused::Failed(PauseFailure {
        message: "not sent: this run's intent lease lapsed (the API server was unreachable too long, or another run \
                  changed the ledger); rerun record"
            .into(),
        denied: false,
    })
}

/// What record did, and the ledger it wrote (or, in a dry run, would write).
#[derive(Debug)]
pub struct Recorded {
    /// Per-object results: the targets, then take-over results of earlier entries.
    pub entries: Vec<RecordEntry>,
    /// The ledger text.
    pub ledger_yaml: String,
}

/// The state of the ledger ConfigMap before we write.
struct Existing {
    rv: String,
    ledger: Option<Ledger>,
}

/// What became of one target.
enum Paused {
    /// Paused and marked (by this run, or our earlier write whose answer was lost).
    Ours,
    /// Paused by someone else in the meantime: theirs.
    Theirs,
    /// Deleted in the meantime.
    Gone,
    /// Not known to be paused; the entry stays in the ledger.
    Failed(PauseFailure),
}

/// Record: write intent, pause and mark, confirm.
pub async fn record(
    ctx: &Context,
    store: &LedgerStore,
    plan: &Plan,
    opts: &RecordOptions,
) -> Result<Recorded, RecordError> {
    let existing = read_existing(store, opts, ctx.deadline()).await?;
    let prev = existing.as_ref().and_then(|e| e.ledger.as_ref());

    // Which id marks our pauses; which earlier entries (and their own rules) we keep.
    let upgrade = match prev {
        Some(p) if opts.on_existing == OnExisting::Merge && !p.upgrade.is_empty() => p.upgrade.clone(),
        _ => opts.upgrade.clone(),
    };
    let keep_prev = prev.filter(|p| p.upgrade == opts.upgrade || opts.on_existing != OnExisting::Refuse);
    let mut carried: Vec<Entry> = keep_prev.map(|p| carry(p, &upgrade)).unwrap_or_default();
    let before: Vec<Arc<ObjectRef>> = keep_prev.map(|p| p.paused_before.clone()).unwrap_or_default();
    let started_at = Timestamp::now();

    // Read every target and decide.
    let steps: Vec<&Step> = plan.steps().collect();
    let reads: Vec<Result<Option<Value>, Failure>> = futures::stream::iter(&steps)
        .map(|s| async move { ctx.get(&Target::object(&s.entry.object, &s.resolved)).await })
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    let carried_at: HashMap<_, usize> = carried.iter().enumerate().map(|(i, e)| (e.object.identity(), i)).collect();
    let mut results = Vec::with_capacity(steps.len());
    let mut to_pause: Vec<usize> = Vec::new();
    // Targets whose pause is about to be sent: in the intent, and never dropped from the
    // ledger unless the object shows it is not ours.
    let mut sending = vec![false; steps.len()];
    for (i, (s, got)) in steps.iter().zip(reads).enumerate() {
        let entry = |outcome, error: Option<String>, uid| RecordEntry {
            object: s.entry.object.clone(),
            outcome,
            error,
            uid,
            denied: false,
        };
        let r = match got {
            Err(f) if f.class() == ErrorClass::Forbidden => return Err(f.into()),
            Err(f) => entry(RecordOutcome::Failed, Some(f.to_string()), None),
            Ok(None) => entry(RecordOutcome::Gone, None, None),
            Ok(Some(obj)) => {
                let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string);
                // An earlier entry of this ledger may carry another of its marks.
                let carried_mark = carried_at.get(&s.entry.object.identity()).and_then(|&c| carried[c].mark.clone());
                match pause_state(&obj, &s.entry.field) {
                    Err(m) => entry(RecordOutcome::Failed, Some(m), uid),
                    Ok(st) if st.paused == Some(true) => {
                        let mark = st.mark.as_deref().unwrap_or_default();
                        let ours = !mark.is_empty() && (mark == upgrade || carried_mark.as_deref() == Some(mark));
                        entry(if ours { RecordOutcome::AlreadyOurs } else { RecordOutcome::PausedBefore }, None, uid)
                    }
                    Ok(_) => {
                        to_pause.push(i);
                        sending[i] = true;
                        entry(if opts.dry_run { RecordOutcome::WouldPause } else { RecordOutcome::Paused }, None, uid)
                    }
                }
            }
        };
        results.push(r);
    }

    // A run that pauses anything stamps the ledger with its own start, so the recorded set's
    // text, and its digest, change: a restore that read the ledger before these pauses saw
    // their objects running, and its status write (conditional on the digest) must not land.
    // Without this, re-recording the same upgrade wrote a byte-identical ledger.
    let paused_at = match keep_prev.and_then(|p| p.paused_at) {
        Some(t) if to_pause.is_empty() => t,
        _ => started_at,
    };

    // The ledger as it will stand: earlier entries, then ours; theirs under pausedBefore.
    let compose = |results: &[RecordEntry], carried: &[Entry]| {
        let mut entries = carried.to_vec();
        let mut before = before.clone();
        for ((s, r), sent) in steps.iter().zip(results).zip(&sending) {
            let listed = carried_at.get(&r.object.identity()).copied();
            let ours = match r.outcome {
                RecordOutcome::Paused | RecordOutcome::AlreadyOurs | RecordOutcome::WouldPause => true,
                // Sent, but not known to be applied: kept (restore finds it running if not).
                RecordOutcome::Failed => *sent,
                _ => false,
            };
            match listed {
                _ if !ours => {}
                None => entries.push(s.entry.clone()),
                // This run sends its own pause (our mark, our field manager): the earlier
                // entry's rule no longer describes it, and restore would call our pause
                // "re-paused by hand" and leave it paused.
                Some(c) if *sent => entries[c] = s.entry.clone(),
                Some(_) => {}
            }
            if r.outcome == RecordOutcome::PausedBefore
                && listed.is_none()
                && !before.iter().any(|b| b.identity() == r.object.identity())
            {
                before.push(r.object.clone());
            }
        }
        render(&upgrade, paused_at, &entries, &before)
    };

    if opts.dry_run {
        let yaml = compose(&results, &carried)?;
        return Ok(Recorded { entries: results, ledger_yaml: yaml });
    }

    // (1) intent, with a lease this run renews while it works.
    let expires = LEASE + ctx.access().request_timeout() + Duration::from_secs(5);
    let intent = Intent { run: opts.run_id.clone(), beat: 0, expires_after_seconds: expires.as_secs() };
    let intent_yaml = compose(&results, &carried)?;
    let sent = Instant::now();
    match existing.as_ref() {
        None => store.create(&intent_yaml, Some(&intent)).await?,
        Some(e) => store.replace(&e.rv, &intent_yaml, Some(&intent)).await?,
    };
    let lease = Lease { store, current: Mutex::new(intent), renewed: Mutex::new(sent), lost: AtomicBool::new(false) };

    // (2) take over the old marks, then pause and mark.
    let stop = CancellationToken::new();
    let work = async {
        let mut taken = Vec::new();
        if opts.on_existing == OnExisting::TakeOver && keep_prev.is_some_and(|p| p.upgrade != opts.upgrade) {
            for e in carried.iter_mut() {
                if let Some(r) = take_over(ctx, plan, e, &upgrade, &lease).await {
                    taken.push(r);
                }
            }
        }
        let (steps_ref, upgrade_ref, lease_ref) = (&steps, upgrade.as_str(), &lease);
        let paused: Vec<(usize, Paused)> = futures::stream::iter(to_pause.iter().copied())
            .map(|i| async move { (i, pause_one(ctx, steps_ref[i], upgrade_ref, lease_ref).await) })
            .buffer_unordered(opts.concurrency.max(1))
            .collect()
            .await;
        stop.cancel();
        (taken, paused)
    };
    let ((taken, paused), ()) = tokio::join!(work, lease.keep(&stop));
    for (i, p) in paused {
        let r = &mut results[i];
        match p {
            Paused::Ours => {}
            Paused::Theirs => r.outcome = RecordOutcome::PausedBefore,
            Paused::Gone => r.outcome = RecordOutcome::Gone,
            Paused::Failed(e) => {
                r.outcome = RecordOutcome::Failed;
                r.error = Some(e.message);
                r.denied = e.denied;
            }
        }
    }

    // (3) confirm.
    let confirmed = compose(&results, &carried)?;
    let current = lock(&lease.current).clone();
    let rv = store.confirm(&current, &confirmed).await?;
    tracing::debug!(resource_version = %rv, "ledger confirmed");
    results.extend(taken);
    Ok(Recorded { entries: results, ledger_yaml: confirmed })
}

/// An earlier ledger's entries, each keeping its own rule (mark, ownership, field manager)
/// where it differs from the ledger we write (`upgrade`, marked, the default manager).
fn carry(prev: &Ledger, upgrade: &str) -> Vec<Entry> {
    prev.entries
        .iter()
        .map(|e| {
            let mut e = e.clone();
            let mark = e.mark.clone().unwrap_or_else(|| prev.upgrade.as_str().into());
            e.mark = (!mark.is_empty() && &*mark != upgrade).then_some(mark);
            let ownership = e.ownership.unwrap_or(prev.ownership);
            e.ownership = (ownership != Ownership::Marked).then_some(ownership);
            let fm = e.field_manager.clone().unwrap_or_else(|| prev.field_manager.as_str().into());
            e.field_manager = (&*fm != DEFAULT_FIELD_MANAGER).then_some(fm);
            e.line = None;
            e
        })
        .collect()
}

async fn read_existing(
    store: &LedgerStore,
    opts: &RecordOptions,
    deadline: Instant,
) -> Result<Option<Existing>, RecordError> {
    let at = store.at();
    // Another record between its intent and its confirmation is waited for: writing over its
    // intent would let a restore in that finds its entries running and calls the ledger done
    // (history seed 310: I1/lost).
    let stored = match store.read_settled(deadline).await {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(None),
        Err(SettleError::Api(f)) => return Err(f.into()),
        Err(SettleError::RecordInProgress { run }) => {
            return Err(RecordError::RecordInProgress { at: at.to_string(), run });
        }
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

/// The ledger text; checked by parsing it back, so record never writes a ledger restore
/// would refuse.
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
        #[serde(skip_serializing_if = "Option::is_none")]
        upgrade: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        ownership: Option<Ownership>,
        #[serde(skip_serializing_if = "Option::is_none")]
        field_manager: Option<&'a str>,
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
                upgrade: e.mark.as_deref(),
                ownership: e.ownership,
                field_manager: e.field_manager.as_deref(),
            })
            .collect(),
        paused_before: before,
    };
    let text = serde_saphyr::to_string(&doc).map_err(|e| RecordError::Encode(e.to_string()))?;
    let mut data = std::collections::BTreeMap::from([(ledger::LEDGER_KEY.to_string(), text)]);
    if let Err(e) = ledger::parse_configmap_data(&data) {
        return Err(RecordError::Encode(format!("the ledger to be written is not valid: {e}")));
    }
    Ok(data.remove(ledger::LEDGER_KEY).unwrap_or_default())
}

/// Pause and mark one object, deciding by what the object shows, not by the answers: after a
/// lost answer the retry finds our own write (resourceVersion moved, mark ours).
async fn pause_one(ctx: &Context, s: &Step, upgrade: &str, lease: &Lease<'_>) -> Paused {
    let target = Target::object(&s.entry.object, &s.resolved);
    let budget = ctx.budget();
    let failed = |f: Failure| {
        Paused::Failed(PauseFailure { message: f.to_string(), denied: f.class() == ErrorClass::Forbidden })
    };
    loop {
        let obj = match ctx.get_in(&budget, &target).await {
            Ok(Some(o)) => o,
            Ok(None) => return Paused::Gone,
            Err(f) => return failed(f),
        };
        let patch = match pause_patch(&obj, &s.entry.field, upgrade) {
            Ok(Some(p)) => p,
            // Paused: by our own write (its answer lost), or by someone else meanwhile.
            Ok(None) => {
                let mark = pause_state(&obj, &s.entry.field).ok().and_then(|st| st.mark);
                return if mark.as_deref() == Some(upgrade) { Paused::Ours } else { Paused::Theirs };
            }
            Err(m) => return Paused::Failed(PauseFailure { message: m, denied: false }),
        };
        if !lease.holds() {
            return lease_lost();
        }
        match ctx.patch_in(&budget, &target, &patch, DEFAULT_FIELD_MANAGER, false).await {
            Ok(_) => return Paused::Ours,
            Err(f) if f.class() == ErrorClass::TestFailed && budget.take() => continue,
            Err(f) if f.class() == ErrorClass::NotFound => return Paused::Gone,
            Err(f) => return failed(f),
        }
    }
}

/// Why one object could not be paused.
struct PauseFailure {
    message: String,
    denied: bool,
}

/// Take-over: re-write an earlier entry's mark to `upgrade` where its pause is still that
/// upgrade's, with the same retries as pausing. `e.mark` is cleared when it now carries ours.
/// `None` when there was nothing to take over (not paused, not that upgrade's).
async fn take_over(ctx: &Context, plan: &Plan, e: &mut Entry, upgrade: &str, lease: &Lease<'_>) -> Option<RecordEntry> {
    let old = e.mark.clone()?;
    if e.ownership.unwrap_or(Ownership::Marked) != Ownership::Marked {
        return None;
    }
    let report = |outcome, error| RecordEntry { object: e.object.clone(), outcome, error, uid: None, denied: false };
    // The old entry's kind may not be among our targets: resolve it the same way.
    let resolved = match plan
        .steps()
        .find(|s| s.entry.object.api_version == e.object.api_version && s.entry.object.kind == e.object.kind)
    {
        Some(s) => s.resolved.clone(),
        None => match ctx.resolve(&e.object.api_version, &e.object.kind).await {
            Ok(Some(r)) => Arc::new(r),
            Ok(None) => return Some(report(RecordOutcome::NotTakenOver, Some("its kind is not served".into()))),
            Err(f) => return Some(report(RecordOutcome::NotTakenOver, Some(f.to_string()))),
        },
    };
    let target = Target::object(&e.object, &resolved);
    let budget = ctx.budget();
    let fm = e.field_manager.clone().unwrap_or_else(|| DEFAULT_FIELD_MANAGER.into());
    let rule = Rule { ownership: Ownership::Marked, marks: [&old, ""], field_manager: &fm };
    loop {
        let obj = match ctx.get_in(&budget, &target).await {
            Ok(Some(o)) => o,
            Ok(None) => return None,
            Err(f) => return Some(report(RecordOutcome::NotTakenOver, Some(f.to_string()))),
        };
        let Ok(st) = pause_state(&obj, &e.field) else { return None };
        if st.mark.as_deref() == Some(upgrade) {
            // Already ours: our earlier write whose answer was lost.
            e.mark = None;
            return Some(report(RecordOutcome::TakenOver, None));
        }
        if !matches!(decide(&st, &e.field, &rule), Decision::Restore { .. }) {
            return None;
        }
        if !lease.holds() {
            return Some(report(RecordOutcome::NotTakenOver, Some("not sent: this run's intent lease lapsed".into())));
        }
        let patch = json!([
            {"op": "test", "path": "/metadata/resourceVersion", "value": st.resource_version},
            {"op": "test", "path": mark_pointer(), "value": &*old},
            {"op": "replace", "path": mark_pointer(), "value": upgrade},
        ]);
        match ctx.patch_in(&budget, &target, &patch, &fm, false).await {
            Ok(_) => {
                e.mark = None;
                return Some(report(RecordOutcome::TakenOver, None));
            }
            Err(f) if f.class() == ErrorClass::TestFailed && budget.take() => continue,
            Err(f) => {
                tracing::warn!(object = %target.name, error = %f, "could not take over the mark; the ledger keeps the old id for it");
                return Some(report(RecordOutcome::NotTakenOver, Some(f.to_string())));
            }
        }
    }
}
