//! Behaviour of the monitor through its public API: flow accounting, DNS attribution, bounds,
//! config checking, the JSON snapshot and the pcap export (read back, and by tcpdump).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};

use gw_monitor::{FlowKey, Monitor, MonitorError, Options, SCHEMA_VERSION, Snapshot, Traffic};
use gw_packet::build::{self, Endpoints, TcpKind};
use gw_packet::{Direction, Mac};
use proptest::prelude::*;
use simple_dns::rdata::{A, AAAA, CNAME, RData};
use simple_dns::{CLASS, Name, Packet, QCLASS, QTYPE, Question, ResourceRecord, TYPE};

const DEV: Mac = [0x02, 0, 0, 0, 0, 0x01];
const DEV2: Mac = [0x02, 0, 0, 0, 0, 0x02];
const OTHER: Mac = [0x02, 0, 0, 0, 0, 0x99];
const GW: Mac = [0x02, 0, 0, 0, 0, 0xfe];

fn t(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000) + Duration::from_millis(ms)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn config(devs: &[Mac]) -> String {
    let list: Vec<String> = devs.iter().map(gw_packet::mac_string).collect();
    serde_json::json!({ "devices": list }).to_string()
}

fn monitor(devs: &[Mac], options: Options) -> Monitor {
    Monitor::from_config(&config(devs), options).unwrap()
}

/// Endpoints of a frame sent by the device (`up`) or to it.
fn ends(dev: Mac, local: &str, remote: &str, dir: Direction) -> Endpoints {
    match dir {
        Direction::FromDevice => Endpoints {
            src_mac: dev,
            dst_mac: GW,
            src: ip(local),
            dst: ip(remote),
        },
        Direction::ToDevice => Endpoints {
            src_mac: GW,
            dst_mac: dev,
            src: ip(remote),
            dst: ip(local),
        },
    }
}

fn see(m: &mut Monitor, dev: Mac, dir: Direction, frame: &[u8], at: SystemTime) {
    let parsed = gw_packet::parse(frame).expect("test frames parse");
    m.observe(&dev, dir, &parsed, frame, at);
}

fn internet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMPv4 echo reply (the builder only makes requests): a request with type 0.
fn icmpv4_echo_reply(e: &Endpoints, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let mut f = build::icmpv4_echo(e, ident, seq, data);
    f[34] = 0;
    f[36..38].copy_from_slice(&[0, 0]);
    let c = internet_checksum(&f[34..]);
    f[36..38].copy_from_slice(&c.to_be_bytes());
    f
}

/// An ICMPv6 echo request (type 128) or reply (129), with a valid checksum.
fn icmpv6_echo(e: &Endpoints, icmp_type: u8, ident: u16, seq: u16, data: &[u8]) -> Vec<u8> {
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (e.src, e.dst) else {
        panic!("IPv6 endpoints");
    };
    let mut body = vec![icmp_type, 0, 0, 0];
    body.extend(ident.to_be_bytes());
    body.extend(seq.to_be_bytes());
    body.extend(data);
    let mut pseudo = Vec::new();
    pseudo.extend(src.octets());
    pseudo.extend(dst.octets());
    pseudo.extend((body.len() as u32).to_be_bytes());
    pseudo.extend([0, 0, 0, 58]);
    pseudo.extend(&body);
    let c = internet_checksum(&pseudo);
    body[2..4].copy_from_slice(&c.to_be_bytes());
    let mut f = Vec::new();
    f.extend(e.dst_mac);
    f.extend(e.src_mac);
    f.extend([0x86, 0xdd, 0x60, 0, 0, 0]);
    f.extend((body.len() as u16).to_be_bytes());
    f.extend([58, 64]);
    f.extend(src.octets());
    f.extend(dst.octets());
    f.extend(body);
    f
}

fn rr(name: &'static str, ttl: u32, rdata: RData<'static>) -> ResourceRecord<'static> {
    ResourceRecord::new(Name::new_unchecked(name), CLASS::IN, ttl, rdata)
}

/// A DNS response for `qname` with `answers`, as the message bytes.
fn dns_response(qname: &'static str, answers: Vec<ResourceRecord<'static>>) -> Vec<u8> {
    let mut p = Packet::new_reply(0x1234);
    p.questions.push(Question::new(
        Name::new_unchecked(qname),
        QTYPE::TYPE(TYPE::A),
        QCLASS::CLASS(CLASS::IN),
        false,
    ));
    p.answers = answers;
    p.build_bytes_vec().unwrap()
}

fn cdn_answer() -> Vec<u8> {
    dns_response(
        "www.example.com",
        vec![
            rr(
                "www.example.com",
                3600,
                RData::CNAME(CNAME(Name::new_unchecked("edge.cdn.example.net"))),
            ),
            rr(
                "edge.cdn.example.net",
                60,
                RData::A(A::from(Ipv4Addr::new(93, 184, 216, 34))),
            ),
            rr(
                "edge.cdn.example.net",
                60,
                RData::AAAA(AAAA::from("2001:db8::34".parse::<Ipv6Addr>().unwrap())),
            ),
        ],
    )
}

fn names(m: &Monitor, dev: &Mac, key: &FlowKey) -> Vec<String> {
    m.flow(dev, key)
        .unwrap()
        .names
        .iter()
        .map(|n| n.to_string())
        .collect()
}

#[test]
fn tcp_flow_is_accounted_in_both_directions() {
    let mut m = monitor(&[DEV], Options::default());
    let up = ends(DEV, "192.168.1.10", "93.184.216.34", Direction::FromDevice);
    let down = ends(DEV, "192.168.1.10", "93.184.216.34", Direction::ToDevice);
    let frames = [
        (
            Direction::FromDevice,
            build::tcp(&up, 40000, 443, TcpKind::Syn, 1, b""),
        ),
        (
            Direction::ToDevice,
            build::tcp(&down, 443, 40000, TcpKind::SynAck, 9, b""),
        ),
        (
            Direction::FromDevice,
            build::tcp(&up, 40000, 443, TcpKind::Ack, 2, b"hello"),
        ),
        (
            Direction::ToDevice,
            build::tcp(&down, 443, 40000, TcpKind::Ack, 10, b"world!!"),
        ),
        (
            Direction::FromDevice,
            build::tcp(&up, 40000, 443, TcpKind::Fin, 7, b""),
        ),
    ];
    for (i, (dir, f)) in frames.iter().enumerate() {
        see(&mut m, DEV, *dir, f, t(100 * i as u64));
    }
    let flows: Vec<_> = m.flows(&DEV).collect();
    assert_eq!(flows.len(), 1);
    let f = flows[0];
    assert_eq!(
        f.key,
        FlowKey {
            protocol: 6,
            local: ip("192.168.1.10"),
            local_port: 40000,
            remote: ip("93.184.216.34"),
            remote_port: 443,
            icmp_type: None,
        }
    );
    let sum = |d: Direction| -> (u64, u64) {
        let fs: Vec<_> = frames.iter().filter(|(x, _)| *x == d).collect();
        (
            fs.len() as u64,
            fs.iter().map(|(_, f)| f.len() as u64).sum(),
        )
    };
    let tr = f.traffic;
    assert_eq!(
        (tr.from_device.packets, tr.from_device.bytes),
        sum(Direction::FromDevice)
    );
    assert_eq!(
        (tr.to_device.packets, tr.to_device.bytes),
        sum(Direction::ToDevice)
    );
    assert_eq!((f.first_seen, f.last_seen), (t(0), t(400)));
    // SYN, PSH, ACK, FIN from the device; SYN, ACK, PSH towards it.
    assert_eq!(f.tcp_flags_from_device, 0x01 | 0x02 | 0x08 | 0x10);
    assert_eq!(f.tcp_flags_to_device, 0x02 | 0x08 | 0x10);
    let stats = m.device_stats(&DEV).unwrap();
    assert_eq!(stats.traffic, tr);
    assert_eq!(
        (stats.first_seen, stats.last_seen),
        (Some(t(0)), Some(t(400)))
    );
    let snap = m.snapshot_json();
    let jf = &snap["devices"][0]["flows"][0];
    assert_eq!(
        jf["tcp_flags_from_device"],
        serde_json::json!(["FIN", "SYN", "PSH", "ACK"])
    );
    assert_eq!(
        jf["tcp_flags_to_device"],
        serde_json::json!(["SYN", "PSH", "ACK"])
    );
    assert_eq!(jf["protocol_name"], "tcp");
    // Another local port is another flow.
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &build::tcp(&up, 40001, 443, TcpKind::Syn, 1, b""),
        t(500),
    );
    assert_eq!(m.flows(&DEV).count(), 2);
}

#[test]
fn udp_icmp_and_ipv6_flows() {
    let mut m = monitor(&[DEV], Options::default());
    let up4 = ends(DEV, "192.168.1.10", "192.0.2.7", Direction::FromDevice);
    let down4 = ends(DEV, "192.168.1.10", "192.0.2.7", Direction::ToDevice);
    let up6 = ends(DEV, "fd00::10", "2001:db8::1", Direction::FromDevice);
    let down6 = ends(DEV, "fd00::10", "2001:db8::1", Direction::ToDevice);

    let u1 = build::udp(&up4, 5000, 123, b"ntp?");
    let u2 = build::udp(&down4, 123, 5000, b"ntp reply");
    let p1 = build::icmpv4_echo(&up4, 7, 1, b"ping");
    let p2 = icmpv4_echo_reply(&down4, 7, 1, b"ping");
    let v1 = build::udp(&up6, 6000, 8883, b"mqtt");
    let v2 = build::udp(&down6, 8883, 6000, b"ok");
    let e1 = icmpv6_echo(&up6, 128, 3, 1, b"ping6");
    let e2 = icmpv6_echo(&down6, 129, 3, 1, b"ping6");
    for (dir, f) in [
        (Direction::FromDevice, &u1),
        (Direction::ToDevice, &u2),
        (Direction::FromDevice, &p1),
        (Direction::ToDevice, &p2),
        (Direction::FromDevice, &v1),
        (Direction::ToDevice, &v2),
        (Direction::FromDevice, &e1),
        (Direction::ToDevice, &e2),
    ] {
        see(&mut m, DEV, dir, f, t(0));
    }
    assert_eq!(m.flows(&DEV).count(), 4);
    let key = |protocol, local: &str, lp, remote: &str, rp, icmp_type| FlowKey {
        protocol,
        local: ip(local),
        local_port: lp,
        remote: ip(remote),
        remote_port: rp,
        icmp_type,
    };
    let check = |k: FlowKey, up: &[u8], down: &[u8]| {
        let f = m.flow(&DEV, &k).unwrap_or_else(|| panic!("no flow {k:?}"));
        assert_eq!(f.traffic.from_device.bytes, up.len() as u64, "{k:?}");
        assert_eq!(f.traffic.to_device.bytes, down.len() as u64, "{k:?}");
        assert_eq!(
            (f.traffic.from_device.packets, f.traffic.to_device.packets),
            (1, 1)
        );
        assert_eq!((f.tcp_flags_from_device, f.tcp_flags_to_device), (0, 0));
    };
    check(
        key(17, "192.168.1.10", 5000, "192.0.2.7", 123, None),
        &u1,
        &u2,
    );
    // An echo reply joins its request's flow.
    check(key(1, "192.168.1.10", 0, "192.0.2.7", 0, Some(8)), &p1, &p2);
    check(
        key(17, "fd00::10", 6000, "2001:db8::1", 8883, None),
        &v1,
        &v2,
    );
    check(
        key(58, "fd00::10", 0, "2001:db8::1", 0, Some(128)),
        &e1,
        &e2,
    );
    let snap = m.snapshot_json();
    let protos: Vec<&str> = snap["devices"][0]["flows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["protocol_name"].as_str().unwrap())
        .collect();
    assert_eq!(protos.len(), 4);
    for p in ["udp", "icmp", "icmpv6"] {
        assert!(protos.contains(&p), "{protos:?}");
    }
}

#[test]
fn non_ip_and_malformed_frames_are_counted_and_captured() {
    let mut m = monitor(&[DEV], Options::default());
    let arp = build::arp_request(
        DEV,
        "192.168.1.10".parse().unwrap(),
        "192.168.1.1".parse().unwrap(),
    );
    see(&mut m, DEV, Direction::FromDevice, &arp, t(0));
    let mut junk = build::tcp(
        &ends(DEV, "192.168.1.10", "192.0.2.1", Direction::ToDevice),
        1,
        2,
        TcpKind::Syn,
        0,
        b"",
    );
    junk.truncate(30);
    m.observe_frame(&DEV, Direction::ToDevice, &junk, t(1));
    let s = m.device_stats(&DEV).unwrap();
    assert_eq!(s.non_ip.from_device.bytes, arp.len() as u64);
    assert_eq!(s.malformed.to_device.bytes, 30);
    assert_eq!(
        s.traffic.from_device.bytes + s.traffic.to_device.bytes,
        arp.len() as u64 + 30
    );
    assert_eq!(m.flows(&DEV).count(), 0);
    assert_eq!(m.captured(&DEV).count(), 2);
}

#[test]
fn dns_answers_name_the_remote() {
    let mut m = monitor(&[DEV], Options::default());
    let resolver = "192.168.1.1";
    let q = build::udp(
        &ends(DEV, "192.168.1.10", resolver, Direction::FromDevice),
        53000,
        53,
        b"query",
    );
    see(&mut m, DEV, Direction::FromDevice, &q, t(0));
    let a = build::udp(
        &ends(DEV, "192.168.1.10", resolver, Direction::ToDevice),
        53,
        53000,
        &cdn_answer(),
    );
    see(&mut m, DEV, Direction::ToDevice, &a, t(10));

    let chain = ["www.example.com", "edge.cdn.example.net"];
    let got: Vec<(String, u32)> = m
        .dns_names(&DEV, &ip("93.184.216.34"), t(10))
        .map(|n| (n.name.to_string(), n.ttl))
        .collect();
    assert_eq!(
        got,
        [(chain[0].to_string(), 60), (chain[1].to_string(), 60)]
    );

    // Flows to both addresses carry the chain, the name asked for first.
    let up4 = ends(DEV, "192.168.1.10", "93.184.216.34", Direction::FromDevice);
    let syn4 = build::tcp(&up4, 41000, 443, TcpKind::Syn, 1, b"");
    see(&mut m, DEV, Direction::FromDevice, &syn4, t(20));
    let up6 = ends(DEV, "fd00::10", "2001:db8::34", Direction::FromDevice);
    let syn6 = build::tcp(&up6, 41001, 443, TcpKind::Syn, 1, b"");
    see(&mut m, DEV, Direction::FromDevice, &syn6, t(30));
    let k4 = FlowKey::of(
        gw_packet::parse(&syn4).unwrap().ip().unwrap(),
        Direction::FromDevice,
    );
    let k6 = FlowKey::of(
        gw_packet::parse(&syn6).unwrap().ip().unwrap(),
        Direction::FromDevice,
    );
    assert_eq!(names(&m, &DEV, &k4), chain);
    assert_eq!(names(&m, &DEV, &k6), chain);
    // The resolver flow itself has no name.
    let unnamed = ends(DEV, "192.168.1.10", "203.0.113.9", Direction::FromDevice);
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &build::udp(&unnamed, 1234, 9999, b"x"),
        t(40),
    );

    // SPIN view: one remote for the name, with both addresses; others by address.
    let view = m.spin_view(&DEV);
    let www = view.iter().find(|r| r.remote == "www.example.com").unwrap();
    assert_eq!(www.addresses, [ip("93.184.216.34"), ip("2001:db8::34")]);
    assert_eq!(www.names, chain);
    assert_eq!(www.flows, 2);
    assert_eq!(www.remote_ports, [443]);
    assert_eq!(www.from_device.bytes, (syn4.len() + syn6.len()) as u64);
    assert_eq!(www.to_device.packets, 0);
    assert!(
        view.iter()
            .any(|r| r.remote == resolver && r.names.is_empty())
    );
    assert!(view.iter().any(|r| r.remote == "203.0.113.9"));
    assert_eq!(view.len(), 3);
    // Largest first.
    assert!(view.windows(2).all(|w| {
        w[0].from_device.bytes + w[0].to_device.bytes
            >= w[1].from_device.bytes + w[1].to_device.bytes
    }));

    let snap = m.snapshot_json();
    let dns = &snap["devices"][0]["dns"];
    assert_eq!(dns.as_array().unwrap().len(), 2);
    assert_eq!(dns[0]["address"], "93.184.216.34");
    assert_eq!(dns[0]["names"][0]["name"], "www.example.com");
    assert_eq!(dns[0]["names"][0]["ttl"], 60);
    assert_eq!(
        dns[0]["names"][0]["expires_ms"],
        gw_monitor::unix_ms(t(10) + Duration::from_secs(300))
    );
}

#[test]
fn dns_sources_that_are_not_answers_to_the_device_are_ignored() {
    let mut m = monitor(&[DEV], Options::default());
    let msg = cdn_answer();
    // An answer sent by the device (it runs a DNS server?), and one from a port other than 53.
    let from_dev = build::udp(
        &ends(DEV, "192.168.1.10", "192.168.1.1", Direction::FromDevice),
        53,
        53000,
        &msg,
    );
    see(&mut m, DEV, Direction::FromDevice, &from_dev, t(0));
    let odd_port = build::udp(
        &ends(DEV, "192.168.1.10", "192.168.1.1", Direction::ToDevice),
        5353,
        53000,
        &msg,
    );
    see(&mut m, DEV, Direction::ToDevice, &odd_port, t(0));
    assert_eq!(m.dns_names(&DEV, &ip("93.184.216.34"), t(0)).count(), 0);

    // DNS over TCP: one segment holding a whole length-prefixed answer.
    let mut seg = (msg.len() as u16).to_be_bytes().to_vec();
    seg.extend(&msg);
    let tcp = build::tcp(
        &ends(DEV, "192.168.1.10", "192.168.1.1", Direction::ToDevice),
        53,
        53001,
        TcpKind::Ack,
        1,
        &seg,
    );
    see(&mut m, DEV, Direction::ToDevice, &tcp, t(0));
    assert_eq!(m.dns_names(&DEV, &ip("93.184.216.34"), t(0)).count(), 2);
}

#[test]
fn names_learned_later_are_appended_and_names_expire() {
    let opts = Options {
        min_name_retention: Duration::from_secs(5),
        ..Options::default()
    };
    let mut m = monitor(&[DEV], opts);
    let remote = "198.51.100.5";
    let up = ends(DEV, "192.168.1.10", remote, Direction::FromDevice);
    let syn = build::tcp(&up, 42000, 80, TcpKind::Syn, 1, b"");
    let key = FlowKey::of(
        gw_packet::parse(&syn).unwrap().ip().unwrap(),
        Direction::FromDevice,
    );
    see(&mut m, DEV, Direction::FromDevice, &syn, t(0));
    assert!(names(&m, &DEV, &key).is_empty());

    let answer = |name: &'static str, ttl| {
        let msg = dns_response(
            name,
            vec![rr(
                name,
                ttl,
                RData::A(A::from(remote.parse::<Ipv4Addr>().unwrap())),
            )],
        );
        build::udp(
            &ends(DEV, "192.168.1.10", "192.168.1.1", Direction::ToDevice),
            53,
            53000,
            &msg,
        )
    };
    see(
        &mut m,
        DEV,
        Direction::ToDevice,
        &answer("late.example", 10),
        t(1_000),
    );
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &build::tcp(&up, 42000, 80, TcpKind::Ack, 2, b"x"),
        t(2_000),
    );
    assert_eq!(names(&m, &DEV, &key), ["late.example"]);

    // A second name for the address is appended, not put in front.
    see(
        &mut m,
        DEV,
        Direction::ToDevice,
        &answer("other.example", 1),
        t(3_000),
    );
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &build::tcp(&up, 42000, 80, TcpKind::Ack, 3, b"y"),
        t(4_000),
    );
    assert_eq!(names(&m, &DEV, &key), ["late.example", "other.example"]);
    // In the cache the newest answer comes first; TTL 1 is kept for the 5 s minimum.
    let cached: Vec<String> = m
        .dns_names(&DEV, &ip(remote), t(4_000))
        .map(|n| n.name.to_string())
        .collect();
    assert_eq!(cached, ["other.example", "late.example"]);
    let cached: Vec<String> = m
        .dns_names(&DEV, &ip(remote), t(9_000))
        .map(|n| n.name.to_string())
        .collect();
    assert_eq!(cached, ["late.example"]);

    // After the TTL a new flow gets no name; the old one keeps its names.
    let syn2 = build::tcp(&up, 42001, 80, TcpKind::Syn, 1, b"");
    see(&mut m, DEV, Direction::FromDevice, &syn2, t(11_001));
    let key2 = FlowKey::of(
        gw_packet::parse(&syn2).unwrap().ip().unwrap(),
        Direction::FromDevice,
    );
    assert!(names(&m, &DEV, &key2).is_empty());
    assert_eq!(names(&m, &DEV, &key).len(), 2);
    m.expire(t(11_001));
    assert!(
        m.snapshot_json()["devices"][0]["dns"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

fn syn_to(dev: Mac, port: u16) -> Vec<u8> {
    let up = ends(dev, "192.168.1.10", "192.0.2.1", Direction::FromDevice);
    build::tcp(&up, port, 80, TcpKind::Syn, 1, b"")
}

fn ports(m: &Monitor, dev: &Mac) -> Vec<u16> {
    let mut p: Vec<u16> = m.flows(dev).map(|f| f.key.local_port).collect();
    p.sort_unstable();
    p
}

fn check_balance(m: &Monitor, dev: &Mac) {
    let s = m.device_stats(dev).unwrap();
    let mut sum = s.retired;
    sum.add(s.non_ip);
    sum.add(s.malformed);
    for f in m.flows(dev) {
        sum.add(f.traffic);
    }
    assert_eq!(sum, s.traffic, "device {dev:?}");
}

#[test]
fn flows_per_device_are_bounded_least_recently_active_evicted() {
    let opts = Options {
        max_flows_per_device: 3,
        ..Options::default()
    };
    let mut m = monitor(&[DEV], opts);
    for (i, p) in [1000, 1001, 1002].into_iter().enumerate() {
        see(
            &mut m,
            DEV,
            Direction::FromDevice,
            &syn_to(DEV, p),
            t(i as u64),
        );
    }
    // 1000 is active again, so 1001 is the least recently active.
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &syn_to(DEV, 1000),
        t(10),
    );
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &syn_to(DEV, 1003),
        t(11),
    );
    assert_eq!(ports(&m, &DEV), [1000, 1002, 1003]);
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &syn_to(DEV, 1004),
        t(12),
    );
    assert_eq!(ports(&m, &DEV), [1000, 1003, 1004]);
    let s = m.device_stats(&DEV).unwrap();
    assert_eq!(s.flows_evicted, 2);
    assert_eq!(s.retired.from_device.packets, 2);
    check_balance(&m, &DEV);
    assert_eq!(m.snapshot_json()["devices"][0]["flows_evicted"], 2);
}

#[test]
fn flows_in_total_are_bounded_across_devices() {
    let opts = Options {
        max_flows_total: 3,
        ..Options::default()
    };
    let mut m = monitor(&[DEV, DEV2], opts);
    see(&mut m, DEV, Direction::FromDevice, &syn_to(DEV, 1), t(0));
    see(&mut m, DEV2, Direction::FromDevice, &syn_to(DEV2, 2), t(1));
    see(&mut m, DEV, Direction::FromDevice, &syn_to(DEV, 3), t(2));
    see(&mut m, DEV2, Direction::FromDevice, &syn_to(DEV2, 4), t(3));
    assert_eq!(m.flows_active(), 3);
    // The oldest flow overall (DEV's port 1) went.
    assert_eq!(ports(&m, &DEV), [3]);
    assert_eq!(ports(&m, &DEV2), [2, 4]);
    assert_eq!(m.device_stats(&DEV).unwrap().flows_evicted, 1);
    assert_eq!(m.device_stats(&DEV2).unwrap().flows_evicted, 0);
    check_balance(&m, &DEV);
    check_balance(&m, &DEV2);
}

#[test]
fn idle_flows_expire() {
    let opts = Options {
        flow_idle_timeout: Duration::from_secs(10),
        ..Options::default()
    };
    let mut m = monitor(&[DEV], opts);
    see(&mut m, DEV, Direction::FromDevice, &syn_to(DEV, 1), t(0));
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &syn_to(DEV, 2),
        t(5_000),
    );
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &syn_to(DEV, 3),
        t(9_999),
    );
    assert_eq!(ports(&m, &DEV), [1, 2, 3]);
    // At 10 s flow 1 has been idle for the timeout.
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &syn_to(DEV, 3),
        t(10_000),
    );
    assert_eq!(ports(&m, &DEV), [2, 3]);
    // Without traffic, expire() does it (flow 3 was active at 10 s).
    m.expire(t(19_999));
    assert_eq!(ports(&m, &DEV), [3]);
    assert_eq!(m.device_stats(&DEV).unwrap().flows_expired, 2);
    // A packet of an expired flow starts a new one.
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &syn_to(DEV, 1),
        t(30_000),
    );
    assert_eq!(ports(&m, &DEV), [1]);
    assert_eq!(m.device_stats(&DEV).unwrap().flows_expired, 3);
    let f = m.flows(&DEV).next().unwrap();
    assert_eq!(
        (f.first_seen, f.traffic.from_device.packets),
        (t(30_000), 1)
    );
    check_balance(&m, &DEV);
}

#[test]
fn unknown_devices_are_counted_not_recorded() {
    let mut m = monitor(&[DEV], Options::default());
    let f = syn_to(OTHER, 5);
    see(&mut m, OTHER, Direction::FromDevice, &f, t(0));
    m.observe_frame(&OTHER, Direction::ToDevice, b"junk", t(1));
    assert_eq!(m.unrecorded().from_device.bytes, f.len() as u64);
    assert_eq!(m.unrecorded().to_device.bytes, 4);
    assert!(!m.is_recorded(&OTHER));
    assert_eq!(m.flows(&OTHER).count(), 0);
    assert_eq!(m.flows_active(), 0);
    assert!(m.device_stats(&OTHER).is_none());
    assert!(m.spin_view(&OTHER).is_empty());
    assert_eq!(m.captured(&OTHER).count(), 0);
    assert!(matches!(
        m.write_pcap(&OTHER, Vec::new()),
        Err(MonitorError::UnknownDevice(d)) if d == "02:00:00:00:00:99"
    ));
    let snap = m.snapshot_json();
    assert_eq!(snap["devices"].as_array().unwrap().len(), 1);
    assert_eq!(snap["unrecorded"]["to_device"]["packets"], 1);
    assert_eq!(snap["devices"][0]["first_seen_ms"], serde_json::Value::Null);
}

#[test]
fn bad_configs_and_options_are_rejected() {
    let bad = [
        "",
        "[]",
        "{}",
        r#"{"devices": "02:00:00:00:00:01"}"#,
        r#"{"devices": [1]}"#,
        r#"{"devices": [], "extra": true}"#,
        r#"{"devices": ["02:00:00:00:00"]}"#,
        r#"{"devices": ["02:00:00:00:00:01:02"]}"#,
        r#"{"devices": ["02:00:00:00:00:zz"]}"#,
        r#"{"devices": [" 02:00:00:00:00:01"]}"#,
        r#"{"devices": ["01:00:5e:00:00:01"]}"#,
        r#"{"devices": ["ff:ff:ff:ff:ff:ff"]}"#,
        r#"{"devices": ["00:00:00:00:00:00"]}"#,
        r#"{"devices": ["02:00:00:00:00:0a", "02-00-00-00-00-0A"]}"#,
    ];
    for c in bad {
        assert!(
            Monitor::from_config(c, Options::default()).is_err(),
            "accepted {c:?}"
        );
    }
    assert!(matches!(
        Monitor::from_config(
            r#"{"devices": ["02:00:00:00:00:01", "nope"]}"#,
            Options::default()
        ),
        Err(MonitorError::InvalidMac { index: 1, .. })
    ));
    assert!(matches!(
        Monitor::from_config(r#"{"devices": ["02:00:00:00:00:0a", "02-00-00-00-00-0A"]}"#, Options::default()),
        Err(MonitorError::DuplicateDevice(d)) if d == "02:00:00:00:00:0a"
    ));
    assert!(matches!(
        Monitor::from_config("{}", Options::default()),
        Err(MonitorError::Config(_))
    ));

    let m = Monitor::from_config(
        r#"{"devices": ["02-00-00-00-00-0A", "02:00:00:00:00:01"]}"#,
        Options::default(),
    )
    .unwrap();
    let devs: Vec<Mac> = m.devices().copied().collect();
    assert_eq!(devs, [[2, 0, 0, 0, 0, 0x0a], DEV]);
    assert!(Monitor::from_config(r#"{"devices": []}"#, Options::default()).is_ok());

    let bad_opts = [
        Options {
            max_flows_per_device: 0,
            ..Options::default()
        },
        Options {
            max_flows_total: 0,
            ..Options::default()
        },
        Options {
            flow_idle_timeout: Duration::ZERO,
            ..Options::default()
        },
        Options {
            max_names_per_address: 0,
            ..Options::default()
        },
        Options {
            pcap_snaplen: 0,
            ..Options::default()
        },
        Options {
            pcap_snaplen: 262_145,
            ..Options::default()
        },
    ];
    for o in bad_opts {
        assert!(
            matches!(
                Monitor::new(&[DEV], o.clone()),
                Err(MonitorError::InvalidOption { .. })
            ),
            "{o:?}"
        );
    }
}

#[test]
fn snapshot_round_trips_and_has_the_documented_fields() {
    let mut m = monitor(&[DEV, DEV2], Options::default());
    let a = build::udp(
        &ends(DEV, "192.168.1.10", "192.168.1.1", Direction::ToDevice),
        53,
        53000,
        &cdn_answer(),
    );
    see(&mut m, DEV, Direction::ToDevice, &a, t(0));
    see(
        &mut m,
        DEV,
        Direction::FromDevice,
        &build::tcp(
            &ends(DEV, "192.168.1.10", "93.184.216.34", Direction::FromDevice),
            40000,
            443,
            TcpKind::Syn,
            1,
            b"",
        ),
        t(500),
    );
    let v = m.snapshot_json();
    let typed: Snapshot = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(typed, m.snapshot());
    assert_eq!(v["schema_version"], SCHEMA_VERSION);
    assert_eq!(v["flows_active"], 2);
    let d = &v["devices"][0];
    for k in [
        "mac",
        "first_seen_ms",
        "last_seen_ms",
        "from_device",
        "to_device",
        "non_ip",
        "malformed",
        "retired",
        "flows_active",
        "flows_expired",
        "flows_evicted",
        "dns_evicted",
        "pcap",
        "remotes",
        "flows",
        "dns",
    ] {
        assert!(d.get(k).is_some(), "device field {k}");
    }
    assert_eq!(d.as_object().unwrap().len(), 16);
    assert_eq!(d["mac"], "02:00:00:00:00:01");
    assert_eq!(d["first_seen_ms"], 1_700_000_000_000u64);
    assert_eq!(d["last_seen_ms"], 1_700_000_000_500u64);
    assert_eq!(d["pcap"]["packets"], 2);
    let f = &d["flows"][1];
    for k in [
        "protocol",
        "protocol_name",
        "local",
        "local_port",
        "remote",
        "remote_port",
        "icmp_type",
        "first_seen_ms",
        "last_seen_ms",
        "from_device",
        "to_device",
        "tcp_flags_from_device",
        "tcp_flags_to_device",
        "names",
    ] {
        assert!(f.get(k).is_some(), "flow field {k}");
    }
    assert_eq!(f["remote"], "93.184.216.34");
    assert_eq!(f["icmp_type"], serde_json::Value::Null);
    assert_eq!(
        f["names"],
        serde_json::json!(["www.example.com", "edge.cdn.example.net"])
    );
    let r = &d["remotes"];
    assert_eq!(r[0]["remote"], "192.168.1.1");
    assert_eq!(r[1]["remote"], "www.example.com");
    assert_eq!(r[1]["from_device"]["packets"], 1);
    assert_eq!(r[1]["protocols"], serde_json::json!(["tcp"]));
    assert_eq!(v["devices"][1]["mac"], "02:00:00:00:00:02");
    assert_eq!(v["devices"][1]["flows"], serde_json::json!([]));
}

/// Frames for the capture tests, with their directions and times (with sub-microsecond parts,
/// which pcap drops).
fn capture_frames() -> Vec<(Direction, Vec<u8>, SystemTime)> {
    let up4 = ends(DEV, "192.168.1.10", "93.184.216.34", Direction::FromDevice);
    let down4 = ends(DEV, "192.168.1.10", "93.184.216.34", Direction::ToDevice);
    let up6 = ends(DEV, "fd00::10", "2001:db8::1", Direction::FromDevice);
    let base = t(0) + Duration::from_nanos(123_456_789);
    vec![
        (
            Direction::FromDevice,
            build::tcp(&up4, 40000, 443, TcpKind::Syn, 1, b""),
            base,
        ),
        (
            Direction::ToDevice,
            build::tcp(&down4, 443, 40000, TcpKind::SynAck, 100, b""),
            base + Duration::from_micros(1500),
        ),
        (
            Direction::FromDevice,
            build::udp(&up6, 40001, 9999, b"hello"),
            base + Duration::from_millis(20),
        ),
        (
            Direction::FromDevice,
            build::icmpv4_echo(&up4, 1, 2, b"ping-payload"),
            base + Duration::from_secs(1),
        ),
        (
            Direction::FromDevice,
            build::arp_request(
                DEV,
                "192.168.1.10".parse().unwrap(),
                "192.168.1.1".parse().unwrap(),
            ),
            base + Duration::from_secs(2),
        ),
    ]
}

fn micros(at: SystemTime) -> Duration {
    let d = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    Duration::new(d.as_secs(), d.subsec_micros() * 1000)
}

#[test]
fn pcap_reads_back_with_identical_frames_and_timestamps() {
    let mut m = monitor(&[DEV], Options::default());
    let frames = capture_frames();
    for (dir, f, at) in &frames {
        see(&mut m, DEV, *dir, f, *at);
    }
    let mut buf = Vec::new();
    assert_eq!(m.write_pcap(&DEV, &mut buf).unwrap(), frames.len());
    let mut r = pcap_file::pcap::PcapReader::new(&buf[..]).unwrap();
    let h = r.header();
    assert_eq!(h.datalink, pcap_file::DataLink::ETHERNET);
    assert_eq!(h.ts_resolution, pcap_file::TsResolution::MicroSecond);
    assert_eq!(
        (h.version_major, h.version_minor, h.snaplen),
        (2, 4, 65_535)
    );
    let mut n = 0;
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        let (_, f, at) = &frames[n];
        assert_eq!(&p.data[..], &f[..]);
        assert_eq!(p.orig_len as usize, f.len());
        assert_eq!(p.timestamp, micros(*at));
        n += 1;
    }
    assert_eq!(n, frames.len());
}

#[test]
fn pcap_ring_keeps_the_newest_frames_within_bounds() {
    let opts = Options {
        pcap_max_packets_per_device: 100,
        pcap_max_bytes_per_device: 130,
        pcap_snaplen: 60,
        ..Options::default()
    };
    let mut m = monitor(&[DEV], opts);
    let up = ends(DEV, "192.168.1.10", "192.0.2.1", Direction::FromDevice);
    let big = build::udp(&up, 1, 2, &[7; 100]);
    for i in 0..5 {
        see(&mut m, DEV, Direction::FromDevice, &big, t(i));
    }
    // Each frame is cut to 60 bytes: two fit in 130.
    let caps: Vec<_> = m.captured(&DEV).collect();
    assert_eq!(caps.len(), 2);
    assert!(
        caps.iter()
            .all(|c| c.data.len() == 60 && c.orig_len as usize == big.len())
    );
    assert_eq!(caps[1].timestamp, micros(t(4)));
    let snap = m.snapshot_json();
    assert_eq!(
        snap["devices"][0]["pcap"],
        serde_json::json!({"packets": 2, "bytes": 120, "evicted": 3})
    );
    let mut buf = Vec::new();
    m.write_pcap(&DEV, &mut buf).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(&buf[..]).unwrap();
    assert_eq!(r.header().snaplen, 60);
    // pcap-file 2.0's checked reader rejects records shorter than their wire length (its issue
    // #36; tcpdump and Wireshark read them), so read the raw record.
    let p = r.next_raw_packet().unwrap().unwrap();
    assert_eq!((p.incl_len, p.orig_len as usize), (60, big.len()));
    assert_eq!(&p.data[..], &big[..60]);
    let ts = micros(t(3));
    assert_eq!(
        (p.ts_sec, p.ts_frac),
        (ts.as_secs() as u32, ts.subsec_micros())
    );
    // Capture can be switched off.
    let mut off = monitor(
        &[DEV],
        Options {
            pcap_max_packets_per_device: 0,
            ..Options::default()
        },
    );
    see(&mut off, DEV, Direction::FromDevice, &big, t(0));
    assert_eq!(off.write_pcap(&DEV, Vec::new()).unwrap(), 0);
}

fn find_tcpdump() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("tcpdump"))
        .find(|p| p.is_file())
}

/// tcpdump must decode the export. Its absence fails the test (`cargo xtask test` installs it).
#[test]
fn tcpdump_reads_the_export() {
    let tcpdump = find_tcpdump()
        .expect("tcpdump is not installed (apt-get install tcpdump; `cargo xtask test` does)");
    let mut m = monitor(&[DEV], Options::default());
    let frames = capture_frames();
    for (dir, f, at) in &frames {
        see(&mut m, DEV, *dir, f, *at);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dev.pcap");
    m.write_pcap(&DEV, std::fs::File::create(&path).unwrap())
        .unwrap();
    let out = Command::new(&tcpdump)
        .args(["-r"])
        .arg(&path)
        .args(["-nn", "-tt"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tcpdump failed: {stderr}");
    assert!(stderr.contains("EN10MB"), "link type: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    let expected = [
        "IP 192.168.1.10.40000 > 93.184.216.34.443: Flags [S], seq 1,",
        "IP 93.184.216.34.443 > 192.168.1.10.40000: Flags [S.], seq 100,",
        "IP6 fd00::10.40001 > 2001:db8::1.9999: UDP, length 5",
        "IP 192.168.1.10 > 93.184.216.34: ICMP echo request, id 1, seq 2, length 20",
        "ARP, Request who-has 192.168.1.1 tell 192.168.1.10, length 28",
    ];
    assert_eq!(lines.len(), expected.len(), "tcpdump printed:\n{stdout}");
    for ((line, want), (_, _, at)) in lines.iter().zip(expected).zip(&frames) {
        let ts = micros(*at);
        let stamp = format!("{}.{:06} ", ts.as_secs(), ts.subsec_micros());
        assert!(
            line.starts_with(&stamp),
            "{line:?} should start with {stamp:?}"
        );
        assert!(line.contains(want), "{line:?} should contain {want:?}");
    }
}

// ---- property tests -------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Step {
    device: u8,
    to_device: bool,
    dt_ms: i32,
    kind: u8,
    a: u8,
    port: u16,
    bytes: Vec<u8>,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..3,
        any::<bool>(),
        -2_000i32..8_000,
        0u8..7,
        any::<u8>(),
        any::<u16>(),
        proptest::collection::vec(any::<u8>(), 0..90),
    )
        .prop_map(|(device, to_device, dt_ms, kind, a, port, bytes)| Step {
            device,
            to_device,
            dt_ms,
            kind,
            a,
            port,
            bytes,
        })
}

/// A frame for a step: random bytes, valid frames of several kinds, DNS answers, or a valid
/// frame with one byte changed.
fn frame_of(s: &Step, dev: Mac) -> Vec<u8> {
    let dir = if s.to_device {
        Direction::ToDevice
    } else {
        Direction::FromDevice
    };
    let remote4 = format!("192.0.2.{}", s.a % 4);
    let remote6 = format!("2001:db8::{}", s.a % 4);
    let e4 = ends(dev, "10.0.0.2", &remote4, dir);
    let (sp, dp) = if s.to_device {
        (s.port % 4, 1000)
    } else {
        (1000, s.port % 4)
    };
    match s.kind {
        0 => s.bytes.clone(),
        1 => {
            let kinds = [
                TcpKind::Syn,
                TcpKind::SynAck,
                TcpKind::Ack,
                TcpKind::Fin,
                TcpKind::Rst,
            ];
            build::tcp(
                &e4,
                sp,
                dp,
                kinds[usize::from(s.a) % kinds.len()],
                1,
                &s.bytes,
            )
        }
        2 => build::udp(&ends(dev, "fd00::2", &remote6, dir), sp, dp, &s.bytes),
        3 => build::icmpv4_echo(&e4, 1, u16::from(s.a), &s.bytes),
        4 => {
            let name = ["a.example", "b.example", "c.example"][usize::from(s.a) % 3];
            let target = format!("192.0.2.{}", s.port % 4)
                .parse::<Ipv4Addr>()
                .unwrap();
            let msg = dns_response(
                name,
                vec![rr(name, u32::from(s.a), RData::A(A::from(target)))],
            );
            build::udp(&ends(dev, "10.0.0.2", "10.0.0.1", dir), 53, 53, &msg)
        }
        5 => build::arp_request(
            dev,
            "10.0.0.2".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
        ),
        _ => {
            let mut f = build::tcp(&e4, sp, dp, TcpKind::Ack, 1, &s.bytes);
            let i = usize::from(s.port) % f.len();
            f[i] ^= s.a | 1;
            f
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Integration tests have no lib.rs for the default persistence to find.
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("regressions"),
        )),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_traffic_never_panics_and_bytes_add_up(steps in proptest::collection::vec(step(), 1..60)) {
        let opts = Options {
            max_flows_per_device: 4,
            max_flows_total: 6,
            flow_idle_timeout: Duration::from_secs(30),
            max_dns_addresses_per_device: 3,
            max_names_per_address: 2,
            min_name_retention: Duration::from_secs(1),
            pcap_max_packets_per_device: 5,
            pcap_max_bytes_per_device: 600,
            pcap_snaplen: 100,
        };
        let mut m = monitor(&[DEV, DEV2], opts);
        let macs = [DEV, DEV2, OTHER];
        let mut now = t(0);
        let mut total = Traffic::default();
        for s in &steps {
            now = if s.dt_ms >= 0 {
                now + Duration::from_millis(s.dt_ms as u64)
            } else {
                now - Duration::from_millis(s.dt_ms.unsigned_abs().into())
            };
            let dev = macs[usize::from(s.device)];
            let dir = if s.to_device { Direction::ToDevice } else { Direction::FromDevice };
            let frame = frame_of(s, dev);
            total.dir_mut(dir).add_frame(frame.len());
            match gw_packet::parse(&frame) {
                Ok(p) if s.a % 2 == 0 => m.observe(&dev, dir, &p, &frame, now),
                _ => m.observe_frame(&dev, dir, &frame, now),
            }
            prop_assert!(m.flows(&DEV).count() <= 4 && m.flows(&DEV2).count() <= 4);
            prop_assert!(m.flows_active() <= 6);
        }
        // Everything observed is counted exactly once: per device plus unrecorded.
        let mut counted = m.unrecorded();
        for d in [DEV, DEV2] {
            counted.add(m.device_stats(&d).unwrap().traffic);
            check_balance(&m, &d);
            let caps: Vec<_> = m.captured(&d).collect();
            prop_assert!(caps.len() <= 5);
            prop_assert!(caps.iter().map(|c| c.data.len()).sum::<usize>() <= 600);
            prop_assert!(caps.iter().all(|c| c.data.len() <= 100));
            let mut buf = Vec::new();
            prop_assert_eq!(m.write_pcap(&d, &mut buf).unwrap(), caps.len());
            for f in m.flows(&d) {
                prop_assert!(f.names.len() <= 2);
            }
        }
        prop_assert_eq!(counted, total);
        prop_assert_eq!(
            m.flows_active(),
            m.flows(&DEV).count() + m.flows(&DEV2).count()
        );
        let snap: Snapshot = serde_json::from_value(m.snapshot_json()).unwrap();
        let flow_bytes: u64 = snap.devices.iter().flat_map(|d| &d.flows).map(|f| f.from_device.bytes + f.to_device.bytes).sum();
        let view_bytes: u64 = snap.devices.iter().flat_map(|d| &d.remotes).map(|r| r.from_device.bytes + r.to_device.bytes).sum();
        prop_assert_eq!(flow_bytes, view_bytes);
        prop_assert!(snap.devices.iter().all(|d| d.dns.len() <= 3));
        m.expire(now + Duration::from_secs(3600));
        prop_assert_eq!(m.flows_active(), 0);
        check_balance(&m, &DEV);
        check_balance(&m, &DEV2);
    }
}
