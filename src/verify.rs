//! Verification after restore: unpausing is not the same as reconciling again.
//!
//! - **Propagation**: Rancher copies a ManagedChart's `paused` into its Fleet Bundle
//!   `mcc-<name>` only after it could fetch the chart; until the Bundle is unpaused nothing rolls
//!   out, whatever the ManagedChart says. Checked for every ManagedChart that is running now.
//! - **Readiness** (`--wait-ready`): Ready=True *at* `status.observedGeneration` ≥ the generation
//!   our patch produced; a Ready condition of an older generation is stale and passes too early.
//!
//! The re-pause guard (`--settle`) is [`crate::guard`].

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::time::Instant;

use crate::api::{Access, object_path};
use crate::context::Context;
use crate::kinds::ObjectRef;
use crate::outcome::{Cause, EntryReport, Outcome};
use crate::plan::{Plan, Step};
use crate::retry::{ErrorClass, classify};

/// Verification settings.
#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    /// How long Rancher gets to carry an unpause into the Bundle; zero skips the check.
    pub propagation_window: Duration,
    /// Wait this long for Ready at our generation; `None` skips the check.
    pub wait_ready: Option<Duration>,
    /// Whether not-ready fails the run (exit 3).
    pub fail_on_not_ready: bool,
    /// Poll interval.
    pub poll: Duration,
}

/// The Fleet Bundle resource Rancher generates per ManagedChart.
fn bundle_path(namespace: &str, chart: &str) -> String {
    object_path("fleet.cattle.io/v1alpha1", "bundles", Some(namespace), Some(&format!("mcc-{chart}")))
}

/// Kinds whose status carries a `Ready` condition and `observedGeneration`.
fn has_ready_condition(o: &ObjectRef) -> bool {
    matches!(
        o.group(),
        "management.cattle.io"
            | "fleet.cattle.io"
            | "helm.toolkit.fluxcd.io"
            | "kustomize.toolkit.fluxcd.io"
            | "cluster.x-k8s.io"
    )
}

/// The Ready condition: (status is "True", message).
fn ready_condition(obj: &Value) -> Option<(bool, String)> {
    let c = obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == "Ready")?;
    Some((c["status"] == "True", c["message"].as_str().unwrap_or_default().to_string()))
}

/// Checks restored entries: propagation to Fleet, readiness.
pub struct Verifier<'a> {
    ctx: &'a Context,
    opts: VerifyOptions,
    concurrency: usize,
}

impl<'a> Verifier<'a> {
    /// A verifier whose polls end by `ctx`'s deadline; `concurrency` entries at once.
    pub fn new(ctx: &'a Context, opts: VerifyOptions, concurrency: usize) -> Self {
        Self { ctx, opts, concurrency }
    }

    /// Verify every settled entry (in place).
    pub async fn verify(&self, plan: &Plan, results: &mut [EntryReport]) {
        let v = &self.opts;
        let bundles_served = if v.propagation_window.is_zero() {
            false
        } else {
            match self.ctx.resolve("fleet.cattle.io/v1alpha1", "Bundle").await {
                Ok(Some(_)) => true,
                Ok(None) => {
                    tracing::info!("Fleet Bundles are not served here: propagation is not checked");
                    false
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot tell whether Fleet Bundles are served: propagation is not checked");
                    false
                }
            }
        };
        // In place: thousands of reports are not copied.
        let work = plan.steps().zip(results.iter_mut());
        futures::stream::iter(work)
            .for_each_concurrent(self.concurrency.max(1), |(step, r)| self.verify_one(step, r, bundles_served))
            .await;
    }

    async fn verify_one(&self, step: &Step, r: &mut EntryReport, bundles: bool) {
        let v = &self.opts;
        if !matches!(r.outcome, Outcome::Restored | Outcome::AlreadyRunning) {
            return;
        }
        let o = &step.entry.object;
        let path = Access::path(&step.resolved, o);
        if bundles && o.is_managed_chart() {
            self.check_propagation(o, &path, r, v).await;
        }
        if r.outcome != Outcome::NotPropagated
            && let Some(wait) = v.wait_ready
            && has_ready_condition(o)
        {
            self.check_ready(o, &path, r, wait, v).await;
        }
    }

    fn until(&self, window: Duration) -> Instant {
        Instant::now().checked_add(window).map_or(self.ctx.deadline(), |t| t.min(self.ctx.deadline()))
    }

    async fn get(&self, target: &str, path: &str) -> Option<Value> {
        self.ctx.access().get(target, path).await.ok().flatten()
    }

    async fn check_propagation(&self, o: &ObjectRef, chart_path: &str, r: &mut EntryReport, v: &VerifyOptions) {
        let ns = o.namespace.as_deref().unwrap_or_default();
        let bundle = bundle_path(ns, &o.name);
        let target = format!("Bundle {ns}/mcc-{}", o.name);
        let end = self.until(v.propagation_window);
        loop {
            match self.ctx.access().get(&target, &bundle).await {
                Ok(Some(b)) if b.pointer("/spec/paused").and_then(Value::as_bool) != Some(true) => {
                    r.propagated = Some(true);
                    return;
                }
                // Not a Rancher problem: say what is missing instead of waiting out the window.
                Err(e) if classify(&e) == ErrorClass::Forbidden => {
                    r.outcome = Outcome::NotPropagated;
                    r.cause = Some(Cause::PermissionDenied);
                    r.error = Some(format!(
                        "unpaused, but propagation cannot be checked: missing RBAC verb \"get\" on resource \"bundles\" \
                         (apiGroup \"fleet.cattle.io\") in namespace {ns}: {e}"
                    ));
                    return;
                }
                _ => {}
            }
            if Instant::now() + v.poll >= end || self.ctx.is_cancelled() {
                break;
            }
            tokio::time::sleep(v.poll).await;
        }
        let message = match self.get(&o.to_string(), chart_path).await.as_ref().and_then(ready_condition) {
            Some((_, m)) if !m.is_empty() => m,
            _ => "no Ready message".to_string(),
        };
        r.propagated = Some(false);
        r.ready_message = Some(message.clone());
        r.outcome = Outcome::NotPropagated;
        r.cause = Some(Cause::NotPropagated);
        r.error = Some(format!(
            "unpaused, but Bundle mcc-{} is still paused after {:?}: Rancher reports: {message}",
            o.name, v.propagation_window
        ));
        tracing::warn!(object = %o, message = %message, "not propagated to the Fleet Bundle");
    }

    async fn check_ready(&self, o: &ObjectRef, path: &str, r: &mut EntryReport, wait: Duration, v: &VerifyOptions) {
        let end = self.until(wait);
        let target = o.to_string();
        let mut last = String::from("not read");
        loop {
            if let Some(obj) = self.get(&target, path).await {
                let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
                // The generation our patch produced; for untouched objects, the current one.
                let want = r.generation.unwrap_or(generation);
                let observed = obj.pointer("/status/observedGeneration").and_then(Value::as_i64).unwrap_or(0);
                match ready_condition(&obj) {
                    Some((true, _)) if observed >= want => {
                        r.ready = Some(true);
                        return;
                    }
                    Some((ready, m)) if observed >= want => {
                        last = if m.is_empty() { format!("Ready={ready}") } else { m };
                    }
                    _ => last = format!("status.observedGeneration {observed} has not reached generation {want}"),
                }
            }
            if Instant::now() + v.poll >= end || self.ctx.is_cancelled() {
                break;
            }
            tokio::time::sleep(v.poll).await;
        }
        r.ready = Some(false);
        r.ready_message = Some(last.clone());
        if v.fail_on_not_ready {
            r.cause = Some(Cause::NotReady);
            r.error = Some(format!("not Ready within {wait:?}: {last}"));
        }
        tracing::warn!(object = %o, message = %last, "not ready");
    }
}
