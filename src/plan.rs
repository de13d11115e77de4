//! The plan: validated entries turned into ordered waves of entries, each entry's kind
//! resolved through API discovery. Nothing is written while planning.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::api::Resolved;
use crate::context::Context;
use crate::ledger::{Entry, Issue, LEDGER_KEY, LedgerError};
use crate::retry::Failure;

/// One entry ready to restore.
#[derive(Clone, Debug)]
pub struct Step {
    /// The ledger entry.
    pub entry: Entry,
    /// Where its API lives (one per kind, shared by its steps).
    pub resolved: Arc<Resolved>,
    /// `rescue`: what it listed; an object that changed since the operator saw the list is
    /// left alone.
    pub pin: Option<Pin>,
}

/// What `rescue` showed of an object. A spec change moves the generation; a same-value
/// server-side apply of the pause (someone taking co-ownership of it) does not, but changes
/// the pause field's owners.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    /// metadata.generation when listed.
    pub generation: i64,
    /// The pause field's owners when listed, sorted.
    pub owners: Vec<String>,
}

impl Pin {
    /// A pin of `generation` and `owners` (in any order).
    pub fn new(generation: i64, owners: &[String]) -> Pin {
        let mut owners = owners.to_vec();
        owners.sort();
        Pin { generation, owners }
    }
}

/// Entries of one `order`, restored concurrently.
#[derive(Clone, Debug)]
pub struct Wave {
    /// The order value.
    pub order: i32,
    /// Its steps.
    pub steps: Vec<Step>,
}

/// The ordered waves.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Lowest order first.
    pub waves: Vec<Wave>,
}

impl Plan {
    /// Number of steps.
    pub fn len(&self) -> usize {
        self.waves.iter().map(|w| w.steps.len()).sum()
    }

    /// Whether the plan is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every step, lowest order first.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.waves.iter().flat_map(|w| &w.steps)
    }

    /// Keep only the steps `pin` gives a pin for, each pinned to it (`rescue`).
    pub fn pinned(mut self, mut pin: impl FnMut(&Step) -> Option<Pin>) -> Self {
        for w in &mut self.waves {
            w.steps.retain_mut(|s| {
                s.pin = pin(s);
                s.pin.is_some()
            });
        }
        self.waves.retain(|w| !w.steps.is_empty());
        self
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The ledger names kinds the server does not serve, or scopes that do not match.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// Discovery itself failed.
    #[error("API discovery failed: {0}")]
    Api(#[from] Failure),
}

/// Group entries by order, given each kind's resolution.
pub fn waves(entries: &[Entry], resolved: &HashMap<(String, String), Arc<Resolved>>) -> Plan {
    let mut sizes: BTreeMap<i32, usize> = BTreeMap::new();
    for e in entries {
        *sizes.entry(e.order).or_default() += 1;
    }
    // Exact capacities: a plan of thousands of steps is not doubled while it grows.
    let mut by_order: BTreeMap<i32, Vec<Step>> = sizes.into_iter().map(|(o, n)| (o, Vec::with_capacity(n))).collect();
    for e in entries {
        if let Some(r) = resolved.get(&(e.object.api_version.clone(), e.object.kind.clone())) {
            by_order.entry(e.order).or_default().push(Step { entry: e.clone(), resolved: r.clone(), pin: None });
        }
    }
    let waves = by_order.into_iter().filter(|(_, steps)| !steps.is_empty());
    Plan { waves: waves.map(|(order, steps)| Wave { order, steps }).collect() }
}

/// Resolve every kind the entries name (one discovery request per group/version) and check
/// each entry's scope. Any problem invalidates the whole set, before anything is written.
pub async fn resolve(ctx: &Context, entries: &[Entry]) -> Result<Plan, PlanError> {
    let mut resolved: HashMap<(String, String), Arc<Resolved>> = HashMap::new();
    let mut issues = Vec::new();
    for e in entries {
        let key = (e.object.api_version.clone(), e.object.kind.clone());
        if !resolved.contains_key(&key) {
            match ctx.resolve(&e.object.api_version, &e.object.kind).await? {
                Some(r) => {
                    resolved.insert(key.clone(), Arc::new(r));
                }
                None => {
                    issues.push(Issue {
                        location: location(e),
                        message: format!(
                            "kind {} {} is not served by this API server (is its CRD installed?)",
                            e.object.api_version, e.object.kind
                        ),
                    });
                    continue;
                }
            }
        }
        if let Some(r) = resolved.get(&key) {
            match (r.namespaced, &e.object.namespace) {
                (true, None) => issues.push(Issue {
                    location: location(e),
                    message: format!("{} is namespaced: the entry needs a namespace", e.object.kind),
                }),
                (false, Some(_)) => issues.push(Issue {
                    location: location(e),
                    message: format!("{} is cluster-scoped: the entry must not have a namespace", e.object.kind),
                }),
                _ => {}
            }
        }
    }
    if !issues.is_empty() {
        return Err(LedgerError::Invalid(issues).into());
    }
    Ok(waves(entries, &resolved))
}

fn location(e: &Entry) -> String {
    match e.line {
        Some(l) => format!("{LEDGER_KEY} line {l} ({})", e.object),
        None => format!("entry {}", e.object),
    }
}
