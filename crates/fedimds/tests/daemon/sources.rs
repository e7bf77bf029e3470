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
