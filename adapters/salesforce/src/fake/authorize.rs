//! The OAuth 2.0 authorization-code flow with PKCE (RFC 7636), as a Salesforce org's login
//! serves it: `GET /services/oauth2/authorize` shows a small login page listing the org's active
//! users (a click signs in as that user: the fake has no passwords), `POST` to the same path
//! redirects to the client's `redirect_uri` with a one-time `code` and the client's `state`, and
//! the token endpoint's `grant_type=authorization_code` exchanges the code (with the
//! `code_verifier` whose S256 hash is the challenge) for an access token whose `id` URL names
//! the signed-in user; `GET /services/oauth2/userinfo` with that token describes the user.

use base64::Engine as _;
use crmsync_fake::{Chassis, Reply};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::CLIENT_ID;
use super::state::State;

/// A code handed to a client, waiting for its exchange.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    user_id: String,
    redirect_uri: String,
    challenge: String,
}

/// The parameters of an authorization request (query of the GET, form of the POST).
struct Params(Vec<(String, String)>);

impl Params {
    fn get(&self, k: &str) -> &str {
        self.0.iter().find(|(n, _)| n == k).map_or("", |(_, v)| v.as_str())
    }

    /// Why the request cannot proceed, if it cannot (the page says so; nothing redirects).
    fn invalid(&self) -> Option<&'static str> {
        if self.get("client_id") != CLIENT_ID {
            Some("client identifier invalid")
        } else if self.get("response_type") != "code" {
            Some("response_type must be code")
        } else if url::Url::parse(self.get("redirect_uri")).is_err() {
            Some("redirect_uri must be an absolute URL")
        } else if self.get("code_challenge_method") != "S256" || self.get("code_challenge").len() < 43 {
            Some("PKCE is required: code_challenge (S256)")
        } else {
            None
        }
    }
}

/// Serve `/services/oauth2/authorize`.
pub(crate) fn respond(
    st: &mut State,
    ch: &mut Chassis,
    method: &str,
    query: &[(String, String)],
    body: &[u8],
) -> Reply {
    let post = method == "POST";
    let params = Params(if post { url::form_urlencoded::parse(body).into_owned().collect() } else { query.to_vec() });
    if let Some(why) = params.invalid() {
        return page(400, &format!("<p class=error>{}</p>", escape(why)));
    }
    if !post {
        return page(200, &login_form(st, &params));
    }
    let user_id = params.get("user_id");
    if !active_users(st).iter().any(|(id, _)| id == user_id) {
        return page(400, "<p class=error>unknown or inactive user</p>");
    }
    let code = format!("aPrx{:016x}{:016x}", ch.rng().next_u64(), ch.rng().next_u64());
    st.auth_codes.insert(
        code.clone(),
        Grant {
            user_id: user_id.to_owned(),
            redirect_uri: params.get("redirect_uri").to_owned(),
            challenge: params.get("code_challenge").to_owned(),
        },
    );
    let mut to = url::Url::parse(params.get("redirect_uri")).expect("checked by invalid()");
    to.query_pairs_mut().append_pair("code", &code).append_pair("state", params.get("state"));
    Reply::empty(302).header("Location", to.as_str())
}

/// `grant_type=authorization_code` at the token endpoint: the user the code was issued to, or
/// the OAuth error. A code is used once, whatever the outcome.
pub(crate) fn exchange(st: &mut State, form: &dyn Fn(&str) -> Option<String>) -> Result<String, &'static str> {
    let code = form("code").unwrap_or_default();
    let grant = st.auth_codes.remove(&code).ok_or("invalid authorization code")?;
    if form("redirect_uri").as_deref() != Some(grant.redirect_uri.as_str()) {
        return Err("redirect_uri mismatch");
    }
    let verifier = form("code_verifier").unwrap_or_default();
    let hashed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    if hashed != grant.challenge {
        return Err("invalid code verifier");
    }
    Ok(grant.user_id)
}

/// `GET /services/oauth2/userinfo`: the user an authorization-code token was issued to.
pub(crate) fn userinfo(st: &State, authorization: Option<&str>) -> Reply {
    let user = st.user_tokens.bearer(authorization);
    let Some((id, name)) = user.and_then(|u| active_users(st).into_iter().find(|(id, _)| *id == u)) else {
        return Reply::raw(403, b"Bad_OAuth_Token".to_vec(), "text/plain");
    };
    Reply::json(200, json!({"user_id": id, "name": name, "organization_id": "00D5g000004FAKEEAA"}))
}

/// (id, name) of every active user.
fn active_users(st: &State) -> Vec<(String, String)> {
    let field = |u: &Value, k: &str| u.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
    st.snapshot("User", false)
        .into_iter()
        .filter(|u| u.get("IsActive") == Some(&json!(true)))
        .map(|u| (field(&u, "Id"), field(&u, "Name")))
        .collect()
}

fn login_form(st: &State, params: &Params) -> String {
    let hidden: String =
        ["response_type", "client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method"]
            .iter()
            .map(|k| format!("<input type=hidden name={k} value=\"{}\">", escape(params.get(k))))
            .collect();
    let users: String = active_users(st)
        .iter()
        .map(|(id, name)| format!("<li><button name=user_id value=\"{}\">{}</button></li>", escape(id), escape(name)))
        .collect();
    format!(
        "<h1>Log in to the fake org</h1><p>Choose a user (this fake org has no passwords).</p>\
         <form method=post action=/services/oauth2/authorize>{hidden}<ul>{users}</ul></form>"
    )
}

fn page(status: u16, body: &str) -> Reply {
    let html = format!(
        "<!DOCTYPE html><html><head><meta charset=utf-8><title>Login | Salesforce (fake)</title>\
         <style>body{{font-family:sans-serif;margin:2em}}li{{list-style:none;margin:.3em 0}}.error{{color:#b00}}</style>\
         </head><body>{body}</body></html>"
    );
    Reply::raw(status, html.into_bytes(), "text/html;charset=UTF-8")
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}
