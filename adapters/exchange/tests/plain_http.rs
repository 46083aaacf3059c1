//! The fake spoken to with plain reqwest and hand-written Graph JSON (as in Microsoft's docs),
//! so any Graph client can use it — not only this adapter.

use crmsync_exchange::fake::{CLIENT_ID, CLIENT_SECRET, FakeGraph, Fault, TENANT};
use reqwest::Client;
use serde_json::{Value, json};

const PROP: &str = "String {66f5a359-4659-4830-9070-00047ec6ac6e} Name MySyncKey";

async fn token(http: &Client, fake: &FakeGraph) -> String {
    let r = http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", fake.uri()))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn contacts_folder_extended_properties_delta_batch_and_errors() {
    let fake = FakeGraph::start().await;
    fake.add_mailbox("megan@contoso.com");
    let http = Client::new();
    let tok = token(&http, &fake).await;
    let g = |p: &str| format!("{}/v1.0/users/megan@contoso.com{p}", fake.uri());

    // No folder yet; create it.
    let r: Value = http
        .get(g("/contactFolders"))
        .query(&[("$filter", "displayName eq 'Salesforce_Sync'")])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["value"], json!([]));
    let r = http
        .post(g("/contactFolders"))
        .bearer_auth(&tok)
        .json(&json!({"displayName":"Salesforce_Sync"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let folder: Value = r.json().await.unwrap();
    let fid = folder["id"].as_str().unwrap().to_owned();
    let dup = http
        .post(g("/contactFolders"))
        .bearer_auth(&tok)
        .json(&json!({"displayName":"Salesforce_Sync"}))
        .send()
        .await
        .unwrap();
    assert_eq!(dup.status(), 409);

    // Create two contacts, one stamped with an extended property (contact.md / singlevaluelegacyextendedproperty-post).
    let r = http
        .post(g(&format!("/contactFolders/{fid}/contacts")))
        .bearer_auth(&tok)
        .json(&json!({
            "givenName": "Pavel", "surname": "Bansky",
            "emailAddresses": [{"address": "pavelb@fabrikam.onmicrosoft.com", "name": "Pavel Bansky"}],
            "businessPhones": ["+1 732 555 0102"],
            "singleValueExtendedProperties": [{"id": PROP, "value": "abc"}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let pavel: Value = r.json().await.unwrap();
    assert!(pavel["@odata.etag"].as_str().unwrap().starts_with("W/\""));
    assert!(pavel.get("singleValueExtendedProperties").is_none(), "only $expand shows extended properties");
    assert_eq!(pavel["parentFolderId"], fid.as_str());
    let pid = pavel["id"].as_str().unwrap().to_owned();
    let r = http
        .post(g(&format!("/contactFolders/{fid}/contacts")))
        .bearer_auth(&tok)
        .json(&json!({"givenName": "Adele", "surname": "Vance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    // Read the property back, and filter by it.
    let one: Value = http
        .get(g(&format!("/contacts/{pid}")))
        .query(&[("$expand", format!("singleValueExtendedProperties($filter=id eq '{PROP}')"))])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["singleValueExtendedProperties"][0]["value"], "abc");
    let found: Value = http
        .get(g(&format!("/contactFolders/{fid}/contacts")))
        .query(&[(
            "$filter",
            format!("singleValueExtendedProperties/Any(ep: ep/id eq '{PROP}' and ep/value eq 'abc')"),
        )])
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(found["value"].as_array().unwrap().len(), 1);
    assert_eq!(found["value"][0]["id"], pid.as_str());

    // Delta in pages of one (SDK-style `delta()` path), then an incremental round.
    let mut url = g(&format!("/contactFolders/{fid}/contacts/delta()"));
    let mut seen = 0;
    let delta_link = loop {
        let page: Value = http
            .get(&url)
            .header("Prefer", "odata.maxpagesize=1")
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        seen += page["value"].as_array().unwrap().len();
        if let Some(n) = page["@odata.nextLink"].as_str() {
            assert!(n.contains("skiptoken"));
            url = n.to_owned();
        } else {
            break page["@odata.deltaLink"].as_str().unwrap().to_owned();
        }
    };
    assert_eq!(seen, 2);

    // Conditional update: stale etag → 412 envelope; the current one → 200 and a new etag.
    let stale = http
        .patch(g(&format!("/contacts/{pid}")))
        .header("If-Match", "W/\"EQAAABYAAACstale\"")
        .bearer_auth(&tok)
        .json(&json!({"jobTitle": "CEO"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    let err: Value = stale.json().await.unwrap();
    assert_eq!(err["error"]["code"], "ErrorIrresolvableConflict");
    assert!(err["error"]["innerError"]["request-id"].is_string());
    let ok = http
        .patch(g(&format!("/contacts/{pid}")))
        .header("If-Match", pavel["@odata.etag"].as_str().unwrap())
        .bearer_auth(&tok)
        .json(&json!({"jobTitle": "CEO"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let updated: Value = ok.json().await.unwrap();
    assert_eq!(updated["jobTitle"], "CEO");
    assert_ne!(updated["@odata.etag"], pavel["@odata.etag"]);
    let inc: Value = http.get(&delta_link).bearer_auth(&tok).send().await.unwrap().json().await.unwrap();
    assert_eq!(inc["value"].as_array().unwrap().len(), 1);
    assert_eq!(inc["value"][0]["jobTitle"], "CEO");

    // JSON batching (json-batching.md): per-item status, answered in any order.
    let b: Value = http
        .post(format!("{}/v1.0/$batch", fake.uri()))
        .bearer_auth(&tok)
        .json(&json!({"requests": [
            {"id": "1", "method": "GET", "url": format!("/users/megan@contoso.com/contacts/{pid}")},
            {"id": "2", "method": "DELETE", "url": "/users/megan@contoso.com/contacts/AAkALgAAAAAAnope"},
            {"id": "3", "method": "POST", "url": format!("/users/megan@contoso.com/contactFolders/{fid}/contacts"),
             "headers": {"Content-Type": "application/json"}, "body": {"givenName": "Isaiah", "surname": "Langer"}}
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let status =
        |id: &str| b["responses"].as_array().unwrap().iter().find(|r| r["id"] == id).unwrap()["status"].clone();
    assert_eq!((status("1"), status("2"), status("3")), (json!(200), json!(404), json!(201)));
    let dep: Value = http
        .post(format!("{}/v1.0/$batch", fake.uri()))
        .bearer_auth(&tok)
        .json(&json!({"requests": [
            {"id": "a", "method": "DELETE", "url": "/users/megan@contoso.com/contacts/AAkALgAAAAAAnope"},
            {"id": "b", "dependsOn": ["a"], "method": "GET", "url": format!("/users/megan@contoso.com/contacts/{pid}")}
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let b_status = dep["responses"].as_array().unwrap().iter().find(|r| r["id"] == "b").unwrap()["status"].clone();
    assert_eq!(b_status, json!(424), "a failed prerequisite fails its dependants");
    let too_many: Vec<Value> = (0..21)
        .map(|i| json!({"id": i.to_string(), "method": "GET", "url": "/users/megan@contoso.com/contacts"}))
        .collect();
    let r = http
        .post(format!("{}/v1.0/$batch", fake.uri()))
        .bearer_auth(&tok)
        .json(&json!({"requests": too_many}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "more than 20 requests are refused");

    // Throttling with a decimal Retry-After, then service as usual.
    fake.fail_next(1, Fault::TooManyRequests { retry_after_ms: 2128 });
    let r = http.get(g("/contacts")).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "2.128");
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "TooManyRequests");

    // Auth errors.
    let r = http.get(g("/contacts")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "InvalidAuthenticationToken");
    let r = http.get(format!("{}/v1.0/me/contacts", fake.uri())).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), 400, "/me needs a delegated token");
    // An expired delta token.
    fake.expire_cursors();
    let r = http.get(&delta_link).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), 410);
    let e: Value = r.json().await.unwrap();
    assert!(e["error"]["code"].as_str().unwrap().eq_ignore_ascii_case("syncStateNotFound"));
}

#[tokio::test]
async fn delegated_calendar_view_delta_with_a_series() {
    let fake = FakeGraph::start().await;
    let refresh = fake.add_refresh_token("nestor@contoso.com");
    let http = Client::new();
    let r: Value = http
        .post(format!("{}/{TENANT}/oauth2/v2.0/token", fake.uri()))
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", CLIENT_ID),
            ("refresh_token", refresh.as_str()),
            ("scope", "offline_access Calendars.ReadWrite"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = r["access_token"].as_str().unwrap().to_owned();
    let me = |p: &str| format!("{}/v1.0/me{p}", fake.uri());
    // A weekly series as event.md shows it, posted to /me/events.
    let r = http
        .post(me("/events"))
        .bearer_auth(&tok)
        .json(&json!({
            "subject": "Weekly 1:1",
            "start": {"dateTime": "2030-01-07T09:00:00", "timeZone": "UTC"},
            "end": {"dateTime": "2030-01-07T09:30:00", "timeZone": "UTC"},
            "recurrence": {
                "pattern": {"type": "weekly", "interval": 1, "daysOfWeek": ["monday"]},
                "range": {"type": "endDate", "startDate": "2030-01-07", "endDate": "2030-02-03"}
            }
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let master: Value = r.json().await.unwrap();
    assert_eq!(master["type"], "seriesMaster");
    let missing = http.get(me("/calendarView/delta")).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(missing.status(), 400, "calendarView needs a window");
    let page: Value = http
        .get(me("/calendarView/delta"))
        .query(&[("startDateTime", "2030-01-01T00:00:00Z"), ("endDateTime", "2030-01-22T00:00:00Z")])
        .header("Prefer", "outlook.timezone=\"UTC\", odata.maxpagesize=50")
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let v = page["value"].as_array().unwrap();
    assert_eq!(v.len(), 3, "Jan 7, 14 and 21 lie in the window");
    assert!(v.iter().all(|o| o["type"] == "occurrence" && o["seriesMasterId"] == master["id"]));
    assert!(page["@odata.deltaLink"].is_string());
    // Another user's mailbox is out of reach for a delegated token.
    fake.add_mailbox("other@contoso.com");
    let r =
        http.get(format!("{}/v1.0/users/other@contoso.com/events", fake.uri())).bearer_auth(&tok).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn the_fake_starts_on_a_given_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fake = FakeGraph::start_on(listener).await;
    assert_eq!(fake.uri(), format!("http://{addr}"));
    let http = Client::new();
    let tok = token(&http, &fake).await;
    fake.add_mailbox("z@contoso.com");
    let r = http
        .get(format!("{}/users/z@contoso.com/contactFolders", fake.graph_url()))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(fake.requests(), 2);
    assert_eq!(fake.count("token"), 1);
    assert_eq!(fake.count("contactFolders"), 1);
}

/// Events written as Microsoft's docs show them: `start` / `end` as `{dateTime, timeZone}` with
/// a Windows zone name and no offset. Read back as written (with `originalStartTimeZone`), or
/// in the zone `Prefer: outlook.timezone` asks for; an unknown zone is refused.
#[tokio::test]
async fn events_in_windows_time_zones() {
    let fake = FakeGraph::start().await;
    fake.add_mailbox("pat@contoso.com");
    let http = Client::new();
    let tok = token(&http, &fake).await;
    let g = |p: &str| format!("{}/v1.0/users/pat@contoso.com{p}", fake.uri());
    let r = http
        .post(g("/events"))
        .bearer_auth(&tok)
        .json(&json!({"subject": "Board",
            "start": {"dateTime": "2026-07-01T09:00:00", "timeZone": "Pacific Standard Time"},
            "end": {"dateTime": "2026-07-01T10:00:00", "timeZone": "Pacific Standard Time"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let made: Value = r.json().await.unwrap();
    assert_eq!(made["originalStartTimeZone"], "Pacific Standard Time");
    assert_eq!(made["start"]["timeZone"], "Pacific Standard Time");
    let id = made["id"].as_str().unwrap();
    let utc: Value = http
        .get(g(&format!("/events/{id}")))
        .bearer_auth(&tok)
        .header("Prefer", "outlook.timezone=\"UTC\"")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(utc["start"], json!({"dateTime": "2026-07-01T16:00:00.0000000", "timeZone": "UTC"}));
    let tokyo: Value = http
        .get(g(&format!("/events/{id}")))
        .bearer_auth(&tok)
        .header("Prefer", "outlook.timezone=\"Tokyo Standard Time\"")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tokyo["end"]["dateTime"], "2026-07-02T02:00:00.0000000");
    let r = http
        .post(g("/events"))
        .bearer_auth(&tok)
        .json(&json!({"subject": "x",
            "start": {"dateTime": "2026-03-01T10:00:00", "timeZone": "Mars Standard Time"},
            "end": {"dateTime": "2026-03-01T11:00:00", "timeZone": "Mars Standard Time"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "TimeZoneNotSupportedException");
}

/// `$orderby` on contact and event lists, a user by id or principal name, and the display
/// name Exchange generates for a contact created from its name parts.
#[tokio::test]
async fn orderby_users_and_generated_contact_names() {
    let fake = FakeGraph::start().await;
    fake.add_mailbox("adele@contoso.com");
    let http = Client::new();
    let tok = token(&http, &fake).await;
    let g = |p: &str| format!("{}/v1.0/users/adele@contoso.com{p}", fake.uri());
    let send = |rb: reqwest::RequestBuilder| {
        let rb = rb.bearer_auth(&tok);
        async move {
            let r = rb.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // A contact made of given name and surname is shown as "Given Surname"; fileAs stays empty.
    let (s, pavel) = send(http.post(g("/contacts")).json(&json!({"givenName": "Pavel", "surname": "Bansky"}))).await;
    assert_eq!(s, 201, "{pavel}");
    assert_eq!((pavel["displayName"].as_str(), pavel["fileAs"].as_str()), (Some("Pavel Bansky"), Some("")));
    let (_, named) =
        send(http.post(g("/contacts")).json(&json!({"givenName": "Ann", "surname": "Zed", "displayName": "Annie"})))
            .await;
    assert_eq!(named["displayName"], "Annie", "a given displayName is kept");
    let (_, _) = send(http.post(g("/contacts")).json(&json!({"givenName": "Cy", "surname": "Moss"}))).await;
    // Renaming without a displayName regenerates it; with one keeps it.
    let (_, v) =
        send(http.patch(g(&format!("/contacts/{}", pavel["id"].as_str().unwrap()))).json(&json!({"surname": "Novak"})))
            .await;
    assert_eq!(v["displayName"], "Pavel Novak");
    let (_, v) = send(
        http.patch(g(&format!("/contacts/{}", named["id"].as_str().unwrap())))
            .json(&json!({"surname": "Young", "displayName": "Annie"})),
    )
    .await;
    assert_eq!(v["displayName"], "Annie");

    let names = |v: &Value| -> Vec<String> {
        v["value"].as_array().unwrap().iter().map(|c| c["displayName"].as_str().unwrap().to_owned()).collect()
    };
    let (s, v) = send(http.get(g("/contacts")).query(&[("$orderby", "displayName")])).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(names(&v), ["Annie", "Cy Moss", "Pavel Novak"]);
    let (_, v) = send(http.get(g("/contacts")).query(&[("$orderby", "surname desc")])).await;
    assert_eq!(names(&v), ["Annie", "Pavel Novak", "Cy Moss"]);
    let (s, v) = send(http.get(g("/contacts")).query(&[("$orderby", "shoeSize")])).await;
    assert_eq!((s, v["error"]["code"].as_str()), (400, Some("BadRequest")), "{v}");

    for (subject, day) in [("Late", 9), ("Early", 2), ("Middle", 5)] {
        let t = |h: u32| format!("2030-01-{day:02}T{h:02}:00:00");
        let (s, v) = send(http.post(g("/events")).json(&json!({"subject": subject,
            "start": {"dateTime": t(10), "timeZone": "UTC"}, "end": {"dateTime": t(11), "timeZone": "UTC"}})))
        .await;
        assert_eq!(s, 201, "{v}");
    }
    let subjects = |v: &Value| -> Vec<String> {
        v["value"].as_array().unwrap().iter().map(|c| c["subject"].as_str().unwrap().to_owned()).collect()
    };
    let (_, v) = send(http.get(g("/events")).query(&[("$orderby", "start/dateTime")])).await;
    assert_eq!(subjects(&v), ["Early", "Middle", "Late"]);
    let (_, v) = send(http.get(g("/calendarView")).query(&[
        ("startDateTime", "2030-01-01T00:00:00Z"),
        ("endDateTime", "2030-02-01T00:00:00Z"),
        ("$orderby", "start/dateTime desc"),
    ]))
    .await;
    assert_eq!(subjects(&v), ["Late", "Middle", "Early"]);
    let (s, _) = send(http.get(g("/events")).query(&[("$orderby", "surname")])).await;
    assert_eq!(s, 400, "an event has no surname");

    // A user by principal name and by its id.
    let (s, by_upn) = send(http.get(g(""))).await;
    assert_eq!((s, by_upn["userPrincipalName"].as_str()), (200, Some("adele@contoso.com")));
    let id = by_upn["id"].as_str().unwrap();
    let (s, by_id) = send(http.get(format!("{}/v1.0/users/{id}", fake.uri()))).await;
    assert_eq!((s, by_id["mail"].as_str()), (200, Some("adele@contoso.com")));
    let (s, v) = send(http.get(format!("{}/v1.0/users/nobody@contoso.com", fake.uri()))).await;
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("ErrorInvalidUser")));
}
