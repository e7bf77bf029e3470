"""The Rust azure_identity crate (1.1.0-beta.1), through the tiny CLI in
tests/clients/azure-identity-rs. The crate speaks App Service, IMDS (only at the fixed
169.254.169.254, so only inside the suite's network namespace) and Arc (system-assigned only);
it refuses Cloud Shell and Azure ML (the legacy 2017 dialect) in its constructor."""

import json

import pytest

from conftest import (
    CONTOSO_NAME,
    CONTOSO_OBJECT_ID,
    CONTOSO_RESOURCE_ID,
    FEDIMDS_IMDS_LOG_FILE,
    OTHER_TENANT,
    UNKNOWN_CLIENT_ID,
    assert_issued,
    dialect_env,
    fp,
    require_arc,
    require_imds_address,
    resource,
    rust,
    scope,
    served,
)


def env_for(dialect, **kwargs):
    if dialect == "imds":
        require_imds_address()
        return {}  # the crate goes to 169.254.169.254 whatever the environment says
    if dialect == "arc":
        require_arc()
    return dialect_env(dialect, **kwargs)


def log_for(dialect):
    return FEDIMDS_IMDS_LOG_FILE if dialect == "imds" else None


def tokens(done):
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


@pytest.mark.parametrize("dialect", ["imds", "app_service", "arc"])
def test_token_is_the_one_entra_issued_and_is_cached(dialect):
    env = env_for(dialect)
    res = resource(f"rs-{dialect}")
    before = served(res, log_for(dialect))
    first, second = tokens(rust(scope(res), env, "--repeat", "2"))
    assert served(res, log_for(dialect)) == before + 1, "the second get_token reached the daemon"
    assert_issued(first["token"], res)
    assert (fp(second["token"]), second["expires_on"]) == (fp(first["token"]), first["expires_on"])


@pytest.mark.parametrize("dialect,flag,value", [
    ("imds", "--client-id", CONTOSO_NAME),
    ("imds", "--object-id", CONTOSO_OBJECT_ID),
    ("imds", "--resource-id", CONTOSO_RESOURCE_ID),  # sent as msi_res_id
    ("app_service", "--client-id", CONTOSO_NAME),
    ("app_service", "--object-id", CONTOSO_OBJECT_ID),
])
def test_user_assigned_aliases_select_the_target(dialect, flag, value):
    env = env_for(dialect)
    res = resource(f"rs-{dialect}-alias")
    [got] = tokens(rust(scope(res), env, flag, value))
    assert_issued(got["token"], res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("dialect,flag,message", [
    ("app_service", "--resource-id", "resource IDs aren't supported for App Service"),
    ("arc", "--client-id", "aren't supported for Azure Arc"),
    ("legacy", None, "Azure ML managed identity isn't supported"),
    ("cloud_shell", None, "CloudShell managed identity isn't supported"),
])
def test_what_the_crate_refuses_itself(dialect, flag, message):
    env = dialect_env(dialect)  # no daemon needed: the constructor refuses
    args = [flag, CONTOSO_RESOURCE_ID if flag == "--resource-id" else CONTOSO_NAME] if flag else []
    done = rust(scope(resource("rs-refused")), env, *args)
    assert done.returncode == 1 and message in done.stderr, done.stderr


@pytest.mark.parametrize("dialect", ["imds", "app_service"])
def test_unknown_identity_is_a_clear_error(dialect):
    env = env_for(dialect)
    done = rust(scope(resource("rs-unknown")), env, "--client-id", UNKNOWN_CLIENT_ID)
    assert done.returncode == 1, "the client got a token"  # never print it
    assert "Identity not found" in done.stderr or "has not been assigned" in done.stderr, done.stderr


def test_wrong_secret_is_a_clear_error():
    env = dialect_env("app_service", secret="not-the-daemons-secret-at-all")
    done = rust(scope(resource("rs-wrong-secret")), env)
    assert done.returncode == 1, "the client got a token"  # never print it
    assert "401" in done.stderr, done.stderr
