"""A scenario built from nothing: `crmsync sandbox --seed empty`, then only the control API
(users, a mailbox, a Google user, their contacts and events), the reps written into the config
as a user would, and `crmsync sync` carries the records across. This sandbox speaks plain HTTP
(the suite's other one holds the CA file)."""

import datetime

import pytest
import requests

from conftest import WORKDIR, start_sandbox, stop_sandbox

MAILBOX = "nia@contoso.example"
GMAIL = "gia@example.com"


@pytest.fixture(scope="module")
def empty():
    proc, sb = start_sandbox(WORKDIR / "empty", "--seed", "empty", tls=False)
    yield sb
    stop_sandbox(proc)


def sf_get(sb, path, **params):
    sf = sb.info["salesforce"]
    tok = requests.post(sf["token_url"], data={"grant_type": "client_credentials", "client_id": sf["client_id"],
                                               "client_secret": sf["client_secret"]}, timeout=10).json()
    r = requests.get(f"{sf['rest_url']}/{path}", params=params,
                     headers={"Authorization": f"Bearer {tok['access_token']}"}, timeout=10)
    assert r.status_code == 200, f"GET {path}: {r.status_code} {r.text}"
    return r.json()


def graph_folder_contacts(sb, mailbox, folder):
    graph = sb.info["graph"]
    tok = requests.post(graph["token_url"], data={"grant_type": "client_credentials", "client_id": graph["client_id"],
                                                  "client_secret": graph["client_secret"],
                                                  "scope": "https://graph.microsoft.com/.default"}, timeout=10).json()
    h = {"Authorization": f"Bearer {tok['access_token']}"}
    base = f"{graph['graph_url']}/users/{mailbox}"
    folders = requests.get(f"{base}/contactFolders", headers=h, timeout=10).json()["value"]
    fid = next(f["id"] for f in folders if f["displayName"] == folder)
    return requests.get(f"{base}/contactFolders/{fid}/contacts?$top=100", headers=h, timeout=10).json()["value"]


def test_an_empty_sandbox_built_over_the_control_api_then_synced(empty):
    sb = empty
    assert sb.info["reps"] == [] and sb.info["graph"]["mailboxes"] == [], "--seed empty seeds nothing"
    assert sb.control("graph", "GET", "mailboxes", expect=200) == {"mailboxes": []}
    assert sb.control("google", "GET", "users", expect=200)["users"] == []

    # Users and mailboxes first, then their records.
    nia = sb.control("salesforce", "POST", "users", {"name": "Nia Rep", "permissions": []}, expect=201)["id"]
    gia = sb.control("salesforce", "POST", "users", {"name": "Gia Rep", "permissions": []}, expect=201)["id"]
    made = sb.control("graph", "POST", "mailboxes", {"address": MAILBOX}, expect=201)
    assert made["address"] == MAILBOX and made["refresh_token"]
    grant = sb.control("google", "POST", "users", {"email": GMAIL}, expect=201)["refresh_token"]
    start = (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=3)).replace(
        minute=0, second=0, microsecond=0)
    end = start + datetime.timedelta(hours=1)
    sb.control("salesforce", "POST", "seed", {"contacts": [
        {"owner": nia, "LastName": "Crm", "FirstName": "Cara", "Email": "cara.crm@example.com"},
        {"owner": gia, "LastName": "Crmg", "FirstName": "Carl", "Email": "carl.crm@example.com"}]}, expect=201)
    sb.control("graph", "POST", "seed", {"mailboxes": [{
        "address": MAILBOX, "folders": ["Salesforce_Sync"],
        "contacts": [{"folder": "Salesforce_Sync", "givenName": "Mo", "surname": "Mail",
                      "emailAddresses": [{"address": "mo.mail@example.com"}]}],
        "events": [{"subject": "Intro call", "start": {"dateTime": start.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"},
                    "end": {"dateTime": end.strftime("%Y-%m-%dT%H:%M:%S"), "timeZone": "UTC"}}]}]}, expect=201)
    sb.control("google", "POST", "seed", {"users": [{
        "email": GMAIL, "groups": ["Salesforce Sync"],
        "contacts": [{"groups": ["Salesforce Sync"], "names": [{"givenName": "Gwen", "familyName": "Gmail"}],
                      "emailAddresses": [{"value": "gwen.gmail@example.com"}]}],
        "events": [{"summary": "Demo day", "start": {"dateTime": start.isoformat()},
                    "end": {"dateTime": end.isoformat()}}]}]}, expect=201)

    # The reps, as a user adds them to the config the sandbox wrote.
    with open(sb.config, "a", encoding="utf-8") as f:
        f.write(f'\n[[reps]]\nname = "nia"\ncrm_user_id = "{nia}"\nprovider = "exchange"\nmailbox = "{MAILBOX}"\n'
                'connection = "admin_managed"\n')
        f.write(f'\n[[reps]]\nname = "gia"\ncrm_user_id = "{gia}"\nprovider = "google"\nmailbox = "{GMAIL}"\n'
                'connection = "user_managed"\n')
    sb.env["GIA_GRANT"] = grant
    sb.crmsync("connect", "--rep", "gia", "--grant-env", "GIA_GRANT")
    sb.crmsync("sync", "--all")

    in_folder = {c["emailAddresses"][0]["address"] for c in graph_folder_contacts(sb, MAILBOX, "Salesforce_Sync")}
    assert in_folder == {"mo.mail@example.com", "cara.crm@example.com"}, f"Graph folder after sync: {in_folder}"
    owned = sf_get(sb, "query", q=f"SELECT Email, OwnerId FROM Contact WHERE Email IN "
                                   "('mo.mail@example.com', 'gwen.gmail@example.com')")["records"]
    assert {(r["Email"], r["OwnerId"]) for r in owned} == {("mo.mail@example.com", nia), ("gwen.gmail@example.com", gia)}, \
        f"Salesforce contacts after sync: {owned}"
    events = sf_get(sb, "query", q="SELECT Subject, OwnerId FROM Event")["records"]
    assert {(e["Subject"], e["OwnerId"]) for e in events} == {("Intro call", nia), ("Demo day", gia)}, \
        f"Salesforce events after sync: {events}"
    assert GMAIL in sb.control("google", "GET", "users", expect=200)["users"]

    # Reset returns to the seed (what the control API loaded), undoing the sync's writes.
    for service in ("salesforce", "graph", "google"):
        sb.control(service, "POST", "reset", expect=200)
    in_folder = {c["emailAddresses"][0]["address"] for c in graph_folder_contacts(sb, MAILBOX, "Salesforce_Sync")}
    assert in_folder == {"mo.mail@example.com"}, f"Graph folder after reset: {in_folder}"
    assert sf_get(sb, "query", q="SELECT COUNT() FROM Event")["totalSize"] == 0
