"""msgraph-sdk (Kiota) against the sandbox over HTTPS: the loopback host is allowed explicitly,
the app token comes from the fake's token endpoint, and the SDK's default middleware (its retry
handler among them) is kept."""

import asyncio
import urllib.parse

import httpx
import pytest
import requests
from kiota_abstractions.api_error import APIError
from kiota_abstractions.authentication import (AccessTokenProvider, AllowedHostsValidator,
                                               BaseBearerTokenAuthenticationProvider)
from msgraph import GraphRequestAdapter, GraphServiceClient
from msgraph.generated.models.contact import Contact
from msgraph.generated.models.email_address import EmailAddress
from msgraph_core import GraphClientFactory


def app_token(graph):
    r = requests.post(graph["token_url"], data={"grant_type": "client_credentials", "client_id": graph["client_id"],
                                                "client_secret": graph["client_secret"],
                                                "scope": "https://graph.microsoft.com/.default"}, timeout=10)
    assert r.status_code == 200, f"POST {graph['token_url']}: {r.status_code} {r.text}"
    return r.json()["access_token"]


class AppToken(AccessTokenProvider):
    def __init__(self, graph):
        self.graph = graph
        self.hosts = AllowedHostsValidator([urllib.parse.urlparse(graph["graph_url"]).netloc])

    async def get_authorization_token(self, uri, additional_authentication_context=None):
        return app_token(self.graph)

    def get_allowed_hosts_validator(self):
        return self.hosts


def client(sb):
    graph = sb.info["graph"]
    http = GraphClientFactory.create_with_default_middleware(client=httpx.AsyncClient(verify=sb.ca))
    adapter = GraphRequestAdapter(BaseBearerTokenAuthenticationProvider(AppToken(graph)), client=http)
    adapter.base_url = graph["graph_url"]
    return GraphServiceClient(request_adapter=adapter)


def mailbox(sb):
    return next(r for r in sb.info["reps"] if r["provider"] == "exchange")["mailbox"]


def test_contact_create_read_update_delete(fresh):
    async def run():
        g = client(fresh).users.by_user_id(mailbox(fresh))
        made = await g.contacts.post(Contact(given_name="Gia", surname="Sdk",
                                             email_addresses=[EmailAddress(address="gia.sdk@example.com")]))
        assert made.id and made.change_key, f"POST users/{{id}}/contacts: {made}"
        got = await g.contacts.by_contact_id(made.id).get()
        assert (got.given_name, got.surname) == ("Gia", "Sdk"), f"GET contacts/{made.id}: {got}"
        upd = await g.contacts.by_contact_id(made.id).patch(Contact(job_title="Buyer"))
        assert upd.job_title == "Buyer" and upd.change_key != made.change_key, "PATCH contacts: change key kept"
        await g.contacts.by_contact_id(made.id).delete()
        with pytest.raises(APIError) as e:
            await g.contacts.by_contact_id(made.id).get()
        assert e.value.response_status_code == 404, f"GET a deleted contact: {e.value.response_status_code}"
    asyncio.run(run())


def test_a_429_is_retried_by_the_sdk_retry_handler(fresh):
    fresh.control("graph", "POST", "faults",
                  {"fault": {"kind": "too_many_requests", "retry_after_ms": 200}, "endpoint": "contactFolders"},
                  expect=201)

    async def run():
        return await client(fresh).users.by_user_id(mailbox(fresh)).contact_folders.get()
    folders = asyncio.run(run())
    assert any(f.display_name == "Salesforce_Sync" for f in folders.value), "GET contactFolders"
    statuses = [r["status"] for r in fresh.requests_log("graph", endpoint="contactFolders")]
    assert statuses == [429, 200], f"GET contactFolders: statuses {statuses}, expected a retried 429"
    faults = fresh.control("graph", "GET", "faults", expect=200)
    assert (faults["faults"], faults["fired"]) == ([], 1), f"GET /_crmsync/faults: {faults}"


def test_stale_etag_batch_and_delta_over_rest(fresh):
    graph = fresh.info["graph"]
    h = {"Authorization": f"Bearer {app_token(graph)}"}
    base = f"{graph['graph_url']}/users/{mailbox(fresh)}"
    made = requests.post(f"{base}/contacts", json={"givenName": "Eta", "surname": "Sdk"}, headers=h, timeout=10).json()
    ok = requests.patch(f"{base}/contacts/{made['id']}", json={"jobTitle": "a"},
                        headers={**h, "If-Match": made["@odata.etag"]}, timeout=10)
    assert ok.status_code == 200, f"PATCH contacts with the current etag: {ok.status_code} {ok.text}"
    stale = requests.patch(f"{base}/contacts/{made['id']}", json={"jobTitle": "b"},
                           headers={**h, "If-Match": made["@odata.etag"]}, timeout=10)
    assert stale.status_code == 412, f"PATCH contacts with a stale etag: {stale.status_code} {stale.text}"
    batch = requests.post(f"{graph['graph_url']}/$batch", headers=h, timeout=10, json={"requests": [
        {"id": "1", "method": "GET", "url": f"/users/{mailbox(fresh)}/contacts/{made['id']}"},
        {"id": "2", "method": "GET", "url": f"/users/{mailbox(fresh)}/contacts/nosuchid"}]}).json()
    statuses = {r["id"]: r["status"] for r in batch["responses"]}
    assert statuses == {"1": 200, "2": 404}, f"POST $batch: {batch}"
    folders = requests.get(f"{base}/contactFolders", headers=h, timeout=10).json()["value"]
    fid = next(f["id"] for f in folders if f["displayName"] == "Salesforce_Sync")
    url, seen = f"{base}/contactFolders/{fid}/contacts/delta", 0
    while True:
        page = requests.get(url, headers=h, timeout=10).json()
        assert "value" in page, f"GET {url}: {page}"
        seen += len(page["value"])
        if "@odata.deltaLink" in page:
            break
        url = page["@odata.nextLink"]
    assert seen > 0 and page["@odata.deltaLink"].startswith("https://"), f"delta: {seen} items, {page}"
    again = requests.get(page["@odata.deltaLink"], headers=h, timeout=10).json()
    assert again["value"] == [], f"GET the delta link with nothing changed: {again['value']}"


def test_a_user_by_principal_name_and_by_id(fresh):
    async def run():
        c = client(fresh)
        by_upn = await c.users.by_user_id(mailbox(fresh)).get()
        by_id = await c.users.by_user_id(by_upn.id).get()
        return by_upn, by_id
    by_upn, by_id = asyncio.run(run())
    assert by_upn.user_principal_name == mailbox(fresh), f"GET users/{{upn}}: {by_upn.user_principal_name}"
    assert (by_id.id, by_id.mail) == (by_upn.id, mailbox(fresh)), "GET users/{id} names another user"


def test_generated_display_name_and_orderby(fresh):
    from kiota_abstractions.base_request_configuration import RequestConfiguration
    from msgraph.generated.users.item.contacts.contacts_request_builder import ContactsRequestBuilder

    async def run():
        g = client(fresh).users.by_user_id(mailbox(fresh))
        made = await g.contacts.post(Contact(given_name="Ola", surname="Zimmer"))
        query = ContactsRequestBuilder.ContactsRequestBuilderGetQueryParameters(orderby=["displayName desc"], top=100)
        listed = await g.contacts.get(request_configuration=RequestConfiguration(query_parameters=query))
        return made, listed
    made, listed = asyncio.run(run())
    assert (made.display_name, made.file_as) == ("Ola Zimmer", ""), \
        f"POST contacts from givenName + surname: displayName {made.display_name!r}, fileAs {made.file_as!r}"
    names = [c.display_name for c in listed.value]
    assert "Ola Zimmer" in names and names == sorted(names, key=str.lower, reverse=True), \
        f"GET contacts?$orderby=displayName desc: {names}"
