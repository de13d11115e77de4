//! Results: machine description, summaries, ratios, targets; written as JSON, CSV and
//! Markdown tables next to the plot.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::campaign::CampaignResults;
use crate::speed::{Peer, SpeedResults, SpeedRun};
use crate::stats::{self, Summary, summarize};

/// The machine and the tree the suite ran on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub nproc: usize,
    /// CPU model.
    pub cpu: String,
    /// Memory, GiB.
    pub mem_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// Load averages at the start of the suite.
    pub load_before: Option<[f64; 3]>,
    /// Load averages at the end of the suite.
    pub load_after: Option<[f64; 3]>,
    /// `git describe --always --dirty`.
    pub git: String,
    /// When the suite started.
    pub started_at: String,
    /// Suite duration, s.
    pub duration_s: f64,
    /// kube-apiserver version (from /version).
    pub apiserver: String,
    /// kubectl version.
    pub kubectl: String,
    /// `--quick`.
    pub quick: bool,
    /// Flags every `pause-ledger restore` got besides the ledger, output and concurrency.
    pub pause_ledger_flags: String,
}

impl Machine {
    /// Describe this machine.
    pub fn probe() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default();
        let mem_kib: f64 = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let git = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Self {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            mem_gib: mem_kib / 1024.0 / 1024.0,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            load_before: crate::timing::loadavg(),
            git,
            started_at: jiff::Timestamp::now().to_string(),
            ..Default::default()
        }
    }
}

/// Everything, as written to results.json.
#[derive(Clone, Debug, Serialize)]
pub struct All {
    /// Machine.
    pub machine: Machine,
    /// Speed suite.
    pub speed: Option<SpeedResults>,
    /// Fault campaign.
    pub campaign: Option<CampaignResults>,
    /// Targets.
    pub targets: Vec<Target>,
}

/// One target of issue 6 and whether it was met.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    /// What.
    pub what: String,
    /// Goal.
    pub goal: String,
    /// Measured.
    pub measured: String,
    /// Met.
    pub met: Option<bool>,
}

fn timing_runs(s: &SpeedResults) -> impl Iterator<Item = &SpeedRun> {
    s.runs.iter().filter(|r| !r.via_proxy)
}

/// Summary of `f` over the timing runs of (peer, n).
pub fn summary_of(s: &SpeedResults, peer: Peer, n: usize, f: impl Fn(&SpeedRun) -> f64) -> Option<Summary> {
    let v: Vec<f64> = timing_runs(s).filter(|r| r.peer == peer && r.n == n).map(f).collect();
    summarize(&v)
}

/// Paired ratios `a / b` of wall time over repetitions of size `n`.
pub fn ratio(s: &SpeedResults, a: Peer, b: Peer, n: usize) -> Option<Summary> {
    let by_rep = |p: Peer| -> BTreeMap<usize, f64> {
        timing_runs(s).filter(|r| r.peer == p && r.n == n).map(|r| (r.rep, r.wall_ms)).collect()
    };
    let (x, y) = (by_rep(a), by_rep(b));
    let (mut xs, mut ys) = (Vec::new(), Vec::new());
    for (rep, v) in &x {
        if let Some(w) = y.get(rep) {
            xs.push(*v);
            ys.push(*w);
        }
    }
    summarize(&stats::paired_ratios(&xs, &ys))
}

fn sizes_of(s: &SpeedResults) -> Vec<usize> {
    let mut n: Vec<usize> = timing_runs(s).map(|r| r.n).collect();
    n.sort_unstable();
    n.dedup();
    n
}

/// Evaluate the targets.
pub fn targets(s: &SpeedResults) -> Vec<Target> {
    let mut t = Vec::new();
    let r = ratio(s, Peer::Kubectl, Peer::PauseLedger, 100);
    t.push(Target {
        what: "speed-up over the kubectl loop, N=100".into(),
        goal: "≥ 20×".into(),
        measured: r.as_ref().map_or("not measured".into(), |r| format!("{}×", r.show(1))),
        met: r.map(|r| r.median >= 20.0),
    });
    let r = ratio(s, Peer::PauseLedger, Peer::MergePatch, 1000);
    t.push(Target {
        what: "pause-ledger vs tight merge-patch loop, N=1000 (wall ratio)".into(),
        goal: "≤ 1.5×".into(),
        measured: r.as_ref().map_or("not measured".into(), |r| format!("{}×", r.show(2))),
        met: r.map(|r| r.median <= 1.5),
    });
    let big = sizes_of(s).into_iter().max().unwrap_or(0);
    let rss = timing_runs(s).filter(|r| r.peer == Peer::PauseLedger && r.n == big).map(|r| r.max_rss_kib).max();
    t.push(Target {
        what: format!("pause-ledger peak RSS, N={big}"),
        goal: "≤ 20 MiB".into(),
        measured: rss.map_or("not measured".into(), |k| format!("{:.1} MiB (max of runs)", k as f64 / 1024.0)),
        met: if big >= 5000 { rss.map(|k| k as f64 / 1024.0 <= 20.0) } else { None },
    });
    let size = s.sizes.pause_ledger_bytes as f64 / 1024.0 / 1024.0;
    t.push(Target {
        what: "pause-ledger binary (release, stripped)".into(),
        goal: "≤ 15 MiB".into(),
        measured: format!("{size:.2} MiB"),
        met: Some(size <= 15.0),
    });
    let v: Vec<f64> =
        s.startup.iter().filter(|x| x.peer == Peer::PauseLedger).filter_map(|x| x.first_request_ms).collect();
    let st = summarize(&v);
    t.push(Target {
        what: "pause-ledger process start → first request".into(),
        goal: "≤ 20 ms".into(),
        measured: st.as_ref().map_or("not measured".into(), |s| format!("{} ms", s.show(1))),
        met: st.map(|s| s.median <= 20.0),
    });
    t
}

fn mib(k: f64) -> f64 {
    k / 1024.0
}

/// Markdown tables of everything.
pub fn markdown(all: &All) -> String {
    let mut o = String::new();
    let m = &all.machine;
    let la = |l: Option<[f64; 3]>| l.map_or("?".into(), |l| format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2]));
    let _ = writeln!(o, "### Machine\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| CPUs (nproc) | {} × {} |", m.nproc, m.cpu);
    let _ = writeln!(o, "| memory | {:.1} GiB |", m.mem_gib);
    let _ = writeln!(o, "| kernel | {} |", m.kernel);
    let _ = writeln!(o, "| loadavg before → after | {} → {} |", la(m.load_before), la(m.load_after));
    let _ = writeln!(o, "| kube-apiserver / kubectl | {} / {} |", m.apiserver, m.kubectl);
    let _ = writeln!(
        o,
        "| extra pause-ledger flags | `{}` |",
        if m.pause_ledger_flags.is_empty() { "none" } else { &m.pause_ledger_flags }
    );
    let _ = writeln!(
        o,
        "| tree | `{}`, started {}, took {:.0} s{} |",
        m.git,
        m.started_at,
        m.duration_s,
        if m.quick { ", **--quick**" } else { "" }
    );
    if let Some(s) = &all.speed {
        speed_md(&mut o, s);
    }
    if !all.targets.is_empty() {
        let _ =
            writeln!(o, "\n### Targets\n\n| target | goal | measured (median [min–max]) | met |\n|---|---|---|---|");
        for t in &all.targets {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "n/a",
            };
            let _ = writeln!(o, "| {} | {} | {} | {met} |", t.what, t.goal, t.measured);
        }
    }
    if let Some(c) = &all.campaign {
        campaign_md(&mut o, c);
    }
    o
}

fn speed_md(o: &mut String, s: &SpeedResults) {
    let _ = writeln!(o, "\n### Restore N paused ManagedCharts: wall time, requests, CPU, memory\n");
    let _ = writeln!(
        o,
        "Timing runs go straight to the API server over TLS; cells are median [min–max] over the repetitions (`reps`). Requests: the client's own count (pause-ledger's report, the Rust peers' counter, kubectl's `-v=6` log in a separate run) and, where measured, the count a zero-fault proxy saw in a separate run of the same size (kubectl sends no bearer token over the proxy's plain HTTP, so it is counted from its log only). Client CPU is user+sys of every process of the peer; RSS is the largest process's peak. Server CPU is kube-apiserver + etcd during the run.\n"
    );
    let _ = writeln!(
        o,
        "| N | peer | reps | wall ms | ms/chart | requests (self / proxy) | client CPU ms | peak RSS MiB | apiserver CPU ms | etcd CPU ms | correct |"
    );
    let _ = writeln!(o, "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for n in sizes_of(s) {
        for peer in Peer::ALL {
            let Some(wall) = summary_of(s, peer, n, |r| r.wall_ms) else { continue };
            let cpu = summary_of(s, peer, n, |r| r.cpu_ms).unwrap_or(wall.clone());
            let rss = summary_of(s, peer, n, |r| mib(r.max_rss_kib as f64));
            let api = summary_of(s, peer, n, |r| r.apiserver_ms);
            let etcd = summary_of(s, peer, n, |r| r.etcd_ms);
            // kubectl counts only in its counting run (-v=6 log).
            let req_self =
                timing_runs(s).find(|r| r.peer == peer && r.n == n).and_then(|r| r.requests_self).or_else(|| {
                    s.runs.iter().find(|r| r.via_proxy && r.peer == peer && r.n == n).and_then(|r| r.requests_self)
                });
            let req_proxy =
                s.runs.iter().find(|r| r.via_proxy && r.peer == peer && r.n == n).and_then(|r| r.requests_proxy);
            let correct = timing_runs(s).filter(|r| r.peer == peer && r.n == n).all(|r| r.correct);
            let _ = writeln!(
                o,
                "| {n} | {} | {} | {} | {:.2} | {} / {} | {} | {} | {} | {} | {} |",
                peer.label(),
                wall.n,
                wall.show(0),
                wall.median / n as f64,
                req_self.map_or("–".into(), |x| x.to_string()),
                req_proxy.map_or("–".into(), |x| x.to_string()),
                cpu.show(0),
                rss.map_or("–".into(), |r| format!("{:.1}", r.max)),
                api.map_or("–".into(), |r| r.show(0)),
                etcd.map_or("–".into(), |r| r.show(0)),
                if correct { "yes" } else { "**NO**" }
            );
        }
    }
    let _ = writeln!(o, "\n### Ratios of wall time (paired by repetition, same run)\n");
    let pairs = [
        (Peer::Kubectl, Peer::PauseLedger, "(a) kubectl / (d) pause-ledger"),
        (Peer::GetPut, Peer::PauseLedger, "(b) GET+PUT / (d) pause-ledger"),
        (Peer::PauseLedger, Peer::MergePatch, "(d) pause-ledger / (c) merge patch"),
        (Peer::PauseLedger1, Peer::PauseLedger, "(d) -c 1 / (d) -c 16"),
        (Peer::PauseLedger, Peer::ListCas, "(d) pause-ledger / (e) LIST+CAS prototype"),
        (Peer::ListCas, Peer::MergePatch, "(e) LIST+CAS prototype / (c) merge patch"),
    ];
    let ns = sizes_of(s);
    let _ = write!(o, "| ratio |");
    for n in &ns {
        let _ = write!(o, " N={n} |");
    }
    let _ = write!(o, "\n|---|");
    for _ in &ns {
        let _ = write!(o, "---:|");
    }
    let _ = writeln!(o);
    for (a, b, label) in pairs {
        let _ = write!(o, "| {label} |");
        for n in &ns {
            let _ = write!(o, " {} |", ratio(s, a, b, *n).map_or("–".into(), |r| format!("{}×", r.show(2))));
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "\n### Start-up: process spawn → first byte / first request on the wire\n");
    let _ = writeln!(
        o,
        "Measured at N=1 through a timestamping TCP relay in front of the API server (TLS): *first byte* is the TLS ClientHello, *first request* the start of the client's second TLS application_data record (the first is its encrypted Finished), i.e. when the first HTTP request really goes on the wire.\n"
    );
    let _ = writeln!(
        o,
        "| peer | runs | spawn → first byte ms | spawn → first request ms | spawn → exit ms |\n|---|---:|---:|---:|---:|"
    );
    for peer in Peer::ALL {
        let rows: Vec<_> = s.startup.iter().filter(|x| x.peer == peer).collect();
        if rows.is_empty() {
            continue;
        }
        let fb = summarize(&rows.iter().filter_map(|x| x.first_byte_ms).collect::<Vec<_>>());
        let fr = summarize(&rows.iter().filter_map(|x| x.first_request_ms).collect::<Vec<_>>());
        let w = summarize(&rows.iter().map(|x| x.wall_ms).collect::<Vec<_>>());
        let show = |x: Option<Summary>| x.map_or("–".into(), |x| x.show(1));
        let _ = writeln!(o, "| {} | {} | {} | {} | {} |", peer.label(), rows.len(), show(fb), show(fr), show(w));
    }
    let z = &s.sizes;
    let _ = writeln!(o, "\n### Binary size\n\n| binary | bytes | MiB |\n|---|---:|---:|");
    let _ = writeln!(
        o,
        "| pause-ledger (release profile: strip, opt-level s, fat LTO) | {} | {:.2} |",
        z.pause_ledger_bytes,
        z.pause_ledger_bytes as f64 / 1048576.0
    );
    if let Some(b) = z.pause_ledger_stripped_bytes {
        let _ = writeln!(o, "| pause-ledger after `strip --strip-all` | {b} | {:.2} |", b as f64 / 1048576.0);
    }
    let _ = writeln!(o, "| kubectl | {} | {:.2} |", z.kubectl_bytes, z.kubectl_bytes as f64 / 1048576.0);
    let _ = writeln!(
        o,
        "| pause-ledger-bench (peers b, c, e; includes the harness) | {} | {:.2} |",
        z.bench_bytes,
        z.bench_bytes as f64 / 1048576.0
    );
}

fn campaign_md(o: &mut String, c: &CampaignResults) {
    let sc = &c.scenarios;
    let sum = |f: &dyn Fn(&crate::campaign::Scenario) -> usize| sc.iter().map(f).sum::<usize>();
    let runs = sum(&|s| s.runs.len());
    let faults: u64 = sc.iter().map(|s| s.faults_injected).sum();
    let _ = writeln!(o, "\n### Fault campaign: totals\n");
    let _ = writeln!(
        o,
        "| scenarios | runs | faults injected | entries restored | entries lost | wrongful unpauses | panics | status problems | unexpected exit codes | converged |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        o,
        "| {} | {runs} | {faults} | {} / {} | **{}** | **{}** | **{}** | {} | {} | {} / {} |",
        sc.len(),
        sum(&|s| s.restored),
        sum(&|s| s.ours),
        sum(&|s| s.lost),
        sum(&|s| s.wrongful),
        sum(&|s| s.panics),
        sum(&|s| s.status_problems.len()),
        sum(&|s| s.unexpected_exits.len()),
        sc.iter().filter(|s| s.converged).count(),
        sc.len()
    );
    let _ = writeln!(o, "\n### Fault campaign: scenarios\n");
    let _ = writeln!(
        o,
        "Each ledger records our entries plus 8 others: 6 decoys that must stay paused (2 paused by hand before the upgrade, 2 re-paused by hand with `kubectl-patch` after the upgrade's pause, 2 marked by another upgrade), 1 chart unpaused by hand since, 1 deleted since. *exits* lists every run's exit code in order (-1 = killed by the signal); a run is repeated until exit 0 with `status.yaml` state done, with the faults on for the first runs, then off.\n"
    );
    let _ = writeln!(
        o,
        "| group | scenario | seed | runs | exits | faults | restored / ours | lost | wrongful | panics | converged | recover ms | status problems |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---|");
    for s in sc {
        let exits: Vec<String> = s.runs.iter().map(|r| r.code.to_string()).collect();
        let conv = match (s.group.as_str(), s.converged, s.converged_under_faults) {
            ("invalid-ledger", true, _) => "n/a: every run exit 4",
            (_, true, _) if s.runs.len() == 1 => "yes, first run",
            ("fault-matrix", true, true) => "yes, rerun under faults",
            ("fault-matrix" | "unbeatable", true, false) => "yes, after faults off",
            (_, true, _) => "yes, on rerun",
            (_, false, _) => "**no**",
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} / {} | {} | {} | {} | {} | {} | {} |",
            s.group,
            s.name,
            s.seed.map_or("–".into(), |x| x.to_string()),
            s.runs.len(),
            exits.join(" "),
            s.faults_injected,
            s.restored,
            s.ours,
            s.lost,
            s.wrongful,
            s.panics,
            conv,
            s.recover_ms.map_or("–".into(), |r| format!("{r:.0} (down {:.0})", s.downtime_ms.unwrap_or(0.0))),
            if s.status_problems.is_empty() { "none".to_string() } else { s.status_problems.join("; ") }
        );
    }
    let notes: Vec<String> = sc
        .iter()
        .flat_map(|s| {
            s.notes
                .iter()
                .filter(|n| !n.starts_with("faults switched off"))
                .map(move |n| format!("- {} / {}: {n}", s.group, s.name))
        })
        .collect();
    if !notes.is_empty() {
        let _ = writeln!(o, "\nNotes:\n\n{}", notes.join("\n"));
    }
}

/// CSV of the speed runs.
pub fn speed_csv(s: &SpeedResults) -> String {
    let mut o = String::from(
        "peer,label,n,rep,via_proxy,code,wall_ms,cpu_ms,max_rss_kib,requests_self,requests_proxy,apiserver_ms,etcd_ms,correct,load1\n",
    );
    for r in &s.runs {
        let _ = writeln!(
            o,
            "{},\"{}\",{},{},{},{},{:.3},{:.1},{},{},{},{:.1},{:.1},{},{:.2}",
            r.peer.key(),
            r.peer.label(),
            r.n,
            r.rep,
            r.via_proxy,
            r.code,
            r.wall_ms,
            r.cpu_ms,
            r.max_rss_kib,
            r.requests_self.map_or(String::new(), |x| x.to_string()),
            r.requests_proxy.map_or(String::new(), |x| x.to_string()),
            r.apiserver_ms,
            r.etcd_ms,
            r.correct,
            r.load1
        );
    }
    o
}

/// CSV of the campaign scenarios.
pub fn campaign_csv(c: &CampaignResults) -> String {
    let mut o = String::from(
        "group,scenario,seed,runs,exits,faults,restored,ours,lost,wrongful,panics,converged,converged_under_faults,recover_ms,downtime_ms,status_problems\n",
    );
    for s in &c.scenarios {
        let exits: Vec<String> = s.runs.iter().map(|r| r.code.to_string()).collect();
        let _ = writeln!(
            o,
            "{},\"{}\",{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            s.group,
            s.name,
            s.seed.map_or(String::new(), |x| x.to_string()),
            s.runs.len(),
            exits.join(" "),
            s.faults_injected,
            s.restored,
            s.ours,
            s.lost,
            s.wrongful,
            s.panics,
            s.converged,
            s.converged_under_faults,
            s.recover_ms.map_or(String::new(), |x| format!("{x:.0}")),
            s.downtime_ms.map_or(String::new(), |x| format!("{x:.0}")),
            s.status_problems.len()
        );
    }
    o
}

/// Write results.json, speed.csv, startup.csv, campaign.csv and results.md into `dir`.
pub fn write_all(dir: &Path, all: &All) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_string_pretty(all)?)?;
    std::fs::write(dir.join("results.md"), markdown(all))?;
    if let Some(s) = &all.speed {
        std::fs::write(dir.join("speed.csv"), speed_csv(s))?;
        let mut st = String::from("peer,rep,first_byte_ms,first_request_ms,wall_ms\n");
        for x in &s.startup {
            let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.3}"));
            let _ = writeln!(
                st,
                "{},{},{},{},{:.3}",
                x.peer.key(),
                x.rep,
                f(x.first_byte_ms),
                f(x.first_request_ms),
                x.wall_ms
            );
        }
        std::fs::write(dir.join("startup.csv"), st)?;
    }
    if let Some(c) = &all.campaign {
        std::fs::write(dir.join("campaign.csv"), campaign_csv(c))?;
    }
    Ok(())
}
