//! The fake's contacts, folders and events checked against the Graph v1.0 CSDL (excerpt of
//! microsoftgraph/msgraph-metadata `schemas/v1.0-Prod.csdl`, in `tests/data/`): every property
//! the fake sends is declared on the type (or its base types) and has the declared shape.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use crmsync_core::{Contact, Event, Kind, NewItem, PostalAddress, Side, SyncKey};
use reqwest::Client;
use serde_json::Value;

const CSDL: &str = include_str!("data/msgraph-v1.0-contact-event-excerpt.csdl.xml");

#[derive(Default, Debug)]
struct Schema {
    /// type name → (base type, property name → type)
    types: BTreeMap<String, (Option<String>, BTreeMap<String, String>)>,
    enums: BTreeMap<String, Vec<String>>,
}

fn attr(line: &str, name: &str) -> Option<String> {
    let pat = format!("{name}=\"");
    let i = line.find(&pat)? + pat.len();
    let j = line[i..].find('"')? + i;
    Some(line[i..j].to_owned())
}

fn parse_csdl(xml: &str) -> Schema {
    let mut s = Schema::default();
    let mut cur: Option<String> = None;
    let mut cur_enum: Option<String> = None;
    for line in xml.lines().map(str::trim) {
        if line.starts_with("<EntityType ") || line.starts_with("<ComplexType ") {
            let name = attr(line, "Name").expect("type name");
            let base = attr(line, "BaseType").map(|b| b.trim_start_matches("graph.").to_owned());
            s.types.insert(name.clone(), (base, BTreeMap::new()));
            cur = (!line.ends_with("/>")).then_some(name);
        } else if line.starts_with("<EnumType ") {
            let name = attr(line, "Name").expect("enum name");
            s.enums.insert(name.clone(), vec![]);
            cur_enum = Some(name);
        } else if line.starts_with("<Member ") {
            if let Some(e) = &cur_enum {
                s.enums.get_mut(e).unwrap().push(attr(line, "Name").unwrap());
            }
        } else if line.starts_with("<Property ") || line.starts_with("<NavigationProperty ") {
            if let Some(t) = &cur {
                s.types.get_mut(t).unwrap().1.insert(attr(line, "Name").unwrap(), attr(line, "Type").unwrap());
            }
        } else if line.starts_with("</EntityType") || line.starts_with("</ComplexType") {
            cur = None;
        } else if line.starts_with("</EnumType") {
            cur_enum = None;
        }
    }
    s
}

impl Schema {
    fn property(&self, ty: &str, name: &str) -> Option<&str> {
        let (base, props) = self.types.get(ty)?;
        props.get(name).map(String::as_str).or_else(|| base.as_deref().and_then(|b| self.property(b, name)))
    }

    fn check(&self, ty: &str, v: &Value, at: &str, errors: &mut Vec<String>) {
        if v.is_null() {
            return;
        }
        if let Some(inner) = ty.strip_prefix("Collection(").and_then(|t| t.strip_suffix(')')) {
            match v.as_array() {
                Some(a) => a.iter().enumerate().for_each(|(i, x)| self.check(inner, x, &format!("{at}[{i}]"), errors)),
                None => errors.push(format!("{at}: expected an array for {ty}, got {v}")),
            }
            return;
        }
        let ok = match ty {
            "Edm.String" => v.is_string(),
            "Edm.Boolean" => v.is_boolean(),
            "Edm.Int32" | "Edm.Int64" => v.is_i64() || v.is_u64(),
            "Edm.Double" => v.is_number(),
            "Edm.DateTimeOffset" => v.as_str().is_some_and(|s| DateTime::parse_from_rfc3339(s).is_ok()),
            "Edm.Date" => v.as_str().is_some_and(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()),
            g => {
                let name = g.trim_start_matches("graph.");
                if let Some(members) = self.enums.get(name) {
                    v.as_str().is_some_and(|s| members.iter().any(|m| m == s))
                } else if self.types.contains_key(name) {
                    match v.as_object() {
                        Some(o) => {
                            for (k, x) in o {
                                if k.starts_with('@') {
                                    continue;
                                }
                                match self.property(name, k) {
                                    Some(t) => self.check(t, x, &format!("{at}.{k}"), errors),
                                    None => errors.push(format!("{at}.{k}: not a property of {name}")),
                                }
                            }
                            true
                        }
                        None => false,
                    }
                } else {
                    // Types outside the excerpt (enums like dayOfWeek, complex types like
                    // onlineMeetingInfo): only their JSON kind can be checked.
                    v.is_string() || v.is_object()
                }
            }
        };
        if !ok {
            errors.push(format!("{at}: {v} is not a valid {ty}"));
        }
    }
}

fn at(days: i64) -> DateTime<Utc> {
    let t = Utc::now() + Duration::days(days);
    DateTime::from_timestamp(t.timestamp() - t.timestamp() % 3600, 0).unwrap()
}

#[tokio::test]
async fn the_fakes_json_matches_the_graph_csdl() {
    let schema = parse_csdl(CSDL);
    assert!(
        schema.types.contains_key("contact")
            && schema.types.contains_key("event")
            && schema.enums.contains_key("sensitivity")
    );
    assert_eq!(schema.property("contact", "changeKey"), Some("Edm.String"), "base types are walked");

    let env = common::env(50).await;
    let mb = "schema@contoso.com";
    let contacts = env.admin(mb, Kind::Contact).await;
    let full = Contact {
        given_name: Some("Ada".into()),
        family_name: Some("Lovelace".into()),
        emails: vec!["ada@example.com".into(), "ada@home.example".into()],
        phone: Some("+44 20 7946 0000".into()),
        mobile: Some("+44 7700 900000".into()),
        company: Some("Analytical Engines".into()),
        title: Some("Countess".into()),
        department: Some("Maths".into()),
        address: PostalAddress {
            street: Some("1 St James's Sq".into()),
            city: Some("London".into()),
            region: Some("London".into()),
            postal_code: Some("SW1Y 4JU".into()),
            country: Some("UK".into()),
        },
        notes: Some("Met at the Babbage soirée".into()),
        categories: vec!["VIP".into()],
    };
    let key = SyncKey::derive("rep-s", Kind::Contact, Side::Crm, "003S");
    contacts.create_many(&[NewItem { sync_key: key, record: full.into() }]).await.unwrap().remove(0).expect("created");
    env.fake.insert_contact(mb, None, Contact { given_name: Some("Solo".into()), ..Default::default() });
    let t = at(2);
    env.fake.insert_event(
        mb,
        Event {
            attendees: vec!["bob@example.com".into()],
            organizer: Some("schema@contoso.com".into()),
            location: Some("Room 1".into()),
            description: Some("Agenda".into()),
            private: true,
            categories: vec!["Don't Sync".into()],
            cancelled: true,
            ..Event::new("Everything", t, t + Duration::hours(1))
        },
    );
    env.fake.insert_weekly_series(mb, "Weekly", at(1), Duration::minutes(30), 2);

    let http = Client::new();
    let cfg = env.fake.config();
    let tok: Value = http
        .post(env.fake.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", cfg.client_id.as_str()),
            ("client_secret", crmsync_exchange::fake::CLIENT_SECRET),
            ("scope", "https://graph.microsoft.com/.default"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let tok = tok["access_token"].as_str().unwrap().to_owned();
    let get = |url: String| {
        let http = http.clone();
        let tok = tok.clone();
        async move { http.get(url).bearer_auth(tok).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let base = format!("{}/users/{mb}", env.fake.graph_url());
    let mut errors = vec![];
    let folders = get(format!("{base}/contactFolders")).await;
    for f in folders["value"].as_array().unwrap() {
        schema.check("graph.contactFolder", f, "contactFolder", &mut errors);
    }
    let fid = folders["value"][0]["id"].as_str().unwrap().to_owned();
    let prop = crmsync_exchange::SYNC_KEY_PROPERTY;
    let expanded = get(format!(
        "{base}/contactFolders/{fid}/contacts?$expand=singleValueExtendedProperties($filter=id%20eq%20'{prop}')"
    ))
    .await;
    let listed = get(format!("{base}/contacts")).await;
    let delta = get(format!("{base}/contactFolders/{fid}/contacts/delta")).await;
    let mut n = 0;
    for v in [&expanded, &listed, &delta].iter().flat_map(|p| p["value"].as_array().unwrap()) {
        schema.check("graph.contact", v, "contact", &mut errors);
        n += 1;
    }
    assert_eq!(n, 3, "the folder contact listed and in delta, the default-folder one");
    assert!(expanded["value"][0]["singleValueExtendedProperties"].is_array(), "the expanded key is checked too");
    let window =
        format!("startDateTime={}&endDateTime={}", at(-1).to_rfc3339(), at(30).to_rfc3339()).replace('+', "%2B");
    let view = get(format!("{base}/calendarView/delta?{window}")).await;
    let events = get(format!("{base}/events")).await;
    let mut m = 0;
    for v in [&view, &events].iter().flat_map(|p| p["value"].as_array().unwrap()) {
        schema.check("graph.event", v, "event", &mut errors);
        m += 1;
    }
    assert_eq!(m, 3 + 2, "2 occurrences + 1 single in the view; 1 master + 1 single listed");
    assert!(errors.is_empty(), "shape errors:\n{}", errors.join("\n"));

    // The walker does catch a wrong shape.
    let mut bad = vec![];
    schema.check(
        "graph.event",
        &serde_json::json!({"sensitivity": "secret", "isCancelled": "no", "subjekt": "x"}),
        "e",
        &mut bad,
    );
    assert_eq!(bad.len(), 3, "{bad:?}");
}
