//! Helpers shared by the integration tests: frames, TCP handshakes, inspection.

#![allow(dead_code)]

use std::net::IpAddr;
use std::time::{Duration, Instant};

use gw_ids::{FlowState, IdsConfig, Packet, Verdict};
use gw_packet::build::{self, Endpoints, TcpKind};
use gw_packet::{Direction, Mac};

pub const DEV: Mac = [2, 0, 0, 0, 0, 1];
pub const OTHER_DEV: Mac = [2, 0, 0, 0, 0, 9];
pub const GW: Mac = [2, 0, 0, 0, 0, 254];

/// Endpoints from `src` to `dst` (the device's MAC on the device side).
pub fn ep(src: &str, dst: &str) -> Endpoints {
    Endpoints {
        src_mac: DEV,
        dst_mac: GW,
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
    }
}

pub fn rev(e: &Endpoints) -> Endpoints {
    Endpoints {
        src_mac: e.dst_mac,
        dst_mac: e.src_mac,
        src: e.dst,
        dst: e.src,
    }
}

/// An IDS plus a clock, for driving whole conversations.
pub struct Harness {
    pub ids: IdsConfig,
    pub now: Instant,
}

impl Harness {
    pub fn new(text: &str) -> Harness {
        let (ids, report) = IdsConfig::parse(text);
        assert!(
            report.skipped.is_empty() && report.issues.is_empty(),
            "test rules must load: {report:#?}"
        );
        Harness {
            ids,
            now: Instant::now(),
        }
    }

    pub fn tick(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
    }

    /// Inspect `frame` as traffic of `dev` travelling in `dir`.
    pub fn send_as(&mut self, dev: Mac, dir: Direction, frame: &[u8]) -> Verdict {
        let parsed = gw_packet::parse(frame).expect("test frame parses");
        self.ids.inspect(&dev, dir, &parsed, frame, self.now)
    }

    /// Inspect `frame` of device [`DEV`]; the direction follows from the MACs.
    pub fn send(&mut self, frame: &[u8]) -> Verdict {
        let dir = if frame[6..12] == DEV {
            Direction::FromDevice
        } else {
            Direction::ToDevice
        };
        self.send_as(DEV, dir, frame)
    }

    /// Complete a TCP handshake from `client` (ports `cp` → `sp`); asserts it raises nothing.
    pub fn handshake(&mut self, client: &Endpoints, cp: u16, sp: u16) {
        for f in [
            build::tcp(client, cp, sp, TcpKind::Syn, 100, b""),
            build::tcp(&rev(client), sp, cp, TcpKind::SynAck, 500, b""),
            build::tcp(client, cp, sp, TcpKind::Ack, 101, b""),
        ] {
            let v = self.send(&f);
            assert!(v.alerts.is_empty(), "handshake raised {v:?}");
        }
    }

    /// Sids alerted for one frame.
    pub fn sids(&mut self, frame: &[u8]) -> Vec<u32> {
        self.send(frame).alerts.iter().map(|a| a.sid).collect()
    }
}

/// A [`Packet`] view of a frame with the given flow state.
pub fn packet<'a>(frame: &'a [u8], parsed: &gw_packet::Parsed, flow: FlowState) -> Packet<'a> {
    Packet::from_frame(parsed, frame, flow).expect("IP frame")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}
