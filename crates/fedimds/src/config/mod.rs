//! Configuration in one place, in two stages: [`RawConfig`] ([`raw`]) is what the TOML file
//! says, [`Config`] is what the daemon runs on, validated and typed (`validate.rs`). Every
//! environment variable, default and fixed limit the daemon reads is named once, at the top of
//! this file. The loader records where each value came from as it reads it, which is what
//! `fedimds config` prints ([`provenance`]).

use std::path::{Path, PathBuf};

use crate::cloud::CloudName;
use crate::token::Secret;

mod defaults;
mod model;
pub mod provenance;
pub mod raw;
mod rules;
mod validate;

pub use defaults::*;
pub use model::*;
pub use raw::RawConfig;

/// A way to read environment variables, so tests never touch the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Whether two spellings name the same resource: case and trailing slashes do not matter,
/// as for Entra. The one rule the allow-lists and grants share.
pub fn same_resource(a: &str, b: &str) -> bool {
    a.trim_end_matches('/')
        .eq_ignore_ascii_case(b.trim_end_matches('/'))
}

/// Whether `s` is a GUID (`8-4-4-4-12` hex digits), as tenant ids are.
pub fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What can be wrong with a config. Each names the key, the value, and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// The TOML parser's message, which names the line and the key.
        message: String,
    },
    /// A value is out of its domain.
    #[error("config key `{key}` = {value:?}: expected {expected}")]
    Invalid {
        /// Dotted path of the key.
        key: String,
        /// The offending value.
        value: String,
        /// What would be accepted.
        expected: String,
    },
}

pub(crate) fn invalid(
    key: impl Into<String>,
    value: impl Into<String>,
    expected: impl Into<String>,
) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        value: value.into(),
        expected: expected.into(),
    }
}

impl Config {
    /// Reads and validates the config file.
    pub fn load(path: &Path, env: Env<'_>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml(&text, &path.display().to_string(), env)
    }

    /// Parses and validates TOML text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str, env: Env<'_>) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: parse_message(text, &e),
        })?;
        raw.validate(env)
    }

    /// Parses and validates TOML text, recording where each value came from.
    pub fn from_toml_recorded(
        text: &str,
        origin: &str,
        env: Env<'_>,
    ) -> Result<(Config, Vec<provenance::Entry>), ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: parse_message(text, &e),
        })?;
        raw.validate_recorded(env)
    }

    /// The source with this name: `[source]` for "default", else a `[[sources]]` entry.
    pub fn source_named(&self, name: &str) -> Option<&Source> {
        std::iter::once(&self.source)
            .chain(&self.sources)
            .find(|s| s.name == name)
    }

    /// Every source, `[source]` first, then `[[sources]]` in file order.
    pub fn all_sources(&self) -> impl Iterator<Item = &Source> {
        std::iter::once(&self.source).chain(&self.sources)
    }

    /// The target with this name.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|t| t.name == name)
    }

    /// What this config opens that `old` kept shut, for a reload to warn about: every
    /// `[[callers]]` rule gone, a caller granted more targets, more Host names accepted,
    /// `allowed_tenants = ["*"]` where there was none.
    pub fn widened_from(&self, old: &Config) -> Vec<String> {
        let mut widened = Vec::new();
        if self.callers.is_empty() && !old.callers.is_empty() {
            widened.push("every [[callers]] rule was removed: any caller that reaches the listener may now use every target".to_owned());
        }
        // A list that was None allowed everything; one that grew allows more.
        let more = |was: &Option<Vec<String>>, now: &Option<Vec<String>>| match (was, now) {
            (Some(_), None) => true,
            (Some(was), Some(now)) => now.iter().any(|t| !was.contains(t)),
            (None, _) => false,
        };
        for rule in &self.callers {
            let Some(before) = old.callers.iter().find(|o| o.name == rule.name) else {
                if !old.callers.is_empty() {
                    widened.push(format!(
                        "a new [[callers]] rule '{}' grants access",
                        rule.name
                    ));
                }
                continue;
            };
            if more(&before.targets, &rule.targets) {
                widened.push(format!("caller '{}' is granted more targets", rule.name));
            }
            if more(&before.resources, &rule.resources) {
                widened.push(format!("caller '{}' is granted more resources", rule.name));
            }
            // A rule that stops asking for an identifier matches more callers.
            let dropped = [
                (before.secret.is_some() && rule.secret.is_none(), "secret"),
                (before.uid.is_some() && rule.uid.is_none(), "uid"),
                (before.gid.is_some() && rule.gid.is_none(), "gid"),
                (before.source.is_some() && rule.source.is_none(), "source"),
            ];
            for (gone, what) in dropped {
                if gone {
                    widened.push(format!(
                        "caller '{}' no longer needs a {what} to match",
                        rule.name
                    ));
                }
            }
        }
        let new_hosts: Vec<&String> = self
            .server
            .allowed_hosts
            .iter()
            .filter(|h| !old.server.allowed_hosts.contains(h))
            .collect();
        if !new_hosts.is_empty() {
            widened.push(format!(
                "server.allowed_hosts now also accepts {new_hosts:?}"
            ));
        }
        for target in &self.targets {
            let was_any = old
                .target(&target.name)
                .is_some_and(|t| t.allowed_tenants == AllowedTenants::Any);
            if target.allowed_tenants == AllowedTenants::Any && !was_any {
                widened.push(format!(
                    "target '{}' now has allowed_tenants = [\"*\"]",
                    target.name
                ));
            }
        }
        widened
    }

    /// What is valid but probably not meant, for start-up, reload and `check` to say: a
    /// `[[sources]]` entry no target uses, targets whose tenants overlap with the same app, and
    /// `allowed_tenants = ["*"]` beside per-caller grants.
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        for source in &self.sources {
            if !self.targets.iter().any(|t| t.source == source.name) {
                warnings.push(format!(
                    "[[sources]] entry '{}' is used by no target (targets[].source names it)",
                    source.name
                ));
            }
        }
        for (i, a) in self.targets.iter().enumerate() {
            for b in self.targets.iter().skip(i + 1) {
                let same_app =
                    a.exchange == b.exchange && a.client_id.eq_ignore_ascii_case(&b.client_id);
                if same_app && a.tenant_id.eq_ignore_ascii_case(&b.tenant_id) {
                    warnings.push(format!(
                        "targets '{}' and '{}' are the same tenant and app: they hand out the same tokens, so a grant of either is a grant of both",
                        a.name, b.name
                    ));
                }
            }
            for b in &self.targets {
                let overlaps = !std::ptr::eq(a, b)
                    && a.client_id.eq_ignore_ascii_case(&b.client_id)
                    && !a.tenant_id.eq_ignore_ascii_case(&b.tenant_id)
                    && a.allowed_tenants != AllowedTenants::Any
                    && a.allows_tenant(&b.tenant_id);
                if overlaps && !self.callers.is_empty() {
                    warnings.push(format!(
                        "target '{}' allows tenant {}, which target '{}' owns with the same app: a caller gets it through '{}' only if also granted '{}'",
                        a.name, b.tenant_id, b.name, a.name, b.name
                    ));
                }
            }
            if a.allowed_tenants == AllowedTenants::Any && !self.callers.is_empty() {
                warnings.push(format!(
                    "target '{}' has allowed_tenants = [\"*\"] beside [[callers]] grants: a caller granted '{}' may ask for any tenant that consented to app {} (except those another target owns and the caller is not granted)",
                    a.name, a.name, a.client_id
                ));
            }
        }
        warnings
    }
}

/// The TOML parser's message with its line and column, but not the quoted source line it
/// would print: that line may hold a secret (an `identity_header` under the wrong table). Nor
/// the value serde quotes ([`redact_value`]).
fn parse_message(text: &str, e: &toml::de::Error) -> String {
    let message = redact_value(e.message().trim_end());
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// serde's message without the value it found: "invalid type: integer `4839…`, expected a
/// string" becomes "invalid type: integer, expected a string". A secret written without
/// quotes is such a value, and a reload logs this message at ERROR level. The message does not
/// reliably say which key it is about, so every key's value is redacted; the kind of value and
/// what was expected stay, which is what the reader needs. Key names (`unknown field`) stay.
fn redact_value(message: &str) -> String {
    // serde's wording (`serde::de::Error`): the value found, then `, expected …` from our
    // own types, which holds no value from the file.
    const ECHOING: [&str; 3] = ["invalid type: ", "invalid value: ", "unknown variant "];
    let Some(prefix) = ECHOING.iter().find(|p| message.starts_with(**p)) else {
        return message.to_owned();
    };
    // The last `, expected`: a quoted string value may itself contain one.
    let (found, expected) = match message.rfind(", expected") {
        Some(at) => message.split_at(at),
        None => (message, ""),
    };
    // The value is quoted last: integer `5`, string "x", unknown variant `x`.
    let kind = found[prefix.len()..]
        .split(['`', '"'])
        .next()
        .unwrap_or_default()
        .trim_end();
    let label = prefix.trim_end();
    if kind.is_empty() {
        format!("{label}{expected}")
    } else {
        format!("{label} {kind}{expected}")
    }
}

#[cfg(test)]
mod tests;
