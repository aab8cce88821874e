//! Gatewarden monitor middlebox (library): per-device flow records, DNS name attribution and
//! packet capture.
//!
//! The vSwitch hands the monitor every frame of every IoT device, with the device it belongs to
//! and its [`Direction`]. For each device listed in the controller's config the monitor keeps:
//!
//! * **flow records** ([`Flow`]): one per (protocol, device address and port, remote address and
//!   port, ICMP type), with first/last seen, packets and bytes in each direction, the TCP flags
//!   seen each way, and the remote's DNS names;
//! * a **DNS name cache**: the A/AAAA records of the DNS answers the device *received* (UDP or
//!   TCP from port 53), with the CNAME chain that led to each address and its TTL. A flow takes
//!   the names its remote address had when the flow started (the name the device asked for
//!   first), and any learned later;
//! * a **capture ring** of the device's raw Ethernet frames, exported as a classic pcap file
//!   that tcpdump and Wireshark read ([`Monitor::write_pcap`]).
//!
//! From these it builds a SPIN-like view ([`Monitor::spin_view`]: per device, which remote
//! hosts, by name or address, it talks to, how much and when) and a JSON snapshot
//! ([`Monitor::snapshot_json`]) whose schema is below.
//!
//! # Config
//!
//! The controller's config is JSON, exactly `{"devices": ["aa:bb:cc:dd:ee:ff", …]}` (unknown
//! fields are rejected): the MACs of the devices to record (`:` or `-` separated, any case;
//! unicast and non-zero, each listed once). Frames of any other device are counted, all such devices
//! together, in [`Monitor::unrecorded`] and the snapshot's `unrecorded`, but get no flows, no
//! DNS cache and no capture.
//!
//! # Bounded memory
//!
//! Everything is bounded by [`Options`]: flows per device and in total (when full, the least
//! recently active flow, of that device or overall, is evicted and counted in
//! `flows_evicted`), flows idle for [`Options::flow_idle_timeout`] are expired (counted in
//! `flows_expired`; a later packet starts a new flow), DNS cache addresses per device and names
//! per address, and each device's capture ring by frames and bytes (oldest frames dropped
//! first). The traffic of expired and evicted flows stays in the device totals and in
//! `retired`, so for every device `from_device + to_device = Σ flows + retired + non_ip +
//! malformed`, and over all devices plus `unrecorded` the bytes add up to the lengths of all
//! frames observed. Expiry runs on every observed frame of a recorded device and on
//! [`Monitor::expire`]; it removes flows in order of last activity, so with timestamps that go
//! backwards a flow may outlive its timeout until the flows touched before it expire.
//!
//! Byte counts are whole Ethernet frames as given to [`Monitor::observe`] (headers included,
//! no FCS). Times are the caller's `at`.
//!
//! # What is not seen
//!
//! Names come only from plain DNS answers the device received on port 53 (UDP, or a TCP segment
//! holding whole length-prefixed messages); names resolved over DoH/DoT, mDNS or hard-coded
//! addresses are not known, and such flows are shown by address. Non-first IPv4 fragments have
//! no ports and form their own flow (ports 0). Frames that do not parse, and non-IP frames, are
//! counted per device (`malformed`, `non_ip`) and captured, but make no flow.
//!
//! # JSON snapshot schema (version 1)
//!
//! [`Monitor::snapshot_json`] serializes a [`Snapshot`]. Times are integer milliseconds since
//! the Unix epoch; a counter is `{"packets": N, "bytes": N}`; a traffic pair is
//! `{"from_device": counter, "to_device": counter}`; addresses are strings. Every field is
//! always present (`null` where noted). Devices are in config order, `remotes` by total bytes
//! (largest first, then by `remote`), `flows` oldest first (then by key), `dns` by address.
//!
//! ```json
//! {
//!   "schema_version": 1,
//!   "flows_active": 1,
//!   "unrecorded": {"from_device": {"packets": 0, "bytes": 0}, "to_device": {"packets": 0, "bytes": 0}},
//!   "devices": [{
//!     "mac": "02:00:00:00:00:01",
//!     "first_seen_ms": 1700000000000,           // null before the first frame
//!     "last_seen_ms": 1700000001000,            // null before the first frame
//!     "from_device": {"packets": 2, "bytes": 140},
//!     "to_device": {"packets": 1, "bytes": 120},
//!     "non_ip": {"from_device": {…}, "to_device": {…}},
//!     "malformed": {"from_device": {…}, "to_device": {…}},
//!     "retired": {"from_device": {…}, "to_device": {…}},   // traffic of expired/evicted flows
//!     "flows_active": 1, "flows_expired": 0, "flows_evicted": 0, "dns_evicted": 0,
//!     "pcap": {"packets": 3, "bytes": 260, "evicted": 0},
//!     "remotes": [{                              // the SPIN-like view
//!       "remote": "www.example.com",             // primary DNS name, else the address
//!       "names": ["www.example.com", "edge.cdn.example.net"],
//!       "addresses": ["93.184.216.34"],
//!       "remote_ports": [443],
//!       "protocols": ["tcp"],
//!       "flows": 1,
//!       "first_seen_ms": 1700000000500, "last_seen_ms": 1700000001000,
//!       "from_device": {"packets": 1, "bytes": 66}, "to_device": {"packets": 0, "bytes": 0}
//!     }],
//!     "flows": [{
//!       "protocol": 6, "protocol_name": "tcp",   // tcp, udp, icmp, icmpv6 or ip-N
//!       "local": "192.168.1.10", "local_port": 40000,
//!       "remote": "93.184.216.34", "remote_port": 443,
//!       "icmp_type": null,                       // ICMP type for icmp/icmpv6 flows
//!       "first_seen_ms": 1700000000500, "last_seen_ms": 1700000001000,
//!       "from_device": {"packets": 1, "bytes": 66}, "to_device": {"packets": 0, "bytes": 0},
//!       "tcp_flags_from_device": ["SYN"],        // of FIN SYN RST PSH ACK URG
//!       "tcp_flags_to_device": [],
//!       "names": ["www.example.com", "edge.cdn.example.net"]
//!     }],
//!     "dns": [{
//!       "address": "93.184.216.34",
//!       "names": [{"name": "www.example.com", "ttl": 60,
//!                  "learned_ms": 1700000000400, "expires_ms": 1700000300400}]
//!     }]
//!   }]
//! }
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::{Duration, SystemTime};
//! use gw_monitor::{Monitor, Options};
//! use gw_packet::{Direction, build};
//!
//! let mut m = Monitor::from_config(r#"{"devices": ["02:00:00:00:00:01"]}"#, Options::default())?;
//! let dev = [2, 0, 0, 0, 0, 1];
//! let ends = build::Endpoints {
//!     src_mac: dev,
//!     dst_mac: [2, 0, 0, 0, 0, 0xfe],
//!     src: "192.168.1.10".parse().unwrap(),
//!     dst: "93.184.216.34".parse().unwrap(),
//! };
//! let frame = build::tcp(&ends, 40000, 443, build::TcpKind::Syn, 1, b"");
//! let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! m.observe(&dev, Direction::FromDevice, &gw_packet::parse(&frame).unwrap(), &frame, at);
//! assert_eq!(m.flows(&dev).count(), 1);
//! assert_eq!(m.snapshot_json()["devices"][0]["flows"][0]["remote_port"], 443);
//! let mut pcap = Vec::new();
//! assert_eq!(m.write_pcap(&dev, &mut pcap)?, 1);
//! # Ok::<(), gw_monitor::MonitorError>(())
//! ```

#![forbid(unsafe_code)]

mod config;
mod flow;
mod pcap;
mod snapshot;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use gw_packet::dns;
use gw_packet::{Direction, Ip, Mac, Network, Parsed, mac_string};

pub use flow::{Counter, Flow, FlowKey, Traffic, protocol_name, tcp_flag_names};
pub use gw_packet::dns::DnsName;
pub use pcap::Captured;
pub use snapshot::{
    DeviceSnapshot, DnsEntry, DnsNameSnapshot, FlowSnapshot, PcapStats, RemoteSummary,
    SCHEMA_VERSION, Snapshot, unix_ms,
};

/// Why the monitor could not be set up, or a capture not exported.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// The config is not the expected JSON (syntax, missing or unknown fields, wrong types).
    #[error("monitor config: {0}")]
    Config(#[source] serde_json::Error),
    /// A device entry is not a MAC address.
    #[error("monitor config: device {index} ({value:?}) is not a MAC address")]
    InvalidMac {
        /// Position in the `devices` list.
        index: usize,
        /// The entry as given.
        value: String,
    },
    /// A device entry is a group (multicast or broadcast) or all-zero address, which no
    /// device has.
    #[error("monitor config: device {0} is not a unicast address")]
    NotDeviceMac(String),
    /// A device is listed more than once.
    #[error("monitor config: device {0} is listed twice")]
    DuplicateDevice(String),
    /// An [`Options`] value is out of range.
    #[error("monitor option {name}: {reason}")]
    InvalidOption {
        /// The field of [`Options`].
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The device is not recorded (not in the config).
    #[error("device {0} is not recorded by the monitor")]
    UnknownDevice(String),
    /// Writing the capture failed.
    #[error("writing pcap: {0}")]
    Io(#[source] std::io::Error),
    /// The pcap encoder refused a record.
    #[error("encoding pcap: {0}")]
    Pcap(#[source] pcap_file::PcapError),
}

/// Limits and timeouts of a [`Monitor`]. `Options::default()` suits a home gateway with tens
/// of devices: with it the monitor holds at most about 65 536 flows (a few hundred bytes
/// each), 4 096 cached addresses per device, and 4 MiB of captured frames per device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Flows kept per device (≥ 1); when full, the device's least recently active flow is
    /// evicted. Default 4096.
    pub max_flows_per_device: usize,
    /// Flows kept over all devices (≥ 1); when full, the least recently active flow of any
    /// device is evicted. Default 65 536.
    pub max_flows_total: usize,
    /// A flow without packets for this long is expired (> 0). Default 300 s.
    pub flow_idle_timeout: Duration,
    /// Addresses in each device's DNS name cache (0 disables name learning); when full, expired
    /// names are dropped, then the address whose names expire first. Default 4096.
    pub max_dns_addresses_per_device: usize,
    /// Names kept per address in the cache, and per flow (≥ 1). Default 8.
    pub max_names_per_address: usize,
    /// A learned name is kept at least this long even if its TTL is shorter (devices often
    /// connect well after a short TTL ran out). Default 300 s.
    pub min_name_retention: Duration,
    /// Frames in each device's capture ring (0 disables capture). Default 10 000.
    pub pcap_max_packets_per_device: usize,
    /// Bytes of frame data in each device's capture ring (0 disables capture). Default 4 MiB.
    pub pcap_max_bytes_per_device: usize,
    /// Frames are captured up to this many bytes (1 ..= 262 144, the pcap snap length).
    /// Default 65 535.
    pub pcap_snaplen: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            max_flows_per_device: 4096,
            max_flows_total: 65_536,
            flow_idle_timeout: Duration::from_secs(300),
            max_dns_addresses_per_device: 4096,
            max_names_per_address: 8,
            min_name_retention: Duration::from_secs(300),
            pcap_max_packets_per_device: 10_000,
            pcap_max_bytes_per_device: 4 << 20,
            pcap_snaplen: 65_535,
        }
    }
}

impl Options {
    fn validate(&self) -> Result<(), MonitorError> {
        let bad = |name, reason| Err(MonitorError::InvalidOption { name, reason });
        if self.max_flows_per_device == 0 {
            return bad("max_flows_per_device", "must be at least 1");
        }
        if self.max_flows_total == 0 {
            return bad("max_flows_total", "must be at least 1");
        }
        if self.flow_idle_timeout.is_zero() {
            return bad("flow_idle_timeout", "must be positive");
        }
        if self.max_names_per_address == 0 {
            return bad("max_names_per_address", "must be at least 1");
        }
        if !(1..=262_144).contains(&self.pcap_snaplen) {
            return bad("pcap_snaplen", "must be 1 ..= 262144");
        }
        Ok(())
    }

    fn ring_limits(&self) -> pcap::RingLimits {
        pcap::RingLimits {
            max_packets: self.pcap_max_packets_per_device,
            max_bytes: self.pcap_max_bytes_per_device,
            snaplen: self.pcap_snaplen,
        }
    }

    fn cache_limits(&self) -> dns::CacheLimits {
        dns::CacheLimits {
            max_addresses: self.max_dns_addresses_per_device,
            max_names: self.max_names_per_address,
            min_retention: self.min_name_retention,
        }
    }
}

/// Counters of one recorded device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Every frame of the device, each way.
    pub traffic: Traffic,
    /// Frames that are not IP (included in `traffic`).
    pub non_ip: Traffic,
    /// Frames that did not parse (included in `traffic`).
    pub malformed: Traffic,
    /// Traffic of flows since expired or evicted (included in `traffic`).
    pub retired: Traffic,
    /// Flows expired after being idle.
    pub flows_expired: u64,
    /// Flows evicted to stay within the flow limits.
    pub flows_evicted: u64,
    /// Time of the first frame.
    pub first_seen: Option<SystemTime>,
    /// Time of the latest frame.
    pub last_seen: Option<SystemTime>,
}

#[derive(Debug)]
struct Entry {
    flow: Flow,
    /// Position in the LRU orders (unique over the whole monitor).
    seq: u64,
    /// The DNS cache generation the flow's names were last merged from.
    names_gen: Option<u64>,
}

#[derive(Debug)]
struct Device {
    mac: Mac,
    flows: HashMap<FlowKey, Entry>,
    /// The device's flows by last activity.
    lru: BTreeMap<u64, FlowKey>,
    dns: dns::DnsCache,
    ring: pcap::Ring,
    stats: DeviceStats,
}

#[derive(Clone, Copy)]
enum Retire {
    Expired,
    Evicted,
}

/// The monitor: flow records, DNS names and captures of the recorded devices.
#[derive(Debug)]
pub struct Monitor {
    options: Options,
    devices: Vec<Device>,
    index: HashMap<Mac, usize>,
    /// Every flow by last activity: seq → (device index, key).
    lru: BTreeMap<u64, (usize, FlowKey)>,
    seq: u64,
    flows_total: usize,
    unrecorded: Traffic,
}

impl Monitor {
    /// A monitor for the controller's config `{"devices": [MAC, …]}` (see the crate docs).
    pub fn from_config(json: &str, options: Options) -> Result<Monitor, MonitorError> {
        let devices = config::parse(json)?;
        Monitor::new(&devices, options)
    }

    /// A monitor recording `devices` (unicast, each once).
    pub fn new(devices: &[Mac], options: Options) -> Result<Monitor, MonitorError> {
        options.validate()?;
        let mut index = HashMap::new();
        for (i, mac) in devices.iter().enumerate() {
            config::check_mac(mac)?;
            if index.insert(*mac, i).is_some() {
                return Err(MonitorError::DuplicateDevice(mac_string(mac)));
            }
        }
        Ok(Monitor {
            devices: devices
                .iter()
                .map(|mac| Device {
                    mac: *mac,
                    flows: HashMap::new(),
                    lru: BTreeMap::new(),
                    dns: dns::DnsCache::default(),
                    ring: pcap::Ring::default(),
                    stats: DeviceStats::default(),
                })
                .collect(),
            options,
            index,
            lru: BTreeMap::new(),
            seq: 0,
            flows_total: 0,
            unrecorded: Traffic::default(),
        })
    }

    /// The options in force.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The recorded devices, in config order.
    pub fn devices(&self) -> impl ExactSizeIterator<Item = &Mac> {
        self.devices.iter().map(|d| &d.mac)
    }

    /// Whether `device` is recorded (listed in the config).
    pub fn is_recorded(&self, device: &Mac) -> bool {
        self.index.contains_key(device)
    }

    /// Account one frame of `device` travelling in direction `dir`, parsed from `frame`, seen
    /// at `at`. Frames of devices that are not recorded are only counted in
    /// [`Monitor::unrecorded`].
    pub fn observe(
        &mut self,
        device: &Mac,
        dir: Direction,
        parsed: &Parsed,
        frame: &[u8],
        at: SystemTime,
    ) {
        self.account(device, dir, Some(parsed), frame, at);
    }

    /// Like [`Monitor::observe`] for a frame not parsed yet: it is parsed here, and one that
    /// does not parse is counted as malformed (and captured).
    pub fn observe_frame(&mut self, device: &Mac, dir: Direction, frame: &[u8], at: SystemTime) {
        let parsed = gw_packet::parse(frame).ok();
        self.account(device, dir, parsed.as_ref(), frame, at);
    }

    fn account(
        &mut self,
        device: &Mac,
        dir: Direction,
        parsed: Option<&Parsed>,
        frame: &[u8],
        at: SystemTime,
    ) {
        let len = frame.len();
        let Some(&idx) = self.index.get(device) else {
            self.unrecorded.dir_mut(dir).add_frame(len);
            return;
        };
        self.expire_flows(at);
        let limits = self.options.ring_limits();
        let dev = &mut self.devices[idx];
        dev.stats.traffic.dir_mut(dir).add_frame(len);
        dev.stats.first_seen = Some(dev.stats.first_seen.map_or(at, |t| t.min(at)));
        dev.stats.last_seen = Some(dev.stats.last_seen.map_or(at, |t| t.max(at)));
        dev.ring.push(frame, at, &limits);
        match parsed.map(|p| (p, &p.network)) {
            None => dev.stats.malformed.dir_mut(dir).add_frame(len),
            Some((_, Network::Arp(_) | Network::Other(_))) => {
                dev.stats.non_ip.dir_mut(dir).add_frame(len);
            }
            Some((p, Network::Ip(ip))) => {
                let payload = frame.get(p.payload.clone()).unwrap_or_default();
                self.account_ip(idx, ip, dir, payload, len, at);
            }
        }
    }

    fn account_ip(
        &mut self,
        idx: usize,
        ip: &Ip,
        dir: Direction,
        payload: &[u8],
        len: usize,
        at: SystemTime,
    ) {
        if dir == Direction::ToDevice {
            self.learn_dns(idx, ip, payload, at);
        }
        let key = FlowKey::of(ip, dir);
        self.seq += 1;
        let seq = self.seq;
        match self.devices[idx].flows.get(&key).map(|e| e.seq) {
            Some(old) => {
                self.devices[idx].lru.remove(&old);
                self.lru.remove(&old);
            }
            None => {
                if self.devices[idx].flows.len() >= self.options.max_flows_per_device
                    && let Some((&s, &k)) = self.devices[idx].lru.first_key_value()
                {
                    self.retire(idx, s, k, Retire::Evicted);
                }
                if self.flows_total >= self.options.max_flows_total
                    && let Some((&s, &(d, k))) = self.lru.first_key_value()
                {
                    self.retire(d, s, k, Retire::Evicted);
                }
                self.devices[idx].flows.insert(
                    key,
                    Entry {
                        flow: Flow::new(key, at),
                        seq,
                        names_gen: None,
                    },
                );
                self.flows_total += 1;
            }
        }
        self.lru.insert(seq, (idx, key));
        let max_names = self.options.max_names_per_address;
        let Device {
            flows, lru, dns, ..
        } = &mut self.devices[idx];
        lru.insert(seq, key);
        let Some(entry) = flows.get_mut(&key) else {
            return;
        };
        entry.seq = seq;
        entry.flow.account(ip, dir, len, at);
        if entry.names_gen != Some(dns.generation) {
            entry.names_gen = Some(dns.generation);
            for n in dns.lookup(&key.remote, at) {
                if entry.flow.names.len() >= max_names {
                    break;
                }
                if !entry.flow.names.contains(&n.name) {
                    entry.flow.names.push(n.name.clone());
                }
            }
        }
    }

    fn learn_dns(&mut self, idx: usize, ip: &Ip, payload: &[u8], at: SystemTime) {
        let messages = dns::server_messages(&ip.l4, payload);
        let limits = self.options.cache_limits();
        let cache = &mut self.devices[idx].dns;
        for msg in messages {
            for learned in dns::learn_from_message(msg) {
                cache.learn(&learned, at, &limits);
            }
        }
    }

    fn retire(&mut self, idx: usize, seq: u64, key: FlowKey, why: Retire) {
        self.lru.remove(&seq);
        let dev = &mut self.devices[idx];
        dev.lru.remove(&seq);
        if let Some(e) = dev.flows.remove(&key) {
            dev.stats.retired.add(e.flow.traffic);
            match why {
                Retire::Expired => dev.stats.flows_expired += 1,
                Retire::Evicted => dev.stats.flows_evicted += 1,
            }
            self.flows_total -= 1;
        }
    }

    fn expire_flows(&mut self, now: SystemTime) {
        let idle = self.options.flow_idle_timeout;
        while let Some((&seq, &(idx, key))) = self.lru.first_key_value() {
            let last = self.devices[idx].flows.get(&key).map(|e| e.flow.last_seen);
            match last {
                Some(last) if now.duration_since(last).is_ok_and(|d| d < idle) => break,
                Some(last) if now < last => break,
                _ => self.retire(idx, seq, key, Retire::Expired),
            }
        }
    }

    /// Expire flows idle for the idle timeout at `now`, and DNS names expired at `now`. (Flows
    /// are also expired as frames are observed; call this before a snapshot when traffic may
    /// have stopped.)
    pub fn expire(&mut self, now: SystemTime) {
        self.expire_flows(now);
        for d in &mut self.devices {
            d.dns.purge(now);
        }
    }

    fn device(&self, device: &Mac) -> Option<&Device> {
        self.index.get(device).map(|&i| &self.devices[i])
    }

    /// The flows of `device`, in no particular order (none if it is not recorded).
    pub fn flows<'a>(&'a self, device: &Mac) -> impl Iterator<Item = &'a Flow> + use<'a> {
        self.device(device)
            .into_iter()
            .flat_map(|d| d.flows.values().map(|e| &e.flow))
    }

    /// The flow of `device` with key `key`, if held.
    pub fn flow(&self, device: &Mac, key: &FlowKey) -> Option<&Flow> {
        self.device(device)?.flows.get(key).map(|e| &e.flow)
    }

    /// Flows held over all devices.
    pub fn flows_active(&self) -> usize {
        self.flows_total
    }

    /// Counters of `device` (`None` if it is not recorded).
    pub fn device_stats(&self, device: &Mac) -> Option<&DeviceStats> {
        self.device(device).map(|d| &d.stats)
    }

    /// Traffic of all devices that are not recorded, together.
    pub fn unrecorded(&self) -> Traffic {
        self.unrecorded
    }

    /// The names `device` learned for `addr` that have not expired at `at`, most recently
    /// asked for first.
    pub fn dns_names<'a>(
        &'a self,
        device: &Mac,
        addr: &IpAddr,
        at: SystemTime,
    ) -> impl Iterator<Item = &'a DnsName> + use<'a> {
        let addr = *addr;
        self.device(device)
            .into_iter()
            .flat_map(move |d| d.dns.lookup(&addr, at))
    }

    /// The frames in `device`'s capture ring, oldest first (none if it is not recorded).
    pub fn captured<'a>(&'a self, device: &Mac) -> impl Iterator<Item = &'a Captured> + use<'a> {
        self.device(device)
            .into_iter()
            .flat_map(|d| d.ring.frames())
    }

    /// The SPIN-like view of `device`: its flows added up per remote host (primary DNS name, or
    /// address), largest total first. Empty if the device is not recorded. Covers the flows
    /// held; expired and evicted flows are only in [`DeviceStats::retired`].
    pub fn spin_view(&self, device: &Mac) -> Vec<RemoteSummary> {
        snapshot::spin_view(self.flows(device))
    }

    /// Write `device`'s capture ring to `out` as a classic pcap file (LINKTYPE_ETHERNET,
    /// microsecond timestamps, snap length [`Options::pcap_snaplen`]), oldest frame first.
    /// Returns the number of frames written.
    pub fn write_pcap(&self, device: &Mac, out: impl Write) -> Result<usize, MonitorError> {
        let dev = self
            .device(device)
            .ok_or_else(|| MonitorError::UnknownDevice(mac_string(device)))?;
        dev.ring.write(out, self.options.pcap_snaplen)
    }

    /// Everything held, as the typed form of [`Monitor::snapshot_json`].
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            schema_version: SCHEMA_VERSION,
            flows_active: self.flows_total,
            unrecorded: self.unrecorded,
            devices: self.devices.iter().map(device_snapshot).collect(),
        }
    }

    /// The JSON snapshot (schema in the crate docs).
    pub fn snapshot_json(&self) -> serde_json::Value {
        serde_json::to_value(self.snapshot()).unwrap_or(serde_json::Value::Null)
    }
}

fn device_snapshot(d: &Device) -> DeviceSnapshot {
    let mut flows: Vec<&Flow> = d.flows.values().map(|e| &e.flow).collect();
    flows.sort_by(|a, b| a.first_seen.cmp(&b.first_seen).then(a.key.cmp(&b.key)));
    DeviceSnapshot {
        mac: mac_string(&d.mac),
        first_seen_ms: d.stats.first_seen.map(unix_ms),
        last_seen_ms: d.stats.last_seen.map(unix_ms),
        from_device: d.stats.traffic.from_device,
        to_device: d.stats.traffic.to_device,
        non_ip: d.stats.non_ip,
        malformed: d.stats.malformed,
        retired: d.stats.retired,
        flows_active: d.flows.len(),
        flows_expired: d.stats.flows_expired,
        flows_evicted: d.stats.flows_evicted,
        dns_evicted: d.dns.evicted,
        pcap: PcapStats {
            packets: d.ring.frames().len(),
            bytes: d.ring.bytes(),
            evicted: d.ring.evicted,
        },
        remotes: snapshot::spin_view(flows.iter().copied()),
        flows: flows.iter().map(|f| FlowSnapshot::from(*f)).collect(),
        dns: d
            .dns
            .entries()
            .into_iter()
            .map(|(addr, names)| DnsEntry {
                address: *addr,
                names: names
                    .iter()
                    .map(|n| DnsNameSnapshot {
                        name: n.name.to_string(),
                        ttl: n.ttl,
                        learned_ms: unix_ms(n.learned),
                        expires_ms: unix_ms(n.expires),
                    })
                    .collect(),
            })
            .collect(),
    }
}
