//! The layout of `fedimds check`'s report: ✔/✘/⚠ lines, `key  value` fields wrapped under
//! themselves (URLs never broken), the summary line, and how times read.

use std::fmt::Display;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use crate::config::Config;

/// Width of the key column in the report.
pub(super) const KEY_WIDTH: usize = 10;
/// Lines are wrapped at this many columns (URLs are never broken).
pub(super) const WRAP: usize = 100;
/// What the check found so far.
#[derive(Debug, Default)]
pub(super) struct Report {
    /// Steps that failed, targets included.
    failures: usize,
    warnings: usize,
    /// Targets whose exchange failed, by name.
    failed_targets: Vec<String>,
    /// Targets whose exchange succeeded.
    passed_targets: usize,
}

impl Report {
    pub(super) fn pass(&self, out: &mut impl Write, what: impl Display) {
        say!(out, "  ✔ {what}");
    }

    pub(super) fn fail(&mut self, out: &mut impl Write, what: impl Display) {
        self.failures += 1;
        say!(out, "  ✘ {what}");
    }

    pub(super) fn warn(&mut self, out: &mut impl Write, what: impl Display) {
        self.warn_at(out, 2, what);
    }

    /// A warning under an item, at `indent`.
    pub(super) fn warn_at(&mut self, out: &mut impl Write, indent: usize, what: impl Display) {
        self.warnings += 1;
        let pad = " ".repeat(indent + 2);
        let text = wrap(&format!("⚠ {what}"), WRAP - indent - 2, &pad);
        say!(out, "{}{text}", " ".repeat(indent));
    }

    pub(super) fn target(&mut self, out: &mut impl Write, name: &str, passed: bool) {
        if passed {
            self.passed_targets += 1;
            self.pass(out, name);
        } else {
            self.failed_targets.push(name.to_owned());
            self.fail(out, name);
        }
    }

    /// The last line; true when nothing failed.
    pub(super) fn summary(&self, out: &mut impl Write, config: &Config) -> bool {
        let total = config.targets.len();
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        let warnings = match self.warnings {
            0 => String::new(),
            n => format!(", {}", plural(n, "warning")),
        };
        say!(out);
        if self.failures == 0 {
            say!(
                out,
                "✔ all checks passed: the assertion and {}{warnings}",
                plural(total, "target")
            );
        } else if self.passed_targets + self.failed_targets.len() == 0 {
            say!(
                out,
                "✘ failed before any exchange: no target was checked{warnings}; fix the ✘ above first"
            );
        } else if self.failed_targets.len() == self.failures {
            say!(
                out,
                "✘ {} of {} failed ({}), {} passed{warnings}",
                self.failed_targets.len(),
                plural(total, "target"),
                self.failed_targets.join(", "),
                self.passed_targets,
            );
        } else {
            say!(
                out,
                "✘ {} failed{warnings}; fix the first ✘ first: later steps depend on it",
                plural(self.failures, "check")
            );
        }
        self.failures == 0
    }
}

/// `    key       value`, the value wrapped under itself.
pub(super) fn field(out: &mut impl Write, indent: usize, key: &str, value: impl Display) {
    let pad = " ".repeat(indent + KEY_WIDTH);
    let text = wrap(&value.to_string(), WRAP.saturating_sub(pad.len()), &pad);
    say!(out, "{}{key:<KEY_WIDTH$}{text}", " ".repeat(indent));
}

/// A paragraph at `indent`, wrapped.
pub(super) fn wrapped(out: &mut impl Write, indent: usize, text: &str) {
    let pad = " ".repeat(indent);
    say!(out, "{pad}{}", wrap(text, WRAP - indent, &pad));
}

/// Wraps at word boundaries; continuation lines start with `pad`. Words are never broken.
pub(super) fn wrap(text: &str, width: usize, pad: &str) -> String {
    let mut result = String::new();
    let mut line_len = 0;
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let len = word.chars().count();
        if line_len > 0 && line_len + 1 + len > width {
            result.push('\n');
            result.push_str(pad);
            line_len = 0;
        } else if line_len > 0 {
            result.push(' ');
            line_len += 1;
        }
        result.push_str(word);
        line_len += len;
    }
    result
}

pub(super) fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "(none)"
    } else {
        s
    }
}

/// Unix seconds as an HTTP date, e.g. `Sat, 22 Nov 2025 02:47:00 GMT`.
pub(super) fn date(unix: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(unix))
}

/// `in 23 h 59 min`, or `3 min ago` once past.
pub(super) fn time_left(exp: u64, now: u64) -> String {
    if exp > now {
        format!("in {}", duration(Duration::from_secs(exp - now)))
    } else {
        format!("{} ago", duration(Duration::from_secs(now - exp)))
    }
}

/// `23 h 59 min`, `59 min 59 s`, `42 s`.
pub(super) fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s} s"),
        (0, m, s) => format!("{m} min {s} s"),
        (h, m, _) => format!("{h} h {m} min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(Duration::from_secs(42)), "42 s");
        assert_eq!(duration(Duration::from_secs(3599)), "59 min 59 s");
        assert_eq!(duration(Duration::from_secs(86399)), "23 h 59 min");
        assert_eq!(time_left(100, 40), "in 1 min 0 s");
        assert_eq!(time_left(40, 100), "1 min 0 s ago");
    }

    #[test]
    fn wrap_keeps_words_whole() {
        let url = "https://login.microsoftonline.com/t/adminconsent?client_id=a";
        let w = wrap(&format!("see {url} now"), 20, "  ");
        assert!(w.contains(url), "{w}");
        assert!(w.lines().count() >= 2, "{w}");
        assert!(w.lines().skip(1).all(|l| l.starts_with("  ")), "{w}");
    }
}
