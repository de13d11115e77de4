//! Kubernetes Events on the ledger ConfigMap and on every object pause-ledger touched, so
//! `kubectl describe` and UIs show what happened after an interrupted upgrade.
//!
//! Events are best effort: a refused or failed Event never changes an outcome or the exit code
//! (it is logged once), and after one got no answer in time the run creates no more. Reasons
//! are documented in docs/events.md.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use jiff::Timestamp;
use serde_json::json;
use tokio::time::Instant;

use crate::api::{Access, ApiError, object_path};
use crate::kinds::ObjectRef;

/// The Event reasons pause-ledger uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// restore unpaused the object (Normal).
    Restored,
    /// restore could not unpause it (Warning).
    RestoreFailed,
    /// a ManagedChart unpaused, but its Bundle stayed paused (Warning).
    NotPropagated,
    /// not Ready at the generation we wrote, within --wait-ready (Warning).
    NotReady,
    /// paused again within the settle window (Warning).
    Repaused,
    /// record paused and marked it (Normal).
    Paused,
    /// record could not pause it (Warning).
    PauseFailed,
    /// rescue unpaused it without ownership information (Warning: ownership unknown).
    RescueRestored,
    /// on the ledger: every entry settled (Normal).
    RestoreSucceeded,
    /// on the ledger: some entries did not settle (Warning).
    RestoreIncomplete,
    /// on the ledger: record wrote the ledger (Normal).
    Recorded,
}

impl Reason {
    /// The reason string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Restored => "Restored",
            Reason::RestoreFailed => "RestoreFailed",
            Reason::NotPropagated => "NotPropagated",
            Reason::NotReady => "NotReady",
            Reason::Repaused => "Repaused",
            Reason::Paused => "Paused",
            Reason::PauseFailed => "PauseFailed",
            Reason::RescueRestored => "RescueRestored",
            Reason::RestoreSucceeded => "RestoreSucceeded",
            Reason::RestoreIncomplete => "RestoreIncomplete",
            Reason::Recorded => "Recorded",
        }
    }

    fn is_warning(self) -> bool {
        matches!(
            self,
            Reason::RestoreFailed
                | Reason::NotPropagated
                | Reason::NotReady
                | Reason::Repaused
                | Reason::PauseFailed
                | Reason::RescueRestored
                | Reason::RestoreIncomplete
        )
    }
}

/// Emits Events; disabled in dry runs and with `--events=false`.
#[derive(Clone)]
pub struct Recorder {
    access: Access,
    enabled: bool,
    instance: String,
    warned: Arc<AtomicBool>,
    /// Set once an Event got no answer in time: the rest would wait out their timeouts too,
    /// in the time the status write needs.
    stopped: Arc<AtomicBool>,
    /// When Events must end: half the time left before the access deadline at the first Event,
    /// so what is written after them (the status) keeps the other half.
    until: Arc<OnceLock<Option<Instant>>>,
}

/// Component name in Events.
pub const COMPONENT: &str = "pause-ledger";

impl Recorder {
    /// A recorder; `enabled` false makes every call a no-op.
    pub fn new(access: Access, enabled: bool) -> Self {
        // In a Job the hostname is the pod name: tells which run wrote the Event.
        let instance = std::env::var("HOSTNAME").unwrap_or_else(|_| "pause-ledger".into());
        Self {
            access,
            enabled,
            instance,
            warned: Default::default(),
            stopped: Default::default(),
            until: Default::default(),
        }
    }

    /// Emit one Event about `object` (its uid, when known, links it in `kubectl describe`).
    pub async fn emit(&self, object: &ObjectRef, uid: Option<&str>, reason: Reason, message: &str) {
        if !self.enabled || self.stopped.load(Ordering::Relaxed) {
            return;
        }
        // Events of cluster-scoped objects live in `default`, as kubectl's do.
        let ns = object.namespace.clone().unwrap_or_else(|| "default".into());
        let now = Timestamp::now().to_string();
        let message: String = message.chars().take(1024).collect();
        let mut involved = json!({
            "apiVersion": object.api_version, "kind": object.kind, "name": object.name,
        });
        if let Some(n) = &object.namespace {
            involved["namespace"] = json!(n);
        }
        if let Some(u) = uid {
            involved["uid"] = json!(u);
        }
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": format!("{}.", object.name), "namespace": ns},
            "involvedObject": involved,
            "reason": reason.as_str(),
            "message": message,
            "type": if reason.is_warning() { "Warning" } else { "Normal" },
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let path = object_path("v1", "events", Some(&ns), None);
        let until = self.until.get_or_init(|| {
            let now = Instant::now();
            self.access.deadline().map(|d| now + d.saturating_duration_since(now) / 2)
        });
        let access = match until {
            Some(u) => self.access.with_deadline(*u),
            None => self.access.clone(),
        };
        let Err(e) = access.create(&format!("Event for {object}"), &path, &event, COMPONENT, false).await else {
            return;
        };
        if matches!(e, ApiError::Timeout { .. } | ApiError::Deadline { .. }) {
            if !self.stopped.swap(true, Ordering::Relaxed) {
                tracing::warn!(error = %e, "no answer to an Event in time: no further Events in this run");
            }
        } else if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, "cannot create Events (further Event errors are not logged)");
        }
    }
}
