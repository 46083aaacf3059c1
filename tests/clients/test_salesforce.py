"""simple-salesforce against the sandbox over HTTPS, with no transport patch."""

import datetime

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (SalesforceExpiredSession, SalesforceGeneralError,
                                          SalesforceMalformedRequest, SalesforceResourceNotFound)


def sign_in(sb, session=None):
    sf = sb.info["salesforce"]
    r = requests.post(sf["token_url"], data={"grant_type": "client_credentials", "client_id": sf["client_id"],
                                             "client_secret": sf["client_secret"]}, timeout=10)
    assert r.status_code == 200, f"POST {sf['token_url']}: {r.status_code} {r.text}"
    token = r.json()
    version = sf["rest_url"].rsplit("/v", 1)[1]
    return Salesforce(instance_url=token["instance_url"], session_id=token["access_token"], version=version,
                      session=session)


def test_signs_in_over_https(fresh):
    sf = sign_in(fresh)
    assert sf.base_url.startswith("https://"), sf.base_url
    assert fresh.info["salesforce"]["base_url"].startswith("https://")


def test_contact_create_read_update_delete(fresh):
    sf = sign_in(fresh)
    created = sf.Contact.create({"LastName": "Sdk", "FirstName": "Sal", "Email": "sal.sdk@example.com"})
    assert created["success"], f"POST sobjects/Contact: {created}"
    got = sf.Contact.get(created["id"])
    assert (got["LastName"], got["Email"]) == ("Sdk", "sal.sdk@example.com"), f"GET sobjects/Contact: {got}"
    assert sf.Contact.update(created["id"], {"Title": "Buyer"}) == 204
    assert sf.Contact.get(created["id"])["Title"] == "Buyer"
    assert sf.Contact.delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get(created["id"])


def test_update_with_a_stale_if_unmodified_since_is_412(fresh):
    sf = sign_in(fresh)
    cid = sf.Contact.create({"LastName": "Stale"})["id"]
    before = datetime.datetime(2000, 1, 1, tzinfo=datetime.timezone.utc).strftime("%a, %d %b %Y %H:%M:%S GMT")
    with pytest.raises(SalesforceGeneralError) as e:
        sf.Contact.update(cid, {"Title": "x"}, headers={"If-Unmodified-Since": before})
    assert e.value.status == 412, f"PATCH sobjects/Contact/{cid} with a stale date: {e.value.status}"


def test_query_pages_and_errors(fresh):
    sf = sign_in(fresh)
    for i in range(5):
        sf.Contact.create({"LastName": f"Page{i}", "Email": f"page{i}@example.com"})
    rows = sf.query_all("SELECT Id, LastName FROM Contact WHERE LastName LIKE 'Page%'")
    assert rows["totalSize"] == 5, f"GET query: {rows['totalSize']} rows, expected 5"
    with pytest.raises(SalesforceMalformedRequest):
        sf.query("SELECT Id FROM Contact WHERE")
    with pytest.raises(SalesforceResourceNotFound):
        sf.Contact.get("003000000000000AAA")


def test_collections_batch(fresh):
    sf = sign_in(fresh)
    body = {"allOrNone": True, "records": [{"attributes": {"type": "Contact"}, "LastName": f"Batch{i}"}
                                           for i in range(3)]}
    out = sf.restful("composite/sobjects", method="POST", json=body)
    assert [r["success"] for r in out] == [True, True, True], f"POST composite/sobjects: {out}"


def test_faults_from_the_control_api(fresh):
    sf = sign_in(fresh)
    fresh.control("salesforce", "POST", "faults",
                  {"fault": {"kind": "too_many_requests", "retry_after_ms": 1000}, "endpoint": "query"}, expect=201)
    with pytest.raises(SalesforceGeneralError) as e:
        sf.query("SELECT Id FROM Contact LIMIT 1")
    assert e.value.status == 429, "GET query under a 429 fault"
    assert sf.query("SELECT Id FROM Contact LIMIT 1")["done"], "the fault fired once"
    fresh.control("salesforce", "POST", "faults", {"fault": {"kind": "expired_token"}}, expect=201)
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Contact LIMIT 1")
    log = fresh.requests_log("salesforce", status=429)
    assert len(log) == 1 and log[0]["fault"]["kind"] == "too_many_requests", log


def test_sync_carries_an_sdk_contact_to_the_mailbox(fresh):
    sf = sign_in(fresh)
    erin = next(r for r in fresh.info["reps"] if r["provider"] == "exchange")
    sf.Contact.create({"LastName": "Carried", "FirstName": "Sdk", "Email": "carried.sdk@example.com",
                       "OwnerId": erin["crm_user_id"]})
    fresh.crmsync("sync", "--all")
    graph = fresh.info["graph"]
    tok = requests.post(graph["token_url"], data={"grant_type": "client_credentials", "client_id": graph["client_id"],
                                                  "client_secret": graph["client_secret"],
                                                  "scope": "https://graph.microsoft.com/.default"}, timeout=10)
    headers = {"Authorization": f"Bearer {tok.json()['access_token']}"}
    base = f"{graph['graph_url']}/users/{erin['mailbox']}"
    folders = requests.get(f"{base}/contactFolders", headers=headers, timeout=10).json()["value"]
    fid = next(f["id"] for f in folders if f["displayName"] == "Salesforce_Sync")
    url = f"{base}/contactFolders/{fid}/contacts?$filter=surname eq 'Carried'"
    found = requests.get(url, headers=headers, timeout=10).json()
    assert [c["givenName"] for c in found.get("value", [])] == ["Sdk"], f"GET {url}: {found}"


def test_global_and_object_describe(fresh):
    sf = sign_in(fresh)
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Contact", "Event", "User"} <= names, f"GET sobjects: {sorted(names)}"
    fields = {f["name"] for f in sf.Contact.describe()["fields"]}
    assert {"Id", "LastName", "Email"} <= fields, f"GET sobjects/Contact/describe: {sorted(fields)}"


def test_object_info_aggregates_and_search(fresh):
    sf = sign_in(fresh)
    info = sf.Contact.metadata()
    assert info["objectDescribe"]["name"] == "Contact", f"GET sobjects/Contact: {info}"
    for i in range(3):
        sf.Contact.create({"LastName": "Aggr", "FirstName": f"N{i}", "Email": f"aggr{i}@example.com"})
    counted = sf.query("SELECT COUNT(Id) n FROM Contact WHERE LastName = 'Aggr'")
    assert counted["records"] == [{"attributes": {"type": "AggregateResult"}, "n": 3}], f"GET query COUNT(Id): {counted}"
    grouped = sf.query("SELECT LastName, COUNT(Id) FROM Contact WHERE LastName = 'Aggr' GROUP BY LastName")
    assert grouped["records"] == [{"attributes": {"type": "AggregateResult"}, "LastName": "Aggr", "expr0": 3}], \
        f"GET query GROUP BY: {grouped}"
    found = sf.search("FIND {aggr1@example.com} IN EMAIL FIELDS RETURNING Contact(Email, LastName)")
    assert [r["Email"] for r in found["searchRecords"]] == ["aggr1@example.com"], f"GET search: {found}"
    quick = sf.quick_search("Aggr")
    assert len(quick["searchRecords"]) == 3 and all(r["attributes"]["type"] == "Contact" for r in quick["searchRecords"])
    with pytest.raises(SalesforceMalformedRequest):
        sf.search("FIND aggr")


def test_composite_references(fresh):
    sf = sign_in(fresh)
    v = f"/services/data/v{sf.sf_version}"
    out = sf.restful("composite", method="POST", json={"allOrNone": True, "compositeRequest": [
        {"method": "POST", "url": f"{v}/sobjects/Contact", "referenceId": "made", "body": {"LastName": "Refd"}},
        {"method": "PATCH", "url": f"{v}/sobjects/Contact/@{{made.id}}", "referenceId": "titled",
         "body": {"Title": "made @{made.id}"}},
        {"method": "GET", "url": f"{v}/sobjects/Contact/@{{made.id}}", "referenceId": "got"}]})
    results = {r["referenceId"]: r for r in out["compositeResponse"]}
    made = results["made"]["body"]["id"]
    assert results["titled"]["httpStatusCode"] == 204, f"POST composite: {out}"
    assert results["got"]["body"]["Title"] == f"made {made}", f"POST composite: {out}"


def test_a_429_is_retried_by_the_requests_session_retry(fresh):
    """simple-salesforce sends through a requests session: a urllib3 Retry on it (honouring
    Retry-After) turns the fault into one more request."""
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry
    session = requests.Session()
    session.mount("https://", HTTPAdapter(max_retries=Retry(total=3, status_forcelist=[429, 503],
                                                            backoff_factor=0.1, allowed_methods=None)))
    sf = sign_in(fresh, session=session)
    fresh.control("salesforce", "POST", "faults",
                  {"fault": {"kind": "too_many_requests", "retry_after_ms": 1000}, "endpoint": "query"}, expect=201)
    assert sf.query("SELECT Id FROM Contact LIMIT 1")["done"]
    log = fresh.requests_log("salesforce", endpoint="query")
    assert [r["status"] for r in log] == [429, 200], f"GET query: {[r['status'] for r in log]}, expected a retried 429"
    assert log[0]["fault"]["kind"] == "too_many_requests"
    faults = fresh.control("salesforce", "GET", "faults", expect=200)
    assert (faults["faults"], faults["fired"]) == ([], 1), f"GET /_crmsync/faults: {faults}"
