//! `pause-ledger restore`: from the ledger.

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Run, check_no_upgrade_running, counts, emit_entry_events, summary_message};
use crate::cli::{Global, IfMissing, RestoreArgs};
use crate::error::RunError;
use crate::events::Reason;
use crate::exit::Exit;
use crate::kinds::ObjectRef;
use crate::ledger::{self, Ledger, Ownership};
use crate::ledger_store::{LedgerStore, SettleError};
use crate::outcome;
use crate::plan;
use crate::preset::is_harvester_chart;
use crate::report::Report;
use crate::status_doc;

/// `pause-ledger restore`.
pub async fn restore(global: &Global, args: &RestoreArgs, cancel: CancellationToken, plain_logs: bool) -> Exit {
    let at = &args.ledger.ledger;
    let run = match Run::start(global, &args.api, &args.run, at.to_string(), cancel, plain_logs).await {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    let result = restore_ledger(&run, args).instrument(run.span.clone()).await;
    run.finish(result)
}

async fn restore_ledger(run: &Run<'_>, args: &RestoreArgs) -> Result<Report, RunError> {
    let at = &args.ledger.ledger;
    let store = LedgerStore::new(&run.ctx, at);
    let Some((ledger, status_text, ledger_uid)) = read_ledger(run, &store).await? else {
        return match args.if_missing {
            IfMissing::Ok => {
                tracing::info!("no ledger: nothing was recorded, nothing to restore");
                Ok(run.report(
                    Exit::Success,
                    vec![],
                    format!("ledger {at} not found; nothing to restore (--if-missing=ok)"),
                ))
            }
            IfMissing::Fail => Err(RunError::LedgerMissing(at.clone())),
        };
    };
    run.set_upgrade(&ledger.upgrade);
    tracing::info!(
        entries = ledger.entries.len(), ownership = ?ledger.ownership, dry_run = run.args.dry_run, "read ledger"
    );
    let unmarked = ledger.ownership == Ownership::Unmarked
        || ledger.entries.iter().any(|e| e.ownership == Some(Ownership::Unmarked));
    if unmarked && !args.allow_unmarked {
        return Err(RunError::UnmarkedRefused(at.clone()));
    }
    if unmarked {
        tracing::warn!(
            "ledger has entries without ownership marks: 'still paused' is their only check (see docs/ledger.md)"
        );
    }
    if !args.force
        && !run.args.dry_run
        && let Some(prev) = status_doc::parse(status_text.as_deref())
        && status_doc::is_done(&prev, &ledger)
    {
        tracing::info!(updated_at = %prev.updated_at, "status says this ledger is already restored; nothing to do (--force re-examines)");
        let message = format!("already restored at {}; nothing to do", prev.updated_at);
        return Ok(run.report(Exit::Success, vec![], message));
    }
    let plan = tokio::select! {
        p = plan::resolve(&run.entries, &ledger.entries) => p?,
        _ = run.ctx.cancel().cancelled() => return Err(RunError::Terminated("during discovery")),
    };
    if ledger.entries.iter().any(|e| is_harvester_chart(&e.object)) {
        check_no_upgrade_running(run, &args.verify).await?;
    }

    let opts = crate::engine::RestoreOptions {
        upgrade: ledger.upgrade.clone(),
        ownership: ledger.ownership,
        field_manager: ledger.field_manager.clone(),
        concurrency: usize::from(run.args.concurrency),
        dry_run: run.args.dry_run,
        grace: run.args.grace,
    };
    let results = run.restore_plan(&plan, &opts, &args.verify).await;
    let mut exit = outcome::exit_for(&results);
    let mut message = summary_message(exit, &results);
    if run.ctx.is_cancelled() && exit != Exit::Terminated {
        // Entries settled, but a signal cut verification (or its guard) short.
        exit = Exit::Terminated;
        message = format!("terminated during verification; {message}");
    }
    if !run.args.dry_run {
        let record = status_doc::RunResult {
            id: &run.run_id,
            results: &results,
            started_at: run.clock.started_at,
            exit_code: exit.code(),
        };
        match store.write_status(&ledger, record).await {
            Ok(doc) => tracing::info!(state = ?doc.state, runs = doc.runs, "status written to {}", ledger::STATUS_KEY),
            Err(e) => {
                tracing::error!(error = %e, "could not write the status");
                if exit == Exit::Success {
                    // The entries settled, but the status that tells the next run so did not.
                    let err = RunError::from(e);
                    exit = match err.exit() {
                        Exit::Error => Exit::PartialFailure,
                        x => x,
                    };
                    message = err.to_string();
                }
            }
        }
        // Events after the status: they are optional, the status is what the next run reads.
        let events = run.ctx.events();
        emit_entry_events(events, &results, Reason::Restored, run.args.max_object_events).await;
        let cm = ObjectRef {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            namespace: Some(at.namespace.clone()),
            name: at.name.clone(),
        };
        let reason = if exit == Exit::Success { Reason::RestoreSucceeded } else { Reason::RestoreIncomplete };
        let line = format!("upgrade {}: {} ({})", ledger.upgrade, message, counts(&results));
        events.emit(&cm, ledger_uid.as_deref(), reason, &line).await;
    }
    let mut report = run.report(exit, results, message);
    report.warnings = not_ready_warnings(run, &ledger).await;
    Ok(report)
}

/// ManagedCharts not Ready in the namespaces of the ledger's Harvester charts: Harvester's webhook refuses
/// the next upgrade until every fleet-local chart is Ready.
async fn not_ready_warnings(run: &Run<'_>, ledger: &Ledger) -> Vec<String> {
    if run.args.dry_run {
        return Vec::new();
    }
    let mut namespaces: Vec<&str> = ledger
        .entries
        .iter()
        .filter(|e| is_harvester_chart(&e.object))
        .filter_map(|e| e.object.namespace.as_deref())
        .collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    let warnings = crate::verify::charts_not_ready(&run.ctx, &namespaces).await;
    for w in &warnings {
        tracing::warn!("{w} (Harvester refuses a new upgrade until it is)");
    }
    warnings
}

/// Read and parse the ledger: `(ledger, status text, ConfigMap uid)`, `None` when there is
/// none; a `record` still in its intent phase is waited for, until this run's entry deadline
/// ([`LedgerStore::read_settled`]).
async fn read_ledger(
    run: &Run<'_>,
    store: &LedgerStore,
) -> Result<Option<(Ledger, Option<String>, Option<String>)>, RunError> {
    let stored = tokio::select! {
        r = store.read_settled(run.entries.deadline()) => r,
        _ = run.ctx.cancel().cancelled() => return Err(RunError::Terminated("before the ledger was read")),
    };
    let stored = match stored {
        Ok(Some(s)) => s,
        Ok(None) => return Ok(None),
        Err(SettleError::Api(f)) => return Err(f.into()),
        Err(SettleError::RecordInProgress { run: r }) => {
            return Err(RunError::RecordInProgress { at: store.at().clone(), run: r });
        }
    };
    // The ledger's text (~150 bytes an entry) is not kept once parsed.
    let ledger = ledger::parse_configmap_data(&stored.data)?;
    Ok(Some((ledger, stored.status, stored.uid)))
}
