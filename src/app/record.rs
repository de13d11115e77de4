//! `record`: the pause side.

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{Run, exit_for_api};
use crate::cli::{Output, RecordArgs};
use crate::events::{Reason, Recorder};
use crate::exit::Exit;
use crate::kinds::{self, FieldPath, ObjectRef};
use crate::kube_access::{Access, Verb, object_path, urlencode};
use crate::ledger::{self, Entry, Form, Issue, Ledger, LedgerError, Ownership};
use crate::plan::{self, PlanError};
use crate::record::{RecordEntry, RecordError, RecordOptions, RecordOutcome};
use crate::retry::{Budget, with_retry};

/// `pause-ledger record`.
pub async fn record(args: &RecordArgs, access: Access, cancel: CancellationToken, plain_logs: bool) -> Exit {
    let run = Run::new(&args.run, access, cancel, plain_logs);
    let at = &args.ledger.ledger;
    let print = |exit: Exit, entries: &[RecordEntry], ledger_yaml: Option<&str>, message: &str| {
        print_result(args, exit, entries, ledger_yaml, message);
        exit
    };
    let mut issues = Vec::new();
    if let Err(m) = ledger::check_upgrade(&args.upgrade) {
        issues.push(Issue { location: "--upgrade".into(), message: m });
    }
    let targets = match targets(&run, args, &mut issues).await {
        Ok(t) => t,
        Err((exit, m)) => return print(exit, &[], None, &m),
    };
    if !issues.is_empty() {
        let e = LedgerError::Invalid(issues);
        tracing::error!("{e}");
        return print(Exit::InvalidLedger, &[], None, &e.to_string());
    }
    let ledger = Ledger {
        upgrade: args.upgrade.clone(),
        paused_at: None,
        ownership: Ownership::Marked,
        field_manager: ledger::DEFAULT_FIELD_MANAGER.into(),
        entries: targets,
        paused_before: vec![],
        form: Form::Full,
        digest: String::new(),
    };
    let plan = match plan::resolve(&run.access, &ledger, &run.policy, run.entries_deadline).await {
        Ok(p) => p,
        Err(PlanError::Ledger(e)) => return print(Exit::InvalidLedger, &[], None, &e.to_string()),
        Err(PlanError::Api(e)) => return print(exit_for_api(&e), &[], None, &e.to_string()),
    };
    let opts = RecordOptions {
        upgrade: args.upgrade.clone(),
        on_existing: args.on_existing,
        dry_run: run.args.dry_run,
        concurrency: usize::from(run.args.concurrency),
        policy: run.policy,
        deadline: run.entries_deadline,
    };
    let recorded = tokio::select! {
        r = crate::record::record(&run.access, at, &plan, &opts) => r,
        _ = run.cancel.cancelled() => return print(Exit::Terminated, &[], None, "terminated; rerun record with the same --upgrade to finish"),
    };
    let (results, yaml) = match recorded {
        Ok(r) => r,
        Err(e @ RecordError::Conflict { .. }) => {
            tracing::error!("{e}");
            return print(Exit::LedgerConflict, &[], None, &e.to_string());
        }
        Err(e @ RecordError::ExistingInvalid { .. }) => {
            tracing::error!("{e}");
            return print(Exit::InvalidLedger, &[], None, &e.to_string());
        }
        Err(RecordError::Api(e)) => {
            tracing::error!(error = %e, "record failed");
            return print(exit_for_api(&e), &[], None, &e.to_string());
        }
        Err(e) => return print(Exit::Error, &[], None, &e.to_string()),
    };
    let failed: Vec<&RecordEntry> = results.iter().filter(|r| r.outcome == RecordOutcome::Failed).collect();
    let exit = if failed.is_empty() {
        Exit::Success
    } else if failed.iter().any(|r| r.error.as_deref().is_some_and(|e| e.contains("HTTP 403"))) {
        Exit::PermissionDenied
    } else {
        Exit::PartialFailure
    };
    let paused = results.iter().filter(|r| r.outcome == RecordOutcome::Paused).count();
    let message = format!(
        "{} paused, {} already ours, {} paused before the upgrade (never restored), {} gone, {} failed",
        paused,
        results.iter().filter(|r| r.outcome == RecordOutcome::AlreadyOurs).count(),
        results.iter().filter(|r| r.outcome == RecordOutcome::PausedBefore).count(),
        results.iter().filter(|r| r.outcome == RecordOutcome::Gone).count(),
        failed.len(),
    );
    let events = Recorder::new(run.access.clone(), run.args.events && !run.args.dry_run);
    let mut normal = 0;
    for r in &results {
        match r.outcome {
            RecordOutcome::Paused if normal >= run.args.max_object_events => {}
            RecordOutcome::Paused => {
                normal += 1;
                let m =
                    format!("paused by upgrade {} (annotation {})", args.upgrade, crate::ownership::MARK_ANNOTATION);
                events.emit(&r.object, r.uid.as_deref(), Reason::Paused, &m).await;
            }
            RecordOutcome::Failed => {
                let m = r.error.clone().unwrap_or_default();
                events.emit(&r.object, r.uid.as_deref(), Reason::PauseFailed, &m).await;
            }
            _ => {}
        }
    }
    let cm = ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: Some(at.namespace.clone()),
        name: at.name.clone(),
    };
    let cm_uid = run
        .access
        .get(&cm.to_string(), &crate::kube_access::configmap_path(&at.namespace, &at.name))
        .await
        .ok()
        .flatten()
        .and_then(|v| v.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string));
    if cm_uid.is_some() {
        events.emit(&cm, cm_uid.as_deref(), Reason::Recorded, &format!("upgrade {}: {message}", args.upgrade)).await;
    }
    tracing::info!(ledger = %at, upgrade = %args.upgrade, "{message}");
    print(exit, &results, Some(&yaml), &message)
}

/// The objects to pause: a preset, names, or a label selector.
async fn targets(run: &Run<'_>, args: &RecordArgs, issues: &mut Vec<Issue>) -> Result<Vec<Entry>, (Exit, String)> {
    if let Some(p) = args.preset {
        return Ok(p.entries(args.namespace.as_deref()));
    }
    let (group, kind) = (args.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or(""), args.kind.as_str());
    let field_text = args.field.clone().unwrap_or_else(|| kinds::default_field(group, kind).to_string());
    let field = match FieldPath::parse(&field_text) {
        Ok(f) => f,
        Err(m) => {
            issues.push(Issue { location: "--field".into(), message: m });
            return Ok(vec![]);
        }
    };
    let names: Vec<String> = match &args.selector {
        None if args.names.is_empty() => {
            issues.push(Issue {
                location: "targets".into(),
                message: "name objects, or pass --selector or --preset".into(),
            });
            return Ok(vec![]);
        }
        None => args.names.clone(),
        Some(sel) => list_names(run, args, sel).await?,
    };
    let mut out = Vec::new();
    for name in names {
        if let Err(m) = ledger::check_subdomain(&name) {
            issues.push(Issue { location: format!("name {name:?}"), message: m });
            continue;
        }
        let object = ObjectRef {
            api_version: args.api_version.clone(),
            kind: args.kind.clone(),
            namespace: args.namespace.clone(),
            name,
        };
        let order = args.order.unwrap_or_else(|| kinds::default_order(&object));
        out.push(Entry { object: object.into(), field: field.clone(), order, line: None });
    }
    Ok(out)
}

async fn list_names(run: &Run<'_>, args: &RecordArgs, selector: &str) -> Result<Vec<String>, (Exit, String)> {
    let resolved = match run.access.resolve(&args.api_version, &args.kind).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err((Exit::InvalidLedger, format!("kind {} {} is not served", args.api_version, args.kind)));
        }
        Err(e) => return Err((exit_for_api(&e), e.to_string())),
    };
    let ns = args.namespace.as_deref().filter(|_| resolved.namespaced);
    if resolved.namespaced && ns.is_none() {
        return Err((Exit::Usage, format!("{} is namespaced: pass --namespace with --selector", args.kind)));
    }
    let query = urlencode(selector);
    let path = format!("{}?labelSelector={query}", object_path(&args.api_version, &resolved.plural, ns, None));
    let budget = Budget::new(run.policy.max_attempts, run.entries_deadline);
    let target = format!("{} {selector}", args.kind);
    let list = with_retry(&run.policy, &budget, &format!("list {target}"), || {
        run.access.request(Verb::List, &target, http::Method::GET, &path, None)
    })
    .await
    .map_err(|e| (exit_for_api(&e), e.to_string()))?;
    Ok(list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
        .collect())
}

fn print_result(args: &RecordArgs, exit: Exit, entries: &[RecordEntry], ledger_yaml: Option<&str>, message: &str) {
    match args.run.output {
        Output::Json => {
            let doc = json!({
                "version": "pause-ledger/record/v1",
                "ledger": args.ledger.ledger.to_string(),
                "upgrade": args.upgrade,
                "dryRun": args.run.dry_run,
                "result": exit.word(),
                "exitCode": exit.code(),
                "message": message,
                "entries": entries,
                "ledgerYaml": ledger_yaml,
            });
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Output::Text => {
            for e in entries {
                let outcome = serde_json::to_value(e.outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let note = e.error.as_deref().map(|m| format!("  ({m})")).unwrap_or_default();
                println!("{outcome:<16} {}{note}", e.object);
            }
            println!(
                "pause-ledger record: {} (exit {}): {message}; ledger {} upgrade {}{}",
                exit.word(),
                exit.code(),
                args.ledger.ledger,
                args.upgrade,
                if args.run.dry_run { " [dry run]" } else { "" }
            );
        }
    }
}
