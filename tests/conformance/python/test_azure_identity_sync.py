"""azure-identity (sync) against fedimds. Its ManagedIdentityCredential sends IMDS, App Service,
Azure ML (the legacy 2017 dialect) and Arc requests through msal's ManagedIdentityClient, and
Cloud Shell and the IMDS probe through its own code (client-protocols.md §1-§7)."""

import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import (
    ChainedTokenCredential,
    CredentialUnavailableError,
    DefaultAzureCredential,
    ManagedIdentityCredential,
)

from conftest import (
    CONTOSO_NAME,
    CONTOSO_OBJECT_ID,
    CONTOSO_RESOURCE_ID,
    FEDIMDS_IMDS_LOG_FILE,
    FEDIMDS_URL,
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
# Cloud Shell has no user-assigned identities (the client refuses them), Arc only client ids
# that it sees echoed back.
USER_ASSIGNED = ["imds", "app_service", "legacy", "arc"]
# (dialect, how the credential names the identity)
ALIASES = [
    ("imds", {"client_id": CONTOSO_NAME}),
    ("imds", {"identity_config": {"object_id": CONTOSO_OBJECT_ID}}),
    ("imds", {"identity_config": {"resource_id": CONTOSO_RESOURCE_ID}}),  # sent as msi_res_id
    ("app_service", {"client_id": CONTOSO_NAME}),
    ("app_service", {"identity_config": {"object_id": CONTOSO_OBJECT_ID}}),
    ("app_service", {"identity_config": {"resource_id": CONTOSO_RESOURCE_ID}}),  # mi_res_id
    ("legacy", {"client_id": CONTOSO_NAME}),  # sent as clientid
    ("arc", {"client_id": CONTOSO_NAME}),
]


def setup(env, dialect):
    if dialect == "arc":
        require_arc()
    env(dialect)


@pytest.mark.parametrize("dialect", ALL)
def test_token_is_the_one_entra_issued_and_is_cached(env, dialect):
    setup(env, dialect)
    res = resource(f"py-sync-{dialect}")
    credential = ManagedIdentityCredential()
    before = served(res)
    first = credential.get_token(scope(res))
    assert served(res) == before + 1
    assert_issued(first.token, res)
    second = credential.get_token(scope(res))
    assert served(res) == before + 1, "the second get_token reached the daemon"
    assert fp(second.token) == fp(first.token)
    # msal re-derives expires_on from its cache entry, so it may differ by the second it took.
    assert abs(second.expires_on - first.expires_on) <= 1


@pytest.mark.parametrize(
    "dialect,kwargs", ALIASES, ids=[f"{d}-{list(k.values())[0]}" for d, k in ALIASES]
)
def test_user_assigned_aliases_select_the_target(env, dialect, kwargs):
    setup(env, dialect)
    res = resource(f"py-sync-{dialect}-alias")
    token = ManagedIdentityCredential(**kwargs).get_token(scope(res)).token
    assert_issued(token, res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("dialect", USER_ASSIGNED)
def test_unknown_identity_is_a_clear_error(env, dialect):
    setup(env, dialect)
    credential = ManagedIdentityCredential(client_id=UNKNOWN_CLIENT_ID)
    with pytest.raises(CredentialUnavailableError, match="Identity not found"):
        credential.get_token(scope(resource("py-sync-unknown")))


@pytest.mark.parametrize("dialect", ["app_service", "legacy"])
def test_wrong_secret_is_a_clear_error(env, dialect):
    env(dialect, secret="not-the-daemons-secret-at-all")
    credential = ManagedIdentityCredential()
    with pytest.raises(CredentialUnavailableError, match="not the one this endpoint expects"):
        credential.get_token(scope(resource("py-sync-wrong-secret")))


def test_cloud_shell_refuses_user_assigned_client_side(env):
    env("cloud_shell")
    with pytest.raises(ValueError, match="client_id should not be set for cloud shell"):
        ManagedIdentityCredential(client_id=CONTOSO_NAME).get_token(
            scope(resource("py-sync-cloud-shell-ua"))
        )


def test_prefixed_endpoint_selects_the_target(env):
    env("app_service", base=f"{FEDIMDS_URL}/targets/{CONTOSO_NAME}")
    res = resource("py-sync-prefix")
    token = ManagedIdentityCredential().get_token(scope(res)).token
    assert_issued(token, res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("chain", ["DefaultAzureCredential", "ChainedTokenCredential"])
def test_default_chain_probes_imds_then_gets_the_token(env, chain):
    # No AZURE_POD_IDENTITY_AUTHORITY_HOST: the chain probes 169.254.169.254 without Metadata
    # first (the daemon answers 400 "Required metadata header not specified" at once), then
    # asks for the token.
    require_imds_address()
    res = resource(f"py-sync-probe-{chain}")
    if chain == "DefaultAzureCredential":
        credential = DefaultAzureCredential()
    else:
        credential = ChainedTokenCredential(ManagedIdentityCredential())
    probes_before = probes(FEDIMDS_IMDS_LOG_FILE)
    served_before = served(res, FEDIMDS_IMDS_LOG_FILE)
    token = credential.get_token(scope(res)).token
    assert probes(FEDIMDS_IMDS_LOG_FILE) == probes_before + 1
    assert served(res, FEDIMDS_IMDS_LOG_FILE) == served_before + 1
    assert_issued(token, res)


def test_unknown_identity_in_a_chain_is_unavailable(env):
    # A 400 makes the chain move on: the credential reports itself unavailable.
    env("imds")
    credential = ChainedTokenCredential(ManagedIdentityCredential(client_id=UNKNOWN_CLIENT_ID))
    with pytest.raises(ClientAuthenticationError, match="Identity not found"):
        credential.get_token(scope(resource("py-sync-chain-unknown")))
    # Raised by ManagedIdentityCredential itself as "unavailable", not as a hard failure:
    with pytest.raises(CredentialUnavailableError):
        ManagedIdentityCredential(client_id=UNKNOWN_CLIENT_ID).get_token(
            scope(resource("py-sync-chain-unknown"))
        )


@pytest.mark.parametrize("token_credentials,probed", [
    (None, 1),
    ("ManagedIdentityCredential", 0),  # the chain is that credential alone: it skips the probe
    ("prod", 1),  # a subset of the chain with more than one credential still probes
])
def test_azure_token_credentials_decides_the_probe(env, monkeypatch, token_credentials, probed):
    require_imds_address()
    if token_credentials:
        monkeypatch.setenv("AZURE_TOKEN_CREDENTIALS", token_credentials)
    res = resource(f"py-sync-token-credentials-{token_credentials}")
    probes_before = probes(FEDIMDS_IMDS_LOG_FILE)
    served_before = served(res, FEDIMDS_IMDS_LOG_FILE)
    token = DefaultAzureCredential().get_token(scope(res)).token
    assert probes(FEDIMDS_IMDS_LOG_FILE) == probes_before + probed
    assert served(res, FEDIMDS_IMDS_LOG_FILE) == served_before + 1
    assert_issued(token, res)
