//! The exit-code table in `src/exit.rs` is the one source: `--help`, docs/report.md, the
//! README and the chart's `failFastExitCodes` must agree with it.

use std::collections::BTreeSet;
use std::path::Path;

use pause_ledger::exit::EXIT_CODES;

fn repo_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The rows of the first Markdown table under `heading`: cells, trimmed, without backticks.
fn table_rows(markdown: &str, heading: &str) -> Vec<Vec<String>> {
    let start = markdown.find(heading).unwrap_or_else(|| panic!("no {heading:?}"));
    markdown[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split('|').map(|c| c.trim().trim_matches('`').to_string()).collect())
        .collect()
}

#[test]
fn help_lists_every_code() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pause-ledger")).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for i in &EXIT_CODES {
        assert!(help.contains(&format!("{:<2} {}", i.code, i.meaning)), "--help lacks exit {}:\n{help}", i.code);
    }
}

#[test]
fn docs_report_table_matches() {
    let rows = table_rows(&repo_file("docs/report.md"), "## Exit codes");
    let documented: Vec<(i32, String)> = rows.iter().map(|r| (r[0].parse().unwrap(), r[1].clone())).collect();
    let ours: Vec<(i32, String)> = EXIT_CODES.iter().map(|i| (i.code, i.word.to_string())).collect();
    assert_eq!(documented, ours, "docs/report.md's exit-code table differs from src/exit.rs");
}

#[test]
fn readme_table_matches() {
    let rows = table_rows(&repo_file("README.md"), "### Exit codes");
    let documented: Vec<i32> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    let ours: Vec<i32> = EXIT_CODES.iter().map(|i| i.code).collect();
    assert_eq!(documented, ours, "README's exit-code table differs from src/exit.rs");
}

/// Find `key` anywhere in a YAML document.
fn find<'a>(v: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m.get(key).or_else(|| m.values().find_map(|x| find(x, key))),
        serde_json::Value::Array(a) => a.iter().find_map(|x| find(x, key)),
        _ => None,
    }
}

#[test]
fn chart_fails_fast_on_exactly_the_codes_a_retry_cannot_change() {
    let values: serde_json::Value = serde_saphyr::from_str(&repo_file("chart/pause-ledger/values.yaml")).unwrap();
    let codes = find(&values, "failFastExitCodes").expect("failFastExitCodes in values.yaml");
    let chart: BTreeSet<i64> = codes.as_array().unwrap().iter().map(|c| c.as_i64().unwrap()).collect();
    let ours: BTreeSet<i64> = EXIT_CODES.iter().filter(|i| i.fail_fast).map(|i| i64::from(i.code)).collect();
    assert_eq!(chart, ours, "chart failFastExitCodes differ from the fail_fast column of src/exit.rs");
}
