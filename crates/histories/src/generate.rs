//! The seeded generator: a seed gives one history, always the same one (fastrand 2's wyrand;
//! histories are also saved as JSON, so a failing one outlives a change of this generator).
//!
//! Weights favour what the actors really do and what the invariants can judge: every history
//! starts from a world where the upgrade side acts first (a `record`, or the upgrade script),
//! then 5–15 operations are drawn. Some draws pull a follower with them, so the interleavings
//! that matter are common rather than rare: a background `record` is often followed at once by
//! a `restore` (restore during record's intent phase), a `restore --settle` by an administrator's
//! pause inside its window (often right after the upgrade script's unmarked pauses), a
//! background `rescue` by an administrator acting while it lists, a `record --on-existing` by
//! an earlier ledger of another id.
//! About 3 % of histories stop the API server; in those every pause-ledger process runs with a
//! long deadline, straight to the API server, without proxy faults.

use fastrand::Rng;

use crate::model::{
    AdminAction, CHARTS, FaultKind, FaultSpec, History, Initial, Kill, Obj, OnExisting, Op, PRESET_CHARTS, PathFilter,
    Proc, ScriptForm, Signal, Targets, Upgrade,
};

/// Share of histories that stop the API server.
pub const OUTAGE_SHARE: f64 = 0.03;

/// The history of `seed`.
pub fn generate(seed: u64) -> History {
    let mut g = Gen { rng: Rng::with_seed(seed), seed, ops: Vec::new(), outage: false };
    g.outage = g.rng.f64() < OUTAGE_SHARE;
    let initial =
        Obj::all().iter().map(|_| if g.rng.f64() < 0.15 { Initial::AdminPaused } else { Initial::Running }).collect();
    g.opening();
    let n = g.rng.usize(5..=15);
    while g.ops.len() < n {
        g.step();
    }
    if g.outage {
        g.add_outage();
    }
    History { seed, initial, ops: g.ops }
}

struct Gen {
    rng: Rng,
    seed: u64,
    ops: Vec<Op>,
    outage: bool,
}

impl Gen {
    fn chance(&mut self, p: f64) -> bool {
        self.rng.f64() < p
    }

    /// A non-empty random subset of the charts (preset charts mostly).
    fn charts(&mut self, preset_only: bool) -> Vec<usize> {
        let max = if preset_only { PRESET_CHARTS } else { CHARTS.len() };
        let mut v: Vec<usize> = (0..max).filter(|_| self.rng.bool()).collect();
        if v.is_empty() {
            v.push(self.rng.usize(0..max));
        }
        v
    }

    fn obj(&mut self) -> Obj {
        if self.chance(0.15) { Obj::CronJob } else { Obj::Chart(self.rng.usize(0..CHARTS.len())) }
    }

    fn faults(&mut self) -> FaultSpec {
        if self.outage {
            return FaultSpec::none();
        }
        let r = self.rng.f64();
        let kind = match r {
            r if r < 0.45 => return FaultSpec::none(),
            r if r < 0.57 => FaultKind::ResetAfter,
            r if r < 0.67 => FaultKind::ErrorAfter,
            r if r < 0.75 => FaultKind::Latency,
            r if r < 0.83 => FaultKind::ServerError,
            r if r < 0.90 => FaultKind::Throttle,
            r if r < 0.95 => FaultKind::ResetBefore,
            _ => FaultKind::Mixed,
        };
        let rate = [0.2, 0.35, 0.5][self.rng.usize(0..3)];
        let filter = match self.rng.f64() {
            r if r < 0.5 => PathFilter::ManagedCharts,
            r if r < 0.7 => PathFilter::ConfigMaps,
            r if r < 0.75 => PathFilter::CronJobs,
            _ => PathFilter::All,
        };
        FaultSpec { kind, rate, filter, seed: self.seed.wrapping_mul(1000).wrapping_add(self.ops.len() as u64) }
    }

    fn proc(&mut self, kill_p: f64, background_p: f64) -> Proc {
        let faults = self.faults();
        let kill = self.chance(kill_p).then(|| Kill {
            signal: if self.rng.bool() { Signal::Kill } else { Signal::Term },
            after_ms: self.rng.u32(0..900),
        });
        Proc { faults, kill, background: self.chance(background_p), long: self.outage }
    }

    fn upgrade(&mut self) -> Upgrade {
        match self.rng.f64() {
            r if r < 0.6 => Upgrade::A,
            r if r < 0.85 => Upgrade::B,
            _ => Upgrade::C,
        }
    }

    fn targets(&mut self) -> Targets {
        match self.rng.f64() {
            r if r < 0.4 => Targets::Preset,
            r if r < 0.82 => Targets::Charts(self.charts(false)),
            _ => Targets::CronJob,
        }
    }

    fn record(&mut self, upgrade: Upgrade, on_existing: OnExisting) -> Op {
        let targets = self.targets();
        let proc = self.proc(0.2, 0.35);
        Op::Record { upgrade, on_existing, targets, proc }
    }

    fn restore(&mut self) -> Op {
        let copies = if self.chance(0.2) { self.rng.u8(2..=3) } else { 1 };
        let force = self.chance(0.2);
        let settle = self.chance(0.2);
        let proc = self.proc(0.15, 0.3);
        Op::Restore { copies, force, settle, proc }
    }

    fn admin_action(&mut self) -> AdminAction {
        use AdminAction::*;
        let r = self.rng.f64();
        match r {
            r if r < 0.16 => Pause,
            r if r < 0.30 => Unpause,
            r if r < 0.40 => Repause,
            r if r < 0.56 => SsaPause,
            r if r < 0.64 => RemoveMark,
            r if r < 0.71 => EditMark,
            r if r < 0.86 => KeepPaused,
            r if r < 0.93 => RecreateRunning,
            _ => RecreatePaused,
        }
    }

    fn script(&mut self) -> Op {
        let form = match self.rng.f64() {
            r if r < 0.45 => ScriptForm::MinimalNoUpgrade,
            r if r < 0.7 => ScriptForm::MinimalWithUpgrade,
            _ => ScriptForm::FullCustomManager,
        };
        let charts = if self.chance(0.6) { (0..PRESET_CHARTS).collect() } else { self.charts(true) };
        Op::Script { form, charts }
    }

    /// The upgrade side acts first: a record, the upgrade script, or an earlier upgrade's
    /// ledger that the next records will meet.
    fn opening(&mut self) {
        match self.rng.f64() {
            r if r < 0.22 => {
                let s = self.script();
                let charts = match &s {
                    Op::Script { charts, .. } => charts.clone(),
                    _ => vec![],
                };
                self.ops.push(s);
                // The upgrade is restored while something (an administrator, or the still
                // running upgrade) pauses a chart again inside the re-pause guard's window.
                if self.chance(0.4) && !charts.is_empty() {
                    let mut proc = self.proc(0.0, 1.0);
                    proc.background = true;
                    self.ops.push(Op::Restore { copies: 1, force: false, settle: true, proc });
                    let ms = self.rng.u32(300..1300);
                    self.ops.push(Op::Sleep { ms });
                    let obj = Obj::Chart(charts[self.rng.usize(0..charts.len())]);
                    let action = if self.rng.bool() { AdminAction::Pause } else { AdminAction::SsaPause };
                    self.ops.push(Op::Admin { obj, action });
                }
            }
            r if r < 0.40 => {
                // An earlier upgrade (C) recorded; maybe restored, maybe not.
                let r = self.record(Upgrade::C, OnExisting::Refuse);
                self.ops.push(r);
                if self.chance(0.3) {
                    let r = self.restore();
                    self.ops.push(r);
                }
            }
            _ => {
                let up = self.upgrade();
                let r = self.record(up, OnExisting::Refuse);
                self.ops.push(r);
            }
        }
    }

    fn step(&mut self) {
        let r = self.rng.f64();
        match r {
            r if r < 0.22 => {
                let up = self.upgrade();
                let oe = match self.rng.f64() {
                    r if r < 0.5 => OnExisting::Refuse,
                    r if r < 0.75 => OnExisting::Merge,
                    _ => OnExisting::TakeOver,
                };
                let op = self.record(up, oe);
                let background = matches!(&op, Op::Record { proc, .. } if proc.background);
                self.ops.push(op);
                // Restore while record may still be in its intent phase.
                if background && self.chance(0.4) {
                    let mut r = self.restore();
                    if let Op::Restore { proc, .. } = &mut r {
                        proc.kill = None;
                    }
                    self.ops.push(r);
                }
            }
            r if r < 0.40 => {
                let op = self.restore();
                let settle = matches!(&op, Op::Restore { settle: true, proc, .. } if proc.kill.is_none());
                let background = matches!(&op, Op::Restore { proc, .. } if proc.background);
                self.ops.push(op);
                // An administrator (or the still-running upgrade) pauses inside the settle window.
                if settle && self.chance(0.6) {
                    if !background && let Some(Op::Restore { proc, .. }) = self.ops.last_mut() {
                        proc.background = true;
                    }
                    let ms = self.rng.u32(200..1200);
                    self.ops.push(Op::Sleep { ms });
                    let obj = Obj::Chart(self.rng.usize(0..PRESET_CHARTS));
                    let action = if self.rng.bool() { AdminAction::Pause } else { AdminAction::SsaPause };
                    self.ops.push(Op::Admin { obj, action });
                }
            }
            r if r < 0.45 => {
                let mut proc = self.proc(0.1, 0.3);
                // An administrator acts while rescue lists what it will touch (slowed down by
                // latency half of the time, so the listing takes seconds).
                let follow = self.chance(0.5);
                if follow {
                    proc.background = true;
                    proc.kill = None;
                    if !self.outage && self.rng.bool() {
                        proc.faults = FaultSpec {
                            kind: FaultKind::Latency,
                            rate: 0.5,
                            filter: PathFilter::ManagedCharts,
                            seed: self.seed.wrapping_mul(1000).wrapping_add(self.ops.len() as u64),
                        };
                    }
                }
                self.ops.push(Op::Rescue { proc });
                if follow {
                    let ms = self.rng.u32(100..2500);
                    self.ops.push(Op::Sleep { ms });
                    let obj = Obj::Chart(self.rng.usize(0..PRESET_CHARTS));
                    let action = match self.rng.u8(0..3) {
                        0 => AdminAction::Pause,
                        1 => AdminAction::Repause,
                        _ => AdminAction::SsaPause,
                    };
                    self.ops.push(Op::Admin { obj, action });
                }
            }
            r if r < 0.75 => {
                let obj = self.obj();
                let action = self.admin_action();
                self.ops.push(Op::Admin { obj, action });
            }
            r if r < 0.81 => {
                let chart = self.rng.usize(0..CHARTS.len());
                let writes = self.rng.u8(3..=12);
                self.ops.push(Op::Churn { chart, writes });
            }
            r if r < 0.91 => {
                let ms = self.rng.u32(50..1500);
                self.ops.push(Op::Sleep { ms });
            }
            r if r < 0.96 => self.ops.push(Op::Wait),
            _ => {
                let s = self.script();
                self.ops.push(s);
            }
        }
    }

    /// Stop the API server around a restore: right before it starts (down for its first
    /// seconds), or while it runs.
    fn add_outage(&mut self) {
        let down_ms = self.rng.u32(5_000..25_000);
        let at = self.rng.usize(1..=self.ops.len());
        let proc = Proc { faults: FaultSpec::none(), kill: None, background: true, long: true };
        let restore = Op::Restore { copies: 1, force: self.chance(0.3), settle: false, proc };
        if self.rng.bool() {
            // Down at the start of the run.
            self.ops.insert(at, restore);
            self.ops.insert(at, Op::Outage { down_ms });
        } else {
            // Down mid-run.
            let ms = self.rng.u32(0..400);
            self.ops.insert(at, Op::Outage { down_ms });
            self.ops.insert(at, Op::Sleep { ms });
            self.ops.insert(at, restore);
        }
        self.ops.push(Op::Wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_history() {
        for seed in 0..50 {
            assert_eq!(generate(seed), generate(seed));
        }
        assert_ne!(generate(1), generate(2));
    }

    #[test]
    fn histories_are_small_and_varied() {
        let hs: Vec<History> = (0..2000).map(generate).collect();
        for h in &hs {
            assert!((5..=24).contains(&h.ops.len()), "{} ops", h.ops.len());
            assert_eq!(h.initial.len(), Obj::all().len());
        }
        let count = |f: &dyn Fn(&Op) -> bool| hs.iter().filter(|h| h.ops.iter().any(f)).count();
        // Every kind of actor and fault shows up often enough to matter over 2,000 histories.
        assert!(count(&|o| matches!(o, Op::Record { on_existing: OnExisting::Merge, .. })) > 200);
        assert!(count(&|o| matches!(o, Op::Record { on_existing: OnExisting::TakeOver, .. })) > 200);
        assert!(count(&|o| matches!(o, Op::Rescue { .. })) > 200);
        assert!(count(&|o| matches!(o, Op::Script { .. })) > 300);
        assert!(count(&|o| matches!(o, Op::Admin { action: AdminAction::KeepPaused, .. })) > 200);
        assert!(count(&|o| matches!(o, Op::Admin { action: AdminAction::SsaPause, .. })) > 200);
        assert!(count(&|o| matches!(o, Op::Restore { settle: true, .. })) > 200);
        assert!(count(&|o| matches!(o, Op::Restore { copies: 2.., .. })) > 100);
        assert!(count(&|o| matches!(o, Op::Churn { .. })) > 200);
        let outages = count(&|o| matches!(o, Op::Outage { .. }));
        assert!((20..120).contains(&outages), "{outages}");
        let kills = count(&|o| match o {
            Op::Record { proc, .. } | Op::Restore { proc, .. } | Op::Rescue { proc } => proc.kill.is_some(),
            _ => false,
        });
        assert!(kills > 300, "{kills}");
        for kind in [FaultKind::ResetAfter, FaultKind::ErrorAfter, FaultKind::Latency, FaultKind::Throttle] {
            let n = count(&|o| match o {
                Op::Record { proc, .. } | Op::Restore { proc, .. } | Op::Rescue { proc } => proc.faults.kind == kind,
                _ => false,
            });
            assert!(n > 100, "{kind:?}: {n}");
        }
        // Outage histories: long deadlines, no proxy faults.
        for h in hs.iter().filter(|h| h.has_outage()) {
            for o in &h.ops {
                if let Op::Record { proc, .. } | Op::Restore { proc, .. } | Op::Rescue { proc } = o {
                    assert!(proc.long && !proc.faults.active());
                }
            }
        }
    }
}
