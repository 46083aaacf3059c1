//! Faults, the rules that schedule them, and the seeded generator that draws rate rules.

use serde::{Deserialize, Serialize};

/// What goes wrong with a request. Every fake renders the status kinds in its service's own
/// error shape ([`Service::fault_reply`](crate::Service::fault_reply)); the chassis handles the
/// rest the same way for every fake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// HTTP 429 with `Retry-After` (seconds, decimals kept: 2128 ms → `2.128`).
    TooManyRequests {
        /// The `Retry-After` value, milliseconds.
        retry_after_ms: u64,
    },
    /// HTTP 403 as the service's other throttle signal (Salesforce `REQUEST_LIMIT_EXCEEDED`,
    /// Calendar `rateLimitExceeded`; where the service has none, its 429).
    Throttle403,
    /// HTTP 503 (service unavailable).
    Unavailable,
    /// HTTP 500 (internal server error).
    ServerError,
    /// Every access token expires and this request gets the service's 401.
    ExpiredToken,
    /// The connection drops mid-reply; the request is not applied.
    Drop,
    /// The request is applied, then the connection drops mid-reply: the client sees a transport
    /// error for a write that happened.
    LostReply,
    /// HTTP 200 with a JSON body cut short (a broken proxy); the request is not applied.
    Truncated,
    /// The request is served after `ms` milliseconds.
    Latency {
        /// The delay, milliseconds.
        ms: u64,
    },
    /// Every delta / sync token (cursor) handed out so far expires, then the request is served.
    ExpiredCursor,
}

impl Fault {
    /// A status fault: answered by the service's error reply instead of serving the request.
    pub fn is_status(&self) -> bool {
        matches!(
            self,
            Self::TooManyRequests { .. }
                | Self::Throttle403
                | Self::Unavailable
                | Self::ServerError
                | Self::ExpiredToken
        )
    }

    /// The `Retry-After` header value of a 429 (`None` for other kinds).
    pub fn retry_after(&self) -> Option<String> {
        let Self::TooManyRequests { retry_after_ms: ms } = self else { return None };
        let (s, frac) = (ms / 1000, ms % 1000);
        Some(if frac == 0 { s.to_string() } else { format!("{s}.{frac:03}").trim_end_matches('0').to_owned() })
    }
}

/// When a rule fires among the requests it matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Schedule {
    /// Let `skip` matching requests pass, then hit the next `count`.
    Next {
        /// Matching requests that pass first.
        skip: u64,
        /// Matching requests hit after them.
        count: u64,
    },
    /// Hit each matching request with probability `rate` (0..=1), drawn from the fake's seeded
    /// generator.
    Rate {
        /// The probability.
        rate: f64,
    },
}

impl Default for Schedule {
    fn default() -> Self {
        Self::Next { skip: 0, count: 1 }
    }
}

/// A fault, the requests it matches and its schedule. Without `endpoint` and `method` it
/// matches every top-level request; an `endpoint` (an endpoint name as the counters spell it,
/// or a prefix ending in `*`) also matches sub-requests of a batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultRule {
    /// What goes wrong.
    pub fault: Fault,
    /// Only requests to this endpoint (`contacts.delta`, `batch:*`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Only requests with this method (case-insensitive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// When it fires (default: the next matching request).
    #[serde(default)]
    pub schedule: Schedule,
}

impl FaultRule {
    /// `fault` on the next request.
    pub fn new(fault: Fault) -> Self {
        Self { fault, endpoint: None, method: None, schedule: Schedule::default() }
    }

    /// Only requests to `endpoint` (exact, or a prefix ending in `*`).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Only requests with `method`.
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// The `n`-th matching request from now (1 = the next one), once.
    pub fn nth(mut self, n: u64) -> Self {
        self.schedule = Schedule::Next { skip: n.max(1) - 1, count: 1 };
        self
    }

    /// The next `count` matching requests.
    pub fn times(mut self, count: u64) -> Self {
        self.schedule = Schedule::Next { skip: 0, count };
        self
    }

    /// Each matching request with probability `rate`.
    pub fn rate(mut self, rate: f64) -> Self {
        self.schedule = Schedule::Rate { rate: rate.clamp(0.0, 1.0) };
        self
    }

    fn matches(&self, method: &str, endpoint: &str, sub: bool) -> bool {
        let endpoint_ok = match self.endpoint.as_deref() {
            None => !sub,
            Some(p) => match p.strip_suffix('*') {
                Some(prefix) => endpoint.starts_with(prefix),
                None => p == endpoint,
            },
        };
        endpoint_ok && self.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method))
    }
}

/// A seeded pseudo-random generator (splitmix64): the same seed gives the same sequence.
#[derive(Clone, Debug, Default)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The active rules of one fake.
#[derive(Debug, Default)]
pub(crate) struct Rules(Vec<FaultRule>);

impl Rules {
    pub fn add(&mut self, rule: FaultRule) {
        self.0.push(rule);
    }

    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn list(&self) -> Vec<FaultRule> {
        self.0.clone()
    }

    /// The fault for one request, if a rule fires. Every matching next-N rule counts the
    /// request (so `nth` keeps its meaning when several rules are pending); the first rule
    /// due fires. Spent rules are removed.
    pub fn draw(&mut self, rng: &mut Rng, method: &str, endpoint: &str, sub: bool) -> Option<Fault> {
        let mut fired = None;
        for rule in self.0.iter_mut().filter(|r| r.matches(method, endpoint, sub)) {
            match &mut rule.schedule {
                Schedule::Next { skip, .. } if *skip > 0 => *skip -= 1,
                Schedule::Next { count, .. } if fired.is_none() && *count > 0 => {
                    *count -= 1;
                    fired = Some(rule.fault.clone());
                }
                Schedule::Rate { rate } if fired.is_none() && rng.unit() < *rate => fired = Some(rule.fault.clone()),
                _ => {}
            }
        }
        self.0.retain(|r| !matches!(r.schedule, Schedule::Next { count: 0, .. }));
        fired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nth_rules_keep_their_numbers_when_several_are_pending() {
        let mut rules = Rules::default();
        let mut rng = Rng::new(1);
        rules.add(FaultRule::new(Fault::Unavailable).nth(1));
        rules.add(FaultRule::new(Fault::Drop).nth(3));
        let drawn: Vec<_> = (0..4).map(|_| rules.draw(&mut rng, "GET", "x", false)).collect();
        assert_eq!(drawn, vec![Some(Fault::Unavailable), None, Some(Fault::Drop), None]);
        assert!(rules.list().is_empty(), "spent rules are gone");
    }

    #[test]
    fn endpoint_and_method_rules_match_only_their_requests() {
        let mut rules = Rules::default();
        let mut rng = Rng::new(1);
        rules.add(FaultRule::new(Fault::ServerError).endpoint("batch:*").method("patch").times(2));
        assert_eq!(rules.draw(&mut rng, "PATCH", "contacts", false), None);
        assert_eq!(rules.draw(&mut rng, "GET", "batch:contacts", true), None);
        assert_eq!(rules.draw(&mut rng, "PATCH", "batch:contacts", true), Some(Fault::ServerError));
        rules.add(FaultRule::new(Fault::Unavailable));
        assert_eq!(rules.draw(&mut rng, "PATCH", "batch:events", true), Some(Fault::ServerError));
        assert_eq!(rules.draw(&mut rng, "PATCH", "batch:events", true), None, "any-rules skip sub-requests");
        assert_eq!(rules.draw(&mut rng, "GET", "contacts", false), Some(Fault::Unavailable));
    }

    #[test]
    fn a_rate_rule_is_reproducible_by_seed() {
        let run = |seed| {
            let mut rules = Rules::default();
            let mut rng = Rng::new(seed);
            rules.add(FaultRule::new(Fault::Unavailable).rate(0.3));
            (0..200).map(|_| rules.draw(&mut rng, "GET", "x", false).is_some()).collect::<Vec<_>>()
        };
        let hits = run(42).iter().filter(|h| **h).count();
        assert!((30..90).contains(&hits), "about 30 % of 200: {hits}");
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn rules_round_trip_through_json() {
        let rule = FaultRule::new(Fault::TooManyRequests { retry_after_ms: 2128 }).endpoint("query").rate(0.5);
        let text = serde_json::to_string(&rule).unwrap();
        assert_eq!(serde_json::from_str::<FaultRule>(&text).unwrap(), rule);
        let short: FaultRule = serde_json::from_str(r#"{"fault":{"kind":"latency","ms":5}}"#).unwrap();
        assert_eq!(short, FaultRule::new(Fault::Latency { ms: 5 }));
        assert_eq!(rule.fault.retry_after().as_deref(), Some("2.128"));
        assert_eq!(Fault::TooManyRequests { retry_after_ms: 4 }.retry_after().as_deref(), Some("0.004"));
        assert_eq!(Fault::TooManyRequests { retry_after_ms: 3000 }.retry_after().as_deref(), Some("3"));
    }
}
