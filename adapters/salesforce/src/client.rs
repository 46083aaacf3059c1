//! HTTP client for one org on the [`crmsync_http`] chassis: the org's OAuth token
//! (refresh-token or client-credentials flow) in the chassis' single-flight cache, one
//! transparent re-authentication on `401 INVALID_SESSION_ID`, retries within the budget,
//! `Sforce-Limit-Info` tracking, SOQL paging through `nextRecordsUrl`, and the one
//! [`parse_error`] that maps Salesforce error bodies to [`crmsync_core::Error`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use crmsync_core::{Error, ErrorKind, Result};
use crmsync_http::{Counter, Http, TokenCache};
use reqwest::Method;
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::config::Config;

/// A raw HTTP answer.
pub(crate) type Raw = crmsync_http::Response;

/// The server's clock, from the `Date` header.
fn server_date(raw: &Raw) -> Option<DateTime<Utc>> {
    let v = raw.headers.get(reqwest::header::DATE)?.to_str().ok()?;
    DateTime::parse_from_rfc2822(v).ok().map(|d| d.with_timezone(&Utc))
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
    http: Http,
    pub cfg: Config,
    tokens: TokenCache<Token>,
    usage: Arc<Mutex<Option<ApiUsage>>>,
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

/// The token cache has one slot: the org's.
const ORG: &str = "org";

impl Client {
    pub fn new(cfg: Config) -> Result<Self> {
        cfg.validate()?;
        let usage = Arc::new(Mutex::new(None));
        let seen = usage.clone();
        let http = Http::new("salesforce", Duration::from_secs(cfg.timeout_secs), cfg.retry.clone(), parse_error)?
            .on_headers(move |h| note_limits(&seen, h));
        Ok(Self { http, cfg, tokens: TokenCache::new(), usage })
    }

    /// `/services/data/vXX.X` + `rest`.
    pub fn data_path(&self, rest: &str) -> String {
        format!("/services/data/v{}{rest}", self.cfg.api_version)
    }

    pub fn usage(&self) -> Option<ApiUsage> {
        *self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fetch_token(&self, ctr: &Counter) -> Result<(Token, Option<Duration>)> {
        let cfg = &self.cfg;
        let mut form: Vec<(&str, &str)> = vec![("client_id", &cfg.client_id), ("format", "json")];
        match &cfg.refresh_token {
            Some(rt) => form.extend([("grant_type", "refresh_token"), ("refresh_token", rt.expose_secret())]),
            None => form.push(("grant_type", "client_credentials")),
        }
        if let Some(s) = &cfg.client_secret {
            form.push(("client_secret", s.expose_secret()));
        }
        let reply = self.http.fetch_token(ctr, &cfg.token_endpoint(), &form).await?;
        let instance_url = reply
            .instance_url
            .as_deref()
            .filter(|s| !s.is_empty())
            .unwrap_or(&cfg.instance_url)
            .trim_end_matches('/')
            .to_owned();
        let lifetime = reply.lifetime();
        Ok((Token { access: reply.access_token, instance_url }, lifetime))
    }

    /// An authenticated request to `path` (absolute path on the instance, e.g. a
    /// `nextRecordsUrl`). Statuses ≥ 400 become errors through [`parse_error`]. Every request
    /// of the adapter is idempotent (queries, upserts by external id, updates and deletes by
    /// id), so the chassis may retry each.
    pub async fn call(
        &self,
        ctr: &Counter,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Raw> {
        let build = |c: &reqwest::Client, tok: &Token| {
            let mut rb = c
                .request(method.clone(), format!("{}{path}", tok.instance_url))
                .bearer_auth(tok.access.expose_secret());
            if !query.is_empty() {
                rb = rb.query(query);
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            rb
        };
        let raw = self.http.send_authed(ctr, true, &self.tokens, ORG, || self.fetch_token(ctr), build).await?;
        self.http.check(raw)
    }

    /// Run several SOQL queries with as few requests as possible: one plain query when there is
    /// one, else `/composite` requests of up to 25 query subrequests each (one API call each);
    /// a subresult with more rows follows its `nextRecordsUrl`. Returns every record.
    pub async fn query_many(&self, ctr: &Counter, soqls: &[String]) -> Result<Vec<Value>> {
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
            let body = raw.json("salesforce")?;
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
                        let page = raw.json("salesforce")?;
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
    pub async fn query(&self, ctr: &Counter, soql: &str, all: bool) -> Result<QueryResult> {
        let path = self.data_path(if all { "/queryAll" } else { "/query" });
        tracing::trace!(soql, "salesforce query");
        let mut raw = self.call(ctr, Method::GET, &path, &[("q", soql.to_owned())], None).await?;
        let mut out = QueryResult { records: vec![], date: server_date(&raw) };
        loop {
            let body = raw.json("salesforce")?;
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

fn snippet(s: &str) -> String {
    let t: String = s.chars().take(200).collect();
    t.replace('\n', " ")
}

/// Keep the org's usage from a `Sforce-Limit-Info` header; warn above 90%.
fn note_limits(usage: &Mutex<Option<ApiUsage>>, headers: &HeaderMap) {
    let Some(v) = headers.get("sforce-limit-info").and_then(|v| v.to_str().ok()) else { return };
    if let Some(u) = parse_limit_info(v) {
        tracing::debug!(used = u.used, max = u.max, "salesforce API usage");
        if u.max > 0 && u.used.saturating_mul(10) >= u.max.saturating_mul(9) {
            tracing::warn!(used = u.used, max = u.max, "salesforce org is above 90% of its daily API requests");
        }
        *usage.lock().unwrap_or_else(|p| p.into_inner()) = Some(u);
    }
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
    let retry_after = crmsync_http::retry_after(headers);
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
