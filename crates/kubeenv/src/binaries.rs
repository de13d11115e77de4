//! Locates the pinned kube-apiserver, etcd and helm binaries, and which versions of them a run
//! uses.
//!
//! Two Kubernetes versions and two Helm majors are pinned side by side (`tools/kubeenv/<name>/`),
//! chosen per process by [`KUBERNETES_ENV`] and [`HELM_ENV`]; the defaults are the oldest pinned
//! (what Harvester-era clusters run). `KUBEENV_BIN_DIR` points at prebuilt binaries; otherwise
//! `tools/kubeenv/build.sh <name>...` builds (or finds in its cache) the ones asked for and
//! prints their folder.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

use crate::Error;

/// Env var naming a folder with prebuilt binaries, named as build.sh names them
/// (`kube-apiserver-1.34`, `etcd`, `helm-3`, ...; the defaults also as `kube-apiserver`, `helm`).
pub const BIN_DIR_ENV: &str = "KUBEENV_BIN_DIR";
/// Env var choosing the control plane's Kubernetes version: `1.34` (default) or `1.37`.
pub const KUBERNETES_ENV: &str = "KUBEENV_KUBERNETES";
/// Env var choosing the Helm major the tests run: `3` (default) or `4`.
pub const HELM_ENV: &str = "KUBEENV_HELM";

/// A pinned Kubernetes version (kube-apiserver); the patch release is pinned in
/// `tools/kubeenv/kube-apiserver-<minor>/go.mod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kubernetes {
    /// v1.34.x: the oldest tested, what Harvester-era clusters run; the default.
    V1_34,
    /// v1.37.x: the newest tested.
    V1_37,
}

impl Kubernetes {
    /// Every pinned version, oldest first.
    pub const ALL: [Kubernetes; 2] = [Kubernetes::V1_34, Kubernetes::V1_37];

    /// `1.34`.
    pub fn minor(self) -> &'static str {
        match self {
            Kubernetes::V1_34 => "1.34",
            Kubernetes::V1_37 => "1.37",
        }
    }

    /// The binary's name in the bin folder: `kube-apiserver-1.34`.
    pub fn binary_name(self) -> &'static str {
        match self {
            Kubernetes::V1_34 => "kube-apiserver-1.34",
            Kubernetes::V1_37 => "kube-apiserver-1.37",
        }
    }

    /// Parses `1.34` (or `v1.34`).
    pub fn parse(text: &str) -> Result<Kubernetes, Error> {
        let wanted = text.trim().trim_start_matches('v');
        Kubernetes::ALL.into_iter().find(|k| k.minor() == wanted).ok_or_else(|| {
            let known: Vec<&str> = Kubernetes::ALL.iter().map(|k| k.minor()).collect();
            Error::Binaries(format!("{KUBERNETES_ENV}={text}: not a pinned Kubernetes version ({})", known.join(", ")))
        })
    }

    /// The version [`KUBERNETES_ENV`] selects; the oldest when unset or empty.
    pub fn from_env() -> Result<Kubernetes, Error> {
        match std::env::var(KUBERNETES_ENV) {
            Ok(v) if !v.trim().is_empty() => Kubernetes::parse(&v),
            _ => Ok(Kubernetes::default()),
        }
    }
}

impl Default for Kubernetes {
    /// The oldest pinned version.
    fn default() -> Self {
        Kubernetes::V1_34
    }
}

impl fmt::Display for Kubernetes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.minor())
    }
}

/// A pinned Helm major; the release is pinned in `tools/kubeenv/helm-<major>/go.mod`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Helm {
    /// Helm 3 (v3.19.x); the default.
    V3,
    /// Helm 4 (v4.3.x).
    V4,
}

impl Helm {
    /// Every pinned major, oldest first.
    pub const ALL: [Helm; 2] = [Helm::V3, Helm::V4];

    /// 3 or 4.
    pub fn major(self) -> u8 {
        match self {
            Helm::V3 => 3,
            Helm::V4 => 4,
        }
    }

    /// The binary's name in the bin folder: `helm-3`.
    pub fn binary_name(self) -> &'static str {
        match self {
            Helm::V3 => "helm-3",
            Helm::V4 => "helm-4",
        }
    }

    /// Parses `3` or `4` (also `v3`, `v4`).
    pub fn parse(text: &str) -> Result<Helm, Error> {
        let wanted = text.trim().trim_start_matches('v');
        Helm::ALL
            .into_iter()
            .find(|h| h.major().to_string() == wanted)
            .ok_or_else(|| Error::Binaries(format!("{HELM_ENV}={text}: not a pinned Helm major (3, 4)")))
    }

    /// The major [`HELM_ENV`] selects; Helm 3 when unset or empty.
    pub fn from_env() -> Result<Helm, Error> {
        match std::env::var(HELM_ENV) {
            Ok(v) if !v.trim().is_empty() => Helm::parse(&v),
            _ => Ok(Helm::default()),
        }
    }
}

impl Default for Helm {
    /// Helm 3.
    fn default() -> Self {
        Helm::V3
    }
}

impl fmt::Display for Helm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Helm {}", self.major())
    }
}

/// The build script, relative to this crate's sources (tests and the demo run from a clone).
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/kubeenv/build.sh")
}

/// `kube-apiserver` of Kubernetes `version`, built on first use.
pub fn kube_apiserver(version: Kubernetes) -> Result<PathBuf, Error> {
    Ok(locate(&[version.binary_name()])?.remove(0))
}

/// `etcd`, built on first use.
pub fn etcd() -> Result<PathBuf, Error> {
    Ok(locate(&["etcd"])?.remove(0))
}

/// `helm` of major `helm`, built on first use.
pub fn helm(helm: Helm) -> Result<PathBuf, Error> {
    Ok(locate(&[helm.binary_name()])?.remove(0))
}

/// `kube-apiserver` of `version` and `etcd` (one build-script run when both are missing).
pub(crate) fn control_plane(version: Kubernetes) -> Result<(PathBuf, PathBuf), Error> {
    let mut paths = locate(&[version.binary_name(), "etcd"])?;
    let etcd = paths.remove(1);
    Ok((paths.remove(0), etcd))
}

/// The plain name a default binary also has in the bin folder (for scripts).
fn alias(name: &str) -> Option<&'static str> {
    if name == Kubernetes::default().binary_name() {
        Some("kube-apiserver")
    } else if name == Helm::default().binary_name() {
        Some("helm")
    } else {
        None
    }
}

/// Paths of `names`, in order; each resolved once per process (errors too, as text).
fn locate(names: &[&'static str]) -> Result<Vec<PathBuf>, Error> {
    static FOUND: OnceLock<Mutex<BTreeMap<&'static str, Result<PathBuf, String>>>> = OnceLock::new();
    // Held across a build (minutes): callers wanting a binary would wait for it anyway.
    let mut found = FOUND.get_or_init(Mutex::default).lock().unwrap_or_else(|e| e.into_inner());
    let missing: Vec<&'static str> = names.iter().copied().filter(|n| !found.contains_key(n)).collect();
    if !missing.is_empty() {
        match resolve_dir(&missing) {
            Ok(dir) => {
                for name in missing {
                    found.insert(name, find_in(&dir, name).map_err(|e| e.to_string()));
                }
            }
            Err(e) => {
                for name in missing {
                    found.insert(name, Err(e.to_string()));
                }
            }
        }
    }
    names.iter().map(|n| found[n].clone().map_err(Error::Binaries)).collect()
}

fn find_in(dir: &Path, name: &str) -> Result<PathBuf, Error> {
    std::iter::once(name)
        .chain(alias(name))
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Binaries(format!("{name} not found in {}", dir.display())))
}

fn resolve_dir(names: &[&str]) -> Result<PathBuf, Error> {
    match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) if !dir.is_empty() => Ok(PathBuf::from(dir)),
        _ => run_build_script(names),
    }
}

fn run_build_script(names: &[&str]) -> Result<PathBuf, Error> {
    let script = build_script();
    tracing::info!(script = %script.display(), ?names, "locating binaries");
    // stderr is inherited so a cold build (minutes) shows its progress instead of looking hung.
    let out = Command::new("bash")
        .arg(&script)
        .args(names)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| Error::io(format!("running {}", script.display()), e))?;
    if !out.status.success() {
        return Err(Error::Binaries(format!("{} {} failed with {}", script.display(), names.join(" "), out.status)));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().rev().find(|l| !l.trim().is_empty());
    match dir {
        Some(dir) => Ok(PathBuf::from(dir.trim())),
        None => Err(Error::Binaries(format!("{} printed no bin folder", script.display()))),
    }
}

/// Checks that the API server's `gitVersion` (`v1.34.4`) belongs to `version`, so a mislabelled
/// prebuilt binary cannot make a run claim a version it did not test.
pub(crate) fn check_server_version(version: Kubernetes, git_version: &str) -> Result<(), Error> {
    let minor = git_version.trim_start_matches('v').splitn(3, '.').take(2).collect::<Vec<_>>().join(".");
    if minor == version.minor() {
        Ok(())
    } else {
        Err(Error::Binaries(format!(
            "{} reports {git_version}, not Kubernetes {}",
            version.binary_name(),
            version.minor()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_their_names() {
        assert_eq!(Kubernetes::parse("1.34").unwrap(), Kubernetes::V1_34);
        assert_eq!(Kubernetes::parse(" v1.37 ").unwrap(), Kubernetes::V1_37);
        let err = Kubernetes::parse("1.35").unwrap_err().to_string();
        assert!(err.contains("1.34, 1.37") && err.contains(KUBERNETES_ENV), "{err}");
        assert_eq!(Helm::parse("3").unwrap(), Helm::V3);
        assert_eq!(Helm::parse("v4").unwrap(), Helm::V4);
        assert!(Helm::parse("2").unwrap_err().to_string().contains(HELM_ENV));
    }

    #[test]
    fn defaults_are_the_oldest_pinned() {
        assert_eq!(Kubernetes::default(), Kubernetes::ALL[0]);
        assert_eq!(Helm::default(), Helm::ALL[0]);
        assert_eq!(alias("kube-apiserver-1.34"), Some("kube-apiserver"));
        assert_eq!(alias("helm-3"), Some("helm"));
        assert_eq!(alias("kube-apiserver-1.37"), None);
        assert_eq!(alias("helm-4"), None);
    }

    #[test]
    fn names_match_the_build_script() {
        let script = std::fs::read_to_string(build_script()).unwrap();
        let all = script.lines().find_map(|l| l.strip_prefix("all=(")).unwrap().trim_end_matches(')');
        let mut expected: Vec<&str> = Kubernetes::ALL.iter().map(|k| k.binary_name()).collect();
        expected.push("etcd");
        expected.extend(Helm::ALL.iter().map(|h| h.binary_name()));
        let mut listed: Vec<&str> = all.split_whitespace().collect();
        listed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(listed, expected);
        let default_of = |var: &str| script.lines().find_map(|l| l.strip_prefix(&format!("{var}="))).unwrap();
        assert_eq!(default_of("default_apiserver"), Kubernetes::default().binary_name());
        assert_eq!(default_of("default_helm"), Helm::default().binary_name());
        for name in expected {
            let dir = build_script().parent().unwrap().join(name);
            assert!(dir.join("go.mod").is_file(), "{} has no go.mod", dir.display());
        }
    }

    #[test]
    fn server_version_must_match_the_selected_one() {
        check_server_version(Kubernetes::V1_34, "v1.34.4").unwrap();
        check_server_version(Kubernetes::V1_37, "v1.37.2").unwrap();
        let err = check_server_version(Kubernetes::V1_37, "v1.34.4").unwrap_err().to_string();
        assert!(err.contains("kube-apiserver-1.37 reports v1.34.4"), "{err}");
        assert!(check_server_version(Kubernetes::V1_34, "v1.3").is_err());
    }
}
