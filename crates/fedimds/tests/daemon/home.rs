//! Home-identity targets (`targets[].exchange = false`): the home identity's own token for the
//! resource, with no exchange, selected, cached and shown like any target.

use std::time::Duration;

use fedimds_sim::SimConfig;
use serde_json::Value;

use crate::support::*;

pub const VAULT: &str = "https://vault.azure.net";

/// A target that serves the demo identity's own tokens for `resources`.
pub fn home_target(name: &str, resources: &[&str]) -> RawTarget {
    RawTarget {
        name: Some(name.to_owned()),
        tenant_id: Some(demo::HOME_TENANT.to_owned()),
        resources: strings(resources),
        exchange: Some(false),
        ..RawTarget::default()
    }
}

fn token(body: &Value) -> &str {
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {body}"))
}

#[tokio::test]
async fn a_home_target_serves_the_identity_own_token_cached_apart_from_target_tokens() {
    let dir = temp_dir("home-audit");
    let audit = dir.join("audit.jsonl");
    let h = start_with(SimConfig::demo(), |raw| {
        raw.targets.push(home_target("home", &[VAULT]));
        raw.audit.path = Some(audit.display().to_string());
    })
    .await;

    // Selected by the managed identity's client id: its own token, no call to Entra.
    let (status, home) = h
        .imds_token(VAULT, &format!("&client_id={}", demo::MI_CLIENT_ID))
        .await;
    assert_eq!(status, 200, "{home}");
    let c = claims(token(&home));
    assert_eq!(c["aud"], VAULT);
    assert_eq!(c["tid"], demo::HOME_TENANT);
    assert_eq!(c["oid"], demo::MI_OBJECT_ID);
    assert_eq!(home["client_id"], demo::MI_CLIENT_ID);
    assert_eq!(h.sim.counters().entra, 0, "a home token takes no exchange");
    let imds_calls = h.sim.counters().imds;

    // By its path prefix, and by its resource with no identity named: the cached token.
    let (status, by_prefix) = h
        .imds(&format!(
            "/targets/home/metadata/identity/oauth2/token?api-version=2018-02-01&resource={VAULT}"
        ))
        .await;
    assert_eq!(status, 200, "{by_prefix}");
    assert_eq!(token(&by_prefix), token(&home));
    let (status, by_resource) = h.imds_token(VAULT, "").await;
    assert_eq!(status, 200, "{by_resource}");
    assert_eq!(token(&by_resource), token(&home));
    assert_eq!(h.sim.counters().imds, imds_calls, "served from the cache");

    // The same resource through the exchanging target: a target-tenant token under a key of
    // its own, and the home key keeps the home token.
    let (status, target) = h
        .imds(&format!(
            "/targets/litware/metadata/identity/oauth2/token?api-version=2018-02-01&resource={VAULT}"
        ))
        .await;
    assert_eq!(status, 200, "{target}");
    assert_eq!(claims(token(&target))["tid"], demo::TARGET_TENANT);
    assert_ne!(token(&target), token(&home));
    assert_eq!(h.sim.counters().entra, 1);
    let (_, again) = h.imds_token(VAULT, "").await;
    assert_eq!(token(&again), token(&home), "the keys never collide");

    // Shown as such in metrics and audit lines.
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(r#"fedimds_target_info{target="home",kind="home",source="default"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            r#"fedimds_target_info{target="litware",kind="exchange",source="default"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"fedimds_upstream_requests_total{upstream="home",outcome="ok"} 1"#),
        "{metrics}"
    );
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&audit)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .collect();
        if lines.len() >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let kinds: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| (l["target"].as_str().unwrap(), l["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("home", "home"),
            ("home", "home"),
            ("home", "home"),
            ("litware", "exchange"),
            ("home", "home")
        ]
    );
    assert_eq!(lines[0]["tenant"], demo::HOME_TENANT);
    assert_eq!(lines[0]["app"], demo::MI_CLIENT_ID);
    assert_eq!(lines[0]["source"], "default");
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_home_target_is_the_default_only_when_the_config_says_so() {
    // One exchanging target, not marked default, and a home target: the exchanging one stays
    // the default, as it was before the home target was added.
    let h = start_with(SimConfig::demo(), |raw| {
        remove_target(raw, "contoso");
        remove_target(raw, "unconsented");
        target(raw, "litware").default = None;
        raw.targets.push(home_target("home", &[VAULT]));
    })
    .await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims(token(&body))["tid"], demo::TARGET_TENANT);

    // A home target alone: a request naming nothing gets it only for a resource it lists.
    let h = start_with(SimConfig::demo(), |raw| {
        raw.targets = vec![home_target("home", &[VAULT])];
    })
    .await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error_description"], "Identity not found");
    let (status, body) = h.imds_token(VAULT, "").await;
    assert_eq!(status, 200, "{body}");

    // Marked default, it is the default.
    let h = start_with(SimConfig::demo(), |raw| {
        raw.targets = vec![RawTarget {
            default: Some(true),
            ..home_target("home", &[])
        }];
        target(raw, "home").resources = None;
    })
    .await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims(token(&body))["tid"], demo::HOME_TENANT);
    assert_eq!(h.sim.counters().entra, 0);
}

#[tokio::test]
async fn a_home_target_on_an_app_service_source_asks_it_for_the_resource() {
    let h = start_with(SimConfig::demo(), |raw| {
        let sim_url = raw.cloud.authority_host.clone().expect("the sim's URL");
        raw.source.kind = Some("app-service".into());
        raw.source.endpoint = Some(format!("{sim_url}/msi/token"));
        raw.source.header = Some(demo::IDENTITY_HEADER.into());
        raw.targets.push(home_target("home", &[VAULT]));
    })
    .await;
    let (status, body) = h.imds_token(VAULT, "").await;
    assert_eq!(status, 200, "{body}");
    let c = claims(token(&body));
    assert_eq!(
        (c["aud"].as_str(), c["tid"].as_str()),
        (Some(VAULT), Some(demo::HOME_TENANT))
    );
    assert_eq!(h.sim.counters().app_service, 1);
    assert_eq!(h.sim.counters().entra, 0);
}

#[tokio::test]
async fn check_fetches_each_home_target_token_and_says_what_it_hands_out() {
    let sim = fedimds_sim::Sim::start(SimConfig::demo(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut raw = fedimds::demo::raw_config(&sim.url(), "127.0.0.1:0".parse().unwrap());
    remove_target(&mut raw, "contoso");
    remove_target(&mut raw, "unconsented");
    raw.targets.push(home_target("home", &[VAULT]));
    let (passed, text) = crate::check::check(&sim, &raw).await;
    assert!(passed, "{text}");
    assert!(text.contains("✔ home\n"), "{text}");
    assert!(
        text.contains("home identity's own token (exchange = false)"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{VAULT} (the first of its resources)")),
        "{text}"
    );
    assert!(
        text.contains(&format!("app {} (litware)", demo::APP_CLIENT_ID)),
        "the federated credential is asked only of exchanging targets' apps: {text}"
    );
    assert_eq!(sim.counters().entra, 1, "one exchange, for litware only");

    // A tenant_id that is not the identity's home tenant is pointed out.
    target(&mut raw, "home").tenant_id = Some(demo::TARGET_TENANT.to_owned());
    let (_, text) = crate::check::check(&sim, &raw).await;
    assert!(
        text.contains(&format!(
            "the token's issuer is tenant {}, not tenant_id",
            demo::HOME_TENANT
        )),
        "{text}"
    );
}

/// The manual flow a runbook does by itself: the endpoint's token for the exchange audience
/// presented to Entra as a client assertion for `app` in `tenant`. Entra's status and body.
async fn runbook_exchange(h: &Harness, assertion: &str) -> (u16, Value) {
    let r = h
        .http
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            h.sim.authority_host(),
            demo::TARGET_TENANT
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", demo::APP_CLIENT_ID),
            ("scope", "https://graph.microsoft.com/.default"),
            (
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            ),
            ("client_assertion", assertion),
        ])
        .send()
        .await
        .unwrap();
    status_json(r).await
}

/// The runbook, unchanged: the endpoint's token for the exchange audience (naming the
/// identity with `extra`, as runbooks for a user-assigned identity do), exchanged by itself.
async fn runbook(h: &Harness, extra: &str) -> (u16, Value) {
    let (status, body) = h.imds_token(demo::EXCHANGE_AUDIENCE, extra).await;
    assert_eq!(status, 200, "{body}");
    runbook_exchange(h, token(&body)).await
}

#[tokio::test]
async fn a_runbook_that_exchanges_by_itself_keeps_working_beside_the_daemon() {
    let by_identity = format!("&client_id={}", demo::MI_CLIENT_ID);

    // Without a home-identity target the endpoint answers with a target-tenant token for that
    // audience (or, naming the identity, refuses it: it is no target's), and Entra refuses
    // that token as an assertion: the runbook breaks.
    let plain = start().await;
    let (status, body) = plain
        .imds_token(demo::EXCHANGE_AUDIENCE, &by_identity)
        .await;
    assert_eq!(status, 400, "the identity is no target's: {body}");
    let (status, body) = runbook(&plain, "").await;
    assert_eq!(
        status, 401,
        "a target-tenant token is no home assertion: {body}"
    );
    assert_eq!(body["error_codes"][0], 700211, "{body}");

    // The config routes the exchange audience to the home identity: the runbook, unchanged,
    // gets the home assertion and its own exchange succeeds.
    let routed = start_with(SimConfig::demo(), |raw| {
        raw.targets
            .push(home_target("runbook-home", &[demo::EXCHANGE_AUDIENCE]));
    })
    .await;
    for extra in [by_identity.as_str(), ""] {
        let (status, body) = runbook(&routed, extra).await;
        assert_eq!(status, 200, "{body}");
        let issued = claims(token(&body));
        assert_eq!(issued["tid"], demo::TARGET_TENANT);
        assert_eq!(issued["appid"], demo::APP_CLIENT_ID);
    }
    assert_eq!(
        routed.sim.counters().entra,
        2,
        "the runbook's own exchanges; fedimds made none"
    );
    // The other apps on the host still get target-tenant tokens from the default target.
    let (status, body) = routed.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(claims(token(&body))["tid"], demo::TARGET_TENANT);
}
