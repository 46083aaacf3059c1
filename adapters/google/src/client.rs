//! HTTP plumbing shared by both collections, on the [`crmsync_http`] chassis: OAuth 2.0
//! (service-account JWT assertion with domain-wide delegation, or the rep's refresh token) with
//! the chassis' single-flight token cache, retries with backoff, one refresh on 401, per-user
//! sequential writes, request counting, and [`parse_error`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crmsync_core::{Error, ErrorKind, Result};
use crmsync_http::{Counter, Http, TokenCache};
use reqwest::Method;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::{Config, SCOPES};

/// How a session obtains access tokens.
#[derive(Clone)]
pub(crate) enum Auth {
    /// Admin-managed: a signed JWT assertion with `sub` = the rep's mailbox.
    ServiceAccount { subject: String },
    /// User-managed: the rep's own refresh token.
    Refresh { grant: SecretString },
}

impl Auth {
    fn cache_key(&self) -> String {
        match self {
            Auth::ServiceAccount { subject } => format!("sa:{subject}"),
            Auth::Refresh { grant } => {
                let h = Sha256::digest(grant.expose_secret().as_bytes());
                format!("rt:{}", h[..12].iter().map(|b| format!("{b:02x}")).collect::<String>())
            }
        }
    }
}

/// The account-level client: the chassis, the config, the token cache and the per-user write
/// locks. Shared by every collection the provider hands out.
pub(crate) struct Client {
    http: Http,
    pub(crate) cfg: Config,
    signing_key: Option<jsonwebtoken::EncodingKey>,
    tokens: TokenCache<SecretString>,
    write_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

impl Client {
    pub(crate) fn new(cfg: Config) -> Result<Self> {
        cfg.validate()?;
        let signing_key = match &cfg.private_key {
            Some(k) => Some(
                jsonwebtoken::EncodingKey::from_rsa_pem(k.expose_secret().as_bytes())
                    .map_err(|_| Error::invalid_config("google: private_key is not an RSA PEM key"))?,
            ),
            None => None,
        };
        let http = Http::new("google", Duration::from_millis(cfg.timeout_ms), cfg.retry.clone(), parse_error)?;
        Ok(Self { http, cfg, signing_key, tokens: TokenCache::new(), write_locks: Mutex::new(HashMap::new()) })
    }

    pub(crate) fn has_service_account(&self) -> bool {
        self.signing_key.is_some() && self.cfg.service_account_email.is_some()
    }

    fn write_lock(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.write_locks.lock().unwrap_or_else(|p| p.into_inner()).entry(user.to_owned()).or_default().clone()
    }
}

/// One request to send through a [`Session`].
pub(crate) struct Req {
    pub method: Method,
    pub url: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    pub if_match: Option<String>,
    /// Mutations of one user are sent one at a time.
    pub mutate: bool,
    /// Whether sending it twice does no harm (false: never re-sent after a lost reply).
    pub idempotent: bool,
}

impl Req {
    pub fn get(url: String) -> Self {
        Self { method: Method::GET, url, query: vec![], body: None, if_match: None, mutate: false, idempotent: true }
    }
    pub fn write(method: Method, url: String, body: Option<Value>) -> Self {
        Self { method, url, query: vec![], body, if_match: None, mutate: true, idempotent: true }
    }
    /// A write that is not idempotent (a repeat would create again).
    pub fn once(mut self) -> Self {
        self.idempotent = false;
        self
    }
    pub fn q(mut self, k: &str, v: impl Into<String>) -> Self {
        self.query.push((k.to_owned(), v.into()));
        self
    }
    pub fn if_match(mut self, etag: &str) -> Self {
        self.if_match = Some(etag.to_owned());
        self
    }
}

/// A per-collection session: the shared client, how to authenticate as this user, and the
/// request counter of the collection.
pub(crate) struct Session {
    pub(crate) client: Arc<Client>,
    auth: Auth,
    user: String,
    requests: Counter,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("user", &self.user).field("requests", &self.requests()).finish()
    }
}

impl Session {
    pub(crate) fn new(client: Arc<Client>, auth: Auth, user: &str) -> Self {
        Self { client, auth, user: user.to_owned(), requests: Counter::new() }
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.get()
    }

    pub(crate) fn cfg(&self) -> &Config {
        &self.client.cfg
    }

    pub(crate) async fn fetch_token(&self) -> Result<(SecretString, Option<Duration>)> {
        let cfg = self.cfg();
        let form: Vec<(&str, String)> = match &self.auth {
            Auth::ServiceAccount { subject } => {
                let (Some(key), Some(iss)) = (&self.client.signing_key, &cfg.service_account_email) else {
                    return Err(Error::invalid_config("google: admin-managed rep but no service account configured"));
                };
                let now = chrono::Utc::now().timestamp();
                let claims = serde_json::json!({
                    "iss": iss, "sub": subject, "scope": SCOPES, "aud": cfg.token_url,
                    "iat": now, "exp": now + 3600,
                });
                let jwt =
                    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, key)
                        .map_err(|e| {
                            Error::invalid_config(format!("google: cannot sign the service-account assertion: {e}"))
                        })?;
                vec![("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer".into()), ("assertion", jwt)]
            }
            Auth::Refresh { grant } => {
                let Some(id) = &cfg.client_id else {
                    return Err(Error::invalid_config("google: user-managed rep but no client_id configured"));
                };
                let mut f = vec![
                    ("grant_type", "refresh_token".to_owned()),
                    ("refresh_token", grant.expose_secret().to_owned()),
                    ("client_id", id.clone()),
                ];
                if let Some(s) = &cfg.client_secret {
                    f.push(("client_secret", s.expose_secret().to_owned()));
                }
                f
            }
        };
        let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let reply = self.client.http.fetch_token(&self.requests, &cfg.token_url, &form).await?;
        // Google always says; an hour is its documented lifetime.
        let lifetime = reply.lifetime().unwrap_or(Duration::from_secs(3600));
        Ok((reply.access_token, Some(lifetime)))
    }

    /// Send a request: authenticate, retry temporary failures within the budget, refresh the
    /// token once on 401, and return the JSON body (`Null` when empty).
    pub(crate) async fn send(&self, req: Req) -> Result<Value> {
        let lock = req.mutate.then(|| self.client.write_lock(&self.user));
        let _guard = match &lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let build = |c: &reqwest::Client, token: &SecretString| {
            let mut rb = c.request(req.method.clone(), &req.url).bearer_auth(token.expose_secret());
            if !req.query.is_empty() {
                rb = rb.query(&req.query);
            }
            if let Some(b) = &req.body {
                rb = rb.json(b);
            }
            if let Some(e) = &req.if_match {
                rb = rb.header("If-Match", e);
            }
            rb
        };
        let http = &self.client.http;
        let key = self.auth.cache_key();
        let tokens = &self.client.tokens;
        let resp = http.send_authed(&self.requests, req.idempotent, tokens, &key, || self.fetch_token(), build).await?;
        http.check(resp)?.json("google")
    }
}

fn snippet(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    t.replace('\n', " ")
}

/// An error body of either API (fields the mapping does not use are ignored).
#[derive(Default, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: ApiError,
}

#[derive(Default, Deserialize)]
struct ApiError {
    #[serde(default)]
    status: String,
    #[serde(default)]
    message: String,
    /// People: `[{"@type", "reason", "domain"}]`.
    #[serde(default)]
    details: Vec<Reason>,
    /// Calendar: `[{"domain", "reason", "message"}]`.
    #[serde(default)]
    errors: Vec<Reason>,
}

#[derive(Deserialize)]
struct Reason {
    reason: Option<String>,
}

/// Map an error response of the People or Calendar API to a core error kind and retry hint.
///
/// Understands both envelopes: People's `{"error":{"code","message","status","details":[{"reason"}]}}`
/// and Calendar's `{"error":{"errors":[{"domain","reason","message"}],"code","message"}}`.
pub fn parse_error(status: u16, headers: &HeaderMap, text: &str) -> Error {
    let retry_after = crmsync_http::retry_after(headers);
    let status = reqwest::StatusCode::from_u16(status).unwrap_or(reqwest::StatusCode::INTERNAL_SERVER_ERROR);
    if serde_json::from_str::<serde::de::IgnoredAny>(text).is_err() {
        let kind = if status.is_server_error() { ErrorKind::Transport } else { ErrorKind::Unexpected };
        let mut e =
            Error::new(kind, format!("google: HTTP {} with a non-JSON body: {}", status.as_u16(), snippet(text)));
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            e = Error::new(ErrorKind::RateLimited, e.message().to_owned()).temporary(retry_after);
        }
        return e;
    }
    let ErrorBody { error: err } = serde_json::from_str(text).unwrap_or_default();
    let (gstatus, message) = (err.status.as_str(), err.message);
    let reasons: Vec<String> = err.details.into_iter().chain(err.errors).filter_map(|d| d.reason).collect();
    let has = |r: &str| reasons.iter().any(|x| x == r);
    let code = status.as_u16();
    let rate_limited = has("rateLimitExceeded") || has("userRateLimitExceeded") || has("RATE_LIMIT_EXCEEDED");
    let kind = match code {
        400 if has("EXPIRED_SYNC_TOKEN") || message.contains("Sync token is expired") => ErrorKind::CursorExpired,
        410 if has("fullSyncRequired") || has("updatedMinTooLongAgo") || message.contains("full sync") => {
            ErrorKind::CursorExpired
        }
        410 => ErrorKind::NotFound,
        400 if gstatus == "FAILED_PRECONDITION" => ErrorKind::PreconditionFailed,
        400 => ErrorKind::InvalidItem,
        401 => ErrorKind::Unauthenticated,
        403 if rate_limited || has("quotaExceeded") => ErrorKind::RateLimited,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        409 => ErrorKind::Conflict,
        412 => ErrorKind::PreconditionFailed,
        429 => ErrorKind::RateLimited,
        500..=599 => ErrorKind::Transport,
        _ => ErrorKind::Unexpected,
    };
    let detail = if reasons.is_empty() { gstatus.to_owned() } else { reasons.join(",") };
    let e = Error::new(kind, format!("google: HTTP {code} {detail}: {message}"));
    match kind {
        ErrorKind::RateLimited => e.temporary(retry_after),
        ErrorKind::Transport => e.temporary(retry_after),
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crmsync_core::Retry;

    #[test]
    fn parse_error_knows_both_envelopes() {
        let people = r#"{"error":{"code":400,"message":"Sync token is expired. Clear local cache and retry call without the sync token.","status":"FAILED_PRECONDITION","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"EXPIRED_SYNC_TOKEN","domain":"people.googleapis.com"}]}}"#;
        assert_eq!(
            parse_error(reqwest::StatusCode::BAD_REQUEST.as_u16(), &HeaderMap::new(), people).kind(),
            ErrorKind::CursorExpired
        );
        let etag = r#"{"error":{"code":400,"message":"Request person.etag is different than the current person.etag.","status":"FAILED_PRECONDITION"}}"#;
        assert_eq!(
            parse_error(reqwest::StatusCode::BAD_REQUEST.as_u16(), &HeaderMap::new(), etag).kind(),
            ErrorKind::PreconditionFailed
        );
        let cal = r#"{"error":{"errors":[{"domain":"calendar","reason":"fullSyncRequired","message":"Sync token is no longer valid, a full sync is required.","locationType":"parameter","location":"syncToken"}],"code":410,"message":"Sync token is no longer valid, a full sync is required."}}"#;
        assert_eq!(
            parse_error(reqwest::StatusCode::GONE.as_u16(), &HeaderMap::new(), cal).kind(),
            ErrorKind::CursorExpired
        );
        let rl = r#"{"error":{"errors":[{"domain":"usageLimits","reason":"rateLimitExceeded","message":"Rate Limit Exceeded"}],"code":403,"message":"Rate Limit Exceeded"}}"#;
        let mut two = HeaderMap::new();
        two.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        let e = parse_error(403, &two, rl);
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.retry(), Retry::Temporary { after: Some(Duration::from_secs(2)) });
        let denied = r#"{"error":{"code":403,"message":"nope","status":"PERMISSION_DENIED"}}"#;
        assert_eq!(
            parse_error(reqwest::StatusCode::FORBIDDEN.as_u16(), &HeaderMap::new(), denied).kind(),
            ErrorKind::PermissionDenied
        );
        assert_eq!(
            parse_error(reqwest::StatusCode::PRECONDITION_FAILED.as_u16(), &HeaderMap::new(), "{}").kind(),
            ErrorKind::PreconditionFailed
        );
        let html =
            parse_error(reqwest::StatusCode::BAD_GATEWAY.as_u16(), &HeaderMap::new(), "<html>bad gateway</html>");
        assert_eq!(html.kind(), ErrorKind::Transport);
        assert!(html.is_temporary() && html.message().contains("non-JSON"));
        let cut = crmsync_http::Response { status: 200, headers: HeaderMap::new(), text: "{\"a\":".into() };
        assert!(cut.json("google").unwrap_err().message().contains("truncated"));
    }

    #[test]
    fn token_errors_never_echo_secrets() {
        let e = crmsync_http::oauth_error(
            "google",
            400,
            &HeaderMap::new(),
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
        );
        assert_eq!(e.kind(), ErrorKind::GrantRevoked);
        assert!(e.message().contains("invalid_grant"));
    }
}
