// DefaultAzureCredential with AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential: the chain is
// that credential alone, and it skips the IMDS probe that probe.test.mjs sees without the
// variable (@azure/identity: sendProbeRequest is false then). The token still comes from
// 169.254.169.254, so this runs only inside the suite's network namespace.
import assert from "node:assert/strict";
import { test } from "node:test";

import { DefaultAzureCredential } from "@azure/identity";

import {
  FEDIMDS_IMDS_LOG_FILE,
  FEDIMDS_IMDS_URL,
  assertIssued,
  probes,
  resource,
  scope,
  served,
  useDialect,
} from "./lib.mjs";

useDialect("none");
process.env.AZURE_TOKEN_CREDENTIALS = "ManagedIdentityCredential";

test("AZURE_TOKEN_CREDENTIALS=ManagedIdentityCredential: no probe, then the token", async (t) => {
  if (!FEDIMDS_IMDS_URL) return t.skip("SKIPPED: no network namespace, so no daemon on 169.254.169.254");
  const res = resource("node-token-credentials");
  const probesBefore = probes(FEDIMDS_IMDS_LOG_FILE);
  const servedBefore = served(res, FEDIMDS_IMDS_LOG_FILE);
  const { token } = await new DefaultAzureCredential().getToken(scope(res));
  assert.equal(probes(FEDIMDS_IMDS_LOG_FILE), probesBefore, "the credential probed IMDS");
  assert.equal(served(res, FEDIMDS_IMDS_LOG_FILE), servedBefore + 1);
  await assertIssued(token, res);
});
