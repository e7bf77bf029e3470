//! `fedimds config`: the effective configuration, every value with where it came from (the
//! file, an environment variable, a command-line flag, or the default), secrets redacted.
//!
//! The loader ([`Config::from_toml`]) stays as it is: provenance is worked out beside it, by
//! re-reading the file as a plain TOML table (a key written there came from the file) and
//! asking the same environment lookup the loader used (a key the file lacks but whose
//! environment variable is set came from there). Everything else is the default.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use toml::{Table, Value};

use super::{
    AllowedTenants, AuditSink, Config, ConfigError, Env, SourceKind, ENV_FEDERATED_TOKEN_FILE,
    ENV_IDENTITY_ENDPOINT, ENV_IDENTITY_HEADER, ENV_SERVER_IDENTITY_HEADER,
};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Written in the config file.
    File,
    /// Read from this environment variable.
    Env(&'static str),
    /// Given on the command line with this flag.
    Flag(&'static str),
    /// Nobody set it.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File => f.write_str("file"),
            Origin::Env(name) => write!(f, "env {name}"),
            Origin::Flag(name) => write!(f, "flag {name}"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// One effective value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Dotted key, `targets[0].name` / `callers[0].name` for array entries.
    pub key: String,
    /// The value as TOML, or a bare placeholder such as `(redacted)` or `(none)`.
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
}

/// Shown instead of a secret.
pub const REDACTED: &str = "(redacted)";
/// Shown for an unset optional key.
const NONE: &str = "(none)";

/// Reads and validates the file as the daemon would, and works out each value's origin.
pub fn load(path: &Path, env: Env<'_>) -> Result<(Config, Vec<Entry>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let origin = path.display().to_string();
    let config = Config::from_toml(&text, &origin, env)?;
    let table: Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: origin,
        message: super::parse_message(&text, &e),
    })?;
    let entries = effective(&config, &table, env);
    Ok((config, entries))
}

/// Every effective value of `config`, in file order, with its origin. `file` is the config
/// file as a plain table; `env` the lookup the config was loaded with.
pub fn effective(config: &Config, file: &Table, env: Env<'_>) -> Vec<Entry> {
    let mut e = Entries {
        file,
        env,
        list: Vec::new(),
    };

    let s = &config.server;
    e.push("server.listen", string(s.listen), &[]);
    e.push(
        "server.allow_remote",
        Value::Boolean(allow_remote(file)),
        &[],
    );
    let header = match &s.identity_header {
        Some(_) => REDACTED.to_owned(),
        None => "(random per start)".to_owned(),
    };
    e.push_text(
        "server.identity_header",
        header,
        &[ENV_SERVER_IDENTITY_HEADER],
    );
    e.push_text(
        "server.identity_header_file",
        optional(s.identity_header_file.as_ref().map(|p| string(p.display()))),
        &[],
    );
    e.push("server.miss_timeout", duration(s.miss_timeout), &[]);
    e.push("server.arc_key_dir", string(s.arc_key_dir.display()), &[]);
    e.push_text(
        "server.arc_key_group",
        optional(s.arc_key_group.map(|g| Value::Integer(g.into()))),
        &[],
    );
    e.push_text(
        "server.unix_socket",
        optional(s.unix_socket.as_ref().map(|p| string(p.display()))),
        &[],
    );
    // A mode reads in octal, and TOML takes it as written: `0o660`.
    e.push_text(
        "server.unix_socket_mode",
        format!("{:#o}", s.unix_socket_mode),
        &[],
    );
    e.push("server.allowed_hosts", strings(&s.allowed_hosts), &[]);
    e.push("server.max_connections", integer(s.max_connections), &[]);
    e.push(
        "server.header_read_timeout",
        duration(s.header_read_timeout),
        &[],
    );
    e.push("server.max_header_bytes", integer(s.max_header_bytes), &[]);

    let src = &config.source;
    match &src.kind {
        SourceKind::Imds {
            endpoint,
            client_id,
        } => {
            e.push("source.kind", string("imds"), &[]);
            e.push("source.endpoint", string(endpoint), &[]);
            e.push_text(
                "source.client_id",
                optional(client_id.as_ref().map(string)),
                &[],
            );
        }
        SourceKind::AppService {
            endpoint,
            client_id,
            ..
        } => {
            e.push("source.kind", string("app-service"), &[]);
            e.push(
                "source.endpoint",
                string(endpoint),
                &[ENV_IDENTITY_ENDPOINT],
            );
            e.push_text("source.header", REDACTED.to_owned(), &[ENV_IDENTITY_HEADER]);
            e.push_text(
                "source.client_id",
                optional(client_id.as_ref().map(string)),
                &[],
            );
        }
        SourceKind::TokenFile { path } => {
            e.push("source.kind", string("token-file"), &[]);
            e.push(
                "source.path",
                string(path.display()),
                &[ENV_FEDERATED_TOKEN_FILE],
            );
        }
    }
    e.push("source.audience", string(&src.audience), &[]);

    e.push("cloud.name", string(config.cloud.name.as_str()), &[]);
    e.push(
        "cloud.authority_host",
        string(&config.cloud.authority_host),
        &[],
    );

    let u = &config.upstream;
    e.push("upstream.connect_timeout", duration(u.connect_timeout), &[]);
    e.push("upstream.request_timeout", duration(u.request_timeout), &[]);

    let c = &config.cache;
    e.push("cache.max_keys", integer(c.max_keys), &[]);
    e.push("cache.idle_ttl", duration(c.idle_ttl), &[]);
    e.push("cache.error_ttl", duration(c.error_ttl), &[]);

    for (i, t) in config.targets.iter().enumerate() {
        let key = |k: &str| format!("targets[{i}].{k}");
        e.push(&key("name"), string(&t.name), &[]);
        e.push(&key("tenant_id"), string(&t.tenant_id), &[]);
        e.push(&key("client_id"), string(&t.client_id), &[]);
        let any = "(any)".to_owned();
        e.push_text(
            &key("resources"),
            t.resources.as_ref().map_or(any, |r| strings(r).to_string()),
            &[],
        );
        let tenants = match &t.allowed_tenants {
            AllowedTenants::None => NONE.to_owned(),
            AllowedTenants::Any => strings(&["*".to_owned()]).to_string(),
            AllowedTenants::Listed(list) => strings(list).to_string(),
        };
        e.push_text(&key("allowed_tenants"), tenants, &[]);
        e.push(&key("default"), Value::Boolean(t.default), &[]);
        e.push_text(
            &key("object_id"),
            optional(t.object_id.as_ref().map(string)),
            &[],
        );
        e.push_text(
            &key("resource_id"),
            optional(t.resource_id.as_ref().map(string)),
            &[],
        );
        e.push(&key("prefetch"), strings(&t.prefetch), &[]);
    }

    for (i, c) in config.callers.iter().enumerate() {
        let key = |k: &str| format!("callers[{i}].{k}");
        e.push(&key("name"), string(&c.name), &[]);
        let secret = c.secret.as_ref().map_or(NONE, |_| REDACTED);
        e.push_text(&key("secret"), secret.to_owned(), &[]);
        e.push_text(
            &key("uid"),
            optional(c.uid.map(|u| Value::Integer(u.into()))),
            &[],
        );
        e.push_text(
            &key("gid"),
            optional(c.gid.map(|g| Value::Integer(g.into()))),
            &[],
        );
        e.push_text(
            &key("source"),
            optional(c.source.map(|(ip, len)| string(format!("{ip}/{len}")))),
            &[],
        );
        // The loader keeps `None` for ["*"].
        let all = strings(&["*".to_owned()]);
        e.push(
            &key("targets"),
            c.targets.as_deref().map_or(all, strings),
            &[],
        );
        let any = "(any)".to_owned();
        e.push_text(
            &key("resources"),
            c.resources.as_ref().map_or(any, |r| strings(r).to_string()),
            &[],
        );
        e.push_text(
            &key("rate"),
            c.rate
                .map_or_else(|| "(unlimited)".to_owned(), |r| Value::Float(r).to_string()),
            &[],
        );
    }

    let admin = config.admin.listen.map_or_else(|| string("off"), string);
    e.push("admin.listen", admin, &[]);

    let audit = match &config.audit {
        AuditSink::Off => string("off"),
        AuditSink::Stdout => string("-"),
        AuditSink::File(path) => string(path.display()),
    };
    e.push("audit.path", audit, &[]);
    e.unlisted_file_keys();
    e.list
}

/// The effective config as TOML-like text: a `# origin` comment after each value, aligned per
/// section. `file` names the config file and where its name came from.
pub fn render(entries: &[Entry], file: &Path, file_origin: &Origin) -> String {
    let mut out = format!(
        "# fedimds: effective configuration (secrets redacted)\n\
         # config file: {} ({file_origin})\n\
         # after each value, where it came from: file, env NAME, flag, or default\n",
        file.display()
    );
    let mut i = 0;
    while i < entries.len() {
        let (section, _) = split(&entries[i].key);
        let end = entries[i..]
            .iter()
            .position(|e| split(&e.key).0 != section)
            .map_or(entries.len(), |n| i + n);
        let group = &entries[i..end];
        out.push('\n');
        match section.split_once('[') {
            Some((array, _)) => out.push_str(&format!("[[{array}]]\n")),
            None => out.push_str(&format!("[{section}]\n")),
        }
        let name_width = group
            .iter()
            .map(|e| split(&e.key).1.len())
            .max()
            .unwrap_or(0);
        let value_width = group
            .iter()
            .map(|e| e.value.chars().count())
            .max()
            .unwrap_or(0);
        for e in group {
            let (_, name) = split(&e.key);
            let pad = value_width - e.value.chars().count();
            out.push_str(&format!(
                "{name:<name_width$} = {}{}  # {}\n",
                e.value,
                " ".repeat(pad),
                e.origin
            ));
        }
        i = end;
    }
    out
}

/// `server.listen` → (`server`, `listen`); `targets[0].name` → (`targets[0]`, `name`).
fn split(key: &str) -> (&str, &str) {
    key.rsplit_once('.').unwrap_or(("", key))
}

struct Entries<'a> {
    file: &'a Table,
    env: Env<'a>,
    list: Vec<Entry>,
}

impl Entries<'_> {
    fn push(&mut self, key: &str, value: Value, env_names: &[&'static str]) {
        self.push_text(key, value.to_string(), env_names);
    }

    fn push_text(&mut self, key: &str, value: String, env_names: &[&'static str]) {
        let origin = self.origin(key, env_names);
        self.list.push(Entry {
            key: key.to_owned(),
            value,
            origin,
        });
    }

    /// File if the file has the key, else the first of `env_names` that is set, else default.
    fn origin(&self, key: &str, env_names: &[&'static str]) -> Origin {
        if lookup(self.file, key).is_some() {
            return Origin::File;
        }
        env_names
            .iter()
            .find(|name| (self.env)(name).is_some())
            .map_or(Origin::Default, |name| Origin::Env(name))
    }

    /// Keys in the file that the list above does not know (added to the loader since): shown
    /// as written, so nothing the file says is hidden. Secret-looking names are redacted.
    fn unlisted_file_keys(&mut self) {
        let mut extra = Vec::new();
        for (section, value) in self.file {
            match value {
                Value::Table(t) => {
                    for (k, v) in t {
                        extra.push((format!("{section}.{k}"), v.clone()));
                    }
                }
                // `[[targets]]`, `[[callers]]`: never shown whole, so a secret in one is
                // redacted by its own key's name below.
                Value::Array(items) if items.iter().all(Value::is_table) => {
                    for (i, item) in items.iter().enumerate() {
                        for (k, v) in item.as_table().into_iter().flatten() {
                            extra.push((format!("{section}[{i}].{k}"), v.clone()));
                        }
                    }
                }
                other => extra.push((section.clone(), other.clone())),
            }
        }
        for (key, value) in extra {
            if self.list.iter().any(|e| e.key == key) {
                continue;
            }
            let secret = ["secret", "header", "password", "key"]
                .iter()
                .any(|w| key.rsplit('.').next().unwrap_or("").contains(w));
            let value = if secret {
                REDACTED.to_owned()
            } else {
                value.to_string()
            };
            // Keep sections together: after the last entry of the same section.
            let (section, _) = split(&key);
            let at = self
                .list
                .iter()
                .rposition(|e| split(&e.key).0 == section)
                .map_or(self.list.len(), |n| n + 1);
            self.list.insert(
                at,
                Entry {
                    key,
                    value,
                    origin: Origin::File,
                },
            );
        }
    }
}

/// The value at a dotted key (`targets[1].name`, `callers[0].uid` included) in the file's table.
fn lookup<'t>(file: &'t Table, key: &str) -> Option<&'t Value> {
    let (section, name) = split(key);
    let table = match section.split_once('[') {
        Some((array, rest)) => {
            let i: usize = rest.strip_suffix(']')?.parse().ok()?;
            file.get(array)?.as_array()?.get(i)?.as_table()?
        }
        None => file.get(section)?.as_table()?,
    };
    table.get(name)
}

fn allow_remote(file: &Table) -> bool {
    lookup(file, "server.allow_remote")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

fn string(v: impl fmt::Display) -> Value {
    Value::String(v.to_string())
}

/// A count, saturating at TOML's largest integer.
fn integer(n: impl TryInto<i64>) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

fn strings(list: &[String]) -> Value {
    Value::Array(list.iter().map(string).collect())
}

fn optional(v: Option<Value>) -> String {
    v.map_or_else(|| NONE.to_owned(), |v| v.to_string())
}

/// A duration as the config writes it: `"500ms"`, `"20s"`, `"5m"`, `"24h"`.
fn duration(d: Duration) -> Value {
    let s = d.as_secs();
    string(match (d.subsec_millis(), s % 3600, s % 60) {
        (0, 0, _) if s > 0 => format!("{}h", s / 3600),
        (0, _, 0) if s > 0 => format!("{}m", s / 60),
        (0, _, _) => format!("{s}s"),
        _ => format!("{}ms", d.as_millis()),
    })
}

#[cfg(test)]
mod tests;
