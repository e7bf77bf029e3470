"""curl: the hand-written requests of scripts and the docs, every dialect, every alias, and the
refusals a faithful endpoint makes (curl caches nothing, so there is no cache check)."""

import json
import os
import re
import subprocess
import tempfile
import urllib.parse

import pytest

from conftest import (
    CONTOSO_NAME,
    CONTOSO_OBJECT_ID,
    CONTOSO_RESOURCE_ID,
    FEDIMDS_URL,
    OTHER_TENANT,
    SECRET,
    UNKNOWN_CLIENT_ID,
    assert_issued,
    require_arc,
    resource,
)

IMDS = f"{FEDIMDS_URL}/metadata/identity/oauth2/token"
MSI = f"{FEDIMDS_URL}/msi/token"
ARC = f"{FEDIMDS_URL}/arc/metadata/identity/oauth2/token"
MISSING_METADATA = {
    "error": "invalid_request",
    "error_description": "Required metadata header not specified",
}


def curl(url, *args):
    """Returns (status, headers as a lower-cased dict, parsed JSON body or the raw text)."""
    with tempfile.TemporaryDirectory() as tmp:
        head, body = os.path.join(tmp, "head"), os.path.join(tmp, "body")
        out = subprocess.run(
            ["curl", "-sS", "--max-time", "30", "-D", head, "-o", body, "-w", "%{http_code}",
             *args, url],
            capture_output=True, text=True, check=True,
        )
        headers = {}
        with open(head, encoding="latin-1") as h:
            for line in h.read().splitlines()[1:]:
                if ":" in line:
                    k, v = line.split(":", 1)
                    headers[k.strip().lower()] = v.strip()
        with open(body, encoding="utf-8") as b:
            text = b.read()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = text
    return int(out.stdout), headers, parsed


def q(**params):
    return "?" + urllib.parse.urlencode(params)


def assert_token_body(status, body, res, tenant="22222222-2222-4222-8222-222222222222"):
    assert status == 200, body
    # client-protocols.md §9: every value a string, the resource echoed exactly.
    types = {k: type(v).__name__ for k, v in body.items()}
    assert set(types.values()) == {"str"}, types
    assert body["resource"] == res and body["token_type"] == "Bearer"
    assert int(body["expires_on"]) > int(body["not_before"]) and int(body["expires_in"]) > 300
    assert_issued(body["access_token"], res, tenant=tenant)


# --- IMDS ----------------------------------------------------------------------------------

def test_imds_token():
    res = resource("curl-imds")
    status, headers, body = curl(IMDS + q(**{"api-version": "2018-02-01", "resource": res}),
                                 "-H", "Metadata: true")
    assert_token_body(status, body, res)
    assert headers["cache-control"] == "no-store"


def test_imds_raw_resource_trailing_slash_and_extra_parameters():
    # Python sends values raw, JS adds a slash before the query, newer clients add xms_cc.
    res = resource("curl-imds-raw")
    url = f"{IMDS}/?api-version=2019-08-01&resource={res}&xms_cc=cp1&token_sha256_to_refresh=ab"
    status, _, body = curl(url, "-H", "metadata: True")
    assert_token_body(status, body, res)


@pytest.mark.parametrize("key,value", [
    ("client_id", CONTOSO_NAME),
    ("object_id", CONTOSO_OBJECT_ID),
    ("principal_id", CONTOSO_OBJECT_ID),
    ("msi_res_id", CONTOSO_RESOURCE_ID),
    ("mi_res_id", CONTOSO_RESOURCE_ID),
    ("resource_id", CONTOSO_RESOURCE_ID),
    ("msi-res-id", CONTOSO_RESOURCE_ID),
])
def test_imds_aliases_select_the_target(key, value):
    res = resource("curl-imds-alias")
    status, _, body = curl(IMDS + q(**{"api-version": "2018-02-01", "resource": res, key: value}),
                           "-H", "Metadata: true")
    assert_token_body(status, body, res, tenant=OTHER_TENANT)


def test_imds_prefix_selects_the_target():
    res = resource("curl-imds-prefix")
    url = f"{FEDIMDS_URL}/targets/{CONTOSO_NAME}/metadata/identity/oauth2/token"
    status, _, body = curl(url + q(**{"api-version": "2018-02-01", "resource": res}),
                           "-H", "Metadata: true")
    assert_token_body(status, body, res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("query", ["", q(**{"api-version": "2018-02-01", "resource": "https://x"})])
def test_imds_missing_metadata_header_is_imds_own_400(query):
    status, _, body = curl(IMDS + query)
    assert (status, body) == (400, MISSING_METADATA)


def test_imds_unknown_identity():
    status, _, body = curl(
        IMDS + q(**{"api-version": "2018-02-01", "resource": "https://x", "client_id": UNKNOWN_CLIENT_ID}),
        "-H", "Metadata: true")
    assert (status, body) == (400, {"error": "invalid_request", "error_description": "Identity not found"})


def test_imds_refusals():
    base = {"api-version": "2018-02-01", "resource": "https://x"}
    assert curl(IMDS + q(**base), "-H", "Metadata: true", "-X", "POST")[0] == 405
    assert curl(IMDS + q(**base), "-H", "Metadata: true", "-H", "X-Forwarded-For: 10.0.0.1")[0] == 400
    assert curl(IMDS + q(**base) + "&resource=https://y", "-H", "Metadata: true")[0] == 400
    status, _, body = curl(IMDS + q(resource="https://x"), "-H", "Metadata: true")
    assert status == 400 and "api-version" in body["error"]


# --- App Service 2019-08-01 ----------------------------------------------------------------

def test_app_service_get():
    res = resource("curl-app-service")
    status, _, body = curl(MSI + q(**{"api-version": "2019-08-01", "resource": res}),
                           "-H", f"X-IDENTITY-HEADER: {SECRET}")
    assert_token_body(status, body, res)


def test_app_service_automation_post_without_api_version():
    res = resource("curl-automation")
    status, _, body = curl(MSI, "-H", f"X-IDENTITY-HEADER: {SECRET}", "-H", "Metadata: True",
                           "--data-urlencode", f"resource={res}",
                           "--data-urlencode", f"client_id={CONTOSO_NAME}")
    assert_token_body(status, body, res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("key,value", [
    ("client_id", CONTOSO_NAME),
    ("object_id", CONTOSO_OBJECT_ID),
    ("principal_id", CONTOSO_OBJECT_ID),
    ("mi_res_id", CONTOSO_RESOURCE_ID),
    ("resource_id", CONTOSO_RESOURCE_ID),
])
def test_app_service_aliases_select_the_target(key, value):
    res = resource("curl-app-service-alias")
    status, _, body = curl(MSI + q(**{"api-version": "2019-08-01", "resource": res, key: value}),
                           "-H", f"X-IDENTITY-HEADER: {SECRET}")
    assert_token_body(status, body, res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("headers", [[], ["-H", "X-IDENTITY-HEADER: wrong-secret-of-some-length"]],
                         ids=["missing", "wrong"])
def test_app_service_secret_is_checked(headers):
    status, _, body = curl(MSI + q(**{"api-version": "2019-08-01", "resource": "https://x"}), *headers)
    assert status == 401, body
    assert set(body) >= {"statusCode", "message", "correlationId"}, body
    assert "X-IDENTITY-HEADER" in body["message"]


def test_app_service_unknown_identity():
    status, _, body = curl(
        MSI + q(**{"api-version": "2019-08-01", "resource": "https://x", "client_id": UNKNOWN_CLIENT_ID}),
        "-H", f"X-IDENTITY-HEADER: {SECRET}")
    assert status == 400 and body["message"] == "Identity not found", body


# --- legacy 2017-09-01 (MSI_ENDPOINT + MSI_SECRET) -----------------------------------------

def test_legacy_2017():
    res = resource("curl-legacy")
    status, _, body = curl(MSI + q(**{"api-version": "2017-09-01", "resource": res}),
                           "-H", f"secret: {SECRET}")
    assert_token_body(status, body, res)


def test_legacy_2017_clientid_selects_the_target():
    res = resource("curl-legacy-alias")
    status, _, body = curl(MSI + q(**{"api-version": "2017-09-01", "resource": res,
                                      "clientid": CONTOSO_NAME}),
                           "-H", f"secret: {SECRET}")
    assert_token_body(status, body, res, tenant=OTHER_TENANT)


@pytest.mark.parametrize("headers", [[], ["-H", "secret: wrong-secret-of-some-length"]],
                         ids=["missing", "wrong"])
def test_legacy_2017_secret_is_checked(headers):
    status, _, body = curl(MSI + q(**{"api-version": "2017-09-01", "resource": "https://x"}), *headers)
    assert status in (400, 401), body
    assert "secret" in json.dumps(body).lower()


# --- Cloud Shell (MSI_ENDPOINT alone) ------------------------------------------------------

def test_cloud_shell_post():
    res = resource("curl-cloud-shell")
    status, _, body = curl(MSI, "-H", "Metadata: true", "--data-urlencode", f"resource={res}")
    assert_token_body(status, body, res)


def test_cloud_shell_without_metadata_is_refused():
    status, _, body = curl(MSI, "--data-urlencode", "resource=https://x")
    assert status in (400, 401), body
    assert "access_token" not in json.dumps(body)


# --- Azure Arc -----------------------------------------------------------------------------

def arc_challenge(query):
    status, headers, body = curl(ARC + query, "-H", "Metadata: true")
    assert status == 401, body
    match = re.fullmatch(r"Basic realm=(\S+)", headers["www-authenticate"])
    assert match, headers
    return match.group(1)


def test_arc_challenge_then_token():
    require_arc()
    res = resource("curl-arc")
    query = q(**{"api-version": "2020-06-01", "resource": res})
    path = arc_challenge(query)
    assert os.path.dirname(path) == "/var/opt/azcmagent/tokens" and path.endswith(".key")
    with open(path, encoding="utf-8") as f:
        key = f.read()
    status, _, body = curl(ARC + query, "-H", "Metadata: true", "-H", f"Authorization: Basic {key}")
    assert_token_body(status, body, res)


def test_arc_user_assigned_is_echoed():
    require_arc()
    res = resource("curl-arc-ua")
    query = q(**{"api-version": "2020-06-01", "resource": res, "client_id": CONTOSO_NAME})
    with open(arc_challenge(query), encoding="utf-8") as f:
        key = f.read()
    status, _, body = curl(ARC + query, "-H", "Metadata: true", "-H", f"Authorization: Basic {key}")
    assert_token_body(status, body, res, tenant=OTHER_TENANT)
    assert body["client_id"] == CONTOSO_NAME


def test_arc_wrong_key_is_refused():
    require_arc()
    query = q(**{"api-version": "2020-06-01", "resource": "https://x"})
    arc_challenge(query)
    status, _, body = curl(ARC + query, "-H", "Metadata: true",
                           "-H", "Authorization: Basic not-the-key-in-the-file")
    assert status == 401, body
    assert "access_token" not in json.dumps(body)
