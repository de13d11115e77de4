//! Running child processes: measured (wall, CPU, peak RSS via getrusage, plus the API server's
//! and etcd's CPU over the same span) or plain (for the fault campaign, where signals must
//! reach the process itself).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Serialize;

use crate::timing::{self, Rusage};

/// A command to run.
#[derive(Clone, Debug)]
pub struct Cmd {
    /// Program.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// The whole environment (the parent's is cleared).
    pub env: Vec<(String, String)>,
}

impl Cmd {
    /// A command with `PATH` set and nothing else in its environment.
    pub fn new(program: impl Into<PathBuf>, args: &[&str]) -> Self {
        Self {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into())],
        }
    }

    /// Add an environment variable.
    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Self {
        self.env.push((k.to_string(), v.as_ref().to_string_lossy().into_owned()));
        self
    }

    /// Add arguments.
    pub fn args<S: AsRef<str>>(mut self, more: &[S]) -> Self {
        self.args.extend(more.iter().map(|s| s.as_ref().to_string()));
        self
    }

    fn tokio(&self, program: &Path, pre: &[String]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(program);
        c.args(pre)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// The tokio command, not started.
    pub fn command(&self) -> tokio::process::Command {
        self.tokio(&self.program, &[])
    }
}

/// CPU used by the control plane's processes over a span.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ServerCpu {
    /// kube-apiserver, ms.
    pub apiserver_ms: f64,
    /// etcd, ms.
    pub etcd_ms: f64,
}

/// Snapshot of control-plane CPU (pids: etcd, apiserver as `ControlPlane::pids` lists them).
pub fn server_cpu(pids: &[u32]) -> ServerCpu {
    let get = |i: usize| pids.get(i).and_then(|p| timing::process_cpu_ms(*p)).unwrap_or(0.0);
    ServerCpu { etcd_ms: get(0), apiserver_ms: get(1) }
}

/// One finished child.
#[derive(Clone, Debug, Serialize)]
pub struct Finished {
    /// Exit code (-1 when killed by a signal).
    pub code: i32,
    /// Wall time from spawn to exit, as seen by the bench.
    pub wall_ms: f64,
    /// CPU and peak RSS (when run measured).
    pub rusage: Option<Rusage>,
    /// Control-plane CPU during the run.
    pub server: ServerCpu,
    /// stdout.
    #[serde(skip)]
    pub stdout: String,
    /// stderr.
    #[serde(skip)]
    pub stderr: String,
}

impl Finished {
    /// Whether the process panicked (Rust's exit code 101 or a panic message).
    pub fn panicked(&self) -> bool {
        self.code == 101 || self.stderr.contains("panicked")
    }
}

/// Run `cmd` under the `rusage` wrapper (this binary); `pids` are the control plane's (etcd,
/// apiserver) for CPU deltas.
pub async fn measured(cmd: &Cmd, scratch: &Path, pids: &[u32], limit: Duration) -> Result<Finished> {
    let out_file = scratch.join(format!("rusage-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&out_file);
    let pre = vec!["rusage".to_string(), out_file.display().to_string(), cmd.program.display().to_string()];
    let wrapper = std::env::current_exe()?;
    let before = server_cpu(pids);
    let start = Instant::now();
    let child = cmd.tokio(&wrapper, &pre).spawn().with_context(|| format!("spawning {}", cmd.program.display()))?;
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("{} ran longer than {limit:?}", cmd.program.display()))??;
    let wall_ms = start.elapsed().as_secs_f64() * 1000.0;
    let after = server_cpu(pids);
    let rusage = std::fs::read_to_string(&out_file).ok().and_then(|t| timing::parse(&t));
    Ok(Finished {
        code: out.status.code().unwrap_or(-1),
        wall_ms,
        rusage,
        server: ServerCpu {
            apiserver_ms: after.apiserver_ms - before.apiserver_ms,
            etcd_ms: after.etcd_ms - before.etcd_ms,
        },
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// Run `cmd` directly (no rusage wrapper), bounded by `limit`.
pub async fn plain(cmd: &Cmd, limit: Duration) -> Result<Finished> {
    wait(spawn(cmd)?, limit).await
}

/// A started child whose stdout and stderr are read while it runs: a child writing to a pipe
/// nobody reads blocks once 64 KiB are unread, and is then measured stalled, not working.
pub struct Running {
    /// The child (for `id`, `try_wait`).
    pub child: tokio::process::Child,
    start: Instant,
    stdout: tokio::task::JoinHandle<Vec<u8>>,
    stderr: tokio::task::JoinHandle<Vec<u8>>,
}

/// Start `cmd` (stdout/stderr piped) and read both pipes as it writes.
pub fn spawn(cmd: &Cmd) -> Result<Running> {
    let start = Instant::now();
    let mut child = cmd.command().spawn().with_context(|| format!("spawning {}", cmd.program.display()))?;
    fn read_all(pipe: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>) -> tokio::task::JoinHandle<Vec<u8>> {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = tokio::io::AsyncReadExt::read_to_end(&mut p, &mut buf).await;
            }
            buf
        })
    }
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    Ok(Running { child, start, stdout, stderr })
}

impl Running {
    /// When it was spawned.
    pub fn started(&self) -> Instant {
        self.start
    }
}

/// Wait for a started child, bounded by `limit` (then it is killed); wall time from spawn.
pub async fn wait(r: Running, limit: Duration) -> Result<Finished> {
    let Running { mut child, start, stdout, stderr } = r;
    let status = tokio::time::timeout(limit, child.wait())
        .await
        .with_context(|| format!("child ran longer than {limit:?}"))??;
    let wall_ms = start.elapsed().as_secs_f64() * 1000.0;
    let (stdout, stderr) = (stdout.await?, stderr.await?);
    Ok(Finished {
        code: status.code().unwrap_or(-1),
        wall_ms,
        rusage: None,
        server: ServerCpu::default(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

/// Send `signal` to `pid`.
pub fn signal(pid: u32, signal: rustix::process::Signal) -> Result<()> {
    let pid = rustix::process::Pid::from_raw(pid as i32).context("pid 0")?;
    rustix::process::kill_process(pid, signal).context("kill")?;
    Ok(())
}
