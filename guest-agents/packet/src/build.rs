//! Frame builders (with valid checksums) for tests, benchmarks and the packet generators of the
//! end-to-end tests. Built with `smoltcp::wire` reprs.

use core::net::IpAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr,
    Ipv6Packet, Ipv6Repr, TcpControl, TcpPacket, TcpRepr, TcpSeqNumber, UdpPacket, UdpRepr,
};

use crate::Mac;

/// Addresses of a frame.
#[derive(Debug, Clone, Copy)]
pub struct Endpoints {
    /// Source MAC.
    pub src_mac: Mac,
    /// Destination MAC.
    pub dst_mac: Mac,
    /// Source IP (both IPs must be the same family).
    pub src: IpAddr,
    /// Destination IP.
    pub dst: IpAddr,
}

/// TCP segment kind for [`tcp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpKind {
    /// SYN.
    Syn,
    /// SYN+ACK.
    SynAck,
    /// ACK (with or without payload; PSH when there is payload).
    Ack,
    /// FIN+ACK.
    Fin,
    /// RST.
    Rst,
}

fn ip_frame(
    e: &Endpoints,
    proto: IpProtocol,
    l4_len: usize,
    emit: impl FnOnce(&mut [u8], IpAddress, IpAddress),
) -> Vec<u8> {
    let caps = ChecksumCapabilities::default();
    let eth = EthernetRepr {
        src_addr: EthernetAddress(e.src_mac),
        dst_addr: EthernetAddress(e.dst_mac),
        ethertype: match e.src {
            IpAddr::V4(_) => EthernetProtocol::Ipv4,
            IpAddr::V6(_) => EthernetProtocol::Ipv6,
        },
    };
    match (e.src, e.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len: l4_len,
                hop_limit: 64,
            };
            let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + l4_len];
            let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
            eth.emit(&mut f);
            let mut p = Ipv4Packet::new_unchecked(f.payload_mut());
            ip.emit(&mut p, &caps);
            emit(p.payload_mut(), IpAddress::Ipv4(s), IpAddress::Ipv4(d));
            buf
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: proto,
                payload_len: l4_len,
                hop_limit: 64,
            };
            let mut buf = vec![0u8; eth.buffer_len() + ip.buffer_len() + l4_len];
            let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
            eth.emit(&mut f);
            let mut p = Ipv6Packet::new_unchecked(f.payload_mut());
            ip.emit(&mut p);
            emit(p.payload_mut(), IpAddress::Ipv6(s), IpAddress::Ipv6(d));
            buf
        }
        _ => panic!("source and destination must be the same IP family"),
    }
}

/// A TCP segment.
pub fn tcp(
    e: &Endpoints,
    src_port: u16,
    dst_port: u16,
    kind: TcpKind,
    seq: u32,
    payload: &[u8],
) -> Vec<u8> {
    let (control, ack) = match kind {
        TcpKind::Syn => (TcpControl::Syn, None),
        TcpKind::SynAck => (TcpControl::Syn, Some(TcpSeqNumber(1))),
        TcpKind::Ack if !payload.is_empty() => (TcpControl::Psh, Some(TcpSeqNumber(1))),
        TcpKind::Ack => (TcpControl::None, Some(TcpSeqNumber(1))),
        TcpKind::Fin => (TcpControl::Fin, Some(TcpSeqNumber(1))),
        TcpKind::Rst => (TcpControl::Rst, None),
    };
    let repr = TcpRepr {
        src_port,
        dst_port,
        control,
        seq_number: TcpSeqNumber(seq as i32),
        ack_number: ack,
        window_len: 64240,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload,
    };
    ip_frame(e, IpProtocol::Tcp, repr.buffer_len(), |buf, s, d| {
        let mut t = TcpPacket::new_unchecked(buf);
        repr.emit(&mut t, &s, &d, &ChecksumCapabilities::default());
    })
}

/// A UDP datagram.
pub fn udp(e: &Endpoints, src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let repr = UdpRepr { src_port, dst_port };
    let len = repr.header_len() + payload.len();
    ip_frame(e, IpProtocol::Udp, len, |buf, s, d| {
        let mut u = UdpPacket::new_unchecked(buf);
        repr.emit(
            &mut u,
            &s,
            &d,
            payload.len(),
            |b| b.copy_from_slice(payload),
            &ChecksumCapabilities::default(),
        );
    })
}

/// An ICMPv4 echo request (IPv4 endpoints only).
pub fn icmpv4_echo(e: &Endpoints, ident: u16, seq_no: u16, data: &[u8]) -> Vec<u8> {
    let repr = Icmpv4Repr::EchoRequest {
        ident,
        seq_no,
        data,
    };
    ip_frame(e, IpProtocol::Icmp, repr.buffer_len(), |buf, _, _| {
        let mut p = Icmpv4Packet::new_unchecked(buf);
        repr.emit(&mut p, &ChecksumCapabilities::default());
    })
}

/// An ARP request from `src_mac`/`sender` for `target`, broadcast.
pub fn arp_request(
    src_mac: Mac,
    sender: core::net::Ipv4Addr,
    target: core::net::Ipv4Addr,
) -> Vec<u8> {
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(src_mac),
        source_protocol_addr: sender,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{L4, Network, parse};

    fn v4() -> Endpoints {
        Endpoints {
            src_mac: [2, 0, 0, 0, 0, 1],
            dst_mac: [2, 0, 0, 0, 0, 2],
            src: "192.168.1.10".parse().unwrap(),
            dst: "93.184.216.34".parse().unwrap(),
        }
    }

    #[test]
    fn tcp_round_trips_through_the_parser() {
        let f = tcp(&v4(), 40000, 80, TcpKind::Ack, 7, b"GET / HTTP/1.1\r\n");
        let p = parse(&f).unwrap();
        let ip = p.ip().unwrap();
        assert_eq!(ip.dst, v4().dst);
        assert_eq!(
            ip.l4,
            L4::Tcp {
                src_port: 40000,
                dst_port: 80,
                flags: 0x18
            }
        );
        assert_eq!(p.payload(&f), b"GET / HTTP/1.1\r\n");
    }

    #[test]
    fn udp_v6_and_icmp_and_arp_parse() {
        let e6 = Endpoints {
            src: "fd00::10".parse().unwrap(),
            dst: "2001:db8::1".parse().unwrap(),
            ..v4()
        };
        let f = udp(&e6, 5353, 53, b"q");
        let p = parse(&f).unwrap();
        assert_eq!(
            p.ip().unwrap().l4,
            L4::Udp {
                src_port: 5353,
                dst_port: 53
            }
        );
        assert_eq!(p.payload(&f), b"q");
        let f = icmpv4_echo(&v4(), 1, 2, b"ping");
        assert!(matches!(
            parse(&f).unwrap().ip().unwrap().l4,
            L4::Icmpv4 {
                icmp_type: 8,
                code: 0
            }
        ));
        let f = arp_request(
            [2, 0, 0, 0, 0, 1],
            "192.168.1.10".parse().unwrap(),
            "192.168.1.1".parse().unwrap(),
        );
        match parse(&f).unwrap().network {
            Network::Arp(a) => assert_eq!(a.operation, 1),
            n => panic!("{n:?}"),
        }
    }

    #[test]
    fn truncated_frames_are_errors() {
        let f = tcp(&v4(), 1, 2, TcpKind::Syn, 0, b"");
        for cut in [0, 10, 20, 30, 40] {
            assert!(parse(&f[..cut]).is_err(), "cut at {cut}");
        }
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = parse(&bytes);
        }
    }
}
