// Service Fabric mode: IDENTITY_ENDPOINT (https) + IDENTITY_HEADER + IDENTITY_SERVER_THUMBPRINT.
// msal-node checks the certificate's chain, so the suite trusts the daemon's certificate with
// NODE_EXTRA_CA_CERTS (README "Service Fabric mode"). Revocation: msal-node with capabilities
// sends xms_cc=cp1 on every request, and with claims the SHA-256 of the token it holds; the
// daemon fetches a new token once, proven against the simulator's records.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ManagedIdentityApplication } from "@azure/msal-node";

import { SIM_URL, assertIssued, dialectTests, fp, resource, scope } from "./lib.mjs";

// @azure/identity refuses clientId and resourceId on Service Fabric (the cluster picks the identity).
dialectTests("service_fabric", { unknownIdentity: false });

const CLAIMS = JSON.stringify({ access_token: { nbf: { essential: true, value: "1" } } });

async function exchangesFor(res) {
  const response = await fetch(`${SIM_URL}/_sim/exchanges`);
  return (await response.json()).filter((r) => r.scope === scope(res));
}

test("service_fabric: msal-node revocation fetches a new token once, with cp1", async () => {
  const res = resource("node-msal-sf-revocation");
  const app = new ManagedIdentityApplication({ clientCapabilities: ["cp1"] });
  const first = await app.acquireToken({ resource: res });
  await assertIssued(first.accessToken, res);
  let records = await exchangesFor(res);
  assert.equal(records.length, 1);
  assert.equal(records[0].claims, '{"access_token":{"xms_cc":{"values":["cp1"]}}}');

  const again = await app.acquireToken({ resource: res, claims: CLAIMS });
  assert.notEqual(fp(again.accessToken), fp(first.accessToken));
  await assertIssued(again.accessToken, res);
  records = await exchangesFor(res);
  assert.equal(records.length, 2, "one Entra call for the refused token");
});
