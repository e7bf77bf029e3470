// Cloud Shell: MSI_ENDPOINT alone, a form POST with Metadata: true. System-assigned only.
import assert from "node:assert/strict";
import { test } from "node:test";

import { ManagedIdentityCredential } from "@azure/identity";

import { CONTOSO, dialectTests } from "./lib.mjs";

dialectTests("cloud_shell", { unknownIdentity: false });

test("cloud_shell: user-assigned identities are refused by the client itself", () => {
  // Refused in the constructor, before any request.
  assert.throws(
    () => new ManagedIdentityCredential({ clientId: CONTOSO.clientId }),
    /not supported for CloudShell/,
  );
});
