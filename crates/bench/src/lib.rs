//! pause-ledger's benchmarks and fault campaign, on a real local control plane (see
//! BENCHMARKS.md; run everything with `tools/bench`).

pub mod campaign;
pub mod peers;
pub mod relay;
pub mod results;
pub mod run;
pub mod seed;
pub mod speed;
pub mod stats;
pub mod timing;

/// Settings shared by the suites.
#[derive(Clone, Debug)]
pub struct Env {
    /// The release `pause-ledger` binary under test.
    pub pause_ledger: std::path::PathBuf,
    /// This binary (the peers run as `pause-ledger-bench peer ...`).
    pub bench_exe: std::path::PathBuf,
    /// `kubectl`.
    pub kubectl: std::path::PathBuf,
    /// Scratch folder (kubeconfigs, kubectl HOME, rusage output).
    pub scratch: std::path::PathBuf,
    /// Small, fast version of everything.
    pub quick: bool,
    /// Extra `pause-ledger restore` flags every run gets (see [`pause_ledger_flags`]).
    pub pl_extra: Vec<String>,
    /// Keep the fault campaign's pause-ledger logs (stderr) here (`--logs DIR`).
    pub logs: Option<std::path::PathBuf>,
    /// pause-ledger's `--log-level` in the campaign when its logs are kept (`--log-level F`).
    pub log_level: Option<String>,
}

/// Flags for `pause-ledger restore` in the benchmarks: its defaults, except that the Fleet
/// propagation check is off when the binary has it (there is no Rancher here to unpause the
/// Bundles, so every chart would wait out the window and end not-propagated).
pub fn pause_ledger_flags(bin: &std::path::Path) -> Vec<String> {
    let help = std::process::Command::new(bin)
        .args(["restore", "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut extra = Vec::new();
    if help.contains("--propagation-window") {
        extra.extend(["--propagation-window".to_string(), "0s".to_string()]);
    }
    extra
}
