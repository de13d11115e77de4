//! The restore status document kept in the ledger ConfigMap under its own key
//! ([`crate::ledger::STATUS_KEY`]), so the recorded set is never rewritten: its format, how a
//! run's results merge into the previous status, and how it is encoded to fit the ConfigMap
//! size limit. Pure: [`crate::ledger_store`] reads and writes it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::kinds::ObjectRef;
use crate::ledger::{Ledger, STATUS_KEY};
use crate::outcome::{EntryReport, Outcome};

/// Version tag of the status document.
pub const STATUS_VERSION: &str = "pause-ledger/status/v1";

/// Overall state of a ledger's restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Every entry settled (restored, already running, gone, not ours): reruns are no-ops.
    Done,
    /// Some entries failed or were skipped: a rerun will try them again.
    Incomplete,
}

/// The status document.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDoc {
    /// [`STATUS_VERSION`].
    pub version: String,
    /// The upgrade id of the ledger.
    pub upgrade: String,
    /// Digest of the recorded set this status describes.
    pub ledger_digest: String,
    /// Overall state.
    pub state: State,
    /// How many runs wrote this status.
    pub runs: u32,
    /// When the last run started.
    pub last_run_started_at: Timestamp,
    /// When the last run wrote.
    pub updated_at: Timestamp,
    /// The last run's exit code.
    pub last_exit_code: i32,
    /// Ids of the latest runs that wrote this status, oldest first (at most [`RECENT_RUNS`]):
    /// a run whose write was applied but whose answer was lost finds its id here and does not
    /// count itself twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_runs: Vec<String>,
    /// How many entries have each outcome.
    #[serde(default)]
    pub counts: BTreeMap<Outcome, usize>,
    /// Compact form only: one letter per ledger entry, in ledger order ([`letter`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcomes: Option<String>,
    /// Per-entry status: every entry in the full form; in the compact form only entries that
    /// need attention (not settled, or not ours), as many as fit.
    pub entries: Vec<EntryStatus>,
    /// Compact form: how many entries `entries` leaves out.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub unlisted: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// How many run ids a status keeps.
pub const RECENT_RUNS: usize = 16;

/// The ConfigMap size limit kube-apiserver enforces on the sum of its data values (1 MiB).
pub const CONFIGMAP_LIMIT: usize = 1024 * 1024;

/// One entry's status.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EntryStatus {
    /// The object.
    pub object: Arc<ObjectRef>,
    /// Latest outcome (a restore stays "restored" when a later run finds it running).
    pub outcome: Outcome,
    /// Attempts over all runs.
    pub attempts: u32,
    /// First attempt, over all runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_attempt_at: Option<Timestamp>,
    /// Latest attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Timestamp>,
    /// When it was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_at: Option<Timestamp>,
    /// Latest error, if the latest outcome is failed/skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Latest explanation (e.g. why not ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl EntryStatus {
    fn bare(object: Arc<ObjectRef>, outcome: Outcome) -> Self {
        Self {
            object,
            outcome,
            attempts: 0,
            first_attempt_at: None,
            last_attempt_at: None,
            restored_at: None,
            last_error: None,
            detail: None,
        }
    }
}

/// The compact form's letter for an outcome (docs/ledger.md).
pub fn letter(o: Outcome) -> char {
    match o {
        Outcome::Restored => 'r',
        Outcome::WouldRestore => 'w',
        Outcome::AlreadyRunning => 'a',
        Outcome::Gone => 'g',
        Outcome::NotOurs => 'n',
        Outcome::Failed => 'f',
        Outcome::Skipped => 's',
        Outcome::NotPropagated => 'p',
        Outcome::Repaused => 'x',
    }
}

fn from_letter(c: char) -> Option<Outcome> {
    use Outcome::*;
    [Restored, WouldRestore, AlreadyRunning, Gone, NotOurs, Failed, Skipped, NotPropagated, Repaused]
        .into_iter()
        .find(|o| letter(*o) == c)
}

/// Parse a status document; `None` if absent or unreadable (it is ours to overwrite).
pub fn parse(data: Option<&str>) -> Option<StatusDoc> {
    let text = data?;
    match serde_saphyr::from_str::<StatusDoc>(text) {
        Ok(d) if d.version == STATUS_VERSION => Some(d),
        Ok(d) => {
            tracing::warn!(version = %d.version, "ignoring status of another version");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "ignoring unreadable {STATUS_KEY}");
            None
        }
    }
}

/// Whether a status says the ledger is fully restored.
pub fn is_done(doc: &StatusDoc, ledger: &Ledger) -> bool {
    doc.state == State::Done && doc.ledger_digest == ledger.digest
}

impl StatusDoc {
    /// Every entry's status for `ledger` (which must be the ledger this status describes),
    /// from either form: entries the compact form does not list get their outcome from
    /// `outcomes` and nothing else.
    pub fn per_entry(self, ledger: &Ledger) -> HashMap<Arc<ObjectRef>, EntryStatus> {
        let index = ledger_index(ledger);
        let slots = self.into_slots(ledger, &index);
        ledger.entries.iter().zip(slots).filter_map(|(e, s)| Some((e.object.clone(), s?))).collect()
    }

    /// Whether run `id` already wrote this status.
    pub fn written_by(&self, id: &str) -> bool {
        self.recent_runs.iter().any(|r| r == id)
    }

    /// The entries moved into one slot per ledger entry, in ledger order; listed entries the
    /// ledger does not name are dropped.
    fn into_slots(self, ledger: &Ledger, index: &HashMap<&ObjectRef, usize>) -> Vec<Option<EntryStatus>> {
        let mut slots: Vec<Option<EntryStatus>> = std::iter::repeat_with(|| None).take(ledger.entries.len()).collect();
        let same_ledger = self.ledger_digest == ledger.digest;
        for e in self.entries {
            if let Some(&i) = index.get(&*e.object) {
                slots[i] = Some(e);
            }
        }
        if let (true, Some(letters)) = (same_ledger, &self.outcomes) {
            for ((slot, e), c) in slots.iter_mut().zip(&ledger.entries).zip(letters.chars()) {
                if let (None, Some(o)) = (&slot, from_letter(c)) {
                    *slot = Some(EntryStatus::bare(e.object.clone(), o));
                }
            }
        }
        slots
    }
}

/// Each ledger object's position in the ledger (borrowed: nothing is copied).
fn ledger_index(ledger: &Ledger) -> HashMap<&ObjectRef, usize> {
    ledger.entries.iter().enumerate().map(|(i, e)| (&*e.object, i)).collect()
}

/// Merge this run's results into a previous status of the same ledger (always the full form;
/// [`encode`] compacts it when it does not fit).
pub fn merge(prev: Option<StatusDoc>, ledger: &Ledger, run: &RunResult<'_>) -> StatusDoc {
    let prev = prev.filter(|p| p.ledger_digest == ledger.digest);
    let (runs, mut recent_runs) = prev.as_ref().map_or((0, vec![]), |p| (p.runs, p.recent_runs.clone()));
    // Results come in plan order (by `order`); the status keeps ledger order. Slots by ledger
    // index, not a map of copies: at thousands of entries this is the run's peak of memory.
    let index = ledger_index(ledger);
    let mut slots = match prev {
        Some(p) => p.into_slots(ledger, &index),
        None => std::iter::repeat_with(|| None).take(ledger.entries.len()).collect(),
    };
    let now = Timestamp::now();
    for r in run.results {
        let Some(&i) = index.get(&*r.object) else { continue };
        let old = slots[i].take();
        let was_restored = old.as_ref().is_some_and(|o| o.outcome == Outcome::Restored || o.restored_at.is_some());
        // Unpaused by this run, even if its Bundle did not follow yet (not-propagated).
        let unpaused_now = r.unpaused || r.outcome == Outcome::Restored;
        let restored_at = unpaused_now.then_some(now).or(old.as_ref().and_then(|o| o.restored_at));
        // A concurrent or earlier run restored it; this run found it running: keep "restored".
        let outcome = if r.outcome == Outcome::AlreadyRunning && (was_restored || restored_at.is_some()) {
            Outcome::Restored
        } else {
            r.outcome
        };
        let attempted = r.attempts > 0;
        slots[i] = Some(EntryStatus {
            object: r.object.clone(),
            outcome,
            attempts: old.as_ref().map_or(0, |o| o.attempts) + r.attempts,
            first_attempt_at: old.as_ref().and_then(|o| o.first_attempt_at).or(r.started_at),
            last_attempt_at: if attempted { Some(now) } else { old.as_ref().and_then(|o| o.last_attempt_at) },
            restored_at,
            last_error: r.error.clone(),
            detail: r.detail.clone(),
        });
    }
    drop(index);
    let entries: Vec<EntryStatus> = slots.into_iter().flatten().collect();
    let done = entries.len() == ledger.entries.len() && entries.iter().all(|e| e.outcome.is_final());
    let mut counts = BTreeMap::new();
    for e in &entries {
        *counts.entry(e.outcome).or_insert(0) += 1;
    }
    recent_runs.push(run.id.to_string());
    let excess = recent_runs.len().saturating_sub(RECENT_RUNS);
    recent_runs.drain(..excess);
    StatusDoc {
        version: STATUS_VERSION.to_string(),
        upgrade: ledger.upgrade.clone(),
        ledger_digest: ledger.digest.clone(),
        state: if done { State::Done } else { State::Incomplete },
        runs: runs + 1,
        last_run_started_at: run.started_at,
        updated_at: now,
        last_exit_code: run.exit_code,
        recent_runs,
        counts,
        outcomes: None,
        entries,
        unlisted: 0,
    }
}

/// Serialize `doc` in at most `limit` bytes: the full form when it fits, else the compact form
/// (one letter per entry, plus as many entries that need attention as fit). Returns the text
/// and whether it is compact; [`EncodeError::TooLarge`] when not even the compact form without
/// entries fits.
pub fn encode(doc: &mut StatusDoc, limit: usize) -> Result<(String, bool), EncodeError> {
    if let Some(text) = to_yaml_within(doc, limit)? {
        return Ok((text, false));
    }
    // The compact form is written from the same document: the full entry list is set aside
    // (not copied) and put back afterwards.
    let all = std::mem::take(&mut doc.entries);
    let out = encode_compact(doc, &all, limit);
    doc.entries = all;
    doc.outcomes = None;
    doc.unlisted = 0;
    out
}

fn encode_compact(doc: &mut StatusDoc, all: &[EntryStatus], limit: usize) -> Result<(String, bool), EncodeError> {
    doc.outcomes = Some(all.iter().map(|e| letter(e.outcome)).collect());
    // Settled entries are all alike; what an operator needs to read is what is not.
    let attention: Vec<&EntryStatus> =
        all.iter().filter(|e| !e.outcome.is_final() || e.outcome == Outcome::NotOurs).collect();
    // Halve the listed entries until it fits (log2(n) encodings at worst).
    let mut keep = attention.len();
    loop {
        doc.entries = attention[..keep].iter().map(|e| (*e).clone()).collect();
        doc.unlisted = all.len() - keep;
        if let Some(text) = to_yaml_within(doc, limit)? {
            return Ok((text, true));
        }
        if keep == 0 {
            return Err(EncodeError::TooLarge { needed: yaml_len(doc, usize::MAX)?, room: limit });
        }
        keep /= 2;
    }
}

/// The YAML text of `doc` if it takes at most `limit` bytes. Measured first without keeping
/// the text, so a form that does not fit (megabytes at thousands of entries) is never built.
fn to_yaml_within(doc: &StatusDoc, limit: usize) -> Result<Option<String>, EncodeError> {
    let len = yaml_len(doc, limit)?;
    if len > limit {
        return Ok(None);
    }
    let mut text = String::with_capacity(len);
    serde_saphyr::to_fmt_writer(&mut text, doc).map_err(|e| EncodeError::Yaml(e.to_string()))?;
    Ok(Some(text))
}

/// The length of `doc`'s YAML text, counting stopped once past `limit` (then > `limit`).
fn yaml_len(doc: &StatusDoc, limit: usize) -> Result<usize, EncodeError> {
    struct Counter {
        len: usize,
        limit: usize,
    }
    impl std::fmt::Write for Counter {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.len += s.len();
            // Past the limit: stop the serializer, the size is all the answer needed.
            if self.len > self.limit { Err(std::fmt::Error) } else { Ok(()) }
        }
    }
    let mut c = Counter { len: 0, limit };
    match serde_saphyr::to_fmt_writer(&mut c, doc) {
        Ok(()) => Ok(c.len),
        Err(_) if c.len > limit => Ok(c.len),
        Err(e) => Err(EncodeError::Yaml(e.to_string())),
    }
}

/// Bytes left for the status under the ConfigMap limit, given the ConfigMap's other data.
pub fn room(cm: &Value) -> usize {
    // kube-apiserver counts the values of data and binaryData; keys are counted here too, to
    // stay on the safe side of the limit.
    let used: usize = ["data", "binaryData"]
        .iter()
        .filter_map(|k| cm.get(k).and_then(Value::as_object))
        .flatten()
        .filter(|(k, _)| k.as_str() != STATUS_KEY)
        .map(|(k, v)| k.len() + v.as_str().map_or(0, str::len))
        .sum();
    CONFIGMAP_LIMIT.saturating_sub(used + STATUS_KEY.len())
}

/// Why a status document could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// Serialization failed.
    #[error("encoding {STATUS_KEY}: {0}")]
    Yaml(String),
    /// Not even the compact status fits next to the ledger under the ConfigMap size limit.
    #[error(
        "{STATUS_KEY}: not even the compact status ({needed} bytes) fits in the {room} bytes the ledger leaves under the 1 MiB ConfigMap limit"
    )]
    TooLarge {
        /// Bytes the compact status without entries needs.
        needed: usize,
        /// Bytes available.
        room: usize,
    },
}

/// What one run contributes to the status.
#[derive(Clone, Copy, Debug)]
pub struct RunResult<'a> {
    /// This run's id ([`run_id`]).
    pub id: &'a str,
    /// Per-entry results.
    pub results: &'a [EntryReport],
    /// When the run started.
    pub started_at: Timestamp,
    /// Its exit code.
    pub exit_code: i32,
}

/// A run's id: its start time, host (the pod name in a Job) and process id.
pub fn run_id(started_at: Timestamp) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into());
    format!("{started_at}/{host}/{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn ledger(n: usize) -> Ledger {
        let mut text =
            String::from("version: pause-ledger/v1\nupgrade: u1\npausedAt: 2026-11-27T10:00:00Z\nentries:\n");
        for i in 0..n {
            text.push_str(&format!("  - namespace: fleet-local\n    name: chart-{i:05}\n"));
        }
        let data = BTreeMap::from([(crate::ledger::LEDGER_KEY.to_string(), text)]);
        crate::ledger::parse_configmap_data(&data).expect("test ledger is valid")
    }

    fn results(l: &Ledger, f: impl Fn(usize) -> Outcome) -> Vec<EntryReport> {
        l.entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let mut r = EntryReport::new(e.object.clone(), e.field.clone(), e.order, f(i));
                r.attempts = 1;
                if !r.outcome.is_final() {
                    r.error = Some(format!("failed because of reason number {i}"));
                }
                r
            })
            .collect()
    }

    fn run<'a>(id: &'a str, results: &'a [EntryReport]) -> RunResult<'a> {
        RunResult { id, results, started_at: Timestamp::now(), exit_code: 3 }
    }

    #[test]
    fn small_status_is_the_full_form() {
        let l = ledger(3);
        let res = results(&l, |_| Outcome::Restored);
        let doc = merge(None, &l, &run("r1", &res));
        let (text, compact) = encode(&mut doc.clone(), CONFIGMAP_LIMIT).unwrap();
        assert!(!compact);
        // The measuring pass counts what the text takes, and stops early past a limit.
        assert_eq!(yaml_len(&doc, usize::MAX).unwrap(), text.len());
        let cut = yaml_len(&doc, 40).unwrap();
        assert!(cut > 40 && cut < text.len(), "stopped at {cut} of {}", text.len());
        let back = parse(Some(&text)).unwrap();
        assert_eq!(back.entries.len(), 3);
        assert!(back.outcomes.is_none());
        assert_eq!(back.counts.get(&Outcome::Restored), Some(&3));
        assert_eq!(back.state, State::Done);
    }

    #[test]
    fn compact_form_keeps_every_outcome_and_lists_what_needs_attention() {
        let l = ledger(5000);
        let res = results(&l, |i| if i % 1000 == 7 { Outcome::Failed } else { Outcome::Restored });
        let doc = merge(None, &l, &run("r1", &res));
        let full = yaml_len(&doc, usize::MAX).unwrap();
        let limit = 64 * 1024;
        assert!(full > limit, "full form {full} bytes should not fit");
        let mut kept = doc.clone();
        let (text, compact) = encode(&mut kept, limit).unwrap();
        assert!(compact && text.len() <= limit, "{} bytes", text.len());
        assert_eq!((kept.entries.len(), kept.outcomes.as_ref(), kept.unlisted), (5000, None, 0), "doc restored");
        let back = parse(Some(&text)).unwrap();
        assert_eq!(back.outcomes.as_ref().map(String::len), Some(5000));
        assert_eq!(back.entries.len(), 5, "only the failed entries are listed");
        assert!(back.entries.iter().all(|e| e.outcome == Outcome::Failed && e.last_error.is_some()));
        assert_eq!(back.unlisted, 4995);
        assert_eq!(back.counts.get(&Outcome::Failed), Some(&5));
        let per = back.clone().per_entry(&l);
        assert_eq!(per.len(), 5000);
        assert_eq!(per[&l.entries[7].object].outcome, Outcome::Failed);
        assert_eq!(per[&l.entries[8].object].outcome, Outcome::Restored);

        // A rerun finds the restored ones running: they stay "restored"; the failed ones settle.
        let res2 = results(&l, |_| Outcome::AlreadyRunning);
        let doc2 = merge(Some(back), &l, &run("r2", &res2));
        assert_eq!(doc2.counts.get(&Outcome::Restored), Some(&4995));
        assert_eq!(doc2.counts.get(&Outcome::AlreadyRunning), Some(&5));
        assert_eq!(doc2.state, State::Done);
        assert_eq!(doc2.runs, 2);
        assert_eq!(doc2.recent_runs, ["r1", "r2"]);
    }

    #[test]
    fn compact_form_truncates_the_listed_entries_to_fit() {
        let l = ledger(2000);
        let res = results(&l, |_| Outcome::Failed);
        let doc = merge(None, &l, &run("r1", &res));
        let (text, compact) = encode(&mut doc.clone(), 64 * 1024).unwrap();
        assert!(compact && text.len() <= 64 * 1024);
        let back = parse(Some(&text)).unwrap();
        assert!(!back.entries.is_empty() && back.entries.len() < 2000);
        assert_eq!(back.entries.len() + back.unlisted, 2000);
        assert_eq!(back.counts.get(&Outcome::Failed), Some(&2000));
        assert_eq!(back.state, State::Incomplete);
        // Nothing fits: an error that says so, not a status the server will refuse.
        let e = encode(&mut doc.clone(), 1000).unwrap_err();
        assert!(e.to_string().contains("under the 1 MiB ConfigMap limit"), "{e}");
    }

    #[test]
    fn run_ids_are_bounded_and_found() {
        let l = ledger(1);
        let res = results(&l, |_| Outcome::Restored);
        let mut doc = None;
        for i in 0..20 {
            doc = Some(merge(doc, &l, &run(&format!("r{i}"), &res)));
        }
        let doc = doc.unwrap();
        assert_eq!(doc.recent_runs.len(), RECENT_RUNS);
        assert!(doc.written_by("r19") && !doc.written_by("r0"));
        assert_eq!(doc.runs, 20);
    }

    #[test]
    fn letters_round_trip() {
        use Outcome::*;
        for o in [Restored, WouldRestore, AlreadyRunning, Gone, NotOurs, Failed, Skipped, NotPropagated, Repaused] {
            assert_eq!(from_letter(letter(o)), Some(o));
        }
    }
}
