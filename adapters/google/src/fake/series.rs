//! Recurring events of the Calendar fake: a master's `recurrence` lines (`RRULE`, `EXDATE`,
//! `RDATE`) expanded by the `rrule` crate in the master's `timeZone` (so instances keep their
//! local time across DST changes); instances `{masterId}_{start}` with `recurringEventId` and
//! `originalStartTime`; changed or cancelled instances stored as exceptions under the
//! instance's id; `events.instances`.

use chrono::{DateTime, Duration, NaiveDate, SecondsFormat, Utc};
use crmsync_core::time::{self, Tz};
use serde_json::{Map, Value, json};

use super::calendar::{EventRec, render};
use super::state::User;

/// How far ahead an open-ended series is expanded.
const HORIZON_DAYS: i64 = 800;

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The id suffix of an instance starting at `t` (`YYYYMMDD` for all-day series).
fn suffix(t: &Value) -> String {
    if let Some(d) = t["date"].as_str() {
        return d.replace('-', "");
    }
    super::calendar::instant(t).map(|i| i.format("%Y%m%dT%H%M%SZ").to_string()).unwrap_or_default()
}

/// The `EventDateTime` of a start `local` in the series' zone (`date` for all-day series).
fn at(local: chrono::NaiveDateTime, tz: Tz, all_day: bool, zone: &Value) -> Value {
    if all_day {
        return json!({"date": local.date().format("%Y-%m-%d").to_string()});
    }
    let mut v = json!({"dateTime": time::local_to_utc(local, tz).with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, true)});
    if zone.is_string() {
        v["timeZone"] = zone.clone();
    }
    v
}

/// The instances of a master as `singleEvents=true` lists them: its expansion, with the
/// instances that have an exception (a stored record under the instance's id) left to that
/// record. A single event is itself.
pub(super) fn expand(user: &str, e: &EventRec, u: &User) -> Vec<Value> {
    let lines: Vec<String> = e
        .data
        .get("recurrence")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    if lines.is_empty() {
        return vec![render(user, e)];
    }
    let start = &e.data["start"];
    let all_day = start["date"].is_string();
    let zone = start["timeZone"].clone();
    let tz = zone.as_str().and_then(time::zone).unwrap_or(Tz::UTC);
    let first = if all_day {
        start["date"]
            .as_str()
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    } else {
        super::calendar::instant(start).map(|t| time::utc_to_local(t, tz))
    };
    let (Some(first), Some(s), Some(en)) =
        (first, super::calendar::instant(start), super::calendar::instant(&e.data["end"]))
    else {
        return vec![render(user, e)];
    };
    let dur = en - s;
    let until = Utc::now() + Duration::days(HORIZON_DAYS);
    let Ok(starts) = crmsync_fake::recurrence::starts(first, tz, all_day, &lines, until) else { return vec![] };
    let master = render(user, e);
    starts
        .into_iter()
        .filter_map(|local| {
            let st = at(local, tz, all_day, &zone);
            let id = format!("{}_{}", e.id, suffix(&st));
            if u.events.contains_key(&id) {
                return None; // an exception stands in for it
            }
            if e.deleted {
                return Some(json!({"kind": "calendar#event", "etag": e.etag, "id": id, "status": "cancelled",
                    "recurringEventId": e.id, "originalStartTime": st}));
            }
            let end = if all_day {
                at(local + Duration::days(dur.num_days().max(1)), tz, true, &zone)
            } else {
                let t = time::local_to_utc(local, tz) + dur;
                let mut v = json!({"dateTime": t.with_timezone(&tz).to_rfc3339_opts(SecondsFormat::Secs, true)});
                if zone.is_string() {
                    v["timeZone"] = zone.clone();
                }
                v
            };
            let mut v = master.clone();
            let o = v.as_object_mut().expect("object");
            o.remove("recurrence");
            o.insert("id".into(), json!(id));
            o.insert("start".into(), st.clone());
            o.insert("end".into(), end);
            o.insert("recurringEventId".into(), json!(e.id));
            o.insert("originalStartTime".into(), st);
            Some(v)
        })
        .collect()
}

/// The data of a new exception for the instance `inst` (as listed): its fields, its series and
/// original start, so it stays that instance when it is moved or edited.
pub(super) fn exception_data(inst: &Value) -> Map<String, Value> {
    let mut data: Map<String, Value> = inst.as_object().cloned().unwrap_or_default();
    for k in ["kind", "etag", "id", "htmlLink", "created", "updated", "creator", "sequence", "eventType"] {
        data.remove(k);
    }
    data
}

/// `events.instances`: the instances of `id` (exceptions included, cancelled ones only with
/// `showDeleted`) overlapping `[min, max)`.
pub(super) fn instances(
    user: &str,
    u: &User,
    id: &str,
    min: Option<DateTime<Utc>>,
    max: Option<DateTime<Utc>>,
    show_deleted: bool,
) -> Option<Value> {
    let e = u.events.get(id)?;
    let mut items = expand(user, e, u);
    items.extend(u.events.values().filter(|x| x.data.get("recurringEventId").and_then(Value::as_str) == Some(id)).map(
        |x| {
            let mut v = render(user, x);
            if x.deleted {
                for k in ["recurringEventId", "originalStartTime"] {
                    if let Some(val) = x.data.get(k) {
                        v[k] = val.clone();
                    }
                }
            }
            v
        },
    ));
    items.retain(|v| show_deleted || v["status"] != "cancelled");
    items.retain(|v| {
        let (Some(s), Some(en)) = (super::calendar::instant(&v["start"]), super::calendar::instant(&v["end"])) else {
            return v["status"] == "cancelled";
        };
        min.is_none_or(|m| en > m) && max.is_none_or(|m| s < m)
    });
    items.sort_by_key(|v| v["originalStartTime"].to_string());
    Some(json!({"kind": "calendar#events", "summary": user, "updated": rfc(Utc::now()), "timeZone": "UTC",
        "accessRole": "owner", "items": items}))
}
