//! Graph contact / event JSON ⇄ the crmsync model.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use crmsync_core::{Contact, Event, EventTime, Item, PostalAddress, Record, SyncKey, time};
use serde_json::{Map, Value, json};

/// The MAPI named property the sync key is stamped in (a `singleValueExtendedProperty`).
pub const SYNC_KEY_PROPERTY: &str = "String {8a3f2c71-5b9e-4d06-b1c4-7e2d9f0a6c35} Name crmsyncKey";

fn s(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::trim).filter(|t| !t.is_empty()).map(str::to_owned)
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect()).unwrap_or_default()
}

/// The sync key in an item read with `$expand=singleValueExtendedProperties(…)`.
pub fn sync_key_of(v: &Value) -> Option<SyncKey> {
    v["singleValueExtendedProperties"].as_array()?.iter().find_map(|p| {
        let id = p["id"].as_str()?;
        id.eq_ignore_ascii_case(SYNC_KEY_PROPERTY).then(|| p["value"].as_str().map(|k| SyncKey(k.to_owned())))?
    })
}

/// The extended-property entry that stamps `key`.
pub fn sync_key_entry(key: &SyncKey) -> Value {
    json!([{ "id": SYNC_KEY_PROPERTY, "value": key.as_str() }])
}

/// An [`Item`] from a Graph entity and its mapped record.
pub fn item(v: &Value, record: Record) -> Item {
    Item {
        id: v["id"].as_str().unwrap_or_default().to_owned(),
        version: s(v, "@odata.etag").or_else(|| s(v, "changeKey")).unwrap_or_default(),
        sync_key: sync_key_of(v),
        modified: v["lastModifiedDateTime"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
        record,
    }
}

/// A Graph `contact` as a crmsync contact.
pub fn contact_from_graph(v: &Value) -> Contact {
    let a = &v["businessAddress"];
    Contact {
        given_name: s(v, "givenName"),
        family_name: s(v, "surname"),
        emails: v["emailAddresses"]
            .as_array()
            .map(|l| l.iter().filter_map(|e| s(e, "address")).collect())
            .unwrap_or_default(),
        phone: v["businessPhones"]
            .as_array()
            .and_then(|p| p.iter().filter_map(Value::as_str).find(|p| !p.trim().is_empty()))
            .map(str::to_owned),
        mobile: s(v, "mobilePhone"),
        company: s(v, "companyName"),
        title: s(v, "jobTitle"),
        department: s(v, "department"),
        address: PostalAddress {
            street: s(a, "street"),
            city: s(a, "city"),
            region: s(a, "state"),
            postal_code: s(a, "postalCode"),
            country: s(a, "countryOrRegion"),
        },
        notes: s(v, "personalNotes"),
        categories: strings(&v["categories"]),
    }
}

fn display_name(c: &Contact) -> String {
    let parts: Vec<&str> = [&c.given_name, &c.family_name].iter().filter_map(|p| p.as_deref()).collect();
    if parts.is_empty() { c.emails.first().cloned().unwrap_or_default() } else { parts.join(" ") }
}

fn address_json(a: &PostalAddress) -> Value {
    json!({
        "street": a.street.clone().unwrap_or_default(),
        "city": a.city.clone().unwrap_or_default(),
        "state": a.region.clone().unwrap_or_default(),
        "postalCode": a.postal_code.clone().unwrap_or_default(),
        "countryOrRegion": a.country.clone().unwrap_or_default(),
    })
}

fn emails_json(c: &Contact) -> Value {
    Value::Array(c.emails.iter().map(|e| json!({ "address": e, "name": e })).collect())
}

/// The properties of a canonical contact field (`None` = the field has no Graph property).
fn contact_props(field: &str, c: &Contact, raw: Option<&Value>, out: &mut Map<String, Value>) {
    let opt = |v: &Option<String>| v.clone().map(Value::String).unwrap_or(Value::Null);
    match field {
        "given_name" => {
            out.insert("givenName".into(), opt(&c.given_name));
            out.insert("displayName".into(), json!(display_name(c)));
        }
        "family_name" => {
            out.insert("surname".into(), opt(&c.family_name));
            out.insert("displayName".into(), json!(display_name(c)));
        }
        "email" => {
            out.insert("emailAddresses".into(), emails_json(c));
        }
        "phone" => {
            // Keep the contact's further business numbers.
            let mut phones: Vec<Value> = c.phone.iter().map(|p| json!(p)).collect();
            if let Some(rest) = raw.and_then(|r| r["businessPhones"].as_array()) {
                phones.extend(rest.iter().skip(1).cloned());
            }
            out.insert("businessPhones".into(), Value::Array(phones));
        }
        "mobile" => {
            out.insert("mobilePhone".into(), opt(&c.mobile));
        }
        "company" => {
            out.insert("companyName".into(), opt(&c.company));
        }
        "title" => {
            out.insert("jobTitle".into(), opt(&c.title));
        }
        "department" => {
            out.insert("department".into(), opt(&c.department));
        }
        "street" | "city" | "region" | "postal_code" | "country" => {
            out.insert("businessAddress".into(), address_json(&c.address));
        }
        "notes" => {
            out.insert("personalNotes".into(), opt(&c.notes));
        }
        _ => {}
    }
}

/// The body of a contact create (sync key stamped).
pub fn contact_create(c: &Contact, key: &SyncKey) -> Value {
    let mut m = Map::new();
    for f in crmsync_core::model::CONTACT_FIELDS {
        contact_props(f, c, None, &mut m);
    }
    if !c.categories.is_empty() {
        m.insert("categories".into(), json!(c.categories));
    }
    m.insert("singleValueExtendedProperties".into(), sync_key_entry(key));
    Value::Object(m)
}

/// The PATCH body writing `fields` of `c` (`raw` = the item as last read, to keep what the
/// model does not hold, such as further business phones).
pub fn contact_patch(c: &Contact, raw: Option<&Value>, fields: &[String]) -> Value {
    let mut m = Map::new();
    for f in fields {
        contact_props(f, c, raw, &mut m);
    }
    Value::Object(m)
}

fn parse_time(v: &Value, all_day: bool, what: &str) -> Result<EventTime, String> {
    let dt = v["dateTime"].as_str().ok_or_else(|| format!("event has no {what} time"))?;
    if let Ok(t) = DateTime::parse_from_rfc3339(dt) {
        return Ok(if all_day { EventTime::Date(t.date_naive()) } else { EventTime::At(t.with_timezone(&Utc)) });
    }
    let naive = NaiveDateTime::parse_from_str(dt, "%Y-%m-%dT%H:%M:%S%.f")
        .map_err(|_| format!("unparsable {what} time {dt:?}"))?;
    if all_day {
        // All-day events are midnight to midnight in one zone: the dates are what count.
        return Ok(EventTime::Date(naive.date()));
    }
    // A time without a zone is in the zone the read asked for (`Prefer: outlook.timezone`: UTC).
    let name = v["timeZone"].as_str().unwrap_or("UTC");
    let tz = time::zone(name).ok_or_else(|| {
        format!("unknown time zone {name:?} for the {what} time (neither a Windows nor an IANA name)")
    })?;
    Ok(EventTime::At(time::local_to_utc(naive, tz)))
}

/// A Graph `event` (an instance, read with `Prefer: outlook.timezone="UTC"`) as a crmsync event.
pub fn event_from_graph(v: &Value) -> Result<Event, String> {
    let all_day = v["isAllDay"].as_bool().unwrap_or(false);
    let start = parse_time(&v["start"], all_day, "start")?;
    let end = parse_time(&v["end"], all_day, "end")?;
    let description = match v["body"]["contentType"].as_str() {
        Some(ct) if ct.eq_ignore_ascii_case("html") => v["body"]["content"].as_str().map(strip_html),
        _ => v["body"]["content"].as_str().map(str::to_owned),
    }
    .map(|d| d.trim().to_owned())
    .filter(|d| !d.is_empty());
    Ok(Event {
        subject: s(v, "subject"),
        start,
        end,
        time_zone: s(v, "originalStartTimeZone"),
        location: s(&v["location"], "displayName"),
        description,
        attendees: v["attendees"]
            .as_array()
            .map(|l| l.iter().filter_map(|a| s(&a["emailAddress"], "address")).collect())
            .unwrap_or_default(),
        organizer: s(&v["organizer"]["emailAddress"], "address"),
        private: v["sensitivity"].as_str().is_some_and(|x| x.eq_ignore_ascii_case("private")),
        categories: strings(&v["categories"]),
        series_id: s(v, "seriesMasterId"),
        ical_uid: s(v, "iCalUId"),
        cancelled: v["isCancelled"].as_bool().unwrap_or(false),
    })
}

/// Crude HTML → text for bodies a server returns as HTML despite `outlook.body-content-type`.
fn strip_html(h: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for ch in h.chars() {
        match ch {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out.replace("&nbsp;", " ").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
}

/// A `dateTimeTimeZone`: in the event's own zone when it has one Graph knows (so an edit from
/// the CRM keeps the meeting in its organizer's zone), else UTC. All-day events are midnight
/// of their dates, never shifted.
fn time_json(t: &EventTime, zone: Option<&str>) -> Value {
    let tz = zone.and_then(|z| time::zone(z).map(|tz| (z, tz)));
    let (dt, name) = match (t, tz) {
        (EventTime::At(t), Some((z, tz))) => (time::utc_to_local(*t, tz), z),
        (EventTime::At(t), None) => (t.naive_utc(), "UTC"),
        (EventTime::Date(d), z) => (d.and_hms_opt(0, 0, 0).expect("midnight"), z.map_or("UTC", |(z, _)| z)),
    };
    json!({ "dateTime": graph_datetime(dt), "timeZone": name })
}

/// Graph's `dateTimeTimeZone.dateTime` form: seven fractional digits, no offset.
pub fn graph_datetime(t: NaiveDateTime) -> String {
    use chrono::Timelike;
    format!("{}.{:07}", t.format("%Y-%m-%dT%H:%M:%S"), t.nanosecond() / 100)
}

fn event_props(field: &str, e: &Event, out: &mut Map<String, Value>) {
    match field {
        "subject" => {
            out.insert("subject".into(), json!(e.subject.clone().unwrap_or_default()));
        }
        "start" | "end" => {
            out.insert("start".into(), time_json(&e.start, e.time_zone.as_deref()));
            out.insert("end".into(), time_json(&e.end, e.time_zone.as_deref()));
            out.insert("isAllDay".into(), json!(e.all_day()));
        }
        "location" => {
            out.insert("location".into(), json!({ "displayName": e.location.clone().unwrap_or_default() }));
        }
        "description" => {
            out.insert(
                "body".into(),
                json!({ "contentType": "text", "content": e.description.clone().unwrap_or_default() }),
            );
        }
        "private" => {
            out.insert("sensitivity".into(), json!(if e.private { "private" } else { "normal" }));
        }
        _ => {}
    }
}

/// The body of an event create (sync key stamped).
pub fn event_create(e: &Event, key: &SyncKey) -> Value {
    let mut m = Map::new();
    for f in crmsync_core::model::EVENT_FIELDS {
        event_props(f, e, &mut m);
    }
    if !e.attendees.is_empty() {
        m.insert(
            "attendees".into(),
            Value::Array(
                e.attendees.iter().map(|a| json!({ "emailAddress": { "address": a }, "type": "required" })).collect(),
            ),
        );
    }
    if !e.categories.is_empty() {
        m.insert("categories".into(), json!(e.categories));
    }
    m.insert("singleValueExtendedProperties".into(), sync_key_entry(key));
    Value::Object(m)
}

/// The PATCH body writing `fields` of `e`.
pub fn event_patch(e: &Event, fields: &[String]) -> Value {
    let mut m = Map::new();
    for f in fields {
        event_props(f, e, &mut m);
    }
    Value::Object(m)
}

/// Midnight UTC on or before `t` (the event window is widened to whole days).
pub fn floor_day(t: DateTime<Utc>) -> DateTime<Utc> {
    t.date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc()
}

/// Midnight UTC on or after `t`.
pub fn ceil_day(t: DateTime<Utc>) -> DateTime<Utc> {
    let f = floor_day(t);
    if f == t { f } else { f + chrono::Duration::days(1) }
}

/// Parse `YYYY-MM-DD` (used by seeding helpers).
pub fn date(s: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_round_trip_through_graph_json() {
        let c = Contact {
            given_name: Some("Ada".into()),
            family_name: Some("Lovelace".into()),
            emails: vec!["ada@example.com".into(), "ada@home.example".into()],
            phone: Some("+1 555 0100".into()),
            mobile: Some("+1 555 0101".into()),
            company: Some("Analytical".into()),
            address: PostalAddress { city: Some("London".into()), country: Some("UK".into()), ..Default::default() },
            notes: Some("n".into()),
            ..Default::default()
        };
        let key = SyncKey("cs1.x.y".into());
        let v = contact_create(&c, &key);
        assert_eq!(v["displayName"], "Ada Lovelace");
        assert_eq!(sync_key_of(&v), Some(key));
        assert_eq!(contact_from_graph(&v), c);
    }

    #[test]
    fn events_parse_times_all_day_and_bad_zones() {
        let v = json!({"subject":"S","start":{"dateTime":"2026-03-01T10:00:00.0000000","timeZone":"UTC"},
            "end":{"dateTime":"2026-03-01T11:00:00.0000000","timeZone":"UTC"},"sensitivity":"private",
            "categories":["Don't Sync"],"iCalUId":"u1","seriesMasterId":"m","isCancelled":true,
            "attendees":[{"emailAddress":{"address":"a@b.io"}}],"organizer":{"emailAddress":{"address":"o@b.io"}}});
        let e = event_from_graph(&v).expect("parses");
        assert!(e.private && e.cancelled);
        assert_eq!(e.start, EventTime::At("2026-03-01T10:00:00Z".parse().unwrap()));
        assert_eq!((e.series_id.as_deref(), e.ical_uid.as_deref()), (Some("m"), Some("u1")));
        assert_eq!(e.attendees, vec!["a@b.io"]);
        let d = json!({"isAllDay":true,"start":{"dateTime":"2026-03-01T00:00:00.0000000","timeZone":"Pacific Standard Time"},
            "end":{"dateTime":"2026-03-02T00:00:00.0000000","timeZone":"Pacific Standard Time"}});
        assert_eq!(event_from_graph(&d).unwrap().start, EventTime::Date(date("2026-03-01").unwrap()));
        let bad = json!({"start":{"dateTime":"2026-03-01T10:00:00","timeZone":"Mars/Olympus"},"end":{"dateTime":"2026-03-01T11:00:00","timeZone":"UTC"}});
        assert!(event_from_graph(&bad).unwrap_err().contains("time zone"));
        let missing = json!({"end":{"dateTime":"x"}});
        assert!(event_from_graph(&missing).unwrap_err().contains("no start"));
        let round = event_from_graph(&event_create(&e, &SyncKey("k".into()))).unwrap();
        assert_eq!(Record::Event(round).canon(), Record::Event(e).canon());
    }

    #[test]
    fn windows_zones_give_the_right_instant_and_writes_keep_the_zone() {
        let v = json!({"subject":"S","originalStartTimeZone":"Pacific Standard Time",
            "start":{"dateTime":"2026-03-10T09:00:00.0000000","timeZone":"Pacific Standard Time"},
            "end":{"dateTime":"2026-03-10T23:30:00.0000000","timeZone":"Pacific Standard Time"}});
        let e = event_from_graph(&v).unwrap();
        assert_eq!(e.start, EventTime::At("2026-03-10T16:00:00Z".parse().unwrap()), "PDT is UTC-7");
        assert_eq!(e.end, EventTime::At("2026-03-11T06:30:00Z".parse().unwrap()), "past midnight UTC");
        assert_eq!(e.time_zone.as_deref(), Some("Pacific Standard Time"));
        // Written back in the organizer's zone, same instant.
        let body = event_patch(&e, &["start".into()]);
        assert_eq!(
            body["start"],
            json!({"dateTime": "2026-03-10T09:00:00.0000000", "timeZone": "Pacific Standard Time"})
        );
        // IANA names work too; a time without a zone is the zone the read asked for (UTC).
        let v = json!({"start":{"dateTime":"2026-01-10T09:00:00","timeZone":"Europe/Berlin"},"end":{"dateTime":"2026-01-10T10:00:00"}});
        let e = event_from_graph(&v).unwrap();
        assert_eq!(e.start, EventTime::At("2026-01-10T08:00:00Z".parse().unwrap()));
        assert_eq!(e.end, EventTime::At("2026-01-10T10:00:00Z".parse().unwrap()));
    }

    #[test]
    fn all_day_events_stay_on_their_dates_in_every_zone() {
        for tz in [
            "Hawaiian Standard Time",
            "Tokyo Standard Time",
            "Line Islands Standard Time",
            "UTC",
            "Dateline Standard Time",
        ] {
            let v = json!({"isAllDay":true,"originalStartTimeZone":tz,
                "start":{"dateTime":"2026-03-08T00:00:00.0000000","timeZone":tz},
                "end":{"dateTime":"2026-03-10T00:00:00.0000000","timeZone":tz}});
            let e = event_from_graph(&v).unwrap();
            assert_eq!(
                (e.start, e.end),
                (EventTime::Date(date("2026-03-08").unwrap()), EventTime::Date(date("2026-03-10").unwrap())),
                "{tz}"
            );
            let body = event_patch(&e, &["start".into()]);
            assert_eq!(body["start"]["dateTime"], "2026-03-08T00:00:00.0000000", "{tz}: written as the same date");
            assert_eq!(body["isAllDay"], true);
        }
    }
}
