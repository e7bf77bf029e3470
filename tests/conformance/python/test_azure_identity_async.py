"""azure-identity (async, aiohttp) against fedimds. `azure.identity.aio` does not use msal: its
own request code sends identity_config keys verbatim (`resource_id=`), and its own token cache
serves repeated calls (client-protocols.md §2-§7)."""

import asyncio

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError
from azure.identity.aio import (
    ChainedTokenCredential,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)

from conftest import (
    CONTOSO_NAME,
    CONTOSO_OBJECT_ID,
    CONTOSO_RESOURCE_ID,
    FEDIMDS_IMDS_LOG_FILE,
    OTHER_TENANT,
    UNKNOWN_CLIENT_ID,
    assert_issued,
    fp,
    probes,
    require_arc,
    require_imds_address,
    resource,
    scope,
    served,
)

ALL = ["imds", "app_service", "legacy", "cloud_shell", "arc"]
USER_ASSIGNED = ["imds", "app_service", "legacy", "arc"]
ALIASES = [
    ("imds", {"client_id": CONTOSO_NAME}),
    ("imds", {"identity_config": {"object_id": CONTOSO_OBJECT_ID}}),
    ("imds", {"identity_config": {"resource_id": CONTOSO_RESOURCE_ID}}),  # sent as resource_id
    ("imds", {"identity_config": {"msi_res_id": CONTOSO_RESOURCE_ID}}),
    ("app_service", {"client_id": CONTOSO_NAME}),
    ("app_service", {"identity_config": {"object_id": CONTOSO_OBJECT_ID}}),
    ("app_service", {"identity_config": {"resource_id": CONTOSO_RESOURCE_ID}}),
    ("app_service", {"identity_config": {"mi_res_id": CONTOSO_RESOURCE_ID}}),
    ("legacy", {"client_id": CONTOSO_NAME}),  # sent as clientid
    ("arc", {"client_id": CONTOSO_NAME}),
]


def run(coroutine):
    return asyncio.run(coroutine)


async def get_token(credential, scope_):
    async with credential:
        return await credential.get_token(scope_)


def setup(env, dialect):
    if dialect == "arc":
        require_arc()
    env(dialect)


@pytest.mark.parametrize("dialect", ALL)
def test_token_is_the_one_entra_issued_and_is_cached(env, dialect):
    setup(env, dialect)
    res = resource(f"py-async-{dialect}")

    async def twice():
        async with ManagedIdentityCredential() as credential:
            before = served(res)
            first = await credential.get_token(scope(res))
            assert served(res) == before + 1
            second = await credential.get_token(scope(res))
            assert served(res) == before + 1, "the second get_token reached the daemon"
            return first, second

    first, second = run(twice())
    assert_issued(first.token, res)
    assert fp(second.token) == fp(first.token)
    # The client may recompute expires_on as its own clock plus expires_in: a second apart at most.
    assert abs(second.expires_on - first.expires_on) <= 1


@pytest.mark.parametrize(
    "dialect,kwargs", ALIASES, ids=[f"{d}-{list(k.values())[0]}" for d, k in ALIASES]
)
def test_user_assigned_aliases_select_the_target(env, dialect, kwargs):
    setup(env, dialect)
    res = resource(f"py-async-{dialect}-alias")
    token = run(get_token(ManagedIdentityCredential(**kwargs), scope(res))).token
    assert_issued(token, res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("dialect", USER_ASSIGNED)
def test_unknown_identity_is_a_clear_error(env, dialect):
    setup(env, dialect)
    credential = ManagedIdentityCredential(client_id=UNKNOWN_CLIENT_ID)
    with pytest.raises(ClientAuthenticationError, match="Identity not found"):
        run(get_token(credential, scope(resource("py-async-unknown"))))


def test_unknown_identity_on_imds_is_unavailable(env):
    # A 400 from IMDS means "no such identity here": unavailable, so a chain moves on.
    env("imds")
    credential = ManagedIdentityCredential(client_id=UNKNOWN_CLIENT_ID)
    with pytest.raises(CredentialUnavailableError, match="Identity not found"):
        run(get_token(credential, scope(resource("py-async-unknown"))))


@pytest.mark.parametrize("dialect", ["app_service", "legacy"])
def test_wrong_secret_is_a_clear_error(env, dialect):
    env(dialect, secret="not-the-daemons-secret-at-all")
    with pytest.raises(ClientAuthenticationError, match="not the one this endpoint expects"):
        run(get_token(ManagedIdentityCredential(), scope(resource("py-async-wrong-secret"))))


def test_cloud_shell_refuses_user_assigned_client_side(env):
    env("cloud_shell")
    with pytest.raises(ValueError, match="(?i)cloud shell"):
        run(get_token(ManagedIdentityCredential(client_id=CONTOSO_NAME), scope(resource("x"))))


@pytest.mark.parametrize("chain", ["DefaultAzureCredential", "ChainedTokenCredential"])
def test_default_chain_probes_imds_then_gets_the_token(env, chain):
    require_imds_address()
    res = resource(f"py-async-probe-{chain}")
    probes_before = probes(FEDIMDS_IMDS_LOG_FILE)
    served_before = served(res, FEDIMDS_IMDS_LOG_FILE)

    async def main():
        if chain == "DefaultAzureCredential":
            credential = DefaultAzureCredential()
        else:
            credential = ChainedTokenCredential(ManagedIdentityCredential())
        return await get_token(credential, scope(res))

    token = run(main()).token
    assert probes(FEDIMDS_IMDS_LOG_FILE) == probes_before + 1
    assert served(res, FEDIMDS_IMDS_LOG_FILE) == served_before + 1
    assert_issued(token, res)


@pytest.mark.parametrize("token_credentials,probed", [
    (None, 1),
    ("ManagedIdentityCredential", 0),  # the chain is that credential alone: it skips the probe
    ("prod", 1),  # a subset of the chain with more than one credential still probes
])
def test_azure_token_credentials_decides_the_probe(env, monkeypatch, token_credentials, probed):
    require_imds_address()
    if token_credentials:
        monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", token_credentials)
    res = resource(f"py-async-token-credentials-{token_credentials}")
    probes_before = probes(FEDIMDS_IMDS_LOG_FILE)
    served_before = served(res, FEDIMDS_IMDS_LOG_FILE)

    async def main():
        return await get_token(DefaultAzureCredential(), scope(res))

    token = run(main()).token
    assert probes(FEDIMDS_IMDS_LOG_FILE) == probes_before + probed
    assert served(res, FEDIMDS_IMDS_LOG_FILE) == served_before + 1
    assert_issued(token, res)
