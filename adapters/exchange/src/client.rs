//! HTTP to Microsoft Graph on the [`crmsync_http`] chassis: OAuth tokens (app-only and
//! delegated) in the chassis' single-flight cache, retries that honour `Retry-After`, one
//! transparent token refresh on 401, paging, JSON batching, and the one [`parse_error`] that
//! maps a Graph status and body to a [`crmsync_core::Error`].

use std::sync::Arc;
use std::time::Duration;

use crmsync_core::{Error, ErrorKind, Result};
use crmsync_http::{Counter, Http, TokenCache, retry_items};
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::Config;

/// Graph's limit of sub-requests per `$batch`.
pub const MAX_BATCH: usize = 20;

/// Map a failed Graph (or token endpoint) response to an error kind and retryability.
///
/// Graph's envelope is `{"error":{"code","message","innerError"}}`; the token endpoint's is
/// `{"error":"invalid_grant","error_description":…}`. Branches on status and `code`, never on
/// the message. A `Retry-After` header becomes the retry hint of a throttled or failed request.
pub fn parse_error(status: u16, headers: &HeaderMap, body: &str) -> Error {
    let (code, message) = match serde_json::from_str::<ErrorBody>(body) {
        Ok(ErrorBody { error: ErrorField::Graph { code, message }, .. }) => (code, message),
        Ok(ErrorBody { error: ErrorField::OAuth(code), error_description }) => {
            (code, error_description.lines().next().unwrap_or("").to_owned())
        }
        Err(_) => (String::new(), body.chars().take(200).collect()),
    };
    let lc = code.to_ascii_lowercase();
    let kind = if lc == "syncstatenotfound" || lc == "resyncrequired" || status == 410 {
        ErrorKind::CursorExpired
    } else {
        match status {
            400 if lc == "invalid_grant" => ErrorKind::GrantRevoked,
            400 if lc == "invalid_client" || lc == "unauthorized_client" => ErrorKind::Unauthenticated,
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
        ErrorKind::RateLimited | ErrorKind::Transport => err.temporary(crmsync_http::retry_after(headers)),
        _ => err,
    }
}

/// An error body: Graph's `{"error":{"code","message"}}` or the token endpoint's
/// `{"error":"…","error_description":"…"}`.
#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorField,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorField {
    Graph {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    },
    OAuth(String),
}

/// One page of a collection or delta round.
#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    value: Vec<Value>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
    #[serde(rename = "@odata.deltaLink")]
    delta_link: Option<String>,
}

/// A `$batch` reply.
#[derive(Deserialize)]
struct BatchReply {
    responses: Vec<SubResponse>,
}

/// One sub-response of a `$batch` reply.
#[derive(Deserialize)]
struct SubResponse {
    id: String,
    #[serde(default)]
    status: u16,
    #[serde(default)]
    headers: serde_json::Map<String, Value>,
    #[serde(default)]
    body: Option<Value>,
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

/// The HTTP client and token cache shared by every collection of one provider.
pub(crate) struct Graph {
    pub(crate) config: Config,
    http: Http,
    tokens: TokenCache<SecretString>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Graph {
    pub(crate) fn new(config: Config) -> Result<Self> {
        config.validate()?;
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let http = Http::new("exchange", timeout, config.retry.clone(), parse_error)?;
        Ok(Self { config, http, tokens: TokenCache::new() })
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
    requests: Arc<Counter>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session").field("root", &self.root).field("requests", &self.requests()).finish_non_exhaustive()
    }
}

const IMMUTABLE_IDS: &str = "IdType=\"ImmutableId\"";

impl Session {
    pub(crate) fn new(graph: Arc<Graph>, principal: Principal, root: String) -> Self {
        Self { graph, principal, root, requests: Arc::new(Counter::new()) }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.graph.config
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.get()
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

    /// Whether `link` (a stored cursor) is a delta link of the configured service: an absolute
    /// URL on the same scheme, host and port as `graph_url`, ending in `/delta`. Anything else
    /// (a corrupted store, another service's cursor) is never sent, so the token cannot leak to
    /// another host.
    pub(crate) fn is_own_delta_link(&self, link: &str) -> bool {
        let origin = |u: &url::Url| (u.scheme().to_owned(), u.host_str().map(str::to_owned), u.port_or_known_default());
        match (url::Url::parse(link), url::Url::parse(&self.graph.config.graph_url)) {
            (Ok(l), Ok(base)) => origin(&l) == origin(&base) && l.path().ends_with("/delta"),
            _ => false,
        }
    }

    /// A new access token for this session's principal.
    pub(crate) async fn fetch_token(&self) -> Result<(SecretString, Option<Duration>)> {
        let cfg = &self.graph.config;
        let mut form: Vec<(&str, &str)> = vec![("client_id", &cfg.client_id)];
        match &self.principal {
            Principal::App => {
                let secret = cfg.client_secret.as_ref().ok_or_else(|| {
                    Error::invalid_config("exchange: client_secret is required for admin-managed mailboxes")
                })?;
                form.extend([
                    ("grant_type", "client_credentials"),
                    ("client_secret", secret.expose_secret()),
                    ("scope", &cfg.app_scope),
                ]);
            }
            Principal::Delegated(rt) => {
                form.extend([
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt.expose_secret()),
                    ("scope", &cfg.delegated_scope),
                ]);
                if let Some(s) = &cfg.client_secret {
                    form.push(("client_secret", s.expose_secret()));
                }
            }
        }
        let reply = self.graph.http.fetch_token(&self.requests, &cfg.token_endpoint(), &form).await?;
        let lifetime = reply.lifetime();
        Ok((reply.access_token, lifetime))
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
        let build = |c: &reqwest::Client, token: &SecretString| {
            let mut req = c
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
            req
        };
        let key = self.principal.cache_key();
        let http = &self.graph.http;
        let reply = http
            .send_authed(&self.requests, resend, &self.graph.tokens, &key, || self.fetch_token(), build)
            .await
            .and_then(|r| http.check(r))
            .map_err(|e| e.context(format!("{method} {}", path_of(&abs))))?;
        let body = reply.json("exchange").map_err(|e| e.context(format!("{method} {}", path_of(&abs))))?;
        Ok(Reply { body })
    }

    /// GET returning the JSON body.
    pub(crate) async fn get(&self, url: &str, prefer: &[&str]) -> Result<Value> {
        Ok(self.send(Method::GET, url, prefer, &[], None).await?.body)
    }

    /// GET one page of a collection or delta round.
    async fn page(&self, url: &str, prefer: &[&str]) -> Result<Page> {
        serde_json::from_value(self.get(url, prefer).await?)
            .map_err(|e| Error::unexpected(format!("GET {}: not a collection page", path_of(url))).with_source(e))
    }

    /// GET a collection and every following page (`@odata.nextLink`).
    pub(crate) async fn get_all(&self, url: &str, prefer: &[&str]) -> Result<Vec<Value>> {
        let mut out = vec![];
        let mut next = Some(url.to_owned());
        while let Some(u) = next.take() {
            let page = self.page(&u, prefer).await?;
            out.extend(page.value);
            next = page.next_link;
        }
        Ok(out)
    }

    /// One delta round: GET `url` and follow `@odata.nextLink` (pages may be empty) to the
    /// `@odata.deltaLink`. Returns every entry of the round, in order, and the delta link.
    pub(crate) async fn delta(&self, url: &str, prefer: &[&str]) -> Result<(Vec<Value>, String)> {
        let mut out = vec![];
        let mut next = url.to_owned();
        loop {
            let page = self.page(&next, prefer).await?;
            out.extend(page.value);
            match (page.next_link, page.delta_link) {
                (Some(n), _) => next = n,
                (None, Some(d)) => return Ok((out, d)),
                (None, None) => {
                    return Err(Error::unexpected("delta page has neither @odata.nextLink nor @odata.deltaLink"));
                }
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
        retry_items(&self.graph.config.retry, reqs.len(), |which| self.batch_once(reqs, which, resend)).await
    }

    /// Send the sub-requests at `which` (in `$batch` requests of ≤ 20): one result per index.
    async fn batch_once(&self, reqs: &[SubRequest], which: Vec<usize>, resend: bool) -> Result<Vec<Result<Value>>> {
        let mut out = Vec::with_capacity(which.len());
        for chunk in which.chunks(MAX_BATCH) {
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
            let mut reply: BatchReply = serde_json::from_value(reply.body)
                .map_err(|e| Error::unexpected("$batch: response has no `responses` array").with_source(e))?;
            for &i in chunk {
                let id = i.to_string();
                let Some(r) = reply.responses.iter_mut().find(|r| r.id == id) else {
                    out.push(Err(Error::unexpected("$batch: no response for this sub-request")));
                    continue;
                };
                let body = r.body.take().unwrap_or(Value::Null);
                if (200..300).contains(&r.status) {
                    out.push(Ok(body));
                    continue;
                }
                let what = format!("{} {}", reqs[i].method, strip_query(&reqs[i].url));
                out.push(Err(parse_error(r.status, &headers_of(&r.headers), &body.to_string()).context(what)));
            }
        }
        Ok(out)
    }
}

/// A `$batch` sub-response's JSON headers as a header map.
fn headers_of(headers: &serde_json::Map<String, Value>) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (k, v) in headers {
        let v = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => continue,
        };
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::try_from(v)) {
            out.insert(k, v);
        }
    }
    out
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
    use crmsync_core::Retry;

    fn ra(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
        h
    }

    #[test]
    fn errors_map_by_status_and_code() {
        let none = HeaderMap::new();
        let e = parse_error(410, &none, r#"{"error":{"code":"SyncStateNotFound","message":"gone"}}"#);
        assert_eq!(e.kind(), ErrorKind::CursorExpired);
        let e = parse_error(400, &none, r#"{"error":{"code":"resyncRequired","message":"x"}}"#);
        assert_eq!(e.kind(), ErrorKind::CursorExpired);
        let e = parse_error(412, &none, r#"{"error":{"code":"ErrorIrresolvableConflict","message":"x"}}"#);
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
        let e = parse_error(429, &ra("2.128"), r#"{"error":{"code":"TooManyRequests","message":"x"}}"#);
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.retry(), Retry::Temporary { after: Some(Duration::from_millis(2128)) });
        let e = parse_error(503, &none, "<html>busy</html>");
        assert!(e.is_temporary() && e.kind() == ErrorKind::Transport);
        // The token endpoint's envelope: an expired or revoked grant needs the rep.
        let e =
            parse_error(400, &none, r#"{"error":"invalid_grant","error_description":"AADSTS70008: expired\nTrace"}"#);
        assert_eq!(e.kind(), ErrorKind::GrantRevoked);
        assert!(!e.is_temporary());
        assert_eq!(parse_error(404, &none, "").kind(), ErrorKind::NotFound);
        assert_eq!(crmsync_http::retry_after(&ra("10")), Some(Duration::from_secs(10)));
        assert_eq!(crmsync_http::retry_after(&ra("soon")), None);
        assert_eq!(odata_str("O'Brien"), "'O''Brien'");
    }

    #[test]
    fn batch_sub_response_headers_carry_the_retry_hint() {
        let json = json!({"Retry-After": "3", "x-bad header": "v", "n": 5});
        let h = headers_of(json.as_object().unwrap());
        assert_eq!(crmsync_http::retry_after(&h), Some(Duration::from_secs(3)));
        assert_eq!(h.get("n").unwrap(), "5");
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
