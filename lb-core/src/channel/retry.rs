//! Retries (gRFC A6): the `retryPolicy` and `hedgingPolicy` of a `methodConfig`,
//! the channel's `retryThrottling`, and the rules a call applies after an attempt
//! fails.
//!
//! ```json
//! {
//!   "methodConfig": [{
//!     "name": [{"service": "echo.Echo"}],
//!     "retryPolicy": {
//!       "maxAttempts": 4,
//!       "initialBackoff": "0.1s",
//!       "maxBackoff": "1s",
//!       "backoffMultiplier": 2,
//!       "retryableStatusCodes": ["UNAVAILABLE"]
//!     }
//!   }],
//!   "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
//! }
//! ```
//!
//! After an attempt fails, [`decide`] says whether the call tries again and when:
//!
//! ```text
//!   committed (response headers, a message, or the retry buffer overflowed) ──> final
//!   grpc-retry-pushback-ms present but not one non-negative integer ──> throttle, final
//!   code not in retryableStatusCodes                                 ──> final
//!   throttled (tokens ≤ maxTokens / 2 after taking one)              ──> final
//!   maxAttempts reached                                              ──> final
//!   pushback ms given ──> retry after exactly that; backoff restarts at initialBackoff
//!   else              ──> retry after random(0, min(initial × multiplier^n, max))
//! ```
//!
//! Transparent retries (attempts the server never saw) follow their own rules in
//! [`super::call`] and count neither as attempts nor against the throttle, as in
//! grpc-go. Each retry picks anew and carries `grpc-previous-rpc-attempts`.
//!
//! With a `hedgingPolicy` a call does not wait for a failure: it starts another
//! attempt every `hedgingDelay` up to `maxAttempts`, at once after an attempt
//! fails with a `nonFatalStatusCodes` code (or after the server's pushback; a
//! negative one stops hedging, as does the throttle). The first attempt to answer
//! wins and the others are cancelled; an OK or fatal status also ends the call.
//! grpc-go has no hedging; this follows gRFC A6 and grpc-java.
//!
//! Validation follows grpc-go and C-core: `maxAttempts` must be at least 2 and is
//! capped at [`MAX_ATTEMPTS`]; backoffs and the multiplier must be positive; the code
//! list must not be empty; a method config may have at most one of the two policies;
//! `maxTokens` is in (0, 1000] and `tokenRatio` positive. Errors name the field.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::config::{ConfigError, Fields, json_type};
use crate::metadata::Metadata;
use crate::random::SharedRandom;
use crate::status::Code;

/// How many bytes of request messages one call keeps, before it commits, to replay
/// on a retry (gRFC A6; C-core's default per-call retry buffer). A call that sends
/// more commits at once and is no longer retried.
pub const RETRY_BUFFER_LIMIT: usize = 256 << 10;

/// How many bytes of request messages all of a channel's calls keep together for
/// retries (grpc-java's default); a call that would go over commits.
pub const CHANNEL_RETRY_BUFFER_LIMIT: usize = 16 << 20;

/// A channel's retry settings, from its builder.
#[derive(Clone, Debug)]
pub(crate) struct RetrySettings {
    /// `retryPolicy` is followed (transparent retries happen regardless).
    pub(crate) enabled: bool,
    pub(crate) per_call_buffer: usize,
    pub(crate) channel_buffer: usize,
    /// For the backoff's jitter.
    pub(crate) random: SharedRandom,
}

/// A channel's retry counters, shared by its calls.
#[derive(Debug, Default)]
pub(crate) struct RetryCounters {
    pub(crate) retries: AtomicU64,
    pub(crate) transparent_retries: AtomicU64,
    pub(crate) throttled: AtomicU64,
    pub(crate) hedges: AtomicU64,
    pub(crate) in_backoff: AtomicUsize,
    /// Bytes the channel's calls keep for replay now.
    pub(crate) buffered: AtomicUsize,
}

impl RetryCounters {
    pub(crate) fn stats(&self) -> RetryStats {
        RetryStats {
            retries: self.retries.load(Ordering::Relaxed),
            transparent_retries: self.transparent_retries.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            hedges: self.hedges.load(Ordering::Relaxed),
            in_backoff: self.in_backoff.load(Ordering::Acquire),
            buffered_bytes: self.buffered.load(Ordering::Acquire),
        }
    }

    /// Reserves `bytes` of the channel's retry buffer, if they fit under `limit`.
    pub(crate) fn reserve(&self, bytes: usize, limit: usize) -> bool {
        self.buffered
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_add(bytes).filter(|&n| n <= limit)
            })
            .is_ok()
    }

    pub(crate) fn unreserve(&self, bytes: usize) {
        self.buffered.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// What a channel's calls have retried, from [`Channel::retry_stats`].
///
/// [`Channel::retry_stats`]: super::Channel::retry_stats
///
/// # Examples
///
/// ```
/// # fn show(channel: &lb_core::channel::Channel) {
/// let stats = channel.retry_stats();
/// println!("{} retries, {} calls waiting to retry", stats.retries, stats.in_backoff);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetryStats {
    /// Retries under a `retryPolicy` started since the channel was built.
    pub retries: u64,
    /// Attempts sent again because the server never saw them.
    pub transparent_retries: u64,
    /// Failed attempts not retried because `retryThrottling` ran out of tokens.
    pub throttled: u64,
    /// Hedged attempts started after each call's first (`hedgingPolicy`).
    pub hedges: u64,
    /// Calls waiting out a retry backoff now.
    pub in_backoff: usize,
    /// Bytes of request messages kept for retries now.
    pub buffered_bytes: usize,
}

/// The most attempts a retry or hedging policy may ask for; larger values are
/// capped (grpc-go's and C-core's default).
pub const MAX_ATTEMPTS: u32 = 5;

/// The trailer a server sets to delay (or, with a negative value, stop) retries.
pub const PUSHBACK_TRAILER: &str = "grpc-retry-pushback-ms";

/// The request header that tells the server how many attempts preceded this one.
pub const PREVIOUS_ATTEMPTS_HEADER: &str = "grpc-previous-rpc-attempts";

/// A set of status codes, as a bit per code.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct CodeSet(u32);

impl CodeSet {
    /// Whether `code` is in the set.
    pub fn contains(self, code: Code) -> bool {
        self.0 & (1 << code.as_i32()) != 0
    }

    /// The set with `code` added.
    pub fn with(self, code: Code) -> Self {
        Self(self.0 | (1 << code.as_i32()))
    }

    /// Whether the set has no code.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl std::fmt::Debug for CodeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set()
            .entries(Code::ALL.iter().filter(|c| self.contains(**c)))
            .finish()
    }
}

/// A `methodConfig`'s `retryPolicy`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use lb_core::Code;
/// use lb_core::LbPolicyRegistry;
/// use lb_core::channel::ServiceConfig;
/// let sc = ServiceConfig::parse_str(r#"{"methodConfig": [{"name": [{}], "retryPolicy": {
///     "maxAttempts": 9, "initialBackoff": "0.1s", "maxBackoff": "1s",
///     "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", 4]}}]}"#,
///     &LbPolicyRegistry::with_builtins())?;
/// let policy = sc.method("/s/m").unwrap().retry_policy.as_ref().unwrap();
/// assert_eq!(policy.max_attempts, 5, "capped");
/// assert_eq!(policy.initial_backoff, Duration::from_millis(100));
/// assert!(policy.retryable_status_codes.contains(Code::DeadlineExceeded));
/// # Ok::<(), lb_core::ConfigError>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (2 to [`MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// The upper bound of the first retry's random delay.
    pub initial_backoff: Duration,
    /// The bound no delay exceeds.
    pub max_backoff: Duration,
    /// How much the bound grows with each retry.
    pub backoff_multiplier: f64,
    /// The codes that make a failed attempt worth another.
    pub retryable_status_codes: CodeSet,
}

/// A `methodConfig`'s `hedgingPolicy`: a call starts its first attempt, then
/// another every `hedgingDelay` (at once after a non-fatal failure) up to
/// `maxAttempts`; the first attempt to answer (response headers, a message, OK or
/// a fatal status) wins and the others are cancelled.
#[derive(Clone, Debug, PartialEq)]
pub struct HedgingPolicy {
    /// Attempts in all, the first included (2 to [`MAX_ATTEMPTS`]).
    pub max_attempts: u32,
    /// The delay between starting one attempt and the next.
    pub hedging_delay: Duration,
    /// The codes after which the other attempts go on (any other code ends the
    /// call).
    pub non_fatal_status_codes: CodeSet,
}

/// The service config's `retryThrottling`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryThrottling {
    /// The token bucket's size (0 < maxTokens ≤ 1000).
    pub max_tokens: u32,
    /// Tokens a successful call gives back (positive; thousandths count).
    pub token_ratio: f64,
}

/// The tokens of one channel's `retryThrottling`, shared by its calls. Lock-free:
/// tokens are kept in thousandths.
#[derive(Debug)]
pub(crate) struct Throttler {
    config: RetryThrottling,
    milli_tokens: AtomicU64,
}

impl PartialEq for Throttler {
    /// Throttlers are equal when their configs are: the tokens are state, not
    /// config.
    fn eq(&self, other: &Self) -> bool {
        self.config == other.config
    }
}

impl Throttler {
    pub(crate) fn new(config: RetryThrottling) -> Self {
        Self {
            config,
            milli_tokens: AtomicU64::new(u64::from(config.max_tokens) * 1000),
        }
    }

    pub(crate) fn config(&self) -> RetryThrottling {
        self.config
    }

    fn max(&self) -> u64 {
        u64::from(self.config.max_tokens) * 1000
    }

    /// Takes one token for a failed attempt; true when retries are now throttled
    /// (the tokens are at or below half the maximum).
    pub(crate) fn failed(&self) -> bool {
        let prev = self
            .milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some(t.saturating_sub(1000))
            })
            .unwrap_or(0);
        prev.saturating_sub(1000) <= self.max() / 2
    }

    /// Gives `tokenRatio` back for a call that succeeded.
    pub(crate) fn succeeded(&self) {
        let ratio = (self.config.token_ratio * 1000.0).round() as u64;
        let max = self.max();
        let _ = self
            .milli_tokens
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                Some((t + ratio).min(max))
            });
    }

    /// The tokens now, in thousandths.
    #[cfg(test)]
    pub(crate) fn milli_tokens(&self) -> u64 {
        self.milli_tokens.load(Ordering::Acquire)
    }
}

/// What a server's `grpc-retry-pushback-ms` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pushback {
    /// No pushback trailer.
    None,
    /// Retry after exactly this long.
    After(Duration),
    /// Do not retry (a negative, malformed or repeated value).
    Stop,
}

pub(crate) fn pushback(trailers: &Metadata) -> Pushback {
    let mut values = trailers.get_all(PUSHBACK_TRAILER);
    let Some(first) = values.next() else {
        return Pushback::None;
    };
    if values.next().is_some() {
        return Pushback::Stop;
    }
    match first.parse::<i64>() {
        Ok(ms) if ms >= 0 => Pushback::After(Duration::from_millis(ms as u64)),
        _ => Pushback::Stop,
    }
}

/// Where a call's retries stand.
#[derive(Debug, Default)]
pub(crate) struct RetryState {
    /// Retries started (not counting transparent ones).
    pub(crate) retries: u32,
    /// Retries since the last pushback, which the backoff grows with.
    pub(crate) since_pushback: u32,
}

/// What to do after an attempt failed with `code` and `trailers` (the call not
/// committed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// The attempt's status is the call's.
    Final,
    /// The attempt's status is the call's: `retryThrottling` stopped the retry.
    Throttled,
    /// Try again after this long.
    RetryAfter(Duration),
}

/// Applies gRFC A6's rules in grpc-go's order (see the module docs). `random` is a
/// fraction in [0, 1) for the jitter.
pub(crate) fn decide(
    policy: &RetryPolicy,
    throttler: Option<&Throttler>,
    state: &mut RetryState,
    code: Code,
    trailers: &Metadata,
    random: f64,
) -> Decision {
    let throttled = || throttler.is_some_and(Throttler::failed);
    let pushback = pushback(trailers);
    if pushback == Pushback::Stop {
        throttled();
        return Decision::Final;
    }
    if !policy.retryable_status_codes.contains(code) {
        return Decision::Final;
    }
    // Counted as a failure only once the code is known to be retryable.
    if throttled() {
        return Decision::Throttled;
    }
    if state.retries + 1 >= policy.max_attempts {
        return Decision::Final;
    }
    let delay = match pushback {
        Pushback::After(d) => {
            state.since_pushback = 0;
            d
        }
        _ => {
            let exp = i32::try_from(state.since_pushback).unwrap_or(i32::MAX);
            let bound = (policy.initial_backoff.as_secs_f64()
                * policy.backoff_multiplier.powi(exp))
            .min(policy.max_backoff.as_secs_f64());
            state.since_pushback += 1;
            Duration::from_secs_f64((bound * random).max(0.0))
        }
    };
    state.retries += 1;
    Decision::RetryAfter(delay)
}

/// Parses `retryPolicy`.
pub(crate) fn parse_retry_policy(value: &Value) -> Result<RetryPolicy, ConfigError> {
    let fields = Fields::new(value, "")?;
    let max_attempts = max_attempts(&fields)?;
    let positive = |name: &str| -> Result<Duration, ConfigError> {
        match fields.duration(name)? {
            None => Err(ConfigError::new(name, "is required")),
            Some(d) if d.is_zero() => Err(ConfigError::new(name, "must be greater than 0")),
            Some(d) => Ok(d),
        }
    };
    let initial_backoff = positive("initialBackoff")?;
    let max_backoff = positive("maxBackoff")?;
    let backoff_multiplier = match fields.get("backoffMultiplier") {
        None => return Err(ConfigError::new("backoffMultiplier", "is required")),
        Some(v) => match v.as_f64() {
            Some(m) if m > 0.0 && m.is_finite() => m,
            Some(_) => {
                return Err(ConfigError::new(
                    "backoffMultiplier",
                    "must be greater than 0",
                ));
            }
            None => {
                return Err(ConfigError::new(
                    "backoffMultiplier",
                    format!("must be a number, not {}", json_type(v)),
                ));
            }
        },
    };
    let retryable_status_codes = codes(&fields, "retryableStatusCodes")?;
    if retryable_status_codes.is_empty() {
        return Err(ConfigError::new(
            "retryableStatusCodes",
            "must list at least one code",
        ));
    }
    Ok(RetryPolicy {
        max_attempts,
        initial_backoff,
        max_backoff,
        backoff_multiplier,
        retryable_status_codes,
    })
}

/// Parses `hedgingPolicy`.
pub(crate) fn parse_hedging_policy(value: &Value) -> Result<HedgingPolicy, ConfigError> {
    let fields = Fields::new(value, "")?;
    Ok(HedgingPolicy {
        max_attempts: max_attempts(&fields)?,
        hedging_delay: fields.duration("hedgingDelay")?.unwrap_or_default(),
        non_fatal_status_codes: codes(&fields, "nonFatalStatusCodes")?,
    })
}

/// Parses `retryThrottling`.
pub(crate) fn parse_retry_throttling(value: &Value) -> Result<RetryThrottling, ConfigError> {
    let fields = Fields::new(value, "")?;
    let max_tokens = match fields.get("maxTokens") {
        None => return Err(ConfigError::new("maxTokens", "is required")),
        Some(v) => match v.as_u64() {
            Some(n @ 1..=1000) => n as u32,
            _ => {
                return Err(ConfigError::new(
                    "maxTokens",
                    format!("must be an integer from 1 to 1000, not {v}"),
                ));
            }
        },
    };
    let token_ratio = match fields.get("tokenRatio") {
        None => return Err(ConfigError::new("tokenRatio", "is required")),
        Some(v) => match v.as_f64() {
            // Thousandths count (A6): a ratio that rounds to 0 would never refill.
            Some(r) if r.is_finite() && (r * 1000.0).round() >= 1.0 => r,
            _ => {
                return Err(ConfigError::new(
                    "tokenRatio",
                    format!("must be a number of at least 0.001, not {v}"),
                ));
            }
        },
    };
    Ok(RetryThrottling {
        max_tokens,
        token_ratio,
    })
}

fn max_attempts(fields: &Fields<'_>) -> Result<u32, ConfigError> {
    match fields.u32("maxAttempts")? {
        None => Err(ConfigError::new("maxAttempts", "is required")),
        Some(n) if n < 2 => Err(ConfigError::new(
            "maxAttempts",
            format!("must be at least 2, not {n}"),
        )),
        Some(n) => Ok(n.min(MAX_ATTEMPTS)),
    }
}

/// A list of codes, each a name (`"UNAVAILABLE"`) or a number, as grpc-go reads
/// them.
fn codes(fields: &Fields<'_>, name: &str) -> Result<CodeSet, ConfigError> {
    let mut set = CodeSet::default();
    for (i, v) in fields.array(name)?.into_iter().flatten().enumerate() {
        let code = match v {
            Value::String(s) => Code::ALL.iter().copied().find(|c| c.as_str() == s),
            Value::Number(n) => n
                .as_i64()
                .and_then(|n| i32::try_from(n).ok())
                .and_then(Code::from_i32),
            _ => None,
        };
        let Some(code) = code else {
            return Err(ConfigError::new(
                format!("{name}[{i}]"),
                format!("not a status code: {v}"),
            ));
        };
        if code == Code::Ok {
            return Err(ConfigError::new(
                format!("{name}[{i}]"),
                "OK is not a failure",
            ));
        }
        set = set.with(code);
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(250),
            backoff_multiplier: 2.0,
            retryable_status_codes: CodeSet::default().with(Code::Unavailable),
        }
    }

    fn trailers(values: &[&str]) -> Metadata {
        let mut md = Metadata::new();
        for v in values {
            md.insert(PUSHBACK_TRAILER, v).unwrap();
        }
        md
    }

    #[test]
    fn backoff_grows_to_its_cap_and_attempts_run_out() {
        let p = policy(5);
        let mut state = RetryState::default();
        let mut delays = Vec::new();
        while let Decision::RetryAfter(d) = decide(
            &p,
            None,
            &mut state,
            Code::Unavailable,
            &Metadata::new(),
            0.999_999,
        ) {
            delays.push(d.as_millis());
        }
        // Bounds 100, 200, 250 (capped), 250 ms; with a fraction just under 1.
        assert_eq!(delays, vec![99, 199, 249, 249]);
        assert_eq!(state.retries, 4, "five attempts in all");
    }

    #[test]
    fn only_listed_codes_are_retried() {
        let mut state = RetryState::default();
        let d = decide(
            &policy(3),
            None,
            &mut state,
            Code::Internal,
            &Metadata::new(),
            0.5,
        );
        assert_eq!(d, Decision::Final);
        assert_eq!(state.retries, 0);
    }

    #[test]
    fn pushback_sets_the_delay_restarts_the_backoff_or_stops() {
        let p = policy(5);
        let mut state = RetryState {
            retries: 1,
            since_pushback: 3,
        };
        let d = decide(
            &p,
            None,
            &mut state,
            Code::Unavailable,
            &trailers(&["1500"]),
            0.5,
        );
        assert_eq!(d, Decision::RetryAfter(Duration::from_millis(1500)));
        assert_eq!(state.since_pushback, 0);
        let d = decide(
            &p,
            None,
            &mut state,
            Code::Unavailable,
            &Metadata::new(),
            0.5,
        );
        assert_eq!(
            d,
            Decision::RetryAfter(Duration::from_millis(50)),
            "initial again"
        );
        for stop in [&["-1"][..], &["soon"], &["1", "2"], &[""]] {
            let mut state = RetryState::default();
            let d = decide(
                &p,
                None,
                &mut state,
                Code::Unavailable,
                &trailers(stop),
                0.5,
            );
            assert_eq!(d, Decision::Final, "{stop:?}");
        }
        // Pushback applies to retryable codes only.
        let mut state = RetryState::default();
        let d = decide(
            &p,
            None,
            &mut state,
            Code::Internal,
            &trailers(&["10"]),
            0.5,
        );
        assert_eq!(d, Decision::Final);
    }

    #[test]
    fn the_throttle_stops_retries_at_half_and_successes_refill_it() {
        let t = Throttler::new(RetryThrottling {
            max_tokens: 10,
            token_ratio: 0.5,
        });
        let p = policy(5);
        let mut outcomes = Vec::new();
        for _ in 0..6 {
            let mut state = RetryState::default();
            let d = decide(
                &p,
                Some(&t),
                &mut state,
                Code::Unavailable,
                &Metadata::new(),
                0.5,
            );
            outcomes.push(matches!(d, Decision::RetryAfter(_)));
        }
        // 10 → 9, 8, 7, 6 retry; 5 is at the threshold (10 / 2): throttled.
        assert_eq!(outcomes, [true, true, true, true, false, false]);
        let mut state = RetryState::default();
        let d = decide(
            &p,
            Some(&t),
            &mut state,
            Code::Unavailable,
            &Metadata::new(),
            0.5,
        );
        assert_eq!(d, Decision::Throttled);
        t.succeeded();
        t.succeeded();
        assert_eq!(t.milli_tokens(), 4000);
        // A non-retryable failure takes no token.
        let mut state = RetryState::default();
        decide(
            &p,
            Some(&t),
            &mut state,
            Code::Internal,
            &Metadata::new(),
            0.5,
        );
        assert_eq!(t.milli_tokens(), 4000);
        for _ in 0..3 {
            t.succeeded();
        }
        assert_eq!(t.milli_tokens(), 5500);
        let mut state = RetryState::default();
        let d = decide(
            &p,
            Some(&t),
            &mut state,
            Code::Unavailable,
            &Metadata::new(),
            0.5,
        );
        assert_eq!(
            d,
            Decision::Throttled,
            "5.5 - 1 = 4.5 is still at most half"
        );
        for _ in 0..100 {
            t.succeeded();
        }
        assert_eq!(t.milli_tokens(), 10_000, "never above maxTokens");
        // A malformed pushback counts as a failure too.
        let mut state = RetryState::default();
        decide(
            &p,
            Some(&t),
            &mut state,
            Code::Unavailable,
            &trailers(&["x"]),
            0.5,
        );
        assert_eq!(t.milli_tokens(), 9000);
    }

    fn parse_err(f: fn(&Value) -> Result<(), ConfigError>, json: &str) -> String {
        f(&serde_json::from_str(json).unwrap())
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn bad_policies_name_their_field() {
        let retry = |v: &Value| parse_retry_policy(v).map(drop);
        let good = r#""initialBackoff": "1s", "maxBackoff": "2s", "backoffMultiplier": 1.5, "retryableStatusCodes": ["UNAVAILABLE"]"#;
        for (json, want) in [
            (format!(r#"{{{good}}}"#), "maxAttempts: is required"),
            (
                format!(r#"{{"maxAttempts": 1, {good}}}"#),
                "maxAttempts: must be at least 2",
            ),
            (
                r#"{"maxAttempts": 2, "initialBackoff": "0s"}"#.into(),
                "initialBackoff: must be greater than 0",
            ),
            (
                r#"{"maxAttempts": 2, "initialBackoff": "1s"}"#.into(),
                "maxBackoff: is required",
            ),
            (
                r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1x"}"#.into(),
                "maxBackoff: invalid duration",
            ),
            (
                r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 0}"#.into(),
                "backoffMultiplier: must be greater than 0",
            ),
            (
                r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": "2"}"#.into(),
                "backoffMultiplier: must be a number",
            ),
            (
                r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": []}"#.into(),
                "retryableStatusCodes: must list at least one code",
            ),
            (
                r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE", "SOON"]}"#.into(),
                "retryableStatusCodes[1]: not a status code",
            ),
            (
                r#"{"maxAttempts": 2, "initialBackoff": "1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": [0]}"#.into(),
                "retryableStatusCodes[0]: OK is not a failure",
            ),
        ] {
            let err = parse_err(retry, &json);
            assert!(err.starts_with(want), "{json}\n got {err}\nwant {want}");
        }
        let hedge = |v: &Value| parse_hedging_policy(v).map(drop);
        assert!(
            parse_err(hedge, r#"{"maxAttempts": 0}"#)
                .starts_with("maxAttempts: must be at least 2")
        );
        assert!(
            parse_err(hedge, r#"{"maxAttempts": 2, "hedgingDelay": 5}"#)
                .starts_with("hedgingDelay: must be a string")
        );
        let throttle = |v: &Value| parse_retry_throttling(v).map(drop);
        for (json, want) in [
            (r#"{"tokenRatio": 1}"#, "maxTokens: is required"),
            (
                r#"{"maxTokens": 0, "tokenRatio": 1}"#,
                "maxTokens: must be an integer from 1 to 1000",
            ),
            (
                r#"{"maxTokens": 1001, "tokenRatio": 1}"#,
                "maxTokens: must be an integer from 1 to 1000",
            ),
            (r#"{"maxTokens": 10}"#, "tokenRatio: is required"),
            (
                r#"{"maxTokens": 10, "tokenRatio": 0.0001}"#,
                "tokenRatio: must be a number of at least 0.001",
            ),
            (
                r#"{"maxTokens": 10, "tokenRatio": -1}"#,
                "tokenRatio: must be a number of at least 0.001",
            ),
        ] {
            let err = parse_err(throttle, json);
            assert!(err.starts_with(want), "{json}\n got {err}\nwant {want}");
        }
    }

    #[test]
    fn hedging_defaults_and_caps() {
        let h = parse_hedging_policy(&serde_json::json!({"maxAttempts": 7})).unwrap();
        assert_eq!(h.max_attempts, 5);
        assert_eq!(h.hedging_delay, Duration::ZERO);
        assert!(h.non_fatal_status_codes.is_empty());
    }
}
