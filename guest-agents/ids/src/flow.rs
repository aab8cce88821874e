//! A bounded flow table: who is client and server, and whether the flow is established.

use core::net::IpAddr;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use gw_packet::L4;

use crate::packet::FlowState;

/// Flow table limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowSettings {
    /// Most flows tracked at once; when full, the flow closest to expiry is evicted.
    pub max_flows: usize,
    /// Idle time after which an established TCP flow is forgotten.
    pub tcp_established_idle: Duration,
    /// Idle time after which any other flow (TCP before the handshake completes, UDP, ICMP,
    /// other IP protocols) is forgotten.
    pub idle: Duration,
}

impl Default for FlowSettings {
    /// 32,768 flows, 600 s for established TCP, 60 s otherwise.
    fn default() -> Self {
        FlowSettings {
            max_flows: 32_768,
            tcp_established_idle: Duration::from_secs(600),
            idle: Duration::from_secs(60),
        }
    }
}

type Endpoint = (IpAddr, u16);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct FlowKey {
    proto: u8,
    a: Endpoint,
    b: Endpoint,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpStage {
    /// Client sent SYN.
    SynSent,
    /// Server answered SYN+ACK.
    SynAckSeen,
    /// Client acknowledged: established.
    Established,
    /// Picked up in the middle (no handshake seen): never established.
    Midstream,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    client: Endpoint,
    tcp: Option<TcpStage>,
    established: bool,
    deadline: Instant,
    serial: u64,
}

/// Counters of the flow table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct FlowCounters {
    /// Flows tracked now.
    pub active: usize,
    /// Flows created since start.
    pub created: u64,
    /// Flows removed because they were idle too long.
    pub expired: u64,
    /// Flows evicted because the table was full.
    pub evicted: u64,
}

/// Tracks flows by 5-tuple (protocol, addresses, ports; ports are 0 for ICMP and other
/// protocols).
///
/// - TCP: a SYN opens the flow and its sender is the client; a SYN+ACK with no flow opens it
///   with the receiver as client. The flow is established when the client acknowledges the
///   server's SYN+ACK (that ACK is the first established packet). A TCP packet of an unknown
///   flow that is not a SYN or SYN+ACK opens a "midstream" flow, with its sender as client,
///   that never becomes established (no handshake was seen). A RST ends the flow (after the
///   RST itself is inspected with the flow's state); a new SYN from the client after the
///   handshake starts a new flow.
/// - Other protocols: the first packet opens the flow and its sender is the client; the flow
///   is established once a packet from the server is seen (that packet is the first
///   established one).
///
/// Idle flows expire ([`FlowSettings`]); when the table is full the flow closest to expiry
/// is evicted.
#[derive(Debug)]
pub struct FlowTable {
    settings: FlowSettings,
    flows: HashMap<FlowKey, Entry>,
    by_deadline: BTreeMap<(Instant, u64), FlowKey>,
    serial: u64,
    counters: FlowCounters,
}

impl FlowTable {
    /// An empty table.
    pub fn new(settings: FlowSettings) -> FlowTable {
        FlowTable {
            settings: FlowSettings {
                max_flows: settings.max_flows.max(1),
                ..settings
            },
            flows: HashMap::new(),
            by_deadline: BTreeMap::new(),
            serial: 0,
            counters: FlowCounters::default(),
        }
    }

    /// Counters.
    pub fn counters(&self) -> FlowCounters {
        FlowCounters {
            active: self.flows.len(),
            ..self.counters
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((&(deadline, serial), &key)) = self.by_deadline.first_key_value() {
            if deadline > now {
                break;
            }
            self.by_deadline.remove(&(deadline, serial));
            self.flows.remove(&key);
            self.counters.expired += 1;
        }
    }

    fn remove(&mut self, key: &FlowKey) {
        if let Some(e) = self.flows.remove(key) {
            self.by_deadline.remove(&(e.deadline, e.serial));
        }
    }

    fn insert(&mut self, key: FlowKey, mut e: Entry, now: Instant) {
        let idle = if e.tcp == Some(TcpStage::Established) {
            self.settings.tcp_established_idle
        } else {
            self.settings.idle
        };
        self.serial += 1;
        e.serial = self.serial;
        e.deadline = now + idle;
        if !self.flows.contains_key(&key) {
            while self.flows.len() >= self.settings.max_flows {
                let Some((&k, &victim)) = self.by_deadline.first_key_value() else {
                    break;
                };
                self.by_deadline.remove(&k);
                self.flows.remove(&victim);
                self.counters.evicted += 1;
            }
        }
        if let Some(old) = self.flows.insert(key, e) {
            self.by_deadline.remove(&(old.deadline, old.serial));
        }
        self.by_deadline.insert((e.deadline, e.serial), key);
    }

    /// Account for one packet (`src`→`dst` with transport `l4`) seen at `now`, and return
    /// the packet's flow state.
    pub fn update(&mut self, src: IpAddr, dst: IpAddr, l4: &L4, now: Instant) -> FlowState {
        self.expire(now);
        let (sp, dp) = l4.ports().unwrap_or((0, 0));
        let s: Endpoint = (src, sp);
        let d: Endpoint = (dst, dp);
        let key = FlowKey {
            proto: l4.protocol(),
            a: s.min(d),
            b: s.max(d),
        };
        let existing = self.flows.get(&key).copied();
        let fresh = |client: Endpoint, tcp: Option<TcpStage>| Entry {
            client,
            tcp,
            established: false,
            deadline: now,
            serial: 0,
        };
        let mut end_after = false;
        let entry = match *l4 {
            L4::Tcp { flags, .. } => {
                let syn = flags & 0x02 != 0;
                let ack = flags & 0x10 != 0;
                let rst = flags & 0x04 != 0;
                end_after = rst;
                // A new connection: a SYN with no flow, from the other side, or after the
                // handshake (port reuse). A retransmitted SYN keeps the flow.
                let new_conn = syn
                    && !ack
                    && !rst
                    && existing.is_none_or(|e| e.client != s || e.tcp != Some(TcpStage::SynSent));
                match existing {
                    _ if new_conn => {
                        self.counters.created += 1;
                        fresh(s, Some(TcpStage::SynSent))
                    }
                    None if syn && ack => {
                        self.counters.created += 1;
                        fresh(d, Some(TcpStage::SynAckSeen))
                    }
                    None => {
                        self.counters.created += 1;
                        fresh(s, Some(TcpStage::Midstream))
                    }
                    Some(mut e) => {
                        let from_client = e.client == s;
                        match e.tcp {
                            Some(TcpStage::SynSent) if !from_client && syn && ack => {
                                e.tcp = Some(TcpStage::SynAckSeen);
                            }
                            Some(TcpStage::SynAckSeen) if from_client && ack && !syn && !rst => {
                                e.tcp = Some(TcpStage::Established);
                                e.established = true;
                            }
                            _ => {}
                        }
                        e
                    }
                }
            }
            _ => match existing {
                None => {
                    self.counters.created += 1;
                    fresh(s, None)
                }
                Some(mut e) => {
                    if e.client != s {
                        e.established = true;
                    }
                    e
                }
            },
        };
        let state = FlowState {
            from_client: entry.client == s,
            established: entry.established,
        };
        if end_after {
            self.remove(&key);
        } else {
            self.insert(key, entry, now);
        }
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYN: u8 = 0x02;
    const SYNACK: u8 = 0x12;
    const ACK: u8 = 0x10;
    const PSHACK: u8 = 0x18;
    const RST: u8 = 0x04;

    fn tcp(sp: u16, dp: u16, flags: u8) -> L4 {
        L4::Tcp {
            src_port: sp,
            dst_port: dp,
            flags,
        }
    }

    #[test]
    fn tcp_handshake() {
        let c: IpAddr = "10.0.0.2".parse().unwrap();
        let s: IpAddr = "93.184.216.34".parse().unwrap();
        let t0 = Instant::now();
        let mut ft = FlowTable::new(FlowSettings::default());
        let st = |from_client, established| FlowState {
            from_client,
            established,
        };
        assert_eq!(ft.update(c, s, &tcp(4000, 80, SYN), t0), st(true, false));
        assert_eq!(
            ft.update(s, c, &tcp(80, 4000, SYNACK), t0),
            st(false, false)
        );
        // Data before the final ACK (not the client's ACK of the handshake) stays unestablished.
        assert_eq!(
            ft.update(s, c, &tcp(80, 4000, PSHACK), t0),
            st(false, false)
        );
        assert_eq!(ft.update(c, s, &tcp(4000, 80, ACK), t0), st(true, true));
        assert_eq!(ft.update(c, s, &tcp(4000, 80, PSHACK), t0), st(true, true));
        assert_eq!(ft.update(s, c, &tcp(80, 4000, PSHACK), t0), st(false, true));
        assert_eq!(ft.update(s, c, &tcp(80, 4000, RST), t0), st(false, true));
        assert_eq!(ft.counters().active, 0);
        // After the RST the flow is gone: a data packet is midstream.
        assert_eq!(ft.update(s, c, &tcp(80, 4000, PSHACK), t0), st(true, false));
        assert_eq!(
            ft.update(c, s, &tcp(4000, 80, PSHACK), t0),
            st(false, false)
        );
    }

    #[test]
    fn udp_both_ways_and_expiry_and_eviction() {
        let a: IpAddr = "10.0.0.2".parse().unwrap();
        let b: IpAddr = "8.8.8.8".parse().unwrap();
        let u = |sp, dp| L4::Udp {
            src_port: sp,
            dst_port: dp,
        };
        let t0 = Instant::now();
        let mut ft = FlowTable::new(FlowSettings {
            max_flows: 2,
            ..FlowSettings::default()
        });
        let s = ft.update(a, b, &u(5000, 53), t0);
        assert!(s.from_client && !s.established);
        let s = ft.update(b, a, &u(53, 5000), t0);
        assert!(!s.from_client && s.established);
        let s = ft.update(a, b, &u(5000, 53), t0);
        assert!(s.from_client && s.established);
        // Idle past the timeout: forgotten, the next packet's sender is the new client.
        let later = t0 + Duration::from_secs(61);
        let s = ft.update(b, a, &u(53, 5000), later);
        assert!(s.from_client && !s.established);
        assert_eq!(ft.counters().expired, 1);
        ft.update(a, b, &u(1, 1), later);
        ft.update(a, b, &u(2, 2), later);
        let c = ft.counters();
        assert_eq!((c.active, c.evicted), (2, 1));
    }
}
