//! Configuration of the Salesforce adapter.

use std::fmt;

use crmsync_core::{Error, Result};
use secrecy::SecretString;
use serde::Deserialize;

pub use crmsync_http::RetryConfig;

/// How to reach one Salesforce org.
///
/// Secrets are not part of the serialized form: the caller loads them (e.g. from environment
/// variables named in its own config file) and sets [`Config::client_secret`] /
/// [`Config::refresh_token`]. With a refresh token the adapter uses the OAuth 2.0
/// refresh-token flow, otherwise the client-credentials flow (a connected app with a
/// "Run As" integration user).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The org's base URL (My Domain, e.g. `https://acme.my.salesforce.com`). The
    /// `instance_url` returned by the token endpoint wins over it for API calls.
    pub instance_url: String,
    /// The OAuth token endpoint; default `<instance_url>/services/oauth2/token`.
    #[serde(default)]
    pub token_url: Option<String>,
    /// The connected app's consumer key.
    pub client_id: String,
    /// The connected app's consumer secret (set by the caller).
    #[serde(skip)]
    pub client_secret: Option<SecretString>,
    /// A refresh token (set by the caller); selects the refresh-token flow.
    #[serde(skip)]
    pub refresh_token: Option<SecretString>,
    /// REST API version without the `v`, default `62.0`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// The external-id field holding crmsync's sync key on Contact and Event.
    #[serde(default = "default_sync_key_field")]
    pub sync_key_field: String,
    /// Retry budget for throttling and transient failures
    /// (`retry = { max_retries, min_delay_ms, max_delay_ms }`).
    #[serde(default)]
    pub retry: RetryConfig,
    /// Timeout of one HTTP request, seconds (default 60, at most 3600).
    #[serde(default = "default_timeout")]
    pub timeout_secs: u64,
}

fn default_api_version() -> String {
    "62.0".into()
}
fn default_sync_key_field() -> String {
    "CrmSync_Key__c".into()
}
fn default_timeout() -> u64 {
    60
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("instance_url", &self.instance_url)
            .field("token_url", &self.token_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("refresh_token", &self.refresh_token.as_ref().map(|_| "[redacted]"))
            .field("api_version", &self.api_version)
            .field("sync_key_field", &self.sync_key_field)
            .field("retry", &self.retry)
            .field("timeout_secs", &self.timeout_secs)
            .finish()
    }
}

impl Config {
    /// A config for `instance_url` with defaults; secrets still to be set.
    pub fn new(instance_url: impl Into<String>, client_id: impl Into<String>) -> Self {
        Self {
            instance_url: instance_url.into(),
            token_url: None,
            client_id: client_id.into(),
            client_secret: None,
            refresh_token: None,
            api_version: default_api_version(),
            sync_key_field: default_sync_key_field(),
            retry: RetryConfig::default(),
            timeout_secs: default_timeout(),
        }
    }

    /// The token endpoint in use.
    pub fn token_endpoint(&self) -> String {
        match &self.token_url {
            Some(t) => t.clone(),
            None => format!("{}/services/oauth2/token", self.instance_url.trim_end_matches('/')),
        }
    }

    /// Check the configuration; the error is one line naming the problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid_config(format!("salesforce: {m}")));
        for (name, u) in [("instance_url", self.instance_url.clone()), ("token_url", self.token_endpoint())] {
            match url::Url::parse(&u) {
                Ok(p) if matches!(p.scheme(), "http" | "https") && p.host().is_some() => {}
                _ => return bad(format!("{name} {u:?} is not an http(s) URL")),
            }
        }
        if self.client_id.trim().is_empty() {
            return bad("client_id is empty".into());
        }
        if self.client_secret.is_none() && self.refresh_token.is_none() {
            return bad("neither a client secret (client-credentials flow) nor a refresh token is set".into());
        }
        let version_ok = self
            .api_version
            .split_once('.')
            .and_then(|(maj, min)| Some((maj.parse::<u32>().ok()?, min.parse::<u32>().ok()?)))
            .is_some_and(|(maj, _)| maj >= 46);
        if !version_ok {
            return bad(format!("api_version {:?} must look like \"62.0\" and be at least 46.0", self.api_version));
        }
        if !crate::soql::is_identifier(&self.sync_key_field) || !self.sync_key_field.ends_with("__c") {
            return bad(format!(
                "sync_key_field {:?} must be a custom field name like CrmSync_Key__c",
                self.sync_key_field
            ));
        }
        self.retry.validate("salesforce")?;
        if !(1..=3600).contains(&self.timeout_secs) {
            return bad(format!("timeout_secs {} must be between 1 and 3600", self.timeout_secs));
        }
        Ok(())
    }
}
