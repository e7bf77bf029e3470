//! `fedimds check` and `fedimds config` against the simulator: each misconfiguration the demo
//! world can really have, each AADSTS code the simulator can be scripted to answer, and the
//! binary's exit statuses.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use fedimds::upstream::diagnosis;
use fedimds_sim::{Fault, Route, Sim, SimConfig};

use crate::support::{
    demo, load, remove_target, render, strings, target, temp_dir, RawCaller, RawConfig, RawServer,
    RawSource, RawTarget, GRAPH,
};

async fn sim() -> Sim {
    Sim::start(SimConfig::demo(), "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts")
}

/// The demo config (litware, contoso, unconsented) for this simulator.
fn demo_config(sim: &Sim) -> RawConfig {
    fedimds::demo::raw_config(&sim.url(), "127.0.0.1:0".parse().unwrap())
}

/// The demo config without the unconsented target: a healthy set-up.
fn healthy_config(sim: &Sim) -> RawConfig {
    let mut raw = demo_config(sim);
    remove_target(&mut raw, "unconsented");
    raw
}

/// Only the litware target.
fn one_target_config(sim: &Sim) -> RawConfig {
    let mut raw = healthy_config(sim);
    remove_target(&mut raw, "contoso");
    raw
}

/// The one-target config with a token-file source reading `path`.
fn token_file_config(sim: &Sim, path: &Path) -> RawConfig {
    let mut raw = one_target_config(sim);
    raw.source = RawSource {
        kind: Some("token-file".into()),
        path: Some(path.to_owned()),
        ..RawSource::default()
    };
    raw
}

/// Runs the check on `raw`; asserts that nothing secret was printed.
pub async fn check(sim: &Sim, raw: &RawConfig) -> (bool, String) {
    let config = load(raw);
    let mut out = Vec::new();
    let passed = fedimds::check::run(&config, &mut out).await;
    let text = String::from_utf8(out).expect("UTF-8 report");
    assert_no_secret(sim, &text);
    (passed, text)
}

fn assert_no_secret(sim: &Sim, text: &str) {
    for token in sim.issued() {
        assert!(!text.contains(&token), "a token was printed:\n{text}");
    }
    // Every JWT's header starts with this; no part of one may appear.
    assert!(
        !text.contains("eyJ"),
        "something JWT-like was printed:\n{text}"
    );
    assert!(!text.contains(demo::IDENTITY_HEADER), "{text}");
}

fn meaning(code: u32) -> &'static str {
    let host = url::Url::parse("https://login.microsoftonline.com").unwrap();
    let cx = diagnosis::Context {
        authority_host: &host,
        cloud: fedimds::cloud::CloudName::Public,
        tenant: "t",
        client_id: "c",
        scope: "s",
        claims: None,
        audience: "a",
    };
    diagnosis::diagnose(Some(code), &cx).meaning
}

/// Whether `text` says `phrase`, which the report may have wrapped over several lines.
pub fn has(text: &str, phrase: &str) -> bool {
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    words(text).contains(&words(phrase))
}

/// The report block of one target (or caller): from its ✔/✘ line to the next one or the end
/// of its section.
pub fn block<'t>(text: &'t str, target: &str) -> &'t str {
    let start = ["✔", "✘", "⚠"]
        .iter()
        .find_map(|mark| text.find(&format!("{mark} {target}\n")))
        .unwrap_or_else(|| panic!("no {target} in\n{text}"));
    // The marks are three bytes long in UTF-8.
    let rest = &text[start + "✔".len()..];
    let end = ["\n  ✔ ", "\n  ✘ ", "\n  ⚠ ", "\n\n"]
        .iter()
        .filter_map(|m| rest.find(m))
        .min()
        .unwrap_or(rest.len());
    &text[start..start + "✔".len() + end]
}

/// A file alone in a fresh temporary directory, which is removed when this is dropped (at the
/// end of the test, passed or failed).
struct TempFile(PathBuf);

impl TempFile {
    fn new(dir: &str, name: &str, contents: impl AsRef<[u8]>) -> TempFile {
        let path = temp_dir(dir).join(name);
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Deref for TempFile {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn k8s_file(sim: &Sim, issuer: &str, subject: &str, lifetime: Duration) -> TempFile {
    let token = sim.issue_k8s_token(issuer, subject, demo::EXCHANGE_AUDIENCE, lifetime);
    TempFile::new("check", "token", token)
}

#[tokio::test]
async fn healthy_set_up_passes_and_shows_claims_not_tokens() {
    let sim = sim().await;
    let (passed, text) = check(&sim, &healthy_config(&sim)).await;
    assert!(passed, "{text}");
    let issuer = fedimds_sim::config::mi_issuer(demo::HOME_TENANT);
    for line in [
        format!("iss       {issuer}"),
        format!("sub       {}", demo::MI_OBJECT_ID),
        format!("aud       {}", demo::EXCHANGE_AUDIENCE),
        format!("issuer    {issuer}"),
        format!("subject   {}", demo::MI_OBJECT_ID),
        format!("audience  {}", demo::EXCHANGE_AUDIENCE),
    ] {
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("exp       "), "{text}");
    assert!(
        text.contains(" GMT (in 2"),
        "the expiry as a date and time left:\n{text}"
    );
    let litware = block(&text, "litware");
    assert!(litware.contains("valid for 59 min 59 s"), "{litware}");
    assert!(litware.contains("fingerprint "), "{litware}");
    assert!(
        litware.contains("https://management.azure.com/ (ARM"),
        "{litware}"
    );
    assert!(block(&text, "contoso").starts_with("✔"), "{text}");
    assert!(
        text.contains("✔ all checks passed: the assertion and 2 targets"),
        "{text}"
    );
    assert!(!text.contains('✘'), "{text}");
    // One exchange per target, for the resource the report names.
    let exchanges = sim.exchanges();
    assert_eq!(exchanges.len(), 2, "{exchanges:?}");
    assert_eq!(exchanges[0].scope, "https://management.azure.com//.default");
}

#[tokio::test]
async fn the_first_prefetch_is_the_resource_checked() {
    let sim = sim().await;
    let mut raw = one_target_config(&sim);
    target(&mut raw, "litware").prefetch = strings(&["https://vault.azure.net"]);
    let (passed, text) = check(&sim, &raw).await;
    assert!(passed, "{text}");
    assert!(
        text.contains("https://vault.azure.net (its first prefetch)"),
        "{text}"
    );
    assert_eq!(sim.exchanges()[0].scope, "https://vault.azure.net/.default");
}

#[tokio::test]
async fn unconsented_app_gets_700016_with_the_consent_url() {
    let sim = sim().await;
    let (passed, text) = check(&sim, &demo_config(&sim)).await;
    assert!(!passed, "{text}");
    assert!(block(&text, "litware").starts_with("✔"), "{text}");
    let failed = block(&text, "unconsented");
    assert!(failed.starts_with("✘"), "{failed}");
    assert!(
        failed.contains("AADSTS700016 (unauthorized_client, HTTP 400)"),
        "{failed}"
    );
    assert!(has(failed, meaning(700016)), "{failed}");
    let consent = format!(
        "consent   {}/{}/adminconsent?client_id={}",
        sim.url(),
        demo::TARGET_TENANT,
        demo::UNCONSENTED_APP_CLIENT_ID
    );
    assert!(failed.contains(&consent), "{failed}");
    assert!(failed.contains("trace_id "), "{failed}");
    assert!(failed.contains("correlation_id "), "{failed}");
    assert!(
        text.contains("✘ 1 of 3 targets failed (unconsented), 2 passed"),
        "{text}"
    );
}

#[tokio::test]
async fn wrong_audience_gets_700212_and_a_warning() {
    let sim = sim().await;
    let mut raw = one_target_config(&sim);
    raw.source.audience = Some("api://SomethingElse".into());
    let (passed, text) = check(&sim, &raw).await;
    assert!(!passed, "{text}");
    assert!(
        text.contains("⚠ the audience is \"api://SomethingElse\", not the public cloud's"),
        "{text}"
    );
    let failed = block(&text, "litware");
    assert!(failed.contains("AADSTS700212"), "{failed}");
    assert!(has(failed, meaning(700212)), "{failed}");
}

#[tokio::test]
async fn aks_issuer_without_slash_gets_700211_and_a_warning() {
    let sim = sim().await;
    let issuer = "https://westeurope.oic.prod-aks.azure.com/tenant/cluster";
    let file = k8s_file(&sim, issuer, demo::K8S_SUBJECT, Duration::from_secs(3600));
    let (passed, text) = check(&sim, &token_file_config(&sim, &file)).await;
    assert!(!passed, "{text}");
    assert!(
        text.contains("⚠ this AKS issuer does not end in '/'"),
        "{text}"
    );
    assert!(text.contains(&format!("issuer    {issuer}\n")), "{text}");
    let failed = block(&text, "litware");
    assert!(failed.contains("AADSTS700211"), "{failed}");
    assert!(has(failed, meaning(700211)), "{failed}");
}

#[tokio::test]
async fn wrong_subject_gets_700213_and_the_k8s_hint() {
    let sim = sim().await;
    let subject = "system:serviceaccount:default:other";
    let file = k8s_file(&sim, demo::K8S_ISSUER, subject, Duration::from_secs(3600));
    let (passed, text) = check(&sim, &token_file_config(&sim, &file)).await;
    assert!(!passed, "{text}");
    assert!(text.contains(&format!("subject   {subject}\n")), "{text}");
    assert!(text.contains("with its trailing '/'"), "{text}");
    let failed = block(&text, "litware");
    assert!(failed.contains("AADSTS700213"), "{failed}");
    assert!(has(failed, meaning(700213)), "{failed}");
    // The right subject in the same file passes: the failure was the subject alone.
    let file = k8s_file(
        &sim,
        demo::K8S_ISSUER,
        demo::K8S_SUBJECT,
        Duration::from_secs(3600),
    );
    let (passed, text) = check(&sim, &token_file_config(&sim, &file)).await;
    assert!(passed, "{text}");
}

#[tokio::test]
async fn a_subject_in_another_case_gets_7002138() {
    let sim = sim().await;
    let subject = demo::K8S_SUBJECT.replace("default", "Default");
    let file = k8s_file(&sim, demo::K8S_ISSUER, &subject, Duration::from_secs(3600));
    let (passed, text) = check(&sim, &token_file_config(&sim, &file)).await;
    assert!(!passed, "{text}");
    let failed = block(&text, "litware");
    assert!(
        failed.contains("AADSTS7002138 (invalid_client, HTTP 401)"),
        "{failed}"
    );
    assert!(has(failed, meaning(7002138)), "{failed}");
    assert!(
        has(
            failed,
            &format!(
                "set that credential's subject on app {} to exactly \"{subject}\", in the same letter case",
                demo::APP_CLIENT_ID
            )
        ),
        "{failed}"
    );
    assert!(
        has(
            failed,
            "The subject matches with case-insensitive comparison"
        ),
        "Entra's words: {failed}"
    );
}

/// In a sovereign cloud the assertion carries that cloud's audience, and a credential made
/// with the public one only does not match: the fix names the cloud's own.
#[tokio::test]
async fn a_sovereign_cloud_names_its_own_audience_for_700212() {
    let mut world = SimConfig::demo();
    for app in &mut world.apps {
        app.federated_credentials
            .retain(|f| f.audience == demo::EXCHANGE_AUDIENCE);
    }
    let sim = Sim::start(world, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts");
    let mut raw = one_target_config(&sim);
    raw.cloud.name = Some("usgov".into());
    let (passed, text) = check(&sim, &raw).await;
    assert!(!passed, "{text}");
    assert!(
        text.contains(&format!("audience  {}\n", demo::EXCHANGE_AUDIENCE_USGOV)),
        "{text}"
    );
    let failed = block(&text, "litware");
    assert!(failed.contains("AADSTS700212"), "{failed}");
    assert!(has(failed, meaning(700212)), "{failed}");
    let fix = format!(
        "the usgov cloud's exchange audience is \"{usgov}\" (not the public cloud's \"{public}\", \
         which tools and templates default to): give the credential on app {app} the audience \
         \"{usgov}\" and ask the source for the same (source.audience, now \"{usgov}\";",
        usgov = demo::EXCHANGE_AUDIENCE_USGOV,
        public = demo::EXCHANGE_AUDIENCE,
        app = demo::APP_CLIENT_ID,
    );
    assert!(has(failed, &fix), "{fix:?} in\n{failed}");
}

#[tokio::test]
async fn forged_assertion_gets_7000274() {
    let sim = sim().await;
    let forged = sim.issue_forged_assertion(demo::MI_OBJECT_ID, demo::EXCHANGE_AUDIENCE);
    let file = TempFile::new("check-forged", "token", &forged);
    let (passed, text) = check(&sim, &token_file_config(&sim, &file)).await;
    assert!(!passed, "{text}");
    assert!(!text.contains(&forged), "{text}");
    let failed = block(&text, "litware");
    assert!(failed.contains("AADSTS7000274"), "{failed}");
    assert!(has(failed, meaning(7000274)), "{failed}");
}

#[tokio::test]
async fn stale_token_file_fails_before_any_exchange() {
    let sim = sim().await;
    let file = k8s_file(
        &sim,
        demo::K8S_ISSUER,
        demo::K8S_SUBJECT,
        Duration::from_secs(60),
    );
    let (passed, text) = check(&sim, &token_file_config(&sim, &file)).await;
    assert!(!passed, "{text}");
    assert!(
        text.contains("✘ the assertion from the token file expires in"),
        "{text}"
    );
    assert!(text.contains("not being rotated"), "{text}");
    assert!(text.contains("no target was checked"), "{text}");
    assert_eq!(sim.counters().entra, 0);
}

#[tokio::test]
async fn unknown_identity_is_explained() {
    let sim = sim().await;
    let mut raw = one_target_config(&sim);
    raw.source.client_id = Some("bbbbbbbb-0000-4000-8000-0000000000ff".into());
    let (passed, text) = check(&sim, &raw).await;
    assert!(!passed, "{text}");
    assert!(text.contains("Identity not found"), "{text}");
    assert!(
        text.contains("no identity with client_id bbbbbbbb-0000-4000-8000-0000000000ff"),
        "{text}"
    );
    assert!(text.contains("no target was checked"), "{text}");
    assert_eq!(sim.counters().entra, 0);
}

/// Every code the simulator can be scripted to answer: the right diagnosis, a failure.
#[tokio::test]
async fn each_scripted_aadsts_code_is_diagnosed() {
    let sim = sim().await;
    let raw = one_target_config(&sim);
    let codes = diagnosis::EXPLAINED;
    for code in codes {
        sim.push_fault(Route::Entra, Fault::aadsts(code));
        let (passed, text) = check(&sim, &raw).await;
        assert!(!passed, "AADSTS{code}:\n{text}");
        let failed = block(&text, "litware");
        assert!(failed.starts_with("✘"), "AADSTS{code}:\n{failed}");
        assert!(
            failed.contains(&format!("error     AADSTS{code} (")),
            "AADSTS{code}:\n{failed}"
        );
        let m = meaning(code);
        assert_ne!(m, meaning(1), "AADSTS{code} has a diagnosis of its own");
        assert!(has(failed, m), "AADSTS{code}:\n{failed}");
        assert_eq!(
            failed.contains("consent   "),
            matches!(code, 700016 | 65001),
            "AADSTS{code}:\n{failed}"
        );
        assert!(failed.contains("trace_id "), "AADSTS{code}:\n{failed}");
        assert!(text.contains("✘ 1 of 1 target failed (litware)"), "{text}");
    }
    // token_once: exactly one Entra request per check, never a retry.
    assert_eq!(sim.counters().entra, codes.len() as u64);
}

// === [[callers]] ===

fn caller(name: &str, targets: &[&str], resources: Option<&[&str]>) -> RawCaller {
    RawCaller {
        name: Some(name.into()),
        targets: strings(targets),
        resources: resources.and_then(strings),
        ..RawCaller::default()
    }
}

#[tokio::test]
async fn without_callers_check_says_everyone_may() {
    let sim = sim().await;
    let (passed, text) = check(&sim, &healthy_config(&sim)).await;
    assert!(passed, "{text}");
    assert!(
        has(
            &text,
            "Callers no [[callers]] rules: every caller that can reach the listener may have every target's tokens"
        ),
        "{text}"
    );
}

/// Each caller: how it is recognised (a secret only by its presence), its targets and
/// resources, what that gives it through each target, and where a grant gives less than it
/// names. Warnings, not failures: the set-up works, the grants are what is odd.
#[tokio::test]
async fn callers_are_reported_with_what_they_may_have() {
    let sim = sim().await;
    let secret = "caller-secret-0123456789abcdef";
    let vault = "https://vault.azure.net";
    let mut raw = healthy_config(&sim);
    target(&mut raw, "litware").resources = strings(&[GRAPH]);
    raw.callers = vec![
        RawCaller {
            secret: Some(fedimds::config::raw::RawSecret(secret.into())),
            uid: Some(1000),
            ..caller("web", &["litware"], Some(&[GRAPH, vault]))
        },
        RawCaller {
            source: Some("127.0.0.0/8".into()),
            ..caller("ops", &["*"], None)
        },
        RawCaller {
            uid: Some(1000),
            source: Some("127.0.0.1".into()),
            ..caller("late", &["contoso"], None)
        },
        RawCaller {
            gid: Some(50),
            ..caller("vaultonly", &["litware"], Some(&[vault]))
        },
        RawCaller {
            gid: Some(51),
            ..caller("empty", &[], None)
        },
    ];
    let (passed, text) = check(&sim, &raw).await;
    assert!(passed, "warnings only:\n{text}");
    assert!(!text.contains(secret), "{text}");

    let web = block(&text, "caller web");
    for line in [
        "matched   a secret (X-IDENTITY-HEADER or secret; not shown) and uid 1000",
        "targets   litware",
        "resources https://graph.microsoft.com, https://vault.azure.net",
        "may have  litware: https://graph.microsoft.com",
    ] {
        assert!(web.contains(line), "{line:?} in\n{web}");
    }
    assert!(
        has(web, "⚠ caller 'web' may ask for https://vault.azure.net, but none of its targets allows it ('litware' allows https://graph.microsoft.com)"),
        "{web}"
    );

    let ops = block(&text, "caller ops");
    for line in [
        "matched   source 127.0.0.0/8",
        "targets   all (litware, contoso)",
        "resources any the target allows",
        "may have  litware: https://graph.microsoft.com; contoso: any resource",
    ] {
        assert!(ops.contains(line), "{line:?} in\n{ops}");
    }
    assert!(ops.starts_with("✔ caller ops"), "no warning: {ops}");
    assert!(web.starts_with("⚠ caller web"), "{web}");

    let late = block(&text, "caller late");
    assert!(
        has(late, "⚠ caller 'late' is never recognised: caller 'ops', listed before it, matches every request it would"),
        "{late}"
    );

    let vault_only = block(&text, "caller vaultonly");
    assert!(vault_only.contains("may have  nothing"), "{vault_only}");
    assert!(
        has(vault_only, "⚠ caller 'vaultonly' is granted target 'litware', but that target allows none of the caller's resources (https://vault.azure.net; the target allows https://graph.microsoft.com): the grant gives nothing"),
        "{vault_only}"
    );

    let empty = block(&text, "caller empty");
    assert!(empty.contains("targets   none"), "{empty}");
    assert!(
        has(
            empty,
            "⚠ caller 'empty' has targets = []: it is granted no target and gets no token"
        ),
        "{empty}"
    );
    assert!(has(&text, "✔ all checks passed"), "{text}");
}

#[tokio::test]
async fn entra_outage_is_reported_without_retrying() {
    let sim = sim().await;
    sim.push_fault(Route::Entra, Fault::status(503).forever());
    let (passed, text) = check(&sim, &one_target_config(&sim)).await;
    assert!(!passed, "{text}");
    assert!(text.contains("Entra answered HTTP 503"), "{text}");
    assert_eq!(sim.counters().entra, 1);
}

// === the binary ===

async fn run_binary(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fedimds"));
    cmd.args(args).env_remove("FEDIMDS_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Blocking, on its own thread: the simulator keeps serving on this one.
    tokio::task::spawn_blocking(move || cmd.output().expect("fedimds runs"))
        .await
        .unwrap()
}

fn write_config(raw: &RawConfig) -> TempFile {
    TempFile::new("check-bin", "fedimds.toml", render(raw))
}

#[tokio::test]
async fn binary_exits_64_on_a_bad_config() {
    let path = write_config(&RawConfig {
        server: RawServer {
            listen: Some("not an address".into()),
            ..RawServer::default()
        },
        ..RawConfig::default()
    });
    for sub in ["check", "config"] {
        let out = run_binary(&[sub, "--config", path.to_str().unwrap()], &[]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{sub}: {stderr}");
        assert!(stderr.contains("server.listen"), "{sub}: {stderr}");
    }
}

#[tokio::test]
async fn binary_exit_status_follows_the_check() {
    let sim = sim().await;
    let bad = write_config(&demo_config(&sim));
    let out = run_binary(&["check", "--config", bad.to_str().unwrap()], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("AADSTS700016"), "{stdout}");
    assert!(stdout.starts_with(&format!("fedimds check · {}", bad.display())));
    assert_no_secret(&sim, &stdout);
    let good = write_config(&healthy_config(&sim));
    let out = run_binary(&["check"], &[("FEDIMDS_CONFIG", good.to_str().unwrap())]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("✔ all checks passed"), "{stdout}");
}

#[tokio::test]
async fn binary_config_shows_origins_and_redacts() {
    let secret = "file-secret-abcdefghijklmnop";
    let path = write_config(&RawConfig {
        server: RawServer {
            identity_header: Some(secret.into()),
            ..RawServer::default()
        },
        source: RawSource {
            kind: Some("app-service".into()),
            ..RawSource::default()
        },
        targets: vec![RawTarget {
            tenant_id: Some("t1".into()),
            client_id: Some("app1".into()),
            ..RawTarget::default()
        }],
        ..RawConfig::default()
    });
    let env_secret = "env-secret-abcdefghijklmnop";
    let out = run_binary(
        &["config"],
        &[
            ("FEDIMDS_CONFIG", path.to_str().unwrap()),
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            ("IDENTITY_HEADER", env_secret),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains(secret), "{stdout}");
    assert!(!stdout.contains(env_secret), "{stdout}");
    assert!(stdout.contains("(env FEDIMDS_CONFIG)"), "{stdout}");
    let line = |start: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start} in\n{stdout}"))
            .to_owned()
    };
    assert!(line("identity_header ").contains("(redacted)"), "{stdout}");
    assert!(line("identity_header ").ends_with("# file"), "{stdout}");
    assert!(
        line("endpoint").ends_with("# env IDENTITY_ENDPOINT"),
        "{stdout}"
    );
    assert!(
        line("header ").ends_with("# env IDENTITY_HEADER"),
        "{stdout}"
    );
    assert!(line("listen").contains("\"127.0.0.1:8181\""), "{stdout}");
    assert!(line("listen").ends_with("# default"), "{stdout}");
    let out = run_binary(
        &["config", "--config", path.to_str().unwrap()],
        &[
            ("IDENTITY_ENDPOINT", "http://127.0.0.1:9/msi/token"),
            ("IDENTITY_HEADER", env_secret),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("(flag --config)"), "{stdout}");
}
