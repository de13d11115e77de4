//! `validate` and `status`: read-only commands.

use std::io::Read;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::{exit_for_api, read_ledger_data};
use crate::cli::{Output, StatusArgs, ValidateArgs};
use crate::exit::Exit;
use crate::kube_access::Access;
use crate::ledger::{self, Ledger, LedgerError};
use crate::ownership::pause_state;
use crate::plan::{self, PlanError};
use crate::retry::{Budget, Policy, with_retry};
use crate::status;

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
                return exit_for_api(&e);
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
            if l.upgrade.is_empty() { "-" } else { &l.upgrade },
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
    if result.is_ok() { Exit::Success } else { Exit::InvalidLedger }
}

/// `pause-ledger status`.
pub async fn status(args: &StatusArgs, access: Access) -> Exit {
    let at = &args.ledger.ledger;
    let policy = Policy::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (data, status_text, _) = match read_ledger_data(&access, at, &policy, deadline).await {
        Ok(Some(d)) => d,
        Ok(None) => {
            eprintln!("pause-ledger: ledger {at} not found");
            return Exit::LedgerMissing;
        }
        Err(e) => {
            eprintln!("pause-ledger: cannot read ledger {at}: {e}");
            return exit_for_api(&e);
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
            return exit_for_api(&e);
        }
    };
    let recorded_by_obj = doc.clone().map(|d| d.per_entry(&ledger)).unwrap_or_default();
    let mut rows = Vec::new();
    let mut exit = Exit::Success;
    for step in plan.waves.iter().flat_map(|w| &w.steps) {
        let e = &step.entry;
        let target = e.object.to_string();
        let budget = Budget::new(policy.max_attempts, deadline);
        let path = Access::path(&step.resolved, &e.object);
        let live = with_retry(&policy, &budget, &format!("get {target}"), || access.get(&target, &path)).await;
        let recorded = recorded_by_obj.get(&e.object);
        let (live_state, err) = match live {
            Ok(Some(obj)) => match pause_state(&obj, &e.field) {
                Ok(s) => (json!(s), None),
                Err(m) => (Value::Null, Some(m)),
            },
            Ok(None) => (json!("gone"), None),
            Err(err) => {
                exit = exit_for_api(&err);
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
                "status": doc.as_ref().map(|d| json!({"state": d.state, "runs": d.runs, "updatedAt": d.updated_at, "lastExitCode": d.last_exit_code, "current": d.ledger_digest == ledger.digest, "counts": d.counts, "compact": d.outcomes.is_some()})),
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
                Some(d) => {
                    let counts = d.counts.iter().map(|(o, n)| format!("{n} {o}")).collect::<Vec<_>>().join(", ");
                    println!(
                        "status {:?}  runs {}  updated {}  last exit {}  ({counts})",
                        d.state, d.runs, d.updated_at, d.last_exit_code
                    )
                }
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
