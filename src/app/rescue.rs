//! `pause-ledger rescue`: a preset's paused objects, for clusters whose upgrade recorded
//! nothing (ownership unknown).

use std::collections::{HashMap, HashSet};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Run, check_no_upgrade_running, emit_entry_events, summary_message};
use crate::api::Target;
use crate::cli::{Global, RescueArgs};
use crate::engine::RestoreOptions;
use crate::error::RunError;
use crate::events::Reason;
use crate::exit::Exit;
use crate::ledger::{self, Ownership};
use crate::ledger_store::LedgerStore;
use crate::outcome;
use crate::ownership::{KEEP_PAUSED_ANNOTATION, pause_state};
use crate::plan::{self, Pin};
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
    if preset.is_harvester() {
        check_no_upgrade_running(run, &args.verify).await?;
    }
    // What a recorded upgrade found paused before it is an administrator's: never rescued.
    let ledger = LedgerStore::new(&run.entries, &args.ledger.ledger).read().await?;
    let paused_before: HashSet<_> = match ledger.map(|l| ledger::parse_configmap_data(&l.data)) {
        Some(Ok(l)) => l.paused_before.iter().map(|o| o.identity()).collect(),
        Some(Err(e)) => {
            tracing::warn!(ledger = %args.ledger.ledger, error = %e, "the ledger is invalid: its pausedBefore list cannot be honoured");
            return Err(e.into());
        }
        None => HashSet::new(),
    };
    // List what would be touched before touching anything; act on exactly that list, each
    // object pinned to what was shown (generation and the pause field's owners).
    let mut listed: HashMap<_, Pin> = HashMap::new();
    for step in plan.steps() {
        let o = &step.entry.object;
        let obj = run.entries.get(&Target::object(o, &step.resolved)).await?;
        match obj.map(|obj| pause_state(&obj, &step.entry.field)) {
            Some(Ok(s)) if s.paused != Some(true) => tracing::info!(object = %o, "running: {o}"),
            Some(Ok(s)) if s.keep_paused => {
                tracing::info!(object = %o, "will not touch {o}: kept paused by an administrator (annotation {KEEP_PAUSED_ANNOTATION})")
            }
            Some(Ok(s)) if s.mark.is_some() => tracing::info!(
                object = %o, mark = s.mark.as_deref().unwrap_or_default(),
                "will not touch {o}: marked by a recorded upgrade; restore its ledger instead"
            ),
            Some(Ok(_)) if paused_before.contains(&o.identity()) => tracing::info!(
                object = %o, ledger = %args.ledger.ledger,
                "will not touch {o}: the ledger lists it as paused before the upgrade"
            ),
            Some(Ok(s)) => match s.generation {
                Some(g) => {
                    tracing::info!(object = %o, generation = g, "will unpause {o} (generation {g}): paused now, nothing recorded who paused it");
                    listed.insert(o.identity(), Pin::new(g, &s.field_owners));
                }
                None => tracing::warn!(object = %o, "will not touch {o}: no metadata.generation to pin it to"),
            },
            Some(Err(m)) => tracing::warn!(object = %o, "{o}: {m}"),
            None => tracing::info!(object = %o, "does not exist: {o}"),
        }
    }
    let paused_now = listed.len();
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
    let plan = plan.pinned(|s| listed.get(&s.entry.object.identity()).cloned());
    let results = run.restore_plan(&plan, &opts, &args.verify).await;
    if !run.args.dry_run {
        emit_entry_events(run.ctx.events(), &results, Reason::RescueRestored, run.args.max_object_events).await;
    }
    let exit = outcome::exit_for(&results);
    let message = summary_message(exit, &results);
    Ok(run.report(exit, results, message))
}
