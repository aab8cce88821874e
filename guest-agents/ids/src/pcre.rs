//! The `pcre` rule option, evaluated with `regex::bytes` (pure Rust, linear time).
//!
//! Snort hands the pattern to PCRE; this module translates the parts of PCRE syntax whose
//! meaning differs in the `regex` crate and rejects what `regex` cannot express (back
//! references, look-around, atomic groups, possessive quantifiers, `\Q..\E`, ...), so a rule is
//! either evaluated with PCRE's meaning or skipped:
//!
//! - the regex runs on bytes with Unicode off (PCRE without the UTF flag): `.` matches any byte
//!   but `\n`, `\w` `\d` `\s` are ASCII classes, `(?i)` folds ASCII letters only;
//! - `$` without the `m` flag is PCRE's "end, or before a final newline": it is translated to
//!   `(?:\n?\z)`, which accepts the same subjects but includes that final newline in the match
//!   (so a following relative option starts after it, at the very end of the buffer); with `E`
//!   (dollar-end-only) it becomes `\z`; `\Z` is translated like `$`;
//! - `\<` and `\>` are PCRE literals (they are word boundaries in `regex`);
//! - inside a character class an unescaped `[` (not starting a POSIX class such as
//!   `[:alpha:]`), `&` and `~` are literals in PCRE, set operators in `regex`: they are escaped;
//! - octal escapes (`\0`, `\012`) keep their PCRE meaning; `\1`..`\9` outside a class are back
//!   references in PCRE and make the rule unsupported.
//!
//! Flags: `i` `s` `m` `x` (PCRE's own), `A` (anchored), `E` (dollar end only), `G` (ungreedy),
//! `R` (relative to the end of the previous match), `B` (raw bytes: the payload is raw here) and
//! `O` (override PCRE match limits: `regex` has none). The HTTP buffer flags
//! `U I P H D M C K S Y` make the rule unsupported.

use regex::bytes::{Regex, RegexBuilder};

/// Memory limit of one compiled regex.
const SIZE_LIMIT: usize = 1 << 21;

/// A compiled `pcre` option.
#[derive(Debug, Clone)]
pub(crate) struct Pcre {
    pub(crate) regex: Regex,
    pub(crate) negated: bool,
    pub(crate) relative: bool,
}

/// Why a `pcre` option could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PcreError {
    /// Malformed option text.
    Malformed(String),
    /// Valid Snort, but unsupported here; the names to report.
    Unsupported(Vec<String>),
}

/// Parse the argument of `pcre:` (`[!]"/pattern/flags"`).
pub(crate) fn parse(value: &str) -> Result<Pcre, PcreError> {
    let v = value.trim();
    let (negated, v) = match v.strip_prefix('!') {
        Some(rest) => (true, rest.trim_start()),
        None => (false, v),
    };
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or_else(|| PcreError::Malformed("argument must be a quoted \"/regex/flags\"".into()))?;
    let (delim, body) = if let Some(rest) = inner.strip_prefix('/') {
        ('/', rest)
    } else if let Some(rest) = inner.strip_prefix('m') {
        let mut chars = rest.chars();
        match chars.next() {
            Some(d) if !d.is_alphanumeric() && !d.is_whitespace() && d != '\\' => {
                (d, chars.as_str())
            }
            _ => return Err(PcreError::Malformed("bad regex delimiter".into())),
        }
    } else {
        return Err(PcreError::Malformed(
            "regex must start with / or m<delimiter>".into(),
        ));
    };
    let end = body
        .rfind(delim)
        .ok_or_else(|| PcreError::Malformed("unterminated regex".into()))?;
    let pattern = &body[..end];
    let flags = &body[end + delim.len_utf8()..];

    let mut f = Flags::default();
    let mut unsupported = Vec::new();
    for c in flags.chars() {
        match c {
            'i' => f.i = true,
            's' => f.s = true,
            'm' => f.m = true,
            'x' => f.x = true,
            'A' => f.anchored = true,
            'E' => f.dollar_end = true,
            'G' => f.ungreedy = true,
            'R' => f.relative = true,
            'B' | 'O' => {}
            'U' | 'I' | 'P' | 'H' | 'D' | 'M' | 'C' | 'K' | 'S' | 'Y' => {
                unsupported.push(format!("pcre:{c}"));
            }
            other => {
                return Err(PcreError::Malformed(format!("unknown pcre flag `{other}`")));
            }
        }
    }
    if !unsupported.is_empty() {
        return Err(PcreError::Unsupported(unsupported));
    }
    let translated = translate(pattern, &f)?;
    let regex = RegexBuilder::new(&translated)
        .unicode(false)
        .case_insensitive(f.i)
        .dot_matches_new_line(f.s)
        .multi_line(f.m)
        .ignore_whitespace(f.x)
        .swap_greed(f.ungreedy)
        .octal(true)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(SIZE_LIMIT)
        .nest_limit(64)
        .build()
        .map_err(|e| {
            let why = e.to_string();
            let first = why.lines().last().unwrap_or("").trim().to_string();
            PcreError::Unsupported(vec![format!("pcre (regex: {first})")])
        })?;
    Ok(Pcre {
        regex,
        negated,
        relative: f.relative,
    })
}

#[derive(Debug, Default)]
struct Flags {
    i: bool,
    s: bool,
    m: bool,
    x: bool,
    anchored: bool,
    dollar_end: bool,
    ungreedy: bool,
    relative: bool,
}

fn translate(p: &str, f: &Flags) -> Result<String, PcreError> {
    let unsupported = |what: &str| PcreError::Unsupported(vec![format!("pcre ({what})")]);
    let dollar = if f.m {
        "$"
    } else if f.dollar_end {
        r"\z"
    } else {
        r"(?:\n?\z)"
    };
    let mut out = String::with_capacity(p.len() + 16);
    if f.anchored {
        out.push_str(r"\A(?:");
    }
    let chars: Vec<char> = p.chars().collect();
    let mut i = 0;
    let mut in_class = false;
    // Position just after the `[` / `[^` that opened the class: a `]` there is a literal.
    let mut class_start = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            let Some(&n) = chars.get(i + 1) else {
                return Err(PcreError::Malformed("regex ends with a backslash".into()));
            };
            match n {
                '<' => out.push_str(r"\x3C"),
                '>' => out.push_str(r"\x3E"),
                '1'..='9' if !in_class => return Err(unsupported("back reference")),
                'Q' | 'E' => return Err(unsupported("\\Q..\\E quoting")),
                'Z' if !in_class => out.push_str(dollar_for_z(f)),
                'G' | 'K' | 'R' | 'X' | 'C' | 'g' | 'k' => {
                    return Err(unsupported(&format!("\\{n}")));
                }
                _ => {
                    out.push('\\');
                    out.push(n);
                }
            }
            i += 2;
            continue;
        }
        if in_class {
            match c {
                ']' if i != class_start => in_class = false,
                '[' => {
                    // POSIX class `[:name:]` passes through; otherwise a literal `[`.
                    if chars.get(i + 1) == Some(&':') {
                        let rest: String = chars[i..].iter().collect();
                        if let Some(end) = rest.find(":]") {
                            out.push_str(&rest[..end + 2]);
                            i += rest[..end + 2].chars().count();
                            continue;
                        }
                    }
                    out.push_str(r"\[");
                    i += 1;
                    continue;
                }
                '&' | '~' => {
                    out.push('\\');
                    out.push(c);
                    i += 1;
                    continue;
                }
                _ => {}
            }
            out.push(c);
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                class_start = i;
                continue;
            }
            '$' => out.push_str(dollar),
            _ => out.push(c),
        }
        i += 1;
    }
    if f.anchored {
        out.push(')');
    }
    Ok(out)
}

fn dollar_for_z(_f: &Flags) -> &'static str {
    // `\Z` ignores the `m` and `E` flags: end, or before a final newline.
    r"(?:\n?\z)"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(re: &str, hay: &[u8]) -> bool {
        parse(re).unwrap().regex.is_match(hay)
    }

    #[test]
    fn flags_and_translation() {
        assert!(m(r#""/^USER\s+w0rm/smi""#, b"user  W0RM"));
        assert!(!m(r#""/^USER\s+w0rm/sm""#, b"user  W0RM"));
        assert!(m(r#""/foo$/""#, b"a foo\n"));
        assert!(m(r#""/foo$/""#, b"a foo"));
        assert!(!m(r#""/foo$/""#, b"a foo\nx"));
        assert!(m(r#""/foo$/m""#, b"a foo\nx"));
        assert!(!m(r#""/foo$/E""#, b"a foo\n"));
        assert!(m(r#""/a\<b\>/""#, b"a<b>"));
        assert!(m(r#""/[[]x/""#, b"[x"));
        assert!(m(r#""/[a&&b]/""#, b"&"));
        assert!(m(r#""/[[:digit:]]+/""#, b"42"));
        assert!(m(r#""/\x2eram?([\?\x5c\x2f]|$)/smi""#, b"a.RAM?"));
        assert!(m(r#""/\0\012/""#, b"\x00\n"));
        assert!(m(r#""/a.c/""#, b"a\xffc"));
        assert!(!m(r#""/a.c/""#, b"a\nc"));
        assert!(m(r#""/a.c/s""#, b"a\nc"));
        assert!(m(r#""m|a/b|""#, b"a/b"));
        assert!(m(r#""/bc/A""#, b"bcd") && !m(r#""/bc/A""#, b"abcd"));
        assert!(m(r#""/a\;b/""#, b"a;b"));
        assert!(m(r#""/\w+/""#, b"x") && !m(r#""/^\w$/""#, "é".as_bytes()));
        let g = parse(r#""/a+/G""#).unwrap();
        assert_eq!(g.regex.find(b"aaa").unwrap().end(), 1);
        let p = parse(r#"!"/x/R""#).unwrap();
        assert!(p.negated && p.relative);
    }

    #[test]
    fn rejects() {
        for (re, unsupported) in [
            (r#""/a/U""#, true),
            (r#""/(a)\1/""#, true),
            (r#""/(?=a)/""#, true),
            (r#""/\Qa\E/""#, true),
            (r#""/a/Q""#, false),
            (r#""a/""#, false),
            (r#"/a/"#, false),
            (r#""/a""#, false),
            (r#""/a\""#, false),
        ] {
            match parse(re) {
                Err(PcreError::Unsupported(_)) => assert!(unsupported, "{re}"),
                Err(PcreError::Malformed(_)) => assert!(!unsupported, "{re}"),
                Ok(_) => panic!("{re} accepted"),
            }
        }
    }
}
