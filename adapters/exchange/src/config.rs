//! Adapter configuration: where Graph and the token endpoint live, the OAuth client, paging
//! and retry budget. Secrets are held as [`SecretString`] and never printed.

use std::fmt;

use crmsync_core::{Error, Result};
use secrecy::SecretString;
use serde::Deserialize;

pub use crmsync_http::RetryConfig;

/// Configuration of the Exchange (Microsoft Graph) provider.
///
/// The client secret is not read from the config file: the caller loads it (e.g. from an
/// environment variable) and sets [`Config::client_secret`].
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Graph root including the version, e.g. `https://graph.microsoft.com/v1.0`.
    pub graph_url: String,
    /// Token endpoint; `{tenant}` is replaced by [`Config::tenant`].
    pub token_url: String,
    /// Azure AD tenant id or domain.
    pub tenant: String,
    /// OAuth client (application) id.
    pub client_id: String,
    /// OAuth client secret (app-only tokens need it; delegated refreshes send it when set).
    #[serde(skip)]
    pub client_secret: Option<SecretString>,
    /// Scopes for app-only tokens (client credentials).
    pub app_scope: String,
    /// Scopes for delegated refresh-token grants.
    pub delegated_scope: String,
    /// `Prefer: odata.maxpagesize` sent on list and delta requests.
    pub page_size: usize,
    /// Retries on 429, 5xx and transport errors
    /// (`retry = { max_retries, min_delay_ms, max_delay_ms }`).
    pub retry: RetryConfig,
    /// Per-request timeout, in seconds (1 to 3600).
    pub timeout_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            graph_url: "https://graph.microsoft.com/v1.0".into(),
            token_url: "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token".into(),
            tenant: String::new(),
            client_id: String::new(),
            client_secret: None,
            app_scope: "https://graph.microsoft.com/.default".into(),
            delegated_scope: "offline_access Contacts.ReadWrite Calendars.ReadWrite".into(),
            page_size: 100,
            retry: RetryConfig::default(),
            timeout_secs: 60,
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("graph_url", &self.graph_url)
            .field("token_url", &self.token_url)
            .field("tenant", &self.tenant)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[REDACTED]"))
            .field("page_size", &self.page_size)
            .field("retry", &self.retry)
            .field("timeout_secs", &self.timeout_secs)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// Check the configuration; the error is one line naming the problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid_config(format!("exchange: {m}")));
        for (name, v) in [("graph_url", &self.graph_url), ("token_url", &self.token_url)] {
            match url::Url::parse(&v.replace("{tenant}", "t")) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                _ => return bad(format!("{name} {v:?} is not an http(s) URL")),
            }
        }
        if self.token_url.contains("{tenant}") && self.tenant.trim().is_empty() {
            return bad("tenant is empty".into());
        }
        if self.client_id.trim().is_empty() {
            return bad("client_id is empty".into());
        }
        if !(1..=1000).contains(&self.page_size) {
            return bad(format!("page_size {} is not within 1..=1000", self.page_size));
        }
        if !(1..=3600).contains(&self.timeout_secs) {
            return bad(format!("timeout_secs {} is not within 1..=3600", self.timeout_secs));
        }
        self.retry.validate("exchange")
    }

    /// The token endpoint with the tenant filled in.
    pub fn token_endpoint(&self) -> String {
        self.token_url.replace("{tenant}", &self.tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_the_secret_and_validate_names_the_problem() {
        let c = Config {
            tenant: "contoso".into(),
            client_id: "app".into(),
            client_secret: Some(SecretString::from("hunter2-secret")),
            ..Default::default()
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2") && dbg.contains("REDACTED"), "{dbg}");
        c.validate().expect("valid");
        assert_eq!(c.token_endpoint(), "https://login.microsoftonline.com/contoso/oauth2/v2.0/token");
        let err = Config { client_id: String::new(), ..c.clone() }.validate().unwrap_err();
        assert!(err.to_string().contains("client_id"), "{err}");
        let err: std::result::Result<Config, _> = serde_json::from_str(r#"{"graph_urll":"x"}"#);
        assert!(err.is_err(), "unknown fields are refused");
        let err: std::result::Result<Config, _> = serde_json::from_str(r#"{"retries":0}"#);
        assert!(err.is_err(), "the old retry keys are gone");
        let cfg: Config = serde_json::from_str(r#"{"tenant":"t","client_id":"c","retry":{"max_retries":0}}"#).unwrap();
        assert_eq!(cfg.retry, RetryConfig { max_retries: 0, ..RetryConfig::default() });
        let err = Config { retry: RetryConfig { max_retries: u32::MAX, ..RetryConfig::default() }, ..c.clone() }
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("exchange: retry.max_retries"), "{err}");
        let err = Config { timeout_secs: u64::MAX, ..c.clone() }.validate().unwrap_err();
        assert!(err.to_string().contains("timeout_secs"), "{err}");
    }
}
