import { wrongSecretTest } from "./lib.mjs";

wrongSecretTest("app_service");
