//! Time zones as the services name them, and local times turned into instants.
//!
//! Microsoft Graph names zones the Windows way (`Pacific Standard Time`), Google and CalDAV the
//! IANA way (`America/Los_Angeles`). [`zone`] resolves both: IANA names through the tz database
//! (`chrono-tz`), Windows names through the Unicode CLDR mapping (`windows-timezones`), which
//! gives each Windows zone its default IANA zone. A local time becomes an instant with the
//! rules of RFC 5545 (§3.3.5): a time that a DST change skips is read with the offset before the
//! gap (02:30 on a spring-forward night is 03:30 daylight time), a time that happens twice is
//! the first of the two.

use std::str::FromStr;

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
pub use chrono_tz::Tz;

/// Names that mean UTC, in the spellings the services use.
const UTC_NAMES: &[&str] =
    &["utc", "etc/utc", "etc/gmt", "gmt", "z", "zulu", "coordinated universal time", "tzone://microsoft/utc"];

/// The zone a service names: IANA (`Europe/Berlin`), Windows (`W. Europe Standard Time`) or a
/// name of UTC; `None` for names neither knows.
pub fn zone(name: &str) -> Option<Tz> {
    let name = name.trim();
    if UTC_NAMES.contains(&name.to_ascii_lowercase().as_str()) {
        return Some(Tz::UTC);
    }
    Tz::from_str(name).ok().or_else(|| windows_timezones::WindowsTimezone::from_str(name).ok().map(Tz::from))
}

/// The instant a wall-clock time in `tz` denotes (RFC 5545: the offset before a gap; the first
/// of two repeated times).
pub fn local_to_utc(local: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Skipped by a DST change: the offset in force before the gap (gaps are hours long).
            let before = tz.offset_from_utc_datetime(&(local - Duration::hours(6))).fix();
            (local - Duration::seconds(i64::from(before.local_minus_utc()))).and_utc()
        }
    }
}

/// The wall-clock time of `t` in `tz`.
pub fn utc_to_local(t: DateTime<Utc>, tz: Tz) -> NaiveDateTime {
    t.with_timezone(&tz).naive_local()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S").unwrap()
    }
    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn windows_and_iana_names_resolve_to_the_same_zone() {
        assert_eq!(zone("Pacific Standard Time"), Some(chrono_tz::America::Los_Angeles));
        assert_eq!(zone("America/Los_Angeles"), Some(chrono_tz::America::Los_Angeles));
        assert_eq!(zone("W. Europe Standard Time"), Some(chrono_tz::Europe::Berlin));
        assert_eq!(zone("Eastern Standard Time"), Some(chrono_tz::America::New_York));
        assert_eq!(zone("Tokyo Standard Time"), Some(chrono_tz::Asia::Tokyo));
        assert_eq!(zone(" UTC "), Some(Tz::UTC));
        assert_eq!(zone("tzone://Microsoft/Utc"), Some(Tz::UTC));
        assert_eq!(zone("Mars/Olympus_Mons"), None);
        assert_eq!(zone(""), None);
    }

    #[test]
    fn pacific_time_lands_on_the_right_instant_on_both_sides_of_dst() {
        let pst = zone("Pacific Standard Time").unwrap();
        // Standard time (UTC-8) in January, daylight time (UTC-7) after 8 March 2026.
        assert_eq!(local_to_utc(at("2026-01-15T09:00:00"), pst), utc("2026-01-15T17:00:00Z"));
        assert_eq!(local_to_utc(at("2026-03-10T09:00:00"), pst), utc("2026-03-10T16:00:00Z"));
        assert_eq!(utc_to_local(utc("2026-03-10T16:00:00Z"), pst), at("2026-03-10T09:00:00"));
    }

    #[test]
    fn skipped_and_repeated_local_times_follow_rfc_5545() {
        let ny = chrono_tz::America::New_York;
        // 8 March 2026 02:30 does not exist: read with the offset before the gap (EST, -5).
        assert_eq!(local_to_utc(at("2026-03-08T02:30:00"), ny), utc("2026-03-08T07:30:00Z"));
        assert_eq!(utc_to_local(utc("2026-03-08T07:30:00Z"), ny), at("2026-03-08T03:30:00"));
        // 1 November 2026 01:30 happens twice: the first (EDT, -4).
        assert_eq!(local_to_utc(at("2026-11-01T01:30:00"), ny), utc("2026-11-01T05:30:00Z"));
        // Zones with half-hour offsets and no DST.
        assert_eq!(
            local_to_utc(at("2026-07-01T12:00:00"), zone("India Standard Time").unwrap()),
            utc("2026-07-01T06:30:00Z")
        );
    }
}
