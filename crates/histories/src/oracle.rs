//! The oracle: judges a [`Trace`] against pause-ledger's promise, from the watch log, the
//! history's own record of who wrote what, and the live objects — never from pause-ledger's
//! reports.
//!
//! # Terms
//!
//! - A **version** is one resourceVersion of one object as the watch delivered it. Versions of
//!   one object arrive in order, so the version just before a write is the one a
//!   compare-and-set writer tested. An **incarnation** is the versions of one uid (deleting and
//!   recreating an object starts a new one).
//! - **Owners** of the pause field (`spec.paused`, CronJob `spec.suspend`): the field managers
//!   whose `managedFields` entry for the *main resource* lists it (status-subresource entries
//!   never count). A write that changes the field with an `Update` (patch) leaves its writer
//!   the only owner, so the **writer of a pause transition** (running→paused or back) is the
//!   single owner in the new version.
//! - A **pause epoch** runs from a version that is paused while its predecessor was not (or an
//!   object created paused) to the next running version; its **pauser** is that version's writer.
//! - **Our ids** `M`: every `--upgrade` passed to `record`, plus the `upgrade` of every ledger
//!   version the watch saw (the id `record --on-existing=merge` adopts). **Pauser pairs** `P`:
//!   `(id, pause-ledger)` for every id in `M`, plus `(upgrade, fieldManager)` of every ledger
//!   version (a script's marked ledger with its own field manager). An object is **ours-paused**
//!   when it is paused, has no keep-paused annotation, carries a mark `m` and the pause field's
//!   owners are exactly `{f}` for a pair `(m, f)` in `P`: exactly what some recorded ledger may
//!   restore.
//! - **Unmarked set** `U`: the charts listed in a minimal-form (unmarked) ledger that the upgrade
//!   script created; it paused them with `kubectl patch` (manager `kubectl-patch`).
//! - An **administrator write** is one by `admin-kubectl`, `admin-gitops`, `admin-annotate` or
//!   `admin-create`, recorded by the executor with the resourceVersion before and after. A
//!   write that leaves the resourceVersion unchanged changed nothing on the server — e.g. a
//!   same-value `kubectl patch` of `paused: true` on a paused object: the server records no new
//!   owner, so neither pause-ledger nor the oracle can see it, and the oracle treats it as not
//!   having happened (pause-ledger documents it as undetectable). A same-value *server-side
//!   apply* does change `managedFields` (the applier becomes a co-owner) and is judged.
//! - A pause-ledger process **may have written** a version when the version arrived between the
//!   process's spawn and its exit plus a lag (1.5 s; 3 s for processes whose proxy delays
//!   requests, since a delayed request can be applied after its client gave up; the proxy is
//!   stopped when its process exits, so nothing it holds lands later).
//!
//! # Invariants and their rules
//!
//! **I1 — nothing lost.** After the final fault-free restore:
//! - `I1/lost`: no object is ours-paused (paused, our mark, pause field owned only by the
//!   pauser of that mark, no keep-paused).
//! - `I1/lost-unmarked`: no chart of `U` is still in the pause epoch the script started
//!   (pauser `kubectl-patch`, same incarnation) without any administrator write since. Not
//!   judged when a restore or rescue ran while the script was between creating its ledger and
//!   its last pause: a minimal ledger has no intent marker, so that race is the script's.
//!
//! **I2 — nothing wrongly unpaused.** For every transition paused→running whose writer is
//! `pause-ledger` (`v` the new version, `p` the one before; not judged when `v` came from a
//! re-list, counted as unjudged):
//! - `I2/unattributed`: some restore or rescue process may have written it.
//! - `I2/keep-paused`: `p` did not carry `pause-ledger.io/keep-paused: "true"` (every mode,
//!   restore and rescue).
//! - When only restores may have written it:
//!   - `p` carries a mark `m`: `I2/not-our-mark` if `m` is not in `M`; `I2/shared-owner` if
//!     `(m, f)` is in `P` but another manager co-owned the field; `I2/other-owner` if the field
//!     was owned by someone else only (re-paused by hand, or by another tool).
//!   - `p` carries no mark and the object is not in `U`: `I2/unmarked` (a marked ledger's
//!     restore unpaused something without our mark).
//!   - `p` carries no mark and the object is in `U` (unmarked mode, documented as weaker:
//!     "still paused" is all it can check, so an administrator's pause of a listed chart may be
//!     undone): `I2/second-unpause` if this unpause and an earlier one of the same object can
//!     both only have been written by the same restore process — a re-restore without
//!     ownership evidence (the re-pause guard).
//! - When only rescues may have written it:
//!   - `I2/rescue-paused-before`: the ledger that existed when rescue started does not list the
//!     object in `pausedBefore` (unless a version written between its spawn and its listing no
//!     longer lists it: rescue may have read that one);
//!   - `I2/rescue-unlisted`: rescue listed the object (`will unpause <Kind.group>
//!     <ns>/<name>` on stderr) before unpausing it;
//!   - `I2/rescue-stale`: no administrator or script write changed the object between the
//!     moment its listing line arrived and the unpause (rescue acts on the version it showed).
//! - When both may have: only `I2/keep-paused`.
//!
//! **I3 — recorded.** Right after each `record` exits, whatever its exit code, and while no
//! other `record` runs: every object that is paused with a mark this record may write (its
//! `--upgrade`; with `--on-existing=merge` also the id of the ledger it found) and whose pause
//! field is owned only by `pause-ledger` is listed in the ledger's `entries` (`I3/unlisted`),
//! unless it carries the keep-paused annotation (then it is the administrator's, as in I1).
//!
//! **I4 — the status tells the truth.**
//! - `I4/status-over-other-ledger`: every ledger version whose `status.yaml` changed carries a
//!   `ledgerDigest` equal to the digest of that same version's recorded set (as `pause-ledger
//!   validate -o json` computes it for that data; the oracle's own computation of the documented
//!   derivation when validate gives none).
//! - `I4/status-stale`: after a final restore that exited 0, `status.yaml` exists and describes
//!   the current ledger (its digest, as `pause-ledger validate -o json` computes it).
//! - `I4/outcome`: each outcome listed for an entry of the final ledger agrees with the live
//!   object. If the final restore examined the entries (its report lists them) and exited 0:
//!   `restored`/`already-running` ⇒ running, `gone` ⇒ absent, `not-ours` ⇒ paused. If it did not
//!   (the status said done): `restored`/`already-running` ⇒ not ours-paused.
//!
//! **I5 — processes behave.** `I5/panic`: no `panicked` on any stderr (nor exit 101).
//! `I5/overrun`: every process not SIGKILLed by the history ends within `--timeout` + 5 s of
//! its spawn (+0.5 s for spawning and reaping).
//!
//! **I6 — deadlines mean deadlines.** `I6/early-deadline`: exit 6 only once the run's entry
//! deadline (`--timeout` − min(`--timeout`/10, 10 s)) has passed since spawn.
//! `I6/outage-failed`: a restore (not killed, no proxy faults) that overlapped an API-server
//! outage which ended at least `--max-delay` + `--request-timeout` + 3 s before its entry
//! deadline does not exit 1, 3 or 6 — unless another process changed the ledger's recorded set
//! (its digest) while it ran: then exit 3, "the ledger changed during this run", is right.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use serde_json::Value;

use crate::execute::{ProcRecord, REQUEST_TIMEOUT_S, Role, Trace};
use crate::ledger_view::{self, LedgerView};
use crate::model::{FaultKind, Obj, OnExisting, ScriptForm, Signal};
use crate::observe::{LedgerVersion, ObjVersion};
use crate::world::{ADMINS, PAUSE_LEDGER, PauseView, SCRIPT_KUBECTL};

/// One broken rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Violation {
    /// `I1` … `I6`.
    pub invariant: &'static str,
    /// The rule (`I2/shared-owner`, …).
    pub rule: &'static str,
    /// The object concerned.
    pub object: Option<Obj>,
    /// What happened, with the evidence.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.object {
            Some(o) => write!(f, "{} {}: {}", self.rule, o, self.detail),
            None => write!(f, "{}: {}", self.rule, self.detail),
        }
    }
}

/// What the oracle found.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Verdict {
    /// Broken rules.
    pub violations: Vec<Violation>,
    /// Transitions not judged (they came from a re-list after a broken watch).
    pub unjudged: usize,
    /// Checker notes that are not violations (e.g. the digest derivation changed).
    pub notes: Vec<String>,
}

fn v(invariant: &'static str, rule: &'static str, object: Option<Obj>, detail: String) -> Violation {
    Violation { invariant, rule, object, detail }
}

/// Everything derived once from a trace.
struct Facts<'a> {
    t: &'a Trace,
    ids: BTreeSet<String>,
    pairs: BTreeSet<(String, String)>,
    unmarked: BTreeSet<Obj>,
}

impl<'a> Facts<'a> {
    fn new(t: &'a Trace) -> Self {
        let mut ids: BTreeSet<String> = t.procs.iter().filter_map(|p| p.upgrade.clone()).collect();
        let mut pairs = BTreeSet::new();
        for l in &t.log.ledgers {
            if let Some(view) = ledger_view::read(&l.data) {
                ids.insert(view.upgrade.clone());
                pairs.insert((view.upgrade, view.field_manager));
            }
        }
        for id in &ids {
            pairs.insert((id.clone(), PAUSE_LEDGER.to_string()));
        }
        let unmarked = t
            .script_ledgers
            .iter()
            .filter(|s| s.form != ScriptForm::FullCustomManager)
            .flat_map(|s| s.charts.iter().copied())
            .collect();
        Facts { t, ids, pairs, unmarked }
    }

    /// Paused, our mark, owned only by that mark's pauser, no keep-paused.
    fn ours_paused(&self, p: &PauseView) -> bool {
        p.paused && !p.keep && self.owned_as_marked(p)
    }

    fn owned_as_marked(&self, p: &PauseView) -> bool {
        match (&p.mark, p.sole_owner()) {
            (Some(m), Some(f)) => self.pairs.contains(&(m.clone(), f.to_string())),
            _ => false,
        }
    }

    /// Processes that may have written a version arriving at `at_ms`.
    fn writers(&self, at_ms: f64) -> Vec<&'a ProcRecord> {
        self.t
            .procs
            .iter()
            .filter(|p| matches!(p.role, Role::Restore | Role::Rescue | Role::FinalRestore))
            .filter(|p| p.exited.spawned_ms <= at_ms && at_ms <= p.exited.exited_ms + lag(p))
            .collect()
    }

    /// Administrator writes to `obj` that changed it.
    fn admin_writes(&self, obj: Obj) -> impl Iterator<Item = &'a crate::execute::WriteRecord> {
        self.t.writes.iter().filter(move |w| w.obj == obj && w.changed() && ADMINS.contains(&w.manager.as_str()))
    }
}

fn lag(p: &ProcRecord) -> f64 {
    if matches!(p.faults.kind, FaultKind::Latency | FaultKind::Mixed) { 3000.0 } else { 1500.0 }
}

/// Judge a trace.
pub fn check(t: &Trace) -> Verdict {
    let f = Facts::new(t);
    let mut out = Verdict::default();
    i1(&f, &mut out);
    i2(&f, &mut out);
    i3(&f, &mut out);
    i4(&f, &mut out);
    i5_i6(&f, &mut out);
    out.violations.sort();
    out.violations.dedup();
    out
}

/// The versions of the incarnation `uid` of `obj`, in order.
fn incarnation<'a>(t: &'a Trace, obj: Obj, uid: &str) -> Vec<&'a ObjVersion> {
    t.log.versions.iter().filter(|v| v.obj == obj && v.view.uid == uid && !v.deleted).collect()
}

/// The version that started the pause epoch `last` is in.
fn epoch_start<'a>(versions: &[&'a ObjVersion]) -> Option<&'a ObjVersion> {
    let last = versions.last()?;
    if !last.view.paused {
        return None;
    }
    let mut start = *last;
    for w in versions.iter().rev() {
        if !w.view.paused {
            break;
        }
        start = w;
    }
    Some(start)
}

fn i1(f: &Facts, out: &mut Verdict) {
    let Some(fin) = &f.t.final_state else { return };
    for (obj, view) in &fin.objects {
        let Some(p) = view else { continue };
        if f.ours_paused(p) {
            out.violations.push(v(
                "I1",
                "I1/lost",
                Some(*obj),
                format!(
                    "still paused after the final restore, with mark {:?} and the pause field owned only by {}",
                    p.mark.as_deref().unwrap_or_default(),
                    p.owners.join(", ")
                ),
            ));
            continue;
        }
        if !p.paused || p.keep || p.mark.is_some() || !f.unmarked.contains(obj) {
            continue;
        }
        let versions = incarnation(f.t, *obj, &p.uid);
        let Some(start) = epoch_start(&versions) else { continue };
        if start.gap || start.view.sole_owner() != Some(SCRIPT_KUBECTL) {
            continue;
        }
        let touched = f.admin_writes(*obj).any(|w| w.rv_after.is_some_and(|rv| rv >= start.view.rv));
        // A restore that ran while the script was between its ledger and its pauses saw the
        // charts running: nothing in a minimal ledger tells it the script is not done.
        let raced = f.t.script_ledgers.iter().filter(|s| s.charts.contains(obj)).any(|s| {
            f.t.procs.iter().any(|p| {
                matches!(p.role, Role::Restore | Role::Rescue)
                    && p.exited.spawned_ms < s.end_ms
                    && p.exited.exited_ms > s.start_ms
            })
        });
        if !touched && !raced {
            out.violations.push(v(
                "I1",
                "I1/lost-unmarked",
                Some(*obj),
                format!(
                    "still paused after the final restore by the upgrade script's pause (kubectl-patch, resourceVersion {}), which no administrator touched since",
                    start.view.rv
                ),
            ));
        }
    }
}

/// Rescue's "will unpause" lines: object and arrival time.
fn rescue_listing(p: &ProcRecord) -> Vec<(Obj, f64)> {
    let mut out = Vec::new();
    for (at, line) in &p.exited.stderr {
        let Some(rest) = line.split("will unpause ").nth(1) else { continue };
        let mut words = rest.split_whitespace();
        let (Some(kind), Some(path)) = (words.next(), words.next()) else { continue };
        let kind = kind.split('.').next().unwrap_or(kind);
        let name = path.rsplit('/').next().unwrap_or(path);
        if let Some(o) = Obj::from_kind_name(kind, name) {
            out.push((o, *at));
        }
    }
    out
}

fn rescue_rule(f: &Facts, r: &ProcRecord, obj: Obj, at_ms: f64) -> Option<(&'static str, String)> {
    // Rescue honours the ledger it read, some time between its spawn and its listing: a
    // version written in between that no longer lists the object may be the one it read.
    let dropped_since_spawn =
        f.t.log
            .ledgers
            .iter()
            .filter(|l| l.at_ms > r.exited.spawned_ms && l.at_ms <= at_ms)
            .any(|l| l.deleted || !ledger_view::read(&l.data).is_some_and(|v| v.paused_before.contains(&obj)));
    if let Some(view) = r.ledger_at_spawn.as_ref().and_then(ledger_view::read)
        && view.paused_before.contains(&obj)
        && !dropped_since_spawn
    {
        return Some((
            "I2/rescue-paused-before",
            format!("rescue (process {}) unpaused it although the existing ledger lists it in pausedBefore", r.id),
        ));
    }
    let listing = rescue_listing(r);
    let Some((_, listed_at)) = listing.iter().find(|(o, _)| *o == obj) else {
        return Some((
            "I2/rescue-unlisted",
            format!("rescue (process {}) unpaused it without listing it (\"will unpause\")", r.id),
        ));
    };
    if let Some(w) = f
        .admin_writes(obj)
        .chain(f.t.writes.iter().filter(|w| w.obj == obj && w.changed() && !ADMINS.contains(&w.manager.as_str())))
        .find(|w| w.sent_ms > *listed_at && w.done_ms <= at_ms)
    {
        return Some((
            "I2/rescue-stale",
            format!(
                "rescue (process {}) listed it at {:.0} ms, then {} ({}) changed it at {:.0} ms, and rescue unpaused that newer version",
                r.id, listed_at, w.manager, w.what, w.sent_ms
            ),
        ));
    }
    None
}

fn i2(f: &Facts, out: &mut Verdict) {
    let t = f.t;
    // Unpauses per (process, object), for the unmarked re-restore rule.
    let mut unpaused_by: BTreeMap<(usize, Obj), usize> = BTreeMap::new();
    let mut by_incarnation: BTreeMap<(Obj, String), Vec<&ObjVersion>> = BTreeMap::new();
    for ver in &t.log.versions {
        by_incarnation.entry((ver.obj, ver.view.uid.clone())).or_default().push(ver);
    }
    let mut transitions: Vec<(&ObjVersion, &ObjVersion)> = Vec::new();
    for versions in by_incarnation.values() {
        for pair in versions.windows(2) {
            let (p, n) = (pair[0], pair[1]);
            if p.view.paused && !n.view.paused && !n.deleted && !p.deleted && n.view.sole_owner() == Some(PAUSE_LEDGER)
            {
                transitions.push((p, n));
            }
        }
    }
    transitions.sort_by_key(|(_, n)| n.seq);
    for (p, n) in transitions {
        let obj = n.obj;
        if n.gap {
            out.unjudged += 1;
            continue;
        }
        let at = format!("resourceVersion {} → {} at {:.0} ms", p.view.rv, n.view.rv, n.at_ms);
        let writers = f.writers(n.at_ms);
        if writers.is_empty() {
            out.violations.push(v(
                "I2",
                "I2/unattributed",
                Some(obj),
                format!("unpaused by pause-ledger while no restore or rescue ran ({at})"),
            ));
            continue;
        }
        if p.view.keep {
            out.violations.push(v(
                "I2",
                "I2/keep-paused",
                Some(obj),
                format!("unpaused by pause-ledger although it carried pause-ledger.io/keep-paused: \"true\" ({at})"),
            ));
            continue;
        }
        let rescues = writers.iter().all(|w| w.role == Role::Rescue);
        let restores = writers.iter().all(|w| w.role != Role::Rescue);
        if rescues {
            let found: Vec<(&'static str, String)> =
                writers.iter().filter_map(|r| rescue_rule(f, r, obj, n.at_ms)).collect();
            if found.len() == writers.len()
                && let Some((rule, detail)) = found.into_iter().next()
            {
                out.violations.push(v("I2", rule, Some(obj), format!("{detail} ({at})")));
            }
            continue;
        }
        if !restores {
            continue;
        }
        let owners = p.view.owners.join(", ");
        match &p.view.mark {
            Some(m) if !f.ids.contains(m) => out.violations.push(v(
                "I2",
                "I2/not-our-mark",
                Some(obj),
                format!("unpaused by restore although its mark {m:?} is no id pause-ledger used ({at})"),
            )),
            Some(_) if f.owned_as_marked(&p.view) => {}
            Some(m) => {
                let ours = f.pairs.iter().any(|(id, mgr)| id == m && p.view.owners.contains(mgr));
                let (rule, what) =
                    if ours { ("I2/shared-owner", "co-owned by") } else { ("I2/other-owner", "owned by") };
                out.violations.push(v(
                    "I2",
                    rule,
                    Some(obj),
                    format!("unpaused by restore although the pause field was {what} {owners} at the time of the write ({at})"),
                ));
            }
            None if !f.unmarked.contains(&obj) => out.violations.push(v(
                "I2",
                "I2/unmarked",
                Some(obj),
                format!("unpaused by restore although it carried no mark (pause field owned by {owners}) ({at})"),
            )),
            None => {
                if let [only] = writers.as_slice() {
                    let count = unpaused_by.entry((only.id, obj)).or_default();
                    *count += 1;
                    if *count > 1 {
                        out.violations.push(v(
                            "I2",
                            "I2/second-unpause",
                            Some(obj),
                            format!(
                                "restore process {} unpaused it a second time in one unmarked run (paused again by {owners}; no ownership evidence) ({at})",
                                only.id
                            ),
                        ));
                    }
                }
            }
        }
    }
}

fn i3(f: &Facts, out: &mut Verdict) {
    for rx in &f.t.record_exits {
        if rx.other_record_alive || rx.error.is_some() {
            continue;
        }
        let Some(p) = f.t.proc(rx.proc) else { continue };
        let mut ids: BTreeSet<String> = p.upgrade.iter().cloned().collect();
        if p.on_existing == Some(OnExisting::Merge)
            && let Some(l) = p.ledger_at_spawn.as_ref().and_then(ledger_view::read)
        {
            ids.insert(l.upgrade);
        }
        let ledger: Option<LedgerView> = rx.ledger.as_ref().and_then(ledger_view::read);
        for (obj, view) in &rx.objects {
            let Some(view) = view else { continue };
            let marked = view.mark.as_ref().is_some_and(|m| ids.contains(m));
            // With the keep-paused annotation it is the administrator's (restore reports it
            // not-ours, by design): a later record rightly lists it in pausedBefore or not at all.
            if !(view.paused && marked && !view.keep && view.sole_owner() == Some(PAUSE_LEDGER)) {
                continue;
            }
            let listed = ledger.as_ref().is_some_and(|l| l.entries.contains(obj));
            if !listed {
                let where_ = match &ledger {
                    None => "there is no readable ledger".to_string(),
                    Some(l) if l.paused_before.contains(obj) => "the ledger lists it in pausedBefore".to_string(),
                    Some(_) => "the ledger does not list it".to_string(),
                };
                out.violations.push(v(
                    "I3",
                    "I3/unlisted",
                    Some(*obj),
                    format!(
                        "after record process {} (exit {}) it is paused with mark {:?}, owned only by pause-ledger, but {where_}",
                        p.id,
                        exit_text(p),
                        view.mark.as_deref().unwrap_or_default()
                    ),
                ));
            }
        }
    }
}

fn exit_text(p: &ProcRecord) -> String {
    match (p.exited.code, p.exited.killed) {
        (Some(c), _) => c.to_string(),
        (None, Some((Signal::Kill, _))) => "SIGKILL".into(),
        (None, Some((Signal::Term, _))) => "SIGTERM".into(),
        (None, None) => format!("signal {}", p.exited.signal.unwrap_or(0)),
    }
}

fn i4(f: &Facts, out: &mut Verdict) {
    let t = f.t;
    let mut prev_status: Option<&String> = None;
    for l in &t.log.ledgers {
        let status = l.data.get("status.yaml");
        if !l.deleted
            && let Some(text) = status
            && Some(text) != prev_status
            && let Some(s) = ledger_view::read_status(&l.data)
        {
            let own = ledger_view::digest(&l.data).unwrap_or_default();
            let want = t.digests.get(&own).cloned().unwrap_or(own);
            if s.digest != want {
                out.violations.push(v(
                    "I4",
                    "I4/status-over-other-ledger",
                    None,
                    format!(
                        "ledger version {} carries a status for ledger digest {} while its recorded set has digest {}",
                        l.rv, s.digest, want
                    ),
                ));
            }
        }
        prev_status = status;
    }
    let Some(fin) = &t.final_state else { return };
    let Some(data) = &fin.ledger else { return };
    let own = ledger_view::digest(data);
    if let (Some(a), Some(b)) = (&own, &fin.validate_digest)
        && a != b
    {
        out.notes.push(format!("digest derivation differs: oracle {a}, pause-ledger validate {b}; using validate's"));
    }
    let Some(want) = fin.validate_digest.clone().or(own) else { return };
    let Some(final_proc) = t.proc(fin.proc) else { return };
    let status = ledger_view::read_status(data);
    if final_proc.exited.code == Some(0) {
        match &status {
            None => out.violations.push(v(
                "I4",
                "I4/status-stale",
                None,
                "the final restore exited 0 but the ledger has no readable status.yaml".into(),
            )),
            Some(s) if s.digest != want => out.violations.push(v(
                "I4",
                "I4/status-stale",
                None,
                format!(
                    "after the final restore status.yaml describes ledger digest {}, the ledger is {want}",
                    s.digest
                ),
            )),
            Some(_) => {}
        }
    }
    let (Some(s), Some(ledger)) = (status, ledger_view::read(data)) else { return };
    if s.digest != want {
        return;
    }
    let report: Option<Value> = serde_json::from_str(&final_proc.exited.stdout).ok();
    let examined =
        report.as_ref().and_then(|r| r.get("entries")).and_then(Value::as_array).is_some_and(|e| !e.is_empty());
    let strict = examined && final_proc.exited.code == Some(0);
    for (obj, outcome) in &s.outcomes {
        if !ledger.entries.contains(obj) {
            continue;
        }
        let live = fin.objects.get(obj).cloned().flatten();
        let bad = match (outcome.as_str(), &live) {
            ("restored" | "already-running", Some(p)) if strict => p.paused,
            ("restored" | "already-running", None) if strict => true,
            ("restored" | "already-running", Some(p)) => f.ours_paused(p),
            ("gone", Some(_)) if strict => true,
            ("not-ours", Some(p)) if strict => !p.paused,
            ("not-ours", None) if strict => true,
            _ => false,
        };
        if bad {
            let state = match &live {
                None => "absent".to_string(),
                Some(p) if p.paused => {
                    format!("paused (mark {:?}, owners {})", p.mark.as_deref().unwrap_or(""), p.owners.join(", "))
                }
                Some(_) => "running".to_string(),
            };
            out.violations.push(v(
                "I4",
                "I4/outcome",
                Some(*obj),
                format!(
                    "status.yaml says {outcome} ({}), the object is {state}",
                    if strict { "written by the final restore" } else { "the final restore found the ledger done" }
                ),
            ));
        }
    }
}

/// Whether another process changed the ledger's recorded set (its digest) while a run lived:
/// then the run's exit 3 ("the ledger changed during this run") is the right answer, outage or
/// not.
fn recorded_set_changed(t: &Trace, from_ms: f64, to_ms: f64) -> bool {
    let digest = |l: &LedgerVersion| (!l.deleted).then(|| ledger_view::digest(&l.data)).flatten();
    let at_start = t.log.ledgers.iter().rfind(|l| l.at_ms <= from_ms).map(digest);
    let mut during = t.log.ledgers.iter().filter(|l| l.at_ms > from_ms && l.at_ms <= to_ms).map(digest);
    match at_start {
        Some(d) => during.any(|x| x != d),
        None => during.next().is_some(),
    }
}

fn i5_i6(f: &Facts, out: &mut Verdict) {
    let t = f.t;
    for p in &t.procs {
        let e = &p.exited;
        if e.spawn_error.is_some() {
            continue;
        }
        let what = format!("{:?} process {} (op {})", p.role, p.id, if p.op == usize::MAX { -1 } else { p.op as i64 });
        let stderr = e.stderr_text();
        if e.code == Some(101) || stderr.contains("panicked") {
            let line = stderr.lines().find(|l| l.contains("panicked")).unwrap_or("exit 101").to_string();
            out.violations.push(v("I5", "I5/panic", None, format!("{what}: {line}")));
        }
        let sigkilled = matches!(e.killed, Some((Signal::Kill, _)));
        let limit_ms = (p.timeout_s + 5) as f64 * 1000.0 + 500.0;
        if !sigkilled && (e.hard_killed || e.wall_ms > limit_ms) {
            out.violations.push(v(
                "I5",
                "I5/overrun",
                None,
                format!("{what} ran {:.1} s with --timeout {}s", e.wall_ms / 1000.0, p.timeout_s),
            ));
        }
        let timeout_ms = p.timeout_s as f64 * 1000.0;
        let entries_deadline_ms = timeout_ms - (timeout_ms / 10.0).min(10_000.0);
        if e.code == Some(6) && e.killed.is_none() && e.wall_ms < entries_deadline_ms {
            out.violations.push(v(
                "I6",
                "I6/early-deadline",
                None,
                format!(
                    "{what} exited 6 (deadline exceeded) after {:.1} s, before its entry deadline at {:.1} s",
                    e.wall_ms / 1000.0,
                    entries_deadline_ms / 1000.0
                ),
            ));
        }
        if p.role == Role::Restore && e.killed.is_none() && !p.faults.active() {
            let margin_ms = (p.max_delay_s + REQUEST_TIMEOUT_S + 3) as f64 * 1000.0;
            for o in &t.outages {
                let Some(ready) = o.ready_ms else { continue };
                let overlaps = o.stop_ms < e.exited_ms && ready > e.spawned_ms;
                if overlaps
                    && ready + margin_ms <= e.spawned_ms + entries_deadline_ms
                    && matches!(e.code, Some(1 | 3 | 6))
                    && !recorded_set_changed(t, e.spawned_ms, e.exited_ms)
                {
                    out.violations.push(v(
                        "I6",
                        "I6/outage-failed",
                        None,
                        format!(
                            "{what} exited {} after {:.1} s; the API server was down {:.1}–{:.1} s after its spawn and back {:.1} s before its entry deadline",
                            e.code.unwrap_or(-1),
                            e.wall_ms / 1000.0,
                            (o.stop_ms - e.spawned_ms).max(0.0) / 1000.0,
                            (ready - e.spawned_ms) / 1000.0,
                            (e.spawned_ms + entries_deadline_ms - ready) / 1000.0
                        ),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::execute::{FinalState, RecordExit, ScriptLedger, WriteRecord};
    use crate::model::{FaultSpec, History, Initial};
    use crate::observe::{LedgerVersion, Log};
    use crate::process::Exited;
    use crate::world::{ADMIN_GITOPS, ADMIN_KUBECTL, SETUP};

    const H: Obj = Obj::Chart(1);

    fn view(rv: u64, paused: bool, mark: Option<&str>, keep: bool, owners: &[&str]) -> PauseView {
        PauseView {
            uid: "u1".into(),
            rv,
            paused,
            mark: mark.map(str::to_string),
            keep,
            owners: owners.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ver(seq: u64, at_ms: f64, view: PauseView) -> ObjVersion {
        ObjVersion { seq, at_ms, obj: H, deleted: false, gap: false, view }
    }

    fn proc(id: usize, role: Role, from: f64, to: f64, code: i32) -> ProcRecord {
        ProcRecord {
            id,
            op: id,
            role,
            args: vec![],
            upgrade: (role == Role::Record).then(|| "up-a".to_string()),
            on_existing: None,
            ledger_at_spawn: None,
            timeout_s: 20,
            max_delay_s: 1,
            faults: FaultSpec::none(),
            injected: BTreeMap::new(),
            exited: Exited {
                code: Some(code),
                spawned_ms: from,
                exited_ms: to,
                wall_ms: to - from,
                ..Exited::default()
            },
        }
    }

    fn trace(versions: Vec<ObjVersion>, procs: Vec<ProcRecord>) -> Trace {
        Trace {
            history: History { seed: 0, initial: vec![Initial::Running; 6], ops: vec![] },
            ns: "h".into(),
            log: Log { versions, ..Log::default() },
            procs,
            writes: vec![],
            script_ledgers: vec![],
            outages: vec![],
            record_exits: vec![],
            final_state: None,
            digests: BTreeMap::new(),
            errors: vec![],
            notes: vec![],
            duration_ms: 0.0,
        }
    }

    fn rules(t: &Trace) -> Vec<&'static str> {
        check(t).violations.iter().map(|v| v.rule).collect()
    }

    /// Running (setup) → paused and marked by record → `mid` → unpaused by pause-ledger at 900 ms.
    fn unpaused_after(mid: PauseView) -> Vec<ObjVersion> {
        vec![
            ver(1, 10.0, view(1, false, None, false, &[SETUP])),
            ver(2, 100.0, view(2, true, Some("up-a"), false, &[PAUSE_LEDGER])),
            ver(3, 500.0, mid),
            ver(4, 900.0, view(4, false, None, false, &[PAUSE_LEDGER])),
        ]
    }

    fn record_and_restore() -> Vec<ProcRecord> {
        vec![proc(0, Role::Record, 50.0, 200.0, 0), proc(1, Role::Restore, 800.0, 1000.0, 0)]
    }

    #[test]
    fn restoring_our_own_pause_is_fine() {
        let t = trace(unpaused_after(view(3, true, Some("up-a"), false, &[PAUSE_LEDGER])), record_and_restore());
        assert_eq!(rules(&t), Vec::<&str>::new());
    }

    #[test]
    fn shared_ownership_is_not_ours() {
        let t = trace(
            unpaused_after(view(3, true, Some("up-a"), false, &[ADMIN_GITOPS, PAUSE_LEDGER])),
            record_and_restore(),
        );
        assert_eq!(rules(&t), vec!["I2/shared-owner"]);
    }

    #[test]
    fn keep_paused_is_always_honoured() {
        let t = trace(unpaused_after(view(3, true, Some("up-a"), true, &[PAUSE_LEDGER])), record_and_restore());
        assert_eq!(rules(&t), vec!["I2/keep-paused"]);
    }

    #[test]
    fn a_hand_repause_or_a_foreign_mark_is_not_ours() {
        let t = trace(unpaused_after(view(3, true, Some("up-a"), false, &[ADMIN_KUBECTL])), record_and_restore());
        assert_eq!(rules(&t), vec!["I2/other-owner"]);
        let t = trace(unpaused_after(view(3, true, Some("admin-edit"), false, &[PAUSE_LEDGER])), record_and_restore());
        assert_eq!(rules(&t), vec!["I2/not-our-mark"]);
        let t = trace(unpaused_after(view(3, true, None, false, &[PAUSE_LEDGER])), record_and_restore());
        assert_eq!(rules(&t), vec!["I2/unmarked"]);
    }

    #[test]
    fn an_unpause_nobody_could_have_made() {
        let t = trace(
            unpaused_after(view(3, true, Some("up-a"), false, &[PAUSE_LEDGER])),
            vec![proc(0, Role::Record, 50.0, 200.0, 0)],
        );
        assert_eq!(rules(&t), vec!["I2/unattributed"]);
    }

    fn with_final(mut t: Trace, v: PauseView) -> Trace {
        t.procs.push(proc(9, Role::FinalRestore, 2000.0, 2100.0, 0));
        t.final_state = Some(FinalState {
            proc: 9,
            objects: BTreeMap::from([(H, Some(v))]),
            ledger: None,
            validate_digest: None,
            caught_up: true,
        });
        t
    }

    #[test]
    fn lost_pauses() {
        let base = || trace(vec![], vec![proc(0, Role::Record, 50.0, 200.0, 0)]);
        let t = with_final(base(), view(2, true, Some("up-a"), false, &[PAUSE_LEDGER]));
        assert_eq!(rules(&t), vec!["I1/lost"]);
        // Re-paused by hand, kept paused, or marked by someone else: not ours to restore.
        for v in [
            view(2, true, Some("up-a"), false, &[ADMIN_KUBECTL]),
            view(2, true, Some("up-a"), true, &[PAUSE_LEDGER]),
            view(2, true, Some("other"), false, &[PAUSE_LEDGER]),
            view(2, false, Some("up-a"), false, &[PAUSE_LEDGER]),
        ] {
            assert_eq!(rules(&with_final(base(), v)), Vec::<&str>::new());
        }
    }

    #[test]
    fn lost_unmarked_pauses_unless_an_admin_touched_them() {
        let versions = vec![
            ver(1, 10.0, view(1, false, None, false, &[SETUP])),
            ver(2, 100.0, view(2, true, None, false, &[SCRIPT_KUBECTL])),
        ];
        let mut t = trace(versions, vec![]);
        t.script_ledgers.push(ScriptLedger {
            op: 0,
            form: ScriptForm::MinimalNoUpgrade,
            charts: vec![H],
            start_ms: 90.0,
            end_ms: 110.0,
        });
        let t = with_final(t, view(2, true, None, false, &[SCRIPT_KUBECTL]));
        assert_eq!(rules(&t), vec!["I1/lost-unmarked"]);
        let mut touched = t.clone();
        touched.writes.push(WriteRecord {
            op: 1,
            obj: H,
            what: "keep-paused".into(),
            manager: "admin-annotate".into(),
            sent_ms: 150.0,
            done_ms: 160.0,
            rv_before: Some(2),
            rv_after: Some(3),
            error: None,
        });
        assert_eq!(rules(&touched), Vec::<&str>::new());
        // A restore ran between the script's ledger and its pauses: the script's race, not judged.
        let mut raced = t.clone();
        raced.procs.push(proc(3, Role::Restore, 95.0, 300.0, 0));
        assert_eq!(rules(&raced), Vec::<&str>::new());
    }

    #[test]
    fn unmarked_restore_must_not_unpause_twice_in_one_run() {
        let versions = vec![
            ver(1, 10.0, view(1, true, None, false, &[SCRIPT_KUBECTL])),
            ver(2, 900.0, view(2, false, None, false, &[PAUSE_LEDGER])),
            ver(3, 1200.0, view(3, true, None, false, &[ADMIN_KUBECTL])),
            ver(4, 1500.0, view(4, false, None, false, &[PAUSE_LEDGER])),
        ];
        let mut t = trace(versions, vec![proc(1, Role::Restore, 800.0, 3000.0, 0)]);
        t.script_ledgers.push(ScriptLedger {
            op: 0,
            form: ScriptForm::MinimalNoUpgrade,
            charts: vec![H],
            start_ms: 5.0,
            end_ms: 12.0,
        });
        assert_eq!(rules(&t), vec!["I2/second-unpause"]);
        // Two runs, one unpause each: the documented weakness of unmarked mode, not a violation.
        let mut two = t.clone();
        two.procs = vec![proc(1, Role::Restore, 800.0, 1000.0, 0), proc(2, Role::Restore, 1400.0, 1600.0, 0)];
        assert_eq!(rules(&two), Vec::<&str>::new());
    }

    fn rescue_trace(listed: bool, paused_before: bool, admin_after: bool) -> Trace {
        let versions = vec![
            ver(1, 10.0, view(1, true, None, false, &[ADMIN_KUBECTL])),
            ver(2, 900.0, view(2, false, None, false, &[PAUSE_LEDGER])),
        ];
        let mut r = proc(1, Role::Rescue, 500.0, 1000.0, 0);
        if listed {
            r.exited.stderr.push((
                600.0,
                "rescue: will unpause ManagedChart.management.cattle.io h/harvester (paused now, nothing recorded who paused it)"
                    .into(),
            ));
        }
        if paused_before {
            let y = "version: pause-ledger/v1\nupgrade: up-a\npausedAt: 2026-01-01T00:00:00Z\nentries: []\npausedBefore:\n  - namespace: h\n    name: harvester\n";
            r.ledger_at_spawn = Some(BTreeMap::from([("ledger.yaml".to_string(), y.to_string())]));
        }
        let mut t = trace(versions, vec![r]);
        if admin_after {
            t.writes.push(WriteRecord {
                op: 2,
                obj: H,
                what: "pause".into(),
                manager: ADMIN_KUBECTL.into(),
                sent_ms: 700.0,
                done_ms: 720.0,
                rv_before: Some(1),
                rv_after: Some(5),
                error: None,
            });
        }
        t
    }

    #[test]
    fn rescue_acts_only_on_what_it_listed_as_it_listed_it() {
        assert_eq!(rules(&rescue_trace(true, false, false)), Vec::<&str>::new());
        assert_eq!(rules(&rescue_trace(false, false, false)), vec!["I2/rescue-unlisted"]);
        assert_eq!(rules(&rescue_trace(true, true, false)), vec!["I2/rescue-paused-before"]);
        // A record replaced the ledger between rescue's spawn and its listing: rescue may have
        // read the new one, which no longer lists the chart.
        let mut replaced = rescue_trace(true, true, false);
        let y = "version: pause-ledger/v1\nupgrade: up-b\npausedAt: 2026-01-01T00:00:00Z\nentries: []\n";
        let data = BTreeMap::from([("ledger.yaml".to_string(), y.to_string())]);
        replaced.log.ledgers.push(LedgerVersion { seq: 9, at_ms: 550.0, rv: 9, deleted: false, gap: false, data });
        assert_eq!(rules(&replaced), Vec::<&str>::new());
        assert_eq!(rules(&rescue_trace(true, false, true)), vec!["I2/rescue-stale"]);
    }

    #[test]
    fn record_must_list_what_it_marked() {
        let mut t = trace(vec![], vec![proc(0, Role::Record, 0.0, 100.0, 0)]);
        let y = "version: pause-ledger/v1\nupgrade: up-a\npausedAt: 2026-01-01T00:00:00Z\nentries: []\npausedBefore:\n  - namespace: h\n    name: harvester\n";
        t.record_exits.push(RecordExit {
            proc: 0,
            other_record_alive: false,
            objects: BTreeMap::from([(H, Some(view(2, true, Some("up-a"), false, &[PAUSE_LEDGER])))]),
            ledger: Some(BTreeMap::from([("ledger.yaml".to_string(), y.to_string())])),
            error: None,
        });
        assert_eq!(rules(&t), vec!["I3/unlisted"]);
        // Kept paused by an administrator: theirs, not required in the entries.
        t.record_exits[0].objects.insert(H, Some(view(2, true, Some("up-a"), true, &[PAUSE_LEDGER])));
        assert_eq!(rules(&t), Vec::<&str>::new());
        t.record_exits[0].objects.insert(H, Some(view(2, true, Some("up-a"), false, &[PAUSE_LEDGER])));
        t.record_exits[0].ledger = Some(BTreeMap::from([(
            "ledger.yaml".to_string(),
            y.replace("entries: []", "entries:\n  - namespace: h\n    name: harvester"),
        )]));
        assert_eq!(rules(&t), Vec::<&str>::new());
    }

    #[test]
    fn status_must_describe_the_ledger_it_is_written_into() {
        let minimal = BTreeMap::from([
            ("charts".to_string(), "harvester".to_string()),
            ("namespace".to_string(), "h".to_string()),
        ]);
        let digest = ledger_view::digest(&minimal).unwrap();
        let status = |d: &str| {
            format!("version: pause-ledger/status/v1\nupgrade: ''\nledgerDigest: {d}\nstate: done\nentries: []\n")
        };
        let version = |rv: u64, d: &str| {
            let mut data = minimal.clone();
            data.insert("status.yaml".into(), status(d));
            LedgerVersion { seq: rv, at_ms: rv as f64, rv, deleted: false, gap: false, data }
        };
        let mut t = trace(vec![], vec![]);
        t.log.ledgers = vec![version(1, &digest)];
        assert_eq!(rules(&t), Vec::<&str>::new());
        t.log.ledgers.push(version(2, "0123456789abcdef0123456789abcdef"));
        assert_eq!(rules(&t), vec!["I4/status-over-other-ledger"]);
    }

    #[test]
    fn an_outage_is_no_reason_to_fail_but_a_changed_ledger_is() {
        use crate::execute::OutageRecord;
        let ledger = |seq: u64, at_ms: f64, charts: &str| {
            let data = BTreeMap::from([
                ("charts".to_string(), charts.to_string()),
                ("namespace".to_string(), "h".to_string()),
            ]);
            LedgerVersion { seq, at_ms, rv: seq, deleted: false, gap: false, data }
        };
        let mut restore = proc(0, Role::Restore, 1000.0, 30_000.0, 3);
        restore.timeout_s = 60;
        let mut t = trace(vec![], vec![restore]);
        t.outages = vec![OutageRecord {
            op: 0,
            stop_ms: 500.0,
            stopped_ms: 600.0,
            start_ms: 9000.0,
            ready_ms: Some(10_000.0),
            error: None,
        }];
        t.log.ledgers = vec![ledger(1, 100.0, "harvester")];
        assert_eq!(rules(&t), vec!["I6/outage-failed"]);
        // A status write (same recorded set) is no change; a new recorded set is.
        t.log.ledgers.push(ledger(2, 20_000.0, "harvester"));
        assert_eq!(rules(&t), vec!["I6/outage-failed"]);
        t.log.ledgers.push(ledger(3, 25_000.0, "harvester,rancher-monitoring-crd"));
        assert_eq!(rules(&t), Vec::<&str>::new());
    }

    #[test]
    fn processes_end_in_time_and_exit_6_only_after_the_deadline() {
        let mut early = proc(0, Role::Restore, 0.0, 5000.0, 6);
        early.timeout_s = 20;
        assert_eq!(rules(&trace(vec![], vec![early.clone()])), vec!["I6/early-deadline"]);
        let mut late = early.clone();
        late.exited.wall_ms = 19_000.0;
        assert_eq!(rules(&trace(vec![], vec![late])), Vec::<&str>::new());
        let mut slow = early.clone();
        slow.exited.code = Some(0);
        slow.exited.wall_ms = 26_000.0;
        assert_eq!(rules(&trace(vec![], vec![slow])), vec!["I5/overrun"]);
        let mut panicked = early;
        panicked.exited.code = Some(101);
        panicked.exited.wall_ms = 100.0;
        panicked.exited.stderr.push((50.0, "thread 'main' panicked at src/x.rs:1:1".into()));
        assert_eq!(rules(&trace(vec![], vec![panicked])), vec!["I5/panic"]);
    }
}
