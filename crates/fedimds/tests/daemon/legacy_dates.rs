//! `expires_on` in the App Service 2017-09-01 dialect, per `app_service.legacy_expires_on`:
//! the date App Service wrote for the clients that parse only it (old azure-identity, told
//! apart by their User-Agent), epoch seconds for the rest; the other dialects never change.

use fedimds::config::raw::RawAppService;
use serde_json::Value;

use crate::support::*;

/// What azure-identity 1.5.0 sends (`_internal/user_agent.py`): the version that raises on
/// epoch seconds.
const OLD_PYTHON: &str =
    "azsdk-python-identity/1.5.0 Python/3.11.2 (Linux-6.1.0-x86_64-with-glibc2.36)";
/// What @azure/identity 2.1.0 sends: `Date.parse` of the value.
const OLD_JS: &str =
    "azsdk-js-identity/2.1.0 core-rest-pipeline/1.9.2 Node/v18.20.0 OS/(x64-Linux-6.1.0)";
/// What the MSAL-era clients of the same dialect send.
const MSAL_PYTHON: &str = "python-requests/2.34.2";
const NEW_PYTHON: &str =
    "azsdk-python-identity/1.27.0 Python/3.11.2 (Linux-6.1.0-x86_64-with-glibc2.36)";

async fn start_choosing(choice: Option<&str>) -> Harness {
    start_with(fedimds_sim::SimConfig::demo(), |raw| {
        raw.app_service = RawAppService {
            legacy_expires_on: choice.map(str::to_owned),
        };
    })
    .await
}

/// A 2017-09-01 request as MSI_ENDPOINT clients send it, with `user_agent` when given.
async fn legacy(h: &Harness, user_agent: Option<&str>) -> Value {
    let secret = h.app.identity_header().expose().to_owned();
    let mut request = h
        .http
        .get(format!(
            "{}/msi/token?api-version=2017-09-01&resource={GRAPH}",
            h.url
        ))
        .header("secret", &secret);
    if let Some(ua) = user_agent {
        request = request.header("User-Agent", ua);
    }
    let (status, body) = status_json(request.send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// `expires_on` as a number of seconds, from either form, checked to be exactly that form.
fn expires_on(body: &Value, dated: bool) -> u64 {
    let text = body["expires_on"].as_str().expect("a string");
    if dated {
        // `MM/DD/YYYY HH:MM:SS +00:00`, as App Service wrote it; `date -u` reads it back.
        let b = text.as_bytes();
        let shape = text.len() == 26
            && [2, 5].iter().all(|&i| b[i] == b'/')
            && [13, 16].iter().all(|&i| b[i] == b':')
            && text.ends_with(" +00:00");
        assert!(shape, "not the App Service date: {text}");
        let out = std::process::Command::new("date")
            .args(["-u", "-d", text, "+%s"])
            .output()
            .expect("date runs");
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .expect("date parses it")
    } else {
        text.parse()
            .unwrap_or_else(|_| panic!("not epoch seconds: {text}"))
    }
}

#[tokio::test]
async fn auto_gives_old_azure_identity_the_date_and_everyone_else_epoch_seconds() {
    let h = start_choosing(None).await;
    let epoch = legacy(&h, Some(MSAL_PYTHON)).await;
    let at = expires_on(&epoch, false);
    for ua in [OLD_PYTHON, OLD_JS] {
        let body = legacy(&h, Some(ua)).await;
        assert_eq!(
            expires_on(&body, true),
            at,
            "{ua}: the same moment, as a date"
        );
        assert_client_safe_but_expires_on(&body);
    }
    for ua in [Some(MSAL_PYTHON), Some(NEW_PYTHON), None] {
        assert_eq!(expires_on(&legacy(&h, ua).await, false), at, "{ua:?}");
    }
    // One token, fetched once: the form is chosen per answer, from the cached token.
    assert_eq!(h.sim.counters().entra, 1);
    // The User-Agent means nothing on the other dialects.
    let r = h
        .imds_request()
        .header("User-Agent", OLD_PYTHON)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expires_on(&body, false), at);
    let r = h
        .http
        .get(format!(
            "{}/msi/token?api-version=2019-08-01&resource={GRAPH}",
            h.url
        ))
        .header("X-IDENTITY-HEADER", h.app.identity_header().expose())
        .header("User-Agent", OLD_PYTHON)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(expires_on(&body, false), at);
}

#[tokio::test]
async fn date_gives_every_legacy_caller_the_date() {
    let h = start_choosing(Some("date")).await;
    let at = expires_on(&h.imds_token(GRAPH, "").await.1, false);
    for ua in [Some(OLD_PYTHON), Some(MSAL_PYTHON), None] {
        assert_eq!(expires_on(&legacy(&h, ua).await, true), at, "{ua:?}");
    }
}

#[tokio::test]
async fn epoch_gives_every_legacy_caller_epoch_seconds() {
    let h = start_choosing(Some("epoch")).await;
    for ua in [Some(OLD_PYTHON), Some(OLD_JS), None] {
        expires_on(&legacy(&h, ua).await, false);
    }
}

#[tokio::test]
async fn a_reload_applies_the_choice() {
    let h = start_choosing(Some("epoch")).await;
    expires_on(&legacy(&h, Some(OLD_PYTHON)).await, false);
    let dir = temp_dir("legacy-dates");
    let path = dir.join("fedimds.toml");
    let mut raw = fedimds::demo::raw_config(&h.sim.url(), h.app.settings().config.server.listen);
    raw.app_service.legacy_expires_on = Some("auto".to_owned());
    std::fs::write(&path, render(&raw)).unwrap();
    assert!(fedimds::reload::reload(&h.app, &path, "test"));
    expires_on(&legacy(&h, Some(OLD_PYTHON)).await, true);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unknown_choice_is_refused_naming_the_key() {
    let text = format!(
        "{}\n[app_service]\nlegacy_expires_on = \"iso\"\n",
        render(&fedimds::demo::raw_config(
            "http://127.0.0.1:1",
            "127.0.0.1:0".parse().unwrap()
        ))
    );
    let error = fedimds::config::Config::from_toml(&text, "test", &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("app_service.legacy_expires_on") && error.contains("\"auto\""),
        "{error}"
    );
}

/// [`assert_client_safe`]'s rules but for `expires_on`, which is the date here.
fn assert_client_safe_but_expires_on(body: &Value) {
    let mut body = body.clone();
    let at = expires_on(&body, true);
    body["expires_on"] = Value::String(at.to_string());
    assert_client_safe(&body, GRAPH);
}
