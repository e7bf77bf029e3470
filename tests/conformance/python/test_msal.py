"""msal's ManagedIdentityClient (the code under azure-identity sync) used directly, as apps that
depend on msal alone do. It speaks IMDS, App Service, Azure ML (the legacy 2017 dialect) and
Arc; Cloud Shell is not implemented in it (its docstring: use PublicClientApplication)."""

import msal
import pytest
import requests

from conftest import (
    CONTOSO_NAME,
    CONTOSO_OBJECT_ID,
    CONTOSO_RESOURCE_ID,
    OTHER_TENANT,
    UNKNOWN_CLIENT_ID,
    assert_issued,
    fp,
    require_arc,
    resource,
    served,
)

DIALECTS = ["imds", "app_service", "legacy", "arc"]
ALIASES = [
    ("imds", {"client_id": CONTOSO_NAME}),
    ("imds", {"object_id": CONTOSO_OBJECT_ID}),
    ("imds", {"resource_id": CONTOSO_RESOURCE_ID}),  # sent as msi_res_id
    ("app_service", {"client_id": CONTOSO_NAME}),
    ("app_service", {"object_id": CONTOSO_OBJECT_ID}),
    ("app_service", {"resource_id": CONTOSO_RESOURCE_ID}),  # sent as mi_res_id
    ("legacy", {"client_id": CONTOSO_NAME}),  # sent as clientid
    ("arc", {"client_id": CONTOSO_NAME}),
]


def client(identity=None):
    return msal.ManagedIdentityClient(
        identity or msal.SystemAssignedManagedIdentity(), http_client=requests.Session()
    )


def setup(env, dialect):
    if dialect == "arc":
        require_arc()
    env(dialect)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_token_is_the_one_entra_issued_and_is_cached(env, dialect):
    setup(env, dialect)
    res = resource(f"msal-{dialect}")
    mi = client()
    before = served(res)
    first = mi.acquire_token_for_client(resource=res)
    assert "access_token" in first, first.get("error_description")
    assert first["token_source"] == "identity_provider"
    assert served(res) == before + 1
    assert_issued(first["access_token"], res)
    second = mi.acquire_token_for_client(resource=res)
    assert second["token_source"] == "cache"
    assert served(res) == before + 1, "the second call reached the daemon"
    assert fp(second["access_token"]) == fp(first["access_token"])


@pytest.mark.parametrize(
    "dialect,ids", ALIASES, ids=[f"{d}-{list(k)[0]}" for d, k in ALIASES]
)
def test_user_assigned_aliases_select_the_target(env, dialect, ids):
    setup(env, dialect)
    res = resource(f"msal-{dialect}-alias")
    result = client(msal.UserAssignedManagedIdentity(**ids)).acquire_token_for_client(resource=res)
    assert "access_token" in result, result.get("error_description")
    assert_issued(result["access_token"], res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_unknown_identity_is_a_clear_error(env, dialect):
    setup(env, dialect)
    mi = client(msal.UserAssignedManagedIdentity(client_id=UNKNOWN_CLIENT_ID))
    result = mi.acquire_token_for_client(resource=resource("msal-unknown"))
    assert "access_token" not in result
    assert "Identity not found" in result["error_description"], result


@pytest.mark.parametrize("dialect", ["app_service", "legacy"])
def test_wrong_secret_is_a_clear_error(env, dialect):
    env(dialect, secret="not-the-daemons-secret-at-all")
    result = client().acquire_token_for_client(resource=resource("msal-wrong-secret"))
    assert "access_token" not in result
    assert "not the one this endpoint expects" in result["error_description"], result
