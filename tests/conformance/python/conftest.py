"""Shared fixtures for the conformance drivers: where the daemon and the simulator are, how to
point a client at each dialect, and the two checks every test makes:

- `assert_issued`: the token a client got is one the simulator's Entra issued, for the expected
  tenant, app and scope (the token decoded: `tid`, `appid`, `aud`; and the exchange record the
  simulator serves at `GET /_sim/exchanges`);
- `served`: how many tokens the daemon served for a resource, read from the daemon's own
  debug log (`"message":"token served"`), to prove a client's second call made no request.

tests/suites/conformance.sh starts everything and sets the environment read here.
"""

import base64
import hashlib
import json
import os
import subprocess
import urllib.request

import pytest

FEDIMDS_URL = os.environ["FEDIMDS_URL"]
FEDIMDS_LOG_FILE = os.environ["FEDIMDS_LOG_FILE"]
# 169.254.169.254:80 inside the suite's network namespace (forwarded to the daemon); "" when
# there is none.
FEDIMDS_IMDS_URL = os.environ.get("FEDIMDS_IMDS_URL", "")
FEDIMDS_IMDS_LOG_FILE = os.environ.get("FEDIMDS_IMDS_LOG_FILE", "")
# A line per connection to 169.254.169.254:80 (tests/conformance/imds_forward.py).
FEDIMDS_IMDS_FORWARD_LOG_FILE = os.environ.get("FEDIMDS_IMDS_FORWARD_LOG_FILE", "")
SECRET = os.environ["FEDIMDS_SECRET"]
SIM_URL = os.environ["SIM_URL"]
ARC = os.environ.get("FEDIMDS_ARC") == "yes"
AZURE_IDENTITY_RS = os.environ["AZURE_IDENTITY_RS"]
# The Go and Java drivers (tests/conformance/go, tests/conformance/java), built by the suite.
AZURE_IDENTITY_GO = os.environ["AZURE_IDENTITY_GO"]
AZURE_IDENTITY_JAVA = os.environ["AZURE_IDENTITY_JAVA"]
# The Service Fabric listener (HTTPS), its certificate's SHA-1 and the certificate itself.
SF_URL = os.environ["FEDIMDS_SF_URL"]
SF_THUMBPRINT = os.environ["FEDIMDS_SF_THUMBPRINT"]
SF_CERT = os.environ["FEDIMDS_SF_CERT"]

# The demo world (crates/fedimds-sim/src/demo.rs) and the suite's config
# (tests/conformance/daemon_config.py).
TARGET_TENANT = "22222222-2222-4222-8222-222222222222"  # target "litware", the default
OTHER_TENANT = "33333333-3333-4333-8333-333333333333"  # target "contoso"
APP = "aaaaaaaa-0000-4000-8000-00000000a001"
CONTOSO_NAME = "contoso"
CONTOSO_OBJECT_ID = "0c0c0c0c-0000-4000-8000-0000000c0c01"
CONTOSO_RESOURCE_ID = (
    "/subscriptions/dddddddd-0000-4000-8000-00000000d001/resourceGroups/conformance"
    "/providers/Microsoft.ManagedIdentity/userAssignedIdentities/contoso"
)
UNKNOWN_CLIENT_ID = "ffffffff-0000-4000-8000-00000000ffff"
ARC_KEY_DIR = "/var/opt/azcmagent/tokens"

# Every variable that makes a client pick a managed-identity source.
MI_VARIABLES = [
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IDENTITY_SERVER_THUMBPRINT",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_TOKEN_CREDENTIALS",
]


def resource(name):
    """A resource of its own per test, so counts and caches never mix between tests."""
    return f"https://conformance.fedimds.test/{name}"


def scope(res):
    return res + "/.default"


def dialect_env(dialect, base=None, secret=SECRET):
    """The environment that points a client at `dialect` of the daemon at `base`."""
    base = base or FEDIMDS_URL
    if dialect == "imds":
        return {"AZURE_POD_IDENTITY_AUTHORITY_HOST": base}
    if dialect == "app_service":
        return {"IDENTITY_ENDPOINT": f"{base}/msi/token", "IDENTITY_HEADER": secret}
    if dialect == "legacy":
        return {"MSI_ENDPOINT": f"{base}/msi/token", "MSI_SECRET": secret}
    if dialect == "cloud_shell":
        return {"MSI_ENDPOINT": f"{base}/msi/token"}
    if dialect == "arc":
        return {
            "IDENTITY_ENDPOINT": f"{base}/arc/metadata/identity/oauth2/token",
            "IMDS_ENDPOINT": base,
        }
    if dialect == "service_fabric":
        return {
            "IDENTITY_ENDPOINT": f"{SF_URL}/metadata/identity/oauth2/token",
            "IDENTITY_HEADER": secret,
            "IDENTITY_SERVER_THUMBPRINT": SF_THUMBPRINT,
        }
    raise ValueError(dialect)


@pytest.fixture
def env(monkeypatch):
    """Clears every managed-identity variable; returns a function that sets a dialect's."""
    for name in MI_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def use(dialect, **kwargs):
        for name, value in dialect_env(dialect, **kwargs).items():
            monkeypatch.setenv(name, value)

    return use


def http_get(url, headers=None):
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def fp(token):
    """A token's fingerprint: what assertions compare, so a failure never prints a token."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def decode(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def sim_exchanges():
    status, body = http_get(f"{SIM_URL}/_sim/exchanges")
    assert status == 200, body
    return json.loads(body)


def assert_issued(token, res, tenant=TARGET_TENANT):
    """`token` is what the simulator's Entra issued to APP in `tenant` for `res`."""
    # Booleans first: pytest's assertion report must not print the token.
    is_jwt = isinstance(token, str) and token.count(".") == 2
    assert is_jwt, "not a JWT"
    claims = decode(token)
    assert (claims["tid"], claims["appid"], claims["aud"]) == (tenant, APP, res)
    records = [
        (r["tenant"], r["client_id"], r["scope"])
        for r in sim_exchanges()
        if r.get("access_token") == token
    ]
    assert records, "the simulator's Entra never issued this token"
    for record in records:
        assert record == (
            tenant,
            APP,
            scope(res),
        )


def log_lines(path):
    lines = []
    with open(path, encoding="utf-8") as log:
        for line in log:
            try:
                lines.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return lines


def served(res, log=None):
    """Tokens the daemon served for `res` so far (its debug log line "token served")."""
    return sum(
        1
        for line in log_lines(log or FEDIMDS_LOG_FILE)
        if line.get("message") == "token served" and line.get("resource") == res
    )


def probes(log=None):
    """Header-less IMDS requests (the SDKs' probes) the daemon answered so far."""
    return sum(
        1
        for line in log_lines(log or FEDIMDS_LOG_FILE)
        if line.get("message", "").startswith("request without Metadata header")
        and line.get("dialect") == "imds"
    )


def imds_connections():
    """Connections made to 169.254.169.254:80 so far, whether or not they sent a request."""
    with open(FEDIMDS_IMDS_FORWARD_LOG_FILE, encoding="utf-8") as log:
        return sum(1 for line in log if line.startswith("connection from "))


def daemon_has(path):
    """Whether the daemon routes `path` (an unknown path gets its JSON 404 "not_found")."""
    status, body = http_get(f"{FEDIMDS_URL}{path}")
    return not (status == 404 and b'"not_found"' in body)


def require_arc():
    if not daemon_has("/arc/metadata/identity/oauth2/token"):
        pytest.skip("SKIPPED: this daemon has no Arc route (/arc/metadata/identity/oauth2/token)")
    if not ARC:
        pytest.skip("SKIPPED: no private mount namespace, so no /var/opt/azcmagent/tokens for Arc keys")


def require_imds_address():
    if not FEDIMDS_IMDS_URL:
        pytest.skip("SKIPPED: no network namespace, so no daemon on 169.254.169.254")


def run_client(program, scope_, env_, *args):
    """Runs a client CLI (the Rust, Go or Java one: `program SCOPE [options]`, a JSON line per
    token on stdout) with exactly `env_` (plus PATH); returns the completed process."""
    environment = {"PATH": os.environ["PATH"], **env_}
    return subprocess.run(
        [program, scope_, *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def rust(scope_, env_, *args):
    return run_client(AZURE_IDENTITY_RS, scope_, env_, *args)


def client_tokens(done):
    """The {"token", "expires_on"} lines a client CLI printed; it must have succeeded."""
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]
