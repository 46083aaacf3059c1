//! Adapter configuration: the server, the credentials and the address book's name.

use std::fmt;

use crmsync_core::{Error, Result};
use secrecy::SecretString;
use serde::Deserialize;

/// The address book contacts sync through, created on demand in the rep's home set.
pub const DEFAULT_ADDRESS_BOOK: &str = "Salesforce Sync";
/// The calendar events are read from.
pub const DEFAULT_CALENDAR: &str = "Calendar";
/// The vCard / VEVENT property holding the sync key of a contact the engine created.
pub const SYNC_KEY_PROPERTY: &str = "X-CRMSYNC-KEY";

/// Configuration of the CardDAV/CalDAV provider; one TOML section (`[providers.dav]` or similar), so a
/// provider registry can deserialize it and call [`crate::DavProvider::new`].
///
/// The rep's `mailbox` is the DAV user name. The secret is not read from the file: the caller
/// sets `password` (Basic auth) or `bearer_token` from the environment, or the rep's own grant
/// (user-managed connections) is used as the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DavConfig {
    /// The server's base URL (`https://dav.example.com/`); discovery starts at
    /// `/.well-known/carddav` on it.
    pub url: String,
    /// Display name of the address book to sync.
    #[serde(default = "default_address_book")]
    pub address_book: String,
    /// Display name of the calendar events are read from (created when missing).
    #[serde(default = "default_calendar")]
    pub calendar: String,
    /// Read changes by `sync-collection` where the server offers it; `false` compares etag
    /// listings instead (what happens anyway on servers without it).
    #[serde(default = "yes")]
    pub sync_collection: bool,
    /// Resources fetched per `addressbook-multiget` report.
    #[serde(default = "default_multiget_batch")]
    pub multiget_batch: usize,
    #[serde(skip)]
    pub password: Option<SecretString>,
    #[serde(skip)]
    pub bearer_token: Option<SecretString>,
}

fn default_address_book() -> String {
    DEFAULT_ADDRESS_BOOK.into()
}

fn default_calendar() -> String {
    DEFAULT_CALENDAR.into()
}

fn yes() -> bool {
    true
}

fn default_multiget_batch() -> usize {
    50
}

impl DavConfig {
    /// A config for `url` with the defaults.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.into(),
            address_book: default_address_book(),
            calendar: default_calendar(),
            sync_collection: true,
            multiget_batch: default_multiget_batch(),
            password: None,
            bearer_token: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let uri: http::Uri =
            self.url.parse().map_err(|e| Error::invalid_config(format!("dav url {:?}: {e}", self.url)))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err(Error::invalid_config(format!("dav url {:?} is not an http(s) URL", self.url)));
        }
        if self.address_book.trim().is_empty() || self.calendar.trim().is_empty() {
            return Err(Error::invalid_config("dav address_book and calendar must not be empty"));
        }
        if self.multiget_batch == 0 {
            return Err(Error::invalid_config("dav multiget_batch must be at least 1"));
        }
        if self.password.is_some() && self.bearer_token.is_some() {
            return Err(Error::invalid_config("dav: set a password or a bearer token, not both"));
        }
        Ok(())
    }
}

impl fmt::Debug for DavConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &Option<SecretString>| if s.is_some() { "[redacted]" } else { "none" };
        f.debug_struct("DavConfig")
            .field("url", &self.url)
            .field("address_book", &self.address_book)
            .field("calendar", &self.calendar)
            .field("sync_collection", &self.sync_collection)
            .field("multiget_batch", &self.multiget_batch)
            .field("password", &set(&self.password))
            .field("bearer_token", &set(&self.bearer_token))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_toml_section_with_defaults_and_redacts_secrets() {
        let mut c: DavConfig = toml::from_str("url = \"https://dav.example.com/\"").unwrap();
        assert_eq!((c.address_book.as_str(), c.calendar.as_str()), (DEFAULT_ADDRESS_BOOK, DEFAULT_CALENDAR));
        assert!(c.sync_collection);
        c.validate().unwrap();
        c.password = Some(SecretString::from("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"), "{c:?}");
        assert!(
            toml::from_str::<DavConfig>("url = \"x\"\npassword = \"p\"").is_err(),
            "secrets never come from the file"
        );
    }

    #[test]
    fn validate_refuses_what_cannot_work() {
        let bad = |f: fn(&mut DavConfig)| {
            let mut c = DavConfig::new("https://dav.example.com/");
            f(&mut c);
            c.validate().unwrap_err().kind()
        };
        assert_eq!(bad(|c| c.url = "not a url".into()), crmsync_core::ErrorKind::InvalidConfig);
        assert_eq!(bad(|c| c.url = "ftp://dav.example.com/".into()), crmsync_core::ErrorKind::InvalidConfig);
        assert_eq!(bad(|c| c.calendar = " ".into()), crmsync_core::ErrorKind::InvalidConfig);
        assert_eq!(bad(|c| c.multiget_batch = 0), crmsync_core::ErrorKind::InvalidConfig);
        assert_eq!(
            bad(|c| {
                c.password = Some(SecretString::from("a"));
                c.bearer_token = Some(SecretString::from("b"));
            }),
            crmsync_core::ErrorKind::InvalidConfig
        );
    }
}
