//! Recurring series as the calendar fakes expand them: RFC 5545 recurrence lines (`RRULE`,
//! `EXDATE`, `RDATE`) over a first start in a zone, expanded by the `rrule` crate in local
//! time, so an occurrence keeps its wall-clock time across DST changes.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use chrono_tz::Tz;

/// The most occurrences one series yields.
pub const MAX_OCCURRENCES: u16 = 5000;

/// The starts of a series whose first occurrence starts at `start` (local time in `tz`; for
/// all-day series midnight and `all_day`), with the recurrence `lines` (`RRULE:…`,
/// `EXDATE…:…`, `RDATE…:…`), up to `until` (exclusive), at most [`MAX_OCCURRENCES`].
/// Date-only values (`UNTIL=20260331`, `EXDATE;VALUE=DATE:20260310`) are read as whole days.
pub fn starts(
    start: NaiveDateTime,
    tz: Tz,
    all_day: bool,
    lines: &[String],
    until: DateTime<Utc>,
) -> Result<Vec<NaiveDateTime>, String> {
    let tz = if all_day { Tz::UTC } else { tz };
    let stamp = |t: NaiveDateTime| t.format("%Y%m%dT%H%M%S").to_string();
    let mut text = if tz == Tz::UTC {
        format!("DTSTART:{}Z", stamp(start))
    } else {
        format!("DTSTART;TZID={}:{}", tz.name(), stamp(start))
    };
    for line in lines {
        text.push('\n');
        text.push_str(&normalize(line, start, tz));
    }
    let set: rrule::RRuleSet = text.parse().map_err(|e| format!("recurrence {lines:?}: {e}"))?;
    let before = until.with_timezone(&rrule::Tz::UTC);
    let res = set.before(before).all(MAX_OCCURRENCES);
    Ok(res
        .dates
        .into_iter()
        .filter(|d| *d < before)
        .map(|d| d.with_timezone(&rrule::Tz::Tz(tz)).naive_local())
        .collect())
}

/// Date-only values as instants the crate takes: `UNTIL` at the end of its day (in UTC, as RFC
/// 5545 wants with a zoned start), `EXDATE` / `RDATE` dates at the series' time of day.
fn normalize(line: &str, start: NaiveDateTime, tz: Tz) -> String {
    let date = |s: &str| NaiveDate::parse_from_str(s, "%Y%m%d").ok();
    let zoned = |d: NaiveDate| {
        let t = d.and_time(start.time());
        if tz == Tz::UTC { format!("{}Z", t.format("%Y%m%dT%H%M%S")) } else { t.format("%Y%m%dT%H%M%S").to_string() }
    };
    if let Some(rule) = line.strip_prefix("RRULE:") {
        let parts: Vec<String> = rule
            .split(';')
            .map(|p| match p.split_once('=') {
                Some(("UNTIL", v)) => match date(v) {
                    Some(d) => {
                        let end = d.and_hms_opt(23, 59, 59).expect("valid");
                        let utc = if tz == Tz::UTC { end } else { crate_local_to_utc(end, tz) };
                        format!("UNTIL={}Z", utc.format("%Y%m%dT%H%M%S"))
                    }
                    None => p.to_owned(),
                },
                _ => p.to_owned(),
            })
            .collect();
        return format!("RRULE:{}", parts.join(";"));
    }
    for prop in ["EXDATE", "RDATE"] {
        let Some(rest) = line.strip_prefix(prop) else { continue };
        let Some((params, values)) = rest.split_once(':') else { continue };
        if params.contains("VALUE=DATE") && !params.contains("VALUE=DATE-TIME") {
            let vals: Vec<String> = values.split(',').filter_map(date).map(zoned).collect();
            let tzid = if tz == Tz::UTC { String::new() } else { format!(";TZID={}", tz.name()) };
            return format!("{prop}{tzid}:{}", vals.join(","));
        }
    }
    line.to_owned()
}

fn crate_local_to_utc(t: NaiveDateTime, tz: Tz) -> NaiveDateTime {
    use chrono::TimeZone;
    tz.from_local_datetime(&t).earliest().map_or(t, |z| z.naive_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M").unwrap()
    }
    fn far() -> DateTime<Utc> {
        "2030-01-01T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn weekly_in_new_york_keeps_its_local_time_across_dst() {
        let ny = chrono_tz::America::New_York;
        let s =
            starts(at("2026-03-02T09:00"), ny, false, &["RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=3".into()], far()).unwrap();
        assert_eq!(s, [at("2026-03-02T09:00"), at("2026-03-09T09:00"), at("2026-03-16T09:00")]);
    }

    #[test]
    fn ordinals_until_exdate_and_rdate() {
        let utc = Tz::UTC;
        // The second Tuesday of each month until the end of June, one left out, one added.
        let lines = [
            "RRULE:FREQ=MONTHLY;BYDAY=2TU;UNTIL=20260630".to_owned(),
            "EXDATE;VALUE=DATE:20260414".to_owned(),
            "RDATE:20260501T100000Z".to_owned(),
        ];
        let s = starts(at("2026-03-10T10:00"), utc, false, &lines, far()).unwrap();
        assert_eq!(s, [at("2026-03-10T10:00"), at("2026-05-01T10:00"), at("2026-05-12T10:00"), at("2026-06-09T10:00")]);
        // The last Friday of the year, yearly; all-day.
        let s = starts(
            at("2026-12-25T00:00"),
            utc,
            true,
            &["RRULE:FREQ=YEARLY;BYMONTH=12;BYDAY=-1FR;COUNT=2".into()],
            far(),
        )
        .unwrap();
        assert_eq!(s, [at("2026-12-25T00:00"), at("2027-12-31T00:00")]);
        assert!(starts(at("2026-01-01T00:00"), utc, false, &["RRULE:FREQ=SOMETIMES".into()], far()).is_err());
    }
}
