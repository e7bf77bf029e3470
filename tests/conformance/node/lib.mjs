// Shared by the Node drivers (node:test). msal-node remembers the managed-identity source it
// detected for the life of the process, so each *.test.mjs file (node --test runs each in a
// process of its own) sets one environment at its top and keeps it.
//
// The checks mirror tests/conformance/python/conftest.py: a token is the one the simulator's
// Entra issued (decoded claims, and GET /_sim/exchanges); the daemon's own debug log line
// "token served" counts the requests that reached it.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { ManagedIdentityCredential } from "@azure/identity";

const env = process.env;
export const FEDIMDS_URL = env.FEDIMDS_URL;
export const FEDIMDS_LOG_FILE = env.FEDIMDS_LOG_FILE;
export const FEDIMDS_IMDS_URL = env.FEDIMDS_IMDS_URL ?? "";
export const FEDIMDS_IMDS_LOG_FILE = env.FEDIMDS_IMDS_LOG_FILE ?? "";
export const SECRET = env.FEDIMDS_SECRET;
export const SIM_URL = env.SIM_URL;
export const ARC = env.FEDIMDS_ARC === "yes";
// The Service Fabric listener (HTTPS; its certificate is trusted through NODE_EXTRA_CA_CERTS).
export const SF_URL = env.FEDIMDS_SF_URL;
export const SF_THUMBPRINT = env.FEDIMDS_SF_THUMBPRINT;

export const TARGET_TENANT = "22222222-2222-4222-8222-222222222222";
export const OTHER_TENANT = "33333333-3333-4333-8333-333333333333";
export const APP = "aaaaaaaa-0000-4000-8000-00000000a001";
export const CONTOSO = {
  clientId: "contoso",
  objectId: "0c0c0c0c-0000-4000-8000-0000000c0c01",
  resourceId:
    "/subscriptions/dddddddd-0000-4000-8000-00000000d001/resourceGroups/conformance/providers/Microsoft.ManagedIdentity/userAssignedIdentities/contoso",
};
export const UNKNOWN_CLIENT_ID = "ffffffff-0000-4000-8000-00000000ffff";

const MI_VARIABLES = [
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
  "DEFAULT_IDENTITY_CLIENT_ID",
];

export const resource = (name) => `https://conformance.fedimds.test/${name}`;
export const scope = (res) => `${res}/.default`;

/** Points this process at `dialect` of the daemon (and clears every other MI variable). */
export function useDialect(dialect, { base = FEDIMDS_URL, secret = SECRET } = {}) {
  for (const name of MI_VARIABLES) delete env[name];
  const vars = {
    imds: { AZURE_POD_IDENTITY_AUTHORITY_HOST: base },
    app_service: { IDENTITY_ENDPOINT: `${base}/msi/token`, IDENTITY_HEADER: secret },
    legacy: { MSI_ENDPOINT: `${base}/msi/token`, MSI_SECRET: secret },
    cloud_shell: { MSI_ENDPOINT: `${base}/msi/token` },
    arc: { IDENTITY_ENDPOINT: `${base}/arc/metadata/identity/oauth2/token`, IMDS_ENDPOINT: base },
    service_fabric: {
      IDENTITY_ENDPOINT: `${SF_URL}/metadata/identity/oauth2/token`,
      IDENTITY_HEADER: secret,
      IDENTITY_SERVER_THUMBPRINT: SF_THUMBPRINT,
    },
    none: {},
  }[dialect];
  assert.ok(vars, dialect);
  Object.assign(env, vars);
}

/** A token's fingerprint: what assertions compare, so a failure never prints a token. */
export const fp = (token) => createHash("sha256").update(token).digest("hex").slice(0, 16);

export function decode(token) {
  return JSON.parse(Buffer.from(token.split(".")[1], "base64url").toString("utf8"));
}

/** `token` is what the simulator's Entra issued to APP in `tenant` for `res`. */
export async function assertIssued(token, res, tenant = TARGET_TENANT) {
  const claims = decode(token);
  assert.deepEqual([claims.tid, claims.appid, claims.aud], [tenant, APP, res]);
  const response = await fetch(`${SIM_URL}/_sim/exchanges`);
  assert.equal(response.status, 200);
  const records = (await response.json()).filter((r) => r.access_token === token);
  assert.ok(records.length > 0, "the simulator's Entra never issued this token");
  for (const r of records) {
    assert.deepEqual([r.tenant, r.client_id, r.scope], [tenant, APP, scope(res)]);
  }
}

function logLines(path) {
  return readFileSync(path, "utf8")
    .split("\n")
    .flatMap((line) => {
      try {
        return [JSON.parse(line)];
      } catch {
        return [];
      }
    });
}

/** Tokens the daemon served for `res` so far. */
export function served(res, log = FEDIMDS_LOG_FILE) {
  return logLines(log).filter((l) => l.message === "token served" && l.resource === res).length;
}

/** Header-less IMDS requests (probes) the daemon answered so far. */
export function probes(log = FEDIMDS_LOG_FILE) {
  return logLines(log).filter(
    (l) => (l.message ?? "").startsWith("request without Metadata header") && l.dialect === "imds",
  ).length;
}

/** Why tests of `dialect` cannot run here, or "" when they can. */
export async function skipReason(dialect) {
  if (dialect !== "arc") return "";
  const response = await fetch(`${FEDIMDS_URL}/arc/metadata/identity/oauth2/token`);
  const body = await response.text();
  if (response.status === 404 && body.includes('"not_found"')) {
    return "SKIPPED: this daemon has no Arc route";
  }
  return ARC ? "" : "SKIPPED: no private mount namespace for /var/opt/azcmagent/tokens";
}

/**
 * The tests every dialect gets: the token is Entra's and cached; each user-assigned option in
 * `aliases` reaches the "contoso" target; an unknown client id gives a clear error.
 */
export function dialectTests(dialect, { aliases = [], unknownIdentity = true } = {}) {
  useDialect(dialect);
  const skip = skipReason(dialect);

  test(`${dialect}: the token is the one Entra issued, and a second call is served from the cache`, async (t) => {
    if (await skip) return t.skip(await skip);
    const res = resource(`node-${dialect}`);
    const credential = new ManagedIdentityCredential();
    const before = served(res);
    const first = await credential.getToken(scope(res));
    assert.equal(served(res), before + 1);
    await assertIssued(first.token, res);
    const second = await credential.getToken(scope(res));
    assert.equal(served(res), before + 1, "the second getToken reached the daemon");
    assert.deepEqual(
      [fp(second.token), second.expiresOnTimestamp],
      [fp(first.token), first.expiresOnTimestamp],
    );
  });

  for (const alias of aliases) {
    test(`${dialect}: user-assigned ${alias} selects the target`, async (t) => {
      if (await skip) return t.skip(await skip);
      const res = resource(`node-${dialect}-${alias}`);
      const credential = new ManagedIdentityCredential({ [alias]: CONTOSO[alias] });
      const { token } = await credential.getToken(scope(res));
      await assertIssued(token, res, OTHER_TENANT);
    });
  }

  if (unknownIdentity) {
    test(`${dialect}: an unknown identity is a clear error`, async (t) => {
      if (await skip) return t.skip(await skip);
      const credential = new ManagedIdentityCredential({ clientId: UNKNOWN_CLIENT_ID });
      await assert.rejects(credential.getToken(scope(resource("node-unknown"))), (error) => {
        assert.equal(error.name, "CredentialUnavailableError");
        assert.match(error.message, /Identity not found/);
        return true;
      });
    });
  }
}

/** A wrong caller secret gives the daemon's message, as CredentialUnavailableError. */
export function wrongSecretTest(dialect) {
  useDialect(dialect, { secret: "not-the-daemons-secret-at-all" });
  test(`${dialect}: a wrong secret is a clear error`, async () => {
    const credential = new ManagedIdentityCredential();
    await assert.rejects(credential.getToken(scope(resource("node-wrong-secret"))), (error) => {
      assert.equal(error.name, "CredentialUnavailableError");
      assert.match(error.message, /not the one this endpoint expects/);
      return true;
    });
  });
}
