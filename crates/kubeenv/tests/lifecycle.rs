//! Process lifecycle: no leftovers after drop or after the owning process is SIGKILLed, and
//! kube-apiserver restarts keep the data.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{charts, create_chart};
use pause_ledger_kubeenv::ControlPlane;
use pause_ledger_kubeenv::process::is_alive;
use serde_json::json;

const CHILD_ENV: &str = "KUBEENV_TEST_HOLD_CONTROL_PLANE";
const CHILD_TEST: &str = "child_holds_control_plane";
const PIDS_LINE: &str = "KUBEENV_CHILD";

fn wait_all_dead(pids: &[u32], timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while pids.iter().any(|&p| is_alive(p)) {
        assert!(Instant::now() < deadline, "still alive after {timeout:?}: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn drop_kills_processes_and_removes_dir() {
    let cp = ControlPlane::start().unwrap();
    let pids = cp.pids();
    let dir = cp.dir().to_path_buf();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| is_alive(p)));
    eprintln!("separate control plane started in {:?}", cp.startup_duration());
    drop(cp);
    // Drop waits for the processes, so they are gone right away.
    wait_all_dead(&pids, Duration::ZERO);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

/// Helper run in a child process by `sigkill_of_owner_kills_control_plane`; a no-op otherwise.
#[test]
fn child_holds_control_plane() {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    // Started from a thread that ends right away: the children must outlive it and die only
    // with the process.
    std::thread::spawn(|| ControlPlane::shared().map(|_| ()).unwrap()).join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let cp = ControlPlane::shared().unwrap();
    assert!(cp.pids().iter().all(|&p| is_alive(p)), "died with the starting thread");
    let pids: Vec<String> = cp.pids().iter().map(u32::to_string).collect();
    println!("{PIDS_LINE} {} {}", cp.dir().display(), pids.join(" "));
    std::thread::sleep(Duration::from_secs(300));
}

#[test]
fn sigkill_of_owner_kills_control_plane() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    // libtest prints "test <name> ... " before the test's own output on the same line.
    let line = stdout
        .lines()
        .map(Result::unwrap)
        .find_map(|l| l.split_once(PIDS_LINE).map(|(_, rest)| rest.to_string()))
        .expect("child printed no pids");
    let mut fields = line.split_whitespace();
    let dir = PathBuf::from(fields.next().unwrap());
    let pids: Vec<u32> = fields.map(|p| p.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|&p| is_alive(p)));

    child.kill().unwrap(); // SIGKILL: no destructor runs in the child.
    child.wait().unwrap();
    wait_all_dead(&pids, Duration::from_secs(5));
    // The cleanup watchdog removes the temp dir once the processes are gone.
    let deadline = Instant::now() + Duration::from_secs(15);
    while dir.exists() {
        assert!(Instant::now() < deadline, "{} left behind", dir.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn apiserver_restart_keeps_data() {
    let cp = ControlPlane::shared().unwrap();
    let ns = cp.namespace("restart").await.unwrap();
    let admin = cp.admin_client().unwrap();
    create_chart(&admin, &ns, "harvester", json!({ "paused": true })).await.unwrap();
    let before = cp.pids();

    cp.stop_apiserver().unwrap();
    assert_eq!(cp.pids().len(), 1, "only etcd runs while stopped");
    let down = charts(&admin, &ns).get("harvester").await;
    assert!(down.is_err(), "API answered while stopped");

    let started = Instant::now();
    cp.start_apiserver().unwrap();
    eprintln!("kube-apiserver restarted in {:?}", started.elapsed());
    let after = cp.pids();
    assert_eq!(after.len(), 2);
    assert_eq!(before[0], after[0], "etcd kept");
    assert_ne!(before[1], after[1], "new kube-apiserver");
    assert!(!is_alive(before[1]));

    // Same URL and credentials; a fresh client avoids the dead pooled connections.
    let admin = cp.admin_client().unwrap();
    let chart = charts(&admin, &ns).get("harvester").await.unwrap();
    assert_eq!(chart.data["spec"]["paused"], json!(true));
    cp.restart_apiserver().unwrap();
    charts(&cp.admin_client().unwrap(), &ns).get("harvester").await.unwrap();
}
