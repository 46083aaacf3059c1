//! The OAuth side every fake serves: access and refresh tokens, the token endpoint's form and
//! error shape.

use std::collections::HashMap;

use serde_json::json;

use crate::Reply;

/// Access tokens and refresh tokens, each naming a principal `P` (a user, an app…).
#[derive(Clone, Debug)]
pub struct Tokens<P> {
    access: HashMap<String, P>,
    refresh: HashMap<String, P>,
    seq: u64,
}

impl<P> Default for Tokens<P> {
    fn default() -> Self {
        Self { access: HashMap::new(), refresh: HashMap::new(), seq: 0 }
    }
}

impl<P: Clone> Tokens<P> {
    /// A new access token for `principal`: `prefix` and a sequence number.
    pub fn issue(&mut self, prefix: &str, principal: P) -> String {
        self.seq += 1;
        let token = format!("{prefix}{:08}", self.seq);
        self.access.insert(token.clone(), principal);
        token
    }

    /// The principal of an `Authorization` header (`Bearer …` or Salesforce's `OAuth …`), if its
    /// token is live.
    pub fn bearer(&self, authorization: Option<&str>) -> Option<P> {
        let h = authorization?;
        let t = h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("OAuth "))?;
        self.access.get(t.trim()).cloned()
    }

    /// Expire every access token issued so far.
    pub fn expire(&mut self) {
        self.access.clear();
    }

    /// Keep accepting the access tokens `other` issued (after a restore from a snapshot, so
    /// signed-in clients stay signed in).
    pub fn keep_access(&mut self, other: Tokens<P>) {
        self.access.extend(other.access);
        self.seq = self.seq.max(other.seq);
    }

    /// Accept `token` as a refresh token for `principal`.
    pub fn add_refresh(&mut self, token: impl Into<String>, principal: P) {
        self.refresh.insert(token.into(), principal);
    }

    /// Stop accepting a refresh token.
    pub fn revoke_refresh(&mut self, token: &str) {
        self.refresh.remove(token);
    }

    /// The principal a refresh token grants.
    pub fn refresh(&self, token: Option<&str>) -> Option<P> {
        self.refresh.get(token?).cloned()
    }

    /// A fresh number (for refresh tokens and ids a fake hands out).
    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }
}

/// The `application/x-www-form-urlencoded` body of a token request.
pub fn oauth_form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The RFC 6749 error reply: `{"error", "error_description"}`.
pub fn oauth_error(status: u16, error: &str, description: &str) -> Reply {
    Reply::json(status, json!({"error": error, "error_description": description}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_principal_until_they_expire() {
        let mut t = Tokens::default();
        let a = t.issue("tok-", "ann");
        t.add_refresh("r1", "bob");
        assert_eq!(t.bearer(Some(&format!("Bearer {a}"))), Some("ann"));
        assert_eq!(t.bearer(Some(&format!("OAuth {a}"))), Some("ann"));
        assert_eq!(t.bearer(Some("Bearer nope")), None);
        assert_eq!(t.refresh(Some("r1")), Some("bob"));
        t.expire();
        assert_eq!(t.bearer(Some(&format!("Bearer {a}"))), None);
        assert_eq!(t.refresh(Some("r1")), Some("bob"), "refresh tokens outlive access tokens");
        assert_eq!(oauth_form(b"grant_type=refresh_token&x=a%20b")["x"], "a b");
    }
}
