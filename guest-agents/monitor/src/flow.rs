//! Flow keys, flow records and traffic counters.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use gw_packet::{Direction, Ip, L4};
use serde::{Deserialize, Serialize};

/// Packets and bytes (whole Ethernet frames, without FCS) counted in one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Number of frames.
    pub packets: u64,
    /// Sum of the frames' lengths in bytes.
    pub bytes: u64,
}

impl Counter {
    /// Count one frame of `len` bytes.
    pub fn add_frame(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len as u64;
    }

    /// Add another counter to this one.
    pub fn add(&mut self, other: Counter) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// Traffic in both directions, relative to the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Sent by the device.
    pub from_device: Counter,
    /// Sent to the device.
    pub to_device: Counter,
}

impl Traffic {
    /// The counter of direction `dir`.
    pub fn dir_mut(&mut self, dir: Direction) -> &mut Counter {
        match dir {
            Direction::FromDevice => &mut self.from_device,
            Direction::ToDevice => &mut self.to_device,
        }
    }

    /// Both directions added up.
    pub fn total(&self) -> Counter {
        let mut t = self.from_device;
        t.add(self.to_device);
        t
    }

    /// Add another traffic record to this one, direction by direction.
    pub fn add(&mut self, other: Traffic) {
        self.from_device.add(other.from_device);
        self.to_device.add(other.to_device);
    }
}

/// Identifies a flow of one device, seen from the device's side.
///
/// `local` is the device's address and `remote` the other end's, whichever way the packet
/// travelled, so the two directions of a connection share one key. Ports are 0 for protocols
/// without ports (and for non-first IPv4 fragments, which carry no transport header).
/// `icmp_type` is set for ICMPv4/ICMPv6 only, with replies folded onto their request type
/// (echo reply → echo request, ICMPv4 timestamp/information/address-mask replies → their
/// requests), so a ping and its answers form one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, …).
    pub protocol: u8,
    /// The device's IP address.
    pub local: IpAddr,
    /// The device's port (0 if none).
    pub local_port: u16,
    /// The remote IP address.
    pub remote: IpAddr,
    /// The remote port (0 if none).
    pub remote_port: u16,
    /// ICMP type (requests and replies folded together), for ICMP flows only.
    pub icmp_type: Option<u8>,
}

impl FlowKey {
    /// The key of an IP packet travelling in direction `dir`.
    pub fn of(ip: &Ip, dir: Direction) -> FlowKey {
        let (local, remote) = match dir {
            Direction::FromDevice => (ip.src, ip.dst),
            Direction::ToDevice => (ip.dst, ip.src),
        };
        let (src_port, dst_port) = ip.l4.ports().unwrap_or((0, 0));
        let (local_port, remote_port) = match dir {
            Direction::FromDevice => (src_port, dst_port),
            Direction::ToDevice => (dst_port, src_port),
        };
        let icmp_type = match ip.l4 {
            L4::Icmpv4 { icmp_type, .. } => Some(match icmp_type {
                0 => 8,
                14 => 13,
                16 => 15,
                18 => 17,
                t => t,
            }),
            L4::Icmpv6 { icmp_type, .. } => Some(match icmp_type {
                129 => 128,
                t => t,
            }),
            _ => None,
        };
        FlowKey {
            protocol: ip.l4.protocol(),
            local,
            local_port,
            remote,
            remote_port,
            icmp_type,
        }
    }
}

/// Lower-case name of an IP protocol number as used in the JSON snapshot: `tcp`, `udp`, `icmp`,
/// `icmpv6`, or `ip-N` for any other protocol N.
pub fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        n => format!("ip-{n}"),
    }
}

/// Names of the TCP flag bits set in `flags` (bit layout of [`gw_packet::L4::Tcp`]), in bit
/// order: `FIN`, `SYN`, `RST`, `PSH`, `ACK`, `URG`.
pub fn tcp_flag_names(flags: u8) -> Vec<String> {
    const NAMES: [&str; 6] = ["FIN", "SYN", "RST", "PSH", "ACK", "URG"];
    NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| flags & (1 << bit) != 0)
        .map(|(_, n)| (*n).to_string())
        .collect()
}

/// One flow of one device: what was exchanged with one remote endpoint, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    /// The flow's key.
    pub key: FlowKey,
    /// Time of the first packet.
    pub first_seen: SystemTime,
    /// Time of the latest packet (the latest `at` given, even if timestamps went backwards).
    pub last_seen: SystemTime,
    /// Packets and bytes in each direction.
    pub traffic: Traffic,
    /// TCP flags seen in packets sent by the device (OR of all of them; 0 for non-TCP flows).
    pub tcp_flags_from_device: u8,
    /// TCP flags seen in packets sent to the device (OR of all of them; 0 for non-TCP flows).
    pub tcp_flags_to_device: u8,
    /// DNS names of the remote address learned from DNS answers the device received, the name
    /// the device asked for (head of the CNAME chain) of the most recent answer first. Names
    /// learned after the flow started are appended; the list keeps at most
    /// [`Options::max_names_per_address`](crate::Options::max_names_per_address) names.
    pub names: Vec<Arc<str>>,
}

impl Flow {
    pub(crate) fn new(key: FlowKey, at: SystemTime) -> Flow {
        Flow {
            key,
            first_seen: at,
            last_seen: at,
            traffic: Traffic::default(),
            tcp_flags_from_device: 0,
            tcp_flags_to_device: 0,
            names: Vec::new(),
        }
    }

    pub(crate) fn account(&mut self, ip: &Ip, dir: Direction, len: usize, at: SystemTime) {
        self.traffic.dir_mut(dir).add_frame(len);
        self.last_seen = self.last_seen.max(at);
        self.first_seen = self.first_seen.min(at);
        if let L4::Tcp { flags, .. } = ip.l4 {
            match dir {
                Direction::FromDevice => self.tcp_flags_from_device |= flags,
                Direction::ToDevice => self.tcp_flags_to_device |= flags,
            }
        }
    }

    /// The name this flow's remote is best known by: its first DNS name, else its address.
    pub fn remote_label(&self) -> String {
        match self.names.first() {
            Some(n) => n.to_string(),
            None => self.key.remote.to_string(),
        }
    }
}
