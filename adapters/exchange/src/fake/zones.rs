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
