//! The retry policy: which failures are transient, exponential backoff with full jitter
//! (via `backon`), `Retry-After`, one attempt budget per entry and one overall deadline.
//!
//! This is the only retry layer (kube-client's is off, see [`crate::api`]), so every retry is
//! logged here with its delay and counted against the same budget and deadline.
//!
//! Two bounds, for two kinds of trouble:
//! - answers that say "not now" (5xx, 429, 409 Conflict, a resource not served yet) spend the
//!   attempt budget (`--max-attempts`): a server that keeps answering that way will not change;
//! - an unreachable server (connection refused or reset, no answer within `--request-timeout`)
//!   spends only time: an API server restart or a short outage is waited out until the
//!   deadline, however many attempts that takes.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio::time::Instant;

use crate::api::ApiError;

/// The longest server-requested delay honoured (`Retry-After`); longer ones are cut to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long before the deadline the last attempt is made.
const LAST_CALL: Duration = Duration::from_millis(250);

/// How a failed request should be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth retrying: connection trouble, timeouts, 5xx, 429, 409 Conflict.
    Transient,
    /// A JSON Patch `test` failed: the object changed; decide again.
    TestFailed,
    /// 404 for the object.
    NotFound,
    /// 403 from RBAC: the ServiceAccount lacks a permission.
    Forbidden,
    /// 403 from admission (a webhook or a ValidatingAdmissionPolicy denied the request).
    Denied,
    /// Anything else (400, 401, 422, ...): retrying cannot help.
    Permanent,
}

/// Classify an error.
pub fn classify(e: &ApiError) -> ErrorClass {
    match e {
        // Deadline: out of time, never retried (`with_retry`).
        ApiError::Transport { .. } | ApiError::Timeout { .. } | ApiError::Deadline { .. } => ErrorClass::Transient,
        ApiError::Decode { .. } => ErrorClass::Permanent,
        ApiError::Status { code, reason, .. } => match *code {
            403 if e.is_rbac_forbidden() => ErrorClass::Forbidden,
            403 => ErrorClass::Denied,
            404 if e.is_object_not_found() => ErrorClass::NotFound,
            // The resource itself is not served right now (see `api::is_object_not_found`).
            404 => ErrorClass::Transient,
            409 if reason == "AlreadyExists" => ErrorClass::Permanent,
            409 | 429 => ErrorClass::Transient,
            422 if e.is_failed_test() => ErrorClass::TestFailed,
            500..=599 => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        },
    }
}

/// Backoff settings.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    /// First delay (before jitter).
    pub min_delay: Duration,
    /// Cap on one delay (before jitter).
    pub max_delay: Duration,
    /// Attempts per entry, all answered requests and re-decisions included.
    pub max_attempts: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self { min_delay: Duration::from_millis(200), max_delay: Duration::from_secs(10), max_attempts: 10 }
    }
}

/// One entry's attempt budget and the deadline it ends at.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    /// Attempts counted against `max`.
    used: AtomicU32,
    /// Every request sent, counted or not.
    sent: AtomicU32,
    max: u32,
}

impl Budget {
    /// A budget of `max` attempts ending at `deadline`.
    pub fn new(max: u32, deadline: Instant) -> Self {
        Self { deadline, used: AtomicU32::new(0), sent: AtomicU32::new(0), max: max.max(1) }
    }

    /// Take one attempt; false when the budget is spent.
    pub fn take(&self) -> bool {
        self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| (u < self.max).then_some(u + 1)).is_ok()
    }

    /// Attempts counted against the budget so far.
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
    }

    /// Requests sent and re-decisions made, counted against the budget or not.
    pub fn attempts(&self) -> u32 {
        self.sent.load(Ordering::Relaxed).max(self.used())
    }

    fn note_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// The deadline.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Whether every attempt is used.
    pub fn exhausted(&self) -> bool {
        self.used() >= self.max
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }
}

/// Why retrying stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The error is not worth retrying (403, 404, 422, a failed `test`, ...).
    Permanent,
    /// The attempt budget is spent (`--max-attempts`).
    Budget,
    /// The deadline passed, or the next delay would cross it.
    Deadline,
}

/// A request that failed for good: the last error and why no further attempt was made.
#[derive(Clone, Debug)]
pub struct Failure {
    /// The last error.
    pub error: ApiError,
    /// Why retrying stopped.
    pub stop: Stop,
    /// Requests sent for it.
    pub attempts: u32,
    /// Some attempt got no answer after it may have reached the server (a write may be applied).
    pub ambiguous: bool,
}

impl Failure {
    /// The classification of the last error.
    pub fn class(&self) -> ErrorClass {
        classify(&self.error)
    }

    /// A failure that was never retried (a single request's error).
    pub fn once(error: ApiError) -> Self {
        let stop = match &error {
            ApiError::Deadline { .. } => Stop::Deadline,
            _ => Stop::Permanent,
        };
        let ambiguous = error.is_ambiguous();
        Self { error, stop, attempts: 1, ambiguous }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stop {
            Stop::Permanent => write!(f, "{}", self.error),
            Stop::Budget => {
                write!(f, "{} (gave up after {} attempts: --max-attempts spent)", self.error, self.attempts)
            }
            Stop::Deadline => write!(f, "{} (deadline reached after {} attempts)", self.error, self.attempts),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Full jitter over an exponential schedule: each delay is uniform in `[0, base]`
/// (backon's own jitter only adds up to one more `base`, which keeps retries in lockstep).
struct FullJitter<I> {
    inner: I,
    rng: fastrand::Rng,
}

impl<I: Iterator<Item = Duration>> Iterator for FullJitter<I> {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        self.inner.next().map(|d| d.mul_f64(self.rng.f64()))
    }
}

/// Run `op` until it succeeds, fails permanently, the budget is spent, or the next delay would
/// pass the deadline. Each call of `op` that gets an answer takes one attempt from `budget`
/// (the first included); one that finds the server unreachable takes only time.
pub async fn with_retry<T, F, Fut>(policy: &Policy, budget: &Budget, what: &str, mut op: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let backoff = FullJitter {
        inner: ExponentialBuilder::default()
            .with_min_delay(policy.min_delay)
            .with_max_delay(policy.max_delay)
            .with_factor(2.0)
            .without_max_times()
            .build(),
        rng: fastrand::Rng::new(),
    };
    let deadline = budget.deadline();
    let stop = Cell::new(Stop::Permanent);
    let ambiguous = Cell::new(false);
    let sent_before = budget.attempts();
    // The first attempt is counted before running; retries are counted in `when`.
    budget.take();
    let call = || {
        budget.note_sent();
        let fut = op();
        async {
            let r = fut.await;
            if let Err(e) = &r
                && e.is_ambiguous()
            {
                ambiguous.set(true);
            }
            r
        }
    };
    let result = call
        .retry(backoff)
        .when(|e| {
            if classify(e) != ErrorClass::Transient {
                stop.set(Stop::Permanent);
                return false;
            }
            if matches!(e, ApiError::Deadline { .. }) || budget.expired() {
                stop.set(Stop::Deadline);
                return false;
            }
            // An unreachable server is waited out until the deadline; answers spend the budget.
            if e.is_unreachable() || budget.take() {
                return true;
            }
            stop.set(Stop::Budget);
            false
        })
        .adjust(|e, d| {
            // The server's Retry-After wins over our schedule (capped); neither may cross the
            // deadline.
            let d = match e {
                ApiError::Status { retry_after: Some(ra), .. } => Some((*ra).min(MAX_RETRY_AFTER)),
                _ => d,
            }?;
            // A delay that would cross the deadline is cut short for one last attempt just
            // before it: giving up earlier would report "deadline exceeded" with time left.
            let left = deadline.saturating_duration_since(Instant::now());
            if d < left {
                Some(d)
            } else if left > LAST_CALL {
                Some(left - LAST_CALL)
            } else {
                stop.set(Stop::Deadline);
                None
            }
        })
        .notify(|e, d| {
            tracing::warn!(target: "pause_ledger::retry", delay_ms = d.as_millis() as u64, attempt = budget.attempts(), error = %e, "retrying {what} in {d:?}");
        })
        .await;
    if result.is_err() && stop.get() == Stop::Deadline {
        // No attempt fits in what is left (or the last one failed fast): wait the rest out, so
        // that "deadline exceeded" (exit 6) is only ever said once the deadline has passed.
        tokio::time::sleep_until(deadline).await;
    }
    result.map_err(|error| Failure {
        error,
        stop: stop.get(),
        attempts: budget.attempts() - sent_before,
        ambiguous: ambiguous.get(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Verb;

    fn status(code: u16, reason: &str, message: &str) -> ApiError {
        ApiError::Status {
            verb: Verb::Patch,
            target: "t".into(),
            code,
            reason: reason.into(),
            message: message.into(),
            retry_after: None,
        }
    }

    fn refused() -> ApiError {
        ApiError::Transport { verb: Verb::Get, target: "t".into(), message: "connection refused".into(), unsent: true }
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&status(503, "ServiceUnavailable", "")), ErrorClass::Transient);
        assert_eq!(classify(&status(429, "TooManyRequests", "")), ErrorClass::Transient);
        assert_eq!(classify(&status(409, "Conflict", "")), ErrorClass::Transient);
        assert_eq!(classify(&status(409, "AlreadyExists", "")), ErrorClass::Permanent);
        let rbac = r#"managedcharts.management.cattle.io "h" is forbidden: User "system:serviceaccount:ns:sa" cannot patch resource "managedcharts" in API group "management.cattle.io" in the namespace "fleet-local""#;
        assert_eq!(classify(&status(403, "Forbidden", rbac)), ErrorClass::Forbidden);
        let webhook = r#"admission webhook "deny.example.com" denied the request: frozen"#;
        assert_eq!(classify(&status(403, "Forbidden", webhook)), ErrorClass::Denied);
        assert_eq!(classify(&status(404, "NotFound", "")), ErrorClass::NotFound);
        assert_eq!(
            classify(&status(422, "", "testing value /spec/paused failed: test failed")),
            ErrorClass::TestFailed
        );
        assert_eq!(classify(&status(422, "Invalid", "spec.paused: Invalid value")), ErrorClass::Permanent);
        assert_eq!(classify(&status(400, "BadRequest", "")), ErrorClass::Permanent);
        assert_eq!(classify(&status(401, "Unauthorized", "")), ErrorClass::Permanent);
        assert_eq!(classify(&refused()), ErrorClass::Transient);
        assert!(!refused().is_ambiguous());
    }

    #[tokio::test(start_paused = true)]
    async fn answered_errors_spend_the_budget() {
        let budget = Budget::new(4, Instant::now() + Duration::from_secs(3600));
        let mut calls = 0;
        let r: Result<(), _> = with_retry(&Policy::default(), &budget, "op", || {
            calls += 1;
            async { Err(status(503, "ServiceUnavailable", "")) }
        })
        .await;
        let f = r.unwrap_err();
        assert_eq!((calls, budget.used(), f.stop, f.attempts), (4, 4, Stop::Budget, 4));
        assert!(f.to_string().contains("gave up after 4 attempts"), "{f}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_server_spends_time_not_attempts() {
        // Down for 60 s: far more attempts than the budget, then it answers.
        let start = Instant::now();
        let budget = Budget::new(3, start + Duration::from_secs(240));
        let mut calls = 0;
        let r = with_retry(&Policy::default(), &budget, "op", || {
            calls += 1;
            let up = start.elapsed() >= Duration::from_secs(60);
            async move { if up { Ok(()) } else { Err(refused()) } }
        })
        .await;
        assert!(r.is_ok(), "{r:?}");
        assert!(calls > 3, "{calls}");
        assert_eq!(budget.used(), 1, "only the first attempt counts");
        assert_eq!(budget.attempts(), calls);

        // Never back: stops before the deadline, and says so.
        let budget = Budget::new(3, Instant::now() + Duration::from_secs(30));
        let f = with_retry(&Policy::default(), &budget, "op", || async { Err::<(), _>(refused()) }).await.unwrap_err();
        assert_eq!(f.stop, Stop::Deadline);
        assert!(!f.ambiguous);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_is_not_retried_and_retry_after_is_honoured_and_capped() {
        let budget = Budget::new(10, Instant::now() + Duration::from_secs(3600));
        let mut calls = 0;
        let f = with_retry(&Policy::default(), &budget, "op", || {
            calls += 1;
            async { Err::<(), _>(status(403, "Forbidden", "")) }
        })
        .await
        .unwrap_err();
        assert_eq!((calls, f.stop), (1, Stop::Permanent));

        for (asked, waited) in [(7, 7), (u64::MAX / 2, MAX_RETRY_AFTER.as_secs())] {
            let budget = Budget::new(10, Instant::now() + Duration::from_secs(3600));
            let start = Instant::now();
            let mut n = 0;
            let r = with_retry(&Policy::default(), &budget, "op", || {
                n += 1;
                let first = n == 1;
                async move {
                    if first {
                        Err(ApiError::Status {
                            verb: Verb::Patch,
                            target: "t".into(),
                            code: 429,
                            reason: "TooManyRequests".into(),
                            message: String::new(),
                            retry_after: Some(Duration::from_secs(asked)),
                        })
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
            assert!(r.is_ok());
            assert_eq!(start.elapsed(), Duration::from_secs(waited));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_the_handle_deadline_is_not_retried() {
        let budget = Budget::new(10, Instant::now() + Duration::from_secs(3600));
        let mut calls = 0;
        let r: Result<(), _> = with_retry(&Policy::default(), &budget, "op", || {
            calls += 1;
            async { Err(ApiError::Deadline { verb: Verb::Get, target: "t".into() }) }
        })
        .await;
        assert!(matches!(r, Err(Failure { error: ApiError::Deadline { .. }, stop: Stop::Deadline, .. })));
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_then_stops_at_the_deadline() {
        let budget = Budget::new(1000, Instant::now() + Duration::from_secs(5));
        let start = Instant::now();
        let mut calls = 0;
        let f = with_retry(&Policy::default(), &budget, "op", || {
            calls += 1;
            async { Err::<(), _>(status(500, "InternalError", "")) }
        })
        .await
        .unwrap_err();
        // It did retry (a `with_retry` that never retries fails here), made its last attempt
        // before the deadline, and said "deadline" only once it had passed.
        assert!(calls > 1, "{calls}");
        assert!(start.elapsed() >= Duration::from_secs(5), "{:?}", start.elapsed());
        assert!(start.elapsed() < Duration::from_secs(5) + LAST_CALL, "{:?}", start.elapsed());
        assert_eq!(f.stop, Stop::Deadline);
    }
}
