//! The view of a packet that rules are evaluated against.

use core::net::IpAddr;

use gw_packet::{L4, Parsed};

/// What the flow table knows about the packet's connection (see [`crate::FlowTable`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowState {
    /// The packet travels from the client (the side that opened the flow: the SYN sender for
    /// TCP, the first sender otherwise) to the server.
    pub from_client: bool,
    /// The flow is established: the TCP three-way handshake completed, or (other protocols)
    /// traffic was seen in both directions.
    pub established: bool,
}

/// TCP header fields used by the `flags`, `seq`, `ack` and `window` options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpHeader {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// The full flags byte: `FIN=0x01 SYN=0x02 RST=0x04 PSH=0x08 ACK=0x10 URG=0x20 ECE=0x40
    /// CWR=0x80`.
    pub flags: u8,
    /// Window.
    pub window: u16,
}

/// An IP packet as the detection engine sees it.
///
/// The payload is what Snort calls the packet data: the TCP or UDP payload, the ICMP data after
/// the 8-byte ICMP header (Snort's `ICMP_NORMAL_LEN`), or for other IP protocols and non-first
/// fragments the bytes after the IP header. No stream reassembly or protocol normalisation is
/// done: each packet is inspected on its own.
#[derive(Debug, Clone, Copy)]
pub struct Packet<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// TTL / hop limit.
    pub ttl: u8,
    /// Transport layer.
    pub l4: L4,
    /// IPv4 identification (`None` for IPv6).
    pub ip_id: Option<u16>,
    /// TCP header fields (TCP only).
    pub tcp: Option<TcpHeader>,
    /// ICMP echo identifier and sequence number (ICMPv4 types 0/8, ICMPv6 types 128/129).
    pub icmp_echo: Option<(u16, u16)>,
    /// The packet data searched by `content`, `pcre`, `dsize`, `isdataat`.
    pub payload: &'a [u8],
    /// Flow state.
    pub flow: FlowState,
}

const ETH_HDR: usize = 14;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *b.get(at)?,
        *b.get(at + 1)?,
        *b.get(at + 2)?,
        *b.get(at + 3)?,
    ]))
}

impl<'a> Packet<'a> {
    /// Build the view of `frame` (which `parsed` was parsed from), or `None` for frames that
    /// are not IP.
    pub fn from_frame(parsed: &Parsed, frame: &'a [u8], flow: FlowState) -> Option<Packet<'a>> {
        let ip = parsed.ip()?;
        let payload_range = parsed.payload.clone();
        let mut payload = frame.get(payload_range.clone())?;
        let v4 = ip.src.is_ipv4();
        // gw-packet parses Ethernet II frames without VLAN tags, IPv6 without extension
        // headers: the transport header starts right after the IP header.
        let l4_off = if v4 {
            ETH_HDR + usize::from(frame.get(ETH_HDR)? & 0x0f) * 4
        } else {
            ETH_HDR + 40
        };
        let ip_id = if v4 { be16(frame, ETH_HDR + 4) } else { None };
        let mut tcp = None;
        let mut icmp_echo = None;
        match ip.l4 {
            L4::Tcp { .. } => {
                tcp = Some(TcpHeader {
                    seq: be32(frame, l4_off + 4)?,
                    ack: be32(frame, l4_off + 8)?,
                    flags: *frame.get(l4_off + 13)?,
                    window: be16(frame, l4_off + 14)?,
                });
            }
            L4::Icmpv4 { icmp_type, .. } | L4::Icmpv6 { icmp_type, .. } => {
                // gw-packet's ICMP payload starts after type, code and checksum; the next four
                // bytes are the rest of the 8-byte header (identifier and sequence for echo).
                let echo = matches!(
                    (ip.l4, icmp_type),
                    (L4::Icmpv4 { .. }, 0 | 8) | (L4::Icmpv6 { .. }, 128 | 129)
                );
                if echo && payload.len() >= 4 {
                    icmp_echo = Some((be16(payload, 0)?, be16(payload, 2)?));
                }
                payload = payload.get(4..).unwrap_or(&[]);
            }
            _ => {}
        }
        Some(Packet {
            src: ip.src,
            dst: ip.dst,
            ttl: ip.ttl,
            l4: ip.l4,
            ip_id,
            tcp,
            icmp_echo,
            payload,
            flow,
        })
    }

    /// Source and destination ports (0, 0 for protocols without ports).
    pub fn ports(&self) -> (u16, u16) {
        self.l4.ports().unwrap_or((0, 0))
    }
}
