//! The restore engine: runs a plan wave by wave (lowest order first), entries of one wave
//! with bounded concurrency, each entry as get → decide → compare-and-set patch, retried per
//! [`crate::retry`], under one deadline and a cancellation signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::kube_access::{Access, ApiError};
use crate::ledger::{Entry, Ownership};
use crate::ownership::{Decision, Observed, decide, observe};
use crate::plan::{Plan, Step};
use crate::prefetch::prefetch;
use crate::report::{Cause, EntryReport, Outcome};
use crate::retry::{Budget, ErrorClass, Policy, classify, with_retry};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct Options {
    /// Upgrade id whose marks we honour.
    pub upgrade: String,
    /// Ownership mode of the ledger.
    pub ownership: Ownership,
    /// Field manager that must own the pause field (marked ledgers) and that we write as.
    pub field_manager: String,
    /// Entries in flight at once within a wave.
    pub concurrency: usize,
    /// Backoff and attempt budget.
    pub policy: Policy,
    /// Send patches with dryRun=All.
    pub dry_run: bool,
    /// When entry work must stop (the status write gets the time after it).
    pub deadline: Instant,
    /// How long in-flight requests may settle after cancellation.
    pub grace: Duration,
}

/// Called after each entry settles (progress display).
pub type Progress = Arc<dyn Fn(&EntryReport) + Send + Sync>;

/// The restore engine.
pub struct Engine {
    pub(crate) access: Access,
    pub(crate) opts: Options,
    pub(crate) cancel: CancellationToken,
    progress: Option<Progress>,
}

impl Engine {
    /// A new engine; `cancel` is triggered by SIGTERM/SIGINT. Its requests (entries, then
    /// verification) end by `opts.deadline`, so the status write gets the time after it.
    pub fn new(access: Access, opts: Options, cancel: CancellationToken, progress: Option<Progress>) -> Self {
        let access = access.with_deadline(opts.deadline);
        Self { access, opts, cancel, progress }
    }

    /// Run every wave; returns one report per planned entry, in plan order.
    pub async fn run(&self, plan: &Plan) -> Vec<EntryReport> {
        // One slot per planned entry, filled as entries settle: thousands of reports are not
        // collected, sorted and copied wave by wave.
        let mut slots: Vec<Option<EntryReport>> = Vec::with_capacity(plan.len());
        let mut blocked: Option<i32> = None;
        for wave in &plan.waves {
            let base = slots.len();
            slots.resize_with(base + wave.steps.len(), || None);
            if let Some(order) = blocked {
                for (slot, s) in slots[base..].iter_mut().zip(&wave.steps) {
                    let r = skipped(&s.entry, Cause::Blocked, format!("not attempted: order {order} had failures"));
                    self.emit(&r);
                    *slot = Some(r);
                }
                continue;
            }
            tracing::debug!(order = wave.order, entries = wave.steps.len(), "restoring wave");
            let snapshot = prefetch(&self.access, &wave.steps, &self.opts.policy, self.opts.deadline).await;
            let snapshot = &snapshot;
            // Unordered so one slow entry does not hold a slot; placed back in ledger order.
            let mut settled = futures::stream::iter(wave.steps.iter().enumerate())
                .map(|(i, s)| async move { (i, self.settle(s, snapshot.take(i)).await) })
                .buffer_unordered(self.opts.concurrency.max(1));
            let mut failed = false;
            while let Some((i, r)) = settled.next().await {
                failed |= r.outcome == Outcome::Failed;
                slots[base + i] = Some(r);
            }
            if failed {
                blocked = Some(wave.order);
            }
        }
        slots.into_iter().flatten().collect()
    }

    fn emit(&self, r: &EntryReport) {
        if let Some(p) = &self.progress {
            p(r);
        }
    }

    /// One entry, bounded by cancellation (with grace) and the deadline.
    async fn settle(&self, step: &Step, listed: Option<Option<Observed>>) -> EntryReport {
        let entry = &step.entry;
        if self.cancel.is_cancelled() {
            let r = skipped(entry, Cause::Terminated, "not attempted: terminated".into());
            self.emit(&r);
            return r;
        }
        if Instant::now() >= self.opts.deadline {
            let r = skipped(entry, Cause::Deadline, "not attempted: deadline reached".into());
            self.emit(&r);
            return r;
        }
        let started = Instant::now();
        let started_at = Timestamp::now();
        let budget = Budget::new(self.opts.policy.max_attempts, self.opts.deadline);
        let work = self.restore_one(step, &budget, listed);
        tokio::pin!(work);
        let Settled { outcome, error, cause, detail, generation, uid } = tokio::select! {
            r = &mut work => r,
            _ = self.cancel.cancelled() => {
                match tokio::time::timeout(self.opts.grace, &mut work).await {
                    Ok(r) => r,
                    Err(_) => Settled::skipped("terminated while in flight; rerun to converge", Cause::Terminated),
                }
            }
            _ = tokio::time::sleep_until(self.opts.deadline) => {
                Settled::failed("deadline reached while in flight; rerun to converge", Cause::Deadline)
            }
        };
        let r = EntryReport {
            attempts: budget.used(),
            duration_ms: started.elapsed().as_millis() as u64,
            started_at: Some(started_at),
            error,
            cause,
            detail,
            generation,
            uid,
            ..EntryReport::new(entry.object.clone(), entry.field.clone(), entry.order, outcome)
        };
        log_result(&r);
        self.emit(&r);
        r
    }

    /// get → decide → patch, again after a failed `test` while the budget lasts.
    /// `listed`: the object as a bulk read saw it (see [`crate::prefetch`]), used instead of the
    /// first GET.
    pub(crate) async fn restore_one(
        &self,
        step: &Step,
        budget: &Budget,
        mut listed: Option<Option<Observed>>,
    ) -> Settled {
        let entry = &step.entry;
        let target = entry.object.to_string();
        let path = Access::path(&step.resolved, &entry.object);
        let o = &self.opts;
        // Set when a patch got no answer: the server may or may not have applied it.
        let ambiguous = AtomicBool::new(false);
        loop {
            let got = match listed.take() {
                Some(obs) => Ok(obs),
                None => with_retry(&o.policy, budget, &format!("get {target}"), || self.access.get(&target, &path))
                    .await
                    .map(|v| v.map(|obj| observe(&obj, &entry.field))),
            };
            let Observed { uid, state } = match got {
                Ok(Some(obs)) => obs,
                Ok(None) => return Settled::new(Outcome::Gone).detail("object no longer exists"),
                Err(e) => return failure(entry, &step.resolved.plural, &e, budget),
            };
            let state = match state {
                Ok(s) => s,
                Err(m) => return Settled::failed(m, Cause::Error).uid(uid),
            };
            match decide(&state, &entry.field, &o.upgrade, o.ownership, &o.field_manager) {
                Decision::AlreadyRunning { cleanup } => {
                    if let (Some(p), false) = (cleanup, o.dry_run) {
                        // A stale mark is harmless (ignored on a running object) and the outcome
                        // stands either way; transient failures are retried within the entry's
                        // budget, a changed object (failed test) is left alone.
                        let removed = with_retry(&o.policy, budget, &format!("remove the mark of {target}"), || {
                            self.access.json_patch(&target, &path, &p, &o.field_manager, false)
                        })
                        .await;
                        if let Err(e) = removed {
                            tracing::debug!(object = %target, error = %e, "stale mark left in place");
                        }
                    }
                    let mut s = Settled::new(Outcome::AlreadyRunning).uid(uid);
                    s.generation = state.generation;
                    // Our patch was applied but its answer lost: the field is ours and false now.
                    if ambiguous.load(Ordering::Relaxed) && state.field_owners.iter().any(|m| m == &o.field_manager) {
                        s.outcome = Outcome::Restored;
                        s.detail = Some("the answer to our patch was lost; the server had applied it".into());
                    }
                    return s;
                }
                Decision::NotOurs { reason } => {
                    return Settled::new(Outcome::NotOurs).detail(reason).uid(uid);
                }
                Decision::Malformed { reason } => return Settled::failed(reason, Cause::Error),
                Decision::Restore { patch } => {
                    let sent = with_retry(&o.policy, budget, &format!("patch {target}"), || {
                        let sent = self.access.json_patch(&target, &path, &patch, &o.field_manager, o.dry_run);
                        async {
                            let r = sent.await;
                            if matches!(r, Err(ApiError::Transport { .. } | ApiError::Timeout { .. })) {
                                ambiguous.store(true, Ordering::Relaxed);
                            }
                            r
                        }
                    })
                    .await;
                    match sent {
                        Ok(v) => {
                            let outcome = if o.dry_run { Outcome::WouldRestore } else { Outcome::Restored };
                            let mut s = Settled::new(outcome).uid(uid);
                            s.generation = v.pointer("/metadata/generation").and_then(Value::as_i64);
                            return s;
                        }
                        Err(e) if classify(&e) == ErrorClass::TestFailed => {
                            // Changed between our read and our write: read again and re-decide.
                            tracing::debug!(object = %target, "object changed under us; deciding again");
                            if !budget.take() {
                                return Settled::failed(
                                    format!("object kept changing; attempt budget spent ({e})"),
                                    Cause::Error,
                                );
                            }
                        }
                        Err(e) if classify(&e) == ErrorClass::NotFound => {
                            return Settled::new(Outcome::Gone).detail("deleted while restoring");
                        }
                        Err(e) => return failure(entry, &step.resolved.plural, &e, budget).uid(uid),
                    }
                }
            }
        }
    }
}

/// How one entry settled (before timing is added).
pub(crate) struct Settled {
    pub(crate) outcome: Outcome,
    pub(crate) error: Option<String>,
    pub(crate) cause: Option<Cause>,
    pub(crate) detail: Option<String>,
    pub(crate) generation: Option<i64>,
    pub(crate) uid: Option<String>,
}

impl Settled {
    fn new(outcome: Outcome) -> Self {
        Self { outcome, error: None, cause: None, detail: None, generation: None, uid: None }
    }

    fn failed(error: impl Into<String>, cause: Cause) -> Self {
        Self { outcome: Outcome::Failed, error: Some(error.into()), cause: Some(cause), ..Self::new(Outcome::Failed) }
    }

    fn skipped(error: impl Into<String>, cause: Cause) -> Self {
        Self { outcome: Outcome::Skipped, ..Self::failed(error, cause) }
    }

    fn uid(mut self, uid: Option<String>) -> Self {
        self.uid = uid;
        self
    }

    fn detail(mut self, d: impl Into<String>) -> Self {
        self.detail = Some(d.into());
        self
    }
}

fn failure(entry: &Entry, plural: &str, e: &ApiError, budget: &Budget) -> Settled {
    let class = classify(e);
    let (msg, cause) = match class {
        ErrorClass::Forbidden => {
            let verb = match e {
                ApiError::Status { verb, .. } => verb.as_str(),
                _ => "patch",
            };
            let group = entry.object.group();
            let scope = match &entry.object.namespace {
                Some(ns) => format!("in namespace {ns}"),
                None => "cluster-wide".to_string(),
            };
            (
                format!(
                    "permission denied: missing RBAC verb {verb:?} on resource {plural:?} (apiGroup {group:?}) {scope}: {e}"
                ),
                Cause::PermissionDenied,
            )
        }
        _ if budget.expired() => (format!("deadline reached: {e}"), Cause::Deadline),
        // Budget left but no retry: the next delay would have crossed the deadline.
        ErrorClass::Transient if !budget.exhausted() => {
            (format!("deadline reached after {} attempts: {e}", budget.used()), Cause::Deadline)
        }
        ErrorClass::Transient => (format!("gave up after {} attempts: {e}", budget.used()), Cause::Error),
        _ => (e.to_string(), Cause::Error),
    };
    Settled::failed(msg, cause)
}

fn skipped(entry: &Entry, cause: Cause, why: String) -> EntryReport {
    EntryReport {
        error: Some(why),
        cause: Some(cause),
        ..EntryReport::new(entry.object.clone(), entry.field.clone(), entry.order, Outcome::Skipped)
    }
}

fn log_result(r: &EntryReport) {
    let object = r.object.to_string();
    match r.outcome {
        Outcome::Failed | Outcome::Skipped => tracing::warn!(
            object, outcome = %r.outcome, attempts = r.attempts,
            error = r.error.as_deref(), "entry {}", r.outcome
        ),
        _ => tracing::info!(
            object, outcome = %r.outcome, attempts = r.attempts,
            detail = r.detail.as_deref(), "entry {}", r.outcome
        ),
    }
}
