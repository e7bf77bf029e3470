// DefaultAzureCredential with no environment at all: its managed-identity credential probes
// 169.254.169.254 (no query, no Metadata header, 1 s budget) before the real request. Runs
// only inside the suite's network namespace, where a daemon answers on that address.
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

test("DefaultAzureCredential probes IMDS, then gets the token", async (t) => {
  if (!FEDIMDS_IMDS_URL) return t.skip("SKIPPED: no network namespace, so no daemon on 169.254.169.254");
  const res = resource("node-probe");
  const probesBefore = probes(FEDIMDS_IMDS_LOG_FILE);
  const servedBefore = served(res, FEDIMDS_IMDS_LOG_FILE);
  const { token } = await new DefaultAzureCredential().getToken(scope(res));
  assert.equal(probes(FEDIMDS_IMDS_LOG_FILE), probesBefore + 1);
  assert.equal(served(res, FEDIMDS_IMDS_LOG_FILE), servedBefore + 1);
  await assertIssued(token, res);
});
