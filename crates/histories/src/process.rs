//! Running the real `pause-ledger` binary as a child: stdout kept, stderr kept line by line with
//! the time each line arrived (rescue's listing is judged by it), killed at a chosen moment,
//! and never left running past a hard limit.

use std::os::unix::process::ExitStatusExt as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use crate::model::{Kill, Signal};

/// A command line.
#[derive(Clone, Debug, Serialize)]
pub struct Cmd {
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Its environment (the parent's is cleared).
    pub env: Vec<(String, String)>,
}

/// How a child ended.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Exited {
    /// Exit code (`None`: ended by a signal).
    pub code: Option<i32>,
    /// The signal that ended it.
    pub signal: Option<i32>,
    /// Spawn, ms since the history started.
    pub spawned_ms: f64,
    /// Exit, ms since the history started.
    pub exited_ms: f64,
    /// Wall time from spawn to exit, ms.
    pub wall_ms: f64,
    /// The kill we sent, and when (ms since the history started), if it was still running.
    pub killed: Option<(Signal, f64)>,
    /// Still running at the hard limit: SIGKILLed by the executor.
    pub hard_killed: bool,
    /// stdout.
    pub stdout: String,
    /// stderr lines with their arrival (ms since the history started).
    pub stderr: Vec<(f64, String)>,
    /// Could not be started at all.
    pub spawn_error: Option<String>,
}

impl Exited {
    /// The whole stderr.
    pub fn stderr_text(&self) -> String {
        self.stderr.iter().map(|(_, l)| l.as_str()).collect::<Vec<_>>().join("\n")
    }
}

fn ms(t0: Instant) -> f64 {
    t0.elapsed().as_secs_f64() * 1000.0
}

fn send(pid: u32, signal: Signal) {
    let Some(pid) = rustix::process::Pid::from_raw(pid as i32) else { return };
    let sig = match signal {
        Signal::Kill => rustix::process::Signal::KILL,
        Signal::Term => rustix::process::Signal::TERM,
    };
    // The child is not reaped yet (we are still waiting on it), so the pid is still ours.
    let _ = rustix::process::kill_process(pid, sig);
}

/// Run `cmd` to its end: `kill` (from spawn) if still running then, SIGKILL at `hard_limit`.
pub async fn run(cmd: &Cmd, t0: Instant, kill: Option<Kill>, hard_limit: Duration) -> Exited {
    let started = Instant::now();
    let spawned_ms = ms(t0);
    let mut c = tokio::process::Command::new(&cmd.program);
    c.args(&cmd.args)
        .env_clear()
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match c.spawn() {
        Ok(ch) => ch,
        Err(e) => {
            return Exited { spawned_ms, exited_ms: spawned_ms, spawn_error: Some(e.to_string()), ..Exited::default() };
        }
    };
    let pid = child.id().unwrap_or(0);
    let out = child.stdout.take();
    let err = child.stderr.take();
    let stdout = tokio::spawn(async move {
        let mut s = String::new();
        if let Some(mut o) = out {
            let _ = o.read_to_string(&mut s).await;
        }
        s
    });
    let stderr = tokio::spawn(async move {
        let mut lines = Vec::new();
        if let Some(e) = err {
            let mut r = BufReader::new(e).lines();
            while let Ok(Some(l)) = r.next_line().await {
                lines.push((ms(t0), l));
            }
        }
        lines
    });
    let mut killed = None;
    let mut hard_killed = false;
    let kill_at = kill.map(|k| (k.signal, started + Duration::from_millis(u64::from(k.after_ms))));
    let hard_at = started + hard_limit;
    let status = loop {
        let next_kill = kill_at.filter(|_| killed.is_none());
        tokio::select! {
            s = child.wait() => break s.ok(),
            _ = tokio::time::sleep_until(next_kill.map_or(hard_at, |(_, at)| at).into()) => {
                match next_kill {
                    Some((sig, _)) => {
                        send(pid, sig);
                        killed = Some((sig, ms(t0)));
                    }
                    None => {
                        send(pid, Signal::Kill);
                        hard_killed = true;
                        break child.wait().await.ok();
                    }
                }
            }
        }
    };
    let wall_ms = started.elapsed().as_secs_f64() * 1000.0;
    let exited_ms = ms(t0);
    // A grandchild cannot hold the pipes: pause-ledger spawns none. Bounded anyway.
    let stdout =
        tokio::time::timeout(Duration::from_secs(5), stdout).await.ok().and_then(Result::ok).unwrap_or_default();
    let stderr =
        tokio::time::timeout(Duration::from_secs(5), stderr).await.ok().and_then(Result::ok).unwrap_or_default();
    Exited {
        code: status.and_then(|s| s.code()),
        signal: status.and_then(|s| s.signal()),
        spawned_ms,
        exited_ms,
        wall_ms,
        killed,
        hard_killed,
        stdout,
        stderr,
        spawn_error: None,
    }
}
