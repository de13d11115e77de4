//! The re-pause guard (`--settle`): a still-running upgrade job may pause again right after we
//! restored. Within the window such an object is restored again if it is still ours (with
//! the engine's own [`restore_entry`]), and reported otherwise.

use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;

use crate::api::Target;
use crate::context::Context;
use crate::engine::{RestoreOptions, restore_entry};
use crate::ledger::Ownership;
use crate::outcome::{EntryReport, Outcome};
use crate::ownership::{Decision, decide, pause_state};
use crate::plan::{Plan, Step};

/// Watches restored objects for a re-pause.
pub struct RepauseGuard<'a> {
    ctx: &'a Context,
    restore: &'a RestoreOptions,
    settle: Duration,
    poll: Duration,
}

impl<'a> RepauseGuard<'a> {
    /// A guard watching for `settle` (polling every `poll`), restoring again as `restore` says.
    pub fn new(ctx: &'a Context, restore: &'a RestoreOptions, settle: Duration, poll: Duration) -> Self {
        Self { ctx, restore, settle, poll }
    }

    /// Watch every restored entry (in place); no-op when `settle` is zero.
    pub async fn watch(&self, plan: &Plan, results: &mut [EntryReport]) {
        if self.settle.is_zero() {
            return;
        }
        let work = plan.steps().zip(results.iter_mut()).filter(|(_, r)| r.outcome == Outcome::Restored);
        futures::stream::iter(work)
            .for_each_concurrent(self.restore.concurrency.max(1), |(step, r)| self.watch_one(step, r))
            .await;
    }

    async fn watch_one(&self, step: &Step, r: &mut EntryReport) {
        let o = &step.entry.object;
        let target = Target::object(o, &step.resolved);
        let end = Instant::now().checked_add(self.settle).map_or(self.ctx.deadline(), |t| t.min(self.ctx.deadline()));
        let opts = self.restore;
        while Instant::now() < end && !self.ctx.is_cancelled() {
            tokio::time::sleep(self.poll.min(end.saturating_duration_since(Instant::now()))).await;
            let Ok(Some(obj)) = self.ctx.access().get(&target.name, &target.path).await else { continue };
            let Ok(state) = pause_state(&obj, &step.entry.field) else { continue };
            if state.paused != Some(true) {
                continue;
            }
            r.repaused += 1;
            let rule = opts.rule(&step.entry);
            match decide(&state, &step.entry.field, &rule) {
                // Restored again only on evidence that the pause is the upgrade's: an unmarked
                // ledger has none, and this pause came after ours was undone.
                Decision::Restore { .. } if rule.ownership == Ownership::Unmarked => {
                    let reason = "ownership unknown (unmarked ledger)";
                    tracing::warn!(object = %o, reason, "paused again after restore: left paused");
                    r.outcome = Outcome::Repaused;
                    r.detail = Some(format!("paused again after restore; {reason}: left paused"));
                    return;
                }
                Decision::Restore { .. } => {
                    tracing::warn!(object = %o, "paused again by this upgrade after restore; restoring again");
                    let budget = self.ctx.budget();
                    let again = restore_entry(self.ctx, opts, step, &budget, None).await;
                    r.attempts += budget.attempts();
                    if again.outcome != Outcome::Restored && again.outcome != Outcome::AlreadyRunning {
                        r.outcome = again.outcome;
                        r.error = again.error;
                        r.cause = again.cause;
                        r.detail = again.detail;
                        return;
                    }
                    if let Some(g) = again.generation {
                        r.generation = Some(g);
                    }
                }
                Decision::NotOurs { reason } => {
                    tracing::warn!(object = %o, %reason, "paused again after restore, not by this upgrade: left paused");
                    r.outcome = Outcome::Repaused;
                    r.detail = Some(format!("paused again after restore ({reason}); left paused"));
                    return;
                }
                Decision::AlreadyRunning { .. } | Decision::Malformed { .. } => {}
            }
        }
    }
}
