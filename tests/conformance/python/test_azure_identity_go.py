"""Go azidentity (v1.15.0, with msal-go v1.10.1), through the CLI in tests/conformance/go. Its
ManagedIdentityCredential sends IMDS requests only to the fixed 169.254.169.254 (it never reads
AZURE_POD_IDENTITY_AUTHORITY_HOST), so IMDS runs only inside the suite's network namespace;
App Service through IDENTITY_ENDPOINT + IDENTITY_HEADER. DefaultAzureCredential first probes
IMDS without a Metadata header, unless AZURE_TOKEN_CREDENTIALS names ManagedIdentityCredential
alone (docs/client-protocols.md, "Go azidentity and msal-go")."""

import pytest

from conftest import (
    AZURE_IDENTITY_GO,
    CONTOSO_NAME,
    CONTOSO_OBJECT_ID,
    CONTOSO_RESOURCE_ID,
    FEDIMDS_IMDS_LOG_FILE,
    FEDIMDS_URL,
    OTHER_TENANT,
    UNKNOWN_CLIENT_ID,
    assert_issued,
    client_tokens,
    dialect_env,
    fp,
    probes,
    require_arc,
    require_imds_address,
    resource,
    run_client,
    scope,
    served,
)


# One function per dialect: the environment that points azidentity at it, and the daemon log
# that records its requests. (Service Fabric, with IDENTITY_SERVER_THUMBPRINT, comes with the
# daemon's Service Fabric listener: a `service_fabric` entry here.)
def imds_env(**_):
    require_imds_address()
    return {}  # azidentity goes to 169.254.169.254 whatever the environment says


def app_service_env(**kwargs):
    return dialect_env("app_service", **kwargs)


def legacy_env(**kwargs):
    return dialect_env("legacy", **kwargs)  # msal-go's "Azure ML": 2017-09-01, secret, clientid


def cloud_shell_env(**kwargs):
    return dialect_env("cloud_shell", **kwargs)


def arc_env(**kwargs):
    require_arc()
    return dialect_env("arc", **kwargs)


DIALECTS = {
    "imds": imds_env,
    "app_service": app_service_env,
    "legacy": legacy_env,
    "cloud_shell": cloud_shell_env,
    "arc": arc_env,
}


def log_for(dialect):
    return FEDIMDS_IMDS_LOG_FILE if dialect == "imds" else None


def go(scope_, env_, *args):
    return run_client(AZURE_IDENTITY_GO, scope_, env_, *args)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_token_is_the_one_entra_issued_and_is_cached(dialect):
    env = DIALECTS[dialect]()
    res = resource(f"go-{dialect}")
    before = served(res, log_for(dialect))
    first, second = client_tokens(go(scope(res), env, "--repeat", "2"))
    assert served(res, log_for(dialect)) == before + 1, "the second GetToken reached the daemon"
    assert_issued(first["token"], res)
    assert (fp(second["token"]), second["expires_on"]) == (fp(first["token"]), first["expires_on"])


@pytest.mark.parametrize("dialect,flag,value", [
    ("imds", "--client-id", CONTOSO_NAME),
    ("imds", "--object-id", CONTOSO_OBJECT_ID),
    ("imds", "--resource-id", CONTOSO_RESOURCE_ID),  # sent as msi_res_id
    ("app_service", "--client-id", CONTOSO_NAME),
    ("app_service", "--object-id", CONTOSO_OBJECT_ID),
    ("app_service", "--resource-id", CONTOSO_RESOURCE_ID),  # sent as mi_res_id
])
def test_user_assigned_aliases_select_the_target(dialect, flag, value):
    env = DIALECTS[dialect]()
    res = resource(f"go-{dialect}-alias")
    [got] = client_tokens(go(scope(res), env, flag, value))
    assert_issued(got["token"], res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("dialect", ["imds", "app_service"])
def test_unknown_identity_is_a_clear_error(dialect):
    env = DIALECTS[dialect]()
    done = go(scope(resource("go-unknown")), env, "--client-id", UNKNOWN_CLIENT_ID)
    assert done.returncode == 1, "the client got a token"  # never print it
    assert "Identity not found" in done.stderr, done.stderr


def test_wrong_secret_is_a_clear_error():
    env = app_service_env(secret="not-the-daemons-secret-at-all")
    done = go(scope(resource("go-wrong-secret")), env)
    assert done.returncode == 1, "the client got a token"  # never print it
    assert "not the one this endpoint expects" in done.stderr, done.stderr


def test_prefixed_endpoint_selects_the_target():
    env = app_service_env(base=f"{FEDIMDS_URL}/targets/{CONTOSO_NAME}")
    res = resource("go-prefix")
    [got] = client_tokens(go(scope(res), env))
    assert_issued(got["token"], res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("token_credentials,probed", [
    (None, 1),  # the whole chain: its ManagedIdentityCredential probes first
    ("ManagedIdentityCredential", 0),  # the chain is that credential alone: no probe
])
def test_default_chain_probes_imds_unless_told_which_credential(token_credentials, probed):
    env = imds_env()
    if token_credentials:
        env["AZURE_TOKEN_CREDENTIALS"] = token_credentials
    res = resource(f"go-default-{token_credentials or 'chain'}")
    probes_before = probes(FEDIMDS_IMDS_LOG_FILE)
    served_before = served(res, FEDIMDS_IMDS_LOG_FILE)
    [got] = client_tokens(go(scope(res), env, "--credential", "default"))
    assert probes(FEDIMDS_IMDS_LOG_FILE) == probes_before + probed
    assert served(res, FEDIMDS_IMDS_LOG_FILE) == served_before + 1
    assert_issued(got["token"], res)
