//! One error type for every port: a kind, a retry hint, a message and an optional source.

use std::fmt;
use std::time::Duration;

/// What went wrong, independent of the service that reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The record or resource does not exist (or no longer does).
    NotFound,
    /// A conditional write saw a newer version than the one it was based on.
    PreconditionFailed,
    /// The incremental-sync cursor is no longer accepted; read everything again.
    CursorExpired,
    /// The service throttled us (HTTP 429, Salesforce `REQUEST_LIMIT_EXCEEDED`, …).
    RateLimited,
    /// Credentials are missing or expired (an access token that a refresh may mend).
    Unauthenticated,
    /// The user's grant was revoked or is wrong (OAuth `invalid_grant`, consent withdrawn): no
    /// refresh can mend it; the rep must reconnect.
    GrantRevoked,
    /// The caller lacks a permission (including Reset Sync's `Manage Users` / `Manage Sync`).
    PermissionDenied,
    /// One item is unacceptable (missing field, bad e-mail, validation or duplicate rule).
    InvalidItem,
    /// The configuration is malformed or names something that does not exist.
    InvalidConfig,
    /// Two writers raced (e.g. a cycle writing links for a rep that was reset meanwhile).
    Conflict,
    /// The port does not offer this operation.
    Unsupported,
    /// Network-level failure: connection refused or dropped, timeout, 5xx.
    Transport,
    /// The state store failed or is unusable (corrupt file, newer schema, unreachable server).
    Store,
    /// A full read returned nothing while links exist: the kind is stopped instead of treating
    /// every linked record as deleted.
    EmptySide,
    /// Anything else; a bug or a response we do not understand.
    Unexpected,
}

impl ErrorKind {
    /// Stable snake_case name, used in reports and as an item-error reason prefix.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotFound => "not_found",
            Self::PreconditionFailed => "precondition_failed",
            Self::CursorExpired => "cursor_expired",
            Self::RateLimited => "rate_limited",
            Self::Unauthenticated => "unauthenticated",
            Self::GrantRevoked => "grant_revoked",
            Self::PermissionDenied => "permission_denied",
            Self::InvalidItem => "invalid_item",
            Self::InvalidConfig => "invalid_config",
            Self::Conflict => "conflict",
            Self::Unsupported => "unsupported",
            Self::Transport => "transport",
            Self::Store => "store",
            Self::EmptySide => "empty_side",
            Self::Unexpected => "unexpected",
        }
    }
}

/// Whether trying again can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Trying again will fail the same way.
    Permanent,
    /// Trying again may succeed, optionally not before `after`.
    Temporary { after: Option<Duration> },
}

/// The error of every port and of the engine.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    retry: Retry,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error; `RateLimited` and `Transport` default to temporary, all others to permanent.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        let retry = match kind {
            ErrorKind::RateLimited | ErrorKind::Transport => Retry::Temporary { after: None },
            _ => Retry::Permanent,
        };
        Self { kind, retry, message: message.into(), source: None }
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, msg)
    }
    pub fn invalid_item(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidItem, msg)
    }
    pub fn invalid_config(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidConfig, msg)
    }
    pub fn unexpected(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unexpected, msg)
    }
    pub fn store(msg: impl Into<String>) -> Self {
        Self::new(ErrorKind::Store, msg)
    }

    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }
    pub fn temporary(self, after: Option<Duration>) -> Self {
        self.with_retry(Retry::Temporary { after })
    }
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }
    /// Prefix the message with where it happened ("salesforce contacts: …").
    pub fn context(mut self, ctx: impl fmt::Display) -> Self {
        self.message = format!("{ctx}: {}", self.message);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn retry(&self) -> Retry {
        self.retry
    }
    pub fn is_temporary(&self) -> bool {
        matches!(self.retry, Retry::Temporary { .. })
    }
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl Clone for Error {
    /// Clones kind, retry hint and message; the source chain is flattened into the message.
    fn clone(&self) -> Self {
        let message = match &self.source {
            Some(s) => format!("{} ({s})", self.message),
            None => self.message.clone(),
        };
        Self { kind: self.kind, retry: self.retry, message, source: None }
    }
}
