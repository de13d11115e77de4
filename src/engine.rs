//! The restore engine: runs a plan wave by wave (lowest order first), entries of one wave
//! with bounded concurrency, each entry as get → decide → compare-and-set patch
//! ([`restore_entry`]), retried through the run [`Context`], under one deadline and a
//! cancellation signal.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use crate::api::Target;
use crate::bulk_read::bulk_read;
use crate::context::Context;
use crate::ledger::{Entry, Ownership};
use crate::outcome::{Cause, EntryReport, Outcome};
use crate::ownership::{Decision, Observed, Rule, decide, observe};
use crate::plan::{Pin, Plan, Step};
use crate::retry::{Budget, ErrorClass, Failure, Stop};
use crate::verify::Verifier;

/// How entries are restored; the ownership fields are the ledger's, which entries may
/// override ([`RestoreOptions::rule`]).
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// Upgrade id whose marks we honour.
    pub upgrade: String,
    /// Ownership mode of the ledger.
    pub ownership: Ownership,
    /// Field manager that must own the pause field (marked ledgers) and that we write as.
    pub field_manager: String,
    /// Entries in flight at once within a wave.
    pub concurrency: usize,
    /// Send patches with dryRun=All.
    pub dry_run: bool,
    /// How long in-flight requests may settle after cancellation.
    pub grace: Duration,
}

impl RestoreOptions {
    /// The ownership rule of `entry`: its own overrides, else the ledger's.
    pub fn rule<'a>(&'a self, entry: &'a Entry) -> Rule<'a> {
        Rule {
            ownership: entry.ownership.unwrap_or(self.ownership),
            marks: [entry.mark.as_deref().unwrap_or(""), &self.upgrade],
            field_manager: entry.field_manager.as_deref().unwrap_or(&self.field_manager),
        }
    }
}

/// What an order's entries must pass before the next order starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaveGate {
    /// Only a failed restore blocks later orders.
    None,
    /// Also a ManagedChart whose unpause did not reach its Fleet Bundle.
    Propagated,
    /// Also an entry that did not become ready (implies the readiness check).
    Ready,
}

impl WaveGate {
    /// Whether `r` keeps later orders from starting.
    pub fn blocks(self, r: &EntryReport) -> bool {
        match r.outcome {
            Outcome::Failed => true,
            Outcome::NotPropagated => self != WaveGate::None,
            _ => self == WaveGate::Ready && r.ready == Some(false),
        }
    }
}

/// Called after each entry settles (progress display).
pub type Progress = Arc<dyn Fn(&EntryReport) + Send + Sync>;

/// The restore engine.
pub struct Engine<'a> {
    /// Requests end by the entries' deadline (the status write gets the time after it).
    ctx: &'a Context,
    opts: &'a RestoreOptions,
    progress: Option<Progress>,
}

impl<'a> Engine<'a> {
    /// A new engine; `ctx`'s deadline ends entry work, its cancellation is SIGTERM/SIGINT.
    pub fn new(ctx: &'a Context, opts: &'a RestoreOptions, progress: Option<Progress>) -> Self {
        Self { ctx, opts, progress }
    }

    /// Run every wave, lowest order first, each verified by `verifier` (if any) before the
    /// next starts; an entry that fails `gate` blocks the later waves. Returns one report per
    /// planned entry, in plan order.
    pub async fn run(&self, plan: &Plan, verifier: Option<&Verifier<'_>>, gate: WaveGate) -> Vec<EntryReport> {
        // One slot per planned entry, filled as entries settle: thousands of reports are not
        // collected, sorted and copied wave by wave.
        let mut slots: Vec<Option<EntryReport>> = Vec::with_capacity(plan.len());
        let mut blocked: Option<i32> = None;
        for wave in &plan.waves {
            let base = slots.len();
            slots.resize_with(base + wave.steps.len(), || None);
            if let Some(order) = blocked {
                for (slot, s) in slots[base..].iter_mut().zip(&wave.steps) {
                    let r = skipped(
                        &s.entry,
                        Cause::Blocked,
                        format!("not attempted: order {order} did not pass (failed, not propagated or not ready)"),
                    );
                    self.emit(&r);
                    *slot = Some(r);
                }
                continue;
            }
            tracing::debug!(order = wave.order, entries = wave.steps.len(), "restoring wave");
            let snapshot = bulk_read(self.ctx, &wave.steps).await;
            let snapshot = &snapshot;
            // Unordered so one slow entry does not hold a slot; placed back in ledger order.
            let mut settled = futures::stream::iter(wave.steps.iter().enumerate())
                .map(|(i, s)| {
                    let span = tracing::info_span!("entry", object = %s.entry.object);
                    async move { (i, self.settle(s, snapshot.take(i)).await) }.instrument(span)
                })
                .buffer_unordered(self.opts.concurrency.max(1));
            while let Some((i, r)) = settled.next().await {
                slots[base + i] = Some(r);
            }
            drop(settled);
            let mut wave_results: Vec<EntryReport> = slots[base..].iter_mut().filter_map(Option::take).collect();
            if let Some(v) = verifier {
                v.verify(&wave.steps, &mut wave_results).await;
            }
            if wave_results.iter().any(|r| gate.blocks(r)) {
                blocked = Some(wave.order);
            }
            for (slot, r) in slots[base..].iter_mut().zip(wave_results) {
                *slot = Some(r);
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
        if self.ctx.is_cancelled() {
            let r = skipped(entry, Cause::Terminated, "not attempted: terminated".into());
            self.emit(&r);
            return r;
        }
        if Instant::now() >= self.ctx.deadline() {
            let r = skipped(entry, Cause::Deadline, "not attempted: deadline reached".into());
            self.emit(&r);
            return r;
        }
        let started = Instant::now();
        let started_at = Timestamp::now();
        let budget = self.ctx.budget();
        let work = restore_entry(self.ctx, self.opts, step, &budget, listed);
        tokio::pin!(work);
        let Settled { outcome, error, cause, detail, generation, observed_before, uid } = tokio::select! {
            r = &mut work => r,
            _ = self.ctx.cancel().cancelled() => {
                match tokio::time::timeout(self.opts.grace, &mut work).await {
                    Ok(r) => r,
                    Err(_) => Settled::skipped("terminated while in flight; rerun to converge", Cause::Terminated),
                }
            }
            _ = tokio::time::sleep_until(self.ctx.deadline()) => {
                Settled::failed("deadline reached while in flight; rerun to converge", Cause::Deadline)
            }
        };
        let r = EntryReport {
            attempts: budget.attempts(),
            duration_ms: started.elapsed().as_millis() as u64,
            started_at: Some(started_at),
            error,
            cause,
            detail,
            generation,
            unpaused: outcome == Outcome::Restored,
            observed_before,
            uid,
            ..EntryReport::new(entry.object.clone(), entry.field.clone(), entry.order, outcome)
        };
        log_result(&r);
        self.emit(&r);
        r
    }
}

/// Restore one entry: get → decide → compare-and-set patch, again after a failed `test` while
/// the budget lasts. `listed`: the object as a bulk read saw it ([`crate::bulk_read`]), used
/// instead of the first GET. Also used by the re-pause guard to restore again.
pub(crate) async fn restore_entry(
    ctx: &Context,
    o: &RestoreOptions,
    step: &Step,
    budget: &Budget,
    mut listed: Option<Option<Observed>>,
) -> Settled {
    let entry = &step.entry;
    let target = Target::object(&entry.object, &step.resolved);
    let rule = o.rule(entry);
    // Set when a patch got no answer: the server may or may not have applied it.
    let mut ambiguous = false;
    loop {
        let got = match listed.take() {
            Some(obs) => Ok(obs),
            None => ctx.get_in(budget, &target).await.map(|v| v.map(|obj| observe(&obj, &entry.field))),
        };
        let Observed { uid, state } = match got {
            Ok(Some(obs)) => obs,
            Ok(None) => return Settled::new(Outcome::Gone).detail("object no longer exists"),
            Err(f) => return failure(entry, &step.resolved.plural, &f),
        };
        let state = match state {
            Ok(s) => s,
            Err(m) => return Settled::failed(m, Cause::Error).uid(uid),
        };
        if let Some(pin) = &step.pin
            && *pin != Pin::new(state.generation.unwrap_or(-1), &state.field_owners)
        {
            // Rescue acts only on what it listed: a spec change since then (a fresh pause by
            // someone) or a new owner of the pause (a same-value server-side apply) is not
            // what the operator was shown and told to act on.
            let detail = format!(
                "changed after rescue listed it (generation {} owned by [{}], now {} owned by [{}]): left alone",
                pin.generation,
                pin.owners.join(", "),
                state.generation.map_or("unknown".to_string(), |g| g.to_string()),
                state.field_owners.join(", ")
            );
            return Settled::new(Outcome::NotOurs).detail(detail).uid(uid);
        }
        match decide(&state, &entry.field, &rule) {
            Decision::AlreadyRunning { cleanup } => {
                if let (Some(p), false) = (cleanup, o.dry_run) {
                    // A stale mark is harmless (ignored on a running object) and the outcome
                    // stands either way; transient failures are retried within the entry's
                    // budget, a changed object (failed test) is left alone.
                    if let Err(f) = ctx.patch_in(budget, &target, &p, rule.field_manager, false).await {
                        tracing::debug!(object = %target.name, error = %f, "stale mark left in place");
                    }
                }
                let mut s = Settled::new(Outcome::AlreadyRunning).uid(uid);
                s.generation = state.generation;
                // Our patch was applied but its answer lost: the field is ours and false now.
                if ambiguous && state.field_owners.iter().any(|m| m == rule.field_manager) {
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
                match ctx.patch_in(budget, &target, &patch, rule.field_manager, o.dry_run).await {
                    Ok(v) => {
                        let outcome = if o.dry_run { Outcome::WouldRestore } else { Outcome::Restored };
                        let mut s = Settled::new(outcome).uid(uid);
                        s.generation = v.pointer("/metadata/generation").and_then(Value::as_i64);
                        s.observed_before = state.observed_generation;
                        return s;
                    }
                    Err(f) if f.class() == ErrorClass::TestFailed => {
                        ambiguous |= f.ambiguous;
                        // Changed between our read and our write: read again and re-decide.
                        tracing::debug!(object = %target.name, "object changed under us; deciding again");
                        if !budget.take() {
                            return Settled::failed(
                                format!("object kept changing; attempt budget spent ({})", f.error),
                                Cause::Error,
                            );
                        }
                    }
                    Err(f) if f.class() == ErrorClass::NotFound => {
                        return Settled::new(Outcome::Gone).detail("deleted while restoring");
                    }
                    Err(f) => return failure(entry, &step.resolved.plural, &f).uid(uid),
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
    pub(crate) observed_before: Option<i64>,
    pub(crate) uid: Option<String>,
}

impl Settled {
    pub(crate) fn new(outcome: Outcome) -> Self {
        Self { outcome, error: None, cause: None, detail: None, generation: None, observed_before: None, uid: None }
    }

    pub(crate) fn failed(error: impl Into<String>, cause: Cause) -> Self {
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

fn failure(entry: &Entry, plural: &str, f: &Failure) -> Settled {
    let (msg, cause) = match (f.class(), f.stop) {
        (ErrorClass::Forbidden, _) => {
            let verb = match &f.error {
                crate::api::ApiError::Status { verb, .. } => verb.as_str(),
                _ => "patch",
            };
            let group = entry.object.group();
            let scope = match &entry.object.namespace {
                Some(ns) => format!("in namespace {ns}"),
                None => "cluster-wide".to_string(),
            };
            (
                format!(
                    "permission denied: missing RBAC verb {verb:?} on resource {plural:?} (apiGroup {group:?}) {scope}: {}",
                    f.error
                ),
                Cause::PermissionDenied,
            )
        }
        (ErrorClass::Denied, _) => (format!("denied by admission: {}", f.error), Cause::Error),
        (_, Stop::Deadline) => (format!("deadline reached: {f}"), Cause::Deadline),
        _ => (f.to_string(), Cause::Error),
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
