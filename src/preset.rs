//! Presets: named target sets for platforms whose upgrades pause a known set of objects.

use crate::kinds::{FieldPath, MANAGED_CHART_API_VERSION, MANAGED_CHART_KIND, ObjectRef};
use crate::ledger::Entry;

/// A preset's name and its charts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Harvester: the ManagedCharts its upgrade pauses in `fleet-local`, CRD charts first.
    Harvester,
}

/// Harvester's upgrade pauses these four ManagedCharts (harvester/harvester upgrade.sh).
pub const HARVESTER_CHARTS: [(&str, i32); 4] =
    [("harvester-crd", 0), ("rancher-monitoring-crd", 0), ("rancher-logging-crd", 0), ("harvester", 1)];

/// Harvester's ManagedCharts live here.
pub const HARVESTER_NAMESPACE: &str = "fleet-local";

impl Preset {
    /// The preset's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Harvester => "harvester",
        }
    }

    /// The preset's entries; `namespace` overrides the preset's own namespace (tests, forks).
    pub fn entries(self, namespace: Option<&str>) -> Vec<Entry> {
        match self {
            Preset::Harvester => {
                let ns = namespace.unwrap_or(HARVESTER_NAMESPACE);
                HARVESTER_CHARTS
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harvester_crd_charts_first() {
        let e = Preset::Harvester.entries(None);
        assert_eq!(e.len(), 4);
        assert!(e.iter().all(|e| e.object.namespace.as_deref() == Some("fleet-local")));
        let harvester = e.iter().find(|e| e.object.name == "harvester").unwrap();
        assert!(e.iter().filter(|x| x.object.name.ends_with("-crd")).all(|x| x.order < harvester.order));
        assert_eq!(Preset::Harvester.entries(Some("x"))[0].object.namespace.as_deref(), Some("x"));
    }
}
