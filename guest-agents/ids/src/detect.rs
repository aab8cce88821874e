//! Detection options and their evaluation against one packet.

use gw_packet::L4;

use crate::bytes::{ByteJump, ByteTest};
use crate::packet::Packet;
use crate::pcre::Pcre;

/// A numeric comparison (`dsize`, `itype`, `ttl`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cmp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    /// `a < x < b`.
    Between,
    /// `a <= x <= b`.
    BetweenIncl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NumCheck {
    pub(crate) cmp: Cmp,
    pub(crate) a: u32,
    pub(crate) b: u32,
}

impl NumCheck {
    pub(crate) fn test(&self, x: u32) -> bool {
        match self.cmp {
            Cmp::Eq => x == self.a,
            Cmp::Ne => x != self.a,
            Cmp::Lt => x < self.a,
            Cmp::Gt => x > self.a,
            Cmp::Le => x <= self.a,
            Cmp::Ge => x >= self.a,
            Cmp::Between => self.a < x && x < self.b,
            Cmp::BetweenIncl => self.a <= x && x <= self.b,
        }
    }
}

/// How `flags` compares the TCP flags byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FlagsMode {
    /// Exactly these flags (after removing ignored bits).
    Exact,
    /// All of these, others allowed (`+`).
    All,
    /// Any of these (`*`).
    Any,
    /// None of these (`!`).
    Not,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlagsCheck {
    pub(crate) mode: FlagsMode,
    pub(crate) flags: u8,
    pub(crate) ignore: u8,
}

impl FlagsCheck {
    fn test(&self, raw: u8) -> bool {
        let f = raw & !self.ignore;
        match self.mode {
            FlagsMode::Exact => f == self.flags,
            FlagsMode::All => f & self.flags == self.flags,
            FlagsMode::Any => f & self.flags != 0,
            FlagsMode::Not => f & self.flags == 0,
        }
    }
}

/// The `flow` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct FlowCheck {
    /// `Some(true)`: established; `Some(false)`: not_established.
    pub(crate) established: Option<bool>,
    /// `Some(true)`: to_server / from_client; `Some(false)`: to_client / from_server.
    pub(crate) from_client: Option<bool>,
}

/// Options that look at headers or state, not at the payload bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    Flow(FlowCheck),
    Dsize(NumCheck),
    Flags(FlagsCheck),
    Itype(NumCheck),
    Icode(NumCheck),
    IcmpId(NumCheck),
    IcmpSeq(NumCheck),
    Ttl(NumCheck),
    IpProto(NumCheck),
    SameIp,
    IpId(NumCheck),
    Seq(NumCheck),
    Ack(NumCheck),
    Window(NumCheck),
}

impl Check {
    fn test(&self, p: &Packet<'_>) -> bool {
        let icmp = match p.l4 {
            L4::Icmpv4 { icmp_type, code } | L4::Icmpv6 { icmp_type, code } => {
                Some((icmp_type, code))
            }
            _ => None,
        };
        match self {
            Check::Flow(f) => {
                f.established.is_none_or(|e| e == p.flow.established)
                    && f.from_client.is_none_or(|c| c == p.flow.from_client)
            }
            Check::Dsize(n) => n.test(u32::try_from(p.payload.len()).unwrap_or(u32::MAX)),
            Check::Flags(f) => p.tcp.is_some_and(|t| f.test(t.flags)),
            Check::Itype(n) => icmp.is_some_and(|(t, _)| n.test(t.into())),
            Check::Icode(n) => icmp.is_some_and(|(_, c)| n.test(c.into())),
            Check::IcmpId(n) => p.icmp_echo.is_some_and(|(id, _)| n.test(id.into())),
            Check::IcmpSeq(n) => p.icmp_echo.is_some_and(|(_, s)| n.test(s.into())),
            Check::Ttl(n) => n.test(p.ttl.into()),
            Check::IpProto(n) => n.test(p.l4.protocol().into()),
            Check::SameIp => p.src == p.dst,
            Check::IpId(n) => p.ip_id.is_some_and(|id| n.test(id.into())),
            Check::Seq(n) => p.tcp.is_some_and(|t| n.test(t.seq)),
            Check::Ack(n) => p.tcp.is_some_and(|t| n.test(t.ack)),
            Check::Window(n) => p.tcp.is_some_and(|t| n.test(t.window.into())),
        }
    }
}

/// One `content` option with its modifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Content {
    pub(crate) pattern: Vec<u8>,
    pub(crate) nocase: bool,
    pub(crate) negated: bool,
    /// `distance` / `within` were given: positions count from the end of the previous match.
    pub(crate) relative: bool,
    /// `offset` (absolute) or `distance` (relative).
    pub(crate) offset: i32,
    /// `depth` (absolute) or `within` (relative); `None`: to the end of the buffer.
    pub(crate) depth: Option<u32>,
    /// `fast_pattern:only`: the pattern must occur somewhere; the cursor does not move.
    pub(crate) only: bool,
    pub(crate) fast: FastMark,
    pub(crate) seen: u8,
}

/// Which part of a content the rule marked as its fast pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FastMark {
    None,
    Whole,
    Slice(usize, usize),
}

pub(crate) const SEEN_OFFSET: u8 = 1;
pub(crate) const SEEN_DEPTH: u8 = 2;
pub(crate) const SEEN_DISTANCE: u8 = 4;
pub(crate) const SEEN_WITHIN: u8 = 8;
pub(crate) const SEEN_FAST: u8 = 16;

/// A payload option, evaluated in rule order with a cursor.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Content(Content),
    Pcre(Pcre),
    /// `isdataat:[!]n[,relative]`.
    IsDataAt {
        n: u32,
        relative: bool,
        negated: bool,
    },
    /// `pkt_data`: back to the start of the packet data.
    ResetCursor,
    /// `byte_test`.
    ByteTest(ByteTest),
    /// `byte_jump`: moves the cursor.
    ByteJump(ByteJump),
}

impl Op {
    fn uses_cursor(&self) -> bool {
        match self {
            Op::Content(c) => c.relative,
            Op::Pcre(p) => p.relative,
            Op::IsDataAt { relative, .. } => *relative,
            Op::ResetCursor => false,
            Op::ByteTest(t) => t.extract.relative,
            Op::ByteJump(j) => j.extract.relative,
        }
    }
}

/// Limit on search steps for one rule against one packet (see [`Budget`]).
pub(crate) const STEP_LIMIT: u32 = 20_000;

/// Bounds the work of the backtracking search of one rule on one packet. Running out counts
/// as "no match" and is reported in the statistics.
#[derive(Debug)]
pub(crate) struct Budget {
    pub(crate) steps: u32,
    pub(crate) exhausted: bool,
}

impl Budget {
    pub(crate) fn new() -> Budget {
        Budget {
            steps: 0,
            exhausted: false,
        }
    }
}

/// The compiled detection part of a rule.
#[derive(Debug, Clone, Default)]
pub(crate) struct Detection {
    pub(crate) checks: Vec<Check>,
    pub(crate) ops: Vec<Op>,
    /// `later_uses_cursor[i]`: some op after `i` (before the next `pkt_data`) is relative, so
    /// the choice of match for op `i` matters.
    pub(crate) later_uses_cursor: Vec<bool>,
    /// Some op may try more than one match, so failed states are worth remembering.
    pub(crate) backtracks: bool,
}

impl Detection {
    pub(crate) fn finish(&mut self) {
        let n = self.ops.len();
        self.later_uses_cursor = vec![false; n];
        let mut later = false;
        for i in (0..n).rev() {
            self.later_uses_cursor[i] = later;
            match &self.ops[i] {
                Op::ResetCursor => later = false,
                op => later = later || op.uses_cursor(),
            }
        }
        self.backtracks = self.later_uses_cursor.iter().any(|&b| b);
    }

    /// Evaluate every check and payload option (not the header).
    pub(crate) fn matches(&self, p: &Packet<'_>, budget: &mut Budget) -> bool {
        if !self.checks.iter().all(|c| c.test(p)) {
            return false;
        }
        if self.ops.is_empty() {
            return true;
        }
        let mut s = Search {
            d: self,
            buf: p.payload,
            failed: Vec::new(),
            budget,
        };
        s.run(0, 0)
    }
}

struct Search<'a, 'b> {
    d: &'a Detection,
    buf: &'a [u8],
    /// Bit set of (op, cursor) states known to fail, allocated on first use.
    failed: Vec<u64>,
    budget: &'b mut Budget,
}

impl Search<'_, '_> {
    fn state_bit(&self, op: usize, cursor: usize) -> usize {
        op * (self.buf.len() + 1) + cursor
    }

    fn known_failed(&self, op: usize, cursor: usize) -> bool {
        let b = self.state_bit(op, cursor);
        self.failed
            .get(b / 64)
            .is_some_and(|w| w & (1 << (b % 64)) != 0)
    }

    fn mark_failed(&mut self, op: usize, cursor: usize) {
        if self.failed.is_empty() {
            let bits = (self.d.ops.len() + 1) * (self.buf.len() + 1);
            self.failed = vec![0; bits.div_ceil(64)];
        }
        let b = self.state_bit(op, cursor);
        self.failed[b / 64] |= 1 << (b % 64);
    }

    /// Can ops `i..` all be satisfied starting with `cursor`?
    fn run(&mut self, i: usize, cursor: usize) -> bool {
        if i == self.d.ops.len() {
            return true;
        }
        if self.known_failed(i, cursor) {
            return false;
        }
        self.budget.steps += 1;
        if self.budget.steps > STEP_LIMIT {
            self.budget.exhausted = true;
            return false;
        }
        let ok = self.step(i, cursor);
        if !ok && !self.budget.exhausted && self.d.backtracks {
            self.mark_failed(i, cursor);
        }
        ok
    }

    fn step(&mut self, i: usize, cursor: usize) -> bool {
        let d = self.d;
        let buf = self.buf;
        let enumerate = d.later_uses_cursor[i];
        match &d.ops[i] {
            Op::ResetCursor => self.run(i + 1, 0),
            Op::ByteTest(t) => t.test(buf, cursor) && self.run(i + 1, cursor),
            Op::ByteJump(j) => match j.jump(buf, cursor) {
                Some(to) => self.run(i + 1, to),
                None => false,
            },
            Op::IsDataAt {
                n,
                relative,
                negated,
            } => {
                let base = if *relative { cursor } else { 0 };
                let present = base + (*n as usize) < buf.len();
                present != *negated && self.run(i + 1, cursor)
            }
            Op::Content(c) => {
                if c.only {
                    return find(buf, &c.pattern, c.nocase, 0).is_some() && self.run(i + 1, cursor);
                }
                match window(c, cursor, buf.len()) {
                    Window::Impossible { negated_ok } => negated_ok && self.run(i + 1, cursor),
                    Window::Range(start, end) => {
                        let hay = &buf[..end];
                        if c.negated {
                            return find(hay, &c.pattern, c.nocase, start).is_none()
                                && self.run(i + 1, cursor);
                        }
                        let mut from = start;
                        while let Some(at) = find(hay, &c.pattern, c.nocase, from) {
                            if self.run(i + 1, at + c.pattern.len()) {
                                return true;
                            }
                            if !enumerate || self.budget.exhausted {
                                return false;
                            }
                            from = at + 1;
                        }
                        false
                    }
                }
            }
            Op::Pcre(p) => {
                let base = if p.relative { cursor.min(buf.len()) } else { 0 };
                let hay = &buf[base..];
                if p.negated {
                    return !p.regex.is_match(hay) && self.run(i + 1, cursor);
                }
                let mut from = 0;
                while from <= hay.len() {
                    let Some(m) = p.regex.find_at(hay, from) else {
                        return false;
                    };
                    if self.run(i + 1, base + m.end()) {
                        return true;
                    }
                    if !enumerate || self.budget.exhausted {
                        return false;
                    }
                    self.budget.steps += 1;
                    if self.budget.steps > STEP_LIMIT {
                        self.budget.exhausted = true;
                        return false;
                    }
                    from = m.start() + 1;
                }
                false
            }
        }
    }
}

enum Window {
    /// The pattern cannot fit. Snort then fails a positive content, and passes a negated one
    /// only when the window is not empty.
    Impossible { negated_ok: bool },
    /// The match must lie within `start..end`.
    Range(usize, usize),
}

/// The search window of a content, as Snort 3's `uniSearchReal` computes it: start at
/// `offset` (or `cursor + distance`), clamped to 0; the window is `depth` (or `within`) bytes
/// long, or reaches the end of the buffer.
fn window(c: &Content, cursor: usize, len: usize) -> Window {
    let base = if c.relative { cursor as i64 } else { 0 };
    let pos = (base + i64::from(c.offset)).max(0);
    let avail = len as i64 - pos;
    let depth = match c.depth {
        Some(d) if i64::from(d) <= avail => i64::from(d),
        _ => avail,
    };
    let plen = c.pattern.len() as i64;
    if pos + plen > len as i64 || plen > depth {
        return Window::Impossible {
            negated_ok: c.negated && depth > 0,
        };
    }
    Window::Range(pos as usize, (pos + depth) as usize)
}

/// First occurrence of `needle` in `hay` starting at or after `from`.
pub(crate) fn find(hay: &[u8], needle: &[u8], nocase: bool, from: usize) -> Option<usize> {
    let h = hay.get(from..)?;
    if needle.is_empty() || needle.len() > h.len() {
        return None;
    }
    if !nocase {
        return memchr::memmem::find(h, needle).map(|i| i + from);
    }
    let first = needle[0];
    let (lo, up) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    let last_start = h.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        let rel = memchr::memchr2(lo, up, &h[i..=last_start])?;
        let at = i + rel;
        if h[at..at + needle.len()].eq_ignore_ascii_case(needle) {
            return Some(at + from);
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_cases() {
        assert_eq!(find(b"abcabc", b"bc", false, 0), Some(1));
        assert_eq!(find(b"abcabc", b"bc", false, 2), Some(4));
        assert_eq!(find(b"abcabc", b"BC", false, 0), None);
        assert_eq!(find(b"abcaBc", b"BC", true, 2), Some(4));
        assert_eq!(find(b"ab", b"abc", true, 0), None);
        assert_eq!(find(b"ab", b"b", true, 5), None);
        assert_eq!(find(b"xyz", b"", false, 0), None);
    }

    #[test]
    fn numeric_and_flags() {
        let n = NumCheck {
            cmp: Cmp::Between,
            a: 1,
            b: 3,
        };
        assert!(!n.test(1) && n.test(2) && !n.test(3));
        let n = NumCheck {
            cmp: Cmp::BetweenIncl,
            ..n
        };
        assert!(n.test(1) && n.test(3) && !n.test(4));
        let sa = FlagsCheck {
            mode: FlagsMode::Exact,
            flags: 0x12,
            ignore: 0xc0,
        };
        assert!(sa.test(0x12) && sa.test(0x52) && !sa.test(0x13));
        let plus = FlagsCheck {
            mode: FlagsMode::All,
            ..sa
        };
        assert!(plus.test(0x13) && !plus.test(0x10));
        let any = FlagsCheck {
            mode: FlagsMode::Any,
            ..sa
        };
        assert!(any.test(0x10) && !any.test(0x01));
        let not = FlagsCheck {
            mode: FlagsMode::Not,
            ..sa
        };
        assert!(not.test(0x01) && !not.test(0x02));
    }
}
