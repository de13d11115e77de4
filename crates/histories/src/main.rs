//! `pause-ledger-histories`: the randomized-history checker's command line.
//!
//! ```text
//! pause-ledger-histories [--pause-ledger BIN] [--jobs N] [--keep DIR] [--save-all] COMMAND
//!   run --seed N | --seeds A..B [--shrink] [--tries K]   run histories, print violations
//!   show --seed N | FILE                                 print a history, run nothing
//!   replay FILE [--shrink] [--tries K]                   run a saved history (JSON)
//!   shrink --seed N | FILE [--rule R] [--tries K]        shrink a failing history (for rule R)
//!   bench --count N [--first-seed S] --out DIR           run N histories, write results
//! ```
//!
//! Each command starts its own control plane (etcd + kube-apiserver). Failing histories are
//! saved (history, verdict and trace, JSON) under `--keep` (default `target/histories`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use pause_ledger_histories::execute::{Env, Trace};
use pause_ledger_histories::generate::generate;
use pause_ledger_histories::model::History;
use pause_ledger_histories::runner::{self, Outcome};
use pause_ledger_histories::summary::Summary;

struct Opts {
    pause_ledger: PathBuf,
    jobs: usize,
    keep: PathBuf,
    /// Save every history's trace, not only failing ones.
    save_all: bool,
    /// Extra control planes for the histories that stop the API server (0: they run alone).
    outage_planes: usize,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HISTORIES_LOG")
                .unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut opts = Opts {
        pause_ledger: default_binary(),
        jobs: 1,
        keep: PathBuf::from("target/histories"),
        save_all: false,
        outage_planes: 0,
    };
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--pause-ledger" => opts.pause_ledger = PathBuf::from(it.next().context("--pause-ledger BIN")?),
            "--jobs" => opts.jobs = it.next().context("--jobs N")?.parse()?,
            "--keep" => opts.keep = PathBuf::from(it.next().context("--keep DIR")?),
            "--save-all" => opts.save_all = true,
            "--outage-planes" => opts.outage_planes = it.next().context("--outage-planes N")?.parse()?,
            _ => rest.push(a),
        }
    }
    let Some(cmd) = rest.first().cloned() else { bail!(usage()) };
    let flag = |name: &str| rest.iter().position(|a| a == name).and_then(|i| rest.get(i + 1)).cloned();
    let has = |name: &str| rest.iter().any(|a| a == name);
    let tries: usize = flag("--tries").map(|t| t.parse()).transpose()?.unwrap_or(2);
    if cmd == "show" {
        let h = match flag("--seed") {
            Some(s) => generate(s.parse()?),
            None => load(Path::new(rest.get(1).context("show --seed N | FILE")?))?,
        };
        // A closed pipe (`| head`) ends the output, not the program with a panic.
        let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("seed {}:\n{h}", h.seed).as_bytes());
        return Ok(());
    }
    opts.pause_ledger = std::fs::canonicalize(&opts.pause_ledger).with_context(|| {
        format!("the pause-ledger binary {} (build it, or pass --pause-ledger)", opts.pause_ledger.display())
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    eprintln!("histories: starting a control plane (etcd + kube-apiserver)");
    let cp = Arc::new(kubeenv::ControlPlane::start()?);
    let scratch = std::env::temp_dir().join(format!("pause-ledger-histories-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let env = Env::new(cp.clone(), opts.pause_ledger.clone(), scratch.clone());
    let mut outage_envs = Vec::new();
    for i in 0..opts.outage_planes {
        eprintln!("histories: starting control plane {} of {} for outage histories", i + 1, opts.outage_planes);
        let cp = Arc::new(kubeenv::ControlPlane::start()?);
        outage_envs.push(Env::new(cp, opts.pause_ledger.clone(), scratch.clone()));
    }
    let result = rt.block_on(async {
        match cmd.as_str() {
            "run" => {
                let seeds = match (flag("--seed"), flag("--seeds")) {
                    (Some(s), _) => vec![s.parse()?],
                    (None, Some(r)) => parse_range(&r)?,
                    _ => bail!("run --seed N | --seeds A..B"),
                };
                run_cmd(&env, &outage_envs, &opts, seeds, has("--shrink"), tries).await
            }
            "replay" => {
                let file = rest.get(1).context("replay FILE")?;
                let h = load(Path::new(file))?;
                let (o, t) = runner::run(&env, &h).await;
                report(&opts, &o, &t)?;
                if has("--shrink") && o.failed() {
                    shrink_and_print(&env, &opts, &h, &o, tries, flag("--rule").as_deref()).await?;
                }
                Ok(if o.failed() { 1 } else { 0 })
            }
            "shrink" => {
                let h = match flag("--seed") {
                    Some(s) => generate(s.parse()?),
                    None => load(Path::new(rest.get(1).context("shrink --seed N | FILE")?))?,
                };
                let rule = flag("--rule");
                let mut found = None;
                for _ in 0..tries.max(1) {
                    let (o, t) = runner::run(&env, &h).await;
                    report(&opts, &o, &t)?;
                    if o.failed() && rule.as_deref().is_none_or(|r| o.rules().contains(r)) {
                        found = Some(o);
                        break;
                    }
                }
                let Some(o) = found else {
                    eprintln!("histories: the history did not fail (as asked) in {tries} runs; nothing to shrink");
                    return Ok(0);
                };
                shrink_and_print(&env, &opts, &h, &o, tries, flag("--rule").as_deref()).await?;
                Ok(1)
            }
            "bench" => {
                let count: u64 = flag("--count").context("bench --count N")?.parse()?;
                let first: u64 = flag("--first-seed").map(|s| s.parse()).transpose()?.unwrap_or(1);
                let out = PathBuf::from(flag("--out").context("bench --out DIR")?);
                bench(&env, &outage_envs, &opts, first, count, &out).await
            }
            other => bail!("unknown command {other}\n{}", usage()),
        }
    });
    drop(outage_envs);
    drop(env);
    drop(cp);
    let _ = std::fs::remove_dir_all(&scratch);
    let code = result?;
    std::process::exit(code)
}

fn usage() -> &'static str {
    "usage: pause-ledger-histories [--pause-ledger BIN] [--jobs N] [--keep DIR] [--save-all] [--outage-planes N] \
     run --seed N | --seeds A..B [--shrink] [--tries K] | show --seed N | FILE | replay FILE [--shrink] | \
     shrink --seed N | FILE [--rule R] [--tries K] | bench --count N [--first-seed S] --out DIR"
}

fn default_binary() -> PathBuf {
    for p in ["target/release/pause-ledger", "target/debug/pause-ledger"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    PathBuf::from("target/debug/pause-ledger")
}

fn parse_range(r: &str) -> Result<Vec<u64>> {
    let (a, b) = r.split_once("..").context("--seeds A..B")?;
    let (a, b): (u64, u64) = (a.parse()?, b.trim_start_matches('=').parse()?);
    Ok((a..=b).collect())
}

fn load(path: &Path) -> Result<History> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    // A saved failure holds {"history": ...}; a bare history is accepted too.
    let h = v.get("history").cloned().unwrap_or(v);
    Ok(serde_json::from_value(h)?)
}

/// The one-line reproduction: `run --seed N` for a generated history, else `replay` of the
/// saved file.
fn repro(opts: &Opts, h: &History, saved: &Path) -> String {
    let what =
        if generate(h.seed) == *h { format!("run --seed {}", h.seed) } else { format!("replay {}", saved.display()) };
    format!("cargo run -q -p pause-ledger-histories -- --pause-ledger {} {what}", opts.pause_ledger.display())
}

fn save(opts: &Opts, name: &str, o: &Outcome, t: Option<&Trace>) -> Result<PathBuf> {
    std::fs::create_dir_all(&opts.keep)?;
    let path = opts.keep.join(format!("{name}.json"));
    let mut doc = serde_json::Map::new();
    doc.insert("history".into(), serde_json::to_value(&o.history)?);
    doc.insert("verdict".into(), serde_json::to_value(&o.verdict)?);
    doc.insert("errors".into(), serde_json::to_value(&o.errors)?);
    doc.insert("trace".into(), serde_json::to_value(t)?);
    std::fs::write(&path, serde_json::to_string_pretty(&doc)?)?;
    Ok(path)
}

/// One line per history; the violations, history and reproduction for a failing one.
fn report(opts: &Opts, o: &Outcome, t: &Trace) -> Result<()> {
    let h = &o.history;
    let faults: u64 = o.faults.values().sum();
    let head = format!(
        "seed {}: {} ops, {} processes, {faults} faults, {} kills, {:.1} s",
        h.seed,
        h.ops.len(),
        o.processes,
        o.kills,
        o.duration_ms / 1000.0
    );
    if !o.errors.is_empty() {
        println!("{head}: ERRORED ({})", o.errors.join("; "));
    }
    for n in &o.verdict.notes {
        println!("seed {}: note: {n}", h.seed);
    }
    if !o.failed() {
        if o.errors.is_empty() {
            println!("{head}: ok");
        }
        if opts.save_all {
            save(opts, &format!("seed-{}", h.seed), o, Some(t))?;
        }
        return Ok(());
    }
    let rules: Vec<&str> = o.rules().into_iter().collect();
    println!("{head}: VIOLATED {}", rules.join(", "));
    for v in &o.verdict.violations {
        println!("    {v}");
    }
    print!("  history:\n{h}");
    let path = save(opts, &format!("seed-{}", h.seed), o, Some(t))?;
    println!("  saved: {}", path.display());
    println!("  reproduce: {}", repro(opts, h, &path));
    Ok(())
}

async fn shrink_and_print(
    env: &Env,
    opts: &Opts,
    h: &History,
    o: &Outcome,
    tries: usize,
    only: Option<&str>,
) -> Result<()> {
    let rules: BTreeSet<&'static str> = o.rules();
    for rule in rules.into_iter().filter(|r| only.is_none_or(|o| o == *r)) {
        let target = BTreeSet::from([rule]);
        eprintln!("histories: shrinking seed {} for {rule} ({} ops, {tries} tries per candidate)", h.seed, h.ops.len());
        let min = runner::shrink(env, h, &target, tries, |c| eprintln!("  -> {} ops", c.ops.len())).await;
        println!("seed {}: minimal history for {rule} ({} ops):\n{min}", h.seed, min.ops.len());
        let (mo, _) = runner::run(env, &min).await;
        let name = format!("seed-{}-min-{}", h.seed, rule.replace('/', "-"));
        let path = save(opts, &name, &mo, None)?;
        println!("  saved: {}", path.display());
        println!("  reproduce: {}", repro(opts, &min, &path));
        for v in mo.verdict.violations.iter().filter(|v| v.rule == rule) {
            println!("    {v}");
        }
    }
    Ok(())
}

async fn run_cmd(
    env: &Env,
    outage_envs: &[Env],
    opts: &Opts,
    seeds: Vec<u64>,
    shrink: bool,
    tries: usize,
) -> Result<i32> {
    let started = Instant::now();
    let mut summary = Summary { binary: opts.pause_ledger.display().to_string(), ..Summary::default() };
    let mut failed: Vec<Outcome> = Vec::new();
    let mut problems = Vec::new();
    let outcomes = runner::run_seeds(env, outage_envs, seeds, opts.jobs, |o, t| {
        if let Err(e) = report(opts, o, t) {
            problems.push(e.to_string());
        }
    })
    .await;
    for o in &outcomes {
        summary.add(o);
        if o.failed() {
            failed.push(o.clone());
        }
    }
    summary.finish(started.elapsed().as_secs_f64(), opts.jobs);
    eprintln!(
        "histories: {} run, {} violated, {} errored, {:.0} s ({:.1}/min)",
        summary.histories, summary.failed, summary.errored, summary.wall_s, summary.per_minute
    );
    if shrink {
        failed.sort_by_key(|o| o.history.seed);
        for o in &failed {
            shrink_and_print(env, opts, &o.history, o, tries, None).await?;
        }
    }
    for p in problems {
        eprintln!("histories: {p}");
    }
    Ok(if summary.failed > 0 { 1 } else { 0 })
}

async fn bench(env: &Env, outage_envs: &[Env], opts: &Opts, first: u64, count: u64, out: &Path) -> Result<i32> {
    std::fs::create_dir_all(out)?;
    let started = Instant::now();
    let last = first + count.saturating_sub(1);
    let mut summary = Summary {
        binary: opts.pause_ledger.display().to_string(),
        seeds: format!("{first}..={last}"),
        ..Summary::default()
    };
    let mut lines = Vec::new();
    let outcomes = runner::run_seeds(env, outage_envs, (first..=last).collect(), opts.jobs, |o, _| {
        let rules: Vec<&str> = o.rules().into_iter().collect();
        let line = serde_json::json!({"seed": o.history.seed, "ops": o.history.ops.len(), "ms": o.duration_ms,
            "faults": &o.faults, "kills": o.kills, "rules": rules, "errors": &o.errors});
        lines.push(line.to_string());
        if o.history.seed % 50 == 0 {
            eprintln!("histories: seed {} done ({:.0} s)", o.history.seed, started.elapsed().as_secs_f64());
        }
    })
    .await;
    for o in &outcomes {
        summary.add(o);
    }
    summary.finish(started.elapsed().as_secs_f64(), opts.jobs);
    std::fs::write(out.join("histories.json"), serde_json::to_string_pretty(&summary)?)?;
    std::fs::write(out.join("histories.jsonl"), lines.join("\n") + "\n")?;
    let md = format!("# Randomized histories\n\n{}", summary.markdown());
    std::fs::write(out.join("histories.md"), &md)?;
    print!("{md}");
    Ok(if summary.failed > 0 { 1 } else { 0 })
}
