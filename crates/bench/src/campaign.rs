//! The fault campaign: seeded, bounded restores through the fault proxy and under process
//! control, each ledger with decoys that must stay paused; counts runs, injected faults,
//! entries restored, lost, wrongfully unpaused, panics, and checks every status written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use fault_proxy::{FaultProxy, Faults, Stats};
use kubeenv::ControlPlane;
use pause_ledger::ledger::{self, STATUS_KEY};
use pause_ledger::outcome::Outcome;
use pause_ledger::status_doc::{self as status, State, StatusDoc};
use serde::Serialize;
use serde_json::Value;

use crate::run::{self, Cmd, Finished};
use crate::seed::{self, Live, Population};
use crate::{Env, speed::LEDGER};

/// Which fault the proxy injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// 500/502/503/504 without forwarding.
    ServerError,
    /// 429 with `Retry-After: 1`.
    Throttle,
    /// TCP RST before forwarding.
    ResetBefore,
    /// Forwarded (applied!), then TCP RST instead of the answer.
    ResetAfter,
    /// 0.2–2.5 s delay before forwarding, with `--request-timeout 1s`: some requests time out
    /// on the client yet are applied later.
    Latency,
    /// All of the above at a quarter of the rate each (latency 10–300 ms).
    Mixed,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 6] = [
        FaultKind::ServerError,
        FaultKind::Throttle,
        FaultKind::ResetBefore,
        FaultKind::ResetAfter,
        FaultKind::Latency,
        FaultKind::Mixed,
    ];

    /// Name.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::ServerError => "5xx",
            FaultKind::Throttle => "429+Retry-After",
            FaultKind::ResetBefore => "reset-before",
            FaultKind::ResetAfter => "reset-after-forward",
            FaultKind::Latency => "latency>timeout",
            FaultKind::Mixed => "mixed",
        }
    }

    /// The proxy's fault mix.
    pub fn faults(self, rate: f64, seed: u64) -> Faults {
        let mut f = Faults {
            seed,
            retry_after_secs: 1,
            latency_min: Duration::from_millis(200),
            latency_max: Duration::from_millis(2500),
            ..Faults::default()
        };
        match self {
            FaultKind::ServerError => f.server_error_rate = rate,
            FaultKind::Throttle => f.throttle_rate = rate,
            FaultKind::ResetBefore => f.reset_rate = rate,
            FaultKind::ResetAfter => f.reset_after_forward_rate = rate,
            FaultKind::Latency => f.latency_rate = rate,
            FaultKind::Mixed => {
                let q = rate / 4.0;
                f.server_error_rate = q;
                f.throttle_rate = q;
                f.reset_rate = q;
                f.reset_after_forward_rate = q;
                f.latency_rate = q;
                f.latency_min = Duration::from_millis(10);
                f.latency_max = Duration::from_millis(300);
            }
        }
        f
    }

    fn extra_args(self) -> Vec<String> {
        match self {
            FaultKind::Latency => vec!["--request-timeout".into(), "1s".into()],
            _ => vec![],
        }
    }
}

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct CampaignConfig {
    /// Our entries per fault-matrix ledger (plus 8 decoys/extras).
    pub ours: usize,
    /// Seeds of the fault matrix.
    pub seeds: Vec<u64>,
    /// Fault rates.
    pub rates: Vec<f64>,
    /// Fault kinds.
    pub kinds: Vec<FaultKind>,
    /// Runs under faults before the faults are switched off.
    pub max_runs: usize,
    /// API-server restarts: (our entries, --concurrency).
    pub restarts: Vec<(usize, u16)>,
    /// Signals mid-run: (signal name, fraction of entries restored when sent).
    pub signals: Vec<(String, f64)>,
    /// Our entries for the signal scenarios.
    pub signal_ours: usize,
    /// Concurrent restores of one ledger.
    pub concurrent: Vec<usize>,
    /// Our entries for the concurrent scenarios.
    pub concurrent_ours: usize,
    /// Include the unbeatable-fault cases.
    pub unbeatable: bool,
    /// Run only scenarios whose "group name" contains this (case-insensitive; `--scenario`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scenario: Option<String>,
}

impl CampaignConfig {
    /// Whether the `--scenario` filter selects this scenario.
    pub fn selects(&self, group: &str, name: &str) -> bool {
        self.scenario.as_deref().is_none_or(|f| format!("{group} {name}").to_lowercase().contains(&f.to_lowercase()))
    }

    /// Full campaign.
    pub fn full() -> Self {
        Self {
            ours: 40,
            seeds: vec![1, 2],
            rates: vec![0.1, 0.3, 0.5],
            kinds: FaultKind::ALL.to_vec(),
            max_runs: 6,
            restarts: vec![(400, 1), (2000, 16)],
            signals: vec![("TERM".into(), 0.1), ("TERM".into(), 0.5), ("KILL".into(), 0.3)],
            signal_ours: 400,
            concurrent: vec![2, 4],
            concurrent_ours: 300,
            unbeatable: true,
            scenario: None,
        }
    }

    /// `--quick`.
    pub fn quick() -> Self {
        Self {
            ours: 12,
            seeds: vec![1],
            rates: vec![0.3],
            kinds: FaultKind::ALL.to_vec(),
            max_runs: 4,
            restarts: vec![(150, 1)],
            signals: vec![("TERM".into(), 0.3)],
            signal_ours: 150,
            concurrent: vec![2],
            concurrent_ours: 60,
            unbeatable: true,
            scenario: None,
        }
    }
}

/// One pause-ledger run.
#[derive(Clone, Debug, Serialize)]
pub struct RunRecord {
    /// Exit code (-1: killed by a signal).
    pub code: i32,
    /// Wall ms.
    pub wall_ms: f64,
    /// Run with the proxy's faults on.
    pub with_faults: bool,
    /// Faults the proxy injected during the run.
    pub faults: u64,
    /// Requests the report counts.
    pub requests: Option<u64>,
    /// Outcome counts from the report.
    pub summary: Option<Value>,
    /// Status state after the run.
    pub status_state: Option<String>,
    /// Panicked.
    pub panicked: bool,
}

/// One scenario's tally.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scenario {
    /// Group (fault-matrix, unbeatable, apiserver-restart, signal, concurrent, invalid-ledger).
    pub group: String,
    /// Name.
    pub name: String,
    /// Seed of the fault sequence.
    pub seed: Option<u64>,
    /// Ledger entries.
    pub entries: usize,
    /// Entries the upgrade paused and that are still paused by it: must end restored.
    pub ours: usize,
    /// Entries that must end unpaused (ours + the one unpaused by hand).
    pub must_run: usize,
    /// Entries that must stay paused.
    pub decoys: usize,
    /// Every run.
    pub runs: Vec<RunRecord>,
    /// Faults injected (all runs), incl. API-server restarts and signals.
    pub faults_injected: u64,
    /// Breakdown of the proxy's faults.
    pub fault_breakdown: BTreeMap<String, u64>,
    /// Our entries restored (unpaused, mark removed) at the end.
    pub restored: usize,
    /// Our entries still paused at the end.
    pub lost: usize,
    /// Decoys unpaused.
    pub wrongful: usize,
    /// Runs that panicked.
    pub panics: usize,
    /// Ended with exit 0 and status done.
    pub converged: bool,
    /// Converged while the faults were still on.
    pub converged_under_faults: bool,
    /// Exit codes outside the expected set.
    pub unexpected_exits: Vec<i32>,
    /// Problems found in status.yaml.
    pub status_problems: Vec<String>,
    /// API back (ready) → first entry restored, ms.
    pub recover_ms: Option<f64>,
    /// API-server down (stop → ready again), ms.
    pub downtime_ms: Option<f64>,
    /// Anything else worth knowing.
    pub notes: Vec<String>,
}

/// Everything the campaign measured.
#[derive(Clone, Debug, Serialize)]
pub struct CampaignResults {
    /// The configuration.
    pub config: CampaignConfig,
    /// Every scenario.
    pub scenarios: Vec<Scenario>,
}

struct Ctx<'a> {
    cp: &'a ControlPlane,
    env: &'a Env,
}

fn add_stats(m: &mut BTreeMap<String, u64>, s: &Stats) {
    for (k, v) in [
        ("server_errors", s.server_errors),
        ("throttled", s.throttled),
        ("resets_before", s.resets),
        ("resets_after_forward", s.resets_after_forward),
        ("delayed", s.delayed),
    ] {
        *m.entry(k.into()).or_default() += v;
    }
}

fn injected(s: &Stats) -> u64 {
    s.server_errors + s.throttled + s.resets + s.resets_after_forward + s.delayed
}

impl Ctx<'_> {
    fn client(&self) -> Result<kube::Client> {
        Ok(self.cp.admin_client()?)
    }

    fn restore_cmd(&self, kubeconfig: &Path, ns: &str, extra: &[String]) -> Cmd {
        let mut logs = Vec::new();
        if self.env.logs.is_some() {
            // Kept logs: JSON lines (timestamps, fields); the runs are otherwise unchanged.
            logs.extend(["--log-format".to_string(), "json".to_string()]);
            if let Some(l) = &self.env.log_level {
                logs.extend(["--log-level".to_string(), l.clone()]);
            }
        }
        Cmd::new(&self.env.pause_ledger, &["restore", "--ledger", &format!("{ns}/{LEDGER}"), "-o", "json"])
            .args(&self.env.pl_extra)
            .args(&logs)
            .args(extra)
            .env("PAUSE_LEDGER_KUBECONFIG", kubeconfig)
            .env("PAUSE_LEDGER_PROGRESS", "never")
    }

    async fn population(&self, prefix: &str, ours: usize) -> Result<Population> {
        let client = self.client()?;
        let ns = self.cp.namespace(prefix).await?;
        let pop = seed::population(&client, &ns, ours).await?;
        seed::write_ledger(&client, &ns, LEDGER, &pop.ledger_names()).await?;
        Ok(pop)
    }

    async fn status_runs(&self, ns: &str) -> Result<u32> {
        let data = seed::configmap_data(&self.client()?, ns, LEDGER).await?;
        Ok(status::parse(data.get(STATUS_KEY).map(String::as_str)).map_or(0, |d| d.runs))
    }

    /// Record one finished run into `sc`: panics, exit code, status checks.
    #[allow(clippy::too_many_arguments)] // one scenario's bookkeeping, passed through unchanged
    async fn record(
        &self,
        sc: &mut Scenario,
        pop: &Population,
        fin: &Finished,
        prev_runs: u32,
        with_faults: bool,
        faults: u64,
        concurrent: bool,
        expected: &[i32],
    ) -> Result<Option<StatusDoc>> {
        let report: Option<Value> = serde_json::from_str(&fin.stdout).ok();
        if let Some(dir) = &self.env.logs {
            keep_log(dir, sc, fin)?;
        }
        if fin.panicked() {
            sc.panics += 1;
            sc.notes.push(format!("panic: {}", last_lines(&fin.stderr, 3)));
        }
        if !expected.contains(&fin.code) {
            sc.unexpected_exits.push(fin.code);
            sc.notes.push(format!(
                "exit {} (expected {expected:?}): {}",
                fin.code,
                report
                    .as_ref()
                    .and_then(|r| r["message"].as_str().map(str::to_string))
                    .unwrap_or_else(|| last_lines(&fin.stderr, 2))
            ));
        }
        if fin.code >= 0
            && let Some(r) = &report
            && r["exitCode"].as_i64() != Some(i64::from(fin.code))
        {
            sc.status_problems.push(format!("report exitCode {} but process exited {}", r["exitCode"], fin.code));
        }
        let client = self.client()?;
        let data = seed::configmap_data(&client, &pop.ns, LEDGER).await?;
        let doc = status::parse(data.get(STATUS_KEY).map(String::as_str));
        let live = seed::live(&client, &pop.ns).await?;
        let problems = status_problems(pop, &data, doc.as_ref(), fin, report.as_ref(), prev_runs, &live, concurrent);
        sc.status_problems.extend(problems);
        sc.runs.push(RunRecord {
            code: fin.code,
            wall_ms: fin.wall_ms,
            with_faults,
            faults,
            requests: report.as_ref().and_then(|r| r["requests"].as_u64()),
            summary: report.as_ref().map(|r| r["summary"].clone()),
            status_state: doc.as_ref().map(|d| format!("{:?}", d.state).to_lowercase()),
            panicked: fin.panicked(),
        });
        Ok(doc)
    }

    /// Run restores until exit 0 with status done: under `proxy`'s faults up to `max_runs`
    /// times, then (if needed) with the faults off, at most 3 more runs.
    #[allow(clippy::too_many_arguments)] // one scenario's bookkeeping, passed through unchanged
    async fn converge(
        &self,
        sc: &mut Scenario,
        pop: &Population,
        kubeconfig: &Path,
        proxy: Option<&FaultProxy>,
        extra: &[String],
        max_runs: usize,
        expected_faulty: &[i32],
    ) -> Result<()> {
        let mut faults_on = proxy.is_some();
        for attempt in 0..max_runs + 3 {
            if faults_on && attempt >= max_runs {
                faults_on = false;
                if let Some(p) = proxy {
                    p.set_faults(Faults::default());
                }
                sc.notes.push(format!("faults switched off after {max_runs} runs"));
            }
            let prev = self.status_runs(&pop.ns).await?;
            if let Some(p) = proxy {
                p.reset_stats();
            }
            let cmd = self.restore_cmd(kubeconfig, &pop.ns, if faults_on { extra } else { &[] });
            let fin = run::plain(&cmd, Duration::from_secs(600)).await?;
            let stats = proxy.map(FaultProxy::stats).unwrap_or_default();
            let n = if faults_on { injected(&stats) } else { 0 };
            sc.faults_injected += n;
            add_stats(&mut sc.fault_breakdown, &stats);
            let expected: &[i32] = if faults_on { expected_faulty } else { &[0] };
            let doc = self.record(sc, pop, &fin, prev, faults_on, n, false, expected).await?;
            if fin.code == 0 && doc.is_some_and(|d| d.state == State::Done) {
                sc.converged = true;
                sc.converged_under_faults = faults_on;
                return Ok(());
            }
        }
        Ok(())
    }

    /// Final state: restored, lost, wrongful unpauses.
    async fn tally(&self, sc: &mut Scenario, pop: &Population) -> Result<()> {
        let live = seed::live(&self.client()?, &pop.ns).await?;
        sc.entries = pop.ledger_names().len();
        sc.ours = pop.ours.len();
        sc.must_run = pop.ours.len() + pop.running.len();
        sc.decoys = pop.decoys.len();
        for n in pop.ours.iter().chain(&pop.running) {
            match live.get(n) {
                Some(l) if !l.paused => {
                    if pop.ours.contains(n) {
                        sc.restored += 1;
                    }
                    if l.mark.is_some() {
                        sc.notes.push(format!("{n}: unpaused but still marked"));
                    }
                }
                Some(_) => sc.lost += 1,
                None => sc.notes.push(format!("{n}: disappeared")),
            }
        }
        for (n, _) in &pop.decoys {
            if live.get(n).is_some_and(|l| !l.paused) {
                sc.wrongful += 1;
            }
        }
        if live.contains_key(&pop.gone[0]) {
            sc.notes.push("the deleted chart came back".into());
        }
        let _ = seed::delete_charts(&self.client()?, &pop.ns).await;
        Ok(())
    }

    async fn fault_matrix(&self, cfg: &CampaignConfig, kind: FaultKind, rate: f64, seed: u64) -> Result<Scenario> {
        let pop = self.population(&format!("f-{}", kind.name()), cfg.ours).await?;
        let faults = kind.faults(rate, seed);
        let proxy = FaultProxy::start(self.cp.server_url(), self.cp.ca_pem(), faults)?;
        let kc = proxy.write_kubeconfig(&self.env.scratch, self.cp.admin_token())?;
        let mut sc = Scenario {
            group: "fault-matrix".into(),
            name: matrix_name(kind, rate),
            seed: Some(seed),
            ..Default::default()
        };
        self.converge(&mut sc, &pop, &kc, Some(&proxy), &kind.extra_args(), cfg.max_runs, &[0, 3, 6]).await?;
        self.tally(&mut sc, &pop).await?;
        Ok(sc)
    }

    /// Faults no retry policy can beat, then a rerun without them.
    async fn unbeatable(
        &self,
        cfg: &CampaignConfig,
        name: &str,
        faults: Faults,
        extra: &[&str],
        expected: &[i32],
    ) -> Result<Scenario> {
        let pop = self.population("unbeatable", cfg.ours).await?;
        let proxy = FaultProxy::start(self.cp.server_url(), self.cp.ca_pem(), faults)?;
        let kc = proxy.write_kubeconfig(&self.env.scratch, self.cp.admin_token())?;
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut sc = Scenario { group: "unbeatable".into(), name: name.into(), ..Default::default() };
        self.converge(&mut sc, &pop, &kc, Some(&proxy), &extra, 1, expected).await?;
        self.tally(&mut sc, &pop).await?;
        Ok(sc)
    }

    async fn wait_restored(
        &self,
        ns: &str,
        target_paused: usize,
        child: &mut tokio::process::Child,
        limit: Duration,
    ) -> Result<bool> {
        let client = self.client()?;
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if child.try_wait()?.is_some() {
                return Ok(false);
            }
            if seed::count_paused(&client, ns).await? <= target_paused {
                return Ok(true);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(false)
    }

    async fn apiserver_restart(&self, cfg: &CampaignConfig, ours: usize, concurrency: u16) -> Result<Scenario> {
        let pop = self.population("restart", ours).await?;
        let mut sc =
            Scenario { group: "apiserver-restart".into(), name: restart_name(ours, concurrency), ..Default::default() };
        let kc = self.cp.kubeconfig_path().to_path_buf();
        let extra = vec!["--concurrency".to_string(), concurrency.to_string()];
        let paused0 = pop.ours.len() + pop.decoys.len();
        let mut running = run::spawn(&self.restore_cmd(&kc, &pop.ns, &extra))?;
        let child = &mut running.child;
        let hit = self.wait_restored(&pop.ns, paused0 - pop.ours.len() / 10, child, Duration::from_secs(120)).await?;
        if hit {
            let t_stop = Instant::now();
            tokio::task::block_in_place(|| self.cp.stop_apiserver())?;
            tokio::time::sleep(Duration::from_secs(2)).await;
            tokio::task::block_in_place(|| self.cp.start_apiserver())?;
            let t_ready = Instant::now();
            sc.downtime_ms = Some((t_ready - t_stop).as_secs_f64() * 1000.0);
            sc.faults_injected += 1;
            *sc.fault_breakdown.entry("apiserver_restarts".into()).or_default() += 1;
            // Nothing changes while the server is down: the count at stop is the baseline.
            let client = self.client()?;
            let at_ready = seed::count_paused(&client, &pop.ns).await?;
            let end = Instant::now() + Duration::from_secs(300);
            while Instant::now() < end {
                let now = seed::count_paused(&client, &pop.ns).await?;
                if now < at_ready {
                    sc.recover_ms = Some(t_ready.elapsed().as_secs_f64() * 1000.0);
                    break;
                }
                if child.try_wait()?.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if sc.recover_ms.is_none() {
                sc.notes.push("no progress after the API server came back (the run gave up during the outage)".into());
            }
        } else {
            sc.notes.push("the run finished before the API server could be stopped".into());
        }
        let fin = run::wait(running, Duration::from_secs(600)).await?;
        self.record(&mut sc, &pop, &fin, 0, true, 0, false, &[0, 3, 6]).await?;
        if !(fin.code == 0 && sc.runs.last().and_then(|r| r.status_state.as_deref()) == Some("done")) {
            self.converge(&mut sc, &pop, &kc, None, &[], 0, &[0]).await?;
        } else {
            sc.converged = true;
            sc.converged_under_faults = true;
        }
        let _ = cfg;
        self.tally(&mut sc, &pop).await?;
        Ok(sc)
    }

    async fn signal(&self, cfg: &CampaignConfig, sig: &str, frac: f64) -> Result<Scenario> {
        let pop = self.population("signal", cfg.signal_ours).await?;
        let mut sc = Scenario { group: "signal".into(), name: signal_name(sig, frac), ..Default::default() };
        let kc = self.cp.kubeconfig_path().to_path_buf();
        let extra = vec!["--concurrency".to_string(), "1".to_string()];
        let paused0 = pop.ours.len() + pop.decoys.len();
        let target = paused0 - ((pop.ours.len() as f64 * frac) as usize).max(1);
        let mut running = run::spawn(&self.restore_cmd(&kc, &pop.ns, &extra))?;
        let pid = running.child.id().context("child pid")?;
        let hit = self.wait_restored(&pop.ns, target, &mut running.child, Duration::from_secs(120)).await?;
        let expected: &[i32] = if hit {
            let s = if sig == "KILL" { rustix::process::Signal::KILL } else { rustix::process::Signal::TERM };
            run::signal(pid, s)?;
            sc.faults_injected += 1;
            *sc.fault_breakdown.entry(format!("sig{}", sig.to_lowercase())).or_default() += 1;
            if sig == "KILL" { &[-1] } else { &[7, 0] }
        } else {
            sc.notes.push("the run finished before the signal".into());
            &[0]
        };
        let fin = run::wait(running, Duration::from_secs(600)).await?;
        let doc = self.record(&mut sc, &pop, &fin, 0, true, 0, false, expected).await?;
        if fin.code == 7 {
            match &doc {
                Some(d) if d.state == State::Incomplete && d.entries.iter().any(|e| e.outcome == Outcome::Skipped) => {}
                other => sc.status_problems.push(format!(
                    "after SIGTERM expected an incomplete status with skipped entries, found {:?}",
                    other.as_ref().map(|d| d.state)
                )),
            }
        }
        self.converge(&mut sc, &pop, &kc, None, &[], 0, &[0]).await?;
        self.tally(&mut sc, &pop).await?;
        Ok(sc)
    }

    async fn concurrent(&self, cfg: &CampaignConfig, k: usize) -> Result<Scenario> {
        let pop = self.population("concurrent", cfg.concurrent_ours).await?;
        let mut sc = Scenario {
            group: "concurrent".into(),
            name: concurrent_name(k, cfg.concurrent_ours),
            ..Default::default()
        };
        let kc = self.cp.kubeconfig_path().to_path_buf();
        let mut children = Vec::new();
        for _ in 0..k {
            children.push(run::spawn(&self.restore_cmd(&kc, &pop.ns, &[]))?);
        }
        let mut fins = Vec::new();
        for c in children {
            fins.push(run::wait(c, Duration::from_secs(600)).await?);
        }
        let mut restored_by: BTreeMap<String, usize> = BTreeMap::new();
        for fin in &fins {
            self.record(&mut sc, &pop, fin, 0, true, 0, true, &[0]).await?;
            if let Ok(r) = serde_json::from_str::<Value>(&fin.stdout) {
                for e in r["entries"].as_array().into_iter().flatten() {
                    if e["outcome"] == "restored"
                        && let Some(n) = e["object"]["name"].as_str()
                    {
                        *restored_by.entry(n.to_string()).or_default() += 1;
                    }
                }
            }
        }
        let twice = restored_by.values().filter(|c| **c > 1).count();
        let never = pop.ours.iter().filter(|n| !restored_by.contains_key(*n)).count();
        sc.notes.push(format!(
            "restored by exactly one run: {}, by more than one: {twice}, by none: {never}",
            restored_by.values().filter(|c| **c == 1).count()
        ));
        if twice > 0 {
            sc.status_problems.push(format!("{twice} entries reported restored by more than one run"));
        }
        let data = seed::configmap_data(&self.client()?, &pop.ns, LEDGER).await?;
        match status::parse(data.get(STATUS_KEY).map(String::as_str)) {
            Some(d) if d.state == State::Done => {
                let r = d.entries.iter().filter(|e| e.outcome == Outcome::Restored).count();
                if r != pop.ours.len() {
                    sc.status_problems.push(format!("status lists {r} restored, expected {}", pop.ours.len()));
                }
                sc.converged = fins.iter().all(|f| f.code == 0);
                sc.converged_under_faults = sc.converged;
            }
            other => sc.notes.push(format!("status after the concurrent runs: {:?}", other.map(|d| d.state))),
        }
        if !sc.converged {
            self.converge(&mut sc, &pop, &kc, None, &[], 0, &[0]).await?;
        }
        self.tally(&mut sc, &pop).await?;
        Ok(sc)
    }

    async fn invalid_ledgers(&self) -> Result<Scenario> {
        let pop = self.population("invalid", 10).await?;
        let client = self.client()?;
        let good = seed::full_ledger(&pop.ns, &pop.ledger_names());
        let ns = &pop.ns;
        let variants: Vec<(&str, Vec<(&str, String)>)> = vec![
            ("unclosed flow sequence", vec![("ledger.yaml", format!("{good}  - [unclosed\n"))]),
            ("unknown version", vec![("ledger.yaml", good.replace("pause-ledger/v1", "pause-ledger/v2"))]),
            ("invalid name", vec![("ledger.yaml", good.replacen("name: mc-00001", "name: MC_00001", 1))]),
            ("duplicate entry", vec![("ledger.yaml", good.replacen("name: mc-00002", "name: mc-00001", 1))]),
            (
                "unknown field",
                vec![(
                    "ledger.yaml",
                    good.replacen("    name: mc-00003\n", "    name: mc-00003\n    colour: red\n", 1),
                )],
            ),
            (
                "order not a number",
                vec![(
                    "ledger.yaml",
                    good.replacen("    name: mc-00003\n", "    name: mc-00003\n    order: first\n", 1),
                )],
            ),
            (
                "kind not served",
                vec![(
                    "ledger.yaml",
                    good.replacen(
                        "    name: mc-00004\n",
                        "    name: mc-00004\n    apiVersion: example.com/v1\n    kind: Gizmo\n",
                        1,
                    ),
                )],
            ),
            ("bad pausedAt", vec![("ledger.yaml", good.replace("2026-11-27T10:00:00Z", "yesterday"))]),
            ("extra data key", vec![("ledger.yaml", good.clone()), ("notes", "x".into())]),
            ("both forms", vec![("ledger.yaml", good.clone()), ("charts", format!("{ns}/mc-00001"))]),
            ("minimal form without namespace", vec![("charts", "mc-00001 mc-00002".into())]),
            (
                "minimal form, invalid token",
                vec![("charts", format!("{ns}/mc-00001 {ns}/Not_Valid")), ("namespace", ns.clone())],
            ),
        ];
        let mut sc = Scenario {
            group: "invalid-ledger".into(),
            name: format!("{} {INVALID_NAME}", variants.len()),
            ..Default::default()
        };
        let kc = self.cp.kubeconfig_path().to_path_buf();
        for (what, data) in &variants {
            let data: BTreeMap<String, String> = data.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
            if ledger::parse_configmap_data(&data).is_ok() && *what != "kind not served" {
                sc.notes.push(format!("{what}: the parser accepts it (variant is not invalid)"));
            }
            seed::write_configmap(&client, ns, LEDGER, data).await?;
            let before: BTreeMap<String, String> =
                seed::live(&client, ns).await?.into_iter().map(|(k, l)| (k, l.resource_version)).collect();
            let fin = run::plain(&self.restore_cmd(&kc, ns, &[]), Duration::from_secs(120)).await?;
            let after: BTreeMap<String, String> =
                seed::live(&client, ns).await?.into_iter().map(|(k, l)| (k, l.resource_version)).collect();
            if fin.panicked() {
                sc.panics += 1;
            }
            if fin.code != 4 {
                sc.unexpected_exits.push(fin.code);
                sc.notes.push(format!("{what}: exit {}", fin.code));
            }
            let changed = before.iter().filter(|(k, v)| after.get(*k) != Some(v)).count();
            if changed > 0 {
                sc.wrongful += changed;
                sc.notes.push(format!("{what}: {changed} objects written"));
            }
            if seed::configmap_data(&client, ns, LEDGER).await?.contains_key(STATUS_KEY) {
                sc.status_problems.push(format!("{what}: status written for an invalid ledger"));
            }
            sc.runs.push(RunRecord {
                code: fin.code,
                wall_ms: fin.wall_ms,
                with_faults: false,
                faults: 0,
                requests: serde_json::from_str::<Value>(&fin.stdout).ok().and_then(|r| r["requests"].as_u64()),
                summary: None,
                status_state: None,
                panicked: fin.panicked(),
            });
        }
        sc.entries = pop.ledger_names().len();
        sc.decoys = pop.decoys.len();
        sc.converged = sc.unexpected_exits.is_empty();
        sc.notes.push("nothing patched: resourceVersions of every chart compared before/after each run".into());
        let _ = seed::delete_charts(&client, ns).await;
        Ok(sc)
    }
}

/// Keep one run's stderr (pause-ledger's logs) as `DIR/<group>-<name>-run<N>.log`.
fn keep_log(dir: &Path, sc: &Scenario, fin: &Finished) -> Result<()> {
    let slug: String = format!("{}-{}", sc.group, sc.name)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    let file = dir.join(format!("{slug}-run{}.log", sc.runs.len() + 1));
    std::fs::create_dir_all(dir)?;
    std::fs::write(&file, &fin.stderr).with_context(|| format!("writing {}", file.display()))?;
    Ok(())
}

// Scenario names, also matched by `--scenario` before a scenario runs.
fn matrix_name(kind: FaultKind, rate: f64) -> String {
    format!("{} {:.0}%", kind.name(), rate * 100.0)
}

fn restart_name(ours: usize, concurrency: u16) -> String {
    format!("kube-apiserver stopped at 10% and restarted, --concurrency {concurrency}, {ours} entries")
}

fn signal_name(sig: &str, frac: f64) -> String {
    format!("SIG{sig} at {:.0}% restored, --concurrency 1, then rerun", frac * 100.0)
}

fn concurrent_name(k: usize, ours: usize) -> String {
    format!("{k} concurrent restores of one ledger ({ours} entries)")
}

const INVALID_NAME: &str = "invalid ledgers through the binary";

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

/// Check status.yaml after a run against the run and the live objects.
#[allow(clippy::too_many_arguments)]
pub fn status_problems(
    pop: &Population,
    data: &BTreeMap<String, String>,
    doc: Option<&StatusDoc>,
    fin: &Finished,
    report: Option<&Value>,
    prev_runs: u32,
    live: &BTreeMap<String, Live>,
    concurrent: bool,
) -> Vec<String> {
    let mut p = Vec::new();
    let recorded: BTreeMap<String, String> =
        data.iter().filter(|(k, _)| k.as_str() != STATUS_KEY).map(|(k, v)| (k.clone(), v.clone())).collect();
    let Ok(ledger) = ledger::parse_configmap_data(&recorded) else {
        p.push("the recorded set no longer parses".into());
        return p;
    };
    let engine_ran = report.is_some_and(|r| r["entries"].as_array().is_some_and(|e| !e.is_empty()));
    let status_write_failed = report.is_some_and(|r| r["message"].as_str().is_some_and(|m| m.contains(STATUS_KEY)));
    let killed = fin.code < 0;
    if let Some(d) = doc {
        if d.ledger_digest != ledger.digest {
            p.push("status digest does not match the recorded set".into());
        }
        let all_final = d.entries.len() == ledger.entries.len() && d.entries.iter().all(|e| e.outcome.is_final());
        if (d.state == State::Done) != all_final {
            p.push(format!("state {:?} but all entries final = {all_final}", d.state));
        }
        let wrote = d.runs > prev_runs;
        if engine_ran && !status_write_failed && !wrote {
            p.push("the run restored entries but did not write a status".into());
        }
        if wrote && !concurrent {
            if d.runs != prev_runs + 1 {
                p.push(format!("runs went {prev_runs} → {}", d.runs));
            }
            if d.last_exit_code != fin.code {
                p.push(format!("lastExitCode {} but the run exited {}", d.last_exit_code, fin.code));
            }
            if fin.code == 0 && d.state != State::Done {
                p.push("exit 0 but state incomplete".into());
            }
        }
        let decoys: BTreeSet<&str> = pop.decoys.iter().map(|(n, _)| n.as_str()).collect();
        for e in &d.entries {
            let n = e.object.name.as_str();
            let l = live.get(n);
            match e.outcome {
                Outcome::Restored | Outcome::AlreadyRunning if l.is_some_and(|l| l.paused) => {
                    p.push(format!("{n}: status {} but it is paused", e.outcome))
                }
                Outcome::Restored | Outcome::AlreadyRunning if decoys.contains(n) => {
                    p.push(format!("{n}: decoy reported {}", e.outcome))
                }
                Outcome::NotOurs if !decoys.contains(n) => p.push(format!("{n}: ours, reported not-ours")),
                Outcome::NotOurs if l.is_some_and(|l| !l.paused) => p.push(format!("{n}: not-ours but unpaused")),
                Outcome::Gone if l.is_some() => p.push(format!("{n}: gone but exists")),
                _ => {}
            }
        }
    } else if engine_ran && !status_write_failed && !killed {
        p.push("no status written".into());
    }
    p
}

/// Run the campaign.
pub async fn run(cp: &ControlPlane, env: &Env, cfg: &CampaignConfig) -> Result<CampaignResults> {
    let ctx = Ctx { cp, env };
    let mut scenarios = Vec::new();
    let mut push = |s: Scenario| {
        eprintln!(
            "  {:<18} {:<70} runs {:>2} faults {:>4} restored {:>4}/{:<4} lost {} wrongful {} panics {} converged {}{} exits {:?}{}",
            s.group,
            s.name,
            s.runs.len(),
            s.faults_injected,
            s.restored,
            s.ours,
            s.lost,
            s.wrongful,
            s.panics,
            s.converged,
            s.recover_ms.map(|r| format!(" recover {r:.0} ms")).unwrap_or_default(),
            s.runs.iter().map(|r| r.code).collect::<Vec<_>>(),
            if s.status_problems.is_empty() && s.unexpected_exits.is_empty() {
                String::new()
            } else {
                format!("  PROBLEMS {:?} {:?}", s.unexpected_exits, s.status_problems)
            }
        );
        scenarios.push(s);
    };
    let want = |group: &str, name: &str| cfg.selects(group, name);
    eprintln!("faults: invalid ledgers");
    if want("invalid-ledger", INVALID_NAME) {
        push(ctx.invalid_ledgers().await?);
    }
    eprintln!("faults: fault matrix through the proxy");
    for &seed in &cfg.seeds {
        for &kind in &cfg.kinds {
            for &rate in &cfg.rates {
                if want("fault-matrix", &matrix_name(kind, rate)) {
                    push(ctx.fault_matrix(cfg, kind, rate, seed).await?);
                }
            }
        }
    }
    if cfg.unbeatable {
        eprintln!("faults: unbeatable faults, then a rerun without them");
        let all_5xx =
            Faults { seed: 7, server_error_rate: 1.0, path_filter: Some("managedcharts".into()), ..Faults::default() };
        let name = "every ManagedChart request 5xx, --timeout 20s";
        if want("unbeatable", name) {
            push(ctx.unbeatable(cfg, name, all_5xx, &["--timeout", "20s"], &[3, 6]).await?);
        }
        let all_429 = Faults { seed: 8, throttle_rate: 1.0, retry_after_secs: 5, ..Faults::default() };
        let name = "every request 429 Retry-After 5, --timeout 15s";
        if want("unbeatable", name) {
            push(ctx.unbeatable(cfg, name, all_429, &["--timeout", "15s"], &[6]).await?);
        }
        let all_reset = Faults { seed: 9, reset_rate: 1.0, ..Faults::default() };
        let name = "every connection reset, --timeout 10s";
        if want("unbeatable", name) {
            push(ctx.unbeatable(cfg, name, all_reset, &["--timeout", "10s"], &[6]).await?);
        }
    }
    eprintln!("faults: SIGTERM / SIGKILL mid-run, then rerun");
    for (sig, frac) in &cfg.signals {
        if want("signal", &signal_name(sig, *frac)) {
            push(ctx.signal(cfg, sig, *frac).await?);
        }
    }
    eprintln!("faults: concurrent restores of one ledger");
    for &k in &cfg.concurrent {
        if want("concurrent", &concurrent_name(k, cfg.concurrent_ours)) {
            push(ctx.concurrent(cfg, k).await?);
        }
    }
    eprintln!("faults: kube-apiserver stopped and restarted mid-run (etcd kept)");
    for &(ours, c) in &cfg.restarts {
        if want("apiserver-restart", &restart_name(ours, c)) {
            push(ctx.apiserver_restart(cfg, ours, c).await?);
        }
    }
    if scenarios.is_empty() {
        eprintln!("faults: no scenario matches --scenario {:?}", cfg.scenario.as_deref().unwrap_or_default());
    }
    Ok(CampaignResults { config: cfg.clone(), scenarios })
}

/// Where results go.
pub fn default_out() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("results")
}
