//! The command line behaves like the tools next to it (kubectl, helm, flux): shell completion,
//! a kubectl plugin, durations where `0` means off, usage errors for values no run can use,
//! `status` columns that fit their content and say why, and `validate` on a file that is not
//! text.

mod support;

use std::process::Command;

use support::*;

fn pause_ledger(args: &[&str]) -> std::process::Output {
    Command::new(bin()).args(args).env_clear().output().expect("run pause-ledger")
}

#[test]
fn completion_scripts_for_bash_zsh_and_fish() {
    for (shell, marker) in
        [("bash", "complete -F"), ("zsh", "#compdef pause-ledger"), ("fish", "complete -c pause-ledger")]
    {
        let out = pause_ledger(&["completion", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(script.contains(marker), "{shell}: {script}");
        for sub in ["restore", "record", "rescue", "status", "validate"] {
            assert!(script.contains(sub), "{shell} completes {sub}");
        }
    }
    assert_eq!(pause_ledger(&["completion", "tcsh"]).status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn installed_as_kubectl_pause_ledger_it_is_a_kubectl_plugin() {
    let kubectl = ["/usr/local/bin/kubectl", "/usr/bin/kubectl"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("kubectl is installed on this machine kind");
    let dir = tempfile_dir("kubectl-plugin");
    std::os::unix::fs::symlink(bin(), dir.join("kubectl-pause_ledger")).unwrap();
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display());
    let out = Command::new(kubectl).args(["pause-ledger", "--version"]).env("PATH", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pause-ledger "), "{out:?}");
    let list = Command::new(kubectl).args(["plugin", "list"]).env("PATH", &path).output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout).contains("kubectl-pause_ledger"), "{list:?}");
    // Arguments after the plugin name are the tool's.
    let out = Command::new(kubectl).args(["pause-ledger", "validate", "--help"]).env("PATH", &path).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Validate a ledger file offline"), "{out:?}");
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pl-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn values_no_run_can_use_are_usage_errors_and_zero_turns_windows_off() {
    let dir = tempfile_dir("durations");
    let file = dir.join("ledger.yaml");
    std::fs::write(&file, "charts: fleet-local/harvester\n").unwrap();
    let file = file.to_str().unwrap();
    for (args, why) in [
        (vec!["validate", file, "--timeout", "0"], "must be greater than 0"),
        (vec!["validate", file, "--timeout", "9999999999h"], "longest supported duration"),
        (vec!["validate", file, "--request-timeout", "soon"], "is not a duration"),
        (vec!["--log-level", "info=[", "validate", file], "is not a log filter"),
    ] {
        let out = pause_ledger(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(why), "{args:?}: {out:?}");
    }
    assert_eq!(pause_ledger(&["validate", file, "--timeout", "1s"]).status.code(), Some(0));
}

#[test]
fn validate_says_a_file_that_is_not_text_is_an_invalid_ledger() {
    let dir = tempfile_dir("binary");
    let file = dir.join("ledger.bin");
    std::fs::write(&file, b"charts: \xff\xfe\x00 fleet-local/harvester\n").unwrap();
    let out = pause_ledger(&["validate", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("not UTF-8"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_windows_from_the_environment_and_a_status_table_that_fits() {
    let ns = namespace("cli").await;
    let long = "rancher-monitoring-crd-with-a-name-longer-than-most";
    for n in [long, "by-hand"] {
        create_chart(&ns, n).await;
        pause_as_upgrade(&ns, n, UPGRADE).await;
    }
    // Re-paused by hand: not ours, and the table must say why.
    set_paused_by_hand(&ns, "by-hand", false).await;
    set_paused_by_hand(&ns, "by-hand", true).await;
    write_ledger(&ns, "pause-ledger", &[("ledger.yaml", &full_ledger(&ns, &[long, "by-hand"]))]).await;
    let ledger = format!("{ns}/pause-ledger");
    // What a Job would set: PAUSE_LEDGER_SETTLE=0.
    let mut c = command(cp().kubeconfig_path(), &["restore", "--ledger", &ledger]);
    c.env("PAUSE_LEDGER_SETTLE", "0").env("PAUSE_LEDGER_PROPAGATION_WINDOW", "0");
    let out = c.output().await.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));

    let status = run(&["status", "--ledger", &ledger]).await;
    assert_eq!(status.code, 0, "{status:#?}");
    let lines: Vec<&str> = status.stdout.lines().skip_while(|l| !l.starts_with("ORDER")).collect();
    let header = lines[0];
    let col = |name: &str| header.find(name).unwrap();
    for l in &lines[1..] {
        // Every row's cells start where their header does (kubectl get style).
        assert_eq!(l.find("ManagedChart"), Some(col("OBJECT")), "{}", status.stdout);
        assert!(l.len() >= col("OUTCOME"), "{}", status.stdout);
    }
    let by_hand = lines.iter().find(|l| l.contains("by-hand")).unwrap();
    assert!(by_hand.contains("not-ours") && by_hand.contains("re-paused by hand"), "{}", status.stdout);
}
