//! Times as Graph keeps them: `dateTimeTimeZone` values in the zone they were written in
//! (Windows or IANA names), the instants they denote, and the zone a reader asks for with
//! `Prefer: outlook.timezone="…"`.

use chrono::{DateTime, NaiveDateTime, Utc};
use crmsync_core::time::{self, Tz};
use serde_json::{Value, json};

use super::state::{Req, Resp, error, fmt_dt};

/// The wall-clock time and zone of a `dateTimeTimeZone` (no zone: UTC).
pub(super) fn local(t: &Value) -> Option<(NaiveDateTime, Tz)> {
    let s = t["dateTime"].as_str()?;
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some((t.naive_utc(), Tz::UTC));
    }
    let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").ok()?;
    Some((naive, time::zone(t["timeZone"].as_str().unwrap_or("UTC"))?))
}

/// The instant a `dateTimeTimeZone` denotes.
pub(super) fn instant(t: &Value) -> Option<DateTime<Utc>> {
    local(t).map(|(n, tz)| time::local_to_utc(n, tz))
}

/// Refuse a start or end in a zone Graph does not know, as Graph does.
pub(super) fn check(body: &Value) -> Result<(), Resp> {
    for which in ["start", "end"] {
        if let Some(name) = body[which]["timeZone"].as_str()
            && time::zone(name).is_none()
        {
            return Err(error(
                400,
                "TimeZoneNotSupportedException",
                &format!(
                    "A valid TimeZone value must be specified. The following TimeZone value is not supported: '{name}'."
                ),
            ));
        }
    }
    Ok(())
}

/// `originalStartTimeZone` / `originalEndTimeZone`: the zones the event was written in.
pub(super) fn remember(v: &mut Value) {
    for (which, field) in [("start", "originalStartTimeZone"), ("end", "originalEndTimeZone")] {
        if let Some(z) = v[which]["timeZone"].as_str().map(str::to_owned) {
            v[field] = json!(z);
        }
    }
}

/// The zone of `Prefer: outlook.timezone="…"`, if the request names one Graph knows.
fn preferred(r: &Req) -> Option<(String, Tz)> {
    r.headers.iter().filter(|(n, _)| n == "prefer").flat_map(|(_, v)| v.split(',')).find_map(|p| {
        let name = p.trim().strip_prefix("outlook.timezone=")?.trim_matches('"').to_owned();
        let tz = time::zone(&name)?;
        Some((name, tz))
    })
}

/// Present a timed event's start and end in the zone the reader prefers (all-day events keep
/// their midnights: they are dates, not instants).
pub(super) fn present(v: &mut Value, r: &Req) {
    let Some((name, tz)) = preferred(r) else { return };
    if v["isAllDay"].as_bool() == Some(true) {
        for which in ["start", "end"] {
            if v[which].is_object() {
                v[which]["timeZone"] = json!(name);
            }
        }
        return;
    }
    for which in ["start", "end"] {
        if let Some(t) = instant(&v[which]) {
            v[which] = json!({"dateTime": fmt_dt(time::utc_to_local(t, tz)), "timeZone": name});
        }
    }
}

/// A Graph `patternedRecurrence` as an RFC 5545 `RRULE` line: `daily`, `weekly` (`daysOfWeek`,
/// `firstDayOfWeek`), `absoluteMonthly` (`dayOfMonth`), `relativeMonthly` (`daysOfWeek`,
/// `index` first…fourth or last), `absoluteYearly` (`month`, `dayOfMonth`), `relativeYearly`;
/// range `numbered` (COUNT), `endDate` (UNTIL, the whole day) or `noEnd`. `first` is the
/// series' first date (weekly patterns default to its weekday).
pub(super) fn rrule(rec: &Value, first: chrono::NaiveDate) -> Option<String> {
    use chrono::Datelike;
    let pat = &rec["pattern"];
    let range = &rec["range"];
    let day = |d: &str| -> Option<&'static str> {
        Some(match d.to_ascii_lowercase().as_str() {
            "monday" => "MO",
            "tuesday" => "TU",
            "wednesday" => "WE",
            "thursday" => "TH",
            "friday" => "FR",
            "saturday" => "SA",
            "sunday" => "SU",
            _ => return None,
        })
    };
    let days: Vec<&str> =
        pat["daysOfWeek"].as_array().into_iter().flatten().filter_map(Value::as_str).filter_map(day).collect();
    let ordinal = match pat["index"].as_str().unwrap_or("first") {
        "second" => "2",
        "third" => "3",
        "fourth" => "4",
        "last" => "-1",
        _ => "1",
    };
    let relative = || days.iter().map(|d| format!("{ordinal}{d}")).collect::<Vec<_>>().join(",");
    let mut parts = vec![];
    match pat["type"].as_str()? {
        "daily" => parts.push("FREQ=DAILY".to_owned()),
        "weekly" => {
            parts.push("FREQ=WEEKLY".to_owned());
            let own = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"][first.weekday().num_days_from_monday() as usize];
            let by = if days.is_empty() { vec![own] } else { days.clone() };
            parts.push(format!("BYDAY={}", by.join(",")));
            if let Some(w) = pat["firstDayOfWeek"].as_str().and_then(day) {
                parts.push(format!("WKST={w}"));
            }
        }
        "absoluteMonthly" => {
            parts.push("FREQ=MONTHLY".to_owned());
            parts.push(format!("BYMONTHDAY={}", pat["dayOfMonth"].as_u64().unwrap_or(u64::from(first.day()))));
        }
        "relativeMonthly" => {
            parts.push("FREQ=MONTHLY".to_owned());
            parts.push(format!("BYDAY={}", relative()));
        }
        "absoluteYearly" => {
            parts.push("FREQ=YEARLY".to_owned());
            parts.push(format!("BYMONTH={}", pat["month"].as_u64().unwrap_or(u64::from(first.month()))));
            parts.push(format!("BYMONTHDAY={}", pat["dayOfMonth"].as_u64().unwrap_or(u64::from(first.day()))));
        }
        "relativeYearly" => {
            parts.push("FREQ=YEARLY".to_owned());
            parts.push(format!("BYMONTH={}", pat["month"].as_u64().unwrap_or(u64::from(first.month()))));
            parts.push(format!("BYDAY={}", relative()));
        }
        _ => return None,
    }
    parts.push(format!("INTERVAL={}", pat["interval"].as_u64().unwrap_or(1).max(1)));
    match range["type"].as_str() {
        Some("numbered") => parts.push(format!("COUNT={}", range["numberOfOccurrences"].as_u64().unwrap_or(1))),
        Some("endDate") => parts.push(format!("UNTIL={}", range["endDate"].as_str()?.replace('-', ""))),
        _ => {}
    }
    Some(format!("RRULE:{}", parts.join(";")))
}
