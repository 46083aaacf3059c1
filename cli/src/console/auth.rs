//! Who the admin is, and what they may do.
//!
//! Sign-in is OAuth 2.0 authorization code with PKCE against the CRM (the `oauth2` crate over
//! our reqwest): the CRM vouches for the user, the console keeps only the user's id and name in
//! a server-side session (the cookie holds a random id; HttpOnly, SameSite=Lax, Secure over
//! TLS). `Manage Users` and `Manage Sync` are read from the CRM at sign-in and again on every
//! privileged action, so a permission taken away in the CRM takes effect at the next click.
//! Every form carries the session's CSRF token; every POST answers with a redirect.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use crmsync_core::{CrmUser, MANAGE_SYNC, MANAGE_USERS, Refusal, ResetScope};
use governor::{Quota, RateLimiter};
use oauth2::basic::BasicClient;
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, CsrfToken, EndpointNotSet, EndpointSet, PkceCodeChallenge, PkceCodeVerifier,
    RedirectUrl, TokenResponse, TokenUrl,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tower_sessions::cookie::SameSite;
use tower_sessions::{Expiry, MemoryStore, Session, SessionManagerLayer};

use super::App;

type Client = BasicClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// The OAuth client of the console and the HTTP client it exchanges codes with.
pub(crate) struct OAuth {
    client: Client,
    http: reqwest::Client,
    userinfo: String,
}

impl std::fmt::Debug for OAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuth").finish_non_exhaustive()
    }
}

impl OAuth {
    pub(crate) fn new(sf: &crmsync_salesforce::Config, redirect: url::Url) -> anyhow::Result<Self> {
        let token = sf.token_endpoint();
        let base = match token.strip_suffix("/token") {
            Some(base) => base.to_owned(),
            None => format!("{}/services/oauth2", sf.instance_url.trim_end_matches('/')),
        };
        let authorize = format!("{base}/authorize");
        let client = BasicClient::new(ClientId::new(sf.client_id.clone()))
            .set_auth_uri(AuthUrl::new(authorize)?)
            .set_token_uri(TokenUrl::new(token)?)
            .set_redirect_uri(RedirectUrl::from_url(redirect));
        // No redirects: a token endpoint that redirects is refused, not followed.
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(OAuth { client, http, userinfo: format!("{base}/userinfo") })
    }

    /// Exchange a code for the user the CRM vouches for (the user's token is used once, to ask
    /// the CRM who it belongs to, and then forgotten).
    async fn user(&self, code: String, verifier: String) -> anyhow::Result<CrmUser> {
        let http = |req: oauth2::HttpRequest| {
            let client = self.http.clone();
            async move {
                let (parts, body) = req.into_parts();
                let res = client
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(std::io::Error::other)?;
                let mut out = oauth2::http::Response::builder().status(res.status());
                for (k, v) in res.headers() {
                    out = out.header(k, v);
                }
                let body = res.bytes().await.map_err(std::io::Error::other)?.to_vec();
                out.body(body).map_err(std::io::Error::other)
            }
        };
        let token = self
            .client
            .exchange_code(AuthorizationCode::new(code))
            .set_pkce_verifier(PkceCodeVerifier::new(verifier))
            .request_async(&http)
            .await
            .map_err(|e| anyhow::anyhow!("the CRM refused the sign-in: {e}"))?;
        #[derive(Deserialize)]
        struct UserInfo {
            user_id: String,
            name: String,
        }
        let info: UserInfo = self
            .http
            .get(&self.userinfo)
            .bearer_auth(token.access_token().secret())
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(CrmUser { id: info.user_id, name: info.name, email: None })
    }
}

const ADMIN: &str = "admin";
const PENDING: &str = "signin";

/// The signed-in admin, as the session keeps them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Admin {
    pub(crate) id: String,
    pub(crate) name: String,
    /// The session's CSRF token, put in every form.
    pub(crate) csrf: String,
}

impl Admin {
    pub(crate) fn user(&self) -> CrmUser {
        CrmUser { id: self.id.clone(), name: self.name.clone(), email: None }
    }
}

/// A sign-in under way: PKCE verifier and state, kept in the session until the callback.
#[derive(Serialize, Deserialize)]
struct Pending {
    verifier: String,
    state: String,
}

/// The session's layer: a random id in an HttpOnly, SameSite=Lax cookie (Lax: the CRM's
/// redirect back to the callback is a top-level navigation that must carry it), Secure over
/// TLS; the data stays in this process's memory; idle sessions end after `minutes`.
pub(crate) fn sessions(tls: bool, minutes: u32) -> SessionManagerLayer<MemoryStore> {
    SessionManagerLayer::new(MemoryStore::default())
        .with_name("crmsync_session")
        .with_http_only(true)
        .with_same_site(SameSite::Lax)
        .with_secure(tls)
        .with_expiry(Expiry::OnInactivity(tower_sessions::cookie::time::Duration::minutes(i64::from(minutes))))
}

/// Sign-in attempts per client address: 10 a minute.
pub(crate) type Limiter =
    RateLimiter<IpAddr, governor::state::keyed::HashMapStateStore<IpAddr>, governor::clock::DefaultClock>;

pub(crate) fn limiter() -> Limiter {
    RateLimiter::hashmap(Quota::per_minute(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN)))
}

fn too_many(app: &App, peer: SocketAddr) -> Option<Response> {
    app.limiter.check_key(&peer.ip()).is_err().then(|| {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "60")],
            "too many sign-in attempts; try again in a minute\n",
        )
            .into_response()
    })
}

fn fail(status: StatusCode, msg: impl Into<String>) -> Response {
    super::pages::message(status, "Sign-in failed", &msg.into())
}

/// `GET /signin`: start the authorization-code flow.
pub(crate) async fn signin(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Session,
) -> Response {
    if let Some(r) = too_many(&app, peer) {
        return r;
    }
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state) = app.oauth.client.authorize_url(CsrfToken::new_random).set_pkce_challenge(challenge).url();
    let pending = Pending { verifier: verifier.secret().clone(), state: state.secret().clone() };
    if let Err(e) = session.insert(PENDING, pending).await {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, format!("session: {e}"));
    }
    Redirect::to(url.as_str()).into_response()
}

#[derive(Deserialize)]
pub(crate) struct Callback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /auth/callback`: finish the flow; only a user with both permissions gets a session.
pub(crate) async fn callback(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Session,
    Query(q): Query<Callback>,
) -> Response {
    if let Some(r) = too_many(&app, peer) {
        return r;
    }
    let pending: Option<Pending> = session.remove(PENDING).await.ok().flatten();
    let Some(pending) = pending else {
        return fail(StatusCode::BAD_REQUEST, "no sign-in is under way in this browser; start again");
    };
    if let Some(e) = q.error {
        return fail(StatusCode::FORBIDDEN, format!("the CRM said: {e}"));
    }
    let (Some(code), Some(state)) = (q.code, q.state) else {
        return fail(StatusCode::BAD_REQUEST, "the CRM's answer has no code");
    };
    if !same(&state, &pending.state) {
        return fail(StatusCode::BAD_REQUEST, "the sign-in's state does not match; start again");
    }
    let user = match app.oauth.user(code, pending.verifier).await {
        Ok(u) => u,
        Err(e) => return fail(StatusCode::FORBIDDEN, format!("{e:#}")),
    };
    if let Err(r) = allowed(&app, &user, "sign in", None, None).await {
        return *r;
    }
    // A new session id at sign-in (no fixation), with its own CSRF token.
    let admin = Admin { id: user.id.clone(), name: user.name.clone(), csrf: CsrfToken::new_random().secret().clone() };
    if let Err(e) = session.cycle_id().await {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, format!("session: {e}"));
    }
    if let Err(e) = session.insert(ADMIN, admin).await {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, format!("session: {e}"));
    }
    tracing::info!(admin = %user.name, "admin signed in");
    Redirect::to("/").into_response()
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /signout`.
pub(crate) async fn signout(
    session: Session,
    admin: Option<SignedIn>,
    axum::Form(f): axum::Form<CsrfForm>,
) -> Response {
    if let Some(a) = admin {
        if let Err(r) = a.check_csrf(&f.csrf) {
            return *r;
        }
    }
    let _ = session.flush().await;
    Redirect::to("/").into_response()
}

/// Equal, compared in constant time.
pub(crate) fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A request from a signed-in admin (pages): otherwise a redirect to the sign-in page.
#[derive(Debug)]
pub(crate) struct SignedIn(pub(crate) Admin);

impl SignedIn {
    /// The form's CSRF token must be the session's.
    pub(crate) fn check_csrf(&self, token: &str) -> Result<(), Box<Response>> {
        if same(token, &self.0.csrf) {
            Ok(())
        } else {
            tracing::warn!(admin = %self.0.name, "form refused: missing or wrong CSRF token");
            Err(Box::new(super::pages::message(
                StatusCode::FORBIDDEN,
                "Refused",
                "This form is stale or did not come from this console (CSRF token). Nothing was changed.",
            )))
        }
    }
}

impl FromRequestParts<Arc<App>> for SignedIn {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &Arc<App>) -> Result<Self, Response> {
        let session = Session::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        match session.get::<Admin>(ADMIN).await {
            Ok(Some(a)) => Ok(SignedIn(a)),
            _ if parts.method == axum::http::Method::GET => Err(super::pages::signin_page()),
            _ => Err(super::pages::message(
                StatusCode::UNAUTHORIZED,
                "Sign in first",
                "Your session has ended; nothing was changed.",
            )),
        }
    }
}

impl axum::extract::OptionalFromRequestParts<Arc<App>> for SignedIn {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &Arc<App>) -> Result<Option<Self>, Response> {
        let session = Session::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        Ok(session.get::<Admin>(ADMIN).await.ok().flatten().map(SignedIn))
    }
}

/// A reader of `/api/*` and `/metrics`: a signed-in admin, or a script with the bearer token.
#[derive(Debug)]
pub(crate) struct Reader;

impl FromRequestParts<Arc<App>> for Reader {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, state: &Arc<App>) -> Result<Self, Response> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if let (Some(given), Some(token)) = (bearer, &state.api_token) {
            if same(given, token.expose_secret()) {
                return Ok(Reader);
            }
        }
        let session = Session::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        match session.get::<Admin>(ADMIN).await {
            Ok(Some(_)) => Ok(Reader),
            _ => Err((
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "sign in, or send the read-only token as a bearer token\n",
            )
                .into_response()),
        }
    }
}

/// The live check: `user` holds both `Manage Users` and `Manage Sync` in the CRM now. A refusal
/// is logged, counted, recorded in the store (the audit) and answered with a page saying what
/// is missing. `rep` is the rep's id; `scope`, a reset's.
pub(crate) async fn allowed(
    app: &App,
    user: &CrmUser,
    action: &str,
    rep: Option<&str>,
    scope: Option<ResetScope>,
) -> Result<(), Box<Response>> {
    let held =
        app.engine.crm().permissions(&user.id).await.map_err(|e| {
            Box::new(super::pages::message(StatusCode::BAD_GATEWAY, "The CRM did not answer", e.message()))
        })?;
    let missing: Vec<&str> = [MANAGE_USERS, MANAGE_SYNC].into_iter().filter(|p| !held.iter().any(|h| h == p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let outcome = format!("refused: {} lacks {}", user.name, missing.join(" and "));
    tracing::warn!(admin = %user.name, action, rep = ?rep, outcome = %outcome, "refused");
    metrics::counter!("crmsync_console_refused_total", "action" => action.to_owned()).increment(1);
    let refusal = Refusal {
        at: Utc::now(),
        admin_id: user.id.clone(),
        admin_name: user.name.clone(),
        action: action.to_owned(),
        rep: rep.map(str::to_owned),
        scope,
        reason: outcome.clone(),
    };
    if let Err(e) = app.store.refuse(&refusal).await {
        // The refusal stands either way; the admin learns the audit missed it.
        tracing::error!(error = e.message(), "refusal not recorded in the store");
        return Err(Box::new(super::pages::message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Refused",
            &format!("{outcome}. (The store did not record this refusal: {})", e.message()),
        )));
    }
    Err(Box::new(super::pages::message(
        StatusCode::FORBIDDEN,
        "Refused",
        &format!("{outcome}. The console needs both Manage Users and Manage Sync in the CRM."),
    )))
}
