//! The fake org's sign-in: the authorization-code flow with PKCE, as a browser and a client
//! meet it (login page, redirect with code and state, exchange, userinfo).

use base64::Engine as _;
use crmsync_salesforce::fake::{CLIENT_ID, FakeSalesforce};
use sha2::{Digest, Sha256};

const VERIFIER: &str = "a-verifier-of-at-least-forty-three-characters-0123456789";
const REDIRECT: &str = "http://127.0.0.1:1/auth/callback";

fn challenge(v: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()))
}

fn params(challenge: &str) -> Vec<(&'static str, String)> {
    vec![
        ("response_type", "code".into()),
        ("client_id", CLIENT_ID.into()),
        ("redirect_uri", REDIRECT.into()),
        ("state", "st4te".into()),
        ("code_challenge", challenge.into()),
        ("code_challenge_method", "S256".into()),
    ]
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

/// Click `user` on the login page: the code the redirect carries.
async fn code_for(sf: &FakeSalesforce, user: &str) -> String {
    let mut form = params(&challenge(VERIFIER));
    form.push(("user_id", user.into()));
    let r = http().post(format!("{}/services/oauth2/authorize", sf.uri())).form(&form).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let to = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(to.as_str().starts_with(REDIRECT), "{to}");
    let q: Vec<(String, String)> = to.query_pairs().into_owned().collect();
    assert!(q.contains(&("state".into(), "st4te".into())), "the client's state comes back: {to}");
    q.into_iter().find(|(k, _)| k == "code").map(|(_, v)| v).unwrap()
}

async fn exchange(sf: &FakeSalesforce, code: &str, verifier: &str) -> reqwest::Response {
    let form = [
        ("grant_type", "authorization_code"),
        ("client_id", CLIENT_ID),
        ("code", code),
        ("redirect_uri", REDIRECT),
        ("code_verifier", verifier),
    ];
    http().post(format!("{}/services/oauth2/token", sf.uri())).form(&form).send().await.unwrap()
}

#[tokio::test]
async fn login_page_code_exchange_and_userinfo() {
    let sf = FakeSalesforce::start().await;
    let admin = sf.add_user("Alex Admin", &[crmsync_core::MANAGE_USERS, crmsync_core::MANAGE_SYNC]);
    let url = format!("{}/services/oauth2/authorize", sf.uri());

    // PKCE is required; the page lists the org's users.
    let mut no_pkce = params("");
    no_pkce.retain(|(k, _)| !k.starts_with("code_challenge"));
    assert_eq!(http().get(&url).query(&no_pkce).send().await.unwrap().status(), 400);
    let page = http().get(&url).query(&params(&challenge(VERIFIER))).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let page = page.text().await.unwrap();
    assert!(page.contains("Alex Admin") && page.contains(&admin), "{page}");

    // A wrong verifier is refused, and burns the code.
    let code = code_for(&sf, &admin).await;
    let r = exchange(&sf, &code, "another-verifier-of-at-least-forty-three-characters-xx").await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"], "invalid_grant");
    assert_eq!(exchange(&sf, &code, VERIFIER).await.status(), 400, "a code is used once");

    // The right verifier: a token naming the user; userinfo says who it is.
    let code = code_for(&sf, &admin).await;
    let r = exchange(&sf, &code, VERIFIER).await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().ends_with(&format!("/{admin}")), "{body}");
    let token = body["access_token"].as_str().unwrap();
    let info: serde_json::Value = http()
        .get(format!("{}/services/oauth2/userinfo", sf.uri()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["user_id"], admin.as_str());
    assert_eq!(info["name"], "Alex Admin");
    let r = http().get(format!("{}/services/oauth2/userinfo", sf.uri())).bearer_auth("forged").send().await.unwrap();
    assert_eq!(r.status(), 403);

    // An unknown user cannot be clicked into a code.
    let mut form = params(&challenge(VERIFIER));
    form.push(("user_id", "005000000000000AAA".into()));
    assert_eq!(http().post(&url).form(&form).send().await.unwrap().status(), 400);
}
