//! IPv6 extension headers are walked to the transport header.

use gw_packet::{L4, Network, parse};

fn frame(next: u8, ext: &[u8], l4: &[u8]) -> Vec<u8> {
    let mut f = vec![0x33, 0x33, 0, 0, 0, 0x16, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
    let payload_len = (ext.len() + l4.len()) as u16;
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&payload_len.to_be_bytes());
    f.extend_from_slice(&[next, 1]);
    f.extend_from_slice(&"fe80::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    f.extend_from_slice(&"ff02::16".parse::<std::net::Ipv6Addr>().unwrap().octets());
    f.extend_from_slice(ext);
    f.extend_from_slice(l4);
    f
}

#[test]
fn mld_report_behind_hop_by_hop_is_icmpv6() {
    // Hop-by-hop: next = ICMPv6, length 0 (8 bytes), router alert, PadN.
    let hbh = [58, 0, 5, 2, 0, 0, 1, 0];
    let mld = [143, 0, 0, 0, 0, 0, 0, 0];
    let f = frame(0, &hbh, &mld);
    let p = parse(&f).expect("parses");
    let Network::Ip(ip) = p.network else { panic!() };
    assert_eq!(
        ip.l4,
        L4::Icmpv6 {
            icmp_type: 143,
            code: 0
        }
    );
}

#[test]
fn fragments_and_truncated_extensions() {
    // Destination options, then a non-first fragment of UDP: opaque.
    let ext = [
        44, 0, 1, 4, 0, 0, 0, 0, // dest opts → fragment, PadN
        17, 0, 0, 0x10, 0, 0, 0, 1, // fragment: next UDP, offset 2 (×8), id 1
    ];
    let f = frame(60, &ext, &[0u8; 16]);
    let Network::Ip(ip) = parse(&f).unwrap().network else {
        panic!()
    };
    assert_eq!(ip.l4, L4::Other(17));
    // A first fragment carries the UDP header.
    let ext = [17, 0, 0, 1, 0, 0, 0, 9];
    let udp = [0x13, 0x88, 0, 53, 0, 8, 0, 0];
    let Network::Ip(ip) = parse(&frame(44, &ext, &udp)).unwrap().network else {
        panic!()
    };
    assert_eq!(
        ip.l4,
        L4::Udp {
            src_port: 5000,
            dst_port: 53
        }
    );
    // An extension header running past the packet is malformed.
    let hbh = [58, 4, 5, 2, 0, 0, 1, 0];
    assert!(parse(&frame(0, &hbh, &[])).is_err());
}
