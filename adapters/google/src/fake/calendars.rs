//! The calendar resources around the events of the fake's one calendar per user:
//! `calendarList.list` / `.get` (`users/me/calendarList[/{calendarId}]`), `calendars.get`
//! (`calendars/{calendarId}`), and the `q` and `updatedMin` filters of `events.list`.

use chrono::{DateTime, Duration, Utc};
use crmsync_fake::Reply;
use serde_json::{Value, json};

use super::routes::{calendar_error, parse_rfc3339};

/// How far back `updatedMin` may reach before the list answers 410 `updatedMinTooLongAgo`
/// (the service publishes no figure; this is the fake's).
pub(crate) const UPDATED_MIN_WINDOW_DAYS: i64 = 28;

fn not_found() -> Reply {
    calendar_error(404, "global", "notFound", "Not Found")
}

/// The user's primary calendar as a `calendarList` entry.
fn list_entry(user: &str) -> Value {
    json!({"kind": "calendar#calendarListEntry", "etag": "\"1700000000000000\"", "id": user, "summary": user,
        "timeZone": "UTC", "colorId": "14", "backgroundColor": "#9fe1e7", "foregroundColor": "#000000",
        "selected": true, "accessRole": "owner", "primary": true,
        "defaultReminders": [{"method": "popup", "minutes": 10}],
        "notificationSettings": {"notifications": [
            {"type": "eventCreation", "method": "email"}, {"type": "eventChange", "method": "email"},
            {"type": "eventCancellation", "method": "email"}, {"type": "eventResponse", "method": "email"}]},
        "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]}})
}

/// `GET users/me/calendarList`: the one calendar each user has. A `syncToken` from an earlier
/// list gives no changes (the list never changes); one of another shape or epoch gives 410.
pub(crate) fn calendar_list(user: &str, sync_token: Option<&str>, epoch: u64) -> Reply {
    let token = format!("ccl.{epoch}");
    let items = match sync_token {
        None => vec![list_entry(user)],
        Some(t) if t == token => vec![],
        Some(_) => {
            return Reply::json(
                410,
                json!({"error": {"errors": [{"domain": "calendar", "reason": "fullSyncRequired",
                "message": "Sync token is no longer valid, a full sync is required.", "locationType": "parameter", "location": "syncToken"}],
                "code": 410, "message": "Sync token is no longer valid, a full sync is required."}}),
            );
        }
    };
    Reply::json(
        200,
        json!({"kind": "calendar#calendarList", "etag": "\"p32g9nb5bt6fva0g\"", "nextSyncToken": token, "items": items}),
    )
}

/// `GET users/me/calendarList/{calendarId}`.
pub(crate) fn calendar_list_entry(user: &str, calendar: &str) -> Reply {
    if super::calendar::calendar_ok(calendar, user) { Reply::json(200, list_entry(user)) } else { not_found() }
}

/// `GET calendars/{calendarId}`.
pub(crate) fn calendar_get(user: &str, calendar: &str) -> Reply {
    if !super::calendar::calendar_ok(calendar, user) {
        return not_found();
    }
    Reply::json(
        200,
        json!({"kind": "calendar#calendar", "etag": "\"1700000000000000\"", "id": user, "summary": user,
            "timeZone": "UTC", "conferenceProperties": {"allowedConferenceSolutionTypes": ["hangoutsMeet"]}}),
    )
}

/// The `updatedMin` of a list request: `Ok(None)` without one, a 400 when it is not RFC 3339,
/// a 410 `updatedMinTooLongAgo` when older than the window.
pub(crate) fn updated_min(v: Option<&str>, now: DateTime<Utc>) -> Result<Option<DateTime<Utc>>, Reply> {
    let Some(v) = v else { return Ok(None) };
    let Some(t) = parse_rfc3339(v) else { return Err(calendar_error(400, "global", "badRequest", "Bad Request")) };
    if now - t > Duration::days(UPDATED_MIN_WINDOW_DAYS) {
        return Err(Reply::json(
            410,
            json!({"error": {"errors": [{"domain": "calendar", "reason": "updatedMinTooLongAgo",
            "message": "The requested minimum modification time lies too far in the past.", "locationType": "parameter", "location": "updatedMin"}],
            "code": 410, "message": "The requested minimum modification time lies too far in the past."}}),
        ));
    }
    Ok(Some(t))
}

/// Whether a rendered event matches the free-text query `q`: every word of it appears
/// (case-insensitively) in the summary, description, location, or an attendee's or the
/// organizer's name or address.
pub(crate) fn matches_text(event: &Value, q: &str) -> bool {
    let mut hay: Vec<String> = ["summary", "description", "location"]
        .iter()
        .filter_map(|k| event[*k].as_str())
        .map(str::to_lowercase)
        .collect();
    let people = event["attendees"].as_array().into_iter().flatten().chain(std::iter::once(&event["organizer"]));
    for p in people {
        for k in ["displayName", "email"] {
            if let Some(s) = p[k].as_str() {
                hay.push(s.to_lowercase());
            }
        }
    }
    q.split_whitespace().all(|w| {
        let w = w.to_lowercase();
        hay.iter().any(|h| h.contains(&w))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_matches_every_word_somewhere() {
        let e = json!({"summary": "Quarterly Review", "location": "Room 4",
            "attendees": [{"email": "bo@example.com", "displayName": "Bo Li"}], "organizer": {"email": "ann@example.com"}});
        assert!(matches_text(&e, "quarterly"));
        assert!(matches_text(&e, "review BO"));
        assert!(matches_text(&e, "ann@example.com"));
        assert!(!matches_text(&e, "review planning"));
    }

    #[test]
    fn updated_min_has_a_window() {
        let now = Utc::now();
        assert!(updated_min(None, now).unwrap().is_none());
        assert!(updated_min(Some("2020-01-01"), now).is_err());
        let old = (now - Duration::days(UPDATED_MIN_WINDOW_DAYS + 1)).to_rfc3339();
        assert_eq!(updated_min(Some(&old), now).unwrap_err().status, 410);
        assert!(updated_min(Some(&now.to_rfc3339()), now).unwrap().is_some());
    }
}
