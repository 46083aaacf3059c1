//! [`Http`]: send with retry, lost-reply safety, counting and one refresh on 401.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::Retryable;
use crmsync_core::{Error, ErrorKind, Result};
use reqwest::RequestBuilder;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::retry::RetryConfig;
use crate::snippet;
use crate::token::{TokenCache, TokenReply, oauth_error};

/// An adapter's one mapping of a failed response (status, headers, body) to an [`Error`],
/// with its retry hint: the chassis retries exactly what this marks temporary.
pub type ParseError = fn(status: u16, headers: &HeaderMap, body: &str) -> Error;

/// Requests sent on behalf of one owner (a collection handle, a port): every attempt the
/// chassis sends for it, token requests included, is counted here.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }
    /// Requests sent so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    fn hit(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// The marker (in an error's source chain) of a request that may have been applied although
/// its reply never arrived: the connection dropped or timed out after the request was sent.
/// The chassis never re-sends such a request when it is not idempotent; see [`is_reply_lost`].
#[derive(Debug)]
pub struct ReplyLost(reqwest::Error);

impl fmt::Display for ReplyLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the reply was lost; the request may have been applied")
    }
}

impl std::error::Error for ReplyLost {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether `err` is a non-idempotent request's lost reply (outcome unknown: look up what
/// landed before sending again).
pub fn is_reply_lost(err: &Error) -> bool {
    let mut cur = std::error::Error::source(err);
    while let Some(e) = cur {
        if e.is::<ReplyLost>() {
            return true;
        }
        cur = e.source();
    }
    false
}

/// A received answer (any status the caller is to look at).
#[derive(Debug)]
pub struct Response {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body as text.
    pub text: String,
}

impl Response {
    /// The body as JSON (`Null` when empty); a truncated or non-JSON body is an error naming
    /// `service`.
    pub fn json(&self, service: &str) -> Result<Value> {
        if self.text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.text).map_err(|e| {
            Error::unexpected(format!(
                "{service}: truncated or non-JSON response (HTTP {}; the body is not JSON: {})",
                self.status,
                snippet(&self.text)
            ))
            .with_source(e)
        })
    }
}

/// The first 200 characters of a body, on one line (for error messages).
/// What [`Http::on_headers`] installs.
type HeadersHook = Box<dyn Fn(&HeaderMap) + Send + Sync>;

/// One adapter's HTTP client: a reqwest client, the retry policy and the adapter's
/// [`ParseError`].
pub struct Http {
    client: reqwest::Client,
    service: &'static str,
    retry: RetryConfig,
    parse_error: ParseError,
    on_headers: Option<HeadersHook>,
}

impl fmt::Debug for Http {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Http").field("service", &self.service).field("retry", &self.retry).finish_non_exhaustive()
    }
}

impl Http {
    /// A client for `service` (the prefix of its error messages) with a per-request timeout.
    pub fn new(service: &'static str, timeout: Duration, retry: RetryConfig, parse_error: ParseError) -> Result<Self> {
        retry.validate(service)?;
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| Error::invalid_config(format!("{service}: cannot build the HTTP client")).with_source(e))?;
        Ok(Self { client, service, retry, parse_error, on_headers: None })
    }

    /// Show every response's headers (failed attempts' too) to `f`, e.g. to track a usage
    /// header.
    pub fn on_headers(mut self, f: impl Fn(&HeaderMap) + Send + Sync + 'static) -> Self {
        self.on_headers = Some(Box::new(f));
        self
    }

    /// The retry policy.
    pub fn retry_config(&self) -> &RetryConfig {
        &self.retry
    }

    /// The adapter's error mapping.
    pub fn parse_error(&self, status: u16, headers: &HeaderMap, body: &str) -> Error {
        (self.parse_error)(status, headers, body)
    }

    /// Send the request `build` makes (anew for each attempt), retrying temporary failures.
    /// Answers the first response that is not a temporary failure, whatever its status.
    ///
    /// With `idempotent = false`, a request that may have reached the service (timeout or
    /// dropped connection after sending) is not sent again: the error is marked
    /// [`ReplyLost`]. A refused connection (nothing sent) is retried either way.
    pub async fn round_trip(
        &self,
        ctr: &Counter,
        idempotent: bool,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Response> {
        let attempt = || async {
            ctr.hit();
            let resp = build(&self.client).send().await.map_err(|e| self.transport(e, idempotent))?;
            let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
            if let Some(f) = &self.on_headers {
                f(&headers);
            }
            let text = resp.text().await.map_err(|e| self.transport(e, idempotent))?;
            if status >= 400 {
                let err = self.parse_error(status, &headers, &text);
                if err.is_temporary() {
                    return Err(err);
                }
            }
            Ok(Response { status, headers, text })
        };
        attempt
            .retry(self.retry.backoff())
            .sleep(tokio::time::sleep)
            .when(|e: &Error| e.is_temporary() && !is_reply_lost(e))
            .adjust(|e, next| self.retry.wait(e, next))
            .notify(
                |e, wait| tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "{}: retrying", self.service),
            )
            .await
    }

    /// [`Http::round_trip`] for an idempotent request; a status ≥ 400 becomes the parsed error.
    pub async fn send(&self, ctr: &Counter, build: impl Fn(&reqwest::Client) -> RequestBuilder) -> Result<Response> {
        self.round_trip(ctr, true, build).await.and_then(|r| self.check(r))
    }

    /// `Ok` for a status below 400, else the parsed error.
    pub fn check(&self, resp: Response) -> Result<Response> {
        if resp.status >= 400 { Err(self.parse_error(resp.status, &resp.headers, &resp.text)) } else { Ok(resp) }
    }

    /// Send with a token from `tokens` (slot `key`, filled by `fetch` when empty or expired):
    /// [`Http::round_trip`], and on a 401 one refresh and one more try. Answers the final
    /// response whatever its status (the caller may read its headers; [`Http::check`] maps a
    /// status ≥ 400 to the parsed error).
    pub async fn send_authed<T, F, Fut>(
        &self,
        ctr: &Counter,
        idempotent: bool,
        tokens: &TokenCache<T>,
        key: &str,
        fetch: F,
        build: impl Fn(&reqwest::Client, &T) -> RequestBuilder,
    ) -> Result<Response>
    where
        T: Clone,
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(T, Option<Duration>)>>,
    {
        let lease = tokens.get(key, &fetch).await?;
        let resp = self.round_trip(ctr, idempotent, |c| build(c, &lease.token)).await?;
        if resp.status != 401 {
            return Ok(resp);
        }
        tracing::debug!("{}: access token refused, fetching a new one", self.service);
        tokens.invalidate(&lease).await;
        let lease = tokens.get(key, &fetch).await?;
        self.round_trip(ctr, idempotent, |c| build(c, &lease.token)).await
    }

    /// POST an OAuth 2.0 token request (`form`) to `url`: retried like any idempotent request,
    /// refusals mapped by [`oauth_error`] (`invalid_grant` → `GrantRevoked`).
    pub async fn fetch_token(&self, ctr: &Counter, url: &str, form: &[(&str, &str)]) -> Result<TokenReply> {
        let resp = self.round_trip(ctr, true, |c| c.post(url).form(form)).await?;
        if resp.status >= 400 {
            return Err(oauth_error(self.service, resp.status, &resp.headers, &resp.text));
        }
        let reply: TokenReply = serde_json::from_str(&resp.text).map_err(|e| {
            Error::unexpected(format!("{}: the token endpoint's answer has no access_token", self.service))
                .with_source(e)
        })?;
        Ok(reply)
    }

    fn transport(&self, e: reqwest::Error, idempotent: bool) -> Error {
        let e = e.without_url();
        let (what, sent) = if e.is_connect() {
            ("connection failed", false)
        } else if e.is_timeout() {
            ("timed out", true)
        } else {
            ("connection dropped", true)
        };
        let err = Error::new(ErrorKind::Transport, format!("{}: request {what}", self.service)).temporary(None);
        if sent && !idempotent { err.with_source(ReplyLost(e)) } else { err.with_source(e) }
    }
}
