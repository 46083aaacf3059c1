//! The retry policy: its configuration, the backoff schedule and `Retry-After`.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use crmsync_core::{Error, Result, Retry};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::{Deserialize, Serialize};

/// Most retries one request may get.
const MAX_RETRIES: u32 = 20;
/// Longest configurable delay, milliseconds (one hour).
const MAX_DELAY_MS: u64 = 3_600_000;

/// How often and how long to retry a request that failed temporarily (429, 5xx, throttling
/// codes, timeouts, dropped connections). Written `retry = { … }` in every adapter's config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Retries after the first attempt (at most 20).
    pub max_retries: u32,
    /// First backoff delay, milliseconds (doubles per retry, with jitter).
    pub min_delay_ms: u64,
    /// Longest delay between two attempts, milliseconds (at most one hour). A `Retry-After`
    /// longer than this ends the retries at once: the error keeps the service's hint.
    pub max_delay_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { max_retries: 4, min_delay_ms: 500, max_delay_ms: 30_000 }
    }
}

impl RetryConfig {
    /// Millisecond delays, for tests and fakes.
    pub fn fast() -> Self {
        Self { max_retries: 4, min_delay_ms: 1, max_delay_ms: 20 }
    }

    /// Check the ranges; the error is one `InvalidConfig` line naming `service` and the key.
    pub fn validate(&self, service: &str) -> Result<()> {
        let bad = |m: String| Err(Error::invalid_config(format!("{service}: retry.{m}")));
        if self.max_retries > MAX_RETRIES {
            return bad(format!("max_retries {} exceeds {MAX_RETRIES}", self.max_retries));
        }
        if self.max_delay_ms > MAX_DELAY_MS {
            return bad(format!("max_delay_ms {} exceeds {MAX_DELAY_MS} (one hour)", self.max_delay_ms));
        }
        if self.min_delay_ms > self.max_delay_ms {
            return bad(format!("min_delay_ms {} exceeds max_delay_ms {}", self.min_delay_ms, self.max_delay_ms));
        }
        Ok(())
    }

    pub(crate) fn max_delay(&self) -> Duration {
        Duration::from_millis(self.max_delay_ms.min(MAX_DELAY_MS))
    }

    /// The backoff schedule: `max_retries` delays, exponential from `min_delay_ms` with
    /// jitter, each capped by `max_delay_ms`.
    pub(crate) fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.min_delay_ms.min(MAX_DELAY_MS)))
            .with_max_delay(self.max_delay())
            .with_max_times(self.max_retries.min(MAX_RETRIES) as usize)
            .with_jitter()
    }

    /// The wait before the next attempt after `err`, given the schedule's next delay (`None`
    /// when the budget is spent): the error's own `Retry-After` hint when it has one, or no
    /// further attempt when that hint is longer than `max_delay_ms`.
    pub(crate) fn wait(&self, err: &Error, scheduled: Option<Duration>) -> Option<Duration> {
        let scheduled = scheduled?;
        match err.retry() {
            Retry::Temporary { after: Some(a) } if a > self.max_delay() => None,
            Retry::Temporary { after: Some(a) } => Some(a),
            _ => Some(scheduled),
        }
    }
}

/// The `Retry-After` header: seconds (whole or decimal, as Graph sends them) or an HTTP-date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(MAX_DELAY_MS as f64 / 1000.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = (at.to_utc() - chrono::Utc::now()).num_milliseconds().clamp(0, MAX_DELAY_MS as i64);
    Some(Duration::from_millis(ms as u64))
}

/// Run a batch whose items fail one by one (Graph `$batch` sub-requests): `run` sends the
/// given indices and answers one result per index, in order. Items whose error is temporary
/// are sent again, alone, on the same schedule as a request; the rest keep their result.
pub async fn retry_items<V, F, Fut>(cfg: &RetryConfig, len: usize, mut run: F) -> Result<Vec<Result<V>>>
where
    F: FnMut(Vec<usize>) -> Fut,
    Fut: Future<Output = Result<Vec<Result<V>>>>,
{
    let mut results: Vec<Option<Result<V>>> = (0..len).map(|_| None).collect();
    let mut pending: Vec<usize> = (0..len).collect();
    let mut schedule = cfg.backoff().build();
    while !pending.is_empty() {
        let answers = run(pending.clone()).await?;
        let next = schedule.next();
        let mut again = vec![];
        let mut wait = Duration::ZERO;
        for (i, r) in pending.iter().copied().zip(answers) {
            let retry_in = match &r {
                Err(e) if e.is_temporary() => cfg.wait(e, next),
                _ => None,
            };
            if let Some(w) = retry_in {
                wait = wait.max(w);
                again.push(i);
            }
            results[i] = Some(r);
        }
        if again.is_empty() {
            break;
        }
        tracing::debug!(count = again.len(), ?wait, "retrying temporarily failed batch items");
        tokio::time::sleep(wait).await;
        pending = again;
    }
    Ok(results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::unexpected("batch: no result for an item"))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_key_and_refuses_huge_values() {
        assert!(RetryConfig::default().validate("x").is_ok());
        let e = RetryConfig { max_retries: u32::MAX, ..Default::default() }.validate("google").unwrap_err();
        assert!(e.message().starts_with("google: retry.max_retries"), "{e}");
        let e = RetryConfig { max_delay_ms: u64::MAX, ..Default::default() }.validate("x").unwrap_err();
        assert!(e.message().contains("max_delay_ms"), "{e}");
        let e = RetryConfig { min_delay_ms: 10, max_delay_ms: 5, ..Default::default() }.validate("x").unwrap_err();
        assert!(e.message().contains("min_delay_ms"), "{e}");
        // Out-of-range values never panic the schedule either.
        let huge = RetryConfig { max_retries: u32::MAX, min_delay_ms: u64::MAX, max_delay_ms: u64::MAX };
        assert!(huge.backoff().build().next().is_some());
        let e: std::result::Result<RetryConfig, _> = serde_json::from_str(r#"{"retries": 3}"#);
        assert!(e.is_err(), "unknown keys are refused");
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "2.128".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(2128)));
        let at = chrono::Utc::now() + chrono::Duration::seconds(120);
        h.insert(RETRY_AFTER, at.to_rfc2822().replace("+0000", "GMT").parse().unwrap());
        let d = retry_after(&h).expect("HTTP-date");
        assert!(d > Duration::from_secs(100) && d <= Duration::from_secs(120), "{d:?}");
        h.insert(RETRY_AFTER, "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past means now");
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, "1e300".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(MAX_DELAY_MS)));
    }

    #[test]
    fn a_hint_beyond_max_delay_ends_the_retries() {
        let cfg = RetryConfig::fast();
        let slow = Error::new(crmsync_core::ErrorKind::RateLimited, "x").temporary(Some(Duration::from_secs(3600)));
        assert_eq!(cfg.wait(&slow, Some(Duration::from_millis(1))), None);
        let quick = Error::new(crmsync_core::ErrorKind::RateLimited, "x").temporary(Some(Duration::from_millis(3)));
        assert_eq!(cfg.wait(&quick, Some(Duration::from_millis(1))), Some(Duration::from_millis(3)));
        assert_eq!(cfg.wait(&quick, None), None, "a spent budget stays spent");
    }
}
