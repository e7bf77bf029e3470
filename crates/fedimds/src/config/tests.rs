use std::time::Duration;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml", &no_env)
}

const MINIMAL: &str = r#"
[[targets]]
name = "litware"
tenant_id = "11111111-1111-1111-1111-111111111111"
client_id = "22222222-2222-2222-2222-222222222222"
"#;

#[test]
fn minimal_config_gets_safe_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.server.listen, DEFAULT_LISTEN.parse().unwrap());
    assert!(c.server.listen.ip().is_loopback());
    assert_eq!(c.cloud.name, CloudName::Public);
    assert_eq!(
        c.cloud.authority_host.as_str(),
        "https://login.microsoftonline.com/"
    );
    assert_eq!(c.source.audience, "api://AzureADTokenExchange");
    assert!(
        matches!(&c.source.kind, SourceKind::Imds { endpoint, client_id: None } if endpoint.as_str() == "http://169.254.169.254/")
    );
    assert_eq!(c.upstream.request_timeout, DEFAULT_REQUEST_TIMEOUT);
}

#[test]
fn cloud_profiles_set_host_and_audience() {
    let c = parse(&format!("[cloud]\nname = \"usgov\"\n{MINIMAL}")).unwrap();
    assert_eq!(
        c.cloud.authority_host.as_str(),
        "https://login.microsoftonline.us/"
    );
    assert_eq!(c.source.audience, "api://AzureADTokenExchangeUSGov");
    let c = parse(&format!("[cloud]\nname = \"china\"\n{MINIMAL}")).unwrap();
    assert_eq!(c.source.audience, "api://AzureADTokenExchangeChina");
}

fn invalid_key(text: &str) -> String {
    match parse(text) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn plain_http_only_to_loopback() {
    assert_eq!(
        invalid_key(&format!(
            "[cloud]\nauthority_host = \"http://login.example.com\"\n{MINIMAL}"
        )),
        "cloud.authority_host"
    );
    parse(&format!(
        "[cloud]\nauthority_host = \"http://127.0.0.1:9\"\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(
        invalid_key(&format!(
            "[source]\nendpoint = \"http://10.0.0.1\"\n{MINIMAL}"
        )),
        "source.endpoint"
    );
}

#[test]
fn non_loopback_listen_must_be_asked_for_and_needs_a_secret() {
    assert_eq!(
        invalid_key(&format!("[server]\nlisten = \"0.0.0.0:8181\"\n{MINIMAL}")),
        "server.listen"
    );
    assert_eq!(
        invalid_key(&format!(
            "[server]\nlisten = \"0.0.0.0:8181\"\nallow_remote = true\n{MINIMAL}"
        )),
        "server.identity_header"
    );
    parse(&format!(
        "[server]\nlisten = \"0.0.0.0:8181\"\nallow_remote = true\nidentity_header = \"0123456789abcdef0123\"\n{MINIMAL}"
    ))
    .unwrap();
}

#[test]
fn errors_name_key_value_and_expectation() {
    let err = parse(&format!("[cloud]\nname = \"mars\"\n{MINIMAL}"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cloud.name") && err.contains("mars") && err.contains("usgov"),
        "{err}"
    );
    let err = parse("[[targets]]\ntenant_id = \"common\"\nclient_id = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("targets[0].tenant_id") && err.contains("common"),
        "{err}"
    );
    assert_eq!(invalid_key("targets = []"), "targets");
    let err = parse("[server]\nlisen = \"x\"\n").unwrap_err().to_string();
    assert!(err.contains("lisen"), "unknown keys are named: {err}");
}

#[test]
fn target_rules() {
    let two_defaults = format!(
        "{MINIMAL}default = true\n{}default = true\n",
        MINIMAL.replace("litware", "other")
    );
    assert_eq!(invalid_key(&two_defaults), "targets[].default");
    let dup = format!("{MINIMAL}{MINIMAL}");
    assert_eq!(invalid_key(&dup), "targets[1].name");
    assert_eq!(
        invalid_key(&format!("{MINIMAL}resources = [\"https://x/.default\"]\n")),
        "targets[0].resources"
    );
    assert_eq!(
        invalid_key(&format!(
            "{MINIMAL}resources = [\"https://a\"]\nprefetch = [\"https://b\"]\n"
        )),
        "targets.litware.prefetch"
    );
}

#[test]
fn server_identity_header_falls_back_to_environment() {
    let env = |name: &str| {
        (name == ENV_SERVER_IDENTITY_HEADER).then(|| "from-a-kubernetes-secret".to_owned())
    };
    let c = Config::from_toml(MINIMAL, "t", &env).unwrap();
    let header = c
        .server
        .identity_header
        .expect("taken from the environment");
    assert_eq!(header.expose(), "from-a-kubernetes-secret");
    // The file wins over the environment.
    let c = Config::from_toml(
        &format!("[server]\nidentity_header = \"from-the-file-0123456\"\n{MINIMAL}"),
        "t",
        &env,
    )
    .unwrap();
    assert_eq!(
        c.server.identity_header.map(|h| h.expose().to_owned()),
        Some("from-the-file-0123456".to_owned())
    );
    // Still checked for length.
    let short = |name: &str| (name == ENV_SERVER_IDENTITY_HEADER).then(|| "short".to_owned());
    let err = Config::from_toml(MINIMAL, "t", &short)
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.identity_header"), "{err}");
}

#[test]
fn source_falls_back_to_environment() {
    let env = |name: &str| match name {
        ENV_IDENTITY_ENDPOINT => Some("http://127.0.0.1:41/msi/token".to_owned()),
        ENV_IDENTITY_HEADER => Some("s3cret".to_owned()),
        _ => None,
    };
    let c = Config::from_toml(
        &format!("[source]\nkind = \"app-service\"\n{MINIMAL}"),
        "t",
        &env,
    )
    .unwrap();
    match c.source.kind {
        SourceKind::AppService {
            endpoint, header, ..
        } => {
            assert_eq!(endpoint.as_str(), "http://127.0.0.1:41/msi/token");
            assert_eq!(header.expose(), "s3cret");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        invalid_key(&format!("[source]\nkind = \"token-file\"\n{MINIMAL}")),
        "source.path"
    );
}

#[test]
fn durations() {
    let c = parse(&format!(
        "[upstream]\nconnect_timeout = \"500ms\"\nrequest_timeout = 7\n{MINIMAL}"
    ))
    .unwrap();
    assert_eq!(c.upstream.connect_timeout, Duration::from_millis(500));
    assert_eq!(c.upstream.request_timeout, Duration::from_secs(7));
    assert_eq!(
        invalid_key(&format!(
            "[upstream]\nconnect_timeout = \"soon\"\n{MINIMAL}"
        )),
        "upstream.connect_timeout"
    );
}

#[test]
fn allow_lists() {
    let c = parse(&format!("{MINIMAL}resources = [\"https://graph.microsoft.com/\"]\nallowed_tenants = [\"contoso.com\"]\n")).unwrap();
    let t = &c.targets[0];
    assert!(t.allows_resource("https://graph.microsoft.com"));
    assert!(!t.allows_resource("https://vault.azure.net"));
    assert!(t.allows_tenant("CONTOSO.com"));
    assert!(t.allows_tenant("11111111-1111-1111-1111-111111111111"));
    assert!(!t.allows_tenant("fabrikam.com"));
}

#[test]
fn shipped_examples_are_valid() {
    let example = include_str!("../../../../config/fedimds.example.toml");
    let c = parse(example).unwrap();
    assert_eq!(c.targets[0].name, "litware");
    // The demo config in config/ is exactly what `fedimds demo` builds (comments aside).
    let shipped: Vec<&str> = include_str!("../../../../config/demo.toml")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect();
    let built = crate::demo::config_toml("http://127.0.0.1:8282", DEFAULT_LISTEN.parse().unwrap());
    assert_eq!(shipped, built.lines().collect::<Vec<_>>());
    parse(&built).unwrap();
}

#[test]
fn a_syntax_error_does_not_echo_the_line_it_is_on() {
    // An identity_header under the wrong table is an unknown key: the error must not quote it.
    let text = format!("[source]\nidentity_header = \"hunter2-very-secret-value\"\n{MINIMAL}");
    let err = parse(&text).unwrap_err().to_string();
    assert!(err.contains("line 2"), "names the place: {err}");
    assert!(err.contains("identity_header"), "names the key: {err}");
    assert!(!err.contains("hunter2"), "never the value: {err}");
    let err = parse("[server]\nidentity_header = \"unterminated-secret-value\n")
        .unwrap_err()
        .to_string();
    assert!(!err.contains("unterminated-secret"), "{err}");
}

#[test]
fn out_of_range_values_are_errors_not_clamped() {
    for (section, line, key) in [
        ("server", "max_connections = 0", "server.max_connections"),
        (
            "server",
            "max_header_bytes = 100",
            "server.max_header_bytes",
        ),
        ("cache", "max_keys = 0", "cache.max_keys"),
    ] {
        let err = parse(&format!("[{section}]\n{line}\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(err.contains(key) && err.contains("at least"), "{err}");
    }
    let c = parse(&format!("[server]\nmax_header_bytes = 8192\n{MINIMAL}")).unwrap();
    assert_eq!(c.server.max_header_bytes, MIN_HEADER_BYTES);
}

#[test]
fn a_source_key_its_kind_does_not_read_is_an_error() {
    for (kind, line, key) in [
        ("imds", "header = \"0123456789abcdef0123\"", "source.header"),
        ("imds", "path = \"/t\"", "source.path"),
        ("token-file", "endpoint = \"https://x\"", "source.endpoint"),
    ] {
        let err = parse(&format!("[source]\nkind = \"{kind}\"\n{line}\n{MINIMAL}"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(key) && err.contains("applies only to"),
            "{err}"
        );
        assert!(
            !err.contains("0123456789abcdef0123"),
            "no secret echoed: {err}"
        );
    }
}

#[test]
fn a_reload_that_widens_access_is_named() {
    let callers = r#"
[[callers]]
name = "billing"
secret = "billing-secret-0123456789"
targets = ["litware"]
"#;
    let before = parse(&format!("{MINIMAL}{callers}")).unwrap();
    assert!(before.widened_from(&before).is_empty());
    let opened = parse(MINIMAL).unwrap();
    let widened = opened.widened_from(&before);
    assert!(
        widened
            .iter()
            .any(|w| w.contains("every [[callers]] rule was removed")),
        "{widened:?}"
    );
    let more = parse(&format!(
        "{MINIMAL}{}",
        callers.replace("[\"litware\"]", "[\"*\"]")
    ))
    .unwrap();
    assert!(more
        .widened_from(&before)
        .iter()
        .any(|w| w.contains("'billing' is granted more")));
    let hosts = parse(&format!(
        "[server]\nallowed_hosts = [\"x.internal\"]\n{MINIMAL}{callers}"
    ))
    .unwrap();
    assert!(hosts
        .widened_from(&before)
        .iter()
        .any(|w| w.contains("x.internal")));
    let looser = parse(&format!(
        "{MINIMAL}{}",
        callers.replace(
            "secret = \"billing-secret-0123456789\"\n",
            "source = \"10.0.0.0/8\"\n"
        )
    ))
    .unwrap();
    let widened = looser.widened_from(&before);
    assert!(
        widened
            .iter()
            .any(|w| w.contains("no longer needs a secret")),
        "{widened:?}"
    );
    let added = parse(&format!(
        "{MINIMAL}{callers}\n[[callers]]\nname = \"new\"\nuid = 7\ntargets = [\"*\"]\n"
    ))
    .unwrap();
    assert!(added
        .widened_from(&before)
        .iter()
        .any(|w| w.contains("new [[callers]] rule 'new'")));
    let any = parse(&format!("{}allowed_tenants = [\"*\"]\n{callers}", MINIMAL)).unwrap();
    assert!(any
        .widened_from(&before)
        .iter()
        .any(|w| w.contains("allowed_tenants")));
}

#[test]
fn a_value_of_the_wrong_type_is_not_echoed() {
    // A secret written without quotes is an integer where a string is expected: serde's
    // message would quote it, and a reload logs that message at ERROR level.
    for (text, kind) in [
        ("[server]\nidentity_header = 4839201938475612\n", "integer"),
        ("[[callers]]\nsecret = 48392019384756\n", "integer"),
        ("[server]\nidentity_header = 4839.2019\n", "floating point"),
        (
            "[server]\nmax_connections = \"4839201938475612\"\n",
            "string",
        ),
        ("[server]\nmax_connections = -4839201938475612\n", "integer"),
        ("[source]\nkind = 4839201938475612\n", "integer"),
    ] {
        let err = parse(&format!("{text}{MINIMAL}")).unwrap_err().to_string();
        assert!(!err.contains("4839"), "never the value: {err}");
        assert!(err.contains("line "), "names the place: {err}");
        assert!(
            err.contains(kind) && err.contains("expected"),
            "says what is wrong: {err}"
        );
    }
}

#[test]
fn with_grants_overlapping_tenants_must_be_ids() {
    let callers = "\n[[callers]]\nname = \"a\"\nsecret = \"a-secret-0123456789abc\"\ntargets = [\"litware\"]\n";
    let domain_listed =
        format!("{MINIMAL}allowed_tenants = [\"contoso.onmicrosoft.com\"]\n{callers}");
    let err = parse(&domain_listed).unwrap_err().to_string();
    assert!(
        err.contains("targets[0].allowed_tenants") && err.contains("GUID"),
        "{err}"
    );
    // Without grants there is nothing to tell apart.
    assert!(parse(&format!(
        "{MINIMAL}allowed_tenants = [\"contoso.onmicrosoft.com\"]\n"
    ))
    .is_ok());
    let domain_owned = format!(
        "{MINIMAL}allowed_tenants = [\"*\"]\n\n[[targets]]\nname = \"contoso\"\ntenant_id = \"contoso.onmicrosoft.com\"\nclient_id = \"22222222-2222-2222-2222-222222222222\"\n{callers}"
    );
    let err = parse(&domain_owned).unwrap_err().to_string();
    assert!(err.contains("targets[1].tenant_id"), "{err}");
}

#[test]
fn a_raw_config_shows_no_secret_in_debug() {
    let text = format!(
        "[server]\nidentity_header = \"server-secret-0123456789\"\n[source]\nkind = \"app-service\"\nendpoint = \"http://127.0.0.1:1/msi/token\"\nheader = \"source-secret-0123456789\"\n{MINIMAL}\n[[callers]]\nsecret = \"caller-secret-0123456789\"\ntargets = [\"*\"]\n"
    );
    let raw: RawConfig = toml::from_str(&text).unwrap();
    let shown = format!("{raw:?}");
    assert!(!shown.contains("secret-0123456789"), "{shown}");
    // Rendered as TOML, a secret is kept: a config written out must still work.
    assert!(toml::to_string(&raw)
        .unwrap()
        .contains("caller-secret-0123456789"));
}

#[test]
fn imds_passthrough_is_off_and_its_upstream_stays_on_the_host() {
    let c = parse(MINIMAL).unwrap();
    assert!(!c.imds.passthrough);
    assert_eq!(c.imds.upstream, "169.254.169.254:80".parse().unwrap());
    for (upstream, addr) in [
        ("http://169.254.169.254", "169.254.169.254:80"),
        ("http://169.254.169.254:80/", "169.254.169.254:80"),
        ("http://127.0.0.1:9", "127.0.0.1:9"),
        ("http://[::1]:8080", "[::1]:8080"),
    ] {
        let text = format!("[imds]\npassthrough = true\nupstream = \"{upstream}\"\n{MINIMAL}");
        let c = parse(&text).unwrap();
        assert!(c.imds.passthrough);
        assert_eq!(c.imds.upstream, addr.parse().unwrap(), "{upstream}");
    }
    // Not http, not an address on the host, a name (resolved, maybe elsewhere), or more than
    // an address: metadata of this machine must go nowhere else.
    for upstream in [
        "https://169.254.169.254",
        "http://10.0.0.1",
        "http://imds.example",
        "http://localhost",
        "http://169.254.169.254/metadata",
        "http://169.254.169.254/?x=1",
        "http://user:pw@169.254.169.254",
        "169.254.169.254",
    ] {
        let text = format!("[imds]\nupstream = \"{upstream}\"\n{MINIMAL}");
        assert_eq!(invalid_key(&text), "imds.upstream", "{upstream}");
    }
}

const HOME: &str = r#"
[[targets]]
name = "home"
tenant_id = "11111111-1111-1111-1111-111111111111"
exchange = false
"#;

#[test]
fn a_home_target_takes_its_identity_from_the_source() {
    let c = parse(&format!(
        "[source]\nclient_id = \"bbbbbbbb-0000-4000-8000-00000000b001\"\n{MINIMAL}{HOME}"
    ))
    .unwrap();
    let home = c.target("home").unwrap();
    assert!(!home.exchange);
    assert_eq!(home.client_id, "bbbbbbbb-0000-4000-8000-00000000b001");
    assert!(
        c.target("litware").unwrap().exchange,
        "exchange defaults to true"
    );
    // Another client id than the source's identity is a mistake to point out.
    assert_eq!(
        invalid_key(&format!(
            "[source]\nclient_id = \"bbbbbbbb-0000-4000-8000-00000000b001\"\n{HOME}client_id = \"aaaaaaaa-0000-4000-8000-00000000a001\"\n"
        )),
        "targets[0].client_id"
    );
    // The system-assigned identity: its client id must be written, to select the target by.
    assert_eq!(invalid_key(HOME), "targets[0].client_id");
    parse(&format!(
        "{HOME}client_id = \"bbbbbbbb-0000-4000-8000-00000000b002\"\n"
    ))
    .unwrap();
}

#[test]
fn a_home_target_needs_a_source_that_serves_any_resource() {
    let err = parse(&format!(
        "[source]\nkind = \"token-file\"\npath = \"/t\"\n{HOME}client_id = \"x\"\n"
    ))
    .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("targets[0].exchange"), "{text}");
    assert!(text.contains("token file"), "{text}");
}

#[test]
fn home_targets_take_no_other_tenants_and_list_each_resource_once() {
    let source = "[source]\nclient_id = \"bbbbbbbb-0000-4000-8000-00000000b001\"\n";
    assert_eq!(
        invalid_key(&format!(
            "{source}{HOME}allowed_tenants = [\"22222222-2222-2222-2222-222222222222\"]\n"
        )),
        "targets[0].allowed_tenants"
    );
    let second = HOME.replace("\"home\"", "\"home2\"");
    assert_eq!(
        invalid_key(&format!(
            "{source}{HOME}resources = [\"https://vault.azure.net\"]\n{second}resources = [\"https://vault.azure.net/\"]\n"
        )),
        "targets.home2.resources"
    );
}

#[test]
fn targets_name_their_source_and_the_source_table_is_the_default() {
    let second =
        "[[sources]]\nname = \"second\"\nclient_id = \"e1e1e1e1-5555-4555-8555-0000000000e1\"\n";
    let c = parse(&format!("{second}{MINIMAL}source = \"second\"\n")).unwrap();
    assert_eq!(c.targets[0].source, "second");
    assert_eq!(c.source.name, "default");
    let s = c.source_named("second").unwrap();
    assert_eq!(s.client_id(), Some("e1e1e1e1-5555-4555-8555-0000000000e1"));
    assert_eq!(s.audience, "api://AzureADTokenExchange");
    assert_eq!(parse(MINIMAL).unwrap().targets[0].source, "default");
    // An unknown name, a name used twice, and "default" (the [source] table's) are errors.
    assert_eq!(
        invalid_key(&format!("{second}{MINIMAL}source = \"third\"\n")),
        "targets[0].source"
    );
    assert_eq!(
        invalid_key(&format!("{second}{second}{MINIMAL}")),
        "sources[1].name"
    );
    assert_eq!(
        invalid_key(&format!("[[sources]]\nname = \"default\"\n{MINIMAL}")),
        "sources[0].name"
    );
    assert_eq!(
        invalid_key(&format!("[[sources]]\nkind = \"imds\"\n{MINIMAL}")),
        "sources[0].name"
    );
    // Each entry is read as a [source] table is, its keys named by their entry.
    assert_eq!(
        invalid_key(&format!(
            "[[sources]]\nname = \"k8s\"\nkind = \"token-file\"\npath = \"/t\"\nclient_id = \"x\"\n{MINIMAL}"
        )),
        "sources[0].client_id"
    );
}
