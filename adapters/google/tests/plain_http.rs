//! The fakes driven with plain reqwest, as any Google client would: OAuth grants, paging,
//! batch limits, error envelopes, sync-token expiry, If-Match.

use chrono::{Duration, Utc};
use crmsync_core::Contact;
use crmsync_google::fake::{CLIENT_ID, FakeGoogle, SERVICE_ACCOUNT, SERVICE_ACCOUNT_TEST_KEY};
use reqwest::StatusCode;
use serde_json::{Value, json};

struct Http {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Http {
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut rb = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        if let Some(e) = if_match {
            rb = rb.header("If-Match", e);
        }
        let r = rb.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }
    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(reqwest::Method::POST, path, Some(body), None).await
    }
}

async fn token_form(fake: &FakeGoogle, form: &[(&str, &str)]) -> (StatusCode, Value) {
    let r = reqwest::Client::new().post(format!("{}/token", fake.uri())).form(form).send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

async fn login(fake: &FakeGoogle, user: &str) -> Http {
    let rt = fake.add_refresh_token(user);
    let (s, v) =
        token_form(fake, &[("grant_type", "refresh_token"), ("refresh_token", &rt), ("client_id", CLIENT_ID)]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["token_type"], "Bearer");
    Http { http: reqwest::Client::new(), base: fake.uri(), token: v["access_token"].as_str().unwrap().to_owned() }
}

#[tokio::test]
async fn oauth_grants_and_401s() {
    let fake = FakeGoogle::start().await;
    fake.add_user("a@example.com");
    // jwt-bearer: the assertion's sub selects the user.
    let now = Utc::now().timestamp();
    let claims = json!({"iss": SERVICE_ACCOUNT, "sub": "a@example.com", "scope": "x", "aud": "t", "iat": now, "exp": now + 3600});
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(SERVICE_ACCOUNT_TEST_KEY.as_bytes()).unwrap();
    let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &claims, &key).unwrap();
    let (s, v) =
        token_form(&fake, &[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", &jwt)]).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["expires_in"], 3599);
    let unknown = json!({"iss": SERVICE_ACCOUNT, "sub": "nobody@example.com", "iat": now, "exp": now + 3600});
    let jwt = jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256), &unknown, &key).unwrap();
    let (s, v) =
        token_form(&fake, &[("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", &jwt)]).await;
    assert_eq!((s, v["error"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_grant")));
    let (s, v) =
        token_form(&fake, &[("grant_type", "refresh_token"), ("refresh_token", "nope"), ("client_id", CLIENT_ID)])
            .await;
    assert_eq!(
        (s, v["error_description"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Token has been expired or revoked."))
    );
    // API calls: no token / expired token → 401 in each API's envelope.
    let h = login(&fake, "a@example.com").await;
    let (s, _) = h.get("/v1/contactGroups").await;
    assert_eq!(s, StatusCode::OK);
    fake.expire_tokens();
    let (s, v) = h.get("/v1/contactGroups").await;
    assert_eq!((s, v["error"]["status"].as_str()), (StatusCode::UNAUTHORIZED, Some("UNAUTHENTICATED")));
    let (s, v) = h.get("/calendar/v3/calendars/primary/events").await;
    assert_eq!((s, v["error"]["errors"][0]["reason"].as_str()), (StatusCode::UNAUTHORIZED, Some("authError")));
    assert_eq!(fake.count("oauth.token"), 4);
}

#[tokio::test]
async fn people_limits_paging_groups_and_sync_tokens() {
    let fake = FakeGoogle::start().await;
    let u = "p@example.com";
    fake.add_user(u);
    let h = login(&fake, u).await;
    // Groups: create, duplicate → 409, get with maxMembers.
    let (s, g) = h.post("/v1/contactGroups", json!({"contactGroup": {"name": "Salesforce Sync"}})).await;
    assert_eq!(s, StatusCode::OK);
    let gid = g["resourceName"].as_str().unwrap().to_owned();
    let (s, v) = h.post("/v1/contactGroups", json!({"contactGroup": {"name": "Salesforce Sync"}})).await;
    assert_eq!((s, v["error"]["status"].as_str()), (StatusCode::CONFLICT, Some("ALREADY_EXISTS")));
    // Batch create limit: 201 → 400, 200 → ok.
    let person = |i: usize| {
        json!({"contactPerson": {"names": [{"givenName": format!("P{i}")}],
        "memberships": [{"contactGroupMembership": {"contactGroupResourceName": gid}}]}})
    };
    let (s, v) = h
        .post(
            "/v1/people:batchCreateContacts",
            json!({"contacts": (0..201).map(person).collect::<Vec<_>>(), "readMask": "names"}),
        )
        .await;
    assert_eq!((s, v["error"]["status"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")));
    let (s, v) = h
        .post(
            "/v1/people:batchCreateContacts",
            json!({"contacts": (0..200).map(person).collect::<Vec<_>>(), "readMask": "names"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["createdPeople"].as_array().unwrap().len(), 200);
    let names: Vec<String> = v["createdPeople"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["person"]["resourceName"].as_str().unwrap().to_owned())
        .collect();
    // Two names on a contact → 400 (singleton).
    let (s, _) = h
        .post(
            "/v1/people:batchCreateContacts",
            json!({"contacts": [{"contactPerson": {"names": [{"givenName": "a"}, {"givenName": "b"}]}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, g) = h.get(&format!("/v1/{gid}")).await;
    assert_eq!((s, g["memberCount"].as_u64(), g.get("memberResourceNames")), (StatusCode::OK, Some(200), None));
    let (_, g) = h.get(&format!("/v1/{gid}?maxMembers=5")).await;
    assert_eq!(g["memberResourceNames"].as_array().unwrap().len(), 5);
    // batchGet limit and personFields requirement.
    let q: String = (0..201).map(|i| format!("&resourceNames=people/c{i}")).collect();
    let (s, _) = h.get(&format!("/v1/people:batchGet?personFields=names{q}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h.get("/v1/people/me/connections").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "personFields is required");
    // Paging: 200 at 80 a page; the sync token only on the last page.
    let mut page = String::new();
    let mut seen = 0;
    let mut pages = 0;
    let sync = loop {
        let (s, v) = h
            .get(&format!(
                "/v1/people/me/connections?personFields=names,memberships&pageSize=80&requestSyncToken=true{page}"
            ))
            .await;
        assert_eq!(s, StatusCode::OK);
        pages += 1;
        seen += v["connections"].as_array().unwrap().len();
        match v["nextPageToken"].as_str() {
            Some(t) => {
                assert!(v.get("nextSyncToken").is_none());
                page = format!("&pageToken={t}");
            }
            None => break v["nextSyncToken"].as_str().unwrap().to_owned(),
        }
    };
    assert_eq!((seen, pages), (200, 3));
    // Etag mismatch → 400 FAILED_PRECONDITION; missing etag too.
    let (s, v) = h
        .post(
            "/v1/people:batchUpdateContacts",
            json!({"contacts": {&names[0]: {"etag": "%stale", "names": [{"givenName": "X"}]}}, "updateMask": "names"}),
        )
        .await;
    assert_eq!((s, v["error"]["status"].as_str()), (StatusCode::BAD_REQUEST, Some("FAILED_PRECONDITION")));
    // Leave the group via members:modify → incremental shows the person without the membership.
    let (s, _) = h.post(&format!("/v1/{gid}/members:modify"), json!({"resourceNamesToRemove": [&names[1]]})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.post("/v1/people:batchDeleteContacts", json!({"resourceNames": [&names[2]]})).await;
    assert_eq!((s, v), (StatusCode::OK, json!({})));
    let (_, inc) = h.get(&format!("/v1/people/me/connections?personFields=names,memberships&syncToken={sync}")).await;
    let conns = inc["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2);
    let left = conns.iter().find(|p| p["resourceName"] == names[1].as_str()).unwrap();
    assert!(
        left["memberships"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["contactGroupMembership"]["contactGroupResourceName"] != gid.as_str())
    );
    let gone = conns.iter().find(|p| p["resourceName"] == names[2].as_str()).unwrap();
    assert_eq!(gone["metadata"]["deleted"], true);
    // Delete limit 500.
    let many: Vec<String> = (0..501).map(|i| format!("people/c{i}")).collect();
    let (s, _) = h.post("/v1/people:batchDeleteContacts", json!({ "resourceNames": many })).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Expired sync token: 400 FAILED_PRECONDITION with reason EXPIRED_SYNC_TOKEN (not 410).
    fake.expire_cursors();
    let (s, v) = h.get(&format!("/v1/people/me/connections?personFields=names&syncToken={sync}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["status"], "FAILED_PRECONDITION");
    assert_eq!(v["error"]["details"][0]["reason"], "EXPIRED_SYNC_TOKEN");
    assert_eq!(v["error"]["details"][0]["@type"], "type.googleapis.com/google.rpc.ErrorInfo");
    // Seeded contact helpers agree with the API.
    fake.insert_contact(u, true, &Contact { given_name: Some("Seed".into()), ..Default::default() });
    assert_eq!(fake.group_members(u, "Salesforce Sync").len(), 199, "200 - left - deleted + seeded");
}

#[tokio::test]
async fn calendar_paging_sync_410_if_match_and_restrictions() {
    let fake = FakeGoogle::start().await;
    let u = "c@example.com";
    fake.add_user(u);
    let h = login(&fake, u).await;
    let start = Utc::now() + Duration::days(1);
    let ev = |i: i64, id: &str| {
        json!({"id": id, "summary": format!("E{i}"), "start": {"dateTime": (start + Duration::hours(i)).to_rfc3339()},
            "end": {"dateTime": (start + Duration::hours(i) + Duration::minutes(30)).to_rfc3339()}})
    };
    for i in 0..5 {
        let (s, v) = h.post("/calendar/v3/calendars/primary/events", ev(i, &format!("evt{i:05}"))).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["iCalUID"], format!("evt{i:05}@google.com"));
    }
    let (s, v) = h.post("/calendar/v3/calendars/primary/events", ev(9, "evt00000")).await;
    assert_eq!((s, v["error"]["errors"][0]["reason"].as_str()), (StatusCode::CONFLICT, Some("duplicate")));
    let (s, _) = h.post("/calendar/v3/calendars/primary/events", ev(9, "Bad-Id")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // timeMax <= timeMin.
    let t = start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, v) = h.get(&format!("/calendar/v3/calendars/primary/events?timeMin={t}&timeMax={t}")).await;
    assert_eq!((s, v["error"]["errors"][0]["reason"].as_str()), (StatusCode::BAD_REQUEST, Some("timeRangeEmpty")));
    // Paging, 2 a page.
    let mut page = String::new();
    let mut n = 0;
    let sync = loop {
        let (_, v) = h.get(&format!("/calendar/v3/calendars/primary/events?maxResults=2{page}")).await;
        n += v["items"].as_array().unwrap().len();
        match v["nextPageToken"].as_str() {
            Some(t) => page = format!("&pageToken={t}"),
            None => break v["nextSyncToken"].as_str().unwrap().to_owned(),
        }
    };
    assert_eq!(n, 5);
    // syncToken with timeMin is refused.
    let (s, _) = h.get(&format!("/calendar/v3/calendars/primary/events?syncToken={sync}&timeMin={t}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // If-Match: stale → 412 conditionNotMet; current → 200 with a new etag.
    let (_, e) = h.get("/calendar/v3/calendars/primary/events/evt00001").await;
    let etag = e["etag"].as_str().unwrap().to_owned();
    let (s, v) = h
        .send(
            reqwest::Method::PATCH,
            "/calendar/v3/calendars/primary/events/evt00001",
            Some(json!({"location": "A"})),
            Some("\"1\""),
        )
        .await;
    assert_eq!(
        (s, v["error"]["errors"][0]["reason"].as_str()),
        (StatusCode::PRECONDITION_FAILED, Some("conditionNotMet"))
    );
    let (s, v) = h
        .send(
            reqwest::Method::PATCH,
            "/calendar/v3/calendars/primary/events/evt00001",
            Some(json!({"location": "A"})),
            Some(&etag),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(v["etag"].as_str().unwrap(), etag);
    assert_eq!(v["summary"], "E1", "PATCH keeps other fields");
    // Extended properties: over-long keys dropped, over-long values truncated.
    let long_key = "k".repeat(45);
    let (_, v) = h
        .send(
            reqwest::Method::PATCH,
            "/calendar/v3/calendars/primary/events/evt00002",
            Some(json!({"extendedProperties": {"private": {long_key.clone(): "x", "v": "y".repeat(2000)}}})),
            None,
        )
        .await;
    assert!(v["extendedProperties"]["private"].get(&long_key).is_none());
    assert_eq!(v["extendedProperties"]["private"]["v"].as_str().unwrap().len(), 1024);
    // Delete, then incremental: cancelled with the id; deleting again → 410 deleted.
    let (s, _) = h.send(reqwest::Method::DELETE, "/calendar/v3/calendars/primary/events/evt00003", None, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.send(reqwest::Method::DELETE, "/calendar/v3/calendars/primary/events/evt00003", None, None).await;
    assert_eq!((s, v["error"]["errors"][0]["reason"].as_str()), (StatusCode::GONE, Some("deleted")));
    let (_, inc) = h.get(&format!("/calendar/v3/calendars/primary/events?syncToken={sync}")).await;
    let items = inc["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{items:?}");
    assert!(items.iter().any(|e| e["id"] == "evt00003" && e["status"] == "cancelled"));
    // Expired token → 410 fullSyncRequired.
    fake.expire_cursors();
    let (s, v) = h.get(&format!("/calendar/v3/calendars/primary/events?syncToken={sync}")).await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(v["error"]["errors"][0]["reason"], "fullSyncRequired");
    assert_eq!(v["error"]["code"], 410);
}

#[tokio::test]
async fn start_on_a_given_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = FakeGoogle::start_on(listener).await;
    assert_eq!(fake.uri(), format!("http://127.0.0.1:{port}"));
    fake.add_user("s@example.com");
    let h = login(&fake, "s@example.com").await;
    let (s, v) = h.get("/v1/contactGroups").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["totalItems"], 2, "myContacts and starred");
    assert_eq!(fake.count("people.contactGroups.list"), 1);
    assert_eq!(fake.requests(), 2);
}

/// The single-contact endpoints ordinary People clients call (create, get, update with the
/// etag, delete), beside the batch ones the adapter uses.
#[tokio::test]
async fn people_single_contact_endpoints() {
    let fake = FakeGoogle::start().await;
    fake.add_user("solo@example.com");
    let h = login(&fake, "solo@example.com").await;
    let (s, p) = h
        .post(
            "/v1/people:createContact?personFields=names,emailAddresses",
            json!({"names": [{"givenName": "Sol", "familyName": "Oist"}], "emailAddresses": [{"value": "sol@x.example"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let rn = p["resourceName"].as_str().unwrap().to_owned();
    let etag = p["etag"].as_str().unwrap().to_owned();
    assert_eq!(p["names"][0]["familyName"], "Oist");
    let (s, got) = h.get(&format!("/v1/{rn}?personFields=emailAddresses")).await;
    assert_eq!((s, got["emailAddresses"][0]["value"].clone()), (StatusCode::OK, json!("sol@x.example")));
    let patch = |etag: &str| json!({"etag": etag, "names": [{"givenName": "Sol", "familyName": "Renamed"}]});
    let path = format!("/v1/{rn}:updateContact?updatePersonFields=names&personFields=names");
    let (s, up) = h.send(reqwest::Method::PATCH, &path, Some(patch(&etag)), None).await;
    assert_eq!(s, StatusCode::OK, "{up}");
    assert_eq!(up["names"][0]["familyName"], "Renamed");
    assert_ne!(up["etag"], json!(etag), "a write changes the etag");
    let (s, stale) = h.send(reqwest::Method::PATCH, &path, Some(patch(&etag)), None).await;
    assert_eq!((s, stale["error"]["status"].clone()), (StatusCode::BAD_REQUEST, json!("FAILED_PRECONDITION")));
    let (s, _) = h.send(reqwest::Method::DELETE, &format!("/v1/{rn}:deleteContact"), None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h.get(&format!("/v1/{rn}?personFields=names")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(fake.count_contacts_with_email("solo@example.com", "sol@x.example"), 0);
}

/// Recurring events as the Calendar API documents them: `recurrence` with RRULE (BYDAY with an
/// ordinal, UNTIL), EXDATE and RDATE, expanded in the series' `timeZone`; instances carry
/// `recurringEventId` and `originalStartTime`; changing or deleting one instance makes an
/// exception that keeps its id; `events.instances` lists them all.
#[tokio::test]
async fn recurring_events_instances_and_exceptions() {
    let fake = FakeGoogle::start().await;
    let user = "rae@example.com";
    fake.add_user(user);
    let api = login(&fake, user).await;
    let next_year = Utc::now().date_naive().format("%Y").to_string().parse::<i32>().unwrap() + 1;
    let ev = "/calendar/v3/calendars/primary/events";
    // The first Monday of every month in New York, 09:00, from January to June; the February
    // one left out, an extra on a date of its own.
    let (s, master) = api
        .post(
            ev,
            json!({"summary": "Monthly", "start": {"dateTime": format!("{next_year}-01-05T09:00:00"), "timeZone": "America/New_York"},
                "end": {"dateTime": format!("{next_year}-01-05T10:00:00"), "timeZone": "America/New_York"},
                "recurrence": [format!("RRULE:FREQ=MONTHLY;BYDAY=1MO;UNTIL={next_year}0630T235959Z"),
                    format!("EXDATE;TZID=America/New_York:{next_year}0202T090000"),
                    format!("RDATE;TZID=America/New_York:{next_year}0320T090000")]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{master}");
    let id = master["id"].as_str().unwrap().to_owned();
    let (s, list) = api.get(&format!("{ev}/{id}/instances")).await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let items = list["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 6, "Jan, Mar, Mar 20, Apr, May, Jun: {list}");
    let ny = chrono_tz::America::New_York;
    for i in &items {
        assert_eq!(i["recurringEventId"], json!(id));
        assert_eq!(i["originalStartTime"], i["start"]);
        let t = chrono::DateTime::parse_from_rfc3339(i["start"]["dateTime"].as_str().unwrap()).unwrap();
        assert_eq!(t.with_timezone(&ny).format("%H:%M").to_string(), "09:00", "local time kept across DST");
    }
    // Move the April instance; cancel the May one.
    let april = items.iter().find(|i| i["start"]["dateTime"].as_str().unwrap().contains("-04-")).unwrap();
    let aid = april["id"].as_str().unwrap();
    let (s, moved) = api
        .send(
            reqwest::Method::PATCH,
            &format!("{ev}/{aid}"),
            Some(json!({"summary": "Monthly (moved)", "start": {"dateTime": format!("{next_year}-04-07T15:00:00Z")},
                "end": {"dateTime": format!("{next_year}-04-07T16:00:00Z")}})),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{moved}");
    assert_eq!((moved["id"].as_str(), &moved["originalStartTime"]), (Some(aid), &april["originalStartTime"]));
    let may = items.iter().find(|i| i["start"]["dateTime"].as_str().unwrap().contains("-05-")).unwrap();
    let (s, _) = api.send(reqwest::Method::DELETE, &format!("{ev}/{}", may["id"].as_str().unwrap()), None, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, list) = api.get(&format!("{ev}/{id}/instances")).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 5, "the cancelled one is gone: {list}");
    assert!(items.iter().any(|i| i["id"] == aid && i["summary"] == "Monthly (moved)"));
    let (_, list) = api.get(&format!("{ev}/{id}/instances?showDeleted=true")).await;
    assert!(list["items"].as_array().unwrap().iter().any(|i| i["status"] == "cancelled" && i["id"] == may["id"]));
}

/// Calendar beyond events CRUD: `events.update` (PUT replaces), the calendar list, the primary
/// calendar, and `q` / `updatedMin` with their sync-token restriction.
#[tokio::test]
async fn calendar_update_calendar_list_and_list_filters() {
    let fake = FakeGoogle::start().await;
    fake.add_user("cal@example.com");
    let h = login(&fake, "cal@example.com").await;
    let at = |d: i64| (Utc::now() + Duration::days(d)).format("%Y-%m-%dT10:00:00Z").to_string();
    let ev = |summary: &str, d: i64| {
        json!({"summary": summary, "location": "Room 4", "description": "agenda",
        "start": {"dateTime": at(d)}, "end": {"dateTime": at(d + 1)},
        "attendees": [{"email": "bo@example.com", "displayName": "Bo Li"}]})
    };
    let events = "/calendar/v3/calendars/primary/events";
    let (_, a) = h.post(events, ev("Quarterly review", 1)).await;
    let (_, b) = h.post(events, ev("Planning", 2)).await;
    let id = a["id"].as_str().unwrap();

    // PUT replaces the whole event: what the body leaves out is gone; start/end are required.
    let (s, v) = h
        .send(
            reqwest::Method::PUT,
            &format!("{events}/{id}"),
            Some(json!({"summary": "Replaced",
            "start": {"dateTime": at(3)}, "end": {"dateTime": at(4)}})),
            Some(a["etag"].as_str().unwrap()),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["summary"], "Replaced");
    assert!(v.get("location").is_none() && v.get("attendees").is_none(), "PUT keeps no old fields: {v}");
    assert_ne!(v["etag"], a["etag"]);
    let (s, _) = h
        .send(
            reqwest::Method::PUT,
            &format!("{events}/{id}"),
            Some(json!({"summary": "x",
            "start": {"dateTime": at(3)}, "end": {"dateTime": at(4)}})),
            Some(a["etag"].as_str().unwrap()),
        )
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    let (s, v) = h.send(reqwest::Method::PUT, &format!("{events}/{id}"), Some(json!({"summary": "x"})), None).await;
    assert_eq!((s, v["error"]["errors"][0]["reason"].as_str()), (StatusCode::BAD_REQUEST, Some("required")));
    let (s, _) = h.send(reqwest::Method::PUT, &format!("{events}/nosuchevent"), Some(ev("x", 1)), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // The calendar list and the primary calendar.
    let (s, v) = h.get("/calendar/v3/users/me/calendarList").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["kind"], "calendar#calendarList");
    assert_eq!(
        (v["items"][0]["id"].as_str(), v["items"][0]["primary"].as_bool()),
        (Some("cal@example.com"), Some(true))
    );
    assert_eq!(v["items"][0]["accessRole"], "owner");
    let sync = v["nextSyncToken"].as_str().unwrap();
    let (_, v) = h.get(&format!("/calendar/v3/users/me/calendarList?syncToken={sync}")).await;
    assert_eq!(v["items"], json!([]));
    let (s, v) = h.get("/calendar/v3/calendars/primary").await;
    assert_eq!(
        (s, v["kind"].as_str(), v["id"].as_str()),
        (StatusCode::OK, Some("calendar#calendar"), Some("cal@example.com"))
    );
    let (s, _) = h.get("/calendar/v3/calendars/other@example.com").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = h.get("/calendar/v3/users/me/calendarList/primary").await;
    assert_eq!(v["id"], "cal@example.com");

    // q: free text over summary, description, location, attendees and organizer.
    let summaries = |v: &Value| -> Vec<String> {
        v["items"].as_array().unwrap().iter().map(|e| e["summary"].as_str().unwrap_or("").to_owned()).collect()
    };
    let (_, v) = h.get(&format!("{events}?q=planning")).await;
    assert_eq!(summaries(&v), ["Planning"]);
    let (_, v) = h.get(&format!("{events}?q=bo%40example.com")).await;
    assert_eq!(summaries(&v), ["Planning"], "the replaced event lost its attendee");
    let (_, v) = h.get(&format!("{events}?q=nothing+here")).await;
    assert_eq!(summaries(&v), Vec::<String>::new());

    // updatedMin: what changed since, deletions included whatever showDeleted says.
    let (_, all) = h.get(events).await;
    let sync = all["nextSyncToken"].as_str().unwrap().to_owned();
    let since = (Utc::now() - Duration::seconds(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, _) = h.send(reqwest::Method::DELETE, &format!("{events}/{}", b["id"].as_str().unwrap()), None, None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = h.get(&format!("{events}?updatedMin={}", since.replace('+', "%2B"))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let statuses: Vec<&str> = v["items"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
    assert!(statuses.contains(&"cancelled"), "updatedMin lists the deletion: {v}");
    let (_, v) = h.get(&format!("{events}?updatedMin=2030-01-01T00:00:00Z")).await;
    assert_eq!(v["items"], json!([]));
    let old = (Utc::now() - Duration::days(60)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, v) = h.get(&format!("{events}?updatedMin={}", old.replace('+', "%2B"))).await;
    assert_eq!((s, v["error"]["errors"][0]["reason"].as_str()), (StatusCode::GONE, Some("updatedMinTooLongAgo")));
    for extra in ["q=planning", "updatedMin=2030-01-01T00:00:00Z"] {
        let (s, v) = h.get(&format!("{events}?syncToken={sync}&{extra}")).await;
        assert_eq!(
            (s, v["error"]["errors"][0]["reason"].as_str()),
            (StatusCode::BAD_REQUEST, Some("syncTokenWithRequestRestrictions")),
            "{extra}"
        );
    }
}

/// People beyond the contact list: the user's own profile, search with its warm-up, and the
/// sort orders of connections.list.
#[tokio::test]
async fn people_me_search_contacts_and_sort_order() {
    let fake = FakeGoogle::start().await;
    fake.add_user("p@example.com");
    let h = login(&fake, "p@example.com").await;
    for (g, f, e) in
        [("Zoe", "Adams", "zoe@example.com"), ("Al", "Young", "al@example.org"), ("Mia", "Ng", "mia@example.com")]
    {
        fake.insert_contact_json(
            "p@example.com",
            &[],
            json!({"names": [{"givenName": g, "familyName": f}],
            "emailAddresses": [{"value": e}]}),
        );
    }

    let (s, v) = h.get("/v1/people/me?personFields=names,emailAddresses,metadata").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["resourceName"].as_str().unwrap().starts_with("people/1"), "{v}");
    assert_eq!(v["emailAddresses"][0]["value"], "p@example.com");
    assert_eq!(v["metadata"]["sources"][0]["type"], "PROFILE");
    let (s, _) = h.get("/v1/people/me").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Search answers from a cache the empty-query warm-up fills.
    let (s, v) = h.get("/v1/people:searchContacts?query=zoe&readMask=names").await;
    assert_eq!((s, &v), (StatusCode::OK, &json!({})), "no results before the warm-up");
    let (s, v) = h.get("/v1/people:searchContacts?query=&readMask=names").await;
    assert_eq!((s, &v), (StatusCode::OK, &json!({})));
    let (_, v) = h.get("/v1/people:searchContacts?query=zoe%20ad&readMask=names,emailAddresses").await;
    assert_eq!(v["results"].as_array().map(Vec::len), Some(1), "{v}");
    assert_eq!(v["results"][0]["person"]["emailAddresses"][0]["value"], "zoe@example.com");
    let (_, v) = h.get("/v1/people:searchContacts?query=example.com&readMask=names").await;
    assert_eq!(v["results"].as_array().map(Vec::len), Some(2), "{v}");
    let (_, v) = h.get("/v1/people:searchContacts?query=oe&readMask=names").await;
    assert_eq!(v, json!({}), "prefix phrases only");
    fake.insert_contact_json("p@example.com", &[], json!({"names": [{"givenName": "Zed", "familyName": "Late"}]}));
    let (_, v) = h.get("/v1/people:searchContacts?query=zed&readMask=names").await;
    assert_eq!(v, json!({}), "a contact added after the warm-up is not found yet");
    let (s, v) = h.get("/v1/people:searchContacts?query=zoe").await;
    assert_eq!((s, v["error"]["status"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")));

    let order = |sort: &str| {
        let path = format!("/v1/people/me/connections?personFields=names&sortOrder={sort}");
        let h = &h;
        async move {
            let (s, v) = h.get(&path).await;
            assert_eq!(s, StatusCode::OK, "{v}");
            v["connections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["names"][0]["givenName"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(order("FIRST_NAME_ASCENDING").await, ["Al", "Mia", "Zed", "Zoe"]);
    assert_eq!(order("LAST_NAME_ASCENDING").await, ["Zoe", "Zed", "Mia", "Al"]);
    assert_eq!(order("LAST_MODIFIED_ASCENDING").await, ["Zoe", "Al", "Mia", "Zed"]);
    assert_eq!(order("LAST_MODIFIED_DESCENDING").await, ["Zed", "Mia", "Al", "Zoe"]);
    let (s, v) = h.get("/v1/people/me/connections?personFields=names&sortOrder=BY_MOOD").await;
    assert_eq!((s, v["error"]["status"].as_str()), (StatusCode::BAD_REQUEST, Some("INVALID_ARGUMENT")));
}
