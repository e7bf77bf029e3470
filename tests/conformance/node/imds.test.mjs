// IMDS via AZURE_POD_IDENTITY_AUTHORITY_HOST (msal-node adds a "/" before the query).
import { dialectTests } from "./lib.mjs";

dialectTests("imds", { aliases: ["clientId", "objectId", "resourceId"] });
