//! Resource usage of child processes. `pause-ledger-bench rusage OUT PROGRAM ARGS...` runs
//! PROGRAM, waits for it and reads getrusage(RUSAGE_CHILDREN): user and system CPU (µs
//! resolution) and peak RSS of PROGRAM and every process it waited for (a shell loop reports
//! the sum of CPU over all its children and the largest peak RSS), written as JSON to OUT.

use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What the wrapper reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Rusage {
    /// Elapsed seconds, spawn to exit, inside the wrapper.
    pub elapsed_s: f64,
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub sys_s: f64,
    /// Peak resident set size in KiB (largest process).
    pub max_rss_kib: u64,
}

impl Rusage {
    /// User + system CPU in milliseconds.
    pub fn cpu_ms(&self) -> f64 {
        (self.user_s + self.sys_s) * 1000.0
    }
}

/// Parse the wrapper's JSON.
pub fn parse(text: &str) -> Option<Rusage> {
    serde_json::from_str(text).ok()
}

/// The `rusage` subcommand: run `program args`, write its [`Rusage`] to `out`, return its
/// exit code (128 + signal when killed).
pub fn wrap(out: &Path, program: &str, args: &[String]) -> anyhow::Result<i32> {
    use nix::sys::resource::{UsageWho, getrusage};
    use std::os::unix::process::ExitStatusExt as _;
    let start = Instant::now();
    let status = std::process::Command::new(program).args(args).status()?;
    let elapsed_s = start.elapsed().as_secs_f64();
    let u = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    let r = Rusage {
        elapsed_s,
        user_s: secs(u.user_time()),
        sys_s: secs(u.system_time()),
        max_rss_kib: u.max_rss().max(0) as u64,
    };
    std::fs::write(out, serde_json::to_string(&r)?)?;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Clock ticks per second for /proc/<pid>/stat times.
fn ticks_per_second() -> f64 {
    rustix::param::clock_ticks_per_second() as f64
}

/// User + system CPU milliseconds a running process has used so far (/proc/<pid>/stat
/// fields 14 and 15); `None` when it is gone.
pub fn process_cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu_ticks(&stat).map(|t| t as f64 * 1000.0 / ticks_per_second())
}

/// utime + stime in ticks from a /proc/<pid>/stat line (the command name may hold spaces and
/// parentheses: fields are counted after the last ')').
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')' come field 3 (state) onwards: utime is field 14, stime 15 → indexes 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapper_measures_a_child() {
        let out = std::env::temp_dir().join(format!("rusage-test-{}.json", std::process::id()));
        // A child that burns some CPU and allocates ~30 MiB.
        let code =
            wrap(&out, "/bin/sh", &["-c".into(), "head -c 30000000 /dev/zero | tail -c 1 >/dev/null; exit 3".into()])
                .unwrap();
        assert_eq!(code, 3);
        let r = parse(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert!(r.max_rss_kib > 1000, "{r:?}");
        assert!(r.elapsed_s > 0.0);
        assert!((r.cpu_ms() - (r.user_s + r.sys_s) * 1000.0).abs() < 1e-9);
        let _ = std::fs::remove_file(out);
        assert!(parse("not json").is_none());
    }

    #[test]
    fn parses_proc_stat() {
        let line = "1234 (kube (api) server) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 0 0";
        assert_eq!(parse_stat_cpu_ticks(line), Some(300));
        assert_eq!(parse_stat_cpu_ticks("garbage"), None);
        let me = process_cpu_ms(std::process::id());
        assert!(me.is_some());
    }
}
