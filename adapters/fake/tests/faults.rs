//! Every fault kind, injected into a toy service on the chassis, fires as documented: the
//! client sees it, the request log names it, and the state shows whether the request applied.

use crmsync_fake::{Chassis, Fault, FaultRule, Handle, Reply, Service, Shared, Tokens};
use serde_json::json;
use wiremock::Request;

/// A counter behind a token: `POST /token` → a token; `POST /items` adds one; `GET /items`.
#[derive(Clone, Default)]
struct Toy {
    items: u64,
    tokens: Tokens<()>,
    cursor_epoch: u64,
}

impl Service for Toy {
    fn endpoint(&self, method: &str, path: &str) -> String {
        format!("{} {path}", method.to_lowercase())
    }
    fn serve(&mut self, req: &Request, chassis: &mut Chassis) -> Reply {
        if req.url.path() == "/token" {
            return Reply::json(200, json!({"access_token": self.tokens.issue("t-", ())}));
        }
        let auth = req.headers.get("authorization").and_then(|v| v.to_str().ok());
        if self.tokens.bearer(auth).is_none() {
            return Reply::json(401, json!({"error": "expired"}));
        }
        if req.url.path() == "/batch" {
            let sub = chassis.sub_request("POST", "batch:items");
            return Reply::json(200, json!({"sub_fault": sub.is_some()}));
        }
        if req.method.as_str() == "POST" {
            self.items += 1;
        }
        Reply::json(200, json!({"items": self.items, "epoch": self.cursor_epoch}))
    }
    fn fault_reply(&self, fault: &Fault, _endpoint: &str) -> Reply {
        let status = match fault {
            Fault::TooManyRequests { .. } => 429,
            Fault::Throttle403 => 403,
            Fault::Unavailable => 503,
            Fault::ExpiredToken => 401,
            _ => 500,
        };
        let r = Reply::json(status, json!({"error": format!("{fault:?}")}));
        match fault.retry_after() {
            Some(s) => r.header("Retry-After", s),
            None => r,
        }
    }
    fn expire_tokens(&mut self) {
        self.tokens.expire();
    }
    fn expire_cursors(&mut self) {
        self.cursor_epoch += 1;
    }
    fn keep_sessions(&mut self, before: Self) {
        self.tokens.keep_access(before.tokens);
    }
    fn control(&mut self, method: &str, path: &str, body: &[u8]) -> Option<Reply> {
        match (method, path) {
            ("POST", "seed") => match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(v) => {
                    self.items = v["items"].as_u64().unwrap_or(0);
                    Some(Reply::json(201, json!({"items": self.items})))
                }
                Err(e) => Some(Reply::json(400, json!({"error": e.to_string()}))),
            },
            _ => None,
        }
    }
}

struct Env {
    fake: Handle,
    state: Shared<Toy>,
    http: reqwest::Client,
    token: String,
}

async fn env() -> Env {
    let state = Shared::new(Toy::default());
    let fake = Handle::start(state.clone(), None).await;
    let http = reqwest::Client::new();
    let v: serde_json::Value = http.post(format!("{}/token", fake.uri())).send().await.unwrap().json().await.unwrap();
    let token = v["access_token"].as_str().unwrap().to_owned();
    Env { fake, state, http, token }
}

impl Env {
    async fn call(&self, method: reqwest::Method, path: &str) -> reqwest::Result<(u16, String)> {
        let r = self.http.request(method, format!("{}{path}", self.fake.uri())).bearer_auth(&self.token).send().await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }
    async fn post(&self) -> reqwest::Result<(u16, String)> {
        self.call(reqwest::Method::POST, "/items").await
    }
    fn items(&self) -> u64 {
        self.state.lock().items
    }
    /// A control API call: status and JSON body (`Null` when empty).
    async fn control(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let mut r = self.http.request(method, format!("{}/_crmsync/{path}", self.fake.uri()));
        if let Some(b) = body {
            r = r.header("content-type", "application/json").body(b.to_owned());
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, serde_json::from_str(&r.text().await.unwrap()).unwrap_or_default())
    }
    fn last_fault(&self) -> Option<Fault> {
        self.fake.request_log().last().and_then(|e| e.fault.clone())
    }
}

#[tokio::test]
async fn status_faults_answer_the_service_error_and_do_not_apply() {
    let e = env().await;
    for (fault, status) in [
        (Fault::TooManyRequests { retry_after_ms: 1500 }, 429),
        (Fault::Throttle403, 403),
        (Fault::Unavailable, 503),
        (Fault::ServerError, 500),
    ] {
        e.fake.fail_next(1, fault.clone());
        let (got, _) = e.post().await.unwrap();
        assert_eq!(got, status, "{fault:?}");
        assert_eq!(e.last_fault(), Some(fault.clone()));
        assert_eq!(e.fake.request_log().last().unwrap().status, status);
    }
    assert_eq!(e.items(), 0, "no faulted write applied");
    assert_eq!(e.fake.faults_fired(), 4);
    e.fake.fail_next(1, Fault::TooManyRequests { retry_after_ms: 1500 });
    let r = e.http.post(format!("{}/items", e.fake.uri())).bearer_auth(&e.token).send().await.unwrap();
    assert_eq!(r.headers()["retry-after"], "1.5");
}

#[tokio::test]
async fn an_expired_token_fault_expires_every_token() {
    let e = env().await;
    e.fake.fail_next(1, Fault::ExpiredToken);
    assert_eq!(e.post().await.unwrap().0, 401);
    assert_eq!(e.post().await.unwrap().0, 401, "the old token stays expired");
    assert_eq!(e.items(), 0);
}

#[tokio::test]
async fn a_drop_is_a_transport_error_and_the_write_is_not_applied() {
    let e = env().await;
    e.fake.fail_next(1, Fault::Drop);
    assert!(e.post().await.is_err(), "the client sees the connection drop");
    assert_eq!(e.last_fault(), Some(Fault::Drop));
    assert_eq!(e.items(), 0);
}

#[tokio::test]
async fn a_lost_reply_applies_the_write_and_the_client_sees_a_transport_error() {
    let e = env().await;
    e.fake.fail_next(1, Fault::LostReply);
    assert!(e.post().await.is_err(), "the client sees the connection drop");
    assert_eq!(e.items(), 1, "the write was applied");
    assert_eq!(e.last_fault(), Some(Fault::LostReply));
}

#[tokio::test]
async fn a_truncated_body_is_not_json_and_the_write_is_not_applied() {
    let e = env().await;
    e.fake.fail_next(1, Fault::Truncated);
    let (status, body) = e.post().await.unwrap();
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_err(), "{body}");
    assert_eq!(e.items(), 0);
    assert_eq!(e.last_fault(), Some(Fault::Truncated));
}

#[tokio::test]
async fn latency_delays_the_reply_and_is_logged() {
    let e = env().await;
    e.fake.fail_next(1, Fault::Latency { ms: 150 });
    let started = std::time::Instant::now();
    assert_eq!(e.post().await.unwrap().0, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));
    let last = e.fake.request_log().pop().unwrap();
    assert!(last.latency_ms >= 150, "{last:?}");
    assert_eq!(e.items(), 1, "a slow request is still served");
}

#[tokio::test]
async fn an_expired_cursor_fault_expires_cursors_then_serves() {
    let e = env().await;
    e.fake.fail_next(1, Fault::ExpiredCursor);
    let (status, body) = e.call(reqwest::Method::GET, "/items").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("\"epoch\":1"), "{body}");
}

#[tokio::test]
async fn rules_match_by_endpoint_and_method_and_reach_sub_requests() {
    let e = env().await;
    e.fake.inject(FaultRule::new(Fault::Unavailable).method("GET").times(2));
    e.fake.inject(FaultRule::new(Fault::ServerError).endpoint("batch:*"));
    assert_eq!(e.post().await.unwrap().0, 200, "a POST passes a GET rule");
    assert_eq!(e.call(reqwest::Method::GET, "/items").await.unwrap().0, 503);
    let (_, body) = e.call(reqwest::Method::POST, "/batch").await.unwrap();
    assert!(body.contains("\"sub_fault\":true"), "{body}");
    assert_eq!(e.fake.count("batch:items"), 1);
    assert_eq!(e.fake.faults().len(), 1, "one GET fault is left");
    e.fake.clear_faults();
    assert_eq!(e.call(reqwest::Method::GET, "/items").await.unwrap().0, 200);
}

#[tokio::test]
async fn counters_and_the_log_cover_every_request() {
    let e = env().await;
    e.fake.set_log_cap(2);
    e.post().await.unwrap();
    e.post().await.unwrap();
    e.call(reqwest::Method::GET, "/items").await.unwrap();
    assert_eq!(e.fake.requests(), 4, "token + 3");
    assert_eq!(e.fake.count("post /items"), 2);
    assert_eq!(e.fake.count("post /token"), 1);
    let log = e.fake.request_log();
    assert_eq!(log.iter().map(|l| (l.seq, l.method.as_str())).collect::<Vec<_>>(), vec![(3, "POST"), (4, "GET")]);
    e.fake.reset_counts();
    assert_eq!((e.fake.requests(), e.fake.count("post /items")), (0, 0));
}

#[tokio::test]
async fn the_control_api_injects_lists_and_clears_faults_without_being_counted() {
    use reqwest::Method;
    let e = env().await;
    let (status, health) = e.control(Method::GET, "health", None).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
    let rules = r#"[{"fault": {"kind": "too_many_requests", "retry_after_ms": 1000}, "method": "POST"},
                    {"fault": {"kind": "unavailable"}, "endpoint": "get /items", "schedule": {"type": "next", "skip": 0, "count": 2}}]"#;
    assert_eq!(e.control(Method::POST, "faults", Some(rules)).await.0, 201);
    assert_eq!(e.control(Method::GET, "faults", None).await.1["faults"].as_array().map(Vec::len), Some(2));
    let r = e.http.post(format!("{}/items", e.fake.uri())).bearer_auth(&e.token).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.headers()["retry-after"].to_str().unwrap()), (429, "1"));
    assert_eq!(e.call(Method::GET, "/items").await.unwrap().0, 503);
    assert_eq!(e.control(Method::DELETE, "faults", None).await.0, 204);
    assert_eq!(e.call(Method::GET, "/items").await.unwrap().0, 200, "the second 503 was cleared");
    assert_eq!(e.fake.requests(), 4, "token + 3 API requests; control requests are not counted");
    let (status, err) = e.control(Method::POST, "faults", Some(r#"{"fault": {"kind": "meteor"}}"#)).await;
    assert_eq!(status, 400);
    assert!(err["message"].as_str().unwrap().contains("meteor"), "{err}");
    let rate = r#"{"fault": {"kind": "unavailable"}, "schedule": {"type": "rate", "rate": 2.0}}"#;
    assert_eq!(e.control(Method::POST, "faults", Some(rate)).await.0, 400, "a rate above 1 is refused");
    assert!(e.fake.faults().is_empty());
}

#[tokio::test]
async fn the_request_log_is_filtered_by_method_path_and_status() {
    use reqwest::Method;
    let e = env().await;
    e.fake.fail_next(2, Fault::Unavailable);
    e.post().await.unwrap();
    e.post().await.unwrap();
    e.call(Method::GET, "/items").await.unwrap();
    let (_, all) = e.control(Method::GET, "requests", None).await;
    assert_eq!(all["requests"].as_array().unwrap().len(), 4, "{all}");
    let (_, posts) = e.control(Method::GET, "requests?method=post&path=/items", None).await;
    let statuses: Vec<_> = posts["requests"].as_array().unwrap().iter().map(|r| r["status"].as_u64()).collect();
    assert_eq!(statuses, vec![Some(200), Some(503)]);
    let (_, failed) = e.control(Method::GET, "requests?status=503", None).await;
    assert_eq!(failed["requests"][0]["fault"]["kind"], "unavailable", "{failed}");
    let (_, newest) = e.control(Method::GET, "requests?limit=1", None).await;
    assert_eq!(newest["requests"][0]["method"], "GET");
    assert_eq!(e.control(Method::GET, "requests?status=abc", None).await.0, 400);
    assert_eq!(e.control(Method::DELETE, "requests", None).await.0, 204);
    assert!(e.fake.request_log().is_empty());
}

#[tokio::test]
async fn reset_returns_to_the_seed_and_restore_to_a_snapshot_keeping_sessions() {
    use reqwest::Method;
    let e = env().await;
    let (status, seeded) = e.control(Method::POST, "seed", Some(r#"{"items": 5}"#)).await;
    assert_eq!((status, seeded["items"].as_u64()), (201, Some(5)));
    e.post().await.unwrap();
    assert_eq!(e.control(Method::POST, "snapshot", Some(r#"{"name": "six"}"#)).await.0, 201);
    e.post().await.unwrap();
    e.fake.inject(FaultRule::new(Fault::Unavailable).endpoint("never"));
    assert_eq!(e.items(), 7);
    assert_eq!(e.control(Method::POST, "restore", Some(r#"{"name": "six"}"#)).await.0, 200);
    assert_eq!(e.items(), 6);
    assert_eq!(e.control(Method::POST, "restore", Some(r#"{"name": "nope"}"#)).await.0, 404);
    let (_, names) = e.control(Method::GET, "snapshot", None).await;
    assert_eq!(names["snapshots"], json!(["seed", "six"]));
    assert_eq!(e.control(Method::POST, "reset", None).await.0, 200);
    assert_eq!(e.items(), 5, "back to the loaded scenario");
    assert!(e.fake.faults().is_empty() && e.fake.request_log().is_empty() && e.fake.requests() == 0);
    assert_eq!(e.post().await.unwrap().0, 200, "the token issued before the reset still works");
    assert_eq!(e.control(Method::GET, "nowhere", None).await.0, 404);
    assert_eq!(e.control(Method::POST, "seed", Some("{")).await.0, 400);
    e.fake.reset();
    assert_eq!(e.items(), 5);
}
