// The legacy 2017-09-01 dialect (msal-node's "Azure ML"): MSI_ENDPOINT + MSI_SECRET, the
// `secret` header, `clientid`. msal-node refuses object and resource ids for it itself.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ManagedIdentityCredential } from "@azure/identity";

import { CONTOSO, dialectTests, resource, scope } from "./lib.mjs";

dialectTests("legacy", { aliases: ["clientId"] });

test("legacy: object and resource ids are refused by the client itself", async () => {
  for (const alias of ["objectId", "resourceId"]) {
    const credential = new ManagedIdentityCredential({ [alias]: CONTOSO[alias] });
    await assert.rejects(
      credential.getToken(scope(resource("node-legacy-refused"))),
      /Only client id is supported/,
    );
  }
});
