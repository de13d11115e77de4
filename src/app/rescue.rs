//! `pause-ledger rescue`: a preset's paused objects, for clusters whose upgrade recorded
//! nothing (ownership unknown).

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Run, emit_entry_events, summary_message};
use crate::api::Target;
use crate::cli::{Global, RescueArgs};
use crate::engine::RestoreOptions;
use crate::error::RunError;
use crate::events::Reason;
use crate::exit::Exit;
use crate::ledger::{self, Ownership};
use crate::outcome;
use crate::ownership::pause_state;
use crate::plan;
use crate::preset::Preset;
use crate::report::Report;

/// `pause-ledger rescue`.
pub async fn rescue(global: &Global, args: &RescueArgs, cancel: CancellationToken, plain_logs: bool) -> Exit {
    let preset = Preset::from(args.preset);
    let label = format!("rescue:{}", preset.name());
    let run = match Run::start(global, &args.api, &args.run, label, cancel, plain_logs).await {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    let result = rescue_preset(&run, args, preset).instrument(run.span.clone()).await;
    run.finish(result)
}

async fn rescue_preset(run: &Run<'_>, args: &RescueArgs, preset: Preset) -> Result<Report, RunError> {
    let entries = preset.entries(args.namespace.as_deref());
    let plan = tokio::select! {
        p = plan::resolve(&run.entries, &entries) => p?,
        _ = run.ctx.cancel().cancelled() => return Err(RunError::Terminated("during discovery")),
    };
    // List what would be touched before touching anything.
    let mut paused_now = 0;
    for step in plan.steps() {
        let o = &step.entry.object;
        let obj = run.entries.get(&Target::object(o, &step.resolved)).await?;
        match obj.map(|obj| pause_state(&obj, &step.entry.field)) {
            Some(Ok(s)) if s.paused == Some(true) && s.mark.is_none() => {
                tracing::info!(object = %o, "will unpause: paused now, nothing recorded who paused it");
                paused_now += 1;
            }
            Some(Ok(s)) if s.paused == Some(true) => tracing::info!(
                object = %o, mark = s.mark.as_deref().unwrap_or_default(),
                "will not touch: marked by a recorded upgrade; restore its ledger instead"
            ),
            Some(Ok(_)) => tracing::info!(object = %o, "running"),
            Some(Err(m)) => tracing::warn!(object = %o, "{m}"),
            None => tracing::info!(object = %o, "does not exist"),
        }
    }
    if paused_now == 0 {
        return Ok(run.report(Exit::Success, vec![], "nothing of the preset is paused".into()));
    }
    if !args.acknowledge_unknown_ownership && !run.args.dry_run {
        return Err(RunError::Usage(format!(
            "{paused_now} object(s) would be unpaused without any record of who paused them, so one paused on \
             purpose would be unpaused too; re-run with --acknowledge-unknown-ownership (or --dry-run to rehearse)"
        )));
    }
    // Ownership unknown: "still paused" (and not marked by a recorded upgrade) is all we can check.
    let opts = RestoreOptions {
        upgrade: String::new(),
        ownership: Ownership::Unmarked,
        field_manager: ledger::DEFAULT_FIELD_MANAGER.into(),
        concurrency: usize::from(run.args.concurrency),
        dry_run: run.args.dry_run,
        grace: run.args.grace,
    };
    let results = run.restore_plan(&plan, &opts, &args.verify).await;
    if !run.args.dry_run {
        emit_entry_events(run.ctx.events(), &results, Reason::RescueRestored, run.args.max_object_events).await;
    }
    let exit = outcome::exit_for(&results);
    let message = summary_message(exit, &results);
    Ok(run.report(exit, results, message))
}
