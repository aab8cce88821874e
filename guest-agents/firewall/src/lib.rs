//! Gatewarden firewall middlebox: a stateful firewall for one IoT device, enforcing the
//! device's MUD profile (RFC 8520) and the operator's block and allow lists.
//!
//! A new flow is decided once, by its first packet, in this order:
//!
//! 1. **block list** (addresses, networks, domains): dropped;
//! 2. **infrastructure** the device needs to join a network: DHCP, DHCPv6, IPv6 neighbour
//!    discovery and MLD, and DNS queries (their answers teach the firewall names): passed;
//! 3. **allow list**: passed;
//! 4. the **MUD profile**: the `from-device` entries for a packet the device sends, the
//!    `to-device` entries for one sent to it, first match wins; no match is a drop. A device
//!    without a profile has only its lists applied.
//!
//! A passed flow is tracked (TCP handshake and close, UDP and ICMP by timeout), so the
//! answers to what the device may open pass and nothing else does; ICMP errors about a
//! tracked peer pass too. TCP flows open with a SYN: a mid-stream segment of an untracked
//! connection is dropped unless its decision cannot depend on who opened it (lists, no
//! profile). Domain names in the profile and lists match the names the device was told in
//! DNS answers it received through this firewall, for the answer's TTL (at least
//! [`Options::dns`]' `min_retention`); when a name expires, new flows to its address need a
//! fresh answer. A new policy re-decides every tracked flow and cuts those it no longer allows.
//!
//! ```
//! use std::time::Instant;
//! use gw_firewall::{DeviceEntry, DevicePolicy, Firewall, Options, Decision};
//! use gw_packet::{build, parse, Direction};
//!
//! let entry: DeviceEntry = serde_json::from_str(r#"{"block": ["203.0.113.0/24"]}"#)?;
//! let mut fw = Firewall::new(Some(DevicePolicy::from_entry(&entry)?), Options::default());
//! let e = build::Endpoints {
//!     src_mac: [2, 0, 0, 0, 0, 1], dst_mac: [2, 0, 0, 0, 0, 2],
//!     src: "192.168.1.10".parse()?, dst: "203.0.113.5".parse()?,
//! };
//! let syn = build::tcp(&e, 40000, 443, build::TcpKind::Syn, 1, b"");
//! let d = fw.inspect(Direction::FromDevice, &parse(&syn)?, &syn, Instant::now());
//! assert!(matches!(d, Decision::Drop(_)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]

pub mod lists;
pub mod mud;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use gw_packet::dns::{CacheLimits, DnsCache};
use gw_packet::{Direction, Ip, L4, Mac, Network, Parsed};
use serde::{Deserialize, Serialize};

pub use lists::DestList;
pub use mud::{Ace, Action, Finding, MudProfile, PortMatch};

/// Firewall configuration errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FirewallError {
    /// The config is not the expected JSON.
    #[error("firewall config: {0}")]
    Json(String),
    /// A device key is not a MAC address.
    #[error("firewall config: {0:?} is not a MAC address")]
    Mac(String),
    /// The MUD file is structurally broken.
    #[error("MUD file: {0}")]
    Mud(String),
    /// A block/allow entry is not an address, network or domain name.
    #[error("{0:?} is not an IP address, CIDR network or domain name")]
    Destination(String),
}

/// One device's entry of the firewall config (`{"devices": {MAC: entry}}`), as the controller
/// compiles it.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
pub struct DeviceEntry {
    /// The device's MUD file, if the operator gave one.
    #[serde(default)]
    pub mud: Option<serde_json::Value>,
    /// Destinations always blocked.
    #[serde(default)]
    pub block: Vec<String>,
    /// Destinations always allowed.
    #[serde(default)]
    pub allow: Vec<String>,
}

/// One device's compiled rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DevicePolicy {
    /// The MUD profile; `None` applies only the lists.
    pub mud: Option<MudProfile>,
    /// Block list.
    pub block: DestList,
    /// Allow list.
    pub allow: DestList,
}

impl DevicePolicy {
    /// Compile a config entry.
    pub fn from_entry(entry: &DeviceEntry) -> Result<DevicePolicy, FirewallError> {
        Ok(DevicePolicy {
            mud: entry.mud.as_ref().map(MudProfile::parse).transpose()?,
            block: DestList::parse(&entry.block)?,
            allow: DestList::parse(&entry.allow)?,
        })
    }

    /// A policy that lets only infrastructure traffic through: what a device gets when its
    /// entry cannot be used.
    pub fn deny_all() -> DevicePolicy {
        DevicePolicy {
            mud: Some(MudProfile {
                url: "(deny all)".into(),
                ..MudProfile::default()
            }),
            ..DevicePolicy::default()
        }
    }

    /// What the profile could not enforce as written.
    pub fn findings(&self) -> &[Finding] {
        self.mud.as_ref().map_or(&[], |m| &m.findings)
    }
}

/// The entry of `device` in a firewall config, `None` when the config has none.
pub fn device_entry(config: &str, device: &Mac) -> Result<Option<DeviceEntry>, FirewallError> {
    #[derive(Deserialize)]
    struct File {
        devices: BTreeMap<String, DeviceEntry>,
    }
    let file: File =
        serde_json::from_str(config).map_err(|e| FirewallError::Json(e.to_string()))?;
    let mut found = None;
    for (key, entry) in file.devices {
        let mac = gw_packet::parse_mac(&key).ok_or_else(|| FirewallError::Mac(key.clone()))?;
        if &mac == device {
            found = Some(entry);
        }
    }
    Ok(found)
}

/// Limits and timeouts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Tracked flows at most; a new flow beyond this is dropped.
    pub max_flows: usize,
    /// TCP flow until the responder answers.
    pub tcp_opening: Duration,
    /// Idle TCP flow.
    pub tcp_established: Duration,
    /// TCP flow after a RST or a FIN each way.
    pub tcp_closing: Duration,
    /// Idle UDP flow.
    pub udp: Duration,
    /// Idle ICMP and other-protocol flow.
    pub other: Duration,
    /// DNS name cache.
    pub dns: CacheLimits,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_flows: 16_384,
            tcp_opening: Duration::from_secs(30),
            tcp_established: Duration::from_secs(3_600),
            tcp_closing: Duration::from_secs(10),
            udp: Duration::from_secs(120),
            other: Duration::from_secs(60),
            dns: CacheLimits {
                max_addresses: 4_096,
                max_names: 8,
                min_retention: Duration::from_secs(30),
            },
        }
    }
}

/// Why a packet passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassReason {
    /// Part of a tracked flow.
    Tracked,
    /// ICMP error about a tracked peer.
    Related,
    /// ARP (the vSwitch checks it against what it learned).
    Arp,
    /// DHCP, neighbour discovery, DNS.
    Infrastructure,
    /// On the allow list.
    AllowList,
    /// Accepted by this MUD entry (`acl/ace`).
    Mud(String),
    /// The device has no MUD profile.
    NoProfile,
}

/// Why a packet was dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// The remote end is on the block list.
    BlockList,
    /// Dropped by this MUD entry (`acl/ace`).
    MudDrop(String),
    /// No MUD entry accepts it.
    MudNoMatch,
    /// A TCP segment of a connection the firewall did not see open.
    NoConnection,
    /// The flow table is full.
    TableFull,
    /// Neither IP nor ARP.
    NotIp(u16),
}

/// The firewall's decision on one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send it on.
    Pass(PassReason),
    /// Drop it.
    Drop(DropReason),
}

impl PassReason {
    /// Counter name.
    pub fn key(&self) -> &'static str {
        match self {
            PassReason::Tracked => "tracked",
            PassReason::Related => "related",
            PassReason::Arp => "arp",
            PassReason::Infrastructure => "infrastructure",
            PassReason::AllowList => "allow_list",
            PassReason::Mud(_) => "mud",
            PassReason::NoProfile => "no_profile",
        }
    }
}

impl DropReason {
    /// Counter name.
    pub fn key(&self) -> &'static str {
        match self {
            DropReason::BlockList => "block_list",
            DropReason::MudDrop(_) => "mud_drop_entry",
            DropReason::MudNoMatch => "mud_no_match",
            DropReason::NoConnection => "no_connection",
            DropReason::TableFull => "table_full",
            DropReason::NotIp(_) => "not_ip",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::BlockList => f.write_str("destination on the block list"),
            DropReason::MudDrop(ace) => write!(f, "dropped by MUD entry {ace}"),
            DropReason::MudNoMatch => f.write_str("no MUD entry allows it"),
            DropReason::NoConnection => f.write_str("TCP segment of an untracked connection"),
            DropReason::TableFull => f.write_str("flow table full"),
            DropReason::NotIp(t) => write!(f, "ethertype {t:#06x} is not IP"),
        }
    }
}

/// A flow, seen from the device: the same key for both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    proto: u8,
    local: IpAddr,
    local_port: u16,
    remote: IpAddr,
    remote_port: u16,
}

/// What the firewall decides on: one packet's addresses, ports and direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tuple {
    dir: Direction,
    src: IpAddr,
    dst: IpAddr,
    l4: L4,
}

impl Tuple {
    fn new(dir: Direction, ip: &Ip) -> Tuple {
        Tuple {
            dir,
            src: ip.src,
            dst: ip.dst,
            l4: ip.l4,
        }
    }

    fn remote(&self) -> IpAddr {
        match self.dir {
            Direction::FromDevice => self.dst,
            Direction::ToDevice => self.src,
        }
    }

    fn local(&self) -> IpAddr {
        match self.dir {
            Direction::FromDevice => self.src,
            Direction::ToDevice => self.dst,
        }
    }

    fn key(&self) -> FlowKey {
        let (sp, dp) = self.l4.ports().unwrap_or((0, 0));
        let (local_port, remote_port) = match self.dir {
            Direction::FromDevice => (sp, dp),
            Direction::ToDevice => (dp, sp),
        };
        FlowKey {
            proto: self.l4.protocol(),
            local: self.local(),
            local_port,
            remote: self.remote(),
            remote_port,
        }
    }

    fn icmp(&self) -> Option<(u8, u8)> {
        match self.l4 {
            L4::Icmpv4 { icmp_type, code } | L4::Icmpv6 { icmp_type, code } => {
                Some((icmp_type, code))
            }
            _ => None,
        }
    }

    /// An ICMP error message (destination unreachable, time exceeded, …, packet too big).
    fn is_icmp_error(&self) -> bool {
        match self.l4 {
            L4::Icmpv4 { icmp_type, .. } => matches!(icmp_type, 3 | 4 | 5 | 11 | 12),
            L4::Icmpv6 { icmp_type, .. } => (1..=4).contains(&icmp_type),
            _ => false,
        }
    }

    /// Traffic a device needs to join the network, allowed whatever its profile says.
    fn is_infrastructure(&self) -> bool {
        match (self.dir, self.l4) {
            // DHCPv4 and DHCPv6, both ways (offers come from the server's port to the client's).
            (
                Direction::FromDevice,
                L4::Udp {
                    src_port: 68,
                    dst_port: 67,
                },
            )
            | (
                Direction::ToDevice,
                L4::Udp {
                    src_port: 67,
                    dst_port: 68,
                },
            )
            | (
                Direction::FromDevice,
                L4::Udp {
                    src_port: 546,
                    dst_port: 547,
                },
            )
            | (
                Direction::ToDevice,
                L4::Udp {
                    src_port: 547,
                    dst_port: 546,
                },
            ) => true,
            // Neighbour discovery (RS, RA, NS, NA, redirect) and MLD.
            (_, L4::Icmpv6 { icmp_type, .. }) => matches!(icmp_type, 130..=137 | 143),
            // DNS queries; their answers are tracked.
            (Direction::FromDevice, L4::Udp { dst_port: 53, .. })
            | (Direction::FromDevice, L4::Tcp { dst_port: 53, .. }) => true,
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpState {
    /// SYN seen, no answer yet.
    Opening,
    Established {
        fin_from_device: bool,
        fin_to_device: bool,
    },
    Closing,
}

#[derive(Debug, Clone)]
struct Flow {
    /// The packet that opened it (re-decided when the policy changes).
    first: Tuple,
    tcp: Option<TcpState>,
    expires: Instant,
}

/// Counters, written to the middlebox's stats file.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Packets passed, by reason.
    pub passed: BTreeMap<&'static str, u64>,
    /// Packets dropped, by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Flows tracked now.
    pub flows_active: usize,
    /// Flows opened.
    pub flows_opened: u64,
    /// Flows that timed out or closed.
    pub flows_expired: u64,
    /// Flows cut because a new policy no longer allows them.
    pub flows_revoked: u64,
    /// Addresses with DNS names known now.
    pub dns_addresses: usize,
    /// Address records learned from DNS answers.
    pub dns_records_learned: u64,
    /// The MUD profile's URL, if any.
    pub profile: Option<String>,
    /// What the profile could not enforce as written.
    pub findings: Vec<String>,
}

/// The firewall of one device.
pub struct Firewall {
    policy: Option<DevicePolicy>,
    options: Options,
    flows: HashMap<FlowKey, Flow>,
    /// Tracked flows per (local, remote) address pair, for ICMP errors.
    peers: HashMap<(IpAddr, IpAddr), u32>,
    dns: DnsCache,
    /// Instants map to wall-clock time for the DNS cache from this pair on.
    clock: (Instant, SystemTime),
    /// The latest instant seen (re-deciding flows on a policy change happens "now").
    last_seen: Instant,
    stats: Stats,
}

impl Firewall {
    /// A firewall for one device; `None` is the policy of a device the controller has none
    /// for (everything passes, tracked).
    pub fn new(policy: Option<DevicePolicy>, options: Options) -> Firewall {
        let mut fw = Firewall {
            policy: None,
            options,
            flows: HashMap::new(),
            peers: HashMap::new(),
            dns: DnsCache::default(),
            clock: (Instant::now(), SystemTime::now()),
            last_seen: Instant::now(),
            stats: Stats::default(),
        };
        fw.set_policy(policy);
        fw
    }

    /// Apply a new policy. Tracked flows the new policy would not open are cut.
    pub fn set_policy(&mut self, policy: Option<DevicePolicy>) {
        self.stats.profile = policy
            .as_ref()
            .and_then(|p| p.mud.as_ref())
            .map(|m| m.url.clone());
        self.stats.findings = policy
            .as_ref()
            .map(|p| p.findings().iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        self.policy = policy;
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        for k in keys {
            let first = self.flows[&k].first;
            let keep = match self.decide(&first, self.last_seen) {
                Decision::Pass(_) => true,
                Decision::Drop(DropReason::BlockList) => false,
                Decision::Drop(_) => first.is_infrastructure(),
            };
            if !keep {
                self.remove(&k);
                self.stats.flows_revoked += 1;
            }
        }
    }

    /// Decide about one packet of the device travelling in `dir`.
    pub fn inspect(
        &mut self,
        dir: Direction,
        parsed: &Parsed,
        frame: &[u8],
        now: Instant,
    ) -> Decision {
        self.last_seen = self.last_seen.max(now);
        let d = match &parsed.network {
            Network::Arp(_) => Decision::Pass(PassReason::Arp),
            Network::Other(t) => Decision::Drop(DropReason::NotIp(*t)),
            Network::Ip(ip) => {
                let t = Tuple::new(dir, ip);
                let d = self.inspect_ip(&t, now);
                if matches!(d, Decision::Pass(_)) && dir == Direction::ToDevice {
                    self.learn_dns(&t, parsed.payload(frame), now);
                }
                d
            }
        };
        match &d {
            Decision::Pass(r) => *self.stats.passed.entry(r.key()).or_default() += 1,
            Decision::Drop(r) => *self.stats.dropped.entry(r.key()).or_default() += 1,
        }
        d
    }

    fn inspect_ip(&mut self, t: &Tuple, now: Instant) -> Decision {
        let key = t.key();
        let options = &self.options;
        if let Some(flow) = self.flows.get_mut(&key) {
            if flow.expires > now {
                let (state, timeout) = match (flow.tcp, t.l4) {
                    (Some(s), L4::Tcp { flags, .. }) => {
                        let s = tcp_next(s, flow.first.dir, t.dir, flags);
                        let timeout = match s {
                            TcpState::Opening => options.tcp_opening,
                            TcpState::Established { .. } => options.tcp_established,
                            TcpState::Closing => options.tcp_closing,
                        };
                        (Some(s), timeout)
                    }
                    (s, L4::Udp { .. }) => (s, options.udp),
                    (s, _) => (s, options.other),
                };
                flow.tcp = state;
                // A closing flow does not get its time extended by stray segments.
                if !(state == Some(TcpState::Closing) && flow.expires < now + timeout) {
                    flow.expires = now + timeout;
                }
                return Decision::Pass(PassReason::Tracked);
            }
            self.remove(&key);
            self.stats.flows_expired += 1;
        }
        if t.is_icmp_error() && self.peers.contains_key(&(t.local(), t.remote())) {
            return Decision::Pass(PassReason::Related);
        }
        let decision = if t.is_infrastructure() {
            // Block list first: an operator may block a DNS server.
            match self.decide(t, now) {
                Decision::Drop(DropReason::BlockList) => Decision::Drop(DropReason::BlockList),
                _ => Decision::Pass(PassReason::Infrastructure),
            }
        } else {
            self.decide(t, now)
        };
        let Decision::Pass(reason) = decision else {
            return decision;
        };
        let tcp = match t.l4 {
            L4::Tcp { flags, .. } => {
                let syn_only = flags & 0x12 == 0x02;
                if syn_only {
                    Some(TcpState::Opening)
                } else if matches!(reason, PassReason::Mud(_)) {
                    // Who opened it decides MUD's direction-initiated: unknown here.
                    return Decision::Drop(DropReason::NoConnection);
                } else if flags & 0x04 != 0 {
                    // A RST for a connection not tracked: pass, nothing to track.
                    return Decision::Pass(reason);
                } else {
                    Some(TcpState::Established {
                        fin_from_device: false,
                        fin_to_device: false,
                    })
                }
            }
            _ => None,
        };
        if self.flows.len() >= self.options.max_flows {
            return Decision::Drop(DropReason::TableFull);
        }
        let timeout = match (tcp, t.l4) {
            (Some(TcpState::Opening), _) => self.options.tcp_opening,
            (Some(_), _) => self.options.tcp_established,
            (None, L4::Udp { .. }) => self.options.udp,
            (None, _) => self.options.other,
        };
        self.flows.insert(
            key,
            Flow {
                first: *t,
                tcp,
                expires: now + timeout,
            },
        );
        *self.peers.entry((key.local, key.remote)).or_default() += 1;
        self.stats.flows_opened += 1;
        Decision::Pass(reason)
    }

    /// The decision for a packet opening a new flow (lists, profile), without tracking.
    fn decide(&self, t: &Tuple, now: Instant) -> Decision {
        let Some(policy) = &self.policy else {
            return Decision::Pass(PassReason::NoProfile);
        };
        let at = self.wall(now);
        let remote = t.remote();
        let names: Vec<std::sync::Arc<str>> = self
            .dns
            .lookup(&remote, at)
            .map(|n| n.name.clone())
            .collect();
        let name_strs = || names.iter().map(|n| &**n);
        if policy.block.contains(remote, name_strs()) {
            return Decision::Drop(DropReason::BlockList);
        }
        if policy.allow.contains(remote, name_strs()) {
            return Decision::Pass(PassReason::AllowList);
        }
        let Some(mud) = &policy.mud else {
            return Decision::Pass(PassReason::NoProfile);
        };
        for ace in mud.aces(t.dir) {
            if self.ace_matches(&ace.matches, t, &names) {
                let id = format!("{}/{}", ace.acl, ace.name);
                return match ace.action {
                    Action::Accept => Decision::Pass(PassReason::Mud(id)),
                    Action::Drop => Decision::Drop(DropReason::MudDrop(id)),
                };
            }
        }
        Decision::Drop(DropReason::MudNoMatch)
    }

    fn ace_matches(
        &self,
        m: &mud::Matches,
        t: &Tuple,
        remote_names: &[std::sync::Arc<str>],
    ) -> bool {
        let family_ok = match m.family {
            None => true,
            Some(mud::Family::V4) => t.src.is_ipv4(),
            Some(mud::Family::V6) => t.src.is_ipv6(),
        };
        let names_of = |addr: IpAddr| -> &[std::sync::Arc<str>] {
            if addr == t.remote() {
                remote_names
            } else {
                &[]
            }
        };
        let dns_ok = |want: &Option<String>, addr: IpAddr| {
            want.as_ref()
                .is_none_or(|w| names_of(addr).iter().any(|n| **n == **w))
        };
        let (sp, dp) = t.l4.ports().unwrap_or((0, 0));
        let port_ok = |want: &Option<PortMatch>, p: u16| want.is_none_or(|w| w.matches(p));
        let icmp = t.icmp();
        family_ok
            && m.protocol.is_none_or(|p| p == t.l4.protocol())
            && m.src_net.is_none_or(|n| n.contains(&t.src))
            && m.dst_net.is_none_or(|n| n.contains(&t.dst))
            && dns_ok(&m.src_dnsname, t.src)
            && dns_ok(&m.dst_dnsname, t.dst)
            && port_ok(&m.src_port, sp)
            && port_ok(&m.dst_port, dp)
            && m.initiated.is_none_or(|d| d == t.dir)
            && m.icmp_type
                .is_none_or(|ty| icmp.is_some_and(|(it, _)| it == ty))
            && m.icmp_code
                .is_none_or(|c| icmp.is_some_and(|(_, ic)| ic == c))
            && (!m.local_networks || mud::is_local(t.remote()))
    }

    fn learn_dns(&mut self, t: &Tuple, payload: &[u8], now: Instant) {
        let messages = gw_packet::dns::server_messages(&t.l4, payload);
        if messages.is_empty() {
            return;
        }
        let at = self.wall(now);
        for msg in messages {
            for learned in gw_packet::dns::learn_from_message(msg) {
                self.dns.learn(&learned, at, &self.options.dns);
                self.stats.dns_records_learned += 1;
            }
        }
    }

    fn wall(&self, now: Instant) -> SystemTime {
        self.clock.1 + now.saturating_duration_since(self.clock.0)
    }

    fn remove(&mut self, key: &FlowKey) {
        if self.flows.remove(key).is_some() {
            let pair = (key.local, key.remote);
            if let Some(n) = self.peers.get_mut(&pair) {
                *n -= 1;
                if *n == 0 {
                    self.peers.remove(&pair);
                }
            }
        }
    }

    /// Forget flows idle past their timeout and expired DNS names.
    pub fn expire(&mut self, now: Instant) {
        self.last_seen = self.last_seen.max(now);
        let dead: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| f.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in dead {
            self.remove(&k);
            self.stats.flows_expired += 1;
        }
        let at = self.wall(now);
        self.dns.purge(at);
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.flows_active = self.flows.len();
        s.dns_addresses = self.dns.len();
        s
    }
}

/// TCP state after a segment with `flags` travelling in `dir` of a flow opened in `opened`.
fn tcp_next(s: TcpState, opened: Direction, dir: Direction, flags: u8) -> TcpState {
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;
    if flags & RST != 0 {
        return TcpState::Closing;
    }
    let s = match s {
        TcpState::Opening if dir != opened => TcpState::Established {
            fin_from_device: false,
            fin_to_device: false,
        },
        other => other,
    };
    match s {
        TcpState::Established {
            mut fin_from_device,
            mut fin_to_device,
        } if flags & FIN != 0 => {
            match dir {
                Direction::FromDevice => fin_from_device = true,
                Direction::ToDevice => fin_to_device = true,
            }
            if fin_from_device && fin_to_device {
                TcpState::Closing
            } else {
                TcpState::Established {
                    fin_from_device,
                    fin_to_device,
                }
            }
        }
        other => other,
    }
}
