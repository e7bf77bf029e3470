use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use toml::Table;

use super::*;
use crate::config::{
    ENV_FEDERATED_TOKEN_FILE, ENV_IDENTITY_ENDPOINT, ENV_IDENTITY_HEADER,
    ENV_SERVER_IDENTITY_HEADER,
};

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
    Config::from_toml_recorded(file, "test.toml", &env)
        .unwrap()
        .1
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
    let show = |d| RawDuration::from(d).show();
    assert_eq!(show(Duration::from_millis(500)), "\"500ms\"");
    assert_eq!(show(Duration::from_secs(20)), "\"20s\"");
    assert_eq!(show(Duration::from_secs(300)), "\"5m\"");
    assert_eq!(show(Duration::from_secs(86400)), "\"24h\"");
    assert_eq!(show(Duration::ZERO), "\"0s\"");
    // From the file, exactly as written: a number of seconds stays a number.
    let e = entries(
        &FILE.replace("error_ttl = \"2m\"", "error_ttl = 90"),
        &app_service_env(),
    );
    assert_eq!(get(&e, "cache.error_ttl").value, "90");
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
            ("service_fabric.listen", "off", Origin::Default),
            (
                "service_fabric.cert_file",
                "(generated at start)",
                Origin::Default,
            ),
            ("service_fabric.thumbprint_file", "(none)", Origin::Default),
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
            ("audit.fail_closed", "false", Origin::Default),
        ],
    );
    // In the order read: each section's keys together, sections in the file's order but
    // for [cloud], read before [source] because the source's defaults depend on it.
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    let at = |k: &str| keys.iter().position(|x| *x == k).unwrap();
    assert_eq!(at("server.unix_socket"), at("server.arc_key_group") + 1);
    assert_eq!(at("server.max_header_bytes"), at("cloud.name") - 1);
    assert!(at("cloud.authority_host") < at("source.kind"));
    assert!(at("targets[0].prefetch") < at("callers[0].name"));
    assert_eq!(at("admin.listen"), at("callers[1].rate") + 1);
    assert_eq!(at("audit.fail_closed"), at("service_fabric.listen") - 1);
    assert_eq!(at("service_fabric.thumbprint_file"), keys.len() - 1);
}

#[test]
fn admin_off_and_audit_to_stdout() {
    for (admin, audit, admin_value, audit_value) in [
        ("off", "off", "\"off\"", "\"off\""),
        ("off", "-", "\"off\"", "\"-\""),
        ("[::1]:9002", "stdout", "\"[::1]:9002\"", "\"stdout\""),
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
    let secrets: Vec<&str> = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("secret"))
        .collect();
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
}

// === the example config, walked key by key ===

/// Stands in for the example's `"..."` placeholders: long enough for a secret, and never to be
/// seen in what `fedimds config` prints.
const DUMMY_SECRET: &str = "dummy-secret-from-the-example-0123";

/// One `key = value` line of the example, set or commented out.
#[derive(Debug, Clone)]
struct ExampleKey {
    /// `server`, `targets`, `callers`, …
    section: String,
    /// Whether the section is an array of tables.
    array: bool,
    name: String,
    /// The value as written (placeholders replaced).
    value: String,
    commented: bool,
    /// `$NAME`s the comments before it name as its fallback.
    env: Vec<String>,
}

/// Every key the example config names, in order, from its text: the set ones and the
/// commented-out ones, with the environment variables its comments say supply them.
fn example_keys() -> Vec<ExampleKey> {
    let text = include_str!("../../../../../config/fedimds.example.toml");
    let mut keys = Vec::new();
    let (mut section, mut array, mut env) = (String::new(), false, Vec::new());
    for line in text.lines() {
        let commented = line.trim_start().starts_with('#');
        let body = line.trim_start().trim_start_matches('#').trim();
        if let Some(name) = body.strip_prefix("[[").and_then(|b| b.split_once("]]")) {
            (section, array) = (name.0.to_owned(), true);
            continue;
        }
        if let Some(name) = body.strip_prefix('[').and_then(|b| b.split_once(']')) {
            if !commented {
                (section, array) = (name.0.to_owned(), false);
            }
            continue;
        }
        // `key = value` that parses as TOML, perhaps with a trailing comment; anything else
        // is prose, whose `$NAME`s belong to the next key.
        let parsed = body.split_once('=').and_then(|(name, _)| {
            let name = name.trim();
            let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            let line = body.replace("\"...\"", &format!("\"{DUMMY_SECRET}\""));
            // The whole line, or the line up to a trailing ` # comment`.
            let ends = std::iter::once(line.len()).chain(line.match_indices(" #").map(|(i, _)| i));
            let table = ends
                .into_iter()
                .find_map(|end| toml::from_str::<Table>(&line[..end]).ok())?;
            let value = table.get(name)?.to_string();
            ok.then(|| (name.to_owned(), value))
        });
        match parsed {
            Some((name, value)) => keys.push(ExampleKey {
                section: section.clone(),
                array,
                name,
                value,
                commented,
                env: std::mem::take(&mut env),
            }),
            None => env.extend(
                body.split('$')
                    .skip(1)
                    .map(|rest| {
                        rest.chars()
                            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                            .collect::<String>()
                    })
                    .filter(|n| !n.is_empty()),
            ),
        }
    }
    keys
}

impl ExampleKey {
    fn dotted(&self) -> String {
        if self.array {
            format!("{}[0].{}", self.section, self.name)
        } else {
            format!("{}.{}", self.section, self.name)
        }
    }
}

/// Whether two TOML value texts mean the same value (`0o660` and `432` do).
fn same_value(a: &str, b: &str) -> bool {
    let parse = |v: &str| {
        toml::from_str::<Table>(&format!("v = {v}"))
            .ok()?
            .remove("v")
    };
    let number = |v: &toml::Value| v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a == b || (number(&a).is_some() && number(&a) == number(&b)),
        _ => false,
    }
}

/// A config of `keys` as TOML, each section once.
fn toml_of(keys: &[&ExampleKey]) -> String {
    let mut out = String::new();
    let mut sections: Vec<(&str, bool)> = Vec::new();
    for k in keys {
        if !sections.contains(&(k.section.as_str(), k.array)) {
            sections.push((&k.section, k.array));
        }
    }
    for (section, array) in sections {
        out += &if array {
            format!("[[{section}]]\n")
        } else {
            format!("[{section}]\n")
        };
        for k in keys.iter().filter(|k| k.section == section) {
            out += &format!("{} = {}\n", k.name, k.value);
        }
    }
    out
}

/// Loads `keys` with `kind` as the source kind, dropping each key the loader says that kind
/// does not read. Returns the keys kept and the loader's record.
fn load_as_kind<'k>(
    keys: &[&'k ExampleKey],
    kind: &str,
    vars: &[(&str, &str)],
) -> (Vec<&'k ExampleKey>, Vec<Entry>) {
    let kind_line = ExampleKey {
        section: "source".to_owned(),
        array: false,
        name: "kind".to_owned(),
        value: format!("\"{kind}\""),
        commented: false,
        env: Vec::new(),
    };
    let mut kept: Vec<&ExampleKey> = keys
        .iter()
        .copied()
        .filter(|k| k.dotted() != "source.kind")
        .collect();
    loop {
        let mut all = kept.clone();
        all.push(&kind_line);
        match Config::from_toml_recorded(&toml_of(&all), "example", &|n: &str| {
            vars.iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| (*v).to_owned())
        }) {
            Ok((_, entries)) => return (kept, entries),
            // A key its kind does not read, or one of two keys that exclude each other
            // (callers[].secret and secret_file).
            Err(ConfigError::Invalid { key, expected, .. })
                if expected.contains("applies only to kind") || expected.starts_with("unset: ") =>
            {
                kept.retain(|k| k.dotted() != key);
            }
            Err(e) => panic!(
                "the example with kind = {kind} does not load: {e}\n{}",
                toml_of(&all)
            ),
        }
    }
}

#[test]
fn every_key_of_the_example_is_reported_with_the_origin_it_had() {
    let keys = example_keys();
    assert!(keys.len() > 40, "the example was read: {keys:#?}");
    let kinds = ["imds", "app-service", "token-file"];
    // Fallbacks the kinds need when the file leaves their keys out.
    let env_for_kinds = [
        (ENV_IDENTITY_ENDPOINT, "http://127.0.0.1:1/msi/token"),
        (ENV_IDENTITY_HEADER, "identity-header-from-env-0123"),
        (ENV_FEDERATED_TOKEN_FILE, "/var/run/token-from-env"),
    ];
    let mut reported = HashSet::new();

    // Every key set, commented ones too: each shows its value as written, from the file.
    let everything: Vec<&ExampleKey> = keys.iter().collect();
    for kind in kinds {
        let (kept, entries) = load_as_kind(&everything, kind, &env_for_kinds);
        let shown_kind = get(&entries, "source.kind");
        assert_eq!(
            (shown_kind.value.as_str(), &shown_kind.origin),
            (format!("\"{kind}\"").as_str(), &Origin::File)
        );
        reported.insert("source.kind".to_owned());
        for k in &kept {
            let e = get(&entries, &k.dotted());
            assert_eq!(e.origin, Origin::File, "{} with kind = {kind}", k.dotted());
            assert!(
                same_value(&e.value, &k.value) || e.value == REDACTED,
                "{}: shown {} but written {}",
                k.dotted(),
                e.value,
                k.value
            );
            reported.insert(k.dotted());
        }
        for e in &entries {
            assert!(!e.value.contains(DUMMY_SECRET), "{} shows a secret", e.key);
            let name = e.key.rsplit('.').next().unwrap();
            let section = e.key.split(['.', '[']).next().unwrap();
            assert!(
                keys.iter().any(|k| k.section == section && k.name == name),
                "the loader reads {}, which the example does not document",
                e.key
            );
        }
    }
    // callers[].secret_file excludes callers[].secret, and is read at load: the example's once
    // more with the file in place of the secret.
    let dir = std::env::temp_dir().join(format!("fedimds-provenance-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_file = dir.join("caller");
    std::fs::write(&secret_file, format!("{DUMMY_SECRET}\n")).unwrap();
    let with_file: Vec<ExampleKey> = keys
        .iter()
        .filter(|k| !(k.section == "callers" && k.name == "secret"))
        .map(|k| match k.name.as_str() {
            "secret_file" => ExampleKey {
                value: toml::Value::String(secret_file.display().to_string()).to_string(),
                ..k.clone()
            },
            _ => k.clone(),
        })
        .collect();
    let (kept, entries) = load_as_kind(
        &with_file.iter().collect::<Vec<_>>(),
        "imds",
        &env_for_kinds,
    );
    assert!(kept.iter().any(|k| k.dotted() == "callers[0].secret_file"));
    let e = get(&entries, "callers[0].secret_file");
    assert_eq!(e.origin, Origin::File);
    reported.insert(e.key.clone());
    let _ = std::fs::remove_dir_all(&dir);

    for k in &keys {
        assert!(
            reported.contains(&k.dotted()),
            "{} was never reported",
            k.dotted()
        );
    }

    // The example as shipped: what it sets is from the file, what it comments out is the default.
    let shipped: Vec<&ExampleKey> = keys.iter().filter(|k| !k.commented).collect();
    let (_, entries) = load_as_kind(&shipped, "imds", &[]);
    for k in &keys {
        let Some(e) = entries.iter().find(|e| e.key == k.dotted()) else {
            continue;
        };
        let want = if k.commented {
            Origin::Default
        } else {
            Origin::File
        };
        assert_eq!(e.origin, want, "{}", k.dotted());
    }

    // Each key the comments say a variable supplies: left out of the file, it comes from
    // that variable for some source kind, and from nowhere but the default for the others.
    for k in keys.iter().filter(|k| !k.env.is_empty()) {
        for var in &k.env {
            let var: &'static str = Box::leak(var.clone().into_boxed_str());
            let without: Vec<&ExampleKey> = everything
                .iter()
                .copied()
                .filter(|o| o.dotted() != k.dotted())
                .collect();
            let mut origins = Vec::new();
            for kind in kinds {
                let mut vars = env_for_kinds.to_vec();
                vars.retain(|(n, _)| *n != var);
                vars.push((var, "http://127.0.0.1:2/from-the-environment-0123"));
                let (_, entries) = load_as_kind(&without, kind, &vars);
                if let Some(e) = entries.iter().find(|e| e.key == k.dotted()) {
                    assert!(
                        e.origin == Origin::Env(var) || e.origin == Origin::Default,
                        "{} with kind = {kind}: {:?}",
                        k.dotted(),
                        e.origin
                    );
                    origins.push(e.origin.clone());
                }
            }
            assert!(
                origins.contains(&Origin::Env(var)),
                "the example says ${var} supplies {}, but no kind reads it: {origins:?}",
                k.dotted()
            );
        }
    }
}
