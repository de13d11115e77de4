//! pause-ledger benchmarks and fault campaign (see BENCHMARKS.md). Run the whole suite with
//! `tools/bench` (or `tools/bench --quick`); this binary is what it runs:
//!
//! ```text
//! pause-ledger-bench suite [--quick] [--out DIR] [--only speed|faults] [--scenario TEXT] [--logs DIR [--log-level F]] --pause-ledger BIN
//! pause-ledger-bench peer get-put|merge-patch|list-cas --kubeconfig F --ledger NS/NAME [--concurrency K] [--nodelay]
//! pause-ledger-bench rusage OUT PROGRAM ARGS...   (CPU and peak RSS of PROGRAM, as JSON in OUT)
//! pause-ledger-bench seed KUBECONFIG NAMESPACE N    (N upgrade-paused charts + ledger, for profiling)
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use pause_ledger_bench::results::{self, All, Machine};
use pause_ledger_bench::{Env, campaign, peers, speed, timing};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("peer") => {
            let a = peers::parse_args(&args[1..])?;
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let out = rt.block_on(peers::run(&a))?;
            println!("{}", serde_json::to_string(&out)?);
            if out.failed > 0 {
                std::process::exit(3);
            }
            Ok(())
        }
        Some("suite") => suite(&args[1..]),
        Some("seed") if args.len() == 4 => {
            // For profiling by hand: `seed KUBECONFIG NAMESPACE N` creates the namespace, N
            // upgrade-paused charts and ledger NAMESPACE/pause-ledger.
            let n: usize = args[3].parse()?;
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(seed_by_hand(&args[1], &args[2], n))
        }
        Some("rusage") if args.len() >= 3 => {
            let code = timing::wrap(std::path::Path::new(&args[1]), &args[2], &args[3..])?;
            std::process::exit(code)
        }
        _ => bail!(
            "usage: pause-ledger-bench suite [--quick] [--out DIR] [--only speed|faults] [--scenario TEXT] [--logs DIR [--log-level F]] --pause-ledger BIN | peer ... | rusage OUT PROGRAM ARGS... | seed KUBECONFIG NAMESPACE N"
        ),
    }
}

fn suite(args: &[String]) -> Result<()> {
    let (mut quick, mut out, mut only, mut pl) = (false, None, None, None);
    // --scenario: fault-campaign scenarios whose "group name" contains TEXT; --logs: keep
    // pause-ledger's stderr of every campaign run there, as JSON lines (--log-level: its filter).
    let (mut scenario, mut logs, mut log_level) = (None, None, None);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = Some(PathBuf::from(it.next().context("--out DIR")?)),
            "--only" => only = Some(it.next().context("--only speed|faults")?.clone()),
            "--pause-ledger" => pl = Some(PathBuf::from(it.next().context("--pause-ledger BIN")?)),
            "--scenario" => scenario = Some(it.next().context("--scenario TEXT")?.clone()),
            "--logs" => logs = Some(PathBuf::from(it.next().context("--logs DIR")?)),
            "--log-level" => log_level = Some(it.next().context("--log-level FILTER")?.clone()),
            other => bail!("unknown argument {other}"),
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BENCH_LOG").unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let out = out.unwrap_or_else(campaign::default_out);
    let scratch = std::env::temp_dir().join(format!("pause-ledger-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let pause_ledger = std::fs::canonicalize(pl.context("--pause-ledger BIN is required")?)?;
    let env = Env {
        pl_extra: pause_ledger_bench::pause_ledger_flags(&pause_ledger),
        logs,
        log_level,
        pause_ledger,
        bench_exe: std::env::current_exe()?,
        kubectl: PathBuf::from(std::env::var("KUBECTL").unwrap_or_else(|_| "/usr/bin/kubectl".into())),
        scratch: scratch.clone(),
        quick,
    };
    let mut machine = Machine::probe();
    machine.quick = quick;
    machine.pause_ledger_flags = env.pl_extra.join(" ");
    let started = Instant::now();
    eprintln!("bench: starting a dedicated control plane (etcd + kube-apiserver)");
    let cp = kubeenv::ControlPlane::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let result = rt.block_on(async {
        machine.apiserver = apiserver_version(&cp).await.unwrap_or_default();
        machine.kubectl = kubectl_version(&env);
        let speed = match only.as_deref() {
            None | Some("speed") => {
                let cfg = if quick { speed::SpeedConfig::quick() } else { speed::SpeedConfig::full() };
                Some(speed::run(&cp, &env, &cfg).await?)
            }
            _ => None,
        };
        let campaign = match only.as_deref() {
            None | Some("faults") => {
                let mut cfg = if quick { campaign::CampaignConfig::quick() } else { campaign::CampaignConfig::full() };
                cfg.scenario = scenario.clone();
                Some(campaign::run(&cp, &env, &cfg).await?)
            }
            _ => None,
        };
        anyhow::Ok((speed, campaign))
    });
    drop(cp);
    let (speed, campaign) = result?;
    machine.load_after = timing::loadavg();
    machine.duration_s = started.elapsed().as_secs_f64();
    let targets = speed.as_ref().map(results::targets).unwrap_or_default();
    let all = All { machine, speed, campaign, targets };
    results::write_all(&out, &all)?;
    print!("{}", results::markdown(&all));
    eprintln!("bench: results in {}", out.display());
    let _ = std::fs::remove_dir_all(&scratch);
    let c = all.campaign.as_ref();
    let bad = c.map_or(0, |c| c.scenarios.iter().map(|s| s.lost + s.wrongful + s.panics).sum::<usize>());
    if bad > 0 {
        bail!("the fault campaign lost entries, unpaused decoys or panicked ({bad})");
    }
    Ok(())
}

async fn seed_by_hand(kubeconfig: &str, ns: &str, n: usize) -> Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    use pause_ledger::api::{ClientOptions, build_client};
    let client = build_client(&ClientOptions { kubeconfig: Some(kubeconfig.into()), context: None }).await?;
    let api: kube::Api<Namespace> = kube::Api::all(client.clone());
    let mut obj = Namespace::default();
    obj.metadata.name = Some(ns.to_string());
    let _ = api.create(&Default::default(), &obj).await;
    let names = pause_ledger_bench::seed::names("mc", n, None);
    pause_ledger_bench::seed::paused_charts(&client, ns, &names).await?;
    pause_ledger_bench::seed::write_ledger(&client, ns, speed::LEDGER, &names).await?;
    eprintln!("seeded {n} paused charts and ledger {ns}/{}", speed::LEDGER);
    Ok(())
}

async fn apiserver_version(cp: &kubeenv::ControlPlane) -> Result<String> {
    let v = cp.admin_client()?.apiserver_version().await?;
    Ok(v.git_version)
}

fn kubectl_version(env: &Env) -> String {
    std::process::Command::new(&env.kubectl)
        .args(["version", "--client", "-o", "json"])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|v| v["clientVersion"]["gitVersion"].as_str().map(str::to_string))
        .unwrap_or_default()
}
