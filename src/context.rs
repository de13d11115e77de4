//! The run context: one value carrying API access, the retry policy, the deadline,
//! cancellation and the Events recorder, with retried requests. Every step that talks to the
//! API (planning, the restore engine, verification, the re-pause guard, the pause side, the
//! ledger store) takes it, so retries and time bounds are written once, here.

use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::api::{Access, Resolved, Target};
use crate::events::Recorder;
use crate::retry::{Budget, Failure, Policy, with_retry};

/// One run's access to the API, its limits and its signals.
#[derive(Clone)]
pub struct Context {
    access: Access,
    policy: Policy,
    deadline: Instant,
    cancel: CancellationToken,
    events: Recorder,
}

impl Context {
    /// A context whose requests all end by `deadline`.
    pub fn new(access: Access, policy: Policy, deadline: Instant, cancel: CancellationToken, events: bool) -> Self {
        let access = access.with_deadline(deadline);
        let events = Recorder::new(access.clone(), events);
        Self { access, policy, deadline, cancel, events }
    }

    /// The same context for a phase that must end by `deadline` (or earlier, if this one does).
    /// Events keep the whole run's deadline.
    pub fn until(&self, deadline: Instant) -> Self {
        let deadline = deadline.min(self.deadline);
        Self { access: self.access.with_deadline(deadline), deadline, ..self.clone() }
    }

    /// The API access layer (requests end by the deadline).
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// The retry policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// When this context's requests end.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Cancelled by SIGTERM/SIGINT.
    pub fn cancel(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Whether the run was told to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The Events recorder.
    pub fn events(&self) -> &Recorder {
        &self.events
    }

    /// A fresh attempt budget (`--max-attempts`) ending at the deadline.
    pub fn budget(&self) -> Budget {
        Budget::new(self.policy.max_attempts, self.deadline)
    }

    /// GET an object with its own budget; `Ok(None)` when it does not exist.
    pub async fn get(&self, t: &Target) -> Result<Option<Value>, Failure> {
        self.get_in(&self.budget(), t).await
    }

    /// GET an object, spending `budget`.
    pub async fn get_in(&self, budget: &Budget, t: &Target) -> Result<Option<Value>, Failure> {
        with_retry(&self.policy, budget, &format!("get {}", t.name), || self.access.get(&t.name, &t.path)).await
    }

    /// GET a collection (`t.path` may carry a query), spending `budget`.
    pub async fn list_in(&self, budget: &Budget, t: &Target) -> Result<Value, Failure> {
        with_retry(&self.policy, budget, &format!("list {}", t.name), || self.access.list(&t.name, &t.path)).await
    }

    /// Send a JSON Patch as `field_manager`, spending `budget`.
    pub async fn patch_in(
        &self,
        budget: &Budget,
        t: &Target,
        patch: &Value,
        field_manager: &str,
        dry_run: bool,
    ) -> Result<Value, Failure> {
        with_retry(&self.policy, budget, &format!("patch {}", t.name), || {
            self.access.json_patch(&t.name, &t.path, patch, field_manager, dry_run)
        })
        .await
    }

    /// POST `obj` to the collection `t.path` as `field_manager`, spending `budget`.
    pub async fn create_in(
        &self,
        budget: &Budget,
        t: &Target,
        obj: &Value,
        field_manager: &str,
    ) -> Result<Value, Failure> {
        with_retry(&self.policy, budget, &format!("create {}", t.name), || {
            self.access.create(&t.name, &t.path, obj, field_manager, false)
        })
        .await
    }

    /// Resolve a kind through discovery (retried); `Ok(None)` when it is not served.
    ///
    /// "Not served" is never concluded from one answer: right after an API-server restart the
    /// server answers before its CRD informer has synced, and CRD groups are missing for a
    /// moment. A missing kind is believed once the server says it is ready (`/readyz`), or
    /// once the attempt budget is spent.
    pub async fn resolve(&self, api_version: &str, kind: &str) -> Result<Option<Resolved>, Failure> {
        let budget = self.budget();
        let what = format!("discovery of {api_version}");
        let mut delay = self.policy.min_delay;
        loop {
            let found = with_retry(&self.policy, &budget, &what, || self.access.resolve(api_version, kind)).await?;
            if found.is_some() || self.access.ready().await == Some(true) || !budget.take() {
                return Ok(found);
            }
            if Instant::now() + delay >= self.deadline {
                return Ok(None);
            }
            tracing::warn!(
                delay_ms = delay.as_millis() as u64,
                "{kind} ({api_version}) not served while the API server is not ready; asking again in {delay:?}"
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.policy.max_delay);
        }
    }
}
