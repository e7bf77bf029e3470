// App Service 2019-08-01: IDENTITY_ENDPOINT + IDENTITY_HEADER (resourceId is sent as mi_res_id).
import { dialectTests } from "./lib.mjs";

dialectTests("app_service", { aliases: ["clientId", "objectId", "resourceId"] });
