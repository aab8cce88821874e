//! MUD (RFC 8520) profiles: the `from-device` and `to-device` access lists of a device, parsed
//! from the JSON a manufacturer publishes into access-control entries the firewall evaluates.
//!
//! What cannot be enforced here is reported as a [`Finding`], never silently widened:
//! an `accept` entry with an unsupported match is not installed (its traffic stays denied); a
//! `drop` entry with one is installed without that match (it drops more, never less).

use std::fmt;
use std::net::IpAddr;

use gw_packet::Direction;
use ipnet::IpNet;
use serde_json::{Map, Value};

use crate::FirewallError;

/// Something in a MUD file the firewall does not enforce as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Access list name.
    pub acl: String,
    /// Entry name (empty for findings about a whole list).
    pub ace: String,
    /// What was not supported, and what was done about it.
    pub what: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ace.is_empty() {
            write!(f, "MUD ACL {:?}: {}", self.acl, self.what)
        } else {
            write!(
                f,
                "MUD ACL {:?} entry {:?}: {}",
                self.acl, self.ace, self.what
            )
        }
    }
}

/// A port condition (RFC 8519 `port-range-or-operator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortMatch {
    /// `operator: eq`.
    Eq(u16),
    /// `operator: neq`.
    Neq(u16),
    /// `operator: lte`.
    Lte(u16),
    /// `operator: gte`.
    Gte(u16),
    /// `lower-port` .. `upper-port`, inclusive.
    Range(u16, u16),
}

impl PortMatch {
    /// Whether `port` satisfies the condition.
    pub fn matches(&self, port: u16) -> bool {
        match *self {
            PortMatch::Eq(p) => port == p,
            PortMatch::Neq(p) => port != p,
            PortMatch::Lte(p) => port <= p,
            PortMatch::Gte(p) => port >= p,
            PortMatch::Range(lo, hi) => (lo..=hi).contains(&port),
        }
    }
}

/// What an entry does with the packets it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `forwarding: accept`.
    Accept,
    /// `forwarding: drop` or `reject` (the firewall drops; it sends no ICMP).
    Drop,
}

/// Address family of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

/// The conditions of one access-control entry. `None` / `false` fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Matches {
    /// IP version.
    pub family: Option<Family>,
    /// IP protocol number.
    pub protocol: Option<u8>,
    /// Source network.
    pub src_net: Option<IpNet>,
    /// Destination network.
    pub dst_net: Option<IpNet>,
    /// Source must have been resolved from this DNS name (lower case).
    pub src_dnsname: Option<String>,
    /// Destination must have been resolved from this DNS name (lower case).
    pub dst_dnsname: Option<String>,
    /// Source port.
    pub src_port: Option<PortMatch>,
    /// Destination port.
    pub dst_port: Option<PortMatch>,
    /// TCP only: who opened the connection.
    pub initiated: Option<Direction>,
    /// ICMP type.
    pub icmp_type: Option<u8>,
    /// ICMP code.
    pub icmp_code: Option<u8>,
    /// The remote end is on the local network (see [`is_local`]).
    pub local_networks: bool,
}

/// One access-control entry, in the order the profile lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ace {
    /// Access list name.
    pub acl: String,
    /// Entry name.
    pub name: String,
    /// Conditions.
    pub matches: Matches,
    /// Action.
    pub action: Action,
}

/// A parsed MUD profile.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MudProfile {
    /// The profile's `mud-url`.
    pub url: String,
    /// Entries for packets the device sends, in evaluation order.
    pub from_device: Vec<Ace>,
    /// Entries for packets sent to the device, in evaluation order.
    pub to_device: Vec<Ace>,
    /// What was not enforced as written.
    pub findings: Vec<Finding>,
}

impl MudProfile {
    /// Entries for packets travelling in `dir`.
    pub fn aces(&self, dir: Direction) -> &[Ace] {
        match dir {
            Direction::FromDevice => &self.from_device,
            Direction::ToDevice => &self.to_device,
        }
    }

    /// Parse a MUD file (the JSON object holding `ietf-mud:mud` and the ACL container).
    /// Structural errors (no `ietf-mud:mud`, malformed JSON shapes) are errors; constructs the
    /// firewall cannot enforce become [`Finding`]s.
    pub fn parse(doc: &Value) -> Result<MudProfile, FirewallError> {
        let bad = |m: String| FirewallError::Mud(m);
        let mud = doc
            .get("ietf-mud:mud")
            .and_then(Value::as_object)
            .ok_or_else(|| bad("no \"ietf-mud:mud\" container".into()))?;
        let url = mud
            .get("mud-url")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no \"mud-url\"".into()))?
            .to_string();
        // RFC 8519 names the container `acls`; profiles made from drafts use `access-lists`.
        let container = doc
            .get("ietf-access-control-list:acls")
            .or_else(|| doc.get("ietf-access-control-list:access-lists"));
        let acls: &[Value] = match container {
            None => &[],
            Some(c) => c
                .get("acl")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .ok_or_else(|| bad("the ACL container has no \"acl\" list".into()))?,
        };
        let mut profile = MudProfile {
            url,
            ..MudProfile::default()
        };
        for (key, dir) in [
            ("from-device-policy", Direction::FromDevice),
            ("to-device-policy", Direction::ToDevice),
        ] {
            let Some(policy) = mud.get(key) else {
                continue;
            };
            let refs = policy
                .pointer("/access-lists/access-list")
                .and_then(Value::as_array)
                .ok_or_else(|| bad(format!("{key} has no access-lists/access-list")))?;
            for r in refs {
                let name = r
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(format!("{key}: an access-list reference has no name")))?;
                let Some(acl) = acls
                    .iter()
                    .find(|a| a.get("name").and_then(Value::as_str) == Some(name))
                else {
                    profile.findings.push(Finding {
                        acl: name.into(),
                        ace: String::new(),
                        what: format!("referenced by {key} but not defined; nothing installed"),
                    });
                    continue;
                };
                let aces = parse_acl(name, acl, &mut profile.findings)?;
                match dir {
                    Direction::FromDevice => profile.from_device.extend(aces),
                    Direction::ToDevice => profile.to_device.extend(aces),
                }
            }
        }
        Ok(profile)
    }
}

/// Strip a YANG module prefix (`ietf-access-control-list:ipv4-acl-type` → `ipv4-acl-type`).
fn unprefixed(s: &str) -> &str {
    s.rsplit_once(':').map_or(s, |(_, t)| t)
}

fn parse_acl(
    name: &str,
    acl: &Value,
    findings: &mut Vec<Finding>,
) -> Result<Vec<Ace>, FirewallError> {
    let family = match acl.get("type").and_then(Value::as_str).map(unprefixed) {
        None => None,
        Some("ipv4-acl-type") => Some(Family::V4),
        Some("ipv6-acl-type") => Some(Family::V6),
        Some(other) => {
            findings.push(Finding {
                acl: name.into(),
                ace: String::new(),
                what: format!("ACL type {other:?} is not supported (IPv4 and IPv6 ACLs are); accept entries not installed"),
            });
            // Drop entries are still honoured below; accept entries are refused by the
            // unsupported-type marker.
            None
        }
    };
    let type_unsupported = family.is_none() && acl.get("type").is_some();
    let entries = match acl.pointer("/aces/ace") {
        None => return Ok(Vec::new()),
        Some(v) => v
            .as_array()
            .ok_or_else(|| FirewallError::Mud(format!("ACL {name:?}: aces/ace is not a list")))?,
    };
    let mut out = Vec::new();
    for e in entries {
        let ace_name = e
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let mut p = AceParser {
            acl: name,
            ace: &ace_name,
            unsupported: Vec::new(),
            m: Matches {
                family,
                ..Matches::default()
            },
        };
        let action = match e
            .pointer("/actions/forwarding")
            .and_then(Value::as_str)
            .map(unprefixed)
        {
            Some("accept") => Action::Accept,
            Some("drop") | Some("reject") => Action::Drop,
            other => {
                findings.push(Finding {
                    acl: name.into(),
                    ace: ace_name.clone(),
                    what: format!(
                        "forwarding action {other:?} is not accept/drop/reject; not installed"
                    ),
                });
                continue;
            }
        };
        if type_unsupported {
            p.unsupported.push("ACL type".into());
        }
        match e.get("matches") {
            None => {}
            Some(Value::Object(m)) => p.matches(m)?,
            Some(_) => return Err(p.err("matches is not an object")),
        }
        let conflict = p.conflict();
        let AceParser { m, unsupported, .. } = p;
        if let Some(conflict) = conflict {
            findings.push(Finding {
                acl: name.into(),
                ace: ace_name,
                what: format!("{conflict}; not installed"),
            });
            continue;
        }
        if !unsupported.is_empty() {
            let list = unsupported.join(", ");
            match action {
                Action::Accept => {
                    findings.push(Finding {
                        acl: name.into(),
                        ace: ace_name,
                        what: format!(
                            "unsupported {list}; accept entry not installed (its traffic is denied)"
                        ),
                    });
                    continue;
                }
                Action::Drop => findings.push(Finding {
                    acl: name.into(),
                    ace: ace_name.clone(),
                    what: format!(
                        "unsupported {list}; drop entry installed without it (drops more)"
                    ),
                }),
            }
        }
        out.push(Ace {
            acl: name.into(),
            name: ace_name,
            matches: m,
            action,
        });
    }
    Ok(out)
}

struct AceParser<'a> {
    acl: &'a str,
    ace: &'a str,
    unsupported: Vec<String>,
    m: Matches,
}

impl AceParser<'_> {
    fn err(&self, what: &str) -> FirewallError {
        FirewallError::Mud(format!("ACL {:?} entry {:?}: {what}", self.acl, self.ace))
    }

    fn object<'v>(
        &self,
        v: &'v Value,
        what: &str,
    ) -> Result<&'v Map<String, Value>, FirewallError> {
        v.as_object()
            .ok_or_else(|| self.err(&format!("{what} is not an object")))
    }

    fn matches(&mut self, m: &Map<String, Value>) -> Result<(), FirewallError> {
        for (key, v) in m {
            match key.as_str() {
                "ipv4" => {
                    self.family(Family::V4);
                    self.ip(self.object(v, key)?, Family::V4)?;
                }
                "ipv6" => {
                    self.family(Family::V6);
                    self.ip(self.object(v, key)?, Family::V6)?;
                }
                "tcp" => {
                    self.protocol(6);
                    self.l4(self.object(v, key)?, true)?;
                }
                "udp" => {
                    self.protocol(17);
                    self.l4(self.object(v, key)?, false)?;
                }
                "icmp" => self.icmp(self.object(v, key)?)?,
                "ietf-mud:mud" => self.mud(self.object(v, key)?),
                other => self.unsupported.push(format!("match {other:?}")),
            }
        }
        Ok(())
    }

    fn family(&mut self, f: Family) {
        match self.m.family {
            Some(have) if have != f => self.unsupported.push("an IPv4/IPv6 mix".into()),
            _ => self.m.family = Some(f),
        }
    }

    fn protocol(&mut self, p: u8) {
        match self.m.protocol {
            Some(have) if have != p => self
                .unsupported
                .push(format!("protocol {have} with a protocol-{p} match")),
            _ => self.m.protocol = Some(p),
        }
    }

    fn ip(&mut self, m: &Map<String, Value>, f: Family) -> Result<(), FirewallError> {
        let (src, dst) = match f {
            Family::V4 => ("source-ipv4-network", "destination-ipv4-network"),
            Family::V6 => ("source-ipv6-network", "destination-ipv6-network"),
        };
        for (key, v) in m {
            match key.as_str() {
                "protocol" => {
                    let p = v
                        .as_u64()
                        .and_then(|p| u8::try_from(p).ok())
                        .ok_or_else(|| self.err("protocol is not 0..=255"))?;
                    self.protocol(p);
                }
                k if k == src => self.m.src_net = Some(self.net(v, f)?),
                k if k == dst => self.m.dst_net = Some(self.net(v, f)?),
                "ietf-acldns:src-dnsname" => self.m.src_dnsname = Some(self.dnsname(v)?),
                "ietf-acldns:dst-dnsname" => self.m.dst_dnsname = Some(self.dnsname(v)?),
                other => self.unsupported.push(format!("IP match {other:?}")),
            }
        }
        Ok(())
    }

    fn net(&self, v: &Value, f: Family) -> Result<IpNet, FirewallError> {
        let s = v
            .as_str()
            .ok_or_else(|| self.err("a network is not a string"))?;
        let net: IpNet = s
            .parse()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| self.err(&format!("{s:?} is not a network")))?;
        let ok = matches!(
            (f, net),
            (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_))
        );
        if !ok {
            return Err(self.err(&format!("{s:?} is not of the ACL's address family")));
        }
        Ok(net.trunc())
    }

    fn dnsname(&self, v: &Value) -> Result<String, FirewallError> {
        let s = v
            .as_str()
            .ok_or_else(|| self.err("a DNS name is not a string"))?;
        crate::lists::normalize_domain(s)
            .ok_or_else(|| self.err(&format!("{s:?} is not a DNS name")))
    }

    fn port(&self, v: &Value) -> Result<PortMatch, FirewallError> {
        let o = self.object(v, "a port match")?;
        let num = |k: &str| -> Result<Option<u16>, FirewallError> {
            o.get(k)
                .map(|p| {
                    p.as_u64()
                        .and_then(|p| u16::try_from(p).ok())
                        .ok_or_else(|| self.err(&format!("{k} is not a port number")))
                })
                .transpose()
        };
        if let (Some(lo), Some(hi)) = (num("lower-port")?, num("upper-port")?) {
            if lo > hi {
                return Err(self.err("lower-port is above upper-port"));
            }
            return Ok(PortMatch::Range(lo, hi));
        }
        let port = num("port")?.ok_or_else(|| self.err("a port match has no port"))?;
        // RFC 8519: the operator defaults to `eq`.
        match o
            .get("operator")
            .and_then(Value::as_str)
            .map(unprefixed)
            .unwrap_or("eq")
        {
            "eq" => Ok(PortMatch::Eq(port)),
            "neq" => Ok(PortMatch::Neq(port)),
            "lte" => Ok(PortMatch::Lte(port)),
            "gte" => Ok(PortMatch::Gte(port)),
            other => Err(self.err(&format!("unknown port operator {other:?}"))),
        }
    }

    fn l4(&mut self, m: &Map<String, Value>, tcp: bool) -> Result<(), FirewallError> {
        for (key, v) in m {
            match key.as_str() {
                "source-port" => self.m.src_port = Some(self.port(v)?),
                "destination-port" => self.m.dst_port = Some(self.port(v)?),
                "ietf-mud:direction-initiated" if tcp => {
                    self.m.initiated = Some(match v.as_str() {
                        Some("from-device") => Direction::FromDevice,
                        Some("to-device") => Direction::ToDevice,
                        _ => {
                            return Err(
                                self.err("direction-initiated is not from-device/to-device")
                            );
                        }
                    });
                }
                other => self.unsupported.push(format!(
                    "{} match {other:?}",
                    if tcp { "TCP" } else { "UDP" }
                )),
            }
        }
        Ok(())
    }

    fn icmp(&mut self, m: &Map<String, Value>) -> Result<(), FirewallError> {
        let proto = if self.m.family == Some(Family::V6) {
            58
        } else {
            1
        };
        self.protocol(proto);
        for (key, v) in m {
            let byte = || {
                v.as_u64()
                    .and_then(|x| u8::try_from(x).ok())
                    .ok_or_else(|| self.err(&format!("ICMP {key} is not 0..=255")))
            };
            match key.as_str() {
                "type" => self.m.icmp_type = Some(byte()?),
                "code" => self.m.icmp_code = Some(byte()?),
                other => self.unsupported.push(format!("ICMP match {other:?}")),
            }
        }
        Ok(())
    }

    fn mud(&mut self, m: &Map<String, Value>) {
        for key in m.keys() {
            match key.as_str() {
                "local-networks" => self.m.local_networks = true,
                // These need a MUD manager's knowledge of other devices and controllers.
                other => self.unsupported.push(format!("MUD abstraction {other:?}")),
            }
        }
    }

    /// A contradiction that makes the entry match nothing (or something else than meant).
    fn conflict(&self) -> Option<String> {
        let m = &self.m;
        if m.initiated.is_some() && m.protocol != Some(6) {
            return Some("direction-initiated without TCP".into());
        }
        if (m.src_port.is_some() || m.dst_port.is_some())
            && !matches!(m.protocol, Some(6) | Some(17))
        {
            return Some("ports without TCP or UDP".into());
        }
        None
    }
}

/// Whether `addr` is on the local network, as MUD's `local-networks` means it: private
/// (RFC 1918), unique-local (RFC 4193), link-local unicast, limited broadcast and
/// link-local-scope multicast. The gateway's LAN uses such addresses; the Internet does not.
pub fn is_local(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            a.is_private()
                || a.is_link_local()
                || a.is_broadcast()
                || (a.octets()[0] == 224 && a.octets()[1] == 0 && a.octets()[2] == 0)
        }
        IpAddr::V6(a) => {
            let s = a.segments()[0];
            (s & 0xfe00) == 0xfc00 || (s & 0xffc0) == 0xfe80 || (s & 0xff0f) == 0xff02
        }
    }
}
