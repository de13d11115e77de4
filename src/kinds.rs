//! Object references and the table of pausable kinds pause-ledger knows by heart.
//!
//! Kinds outside the table work too (their API is resolved through discovery); the table
//! only supplies each known kind's default pause field, so a ledger entry can omit it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The Rancher ManagedChart apiVersion, the default for ledger entries.
pub const MANAGED_CHART_API_VERSION: &str = "management.cattle.io/v3";
/// The Rancher ManagedChart kind, the default for ledger entries.
pub const MANAGED_CHART_KIND: &str = "ManagedChart";

/// One Kubernetes object a ledger entry names.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// `group/version`, or `v1` for the core group.
    pub api_version: String,
    /// The kind, e.g. `ManagedChart`.
    pub kind: String,
    /// The namespace; `None` for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The object's name.
    pub name: String,
}

impl ObjectRef {
    /// The API group (empty for the core group).
    pub fn group(&self) -> &str {
        self.api_version.rsplit_once('/').map(|(g, _)| g).unwrap_or("")
    }

    /// The API version without the group.
    pub fn version(&self) -> &str {
        self.api_version.rsplit_once('/').map(|(_, v)| v).unwrap_or(&self.api_version)
    }

    /// Whether this is a Rancher ManagedChart.
    pub fn is_managed_chart(&self) -> bool {
        self.kind == MANAGED_CHART_KIND && self.group() == "management.cattle.io"
    }

    /// Identity ignoring the version: the same object served at two versions is one object.
    pub fn identity(&self) -> (String, String, Option<String>, String) {
        (self.group().to_string(), self.kind.clone(), self.namespace.clone(), self.name.clone())
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = self.group();
        let kind = if group.is_empty() { self.kind.clone() } else { format!("{}.{}", self.kind, group) };
        match &self.namespace {
            Some(ns) => write!(f, "{kind} {ns}/{}", self.name),
            None => write!(f, "{kind} {}", self.name),
        }
    }
}

/// A known pausable kind: its group, kind and default pause field.
#[derive(Clone, Copy, Debug)]
pub struct KnownKind {
    /// API group.
    pub group: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Dotted path of the boolean that pauses it.
    pub field: &'static str,
}

/// Pausable kinds whose pause field is known without being told.
pub const KNOWN_KINDS: &[KnownKind] = &[
    KnownKind { group: "management.cattle.io", kind: "ManagedChart", field: "spec.paused" },
    KnownKind { group: "fleet.cattle.io", kind: "Bundle", field: "spec.paused" },
    KnownKind { group: "fleet.cattle.io", kind: "GitRepo", field: "spec.paused" },
    KnownKind { group: "fleet.cattle.io", kind: "Cluster", field: "spec.paused" },
    KnownKind { group: "apps", kind: "Deployment", field: "spec.paused" },
    KnownKind { group: "batch", kind: "CronJob", field: "spec.suspend" },
    KnownKind { group: "cluster.x-k8s.io", kind: "Cluster", field: "spec.paused" },
    KnownKind { group: "helm.toolkit.fluxcd.io", kind: "HelmRelease", field: "spec.suspend" },
    KnownKind { group: "kustomize.toolkit.fluxcd.io", kind: "Kustomization", field: "spec.suspend" },
];

/// The default pause field for a kind: the table's, else `spec.paused`.
pub fn default_field(group: &str, kind: &str) -> &'static str {
    KNOWN_KINDS.iter().find(|k| k.group == group && k.kind == kind).map(|k| k.field).unwrap_or("spec.paused")
}

/// The restore order of an entry that names none: Rancher's convention is that a chart named
/// `*-crd` installs the CRDs the other charts use, so those ManagedCharts go first (0), the rest
/// after (1).
pub fn default_order(o: &ObjectRef) -> i32 {
    if o.is_managed_chart() && o.name.ends_with("-crd") { 0 } else { 1 }
}

/// A dotted field path such as `spec.paused`, validated to lie under `spec`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldPath(std::sync::Arc<str>);

impl FieldPath {
    /// Parse and validate a dotted path: `spec.` followed by 1-4 camelCase segments.
    pub fn parse(s: &str) -> Result<Self, String> {
        let segments: Vec<&str> = s.split('.').collect();
        if segments.first() != Some(&"spec") || segments.len() < 2 {
            return Err(format!("field {s:?} must be a path under spec, e.g. spec.paused"));
        }
        if segments.len() > 5 {
            return Err(format!("field {s:?} is nested too deeply (at most 4 levels under spec)"));
        }
        for seg in &segments {
            let ok = seg.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && seg.chars().all(|c| c.is_ascii_alphanumeric());
            if !ok {
                return Err(format!("field {s:?} has an invalid segment {seg:?} (letters and digits only)"));
            }
        }
        Ok(Self(s.into()))
    }

    /// The path segments.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// The JSON Pointer (RFC 6901) for this path; segments hold no `~` or `/` by construction.
    pub fn pointer(&self) -> String {
        self.segments().fold(String::new(), |mut acc, s| {
            acc.push('/');
            acc.push_str(s);
            acc
        })
    }

    /// The dotted form.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths() {
        assert_eq!(FieldPath::parse("spec.paused").unwrap().pointer(), "/spec/paused");
        assert!(FieldPath::parse("paused").is_err());
        assert!(FieldPath::parse("spec").is_err());
        assert!(FieldPath::parse("spec.pa-used").is_err());
        assert!(FieldPath::parse("spec.a.b.c.d.e").is_err());
        assert!(FieldPath::parse("metadata.paused").is_err());
    }

    #[test]
    fn defaults_and_display() {
        assert_eq!(default_field("batch", "CronJob"), "spec.suspend");
        assert_eq!(default_field("example.com", "Widget"), "spec.paused");
        let r = ObjectRef {
            api_version: "management.cattle.io/v3".into(),
            kind: "ManagedChart".into(),
            namespace: Some("fleet-local".into()),
            name: "harvester".into(),
        };
        assert_eq!(r.to_string(), "ManagedChart.management.cattle.io fleet-local/harvester");
        assert!(r.is_managed_chart());
        let d = ObjectRef { api_version: "v1".into(), kind: "Node".into(), namespace: None, name: "n".into() };
        assert_eq!(d.group(), "");
        assert_eq!(d.version(), "v1");
    }
}
