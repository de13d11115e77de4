//! `pause-ledger status`: the ledger, its restore status and the live state of every entry.

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::read_only;
use crate::api::Target;
use crate::cli::{Global, OutputArg, StatusArgs};
use crate::context::Context;
use crate::error::RunError;
use crate::exit::Exit;
use crate::ledger;
use crate::ledger_store::LedgerStore;
use crate::ownership::pause_state;
use crate::plan;
use crate::report::write_json;
use crate::status_doc;

/// `pause-ledger status`.
pub async fn status(global: &Global, args: &StatusArgs, cancel: CancellationToken) -> Exit {
    let at = &args.ledger.ledger;
    let span = tracing::info_span!("status", ledger = %at);
    let result = async {
        let ctx = read_only(global, &args.api, cancel).await?;
        show(&ctx, args).await
    }
    .instrument(span)
    .await;
    match result {
        Ok(exit) => exit,
        Err(e) => {
            tracing::error!(ledger = %at, "{e}");
            e.exit()
        }
    }
}

/// One row: an entry and what is known of it.
struct Row {
    order: i32,
    object: String,
    paused: String,
    mark: String,
    outcome: String,
    note: String,
    json: Value,
}

async fn show(ctx: &Context, args: &StatusArgs) -> Result<Exit, RunError> {
    let at = &args.ledger.ledger;
    let stored = LedgerStore::new(ctx, at).read().await?.ok_or_else(|| RunError::LedgerMissing(at.clone()))?;
    let ledger = ledger::parse_configmap_data(&stored.data)?;
    let doc = status_doc::parse(stored.status.as_deref());
    let plan = plan::resolve(ctx, &ledger.entries).await?;
    let recorded = doc.clone().map(|d| d.per_entry(&ledger)).unwrap_or_default();
    let mut rows = Vec::new();
    let mut exit = Exit::Success;
    for step in plan.steps() {
        let e = &step.entry;
        let rec = recorded.get(&e.object);
        let (live, error) = match ctx.get(&Target::object(&e.object, &step.resolved)).await {
            Ok(Some(obj)) => match pause_state(&obj, &e.field) {
                Ok(s) => (json!(s), None),
                Err(m) => (Value::Null, Some(m)),
            },
            Ok(None) => (json!("gone"), None),
            Err(f) => {
                exit = RunError::Api(f.clone()).exit();
                (Value::Null, Some(f.to_string()))
            }
        };
        let paused = match live.get("paused") {
            Some(Value::Bool(b)) => b.to_string(),
            _ if live == json!("gone") => "gone".into(),
            _ if live.is_object() => "false".into(),
            _ => "?".into(),
        };
        let note = error
            .clone()
            .or_else(|| rec.and_then(|r| r.last_error.clone()))
            .or_else(|| rec.and_then(|r| r.detail.clone()))
            .unwrap_or_default();
        rows.push(Row {
            order: e.order,
            object: e.object.to_string(),
            paused,
            mark: live.get("mark").and_then(Value::as_str).unwrap_or("-").to_string(),
            outcome: rec.map_or("-".to_string(), |r| r.outcome.to_string()),
            note,
            json: json!({
                "object": e.object, "field": e.field, "order": e.order,
                "live": live, "error": error,
                "status": rec.map(|r| json!({"outcome": r.outcome, "attempts": r.attempts, "restoredAt": r.restored_at, "lastError": r.last_error, "detail": r.detail})),
            }),
        });
    }
    match args.output {
        OutputArg::Json => write_json(&json!({
            "ledger": at.to_string(), "upgrade": ledger.upgrade, "pausedAt": ledger.paused_at,
            "ownership": ledger.ownership, "form": ledger.form, "digest": ledger.digest,
            "status": doc.as_ref().map(|d| json!({"state": d.state, "runs": d.runs, "updatedAt": d.updated_at, "lastExitCode": d.last_exit_code, "current": d.ledger_digest == ledger.digest, "counts": d.counts, "compact": d.outcomes.is_some()})),
            "entries": rows.iter().map(|r| &r.json).collect::<Vec<_>>(),
            "pausedBefore": ledger.paused_before,
        })),
        OutputArg::Text => {
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
            let table: Vec<[String; 6]> = rows
                .iter()
                .map(|r| {
                    [
                        r.order.to_string(),
                        r.object.clone(),
                        r.paused.clone(),
                        r.mark.clone(),
                        r.outcome.clone(),
                        r.note.clone(),
                    ]
                })
                .collect();
            print!("{}", columns(["ORDER", "OBJECT", "PAUSED", "MARK", "OUTCOME", "NOTE"], &table));
            for b in &ledger.paused_before {
                println!("paused before the upgrade (never restored): {b}");
            }
        }
    }
    Ok(exit)
}

/// A table whose columns fit their content, separated by three spaces (like `kubectl get`).
pub fn columns<const N: usize>(header: [&str; N], rows: &[[String; N]]) -> String {
    let mut width = header.map(str::len);
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(width).enumerate() {
            if i + 1 == N {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}   "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_fit_their_content() {
        let long = "ManagedChart.management.cattle.io fleet-local/rancher-monitoring-crd".to_string();
        let t = columns(
            ["A", "OBJECT", "NOTE"],
            &[["0".into(), long.clone(), "x".into()], ["10".into(), "short".into(), "".into()]],
        );
        let lines: Vec<&str> = t.lines().collect();
        // Every column starts at the same offset on every line.
        let at = |l: &str, s: &str| l.find(s).unwrap();
        assert_eq!(at(lines[0], "OBJECT"), at(lines[1], "Managed"));
        assert_eq!(at(lines[0], "OBJECT"), at(lines[2], "short"));
        assert_eq!(at(lines[0], "NOTE"), at(lines[1], "x"));
        assert_eq!(lines[2], "10   short", "no trailing spaces");
        assert_eq!(lines[1], format!("0    {long}   x"));
    }
}
