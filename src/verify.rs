//! Verification after restore: unpausing is not the same as reconciling again. Checked per wave
//! (see the engine's wave gate), for entries that are running now (restored or already
//! running):
//!
//! - **Propagation** (ManagedCharts): Rancher copies `paused` into the Fleet Bundle it generates
//!   (named by `SafeConcatName`, owned by the chart) only after it could build it; until the
//!   Bundle is unpaused nothing rolls out, whatever the ManagedChart says. When it did not
//!   happen in time, the cause is Rancher's: condition `Defined` when False, else `Ready`.
//! - **Readiness** (`--wait-ready`): ManagedCharts the way Harvester judges them
//!   ([`crate::rancher::managed_chart_ready`]); Fleet, Flux and Cluster API kinds by
//!   `observedGeneration` ≥ the generation we wrote and `Ready` True.
//!
//! The re-pause guard (`--settle`) is [`crate::guard`].

use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::api::{Target, object_path};
use crate::context::Context;
use crate::kinds::ObjectRef;
use crate::outcome::{Cause, EntryReport, Outcome};
use crate::plan::Step;
use crate::rancher;
use crate::retry::ErrorClass;

/// Verification settings.
#[derive(Clone, Copy, Debug)]
pub struct VerifyOptions {
    /// How long Rancher gets to carry an unpause into the Bundle; zero skips the check.
    pub propagation_window: Duration,
    /// Wait this long for readiness; `None` skips the check.
    pub wait_ready: Option<Duration>,
    /// Whether not-ready fails the run (exit 3).
    pub fail_on_not_ready: bool,
    /// Poll interval.
    pub poll: Duration,
}

/// Fleet's Bundle API.
const BUNDLES: &str = "fleet.cattle.io/v1alpha1";

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

/// Checks restored entries: propagation to Fleet, readiness.
pub struct Verifier<'a> {
    ctx: &'a Context,
    opts: VerifyOptions,
    concurrency: usize,
    bundles_served: OnceCell<bool>,
}

/// Where a chart's Bundle stands.
enum BundleState {
    Unpaused,
    Paused,
    Missing(String),
    Forbidden(String),
}

impl<'a> Verifier<'a> {
    /// A verifier whose polls end by `ctx`'s deadline; `concurrency` entries at once.
    pub fn new(ctx: &'a Context, opts: VerifyOptions, concurrency: usize) -> Self {
        Self { ctx, opts, concurrency, bundles_served: OnceCell::new() }
    }

    /// Whether readiness is checked.
    pub fn checks_readiness(&self) -> bool {
        self.opts.wait_ready.is_some()
    }

    async fn bundles_served(&self) -> bool {
        *self
            .bundles_served
            .get_or_init(|| async {
                if self.opts.propagation_window.is_zero() {
                    return false;
                }
                match self.ctx.resolve(BUNDLES, "Bundle").await {
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
            })
            .await
    }

    /// Verify the settled entries of `steps` (in place; `results[i]` is `steps[i]`'s).
    pub async fn verify(&self, steps: &[Step], results: &mut [EntryReport]) {
        let bundles = self.bundles_served().await;
        futures::stream::iter(steps.iter().zip(results.iter_mut()))
            .for_each_concurrent(self.concurrency.max(1), |(step, r)| self.verify_one(step, r, bundles))
            .await;
    }

    async fn verify_one(&self, step: &Step, r: &mut EntryReport, bundles: bool) {
        if !matches!(r.outcome, Outcome::Restored | Outcome::AlreadyRunning) {
            return;
        }
        let o = &step.entry.object;
        let target = Target::object(o, &step.resolved);
        if bundles && o.is_managed_chart() {
            self.check_propagation(o, &target, r).await;
        }
        if r.outcome != Outcome::NotPropagated
            && let Some(wait) = self.opts.wait_ready
            && has_ready_condition(o)
        {
            self.check_ready(o, &target, r, wait).await;
        }
    }

    fn until(&self, window: Duration) -> Instant {
        Instant::now().checked_add(window).map_or(self.ctx.deadline(), |t| t.min(self.ctx.deadline()))
    }

    async fn get(&self, t: &Target) -> Option<Value> {
        self.ctx.access().get(&t.name, &t.path).await.ok().flatten()
    }

    /// The chart's Bundle, found by its owner uid: the name Rancher gives it first, then (when
    /// allowed) any Bundle of the namespace that the chart owns.
    async fn bundle(&self, o: &ObjectRef, uid: Option<&str>) -> BundleState {
        let ns = o.namespace.as_deref().unwrap_or_default();
        let name = rancher::bundle_name(&o.name);
        let by_name = Target {
            name: format!("Bundle {ns}/{name}"),
            path: object_path(BUNDLES, "bundles", Some(ns), Some(&name)),
        };
        let found = match self.ctx.access().get(&by_name.name, &by_name.path).await {
            Ok(Some(b)) if rancher::owned_by(&b, uid) => Some(b),
            Ok(_) => self.bundle_by_owner(ns, uid).await,
            Err(e) if crate::retry::classify(&e) == ErrorClass::Forbidden => {
                return BundleState::Forbidden(format!(
                    "missing RBAC verb \"get\" on resource \"bundles\" (apiGroup \"fleet.cattle.io\") in namespace {ns}: {e}"
                ));
            }
            Err(_) => return BundleState::Missing(format!("Bundle {ns}/{name} could not be read")),
        };
        match found {
            Some(b) if b.pointer("/spec/paused").and_then(Value::as_bool) == Some(true) => BundleState::Paused,
            Some(_) => BundleState::Unpaused,
            None => BundleState::Missing(format!("Bundle {ns}/{name} (owned by the chart) does not exist")),
        }
    }

    /// A Bundle of `ns` whose ownerReference is `uid` (needs `list` on bundles; without it the
    /// name is all there is).
    async fn bundle_by_owner(&self, ns: &str, uid: Option<&str>) -> Option<Value> {
        let uid = uid?;
        let t = Target { name: format!("Bundles in {ns}"), path: object_path(BUNDLES, "bundles", Some(ns), None) };
        let list = self.ctx.access().list(&t.name, &t.path).await.ok()?;
        list.get("items")?
            .as_array()?
            .iter()
            .find(|b| rancher::owned_by(b, Some(uid)) && b.pointer("/metadata/ownerReferences").is_some())
            .cloned()
    }

    async fn check_propagation(&self, o: &ObjectRef, chart: &Target, r: &mut EntryReport) {
        let end = self.until(self.opts.propagation_window);
        let mut last;
        loop {
            last = self.bundle(o, r.uid.as_deref()).await;
            match &last {
                BundleState::Unpaused => {
                    r.propagated = Some(true);
                    return;
                }
                // Not a Rancher problem: say what is missing instead of waiting out the window.
                BundleState::Forbidden(why) => {
                    r.outcome = Outcome::NotPropagated;
                    r.cause = Some(Cause::PermissionDenied);
                    r.error = Some(format!("unpaused, but propagation cannot be checked: {why}"));
                    return;
                }
                BundleState::Paused | BundleState::Missing(_) => {}
            }
            if Instant::now() + self.opts.poll >= end || self.ctx.is_cancelled() {
                break;
            }
            tokio::time::sleep(self.opts.poll).await;
        }
        let cause = match self.get(chart).await {
            Some(c) => rancher::propagation_cause(&c),
            None => "the ManagedChart could not be read".to_string(),
        };
        let window = self.opts.propagation_window;
        let what = match last {
            BundleState::Missing(m) => format!("{m} after {window:?}"),
            _ => format!("Bundle {} is still paused after {window:?}", rancher::bundle_name(&o.name)),
        };
        r.propagated = Some(false);
        r.ready_message = Some(cause.clone());
        r.outcome = Outcome::NotPropagated;
        r.cause = Some(Cause::NotPropagated);
        r.error = Some(format!("unpaused, but {what}: Rancher reports {cause}"));
        tracing::warn!(object = %o, cause = %cause, "not propagated to the Fleet Bundle");
    }

    async fn check_ready(&self, o: &ObjectRef, target: &Target, r: &mut EntryReport, wait: Duration) {
        let end = self.until(wait);
        let mut last = String::from("not read");
        loop {
            if let Some(obj) = self.get(target).await {
                let verdict = if o.is_managed_chart() {
                    rancher::managed_chart_ready(&obj, r.observed_before.filter(|_| r.outcome == Outcome::Restored))
                } else {
                    rancher::generation_ready(&obj, r.generation)
                };
                match verdict {
                    Ok(()) => {
                        r.ready = Some(true);
                        return;
                    }
                    Err(why) => last = why,
                }
            }
            if Instant::now() + self.opts.poll >= end || self.ctx.is_cancelled() {
                break;
            }
            tokio::time::sleep(self.opts.poll).await;
        }
        r.ready = Some(false);
        r.ready_message = Some(last.clone());
        if self.opts.fail_on_not_ready {
            r.cause = Some(Cause::NotReady);
            r.error = Some(format!("not Ready within {wait:?}: {last}"));
        }
        tracing::warn!(object = %o, message = %last, "not ready");
    }
}

/// The ManagedCharts of `namespaces` whose `Ready` condition is not True, as `name: message`:
/// Harvester's webhook refuses the next upgrade while any fleet-local chart is not Ready. Read
/// in pages; only the names of charts that are not Ready are kept.
pub async fn charts_not_ready(ctx: &Context, namespaces: &[&str]) -> Vec<String> {
    const PAGE: usize = 100;
    let mut out = Vec::new();
    for ns in namespaces {
        let base = object_path(crate::kinds::MANAGED_CHART_API_VERSION, "managedcharts", Some(ns), None);
        let mut cont = String::new();
        loop {
            let mut path = format!("{base}?limit={PAGE}");
            if !cont.is_empty() {
                path.push_str("&continue=");
                path.push_str(&cont);
            }
            let t = Target { name: format!("ManagedCharts in {ns}"), path };
            let page = match ctx.list_in(&ctx.budget(), &t).await {
                Ok(l) => l,
                Err(f) => {
                    tracing::debug!(error = %f, "cannot list ManagedCharts: Ready is not checked");
                    break;
                }
            };
            for c in page.get("items").and_then(Value::as_array).into_iter().flatten() {
                let cond = c
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|cs| cs.iter().find(|x| x["type"] == "Ready"));
                if cond.is_some_and(|x| x["status"] == "True") {
                    continue;
                }
                let name = c.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
                let message =
                    cond.and_then(|x| x["message"].as_str()).filter(|m| !m.is_empty()).unwrap_or("no Ready condition");
                out.push(format!("ManagedChart {ns}/{name} is not Ready: {message}"));
            }
            match page.pointer("/metadata/continue").and_then(Value::as_str) {
                Some(c) if !c.is_empty() => cont = c.to_string(),
                _ => break,
            }
        }
    }
    out
}
