//! `restore` (from a ledger) and `rescue` (a preset, ownership unknown).

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::{Run, exit_for_api, read_ledger_data};
use crate::cli::{IfMissing, RescueArgs, RestoreArgs, VerifyArgs};
use crate::events::{Reason, Recorder};
use crate::exit::Exit;
use crate::kinds::ObjectRef;
use crate::kube_access::Access;
use crate::ledger::{self, Form, Ledger, Ownership};
use crate::ownership::pause_state;
use crate::plan::{self, Plan, PlanError};
use crate::report::{self, EntryReport, Outcome};
use crate::restore::{Engine, Options, Progress};
use crate::retry::{Budget, with_retry};
use crate::status;
use crate::verify::VerifyOptions;

/// `pause-ledger restore`.
pub async fn restore(args: &RestoreArgs, access: Access, cancel: CancellationToken, plain_logs: bool) -> Exit {
    let run = Run::new(&args.run, access, cancel, plain_logs);
    let at = &args.ledger.ledger;
    let finish = |exit: Exit, l: Option<&Ledger>, entries, message: String| {
        run.finish(exit, at.to_string(), l.map(|l| l.upgrade.clone()).unwrap_or_default(), entries, message)
    };

    let data = tokio::select! {
        r = read_ledger_data(&run.access, at, &run.policy, run.entries_deadline) => r,
        _ = run.cancel.cancelled() => return finish(Exit::Terminated, None, vec![], "terminated before the ledger was read".into()),
    };
    let (data, status_text, ledger_uid) = match data {
        Ok(Some(d)) => d,
        Ok(None) => {
            return match args.if_missing {
                IfMissing::Ok => {
                    tracing::info!(ledger = %at, "no ledger: nothing was recorded, nothing to restore");
                    finish(
                        Exit::Success,
                        None,
                        vec![],
                        format!("ledger {at} not found; nothing to restore (--if-missing=ok)"),
                    )
                }
                IfMissing::Fail => {
                    tracing::error!(ledger = %at, "ledger ConfigMap not found");
                    finish(Exit::LedgerMissing, None, vec![], format!("ledger {at} not found (--if-missing=fail)"))
                }
            };
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot read the ledger");
            let exit = exit_for_api(&e);
            return finish(exit, None, vec![], format!("cannot read ledger {at}: {e}"));
        }
    };
    let ledger = match ledger::parse_configmap_data(&data) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e}");
            return finish(Exit::InvalidLedger, None, vec![], e.to_string());
        }
    };
    // The ledger's text (~150 bytes an entry) is not needed once parsed.
    drop(data);
    tracing::info!(
        ledger = %at, upgrade = %ledger.upgrade, entries = ledger.entries.len(),
        ownership = ?ledger.ownership, dry_run = run.args.dry_run, "read ledger"
    );
    if ledger.ownership == Ownership::Unmarked {
        tracing::warn!("ledger has no ownership marks: 'still paused' is the only check (see docs/ledger.md)");
    }
    if !args.force
        && !run.args.dry_run
        && let Some(prev) = status::parse(status_text.as_deref())
        && status::is_done(&prev, &ledger)
    {
        tracing::info!(updated_at = %prev.updated_at, "status says this ledger is already restored; nothing to do (--force re-examines)");
        let message = format!("already restored at {}; nothing to do", prev.updated_at);
        return finish(Exit::Success, Some(&ledger), vec![], message);
    }
    let plan = match resolve(&run, &ledger).await {
        Ok(p) => p,
        Err((exit, message)) => return finish(exit, Some(&ledger), vec![], message),
    };

    let events = Recorder::new(run.access.clone(), run.args.events && !run.args.dry_run);
    let results = execute(&run, &ledger, &plan, &args.verify).await;
    let mut exit = report::exit_for(&results);
    let mut message = summary_message(exit, &results);
    if run.cancel.is_cancelled() && exit != Exit::Terminated {
        // Entries settled, but a signal cut verification (or its guard) short.
        exit = Exit::Terminated;
        message = format!("terminated during verification; {message}");
    }
    if !run.args.dry_run {
        // Its own budget; the deadline is the overall one, past the entries' deadline.
        let budget = Budget::new(run.policy.max_attempts, run.deadline);
        let record = status::RunResult {
            id: &run.run_id,
            results: &results,
            started_at: run.started_at,
            exit_code: exit.code(),
        };
        match status::write(&run.access, at, &ledger, record, &run.policy, &budget).await {
            Ok(doc) => tracing::info!(state = ?doc.state, runs = doc.runs, "status written to {}", ledger::STATUS_KEY),
            Err(e) => {
                tracing::error!(error = %e, "could not write the status");
                if exit == Exit::Success {
                    exit = match &e {
                        status::StatusError::Api(a) => match exit_for_api(a) {
                            Exit::Error => Exit::PartialFailure,
                            x => x,
                        },
                        _ => Exit::PartialFailure,
                    };
                    message = e.to_string();
                }
            }
        }
        // Events after the status: they are optional, the status is what the next run reads.
        emit_entry_events(&events, &results, Reason::Restored, run.args.max_object_events).await;
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
    finish(exit, Some(&ledger), results, message)
}

/// `pause-ledger rescue`.
pub async fn rescue(args: &RescueArgs, access: Access, cancel: CancellationToken, plain_logs: bool) -> Exit {
    let run = Run::new(&args.run, access, cancel, plain_logs);
    let label = format!("rescue:{:?}", args.preset).to_lowercase();
    let entries = args.preset.entries(args.namespace.as_deref());
    // Ownership unknown: "still paused" (and not marked by a recorded upgrade) is all we can check.
    let ledger = Ledger {
        upgrade: String::new(),
        paused_at: None,
        ownership: Ownership::Unmarked,
        field_manager: ledger::DEFAULT_FIELD_MANAGER.into(),
        entries,
        paused_before: vec![],
        form: Form::Full,
        digest: String::new(),
    };
    let plan = match resolve(&run, &ledger).await {
        Ok(p) => p,
        Err((exit, message)) => return run.finish(exit, label, String::new(), vec![], message),
    };
    // List what would be touched before touching anything.
    let mut paused_now = Vec::new();
    for step in plan.waves.iter().flat_map(|w| &w.steps) {
        let o = &step.entry.object;
        let budget = Budget::new(run.policy.max_attempts, run.entries_deadline);
        let path = Access::path(&step.resolved, o);
        let target = o.to_string();
        let got = with_retry(&run.policy, &budget, &format!("get {target}"), || run.access.get(&target, &path)).await;
        match got {
            Ok(Some(obj)) => match pause_state(&obj, &step.entry.field) {
                Ok(s) if s.paused == Some(true) && s.mark.is_none() => {
                    eprintln!("rescue: will unpause {o} (paused now, nothing recorded who paused it)");
                    paused_now.push(o.clone());
                }
                Ok(s) if s.paused == Some(true) => {
                    eprintln!(
                        "rescue: will not touch {o}: marked by upgrade {:?}; restore its ledger instead",
                        s.mark.unwrap_or_default()
                    );
                }
                Ok(_) => eprintln!("rescue: {o} is running"),
                Err(m) => eprintln!("rescue: {o}: {m}"),
            },
            Ok(None) => eprintln!("rescue: {o} does not exist"),
            Err(e) => {
                let exit = exit_for_api(&e);
                return run.finish(exit, label, String::new(), vec![], format!("cannot read {o}: {e}"));
            }
        }
    }
    if paused_now.is_empty() {
        return run.finish(Exit::Success, label, String::new(), vec![], "nothing of the preset is paused".into());
    }
    if !args.acknowledge_unknown_ownership && !run.args.dry_run {
        let message = format!(
            "{} object(s) would be unpaused without any record of who paused them, so one paused on purpose \
             would be unpaused too; re-run with --acknowledge-unknown-ownership (or --dry-run to rehearse)",
            paused_now.len()
        );
        eprintln!("rescue: {message}");
        return run.finish(Exit::Usage, label, String::new(), vec![], message);
    }
    let events = Recorder::new(run.access.clone(), run.args.events && !run.args.dry_run);
    let results = execute(&run, &ledger, &plan, &args.verify).await;
    emit_entry_events(&events, &results, Reason::RescueRestored, run.args.max_object_events).await;
    let exit = report::exit_for(&results);
    let message = summary_message(exit, &results);
    run.finish(exit, label, String::new(), results, message)
}

async fn resolve(run: &Run<'_>, ledger: &Ledger) -> Result<Plan, (Exit, String)> {
    let plan = tokio::select! {
        r = plan::resolve(&run.access, ledger, &run.policy, run.entries_deadline) => r,
        _ = run.cancel.cancelled() => return Err((Exit::Terminated, "terminated during discovery".into())),
    };
    match plan {
        Ok(p) => Ok(p),
        Err(PlanError::Ledger(e)) => {
            tracing::error!("{e}");
            Err((Exit::InvalidLedger, e.to_string()))
        }
        Err(PlanError::Api(e)) => {
            tracing::error!(error = %e, "API discovery failed");
            Err((exit_for_api(&e), e.to_string()))
        }
    }
}

/// Restore and verify a plan.
async fn execute(run: &Run<'_>, ledger: &Ledger, plan: &Plan, verify: &VerifyArgs) -> Vec<EntryReport> {
    let bar = run.progress_bar(plan.len());
    let progress: Option<Progress> = bar.clone().map(|b| {
        let p: Progress = Arc::new(move |r: &EntryReport| {
            b.set_message(format!("{} {}", r.outcome, r.object.name));
            b.inc(1);
        });
        p
    });
    let opts = Options {
        upgrade: ledger.upgrade.clone(),
        ownership: ledger.ownership,
        field_manager: ledger.field_manager.clone(),
        concurrency: usize::from(run.args.concurrency),
        policy: run.policy,
        dry_run: run.args.dry_run,
        deadline: run.entries_deadline,
        grace: run.args.grace,
    };
    let engine = Engine::new(run.access.clone(), opts, run.cancel.clone(), progress);
    let mut results = engine.run(plan).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let v = VerifyOptions {
        propagation_window: verify.propagation_window,
        wait_ready: verify.wait_ready,
        fail_on_not_ready: verify.fail_on_not_ready,
        settle: verify.settle,
        poll: Duration::from_millis(250),
    };
    engine.verify(plan, &mut results, &v).await;
    results
}

async fn emit_entry_events(events: &Recorder, results: &[EntryReport], restored: Reason, max_normal: usize) {
    let normal = std::sync::atomic::AtomicUsize::new(0);
    let normal = &normal;
    futures::stream::iter(results)
        .for_each_concurrent(16, |r| async move {
            let uid = r.uid.as_deref();
            let msg = |m: &str| m.to_string();
            let emitted: Option<(Reason, String)> = match r.outcome {
                // Warnings are always worth an Event; routine ones are capped.
                Outcome::Restored
                    if restored == Reason::Restored
                        && normal.fetch_add(1, std::sync::atomic::Ordering::Relaxed) >= max_normal =>
                {
                    None
                }
                Outcome::Restored => Some((restored, format!("{} set to false by pause-ledger", r.field))),
                Outcome::Failed => Some((Reason::RestoreFailed, msg(r.error.as_deref().unwrap_or("failed")))),
                Outcome::NotPropagated => Some((Reason::NotPropagated, msg(r.error.as_deref().unwrap_or("")))),
                Outcome::Repaused => Some((Reason::Repaused, msg(r.detail.as_deref().unwrap_or("")))),
                _ => None,
            };
            if let Some((reason, m)) = emitted {
                events.emit(&r.object, uid, reason, &m).await;
            }
            if r.outcome == Outcome::Restored && r.repaused > 0 {
                let m = format!("paused again {} time(s) after restore by this upgrade; restored again", r.repaused);
                events.emit(&r.object, uid, Reason::Repaused, &m).await;
            }
            if r.ready == Some(false) {
                let m = format!("not Ready: {}", r.ready_message.as_deref().unwrap_or(""));
                events.emit(&r.object, uid, Reason::NotReady, &m).await;
            }
        })
        .await;
}

fn summary_message(exit: Exit, results: &[EntryReport]) -> String {
    match exit {
        Exit::Success => "every entry settled".to_string(),
        _ => results.iter().find_map(|r| r.error.clone()).unwrap_or_else(|| "some entries did not settle".into()),
    }
}

fn counts(results: &[EntryReport]) -> String {
    let s = report::summarize(results);
    if s.is_empty() {
        return "no entries".into();
    }
    s.iter().map(|(o, n)| format!("{n} {o}")).collect::<Vec<_>>().join(", ")
}
