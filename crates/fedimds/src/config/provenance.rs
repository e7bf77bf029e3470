//! Where each effective value came from (the file, an environment variable, a command-line
//! flag, or the default), recorded by the loader itself as it reads each key through a
//! `Reader`, and `fedimds config`'s rendering of that record, secrets redacted. A key added to
//! the loader is shown by reading it through the reader; there is no second list of keys.

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Value;

use super::raw::RawDuration;
use super::{Config, ConfigError, Env};

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
pub const NONE: &str = "(none)";

/// Reads and validates the file as the daemon would, with each value's origin.
pub fn load(path: &Path, env: Env<'_>) -> Result<(Config, Vec<Entry>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    Config::from_toml_recorded(&text, &path.display().to_string(), env)
}

/// A value as `fedimds config` shows it: TOML, as the file would write it.
/// What [`Reader::secret_or_env`] read.
pub(super) enum SecretOrEnv {
    /// Not set.
    Unset,
    /// The literal, with the variable that was set and its value.
    Literal(Option<(&'static str, String)>),
    /// Another value, a secret.
    Value(String),
}

pub(super) trait Show {
    /// The TOML text.
    fn show(&self) -> String;
}

impl Show for String {
    fn show(&self) -> String {
        Value::String(self.clone()).to_string()
    }
}

impl Show for PathBuf {
    fn show(&self) -> String {
        Value::String(self.display().to_string()).to_string()
    }
}

impl Show for bool {
    fn show(&self) -> String {
        self.to_string()
    }
}

impl Show for f64 {
    fn show(&self) -> String {
        Value::Float(*self).to_string()
    }
}

macro_rules! show_integer {
    ($($t:ty),*) => {$(
        impl Show for $t {
            fn show(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
show_integer!(u32, u64, usize);

impl Show for Vec<String> {
    fn show(&self) -> String {
        Value::Array(self.iter().cloned().map(Value::String).collect()).to_string()
    }
}

impl Show for RawDuration {
    fn show(&self) -> String {
        match self {
            RawDuration::Seconds(s) => s.to_string(),
            RawDuration::Text(t) => t.show(),
        }
    }
}

/// A file mode, shown in octal as TOML writes it: `0o660`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mode(pub(super) u32);

impl Show for Mode {
    fn show(&self) -> String {
        format!("{:#o}", self.0)
    }
}

/// The loader's view of the file: hands out each key's value and records where it came from.
pub(super) struct Reader<'e> {
    env: Env<'e>,
    entries: Vec<Entry>,
}

impl<'e> Reader<'e> {
    pub(super) fn new(env: Env<'e>) -> Self {
        Reader {
            env,
            entries: Vec::new(),
        }
    }

    fn note(&mut self, key: &str, value: String, origin: Origin) {
        self.entries.push(Entry {
            key: key.to_owned(),
            value,
            origin,
        });
    }

    /// A key with a default.
    pub(super) fn or<T: Show>(&mut self, key: &str, raw: Option<T>, default: T) -> T {
        let origin = if raw.is_some() {
            Origin::File
        } else {
            Origin::Default
        };
        let value = raw.unwrap_or(default);
        self.note(key, value.show(), origin);
        value
    }

    /// An optional key; `absent` is shown when it is not set.
    pub(super) fn opt<T: Show>(&mut self, key: &str, raw: Option<T>, absent: &str) -> Option<T> {
        match &raw {
            Some(v) => self.note(key, v.show(), Origin::File),
            None => self.note(key, absent.to_owned(), Origin::Default),
        }
        raw
    }

    /// An optional key that the environment variable `var` supplies when the file does not.
    pub(super) fn or_env(
        &mut self,
        key: &str,
        raw: Option<String>,
        var: &'static str,
        absent: &str,
    ) -> Option<String> {
        self.read_env(key, raw, var, absent, false)
    }

    /// A secret: like [`Reader::or_env`] (without a variable when `var` is `None`), always
    /// shown as [`REDACTED`].
    pub(super) fn secret(
        &mut self,
        key: &str,
        raw: Option<String>,
        var: Option<&'static str>,
        absent: &str,
    ) -> Option<String> {
        match var {
            Some(var) => self.read_env(key, raw, var, absent, true),
            None => {
                let (shown, origin) = match raw {
                    Some(_) => (REDACTED, Origin::File),
                    None => (absent, Origin::Default),
                };
                self.note(key, shown.to_owned(), origin);
                raw
            }
        }
    }

    fn read_env(
        &mut self,
        key: &str,
        raw: Option<String>,
        var: &'static str,
        absent: &str,
        secret: bool,
    ) -> Option<String> {
        let (value, origin) = match raw {
            Some(v) => (Some(v), Origin::File),
            None => match (self.env)(var) {
                Some(v) => (Some(v), Origin::Env(var)),
                None => (None, Origin::Default),
            },
        };
        let shown = match &value {
            Some(_) if secret => REDACTED.to_owned(),
            Some(v) => v.show(),
            None => absent.to_owned(),
        };
        self.note(key, shown, origin);
        value
    }

    /// A key whose value is a secret unless it is `literal`: `literal` is shown as itself
    /// (and returned as `Literal`, with the first of `vars` that is set, redacted, noted as
    /// its origin); any other value is shown as [`REDACTED`].
    pub(super) fn secret_or_env(
        &mut self,
        key: &str,
        raw: Option<String>,
        literal: &str,
        vars: &[&'static str],
        absent: &str,
    ) -> SecretOrEnv {
        match raw {
            None => {
                self.note(key, absent.to_owned(), Origin::Default);
                SecretOrEnv::Unset
            }
            Some(v) if v == literal => {
                let found = self.var(vars);
                match &found {
                    Some((var, _)) => self.note(key, REDACTED.to_owned(), Origin::Env(var)),
                    None => self.note(key, literal.to_owned().show(), Origin::File),
                }
                SecretOrEnv::Literal(found)
            }
            Some(v) => {
                self.note(key, REDACTED.to_owned(), Origin::File);
                SecretOrEnv::Value(v)
            }
        }
    }

    /// The first of `vars` the environment sets, not recorded (for what qualifies a value
    /// already recorded).
    pub(super) fn var(&self, vars: &[&'static str]) -> Option<(&'static str, String)> {
        vars.iter()
            .find_map(|var| (self.env)(var).map(|value| (*var, value)))
    }

    /// Every value read, in the order it was read.
    pub(super) fn finish(self) -> Vec<Entry> {
        self.entries
    }
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

#[cfg(test)]
mod tests;
