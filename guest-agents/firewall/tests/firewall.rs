//! The firewall against real MUD files and crafted traffic.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use gw_firewall::{
    Action, Decision, DeviceEntry, DevicePolicy, DropReason, Firewall, MudProfile, Options,
    PassReason, device_entry,
};
use gw_packet::build::{self, Endpoints, TcpKind};
use gw_packet::{Direction, Mac, parse};
use proptest::prelude::*;
use simple_dns::rdata::{A, AAAA, CNAME, RData};
use simple_dns::{CLASS, Name, Packet, ResourceRecord};

const DEV_MAC: Mac = [2, 0, 0, 0, 0, 0x10];
const GW_MAC: Mac = [2, 0, 0, 0, 0, 1];

fn fixture(name: &str) -> serde_json::Value {
    let path = format!("{}/tests/fixtures/mud/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture"))
        .expect("fixture is JSON")
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A frame between the device at `dev` and the remote `remote`, in `dir`.
fn ends(dir: Direction, dev: &str, remote: &str) -> Endpoints {
    match dir {
        Direction::FromDevice => Endpoints {
            src_mac: DEV_MAC,
            dst_mac: GW_MAC,
            src: ip(dev),
            dst: ip(remote),
        },
        Direction::ToDevice => Endpoints {
            src_mac: GW_MAC,
            dst_mac: DEV_MAC,
            src: ip(remote),
            dst: ip(dev),
        },
    }
}

struct Harness {
    fw: Firewall,
    now: Instant,
}

impl Harness {
    fn new(policy: Option<DevicePolicy>) -> Harness {
        Harness {
            fw: Firewall::new(policy, Options::default()),
            now: Instant::now(),
        }
    }

    fn with_mud(mud: serde_json::Value) -> Harness {
        let entry = DeviceEntry {
            mud: Some(mud),
            ..DeviceEntry::default()
        };
        Harness::new(Some(
            DevicePolicy::from_entry(&entry).expect("policy compiles"),
        ))
    }

    fn send(&mut self, dir: Direction, frame: Vec<u8>) -> Decision {
        let parsed = parse(&frame).expect("test frames parse");
        self.fw.inspect(dir, &parsed, &frame, self.now)
    }

    #[allow(clippy::too_many_arguments)]
    fn tcp(
        &mut self,
        dir: Direction,
        dev: &str,
        remote: &str,
        dev_port: u16,
        remote_port: u16,
        kind: TcpKind,
    ) -> Decision {
        let e = ends(dir, dev, remote);
        let (sp, dp) = match dir {
            Direction::FromDevice => (dev_port, remote_port),
            Direction::ToDevice => (remote_port, dev_port),
        };
        self.send(dir, build::tcp(&e, sp, dp, kind, 1, b""))
    }

    fn udp(
        &mut self,
        dir: Direction,
        dev: &str,
        remote: &str,
        dev_port: u16,
        remote_port: u16,
        payload: &[u8],
    ) -> Decision {
        let e = ends(dir, dev, remote);
        let (sp, dp) = match dir {
            Direction::FromDevice => (dev_port, remote_port),
            Direction::ToDevice => (remote_port, dev_port),
        };
        self.send(dir, build::udp(&e, sp, dp, payload))
    }

    /// The device asks `resolver` and gets `name` → `addr` (TTL `ttl`) back.
    fn resolve(&mut self, dev: &str, resolver: &str, name: &str, addr: &str, ttl: u32) {
        assert!(passes(&self.udp(
            Direction::FromDevice,
            dev,
            resolver,
            5353,
            53,
            b"query"
        )));
        let mut p = Packet::new_reply(1);
        let owner = Name::new_unchecked(name);
        p.answers.push(ResourceRecord::new(
            owner,
            CLASS::IN,
            ttl,
            match ip(addr) {
                IpAddr::V4(a) => RData::A(A::from(a)),
                IpAddr::V6(a) => RData::AAAA(AAAA::from(a)),
            },
        ));
        let answer = p.build_bytes_vec().unwrap();
        assert!(passes(&self.udp(
            Direction::ToDevice,
            dev,
            resolver,
            5353,
            53,
            &answer
        )));
    }

    fn advance(&mut self, secs: u64) {
        self.now += Duration::from_secs(secs);
        self.fw.expire(self.now);
    }
}

fn passes(d: &Decision) -> bool {
    matches!(d, Decision::Pass(_))
}

#[test]
fn every_fixture_parses_and_reports_what_it_cannot_enforce() {
    let expect: &[(&str, &[&str])] = &[
        ("osmud-draft-lightbulb2000.json", &[]),
        (
            "unsw-amazon-echo.json",
            &["\"controller\"", "ACL type \"ethernet-acl-type\""],
        ),
        ("unsw-lifx-bulb.json", &["\"controller\""]),
        ("brother-dcp-l2540dw.json", &["\"my-controller\""]),
        (
            "nist-sensor.json",
            &[
                "\"same-manufacturer\"",
                "\"manufacturer\"",
                "\"my-controller\"",
            ],
        ),
        ("nist-model-test.json", &["\"model\""]),
    ];
    for (file, findings) in expect {
        let p = MudProfile::parse(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        // (The model-test profile holds only `model` entries: nothing of it is installable.)
        assert_eq!(
            p.from_device.is_empty(),
            *file == "nist-model-test.json",
            "{file}"
        );
        assert!(p.url.starts_with("https://"), "{file}: {}", p.url);
        let text: Vec<String> = p.findings.iter().map(ToString::to_string).collect();
        for f in *findings {
            assert!(
                text.iter().any(|t| t.contains(f)),
                "{file}: no finding {f} in {text:#?}"
            );
        }
        if findings.is_empty() {
            assert!(text.is_empty(), "{file}: unexpected findings {text:#?}");
        }
        // Every unsupported accept entry is left out, so it cannot widen anything.
        for t in &text {
            assert!(
                t.contains("not installed") || t.contains("drops more"),
                "{t}"
            );
        }
        for ace in p.from_device.iter().chain(&p.to_device) {
            assert_eq!(ace.action, Action::Accept, "{file}: fixtures only accept");
        }
    }
}

#[test]
fn lightbulb_reaches_only_its_named_server_over_ipv6_and_only_outbound() {
    let mut h = Harness::with_mud(fixture("osmud-draft-lightbulb2000.json"));
    let dev = "2001:db8:1::10";
    let server = "2001:db8:99::1";
    // Before DNS told the device the name, the address is just an address.
    assert_eq!(
        h.tcp(Direction::FromDevice, dev, server, 40000, 443, TcpKind::Syn),
        Decision::Drop(DropReason::MudNoMatch)
    );
    h.resolve(dev, "2001:db8:1::1", "test.example.com", server, 60);
    let d = h.tcp(Direction::FromDevice, dev, server, 40001, 443, TcpKind::Syn);
    assert!(matches!(d, Decision::Pass(PassReason::Mud(_))), "{d:?}");
    assert_eq!(
        h.tcp(
            Direction::ToDevice,
            dev,
            server,
            40001,
            443,
            TcpKind::SynAck
        ),
        Decision::Pass(PassReason::Tracked)
    );
    assert_eq!(
        h.tcp(Direction::FromDevice, dev, server, 40001, 443, TcpKind::Ack),
        Decision::Pass(PassReason::Tracked)
    );
    // Port 80 on the same server, and the server opening a connection to the device: denied.
    assert!(!passes(&h.tcp(
        Direction::FromDevice,
        dev,
        server,
        40002,
        80,
        TcpKind::Syn
    )));
    assert!(!passes(&h.tcp(
        Direction::ToDevice,
        dev,
        server,
        443,
        50000,
        TcpKind::Syn
    )));
    // IPv4 to the same port: the profile is IPv6-only.
    h.resolve(
        "192.168.1.10",
        "192.168.1.1",
        "test.example.com",
        "198.51.100.7",
        60,
    );
    assert!(!passes(&h.tcp(
        Direction::FromDevice,
        "192.168.1.10",
        "198.51.100.7",
        40003,
        443,
        TcpKind::Syn
    )));
}

#[test]
fn names_expire_with_their_ttl_and_a_new_answer_renews_them() {
    let mut h = Harness::with_mud(fixture("unsw-amazon-echo.json"));
    let dev = "192.168.1.10";
    let cdn = "52.94.233.10";
    h.resolve(dev, "192.168.1.1", "dcape-na.amazon.com", cdn, 120);
    assert!(passes(&h.tcp(
        Direction::FromDevice,
        dev,
        cdn,
        41000,
        443,
        TcpKind::Syn
    )));
    assert!(passes(&h.tcp(
        Direction::ToDevice,
        dev,
        cdn,
        41000,
        443,
        TcpKind::SynAck
    )));
    // The open flow outlives the name; a new flow after expiry does not.
    h.advance(200);
    assert!(passes(&h.tcp(
        Direction::ToDevice,
        dev,
        cdn,
        41000,
        443,
        TcpKind::Ack
    )));
    assert_eq!(
        h.tcp(Direction::FromDevice, dev, cdn, 41001, 443, TcpKind::Syn),
        Decision::Drop(DropReason::MudNoMatch)
    );
    h.resolve(dev, "192.168.1.1", "dcape-na.amazon.com", cdn, 120);
    assert!(passes(&h.tcp(
        Direction::FromDevice,
        dev,
        cdn,
        41002,
        443,
        TcpKind::Syn
    )));
}

#[test]
fn cname_chains_count_for_the_name_asked() {
    let mut h = Harness::with_mud(fixture("unsw-amazon-echo.json"));
    let dev = "192.168.1.10";
    assert!(passes(&h.udp(
        Direction::FromDevice,
        dev,
        "192.168.1.1",
        5353,
        53,
        b"q"
    )));
    let mut p = Packet::new_reply(1);
    p.answers.push(ResourceRecord::new(
        Name::new_unchecked("dcape-na.amazon.com"),
        CLASS::IN,
        300,
        RData::CNAME(CNAME(Name::new_unchecked("edge.cloudfront.example"))),
    ));
    p.answers.push(ResourceRecord::new(
        Name::new_unchecked("edge.cloudfront.example"),
        CLASS::IN,
        300,
        RData::A(A::from(Ipv4Addr::new(203, 0, 113, 80))),
    ));
    let answer = p.build_bytes_vec().unwrap();
    assert!(passes(&h.udp(
        Direction::ToDevice,
        dev,
        "192.168.1.1",
        5353,
        53,
        &answer
    )));
    assert!(passes(&h.tcp(
        Direction::FromDevice,
        dev,
        "203.0.113.80",
        42000,
        443,
        TcpKind::Syn
    )));
}

#[test]
fn forged_dns_answers_without_a_query_teach_nothing() {
    let mut h = Harness::with_mud(fixture("unsw-amazon-echo.json"));
    let dev = "192.168.1.10";
    let mut p = Packet::new_reply(1);
    p.answers.push(ResourceRecord::new(
        Name::new_unchecked("dcape-na.amazon.com"),
        CLASS::IN,
        300,
        RData::A(A::from(Ipv4Addr::new(203, 0, 113, 66))),
    ));
    let answer = p.build_bytes_vec().unwrap();
    // No query went out: the "answer" is not part of any flow and is dropped unread.
    assert!(!passes(&h.udp(
        Direction::ToDevice,
        dev,
        "198.51.100.53",
        5353,
        53,
        &answer
    )));
    assert!(!passes(&h.tcp(
        Direction::FromDevice,
        dev,
        "203.0.113.66",
        42000,
        443,
        TcpKind::Syn
    )));
}

#[test]
fn local_networks_and_direction_initiated_from_real_profiles() {
    // LIFX: UDP 56700 with local peers both ways; TCP 56700 only when the device opens it.
    let mut h = Harness::with_mud(fixture("unsw-lifx-bulb.json"));
    let dev = "192.168.1.20";
    assert!(passes(&h.udp(
        Direction::FromDevice,
        dev,
        "192.168.1.30",
        56700,
        56700,
        b"x"
    )));
    assert!(!passes(&h.udp(
        Direction::FromDevice,
        dev,
        "93.184.216.34",
        56700,
        56700,
        b"x"
    )));
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/mud/unsw-lifx-bulb.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert!(text.contains("local-networks"));
    // An Internet host may not open anything to the bulb.
    assert!(!passes(&h.tcp(
        Direction::ToDevice,
        dev,
        "93.184.216.34",
        56700,
        40000,
        TcpKind::Syn
    )));
}

#[test]
fn model_test_profile_ports_and_protocols() {
    let mut h = Harness::with_mud(fixture("nist-model-test.json"));
    let p = MudProfile::parse(&fixture("nist-model-test.json")).unwrap();
    // Whatever was installed is enforced exactly: nothing else passes.
    assert!(!passes(&h.tcp(
        Direction::FromDevice,
        "192.168.1.40",
        "8.8.4.4",
        40000,
        22,
        TcpKind::Syn
    )));
    assert!(!passes(&h.udp(
        Direction::FromDevice,
        "192.168.1.40",
        "8.8.4.4",
        40000,
        9999,
        b"x"
    )));
    assert!(!p.findings.is_empty());
}

fn simple_mud(aces_from: serde_json::Value, aces_to: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "ietf-mud:mud": {
            "mud-version": 1,
            "mud-url": "https://example.com/test.json",
            "from-device-policy": {"access-lists": {"access-list": [{"name": "fr"}]}},
            "to-device-policy": {"access-lists": {"access-list": [{"name": "to"}]}}
        },
        "ietf-access-control-list:acls": {"acl": [
            {"name": "fr", "type": "ipv4-acl-type", "aces": {"ace": aces_from}},
            {"name": "to", "type": "ipv4-acl-type", "aces": {"ace": aces_to}}
        ]}
    })
}

#[test]
fn port_operators_ranges_and_drop_entries() {
    let mud = simple_mud(
        serde_json::json!([
            {"name": "no-telnet", "matches": {"ipv4": {"protocol": 6}, "tcp": {"destination-port": {"operator": "eq", "port": 23}}}, "actions": {"forwarding": "drop"}},
            {"name": "high", "matches": {"ipv4": {"protocol": 6}, "tcp": {"destination-port": {"lower-port": 8000, "upper-port": 8099}}}, "actions": {"forwarding": "accept"}},
            {"name": "low", "matches": {"udp": {"destination-port": {"operator": "lte", "port": 30}}}, "actions": {"forwarding": "accept"}},
            {"name": "net", "matches": {"ipv4": {"destination-ipv4-network": "198.51.100.0/24"}}, "actions": {"forwarding": "accept"}}
        ]),
        serde_json::json!([]),
    );
    let mut h = Harness::with_mud(mud);
    let dev = "192.168.1.10";
    assert_eq!(
        h.tcp(
            Direction::FromDevice,
            dev,
            "198.51.100.5",
            40000,
            23,
            TcpKind::Syn
        ),
        Decision::Drop(DropReason::MudDrop("fr/no-telnet".into()))
    );
    assert!(passes(&h.tcp(
        Direction::FromDevice,
        dev,
        "203.0.113.5",
        40000,
        8042,
        TcpKind::Syn
    )));
    assert!(!passes(&h.tcp(
        Direction::FromDevice,
        dev,
        "203.0.113.5",
        40000,
        8100,
        TcpKind::Syn
    )));
    assert!(passes(&h.udp(
        Direction::FromDevice,
        dev,
        "203.0.113.5",
        40000,
        30,
        b"x"
    )));
    assert!(!passes(&h.udp(
        Direction::FromDevice,
        dev,
        "203.0.113.5",
        40000,
        31,
        b"x"
    )));
    assert!(passes(&h.udp(
        Direction::FromDevice,
        dev,
        "198.51.100.9",
        40000,
        31,
        b"x"
    )));
    // Nothing opens toward the device.
    assert!(!passes(&h.udp(
        Direction::ToDevice,
        dev,
        "198.51.100.9",
        40001,
        31,
        b"x"
    )));
}

#[test]
fn unsupported_accept_is_left_out_and_unsupported_drop_is_widened() {
    let mud = simple_mud(
        serde_json::json!([
            {"name": "by-manufacturer", "matches": {"ietf-mud:mud": {"same-manufacturer": [null]}, "ipv4": {"protocol": 6}}, "actions": {"forwarding": "accept"}},
            {"name": "dscp-drop", "matches": {"ipv4": {"protocol": 17, "dscp": 46}}, "actions": {"forwarding": "drop"}},
            {"name": "all", "matches": {}, "actions": {"forwarding": "accept"}}
        ]),
        serde_json::json!([]),
    );
    let p = MudProfile::parse(&mud).unwrap();
    assert_eq!(p.from_device.len(), 2, "{:#?}", p.from_device);
    assert_eq!(p.findings.len(), 2, "{:#?}", p.findings);
    let mut h = Harness::with_mud(mud);
    // The dscp-drop entry now drops all UDP; TCP falls through to "all".
    assert!(!passes(&h.udp(
        Direction::FromDevice,
        "192.168.1.10",
        "203.0.113.5",
        4000,
        5000,
        b"x"
    )));
    assert!(passes(&h.tcp(
        Direction::FromDevice,
        "192.168.1.10",
        "203.0.113.5",
        4000,
        5000,
        TcpKind::Syn
    )));
}

#[test]
fn structural_errors_are_errors() {
    let bad = [
        serde_json::json!({}),
        serde_json::json!({"ietf-mud:mud": {}}),
        serde_json::json!({"ietf-mud:mud": {"mud-url": "https://x", "from-device-policy": {}}}),
        simple_mud(
            serde_json::json!([{"name": "p", "matches": {"tcp": {"destination-port": {"operator": "eq"}}}, "actions": {"forwarding": "accept"}}]),
            serde_json::json!([]),
        ),
        simple_mud(
            serde_json::json!([{"name": "p", "matches": {"ipv4": {"destination-ipv4-network": "2001:db8::/32"}}, "actions": {"forwarding": "accept"}}]),
            serde_json::json!([]),
        ),
        simple_mud(
            serde_json::json!([{"name": "p", "matches": {"ipv4": {"protocol": 300}}, "actions": {"forwarding": "accept"}}]),
            serde_json::json!([]),
        ),
    ];
    for b in bad {
        assert!(MudProfile::parse(&b).is_err(), "accepted {b}");
    }
    // A missing ACL is a finding (nothing installed), not an error.
    let mut m = simple_mud(serde_json::json!([]), serde_json::json!([]));
    m["ietf-access-control-list:acls"]["acl"]
        .as_array_mut()
        .unwrap()
        .remove(0);
    let p = MudProfile::parse(&m).unwrap();
    assert!(p.findings[0].to_string().contains("not defined"));
}

#[test]
fn lists_infrastructure_and_tracking() {
    let entry: DeviceEntry = serde_json::from_value(serde_json::json!({
        "mud": simple_mud(serde_json::json!([]), serde_json::json!([])),
        "block": ["198.51.100.53", "tracker.example"],
        "allow": ["203.0.113.0/24", "updates.example"],
    }))
    .unwrap();
    let mut h = Harness::new(Some(DevicePolicy::from_entry(&entry).unwrap()));
    let dev = "192.168.1.10";
    // DHCP, DNS (to an unblocked resolver), ND pass on an empty profile.
    assert_eq!(
        h.udp(
            Direction::FromDevice,
            "0.0.0.0",
            "255.255.255.255",
            68,
            67,
            b"discover"
        ),
        Decision::Pass(PassReason::Infrastructure)
    );
    assert_eq!(
        h.udp(Direction::ToDevice, dev, "192.168.1.1", 68, 67, b"offer"),
        Decision::Pass(PassReason::Infrastructure)
    );
    assert_eq!(
        h.udp(Direction::FromDevice, dev, "198.51.100.53", 5000, 53, b"q"),
        Decision::Drop(DropReason::BlockList)
    );
    h.resolve(dev, "192.168.1.1", "cdn.tracker.example", "192.0.2.9", 300);
    assert_eq!(
        h.tcp(
            Direction::FromDevice,
            dev,
            "192.0.2.9",
            40000,
            443,
            TcpKind::Syn
        ),
        Decision::Drop(DropReason::BlockList)
    );
    assert_eq!(
        h.tcp(
            Direction::FromDevice,
            dev,
            "203.0.113.7",
            40000,
            443,
            TcpKind::Syn
        ),
        Decision::Pass(PassReason::AllowList)
    );
    h.resolve(dev, "192.168.1.1", "updates.example", "192.0.2.20", 300);
    assert_eq!(
        h.tcp(
            Direction::FromDevice,
            dev,
            "192.0.2.20",
            40000,
            443,
            TcpKind::Syn
        ),
        Decision::Pass(PassReason::AllowList)
    );
    // Not allowed: a different server, and an unsolicited segment.
    assert_eq!(
        h.tcp(
            Direction::FromDevice,
            dev,
            "192.0.2.21",
            40000,
            443,
            TcpKind::Syn
        ),
        Decision::Drop(DropReason::MudNoMatch)
    );
    // ICMP errors about a tracked peer pass; others do not.
    let e = ends(Direction::ToDevice, dev, "203.0.113.7");
    let mut unreachable = build::icmpv4_echo(&e, 1, 1, b"");
    // Turn the echo request into "destination unreachable" (type 3) and fix the checksum.
    let icmp_at = 14 + 20;
    unreachable[icmp_at] = 3;
    unreachable[icmp_at + 2] = 0;
    unreachable[icmp_at + 3] = 0;
    let sum = !unreachable[icmp_at..]
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .fold(0u32, |a, b| {
            let s = a + b;
            (s & 0xffff) + (s >> 16)
        }) as u16;
    unreachable[icmp_at + 2..icmp_at + 4].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        h.send(Direction::ToDevice, unreachable),
        Decision::Pass(PassReason::Related)
    );
    let e2 = ends(Direction::ToDevice, dev, "192.0.2.99");
    let mut other = build::icmpv4_echo(&e2, 1, 1, b"");
    other[icmp_at] = 3;
    assert!(!passes(&h.send(Direction::ToDevice, other)));
    let s = h.fw.stats();
    assert_eq!(s.dropped["block_list"], 2);
    assert!(s.passed["infrastructure"] >= 2);
    assert!(s.dns_addresses >= 2);
}

#[test]
fn tcp_needs_a_syn_under_a_profile_and_close_ends_the_flow() {
    let mud = simple_mud(
        serde_json::json!([{"name": "web", "matches": {"tcp": {"destination-port": {"operator": "eq", "port": 443}, "ietf-mud:direction-initiated": "from-device"}}, "actions": {"forwarding": "accept"}}]),
        serde_json::json!([]),
    );
    let mut h = Harness::with_mud(mud);
    let (dev, srv) = ("192.168.1.10", "203.0.113.1");
    assert_eq!(
        h.tcp(Direction::FromDevice, dev, srv, 40000, 443, TcpKind::Ack),
        Decision::Drop(DropReason::NoConnection)
    );
    assert!(passes(&h.tcp(
        Direction::FromDevice,
        dev,
        srv,
        40000,
        443,
        TcpKind::Syn
    )));
    assert!(passes(&h.tcp(
        Direction::ToDevice,
        dev,
        srv,
        40000,
        443,
        TcpKind::SynAck
    )));
    assert!(passes(&h.tcp(
        Direction::FromDevice,
        dev,
        srv,
        40000,
        443,
        TcpKind::Fin
    )));
    assert!(passes(&h.tcp(
        Direction::ToDevice,
        dev,
        srv,
        40000,
        443,
        TcpKind::Fin
    )));
    h.advance(11);
    assert_eq!(h.fw.stats().flows_active, 0);
    assert_eq!(
        h.tcp(Direction::ToDevice, dev, srv, 40000, 443, TcpKind::Ack),
        Decision::Drop(DropReason::MudNoMatch)
    );
}

#[test]
fn a_new_policy_cuts_flows_it_no_longer_allows() {
    let allow = |port: u16| {
        let mud = simple_mud(
            serde_json::json!([{"name": "p", "matches": {"udp": {"destination-port": {"operator": "eq", "port": port}}}, "actions": {"forwarding": "accept"}}]),
            serde_json::json!([]),
        );
        DevicePolicy::from_entry(&DeviceEntry {
            mud: Some(mud),
            ..DeviceEntry::default()
        })
        .unwrap()
    };
    let mut h = Harness::new(Some(allow(1000)));
    let dev = "192.168.1.10";
    assert!(passes(&h.udp(
        Direction::FromDevice,
        dev,
        "203.0.113.1",
        5000,
        1000,
        b"x"
    )));
    assert!(passes(&h.udp(
        Direction::FromDevice,
        dev,
        "192.168.1.1",
        5001,
        53,
        b"q"
    )));
    h.fw.set_policy(Some(allow(2000)));
    let s = h.fw.stats();
    assert_eq!(s.flows_revoked, 1);
    assert_eq!(s.flows_active, 1, "the DNS flow stays");
    assert!(!passes(&h.udp(
        Direction::ToDevice,
        dev,
        "203.0.113.1",
        5000,
        1000,
        b"x"
    )));
}

#[test]
fn a_full_table_fails_closed_and_config_files_are_read_by_device() {
    let opts = Options {
        max_flows: 2,
        ..Options::default()
    };
    let mut fw = Firewall::new(None, opts);
    let mut decide = |port: u16| {
        let e = ends(Direction::FromDevice, "192.168.1.10", "203.0.113.1");
        let f = build::udp(&e, port, 9, b"x");
        fw.inspect(
            Direction::FromDevice,
            &parse(&f).unwrap(),
            &f,
            Instant::now(),
        )
    };
    assert!(passes(&decide(1)));
    assert!(passes(&decide(2)));
    assert_eq!(decide(3), Decision::Drop(DropReason::TableFull));

    let config =
        r#"{"devices": {"02:00:00:00:00:10": {"block": ["10.0.0.1"]}, "02:00:00:00:00:11": {}}}"#;
    let e = device_entry(config, &DEV_MAC).unwrap().unwrap();
    assert_eq!(e.block, ["10.0.0.1"]);
    assert!(
        device_entry(config, &[2, 0, 0, 0, 0, 0x12])
            .unwrap()
            .is_none()
    );
    assert!(device_entry(r#"{"devices": {"nope": {}}}"#, &DEV_MAC).is_err());
    assert!(device_entry("[]", &DEV_MAC).is_err());
    let bad = DeviceEntry {
        block: vec!["not a name".into()],
        ..DeviceEntry::default()
    };
    assert!(DevicePolicy::from_entry(&bad).is_err());
}

proptest! {
    /// With an empty profile nothing but infrastructure opens a flow, and nothing untracked
    /// comes back.
    #[test]
    fn empty_profile_admits_only_infrastructure(
        from_dev in any::<bool>(),
        remote in any::<u32>(),
        sport in any::<u16>(),
        dport in any::<u16>(),
        tcp in any::<bool>(),
    ) {
        let mut h = Harness::with_mud(simple_mud(serde_json::json!([]), serde_json::json!([])));
        let dir = if from_dev { Direction::FromDevice } else { Direction::ToDevice };
        let remote = Ipv4Addr::from(remote).to_string();
        let d = if tcp {
            h.tcp(dir, "192.168.1.10", &remote, sport, dport, TcpKind::Syn)
        } else {
            h.udp(dir, "192.168.1.10", &remote, sport, dport, b"x")
        };
        let infra = match (dir, tcp) {
            (Direction::FromDevice, _) => dport == 53 || (!tcp && ((sport, dport) == (68, 67) || (sport, dport) == (546, 547))),
            (Direction::ToDevice, false) => (dport, sport) == (68, 67) || (dport, sport) == (546, 547),
            (Direction::ToDevice, true) => false,
        };
        prop_assert_eq!(passes(&d), infra, "{:?}", d);
    }
}

#[test]
fn a_server_on_the_device_answers_connections_its_profile_lets_in() {
    let mud = simple_mud(
        serde_json::json!([]),
        serde_json::json!([{"name": "http-in", "matches": {"ipv4": {"protocol": 6}, "tcp": {"destination-port": {"operator": "eq", "port": 80}, "ietf-mud:direction-initiated": "to-device"}}, "actions": {"forwarding": "accept"}}]),
    );
    let mut h = Harness::with_mud(mud);
    let (dev, cli) = ("192.168.77.10", "192.168.77.20");
    let d = h.tcp(Direction::ToDevice, dev, cli, 80, 45000, TcpKind::Syn);
    assert!(matches!(d, Decision::Pass(PassReason::Mud(_))), "{d:?}");
    assert_eq!(
        h.tcp(Direction::FromDevice, dev, cli, 80, 45000, TcpKind::SynAck),
        Decision::Pass(PassReason::Tracked)
    );
    // The device may not open port 80 elsewhere.
    assert!(!passes(&h.tcp(
        Direction::FromDevice,
        dev,
        cli,
        45001,
        80,
        TcpKind::Syn
    )));
}
