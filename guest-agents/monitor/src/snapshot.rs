//! The JSON snapshot (schema in the crate documentation) and the per-remote "SPIN" view.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::flow::{Counter, Flow, Traffic, protocol_name, tcp_flag_names};

/// Version of the snapshot schema; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// Milliseconds since the Unix epoch (0 for earlier times).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Everything the monitor holds, as serialized by [`Monitor::snapshot_json`](crate::Monitor::snapshot_json).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// Flows held, over all devices.
    pub flows_active: usize,
    /// Traffic of devices that are not recorded (not in the config), all of them together.
    pub unrecorded: Traffic,
    /// The recorded devices, in config order.
    pub devices: Vec<DeviceSnapshot>,
}

/// One recorded device in a [`Snapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSnapshot {
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Time of the device's first frame (ms since the epoch), `null` before any.
    pub first_seen_ms: Option<u64>,
    /// Time of the device's latest frame (ms since the epoch), `null` before any.
    pub last_seen_ms: Option<u64>,
    /// Every frame the device sent.
    pub from_device: Counter,
    /// Every frame sent to the device.
    pub to_device: Counter,
    /// Frames that are not IP (ARP, other ethertypes); included in the totals above.
    pub non_ip: Traffic,
    /// Frames that did not parse; included in the totals above.
    pub malformed: Traffic,
    /// Traffic of flows that were expired or evicted (no longer in `flows`).
    pub retired: Traffic,
    /// Flows held for this device.
    pub flows_active: usize,
    /// Flows removed after being idle for the idle timeout.
    pub flows_expired: u64,
    /// Flows removed, least recently active first, to stay within the flow limits.
    pub flows_evicted: u64,
    /// Addresses dropped from the DNS name cache to stay within its limit.
    pub dns_evicted: u64,
    /// State of the device's capture ring.
    pub pcap: PcapStats,
    /// Per-remote aggregation of `flows` (the SPIN-like view).
    pub remotes: Vec<RemoteSummary>,
    /// The device's flows, oldest first.
    pub flows: Vec<FlowSnapshot>,
    /// The device's DNS name cache, by address.
    pub dns: Vec<DnsEntry>,
}

/// The capture ring of a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PcapStats {
    /// Frames held.
    pub packets: usize,
    /// Bytes of frame data held (after snap-length truncation).
    pub bytes: usize,
    /// Frames dropped to make room for newer ones.
    pub evicted: u64,
}

/// One flow in a [`DeviceSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowSnapshot {
    /// IP protocol number.
    pub protocol: u8,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or `ip-N`.
    pub protocol_name: String,
    /// The device's address.
    pub local: IpAddr,
    /// The device's port (0 if none).
    pub local_port: u16,
    /// The remote address.
    pub remote: IpAddr,
    /// The remote port (0 if none).
    pub remote_port: u16,
    /// ICMP type (replies folded onto requests), `null` for other protocols.
    pub icmp_type: Option<u8>,
    /// First packet (ms since the epoch).
    pub first_seen_ms: u64,
    /// Latest packet (ms since the epoch).
    pub last_seen_ms: u64,
    /// Sent by the device.
    pub from_device: Counter,
    /// Sent to the device.
    pub to_device: Counter,
    /// TCP flags seen from the device (`FIN`, `SYN`, `RST`, `PSH`, `ACK`, `URG`).
    pub tcp_flags_from_device: Vec<String>,
    /// TCP flags seen towards the device.
    pub tcp_flags_to_device: Vec<String>,
    /// DNS names of the remote, the name asked for first.
    pub names: Vec<String>,
}

impl From<&Flow> for FlowSnapshot {
    fn from(f: &Flow) -> FlowSnapshot {
        FlowSnapshot {
            protocol: f.key.protocol,
            protocol_name: protocol_name(f.key.protocol),
            local: f.key.local,
            local_port: f.key.local_port,
            remote: f.key.remote,
            remote_port: f.key.remote_port,
            icmp_type: f.key.icmp_type,
            first_seen_ms: unix_ms(f.first_seen),
            last_seen_ms: unix_ms(f.last_seen),
            from_device: f.traffic.from_device,
            to_device: f.traffic.to_device,
            tcp_flags_from_device: tcp_flag_names(f.tcp_flags_from_device),
            tcp_flags_to_device: tcp_flag_names(f.tcp_flags_to_device),
            names: f.names.iter().map(|n| n.to_string()).collect(),
        }
    }
}

/// An address in the DNS name cache of a device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsEntry {
    /// The address the names resolve to.
    pub address: IpAddr,
    /// Its names, most recently asked for first.
    pub names: Vec<DnsNameSnapshot>,
}

/// One name of a [`DnsEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsNameSnapshot {
    /// The name.
    pub name: String,
    /// TTL of the address record, seconds.
    pub ttl: u32,
    /// When the answer was seen (ms since the epoch).
    pub learned_ms: u64,
    /// When the name stops being attributed to new flows (ms since the epoch).
    pub expires_ms: u64,
}

/// Traffic of one device with one remote host, the unit of a SPIN-like view: the flows whose
/// remote has the same primary DNS name (or, without a name, the same address) added up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteSummary {
    /// The remote's primary DNS name (the name asked for) or, if it has none, its address.
    pub remote: String,
    /// Every DNS name of the flows, in order of first appearance.
    pub names: Vec<String>,
    /// The remote addresses, sorted.
    pub addresses: Vec<IpAddr>,
    /// The remote ports used (non-zero), sorted.
    pub remote_ports: Vec<u16>,
    /// Protocols used (`tcp`, `udp`, …), sorted.
    pub protocols: Vec<String>,
    /// Number of flows.
    pub flows: usize,
    /// Earliest first packet of the flows (ms since the epoch).
    pub first_seen_ms: u64,
    /// Latest packet of the flows (ms since the epoch).
    pub last_seen_ms: u64,
    /// Sent by the device.
    pub from_device: Counter,
    /// Sent to the device.
    pub to_device: Counter,
}

/// Aggregate flows per remote; sorted by total bytes (largest first), then by `remote`.
pub(crate) fn spin_view<'a>(flows: impl Iterator<Item = &'a Flow>) -> Vec<RemoteSummary> {
    let mut by_remote: BTreeMap<String, RemoteSummary> = BTreeMap::new();
    for f in flows {
        let label = f.remote_label();
        let r = by_remote
            .entry(label.clone())
            .or_insert_with(|| RemoteSummary {
                remote: label,
                names: Vec::new(),
                addresses: Vec::new(),
                remote_ports: Vec::new(),
                protocols: Vec::new(),
                flows: 0,
                first_seen_ms: u64::MAX,
                last_seen_ms: 0,
                from_device: Counter::default(),
                to_device: Counter::default(),
            });
        r.flows += 1;
        for n in &f.names {
            if !r.names.iter().any(|x| **x == **n) {
                r.names.push(n.to_string());
            }
        }
        r.addresses.push(f.key.remote);
        if f.key.remote_port != 0 {
            r.remote_ports.push(f.key.remote_port);
        }
        r.protocols.push(protocol_name(f.key.protocol));
        r.first_seen_ms = r.first_seen_ms.min(unix_ms(f.first_seen));
        r.last_seen_ms = r.last_seen_ms.max(unix_ms(f.last_seen));
        r.from_device.add(f.traffic.from_device);
        r.to_device.add(f.traffic.to_device);
    }
    let mut out: Vec<RemoteSummary> = by_remote
        .into_values()
        .map(|mut r| {
            r.addresses.sort();
            r.addresses.dedup();
            r.remote_ports.sort_unstable();
            r.remote_ports.dedup();
            r.protocols.sort();
            r.protocols.dedup();
            r
        })
        .collect();
    out.sort_by(|a, b| {
        let total = |r: &RemoteSummary| r.from_device.bytes + r.to_device.bytes;
        total(b)
            .cmp(&total(a))
            .then_with(|| a.remote.cmp(&b.remote))
    });
    out
}
