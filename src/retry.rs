//! The retry policy: which failures are transient, exponential backoff with full jitter
//! (via `backon`), `Retry-After`, one attempt budget per entry and one overall deadline.
//!
//! This is the only retry layer (kube-client's is off, see [`crate::kube_access`]), so every
//! retry is logged here with its delay and counted against the same budget and deadline.

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio::time::Instant;

use crate::kube_access::{ApiError, is_object_not_found};
use crate::ownership::is_failed_test;

/// How a failed request should be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth retrying: connection trouble, timeouts, 5xx, 429, 409 Conflict.
    Transient,
    /// A JSON Patch `test` failed: the object changed; decide again.
    TestFailed,
    /// 404.
    NotFound,
    /// 403: RBAC.
    Forbidden,
    /// Anything else (400, 401, 422, ...): retrying cannot help.
    Permanent,
}

/// Classify an error.
pub fn classify(e: &ApiError) -> ErrorClass {
    match e {
        // Deadline: out of time, like a timeout (exit code 6), but never retried (`with_retry`).
        ApiError::Transport { .. } | ApiError::Timeout { .. } | ApiError::Deadline { .. } => ErrorClass::Transient,
        ApiError::Decode { .. } => ErrorClass::Permanent,
        ApiError::Status { code, reason, message, .. } => match *code {
            403 => ErrorClass::Forbidden,
            404 if is_object_not_found(e) => ErrorClass::NotFound,
            // The resource itself is not served right now (see `is_object_not_found`).
            404 => ErrorClass::Transient,
            409 if reason == "AlreadyExists" => ErrorClass::Permanent,
            409 | 429 => ErrorClass::Transient,
            422 if is_failed_test(message) => ErrorClass::TestFailed,
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
    /// Attempts per entry, all requests and re-decisions included.
    pub max_attempts: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Self { min_delay: Duration::from_millis(200), max_delay: Duration::from_secs(10), max_attempts: 10 }
    }
}

/// One entry's attempt budget and the run's deadline.
#[derive(Debug)]
pub struct Budget {
    deadline: Instant,
    used: AtomicU32,
    max: u32,
}

impl Budget {
    /// A budget of `max` attempts ending at `deadline`.
    pub fn new(max: u32, deadline: Instant) -> Self {
        Self { deadline, used: AtomicU32::new(0), max: max.max(1) }
    }

    /// Take one attempt; false when the budget is spent.
    pub fn take(&self) -> bool {
        self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| (u < self.max).then_some(u + 1)).is_ok()
    }

    /// Attempts used so far.
    pub fn used(&self) -> u32 {
        self.used.load(Ordering::Relaxed)
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

/// Run `op` until it succeeds, fails permanently, the budget is spent or the next delay would
/// pass the deadline. Each call of `op` takes one attempt from `budget` (the first included).
pub async fn with_retry<T, F, Fut>(policy: &Policy, budget: &Budget, what: &str, mut op: F) -> Result<T, ApiError>
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
    // The first attempt is counted before running; retries are counted in `when`.
    budget.take();
    let call = || op();
    call.retry(backoff)
        .when(|e| classify(e) == ErrorClass::Transient && !matches!(e, ApiError::Deadline { .. }) && budget.take())
        .adjust(|e, d| {
            // The server's Retry-After wins over our schedule; neither may cross the deadline.
            let d = match e {
                ApiError::Status { retry_after: Some(ra), .. } => Some(ra.to_owned()),
                _ => d,
            }?;
            (Instant::now() + d < deadline).then_some(d)
        })
        .notify(|e, d| {
            tracing::warn!(target: "pause_ledger::retry", delay_ms = d.as_millis() as u64, attempt = budget.used(), error = %e, "retrying {what} in {d:?}");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_access::Verb;

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

    #[test]
    fn classification() {
        assert_eq!(classify(&status(503, "ServiceUnavailable", "")), ErrorClass::Transient);
        assert_eq!(classify(&status(429, "TooManyRequests", "")), ErrorClass::Transient);
        assert_eq!(classify(&status(409, "Conflict", "")), ErrorClass::Transient);
        assert_eq!(classify(&status(409, "AlreadyExists", "")), ErrorClass::Permanent);
        assert_eq!(classify(&status(403, "Forbidden", "")), ErrorClass::Forbidden);
        assert_eq!(classify(&status(404, "NotFound", "")), ErrorClass::NotFound);
        assert_eq!(
            classify(&status(422, "", "testing value /spec/paused failed: test failed")),
            ErrorClass::TestFailed
        );
        assert_eq!(classify(&status(422, "Invalid", "spec.paused: Invalid value")), ErrorClass::Permanent);
        assert_eq!(classify(&status(400, "BadRequest", "")), ErrorClass::Permanent);
        assert_eq!(classify(&status(401, "Unauthorized", "")), ErrorClass::Permanent);
        let t = ApiError::Transport { verb: Verb::Get, target: "t".into(), message: "connection reset".into() };
        assert_eq!(classify(&t), ErrorClass::Transient);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_until_budget() {
        let budget = Budget::new(4, Instant::now() + Duration::from_secs(3600));
        let mut calls = 0;
        let r: Result<(), _> = with_retry(&Policy::default(), &budget, "op", || {
            calls += 1;
            async { Err(status(503, "ServiceUnavailable", "")) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 4);
        assert_eq!(budget.used(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_is_not_retried_and_retry_after_is_honoured() {
        let budget = Budget::new(10, Instant::now() + Duration::from_secs(3600));
        let mut calls = 0;
        let _ = with_retry(&Policy::default(), &budget, "op", || {
            calls += 1;
            async { Err::<(), _>(status(403, "Forbidden", "")) }
        })
        .await;
        assert_eq!(calls, 1);

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
                        retry_after: Some(Duration::from_secs(7)),
                    })
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(r.is_ok());
        assert_eq!(start.elapsed(), Duration::from_secs(7));
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
        assert!(matches!(r, Err(ApiError::Deadline { .. })));
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_before_the_deadline() {
        let budget = Budget::new(1000, Instant::now() + Duration::from_secs(5));
        let start = Instant::now();
        let r: Result<(), _> =
            with_retry(&Policy::default(), &budget, "op", || async { Err(status(500, "InternalError", "")) }).await;
        assert!(r.is_err());
        assert!(start.elapsed() < Duration::from_secs(5));
    }
}
