//! Tallies over many histories (what `bench` writes and BENCHMARKS.md reports).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::runner::Outcome;

/// Totals over a set of histories.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    /// The binary under test.
    pub binary: String,
    /// Seeds run (first..=last, in order).
    pub seeds: String,
    /// Histories run.
    pub histories: usize,
    /// Histories whose executor had problems (reported, not judged).
    pub errored: usize,
    /// Histories with at least one violation.
    pub failed: usize,
    /// Operations over all histories.
    pub operations: usize,
    /// pause-ledger processes (final restores included).
    pub processes: usize,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Processes killed while running.
    pub kills: usize,
    /// Histories that stopped the API server.
    pub outage_histories: usize,
    /// Histories with at least one violation of each invariant.
    pub by_invariant: BTreeMap<String, usize>,
    /// Histories with at least one violation of each rule.
    pub by_rule: BTreeMap<String, usize>,
    /// The first seeds that broke each rule.
    pub seeds_by_rule: BTreeMap<String, Vec<u64>>,
    /// Transitions not judged (after a broken watch).
    pub unjudged: usize,
    /// Wall time, s.
    pub wall_s: f64,
    /// Histories run at once.
    pub jobs: usize,
    /// Histories per minute.
    pub per_minute: f64,
}

impl Summary {
    /// Add one history.
    pub fn add(&mut self, o: &Outcome) {
        self.histories += 1;
        self.operations += o.history.ops.len();
        self.processes += o.processes;
        self.kills += o.kills;
        self.unjudged += o.verdict.unjudged;
        if o.history.has_outage() {
            self.outage_histories += 1;
        }
        for (k, v) in &o.faults {
            *self.faults.entry(k.clone()).or_default() += v;
        }
        if !o.errors.is_empty() {
            self.errored += 1;
        }
        if o.failed() {
            self.failed += 1;
        }
        let invariants: std::collections::BTreeSet<&str> = o.verdict.violations.iter().map(|v| v.invariant).collect();
        for i in invariants {
            *self.by_invariant.entry(i.to_string()).or_default() += 1;
        }
        for r in o.rules() {
            *self.by_rule.entry(r.to_string()).or_default() += 1;
            let seeds = self.seeds_by_rule.entry(r.to_string()).or_default();
            if seeds.len() < 10 {
                seeds.push(o.history.seed);
            }
        }
    }

    /// Set the timing.
    pub fn finish(&mut self, wall_s: f64, jobs: usize) {
        self.wall_s = wall_s;
        self.jobs = jobs;
        self.per_minute = if wall_s > 0.0 { self.histories as f64 * 60.0 / wall_s } else { 0.0 };
    }

    /// As Markdown.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| binary | `{}` |", self.binary);
        let _ = writeln!(s, "| seeds | {} |", self.seeds);
        let _ = writeln!(s, "| histories | {} ({} with an API-server outage) |", self.histories, self.outage_histories);
        let _ = writeln!(s, "| operations | {} |", self.operations);
        let _ = writeln!(s, "| pause-ledger processes | {} |", self.processes);
        let faults: u64 = self.faults.values().sum();
        let kinds: Vec<String> = self.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(s, "| faults injected | {faults} ({}) |", kinds.join(", "));
        let _ = writeln!(s, "| processes killed mid-run | {} |", self.kills);
        let _ = writeln!(s, "| histories with a violation | {} |", self.failed);
        let _ = writeln!(s, "| errored histories (executor problem, not judged) | {} |", self.errored);
        let _ = writeln!(s, "| transitions not judged (after a broken watch) | {} |", self.unjudged);
        let _ = writeln!(
            s,
            "| wall time | {:.0} s, {} at once: {:.1} histories/minute |",
            self.wall_s, self.jobs, self.per_minute
        );
        let _ = writeln!(s, "\n| invariant | histories violating it |\n|---|---|");
        for i in ["I1", "I2", "I3", "I4", "I5", "I6"] {
            let _ = writeln!(s, "| {i} | {} |", self.by_invariant.get(i).copied().unwrap_or(0));
        }
        if !self.by_rule.is_empty() {
            let _ = writeln!(s, "\n| rule | histories | first seeds |\n|---|---|---|");
            for (r, n) in &self.by_rule {
                let seeds: Vec<String> =
                    self.seeds_by_rule.get(r).into_iter().flatten().map(|x| x.to_string()).collect();
                let _ = writeln!(s, "| {r} | {n} | {} |", seeds.join(", "));
            }
        }
        s
    }
}
