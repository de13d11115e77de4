//! Fuzzing the ledger parser (proptest): no input panics, every invalid input is rejected with
//! at least one located issue, and valid ledgers round-trip (render → parse → render → parse).
//! The "nothing patched" half runs invalid ledgers through the binary: `tools/bench` (fault
//! campaign, group invalid-ledger). An empty `entries` list is valid in the full form (`record`
//! writes one when nothing was paused); the minimal form must list at least one chart.

use std::collections::BTreeMap;

use pause_ledger::ledger::{self, Ledger, LedgerError, Ownership};
use proptest::prelude::*;

// ---------- generators ----------

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?"
}

fn subdomain() -> impl Strategy<Value = String> {
    prop_oneof![label(), (label(), label()).prop_map(|(a, b)| format!("{a}.{b}"))]
}

fn upgrade_id() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9][a-zA-Z0-9._:/-]{0,40}"
}

/// (apiVersion, kind, default field) of kinds the parser knows, plus "use the defaults".
const KINDS: &[(Option<&str>, Option<&str>)] = &[
    (None, None),
    (Some("management.cattle.io/v3"), Some("ManagedChart")),
    (Some("apps/v1"), Some("Deployment")),
    (Some("batch/v1"), Some("CronJob")),
    (Some("fleet.cattle.io/v1alpha1"), Some("Bundle")),
    (Some("example.com/v1beta2"), Some("Widget")),
];

#[derive(Clone, Debug)]
struct EntrySpec {
    kind: usize,
    namespace: String,
    name: String,
    field: Option<&'static str>,
    order: Option<i32>,
}

#[derive(Clone, Debug)]
struct LedgerSpec {
    upgrade: String,
    paused_at: i64,
    ownership: Option<Ownership>,
    field_manager: Option<String>,
    entries: Vec<EntrySpec>,
}

fn entry() -> impl Strategy<Value = EntrySpec> {
    (
        0..KINDS.len(),
        label(),
        prop_oneof![subdomain(), subdomain().prop_map(|s| format!("{s}-crd"))],
        prop_oneof![Just(None), Just(Some("spec.paused")), Just(Some("spec.suspend")), Just(Some("spec.a.b"))],
        prop::option::of(-5i32..5),
    )
        .prop_map(|(kind, namespace, name, field, order)| EntrySpec { kind, namespace, name, field, order })
}

fn ledger_spec() -> impl Strategy<Value = LedgerSpec> {
    (
        upgrade_id(),
        0i64..4_000_000_000,
        prop_oneof![Just(None), Just(Some(Ownership::Marked)), Just(Some(Ownership::Unmarked))],
        prop::option::of("[a-z][a-z0-9-]{0,20}"),
        prop::collection::vec(entry(), 1..12),
    )
        .prop_map(|(upgrade, paused_at, ownership, field_manager, mut entries)| {
            // Object identity ignores the version: keep (group, kind, namespace, name) unique.
            let mut seen = std::collections::HashSet::new();
            entries.retain(|e| seen.insert((kind_of(e).1, e.namespace.clone(), e.name.clone())));
            LedgerSpec { upgrade, paused_at, ownership, field_manager, entries }
        })
}

fn kind_of(e: &EntrySpec) -> (String, String) {
    let (av, k) = KINDS[e.kind];
    (av.unwrap_or("management.cattle.io/v3").to_string(), k.unwrap_or("ManagedChart").to_string())
}

fn q(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn render(spec: &LedgerSpec) -> String {
    let ts = jiff::Timestamp::from_second(spec.paused_at).unwrap();
    let mut s = format!("version: pause-ledger/v1\nupgrade: {}\npausedAt: {}\n", q(&spec.upgrade), q(&ts.to_string()));
    match spec.ownership {
        Some(Ownership::Marked) => s.push_str("ownership: marked\n"),
        Some(Ownership::Unmarked) => s.push_str("ownership: unmarked\n"),
        None => {}
    }
    if let Some(fm) = &spec.field_manager {
        s.push_str(&format!("fieldManager: {}\n", q(fm)));
    }
    s.push_str("entries:\n");
    for e in &spec.entries {
        let (av, k) = KINDS[e.kind];
        s.push_str(&format!("  - namespace: {}\n    name: {}\n", q(&e.namespace), q(&e.name)));
        if let (Some(av), Some(k)) = (av, k) {
            s.push_str(&format!("    apiVersion: {}\n    kind: {}\n", q(av), q(k)));
        }
        if let Some(f) = e.field {
            s.push_str(&format!("    field: {}\n", q(f)));
        }
        if let Some(o) = e.order {
            s.push_str(&format!("    order: {o}\n"));
        }
    }
    s
}

/// A parsed ledger written back as a full-form document (what a tool re-recording it writes).
fn render_ledger(l: &Ledger) -> String {
    let mut s = format!(
        "version: pause-ledger/v1\nupgrade: {}\npausedAt: {}\nownership: {}\nfieldManager: {}\nentries:\n",
        q(&l.upgrade),
        q(&l.paused_at.map(|t| t.to_string()).unwrap_or_default()),
        if l.ownership == Ownership::Marked { "marked" } else { "unmarked" },
        q(&l.field_manager)
    );
    for e in &l.entries {
        s.push_str(&format!(
            "  - apiVersion: {}\n    kind: {}\n    name: {}\n    field: {}\n    order: {}\n",
            q(&e.object.api_version),
            q(&e.object.kind),
            q(&e.object.name),
            q(e.field.as_str()),
            e.order
        ));
        if let Some(ns) = &e.object.namespace {
            s.push_str(&format!("    namespace: {}\n", q(ns)));
        }
    }
    s
}

/// What a ledger says, without where it was written.
fn proj(l: &Ledger) -> Vec<(pause_ledger::kinds::ObjectRef, String, i32)> {
    l.entries.iter().map(|e| ((*e.object).clone(), e.field.as_str().to_string(), e.order)).collect()
}

fn full(text: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(ledger::LEDGER_KEY.to_string(), text.to_string())])
}

/// The parser's verdict must be "valid" or "invalid with located issues", never a panic.
fn check_verdict(r: &Result<Ledger, LedgerError>) -> Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert!(!e.issues().is_empty(), "rejected without an issue");
        for i in e.issues() {
            prop_assert!(!i.location.trim().is_empty(), "issue without a location: {i:?}");
            prop_assert!(!i.message.trim().is_empty(), "issue without a message: {i:?}");
        }
    }
    Ok(())
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("ledger.yaml".to_string()),
        Just("charts".to_string()),
        Just("namespace".to_string()),
        Just("upgrade".to_string()),
        Just("pausedAt".to_string()),
        Just("ownership".to_string()),
        Just("status.yaml".to_string()),
        "[a-zA-Z._-]{1,12}",
    ]
}

/// Text that looks like YAML often enough to reach deep into the parser.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        Just("version: pause-ledger/v1\n".to_string()),
        Just("upgrade: u-1\n".to_string()),
        Just("pausedAt: 2026-11-27T10:00:00Z\n".to_string()),
        Just("entries:\n".to_string()),
        Just("  - name: a\n".to_string()),
        Just("    namespace: ns\n".to_string()),
        Just("    order: 3\n".to_string()),
        Just("    field: spec.paused\n".to_string()),
        Just("    kind: Deployment\n".to_string()),
        Just("pausedBefore:\n".to_string()),
        Just("kind: ConfigMap\n".to_string()),
        Just("data:\n  charts: ns/a\n".to_string()),
        Just("charts: a b\n".to_string()),
        Just("&a [*a, {".to_string()),
        Just("- - -\n".to_string()),
        Just("\t: \"\\u0000\n".to_string()),
        Just("!!binary |\n  AAAA\n".to_string()),
        Just("? [a]\n: b\n".to_string()),
        "[ -~\n]{0,20}",
    ];
    prop::collection::vec(token, 0..12).prop_map(|v| v.concat())
}

#[derive(Clone, Copy, Debug)]
enum Mutation {
    UppercaseName,
    UnderscoreName,
    Duplicate,
    UnknownTopKey,
    UnknownEntryKey,
    WrongVersion,
    BadTimestamp,
    OrderNotNumber,
    FieldOutsideSpec,
    BadNamespace,
    BadUpgradeId,
    MissingName,
    BadApiVersion,
}

const MUTATIONS: [Mutation; 13] = [
    Mutation::UppercaseName,
    Mutation::UnderscoreName,
    Mutation::Duplicate,
    Mutation::UnknownTopKey,
    Mutation::UnknownEntryKey,
    Mutation::WrongVersion,
    Mutation::BadTimestamp,
    Mutation::OrderNotNumber,
    Mutation::FieldOutsideSpec,
    Mutation::BadNamespace,
    Mutation::BadUpgradeId,
    Mutation::MissingName,
    Mutation::BadApiVersion,
];

fn mutate(spec: &LedgerSpec, m: Mutation, at: usize) -> String {
    let mut spec = spec.clone();
    let i = at % spec.entries.len();
    match m {
        Mutation::UppercaseName => spec.entries[i].name = format!("X{}", spec.entries[i].name),
        Mutation::UnderscoreName => spec.entries[i].name = format!("{}_x", spec.entries[i].name),
        Mutation::Duplicate => {
            let e = spec.entries[i].clone();
            spec.entries.push(e);
        }
        Mutation::BadNamespace => spec.entries[i].namespace = format!("{}.x", spec.entries[i].namespace),
        Mutation::BadUpgradeId => spec.upgrade = format!("{} !", spec.upgrade),
        _ => {}
    }
    let text = render(&spec);
    let nth_entry = |text: &str, insert: &str| {
        let pos = text.match_indices("  - namespace:").nth(i).map(|(p, _)| p).unwrap();
        let line_end = pos + text[pos..].find('\n').unwrap() + 1;
        format!("{}{insert}{}", &text[..line_end], &text[line_end..])
    };
    match m {
        Mutation::UnknownTopKey => format!("{text}colour: red\n"),
        Mutation::UnknownEntryKey => nth_entry(&text, "    colour: red\n"),
        Mutation::WrongVersion => text.replace("pause-ledger/v1", "pause-ledger/v9"),
        Mutation::BadTimestamp => {
            let start = text.find("pausedAt: ").unwrap();
            let end = start + text[start..].find('\n').unwrap();
            format!("{}pausedAt: \"27/11/2026\"{}", &text[..start], &text[end..])
        }
        Mutation::OrderNotNumber => nth_entry(&text, "    order: first\n"),
        Mutation::FieldOutsideSpec => nth_entry(&text, "    field: metadata.paused\n"),
        Mutation::MissingName => {
            let pos = text.match_indices("    name: ").nth(i).map(|(p, _)| p).unwrap();
            let end = pos + text[pos..].find('\n').unwrap() + 1;
            format!("{}{}", &text[..pos], &text[end..])
        }
        Mutation::BadApiVersion => nth_entry(&text, "    apiVersion: \"v\"\n"),
        _ => text,
    }
}

fn needs_clean_entry(m: Mutation) -> bool {
    // Inserting `order`, `field` or `apiVersion` into an entry that already has one would make a
    // duplicate key (also invalid, but not the invalidity under test): only mutate plain entries.
    matches!(m, Mutation::OrderNotNumber | Mutation::FieldOutsideSpec | Mutation::BadApiVersion)
}

// ---------- properties ----------

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        // Reproducible: the same inputs on every run (change the seed to explore further).
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x70a5_e1ed),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_configmap_data_never_panics(data in prop::collection::btree_map(key(), prop_oneof![yamlish(), ".{0,120}"], 0..5)) {
        check_verdict(&ledger::parse_configmap_data(&data))?;
    }

    #[test]
    fn arbitrary_files_never_panic(text in prop_oneof![yamlish(), ".{0,300}"]) {
        check_verdict(&ledger::parse_file(&text))?;
    }

    #[test]
    fn arbitrary_full_form_text_never_panics(text in yamlish()) {
        check_verdict(&ledger::parse_configmap_data(&full(&text)))?;
    }

    #[test]
    fn valid_ledgers_parse_and_round_trip(spec in ledger_spec()) {
        let text = render(&spec);
        let l = ledger::parse_configmap_data(&full(&text));
        let l = match l {
            Ok(l) => l,
            Err(e) => return Err(TestCaseError::fail(format!("valid ledger rejected: {e}\n{text}"))),
        };
        prop_assert_eq!(&l.upgrade, &spec.upgrade);
        prop_assert_eq!(l.ownership, spec.ownership.unwrap_or(Ownership::Marked));
        prop_assert_eq!(l.paused_at.map(|t| t.as_second()), Some(spec.paused_at));
        prop_assert_eq!(l.entries.len(), spec.entries.len());
        for (e, s) in l.entries.iter().zip(&spec.entries) {
            let (av, k) = kind_of(s);
            prop_assert_eq!(&e.object.api_version, &av);
            prop_assert_eq!(&e.object.kind, &k);
            prop_assert_eq!(e.object.namespace.as_deref(), Some(s.namespace.as_str()));
            prop_assert_eq!(&e.object.name, &s.name);
            let crd_first = k == "ManagedChart" && s.name.ends_with("-crd");
            prop_assert_eq!(e.order, s.order.unwrap_or(if crd_first { 0 } else { 1 }));
            if let Some(f) = s.field {
                prop_assert_eq!(e.field.as_str(), f);
            }
        }
        // Round trip: written back in full and read again, the same ledger.
        let again_text = render_ledger(&l);
        let again = ledger::parse_configmap_data(&full(&again_text));
        let again = match again {
            Ok(a) => a,
            Err(e) => return Err(TestCaseError::fail(format!("re-rendered ledger rejected: {e}\n{again_text}"))),
        };
        prop_assert_eq!(proj(&again), proj(&l));
        prop_assert_eq!(&again.upgrade, &l.upgrade);
        prop_assert_eq!(again.ownership, l.ownership);
        prop_assert_eq!(&again.field_manager, &l.field_manager);
        prop_assert_eq!(again.paused_at, l.paused_at);
        // The digest identifies the recorded text: same text, same digest.
        prop_assert_eq!(&ledger::parse_configmap_data(&full(&text)).unwrap().digest, &l.digest);
        // The same document as a file: bare, and inside a ConfigMap manifest.
        let bare = ledger::parse_file(&text).unwrap();
        prop_assert_eq!(proj(&bare), proj(&l));
        let manifest = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: l\ndata:\n  ledger.yaml: {}\n",
            q(&text)
        );
        let cm = ledger::parse_file(&manifest).unwrap();
        prop_assert_eq!(proj(&cm), proj(&l));
        prop_assert_eq!(&cm.digest, &l.digest);
    }

    #[test]
    fn mutated_ledgers_are_rejected_with_issues(spec in ledger_spec(), m in 0..MUTATIONS.len(), at in 0usize..100) {
        let m = MUTATIONS[m];
        let mut spec = spec;
        if needs_clean_entry(m) {
            for e in &mut spec.entries {
                e.order = None;
                e.field = None;
                e.kind = 0;
            }
            let mut seen = std::collections::HashSet::new();
            spec.entries.retain(|e| seen.insert((e.namespace.clone(), e.name.clone())));
        }
        let text = mutate(&spec, m, at);
        let r = ledger::parse_configmap_data(&full(&text));
        prop_assert!(r.is_err(), "{m:?} accepted:\n{text}");
        check_verdict(&r)?;
    }

    #[test]
    fn minimal_form_round_trips(ns in label(), names in prop::collection::btree_set(subdomain(), 1..15), sep in prop_oneof![Just(" "), Just(","), Just("\n"), Just(" ,\n ")]) {
        let names: Vec<String> = names.into_iter().collect();
        let data = BTreeMap::from([
            (ledger::CHARTS_KEY.to_string(), names.join(sep)),
            (ledger::NAMESPACE_KEY.to_string(), ns.clone()),
        ]);
        let l = ledger::parse_configmap_data(&data).unwrap();
        prop_assert_eq!(l.ownership, Ownership::Unmarked);
        let got: Vec<&str> = l.entries.iter().map(|e| e.object.name.as_str()).collect();
        prop_assert_eq!(got, names.iter().map(String::as_str).collect::<Vec<_>>());
        prop_assert!(l.entries.iter().all(|e| e.object.namespace.as_deref() == Some(ns.as_str())));
    }

    #[test]
    fn minimal_form_with_one_bad_token_is_rejected(ns in label(), names in prop::collection::btree_set(subdomain(), 1..8), bad in "[A-Z_][A-Za-z_]{0,6}", at in 0usize..8) {
        let mut names: Vec<String> = names.into_iter().collect();
        let at = at % (names.len() + 1);
        names.insert(at, bad);
        let data = BTreeMap::from([
            (ledger::CHARTS_KEY.to_string(), names.join(" ")),
            (ledger::NAMESPACE_KEY.to_string(), ns),
        ]);
        let r = ledger::parse_configmap_data(&data);
        prop_assert!(r.is_err());
        check_verdict(&r)?;
    }
}
