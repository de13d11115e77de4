//! `pause-ledger record`: the pause side.

use serde::Serialize;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Run;
use crate::api::{Target, object_path, urlencode};
use crate::cli::{Global, RecordArgs};
use crate::error::RunError;
use crate::events::Reason;
use crate::exit::Exit;
use crate::kinds::{self, FieldPath, ObjectRef};
use crate::ledger::{self, Entry, Issue, LedgerError};
use crate::ledger_store::LedgerStore;
use crate::pause::{RecordEntry, RecordOptions, RecordOutcome, Recorded};
use crate::plan;
use crate::preset::Preset;
use crate::report::{Format, write_json};

/// Version tag of record's JSON output.
pub const RECORD_REPORT_VERSION: &str = "pause-ledger/record/v1";

/// What `record` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct RecordReport {
    version: &'static str,
    ledger: String,
    upgrade: String,
    dry_run: bool,
    result: &'static str,
    exit_code: i32,
    message: String,
    entries: Vec<RecordEntry>,
    ledger_yaml: Option<String>,
    #[serde(skip)]
    exit: Exit,
}

impl RecordReport {
    fn new(args: &RecordArgs, exit: Exit, message: String, entries: Vec<RecordEntry>, yaml: Option<String>) -> Self {
        Self {
            version: RECORD_REPORT_VERSION,
            ledger: args.ledger.ledger.to_string(),
            upgrade: args.upgrade.clone(),
            dry_run: args.run.dry_run,
            result: exit.word(),
            exit_code: exit.code(),
            message,
            entries,
            ledger_yaml: yaml,
            exit,
        }
    }

    fn print(&self, format: Format) {
        match format {
            Format::Json => write_json(self),
            Format::Text => {
                for e in &self.entries {
                    let note = e.error.as_deref().map(|m| format!("  ({m})")).unwrap_or_default();
                    println!("{:<16} {}{note}", e.outcome.as_str(), e.object);
                }
                println!(
                    "pause-ledger record: {} (exit {}): {}; ledger {} upgrade {}{}",
                    self.result,
                    self.exit_code,
                    self.message,
                    self.ledger,
                    self.upgrade,
                    if self.dry_run { " [dry run]" } else { "" }
                );
            }
        }
    }
}

/// `pause-ledger record`.
pub async fn record(global: &Global, args: &RecordArgs, cancel: CancellationToken, plain_logs: bool) -> Exit {
    let at = &args.ledger.ledger;
    let run = match Run::start(global, &args.api, &args.run, at.to_string(), cancel, plain_logs).await {
        Ok(r) => r,
        Err(exit) => return exit,
    };
    run.set_upgrade(&args.upgrade);
    let report = match record_targets(&run, args).instrument(run.span.clone()).await {
        Ok(r) => r,
        Err(e) => {
            let _enter = run.span.enter();
            tracing::error!("{e}");
            RecordReport::new(args, e.exit(), e.to_string(), vec![], None)
        }
    };
    report.print(Format::from(args.run.output));
    report.exit
}

async fn record_targets(run: &Run<'_>, args: &RecordArgs) -> Result<RecordReport, RunError> {
    let at = &args.ledger.ledger;
    let mut issues = Vec::new();
    if let Err(m) = ledger::check_upgrade(&args.upgrade) {
        issues.push(Issue { location: "--upgrade".into(), message: m });
    }
    let targets = targets(run, args, &mut issues).await?;
    if !issues.is_empty() {
        return Err(LedgerError::Invalid(issues).into());
    }
    let plan = plan::resolve(&run.entries, &targets).await?;
    let opts = RecordOptions {
        upgrade: args.upgrade.clone(),
        on_existing: args.on_existing.into(),
        dry_run: run.args.dry_run,
        concurrency: usize::from(run.args.concurrency),
        run_id: run.run_id.clone(),
    };
    let store = LedgerStore::new(&run.entries, at);
    let Recorded { entries: results, ledger_yaml: yaml } = tokio::select! {
        r = crate::pause::record(&run.entries, &store, &plan, &opts) => r?,
        _ = run.ctx.cancel().cancelled() => {
            return Err(RunError::Terminated("while recording; rerun record with the same --upgrade to finish"));
        }
    };
    let count = |o: RecordOutcome| results.iter().filter(|r| r.outcome == o).count();
    let failed = count(RecordOutcome::Failed) + count(RecordOutcome::NotTakenOver);
    let exit = if failed == 0 {
        Exit::Success
    } else if results.iter().any(|r| r.outcome == RecordOutcome::Failed && r.denied) {
        Exit::PermissionDenied
    } else {
        Exit::PartialFailure
    };
    let mut message = format!(
        "{} paused, {} already ours, {} paused before the upgrade (never restored), {} gone, {} failed",
        count(RecordOutcome::Paused),
        count(RecordOutcome::AlreadyOurs),
        count(RecordOutcome::PausedBefore),
        count(RecordOutcome::Gone),
        count(RecordOutcome::Failed),
    );
    let (taken, not_taken) = (count(RecordOutcome::TakenOver), count(RecordOutcome::NotTakenOver));
    if taken + not_taken > 0 {
        message.push_str(&format!(
            "; {taken} earlier entries taken over, {not_taken} not (they keep their old upgrade's mark in the ledger)"
        ));
    }
    emit_events(run, args, &results, &message).await;
    tracing::info!("{message}");
    Ok(RecordReport::new(args, exit, message, results, Some(yaml)))
}

async fn emit_events(run: &Run<'_>, args: &RecordArgs, results: &[RecordEntry], message: &str) {
    let events = run.ctx.events();
    let mut normal = 0;
    for r in results {
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
    let at = &args.ledger.ledger;
    let cm = ObjectRef {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        namespace: Some(at.namespace.clone()),
        name: at.name.clone(),
    };
    let target = Target::configmap(&at.namespace, &at.name);
    let cm_uid = run
        .ctx
        .access()
        .get(&target.name, &target.path)
        .await
        .ok()
        .flatten()
        .and_then(|v| v.pointer("/metadata/uid").and_then(Value::as_str).map(str::to_string));
    if cm_uid.is_some() {
        events.emit(&cm, cm_uid.as_deref(), Reason::Recorded, &format!("upgrade {}: {message}", args.upgrade)).await;
    }
}

/// The objects to pause: a preset, names, or a label selector.
async fn targets(run: &Run<'_>, args: &RecordArgs, issues: &mut Vec<Issue>) -> Result<Vec<Entry>, RunError> {
    if let Some(p) = args.preset {
        return Ok(Preset::from(p).entries(args.namespace.as_deref()));
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
        out.push(Entry::new(object.into(), field.clone(), order));
    }
    Ok(out)
}

async fn list_names(run: &Run<'_>, args: &RecordArgs, selector: &str) -> Result<Vec<String>, RunError> {
    let Some(resolved) = run.entries.resolve(&args.api_version, &args.kind).await? else {
        let issue = Issue {
            location: "--kind".into(),
            message: format!("kind {} {} is not served by this API server", args.api_version, args.kind),
        };
        return Err(LedgerError::Invalid(vec![issue]).into());
    };
    let ns = args.namespace.as_deref().filter(|_| resolved.namespaced);
    if resolved.namespaced && ns.is_none() {
        return Err(RunError::Usage(format!("{} is namespaced: pass --namespace with --selector", args.kind)));
    }
    let query = urlencode(selector);
    let path = format!("{}?labelSelector={query}", object_path(&args.api_version, &resolved.plural, ns, None));
    let target = Target { name: format!("{} {selector}", args.kind), path };
    let list = run.entries.list_in(&run.entries.budget(), &target).await?;
    Ok(list
        .get("items")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string))
        .collect())
}
