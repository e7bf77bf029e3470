"""Service Fabric mode: IDENTITY_ENDPOINT (https) + IDENTITY_HEADER + IDENTITY_SERVER_THUMBPRINT,
as msal, azure-identity sync (through msal) and azure-identity async speak it; and token
revocation, which msal sends only here: a claims challenge makes it present the SHA-256 of the
token it holds (and its capabilities), and the daemon fetches a new one, proven against the
simulator's own records of what Entra issued and was asked."""

import asyncio
import hashlib
import json

import msal
import pytest
import requests
from azure.identity import ManagedIdentityCredential
from azure.identity.aio import ManagedIdentityCredential as AsyncManagedIdentityCredential

from conftest import (
    SECRET,
    SF_CERT,
    SF_URL,
    assert_issued,
    fp,
    resource,
    scope,
    served,
    sim_exchanges,
)

# What a resource's 401 would carry (any claims do: the endpoint never sees them).
CLAIMS_CHALLENGE = json.dumps({"access_token": {"nbf": {"essential": True, "value": "1"}}})


def msal_client(**kwargs):
    return msal.ManagedIdentityClient(
        msal.SystemAssignedManagedIdentity(), http_client=requests.Session(), **kwargs
    )


def exchanges_for(res):
    return [r for r in sim_exchanges() if r["scope"] == scope(res)]


def test_msal_pins_the_thumbprint_and_gets_the_target_token(env):
    env("service_fabric")
    res = resource("msal-service-fabric")
    mi = msal_client()
    before = served(res)
    first = mi.acquire_token_for_client(resource=res)
    assert "access_token" in first, first.get("error_description")
    assert first["token_source"] == "identity_provider"
    assert_issued(first["access_token"], res)
    second = mi.acquire_token_for_client(resource=res)
    assert second["token_source"] == "cache"
    assert served(res) == before + 1, "the second call reached the daemon"
    assert fp(second["access_token"]) == fp(first["access_token"])


def test_msal_refuses_a_certificate_that_is_not_the_thumbprint(env, monkeypatch):
    env("service_fabric")
    # The pin is what makes the generated certificate trustworthy: another thumbprint fails.
    monkeypatch.setenv("IDENTITY_SERVER_THUMBPRINT", "00" * 20)
    res = resource("msal-service-fabric-wrong-pin")
    with pytest.raises(Exception) as raised:
        msal_client().acquire_token_for_client(resource=res)
    assert "thumbprint" in str(raised.value)
    assert served(res) == 0


def test_a_wrong_secret_is_service_fabrics_error(env):
    env("service_fabric", secret="not-the-daemons-secret-at-all")
    result = msal_client().acquire_token_for_client(resource=resource("msal-sf-wrong-secret"))
    assert "access_token" not in result
    # ManagedIdentityNotFound, which msal maps to invalid_client.
    assert result["error"] == "invalid_client", result
    assert "ManagedIdentityNotFound" in result["error_description"]


def test_msal_revocation_drops_the_refused_token_once(env):
    env("service_fabric")
    res = resource("msal-sf-revocation")
    mi = msal_client(client_capabilities=["cp1"])
    first = mi.acquire_token_for_client(resource=res)
    assert "access_token" in first, first.get("error_description")
    assert_issued(first["access_token"], res)
    records = exchanges_for(res)
    assert len(records) == 1
    assert records[0]["claims"] == '{"access_token":{"xms_cc":{"values":["cp1"]}}}'

    # The resource refused T with a claims challenge: msal presents SHA-256(T) and cp1.
    refreshed = mi.acquire_token_for_client(resource=res, claims_challenge=CLAIMS_CHALLENGE)
    assert "access_token" in refreshed, refreshed.get("error_description")
    assert refreshed["token_source"] == "identity_provider"
    assert fp(refreshed["access_token"]) != fp(first["access_token"])
    assert_issued(refreshed["access_token"], res)
    assert len(exchanges_for(res)) == 2, "one Entra call for the refused token"

    # Another node presenting the same hash gets T' from the cache, with no Entra call.
    refused_hash = hashlib.sha256(first["access_token"].encode("utf-8")).hexdigest()
    reply = requests.get(
        f"{SF_URL}/metadata/identity/oauth2/token",
        params={
            "api-version": "2019-07-01-preview",
            "resource": res,
            "xms_cc": "cp1",
            "token_sha256_to_refresh": refused_hash,
        },
        headers={"Secret": SECRET},
        verify=SF_CERT,
        timeout=10,
    )
    assert reply.status_code == 200, reply.text
    assert fp(reply.json()["access_token"]) == fp(refreshed["access_token"])
    assert len(exchanges_for(res)) == 2


def test_azure_identity_sync_gets_the_token_and_a_new_one_on_claims(env):
    env("service_fabric")
    res = resource("py-sync-service-fabric")
    credential = ManagedIdentityCredential()
    first = credential.get_token(scope(res))
    assert_issued(first.token, res)
    # azure-identity passes a claims challenge to msal, which presents the token's hash.
    again = credential.get_token(scope(res), claims=CLAIMS_CHALLENGE)
    assert fp(again.token) != fp(first.token)
    assert_issued(again.token, res)
    records = exchanges_for(res)
    assert len(records) == 2
    # azure-identity asks for no capabilities: no claims went to Entra.
    assert all("claims" not in r for r in records), records


def test_azure_identity_async_gets_the_token(env):
    env("service_fabric")
    res = resource("py-async-service-fabric")

    async def run():
        async with AsyncManagedIdentityCredential() as credential:
            return await credential.get_token(scope(res))

    token = asyncio.run(run())
    assert_issued(token.token, res)
