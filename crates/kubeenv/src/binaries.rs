//! Locates the pinned kube-apiserver, etcd and helm binaries.
//!
//! `KUBEENV_BIN_DIR` points at prebuilt binaries; otherwise `tools/kubeenv/build.sh` builds (or
//! finds in its cache) the pinned versions and prints their folder.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::Error;

/// Env var naming a folder with prebuilt `kube-apiserver`, `etcd` (and `helm`).
pub const BIN_DIR_ENV: &str = "KUBEENV_BIN_DIR";

/// The build script, relative to this crate's sources (tests and the demo run from a clone).
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/kubeenv/build.sh")
}

/// The folder holding the binaries; resolved once per process.
pub fn bin_dir() -> Result<PathBuf, Error> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| resolve().map_err(|e| e.to_string())).clone().map_err(Error::Binaries)
}

fn resolve() -> Result<PathBuf, Error> {
    let dir = match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => run_build_script()?,
    };
    for name in ["kube-apiserver", "etcd"] {
        if !dir.join(name).is_file() {
            return Err(Error::Binaries(format!("{name} not found in {}", dir.display())));
        }
    }
    Ok(dir)
}

fn run_build_script() -> Result<PathBuf, Error> {
    let script = build_script();
    tracing::info!(script = %script.display(), "locating control-plane binaries");
    // stderr is inherited so a cold build (minutes) shows its progress instead of looking hung.
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io(format!("running {}", script.display()), e))?;
    if !out.status.success() {
        return Err(Error::Binaries(format!("{} failed with {}", script.display(), out.status)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match dir {
        Some(dir) => Ok(PathBuf::from(dir.trim())),
        None => Err(Error::Binaries(format!("{} printed no bin folder", script.display()))),
    }
}
