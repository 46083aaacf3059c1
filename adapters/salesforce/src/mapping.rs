//! Contact and Event records ↔ Salesforce fields.

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use crmsync_core::{Contact, Event, EventTime, Item, Kind, PostalAddress, Record, SyncKey};
use serde_json::{Map, Value, json};

/// Canonical contact field → Contact field. `company` is absent: Salesforce keeps it as the
/// related Account, which crmsync does not write.
pub const CONTACT_MAP: &[(&str, &str)] = &[
    ("given_name", "FirstName"),
    ("family_name", "LastName"),
    ("email", "Email"),
    ("phone", "Phone"),
    ("mobile", "MobilePhone"),
    ("title", "Title"),
    ("department", "Department"),
    ("street", "MailingStreet"),
    ("city", "MailingCity"),
    ("region", "MailingState"),
    ("postal_code", "MailingPostalCode"),
    ("country", "MailingCountry"),
    ("notes", "Description"),
];

/// The canonical contact fields this adapter stores (every one but `company`).
pub const CONTACT_FIELDS: &[&str] = &[
    "given_name",
    "family_name",
    "email",
    "phone",
    "mobile",
    "title",
    "department",
    "street",
    "city",
    "region",
    "postal_code",
    "country",
    "notes",
];

/// The Salesforce field of a canonical contact field.
pub fn contact_field(canon: &str) -> Option<&'static str> {
    CONTACT_MAP.iter().find(|(c, _)| *c == canon).map(|(_, f)| *f)
}

const EVENT_READ: &str = "Subject, StartDateTime, EndDateTime, IsAllDayEvent, ActivityDate, DurationInMinutes, Location, Description, IsPrivate, ShowAs, WhoId, Who.Email";

/// The SELECT list of a kind (system fields first).
pub fn select_list(kind: Kind, key_field: &str) -> String {
    let fields = match kind {
        Kind::Contact => CONTACT_MAP.iter().map(|(_, f)| *f).collect::<Vec<_>>().join(", "),
        Kind::Event => EVENT_READ.to_owned(),
    };
    format!("Id, OwnerId, SystemModstamp, LastModifiedDate, {key_field}, {fields}")
}

/// The sObject type of a kind.
pub fn sobject(kind: Kind) -> &'static str {
    match kind {
        Kind::Contact => "Contact",
        Kind::Event => "Event",
    }
}

/// Parse a Salesforce timestamp (`2026-01-02T10:00:00.000+0000`, or RFC 3339).
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z"))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn s(row: &Value, f: &str) -> Option<String> {
    row.get(f).and_then(Value::as_str).map(str::to_owned)
}

/// A record row of a query → an [`Item`], or why it cannot be read.
pub fn item_from_row(kind: Kind, row: &Value, key_field: &str) -> Result<Item, String> {
    let id = s(row, "Id").ok_or("record without Id")?;
    let version = s(row, "SystemModstamp").ok_or("record without SystemModstamp")?;
    let record = match kind {
        Kind::Contact => Record::Contact(Contact {
            given_name: s(row, "FirstName"),
            family_name: s(row, "LastName"),
            emails: s(row, "Email").into_iter().collect(),
            phone: s(row, "Phone"),
            mobile: s(row, "MobilePhone"),
            company: None,
            title: s(row, "Title"),
            department: s(row, "Department"),
            address: PostalAddress {
                street: s(row, "MailingStreet"),
                city: s(row, "MailingCity"),
                region: s(row, "MailingState"),
                postal_code: s(row, "MailingPostalCode"),
                country: s(row, "MailingCountry"),
            },
            notes: s(row, "Description"),
            categories: vec![],
        }),
        Kind::Event => {
            let all_day = row.get("IsAllDayEvent").and_then(Value::as_bool).unwrap_or(false);
            let (start, end) = if all_day {
                let day = s(row, "ActivityDate")
                    .and_then(|d| NaiveDate::parse_from_str(&d, "%Y-%m-%d").ok())
                    .ok_or("all-day event without a valid ActivityDate")?;
                let minutes = row.get("DurationInMinutes").and_then(Value::as_i64).unwrap_or(1440);
                let days = ((minutes + 1439) / 1440).max(1);
                (EventTime::Date(day), EventTime::Date(day + Duration::days(days)))
            } else {
                let st = s(row, "StartDateTime")
                    .and_then(|t| parse_time(&t))
                    .ok_or("event without a valid StartDateTime")?;
                let en =
                    s(row, "EndDateTime").and_then(|t| parse_time(&t)).ok_or("event without a valid EndDateTime")?;
                (EventTime::At(st), EventTime::At(en))
            };
            let who_email = row.get("Who").and_then(|w| w.get("Email")).and_then(Value::as_str).map(str::to_owned);
            Record::Event(Event {
                subject: s(row, "Subject"),
                start,
                end,
                time_zone: None,
                location: s(row, "Location"),
                description: s(row, "Description"),
                attendees: who_email.into_iter().collect(),
                organizer: None,
                private: row.get("IsPrivate").and_then(Value::as_bool).unwrap_or(false),
                categories: vec![],
                series_id: None,
                ical_uid: None,
                cancelled: false,
            })
        }
    };
    Ok(Item {
        id,
        version,
        sync_key: s(row, key_field).filter(|k| !k.is_empty()).map(SyncKey),
        modified: s(row, "LastModifiedDate").and_then(|t| parse_time(&t)),
        record,
    })
}

fn opt(v: Option<String>) -> Value {
    v.map(Value::String).unwrap_or(Value::Null)
}

/// The Salesforce fields for the canonical `fields` of `record` (all of them when `None`);
/// absent values are `null` in updates and left out in creates.
pub fn fields_json(record: &Record, fields: Option<&[String]>, create: bool) -> Map<String, Value> {
    let mut out = Map::new();
    let wanted = |f: &str| fields.is_none_or(|fs| fs.iter().any(|x| x == f));
    match record {
        Record::Contact(_) => {
            for (canon, sf) in CONTACT_MAP {
                if wanted(canon) {
                    let v = opt(record.field(canon));
                    if !(create && v.is_null()) {
                        out.insert((*sf).to_owned(), v);
                    }
                }
            }
        }
        Record::Event(e) => {
            if wanted("subject") && !(create && e.subject.is_none()) {
                out.insert("Subject".into(), opt(e.subject.clone()));
            }
            if wanted("location") && !(create && e.location.is_none()) {
                out.insert("Location".into(), opt(e.location.clone()));
            }
            if wanted("description") && !(create && e.description.is_none()) {
                out.insert("Description".into(), opt(e.description.clone()));
            }
            if wanted("private") {
                out.insert("IsPrivate".into(), json!(e.private));
            }
            if wanted("start") || wanted("end") {
                match (e.start, e.end) {
                    (EventTime::Date(a), end) => {
                        let end_day = match end {
                            EventTime::Date(b) => b,
                            EventTime::At(t) => t.date_naive(),
                        };
                        let days = (end_day - a).num_days().max(1);
                        out.insert("IsAllDayEvent".into(), json!(true));
                        out.insert("ActivityDate".into(), json!(a.format("%Y-%m-%d").to_string()));
                        out.insert("DurationInMinutes".into(), json!(days * 1440));
                    }
                    (start, end) => {
                        out.insert("IsAllDayEvent".into(), json!(false));
                        out.insert(
                            "StartDateTime".into(),
                            json!(start.instant().to_rfc3339_opts(SecondsFormat::Secs, true)),
                        );
                        out.insert(
                            "EndDateTime".into(),
                            json!(end.instant().to_rfc3339_opts(SecondsFormat::Secs, true)),
                        );
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_rows_round_trip_timed_and_all_day() {
        let row = json!({"Id":"00U000000000001AAA","SystemModstamp":"2026-01-02T10:00:00.000+0000",
            "Subject":"Kickoff","IsAllDayEvent":false,"StartDateTime":"2026-01-02T10:00:00.000+0000",
            "EndDateTime":"2026-01-02T11:00:00.000+0000","IsPrivate":true});
        let it = item_from_row(Kind::Event, &row, "CrmSync_Key__c").unwrap();
        let e = it.record.as_event().unwrap();
        assert_eq!(e.start.instant().to_rfc3339(), "2026-01-02T10:00:00+00:00");
        assert!(e.private);
        let row = json!({"Id":"00U000000000001AAA","SystemModstamp":"x","IsAllDayEvent":true,
            "ActivityDate":"2026-03-01","DurationInMinutes":2880});
        let it = item_from_row(Kind::Event, &row, "CrmSync_Key__c").unwrap();
        let j = fields_json(&it.record, None, true);
        assert_eq!(j["ActivityDate"], "2026-03-01");
        assert_eq!(j["DurationInMinutes"], 2880);
    }
}
