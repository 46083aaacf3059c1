#![warn(missing_docs)]
//! The HTTP chassis every crmsync service adapter sends through.
//!
//! - [`RetryConfig`]: the one `retry = { max_retries, min_delay_ms, max_delay_ms }` shape of
//!   every adapter's configuration.
//! - [`Http`]: one reqwest client per adapter with the adapter's [`ParseError`]. It retries
//!   what the parsed error marks temporary (429, 5xx, throttling codes), timeouts and dropped
//!   connections with exponential backoff and jitter ([`backon`]), honours `Retry-After`
//!   (seconds or HTTP-date) up to `max_delay_ms`, and counts every request it sends on the
//!   caller's [`Counter`].
//! - Lost replies: a request marked non-idempotent is never sent again once it may have
//!   reached the service; the error carries a [`ReplyLost`] marker ([`is_reply_lost`]) and
//!   [`create_reconciled`] looks up what landed before re-sending only what is missing.
//! - [`TokenCache`]: a single-flight cache of access tokens (one refresh at a time per key,
//!   shared by every caller), refreshed once on a 401; [`oauth_error`] maps the token
//!   endpoint's `{error, error_description}` (with `invalid_grant` → `GrantRevoked`).

mod client;
mod reconcile;
mod retry;
mod token;

pub use client::{Counter, Http, ParseError, ReplyLost, Response, is_reply_lost};
pub use reconcile::create_reconciled;
pub use retry::{RetryConfig, retry_after, retry_items};
pub use token::{Lease, TokenCache, TokenReply, oauth_error};

/// The start of a reply body on one line, for error messages.
pub(crate) fn snippet(s: &str) -> String {
    s.chars().take(200).collect::<String>().replace(['\n', '\r'], " ")
}
