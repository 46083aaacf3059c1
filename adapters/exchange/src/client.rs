//! HTTP to Microsoft Graph: OAuth tokens (app-only and delegated) with a cache, retries that
//! honour `Retry-After`, one transparent token refresh on 401, paging, JSON batching, and the
//! one [`parse_error`] that maps a Graph status and body to a [`crmsync_core::Error`].

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crmsync_core::{Error, ErrorKind, Result, Retry};
use reqwest::Method;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tracing::debug;

use crate::config::Config;

/// Graph's limit of sub-requests per `$batch`.
pub const MAX_BATCH: usize = 20;

/// Map a failed Graph (or token endpoint) response to an error kind and retryability.
///
/// Graph's envelope is `{"error":{"code","message","innerError"}}`; the token endpoint's is
/// `{"error":"invalid_grant","error_description":…}`. Branches on status and `code`, never on
/// the message. `retry_after` is the parsed `Retry-After` header, if any.
pub fn parse_error(status: u16, retry_after: Option<Duration>, body: &str) -> Error {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let (code, message) = match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(Value::Object(e)) => (
            e.get("code").and_then(Value::as_str).unwrap_or("").to_owned(),
            e.get("message").and_then(Value::as_str).unwrap_or("").to_owned(),
        ),
        Some(Value::String(code)) => (
            code.clone(),
            parsed
                .as_ref()
                .and_then(|v| v["error_description"].as_str())
                .unwrap_or("")
                .lines()
                .next()
                .unwrap_or("")
                .to_owned(),
        ),
        _ => (String::new(), body.chars().take(200).collect()),
    };
    let lc = code.to_ascii_lowercase();
    let kind = if lc == "syncstatenotfound" || lc == "resyncrequired" || status == 410 {
        ErrorKind::CursorExpired
    } else {
        match status {
            400 if lc == "invalid_grant" || lc == "invalid_client" || lc == "unauthorized_client" => {
                ErrorKind::Unauthenticated
            }
            400 | 422 => ErrorKind::InvalidItem,
            401 => ErrorKind::Unauthenticated,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            409 | 412 => ErrorKind::PreconditionFailed,
            429 => ErrorKind::RateLimited,
            500..=599 => ErrorKind::Transport,
            _ => ErrorKind::Unexpected,
        }
    };
    let text =
        if code.is_empty() { format!("HTTP {status}: {message}") } else { format!("HTTP {status} {code}: {message}") };
    let err = Error::new(kind, text);
    match kind {
        ErrorKind::RateLimited | ErrorKind::Transport => err.temporary(retry_after),
        _ => err,
    }
}

/// `Retry-After` as Graph sends it: whole or decimal seconds (`10`, `2.128`).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// Whose token a request carries.
#[derive(Clone)]
pub(crate) enum Principal {
    /// App-only (client credentials); the mailbox is addressed as `/users/{id}`.
    App,
    /// The rep's delegated grant (a refresh token); the mailbox is `/me`.
    Delegated(SecretString),
}

impl Principal {
    fn cache_key(&self) -> String {
        match self {
            Principal::App => "app".into(),
            Principal::Delegated(rt) => {
                let h = Sha256::digest(rt.expose_secret().as_bytes());
                format!("user:{}", h[..12].iter().map(|b| format!("{b:02x}")).collect::<String>())
            }
        }
    }
}

struct CachedToken {
    token: SecretString,
    until: Instant,
}

/// The HTTP client and token cache shared by every collection of one provider.
pub(crate) struct Graph {
    pub(crate) config: Config,
    http: reqwest::Client,
    tokens: Mutex<HashMap<String, CachedToken>>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Graph {
    pub(crate) fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(|e| Error::invalid_config(format!("exchange: HTTP client: {e}")))?;
        Ok(Self { config, http, tokens: Mutex::new(HashMap::new()) })
    }
}

/// A reply that did not fail: its JSON body (`Null` for an empty body).
pub(crate) struct Reply {
    pub body: Value,
}

/// One sub-request of a `$batch`; `url` is relative to the Graph version root (`/users/…`).
#[derive(Clone, Debug)]
pub(crate) struct SubRequest {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Value>,
}

/// A principal plus mailbox root plus request counter: what one collection talks through.
#[derive(Clone)]
pub(crate) struct Session {
    graph: Arc<Graph>,
    principal: Principal,
    /// `/users/{mailbox}` or `/me`.
    pub root: String,
    requests: Arc<AtomicU64>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("root", &self.root).field("requests", &self.requests()).finish_non_exhaustive()
    }
}

const IMMUTABLE_IDS: &str = "IdType=\"ImmutableId\"";

impl Session {
    pub(crate) fn new(graph: Arc<Graph>, principal: Principal, root: String) -> Self {
        Self { graph, principal, root, requests: Arc::new(AtomicU64::new(0)) }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.graph.config
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Path under the mailbox root plus query, relative to the version root (for `$batch`).
    pub(crate) fn rel(&self, path: &str, query: &[(&str, &str)]) -> String {
        let mut u = url::Url::parse("http://graph.invalid/").expect("static URL");
        u.set_path(&format!("{}{}", self.root, path));
        let mut s = u.as_str()["http://graph.invalid".len()..].to_owned();
        // OData options as Graph's docs write them: `$filter=a%20eq%20'b'` (spaces as %20, the
        // `$` of the option name literal).
        for (i, (k, v)) in query.iter().enumerate() {
            let v: String = url::form_urlencoded::byte_serialize(v.as_bytes()).collect();
            s.push(if i == 0 { '?' } else { '&' });
            s.push_str(k);
            s.push('=');
            s.push_str(&v.replace('+', "%20"));
        }
        s
    }

    /// Absolute URL of a path under the mailbox root.
    pub(crate) fn url(&self, path: &str, query: &[(&str, &str)]) -> String {
        format!("{}{}", self.graph.config.graph_url.trim_end_matches('/'), self.rel(path, query))
    }

    pub(crate) async fn token(&self, fresh: bool) -> Result<SecretString> {
        let key = self.principal.cache_key();
        let mut cache = self.graph.tokens.lock().await;
        if !fresh {
            if let Some(t) = cache.get(&key).filter(|t| t.until > Instant::now()) {
                return Ok(t.token.clone());
            }
        }
        let cfg = &self.graph.config;
        let mut form: Vec<(&str, String)> = vec![("client_id", cfg.client_id.clone())];
        match &self.principal {
            Principal::App => {
                let secret = cfg.client_secret.as_ref().ok_or_else(|| {
                    Error::invalid_config("exchange: client_secret is required for admin-managed mailboxes")
                })?;
                form.push(("grant_type", "client_credentials".into()));
                form.push(("client_secret", secret.expose_secret().to_owned()));
                form.push(("scope", cfg.app_scope.clone()));
            }
            Principal::Delegated(rt) => {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", rt.expose_secret().to_owned()));
                form.push(("scope", cfg.delegated_scope.clone()));
                if let Some(s) = &cfg.client_secret {
                    form.push(("client_secret", s.expose_secret().to_owned()));
                }
            }
        }
        let mut attempt = 0;
        let body: Value = loop {
            self.requests.fetch_add(1, Ordering::Relaxed);
            let res = self.graph.http.post(cfg.token_endpoint()).form(&form).send().await;
            let err = match res {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let ra = retry_after(r.headers());
                    let text = r.text().await.map_err(transport)?;
                    if (200..300).contains(&status) {
                        break serde_json::from_str(&text)
                            .map_err(|e| Error::unexpected(format!("token endpoint: response is not JSON: {e}")))?;
                    }
                    parse_error(status, ra, &text).context("exchange token endpoint")
                }
                Err(e) => transport(e),
            };
            if !err.is_temporary() || attempt >= cfg.retries {
                return Err(err);
            }
            tokio::time::sleep(self.delay(&err, attempt)).await;
            attempt += 1;
        };
        let token = body["access_token"]
            .as_str()
            .ok_or_else(|| Error::unexpected("token endpoint: no access_token in the response"))?;
        let ttl = body["expires_in"].as_u64().unwrap_or(3599).saturating_sub(60).max(1);
        let token = SecretString::from(token.to_owned());
        cache.insert(key, CachedToken { token: token.clone(), until: Instant::now() + Duration::from_secs(ttl) });
        Ok(token)
    }

    fn delay(&self, err: &Error, attempt: u32) -> Duration {
        let cfg = &self.graph.config;
        match err.retry() {
            Retry::Temporary { after: Some(d) } => d.min(Duration::from_millis(cfg.max_backoff_ms)),
            _ => cfg.backoff(attempt),
        }
    }

    /// Send one request with retries; `Ok` for 2xx, the mapped error otherwise.
    /// `url` is absolute (a `nextLink`) or relative to the version root (starts with `/`).
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        prefer: &[&str],
        extra: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Reply> {
        self.send_opts(method, url, prefer, extra, body, true).await
    }

    /// [`Session::send`]; with `resend = false` a request that may have reached the service
    /// (the connection dropped after sending) is not sent again: the caller checks what landed.
    pub(crate) async fn send_opts(
        &self,
        method: Method,
        url: &str,
        prefer: &[&str],
        extra: &[(&str, &str)],
        body: Option<&Value>,
        resend: bool,
    ) -> Result<Reply> {
        let cfg = &self.graph.config;
        let abs =
            if url.starts_with('/') { format!("{}{url}", cfg.graph_url.trim_end_matches('/')) } else { url.to_owned() };
        let prefer = std::iter::once(IMMUTABLE_IDS).chain(prefer.iter().copied()).collect::<Vec<_>>().join(", ");
        let mut attempt = 0;
        let mut refreshed = false;
        let mut fresh = false;
        loop {
            let token = self.token(fresh).await?;
            fresh = false;
            self.requests.fetch_add(1, Ordering::Relaxed);
            let mut req = self
                .graph
                .http
                .request(method.clone(), &abs)
                .bearer_auth(token.expose_secret())
                .header("Prefer", &prefer)
                .header("Accept", "application/json");
            for (k, v) in extra {
                req = req.header(*k, *v);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let mut maybe_applied = false;
            let err = match req.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let ra = retry_after(r.headers());
                    match r.text().await {
                        Ok(text) if (200..300).contains(&status) => {
                            let body = if text.trim().is_empty() {
                                Value::Null
                            } else {
                                serde_json::from_str(&text).map_err(|e| {
                                    Error::unexpected(format!("{method} {}: response is not JSON: {e}", path_of(&abs)))
                                })?
                            };
                            return Ok(Reply { body });
                        }
                        Ok(text) => parse_error(status, ra, &text),
                        Err(e) => {
                            maybe_applied = true;
                            transport(e)
                        }
                    }
                }
                Err(e) => {
                    maybe_applied = !e.is_connect();
                    transport(e)
                }
            };
            if maybe_applied && !resend {
                return Err(err.context(format!("{method} {} (the request may have been applied)", path_of(&abs))));
            }
            if err.kind() == ErrorKind::Unauthenticated && !refreshed {
                debug!("graph: access token refused, fetching a new one");
                refreshed = true;
                fresh = true;
                continue;
            }
            if !err.is_temporary() || attempt >= cfg.retries {
                return Err(err.context(format!("{method} {}", path_of(&abs))));
            }
            debug!(error = %err, attempt, "graph: retrying");
            tokio::time::sleep(self.delay(&err, attempt)).await;
            attempt += 1;
        }
    }

    /// GET returning the JSON body.
    pub(crate) async fn get(&self, url: &str, prefer: &[&str]) -> Result<Value> {
        Ok(self.send(Method::GET, url, prefer, &[], None).await?.body)
    }

    /// GET a collection and every following page (`@odata.nextLink`).
    pub(crate) async fn get_all(&self, url: &str, prefer: &[&str]) -> Result<Vec<Value>> {
        let mut out = vec![];
        let mut next = Some(url.to_owned());
        while let Some(u) = next.take() {
            let page = self.get(&u, prefer).await?;
            if let Some(v) = page["value"].as_array() {
                out.extend(v.iter().cloned());
            }
            next = page["@odata.nextLink"].as_str().map(str::to_owned);
        }
        Ok(out)
    }

    /// One delta round: GET `url` and follow `@odata.nextLink` (pages may be empty) to the
    /// `@odata.deltaLink`. Returns every entry of the round, in order, and the delta link.
    pub(crate) async fn delta(&self, url: &str, prefer: &[&str]) -> Result<(Vec<Value>, String)> {
        let mut out = vec![];
        let mut next = url.to_owned();
        loop {
            let page = self.get(&next, prefer).await?;
            out.extend(page["value"].as_array().into_iter().flatten().cloned());
            if let Some(n) = page["@odata.nextLink"].as_str() {
                next = n.to_owned();
            } else if let Some(d) = page["@odata.deltaLink"].as_str() {
                return Ok((out, d.to_owned()));
            } else {
                return Err(Error::unexpected("delta page has neither @odata.nextLink nor @odata.deltaLink"));
            }
        }
    }

    /// Run sub-requests through `$batch` (≤ 20 each), retrying throttled sub-requests within
    /// the retry budget. One result per input, in order: the body for 2xx, the mapped error
    /// otherwise.
    pub(crate) async fn batch(&self, reqs: &[SubRequest]) -> Result<Vec<Result<Value>>> {
        self.batch_opts(reqs, true).await
    }

    /// [`Session::batch`]; `resend = false` for non-idempotent writes (creates): a batch whose
    /// reply was lost is not sent again, the `Transport` error goes to the caller.
    pub(crate) async fn batch_opts(&self, reqs: &[SubRequest], resend: bool) -> Result<Vec<Result<Value>>> {
        let cfg = &self.graph.config;
        let mut results: Vec<Option<Result<Value>>> = vec![None; reqs.len()];
        let mut pending: Vec<usize> = (0..reqs.len()).collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            let mut retry: Vec<(usize, Error)> = vec![];
            for chunk in pending.chunks(MAX_BATCH) {
                let body = json!({ "requests": chunk.iter().map(|&i| {
                    let r = &reqs[i];
                    let mut headers = serde_json::Map::new();
                    headers.insert("Prefer".into(), json!(IMMUTABLE_IDS));
                    for (k, v) in &r.headers {
                        headers.insert(k.clone(), json!(v));
                    }
                    if r.body.is_some() {
                        headers.insert("Content-Type".into(), json!("application/json"));
                    }
                    let mut o = json!({ "id": i.to_string(), "method": r.method, "url": r.url, "headers": headers });
                    if let Some(b) = &r.body {
                        o["body"] = b.clone();
                    }
                    o
                }).collect::<Vec<_>>() });
                let reply = self.send_opts(Method::POST, "/$batch", &[], &[], Some(&body), resend).await?;
                let responses = reply.body["responses"]
                    .as_array()
                    .ok_or_else(|| Error::unexpected("$batch: response has no `responses` array"))?;
                for r in responses {
                    let Some(i) = r["id"].as_str().and_then(|s| s.parse::<usize>().ok()).filter(|i| chunk.contains(i))
                    else {
                        continue;
                    };
                    let status = r["status"].as_u64().unwrap_or(0) as u16;
                    if (200..300).contains(&status) {
                        results[i] = Some(Ok(r.get("body").cloned().unwrap_or(Value::Null)));
                        continue;
                    }
                    let ra = header_ci(&r["headers"], "retry-after").and_then(|v| parse_retry_after(&v));
                    let text = r.get("body").map(Value::to_string).unwrap_or_default();
                    let err = parse_error(status, ra, &text).context(format!(
                        "{} {}",
                        reqs[i].method,
                        strip_query(&reqs[i].url)
                    ));
                    if err.is_temporary() {
                        retry.push((i, err));
                    } else {
                        results[i] = Some(Err(err));
                    }
                }
                for &i in chunk {
                    if results[i].is_none() && !retry.iter().any(|(j, _)| *j == i) {
                        results[i] = Some(Err(Error::unexpected("$batch: no response for this sub-request")));
                    }
                }
            }
            if retry.is_empty() {
                break;
            }
            if attempt >= cfg.retries {
                for (i, e) in retry {
                    results[i] = Some(Err(e));
                }
                break;
            }
            let wait = retry.iter().map(|(_, e)| self.delay(e, attempt)).max().unwrap_or_default();
            debug!(count = retry.len(), ?wait, "graph: retrying throttled batch items");
            tokio::time::sleep(wait).await;
            attempt += 1;
            pending = retry.into_iter().map(|(i, _)| i).collect();
        }
        Ok(results.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::unexpected("$batch: no result")))).collect())
    }
}

fn transport(e: reqwest::Error) -> Error {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "connection dropped"
    };
    Error::new(ErrorKind::Transport, format!("{what}: {}", e.without_url())).temporary(None)
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    h.get(reqwest::header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after)
}

fn header_ci(headers: &Value, name: &str) -> Option<String> {
    headers.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).and_then(|(_, v)| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

fn strip_query(u: &str) -> &str {
    u.split('?').next().unwrap_or(u)
}

/// The path of a URL, without query (tokens live in queries; they stay out of errors).
fn path_of(u: &str) -> String {
    url::Url::parse(u).map(|p| p.path().to_owned()).unwrap_or_else(|_| strip_query(u).to_owned())
}

/// Quote a string for an OData literal (`'` doubles).
pub(crate) fn odata_str(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_by_status_and_code() {
        let e = parse_error(410, None, r#"{"error":{"code":"SyncStateNotFound","message":"gone"}}"#);
        assert_eq!(e.kind(), ErrorKind::CursorExpired);
        let e = parse_error(400, None, r#"{"error":{"code":"resyncRequired","message":"x"}}"#);
        assert_eq!(e.kind(), ErrorKind::CursorExpired);
        let e = parse_error(412, None, r#"{"error":{"code":"ErrorIrresolvableConflict","message":"x"}}"#);
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
        let e = parse_error(429, parse_retry_after("2.128"), r#"{"error":{"code":"TooManyRequests","message":"x"}}"#);
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.retry(), Retry::Temporary { after: Some(Duration::from_millis(2128)) });
        let e = parse_error(503, None, "<html>busy</html>");
        assert!(e.is_temporary() && e.kind() == ErrorKind::Transport);
        let e =
            parse_error(400, None, r#"{"error":"invalid_grant","error_description":"AADSTS70008: expired\nTrace"}"#);
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
        assert!(!e.is_temporary());
        assert_eq!(parse_error(404, None, "").kind(), ErrorKind::NotFound);
        assert_eq!(parse_retry_after("10"), Some(Duration::from_secs(10)));
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(odata_str("O'Brien"), "'O''Brien'");
    }

    #[test]
    fn queries_are_encoded_as_graph_documents_them() {
        let graph =
            Arc::new(Graph::new(Config { tenant: "t".into(), client_id: "c".into(), ..Config::default() }).unwrap());
        let s = Session::new(graph, Principal::App, "/users/ann@contoso.com".into());
        assert_eq!(
            s.rel("/contactFolders", &[("$filter", "displayName eq 'A+B & C'")]),
            "/users/ann@contoso.com/contactFolders?$filter=displayName%20eq%20%27A%2BB%20%26%20C%27"
        );
        assert_eq!(s.url("/x", &[]), "https://graph.microsoft.com/v1.0/users/ann@contoso.com/x");
    }
}
