//! The fake driven with plain HTTP, the way the public REST API documentation describes it (no
//! adapter code): proof that other clients can use it.

use crmsync_salesforce::fake::{CLIENT_ID, CLIENT_SECRET, FakeSalesforce, REFRESH_TOKEN};
use serde_json::{Value, json};

struct Api {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Api {
    async fn login(fake: &FakeSalesforce) -> Api {
        let http = reqwest::Client::new();
        let resp = http
            .post(format!("{}/services/oauth2/token", fake.uri()))
            .form(&[("grant_type", "refresh_token"), ("client_id", CLIENT_ID), ("refresh_token", REFRESH_TOKEN)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        assert!(
            body["issued_at"].as_str().unwrap().parse::<u64>().is_ok(),
            "issued_at is epoch milliseconds as a string"
        );
        assert!(body.get("expires_in").is_none(), "Salesforce sends no expires_in");
        let base = format!("{}/services/data/v62.0", body["instance_url"].as_str().unwrap().trim_end_matches('/'));
        Api { http, base, token: body["access_token"].as_str().unwrap().to_owned() }
    }
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let url = if path.starts_with("/services/") {
            format!("{}{path}", self.base.split("/services/").next().unwrap())
        } else {
            format!("{}{path}", self.base)
        };
        let mut rb = self.http.request(method, url).bearer_auth(&self.token);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (status, headers, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
    }
    async fn query(&self, soql: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/query", self.base))
            .bearer_auth(&self.token)
            .query(&[("q", soql)])
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }
}

use reqwest::Method;

#[tokio::test]
async fn the_fake_speaks_the_documented_rest_protocol() {
    let fake = FakeSalesforce::start().await;
    let owner = fake.add_user("Rita Rep", &[]);

    // Versions need no session.
    let versions: Value = reqwest::get(format!("{}/services/data/", fake.uri())).await.unwrap().json().await.unwrap();
    assert_eq!(versions[0]["version"], "62.0");

    // Client-credentials flow works too; a wrong secret is an OAuth error body.
    let cc = reqwest::Client::new()
        .post(format!("{}/services/oauth2/token", fake.uri()))
        .form(&[("grant_type", "client_credentials"), ("client_id", CLIENT_ID), ("client_secret", CLIENT_SECRET)])
        .send()
        .await
        .unwrap();
    assert_eq!(cc.status(), 200);
    let bad = reqwest::Client::new()
        .post(format!("{}/services/oauth2/token", fake.uri()))
        .form(&[("grant_type", "refresh_token"), ("client_id", CLIENT_ID), ("refresh_token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_grant");

    let api = Api::login(&fake).await;

    // Create → 201 {id, success, errors}; the id is 18 characters with the Contact prefix.
    let (st, headers, body) = api
        .send(
            Method::POST,
            "/sobjects/Contact/",
            Some(json!({"LastName": "Plain", "Email": "plain@example.com", "OwnerId": owner})),
        )
        .await;
    assert_eq!(st, 201);
    assert_eq!(body["success"], true);
    assert!(headers.get("sforce-limit-info").unwrap().to_str().unwrap().starts_with("api-usage="));
    let id = body["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 18);
    assert!(id.starts_with("003"));

    // Read → attributes + fields; timestamps in Salesforce's format.
    let (st, _, rec) = api.send(Method::GET, &format!("/sobjects/Contact/{id}"), None).await;
    assert_eq!(st, 200);
    assert_eq!(rec["attributes"]["type"], "Contact");
    assert_eq!(rec["attributes"]["url"], format!("/services/data/v62.0/sobjects/Contact/{id}"));
    assert_eq!(rec["Name"], "Plain");
    let stamp = rec["SystemModstamp"].as_str().unwrap();
    assert!(stamp.ends_with("+0000") && stamp.len() == 28, "{stamp}");
    let (_, _, few) = api.send(Method::GET, &format!("/sobjects/Contact/{id}?fields=LastName,Email"), None).await;
    assert!(few.get("Title").is_none() && few["Email"] == "plain@example.com");

    // Update → 204; a stale If-Unmodified-Since → 412.
    let (st, _, _) = api.send(Method::PATCH, &format!("/sobjects/Contact/{id}"), Some(json!({"Title": "CEO"}))).await;
    assert_eq!(st, 204);
    let resp = api
        .http
        .patch(format!("{}/sobjects/Contact/{id}", api.base))
        .bearer_auth(&api.token)
        .header("If-Unmodified-Since", "Tue, 10 Aug 2015 00:00:00 GMT")
        .json(&json!({"Title": "CTO"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 412);

    // Validation errors are arrays of {message, errorCode, fields}.
    let (st, _, err) = api.send(Method::POST, "/sobjects/Contact/", Some(json!({"FirstName": "No"}))).await;
    assert_eq!(st, 400);
    assert_eq!(err[0]["errorCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(err[0]["message"], "Required fields are missing: [LastName]");
    assert_eq!(err[0]["fields"], json!(["LastName"]));
    let (_, _, err) = api.send(Method::POST, "/sobjects/Contact/", Some(json!({"LastName": "X", "Bogus__c": 1}))).await;
    assert_eq!(err[0]["errorCode"], "INVALID_FIELD");
    let (_, _, err) = api.send(Method::POST, "/sobjects/Event/", Some(json!({"Subject": "x", "StartDateTime": "2026-01-01T10:00:00Z", "DurationInMinutes": 30, "ShowAs": "Maybe"}))).await;
    assert_eq!(err[0]["errorCode"], "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST");

    // SOQL with a parent field.
    let (st, q) = api.query("SELECT Id, Name, Owner.Name FROM Contact WHERE LastName = 'Plain'").await;
    assert_eq!(st, 200);
    assert_eq!(q["totalSize"], 1);
    assert_eq!(q["done"], true);
    assert!(q.get("nextRecordsUrl").is_none());
    assert_eq!(q["records"][0]["Owner"]["Name"], "Rita Rep");
    assert_eq!(q["records"][0]["Owner"]["attributes"]["type"], "User");
    let (st, q) = api.query("SELECT COUNT() FROM User WHERE Name LIKE 'rita%'").await;
    assert_eq!((st, q["totalSize"].clone()), (200, json!(1)));
    let (st, err) = api.query("SELEKT Id FROM Contact").await;
    assert_eq!(st, 400);
    assert_eq!(err[0]["errorCode"], "MALFORMED_QUERY");
    let (st, err) = api.query("SELECT Id FROM Contact WHERE LastName = 'a\\qb'").await;
    assert_eq!((st, err[0]["errorCode"].clone()), (400, json!("MALFORMED_QUERY")));
    let (_, err) = api.query("SELECT Nope FROM Contact").await;
    assert_eq!(err[0]["errorCode"], "INVALID_FIELD");

    // Upsert by external id: 201 created, then 200 updated (API ≥ 46.0).
    let (st, _, b) =
        api.send(Method::PATCH, "/sobjects/Contact/CrmSync_Key__c/key-1", Some(json!({"LastName": "Ext"}))).await;
    assert_eq!((st, b["created"].clone()), (201, json!(true)));
    let (st, _, b2) =
        api.send(Method::PATCH, "/sobjects/Contact/CrmSync_Key__c/key-1", Some(json!({"LastName": "Ext2"}))).await;
    assert_eq!((st, b2["created"].clone(), b2["id"].clone()), (200, json!(false), b["id"].clone()));

    // sObject Collections: 200 per request at most, per-record results with statusCode.
    let records: Vec<Value> = (0..250)
        .map(|i| {
            let mut r = json!({"attributes": {"type": "Contact"}, "LastName": format!("Bulk{i}"), "OwnerId": owner});
            if i == 3 {
                r.as_object_mut().unwrap().remove("LastName");
            }
            r
        })
        .collect();
    let (st, _, err) =
        api.send(Method::POST, "/composite/sobjects", Some(json!({"allOrNone": false, "records": records}))).await;
    assert_eq!((st, err[0]["errorCode"].clone()), (400, json!("EXCEEDED_ID_LIMIT")));
    let (st, _, res) = api
        .send(Method::POST, "/composite/sobjects", Some(json!({"allOrNone": false, "records": records[..200]})))
        .await;
    assert_eq!(st, 200);
    assert_eq!(res.as_array().unwrap().len(), 200);
    assert_eq!(res[3]["success"], false);
    assert_eq!(res[3]["errors"][0]["statusCode"], "REQUIRED_FIELD_MISSING");
    assert_eq!(res[4]["success"], true);
    // allOrNone rolls the batch back.
    let (_, _, res) =
        api.send(Method::POST, "/composite/sobjects", Some(json!({"allOrNone": true, "records": records[..5]}))).await;
    assert_eq!(res[0]["errors"][0]["statusCode"], "ALL_OR_NONE_OPERATION_ROLLED_BACK");
    let (_, _, res) = api
        .send(Method::POST, "/composite/sobjects", Some(json!({"allOrNone": false, "records": records[200..]})))
        .await;
    assert!(res.as_array().unwrap().iter().all(|r| r["success"] == true));
    let bulk_ids: Vec<String> = res.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    let (st, _, got) = api
        .send(
            Method::GET,
            &format!("/composite/sobjects/Contact?ids={},{}&fields=LastName", bulk_ids[0], bulk_ids[1]),
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(got[1]["LastName"], "Bulk201");
    assert!(got[0].get("Email").is_none());

    // Paging at 2,000 through nextRecordsUrl.
    for chunk in 0..11 {
        let recs: Vec<Value> = (0..200)
            .map(|i| json!({"attributes": {"type": "Contact"}, "LastName": format!("Page{chunk}-{i}")}))
            .collect();
        let (_, _, res) = api.send(Method::POST, "/composite/sobjects", Some(json!({"records": recs}))).await;
        assert!(res.as_array().unwrap().iter().all(|r| r["success"] == true));
    }
    let (_, first) = api.query("SELECT Id, LastName FROM Contact WHERE LastName LIKE 'Page%' ORDER BY LastName").await;
    assert_eq!(first["totalSize"], 2200);
    assert_eq!(first["done"], false);
    assert_eq!(first["records"].as_array().unwrap().len(), 2000);
    let next = first["nextRecordsUrl"].as_str().unwrap();
    assert!(next.starts_with("/services/data/v62.0/query/01g") && next.ends_with("-2000"), "{next}");
    let (st, _, second) = api.send(Method::GET, next, None).await;
    assert_eq!(st, 200);
    assert_eq!(second["done"], true);
    assert_eq!(second["records"].as_array().unwrap().len(), 200);

    // Delete: collections and single; deleted rows show in queryAll and the deleted resource.
    let ids = bulk_ids[..3].join(",");
    let (st, _, res) = api.send(Method::DELETE, &format!("/composite/sobjects?ids={ids}&allOrNone=false"), None).await;
    assert_eq!(st, 200);
    assert!(res.as_array().unwrap().iter().all(|r| r["success"] == true));
    let (st, _, _) = api.send(Method::DELETE, &format!("/sobjects/Contact/{id}"), None).await;
    assert_eq!(st, 204);
    let (st, _, err) = api.send(Method::GET, &format!("/sobjects/Contact/{id}"), None).await;
    assert_eq!((st, err[0]["errorCode"].clone()), (404, json!("ENTITY_IS_DELETED")));
    let resp = api
        .http
        .get(format!("{}/queryAll", api.base))
        .bearer_auth(&api.token)
        .query(&[("q", format!("SELECT Id, IsDeleted FROM Contact WHERE Id = '{id}'"))])
        .send()
        .await
        .unwrap();
    let all: Value = resp.json().await.unwrap();
    assert_eq!(all["records"][0]["IsDeleted"], true);
    let (_, q) = api.query(&format!("SELECT Id FROM Contact WHERE Id = '{id}'")).await;
    assert_eq!(q["totalSize"], 0, "query leaves deleted rows out");
    let now = fake.now();
    let start = (now - chrono::Duration::hours(1)).to_rfc3339();
    let end = (now + chrono::Duration::minutes(2)).to_rfc3339();
    let resp = api
        .http
        .get(format!("{}/sobjects/Contact/deleted/", api.base))
        .bearer_auth(&api.token)
        .query(&[("start", start.as_str()), ("end", end.as_str())])
        .send()
        .await
        .unwrap();
    let del: Value = resp.json().await.unwrap();
    assert_eq!(del["deletedRecords"].as_array().unwrap().len(), 4);
    assert!(del["earliestDateAvailable"].is_string());
    let resp = api
        .http
        .get(format!("{}/sobjects/Contact/updated/", api.base))
        .bearer_auth(&api.token)
        .query(&[("start", start.as_str()), ("end", end.as_str())])
        .send()
        .await
        .unwrap();
    let upd: Value = resp.json().await.unwrap();
    assert!(upd["ids"].as_array().unwrap().len() > 2000);

    // Composite: several subrequests in one call.
    let (st, _, comp) = api
        .send(
            Method::POST,
            "/composite",
            Some(json!({"allOrNone": false, "compositeRequest": [
                {"method": "POST", "url": "/services/data/v62.0/sobjects/Contact", "referenceId": "c1", "body": {"LastName": "Comp"}},
                {"method": "GET", "url": "/services/data/v62.0/query?q=SELECT+Id+FROM+Contact+WHERE+LastName+%3D+%27Comp%27", "referenceId": "q1"},
            ]})),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(comp["compositeResponse"][0]["httpStatusCode"], 201);
    assert_eq!(comp["compositeResponse"][1]["body"]["totalSize"], 1);

    // Limits, and an invalid session.
    let (st, _, limits) = api.send(Method::GET, "/limits", None).await;
    assert_eq!(st, 200);
    assert_eq!(limits["DailyApiRequests"]["Max"], 15000);
    fake.expire_tokens();
    let (st, _, err) = api.send(Method::GET, "/limits", None).await;
    assert_eq!(st, 401);
    assert_eq!(err, json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]));
    assert_eq!(fake.count("query"), 7);
    assert_eq!(fake.count("query_more"), 1);
}

#[tokio::test]
async fn start_on_a_fixed_listener_and_garbage_answers_are_clear_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = FakeSalesforce::start_on(listener).await;
    assert_eq!(fake.uri(), format!("http://127.0.0.1:{port}"));
    let debug = format!("{:?}", crmsync_salesforce::SalesforceCrm::new(fake.config()).unwrap());
    assert!(!debug.contains(CLIENT_SECRET), "no secret in Debug: {debug}");

    // A server answering HTML where JSON is expected: an error naming it, no panic.
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};
    let bogus = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/oauth2/token"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"access_token": "t", "instance_url": bogus.uri()})),
        )
        .mount(&bogus)
        .await;
    Mock::given(method("GET"))
        .and(path("/services/data/v62.0/query"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
        .mount(&bogus)
        .await;
    let mut cfg = fake.config();
    cfg.instance_url = bogus.uri();
    let crm = crmsync_salesforce::SalesforceCrm::new(cfg).unwrap();
    use crmsync_core::Crm;
    let err = crm.find_users("x").await.unwrap_err();
    assert_eq!(err.kind(), crmsync_core::ErrorKind::Unexpected);
    assert!(err.message().contains("not JSON"), "{err}");
}

/// Shared Activities as the object reference describes `EventRelation`: related contacts are
/// `IsParent` rows, a What (an Account) is `IsWhat`, the `WhoId` is one of the relations and is
/// handed on when its relation is deleted, and an Event relates to at most 50 contacts.
#[tokio::test]
async fn event_relations_follow_shared_activities() {
    use reqwest::Method;
    let fake = FakeSalesforce::start().await;
    let owner = fake.add_user("Riley Rep", &[]);
    let api = Api::login(&fake).await;
    let contacts: Vec<String> = (0..52)
        .map(|i| fake.insert_contact(&owner, json!({"LastName": format!("C{i}"), "Email": format!("c{i}@x.io")})))
        .collect();
    let account = {
        let (st, _, b) = api.send(Method::POST, "/sobjects/Account", Some(json!({"Name": "Acme"}))).await;
        assert_eq!(st, 201, "{b}");
        b["id"].as_str().unwrap().to_owned()
    };
    let (st, _, b) = api
        .send(
            Method::POST,
            "/sobjects/Event",
            Some(json!({"Subject": "S", "StartDateTime": "2026-03-01T10:00:00Z", "EndDateTime": "2026-03-01T11:00:00Z", "WhoId": contacts[0], "WhatId": account})),
        )
        .await;
    assert_eq!(st, 201, "{b}");
    let ev = b["id"].as_str().unwrap().to_owned();
    let rel = |c: &str| json!({"attributes": {"type": "EventRelation"}, "EventId": ev, "RelationId": c, "IsParent": true, "IsInvitee": false});
    // 48 more contacts in one Collections request, then a What row.
    let records: Vec<Value> = contacts[1..49].iter().map(|c| rel(c)).collect();
    let (st, _, b) =
        api.send(Method::POST, "/composite/sobjects", Some(json!({"allOrNone": false, "records": records}))).await;
    assert_eq!(st, 200);
    assert!(b.as_array().unwrap().iter().all(|r| r["success"] == true), "{b}");
    let (_, q) = api.query(&format!("SELECT Id, RelationId, IsParent, IsWhat, IsInvitee FROM EventRelation WHERE EventId = '{ev}' AND IsParent = true AND IsWhat = false")).await;
    assert_eq!(q["totalSize"], 49, "the WhoId is a relation too: {q}");
    let (_, q) =
        api.query(&format!("SELECT RelationId FROM EventRelation WHERE EventId = '{ev}' AND IsWhat = true")).await;
    assert_eq!(q["records"][0]["RelationId"], json!(account), "the What is an IsWhat relation");
    // The 50th contact is fine, the 51st is refused in Salesforce's per-record error shape;
    // a relation that exists is a duplicate.
    let records = vec![rel(&contacts[49]), rel(&contacts[50]), rel(&contacts[1])];
    let (_, _, b) =
        api.send(Method::POST, "/composite/sobjects", Some(json!({"allOrNone": false, "records": records}))).await;
    assert_eq!(b[0]["success"], true, "{b}");
    assert_eq!(b[1]["success"], false);
    assert_eq!(b[1]["errors"][0]["statusCode"], "LIMIT_EXCEEDED", "{b}");
    assert_eq!(b[1]["errors"][0]["fields"], json!(["RelationId"]));
    assert_eq!(b[2]["errors"][0]["statusCode"], "DUPLICATE_VALUE", "{b}");
    // Deleting the WhoId's relation promotes the oldest other contact.
    let (_, q) = api
        .query(&format!("SELECT Id FROM EventRelation WHERE EventId = '{ev}' AND RelationId = '{}'", contacts[0]))
        .await;
    let who_rel = q["records"][0]["Id"].as_str().unwrap().to_owned();
    let (st, _, _) = api.send(Method::DELETE, &format!("/sobjects/EventRelation/{who_rel}"), None).await;
    assert_eq!(st, 204);
    assert_eq!(fake.record(&ev).unwrap()["WhoId"], json!(contacts[1]));
    // Deleting the Event deletes its relations.
    let (st, _, _) = api.send(Method::DELETE, &format!("/sobjects/Event/{ev}"), None).await;
    assert_eq!(st, 204);
    assert!(fake.relations(&ev).is_empty());
}

/// What official SDKs use beyond records: object metadata, aggregate SOQL, SOSL and composite
/// references, in the service's documented shapes.
#[tokio::test]
async fn metadata_aggregates_search_and_composite_references() {
    let fake = FakeSalesforce::start().await;
    let ann = fake.add_user("Ann Rep", &[]);
    let bob = fake.add_user("Bob Rep", &[]);
    for (owner, last, email) in
        [(&ann, "Li", "bo.li@example.com"), (&ann, "Ng", "cy.ng@example.com"), (&bob, "Li", "di.li@example.org")]
    {
        fake.insert_contact(owner, json!({"LastName": last, "FirstName": "X", "Email": email}));
    }
    let api = Api::login(&fake).await;

    // sObject basic information: the object's describe entry and its recent items.
    let (s, _, info) = api.send(Method::GET, "/sobjects/Contact", None).await;
    assert_eq!(s, 200, "{info}");
    assert_eq!(info["objectDescribe"]["name"], "Contact");
    assert_eq!(info["objectDescribe"]["urls"]["describe"], "/services/data/v62.0/sobjects/Contact/describe");
    assert!(info["recentItems"].is_array());

    // Aggregates: one AggregateResult per group, exprN for unnamed aggregates, aliases kept.
    let (s, v) = api.query("SELECT COUNT(Id) FROM Contact").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["totalSize"], 1);
    assert_eq!(v["records"], json!([{"attributes": {"type": "AggregateResult"}, "expr0": 3}]));
    let (_, v) = api
        .query("SELECT LastName, COUNT(Id) n, COUNT_DISTINCT(OwnerId) FROM Contact GROUP BY LastName ORDER BY LastName")
        .await;
    assert_eq!(
        v["records"],
        json!([{"attributes": {"type": "AggregateResult"}, "LastName": "Li", "n": 2, "expr0": 2},
               {"attributes": {"type": "AggregateResult"}, "LastName": "Ng", "n": 1, "expr0": 1}]),
        "{v}"
    );
    let (s, v) = api.query("SELECT LastName, COUNT(Id) FROM Contact").await;
    assert_eq!((s, v[0]["errorCode"].as_str()), (400, Some("MALFORMED_QUERY")), "{v}");
    let (_, v) = api.query("SELECT COUNT() FROM Contact WHERE LastName = 'Li'").await;
    assert_eq!((v["totalSize"].as_u64(), v["records"].as_array().map(Vec::len)), (Some(2), Some(0)));

    // SOSL: searchRecords of the objects named in RETURNING, with their fields.
    let search = |q: &str| {
        let req = api.http.get(format!("{}/search/", api.base)).query(&[("q", q)]).bearer_auth(&api.token);
        async move {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = search("FIND {li} IN NAME FIELDS RETURNING Contact(LastName, Email ORDER BY Email)").await;
    assert_eq!(s, 200, "{v}");
    let emails: Vec<&str> =
        v["searchRecords"].as_array().unwrap().iter().map(|r| r["Email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["bo.li@example.com", "di.li@example.org"]);
    assert_eq!(v["searchRecords"][0]["attributes"]["type"], "Contact");
    let (_, v) = search("FIND {example.org} IN EMAIL FIELDS RETURNING Contact").await;
    assert_eq!(v["searchRecords"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["searchRecords"][0]["Id"].is_string());
    let (_, v) = search("FIND {Ann*} RETURNING User(Name)").await;
    assert_eq!(v["searchRecords"][0]["Name"], "Ann Rep", "{v}");
    let (_, v) = search("FIND {nobody} RETURNING Contact").await;
    assert_eq!(v, json!({"searchRecords": []}));
    let (s, v) = search("FIND li").await;
    assert_eq!((s, v[0]["errorCode"].as_str()), (400, Some("MALFORMED_SEARCH")), "{v}");

    // Composite: a later subrequest uses an earlier one's result.
    let (s, _, v) = api
        .send(
            Method::POST,
            "/composite",
            Some(json!({"compositeRequest": [
                {"method": "POST", "url": "/services/data/v62.0/sobjects/Contact", "referenceId": "made", "body": {"LastName": "Ref"}},
                {"method": "GET", "url": "/services/data/v62.0/sobjects/Contact/@{made.id}", "referenceId": "got"},
                {"method": "GET", "url": "/services/data/v62.0/query?q=SELECT+Id+FROM+Contact+WHERE+LastName='Ref'", "referenceId": "found"},
                {"method": "PATCH", "url": "/services/data/v62.0/sobjects/Contact/@{found.records[0].Id}", "referenceId": "edit",
                 "body": {"Title": "@{got.LastName} title"}},
                {"method": "GET", "url": "/services/data/v62.0/sobjects/Contact/@{nothing.id}", "referenceId": "bad"}]})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let results = v["compositeResponse"].as_array().unwrap();
    assert_eq!(results[1]["body"]["LastName"], "Ref", "{v}");
    assert_eq!(results[3]["httpStatusCode"], 204, "{v}");
    assert_eq!(results[4]["httpStatusCode"], 400);
    assert_eq!(results[4]["body"][0]["errorCode"], "PROCESSING_HALTED");
    let id = results[0]["body"]["id"].as_str().unwrap();
    let (_, _, got) = api.send(Method::GET, &format!("/sobjects/Contact/{id}"), None).await;
    assert_eq!(got["Title"], "Ref title");
}
