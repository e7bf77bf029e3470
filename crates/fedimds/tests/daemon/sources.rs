//! The other assertion sources: an App Service-style endpoint and a token file.

use std::time::Duration;

use crate::support::*;

#[tokio::test]
async fn app_service_source() {
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        let sim_url = raw.cloud.authority_host.clone().expect("the sim's URL");
        raw.source.kind = Some("app-service".into());
        raw.source.endpoint = Some(format!("{sim_url}/msi/token"));
        raw.source.header = Some(demo::IDENTITY_HEADER.into());
    })
    .await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::TARGET_TENANT
    );
    assert_eq!(h.sim.counters().app_service, 1);
    assert_eq!(h.sim.counters().imds, 0);
}

#[tokio::test]
async fn token_file_source_and_rotation() {
    let dir = temp_dir("token-file");
    let file = dir.join("token");
    let sim = fedimds_sim::Sim::start(
        fedimds_sim::SimConfig::demo(),
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let k8s = |sub: &str| {
        sim.issue_k8s_token(
            demo::K8S_ISSUER,
            sub,
            demo::EXCHANGE_AUDIENCE,
            Duration::from_secs(3600),
        )
    };
    std::fs::write(&file, k8s(demo::K8S_SUBJECT)).unwrap();
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.source = RawSource {
            kind: Some("token-file".into()),
            path: Some(file.clone()),
            ..RawSource::default()
        };
    })
    .await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::TARGET_TENANT
    );

    // Rotate the file to a token Entra will refuse (unknown subject): the next exchange must
    // present the new file's token, which proves it was re-read.
    std::fs::write(&file, k8s("system:serviceaccount:default:other-and-longer")).unwrap();
    let (status, body) = h.imds_token("https://vault.azure.net", "").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("AADSTS700213"),
        "{body}"
    );
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("other-and-longer"),
        "the diagnosis shows the subject: {body}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A second user-assigned identity on the simulated host, and an app that trusts only it.
const SECOND_MI_CLIENT_ID: &str = "e1e1e1e1-5555-4555-8555-0000000000e1";
const SECOND_MI_OBJECT_ID: &str = "e2e2e2e2-5555-4555-8555-0000000000e2";
const SECOND_APP_CLIENT_ID: &str = "e3e3e3e3-5555-4555-8555-0000000000e3";

/// The demo world plus the second identity, federated to the second app only.
fn two_identities() -> fedimds_sim::SimConfig {
    let mut world = fedimds_sim::SimConfig::demo();
    world.identities.push(fedimds_sim::Identity {
        client_id: SECOND_MI_CLIENT_ID.to_owned(),
        object_id: SECOND_MI_OBJECT_ID.to_owned(),
        resource_id: "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/second".to_owned(),
        system_assigned: false,
    });
    world.apps.push(fedimds_sim::App {
        client_id: SECOND_APP_CLIENT_ID.to_owned(),
        consented_tenants: vec![demo::TARGET_TENANT.to_owned()],
        federated_credentials: vec![fedimds_sim::FederatedCredential {
            issuer: world.mi_issuer(),
            subject: SECOND_MI_OBJECT_ID.to_owned(),
            audience: demo::EXCHANGE_AUDIENCE.to_owned(),
        }],
    });
    world
}

/// The demo config plus `[[sources]] name = "second"` (the second identity on the same IMDS)
/// and a target of the second app on it; `swap` gives each target the other's source.
fn two_sources(raw: &mut RawConfig, swap: bool) {
    let sim_url = raw.cloud.authority_host.clone().expect("the sim's URL");
    remove_target(raw, "unconsented");
    raw.sources.push(RawNamedSource {
        name: Some("second".into()),
        kind: Some("imds".into()),
        endpoint: Some(sim_url),
        client_id: Some(SECOND_MI_CLIENT_ID.into()),
        ..RawNamedSource::default()
    });
    raw.targets.push(RawTarget {
        name: Some("second-app".into()),
        tenant_id: Some(demo::TARGET_TENANT.into()),
        client_id: Some(SECOND_APP_CLIENT_ID.into()),
        source: Some("second".into()),
        ..RawTarget::default()
    });
    if swap {
        target(raw, "litware").source = Some("second".into());
        target(raw, "second-app").source = Some("default".into());
    }
}

#[tokio::test]
async fn two_targets_on_two_identities_each_present_their_own_assertion() {
    let h = start_with(two_identities(), |raw| two_sources(raw, false)).await;
    let (status, body) = h.imds_token(GRAPH, "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["appid"],
        demo::APP_CLIENT_ID
    );
    let (status, body) = h
        .imds(&format!(
            "/targets/second-app/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    let issued = claims(body["access_token"].as_str().unwrap());
    assert_eq!(issued["appid"], SECOND_APP_CLIENT_ID);
    assert_eq!(issued["tid"], demo::TARGET_TENANT);
    // One assertion per source, each cached: more tokens of either ask IMDS nothing more.
    assert_eq!(h.sim.counters().imds, 2);
    let (status, _) = h.imds_token("https://vault.azure.net", "").await;
    assert_eq!(status, 200);
    let (status, _) = h
        .imds("/targets/second-app/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net")
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        h.sim.counters().imds,
        2,
        "the assertion cache is per source"
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains(
            r#"fedimds_target_info{target="second-app",kind="exchange",source="second"} 1"#
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_swapped_source_mapping_fails_at_entra() {
    let h = start_with(two_identities(), |raw| two_sources(raw, true)).await;
    for path in ["", "/targets/second-app"] {
        let (status, body) = h
            .imds(&format!(
                "{path}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={GRAPH}"
            ))
            .await;
        assert_eq!(status, 400, "{body}");
        let text = body["error_description"].as_str().unwrap();
        assert!(
            text.contains("AADSTS700213"),
            "the subject matches no credential: {text}"
        );
    }
}

#[tokio::test]
async fn one_daemon_serves_targets_from_an_identity_and_a_token_file() {
    let dir = temp_dir("two-kinds");
    let file = dir.join("token");
    let h = start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.sources.push(RawNamedSource {
            name: Some("cluster".into()),
            kind: Some("token-file".into()),
            path: Some(file.clone()),
            ..RawNamedSource::default()
        });
        target(raw, "contoso").source = Some("cluster".into());
    })
    .await;
    let get = |path: &'static str, resource: &'static str| {
        let h = &h;
        async move {
            h.imds(&format!(
                "{path}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={resource}"
            ))
            .await
        }
    };
    // No file yet: contoso, whose assertion is the file, fails; litware, on IMDS, does not.
    let (status, body) = get("/targets/contoso", GRAPH).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error_description"]
            .as_str()
            .unwrap()
            .contains("token file"),
        "{body}"
    );
    let (status, body) = get("", GRAPH).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::TARGET_TENANT
    );
    std::fs::write(
        &file,
        h.sim.issue_k8s_token(
            demo::K8S_ISSUER,
            demo::K8S_SUBJECT,
            demo::EXCHANGE_AUDIENCE,
            Duration::from_secs(3600),
        ),
    )
    .unwrap();
    // (Another resource: the missing file's failure is remembered for its key a while.)
    let (status, body) = get("/targets/contoso", "https://vault.azure.net").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        claims(body["access_token"].as_str().unwrap())["tid"],
        demo::OTHER_TARGET_TENANT
    );
    assert_eq!(
        h.sim.counters().imds,
        1,
        "contoso's assertion came from the file"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn check_walks_each_source_and_each_target_with_its_source() {
    let sim = fedimds_sim::Sim::start(two_identities(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut raw = fedimds::demo::raw_config(&sim.url(), "127.0.0.1:0".parse().unwrap());
    two_sources(&mut raw, false);
    raw.sources.push(RawNamedSource {
        name: Some("spare".into()),
        client_id: Some(SECOND_MI_CLIENT_ID.into()),
        ..RawNamedSource::default()
    });
    let (passed, text) = crate::check::check(&sim, &raw).await;
    assert!(passed, "{text}");
    for line in [
        "Home-tenant assertion · source 'default'",
        "Home-tenant assertion · source 'second'",
        &format!("sub       {}", SECOND_MI_OBJECT_ID),
        &format!("on app {SECOND_APP_CLIENT_ID} (second-app)"),
        "assertion source 'second': direct to",
        "[[sources]] entry 'spare' is used by no target",
        "✔ second-app",
    ] {
        assert!(text.contains(line), "{line:?} in:\n{text}");
    }
    // Swapped, each target's exchange fails at Entra, and check says which.
    let mut raw = fedimds::demo::raw_config(&sim.url(), "127.0.0.1:0".parse().unwrap());
    two_sources(&mut raw, true);
    let (passed, text) = crate::check::check(&sim, &raw).await;
    assert!(!passed, "{text}");
    assert!(text.contains("✘ litware"), "{text}");
    assert!(text.contains("✘ second-app"), "{text}");
}
