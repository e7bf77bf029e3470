//! No token, assertion or secret reaches a log line or the audit log: the daemon's diagnostic
//! logs (at TRACE, every crate) and its audit log, over a run through every dialect, the
//! refusals and upstream failures, are scanned for every token and assertion the simulator
//! issued and for the caller secrets.

use fedimds_sim::fault::{Fault, Route};
use fedimds_sim::SimConfig;

use crate::support::*;

// One thread, so the thread-local subscriber sees every task, the simulator's included.
#[tokio::test(flavor = "current_thread")]
async fn no_secret_reaches_logs_or_audit() {
    let (logs, _guard) = LogCapture::install();

    let dir = temp_dir("leaks");
    let audit = dir.join("audit.jsonl");
    let h = start_with(SimConfig::demo(), |raw| {
        raw.audit.path = Some(audit.display().to_string());
        raw.server.arc_key_dir = Some(dir.clone());
    })
    .await;
    let secret = h.app.identity_header().expose().to_owned();
    let get = |path: String, headers: Vec<(&'static str, String)>| {
        let (http, url) = (h.http.clone(), h.url.clone());
        async move {
            let mut r = http.get(format!("{url}{path}"));
            for (k, v) in headers {
                r = r.header(k, v);
            }
            status_json(r.send().await.unwrap()).await
        }
    };
    let md = || vec![("Metadata", "true".to_owned())];
    let q = format!("api-version=2018-02-01&resource={GRAPH}");

    // Served, every dialect.
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    assert_eq!(h.imds_token(GRAPH, "").await.0, 200);
    assert_eq!(
        get(
            format!("/msi/token?api-version=2019-08-01&resource={ARM}"),
            vec![("X-IDENTITY-HEADER", secret.clone())]
        )
        .await
        .0,
        200
    );
    assert_eq!(
        get(
            format!("/msi/token?api-version=2017-09-01&resource={GRAPH}&clientid=contoso"),
            vec![("secret", secret.clone())]
        )
        .await
        .0,
        200
    );
    let arc_url =
        format!("/arc/metadata/identity/oauth2/token?api-version=2020-06-01&resource={GRAPH}");
    let r = h
        .http
        .get(format!("{}{arc_url}", h.url))
        .header("Metadata", "true")
        .send()
        .await
        .unwrap();
    let realm = r.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .trim_start_matches("Basic realm=")
        .to_owned();
    let arc_key = std::fs::read_to_string(&realm).unwrap();
    assert_eq!(
        get(
            arc_url.clone(),
            vec![
                ("Metadata", "true".into()),
                ("Authorization", format!("Basic {arc_key}"))
            ]
        )
        .await
        .0,
        200
    );

    // Refused: wrong secrets (near misses of the real ones), probes, unknown ids, Entra errors.
    let near_miss = format!("{}x", &secret[..secret.len() - 1]);
    assert_eq!(
        get(
            format!("/msi/token?api-version=2019-08-01&resource={GRAPH}"),
            vec![("X-IDENTITY-HEADER", near_miss)]
        )
        .await
        .0,
        401
    );
    assert_eq!(
        get(
            arc_url,
            vec![
                ("Metadata", "true".into()),
                ("Authorization", format!("Basic {arc_key}"))
            ]
        )
        .await
        .0,
        401
    );
    assert_eq!(
        get(format!("/metadata/identity/oauth2/token?{q}"), vec![])
            .await
            .0,
        400
    );
    assert_eq!(
        get(
            format!("/metadata/identity/oauth2/token?{q}&client_id=nobody"),
            md()
        )
        .await
        .0,
        400
    );
    assert_eq!(
        get(
            format!("/targets/unconsented/metadata/identity/oauth2/token?{q}"),
            md()
        )
        .await
        .0,
        400
    );
    h.sim.push_fault(Route::Entra, Fault::aadsts(7000274));
    h.sim.push_fault(Route::Entra, Fault::aadsts(7000274));
    assert_eq!(h.imds_token("https://vault.azure.net", "").await.0, 400);
    assert_eq!(h.imds_token("https://storage.azure.com", "").await.0, 200);

    // The audit writer is a task of its own: wait until it has written every line (bounded),
    // rather than for a guess at how long that takes on a busy machine.
    let count = |text: &str, event: &str| text.lines().filter(|l| l.contains(event)).count();
    let mut audit_text = String::new();
    for _ in 0..500 {
        audit_text = std::fs::read_to_string(&audit).unwrap_or_default();
        if count(&audit_text, "\"served\"") >= 6 && count(&audit_text, "\"refused\"") >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let audit = audit_text;
    let logs = logs.text();
    assert!(count(&audit, "\"served\"") >= 6, "{audit}");
    assert!(count(&audit, "\"refused\"") >= 5, "{audit}");
    assert!(
        logs.contains("token refused"),
        "the scan read real log lines"
    );

    let mut secrets = h.sim.issued();
    assert!(
        secrets.len() >= 5,
        "the simulator issued assertions and tokens: {}",
        secrets.len()
    );
    secrets.push(secret);
    secrets.push(arc_key);
    for s in &secrets {
        // Any 24-character stretch of a secret is a leak, not just the whole of it.
        for start in (0..s.len().saturating_sub(24)).step_by(24) {
            let piece = &s[start..start + 24];
            assert!(!logs.contains(piece), "a secret reached the diagnostic log");
            assert!(!audit.contains(piece), "a secret reached the audit log");
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}
