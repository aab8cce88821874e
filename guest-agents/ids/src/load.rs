//! Loading a rules text: comments, continuation lines, variables, device headers, rules.

use std::collections::{BTreeMap, HashMap};

use gw_packet::Mac;

use crate::error::{LineError, RuleError};
use crate::rule::{MAX_RULE_LEN, Rule, parse_rule};
use crate::vars::{VarKind, Variables};

/// Which packets a loaded rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Every device (rules before the first `# device` header).
    AllDevices,
    /// One device, by MAC address.
    Device(Mac),
}

/// A rule and the scope it was loaded in.
#[derive(Debug, Clone)]
pub struct ScopedRule {
    /// Scope.
    pub scope: Scope,
    /// The rule.
    pub rule: Rule,
}

/// A rule that was not loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedRule {
    /// Line the rule starts on (1-based).
    pub line: usize,
    /// Its `sid`, when one could be read from the text.
    pub sid: Option<u32>,
    /// Why it was skipped.
    pub reason: RuleError,
}

/// A line that is not a rule and could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineIssue {
    /// Line number (1-based).
    pub line: usize,
    /// The problem.
    pub error: LineError,
}

/// What loading a rules text did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Rules loaded.
    pub loaded: usize,
    /// Rules skipped, in text order, each with its reason.
    pub skipped: Vec<SkippedRule>,
    /// For each unsupported option name: how many skipped rules used it.
    pub unsupported_options: BTreeMap<String, usize>,
    /// Lines other than rules that were ignored or rejected.
    pub issues: Vec<LineIssue>,
}

impl LoadReport {
    /// Number of skipped rules whose reason is [`RuleError::is_unsupported`].
    pub fn skipped_unsupported(&self) -> usize {
        self.skipped
            .iter()
            .filter(|s| s.reason.is_unsupported())
            .count()
    }

    /// Number of skipped rules that were malformed (or duplicates, or out of scope).
    pub fn skipped_malformed(&self) -> usize {
        self.skipped.len() - self.skipped_unsupported()
    }
}

/// Snort 2 configuration directives: reported as ignored lines, never parsed as rules.
const SNORT_DIRECTIVES: &[&str] = &[
    "include",
    "config",
    "preprocessor",
    "output",
    "dynamicpreprocessor",
    "dynamicengine",
    "dynamicdetection",
    "event_filter",
    "rate_filter",
    "suppress",
    "threshold",
    "ruletype",
];

/// Best-effort `sid:N` extraction for reporting rules that failed to parse.
fn find_sid(text: &str) -> Option<u32> {
    let mut rest = text;
    while let Some(i) = rest.find("sid") {
        let before = rest[..i].chars().next_back();
        let after = rest[i + 3..].trim_start();
        if matches!(before, None | Some(';' | '(' | ' ' | '\t'))
            && let Some(v) = after.strip_prefix(':')
        {
            let digits: String = v
                .trim_start()
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(n) = digits.parse() {
                return Some(n);
            }
        }
        rest = &rest[i + 3..];
    }
    None
}

/// Logical lines: comments and blank lines dropped, `\`-continued lines joined. Each with the
/// number of its first physical line. Comment lines are returned too (as `Comment`) because
/// device headers are comments.
enum Logical {
    Comment(usize, String),
    Text(usize, String),
}

fn logical_lines(text: &str) -> Vec<Logical> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end_matches('\r');
        if let Some((start, mut acc)) = pending.take() {
            let t = line.trim();
            if let Some(stripped) = t.strip_suffix('\\') {
                acc.push_str(stripped);
                if acc.len() > MAX_RULE_LEN {
                    out.push(Logical::Text(start, acc));
                } else {
                    pending = Some((start, acc));
                }
            } else {
                acc.push_str(t);
                out.push(Logical::Text(start, acc));
            }
            continue;
        }
        let t = line.trim();
        if t.is_empty() {
            continue;
        }
        if let Some(c) = t.strip_prefix('#') {
            out.push(Logical::Comment(n, c.trim().to_string()));
            continue;
        }
        if let Some(stripped) = t.strip_suffix('\\') {
            pending = Some((n, stripped.to_string()));
        } else {
            out.push(Logical::Text(n, t.to_string()));
        }
    }
    if let Some((start, acc)) = pending {
        out.push(Logical::Text(start, acc));
    }
    out
}

/// Load a rules text with the default variables ([`Variables::default`]).
///
/// The text is Snort rules syntax, one rule per line (or continued with a trailing `\`),
/// with `#` comments, blank lines and `var` / `ipvar` / `portvar` definitions. A comment
/// `# device aa:bb:cc:dd:ee:ff` starts the rules of one device; rules before any such header
/// apply to all devices. Variable definitions apply to every rule after them, whatever the
/// device section. Never panics; every rule is either loaded or listed in the report.
pub fn load(text: &str) -> (Vec<ScopedRule>, LoadReport) {
    load_with(text, Variables::default())
}

/// [`load`] starting from the given variables.
pub fn load_with(text: &str, mut vars: Variables) -> (Vec<ScopedRule>, LoadReport) {
    let mut rules = Vec::new();
    let mut report = LoadReport::default();
    // Scope, or the line of an invalid header.
    let mut scope: Result<Scope, usize> = Ok(Scope::AllDevices);
    let mut first_line: HashMap<(Scope, u32, u32), usize> = HashMap::new();

    for l in logical_lines(text) {
        let (n, t) = match l {
            Logical::Comment(n, c) => {
                let mut words = c.split_whitespace();
                if words
                    .next()
                    .is_some_and(|w| w.eq_ignore_ascii_case("device"))
                {
                    let mac = words.next().unwrap_or("");
                    let extra = words.next().is_some();
                    match gw_packet::parse_mac(mac) {
                        Some(m) if !extra => scope = Ok(Scope::Device(m)),
                        _ => {
                            scope = Err(n);
                            report.issues.push(LineIssue {
                                line: n,
                                error: LineError::DeviceHeader(c.clone()),
                            });
                        }
                    }
                }
                continue;
            }
            Logical::Text(n, t) => (n, t),
        };
        let first = t.split_whitespace().next().unwrap_or("");
        let kind = match first {
            "var" => Some(VarKind::Any),
            "ipvar" => Some(VarKind::Ip),
            "portvar" => Some(VarKind::Port),
            _ => None,
        };
        if let Some(kind) = kind {
            let rest = t[first.len()..].trim_start();
            let (name, value) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let value = value.trim();
            if let Err(e) = vars.define(kind, name, value) {
                report.issues.push(LineIssue {
                    line: n,
                    error: LineError::Variable(format!("{name}: {e}")),
                });
            }
            continue;
        }
        let looks_like_rule = !SNORT_DIRECTIVES.contains(&first)
            && (t.contains('(')
                || matches!(
                    first,
                    "alert" | "log" | "pass" | "drop" | "reject" | "sdrop" | "activate" | "dynamic"
                ));
        if !looks_like_rule {
            let shown: String = t.chars().take(80).collect();
            report.issues.push(LineIssue {
                line: n,
                error: LineError::Ignored(shown),
            });
            continue;
        }
        let result = match scope {
            Err(header_line) => Err(RuleError::InvalidDeviceScope(header_line)),
            Ok(sc) => {
                parse_rule(&t, &vars, n).and_then(|r| match first_line.get(&(sc, r.gid, r.sid)) {
                    Some(&l) => Err(RuleError::Duplicate {
                        gid: r.gid,
                        sid: r.sid,
                        first_line: l,
                    }),
                    None => {
                        first_line.insert((sc, r.gid, r.sid), n);
                        Ok((sc, r))
                    }
                })
            }
        };
        match result {
            Ok((scope, rule)) => {
                report.loaded += 1;
                rules.push(ScopedRule { scope, rule });
            }
            Err(reason) => {
                if let RuleError::Unsupported(names) = &reason {
                    for name in names {
                        *report.unsupported_options.entry(name.clone()).or_default() += 1;
                    }
                }
                report.skipped.push(SkippedRule {
                    line: n,
                    sid: find_sid(&t),
                    reason,
                });
            }
        }
    }
    (rules, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_extraction() {
        assert_eq!(find_sid("alert tcp (msg:\"sid:9\"; sid:42;)"), Some(42));
        assert_eq!(find_sid("alert tcp (sid : 7; rev:1)"), Some(7));
        assert_eq!(find_sid("alert tcp (gsid:7;)"), None);
        assert_eq!(find_sid("nothing"), None);
    }

    #[test]
    fn continuation_and_comments() {
        let text = "# c\n\nalert tcp any any -> any any \\\n  (sid:1; \\\n msg:\"x\";)\n  # device 02:00:00:00:00:01\nalert udp any any -> any any (sid:2;)";
        let l = logical_lines(text);
        assert_eq!(l.len(), 4);
        match &l[1] {
            Logical::Text(n, t) => {
                assert_eq!(*n, 3);
                assert!(t.ends_with("msg:\"x\";)"), "{t}");
            }
            Logical::Comment(..) => panic!(),
        }
        let (rules, report) = load(text);
        assert_eq!(report.loaded, 2, "{report:?}");
        assert_eq!(rules[0].scope, Scope::AllDevices);
        assert_eq!(rules[1].scope, Scope::Device([2, 0, 0, 0, 0, 1]));
        assert_eq!(rules[1].rule.line, 7);
    }
}
