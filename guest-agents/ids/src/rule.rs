//! Snort rules: the data model and the parser of one rule.

use std::sync::Arc;

use gw_packet::L4;

use crate::bytes::{self, ByteError};
use crate::detect::{
    Check, Cmp, Content, Detection, FastMark, FlagsCheck, FlagsMode, FlowCheck, NumCheck, Op,
    SEEN_DEPTH, SEEN_DISTANCE, SEEN_FAST, SEEN_OFFSET, SEEN_WITHIN,
};
use crate::error::RuleError;
use crate::packet::Packet;
use crate::pcre::{self, PcreError};
use crate::vars::{AddrSpec, PortSpec, Variables};

/// Most payload options (`content`, `pcre`, `isdataat`, `pkt_data`) one rule may have.
pub const MAX_PAYLOAD_OPTIONS: usize = 128;
/// Longest rule text accepted (after joining continuation lines).
pub const MAX_RULE_LEN: usize = 64 * 1024;

/// What a rule does when it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Suppress every alert and drop for the packet.
    Pass,
    /// Drop the packet and alert.
    Drop,
    /// Drop the packet and alert (Snort also sends a TCP reset / ICMP unreachable; this
    /// library only reports the action).
    Reject,
    /// Drop the packet silently (Snort logs nothing; here it is still listed in the verdict,
    /// with this action, so the caller can decide).
    Sdrop,
    /// Alert.
    Alert,
    /// Log the packet (no alert in Snort; listed in the verdict with this action).
    Log,
}

impl Action {
    /// True for the actions that drop the packet: drop, reject, sdrop.
    pub fn drops(self) -> bool {
        matches!(self, Action::Drop | Action::Reject | Action::Sdrop)
    }

    fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "alert" => Action::Alert,
            "log" => Action::Log,
            "pass" => Action::Pass,
            "drop" => Action::Drop,
            "reject" => Action::Reject,
            "sdrop" => Action::Sdrop,
            _ => return None,
        })
    }

    /// The keyword, as written in rules.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Drop => "drop",
            Action::Reject => "reject",
            Action::Sdrop => "sdrop",
            Action::Alert => "alert",
            Action::Log => "log",
        }
    }
}

/// The protocol of a rule header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Every IP packet, whatever its transport.
    Ip,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMPv4 and ICMPv6 (as in Snort, `icmp` rules see both; `itype` compares the raw type).
    Icmp,
}

impl Protocol {
    /// Whether a packet with this transport is inspected by rules of this protocol.
    pub fn applies_to(self, l4: &L4) -> bool {
        match self {
            Protocol::Ip => true,
            Protocol::Tcp => matches!(l4, L4::Tcp { .. }),
            Protocol::Udp => matches!(l4, L4::Udp { .. }),
            Protocol::Icmp => matches!(l4, L4::Icmpv4 { .. } | L4::Icmpv6 { .. }),
        }
    }
}

/// The address/port part of a rule header.
#[derive(Debug, Clone)]
pub struct Header {
    /// Source addresses.
    pub src: AddrSpec,
    /// Source ports.
    pub src_ports: PortSpec,
    /// `<>`: the rule also matches with source and destination swapped.
    pub bidirectional: bool,
    /// Destination addresses.
    pub dst: AddrSpec,
    /// Destination ports.
    pub dst_ports: PortSpec,
}

impl Header {
    /// Whether the packet's addresses and ports match (either way round for `<>`).
    pub fn matches(&self, p: &Packet<'_>) -> bool {
        let (sp, dp) = p.ports();
        let fwd = self.src.matches(&p.src)
            && self.dst.matches(&p.dst)
            && self.src_ports.matches(sp)
            && self.dst_ports.matches(dp);
        fwd || (self.bidirectional
            && self.src.matches(&p.dst)
            && self.dst.matches(&p.src)
            && self.src_ports.matches(dp)
            && self.dst_ports.matches(sp))
    }
}

/// A loaded rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Action.
    pub action: Action,
    /// Protocol.
    pub protocol: Protocol,
    /// Addresses and ports.
    pub header: Header,
    /// Generator id (`gid`, default 1).
    pub gid: u32,
    /// Signature id.
    pub sid: u32,
    /// Revision (`rev`, default 0).
    pub rev: u32,
    /// Message (`msg`, empty if absent).
    pub msg: Arc<str>,
    /// `classtype`.
    pub classtype: Option<Arc<str>>,
    /// `priority`.
    pub priority: Option<u32>,
    /// `reference` values, as written (`cve,2000-0138`).
    pub references: Vec<String>,
    /// `metadata` values, as written.
    pub metadata: Vec<String>,
    /// Line of the rules text the rule starts on (1-based; 0 for [`Rule::parse`]).
    pub line: usize,
    pub(crate) detection: Detection,
    pub(crate) fast: Option<FastPattern>,
}

/// The pattern a rule contributes to the multi-pattern prefilter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FastPattern {
    /// The bytes that must occur in the payload for the rule to match.
    pub bytes: Vec<u8>,
    /// Compare ASCII letters case-insensitively.
    pub nocase: bool,
}

impl Rule {
    /// Parse one rule (no variable definitions), with `vars` for `$NAME` references.
    pub fn parse(text: &str, vars: &Variables) -> Result<Rule, RuleError> {
        parse_rule(text, vars, 0)
    }

    /// The prefilter pattern: the content marked `fast_pattern`, else the longest positive
    /// content. `None` when the rule has no positive content (it is then checked on every
    /// packet of its protocol).
    pub fn fast_pattern(&self) -> Option<&FastPattern> {
        self.fast.as_ref()
    }

    /// Full evaluation of the rule against a packet: protocol, header, every option.
    pub fn matches(&self, p: &Packet<'_>) -> bool {
        let mut b = crate::detect::Budget::new();
        self.matches_with(p, &mut b)
    }

    pub(crate) fn matches_with(&self, p: &Packet<'_>, budget: &mut crate::detect::Budget) -> bool {
        self.protocol.applies_to(&p.l4)
            && self.header.matches(p)
            && self.detection.matches(p, budget)
    }
}

/// Split a rule header into fields on whitespace, keeping `[...]` lists (which may contain
/// spaces) in one field.
fn header_fields(h: &str) -> Result<Vec<String>, RuleError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut depth = 0usize;
    for c in h.chars() {
        match c {
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| RuleError::Header("unbalanced `]`".into()))?;
                cur.push(c);
            }
            c if c.is_whitespace() && depth == 0 => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if depth != 0 {
        return Err(RuleError::Header("unbalanced `[`".into()));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Split the text between the parentheses into `name[:value]` options, on `;` outside quoted
/// strings and not escaped with `\`.
pub(crate) fn split_options(body: &str) -> Result<Vec<(String, Option<String>)>, RuleError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut chars = body.chars();
    let mut push = |cur: &mut String| -> Result<(), RuleError> {
        let t = cur.trim();
        if !t.is_empty() {
            let (name, value) = match t.split_once(':') {
                Some((n, v)) => (n.trim(), Some(v.trim().to_string())),
                None => (t, None),
            };
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
            if !ok {
                return Err(RuleError::Options(format!("bad option name `{name}`")));
            }
            out.push((name.to_ascii_lowercase(), value));
        }
        cur.clear();
        Ok(())
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                in_quote = !in_quote;
                cur.push(c);
            }
            ';' if !in_quote => push(&mut cur)?,
            c => cur.push(c),
        }
    }
    if in_quote {
        return Err(RuleError::Options("unterminated quoted string".into()));
    }
    push(&mut cur)?;
    Ok(out)
}

/// Parse the quoted content string of `content:` (with `|hex|` and `\` escapes). Returns
/// (negated, bytes, text after the closing quote).
fn parse_content_string(v: &str) -> Result<(bool, Vec<u8>, &str), RuleError> {
    let err = |why: &str| RuleError::option("content", why);
    let v = v.trim();
    let (negated, v) = match v.strip_prefix('!') {
        Some(r) => (true, r.trim_start()),
        None => (false, v),
    };
    let body = v
        .strip_prefix('"')
        .ok_or_else(|| err("content must be a quoted string"))?;
    let mut out = Vec::new();
    let mut hex = false;
    let mut nibble: Option<u8> = None;
    let mut iter = body.char_indices();
    let mut end = None;
    while let Some((i, c)) = iter.next() {
        if hex {
            match c {
                '|' => {
                    if nibble.is_some() {
                        return Err(err("odd number of hex digits"));
                    }
                    hex = false;
                }
                c if c.is_ascii_hexdigit() => {
                    // `to_digit(16)` of an ASCII hex digit is below 16.
                    let d = c.to_digit(16).unwrap_or(0) as u8;
                    match nibble.take() {
                        Some(h) => out.push(h << 4 | d),
                        None => nibble = Some(d),
                    }
                }
                ' ' | '\t' => {}
                _ => return Err(err("bad character in |hex| block")),
            }
            continue;
        }
        match c {
            '|' => hex = true,
            '\\' => match iter.next() {
                Some((_, e @ ('"' | ';' | '\\' | ':'))) => out.push(e as u8),
                _ => return Err(err("bad escape (only \\\" \\; \\\\ \\: are allowed)")),
            },
            '"' => {
                end = Some(i + 1);
                break;
            }
            c => {
                let mut b = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
    }
    let Some(end) = end else {
        return Err(err(if hex {
            "unterminated |hex| block"
        } else {
            "unterminated string"
        }));
    };
    if hex {
        return Err(err("unterminated |hex| block"));
    }
    if out.is_empty() {
        return Err(err("empty content"));
    }
    Ok((negated, out, &body[end..]))
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(v);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn parse_u32(name: &str, v: Option<&str>) -> Result<u32, RuleError> {
    let v = v
        .ok_or_else(|| RuleError::option(name, "missing argument"))?
        .trim();
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RuleError::option(name, format!("`{v}` is not a number")));
    }
    v.parse()
        .map_err(|_| RuleError::option(name, format!("`{v}` is out of range")))
}

/// Parse a numeric comparison: `N`, `=N`, `!N`, `!=N`, `<N`, `>N`, `<=N`, `>=N`, `A<>B`,
/// `A<=>B`, and with `dash_ranges` also `A-B`, `-B`, `A-`. `angle_inclusive` makes `A<>B`
/// inclusive (Snort 2.9's `dsize`); otherwise it is exclusive (Snort's `itype`, `icode`).
fn parse_num_check(
    name: &str,
    v: Option<&str>,
    max: u32,
    dash_ranges: bool,
    angle_inclusive: bool,
) -> Result<NumCheck, RuleError> {
    let v: String = v
        .ok_or_else(|| RuleError::option(name, "missing argument"))?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let num = |s: &str| -> Result<u32, RuleError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RuleError::option(
                name,
                format!("`{v}` is not a valid number or range"),
            ));
        }
        match s.parse::<u32>() {
            Ok(n) if n <= max => Ok(n),
            _ => Err(RuleError::option(name, format!("`{s}` is above {max}"))),
        }
    };
    let check = |cmp, a, b| NumCheck { cmp, a, b };
    if let Some((a, b)) = v.split_once("<=>") {
        return Ok(check(Cmp::BetweenIncl, num(a)?, num(b)?));
    }
    if let Some((a, b)) = v.split_once("<>") {
        let (a, b) = (num(a)?, num(b)?);
        let cmp = if angle_inclusive {
            Cmp::BetweenIncl
        } else {
            Cmp::Between
        };
        return Ok(check(cmp, a, b));
    }
    for (prefix, cmp) in [
        ("<=", Cmp::Le),
        (">=", Cmp::Ge),
        ("!=", Cmp::Ne),
        ("<", Cmp::Lt),
        (">", Cmp::Gt),
        ("=", Cmp::Eq),
        ("!", Cmp::Ne),
    ] {
        if let Some(rest) = v.strip_prefix(prefix) {
            return Ok(check(cmp, num(rest)?, 0));
        }
    }
    if dash_ranges && let Some((a, b)) = v.split_once('-') {
        return Ok(match (a.is_empty(), b.is_empty()) {
            (true, false) => check(Cmp::Le, num(b)?, 0),
            (false, true) => check(Cmp::Ge, num(a)?, 0),
            _ => check(Cmp::BetweenIncl, num(a)?, num(b)?),
        });
    }
    Ok(check(Cmp::Eq, num(&v)?, 0))
}

fn parse_flags(v: Option<&str>) -> Result<FlagsCheck, RuleError> {
    let err = |why: &str| RuleError::option("flags", why);
    let v = v.ok_or_else(|| err("missing argument"))?.trim();
    let (main, mask) = match v.split_once(',') {
        Some((m, k)) => (m.trim(), Some(k.trim())),
        None => (v, None),
    };
    let bit = |c: char| -> Option<u8> {
        Some(match c.to_ascii_uppercase() {
            'F' => 0x01,
            'S' => 0x02,
            'R' => 0x04,
            'P' => 0x08,
            'A' => 0x10,
            'U' => 0x20,
            'E' | '2' => 0x40,
            'C' | '1' => 0x80,
            '0' => 0,
            _ => return None,
        })
    };
    let mut mode = FlagsMode::Exact;
    let mut flags = 0u8;
    let mut n = 0;
    for c in main.chars() {
        let m = match c {
            '+' => Some(FlagsMode::All),
            '*' => Some(FlagsMode::Any),
            '!' => Some(FlagsMode::Not),
            _ => None,
        };
        if let Some(m) = m {
            if mode != FlagsMode::Exact {
                return Err(err("more than one modifier"));
            }
            mode = m;
            continue;
        }
        flags |= bit(c).ok_or_else(|| err("unknown flag"))?;
        n += 1;
    }
    if n == 0 {
        return Err(err("no flags"));
    }
    let mut ignore = 0u8;
    if let Some(mask) = mask {
        for c in mask.chars() {
            ignore |= bit(c).ok_or_else(|| err("unknown flag in mask"))?;
        }
    }
    Ok(FlagsCheck {
        mode,
        flags,
        ignore,
    })
}

fn parse_flow(v: Option<&str>, unsupported: &mut Vec<String>) -> Result<FlowCheck, RuleError> {
    let err = |why: String| RuleError::option("flow", why);
    let v = v.ok_or_else(|| err("missing argument".into()))?;
    let mut f = FlowCheck::default();
    let mut stateless = false;
    for tok in v.split(',') {
        let tok = tok.trim().to_ascii_lowercase();
        match tok.as_str() {
            "to_server" | "from_client" | "to_client" | "from_server" => {
                let c = tok == "to_server" || tok == "from_client";
                if f.from_client.is_some_and(|x| x != c) {
                    return Err(err("both directions given".into()));
                }
                f.from_client = Some(c);
            }
            "established" | "not_established" => {
                let e = tok == "established";
                if f.established.is_some_and(|x| x != e) {
                    return Err(err("established and not_established".into()));
                }
                f.established = Some(e);
            }
            "stateless" => stateless = true,
            // Packets are never rebuilt from streams or fragments here, so these hold always.
            "no_stream" | "no_frag" => {}
            "only_stream" | "only_frag" => unsupported.push(format!("flow:{tok}")),
            other => return Err(err(format!("unknown keyword `{other}`"))),
        }
    }
    if stateless && f.established.is_some() {
        return Err(err("stateless with established / not_established".into()));
    }
    Ok(f)
}

fn ip_proto_number(v: &str) -> Option<&'static str> {
    Some(match v.to_ascii_lowercase().as_str() {
        "icmp" => "1",
        "igmp" => "2",
        "ipip" => "4",
        "tcp" => "6",
        "udp" => "17",
        "gre" => "47",
        "esp" => "50",
        "ah" => "51",
        "icmpv6" | "ipv6-icmp" => "58",
        "ospf" => "89",
        "pim" => "103",
        "sctp" => "132",
        _ => return None,
    })
}

/// Where the last `content` went, so the standalone modifiers after it know what to modify.
enum LastContent {
    None,
    /// Index into the ops.
    Ours(usize),
    /// An unsupported content-like option (`uricontent`, `protected_content`): its modifiers
    /// are part of an already-skipped construct.
    Unsupported,
}

/// The informational options: accepted, kept or ignored, never affecting matching.
const INFORMATIONAL: &[&str] = &[
    "msg",
    "sid",
    "rev",
    "gid",
    "classtype",
    "reference",
    "metadata",
    "priority",
    // Snort 3: ports in the header still apply; without service detection `service` can
    // only widen a rule, so ignoring it cannot cause false positives.
    "service",
    "rem",
];

/// Content modifiers that are standalone options in Snort 2 syntax.
const CONTENT_MODIFIERS: &[&str] = &[
    "nocase",
    "rawbytes",
    "depth",
    "offset",
    "distance",
    "within",
    "fast_pattern",
];

fn apply_modifier(
    c: &mut Content,
    name: &str,
    arg: Option<&str>,
    unsupported: &mut Vec<String>,
    fast_seen: &mut bool,
) -> Result<(), RuleError> {
    let num = |name: &str, arg: Option<&str>| -> Result<Option<i32>, RuleError> {
        let a = arg
            .ok_or_else(|| RuleError::option(name, "missing argument"))?
            .trim();
        let digits = a.strip_prefix('-').unwrap_or(a);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            let first = a.bytes().next();
            if first.is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') {
                // A byte_extract variable: the rule is unsupported (reported with the rest).
                return Ok(None);
            }
            return Err(RuleError::option(name, format!("`{a}` is not a number")));
        }
        match a.parse::<i32>() {
            Ok(n) if (-65535..=65535).contains(&n) => Ok(Some(n)),
            _ => Err(RuleError::option(name, format!("`{a}` is out of range"))),
        }
    };
    let var = |unsupported: &mut Vec<String>, name: &str, arg: Option<&str>| {
        unsupported.push(format!(
            "{name} (byte_extract variable `{}`)",
            arg.unwrap_or("").trim()
        ));
    };
    let once = |c: &mut Content, bit: u8, name: &str| -> Result<(), RuleError> {
        if c.seen & bit != 0 {
            return Err(RuleError::option(name, "given twice for one content"));
        }
        c.seen |= bit;
        Ok(())
    };
    let absolute = |c: &Content, name: &str| -> Result<(), RuleError> {
        if c.seen & (SEEN_DISTANCE | SEEN_WITHIN) != 0 {
            return Err(RuleError::option(
                name,
                "cannot be combined with distance / within",
            ));
        }
        Ok(())
    };
    let relative = |c: &Content, name: &str| -> Result<(), RuleError> {
        if c.seen & (SEEN_OFFSET | SEEN_DEPTH) != 0 {
            return Err(RuleError::option(
                name,
                "cannot be combined with offset / depth",
            ));
        }
        Ok(())
    };
    match name {
        "nocase" => c.nocase = true,
        "rawbytes" => {}
        "offset" => {
            absolute(c, name)?;
            once(c, SEEN_OFFSET, name)?;
            match num(name, arg)? {
                Some(n) => c.offset = n,
                None => var(unsupported, name, arg),
            }
        }
        "depth" => {
            absolute(c, name)?;
            once(c, SEEN_DEPTH, name)?;
            match num(name, arg)? {
                Some(d) if d < 0 || (d as usize) < c.pattern.len() => {
                    return Err(RuleError::option(name, "smaller than the content"));
                }
                Some(d) => c.depth = Some(d as u32),
                None => var(unsupported, name, arg),
            }
        }
        "distance" => {
            relative(c, name)?;
            once(c, SEEN_DISTANCE, name)?;
            match num(name, arg)? {
                Some(n) => c.offset = n,
                None => var(unsupported, name, arg),
            }
            c.relative = true;
        }
        "within" => {
            relative(c, name)?;
            once(c, SEEN_WITHIN, name)?;
            match num(name, arg)? {
                Some(d) if d < 0 || (d as usize) < c.pattern.len() => {
                    return Err(RuleError::option(name, "smaller than the content"));
                }
                Some(d) => c.depth = Some(d as u32),
                None => var(unsupported, name, arg),
            }
            c.relative = true;
        }
        "fast_pattern" | "fast_pattern_offset" | "fast_pattern_length" => {
            if name == "fast_pattern" && *fast_seen && c.seen & SEEN_FAST == 0 {
                return Err(RuleError::option(
                    name,
                    "more than one fast_pattern in the rule",
                ));
            }
            *fast_seen = true;
            c.seen |= SEEN_FAST;
            let arg = arg.map(str::trim).unwrap_or("");
            match (name, arg) {
                ("fast_pattern", "") => {
                    if c.fast == FastMark::None {
                        c.fast = FastMark::Whole;
                    }
                }
                ("fast_pattern", "only") => c.only = true,
                ("fast_pattern", a) => {
                    let (o, l) = a.split_once(',').ok_or_else(|| {
                        RuleError::option(name, "expected `only` or `offset,length`")
                    })?;
                    let o = parse_u32(name, Some(o))? as usize;
                    let l = parse_u32(name, Some(l))? as usize;
                    c.fast = FastMark::Slice(o, l);
                }
                ("fast_pattern_offset", a) => {
                    let o = parse_u32(name, Some(a))? as usize;
                    let l = match c.fast {
                        FastMark::Slice(_, l) => l,
                        _ => c.pattern.len().saturating_sub(o),
                    };
                    c.fast = FastMark::Slice(o, l);
                }
                (_, a) => {
                    let l = parse_u32(name, Some(a))? as usize;
                    let o = match c.fast {
                        FastMark::Slice(o, _) => o,
                        _ => 0,
                    };
                    c.fast = FastMark::Slice(o, l);
                }
            }
        }
        n if n.starts_with("http_") => unsupported.push(n.to_string()),
        other => {
            return Err(RuleError::option(
                "content",
                format!("unknown modifier `{other}`"),
            ));
        }
    }
    Ok(())
}

/// Snort 3 style: `content:"abc", nocase, depth 5, fast_pattern;`.
fn parse_inline_modifiers(
    c: &mut Content,
    rest: &str,
    unsupported: &mut Vec<String>,
    fast_seen: &mut bool,
) -> Result<(), RuleError> {
    let rest = rest.trim();
    if rest.is_empty() {
        return Ok(());
    }
    let rest = rest
        .strip_prefix(',')
        .ok_or_else(|| RuleError::option("content", "text after the closing quote"))?;
    for m in rest.split(',') {
        let m = m.trim();
        let (name, arg) = match m.split_once(char::is_whitespace) {
            Some((n, a)) => (n, Some(a.trim())),
            None => (m, None),
        };
        apply_modifier(c, name, arg, unsupported, fast_seen)?;
    }
    Ok(())
}

fn validate_content(c: &Content) -> Result<(), RuleError> {
    if c.only
        && (c.negated || c.seen & (SEEN_OFFSET | SEEN_DEPTH | SEEN_DISTANCE | SEEN_WITHIN) != 0)
    {
        return Err(RuleError::option(
            "fast_pattern",
            "`only` cannot be used with negation, offset, depth, distance or within",
        ));
    }
    if let FastMark::Slice(o, l) = c.fast
        && (l == 0 || o.saturating_add(l) > c.pattern.len())
    {
        return Err(RuleError::option(
            "fast_pattern",
            "offset,length is outside the content",
        ));
    }
    Ok(())
}

pub(crate) fn parse_rule(text: &str, vars: &Variables, line: usize) -> Result<Rule, RuleError> {
    if text.len() > MAX_RULE_LEN {
        return Err(RuleError::Options(format!(
            "rule longer than {MAX_RULE_LEN} bytes"
        )));
    }
    let text = text.trim();
    let (head, body) = match text.find('(') {
        Some(i) => {
            let rest = &text[i + 1..];
            let close = rest
                .rfind(')')
                .ok_or_else(|| RuleError::Options("missing `)`".into()))?;
            if !rest[close + 1..].trim().is_empty() {
                return Err(RuleError::Options("text after the closing `)`".into()));
            }
            (&text[..i], &rest[..close])
        }
        None => return Err(RuleError::Options("missing `(options)`".into())),
    };
    let fields = header_fields(head)?;
    let action_word = fields.first().map(String::as_str).unwrap_or("");
    let action = Action::parse(action_word)
        .ok_or_else(|| RuleError::UnknownAction(action_word.to_string()))?;
    let proto_word = fields.get(1).map(String::as_str).unwrap_or("");
    let protocol = match proto_word {
        "ip" => Protocol::Ip,
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        "icmp" => Protocol::Icmp,
        "" => return Err(RuleError::Header("missing protocol".into())),
        other => return Err(RuleError::UnsupportedProtocol(other.to_string())),
    };
    if fields.len() != 7 {
        return Err(RuleError::Header(format!(
            "expected `action proto src sport -> dst dport`, found {} fields",
            fields.len()
        )));
    }
    let bidirectional = match fields[4].as_str() {
        "->" => false,
        "<>" => true,
        other => return Err(RuleError::Header(format!("bad direction `{other}`"))),
    };
    let header = Header {
        src: AddrSpec::parse(&fields[2], vars)?,
        src_ports: PortSpec::parse(&fields[3], vars)?,
        bidirectional,
        dst: AddrSpec::parse(&fields[5], vars)?,
        dst_ports: PortSpec::parse(&fields[6], vars)?,
    };
    for (spec, text) in [(&header.src, &fields[2]), (&header.dst, &fields[5])] {
        if spec.is_never() {
            return Err(RuleError::Address {
                text: text.clone(),
                why: "matches no address".into(),
            });
        }
    }
    for (spec, text) in [
        (&header.src_ports, &fields[3]),
        (&header.dst_ports, &fields[6]),
    ] {
        if spec.is_never() {
            return Err(RuleError::Port {
                text: text.clone(),
                why: "matches no port".into(),
            });
        }
        if matches!(protocol, Protocol::Ip | Protocol::Icmp) && !spec.is_any() {
            return Err(RuleError::Port {
                text: text.clone(),
                why: "ports are only meaningful in tcp and udp rules".into(),
            });
        }
    }

    let mut rule = Rule {
        action,
        protocol,
        header,
        gid: 1,
        sid: 0,
        rev: 0,
        msg: Arc::from(""),
        classtype: None,
        priority: None,
        references: Vec::new(),
        metadata: Vec::new(),
        line,
        detection: Detection::default(),
        fast: None,
    };
    let mut sid = None;
    let mut unsupported: Vec<String> = Vec::new();
    let mut last = LastContent::None;
    let mut fast_seen = false;
    let mut seen_flow = false;
    let mut seen_dsize = false;

    for (name, value) in split_options(body)? {
        let v = value.as_deref();
        let name = name.as_str();
        if INFORMATIONAL.contains(&name) {
            match name {
                "msg" => rule.msg = Arc::from(unquote(v.unwrap_or(""))),
                "sid" => {
                    let s = parse_u32(name, v)?;
                    if s == 0 {
                        return Err(RuleError::option(name, "sid must be above 0"));
                    }
                    sid = Some(s);
                }
                "rev" => rule.rev = parse_u32(name, v)?,
                "gid" => rule.gid = parse_u32(name, v)?,
                "priority" => rule.priority = Some(parse_u32(name, v)?),
                "classtype" => rule.classtype = v.map(|s| Arc::from(s.trim())),
                "reference" => rule.references.push(v.unwrap_or("").to_string()),
                "metadata" => rule.metadata.push(v.unwrap_or("").to_string()),
                _ => {}
            }
            continue;
        }
        if CONTENT_MODIFIERS.contains(&name) || name.starts_with("http_") {
            match last {
                LastContent::Ours(i) => {
                    if let Op::Content(c) = &mut rule.detection.ops[i] {
                        apply_modifier(c, name, v, &mut unsupported, &mut fast_seen)?;
                    }
                }
                LastContent::Unsupported => {
                    if name.starts_with("http_") {
                        unsupported.push(name.to_string());
                    }
                }
                // Snort 3 sticky buffers (`http_uri;` before its contents).
                LastContent::None if name.starts_with("http_") => {
                    unsupported.push(name.to_string());
                }
                LastContent::None => {
                    return Err(RuleError::option(name, "no preceding content"));
                }
            }
            continue;
        }
        match name {
            "content" => {
                let (negated, pattern, rest) = parse_content_string(v.unwrap_or(""))?;
                let mut c = Content {
                    pattern,
                    nocase: false,
                    negated,
                    relative: false,
                    offset: 0,
                    depth: None,
                    only: false,
                    fast: FastMark::None,
                    seen: 0,
                };
                parse_inline_modifiers(&mut c, rest, &mut unsupported, &mut fast_seen)?;
                rule.detection.ops.push(Op::Content(c));
                last = LastContent::Ours(rule.detection.ops.len() - 1);
            }
            "uricontent" | "protected_content" => {
                unsupported.push(name.to_string());
                last = LastContent::Unsupported;
            }
            "pcre" => match pcre::parse(v.unwrap_or("")) {
                Ok(p) => rule.detection.ops.push(Op::Pcre(p)),
                Err(PcreError::Malformed(why)) => return Err(RuleError::option(name, why)),
                Err(PcreError::Unsupported(names)) => unsupported.extend(names),
            },
            "isdataat" => {
                let v = v.ok_or_else(|| RuleError::option(name, "missing argument"))?;
                let mut parts = v.split(',').map(str::trim);
                let first = parts.next().unwrap_or("");
                let (negated, n) = match first.strip_prefix('!') {
                    Some(r) => (true, r.trim()),
                    None => (false, first),
                };
                if !n.is_empty() && !n.bytes().all(|b| b.is_ascii_digit()) {
                    unsupported.push(format!("isdataat (byte_extract variable `{n}`)"));
                    continue;
                }
                let n = parse_u32(name, Some(n))?;
                if n > 65535 {
                    return Err(RuleError::option(name, "above 65535"));
                }
                let mut relative = false;
                for p in parts {
                    match p {
                        "relative" => relative = true,
                        "rawbytes" => {}
                        other => {
                            return Err(RuleError::option(
                                name,
                                format!("unknown modifier `{other}`"),
                            ));
                        }
                    }
                }
                rule.detection.ops.push(Op::IsDataAt {
                    n,
                    relative,
                    negated,
                });
            }
            "byte_test" | "byte_jump" => {
                let v = v.ok_or_else(|| RuleError::option(name, "missing argument"))?;
                let op = if name == "byte_test" {
                    bytes::parse_byte_test(v).map(Op::ByteTest)
                } else {
                    bytes::parse_byte_jump(v).map(Op::ByteJump)
                };
                match op {
                    Ok(op) => rule.detection.ops.push(op),
                    Err(ByteError::Malformed(why)) => return Err(RuleError::option(name, why)),
                    Err(ByteError::Unsupported(what)) => {
                        unsupported.push(format!("{name} ({what})"));
                    }
                }
            }
            "pkt_data" => {
                rule.detection.ops.push(Op::ResetCursor);
                last = LastContent::None;
            }
            "flow" => {
                if seen_flow {
                    return Err(RuleError::option(name, "given twice"));
                }
                seen_flow = true;
                let f = parse_flow(v, &mut unsupported)?;
                if f != FlowCheck::default() {
                    rule.detection.checks.push(Check::Flow(f));
                }
            }
            "dsize" => {
                if seen_dsize {
                    return Err(RuleError::option(name, "given twice"));
                }
                seen_dsize = true;
                let n = parse_num_check(name, v, 65535, false, true)?;
                rule.detection.checks.push(Check::Dsize(n));
            }
            "flags" => rule.detection.checks.push(Check::Flags(parse_flags(v)?)),
            "itype" => {
                let n = parse_num_check(name, v, 255, false, false)?;
                rule.detection.checks.push(Check::Itype(n));
            }
            "icode" => {
                let n = parse_num_check(name, v, 255, false, false)?;
                rule.detection.checks.push(Check::Icode(n));
            }
            "icmp_id" => {
                let n = parse_num_check(name, v, 65535, false, false)?;
                rule.detection.checks.push(Check::IcmpId(n));
            }
            "icmp_seq" => {
                let n = parse_num_check(name, v, 65535, false, false)?;
                rule.detection.checks.push(Check::IcmpSeq(n));
            }
            "ttl" => {
                let n = parse_num_check(name, v, 255, true, false)?;
                rule.detection.checks.push(Check::Ttl(n));
            }
            "ip_proto" => {
                let raw = v.unwrap_or("").trim();
                let (prefix, word) = match raw.find(|c: char| c.is_ascii_alphanumeric()) {
                    Some(i) => raw.split_at(i),
                    None => ("", raw),
                };
                let value = match ip_proto_number(word) {
                    Some(n) => format!("{prefix}{n}"),
                    None => raw.to_string(),
                };
                let n = parse_num_check(name, Some(&value), 255, false, false)?;
                rule.detection.checks.push(Check::IpProto(n));
            }
            "sameip" => rule.detection.checks.push(Check::SameIp),
            "id" => {
                let n = parse_num_check(name, v, 65535, false, false)?;
                rule.detection.checks.push(Check::IpId(n));
            }
            "seq" => {
                let n = parse_num_check(name, v, u32::MAX, false, false)?;
                rule.detection.checks.push(Check::Seq(n));
            }
            "ack" => {
                let n = parse_num_check(name, v, u32::MAX, false, false)?;
                rule.detection.checks.push(Check::Ack(n));
            }
            "window" => {
                let n = parse_num_check(name, v, 65535, false, false)?;
                rule.detection.checks.push(Check::Window(n));
            }
            other => {
                unsupported.push(other.to_string());
                // Modifiers that follow an unknown buffer-setting option belong to it.
                last = LastContent::Unsupported;
            }
        }
    }

    for op in &rule.detection.ops {
        if let Op::Content(c) = op {
            validate_content(c)?;
        }
    }
    if !unsupported.is_empty() {
        let mut seen = std::collections::BTreeSet::new();
        unsupported.retain(|n| seen.insert(n.clone()));
        return Err(RuleError::Unsupported(unsupported));
    }
    rule.sid = sid.ok_or(RuleError::MissingSid)?;
    if rule.detection.ops.len() > MAX_PAYLOAD_OPTIONS {
        return Err(RuleError::Options(format!(
            "more than {MAX_PAYLOAD_OPTIONS} payload options"
        )));
    }
    rule.fast = choose_fast_pattern(&rule.detection.ops);
    rule.detection.finish();
    Ok(rule)
}

/// The content marked `fast_pattern` (its slice, if given), else the longest positive content
/// (the first of equal ones). A `fast_pattern` mark on a negated content is ignored.
fn choose_fast_pattern(ops: &[Op]) -> Option<FastPattern> {
    let contents = ops.iter().filter_map(|o| match o {
        Op::Content(c) if !c.negated => Some(c),
        _ => None,
    });
    let mut best: Option<&Content> = None;
    for c in contents {
        if c.fast != FastMark::None || c.only {
            best = Some(c);
            break;
        }
        if best.is_none_or(|b| c.pattern.len() > b.pattern.len()) {
            best = Some(c);
        }
    }
    let c = best?;
    let bytes = match c.fast {
        FastMark::Slice(o, l) => c.pattern[o..o + l].to_vec(),
        _ => c.pattern.clone(),
    };
    Some(FastPattern {
        bytes,
        nocase: c.nocase,
    })
}
