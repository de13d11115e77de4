//! The short fixed set of histories `cargo test` runs (a few minutes): generated seeds and the
//! minimal histories (tests/histories/*.json) that broke pause-ledger's promise on main 9712cb2,
//! one or more per defect of issue 12. Against the real `pause-ledger` binary, built from this
//! workspace, and a control plane of this test's own (outage histories stop its API server).
//!
//! By default every history must hold: no violation of I1–I6. With
//! `HISTORIES_EXPECT=defects` the test asserts the opposite for the cases annotated with the
//! rules they broke on 9712cb2 — each must break one of them (up to three runs: timing varies)
//! — which is how "the checker finds these defects on the old code" is re-checked.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pause_ledger_histories::execute::Env;
use pause_ledger_histories::generate::generate;
use pause_ledger_histories::model::History;
use pause_ledger_histories::runner;

/// One case of the fixed set.
struct Case {
    /// What it is.
    name: String,
    /// The history.
    history: History,
    /// Rules it broke on 9712cb2 (empty: it held there too).
    broke: Vec<&'static str>,
}

/// Generated seeds: (seed, rules broken on 9712cb2). 1, 3, 6: held there too (kills, faults,
/// merges, rescue); 14 stops the API server for ~20 s.
const SEEDS: &[(u64, &[&str])] = &[
    (1, &[]),
    (3, &[]),
    (6, &[]),
    (14, &["I6/outage-failed", "I6/early-deadline"]),
    (24, &["I1/lost", "I4/outcome"]),
    (34, &["I2/second-unpause"]),
    // Found by the 2,000-history run on 547e3fa (fixed since): a same-value server-side apply
    // after rescue listed a chart (I2/rescue-stale); a GitOps co-owner of a marked pause under
    // an unmarked entry (I2/shared-owner).
    (717, &[]),
    (1612, &[]),
    // Found on 0d529f2: a merge that paused a chart its earlier ledger listed (running again)
    // kept the earlier entry's field manager, so restore left our own pause as "re-paused by
    // hand" (I1/lost).
    (1517, &[]),
];

/// Minimal histories (tests/histories; each file's `note` says what it shows): (file, rules
/// broken on 9712cb2).
const FILES: &[(&str, &[&str])] = &[
    ("defect1-record-lost-answer.json", &["I3/unlisted", "I1/lost"]),
    ("defect2-merge-minimal-no-upgrade.json", &["I1/lost-unmarked", "I1/lost"]),
    ("defect2-merge-custom-field-manager.json", &["I1/lost"]),
    ("defect3-take-over-remark-fails.json", &["I1/lost"]),
    ("defect4-shared-ownership.json", &["I2/shared-owner"]),
    ("defect4-keep-paused.json", &["I2/keep-paused"]),
    ("defect6-outage-at-start.json", &["I6/outage-failed", "I6/early-deadline"]),
    ("defect8-repause-guard-unmarked.json", &["I2/second-unpause"]),
    ("defect8-rescue-paused-before.json", &["I2/rescue-paused-before"]),
    ("defect8-rescue-unlisted.json", &["I2/rescue-unlisted", "I2/rescue-stale"]),
    ("defect9-restore-during-intent.json", &["I1/lost", "I4/outcome"]),
    ("defect9-status-over-newer-ledger.json", &["I4/status-over-other-ledger"]),
];

fn cases() -> Vec<Case> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/histories");
    let mut out: Vec<Case> = SEEDS
        .iter()
        .map(|(seed, broke)| Case { name: format!("seed {seed}"), history: generate(*seed), broke: broke.to_vec() })
        .collect();
    for (file, broke) in FILES {
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let h = v.get("history").cloned().unwrap_or(v);
        let history: History = serde_json::from_value(h).unwrap_or_else(|e| panic!("{file}: {e}"));
        out.push(Case { name: (*file).to_string(), history, broke: broke.to_vec() });
    }
    out
}

/// The `pause-ledger` binary of this workspace, built (or found fresh) by cargo.
fn pause_ledger() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = std::process::Command::new(cargo)
        .args(["build", "--quiet", "-p", "pause-ledger", "--bin", "pause-ledger"])
        .current_dir(&root)
        .status()
        .expect("running cargo build for the pause-ledger binary");
    assert!(status.success(), "cargo build -p pause-ledger failed");
    let target = std::env::var("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|_| root.join("target"));
    let bin = target.join("debug/pause-ledger");
    assert!(bin.exists(), "{} not found", bin.display());
    bin
}

#[test]
fn fixed_histories() {
    let expect_defects = std::env::var("HISTORIES_EXPECT").as_deref() == Ok("defects");
    let bin = pause_ledger();
    let cp = Arc::new(kubeenv::ControlPlane::start().expect("control plane"));
    let scratch = tempdir();
    let env = Env::new(cp.clone(), bin, scratch.clone());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut problems = Vec::new();
    for case in cases() {
        if expect_defects && case.broke.is_empty() {
            continue;
        }
        let mut seen = Vec::new();
        let mut held = false;
        for _ in 0..if expect_defects { 3 } else { 1 } {
            let (o, _) = rt.block_on(runner::run(&env, &case.history));
            assert!(o.errors.is_empty(), "{}: the executor failed: {:?}", case.name, o.errors);
            let rules: Vec<&str> = o.rules().into_iter().collect();
            eprintln!("{}: {:?} ({:.1} s)", case.name, rules, o.duration_ms / 1000.0);
            if expect_defects {
                if rules.iter().any(|r| case.broke.contains(r)) {
                    held = true;
                    break;
                }
                seen.extend(rules.iter().map(|r| r.to_string()));
            } else if o.failed() {
                let lines: Vec<String> = o.verdict.violations.iter().map(|v| format!("    {v}")).collect();
                problems.push(format!("{}:\n{}\n  history:\n{}", case.name, lines.join("\n"), case.history));
            }
        }
        if expect_defects && !held {
            problems.push(format!("{}: expected one of {:?}, saw {:?}", case.name, case.broke, seen));
        }
    }
    drop(env);
    drop(cp);
    let _ = std::fs::remove_dir_all(&scratch);
    assert!(problems.is_empty(), "{} case(s):\n{}", problems.len(), problems.join("\n"));
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("pause-ledger-histories-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}
