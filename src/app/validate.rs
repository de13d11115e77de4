//! `pause-ledger validate`: a ledger file, offline or (with `--cluster`) through discovery.

use std::io::Read;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::read_only;
use crate::cli::{Global, OutputArg, ValidateArgs};
use crate::error::RunError;
use crate::exit::Exit;
use crate::ledger::{self, Issue, Ledger, LedgerError};
use crate::plan;
use crate::report::write_json;

/// `pause-ledger validate`.
pub async fn validate(global: &Global, args: &ValidateArgs, cancel: CancellationToken) -> Exit {
    let span = tracing::info_span!("validate", file = %args.file);
    match check(global, args, cancel).instrument(span.clone()).await {
        Ok(result) => {
            print(args, &result);
            if result.is_ok() { Exit::Success } else { Exit::InvalidLedger }
        }
        Err(e) => {
            span.in_scope(|| tracing::error!("{e}"));
            e.exit()
        }
    }
}

/// The file's text; a file that is not UTF-8 is an invalid ledger (exit 4), not an I/O error.
fn read(file: &str) -> Result<Result<String, LedgerError>, RunError> {
    let mut bytes = Vec::new();
    let read = if file == "-" {
        std::io::stdin().read_to_end(&mut bytes).map(drop)
    } else {
        std::fs::read(file).map(|b| bytes = b)
    };
    read.map_err(|e| RunError::Read { path: file.to_string(), message: e.to_string() })?;
    Ok(String::from_utf8(bytes).map_err(|e| {
        let issue = Issue {
            location: format!("byte {}", e.utf8_error().valid_up_to()),
            message: "the file is not UTF-8 text".into(),
        };
        LedgerError::Invalid(vec![issue])
    }))
}

async fn check(
    global: &Global,
    args: &ValidateArgs,
    cancel: CancellationToken,
) -> Result<Result<Ledger, LedgerError>, RunError> {
    let parsed = match read(&args.file)? {
        Ok(text) => ledger::parse_file(&text),
        Err(e) => Err(e),
    };
    let Ok(l) = parsed else { return Ok(parsed) };
    if !args.cluster {
        return Ok(Ok(l));
    }
    let ctx = read_only(global, &args.api, cancel).await?;
    match plan::resolve(&ctx, &l.entries).await {
        Ok(_) => Ok(Ok(l)),
        Err(plan::PlanError::Ledger(e)) => Ok(Err(e)),
        Err(e) => Err(e.into()),
    }
}

fn print(args: &ValidateArgs, result: &Result<Ledger, LedgerError>) {
    match (result, args.output) {
        (Ok(l), OutputArg::Json) => write_json(&json!({
            "valid": true, "form": l.form, "upgrade": l.upgrade, "ownership": l.ownership,
            "entries": l.entries, "digest": l.digest,
        })),
        (Ok(l), OutputArg::Text) => println!(
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
        (Err(e), OutputArg::Json) => write_json(&json!({
            "valid": false,
            "issues": e.issues().iter().map(|i| json!({"location": i.location, "message": i.message})).collect::<Vec<_>>(),
        })),
        (Err(e), OutputArg::Text) => println!("{}: {e}", args.file),
    }
}
