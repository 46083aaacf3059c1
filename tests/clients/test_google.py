"""google-api-python-client (static discovery documents) against the sandbox over HTTPS."""

import datetime

import pytest
from google.oauth2.credentials import Credentials
from googleapiclient.discovery import build
from googleapiclient.errors import HttpError



def services(sb):
    g = sb.info["google"]
    creds = Credentials(None, refresh_token=sb.info["google_grant"], token_uri=g["token_url"],
                        client_id=g["client_id"], client_secret=g["client_secret"])
    people = build("people", "v1", credentials=creds, static_discovery=True,
                   client_options={"api_endpoint": g["base_url"] + "/"})
    calendar = build("calendar", "v3", credentials=creds, static_discovery=True,
                     client_options={"api_endpoint": g["calendar_url"] + "/"})
    return people, calendar


def connections(people, **kw):
    """Every connection, page by page; the last page's sync token."""
    out, token, resp = [], None, {}
    while True:
        resp = people.people().connections().list(resourceName="people/me", personFields="names,emailAddresses",
                                                  pageSize=2, pageToken=token, **kw).execute()
        out += resp.get("connections", [])
        token = resp.get("nextPageToken")
        if not token:
            return out, resp.get("nextSyncToken")


def test_people_batch_create_read_update_delete_and_sync_token(fresh):
    people, _ = services(fresh)
    before, sync = connections(people, requestSyncToken=True)
    assert sync, "GET people/me/connections?requestSyncToken=true: no nextSyncToken"
    made = people.people().batchCreateContacts(body={
        "contacts": [{"contactPerson": {"names": [{"givenName": "Pia", "familyName": "Sdk"}],
                                        "emailAddresses": [{"value": "pia.sdk@example.com"}]}}],
        "readMask": "names,emailAddresses"}).execute()
    person = made["createdPeople"][0]["person"]
    rn = person["resourceName"]
    got = people.people().get(resourceName=rn, personFields="names,metadata").execute()
    assert got["names"][0]["familyName"] == "Sdk", f"GET {rn}: {got}"
    changed, _ = connections(people, syncToken=sync)
    assert [p["resourceName"] for p in changed] == [rn], f"GET connections?syncToken: {changed}"
    assert len(connections(people)[0]) == len(before) + 1
    person["names"] = [{"givenName": "Pia", "familyName": "Edited"}]
    upd = people.people().batchUpdateContacts(body={"contacts": {rn: person}, "updateMask": "names",
                                                    "readMask": "names"}).execute()
    assert upd["updateResult"][rn]["person"]["names"][0]["familyName"] == "Edited", f"batchUpdateContacts: {upd}"
    with pytest.raises(HttpError) as e:
        people.people().batchUpdateContacts(body={"contacts": {rn: person}, "updateMask": "names",
                                                  "readMask": "names"}).execute()
    assert e.value.resp.status == 400, f"batchUpdateContacts with a stale etag: {e.value.resp.status}"
    people.people().batchDeleteContacts(body={"resourceNames": [rn]}).execute()
    with pytest.raises(HttpError) as e:
        people.people().get(resourceName=rn, personFields="names").execute()
    assert e.value.resp.status == 404, f"GET deleted {rn}: {e.value.resp.status}"


def test_calendar_insert_get_patch_with_etag_delete(fresh):
    _, cal = services(fresh)
    start = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(days=2)
    ev = cal.events().insert(calendarId="primary", body={
        "summary": "SDK meeting", "start": {"dateTime": start.isoformat()},
        "end": {"dateTime": (start + datetime.timedelta(hours=1)).isoformat()}}).execute()
    got = cal.events().get(calendarId="primary", eventId=ev["id"]).execute()
    assert got["summary"] == "SDK meeting", f"GET events/{ev['id']}: {got}"
    req = cal.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "Moved"})
    req.headers["If-Match"] = got["etag"]
    assert req.execute()["summary"] == "Moved"
    stale = cal.events().patch(calendarId="primary", eventId=ev["id"], body={"summary": "Lost"})
    stale.headers["If-Match"] = got["etag"]
    with pytest.raises(HttpError) as e:
        stale.execute()
    assert e.value.resp.status == 412, f"PATCH events/{ev['id']} with a stale etag: {e.value.resp.status}"
    cal.events().delete(calendarId="primary", eventId=ev["id"]).execute()
    with pytest.raises(HttpError) as e:
        cal.events().get(calendarId="primary", eventId="nosuchevent").execute()
    assert e.value.resp.status == 404


def test_calendar_sync_token_and_expiry(fresh):
    _, cal = services(fresh)
    items, token, resp = [], None, {}
    while True:
        resp = cal.events().list(calendarId="primary", pageToken=token, maxResults=3).execute()
        items += resp.get("items", [])
        token = resp.get("nextPageToken")
        if not token:
            break
    sync = resp["nextSyncToken"]
    assert items, "GET events: the seeded calendar is empty"
    fresh.control("google", "POST", "faults", {"fault": {"kind": "expired_cursor"}}, expect=201)
    with pytest.raises(HttpError) as e:
        cal.events().list(calendarId="primary", syncToken=sync).execute()
    assert e.value.resp.status == 410, f"GET events?syncToken after expiry: {e.value.resp.status}"


def test_a_503_is_retried_by_the_client(fresh):
    people, _ = services(fresh)
    fresh.control("google", "POST", "faults",
                  {"fault": {"kind": "unavailable"}, "endpoint": "people.connections.list"}, expect=201)
    resp = people.people().connections().list(resourceName="people/me", personFields="names").execute(num_retries=2)
    assert "connections" in resp
    statuses = [r["status"] for r in fresh.requests_log("google", endpoint="people.connections.list")]
    assert statuses == [503, 200], f"GET people/me/connections: statuses {statuses}, expected a retried 503"
    faults = fresh.control("google", "GET", "faults", expect=200)
    assert (faults["faults"], faults["fired"]) == ([], 1), f"GET /_crmsync/faults: {faults}"


def test_calendar_update_calendar_list_and_list_filters(fresh):
    _, cal = services(fresh)
    start = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(days=2)
    times = {"start": {"dateTime": start.isoformat()}, "end": {"dateTime": (start + datetime.timedelta(hours=1)).isoformat()}}
    ev = cal.events().insert(calendarId="primary", body={"summary": "Zebra workshop", "location": "Hall 9", **times}).execute()
    upd = cal.events().update(calendarId="primary", eventId=ev["id"], body={"summary": "Zebra summit", **times}).execute()
    assert upd["summary"] == "Zebra summit" and "location" not in upd, f"PUT events/{ev['id']} (full replace): {upd}"
    with pytest.raises(HttpError) as e:
        cal.events().update(calendarId="primary", eventId=ev["id"], body={"summary": "no times"}).execute()
    assert e.value.resp.status == 400, f"PUT without start/end: {e.value.resp.status}"

    entries = cal.calendarList().list().execute()["items"]
    assert [c.get("primary") for c in entries] == [True], f"GET users/me/calendarList: {entries}"
    primary = cal.calendars().get(calendarId="primary").execute()
    assert primary["id"] == entries[0]["id"] and primary["kind"] == "calendar#calendar", f"GET calendars/primary: {primary}"

    found = cal.events().list(calendarId="primary", q="zebra summit").execute()["items"]
    assert [i["id"] for i in found] == [ev["id"]], f"GET events?q=: {found}"
    listed = cal.events().list(calendarId="primary").execute()
    since = (datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=2)).isoformat()
    cal.events().delete(calendarId="primary", eventId=ev["id"]).execute()
    changed = cal.events().list(calendarId="primary", updatedMin=since).execute()["items"]
    assert {(i["id"], i["status"]) for i in changed} >= {(ev["id"], "cancelled")}, f"GET events?updatedMin=: {changed}"
    with pytest.raises(HttpError) as e:
        cal.events().list(calendarId="primary", syncToken=listed["nextSyncToken"], updatedMin=since).execute()
    assert e.value.resp.status == 400, f"GET events?syncToken&updatedMin: {e.value.resp.status}"


def test_people_me_search_contacts_and_sort_order(fresh):
    people, _ = services(fresh)
    me = people.people().get(resourceName="people/me", personFields="names,emailAddresses").execute()
    gmail = next(r for r in fresh.info["reps"] if r["provider"] == "google")["mailbox"]
    assert me["emailAddresses"][0]["value"] == gmail, f"GET people/me: {me}"
    people.people().createContact(body={"names": [{"givenName": "Aaron", "familyName": "Zwicky"}]},
                                  personFields="names").execute()
    assert people.people().searchContacts(query="", readMask="names").execute() == {}, "the warm-up answers empty"
    hits = people.people().searchContacts(query="aaron zw", readMask="names").execute().get("results", [])
    assert [h["person"]["names"][0]["familyName"] for h in hits] == ["Zwicky"], f"GET people:searchContacts: {hits}"
    firsts = [p["names"][0]["givenName"] for p in connections(people, sortOrder="FIRST_NAME_ASCENDING")[0]
              if p.get("names") and p["names"][0].get("givenName")]
    assert firsts[0] == "Aaron" and firsts == sorted(firsts, key=str.lower), f"sortOrder=FIRST_NAME_ASCENDING: {firsts}"
