import { wrongSecretTest } from "./lib.mjs";

wrongSecretTest("legacy");
