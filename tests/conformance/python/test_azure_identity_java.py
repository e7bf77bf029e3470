"""Java azure-identity (1.18.4 from azure-sdk-bom 1.3.8, with msal4j 1.23.1), through the CLI in
tests/conformance/java. Its ManagedIdentityCredential goes through msal4j's
ManagedIdentityApplication, whose IMDS source honours AZURE_POD_IDENTITY_AUTHORITY_HOST (and
else asks 169.254.169.254) and whose App Service source reads IDENTITY_ENDPOINT +
IDENTITY_HEADER (docs/client-protocols.md, "Java azure-identity and msal4j")."""

import pytest

from conftest import (
    AZURE_IDENTITY_JAVA,
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
    imds_connections,
    probes,
    require_arc,
    require_imds_address,
    resource,
    run_client,
    scope,
    served,
)


# One function per dialect: the environment that points azure-identity at it, and the daemon log
# that records its requests. (Service Fabric, with IDENTITY_SERVER_THUMBPRINT, comes with the
# daemon's Service Fabric listener: a `service_fabric` entry here.)
def imds_env(**kwargs):
    return dialect_env("imds", **kwargs)  # AZURE_POD_IDENTITY_AUTHORITY_HOST


def imds_fixed_env(**_):
    require_imds_address()
    return {}  # no variable: msal4j's default, http://169.254.169.254


def app_service_env(**kwargs):
    return dialect_env("app_service", **kwargs)


def arc_env(**kwargs):
    require_arc()
    return dialect_env("arc", **kwargs)


DIALECTS = {
    "imds": imds_env,
    "imds_fixed": imds_fixed_env,
    "app_service": app_service_env,
    "arc": arc_env,
}


def log_for(dialect):
    return FEDIMDS_IMDS_LOG_FILE if dialect == "imds_fixed" else None


def java(scope_, env_, *args):
    return run_client(AZURE_IDENTITY_JAVA, scope_, env_, *args)


@pytest.mark.parametrize("dialect", DIALECTS)
def test_token_is_the_one_entra_issued_and_is_cached(dialect):
    env = DIALECTS[dialect]()
    res = resource(f"java-{dialect}")
    before = served(res, log_for(dialect))
    first, second = client_tokens(java(scope(res), env, "--repeat", "2"))
    assert served(res, log_for(dialect)) == before + 1, "the second getToken reached the daemon"
    assert_issued(first["token"], res)
    assert fp(second["token"]) == fp(first["token"])
    # msal4j re-derives the expiry from its cache entry, so it may differ by the second it took.
    assert abs(second["expires_on"] - first["expires_on"]) <= 1


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
    res = resource(f"java-{dialect}-alias")
    [got] = client_tokens(java(scope(res), env, flag, value))
    assert_issued(got["token"], res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("dialect", ["imds", "app_service"])
def test_unknown_identity_is_a_clear_error(dialect):
    env = DIALECTS[dialect]()
    done = java(scope(resource("java-unknown")), env, "--client-id", UNKNOWN_CLIENT_ID)
    assert done.returncode == 1, "the client got a token"  # never print it
    assert "Identity not found" in done.stderr, done.stderr


def test_wrong_secret_is_a_clear_error():
    env = app_service_env(secret="not-the-daemons-secret-at-all")
    done = java(scope(resource("java-wrong-secret")), env)
    assert done.returncode == 1, "the client got a token"  # never print it
    assert "not the one this endpoint expects" in done.stderr, done.stderr


@pytest.mark.parametrize("dialect", ["imds", "app_service"])
def test_prefixed_endpoint_selects_the_target(dialect):
    env = DIALECTS[dialect](base=f"{FEDIMDS_URL}/targets/{CONTOSO_NAME}")
    res = resource(f"java-prefix-{dialect}")
    [got] = client_tokens(java(scope(res), env))
    assert_issued(got["token"], res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("token_credentials,probed", [
    (None, 1),  # the whole chain: its ManagedIdentityCredential probes first
    ("ManagedIdentityCredential", 0),  # that credential alone: no probe
])
def test_default_chain_probe_is_a_bare_connection(token_credentials, probed):
    # azure-identity's IMDS probe only opens a TCP connection to the IMDS host and closes it
    # (IdentityClient.checkIMDSAvailable): the daemon sees no header-less request, and the
    # forwarder on 169.254.169.254 sees one connection more than the token request's.
    env = imds_fixed_env()
    if token_credentials:
        env["AZURE_TOKEN_CREDENTIALS"] = token_credentials
    res = resource(f"java-default-{token_credentials or 'chain'}")
    probes_before = probes(FEDIMDS_IMDS_LOG_FILE)
    served_before = served(res, FEDIMDS_IMDS_LOG_FILE)
    connections_before = imds_connections()
    [got] = client_tokens(java(scope(res), env, "--credential", "default"))
    assert served(res, FEDIMDS_IMDS_LOG_FILE) == served_before + 1
    assert probes(FEDIMDS_IMDS_LOG_FILE) == probes_before
    assert imds_connections() == connections_before + 1 + probed
    assert_issued(got["token"], res)


def test_cloud_shell_get_is_refused_with_a_message():
    # msal4j reads MSI_ENDPOINT alone as Cloud Shell (it has no 2017 protocol), and sends it as
    # a GET with `resource` in the query (CloudShellManagedIdentitySource.java), where real
    # Cloud Shell and every other client POST a form; fedimds's /msi/token takes a GET without
    # a secret for App Service, and says which header is missing.
    done = java(scope(resource("java-cloud-shell")), dialect_env("cloud_shell"))
    assert done.returncode == 1, "the client got a token"  # never print it
    assert "The X-IDENTITY-HEADER header is missing" in done.stderr, done.stderr
