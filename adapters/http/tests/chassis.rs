//! The chassis against local servers: retries, `Retry-After`, lost replies, single-flight
//! token refresh and counting.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crmsync_core::{Error, ErrorKind};
use crmsync_http::{Counter, Http, RetryConfig, TokenCache, create_reconciled, is_reply_lost};
use reqwest::header::HeaderMap;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn parse_error(status: u16, headers: &HeaderMap, body: &str) -> Error {
    let msg = format!("test HTTP {status}: {body}");
    match status {
        429 => Error::new(ErrorKind::RateLimited, msg).temporary(crmsync_http::retry_after(headers)),
        500..=599 => Error::new(ErrorKind::Transport, msg),
        401 => Error::new(ErrorKind::Unauthenticated, msg),
        _ => Error::new(ErrorKind::Unexpected, msg),
    }
}

fn http(max_retries: u32) -> Http {
    let retry = RetryConfig { max_retries, min_delay_ms: 1, max_delay_ms: 20 };
    Http::new("test", Duration::from_secs(5), retry, parse_error).unwrap()
}

#[tokio::test]
async fn temporary_statuses_are_retried_within_max_retries() {
    let server = MockServer::start().await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "0"))
        .up_to_n_times(2)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/flaky")).respond_with(ResponseTemplate::new(200).set_body_string("ok")).mount(&server).await;
    Mock::given(path("/down")).respond_with(ResponseTemplate::new(503)).mount(&server).await;
    let h = http(3);
    let ctr = Counter::new();
    let url = format!("{}/flaky", server.uri());
    let r = h.send(&ctr, |c| c.get(&url)).await.expect("third attempt answers");
    assert_eq!((r.status, r.text.as_str()), (200, "ok"));
    assert_eq!(ctr.get(), 3, "every attempt is counted");

    let ctr = Counter::new();
    let url = format!("{}/down", server.uri());
    let e = h.send(&ctr, |c| c.get(&url)).await.expect_err("always 503");
    assert_eq!(e.kind(), ErrorKind::Transport);
    assert_eq!(ctr.get(), 4, "the first attempt and max_retries = 3 more, no further");
}

#[tokio::test]
async fn retry_after_is_honoured_and_a_longer_one_than_max_delay_ends_the_retries() {
    let server = MockServer::start().await;
    Mock::given(path("/slow"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", "3600"))
        .mount(&server)
        .await;
    let past = "Wed, 21 Oct 2015 07:28:00 GMT";
    Mock::given(path("/dated"))
        .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", past))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(path("/dated")).respond_with(ResponseTemplate::new(204)).mount(&server).await;
    let h = http(4);
    let ctr = Counter::new();
    let url = format!("{}/slow", server.uri());
    let e = h.send(&ctr, |c| c.get(&url)).await.expect_err("an hour is beyond max_delay");
    assert_eq!(ctr.get(), 1, "no retry when the service asks for longer than max_delay");
    assert_eq!(e.retry(), crmsync_core::Retry::Temporary { after: Some(Duration::from_secs(3600)) });

    let ctr = Counter::new();
    let url = format!("{}/dated", server.uri());
    assert_eq!(h.send(&ctr, |c| c.get(&url)).await.expect("retried").status, 204);
    assert_eq!(ctr.get(), 2);
}

/// A server that reads each request and answers it as `script` says for the n-th request
/// (`None`: close the connection without answering, after reading the whole request).
async fn scripted(
    script: impl Fn(usize) -> Option<&'static str> + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = vec![0u8; 65536];
            let mut got = 0;
            // Headers, then as many body bytes as Content-Length says.
            while let Ok(n) = sock.read(&mut buf[got..]).await {
                if n == 0 {
                    break;
                }
                got += n;
                let text = String::from_utf8_lossy(&buf[..got]).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text[..end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse::<usize>().ok())
                        .unwrap_or(0);
                    if got >= end + 4 + len {
                        break;
                    }
                }
            }
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(body) = script(n) {
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(reply.as_bytes()).await;
            }
        }
    });
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn a_non_idempotent_request_is_not_sent_again_after_a_lost_reply() {
    let (url, seen) = scripted(|_| None).await;
    let h = http(3);
    let ctr = Counter::new();
    let e = h.round_trip(&ctr, false, |c| c.post(&url).body("create")).await.expect_err("reply lost");
    assert!(is_reply_lost(&e), "{e}");
    assert_eq!(e.kind(), ErrorKind::Transport);
    assert_eq!(seen.load(Ordering::SeqCst), 1, "sent once");
    assert_eq!(ctr.get(), 1);
    // The same request marked idempotent is retried.
    let e = h.round_trip(&ctr, true, |c| c.post(&url).body("upsert")).await.expect_err("never answered");
    assert!(!is_reply_lost(&e));
    assert_eq!(seen.load(Ordering::SeqCst), 5, "1 + max_retries more");
}

#[tokio::test]
async fn a_refused_connection_is_retried_even_for_a_non_idempotent_request() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    drop(listener);
    let ctr = Counter::new();
    let e = http(2).round_trip(&ctr, false, |c| c.post(&url)).await.expect_err("nobody listens");
    assert!(!is_reply_lost(&e), "nothing was sent: {e}");
    assert_eq!(ctr.get(), 3);
}

#[tokio::test]
async fn after_a_lost_reply_only_what_did_not_land_is_sent_again() {
    // Request 1 (items 0, 1, 2) lands but its reply is lost; request 2 answers.
    let (url, seen) = scripted(|n| (n > 1).then_some("{}")).await;
    let h = http(3);
    let ctr = Counter::new();
    let sent: std::sync::Mutex<Vec<Vec<usize>>> = Default::default();
    let results = create_reconciled(
        3,
        2,
        |idx: Vec<usize>| {
            sent.lock().unwrap().push(idx.clone());
            let (h, ctr, url) = (&h, &ctr, &url);
            async move {
                h.round_trip(ctr, false, |c| c.post(url)).await?;
                Ok(idx.iter().map(|i| Ok(format!("created {i}"))).collect())
            }
        },
        // Item 1 landed; 0 and 2 did not (say a partial batch).
        |idx: Vec<usize>| async move { Ok(idx.iter().map(|&i| (i == 1).then(|| Ok("found 1".to_owned()))).collect()) },
    )
    .await
    .expect("reconciled");
    let got: Vec<String> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(got, ["created 0", "found 1", "created 2"]);
    assert_eq!(*sent.lock().unwrap(), vec![vec![0, 1, 2], vec![0, 2]], "item 1 is not sent twice");
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn concurrent_callers_share_one_token_request_and_a_401_refreshes_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/token"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(r#"{"access_token":"new","expires_in":3600}"#)
                .set_delay(Duration::from_millis(50)),
        )
        .expect(1)
        .named("one token request for all callers")
        .mount(&server)
        .await;
    Mock::given(path("/api"))
        .and(header("authorization", "Bearer new"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(path("/api")).respond_with(ResponseTemplate::new(401)).mount(&server).await;
    let h = Arc::new(http(2));
    let tokens: Arc<TokenCache<SecretString>> = Arc::new(TokenCache::new());
    let ctr = Arc::new(Counter::new());
    // A stale token in the cache: the first call is refused (401) and refreshes.
    tokens.get("k", || async { Ok((SecretString::from("old"), None)) }).await.unwrap();
    let mut tasks = vec![];
    for _ in 0..8 {
        let (h, tokens, ctr, base) = (h.clone(), tokens.clone(), ctr.clone(), server.uri());
        tasks.push(tokio::spawn(async move {
            let fetch = || async {
                let t = h.fetch_token(&ctr, &format!("{base}/token"), &[("grant_type", "x")]).await?;
                let life = t.lifetime();
                Ok((t.access_token, life))
            };
            let api = format!("{base}/api");
            h.send_authed(&ctr, true, &tokens, "k", fetch, |c, t| c.get(&api).bearer_auth(t.expose_secret()))
                .await
                .and_then(|r| h.check(r))
                .map(|r| r.status)
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().expect("authorized after the refresh"), 200);
    }
    server.verify().await;
    let api_calls = server.received_requests().await.unwrap().iter().filter(|r| r.url.path() == "/api").count() as u64;
    assert_eq!(ctr.get(), api_calls + 1, "the token request is counted too");
}

#[tokio::test]
async fn invalid_grant_from_the_token_endpoint_is_grant_revoked() {
    let server = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_string(r#"{"error":"invalid_grant","error_description":"expired access/refresh token"}"#),
        )
        .mount(&server)
        .await;
    let ctr = Counter::new();
    let e = http(3)
        .fetch_token(&ctr, &format!("{}/token", server.uri()), &[("refresh_token", "s3cret")])
        .await
        .expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::GrantRevoked);
    assert!(!e.to_string().contains("s3cret"));
    assert_eq!(ctr.get(), 1, "a refusal is not retried");
}
