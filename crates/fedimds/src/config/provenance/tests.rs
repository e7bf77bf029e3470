use std::collections::HashMap;

use super::*;

const FILE: &str = r#"
[server]
listen = "127.0.0.1:9000"
identity_header = "file-secret-0123456789"

[source]
kind = "app-service"
client_id = "bbbbbbbb-0000-4000-8000-00000000b001"

[cache]
error_ttl = "2m"

[[targets]]
name = "litware"
tenant_id = "22222222-2222-4222-8222-222222222222"
client_id = "aaaaaaaa-0000-4000-8000-00000000a001"
prefetch = ["https://graph.microsoft.com"]
"#;

const ENV_SECRET: &str = "env-secret-abcdefghijklmnop";

fn entries(file: &str, vars: &[(&str, &str)]) -> Vec<Entry> {
    let vars: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let env = move |name: &str| vars.get(name).cloned();
    let config = Config::from_toml(file, "test.toml", &env).unwrap();
    effective(&config, &toml::from_str(file).unwrap(), &env)
}

fn get<'e>(entries: &'e [Entry], key: &str) -> &'e Entry {
    entries
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no {key} in {entries:#?}"))
}

fn app_service_env() -> Vec<(&'static str, &'static str)> {
    vec![
        (ENV_IDENTITY_ENDPOINT, "http://127.0.0.1:41234/msi/token"),
        (ENV_IDENTITY_HEADER, ENV_SECRET),
    ]
}

#[test]
fn origins_file_env_default() {
    let e = entries(FILE, &app_service_env());
    let listen = get(&e, "server.listen");
    assert_eq!(
        (listen.value.as_str(), &listen.origin),
        ("\"127.0.0.1:9000\"", &Origin::File)
    );
    let endpoint = get(&e, "source.endpoint");
    assert_eq!(endpoint.origin, Origin::Env(ENV_IDENTITY_ENDPOINT));
    assert_eq!(endpoint.value, "\"http://127.0.0.1:41234/msi/token\"");
    assert_eq!(
        get(&e, "source.header").origin,
        Origin::Env(ENV_IDENTITY_HEADER)
    );
    let miss = get(&e, "server.miss_timeout");
    assert_eq!(
        (miss.value.as_str(), &miss.origin),
        ("\"20s\"", &Origin::Default)
    );
    assert_eq!(get(&e, "cache.error_ttl").value, "\"2m\"");
    assert_eq!(get(&e, "cache.error_ttl").origin, Origin::File);
    assert_eq!(get(&e, "cloud.name").origin, Origin::Default);
    assert_eq!(
        get(&e, "source.audience").value,
        "\"api://AzureADTokenExchange\""
    );
    assert_eq!(get(&e, "targets[0].name").origin, Origin::File);
    assert_eq!(get(&e, "targets[0].default").origin, Origin::Default);
    assert_eq!(get(&e, "targets[0].resources").value, "(any)");
}

#[test]
fn the_file_wins_over_the_environment() {
    let with_endpoint = FILE.replace(
        "kind = \"app-service\"",
        "kind = \"app-service\"\nendpoint = \"http://127.0.0.1:1/msi/token\"",
    );
    let e = entries(&with_endpoint, &app_service_env());
    assert_eq!(get(&e, "source.endpoint").origin, Origin::File);
    assert_eq!(
        get(&e, "source.endpoint").value,
        "\"http://127.0.0.1:1/msi/token\""
    );
}

#[test]
fn fedimds_env_supplies_the_caller_secret() {
    let no_header = FILE.replace("identity_header = \"file-secret-0123456789\"\n", "");
    let mut vars = app_service_env();
    vars.push((ENV_SERVER_IDENTITY_HEADER, "fedimds-env-secret-0123456789"));
    let e = entries(&no_header, &vars);
    let header = get(&e, "server.identity_header");
    assert_eq!(header.origin, Origin::Env(ENV_SERVER_IDENTITY_HEADER));
    assert_eq!(header.value, REDACTED);
    // Without it: generated per start, the default.
    let e = entries(&no_header, &app_service_env());
    assert_eq!(get(&e, "server.identity_header").origin, Origin::Default);
}

#[test]
fn secrets_are_never_rendered() {
    let e = entries(FILE, &app_service_env());
    let text = render(
        &e,
        Path::new("/etc/fedimds/fedimds.toml"),
        &Origin::Flag("--config"),
    );
    assert!(!text.contains("file-secret"), "{text}");
    assert!(!text.contains(ENV_SECRET), "{text}");
    assert!(text.contains("identity_header"), "{text}");
    assert!(text.contains(REDACTED), "{text}");
    assert!(text.contains("(flag --config)"), "{text}");
    assert!(text.contains("[[targets]]"), "{text}");
    let listen = text.lines().find(|l| l.starts_with("listen")).unwrap();
    assert!(listen.ends_with("# file"), "{listen}");
    let endpoint = text.lines().find(|l| l.starts_with("endpoint")).unwrap();
    assert!(
        endpoint.ends_with(&format!("# env {ENV_IDENTITY_ENDPOINT}")),
        "{endpoint}"
    );
}

#[test]
fn durations_render_as_written() {
    assert_eq!(
        duration(Duration::from_millis(500)).to_string(),
        "\"500ms\""
    );
    assert_eq!(duration(Duration::from_secs(20)).to_string(), "\"20s\"");
    assert_eq!(duration(Duration::from_secs(300)).to_string(), "\"5m\"");
    assert_eq!(duration(Duration::from_secs(86400)).to_string(), "\"24h\"");
    assert_eq!(duration(Duration::ZERO).to_string(), "\"0s\"");
}
