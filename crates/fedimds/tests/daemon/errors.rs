//! Every error explained: for each AADSTS code a user meets, the words they read, both in
//! `fedimds check` and in the daemon's error body, with this set-up's values filled in; and
//! the blocks (a request loop, a throttled tenant) waited out rather than hammered.

use std::time::Duration;

use fedimds_sim::{Fault, Route, SimConfig};
use tokio::time::sleep;

use crate::check::{block, check, has};
use crate::support::*;

/// The demo world's set-up, as the diagnoses name it.
fn issuer() -> String {
    fedimds_sim::config::mi_issuer(demo::HOME_TENANT)
}

const GRAPH_SCOPE: &str = "https://graph.microsoft.com/.default";

/// The daemon's config for these tests (and `check`'s): litware is asked for Graph, the only
/// resource it allows, so both name the same scope; a caller waits long enough for the
/// transient codes' retries to run out.
fn edit(raw: &mut RawConfig) {
    remove_target(raw, "unconsented");
    target(raw, "litware").resources = strings(&[GRAPH]);
    raw.server.miss_timeout = Some(Duration::from_secs(90).into());
}

/// What a user reads for one code.
struct Row {
    code: u32,
    /// The daemon's status: 400 for a set-up to fix, 503 for what passes.
    status: u16,
    /// The meaning, word for word.
    meaning: &'static str,
    /// Parts of the fix, with the set-up's values.
    fix: Vec<String>,
}

fn rows(sim_url: &str) -> Vec<Row> {
    let (tenant, app, sub, home) = (
        demo::TARGET_TENANT,
        demo::APP_CLIENT_ID,
        demo::MI_OBJECT_ID,
        demo::HOME_TENANT,
    );
    let iss = issuer();
    let row = |code, status, meaning, fix: Vec<String>| Row {
        code,
        status,
        meaning,
        fix,
    };
    vec![
        row(
            7002138,
            400,
            "a federated credential's subject matches the assertion's only when letter case is ignored, and Entra compares subjects case-sensitively.",
            vec![format!("set that credential's subject on app {app} to exactly \"{sub}\", in the same letter case")],
        ),
        row(
            700212,
            400,
            "no federated identity credential on the app has the assertion's audience.",
            vec![format!("the public cloud's exchange audience is \"api://AzureADTokenExchange\": give the credential on app {app} the audience \"api://AzureADTokenExchange\" and ask the source for the same (source.audience, now \"api://AzureADTokenExchange\";")],
        ),
        row(
            7002137,
            400,
            "the assertion is an Entra token, and no federated credential on the app has the subject Entra requires for an Entra issuer.",
            vec![
                format!("for the Entra issuer \"{iss}\", set the credential's subject on app {app} to the value Entra's description names"),
                format!("it is the identity's object (principal) id, \"{sub}\" here"),
            ],
        ),
        row(
            700236,
            400,
            "Entra refused an Entra-issued assertion: it accepts an Entra token as a federated credential only on an app registered in the token's own tenant.",
            vec![format!("the app (client_id {app}) must be a multi-tenant app registered in the identity's home tenant {home} (from issuer \"{iss}\"), not in tenant {tenant} or another")],
        ),
        row(
            700222,
            400,
            "Entra refused an Entra-issued assertion: it accepts an Entra token as a federated credential only on an app registered in the token's own tenant.",
            vec![format!("have an administrator of tenant {tenant} consent to it, and set the target's client_id to it.")],
        ),
        row(
            700229,
            400,
            "the assertion is not an app-only token: for an Entra issuer, Entra accepts only app-only tokens as federated credentials.",
            vec![format!("present the managed identity's own token, not a user's (this one: issuer \"{iss}\", subject \"{sub}\")")],
        ),
        row(
            501661,
            503,
            "Entra's request to the assertion issuer's OIDC endpoint failed; this is usually transient.",
            vec![format!("check that {iss}/.well-known/openid-configuration and the jwks_uri it names answer from the internet over HTTPS")],
        ),
        row(
            50196,
            503,
            "Entra detected a request loop: the same token request came too often within minutes, and Entra blocks it for a while.",
            vec![format!("fedimds asks no more for this token (tenant {tenant}, app {app}, scope \"{GRAPH_SCOPE}\"), nor for any other resource of the app in this tenant, for 5 min")],
        ),
        row(
            90055,
            503,
            "Entra is throttling the tenant: too many requests for it (Entra also answers this for a blocked tenant).",
            vec![format!("fedimds asks tenant {tenant} no more for this token, nor for any other resource of app {app} there, for 5 min, longer while it lasts")],
        ),
        row(
            7000112,
            400,
            "the app is disabled: its service principal in the target tenant is disabled, or the app registration itself is.",
            vec![
                format!("an administrator of tenant {tenant} enables app {app}'s enterprise application"),
                format!("`az ad sp update --id {app} --set accountEnabled=true`"),
            ],
        ),
        row(
            500011,
            400,
            "the resource principal was not found in the target tenant.",
            vec![format!("check the resource in scope \"{GRAPH_SCOPE}\": a typo, a resource of another cloud (this is the public cloud, Entra at {sim_url}), or a trailing slash; the API must have a service principal in tenant {tenant}")],
        ),
        row(
            65001,
            400,
            "consent is missing for the requested permissions.",
            vec![
                format!("have an administrator of tenant {tenant} grant admin consent to app {app} at the consent URL"),
                format!("{sim_url}/{tenant}/adminconsent?client_id={app}"),
            ],
        ),
    ]
}

/// One row at a time, each in a fresh world: the daemon's answer to a caller, then `check`.
#[tokio::test(start_paused = true)]
async fn each_code_reads_the_same_in_check_and_the_error_body() {
    let codes: Vec<u32> = rows("").iter().map(|r| r.code).collect();
    for code in codes {
        let h = start_with(SimConfig::demo(), edit).await;
        // Each world has its own port, which 500011 and 65001 name.
        let row = rows(&h.sim.url())
            .into_iter()
            .find(|r| r.code == code)
            .unwrap();
        h.sim
            .push_fault(Route::Entra, Fault::aadsts(code).forever());

        let response = h.imds_request().send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().get("retry-after").cloned();
        let (_, body) = status_json(response).await;
        assert_eq!(status, row.status, "AADSTS{code}: {body}");
        assert_eq!(retry_after.is_some(), status == 503, "AADSTS{code}");
        let said = body["error_description"].as_str().unwrap_or_default();
        assert!(
            said.starts_with(&format!("AADSTS{code}: {} Fix: ", row.meaning)),
            "AADSTS{code}: {said}"
        );
        for part in &row.fix {
            assert!(
                said.contains(part.as_str()),
                "AADSTS{code}: {part:?} in\n{said}"
            );
        }

        let mut raw = fedimds::demo::raw_config(&h.sim.url(), "127.0.0.1:0".parse().unwrap());
        edit(&mut raw);
        let (passed, text) = check(&h.sim, &raw).await;
        assert!(!passed, "AADSTS{code}:\n{text}");
        let failed = block(&text, "litware");
        assert!(
            failed.contains(&format!("error     AADSTS{code} (")),
            "AADSTS{code}:\n{failed}"
        );
        assert!(
            has(failed, &format!("meaning {}", row.meaning)),
            "AADSTS{code}:\n{failed}"
        );
        for part in &row.fix {
            assert!(has(failed, part), "AADSTS{code}: {part:?} in\n{failed}");
        }
        assert!(has(failed, "Entra AADSTS"), "Entra's own words: {failed}");
    }
}

/// AADSTS7002137's fix points at the subject Entra's description names: `check` shows it.
#[tokio::test]
async fn check_shows_the_subject_entra_names_for_7002137() {
    let h = start_with(SimConfig::demo(), edit).await;
    h.sim.push_fault(Route::Entra, Fault::aadsts(7002137));
    let mut raw = fedimds::demo::raw_config(&h.sim.url(), "127.0.0.1:0".parse().unwrap());
    edit(&mut raw);
    let (_, text) = check(&h.sim, &raw).await;
    let failed = block(&text, "litware");
    assert!(
        has(
            failed,
            "Please make sure the federated identity credential Subject is '/eid1/c/pub/t/"
        ),
        "{failed}"
    );
}

/// A request loop is answered once by Entra and then waited out: no retry inside the
/// exchange, the failure remembered for 5 minutes (503 with its Retry-After meanwhile),
/// then asked again once, and waited out twice as long while it lasts.
#[tokio::test(start_paused = true)]
async fn a_loop_block_is_remembered_not_hammered() {
    for code in [50196, 90055] {
        let h = start_with(SimConfig::demo(), edit).await;
        h.sim
            .push_fault(Route::Entra, Fault::aadsts(code).forever());
        let get = || async {
            let r = h.imds_request().send().await.unwrap();
            let retry_after: u64 = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()?.parse().ok())
                .unwrap_or(0);
            (r.status().as_u16(), retry_after)
        };
        let (status, retry_after) = get().await;
        assert_eq!(status, 503, "AADSTS{code}");
        assert!(
            (295..=300).contains(&retry_after),
            "AADSTS{code}: {retry_after}"
        );
        assert_eq!(h.sim.counters().entra, 1, "AADSTS{code}: no retry");
        // Every caller in the next five minutes gets the remembered block.
        for _ in 0..4 {
            sleep(Duration::from_secs(60)).await;
            assert_eq!(get().await.0, 503);
        }
        assert_eq!(h.sim.counters().entra, 1, "AADSTS{code}: remembered");
        sleep(Duration::from_secs(61)).await;
        let (status, retry_after) = get().await;
        assert_eq!(status, 503);
        assert_eq!(h.sim.counters().entra, 2, "AADSTS{code}: asked again once");
        assert!(
            (595..=600).contains(&retry_after),
            "AADSTS{code}: {retry_after}"
        );
        // Once the block is gone, the token is had after the wait.
        h.sim.clear_faults();
        sleep(Duration::from_secs(601)).await;
        assert_eq!(get().await.0, 200);
        assert_eq!(h.sim.counters().entra, 3);
    }
}

/// A transient issuer fetch is retried within the exchange, with backoff.
#[tokio::test(start_paused = true)]
async fn a_failed_issuer_fetch_is_retried_then_passes() {
    let h = start_with(SimConfig::demo(), edit).await;
    h.sim
        .push_fault(Route::Entra, Fault::aadsts(501661).times(2));
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.sim.counters().entra, 3);
}
