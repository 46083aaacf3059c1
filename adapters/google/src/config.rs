//! Adapter configuration: endpoints, OAuth client and service account, paging and retries.

use std::fmt;

use crmsync_core::{Error, Result};
use secrecy::SecretString;
use serde::Deserialize;

pub use crmsync_http::RetryConfig;

/// Default People API base URL.
pub const DEFAULT_PEOPLE_URL: &str = "https://people.googleapis.com";
/// Default Calendar API base URL (including the `calendar/v3` service path).
pub const DEFAULT_CALENDAR_URL: &str = "https://www.googleapis.com/calendar/v3";
/// Default OAuth 2.0 token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
/// The private extended property (Calendar) that marks an event "do not sync" when its value
/// is `"true"`; mapped to the rep's `no_sync_marker` category.
pub const DEFAULT_NO_SYNC_PROPERTY: &str = "crmsyncNoSync";
/// The `clientData` key (People) and private extended property key (Calendar) holding the sync key.
pub const SYNC_KEY_PROPERTY: &str = "crmsyncKey";
/// OAuth scopes requested for the service-account (domain-wide delegation) assertion.
pub const SCOPES: &str = "https://www.googleapis.com/auth/contacts https://www.googleapis.com/auth/calendar";

/// Configuration of the Google adapter.
///
/// Secrets (`client_secret`, `private_key`) are never deserialized from the config file: the
/// caller loads them (e.g. from environment variables) and sets them on the struct.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// People API base URL, without `/v1`.
    pub people_url: String,
    /// Calendar API base URL, including `/calendar/v3`.
    pub calendar_url: String,
    /// OAuth 2.0 token endpoint (refresh-token and JWT-bearer grants).
    pub token_url: String,
    /// OAuth client id (user-managed reps' refresh tokens were issued to it).
    pub client_id: Option<String>,
    /// OAuth client secret for the refresh-token grant.
    #[serde(skip)]
    pub client_secret: Option<SecretString>,
    /// Service account e-mail (`iss` of the signed assertion) for admin-managed reps.
    pub service_account_email: Option<String>,
    /// The service account's RSA private key (PEM, PKCS#8 or PKCS#1) for the RS256 assertion.
    #[serde(skip)]
    pub private_key: Option<SecretString>,
    /// Items per page for `people.connections.list` (1–1000) and `events.list` (1–2500).
    pub page_size: usize,
    /// Retries on throttling (429, 403 rate limit), 5xx and transport errors
    /// (`retry = { max_retries, min_delay_ms, max_delay_ms }`); a server `Retry-After` takes
    /// precedence over the backoff.
    pub retry: RetryConfig,
    /// Per-request timeout in milliseconds (1 to 3,600,000).
    pub timeout_ms: u64,
    /// Private extended property key marking a Calendar event "do not sync" (value `"true"`).
    pub no_sync_marker_property: String,
    /// Optional Calendar `colorId` that also marks an event "do not sync".
    pub no_sync_color_id: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            people_url: DEFAULT_PEOPLE_URL.into(),
            calendar_url: DEFAULT_CALENDAR_URL.into(),
            token_url: DEFAULT_TOKEN_URL.into(),
            client_id: None,
            client_secret: None,
            service_account_email: None,
            private_key: None,
            page_size: 500,
            retry: RetryConfig::default(),
            timeout_ms: 30_000,
            no_sync_marker_property: DEFAULT_NO_SYNC_PROPERTY.into(),
            no_sync_color_id: None,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<SecretString>| if s.is_some() { "[REDACTED]" } else { "None" };
        f.debug_struct("Config")
            .field("people_url", &self.people_url)
            .field("calendar_url", &self.calendar_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &redact(&self.client_secret))
            .field("service_account_email", &self.service_account_email)
            .field("private_key", &redact(&self.private_key))
            .field("page_size", &self.page_size)
            .field("retry", &self.retry)
            .field("timeout_ms", &self.timeout_ms)
            .field("no_sync_marker_property", &self.no_sync_marker_property)
            .field("no_sync_color_id", &self.no_sync_color_id)
            .finish()
    }
}

impl Config {
    /// Check the configuration; the error is one `InvalidConfig` line naming the problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid_config(format!("google: {m}")));
        for (name, u) in
            [("people_url", &self.people_url), ("calendar_url", &self.calendar_url), ("token_url", &self.token_url)]
        {
            match url::Url::parse(u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") => {}
                _ => return bad(format!("{name} {u:?} is not an http(s) URL")),
            }
        }
        if self.page_size == 0 || self.page_size > 1000 {
            return bad(format!("page_size {} must be between 1 and 1000", self.page_size));
        }
        if !(1..=3_600_000).contains(&self.timeout_ms) {
            return bad(format!("timeout_ms {} must be between 1 and 3600000", self.timeout_ms));
        }
        self.retry.validate("google")?;
        if self.no_sync_marker_property.is_empty() || self.no_sync_marker_property.len() > 44 {
            return bad("no_sync_marker_property must be 1 to 44 characters (Calendar drops longer keys)".into());
        }
        if self.service_account_email.is_some() != self.private_key.is_some() {
            return bad("service_account_email and private_key must be given together".into());
        }
        if self.client_secret.is_some() && self.client_id.is_none() {
            return bad("client_secret is set but client_id is missing".into());
        }
        if let Some(key) = &self.private_key {
            use secrecy::ExposeSecret;
            if jsonwebtoken::EncodingKey::from_rsa_pem(key.expose_secret().as_bytes()).is_err() {
                return bad("private_key is not an RSA private key in PEM format".into());
            }
        }
        Ok(())
    }

    pub(crate) fn people(&self, path: &str) -> String {
        format!("{}/{}", self.people_url.trim_end_matches('/'), path)
    }

    pub(crate) fn calendar(&self, path: &str) -> String {
        format!("{}/{}", self.calendar_url.trim_end_matches('/'), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_unknown_fields_and_validation() {
        let c: Config =
            serde_json::from_str(r#"{"client_id": "id.apps.googleusercontent.com", "page_size": 200}"#).unwrap();
        assert_eq!(c.people_url, DEFAULT_PEOPLE_URL);
        assert_eq!(c.calendar_url, DEFAULT_CALENDAR_URL);
        assert_eq!(c.token_url, DEFAULT_TOKEN_URL);
        assert_eq!(c.no_sync_marker_property, DEFAULT_NO_SYNC_PROPERTY);
        assert!(c.validate().is_ok());
        let err = serde_json::from_str::<Config>(r#"{"client_secret": "s"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "secrets are not read from the file: {err}");
        let bad = Config { page_size: 0, ..Config::default() };
        let e = bad.validate().unwrap_err();
        assert_eq!(e.kind(), crmsync_core::ErrorKind::InvalidConfig);
        assert!(!e.message().contains('\n'));
        let bad = Config { service_account_email: Some("sa@x.iam.gserviceaccount.com".into()), ..Config::default() };
        assert!(bad.validate().unwrap_err().message().contains("together"));
        let bad = Config {
            service_account_email: Some("sa@x".into()),
            private_key: Some(SecretString::from("not a key")),
            ..Config::default()
        };
        assert!(bad.validate().unwrap_err().message().contains("PEM"));
        let bad = Config { no_sync_marker_property: "x".repeat(45), ..Config::default() };
        assert!(bad.validate().is_err());
        let bad = Config { timeout_ms: u64::MAX, ..Config::default() };
        assert!(bad.validate().unwrap_err().message().contains("timeout_ms"));
        let bad =
            Config { retry: RetryConfig { min_delay_ms: 9, max_delay_ms: 1, max_retries: 1 }, ..Config::default() };
        assert!(bad.validate().unwrap_err().message().contains("google: retry.min_delay_ms"));
        let c: Config = serde_json::from_str(r#"{"retry": {"max_retries": 0}}"#).unwrap();
        assert_eq!(c.retry.max_retries, 0);
        assert!(serde_json::from_str::<Config>(r#"{"retry_budget": 1}"#).is_err(), "the old retry keys are gone");
        let dbg = format!("{:?}", Config { client_secret: Some(SecretString::from("hunter2")), ..Config::default() });
        assert!(dbg.contains("[REDACTED]") && !dbg.contains("hunter2"));
    }
}
