//! The commands, wired together: ledger → plan → patches → outcomes → status → report.
//! Each returns the exit code; printing results to stdout happens here, logs go to stderr.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::cli::{
    IfMissing, LedgerRef, Output, ProgressMode, RestoreArgs, StatusArgs, ValidateArgs,
};
use crate::exit::Exit;
use crate::kube_access::{Access, ApiError, configmap_path};
use crate::ledger::{self, Ledger, LedgerError};
use crate::ownership::pause_state;
use crate::plan::{self, PlanError};
use crate::report::{self, EntryReport, Report};
use crate::restore::{Engine, Options, Progress};
use crate::retry::{Budget, ErrorClass, Policy, classify, with_retry};
use crate::status;

/// Read the ledger ConfigMap's data. `Ok(None)` when it does not exist.
async fn read_ledger_data(
    access: &Access,
    at: &LedgerRef,
    policy: &Policy,
    deadline: Instant,
) -> Result<Option<(BTreeMap<String, String>, Option<String>)>, ApiError> {
    let target = format!("ConfigMap {at}");
    let path = configmap_path(&at.namespace, &at.name);
    let budget = Budget::new(policy.max_attempts, deadline);
    let cm = with_retry(policy, &budget, &format!("get {target}"), || {
        access.get(&target, &path)
    })
    .await?;
    Ok(cm.map(|cm| {
        let mut data: BTreeMap<String, String> = cm
            .get("data")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let status = data.remove(ledger::STATUS_KEY);
        (data, status)
    }))
}

fn exit_for_api(e: &ApiError, budget_expired: bool) -> Exit {
    match classify(e) {
        ErrorClass::Forbidden => Exit::PermissionDenied,
        ErrorClass::Transient if budget_expired => Exit::Deadline,
        _ => Exit::Error,
    }
}

/// `pause-ledger restore`.
pub async fn restore(
    args: &RestoreArgs,
    access: Access,
    cancel: CancellationToken,
    plain_logs: bool,
) -> Exit {
    let started = Instant::now();
    let started_at = Timestamp::now();
    let deadline = started + args.timeout;
    // Leave time at the end to write the status even when entries run to the deadline.
    let reserve = (args.timeout / 10).min(Duration::from_secs(10));
    let entries_deadline = deadline - reserve;
    let policy = Policy {
        min_delay: args.min_delay,
        max_delay: args.max_delay,
        max_attempts: args.max_attempts,
    };
    let at = &args.ledger.ledger;
    let finish =
        |exit: Exit, ledger: Option<&Ledger>, entries: Vec<EntryReport>, message: String| {
            let r = Report {
                version: report::REPORT_VERSION.to_string(),
                ledger: at.to_string(),
                upgrade: ledger.map(|l| l.upgrade.clone()).unwrap_or_default(),
                dry_run: args.dry_run,
                result: exit.word().to_string(),
                exit_code: exit.code(),
                message,
                started_at,
                duration_ms: started.elapsed().as_millis() as u64,
                requests: access.requests(),
                summary: report::summarize(&entries),
                entries,
            };
            print_report(&r, args.output);
            exit
        };

    let data = tokio::select! {
        r = read_ledger_data(&access, at, &policy, entries_deadline) => r,
        _ = cancel.cancelled() => return finish(Exit::Terminated, None, vec![], "terminated before the ledger was read".into()),
    };
    let (data, status_text) = match data {
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
                    finish(
                        Exit::LedgerMissing,
                        None,
                        vec![],
                        format!("ledger {at} not found (--if-missing=fail)"),
                    )
                }
            };
        }
        Err(e) => {
            let exit = exit_for_api(&e, Instant::now() >= entries_deadline);
            tracing::error!(error = %e, "cannot read the ledger");
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
    tracing::info!(
        ledger = %at, upgrade = %ledger.upgrade, entries = ledger.entries.len(),
        ownership = ?ledger.ownership, dry_run = args.dry_run, "read ledger"
    );
    if ledger.ownership == ledger::Ownership::Unmarked {
        tracing::warn!(
            "ledger has no ownership marks: 'still paused' is the only check (see docs/ledger.md)"
        );
    }
    if !args.force
        && !args.dry_run
        && let Some(prev) = status::parse(status_text.as_deref())
        && status::is_done(&prev, &ledger)
    {
        tracing::info!(updated_at = %prev.updated_at, "status says this ledger is already restored; nothing to do (--force re-examines)");
        return finish(
            Exit::Success,
            Some(&ledger),
            vec![],
            format!("already restored at {}; nothing to do", prev.updated_at),
        );
    }
    let plan = tokio::select! {
        r = plan::resolve(&access, &ledger, &policy, entries_deadline) => r,
        _ = cancel.cancelled() => return finish(Exit::Terminated, Some(&ledger), vec![], "terminated during discovery".into()),
    };
    let plan = match plan {
        Ok(p) => p,
        Err(PlanError::Ledger(e)) => {
            tracing::error!("{e}");
            return finish(Exit::InvalidLedger, Some(&ledger), vec![], e.to_string());
        }
        Err(PlanError::Api(e)) => {
            tracing::error!(error = %e, "API discovery failed");
            return finish(
                exit_for_api(&e, Instant::now() >= entries_deadline),
                Some(&ledger),
                vec![],
                e.to_string(),
            );
        }
    };

    let bar = progress_bar(args.progress, plain_logs, plan.len());
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
        concurrency: usize::from(args.concurrency),
        policy,
        dry_run: args.dry_run,
        deadline: entries_deadline,
        grace: args.grace,
    };
    let engine = Engine::new(access.clone(), opts, cancel.clone(), progress);
    let results = engine.run(&plan).await;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let mut exit = report::exit_for(&results);
    let mut message = match exit {
        Exit::Success => "every entry settled".to_string(),
        _ => results
            .iter()
            .find_map(|r| r.error.clone())
            .unwrap_or_else(|| "some entries did not settle".into()),
    };
    if !args.dry_run {
        // Its own budget; the deadline is the overall one, past the entries' deadline.
        let budget = Budget::new(policy.max_attempts, deadline);
        let run = status::RunResult {
            results: &results,
            started_at,
            exit_code: exit.code(),
        };
        match status::write(&access, at, &ledger, run, &policy, &budget).await {
            Ok(doc) => {
                tracing::info!(state = ?doc.state, runs = doc.runs, "status written to {}", ledger::STATUS_KEY)
            }
            Err(e) => {
                tracing::error!(error = %e, "could not write the status");
                if exit == Exit::Success {
                    exit = match &e {
                        status::StatusError::Api(a) => {
                            match exit_for_api(a, Instant::now() >= deadline) {
                                Exit::Error => Exit::PartialFailure,
                                x => x,
                            }
                        }
                        _ => Exit::PartialFailure,
                    };
                    message = e.to_string();
                }
            }
        }
    }
    finish(exit, Some(&ledger), results, message)
}

fn progress_bar(
    mode: ProgressMode,
    plain_logs: bool,
    len: usize,
) -> Option<indicatif::ProgressBar> {
    let show = match mode {
        ProgressMode::Always => true,
        ProgressMode::Never => false,
        ProgressMode::Auto => plain_logs && std::io::stderr().is_terminal() && len > 1,
    };
    show.then(|| {
        let b = indicatif::ProgressBar::new(len as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed}] {bar:30} {pos}/{len} {msg}",
        ) {
            b.set_style(style);
        }
        b
    })
}

fn print_report(r: &Report, output: Output) {
    match output {
        Output::Json => match serde_json::to_string_pretty(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("cannot encode the report: {e}"),
        },
        Output::Text => {
            for e in &r.entries {
                let note = e.error.as_deref().or(e.detail.as_deref()).unwrap_or("");
                println!(
                    "{:<16} {}{}",
                    e.outcome.as_str(),
                    e.object,
                    if note.is_empty() {
                        String::new()
                    } else {
                        format!("  ({note})")
                    }
                );
            }
            if r.entries.is_empty() && !r.message.is_empty() {
                println!("{}", r.message);
            }
            println!("{}", report::summary_line(r));
        }
    }
}

/// `pause-ledger validate`.
pub async fn validate(args: &ValidateArgs, access: Option<Access>) -> Exit {
    let text = if args.file == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            eprintln!("pause-ledger: cannot read stdin: {e}");
            return Exit::Error;
        }
        s
    } else {
        match std::fs::read_to_string(&args.file) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("pause-ledger: cannot read {}: {e}", args.file);
                return Exit::Error;
            }
        }
    };
    let mut result: Result<Ledger, LedgerError> = ledger::parse_file(&text);
    if let (Ok(l), Some(access)) = (&result, &access) {
        let policy = Policy::default();
        match plan::resolve(access, l, &policy, Instant::now() + Duration::from_secs(60)).await {
            Ok(_) => {}
            Err(PlanError::Ledger(e)) => result = Err(e),
            Err(PlanError::Api(e)) => {
                eprintln!("pause-ledger: discovery failed: {e}");
                return exit_for_api(&e, false);
            }
        }
    }
    match (&result, args.output) {
        (Ok(l), Output::Json) => println!(
            "{}",
            json!({"valid": true, "form": l.form, "upgrade": l.upgrade, "ownership": l.ownership, "entries": l.entries, "digest": l.digest})
        ),
        (Ok(l), Output::Text) => println!(
            "{}: valid ({} form, upgrade {}, {} entr{}, ownership {:?})",
            args.file,
            match l.form {
                ledger::Form::Full => "full",
                ledger::Form::Minimal => "minimal",
            },
            if l.upgrade.is_empty() {
                "-"
            } else {
                &l.upgrade
            },
            l.entries.len(),
            if l.entries.len() == 1 { "y" } else { "ies" },
            l.ownership
        ),
        (Err(e), Output::Json) => println!(
            "{}",
            json!({"valid": false, "issues": e.issues().iter().map(|i| json!({"location": i.location, "message": i.message})).collect::<Vec<_>>()})
        ),
        (Err(e), Output::Text) => eprintln!("{}: {e}", args.file),
    }
    if result.is_ok() {
        Exit::Success
    } else {
        Exit::InvalidLedger
    }
}

/// `pause-ledger status`.
pub async fn status(args: &StatusArgs, access: Access) -> Exit {
    let at = &args.ledger.ledger;
    let policy = Policy::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (data, status_text) = match read_ledger_data(&access, at, &policy, deadline).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            eprintln!("pause-ledger: ledger {at} not found");
            return Exit::LedgerMissing;
        }
        Err(e) => {
            eprintln!("pause-ledger: cannot read ledger {at}: {e}");
            return exit_for_api(&e, false);
        }
    };
    let ledger = match ledger::parse_configmap_data(&data) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("pause-ledger: {e}");
            return Exit::InvalidLedger;
        }
    };
    let doc = status::parse(status_text.as_deref());
    let plan = match plan::resolve(&access, &ledger, &policy, deadline).await {
        Ok(p) => p,
        Err(PlanError::Ledger(e)) => {
            eprintln!("pause-ledger: {e}");
            return Exit::InvalidLedger;
        }
        Err(PlanError::Api(e)) => {
            eprintln!("pause-ledger: discovery failed: {e}");
            return exit_for_api(&e, false);
        }
    };
    let mut rows = Vec::new();
    let mut exit = Exit::Success;
    for step in plan.waves.iter().flat_map(|w| &w.steps) {
        let e = &step.entry;
        let target = e.object.to_string();
        let budget = Budget::new(policy.max_attempts, deadline);
        let path = Access::path(&step.resolved, &e.object);
        let live = with_retry(&policy, &budget, &format!("get {target}"), || {
            access.get(&target, &path)
        })
        .await;
        let recorded = doc
            .as_ref()
            .and_then(|d| d.entries.iter().find(|s| s.object == e.object));
        let (live_state, err) = match live {
            Ok(Some(obj)) => match pause_state(&obj, &e.field) {
                Ok(s) => (json!(s), None),
                Err(m) => (Value::Null, Some(m)),
            },
            Ok(None) => (json!("gone"), None),
            Err(err) => {
                exit = exit_for_api(&err, false);
                (Value::Null, Some(err.to_string()))
            }
        };
        rows.push(json!({
            "object": e.object, "field": e.field, "order": e.order,
            "live": live_state, "error": err,
            "status": recorded.map(|r| json!({"outcome": r.outcome, "attempts": r.attempts, "restoredAt": r.restored_at, "lastError": r.last_error})),
        }));
    }
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "ledger": at.to_string(), "upgrade": ledger.upgrade, "pausedAt": ledger.paused_at,
                "ownership": ledger.ownership, "form": ledger.form, "digest": ledger.digest,
                "status": doc.as_ref().map(|d| json!({"state": d.state, "runs": d.runs, "updatedAt": d.updated_at, "lastExitCode": d.last_exit_code, "current": d.ledger_digest == ledger.digest})),
                "entries": rows,
                "pausedBefore": ledger.paused_before,
            }))
            .unwrap_or_default()
        ),
        Output::Text => {
            println!(
                "ledger {at}  upgrade {}  paused at {}  ownership {:?}",
                if ledger.upgrade.is_empty() { "-" } else { &ledger.upgrade },
                ledger.paused_at.map(|t| t.to_string()).unwrap_or_else(|| "-".into()),
                ledger.ownership
            );
            match &doc {
                Some(d) => println!("status {:?}  runs {}  updated {}  last exit {}", d.state, d.runs, d.updated_at, d.last_exit_code),
                None => println!("status: never restored"),
            }
            println!("{:<6} {:<60} {:<8} {:<28} {:<16} NOTE", "ORDER", "OBJECT", "PAUSED", "MARK", "OUTCOME");
            for r in &rows {
                let paused = match r["live"].get("paused") {
                    Some(Value::Bool(b)) => b.to_string(),
                    _ if r["live"] == json!("gone") => "gone".into(),
                    _ if r["live"].is_object() => "false".into(),
                    _ => "?".into(),
                };
                let mark = r["live"].get("mark").and_then(Value::as_str).unwrap_or("-");
                let outcome = r["status"].get("outcome").and_then(Value::as_str).unwrap_or("-");
                let note = r["error"].as_str().or(r["status"].get("lastError").and_then(Value::as_str)).unwrap_or("");
                let object = serde_json::from_value::<crate::kinds::ObjectRef>(r["object"].clone())
                    .map(|o| o.to_string())
                    .unwrap_or_default();
                let order = r["order"].as_i64().unwrap_or_default();
                println!("{order:<6} {object:<60} {paused:<8} {mark:<28} {outcome:<16} {note}");
            }
        }
    }
    exit
}
