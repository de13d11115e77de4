//! Fault configuration and the seeded decision sequence.

use std::time::Duration;

/// Fault mix; rates are probabilities per request in [0,1], applied in this order with one seeded RNG draw sequence.
///
/// Precedence for an eligible request: server error, then throttle, then reset before forwarding;
/// otherwise the request is forwarded, possibly after a latency delay, and possibly followed by
/// a lost answer: a reset after forwarding, or (drawn from the same value, in the band just above
/// the reset's) a 5xx in place of upstream's answer. Rates outside [0,1] are clamped; NaN counts as 0.
///
/// Every eligible request consumes exactly [`DRAWS_PER_REQUEST`] RNG values whatever the outcome,
/// so the n-th eligible request's fate depends only on `seed` and `n`, and changing one rate does not
/// reshuffle the others. Requests rejected by `path_filter` consume no draws. Under concurrency the
/// arrival order (and so which request gets which fault) varies; the seed, the rates and the
/// sequence of outcomes ([`Faults::plan`]) stay reproducible.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Seed of the decision sequence; [`crate::FaultProxy::set_faults`] restarts the sequence from it.
    pub seed: u64,
    /// Answer 503 (or 500/502/504, chosen by the rng) with a Kubernetes Status body, without forwarding.
    pub server_error_rate: f64,
    /// Answer 429 with `Retry-After: retry_after_secs` and a TooManyRequests Status body, without forwarding.
    pub throttle_rate: f64,
    /// Value of `Retry-After` on injected 429s, sent as-is (0 means "retry immediately", handy for fast tests).
    pub retry_after_secs: u64,
    /// Drop the client connection with a TCP RST before forwarding (upstream sees nothing).
    pub reset_rate: f64,
    /// Forward, let upstream apply the request, then drop the client connection with a TCP RST.
    pub reset_after_forward_rate: f64,
    /// Forward, let upstream apply the request, then answer 500 or 504 (a Kubernetes Status
    /// body) instead of upstream's answer: "5xx after commit", as from a load balancer or an
    /// apiserver whose etcd write committed but whose reply timed out. Shares its draw with
    /// `reset_after_forward_rate` (the band `[reset rate, reset rate + this rate)`), so adding it
    /// reshuffles no other fault and the sum of the two is at most 1.
    pub error_after_forward_rate: f64,
    /// Delay a forwarded request by a duration drawn uniformly in `[latency_min, latency_max]`.
    pub latency_rate: f64,
    /// Lower bound of an injected delay.
    pub latency_min: Duration,
    /// Upper bound of an injected delay (treated as `latency_min` when smaller).
    pub latency_max: Duration,
    /// Only requests whose path contains this substring are eligible (None = all), e.g. "managedcharts".
    pub path_filter: Option<String>,
}

/// How many RNG values each eligible request consumes, whatever its outcome.
pub const DRAWS_PER_REQUEST: usize = 7;

/// What the proxy does with one eligible request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Forward to upstream, after `delay` if any.
    Forward {
        /// Injected latency before forwarding.
        delay: Option<Duration>,
    },
    /// Forward (after `delay` if any), then reset the client connection instead of answering.
    ForwardThenReset {
        /// Injected latency before forwarding.
        delay: Option<Duration>,
    },
    /// Forward (after `delay` if any), let upstream apply it, then answer `code` instead.
    ForwardThenError {
        /// Injected latency before forwarding.
        delay: Option<Duration>,
        /// 500 or 504.
        code: u16,
    },
    /// Answer with this 5xx status and a Status body, without forwarding.
    ServerError {
        /// 500, 502, 503 or 504.
        code: u16,
    },
    /// Answer 429 with Retry-After, without forwarding.
    Throttle,
    /// Reset the client connection without forwarding.
    Reset,
}

impl Faults {
    /// The outcomes of the first `n` eligible requests, as the proxy will decide them after `set_faults(self)`.
    pub fn plan(&self, n: usize) -> Vec<Outcome> {
        let mut rng = SplitMix64::new(self.seed);
        (0..n).map(|_| self.decide(&mut rng)).collect()
    }

    /// Whether a request with this path is subject to faults at all.
    pub fn is_eligible(&self, path: &str) -> bool {
        self.path_filter.as_deref().is_none_or(|filter| path.contains(filter))
    }

    /// Draws the next outcome; always consumes exactly `DRAWS_PER_REQUEST` values.
    pub(crate) fn decide(&self, rng: &mut SplitMix64) -> Outcome {
        let u_error = rng.next_f64();
        let u_code = rng.next_f64();
        let u_throttle = rng.next_f64();
        let u_reset = rng.next_f64();
        let u_reset_after = rng.next_f64();
        let u_latency = rng.next_f64();
        let u_latency_len = rng.next_f64();

        if hit(u_error, self.server_error_rate) {
            // 503 is what an overloaded or restarting apiserver mostly returns; the others keep
            // clients honest about which 5xx codes they treat as retryable.
            let code = match u_code {
                u if u < 0.5 => 503,
                u if u < 2.0 / 3.0 => 500,
                u if u < 5.0 / 6.0 => 502,
                _ => 504,
            };
            return Outcome::ServerError { code };
        }
        if hit(u_throttle, self.throttle_rate) {
            return Outcome::Throttle;
        }
        if hit(u_reset, self.reset_rate) {
            return Outcome::Reset;
        }
        let delay = hit(u_latency, self.latency_rate).then(|| {
            let span = self.latency_max.saturating_sub(self.latency_min);
            self.latency_min + span.mul_f64(u_latency_len)
        });
        let reset_after = clamp(self.reset_after_forward_rate);
        if hit(u_reset_after, reset_after) {
            Outcome::ForwardThenReset { delay }
        } else if hit(u_reset_after, reset_after + clamp(self.error_after_forward_rate)) {
            // u_code is otherwise only read for a server error, which this request is not.
            let code = if u_code < 0.5 { 500 } else { 504 };
            Outcome::ForwardThenError { delay, code }
        } else {
            Outcome::Forward { delay }
        }
    }
}

/// `u` is uniform in [0,1), so rate 1.0 always hits and rate 0.0 (or NaN) never does.
fn hit(u: f64, rate: f64) -> bool {
    u < rate
}

/// A rate in [0,1]; NaN counts as 0 (so that sums of rates stay meaningful).
fn clamp(rate: f64) -> f64 {
    if rate.is_nan() { 0.0 } else { rate.clamp(0.0, 1.0) }
}

/// SplitMix64: tiny, well-distributed, and fully specified, so seeds mean the same thing forever.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose sequence is determined by `seed` alone.
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0,1) with 53 bits of precision.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_reference_vector() {
        // Reference outputs for seed 1234567 from the public-domain C implementation.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn rates_zero_and_one_are_absolute() {
        let none = Faults { seed: 9, ..Faults::default() };
        assert!(none.plan(200).iter().all(|o| *o == Outcome::Forward { delay: None }));
        let all = Faults { seed: 9, throttle_rate: 1.0, ..Faults::default() };
        assert!(all.plan(200).iter().all(|o| *o == Outcome::Throttle));
    }

    #[test]
    fn rates_are_roughly_respected_and_codes_mixed() {
        let faults = Faults { seed: 3, server_error_rate: 0.25, ..Faults::default() };
        let plan = faults.plan(4000);
        let codes: Vec<u16> = plan
            .iter()
            .filter_map(|o| match o {
                Outcome::ServerError { code } => Some(*code),
                _ => None,
            })
            .collect();
        assert!((800..1200).contains(&codes.len()), "{}", codes.len());
        for code in [500, 502, 503, 504] {
            assert!(codes.contains(&code), "{code} never drawn");
        }
        let share_503 = codes.iter().filter(|c| **c == 503).count() as f64 / codes.len() as f64;
        assert!((0.4..0.6).contains(&share_503), "{share_503}");
    }

    #[test]
    fn one_rate_does_not_reshuffle_another() {
        let base = Faults { seed: 77, reset_rate: 0.3, ..Faults::default() };
        let with_latency = Faults {
            latency_rate: 0.5,
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(2),
            ..base.clone()
        };
        let resets = |plan: Vec<Outcome>| -> Vec<bool> { plan.into_iter().map(|o| o == Outcome::Reset).collect() };
        assert_eq!(resets(base.plan(300)), resets(with_latency.plan(300)));
    }

    #[test]
    fn latency_stays_in_bounds() {
        let faults = Faults {
            seed: 5,
            latency_rate: 1.0,
            latency_min: Duration::from_millis(10),
            latency_max: Duration::from_millis(20),
            ..Faults::default()
        };
        for outcome in faults.plan(500) {
            let Outcome::Forward { delay: Some(d) } = outcome else {
                panic!("unexpected {outcome:?}");
            };
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
        let inverted = Faults { latency_max: Duration::ZERO, ..faults };
        assert!(inverted.plan(10).iter().all(|o| *o == Outcome::Forward { delay: Some(Duration::from_millis(10)) }));
    }

    #[test]
    fn error_after_forward_shares_the_lost_answer_draw() {
        let resets = Faults { seed: 11, reset_after_forward_rate: 0.3, ..Faults::default() };
        let both = Faults { error_after_forward_rate: 0.3, ..resets.clone() };
        let (a, b) = (resets.plan(2000), both.plan(2000));
        // The resets stay exactly where they were; some plain forwards become 5xx-after-commit.
        for (x, y) in a.iter().zip(&b) {
            match x {
                Outcome::ForwardThenReset { .. } => assert_eq!(x, y),
                Outcome::Forward { .. } => {
                    assert!(matches!(y, Outcome::Forward { .. } | Outcome::ForwardThenError { .. }), "{y:?}")
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let errors: Vec<u16> = b
            .iter()
            .filter_map(|o| match o {
                Outcome::ForwardThenError { code, .. } => Some(*code),
                _ => None,
            })
            .collect();
        assert!((500..700).contains(&errors.len()), "{}", errors.len());
        assert!(errors.contains(&500) && errors.contains(&504));
        assert!(errors.iter().all(|c| *c == 500 || *c == 504));
        let only = Faults { seed: 11, error_after_forward_rate: 1.0, ..Faults::default() };
        assert!(only.plan(100).iter().all(|o| matches!(o, Outcome::ForwardThenError { .. })));
    }

    #[test]
    fn path_filter() {
        let faults = Faults { path_filter: Some("managedcharts".into()), ..Faults::default() };
        assert!(faults.is_eligible("/apis/management.cattle.io/v3/namespaces/fleet-local/managedcharts/x"));
        assert!(!faults.is_eligible("/api/v1/namespaces/default/configmaps/ledger"));
        assert!(Faults::default().is_eligible("/anything"));
    }
}
