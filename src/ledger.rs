//! The ledger format: the set of objects an upgrade paused, as recorded in a ConfigMap.
//!
//! Two forms are accepted (docs/ledger.md): the full versioned YAML document under the
//! `ledger.yaml` key, and a minimal form (`charts`, `namespace`, ...) that a shell script
//! writes with one `kubectl create configmap`. Both are validated as a whole before anything
//! is touched; every problem is reported with the key and line it is on.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;
use sha2::{Digest, Sha256};

use crate::kinds::{self, FieldPath, ObjectRef};

/// The data key holding the full-form recorded set.
pub const LEDGER_KEY: &str = "ledger.yaml";
/// The data key the restore status is written to (never the recorded set's key).
pub const STATUS_KEY: &str = "status.yaml";
/// The data key `record` keeps its intent marker in, between writing its intent and
/// confirming it (full form only; renewed while record runs).
pub const INTENT_KEY: &str = "intent.yaml";
/// Minimal form: whitespace- or comma-separated `NAME` or `NAMESPACE/NAME` of ManagedCharts.
pub const CHARTS_KEY: &str = "charts";
/// Minimal form: namespace for bare chart names.
pub const NAMESPACE_KEY: &str = "namespace";
/// Minimal form: the upgrade id.
pub const UPGRADE_KEY: &str = "upgrade";
/// Minimal form: when the upgrade paused (RFC 3339).
pub const PAUSED_AT_KEY: &str = "pausedAt";
/// Minimal form: `marked` or `unmarked` (default `unmarked`).
pub const OWNERSHIP_KEY: &str = "ownership";
/// The only full-form version this build reads.
pub const FORMAT_VERSION: &str = "pause-ledger/v1";
/// The field manager pause-ledger's own pause patches use.
pub const DEFAULT_FIELD_MANAGER: &str = "pause-ledger";

/// How restore decides that a paused object is still paused by this upgrade.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ownership {
    /// The pause side marked each object (annotation with the upgrade id, pause field owned
    /// by its field manager): restore requires both.
    Marked,
    /// No marks were written: "still paused" is the only check (weaker, documented).
    Unmarked,
}

/// Which form the ledger was written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Form {
    /// `ledger.yaml`.
    Full,
    /// `charts` + `namespace` keys.
    Minimal,
}

/// One validated entry: an object, its pause field and its restore order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The object (shared with the reports and the status, not copied into them).
    pub object: Arc<ObjectRef>,
    /// The boolean that pauses it.
    pub field: FieldPath,
    /// Lower orders are restored first.
    pub order: i32,
    /// The mark this entry's pause carries when it is not the ledger's `upgrade` (an entry
    /// merged or taken over from another upgrade's ledger). Both are accepted.
    #[serde(rename = "upgrade", skip_serializing_if = "Option::is_none")]
    pub mark: Option<Arc<str>>,
    /// This entry's ownership rule when it differs from the ledger's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ownership: Option<Ownership>,
    /// This entry's field manager when it differs from the ledger's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field_manager: Option<Arc<str>>,
    /// Where the entry was written (for messages).
    #[serde(skip)]
    pub line: Option<u64>,
}

impl Entry {
    /// An entry with the ledger's ownership rule (no per-entry overrides).
    pub fn new(object: Arc<ObjectRef>, field: FieldPath, order: i32) -> Self {
        Self { object, field, order, mark: None, ownership: None, field_manager: None, line: None }
    }
}

/// A `record` that has written its intent and not yet confirmed what it paused: a lease it
/// renews while it runs (`beat` grows). Whoever sees the same `beat` for
/// `expiresAfterSeconds` on its own clock knows that run sends no more writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Intent {
    /// The recording run's id.
    pub run: String,
    /// Renewal counter.
    pub beat: u64,
    /// How long after a renewal the run may still write (its lease plus one request).
    pub expires_after_seconds: u64,
}

impl Intent {
    /// The YAML kept under [`INTENT_KEY`].
    pub fn to_yaml(&self) -> String {
        serde_saphyr::to_string(self).unwrap_or_default()
    }
}

/// A validated ledger.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// The upgrade's id (may be empty only in an unmarked minimal ledger).
    pub upgrade: String,
    /// When the upgrade paused, if recorded.
    pub paused_at: Option<Timestamp>,
    /// How ownership is checked.
    pub ownership: Ownership,
    /// Field manager whose ownership of the pause field proves the pause was the upgrade's.
    pub field_manager: String,
    /// What to restore.
    pub entries: Vec<Entry>,
    /// Objects that were already paused before the upgrade: listed, never restored.
    pub paused_before: Vec<Arc<ObjectRef>>,
    /// Set while `record` is between writing its intent and confirming it ([`INTENT_KEY`]).
    pub intent: Option<Intent>,
    /// Which form was read.
    pub form: Form,
    /// SHA-256 of the recorded data, so a status can be matched to the set it describes.
    pub digest: String,
}

/// A ConfigMap reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRef {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for LedgerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for LedgerRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (ns, name) = s.split_once('/').ok_or_else(|| format!("{s:?} is not NAMESPACE/NAME"))?;
        check_label(ns)?;
        check_subdomain(name)?;
        Ok(LedgerRef { namespace: ns.to_string(), name: name.to_string() })
    }
}

/// One problem found while validating a ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    /// `KEY line N` or `KEY` (and the field path when known).
    pub location: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// Why a ledger could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The ledger is invalid; nothing may be patched.
    #[error("invalid ledger ({} problem{}):\n  {}", .0.len(), if .0.len() == 1 { "" } else { "s" },
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid(Vec<Issue>),
}

impl LedgerError {
    fn one(location: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid(vec![Issue { location: location.into(), message: message.into() }])
    }

    /// The individual problems.
    pub fn issues(&self) -> &[Issue] {
        match self {
            Self::Invalid(v) => v,
        }
    }
}

/// One entry's fields, typed (read from the YAML by [`Fields`], or built by the minimal form).
struct RawEntry {
    api_version: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: String,
    field: Option<String>,
    order: Option<i32>,
    upgrade: Option<String>,
    ownership: Option<Ownership>,
    field_manager: Option<String>,
}

/// Parse and validate a ledger from a ConfigMap's `data`.
pub fn parse_configmap_data(data: &BTreeMap<String, String>) -> Result<Ledger, LedgerError> {
    let has_full = data.contains_key(LEDGER_KEY);
    let has_minimal = data.contains_key(CHARTS_KEY);
    let mut issues = Vec::new();
    let known: &[&str] = if has_full {
        &[LEDGER_KEY, STATUS_KEY, INTENT_KEY]
    } else {
        &[CHARTS_KEY, NAMESPACE_KEY, UPGRADE_KEY, PAUSED_AT_KEY, OWNERSHIP_KEY, STATUS_KEY]
    };
    for key in data.keys() {
        if !known.contains(&key.as_str()) {
            let hint = if has_full && key != LEDGER_KEY {
                format!(" (the full form keeps everything under {LEDGER_KEY})")
            } else {
                String::new()
            };
            issues.push(Issue {
                location: format!("key {key}"),
                message: format!("unknown data key{hint}; expected one of {}", known.join(", ")),
            });
        }
    }
    if has_full && has_minimal {
        issues.push(Issue {
            location: format!("key {CHARTS_KEY}"),
            message: format!("both {LEDGER_KEY} and {CHARTS_KEY} are set; write one form only"),
        });
    }
    let result = if has_full {
        parse_full(&data[LEDGER_KEY])
    } else if has_minimal {
        parse_minimal(data)
    } else {
        Err(LedgerError::one(
            "data",
            format!("no recorded set: expected key {LEDGER_KEY} (full form) or {CHARTS_KEY} (minimal form)"),
        ))
    };
    let intent = match data.get(INTENT_KEY).filter(|_| has_full) {
        None => None,
        Some(text) => match serde_saphyr::from_str::<Intent>(text) {
            Ok(i) => Some(i),
            Err(e) => {
                let msg = e.to_string();
                let first = msg.lines().next().unwrap_or("invalid YAML");
                issues.push(Issue { location: format!("key {INTENT_KEY}"), message: strip_location_prefix(first) });
                None
            }
        },
    };
    match result {
        Ok(l) if issues.is_empty() => Ok(Ledger { intent, ..l }),
        Ok(_) => Err(LedgerError::Invalid(issues)),
        Err(LedgerError::Invalid(mut more)) => {
            issues.append(&mut more);
            Err(LedgerError::Invalid(issues))
        }
    }
}

/// Parse and validate a ledger from a file: a ConfigMap manifest, or a bare `ledger.yaml` document.
pub fn parse_file(text: &str) -> Result<Ledger, LedgerError> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        kind: Option<String>,
        #[serde(default)]
        data: Option<BTreeMap<String, String>>,
        #[serde(default)]
        charts: Option<String>,
    }
    // A bare ledger has `version:`; a ConfigMap manifest has `kind: ConfigMap`; a bare minimal
    // form has `charts:` (its keys are the ConfigMap's data keys).
    let probe: Result<Probe, _> = serde_saphyr::from_str(text);
    match probe {
        Ok(Probe { kind: None, charts: Some(_), .. }) => match serde_saphyr::from_str::<BTreeMap<String, String>>(text)
        {
            Ok(data) => parse_configmap_data(&data),
            Err(e) => Err(LedgerError::one("minimal form", strip_location_prefix(&e.to_string()))),
        },
        Ok(Probe { kind: Some(kind), data, .. }) if kind == "ConfigMap" => {
            parse_configmap_data(&data.unwrap_or_default())
        }
        Ok(Probe { kind: Some(kind), .. }) => Err(LedgerError::one(
            "kind",
            format!("expected a ConfigMap manifest or a {LEDGER_KEY} document, found kind {kind:?}"),
        )),
        _ => parse_full(text),
    }
}

/// A YAML value with its location.
type Node = Spanned<serde_json::Value>;

/// A problem with one key of a mapping: the key, its line (the mapping's when the key is
/// missing), and what is wrong. Placed in the document by [`Problem::issue`].
struct Problem {
    key: String,
    line: Option<u64>,
    message: String,
}

impl Problem {
    /// The issue, with the mapping's key path (`entries[1].`, or empty at the top).
    fn issue(self, path: &str, mapping_line: Option<u64>) -> Issue {
        let location = match self.line.or(mapping_line) {
            Some(l) => format!("{LEDGER_KEY} line {l}, {path}{}", self.key),
            None => format!("{LEDGER_KEY}, {path}{}", self.key),
        };
        Issue { location, message: self.message }
    }
}

/// The scalar fields of one YAML mapping, each with its line, read key by key with exact
/// types; every problem is collected (none stops the reading).
#[derive(Default)]
struct Fields {
    map: BTreeMap<String, Node>,
    problems: Vec<Problem>,
}

impl Fields {
    fn problem(&mut self, key: &str, line: Option<u64>, message: String) {
        self.problems.push(Problem { key: key.to_string(), line, message });
    }

    /// A string; `required` makes a missing key a problem too.
    fn string(&mut self, key: &str, required: bool) -> Option<String> {
        match self.map.remove(key) {
            Some(Spanned { value: serde_json::Value::String(s), .. }) => Some(s),
            Some(v) => {
                self.problem(key, Some(v.defined.line()), format!("must be a string, found {}", describe(&v.value)));
                None
            }
            None if required => {
                self.problem(key, None, "is required".into());
                None
            }
            None => None,
        }
    }

    /// An integer in the range of `i32`.
    fn int(&mut self, key: &str) -> Option<i32> {
        let v = self.map.remove(key)?;
        let line = Some(v.defined.line());
        match v.value.as_i64().map(i32::try_from) {
            Some(Ok(n)) => Some(n),
            Some(Err(_)) => {
                self.problem(key, line, format!("{} is out of range ({} to {})", v.value, i32::MIN, i32::MAX));
                None
            }
            None => {
                self.problem(key, line, format!("must be an integer, found {}", describe(&v.value)));
                None
            }
        }
    }

    /// `marked` or `unmarked`.
    fn ownership(&mut self) -> Option<Ownership> {
        let line = self.map.get("ownership").map(|v| v.defined.line());
        match self.string("ownership", false)?.as_str() {
            "marked" => Some(Ownership::Marked),
            "unmarked" => Some(Ownership::Unmarked),
            other => {
                self.problem("ownership", line, format!("must be \"marked\" or \"unmarked\", not {other:?}"));
                None
            }
        }
    }
}

/// How a YAML value reads in a message.
fn describe(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "nothing (an empty value)".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) => format!("the string {s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

const LEDGER_FIELDS: [&str; 7] =
    ["version", "upgrade", "pausedAt", "ownership", "fieldManager", "entries", "pausedBefore"];
const ENTRY_FIELDS: [&str; 9] =
    ["apiVersion", "kind", "namespace", "name", "field", "order", "upgrade", "ownership", "fieldManager"];

/// Reads a mapping key by key: known keys as values with their line (into `fields`), unknown
/// ones as problems, `lists` (entries, pausedBefore) through their own reader. One entry at a
/// time is held as values: a ledger of thousands of entries is read straight into typed entries.
fn read_mapping<'de, A: serde::de::MapAccess<'de>>(
    mut map: A,
    known: &[&str],
    mut list: impl FnMut(&str, &mut A) -> Result<bool, A::Error>,
) -> Result<Fields, A::Error> {
    let mut fields = Fields::default();
    while let Some(key) = map.next_key::<String>()? {
        if list(&key, &mut map)? {
            continue;
        }
        if known.contains(&key.as_str()) {
            let v: Node = map.next_value()?;
            fields.map.insert(key, v);
        } else {
            let v: Spanned<serde::de::IgnoredAny> = map.next_value()?;
            let message = format!("unknown field; expected one of {}", known.join(", "));
            fields.problem(&key, Some(v.defined.line()), message);
        }
    }
    Ok(fields)
}

/// What a non-mapping, non-list YAML node is, for messages (implements the scalar visits).
macro_rules! describe_scalars {
    ($out:ty, $wrap:expr) => {
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<$out, E> {
            Ok($wrap(format!("the boolean {v}")))
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$out, E> {
            Ok($wrap(format!("the number {v}")))
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$out, E> {
            Ok($wrap(format!("the number {v}")))
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<$out, E> {
            Ok($wrap(format!("the number {v}")))
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$out, E> {
            Ok($wrap(format!("the string {v:?}")))
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<$out, E> {
            Ok($wrap("nothing (an empty value)".to_string()))
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<$out, E> {
            Ok($wrap("nothing (an empty value)".to_string()))
        }
    };
}

/// One item of `entries` or `pausedBefore`: its typed fields and their problems, or what it
/// was instead of a mapping.
enum Item {
    Entry(Box<RawEntry>, Vec<Problem>),
    NotAMapping(String),
}

impl<'de> Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Item;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an entry (a mapping)")
            }
            describe_scalars!(Item, Item::NotAMapping);
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Item::NotAMapping("a list".into()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Item, A::Error> {
                let mut f = read_mapping(map, &ENTRY_FIELDS, |_, _| Ok(false))?;
                let raw = RawEntry {
                    api_version: f.string("apiVersion", false),
                    kind: f.string("kind", false),
                    namespace: f.string("namespace", false),
                    name: f.string("name", true).unwrap_or_default(),
                    field: f.string("field", false),
                    order: f.int("order"),
                    upgrade: f.string("upgrade", false),
                    ownership: f.ownership(),
                    field_manager: f.string("fieldManager", false),
                };
                Ok(Item::Entry(Box::new(raw), f.problems))
            }
        }
        d.deserialize_any(V)
    }
}

/// `entries` or `pausedBefore`: the items, each with the line it starts on, or what it was
/// instead of a list.
enum List {
    Items(Vec<Spanned<Item>>),
    NotAList(String),
}

impl<'de> Deserialize<'de> for List {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = List;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of entries")
            }
            describe_scalars!(List, List::NotAList);
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<List, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element::<Spanned<Item>>()? {
                    items.push(item);
                }
                Ok(List::Items(items))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<List, A::Error> {
                while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
                Ok(List::NotAList("a mapping".into()))
            }
        }
        d.deserialize_any(V)
    }
}

/// The full form as read: its scalar fields and its two lists.
struct Document {
    fields: Fields,
    entries: Option<Spanned<List>>,
    paused_before: Option<Spanned<List>>,
}

impl<'de> Deserialize<'de> for Document {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Document;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a ledger document (a mapping with version, upgrade, pausedAt, entries)")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Document, A::Error> {
                let (mut entries, mut paused_before) = (None, None);
                let fields = read_mapping(map, &LEDGER_FIELDS, |key, map| {
                    match key {
                        "entries" => entries = Some(map.next_value::<Spanned<List>>()?),
                        "pausedBefore" => paused_before = Some(map.next_value::<Spanned<List>>()?),
                        _ => return Ok(false),
                    }
                    Ok(true)
                })?;
                Ok(Document { fields, entries, paused_before })
            }
        }
        d.deserialize_map(V)
    }
}

/// A YAML error as an issue: its line, and saphyr's message without its own location prefix.
fn yaml_issue(e: &serde_saphyr::Error) -> Issue {
    let location = match e.location() {
        Some(l) => format!("{LEDGER_KEY} line {}", l.line()),
        None => LEDGER_KEY.to_string(),
    };
    // saphyr's message repeats the location and may carry a snippet; keep its first line.
    let msg = e.to_string();
    let first = msg.lines().next().unwrap_or("invalid YAML");
    Issue { location, message: strip_location_prefix(first) }
}

/// The entries of one list, with the line each starts on; problems go to `issues`.
fn read_list(key: &str, list: Option<Spanned<List>>, issues: &mut Vec<Issue>) -> Vec<(RawEntry, u64)> {
    let Some(list) = list else { return Vec::new() };
    let line = Some(list.defined.line());
    match list.value {
        List::NotAList(what) if what.starts_with("nothing") => Vec::new(),
        List::NotAList(what) => {
            let message = format!("must be a list, found {what}");
            issues.push(Problem { key: key.to_string(), line, message }.issue("", None));
            Vec::new()
        }
        List::Items(items) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.into_iter().enumerate() {
                let item_line = item.defined.line();
                let path = format!("{key}[{i}].");
                match item.value {
                    Item::NotAMapping(what) => {
                        let message = format!("must be a mapping, found {what}");
                        issues.push(
                            Problem { key: format!("{key}[{i}]"), line: Some(item_line), message }.issue("", None),
                        );
                    }
                    Item::Entry(raw, problems) => {
                        issues.extend(problems.into_iter().map(|p| p.issue(&path, Some(item_line))));
                        out.push((*raw, item_line));
                    }
                }
            }
            out
        }
    }
}

fn parse_full(text: &str) -> Result<Ledger, LedgerError> {
    let doc: Document = serde_saphyr::from_str(text).map_err(|e| LedgerError::Invalid(vec![yaml_issue(&e)]))?;
    let Document { mut fields, entries: raw_entries, paused_before: raw_before } = doc;
    let version = fields.string("version", true);
    let upgrade = fields.string("upgrade", true);
    let paused_at_text = fields.string("pausedAt", true);
    let ownership = fields.ownership();
    let field_manager = fields.string("fieldManager", false).unwrap_or_else(|| DEFAULT_FIELD_MANAGER.to_string());
    if raw_entries.is_none() {
        fields.problem("entries", None, "is required (an empty list when nothing was paused)".into());
    }
    let mut issues: Vec<Issue> = fields.problems.into_iter().map(|p| p.issue("", None)).collect();
    if let Some(v) = &version
        && v != FORMAT_VERSION
    {
        issues.push(Issue {
            location: format!("{LEDGER_KEY} version"),
            message: format!("unknown version {v:?}; this build reads {FORMAT_VERSION:?}"),
        });
    }
    if let Some(u) = &upgrade {
        check_upgrade_id(u, &format!("{LEDGER_KEY} upgrade"), &mut issues);
    }
    let paused_at = paused_at_text.and_then(|t| parse_time(&t, &format!("{LEDGER_KEY} pausedAt"), &mut issues));
    check_field_manager(&field_manager, &format!("{LEDGER_KEY} fieldManager"), &mut issues);
    let raw_entries = read_list("entries", raw_entries, &mut issues);
    let raw_before = read_list("pausedBefore", raw_before, &mut issues);

    // An empty `entries` is valid: a record run that found everything paused before the upgrade.
    let mut entries = Vec::with_capacity(raw_entries.len());
    for (i, (raw, line)) in raw_entries.into_iter().enumerate() {
        let loc = format!("{LEDGER_KEY} line {line}, entries[{i}]");
        if let Some(entry) = validate_entry(raw, &loc, Some(line), &mut issues) {
            entries.push(entry);
        }
    }
    let mut paused_before = Vec::new();
    let mut before_lines = Vec::new();
    for (i, (raw, line)) in raw_before.into_iter().enumerate() {
        let loc = format!("{LEDGER_KEY} line {line}, pausedBefore[{i}]");
        if raw.upgrade.is_some() || raw.ownership.is_some() || raw.field_manager.is_some() {
            issues.push(Issue {
                location: loc.clone(),
                message: "upgrade, ownership and fieldManager belong to entries, not to pausedBefore".into(),
            });
        }
        if let Some(entry) = validate_entry(raw, &loc, Some(line), &mut issues) {
            paused_before.push(entry.object);
            before_lines.push(line);
        }
    }
    check_duplicates(&entries, &mut issues);
    check_overlap(&entries, &paused_before, &before_lines, &mut issues);
    if !issues.is_empty() {
        return Err(LedgerError::Invalid(issues));
    }
    Ok(Ledger {
        upgrade: upgrade.unwrap_or_default(),
        paused_at,
        ownership: ownership.unwrap_or(Ownership::Marked),
        field_manager,
        entries,
        paused_before,
        intent: None,
        form: Form::Full,
        digest: digest(&[(LEDGER_KEY, text)]),
    })
}

fn parse_minimal(data: &BTreeMap<String, String>) -> Result<Ledger, LedgerError> {
    let mut issues = Vec::new();
    let namespace = data.get(NAMESPACE_KEY).map(|s| s.trim().to_string());
    if let Some(ns) = &namespace
        && let Err(m) = check_label(ns)
    {
        issues.push(Issue { location: format!("key {NAMESPACE_KEY}"), message: m });
    }
    let upgrade = data.get(UPGRADE_KEY).map(|s| s.trim().to_string()).unwrap_or_default();
    if data.contains_key(UPGRADE_KEY) {
        check_upgrade_id(&upgrade, &format!("key {UPGRADE_KEY}"), &mut issues);
    }
    let paused_at =
        data.get(PAUSED_AT_KEY).and_then(|s| parse_time(s.trim(), &format!("key {PAUSED_AT_KEY}"), &mut issues));
    let ownership = match data.get(OWNERSHIP_KEY).map(|s| s.trim()) {
        None | Some("unmarked") => Ownership::Unmarked,
        Some("marked") => Ownership::Marked,
        Some(other) => {
            issues.push(Issue {
                location: format!("key {OWNERSHIP_KEY}"),
                message: format!("must be \"marked\" or \"unmarked\", not {other:?}"),
            });
            Ownership::Unmarked
        }
    };
    if ownership == Ownership::Marked && upgrade.is_empty() {
        issues.push(Issue {
            location: format!("key {OWNERSHIP_KEY}"),
            message: format!("\"marked\" needs the {UPGRADE_KEY} key: marks carry the upgrade id"),
        });
    }
    let charts = &data[CHARTS_KEY];
    let mut entries = Vec::new();
    for (i, token) in charts.split(|c: char| c.is_whitespace() || c == ',').filter(|t| !t.is_empty()).enumerate() {
        let loc = format!("key {CHARTS_KEY}, item {} ({token:?})", i + 1);
        let (ns, name) = match token.split_once('/') {
            Some((ns, name)) => (Some(ns.to_string()), name.to_string()),
            None => match &namespace {
                Some(ns) => (Some(ns.clone()), token.to_string()),
                None => {
                    issues.push(Issue {
                        location: loc,
                        message: format!("no namespace: write NAMESPACE/NAME or set the {NAMESPACE_KEY} key"),
                    });
                    continue;
                }
            },
        };
        let raw = RawEntry {
            api_version: None,
            kind: None,
            namespace: ns,
            name,
            field: None,
            order: None,
            upgrade: None,
            ownership: None,
            field_manager: None,
        };
        if let Some(e) = validate_entry(raw, &loc, None, &mut issues) {
            entries.push(e);
        }
    }
    if entries.is_empty() && issues.is_empty() {
        issues.push(Issue { location: format!("key {CHARTS_KEY}"), message: "lists no charts".into() });
    }
    check_duplicates(&entries, &mut issues);
    if !issues.is_empty() {
        return Err(LedgerError::Invalid(issues));
    }

    Ok(Ledger {
        upgrade,
        paused_at,
        ownership,
        field_manager: DEFAULT_FIELD_MANAGER.to_string(),
        entries,
        paused_before: Vec::new(),
        intent: None,
        form: Form::Minimal,
        digest: digest_of(|k| data.get(k).map(String::as_str)),
    })
}

/// saphyr prefixes messages with "error: line N column M: "; we print the location ourselves.
fn strip_location_prefix(msg: &str) -> String {
    let m = msg.strip_prefix("error: ").unwrap_or(msg);
    match m.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((pos, rest)) if pos.contains("column") => rest.to_string(),
        _ => m.to_string(),
    }
}

fn validate_entry(raw: RawEntry, loc: &str, line: Option<u64>, issues: &mut Vec<Issue>) -> Option<Entry> {
    let before = issues.len();
    let mut push = |m: String| issues.push(Issue { location: loc.to_string(), message: m });
    let api_version = raw.api_version.unwrap_or_else(|| kinds::MANAGED_CHART_API_VERSION.to_string());
    if let Err(m) = check_api_version(&api_version) {
        push(m);
    }
    let kind = raw.kind.unwrap_or_else(|| kinds::MANAGED_CHART_KIND.to_string());
    if !is_kind(&kind) {
        push(format!("kind {kind:?} is not a valid kind (PascalCase letters and digits)"));
    }
    if let Some(ns) = &raw.namespace
        && let Err(m) = check_label(ns)
    {
        push(format!("namespace: {m}"));
    }
    // An empty name was reported missing already.
    if !raw.name.is_empty()
        && let Err(m) = check_subdomain(&raw.name)
    {
        push(format!("name: {m}"));
    }
    let object = Arc::new(ObjectRef { api_version, kind, namespace: raw.namespace, name: raw.name.clone() });
    let field_text = raw.field.unwrap_or_else(|| kinds::default_field(object.group(), &object.kind).to_string());
    let field = match FieldPath::parse(&field_text) {
        Ok(f) => Some(f),
        Err(m) => {
            push(m);
            None
        }
    };
    let order = raw.order.unwrap_or_else(|| kinds::default_order(&object));
    if let Some(m) = &raw.upgrade
        && let Err(e) = check_upgrade(m)
    {
        push(format!("upgrade: {e}"));
    }
    if let Some(fm) = &raw.field_manager
        && (fm.is_empty() || fm.len() > 128)
    {
        push("fieldManager: must be 1-128 characters".into());
    }
    if issues.len() != before || raw.name.is_empty() {
        return None;
    }
    Some(Entry {
        object,
        field: field?,
        order,
        mark: raw.upgrade.map(Into::into),
        ownership: raw.ownership,
        field_manager: raw.field_manager.map(Into::into),
        line,
    })
}

fn check_field_manager(fm: &str, loc: &str, issues: &mut Vec<Issue>) {
    if fm.is_empty() || fm.len() > 128 {
        issues.push(Issue { location: loc.to_string(), message: "must be 1-128 characters".into() });
    }
}

/// An object is either restored (`entries`) or never restored (`pausedBefore`), not both.
fn check_overlap(entries: &[Entry], before: &[Arc<ObjectRef>], before_lines: &[u64], issues: &mut Vec<Issue>) {
    let listed: HashMap<_, &Entry> = entries.iter().map(|e| (e.object.identity(), e)).collect();
    for (b, line) in before.iter().zip(before_lines) {
        if let Some(e) = listed.get(&b.identity()) {
            let first = e.line.map(|l| format!(" (line {l})")).unwrap_or_default();
            issues.push(Issue {
                location: format!("{LEDGER_KEY} line {line}, pausedBefore"),
                message: format!(
                    "{b} is listed in entries{first} and in pausedBefore: restore it or never restore it, not both"
                ),
            });
        }
    }
}

fn check_duplicates(entries: &[Entry], issues: &mut Vec<Issue>) {
    let mut seen: HashMap<_, &Entry> = HashMap::new();
    for e in entries {
        if let Some(first) = seen.get(&e.object.identity()) {
            let at = |e: &Entry| e.line.map(|l| format!(" (line {l})")).unwrap_or_default();
            issues.push(Issue {
                location: e.line.map(|l| format!("{LEDGER_KEY} line {l}")).unwrap_or_else(|| CHARTS_KEY.into()),
                message: format!("duplicate entry for {}{}; first listed{}", e.object, at(e), at(first)),
            });
        } else {
            seen.insert(e.object.identity(), e);
        }
    }
}

/// Check an upgrade id: it is stored in an annotation value and in Event messages, so it must
/// be printable and short.
pub fn check_upgrade(id: &str) -> Result<(), String> {
    let ok = !id.is_empty() && id.len() <= 253 && id.chars().all(|c| c.is_ascii_alphanumeric() || "-._:/".contains(c));
    if ok { Ok(()) } else { Err(format!("upgrade id {id:?} must be 1-253 characters of letters, digits and -._:/")) }
}

fn check_upgrade_id(id: &str, loc: &str, issues: &mut Vec<Issue>) {
    if let Err(message) = check_upgrade(id) {
        issues.push(Issue { location: loc.to_string(), message });
    }
}

fn parse_time(s: &str, loc: &str, issues: &mut Vec<Issue>) -> Option<Timestamp> {
    match s.parse::<Timestamp>() {
        Ok(t) => Some(t),
        Err(e) => {
            issues.push(Issue {
                location: loc.to_string(),
                message: format!("{s:?} is not an RFC 3339 timestamp ({e})"),
            });
            None
        }
    }
}

/// Check a DNS-1123 label (namespaces).
pub fn check_label(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("{s:?} is not a valid DNS-1123 label (lowercase letters, digits, '-', at most 63)"))
    }
}

/// Check a DNS-1123 subdomain (object names).
pub fn check_subdomain(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a valid object name (DNS-1123 subdomain: lowercase letters, digits, '-', '.', at most 253)"
        ))
    }
}

fn check_api_version(s: &str) -> Result<(), String> {
    let (group, version) = match s.rsplit_once('/') {
        Some((g, v)) => (Some(g), v),
        None => (None, s),
    };
    let version_ok = {
        let rest = version.strip_prefix('v').unwrap_or("");
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let tail = &rest[digits..];
        digits > 0
            && (tail.is_empty()
                || ["alpha", "beta"].iter().any(|p| {
                    tail.strip_prefix(p).is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                }))
    };
    let group_ok = group.is_none_or(|g| {
        check_subdomain(g).is_ok() && g.contains('.')
            || g == "apps"
            || g == "batch"
            || g == "policy"
            || g == "autoscaling"
    });
    if version_ok && group_ok {
        Ok(())
    } else {
        Err(format!("apiVersion {s:?} is not GROUP/VERSION (or v1), e.g. management.cattle.io/v3"))
    }
}

fn is_kind(s: &str) -> bool {
    s.len() <= 63
        && s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// The digest of a ConfigMap's recorded data (`get` looks a data key up), equal to the
/// [`Ledger::digest`] of the ledger parsed from it, computed without parsing: a status write
/// checks with it that the ledger did not change under the run.
pub fn digest_of<'a>(get: impl Fn(&str) -> Option<&'a str>) -> String {
    match get(LEDGER_KEY) {
        Some(text) => digest(&[(LEDGER_KEY, text)]),
        None => {
            let keys = [CHARTS_KEY, NAMESPACE_KEY, UPGRADE_KEY, PAUSED_AT_KEY, OWNERSHIP_KEY];
            digest(&keys.iter().filter_map(|k| get(k).map(|v| (*k, v))).collect::<Vec<_>>())
        }
    }
}

fn digest(parts: &[(&str, &str)]) -> String {
    let mut h = Sha256::new();
    for (k, v) in parts {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    let out = h.finalize();
    out.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    const FULL: &str = "version: pause-ledger/v1
upgrade: hvst-upgrade-abcde
pausedAt: 2026-11-27T10:00:00Z
entries:
  - namespace: fleet-local
    name: harvester
  - namespace: fleet-local
    name: harvester-crd
  - apiVersion: batch/v1
    kind: CronJob
    namespace: default
    name: nightly
    order: 5
";

    #[test]
    fn full_form_defaults() {
        let l = parse_configmap_data(&data(&[(LEDGER_KEY, FULL)])).unwrap();
        assert_eq!(l.upgrade, "hvst-upgrade-abcde");
        assert_eq!(l.ownership, Ownership::Marked);
        assert_eq!(l.entries.len(), 3);
        assert_eq!(l.entries[0].object.kind, "ManagedChart");
        assert_eq!(l.entries[0].order, 1);
        assert_eq!(l.entries[1].order, 0, "-crd charts go first");
        assert_eq!(l.entries[2].field.as_str(), "spec.suspend");
        assert_eq!(l.entries[2].order, 5);
        assert_eq!(l.entries[0].line, Some(5));
        assert_eq!(l.form, Form::Full);
    }

    #[test]
    fn minimal_form() {
        let l = parse_configmap_data(&data(&[
            (CHARTS_KEY, "harvester harvester-crd,\nother-ns/rancher-logging-crd"),
            (NAMESPACE_KEY, "fleet-local"),
        ]))
        .unwrap();
        assert_eq!(l.ownership, Ownership::Unmarked);
        assert_eq!(l.entries.len(), 3);
        assert_eq!(l.entries[2].object.namespace.as_deref(), Some("other-ns"));
        assert_eq!(l.form, Form::Minimal);
    }

    fn invalid(d: BTreeMap<String, String>) -> Vec<Issue> {
        match parse_configmap_data(&d) {
            Err(LedgerError::Invalid(v)) => v,
            Ok(l) => panic!("accepted: {l:?}"),
        }
    }

    #[test]
    fn rejects_with_locations() {
        let bad_yaml = invalid(data(&[(LEDGER_KEY, "version: [\n")]));
        assert!(bad_yaml[0].location.starts_with("ledger.yaml"), "{bad_yaml:?}");

        let v = invalid(data(&[(LEDGER_KEY, &FULL.replace("pause-ledger/v1", "pause-ledger/v9"))]));
        assert!(v[0].message.contains("unknown version"), "{v:?}");

        let v = invalid(data(&[(LEDGER_KEY, &FULL.replace("name: harvester\n", "name: Harvester_X\n"))]));
        assert!(v[0].location.contains("line 5"), "{v:?}");
        assert!(v[0].message.contains("Harvester_X"), "{v:?}");

        let v = invalid(data(&[(LEDGER_KEY, &FULL.replace("order: 5", "order: five"))]));
        assert!(v[0].location.contains("line"), "{v:?}");

        let v = invalid(data(&[(LEDGER_KEY, &FULL.replace("name: harvester-crd", "name: harvester"))]));
        assert!(v[0].message.contains("duplicate"), "{v:?}");

        let v = invalid(data(&[(LEDGER_KEY, &FULL.replace("    order: 5\n", "    colour: red\n"))]));
        assert_eq!(v[0].location, "ledger.yaml line 13, entries[2].colour", "{v:?}");
        assert!(v[0].message.starts_with("unknown field"), "{v:?}");

        let v = invalid(data(&[(LEDGER_KEY, &FULL.replace("upgrade: hvst-upgrade-abcde\n", ""))]));
        assert_eq!((v[0].location.as_str(), v[0].message.as_str()), ("ledger.yaml, upgrade", "is required"), "{v:?}");

        let v = invalid(data(&[(CHARTS_KEY, "harvester")]));
        assert!(v[0].message.contains("no namespace"), "{v:?}");

        let v = invalid(data(&[(CHARTS_KEY, "a/b"), ("chart", "x")]));
        assert!(v[0].location.contains("chart"), "{v:?}");

        let v = invalid(data(&[]));
        assert!(v[0].message.contains("no recorded set"), "{v:?}");

        let v = invalid(data(&[(LEDGER_KEY, &FULL.replace("kind: CronJob", "kind: cron-job"))]));
        assert!(v[0].message.contains("kind"), "{v:?}");

        let both = format!("{FULL}pausedBefore:\n  - namespace: fleet-local\n    name: harvester\n");
        let v = invalid(data(&[(LEDGER_KEY, &both)]));
        assert!(v[0].message.contains("not both") && v[0].location.contains("line 15"), "{v:?}");

        let v = invalid(data(&[(LEDGER_KEY, FULL), (INTENT_KEY, "run: x\n")]));
        assert!(v[0].location.contains(INTENT_KEY), "{v:?}");
    }

    #[test]
    fn every_problem_names_its_key_and_line_and_all_come_at_once() {
        let text = "version: pause-ledger/v1
upgrade:
pausedAt: 2026-11-27T10:00:00Z
entries:
  - namespace: fleet-local
    name:
  - namespace: fleet-local
    name: harvester
    order: \"3\"
  - namespace: fleet-local
    name: harvester-crd
    order: 1.5
  - namespace: fleet-local
    name: rancher-logging-crd
    order: 99999999999
  - namespace: fleet-local
    name: rancher-monitoring-crd
    order: -2
";
        let v = invalid(data(&[(LEDGER_KEY, text)]));
        let got: Vec<String> = v.iter().map(ToString::to_string).collect();
        assert_eq!(
            got,
            [
                "ledger.yaml line 2, upgrade: must be a string, found nothing (an empty value)",
                "ledger.yaml line 6, entries[0].name: must be a string, found nothing (an empty value)",
                "ledger.yaml line 9, entries[1].order: must be an integer, found the string \"3\"",
                "ledger.yaml line 12, entries[2].order: must be an integer, found the number 1.5",
                "ledger.yaml line 15, entries[3].order: 99999999999 is out of range (-2147483648 to 2147483647)",
            ],
            "negative orders are allowed; nothing leaks Rust types"
        );
        let v = invalid(data(&[(
            LEDGER_KEY,
            "version: pause-ledger/v1\nupgrade: u\npausedAt: 2026-11-27T10:00:00Z\nentries: harvester\n",
        )]));
        assert_eq!(v[0].to_string(), "ledger.yaml line 4, entries: must be a list, found the string \"harvester\"");
    }

    #[test]
    fn per_entry_rules_and_the_intent() {
        let text = FULL.replace(
            "    name: harvester-crd\n",
            "    name: harvester-crd\n    upgrade: older-upgrade\n    ownership: unmarked\n    fieldManager: kubectl-patch\n",
        );
        let intent = Intent { run: "r1".into(), beat: 2, expires_after_seconds: 25 };
        let l = parse_configmap_data(&data(&[(LEDGER_KEY, &text), (INTENT_KEY, &intent.to_yaml())])).unwrap();
        let e = &l.entries[1];
        assert_eq!(e.mark.as_deref(), Some("older-upgrade"));
        assert_eq!(e.ownership, Some(Ownership::Unmarked));
        assert_eq!(e.field_manager.as_deref(), Some("kubectl-patch"));
        assert_eq!(l.entries[0].mark, None);
        assert_eq!(l.intent, Some(intent));
        // The intent is not part of the recorded set.
        assert_eq!(l.digest, digest_of(|k| (k == LEDGER_KEY).then_some(text.as_str())));
    }

    #[test]
    fn api_versions() {
        assert!(check_api_version("v1").is_ok());
        assert!(check_api_version("apps/v1").is_ok());
        assert!(check_api_version("fleet.cattle.io/v1alpha1").is_ok());
        assert!(check_api_version("management.cattle.io/v3").is_ok());
        assert!(check_api_version("management.cattle.io").is_err());
        assert!(check_api_version("x/v1").is_err());
        assert!(check_api_version("example.com/v1gamma1").is_err());
    }

    #[test]
    fn configmap_file() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  charts: fleet-local/harvester\n";
        assert_eq!(parse_file(cm).unwrap().entries.len(), 1);
        assert_eq!(parse_file(FULL).unwrap().entries.len(), 3);
        assert!(parse_file("kind: Secret\n").is_err());
        assert_eq!(parse_file("charts: a/b c/d\n").unwrap().entries.len(), 2);
        assert_eq!(strip_location_prefix("error: line 9 column 12: invalid i32"), "invalid i32");
    }
}
