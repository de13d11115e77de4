//! Speed and footprint: restore N paused ManagedCharts with every peer, in one run of the
//! suite, repetitions interleaved (peer order rotated per repetition) so machine noise hits
//! every peer alike.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use fault_proxy::{FaultProxy, Faults};
use kubeenv::ControlPlane;
use serde::Serialize;
use serde_json::Value;

use crate::relay::Relay;
use crate::run::{self, Cmd};
use crate::{Env, seed, timing};

/// The ledger ConfigMap name in every benchmark namespace.
pub const LEDGER: &str = "pause-ledger";
/// pause-ledger's default concurrency, which (c) and (e) use too.
pub const DEFAULT_CONCURRENCY: usize = 16;

/// The compared ways to restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum Peer {
    /// (a) `kubectl patch --type merge`, one process per chart (Harvester's docs).
    Kubectl,
    /// (b) sequential GET + PUT (Harvester's controller), kube-rs.
    GetPut,
    /// (c) merge patch per chart, 16 in flight, kube-rs.
    MergePatch,
    /// (d) pause-ledger --concurrency 1.
    PauseLedger1,
    /// (d) pause-ledger, default concurrency (16).
    PauseLedger,
    /// (e) prototype of recommended change 1: LIST + CAS patch, 16 in flight.
    ListCas,
    /// (f) prototype of changes 1 + 2: (e) with TCP_NODELAY on the client's sockets.
    ListCasNodelay,
}

impl Peer {
    /// Every peer, in table order.
    pub const ALL: [Peer; 7] = [
        Peer::Kubectl,
        Peer::GetPut,
        Peer::MergePatch,
        Peer::PauseLedger1,
        Peer::PauseLedger,
        Peer::ListCas,
        Peer::ListCasNodelay,
    ];

    /// Short stable key (CSV, plot).
    pub fn key(self) -> &'static str {
        match self {
            Peer::Kubectl => "a-kubectl-loop",
            Peer::GetPut => "b-get-put-loop",
            Peer::MergePatch => "c-merge-patch-x16",
            Peer::PauseLedger1 => "d-pause-ledger-c1",
            Peer::PauseLedger => "d-pause-ledger-c16",
            Peer::ListCas => "e-list-cas-x16",
            Peer::ListCasNodelay => "f-list-cas-nodelay-x16",
        }
    }

    /// Table label.
    pub fn label(self) -> &'static str {
        match self {
            Peer::Kubectl => "(a) kubectl patch loop",
            Peer::GetPut => "(b) GET+PUT loop",
            Peer::MergePatch => "(c) merge patch ×16",
            Peer::PauseLedger1 => "(d) pause-ledger -c 1",
            Peer::PauseLedger => "(d) pause-ledger (default -c 16)",
            Peer::ListCas => "(e) prototype: LIST+CAS ×16",
            Peer::ListCasNodelay => "(f) prototype: LIST+CAS ×16 + TCP_NODELAY",
        }
    }
}

/// What to run.
#[derive(Clone, Debug, Serialize)]
pub struct SpeedConfig {
    /// (N, repetitions) for every peer but kubectl.
    pub sizes: Vec<(usize, usize)>,
    /// (N, repetitions) for kubectl (it is slow: fewer sizes and repetitions).
    pub kubectl_sizes: Vec<(usize, usize)>,
    /// Sizes run once more through a zero-fault proxy to count requests on the wire.
    pub count_sizes: Vec<usize>,
    /// Largest N for which kubectl's requests are counted.
    pub kubectl_count_max: usize,
    /// Start-up measurements per peer (N = 1).
    pub startup_reps: usize,
}

impl SpeedConfig {
    /// The full suite.
    pub fn full() -> Self {
        Self {
            sizes: vec![(1, 5), (10, 5), (100, 5), (1000, 3), (5000, 3)],
            kubectl_sizes: vec![(1, 5), (10, 5), (100, 3), (1000, 1)],
            count_sizes: vec![1, 10, 100, 1000],
            kubectl_count_max: 100,
            startup_reps: 10,
        }
    }

    /// `--quick`.
    pub fn quick() -> Self {
        Self {
            sizes: vec![(1, 2), (10, 2), (100, 2)],
            kubectl_sizes: vec![(1, 2), (10, 1)],
            count_sizes: vec![10],
            kubectl_count_max: 10,
            startup_reps: 3,
        }
    }
}

/// One measured restore.
#[derive(Clone, Debug, Serialize)]
pub struct SpeedRun {
    /// Peer key.
    pub peer: Peer,
    /// Charts restored.
    pub n: usize,
    /// Repetition.
    pub rep: usize,
    /// A request-counting run (through the zero-fault proxy; kubectl: its own -v=6 log), not
    /// a timing run.
    pub via_proxy: bool,
    /// Exit code.
    pub code: i32,
    /// Wall ms.
    pub wall_ms: f64,
    /// Client user+sys CPU ms (all its processes).
    pub cpu_ms: f64,
    /// Client peak RSS KiB (largest process).
    pub max_rss_kib: u64,
    /// Requests the client reports (pause-ledger's report, the peers' own count).
    pub requests_self: Option<u64>,
    /// Requests the proxy saw.
    pub requests_proxy: Option<u64>,
    /// kube-apiserver CPU ms during the run.
    pub apiserver_ms: f64,
    /// etcd CPU ms during the run.
    pub etcd_ms: f64,
    /// Exit 0 and every chart unpaused afterwards.
    pub correct: bool,
    /// 1-minute load average just before the run.
    pub load1: f64,
}

/// One start-up measurement.
#[derive(Clone, Debug, Serialize)]
pub struct StartupRun {
    /// Peer.
    pub peer: Peer,
    /// Repetition.
    pub rep: usize,
    /// Spawn → first byte on the wire (TLS ClientHello).
    pub first_byte_ms: Option<f64>,
    /// Spawn → first HTTP request (client's flight after the server's handshake).
    pub first_request_ms: Option<f64>,
    /// Spawn → exit.
    pub wall_ms: f64,
}

/// Binary sizes.
#[derive(Clone, Debug, Serialize)]
pub struct Sizes {
    /// target/release/pause-ledger as built (release profile strips).
    pub pause_ledger_bytes: u64,
    /// After `strip --strip-all` (same when already stripped; None without binutils).
    pub pause_ledger_stripped_bytes: Option<u64>,
    /// kubectl.
    pub kubectl_bytes: u64,
    /// The bench binary (peers b, c, e; includes the test harness).
    pub bench_bytes: u64,
}

/// Everything the speed suite measured.
#[derive(Clone, Debug, Serialize)]
pub struct SpeedResults {
    /// The configuration.
    pub config: SpeedConfig,
    /// Every restore.
    pub runs: Vec<SpeedRun>,
    /// Start-up runs.
    pub startup: Vec<StartupRun>,
    /// Binary sizes.
    pub sizes: Sizes,
}

struct Ctx<'a> {
    cp: &'a ControlPlane,
    env: &'a Env,
    counter: std::cell::Cell<u64>,
}

impl Ctx<'_> {
    fn next(&self) -> u64 {
        let n = self.counter.get() + 1;
        self.counter.set(n);
        n
    }

    /// The command restoring ledger `ns/LEDGER` with `peer`.
    /// The command restoring ledger `ns/LEDGER` with `peer`; `log_requests` makes kubectl log
    /// every request (-v=6), to count them.
    fn command(&self, peer: Peer, kubeconfig: &Path, ns: &str, names: &[String], log_requests: bool) -> Result<Cmd> {
        let ledger = format!("{ns}/{LEDGER}");
        let kc = kubeconfig.display().to_string();
        Ok(match peer {
            Peer::Kubectl => {
                // Fresh HOME: the first process fills kubectl's discovery cache, the rest use it.
                let home = self.env.scratch.join(format!("kubectl-home-{}", self.next()));
                std::fs::create_dir_all(&home)?;
                let script = r#"for n in "$@"; do "$KUBECTL" --kubeconfig "$KC" -n "$NS" patch managedchart "$n" --type merge -p '{"spec":{"paused":false}}' $KFLAGS >/dev/null || exit 1; done"#;
                Cmd::new("/bin/bash", &["-c", script, "kubectl-loop"])
                    .args(names)
                    .env("HOME", &home)
                    .env("KUBECTL", &self.env.kubectl)
                    .env("KC", &kc)
                    .env("NS", ns)
                    .env("KFLAGS", if log_requests { "-v=6" } else { "" })
            }
            Peer::GetPut | Peer::MergePatch | Peer::ListCas | Peer::ListCasNodelay => {
                let kind = match peer {
                    Peer::GetPut => "get-put",
                    Peer::MergePatch => "merge-patch",
                    _ => "list-cas",
                };
                let c = Cmd::new(&self.env.bench_exe, &["peer", kind, "--kubeconfig", &kc, "--ledger", &ledger])
                    .args(&["--concurrency", &DEFAULT_CONCURRENCY.to_string()]);
                if peer == Peer::ListCasNodelay { c.args(&["--nodelay"]) } else { c }
            }
            Peer::PauseLedger1 | Peer::PauseLedger => {
                let c = if peer == Peer::PauseLedger1 { 1 } else { DEFAULT_CONCURRENCY };
                Cmd::new(&self.env.pause_ledger, &["restore", "--ledger", &ledger, "-o", "json"])
                    .args(&["--concurrency", &c.to_string()])
                    .args(&self.env.pl_extra)
                    .env("PAUSE_LEDGER_KUBECONFIG", &kc)
                    .env("PAUSE_LEDGER_PROGRESS", "never")
            }
        })
    }

    /// A fresh namespace with `n` upgrade-paused charts and their ledger.
    async fn seed(&self, client: &kube::Client, peer: Peer, n: usize) -> Result<(String, Vec<String>)> {
        let ns = self.cp.namespace(&format!("s{n}-{}", peer.key())).await?;
        let names = seed::names("mc", n, None);
        seed::paused_charts(client, &ns, &names).await?;
        seed::write_ledger(client, &ns, LEDGER, &names).await?;
        Ok((ns, names))
    }

    async fn one(
        &self,
        peer: Peer,
        n: usize,
        rep: usize,
        kubeconfig: &Path,
        proxy: Option<&FaultProxy>,
        count: bool,
    ) -> Result<SpeedRun> {
        let client = self.cp.admin_client()?;
        let (ns, names) = self.seed(&client, peer, n).await?;
        let cmd = self.command(peer, kubeconfig, &ns, &names, count)?;
        // Let the seeding's writes settle (etcd compaction, watch fan-out) before timing.
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Some(p) = proxy {
            p.reset_stats();
        }
        let load1 = timing::loadavg().map_or(f64::NAN, |l| l[0]);
        let fin = run::measured(&cmd, &self.env.scratch, &self.cp.pids(), Duration::from_secs(1800)).await?;
        let requests_proxy = proxy.map(|p| p.stats().requests);
        let requests_self = match peer {
            // -v=6 logs one line per request: "GET https://... 200 OK in 2 milliseconds".
            Peer::Kubectl if count => Some(kubectl_requests(&fin.stderr)),
            Peer::Kubectl => None,
            _ => {
                serde_json::from_str::<Value>(&fin.stdout).ok().and_then(|v| v.get("requests").and_then(Value::as_u64))
            }
        };
        let left = seed::count_paused(&client, &ns).await?;
        let correct = fin.code == 0 && left == 0;
        if !correct {
            tracing::warn!(peer = peer.key(), n, code = fin.code, left, stderr = %tail(&fin.stderr), "restore incomplete");
        }
        seed::delete_charts(&client, &ns).await?;
        let ru = fin.rusage.unwrap_or_default();
        let r = SpeedRun {
            peer,
            n,
            rep,
            via_proxy: count,
            code: fin.code,
            wall_ms: fin.wall_ms,
            cpu_ms: ru.cpu_ms(),
            max_rss_kib: ru.max_rss_kib,
            requests_self,
            requests_proxy,
            apiserver_ms: fin.server.apiserver_ms,
            etcd_ms: fin.server.etcd_ms,
            correct,
            load1,
        };
        eprintln!(
            "  {:<22} N={:<5} rep {} {}: {:>9.1} ms, cpu {:>7.1} ms, rss {:>6} KiB, requests {:?}/{:?}, apiserver {:.0} ms{}",
            peer.key(),
            n,
            rep,
            if r.via_proxy { "count " } else { "timing" },
            r.wall_ms,
            r.cpu_ms,
            r.max_rss_kib,
            r.requests_self,
            r.requests_proxy,
            r.apiserver_ms,
            if correct { "" } else { "  INCORRECT" }
        );
        Ok(r)
    }

    async fn startup(&self, peer: Peer, rep: usize, relay: &Relay, kubeconfig: &Path) -> Result<StartupRun> {
        let client = self.cp.admin_client()?;
        let (ns, names) = self.seed(&client, peer, 1).await?;
        let cmd = self.command(peer, kubeconfig, &ns, &names, false)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        relay.reset();
        let running = run::spawn(&cmd)?;
        let start = running.started();
        let fin = run::wait(running, Duration::from_secs(120)).await?;
        let seen = relay.seen();
        if fin.code != 0 {
            bail!("{} failed at start-up measurement: {}", peer.key(), tail(&fin.stderr));
        }
        seed::delete_charts(&client, &ns).await?;
        let ms = |t: Option<Instant>| t.map(|t| t.saturating_duration_since(start).as_secs_f64() * 1000.0);
        Ok(StartupRun {
            peer,
            rep,
            first_byte_ms: ms(seen.first_byte),
            first_request_ms: ms(seen.first_request),
            wall_ms: fin.wall_ms,
        })
    }
}

/// Requests in kubectl's -v=6 log.
pub fn kubectl_requests(stderr: &str) -> u64 {
    stderr
        .lines()
        .filter(|l| l.contains("round_trippers.go") && (l.contains(" milliseconds") || l.contains("milliseconds=")))
        .count() as u64
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// A kubeconfig for the admin pointing at `server` (TLS, the control plane's CA).
pub fn write_kubeconfig(cp: &ControlPlane, dir: &Path, name: &str, server: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {}\ncontexts:\n- name: bench\n  context:\n    cluster: bench\n    user: admin\ncurrent-context: bench\n",
        cp.ca_path().display(),
        cp.admin_token()
    );
    std::fs::write(&path, text)?;
    Ok(path)
}

fn sizes(env: &Env) -> Result<Sizes> {
    let len = |p: &Path| std::fs::metadata(p).map(|m| m.len());
    let stripped = env.scratch.join("pause-ledger.stripped");
    let stripped_ok = std::process::Command::new("strip")
        .args(["--strip-all", "-o"])
        .arg(&stripped)
        .arg(&env.pause_ledger)
        .status()
        .is_ok_and(|s| s.success());
    Ok(Sizes {
        pause_ledger_bytes: len(&env.pause_ledger)?,
        pause_ledger_stripped_bytes: if stripped_ok { len(&stripped).ok() } else { None },
        kubectl_bytes: len(&env.kubectl).unwrap_or(0),
        bench_bytes: len(&env.bench_exe)?,
    })
}

/// Run the speed suite.
pub async fn run(cp: &ControlPlane, env: &Env, cfg: &SpeedConfig) -> Result<SpeedResults> {
    let ctx = Ctx { cp, env, counter: Default::default() };
    let direct = cp.kubeconfig_path().to_path_buf();
    let mut runs = Vec::new();
    eprintln!("speed: timing runs (direct to the API server)");
    for &(n, reps) in &cfg.sizes {
        let kubectl_reps = cfg.kubectl_sizes.iter().find(|(k, _)| *k == n).map_or(0, |(_, r)| *r);
        for rep in 0..reps.max(kubectl_reps) {
            let mut peers: Vec<Peer> = Peer::ALL
                .into_iter()
                .filter(|p| if *p == Peer::Kubectl { rep < kubectl_reps } else { rep < reps })
                .collect();
            let len = peers.len();
            peers.rotate_left(rep % len.max(1));
            for peer in peers {
                runs.push(ctx.one(peer, n, rep, &direct, None, false).await?);
            }
        }
    }
    eprintln!(
        "speed: request counts through a zero-fault proxy (kubectl: its -v=6 log; it sends no token over plain HTTP)"
    );
    let proxy = FaultProxy::start(cp.server_url(), cp.ca_pem(), Faults::default())?;
    let via = proxy.write_kubeconfig(&env.scratch, cp.admin_token())?;
    for &n in &cfg.count_sizes {
        for peer in Peer::ALL {
            if peer == Peer::Kubectl && n > cfg.kubectl_count_max {
                continue;
            }
            let r = if peer == Peer::Kubectl {
                ctx.one(peer, n, 0, &direct, None, true).await?
            } else {
                ctx.one(peer, n, 0, &via, Some(&proxy), true).await?
            };
            runs.push(r);
        }
    }
    drop(proxy);
    eprintln!("speed: start-up (spawn → first request) through a timestamping TCP relay");
    let upstream: SocketAddr = cp.server_url().trim_start_matches("https://").parse().context("server URL")?;
    let relay = Relay::start(upstream).await?;
    let kc = write_kubeconfig(cp, &env.scratch, "relay.kubeconfig", &format!("https://{}", relay.addr()))?;
    let mut startup = Vec::new();
    for rep in 0..cfg.startup_reps {
        for peer in Peer::ALL {
            let s = ctx.startup(peer, rep, &relay, &kc).await?;
            eprintln!(
                "  {:<22} rep {rep}: first byte {:?} ms, first request {:?} ms",
                peer.key(),
                s.first_byte_ms.map(|x| (x * 10.0).round() / 10.0),
                s.first_request_ms.map(|x| (x * 10.0).round() / 10.0)
            );
            startup.push(s);
        }
    }
    Ok(SpeedResults { config: cfg.clone(), runs, startup, sizes: sizes(env)? })
}
