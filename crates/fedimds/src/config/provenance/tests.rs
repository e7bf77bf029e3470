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
const CALLER_SECRET: &str = "caller-secret-0123456789";
const OTHER_CALLER_SECRET: &str = "caller-other-secret-abcdefgh";

/// FILE with every key the loader gained since: the rest of `[server]`, `[admin]`, `[audit]`
/// and two `[[callers]]`, the second with only what it must have.
fn full_file() -> String {
    FILE.replace(
        "identity_header = \"file-secret-0123456789\"\n",
        "identity_header = \"file-secret-0123456789\"\n\
         unix_socket = \"/run/fedimds/fedimds.sock\"\n\
         unix_socket_mode = 0o600\n\
         allowed_hosts = [\"fedimds.internal\"]\n\
         max_connections = 64\n\
         header_read_timeout = \"2s\"\n\
         max_header_bytes = 32768\n",
    ) + &format!(
        r#"
[[callers]]
name = "billing"
secret = "{CALLER_SECRET}"
uid = 1000
gid = 1001
source = "10.0.0.0/8"
targets = ["litware"]
resources = ["https://graph.microsoft.com"]
rate = 20

[[callers]]
secret = "{OTHER_CALLER_SECRET}"
targets = ["*"]

[admin]
listen = "127.0.0.1:9001"

[audit]
path = "/var/log/fedimds/audit.jsonl"
"#
    )
}

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

/// Asserts each key's value and origin.
fn expect(entries: &[Entry], want: &[(&str, &str, Origin)]) {
    for (key, value, origin) in want {
        let e = get(entries, key);
        assert_eq!((e.value.as_str(), &e.origin), (*value, origin), "{key}");
    }
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

#[test]
fn newer_keys_show_their_defaults() {
    let e = entries(FILE, &app_service_env());
    expect(
        &e,
        &[
            ("server.unix_socket", "(none)", Origin::Default),
            ("server.unix_socket_mode", "0o660", Origin::Default),
            ("server.allowed_hosts", "[]", Origin::Default),
            ("server.max_connections", "1024", Origin::Default),
            ("server.header_read_timeout", "\"5s\"", Origin::Default),
            ("server.max_header_bytes", "16384", Origin::Default),
            ("admin.listen", "\"127.0.0.1:8182\"", Origin::Default),
            ("audit.path", "\"off\"", Origin::Default),
        ],
    );
    assert!(!e.iter().any(|e| e.key.starts_with("callers")), "{e:#?}");
}

#[test]
fn newer_keys_from_the_file() {
    let e = entries(&full_file(), &app_service_env());
    expect(
        &e,
        &[
            (
                "server.unix_socket",
                "\"/run/fedimds/fedimds.sock\"",
                Origin::File,
            ),
            ("server.unix_socket_mode", "0o600", Origin::File),
            (
                "server.allowed_hosts",
                "[\"fedimds.internal\"]",
                Origin::File,
            ),
            ("server.max_connections", "64", Origin::File),
            ("server.header_read_timeout", "\"2s\"", Origin::File),
            ("server.max_header_bytes", "32768", Origin::File),
            ("callers[0].name", "\"billing\"", Origin::File),
            ("callers[0].secret", REDACTED, Origin::File),
            ("callers[0].uid", "1000", Origin::File),
            ("callers[0].gid", "1001", Origin::File),
            ("callers[0].source", "\"10.0.0.0/8\"", Origin::File),
            ("callers[0].targets", "[\"litware\"]", Origin::File),
            (
                "callers[0].resources",
                "[\"https://graph.microsoft.com\"]",
                Origin::File,
            ),
            ("callers[0].rate", "20.0", Origin::File),
            ("callers[1].name", "\"caller-1\"", Origin::Default),
            ("callers[1].secret", REDACTED, Origin::File),
            ("callers[1].uid", "(none)", Origin::Default),
            ("callers[1].gid", "(none)", Origin::Default),
            ("callers[1].source", "(none)", Origin::Default),
            ("callers[1].targets", "[\"*\"]", Origin::File),
            ("callers[1].resources", "(any)", Origin::Default),
            ("callers[1].rate", "(unlimited)", Origin::Default),
            ("admin.listen", "\"127.0.0.1:9001\"", Origin::File),
            (
                "audit.path",
                "\"/var/log/fedimds/audit.jsonl\"",
                Origin::File,
            ),
        ],
    );
    // In the file's order: the rest of [server] after arc_key_group, then targets, callers,
    // admin, audit.
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    let at = |k: &str| keys.iter().position(|x| *x == k).unwrap();
    assert_eq!(at("server.unix_socket"), at("server.arc_key_group") + 1);
    assert_eq!(at("server.max_header_bytes"), at("source.kind") - 1);
    assert!(at("targets[0].prefetch") < at("callers[0].name"));
    assert_eq!(at("admin.listen"), at("callers[1].rate") + 1);
    assert_eq!(at("audit.path"), keys.len() - 1);
}

#[test]
fn admin_off_and_audit_to_stdout() {
    for (admin, audit, admin_value, audit_value) in [
        ("off", "off", "\"off\"", "\"off\""),
        ("off", "-", "\"off\"", "\"-\""),
        ("[::1]:9002", "stdout", "\"[::1]:9002\"", "\"-\""),
    ] {
        let file =
            format!("{FILE}\n[admin]\nlisten = \"{admin}\"\n\n[audit]\npath = \"{audit}\"\n");
        let e = entries(&file, &app_service_env());
        expect(
            &e,
            &[
                ("admin.listen", admin_value, Origin::File),
                ("audit.path", audit_value, Origin::File),
            ],
        );
    }
}

#[test]
fn caller_secrets_are_never_rendered() {
    let e = entries(&full_file(), &app_service_env());
    let text = render(&e, Path::new("fedimds.toml"), &Origin::Flag("--config"));
    assert!(!text.contains(CALLER_SECRET), "{text}");
    assert!(!text.contains(OTHER_CALLER_SECRET), "{text}");
    assert_eq!(text.matches("[[callers]]\n").count(), 2, "{text}");
    assert!(text.contains("\n[admin]\n"), "{text}");
    assert!(text.contains("\n[audit]\n"), "{text}");
    let secrets: Vec<&str> = text.lines().filter(|l| l.starts_with("secret")).collect();
    assert_eq!(secrets.len(), 2, "{text}");
    for line in secrets {
        assert!(
            line.contains(REDACTED) && line.ends_with("# file"),
            "{line}"
        );
    }
    let mode = text
        .lines()
        .find(|l| l.starts_with("unix_socket_mode"))
        .unwrap();
    assert!(
        mode.contains("= 0o600") && mode.ends_with("# file"),
        "{mode}"
    );

    // Keys the listing does not know are shown as written: a caller's secret among them is
    // still redacted, by its name, and the [[callers]] array is never printed whole.
    let file: Table = toml::from_str(&full_file()).unwrap();
    let vars = app_service_env();
    let env = move |name: &str| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned())
    };
    let mut config = Config::from_toml(&full_file(), "test.toml", &env).unwrap();
    config.callers.clear();
    let e = effective(&config, &file, &env);
    expect(
        &e,
        &[
            ("callers[0].secret", REDACTED, Origin::File),
            ("callers[0].uid", "1000", Origin::File),
            ("callers[1].secret", REDACTED, Origin::File),
        ],
    );
    let text = render(&e, Path::new("fedimds.toml"), &Origin::Default);
    assert!(!text.contains(CALLER_SECRET), "{text}");
    assert!(!text.contains(OTHER_CALLER_SECRET), "{text}");
}
