//! Presets: named target sets for platforms whose upgrades pause a known set of objects.

use crate::kinds::{FieldPath, MANAGED_CHART_API_VERSION, MANAGED_CHART_KIND, ObjectRef};
use crate::ledger::Entry;

/// A preset: which Harvester versions paused which ManagedCharts (harvester
/// `package/upgrade/upgrade_manifests.sh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Harvester v1.2 and later: the four charts its upgrade pauses in `fleet-local`.
    Harvester,
    /// Harvester v1.2–v1.4.3, which also paused `rancher-monitoring` and `rancher-logging`
    /// while they still existed.
    Harvester12,
    /// Harvester v1.0–v1.1.
    Harvester10,
}

/// The charts Harvester v1.2+ pauses, with their restore order (CRD charts first).
pub const HARVESTER_CHARTS: [(&str, i32); 4] =
    [("harvester-crd", 0), ("rancher-monitoring-crd", 0), ("rancher-logging-crd", 0), ("harvester", 1)];
/// The charts Harvester v1.2–v1.4.3 paused.
pub const HARVESTER_1_2_CHARTS: [(&str, i32); 6] = [
    ("harvester-crd", 0),
    ("rancher-monitoring-crd", 0),
    ("rancher-logging-crd", 0),
    ("harvester", 1),
    ("rancher-monitoring", 1),
    ("rancher-logging", 1),
];
/// The charts Harvester v1.0–v1.1 paused.
pub const HARVESTER_1_0_CHARTS: [(&str, i32); 4] =
    [("harvester-crd", 0), ("rancher-monitoring-crd", 0), ("harvester", 1), ("rancher-monitoring", 1)];

/// Harvester's ManagedCharts live here.
pub const HARVESTER_NAMESPACE: &str = "fleet-local";

impl Preset {
    /// The preset's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Harvester => "harvester",
            Preset::Harvester12 => "harvester-1.2",
            Preset::Harvester10 => "harvester-1.0",
        }
    }

    /// The charts and their orders.
    pub fn charts(self) -> &'static [(&'static str, i32)] {
        match self {
            Preset::Harvester => &HARVESTER_CHARTS,
            Preset::Harvester12 => &HARVESTER_1_2_CHARTS,
            Preset::Harvester10 => &HARVESTER_1_0_CHARTS,
        }
    }

    /// Whether the preset is Harvester's (every one is, today): restoring it while a Harvester
    /// upgrade runs is refused.
    pub fn is_harvester(self) -> bool {
        true
    }

    /// The preset's entries; `namespace` overrides the preset's own namespace (tests, forks).
    pub fn entries(self, namespace: Option<&str>) -> Vec<Entry> {
        let ns = namespace.unwrap_or(HARVESTER_NAMESPACE);
        self.charts()
            .iter()
            .map(|(name, order)| {
                let object = std::sync::Arc::new(ObjectRef {
                    api_version: MANAGED_CHART_API_VERSION.into(),
                    kind: MANAGED_CHART_KIND.into(),
                    namespace: Some(ns.into()),
                    name: (*name).into(),
                });
                let field = FieldPath::parse("spec.paused").unwrap_or_else(|_| unreachable!("a valid literal"));
                Entry::new(object, field, *order)
            })
            .collect()
    }
}

/// Whether `o` is one of the ManagedCharts any Harvester version pauses.
pub fn is_harvester_chart(o: &ObjectRef) -> bool {
    o.is_managed_chart()
        && [&HARVESTER_1_2_CHARTS[..], &HARVESTER_1_0_CHARTS[..]]
            .iter()
            .any(|set| set.iter().any(|(n, _)| *n == o.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_charts_first() {
        for p in [Preset::Harvester, Preset::Harvester12, Preset::Harvester10] {
            let e = p.entries(None);
            assert!(e.iter().all(|e| e.object.namespace.as_deref() == Some("fleet-local")));
            let harvester = e.iter().find(|e| e.object.name == "harvester").unwrap();
            assert!(e.iter().filter(|x| x.object.name.ends_with("-crd")).all(|x| x.order < harvester.order), "{p:?}");
            assert!(e.iter().all(|x| is_harvester_chart(&x.object)));
        }
        assert_eq!(Preset::Harvester.entries(None).len(), 4);
        assert_eq!(Preset::Harvester12.entries(None).len(), 6);
        assert_eq!(Preset::Harvester.entries(Some("x"))[0].object.namespace.as_deref(), Some("x"));
    }
}
