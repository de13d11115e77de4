//! Running histories: one, many (a few at once, outage histories alone), and shrinking a
//! failing one to a minimal history that still breaks the same rule.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{RwLock, Semaphore};

use crate::execute::{self, Env, Trace};
use crate::generate::generate;
use crate::model::History;
use crate::oracle::{self, Verdict};

/// One history's result.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The history.
    pub history: History,
    /// What the oracle found.
    pub verdict: Verdict,
    /// The executor's problems (an errored history proves nothing either way).
    pub errors: Vec<String>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, u64>,
    /// Processes killed while running.
    pub kills: usize,
    /// pause-ledger processes run (the final restore included).
    pub processes: usize,
    /// Wall time, ms.
    pub duration_ms: f64,
}

impl Outcome {
    /// Whether any rule broke.
    pub fn failed(&self) -> bool {
        !self.verdict.violations.is_empty()
    }

    /// The broken rules.
    pub fn rules(&self) -> BTreeSet<&'static str> {
        self.verdict.violations.iter().map(|v| v.rule).collect()
    }
}

/// Run one history and judge it; also returns the trace.
pub async fn run(env: &Env, history: &History) -> (Outcome, Trace) {
    let trace = execute::execute(env, history).await;
    let verdict = oracle::check(&trace);
    let outcome = Outcome {
        history: history.clone(),
        errors: trace.errors.clone(),
        faults: trace.faults(),
        kills: trace.kills(),
        processes: trace.procs.len(),
        duration_ms: trace.duration_ms,
        verdict,
    };
    (outcome, trace)
}

/// Run the histories of `seeds`, `jobs` at a time; `each` sees every outcome as it completes.
/// A history that stops the API server runs on one of `outage_envs` (control planes of their
/// own, one history each at a time) next to the others; without them it runs alone on `env`.
pub async fn run_seeds<F>(env: &Env, outage_envs: &[Env], seeds: Vec<u64>, jobs: usize, mut each: F) -> Vec<Outcome>
where
    F: FnMut(&Outcome, &Trace),
{
    let gate = Arc::new(RwLock::new(()));
    let slots = Arc::new(Semaphore::new(jobs.max(1)));
    let planes = Arc::new(Semaphore::new(outage_envs.len()));
    let pool = Arc::new(tokio::sync::Mutex::new(outage_envs.to_vec()));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut handles = Vec::new();
    let mut out = Vec::new();
    for seed in seeds {
        let history = generate(seed);
        let tx = tx.clone();
        if history.has_outage() && !outage_envs.is_empty() {
            // Waits for a free plane inside the task, so the histories after it go on.
            let (planes, pool) = (planes.clone(), pool.clone());
            handles.push(tokio::spawn(async move {
                let Ok(_plane) = planes.acquire_owned().await else { return };
                let Some(env) = pool.lock().await.pop() else { return };
                let r = run(&env, &history).await;
                pool.lock().await.push(env);
                let _ = tx.send(r);
            }));
        } else {
            let (env, gate, slots) = (env.clone(), gate.clone(), slots.clone());
            // Spawned in seed order; an outage history waits for the running ones and blocks the
            // next ones while it runs.
            let permit = slots.clone().acquire_owned().await;
            let guard = if history.has_outage() {
                Guard::Write(gate.clone().write_owned().await)
            } else {
                Guard::Read(gate.clone().read_owned().await)
            };
            handles.push(tokio::spawn(async move {
                let r = run(&env, &history).await;
                drop(guard);
                drop(permit);
                let _ = tx.send(r);
            }));
        }
        while let Ok((o, t)) = rx.try_recv() {
            each(&o, &t);
            out.push(o);
            collect(&mut handles);
        }
    }
    drop(tx);
    while let Some((o, t)) = rx.recv().await {
        each(&o, &t);
        out.push(o);
    }
    out
}

fn collect(handles: &mut Vec<tokio::task::JoinHandle<()>>) {
    handles.retain(|h| !h.is_finished());
}

enum Guard {
    Read(#[allow(dead_code)] tokio::sync::OwnedRwLockReadGuard<()>),
    Write(#[allow(dead_code)] tokio::sync::OwnedRwLockWriteGuard<()>),
}

/// Whether `h` breaks one of `rules` in any of `tries` runs (timing varies between runs).
async fn still_fails(env: &Env, h: &History, rules: &BTreeSet<&'static str>, tries: usize) -> bool {
    for _ in 0..tries.max(1) {
        let (o, _) = run(env, h).await;
        if o.rules().iter().any(|r| rules.contains(r)) {
            return true;
        }
    }
    false
}

/// Shrink `h` to a minimal history (by operations; the initial state is kept) that still
/// breaks one of `rules`: delta debugging over the operations, then single removals until no
/// operation can go. Each candidate runs up to `tries` times. `progress` sees each accepted
/// reduction.
pub async fn shrink<F>(env: &Env, h: &History, rules: &BTreeSet<&'static str>, tries: usize, mut progress: F) -> History
where
    F: FnMut(&History),
{
    let started = Instant::now();
    let mut keep: Vec<usize> = (0..h.ops.len()).collect();
    let mut n = 2usize;
    while keep.len() >= 2 {
        let chunk = keep.len().div_ceil(n);
        let mut reduced = None;
        for part in 0..n {
            let lo = part * chunk;
            if lo >= keep.len() {
                break;
            }
            let hi = (lo + chunk).min(keep.len());
            let candidate: Vec<usize> = keep[..lo].iter().chain(&keep[hi..]).copied().collect();
            if still_fails(env, &h.with_ops(&candidate), rules, tries).await {
                reduced = Some(candidate);
                break;
            }
        }
        if let Some(candidate) = reduced {
            keep = candidate;
            n = (n - 1).max(2);
            progress(&h.with_ops(&keep));
        } else {
            if n >= keep.len() {
                break;
            }
            n = (n * 2).min(keep.len());
        }
    }
    // 1-minimal: no single operation can be removed.
    let mut i = 0;
    while i < keep.len() && keep.len() > 1 {
        let candidate: Vec<usize> = keep.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, k)| *k).collect();
        if still_fails(env, &h.with_ops(&candidate), rules, tries).await {
            keep = candidate;
            progress(&h.with_ops(&keep));
        } else {
            i += 1;
        }
    }
    tracing::info!(elapsed = ?started.elapsed(), ops = keep.len(), "shrunk");
    h.with_ops(&keep)
}
