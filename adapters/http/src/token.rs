//! Access tokens: a single-flight cache and the OAuth 2.0 token endpoint's answers.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crmsync_core::{Error, ErrorKind, Result};
use reqwest::header::HeaderMap;
use secrecy::SecretString;
use serde::Deserialize;

use crate::retry::retry_after;
use crate::snippet;

/// A token is used until this long before the service says it expires.
const EXPIRY_MARGIN: Duration = Duration::from_secs(60);
/// Longest a token is trusted, whatever the service says.
const MAX_LIFETIME: Duration = Duration::from_secs(24 * 3600);

struct Slot<T> {
    token: Option<T>,
    until: Option<Instant>,
    generation: u64,
}

/// Access tokens by key (a principal: "the org", "app", a hashed user grant). One refresh at a
/// time per key: concurrent callers that find the slot empty wait for the one fetch under way
/// and share its token. Shared by every collection of an adapter.
pub struct TokenCache<T> {
    slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Slot<T>>>>>,
}

impl<T> Default for TokenCache<T> {
    fn default() -> Self {
        Self { slots: Mutex::new(HashMap::new()) }
    }
}

impl<T> fmt::Debug for TokenCache<T> {
    /// The number of slots; never a token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.slots.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("TokenCache").field("slots", &n).finish()
    }
}

/// A token handed out by [`TokenCache::get`]; give it back to [`TokenCache::invalidate`]
/// when the service refuses it.
#[derive(Debug)]
pub struct Lease<T> {
    /// The token.
    pub token: T,
    key: String,
    generation: u64,
}

impl<T: Clone> TokenCache<T> {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    fn slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Slot<T>>> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(Slot { token: None, until: None, generation: 0 })))
            .clone()
    }

    /// The cached token of `key`, or the one `fetch` gets (with its lifetime, `None` when the
    /// service gives none: kept until refused).
    pub async fn get<Fut>(&self, key: &str, fetch: impl FnOnce() -> Fut) -> Result<Lease<T>>
    where
        Fut: Future<Output = Result<(T, Option<Duration>)>>,
    {
        let slot = self.slot(key);
        let mut s = slot.lock().await;
        let fresh = s.until.is_none_or(|u| u > Instant::now());
        if let (Some(t), true) = (&s.token, fresh) {
            return Ok(Lease { token: t.clone(), key: key.to_owned(), generation: s.generation });
        }
        let (token, lifetime) = fetch().await?;
        s.generation += 1;
        s.token = Some(token.clone());
        s.until = lifetime.and_then(|l| {
            let l = l.min(MAX_LIFETIME).saturating_sub(EXPIRY_MARGIN).max(Duration::from_secs(1));
            Instant::now().checked_add(l)
        });
        Ok(Lease { token, key: key.to_owned(), generation: s.generation })
    }

    /// Forget the leased token (the service refused it), unless a newer one replaced it.
    pub async fn invalidate(&self, lease: &Lease<T>) {
        let slot = self.slot(&lease.key);
        let mut s = slot.lock().await;
        if s.generation == lease.generation {
            s.token = None;
        }
    }
}

/// A successful OAuth 2.0 token response.
#[derive(Debug, Deserialize)]
pub struct TokenReply {
    /// The access token.
    pub access_token: SecretString,
    /// Seconds until it expires, when the service says.
    #[serde(default)]
    pub expires_in: Option<u64>,
    /// Salesforce: the org's API host for this token.
    #[serde(default)]
    pub instance_url: Option<String>,
}

impl TokenReply {
    /// `expires_in` as a duration.
    pub fn lifetime(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
}

#[derive(Default, Deserialize)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// The error of a refused OAuth 2.0 token request (`{"error", "error_description"}`):
/// `invalid_grant` (expired, revoked or wrong grant) and withdrawn consent are
/// `GrantRevoked` (the rep must reconnect); `unauthorized_client` / `access_denied` are
/// `PermissionDenied`; 429 and 5xx are temporary; anything else (`invalid_client`: a wrong
/// app secret) is `Unauthenticated`.
/// The message holds the code and the description's first line, never the request's secrets.
pub fn oauth_error(service: &str, status: u16, headers: &HeaderMap, body: &str) -> Error {
    let parsed: Option<OAuthError> = serde_json::from_str(body).ok();
    let (code, desc) = match &parsed {
        Some(o) => (o.error.as_str(), o.error_description.lines().next().unwrap_or("")),
        None => ("", ""),
    };
    let kind = match (status, code) {
        (429, _) => ErrorKind::RateLimited,
        (500..=599, _) => ErrorKind::Transport,
        (_, "invalid_grant" | "interaction_required" | "consent_required") => ErrorKind::GrantRevoked,
        (_, "unauthorized_client" | "access_denied") => ErrorKind::PermissionDenied,
        _ => ErrorKind::Unauthenticated,
    };
    let what = if code.is_empty() { snippet(body) } else { format!("{code}: {desc}") };
    let err = Error::new(kind, format!("{service}: token request refused (HTTP {status}): {what}"));
    match kind {
        ErrorKind::RateLimited | ErrorKind::Transport => err.temporary(retry_after(headers)),
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oauth_refusals_map_to_kinds() {
        let h = HeaderMap::new();
        let e = oauth_error(
            "x",
            400,
            &h,
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked.\nTrace: 1"}"#,
        );
        assert_eq!(e.kind(), ErrorKind::GrantRevoked);
        assert!(!e.is_temporary());
        assert!(
            e.message().contains("invalid_grant: Token has been expired or revoked.") && !e.message().contains("Trace")
        );
        assert_eq!(oauth_error("x", 400, &h, r#"{"error":"consent_required"}"#).kind(), ErrorKind::GrantRevoked);
        assert_eq!(oauth_error("x", 401, &h, r#"{"error":"invalid_client"}"#).kind(), ErrorKind::Unauthenticated);
        assert_eq!(oauth_error("x", 400, &h, r#"{"error":"access_denied"}"#).kind(), ErrorKind::PermissionDenied);
        assert_eq!(oauth_error("x", 400, &h, "<html>").kind(), ErrorKind::Unauthenticated);
        let e = oauth_error("x", 503, &h, "<html>down</html>");
        assert!(e.kind() == ErrorKind::Transport && e.is_temporary());
    }
}
