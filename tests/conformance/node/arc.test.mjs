// Azure Arc: IDENTITY_ENDPOINT + IMDS_ENDPOINT; the 401 challenge, the key file, the retry.
import { dialectTests } from "./lib.mjs";

dialectTests("arc", { aliases: ["clientId"] });
