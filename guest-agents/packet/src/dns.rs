//! Learning the names of remote addresses from the DNS answers a device receives.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag};

/// A DNS name learned for an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    /// The name, lower case, without the trailing dot.
    pub name: Arc<str>,
    /// TTL of the address record that gave it, in seconds.
    pub ttl: u32,
    /// When the answer was seen.
    pub learned: SystemTime,
    /// When the name is forgotten for new flows: `learned` plus the TTL, but no earlier than
    /// `learned` plus [`CacheLimits::min_retention`].
    pub expires: SystemTime,
}

/// One address record of a DNS answer with the names that lead to it: the CNAME chain from
/// the name asked for down to the record's owner, in that order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    /// The address of an A/AAAA record.
    pub addr: IpAddr,
    /// The names leading to it, from the name asked for down to the record owner.
    pub names: Vec<Arc<str>>,
    /// TTL of the address record, seconds.
    pub ttl: u32,
}

/// Longest CNAME chain followed (DNS resolvers stop at about this depth too).
const MAX_CHAIN: usize = 16;
/// Names longer than a DNS name can be are not kept.
const MAX_NAME_LEN: usize = 253;

fn normalize(name: &simple_dns::Name<'_>) -> Option<Arc<str>> {
    let mut s = name.to_string().to_ascii_lowercase();
    while s.ends_with('.') {
        s.pop();
    }
    (!s.is_empty() && s.len() <= MAX_NAME_LEN).then(|| Arc::from(s))
}

/// Extract the address records (A/AAAA) of a DNS response message with their CNAME chains.
/// Queries, malformed messages and answers without address records give nothing.
pub fn learn_from_message(msg: &[u8]) -> Vec<Learned> {
    let Ok(packet) = Packet::parse(msg) else {
        return Vec::new();
    };
    if !packet.has_flags(PacketFlag::RESPONSE) {
        return Vec::new();
    }
    // alias -> targets, from the CNAME records of the answer section.
    let mut aliases_of: HashMap<Arc<str>, Vec<Arc<str>>> = HashMap::new();
    let mut addrs = Vec::new();
    for rr in &packet.answers {
        let Some(owner) = normalize(&rr.name) else {
            continue;
        };
        match &rr.rdata {
            RData::A(a) => addrs.push((owner, IpAddr::V4(Ipv4Addr::from(a.address)), rr.ttl)),
            RData::AAAA(a) => addrs.push((owner, IpAddr::V6(Ipv6Addr::from(a.address)), rr.ttl)),
            RData::CNAME(target) => {
                if let Some(target) = normalize(&target.0) {
                    aliases_of.entry(target).or_default().push(owner);
                }
            }
            _ => {}
        }
    }
    addrs
        .into_iter()
        .map(|(owner, addr, ttl)| {
            // Walk the CNAME chain backwards from the owner to the name the device asked for.
            let mut chain = vec![owner.clone()];
            let mut seen: HashSet<Arc<str>> = HashSet::from([owner.clone()]);
            let mut cur = owner;
            while chain.len() < MAX_CHAIN {
                let Some(prev) = aliases_of
                    .get(&cur)
                    .and_then(|v| v.iter().find(|a| !seen.contains(*a)))
                else {
                    break;
                };
                seen.insert(prev.clone());
                chain.push(prev.clone());
                cur = prev.clone();
            }
            chain.reverse();
            Learned {
                addr,
                names: chain,
                ttl,
            }
        })
        .collect()
}

/// DNS messages in the payload of a TCP segment from port 53: each is prefixed by its 16-bit
/// length. Only whole messages within this one segment are returned.
pub fn tcp_messages(mut payload: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while payload.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([payload[0], payload[1]]));
        let Some(msg) = payload.get(2..2 + len) else {
            break;
        };
        out.push(msg);
        payload = &payload[2 + len..];
    }
    out
}

/// The DNS messages carried by a packet from a DNS server (UDP or TCP source port 53), given
/// its transport header and payload. Other packets carry none.
pub fn server_messages<'a>(l4: &crate::L4, payload: &'a [u8]) -> Vec<&'a [u8]> {
    match l4 {
        crate::L4::Udp { src_port: 53, .. } => vec![payload],
        crate::L4::Tcp { src_port: 53, .. } => tcp_messages(payload),
        _ => Vec::new(),
    }
}

/// The per-device cache of names learned for remote addresses (bounded).
#[derive(Debug, Default)]
pub struct DnsCache {
    map: HashMap<IpAddr, Vec<DnsName>>,
    /// Bumped on every change, so flows know when to look their names up again.
    pub generation: u64,
    /// Addresses dropped to make room for new ones before their names expired.
    pub evicted: u64,
}

/// Bounds and retention of a [`DnsCache`].
#[derive(Debug, Clone)]
pub struct CacheLimits {
    /// Addresses kept per cache.
    pub max_addresses: usize,
    /// Names kept per address.
    pub max_names: usize,
    /// Shortest time a name is kept, whatever its TTL.
    pub min_retention: Duration,
}

impl DnsCache {
    /// Remember `learned` (seen at `at`). A name seen again moves to the front with its new TTL.
    pub fn learn(&mut self, learned: &Learned, at: SystemTime, limits: &CacheLimits) {
        if limits.max_addresses == 0 || learned.names.is_empty() {
            return;
        }
        if !self.map.contains_key(&learned.addr) && self.map.len() >= limits.max_addresses {
            self.purge(at);
            if self.map.len() >= limits.max_addresses {
                // Drop the address whose names all expire first.
                let victim = self
                    .map
                    .iter()
                    .map(|(a, names)| (names.iter().map(|n| n.expires).max(), *a))
                    .min()
                    .map(|(_, a)| a);
                if let Some(victim) = victim {
                    self.map.remove(&victim);
                    self.evicted += 1;
                }
            }
        }
        let ttl_d = Duration::from_secs(u64::from(learned.ttl)).max(limits.min_retention);
        let expires = at.checked_add(ttl_d).unwrap_or(at);
        let entry = self.map.entry(learned.addr).or_default();
        for name in learned.names.iter().rev() {
            entry.retain(|n| n.name != *name);
            entry.insert(
                0,
                DnsName {
                    name: name.clone(),
                    ttl: learned.ttl,
                    learned: at,
                    expires,
                },
            );
        }
        entry.truncate(limits.max_names);
        self.generation += 1;
    }

    /// The names of `addr` that have not expired at `at`, most recently asked for first.
    pub fn lookup<'a>(
        &'a self,
        addr: &IpAddr,
        at: SystemTime,
    ) -> impl Iterator<Item = &'a DnsName> + use<'a> {
        self.map
            .get(addr)
            .into_iter()
            .flatten()
            .filter(move |n| n.expires > at)
    }

    /// Every entry, expired or not (for snapshots), in address order.
    pub fn entries(&self) -> Vec<(&IpAddr, &Vec<DnsName>)> {
        let mut v: Vec<_> = self.map.iter().collect();
        v.sort_by_key(|(a, _)| **a);
        v
    }

    /// Forget names that expired at `at`, and addresses left without names.
    pub fn purge(&mut self, at: SystemTime) {
        let before = self.map.len();
        self.map.retain(|_, names| {
            names.retain(|n| n.expires > at);
            !names.is_empty()
        });
        if self.map.len() != before {
            self.generation += 1;
        }
    }

    /// Number of addresses held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no address is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA, CNAME};
    use simple_dns::{CLASS, Name, Question, ResourceRecord};

    fn response(records: Vec<ResourceRecord<'static>>) -> Vec<u8> {
        let mut p = Packet::new_reply(7);
        p.questions.push(Question::new(
            Name::new_unchecked("WWW.Example.com."),
            simple_dns::QTYPE::TYPE(simple_dns::TYPE::A),
            simple_dns::QCLASS::CLASS(CLASS::IN),
            false,
        ));
        p.answers = records;
        p.build_bytes_vec().unwrap()
    }

    #[test]
    fn cname_chain_is_followed_back_to_the_query() {
        let msg = response(vec![
            ResourceRecord::new(
                Name::new_unchecked("WWW.Example.com"),
                CLASS::IN,
                300,
                RData::CNAME(CNAME(Name::new_unchecked("edge.cdn.example.net"))),
            ),
            ResourceRecord::new(
                Name::new_unchecked("edge.cdn.example.net"),
                CLASS::IN,
                60,
                RData::CNAME(CNAME(Name::new_unchecked("e1.cdn.example.net"))),
            ),
            ResourceRecord::new(
                Name::new_unchecked("e1.cdn.example.net"),
                CLASS::IN,
                20,
                RData::A(A::from(Ipv4Addr::new(93, 184, 216, 34))),
            ),
            ResourceRecord::new(
                Name::new_unchecked("e1.cdn.example.net"),
                CLASS::IN,
                30,
                RData::AAAA(AAAA::from("2001:db8::34".parse::<Ipv6Addr>().unwrap())),
            ),
        ]);
        let learned = learn_from_message(&msg);
        assert_eq!(learned.len(), 2);
        let names: Vec<&str> = learned[0].names.iter().map(|n| &**n).collect();
        assert_eq!(
            names,
            [
                "www.example.com",
                "edge.cdn.example.net",
                "e1.cdn.example.net"
            ]
        );
        assert_eq!(learned[0].addr, IpAddr::V4(Ipv4Addr::new(93, 184, 216, 34)));
        assert_eq!(learned[0].ttl, 20);
        assert_eq!(learned[1].addr, "2001:db8::34".parse::<IpAddr>().unwrap());
        assert_eq!(learned[1].ttl, 30);
    }

    #[test]
    fn cname_loops_and_queries_are_harmless() {
        let msg = response(vec![
            ResourceRecord::new(
                Name::new_unchecked("a.example"),
                CLASS::IN,
                300,
                RData::CNAME(CNAME(Name::new_unchecked("b.example"))),
            ),
            ResourceRecord::new(
                Name::new_unchecked("b.example"),
                CLASS::IN,
                300,
                RData::CNAME(CNAME(Name::new_unchecked("a.example"))),
            ),
            ResourceRecord::new(
                Name::new_unchecked("a.example"),
                CLASS::IN,
                300,
                RData::A(A::from(Ipv4Addr::new(10, 0, 0, 1))),
            ),
        ]);
        let learned = learn_from_message(&msg);
        assert_eq!(learned.len(), 1);
        assert_eq!(learned[0].names.len(), 2);
        // The same bytes as a query teach nothing.
        let mut q = Packet::parse(&msg).unwrap();
        q.remove_flags(PacketFlag::RESPONSE);
        assert!(learn_from_message(&q.build_bytes_vec().unwrap()).is_empty());
        assert!(learn_from_message(b"\x00\x01garbage").is_empty());
    }

    #[test]
    fn tcp_framing() {
        assert_eq!(
            tcp_messages(b"\x00\x02ab\x00\x01c"),
            vec![&b"ab"[..], &b"c"[..]]
        );
        assert_eq!(tcp_messages(b"\x00\x05ab"), Vec::<&[u8]>::new());
    }

    #[test]
    fn cache_is_bounded_and_expires() {
        let limits = CacheLimits {
            max_addresses: 2,
            max_names: 2,
            min_retention: Duration::from_secs(10),
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut c = DnsCache::default();
        let l = |a: u8, names: &[&str], ttl| Learned {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, a)),
            names: names.iter().map(|n| Arc::from(*n)).collect(),
            ttl,
        };
        c.learn(&l(1, &["x", "y", "z"], 100), t0, &limits);
        let names: Vec<_> = c
            .lookup(&l(1, &[], 0).addr, t0)
            .map(|n| n.name.to_string())
            .collect();
        assert_eq!(names, ["x", "y"]);
        // TTL 0 is kept for the minimum retention.
        c.learn(&l(2, &["two"], 0), t0, &limits);
        assert_eq!(
            c.lookup(&l(2, &[], 0).addr, t0 + Duration::from_secs(9))
                .count(),
            1
        );
        assert_eq!(
            c.lookup(&l(2, &[], 0).addr, t0 + Duration::from_secs(10))
                .count(),
            0
        );
        // A third address evicts the one expiring first (address 2).
        c.learn(&l(3, &["three"], 50), t0, &limits);
        assert_eq!(c.len(), 2);
        assert_eq!(c.evicted, 1);
        assert_eq!(c.lookup(&l(1, &[], 0).addr, t0).count(), 2);
        c.purge(t0 + Duration::from_secs(60));
        assert_eq!(c.len(), 1);
    }
}
