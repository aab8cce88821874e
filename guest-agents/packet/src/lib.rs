//! Ethernet frame parsing for the Gatewarden data path.
//!
//! The vSwitch and every middlebox see the same [`Parsed`] view of a frame, built with
//! `smoltcp::wire` (no hand-rolled header parsing). A frame that cannot be parsed is an error,
//! never a guess: the data path drops what it does not understand.

use core::net::IpAddr;
use core::ops::Range;

use smoltcp::wire::{
    ArpPacket, EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv6Packet, IpProtocol, Ipv4Packet,
    Ipv6ExtHeader, Ipv6FragmentHeader, Ipv6Packet, TcpPacket, UdpPacket,
};

/// A 48-bit Ethernet address.
pub type Mac = [u8; 6];

/// Which way a packet travels relative to the IoT device it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Sent by the device (LAN → WAN).
    FromDevice,
    /// Sent to the device (WAN → LAN).
    ToDevice,
}

/// Why a frame could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// A header is truncated or inconsistent (length fields, checksum-independent checks).
    #[error("malformed {0} header")]
    Malformed(&'static str),
}

/// Transport layer of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP with ports and flags (`FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20`).
    Tcp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
        /// Flags, low byte of the TCP flags field.
        flags: u8,
    },
    /// UDP with ports.
    Udp {
        /// Source port.
        src_port: u16,
        /// Destination port.
        dst_port: u16,
    },
    /// ICMPv4 message.
    Icmpv4 {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
    },
    /// ICMPv6 message (including neighbour discovery).
    Icmpv6 {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
    },
    /// Another IP protocol, by number.
    Other(u8),
}

impl L4 {
    /// The IP protocol number.
    pub fn protocol(&self) -> u8 {
        match self {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmpv4 { .. } => 1,
            L4::Icmpv6 { .. } => 58,
            L4::Other(p) => *p,
        }
    }

    /// Source and destination ports (TCP and UDP only).
    pub fn ports(&self) -> Option<(u16, u16)> {
        match *self {
            L4::Tcp {
                src_port, dst_port, ..
            }
            | L4::Udp { src_port, dst_port } => Some((src_port, dst_port)),
            _ => None,
        }
    }
}

/// The IP layer of a parsed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Hop limit / TTL.
    pub ttl: u8,
    /// Transport layer.
    pub l4: L4,
}

/// ARP (IPv4 over Ethernet) request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 = request, 2 = reply.
    pub operation: u16,
    /// Sender hardware address.
    pub sender_mac: Mac,
    /// Sender protocol address.
    pub sender_ip: core::net::Ipv4Addr,
    /// Target protocol address.
    pub target_ip: core::net::Ipv4Addr,
}

/// Network layer of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// IPv4 or IPv6.
    Ip(Ip),
    /// ARP.
    Arp(Arp),
    /// Another ethertype.
    Other(u16),
}

/// A parsed Ethernet frame: headers by value, payload by range into the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// Destination MAC.
    pub dst_mac: Mac,
    /// Source MAC.
    pub src_mac: Mac,
    /// Network layer.
    pub network: Network,
    /// Bytes of the frame after the last header parsed (TCP/UDP payload, ICMP body, …).
    pub payload: Range<usize>,
}

impl Parsed {
    /// The IP layer, if this is an IP packet.
    pub fn ip(&self) -> Option<&Ip> {
        match &self.network {
            Network::Ip(ip) => Some(ip),
            _ => None,
        }
    }

    /// The payload bytes of `frame` (the frame this was parsed from).
    pub fn payload<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        &frame[self.payload.clone()]
    }
}

/// Parse an Ethernet II frame (no 802.1Q tags: the gateway's ports are untagged).
pub fn parse(frame: &[u8]) -> Result<Parsed, ParseError> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| ParseError::Malformed("Ethernet"))?;
    let dst_mac = eth.dst_addr().0;
    let src_mac = eth.src_addr().0;
    let l3_off = EthernetFrame::<&[u8]>::header_len();
    let (network, payload) = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            let p = Ipv4Packet::new_checked(&frame[l3_off..])
                .map_err(|_| ParseError::Malformed("IPv4"))?;
            let hdr = usize::from(p.header_len());
            let end = l3_off + usize::from(p.total_len());
            let l4_off = l3_off + hdr;
            // A non-first fragment has no transport header: treat its bytes as opaque.
            let first = p.frag_offset() == 0;
            let (l4, payload) = if first {
                transport(p.next_header(), frame, l4_off, end, false)?
            } else {
                (L4::Other(u8::from(p.next_header())), l4_off..end)
            };
            (
                Network::Ip(Ip {
                    src: IpAddr::V4(p.src_addr()),
                    dst: IpAddr::V4(p.dst_addr()),
                    ttl: p.hop_limit(),
                    l4,
                }),
                payload,
            )
        }
        EthernetProtocol::Ipv6 => {
            let p = Ipv6Packet::new_checked(&frame[l3_off..])
                .map_err(|_| ParseError::Malformed("IPv6"))?;
            let mut l4_off = l3_off + p.header_len();
            let end = l4_off + usize::from(p.payload_len());
            if end > frame.len() {
                return Err(ParseError::Malformed("IPv6 length"));
            }
            // Walk the extension headers (hop-by-hop, routing, fragment, destination
            // options) to the transport header. A bounded walk: each is at least 8 bytes.
            let mut next = p.next_header();
            let mut opaque = false;
            while matches!(
                next,
                IpProtocol::HopByHop
                    | IpProtocol::Ipv6Route
                    | IpProtocol::Ipv6Frag
                    | IpProtocol::Ipv6Opts
            ) {
                let ext = Ipv6ExtHeader::new_checked(&frame[l4_off..end])
                    .map_err(|_| ParseError::Malformed("IPv6 extension header"))?;
                if next == IpProtocol::Ipv6Frag {
                    let frag = Ipv6FragmentHeader::new_checked(ext.payload())
                        .map_err(|_| ParseError::Malformed("IPv6 fragment header"))?;
                    // A non-first fragment has no transport header.
                    opaque = frag.frag_offset() != 0;
                }
                l4_off += 8 + 8 * usize::from(ext.header_len());
                next = ext.next_header();
                if opaque {
                    break;
                }
            }
            let (l4, payload) = if opaque {
                (L4::Other(u8::from(next)), l4_off.min(end)..end)
            } else {
                transport(next, frame, l4_off, end, true)?
            };
            (
                Network::Ip(Ip {
                    src: IpAddr::V6(p.src_addr()),
                    dst: IpAddr::V6(p.dst_addr()),
                    ttl: p.hop_limit(),
                    l4,
                }),
                payload,
            )
        }
        EthernetProtocol::Arp => {
            let p = ArpPacket::new_checked(&frame[l3_off..])
                .map_err(|_| ParseError::Malformed("ARP"))?;
            let ipv4 = |b: &[u8]| -> Result<core::net::Ipv4Addr, ParseError> {
                let a: [u8; 4] = b.try_into().map_err(|_| ParseError::Malformed("ARP"))?;
                Ok(a.into())
            };
            let mac: Mac = p
                .source_hardware_addr()
                .try_into()
                .map_err(|_| ParseError::Malformed("ARP"))?;
            // Ethernet/IPv4 ARP is 28 bytes: 8 fixed + 2 × (6 + 4) addresses.
            let end = l3_off + 28;
            (
                Network::Arp(Arp {
                    operation: u16::from(p.operation()),
                    sender_mac: mac,
                    sender_ip: ipv4(p.source_protocol_addr())?,
                    target_ip: ipv4(p.target_protocol_addr())?,
                }),
                end..end,
            )
        }
        other => (Network::Other(u16::from(other)), l3_off..frame.len()),
    };
    Ok(Parsed {
        dst_mac,
        src_mac,
        network,
        payload,
    })
}

fn transport(
    proto: IpProtocol,
    frame: &[u8],
    off: usize,
    end: usize,
    v6: bool,
) -> Result<(L4, Range<usize>), ParseError> {
    if end > frame.len() || off > end {
        return Err(ParseError::Malformed("IP length"));
    }
    let body = &frame[off..end];
    Ok(match proto {
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(body).map_err(|_| ParseError::Malformed("TCP"))?;
            let flags = u8::from(t.fin())
                | u8::from(t.syn()) << 1
                | u8::from(t.rst()) << 2
                | u8::from(t.psh()) << 3
                | u8::from(t.ack()) << 4
                | u8::from(t.urg()) << 5;
            (
                L4::Tcp {
                    src_port: t.src_port(),
                    dst_port: t.dst_port(),
                    flags,
                },
                off + usize::from(t.header_len())..end,
            )
        }
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(body).map_err(|_| ParseError::Malformed("UDP"))?;
            (
                L4::Udp {
                    src_port: u.src_port(),
                    dst_port: u.dst_port(),
                },
                off + 8..off + usize::from(u.len()),
            )
        }
        IpProtocol::Icmp if !v6 => {
            let i = Icmpv4Packet::new_checked(body).map_err(|_| ParseError::Malformed("ICMP"))?;
            (
                L4::Icmpv4 {
                    icmp_type: u8::from(i.msg_type()),
                    code: i.msg_code(),
                },
                off + 4..end,
            )
        }
        IpProtocol::Icmpv6 if v6 => {
            let i = Icmpv6Packet::new_checked(body).map_err(|_| ParseError::Malformed("ICMPv6"))?;
            (
                L4::Icmpv6 {
                    icmp_type: u8::from(i.msg_type()),
                    code: i.msg_code(),
                },
                off + 4..end,
            )
        }
        other => (L4::Other(u8::from(other)), off..end),
    })
}

/// Format a MAC as lowercase `aa:bb:cc:dd:ee:ff` (the form policies use).
pub fn mac_string(mac: &Mac) -> String {
    let [a, b, c, d, e, f] = *mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Parse `aa:bb:cc:dd:ee:ff` (or `-` separated, any case).
pub fn parse_mac(s: &str) -> Option<Mac> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

pub mod build;
pub mod dns;
