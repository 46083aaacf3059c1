//! The fakes' responses checked against Google's discovery documents (`tests/data/*.json`,
//! copied from google-api-python-client's static discovery cache): every field the fake sends
//! must exist in the schema with the right JSON type (int64 as a string, enums in range).

use chrono::{Duration, Utc};
use crmsync_core::{Contact, Event};
use crmsync_google::fake::FakeGoogle;
use serde_json::{Value, json};

fn doc(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("discovery doc")).expect("json")
}

/// Walk `v` against a discovery schema; push every mismatch into `errs`.
fn walk(doc: &Value, schema: &Value, v: &Value, path: &str, errs: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        let target = &doc["schemas"][r];
        assert!(target.is_object(), "unknown $ref {r}");
        return walk(doc, target, v, path, errs);
    }
    let ty = schema["type"].as_str().unwrap_or("any");
    let fmt = schema["format"].as_str().unwrap_or("");
    match ty {
        "object" => {
            let Some(o) = v.as_object() else { return errs.push(format!("{path}: expected object, got {v}")) };
            for (k, val) in o {
                let p = format!("{path}.{k}");
                if let Some(prop) = schema["properties"].get(k) {
                    walk(doc, prop, val, &p, errs);
                } else if let Some(ap) = schema.get("additionalProperties") {
                    walk(doc, ap, val, &p, errs);
                } else {
                    errs.push(format!("{p}: not in schema {}", schema["id"].as_str().unwrap_or("?")));
                }
            }
        }
        "array" => {
            let Some(a) = v.as_array() else { return errs.push(format!("{path}: expected array, got {v}")) };
            for (i, item) in a.iter().enumerate() {
                walk(doc, &schema["items"], item, &format!("{path}[{i}]"), errs);
            }
        }
        "string" => match v.as_str() {
            None => errs.push(format!("{path}: expected string, got {v}")),
            Some(s) => {
                if let Some(en) = schema["enum"].as_array() {
                    if !en.iter().any(|e| e == s) {
                        errs.push(format!("{path}: {s:?} not in enum"));
                    }
                }
                if fmt == "date-time" && chrono::DateTime::parse_from_rfc3339(s).is_err() {
                    errs.push(format!("{path}: {s:?} is not RFC 3339"));
                }
                if fmt == "date" && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_err() {
                    errs.push(format!("{path}: {s:?} is not a date"));
                }
            }
        },
        "integer" | "number" | "boolean" => {
            let ok = match ty {
                "integer" if matches!(fmt, "int64" | "uint64") => v.is_string() || v.is_i64() || v.is_u64(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                _ => v.is_boolean(),
            };
            if !ok {
                errs.push(format!("{path}: expected {ty} ({fmt}), got {v}"));
            }
        }
        _ => {}
    }
}

fn check(doc: &Value, schema: &str, v: &Value, seen: &mut Vec<String>) {
    let mut errs = vec![];
    walk(doc, &json!({ "$ref": schema }), v, schema, &mut errs);
    assert!(errs.is_empty(), "{schema} response does not match the discovery document:\n{}\n{v:#}", errs.join("\n"));
    seen.push(schema.to_owned());
}

#[test]
fn the_walker_catches_mismatches() {
    let d = doc("people.v1.json");
    let mut errs = vec![];
    walk(
        &d,
        &json!({"$ref": "Person"}),
        &json!({"resourceName": 1, "nmaes": [], "emailAddresses": [{"value": "a"}]}),
        "p",
        &mut errs,
    );
    assert_eq!(errs.len(), 2, "{errs:?}");
    let mut errs = vec![];
    walk(&d, &json!({"$ref": "ContactGroup"}), &json!({"groupType": "FAVOURITES", "memberCount": "3"}), "g", &mut errs);
    assert_eq!(errs.len(), 2, "{errs:?}");
}

struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    async fn new(fake: &FakeGoogle, user: &str) -> Self {
        let http = reqwest::Client::new();
        let rt = fake.add_refresh_token(user);
        let tok: Value = http
            .post(format!("{}/token", fake.uri()))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", &rt),
                ("client_id", crmsync_google::fake::CLIENT_ID),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self { http, base: fake.uri(), token: tok["access_token"].as_str().unwrap().to_owned() }
    }
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut rb = self.http.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        assert!(r.status().is_success(), "{path}: HTTP {}", r.status());
        r.json().await.unwrap()
    }
    async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

const ALL_PERSON_FIELDS: &str =
    "addresses,biographies,clientData,emailAddresses,memberships,metadata,names,organizations,phoneNumbers";

#[tokio::test]
async fn people_responses_match_the_discovery_document() {
    let d = doc("people.v1.json");
    let fake = FakeGoogle::start().await;
    let u = "schema@example.com";
    fake.add_user(u);
    let full = Contact {
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        emails: vec!["ada@example.com".into(), "ada@home.example".into()],
        phone: Some("+44 20 7946 0000".into()),
        mobile: Some("+44 7700 900000".into()),
        company: Some("Analytical Engines".into()),
        title: Some("CTO".into()),
        department: Some("R&D".into()),
        address: crmsync_core::PostalAddress {
            street: Some("1 Main St".into()),
            city: Some("London".into()),
            ..Default::default()
        },
        notes: Some("notes".into()),
        categories: vec![],
    };
    let a = fake.insert_contact(u, true, &full);
    let b = fake.insert_contact(u, false, &Contact { given_name: Some("Bob".into()), ..Default::default() });
    let c = Client::new(&fake, u).await;
    let mut seen = vec![];

    let groups = c.get("/v1/contactGroups?pageSize=1").await;
    check(&d, "ListContactGroupsResponse", &groups, &mut seen);
    let groups = c.get("/v1/contactGroups?groupFields=name,groupType,memberCount,metadata,clientData").await;
    check(&d, "ListContactGroupsResponse", &groups, &mut seen);
    let gid = groups["contactGroups"].as_array().unwrap().iter().find(|g| g["name"] == "Salesforce Sync").unwrap()["resourceName"]
        .as_str()
        .unwrap()
        .to_owned();
    let g = c.get(&format!("/v1/{gid}?maxMembers=10")).await;
    assert_eq!(g["memberResourceNames"], json!([a]));
    check(&d, "ContactGroup", &g, &mut seen);
    let created = c.post("/v1/contactGroups", json!({"contactGroup": {"name": "Other"}})).await;
    check(&d, "ContactGroup", &created, &mut seen);
    let modified = c
        .post(
            &format!("/v1/{gid}/members:modify"),
            json!({"resourceNamesToAdd": [b, "people/c404"], "resourceNamesToRemove": []}),
        )
        .await;
    check(&d, "ModifyContactGroupMembersResponse", &modified, &mut seen);

    let conns =
        c.get(&format!("/v1/people/me/connections?personFields={ALL_PERSON_FIELDS}&requestSyncToken=true")).await;
    check(&d, "ListConnectionsResponse", &conns, &mut seen);
    let sync = conns["nextSyncToken"].as_str().unwrap().to_owned();
    let made = c
        .post(
            "/v1/people:batchCreateContacts",
            json!({"contacts": [{"contactPerson": {"names": [{"givenName": "New"}], "clientData": [{"key": "k", "value": "v"}],
                "memberships": [{"contactGroupMembership": {"contactGroupResourceName": gid}}]}}], "readMask": ALL_PERSON_FIELDS}),
        )
        .await;
    check(&d, "BatchCreateContactsResponse", &made, &mut seen);
    let person = &made["createdPeople"][0]["person"];
    let rn = person["resourceName"].as_str().unwrap();
    let updated = c
        .post(
            "/v1/people:batchUpdateContacts",
            json!({"contacts": {rn: {"etag": person["etag"], "names": [{"givenName": "Renamed"}]}}, "updateMask": "names",
                "readMask": ALL_PERSON_FIELDS}),
        )
        .await;
    check(&d, "BatchUpdateContactsResponse", &updated, &mut seen);
    let got = c
        .get(&format!(
            "/v1/people:batchGet?personFields={ALL_PERSON_FIELDS}&resourceNames={a}&resourceNames=people/c404"
        ))
        .await;
    check(&d, "GetPeopleResponse", &got, &mut seen);
    let one = c.get(&format!("/v1/{a}?personFields={ALL_PERSON_FIELDS}")).await;
    check(&d, "Person", &one, &mut seen);
    fake.delete_contact(u, &a);
    let inc = c.get(&format!("/v1/people/me/connections?personFields={ALL_PERSON_FIELDS}&syncToken={sync}")).await;
    assert!(inc["connections"].as_array().unwrap().iter().any(|p| p["metadata"]["deleted"] == true));
    check(&d, "ListConnectionsResponse", &inc, &mut seen);
    let deleted = c.post("/v1/people:batchDeleteContacts", json!({"resourceNames": [rn]})).await;
    check(&d, "Empty", &deleted, &mut seen);
    assert_eq!(seen.len(), 12);
}

#[tokio::test]
async fn calendar_responses_match_the_discovery_document() {
    let d = doc("calendar.v3.json");
    let fake = FakeGoogle::start().await;
    let u = "schema-cal@example.com";
    fake.add_user(u);
    let start = Utc::now() + Duration::days(1);
    fake.insert_event(
        u,
        &Event {
            private: true,
            attendees: vec!["x@example.com".into()],
            categories: vec!["marker".into()],
            location: Some("Room".into()),
            description: Some("Agenda".into()),
            ..Event::new("Full", start, start + Duration::hours(1))
        },
    );
    let day = (start + Duration::days(2)).date_naive();
    fake.insert_event(
        u,
        &Event {
            start: crmsync_core::EventTime::Date(day),
            end: crmsync_core::EventTime::Date(day + Duration::days(1)),
            ..Event::new("All day", start, start)
        },
    );
    let series = fake.insert_series(u, &Event::new("Weekly", start, start + Duration::minutes(30)), 3, 7);
    let c = Client::new(&fake, u).await;
    let mut seen = vec![];
    let min = (Utc::now() - Duration::days(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let page =
        c.get(&format!("/calendar/v3/calendars/primary/events?singleEvents=true&maxResults=2&timeMin={min}")).await;
    assert!(page["nextPageToken"].is_string());
    check(&d, "Events", &page, &mut seen);
    let all = c.get("/calendar/v3/calendars/primary/events?singleEvents=true&maxResults=50").await;
    check(&d, "Events", &all, &mut seen);
    let sync = all["nextSyncToken"].as_str().unwrap().to_owned();
    let masters = c.get("/calendar/v3/calendars/primary/events").await;
    check(&d, "Events", &masters, &mut seen);
    let one = c.get(&format!("/calendar/v3/calendars/primary/events/{series}")).await;
    assert!(one["recurrence"].is_array());
    check(&d, "Event", &one, &mut seen);
    let inst_id = all["items"].as_array().unwrap().iter().find(|e| e["recurringEventId"] == series).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let inst = c.get(&format!("/calendar/v3/calendars/primary/events/{inst_id}")).await;
    check(&d, "Event", &inst, &mut seen);
    let made = c
        .post(
            "/calendar/v3/calendars/primary/events",
            json!({"id": "abcdef0123", "summary": "New", "start": {"dateTime": start.to_rfc3339()}, "end": {"dateTime": (start + Duration::hours(1)).to_rfc3339()},
                "extendedProperties": {"private": {"crmsyncKey": "k"}}}),
        )
        .await;
    check(&d, "Event", &made, &mut seen);
    let patched = c
        .call(
            reqwest::Method::PATCH,
            "/calendar/v3/calendars/primary/events/abcdef0123",
            Some(json!({"summary": "Renamed"})),
        )
        .await;
    check(&d, "Event", &patched, &mut seen);
    fake.delete_event(u, &series);
    let inc = c.get(&format!("/calendar/v3/calendars/primary/events?singleEvents=true&syncToken={sync}")).await;
    assert!(inc["items"].as_array().unwrap().iter().any(|e| e["status"] == "cancelled"));
    check(&d, "Events", &inc, &mut seen);
    assert_eq!(seen.len(), 8);
}
