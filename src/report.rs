//! The report printed on stdout: the JSON document for CI (docs/report.md), the per-entry
//! lines and the one-line summary.

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::outcome::{EntryReport, Outcome};

/// Version tag of the JSON report.
pub const REPORT_VERSION: &str = "pause-ledger/report/v1";

/// How results are printed on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Lines for people: one per entry, then the summary line.
    Text,
    /// The documented JSON document (docs/report.md).
    Json,
}

/// The whole run's report (`--output json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: String,
    /// `NAMESPACE/NAME` of the ledger ConfigMap.
    pub ledger: String,
    /// The upgrade id.
    pub upgrade: String,
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Result word: see [`crate::exit::Exit::word`].
    pub result: String,
    /// The process exit code.
    pub exit_code: i32,
    /// Human explanation of the result.
    pub message: String,
    /// Run start.
    pub started_at: Timestamp,
    /// Wall time.
    pub duration_ms: u64,
    /// HTTP requests sent.
    pub requests: u64,
    /// Count per outcome.
    pub summary: BTreeMap<Outcome, usize>,
    /// Per-entry results, in ledger order.
    pub entries: Vec<EntryReport>,
    /// Things to look at that did not change the result (e.g. ManagedCharts not Ready).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The one-line summary printed at the end of every run.
pub fn summary_line(r: &Report) -> String {
    let counts = r.summary.iter().map(|(o, n)| format!("{n} {o}")).collect::<Vec<_>>().join(", ");
    let counts = if counts.is_empty() { "no entries".to_string() } else { counts };
    format!(
        "pause-ledger: {} (exit {}): {counts}; ledger {} upgrade {}{} in {} ms, {} requests",
        r.result,
        r.exit_code,
        r.ledger,
        if r.upgrade.is_empty() { "-" } else { &r.upgrade },
        if r.dry_run { " [dry run]" } else { "" },
        r.duration_ms,
        r.requests
    )
}

impl Report {
    /// Print the report on stdout.
    pub fn print(&self, format: Format) {
        match format {
            Format::Json => write_json(self),
            Format::Text => {
                for e in &self.entries {
                    let note = e.error.as_deref().or(e.detail.as_deref()).unwrap_or("");
                    let note = if note.is_empty() { String::new() } else { format!("  ({note})") };
                    println!("{:<16} {}{note}", e.outcome.as_str(), e.object);
                }
                if self.entries.is_empty() && !self.message.is_empty() {
                    println!("{}", self.message);
                }
                for w in &self.warnings {
                    println!("warning: {w}");
                }
                println!("{}", summary_line(self));
            }
        }
    }
}

/// Write a document as pretty JSON on stdout, streamed: the report of a 5000-entry run is
/// ~2.5 MB of text, not held in memory.
pub fn write_json<T: Serialize>(doc: &T) {
    use std::io::Write as _;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let written = serde_json::to_writer_pretty(&mut out, doc)
        .map_err(std::io::Error::from)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush());
    if let Err(e) = written {
        tracing::error!(error = %e, "cannot write the report");
    }
}
