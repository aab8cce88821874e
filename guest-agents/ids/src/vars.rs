//! Address and port specifications of rule headers, and the variables they may refer to.

use core::net::IpAddr;
use std::collections::HashMap;

use crate::error::RuleError;

/// Default variables: the `ipvar` / `portvar` lines of the default `snort.conf` shipped with
/// Snort 2.9 (network-specific values are `any`). Rules text can redefine any of them with its
/// own `var` / `ipvar` / `portvar` lines.
pub const DEFAULT_VARIABLES: &str = "\
ipvar HOME_NET any
ipvar EXTERNAL_NET any
ipvar DNS_SERVERS $HOME_NET
ipvar SMTP_SERVERS $HOME_NET
ipvar HTTP_SERVERS $HOME_NET
ipvar SQL_SERVERS $HOME_NET
ipvar TELNET_SERVERS $HOME_NET
ipvar SSH_SERVERS $HOME_NET
ipvar FTP_SERVERS $HOME_NET
ipvar SIP_SERVERS $HOME_NET
ipvar AIM_SERVERS [64.12.24.0/23,64.12.28.0/23,64.12.161.0/24,64.12.163.0/24,64.12.200.0/24,205.188.3.0/24,205.188.5.0/24,205.188.7.0/24,205.188.9.0/24,205.188.153.0/24,205.188.179.0/24,205.188.248.0/24]
portvar HTTP_PORTS [36,80,81,82,83,84,85,86,87,88,89,90,311,383,555,591,593,631,801,808,818,901,972,1158,1220,1414,1533,1741,1830,1942,2231,2301,2381,2578,2809,2980,3029,3037,3057,3128,3443,3702,4000,4343,4848,5000,5117,5250,5450,5600,5814,6080,6173,6988,7000,7001,7005,7071,7144,7145,7510,7770,7777,7778,7779,8000,8001,8008,8014,8015,8020,8028,8040,8080,8081,8082,8085,8088,8090,8118,8123,8180,8181,8182,8222,8243,8280,8300,8333,8344,8400,8443,8500,8509,8787,8800,8888,8899,8983,9000,9002,9060,9080,9090,9091,9111,9290,9443,9447,9710,9788,9999,10000,11371,12601,13014,15489,19980,29991,33300,34412,34443,34444,40007,41080,44449,50000,50002,51423,53331,55252,55555,56712]
portvar SHELLCODE_PORTS !80
portvar ORACLE_PORTS 1024:
portvar SSH_PORTS 22
portvar FTP_PORTS [21,2100,3535]
portvar SIP_PORTS [5060,5061,5600]
portvar FILE_DATA_PORTS [$HTTP_PORTS,110,143]
portvar GTP_PORTS [2123,2152,3386]
";

/// Nesting limit of lists (`[a,[b,[c]]]`), so hostile input cannot exhaust the stack.
const MAX_NESTING: usize = 16;
/// Size limit of one address or port specification after variables are expanded (counted
/// in nodes), so variables that reference each other cannot blow up memory.
const MAX_NODES: usize = 65_536;

/// An IPv4 or IPv6 network (address and prefix length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parse `1.2.3.4`, `10.0.0.0/8`, `2001:db8::1`, `2001:db8::/32`.
    pub fn parse(s: &str) -> Option<IpNet> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                let v: u8 = p.parse().ok()?;
                (v <= max).then_some(v)?
            }
            Some(_) => return None,
            None => max,
        };
        Some(IpNet { addr, prefix })
    }

    /// Whether `ip` is in this network (an IPv4 network never contains an IPv6 address and
    /// vice versa).
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(*a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(*a) & mask
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum AddrNode {
    Any,
    Net(IpNet),
    Not(Box<AddrNode>),
    /// Snort list semantics: matches when (there is no positive item or some positive item
    /// matches) and no negated item matches.
    List(Vec<AddrNode>),
}

impl AddrNode {
    fn matches(&self, ip: &IpAddr) -> bool {
        match self {
            AddrNode::Any => true,
            AddrNode::Net(n) => n.contains(ip),
            AddrNode::Not(n) => !n.matches(ip),
            AddrNode::List(items) => {
                let mut any_pos = false;
                let mut pos_hit = false;
                for it in items {
                    match it {
                        AddrNode::Not(n) => {
                            if n.matches(ip) {
                                return false;
                            }
                        }
                        other => {
                            any_pos = true;
                            pos_hit = pos_hit || other.matches(ip);
                        }
                    }
                }
                !any_pos || pos_hit
            }
        }
    }

    fn size(&self) -> usize {
        match self {
            AddrNode::Any | AddrNode::Net(_) => 1,
            AddrNode::Not(n) => 1 + n.size(),
            AddrNode::List(v) => 1 + v.iter().map(AddrNode::size).sum::<usize>(),
        }
    }

    /// True for specifications that obviously match nothing (`!any`, `![any]`).
    fn is_never(&self) -> bool {
        match self {
            AddrNode::Not(n) => n.is_always(),
            AddrNode::List(items) => {
                let positives: Vec<_> = items
                    .iter()
                    .filter(|i| !matches!(i, AddrNode::Not(_)))
                    .collect();
                (!positives.is_empty() && positives.iter().all(|p| p.is_never()))
                    || items.iter().any(|i| match i {
                        AddrNode::Not(n) => n.is_always(),
                        _ => false,
                    })
            }
            _ => false,
        }
    }

    fn is_always(&self) -> bool {
        match self {
            AddrNode::Any => true,
            AddrNode::Not(n) => n.is_never(),
            AddrNode::List(items) => {
                items.iter().all(|i| !matches!(i, AddrNode::Not(_)))
                    && items.iter().any(AddrNode::is_always)
            }
            AddrNode::Net(_) => false,
        }
    }
}

/// The address field of a rule header: `any`, an address, a CIDR, a variable, a list
/// `[a,b,...]`, any of them negated with `!`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrSpec(AddrNode);

impl AddrSpec {
    /// Matches every address.
    pub fn any() -> AddrSpec {
        AddrSpec(AddrNode::Any)
    }

    /// Parse an address field, expanding `$VARIABLES` from `vars`.
    pub fn parse(text: &str, vars: &Variables) -> Result<AddrSpec, RuleError> {
        let mut p = SpecParser {
            s: text.as_bytes(),
            i: 0,
            text,
            nodes: 0,
        };
        let node = p.addr(vars, 0)?;
        p.skip_ws();
        if p.i != p.s.len() {
            return Err(p.addr_err("trailing characters"));
        }
        if node.size() > MAX_NODES {
            return Err(p.addr_err("specification too large"));
        }
        Ok(AddrSpec(node))
    }

    /// Whether `ip` matches.
    pub fn matches(&self, ip: &IpAddr) -> bool {
        self.0.matches(ip)
    }

    /// True if this is plain `any`.
    pub fn is_any(&self) -> bool {
        self.0 == AddrNode::Any
    }

    /// True for specifications that can match no address at all (`!any` and the like).
    pub fn is_never(&self) -> bool {
        self.0.is_never()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortNode {
    Range(u16, u16),
    Not(Box<PortNode>),
    List(Vec<PortNode>),
}

type Ranges = Vec<(u16, u16)>;

fn normalise(mut r: Ranges) -> Ranges {
    r.sort_unstable();
    let mut out: Ranges = Vec::with_capacity(r.len());
    for (lo, hi) in r {
        if let Some(last) = out.last_mut()
            && u32::from(lo) <= u32::from(last.1) + 1
        {
            last.1 = last.1.max(hi);
            continue;
        }
        out.push((lo, hi));
    }
    out
}

fn complement(r: &Ranges) -> Ranges {
    let mut out = Vec::new();
    let mut next: u32 = 0;
    for &(lo, hi) in r {
        if u32::from(lo) > next {
            out.push((next as u16, lo - 1));
        }
        next = u32::from(hi) + 1;
    }
    if next <= 65535 {
        out.push((next as u16, 65535));
    }
    out
}

fn intersect(a: &Ranges, b: &Ranges) -> Ranges {
    let mut out = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let lo = a[i].0.max(b[j].0);
        let hi = a[i].1.min(b[j].1);
        if lo <= hi {
            out.push((lo, hi));
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

impl PortNode {
    fn ranges(&self) -> Ranges {
        match self {
            PortNode::Range(lo, hi) => vec![(*lo, *hi)],
            PortNode::Not(n) => complement(&n.ranges()),
            PortNode::List(items) => {
                let mut pos = Vec::new();
                let mut any_pos = false;
                let mut neg = Vec::new();
                for it in items {
                    match it {
                        PortNode::Not(n) => neg.extend(n.ranges()),
                        other => {
                            any_pos = true;
                            pos.extend(other.ranges());
                        }
                    }
                }
                let pos = if any_pos {
                    normalise(pos)
                } else {
                    vec![(0, 65535)]
                };
                intersect(&pos, &complement(&normalise(neg)))
            }
        }
    }

    fn size(&self) -> usize {
        match self {
            PortNode::Range(..) => 1,
            PortNode::Not(n) => 1 + n.size(),
            PortNode::List(v) => 1 + v.iter().map(PortNode::size).sum::<usize>(),
        }
    }
}

/// The port field of a rule header: `any`, `80`, `1024:`, `:1023`, `1:100`, a variable, a
/// list, any of them negated with `!`. Stored as a sorted set of disjoint ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    node: PortNode,
    ranges: Ranges,
}

impl PortSpec {
    /// Matches every port.
    pub fn any() -> PortSpec {
        PortSpec {
            node: PortNode::Range(0, 65535),
            ranges: vec![(0, 65535)],
        }
    }

    /// Parse a port field, expanding `$VARIABLES` from `vars`.
    pub fn parse(text: &str, vars: &Variables) -> Result<PortSpec, RuleError> {
        let mut p = SpecParser {
            s: text.as_bytes(),
            i: 0,
            text,
            nodes: 0,
        };
        let node = p.port(vars, 0)?;
        p.skip_ws();
        if p.i != p.s.len() {
            return Err(p.port_err("trailing characters"));
        }
        if node.size() > MAX_NODES {
            return Err(p.port_err("specification too large"));
        }
        let ranges = node.ranges();
        Ok(PortSpec { node, ranges })
    }

    /// Whether `port` matches.
    pub fn matches(&self, port: u16) -> bool {
        let i = self.ranges.partition_point(|&(_, hi)| hi < port);
        self.ranges.get(i).is_some_and(|&(lo, _)| lo <= port)
    }

    /// True if every port matches.
    pub fn is_any(&self) -> bool {
        self.ranges == [(0, 65535)]
    }

    /// True if no port matches (`!any`, `[80,!80]`, ...).
    pub fn is_never(&self) -> bool {
        self.ranges.is_empty()
    }
}

struct SpecParser<'a> {
    s: &'a [u8],
    i: usize,
    text: &'a str,
    /// Nodes produced so far (variables count with their expanded size).
    nodes: usize,
}

impl SpecParser<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn grow(&mut self, n: usize) -> Result<(), ()> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            Err(())
        } else {
            Ok(())
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn addr_err(&self, why: &str) -> RuleError {
        RuleError::Address {
            text: self.text.to_string(),
            why: why.to_string(),
        }
    }

    fn port_err(&self, why: &str) -> RuleError {
        RuleError::Port {
            text: self.text.to_string(),
            why: why.to_string(),
        }
    }

    /// A bare word: up to `,` `]` `[` or whitespace.
    fn word(&mut self) -> &str {
        let start = self.i;
        while self.i < self.s.len()
            && !matches!(self.s[self.i], b',' | b']' | b'[' | b'!')
            && !self.s[self.i].is_ascii_whitespace()
        {
            self.i += 1;
        }
        // The bytes scanned are ASCII delimiters apart, so the slice is on char boundaries.
        self.text.get(start..self.i).unwrap_or("")
    }

    fn var_name(&mut self) -> &str {
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        self.text.get(start..self.i).unwrap_or("")
    }

    fn addr(&mut self, vars: &Variables, depth: usize) -> Result<AddrNode, RuleError> {
        if depth > MAX_NESTING {
            return Err(self.addr_err("lists nested too deeply"));
        }
        self.skip_ws();
        match self.peek() {
            Some(b'!') => {
                self.i += 1;
                let inner = self.addr(vars, depth + 1)?;
                Ok(AddrNode::Not(Box::new(inner)))
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    items.push(self.addr(vars, depth + 1)?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            break;
                        }
                        _ => return Err(self.addr_err("unterminated list")),
                    }
                }
                Ok(AddrNode::List(items))
            }
            Some(b'$') => {
                self.i += 1;
                let name = self.var_name().to_string();
                match vars.ip.get(&name) {
                    Some(n) => {
                        self.grow(n.size())
                            .map_err(|()| self.addr_err("specification too large"))?;
                        Ok(n.clone())
                    }
                    None => Err(RuleError::UndefinedVariable(name)),
                }
            }
            Some(_) => {
                let w = self.word();
                if w.eq_ignore_ascii_case("any") {
                    return Ok(AddrNode::Any);
                }
                if w.is_empty() {
                    return Err(self.addr_err("empty item"));
                }
                IpNet::parse(w)
                    .map(AddrNode::Net)
                    .ok_or_else(|| self.addr_err("not an address or network"))
            }
            None => Err(self.addr_err("empty")),
        }
    }

    fn port(&mut self, vars: &Variables, depth: usize) -> Result<PortNode, RuleError> {
        if depth > MAX_NESTING {
            return Err(self.port_err("lists nested too deeply"));
        }
        self.skip_ws();
        match self.peek() {
            Some(b'!') => {
                self.i += 1;
                let inner = self.port(vars, depth + 1)?;
                Ok(PortNode::Not(Box::new(inner)))
            }
            Some(b'[') => {
                self.i += 1;
                let mut items = Vec::new();
                loop {
                    items.push(self.port(vars, depth + 1)?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            break;
                        }
                        _ => return Err(self.port_err("unterminated list")),
                    }
                }
                Ok(PortNode::List(items))
            }
            Some(b'$') => {
                self.i += 1;
                let name = self.var_name().to_string();
                match vars.port.get(&name) {
                    Some(n) => {
                        self.grow(n.size())
                            .map_err(|()| self.port_err("specification too large"))?;
                        Ok(n.clone())
                    }
                    None => Err(RuleError::UndefinedVariable(name)),
                }
            }
            Some(_) => {
                let w = self.word().to_string();
                if w.eq_ignore_ascii_case("any") {
                    return Ok(PortNode::Range(0, 65535));
                }
                let num = |s: &str| -> Option<u16> {
                    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                        return None;
                    }
                    s.parse().ok()
                };
                let (lo, hi) = match w.split_once(':') {
                    Some(("", "")) => return Err(self.port_err("empty range")),
                    Some(("", h)) => (Some(0), num(h)),
                    Some((l, "")) => (num(l), Some(65535)),
                    Some((l, h)) => (num(l), num(h)),
                    None => (num(&w), num(&w)),
                };
                match (lo, hi) {
                    (Some(lo), Some(hi)) if lo <= hi => Ok(PortNode::Range(lo, hi)),
                    (Some(_), Some(_)) => Err(self.port_err("range low end above high end")),
                    _ => Err(self.port_err("not a port, range or list")),
                }
            }
            None => Err(self.port_err("empty")),
        }
    }
}

/// Rule variables (`$HOME_NET`, `$HTTP_PORTS`, ...). Address and port variables live in
/// separate namespaces, as with Snort's `ipvar` and `portvar`; a plain `var` defines whichever
/// of the two its value parses as (both for `any`).
#[derive(Debug, Clone)]
pub struct Variables {
    ip: HashMap<String, AddrNode>,
    port: HashMap<String, PortNode>,
}

/// Which kind of definition a variable line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VarKind {
    /// `var`: address or port, whichever the value parses as.
    Any,
    /// `ipvar`.
    Ip,
    /// `portvar`.
    Port,
}

impl Default for Variables {
    /// The Snort 2.9 defaults ([`DEFAULT_VARIABLES`]).
    fn default() -> Self {
        let mut v = Variables::empty();
        for line in DEFAULT_VARIABLES.lines() {
            let mut parts = line.splitn(3, ' ');
            let (Some(kind), Some(name), Some(value)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let kind = if kind == "ipvar" {
                VarKind::Ip
            } else {
                VarKind::Port
            };
            // The defaults are constants known to parse (a unit test checks it).
            let _ = v.define(kind, name, value);
        }
        v
    }
}

impl Variables {
    /// No variables at all.
    pub fn empty() -> Variables {
        Variables {
            ip: HashMap::new(),
            port: HashMap::new(),
        }
    }

    /// Define (or redefine) a variable. The value may refer to variables defined earlier.
    pub fn define(&mut self, kind: VarKind, name: &str, value: &str) -> Result<(), RuleError> {
        let valid_name = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid_name {
            return Err(RuleError::Header(format!("bad variable name `{name}`")));
        }
        match kind {
            VarKind::Ip => {
                let a = AddrSpec::parse(value, self)?;
                self.ip.insert(name.to_string(), a.0);
            }
            VarKind::Port => {
                let p = PortSpec::parse(value, self)?;
                self.port.insert(name.to_string(), p.node);
            }
            VarKind::Any => {
                let a = AddrSpec::parse(value, self);
                let p = PortSpec::parse(value, self);
                match (a, p) {
                    (Err(e), Err(_)) => return Err(e),
                    (a, p) => {
                        if let Ok(a) = a {
                            self.ip.insert(name.to_string(), a.0);
                        }
                        if let Ok(p) = p {
                            self.port.insert(name.to_string(), p.node);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether an address variable of that name exists.
    pub fn has_ip(&self, name: &str) -> bool {
        self.ip.contains_key(name)
    }

    /// Whether a port variable of that name exists.
    pub fn has_port(&self, name: &str) -> bool {
        self.port.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn defaults_all_parse() {
        let v = Variables::default();
        for line in DEFAULT_VARIABLES.lines() {
            let name = line.split(' ').nth(1).unwrap();
            assert!(v.has_ip(name) || v.has_port(name), "{name}");
        }
        let p = PortSpec::parse("$HTTP_PORTS", &v).unwrap();
        assert!(p.matches(80) && p.matches(8080) && !p.matches(443));
        let p = PortSpec::parse("$FILE_DATA_PORTS", &v).unwrap();
        assert!(p.matches(110) && p.matches(80) && !p.matches(25));
        let p = PortSpec::parse("$SHELLCODE_PORTS", &v).unwrap();
        assert!(!p.matches(80) && p.matches(81) && p.matches(0));
    }

    #[test]
    fn addresses() {
        let v = Variables::default();
        let a = AddrSpec::parse("[10.0.0.0/8,!10.1.0.0/16, 2001:db8::/32]", &v).unwrap();
        assert!(a.matches(&ip("10.2.3.4")));
        assert!(!a.matches(&ip("10.1.3.4")));
        assert!(!a.matches(&ip("11.0.0.1")));
        assert!(a.matches(&ip("2001:db8::7")));
        assert!(!a.matches(&ip("2001:db9::7")));
        let a = AddrSpec::parse("![192.168.0.0/16,172.16.0.0/12]", &v).unwrap();
        assert!(a.matches(&ip("8.8.8.8")) && !a.matches(&ip("192.168.1.1")));
        let a = AddrSpec::parse("[!1.2.3.4,!1.2.3.5]", &v).unwrap();
        assert!(a.matches(&ip("1.2.3.6")) && !a.matches(&ip("1.2.3.5")));
        let a = AddrSpec::parse("0.0.0.0/0", &v).unwrap();
        assert!(a.matches(&ip("1.2.3.4")) && !a.matches(&ip("::1")));
        assert!(AddrSpec::parse("!any", &v).unwrap().is_never());
        assert!(AddrSpec::parse("!$HOME_NET", &v).unwrap().is_never());
        assert!(!AddrSpec::parse("!1.2.3.4", &v).unwrap().is_never());
        for bad in [
            "",
            "[1.2.3.4",
            "1.2.3.4/33",
            "1.2.3",
            "$NOPE",
            "[1.2.3.4,]",
            "1.2.3.4 x",
        ] {
            assert!(AddrSpec::parse(bad, &v).is_err(), "{bad}");
        }
        let deep = "[".repeat(100) + &"]".repeat(100);
        assert!(AddrSpec::parse(&deep, &v).is_err());
    }

    #[test]
    fn ports() {
        let v = Variables::default();
        let p = PortSpec::parse("[1:10,!5,20:]", &v).unwrap();
        assert!(p.matches(1) && p.matches(4) && !p.matches(5) && p.matches(10));
        assert!(!p.matches(11) && p.matches(20) && p.matches(65535));
        let p = PortSpec::parse(":1023", &v).unwrap();
        assert!(p.matches(0) && p.matches(1023) && !p.matches(1024));
        assert!(PortSpec::parse("any", &v).unwrap().is_any());
        assert!(PortSpec::parse("!any", &v).unwrap().is_never());
        assert!(PortSpec::parse("[80,!80]", &v).unwrap().is_never());
        for bad in ["", "65536", "10:5", "x", ":", "[80", "$NOPE", "-1"] {
            assert!(PortSpec::parse(bad, &v).is_err(), "{bad}");
        }
    }

    #[test]
    fn variables_chain_and_kinds() {
        let mut v = Variables::empty();
        v.define(VarKind::Ip, "A", "10.0.0.0/8").unwrap();
        v.define(VarKind::Ip, "B", "[$A,192.168.1.1]").unwrap();
        v.define(VarKind::Any, "P", "[80,443]").unwrap();
        assert!(v.has_port("P") && !v.has_ip("P"));
        v.define(VarKind::Any, "X", "any").unwrap();
        assert!(v.has_port("X") && v.has_ip("X"));
        assert!(v.define(VarKind::Ip, "C", "$P").is_err());
        assert!(v.define(VarKind::Ip, "1A", "any").is_err());
        let b = AddrSpec::parse("$B", &v).unwrap();
        assert!(b.matches(&ip("10.9.9.9")) && b.matches(&ip("192.168.1.1")));
        assert!(!b.matches(&ip("192.168.1.2")));
    }
}
