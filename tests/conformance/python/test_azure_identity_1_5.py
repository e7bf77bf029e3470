"""azure-identity 1.5.0 (November 2020) against fedimds's legacy App Service 2017-09-01 dialect.

Its AppServiceCredential (MSI_ENDPOINT + MSI_SECRET) parses expires_on only as App Service's
date, `MM/DD/YYYY HH:MM:SS +00:00`, and raises ValueError on epoch seconds
(`_credentials/app_service.py::_parse_app_service_expires_on`). fedimds tells it apart by its
User-Agent (`azsdk-python-identity/1.5.0 ...`) under `app_service.legacy_expires_on = "auto"`,
while the MSAL-era clients of the same daemon, the same dialect, get epoch seconds
(test_msal.py[legacy], test_azure_identity_sync.py[legacy]).

Runs in a venv of its own (requirements-azure-identity-1.5.txt); tests/suites/conformance.sh
runs this file there and leaves it out of the main venv's run."""

import time

from azure.identity import ManagedIdentityCredential
from azure.identity._version import VERSION

from conftest import (
    CONTOSO_NAME,
    OTHER_TENANT,
    assert_issued,
    decode,
    fp,
    resource,
    scope,
    served,
)

# Run anywhere else, these tests would prove nothing about 1.5.0.
assert VERSION == "1.5.0", f"azure-identity {VERSION}: run this file in its own venv"


def test_legacy_2017_token_with_the_date_it_parses(env):
    env("legacy")
    res = resource("py-1.5-legacy")
    credential = ManagedIdentityCredential()
    before = served(res)
    first = credential.get_token(scope(res))
    assert served(res) == before + 1
    assert_issued(first.token, res)
    # The date was read back as the token's own expiry (to the second), not made single-use.
    exp = decode(first.token)["exp"]
    assert abs(first.expires_on - exp) <= 5, (first.expires_on, exp)
    assert first.expires_on > time.time() + 3000
    # 1.5.0 never finds its App Service tokens in its own cache: it adds them with
    # `scope=<the resource string>`, which msal's TokenCache.add sorts into characters. So the
    # second call asks again, and fedimds answers from its cache: the same token, dated again.
    second = credential.get_token(scope(res))
    assert served(res) == before + 2
    assert fp(second.token) == fp(first.token)
    assert second.expires_on == first.expires_on


def test_legacy_2017_user_assigned_by_clientid(env):
    env("legacy")
    res = resource("py-1.5-legacy-alias")
    token = ManagedIdentityCredential(client_id=CONTOSO_NAME).get_token(scope(res))
    assert_issued(token.token, res, tenant=OTHER_TENANT)
