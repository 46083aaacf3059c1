//! HTTP for libdav on the workspace's reqwest, discovery of the address book, error mapping.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use crmsync_core::Kind;
use crmsync_core::{Error, ErrorKind, Result};
use http::{HeaderValue, StatusCode};
use libdav::CardDavClient;
use libdav::caldav::{CreateCalendar, FindCalendarHomeSet, FindCalendars};
use libdav::carddav::{CreateAddressBook, FindAddressBookHomeSet, FindAddressBooks};
use libdav::dav::{FindCurrentUserPrincipalError, RequestError, WebDavClient, WebDavError};
use secrecy::{ExposeSecret, SecretString};

/// The `tower` service libdav sends through: reqwest, the auth header, a request counter.
#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
    auth: Option<HeaderValue>,
    requests: Arc<AtomicU64>,
}

type Reply = std::result::Result<http::Response<reqwest::Body>, reqwest::Error>;

impl tower_service::Service<http::Request<String>> for Http {
    type Response = http::Response<reqwest::Body>;
    type Error = reqwest::Error;
    type Future = Pin<Box<dyn Future<Output = Reply> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::result::Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<String>) -> Self::Future {
        if let Some(auth) = &self.auth {
            req.headers_mut().insert(http::header::AUTHORIZATION, auth.clone());
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let client = self.client.clone();
        Box::pin(async move { Ok(client.execute(reqwest::Request::try_from(req)?).await?.into()) })
    }
}

/// How the client authenticates.
#[derive(Debug)]
pub enum Auth<'a> {
    None,
    Basic { user: &'a str, password: &'a SecretString },
    Bearer(&'a SecretString),
}

/// A CardDAV/CalDAV connection for one user, counting its requests.
#[derive(Debug)]
pub struct Session {
    pub dav: CardDavClient<Http>,
    pub requests: Arc<AtomicU64>,
}

impl Session {
    pub fn new(url: &str, auth: Auth<'_>) -> Result<Session> {
        let uri: http::Uri = url.parse().map_err(|e| Error::invalid_config(format!("dav url {url:?}: {e}")))?;
        let header = match auth {
            Auth::None => None,
            Auth::Basic { user, password } => Some(basic(user, password.expose_secret())),
            Auth::Bearer(token) => Some(format!("Bearer {}", token.expose_secret())),
        };
        let auth = header
            .map(|h| {
                HeaderValue::from_str(&h).map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
            })
            .transpose()
            .map_err(|_| Error::invalid_config("dav credentials hold characters a header cannot carry"))?;
        let requests = Arc::new(AtomicU64::new(0));
        let http = Http { client: reqwest::Client::new(), auth, requests: requests.clone() };
        Ok(Session { dav: CardDavClient::new(WebDavClient::new(uri, http)), requests })
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The user's principal (`current-user-principal` of the base URL, or of `/`; the base URL
    /// when the server names none). One request when the base URL answers.
    pub async fn principal(&self) -> Result<String> {
        let principal = self.dav.find_current_user_principal().await.map_err(|e| match e {
            FindCurrentUserPrincipalError::RequestError(e) => map_err(e),
            other => Error::invalid_config(format!("dav url: {other}")),
        })?;
        Ok(principal.map_or_else(|| self.dav.base_url().path().to_owned(), |p| p.path().to_owned()))
    }

    /// The href of the address book (contacts) or calendar (events) named `name` (display name,
    /// or last path segment), created (MKCOL / MKCALENDAR) in the first home set when missing,
    /// and whether it supports `sync-collection`. Discovery: the `current-user-principal` of the
    /// base URL (or of `/`), then its home set.
    pub async fn collection(&self, kind: Kind, name: &str) -> Result<(String, bool)> {
        let principal = self.principal().await?;
        let homes = match kind {
            Kind::Contact => {
                self.dav.request(FindAddressBookHomeSet::new(&principal)).await.map_err(map_err)?.home_sets
            }
            Kind::Event => self.dav.request(FindCalendarHomeSet::new(&principal)).await.map_err(map_err)?.home_sets,
        };
        let home = homes.first().map(|h| h.path().to_owned()).unwrap_or(principal);
        let slug = slug(name);
        for attempt in 0..2 {
            let found = match kind {
                Kind::Contact => self.dav.request(FindAddressBooks::new(&home)).await.map_err(map_err)?.addressbooks,
                Kind::Event => self.dav.request(FindCalendars::new(&home)).await.map_err(map_err)?.calendars,
            };
            let found = found.into_iter().find(|b| {
                b.properties.iter().any(|(p, v)| **p == libdav::names::DISPLAY_NAME && v.as_deref() == Some(name))
                    || b.href.trim_end_matches('/').rsplit('/').next() == Some(slug.as_str())
            });
            if let Some(b) = found {
                return Ok((b.href, b.supports_sync));
            }
            if attempt == 0 {
                let href = format!("{}/{slug}/", home.trim_end_matches('/'));
                let made = match kind {
                    Kind::Contact => {
                        self.dav.request(CreateAddressBook::new(&href).with_display_name(name)).await.map(drop)
                    }
                    Kind::Event => self.dav.request(CreateCalendar::new(&href).with_display_name(name)).await.map(drop),
                };
                made.map_err(map_err)?;
            }
        }
        Err(Error::unexpected(format!("dav: collection {name:?} was created but is not listed")))
    }
}

fn basic(user: &str, password: &str) -> String {
    use base64::Engine;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

/// A path segment for a name: ASCII letters and digits kept, anything else `-`.
pub fn slug(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

fn unexpected(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Transport, format!("dav {what}: {e}")).temporary(None)
}

/// A libdav error as the engine's kind.
pub fn map_err(e: WebDavError<reqwest::Error>) -> Error {
    match e {
        WebDavError::BadStatusCode(s) => status_error(s),
        WebDavError::PreconditionFailed(p) => Error::new(ErrorKind::PreconditionFailed, format!("dav: {p:?}")),
        WebDavError::Request(RequestError::Http(e)) => unexpected("request", e),
        WebDavError::Request(RequestError::Client(e)) => unexpected("request", e),
        other => Error::unexpected(format!("dav: {other}")),
    }
}

/// An HTTP status as the engine's kind.
pub fn status_error(s: StatusCode) -> Error {
    let msg = format!("dav: http {s}");
    match s {
        StatusCode::NOT_FOUND | StatusCode::GONE => Error::not_found(msg),
        StatusCode::PRECONDITION_FAILED => Error::new(ErrorKind::PreconditionFailed, msg),
        StatusCode::UNAUTHORIZED => Error::new(ErrorKind::Unauthenticated, msg),
        StatusCode::FORBIDDEN => Error::new(ErrorKind::PermissionDenied, msg),
        StatusCode::TOO_MANY_REQUESTS => Error::new(ErrorKind::RateLimited, msg).temporary(None),
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY => {
            Error::invalid_item(msg)
        }
        s if s.is_server_error() => Error::new(ErrorKind::Transport, msg).temporary(None),
        _ => Error::unexpected(msg),
    }
}
