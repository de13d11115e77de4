//! Child processes that cannot outlive us.
//!
//! Each control-plane process runs under `setpriv --pdeathsig KILL` in its own process group.
//! Linux delivers the parent-death signal when the *thread* that forked the child exits, so all
//! children are spawned from one dedicated thread that lives as long as the process: a test
//! thread that calls [`crate::ControlPlane::shared`] first may end without taking the shared
//! instance down with it, while a panic, `exit` or SIGKILL of the process still does.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use std::os::unix::process::CommandExt;

use rustix::process::{Pid, Signal, kill_process, kill_process_group};

use crate::Error;

struct SpawnRequest {
    command: Command,
    reply: mpsc::Sender<std::io::Result<Child>>,
}

fn spawner() -> std::io::Result<&'static mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Result<mpsc::Sender<SpawnRequest>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<SpawnRequest>();
            std::thread::Builder::new()
                .name("kubeenv-spawner".into())
                .spawn(move || {
                    // Never returns while any Sender lives; the static one lives forever, so this
                    // thread (the children's pdeathsig "parent") ends only with the process.
                    for mut req in rx {
                        let _ = req.reply.send(req.command.spawn());
                    }
                })
                .map(|_| tx)
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| std::io::Error::other(e.clone()))
}

/// Spawns `command` from the long-lived spawner thread.
fn spawn_from_spawner(command: Command) -> std::io::Result<Child> {
    let (reply, rx) = mpsc::channel();
    spawner()?
        .send(SpawnRequest { command, reply })
        .map_err(|_| std::io::Error::other("kubeenv spawner thread is gone"))?;
    rx.recv().map_err(|_| std::io::Error::other("kubeenv spawner thread dropped the request"))?
}

/// A control-plane process in its own process group, killed (group-wide) on drop.
pub struct ManagedProcess {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ManagedProcess {
    /// Starts `program args…` with a parent-death SIGKILL, its own process group, and stdout and
    /// stderr appended to `log`.
    pub fn spawn(name: &'static str, program: &Path, args: &[String], log: &Path) -> Result<ManagedProcess, Error> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| Error::io(format!("opening {}", log.display()), e))
        };
        let (out, err) = (open()?, open()?);
        let mut command = Command::new("setpriv");
        command
            .args(["--pdeathsig", "KILL", "--"])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own group: a terminal Ctrl-C hits only the test process, whose death then takes
            // the children down via pdeathsig, and Drop can kill the whole group.
            .process_group(0);
        let child = spawn_from_spawner(command)
            .map_err(|e| Error::io(format!("spawning {name} ({})", program.display()), e))?;
        tracing::debug!(name, pid = child.id(), log = %log.display(), "spawned");
        Ok(ManagedProcess { name, child, log: log.to_path_buf() })
    }

    /// Process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// `Some(status)` once the process has exited.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, Error> {
        self.child.try_wait().map_err(|e| Error::io(format!("waiting for {}", self.name), e))
    }

    /// The error to report when the process exited unexpectedly with `status`.
    pub fn exited_error(&self, status: ExitStatus) -> Error {
        Error::Exited {
            process: self.name,
            status: status.to_string(),
            log: self.log.clone(),
            tail: log_tail(&self.log, 30),
        }
    }

    /// SIGTERM to the group, then SIGKILL after `grace`; waits for the exit.
    pub fn terminate(&mut self, grace: Duration) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.signal_group(Signal::TERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_)) | Err(_)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }

    /// SIGKILL to the group; waits for the exit.
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        self.signal_group(Signal::KILL);
        // killpg can only fail if the group is already gone; make sure of the leader anyway.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn signal_group(&self, signal: Signal) {
        let Ok(raw) = i32::try_from(self.child.id()) else {
            return;
        };
        if let Some(pid) = Pid::from_raw(raw) {
            let _ = kill_process_group(pid, signal);
        }
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether `pid` names a live (not zombie) process.
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // State is the first field after the parenthesised command name (which may contain spaces).
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, Some("Z" | "X" | "x") | None)
}

/// Sends SIGKILL to `pid` (not its group); errors are ignored.
pub fn kill_pid(pid: u32) {
    if let Some(pid) = i32::try_from(pid).ok().and_then(Pid::from_raw) {
        let _ = kill_process(pid, Signal::KILL);
    }
}

/// The last `lines` lines of a log file (at most 64 KiB read), for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> std::io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read log: {e})"),
    }
}

/// Removes a folder once this process is gone, however it dies (SIGKILL included), and once the
/// control-plane pids it was told about have exited.
///
/// A tiny `sh` in its own process group reads pids from a pipe; our end of that pipe closes only
/// when we exit (or [`Watchdog::finish`] drops it), which the shell sees as EOF. Needed because the
/// shared instance lives in a `static` and is never dropped.
pub struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

const WATCHDOG_SCRIPT: &str = r#"
pids=$(cat)
i=0
while [ "$i" -lt 100 ]; do
  alive=
  for p in $pids; do kill -0 "$p" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && break
  i=$((i + 1)); sleep 0.1
done
rm -rf -- "$1"
"#;

impl Watchdog {
    /// Starts a watchdog that will remove `dir`.
    pub fn start(dir: &Path) -> Result<Watchdog, Error> {
        // Spawned directly, not from the spawner thread: it must *not* die with us.
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("kubeenv-cleanup")
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| Error::io("spawning cleanup watchdog", e))?;
        let stdin = child.stdin.take();
        Ok(Watchdog { child, stdin })
    }

    /// Tells the watchdog to wait for `pid` to exit before removing the folder.
    pub fn watch(&mut self, pid: u32) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{pid}");
        }
    }

    /// Ends the watchdog without removing the folder (kept for post-mortem of a failed start).
    pub fn disarm(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stdin = None;
    }

    /// Closes the pipe (the watchdog removes the folder now) and waits for it.
    pub fn finish(&mut self) {
        self.stdin = None;
        let _ = self.child.wait();
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.finish();
    }
}
