//! HTTP client for one org: OAuth token cache (refresh-token or client-credentials flow), one
//! transparent re-authentication on `401 INVALID_SESSION_ID`, retry with backoff within a
//! budget, `Sforce-Limit-Info` tracking, SOQL paging through `nextRecordsUrl`, and the one
//! [`parse_error`] that maps Salesforce error bodies to [`crmsync_core::Error`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::BackoffBuilder;
use chrono::{DateTime, Utc};
use crmsync_core::{Error, ErrorKind, Result};
use reqwest::Method;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::Config;

/// A raw HTTP answer (any status the caller has to look at).
#[derive(Debug)]
pub(crate) struct Raw {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Raw {
    pub fn json(&self) -> Result<Value> {
        if self.text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&self.text).map_err(|e| {
            Error::unexpected(format!(
                "salesforce: response is not JSON (HTTP {}): {e}: {}",
                self.status,
                snippet(&self.text)
            ))
        })
    }
    /// The server's clock, from the `Date` header.
    pub fn date(&self) -> Option<DateTime<Utc>> {
        let v = self.headers.get(reqwest::header::DATE)?.to_str().ok()?;
        DateTime::parse_from_rfc2822(v).ok().map(|d| d.with_timezone(&Utc))
    }
}

#[derive(Clone)]
struct Token {
    access: SecretString,
    instance_url: String,
}

/// The org's API usage as the last `Sforce-Limit-Info` header reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiUsage {
    /// API requests used in the rolling 24 hours.
    pub used: u64,
    /// The org's daily allocation.
    pub max: u64,
}

/// The shared client of one org (token cache, usage); requests are counted on the counter the
/// caller passes, so each collection handle counts its own.
pub(crate) struct Client {
    http: reqwest::Client,
    pub cfg: Config,
    token: tokio::sync::Mutex<Option<Token>>,
    usage: Mutex<Option<ApiUsage>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("cfg", &self.cfg).finish_non_exhaustive()
    }
}

/// One page-complete SOQL result.
#[derive(Debug, Default)]
pub(crate) struct QueryResult {
    pub records: Vec<Value>,
    /// The server clock at the first page.
    pub date: Option<DateTime<Utc>>,
}

impl Client {
    pub fn new(cfg: Config) -> Result<Self> {
        cfg.validate()?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs))
            .build()
            .map_err(|e| Error::invalid_config(format!("salesforce: cannot build HTTP client: {e}")))?;
        Ok(Self { http, cfg, token: tokio::sync::Mutex::new(None), usage: Mutex::new(None) })
    }

    /// `/services/data/vXX.X` + `rest`.
    pub fn data_path(&self, rest: &str) -> String {
        format!("/services/data/v{}{rest}", self.cfg.api_version)
    }

    pub fn usage(&self) -> Option<ApiUsage> {
        *self.usage.lock().expect("usage lock")
    }

    fn note_limits(&self, headers: &HeaderMap) {
        let Some(v) = headers.get("sforce-limit-info").and_then(|v| v.to_str().ok()) else { return };
        if let Some(u) = parse_limit_info(v) {
            tracing::debug!(used = u.used, max = u.max, "salesforce API usage");
            if u.max > 0 && u.used * 10 >= u.max * 9 {
                tracing::warn!(used = u.used, max = u.max, "salesforce org is above 90% of its daily API requests");
            }
            *self.usage.lock().expect("usage lock") = Some(u);
        }
    }

    /// Send a request built by `build`, retrying transport failures and temporary statuses
    /// within the budget. Every attempt is counted on `ctr`. Returns the first answer that is
    /// not a temporary failure (any status), or the last error.
    async fn execute(
        &self,
        ctr: &AtomicU64,
        build: &(dyn Fn() -> reqwest::RequestBuilder + Send + Sync),
    ) -> Result<Raw> {
        let r = &self.cfg.retry;
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(r.min_delay_ms))
            .with_max_delay(r.max_delay())
            .with_max_times(r.max_retries as usize)
            .with_jitter()
            .build();
        loop {
            ctr.fetch_add(1, Ordering::Relaxed);
            let err = match build().send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    self.note_limits(&headers);
                    match resp.text().await {
                        Ok(text) => {
                            let raw = Raw { status, headers, text };
                            if raw.status < 400 {
                                return Ok(raw);
                            }
                            let e = parse_error(raw.status, &raw.headers, &raw.text);
                            if !e.is_temporary() {
                                return Ok(raw);
                            }
                            e
                        }
                        Err(e) => transport(e),
                    }
                }
                Err(e) => transport(e),
            };
            let after = match err.retry() {
                crmsync_core::Retry::Temporary { after } => after,
                crmsync_core::Retry::Permanent => None,
            };
            if after.is_some_and(|a| a > r.max_delay()) {
                return Err(err);
            }
            match delays.next() {
                Some(d) => {
                    let wait = after.unwrap_or(d);
                    tracing::debug!(error = %err, wait_ms = wait.as_millis() as u64, "salesforce: retrying");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(err.context("salesforce: retry budget exhausted")),
            }
        }
    }

    async fn token(&self, ctr: &AtomicU64) -> Result<Token> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            return Ok(t.clone());
        }
        let t = self.fetch_token(ctr).await?;
        *slot = Some(t.clone());
        Ok(t)
    }

    async fn invalidate(&self, failed: &Token) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|t| t.access.expose_secret() == failed.access.expose_secret()) {
            *slot = None;
        }
    }

    async fn fetch_token(&self, ctr: &AtomicU64) -> Result<Token> {
        let cfg = &self.cfg;
        let mut form: Vec<(&str, String)> = vec![("client_id", cfg.client_id.clone()), ("format", "json".into())];
        match &cfg.refresh_token {
            Some(rt) => {
                form.push(("grant_type", "refresh_token".into()));
                form.push(("refresh_token", rt.expose_secret().to_owned()));
            }
            None => form.push(("grant_type", "client_credentials".into())),
        }
        if let Some(s) = &cfg.client_secret {
            form.push(("client_secret", s.expose_secret().to_owned()));
        }
        let url = cfg.token_endpoint();
        let raw = self.execute(ctr, &|| self.http.post(&url).form(&form)).await?;
        let body: Value = serde_json::from_str(&raw.text).unwrap_or(Value::Null);
        if raw.status >= 400 || body.get("access_token").is_none() {
            let code = body.get("error").and_then(Value::as_str).unwrap_or("unknown_error");
            let desc = body.get("error_description").and_then(Value::as_str).unwrap_or("");
            let kind = if raw.status >= 500 { ErrorKind::Transport } else { ErrorKind::Unauthenticated };
            return Err(Error::new(
                kind,
                format!("salesforce: token request failed (HTTP {}): {code}: {desc}", raw.status),
            ));
        }
        let access = body["access_token"].as_str().unwrap_or_default().to_owned();
        let instance_url = body
            .get("instance_url")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .unwrap_or(&cfg.instance_url)
            .trim_end_matches('/')
            .to_owned();
        Ok(Token { access: SecretString::from(access), instance_url })
    }

    /// An authenticated request to `path` (absolute path on the instance, e.g. a
    /// `nextRecordsUrl`). Statuses ≥ 400 become errors through [`parse_error`].
    pub async fn call(
        &self,
        ctr: &AtomicU64,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Raw> {
        let mut refreshed = false;
        loop {
            let tok = self.token(ctr).await?;
            let url = format!("{}{}", tok.instance_url, path);
            let access = tok.access.expose_secret().to_owned();
            let build = || {
                let mut rb = self.http.request(method.clone(), &url).bearer_auth(&access);
                if !query.is_empty() {
                    rb = rb.query(query);
                }
                if let Some(b) = body {
                    rb = rb.json(b);
                }
                rb
            };
            let raw = self.execute(ctr, &build).await?;
            if raw.status == 401 && !refreshed {
                tracing::debug!("salesforce: session expired, fetching a new access token");
                self.invalidate(&tok).await;
                refreshed = true;
                continue;
            }
            if raw.status >= 400 {
                return Err(parse_error(raw.status, &raw.headers, &raw.text));
            }
            return Ok(raw);
        }
    }

    /// Run several SOQL queries with as few requests as possible: one plain query when there is
    /// one, else `/composite` requests of up to 25 query subrequests each (one API call each);
    /// a subresult with more rows follows its `nextRecordsUrl`. Returns every record.
    pub async fn query_many(&self, ctr: &AtomicU64, soqls: &[String]) -> Result<Vec<Value>> {
        if let [one] = soqls {
            return Ok(self.query(ctr, one, false).await?.records);
        }
        let mut out = vec![];
        for chunk in soqls.chunks(COMPOSITE_MAX) {
            let subs: Vec<Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, q)| {
                    let url = format!(
                        "{}?q={}",
                        self.data_path("/query"),
                        url::form_urlencoded::byte_serialize(q.as_bytes()).collect::<String>()
                    );
                    serde_json::json!({"method": "GET", "url": url, "referenceId": format!("q{i}")})
                })
                .collect();
            let req = serde_json::json!({"allOrNone": false, "compositeRequest": subs});
            let raw = self.call(ctr, Method::POST, &self.data_path("/composite"), &[], Some(&req)).await?;
            let body = raw.json()?;
            let answers =
                body.get("compositeResponse").and_then(Value::as_array).filter(|a| a.len() == chunk.len()).ok_or_else(
                    || Error::unexpected(format!("salesforce: composite answer: {}", snippet(&raw.text))),
                )?;
            for a in answers {
                let status = a.get("httpStatusCode").and_then(Value::as_u64).unwrap_or(0) as u16;
                let sub = a.get("body").cloned().unwrap_or(Value::Null);
                if status >= 300 {
                    return Err(parse_error(status, &HeaderMap::new(), &sub.to_string()));
                }
                out.extend(sub.get("records").and_then(Value::as_array).cloned().unwrap_or_default());
                if let (Some(next), false) = (
                    sub.get("nextRecordsUrl").and_then(Value::as_str),
                    sub.get("done").and_then(Value::as_bool).unwrap_or(true),
                ) {
                    let mut raw = self.call(ctr, Method::GET, next, &[], None).await?;
                    loop {
                        let page = raw.json()?;
                        out.extend(page.get("records").and_then(Value::as_array).cloned().unwrap_or_default());
                        match page.get("nextRecordsUrl").and_then(Value::as_str) {
                            Some(n) if !page.get("done").and_then(Value::as_bool).unwrap_or(true) => {
                                raw = self.call(ctr, Method::GET, n, &[], None).await?
                            }
                            _ => break,
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Run a SOQL query (`queryAll` when `all`), following `nextRecordsUrl` to the end.
    pub async fn query(&self, ctr: &AtomicU64, soql: &str, all: bool) -> Result<QueryResult> {
        let path = self.data_path(if all { "/queryAll" } else { "/query" });
        tracing::trace!(soql, "salesforce query");
        let mut raw = self.call(ctr, Method::GET, &path, &[("q", soql.to_owned())], None).await?;
        let mut out = QueryResult { records: vec![], date: raw.date() };
        loop {
            let body = raw.json()?;
            let records = body.get("records").and_then(Value::as_array).ok_or_else(|| {
                Error::unexpected(format!("salesforce: query answer without records: {}", snippet(&raw.text)))
            })?;
            out.records.extend(records.iter().cloned());
            let done = body.get("done").and_then(Value::as_bool).unwrap_or(true);
            match body.get("nextRecordsUrl").and_then(Value::as_str) {
                Some(next) if !done => {
                    if !next.starts_with("/services/data/") {
                        return Err(Error::unexpected(format!("salesforce: unexpected nextRecordsUrl {next:?}")));
                    }
                    raw = self.call(ctr, Method::GET, next, &[], None).await?;
                }
                _ => break,
            }
        }
        Ok(out)
    }
}

/// Subrequests one `/composite` request may carry.
const COMPOSITE_MAX: usize = 25;

fn transport(e: reqwest::Error) -> Error {
    let what = if e.is_timeout() { "timed out" } else { "failed" };
    Error::new(ErrorKind::Transport, format!("salesforce: request {what}: {}", e.without_url())).temporary(None)
}

fn snippet(s: &str) -> String {
    let t: String = s.chars().take(200).collect();
    t.replace('\n', " ")
}

/// `api-usage=25/5000; per-app-api-usage=…` → the org-wide figure.
pub(crate) fn parse_limit_info(v: &str) -> Option<ApiUsage> {
    let part = v.split(';').map(str::trim).find_map(|p| p.strip_prefix("api-usage="))?;
    let (used, max) = part.split_once('/')?;
    Some(ApiUsage { used: used.trim().parse().ok()?, max: max.trim().parse().ok()? })
}

/// The error kind of a Salesforce error code (`errorCode` of REST errors, `statusCode` of
/// collection results).
pub(crate) fn kind_for_code(code: &str) -> ErrorKind {
    match code {
        "INVALID_SESSION_ID" | "INVALID_AUTH_HEADER" => ErrorKind::Unauthenticated,
        "REQUEST_LIMIT_EXCEEDED" => ErrorKind::RateLimited,
        "INSUFFICIENT_ACCESS"
        | "INSUFFICIENT_ACCESS_OR_READONLY"
        | "API_DISABLED_FOR_ORG"
        | "API_CURRENTLY_DISABLED"
        | "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY" => ErrorKind::PermissionDenied,
        "NOT_FOUND" | "ENTITY_IS_DELETED" => ErrorKind::NotFound,
        "UNABLE_TO_LOCK_ROW" | "SERVER_UNAVAILABLE" => ErrorKind::Transport,
        "MALFORMED_QUERY" | "INVALID_QUERY_FILTER_OPERATOR" | "INVALID_QUERY_LOCATOR" | "MALFORMED_ID" => {
            ErrorKind::Unexpected
        }
        // A query naming a field or object the org lacks: the one-time org setup is missing.
        "INVALID_FIELD" | "INVALID_TYPE" => ErrorKind::InvalidConfig,
        _ => ErrorKind::InvalidItem,
    }
}

/// The one mapping of an HTTP status and Salesforce error body to a [`crmsync_core::Error`]:
/// REST error arrays `[{message, errorCode, fields}]`, collection `statusCode`s, OAuth
/// `{error, error_description}`, and non-JSON error pages.
pub fn parse_error(status: u16, headers: &HeaderMap, body: &str) -> Error {
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64);
    let json: Option<Value> = serde_json::from_str(body).ok();
    let first = json.as_ref().and_then(|j| match j {
        Value::Array(a) => a.first().cloned(),
        Value::Object(_) => Some(j.clone()),
        _ => None,
    });
    let (code, message, fields) = match &first {
        Some(f) => (
            f.get("errorCode")
                .or_else(|| f.get("statusCode"))
                .or_else(|| f.get("error"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            f.get("message").or_else(|| f.get("error_description")).and_then(Value::as_str).unwrap_or("").to_owned(),
            f.get("fields")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
        ),
        None => (None, format!("non-JSON error page: {}", snippet(body)), String::new()),
    };
    let mut msg = match &code {
        Some(c) => format!("salesforce HTTP {status} {c}: {message}"),
        None => format!("salesforce HTTP {status}: {message}"),
    };
    if !fields.is_empty() {
        msg.push_str(&format!(" (fields: {fields})"));
    }
    match (status, code.as_deref()) {
        (412, _) => Error::new(ErrorKind::PreconditionFailed, msg),
        (429, _) => Error::new(ErrorKind::RateLimited, msg).temporary(retry_after),
        (_, Some("REQUEST_LIMIT_EXCEEDED")) => {
            if message.contains("Concurrent") {
                Error::new(ErrorKind::RateLimited, msg).temporary(retry_after)
            } else {
                // The daily allocation: trying again within minutes is pointless.
                Error::new(ErrorKind::RateLimited, msg).temporary(Some(Duration::from_secs(3600)))
            }
        }
        (500..=599, _) => Error::new(ErrorKind::Transport, msg).temporary(retry_after),
        (_, Some("UNABLE_TO_LOCK_ROW" | "SERVER_UNAVAILABLE")) => {
            Error::new(ErrorKind::Transport, msg).temporary(retry_after)
        }
        (400 | 401 | 403 | 404, Some(c)) => Error::new(kind_for_code(c), msg),
        (401, None) => Error::new(ErrorKind::Unauthenticated, msg),
        (403, None) => Error::new(ErrorKind::PermissionDenied, msg),
        (404, None) => Error::new(ErrorKind::NotFound, msg),
        (300, _) => Error::new(ErrorKind::Conflict, msg),
        _ => Error::new(ErrorKind::Unexpected, msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn maps_documented_bodies() {
        let e = parse_error(
            401,
            &hm(&[]),
            r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
        );
        assert_eq!(e.kind(), ErrorKind::Unauthenticated);
        let e = parse_error(
            403,
            &hm(&[]),
            r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#,
        );
        assert_eq!(e.kind(), ErrorKind::RateLimited);
        assert_eq!(e.retry(), crmsync_core::Retry::Temporary { after: Some(Duration::from_secs(3600)) });
        let e = parse_error(
            400,
            &hm(&[]),
            r#"[{"message":"Required fields are missing: [LastName]","errorCode":"REQUIRED_FIELD_MISSING","fields":["LastName"]}]"#,
        );
        assert_eq!(e.kind(), ErrorKind::InvalidItem);
        assert!(e.message().contains("LastName"));
        let e = parse_error(429, &hm(&[("retry-after", "2")]), "");
        assert_eq!(e.retry(), crmsync_core::Retry::Temporary { after: Some(Duration::from_secs(2)) });
        let e = parse_error(503, &hm(&[]), "<html>Service Unavailable</html>");
        assert_eq!(e.kind(), ErrorKind::Transport);
        assert!(e.is_temporary());
        assert!(e.message().contains("non-JSON"));
        let e = parse_error(
            404,
            &hm(&[]),
            r#"[{"message":"entity is deleted","errorCode":"ENTITY_IS_DELETED","fields":[]}]"#,
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let e = parse_error(
            400,
            &hm(&[]),
            r#"[{"message":"No such column 'CrmSync_Key__c' on entity 'Contact'","errorCode":"INVALID_FIELD"}]"#,
        );
        assert_eq!(e.kind(), ErrorKind::InvalidConfig);
        let e = parse_error(412, &hm(&[]), "");
        assert_eq!(e.kind(), ErrorKind::PreconditionFailed);
    }

    #[test]
    fn parses_limit_info() {
        assert_eq!(
            parse_limit_info("api-usage=25/5000; per-app-api-usage=17/250(appName=x)"),
            Some(ApiUsage { used: 25, max: 5000 })
        );
        assert_eq!(parse_limit_info("garbage"), None);
    }
}
