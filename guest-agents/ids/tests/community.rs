//! The real Snort 2.9 community ruleset (tests/fixtures/community.rules, see the README
//! there): it loads with exactly the expected counts, every skip has a reason, and some of its
//! rules fire on crafted packets and stay quiet on near misses.

mod common;

use common::{Harness, ep, rev};
use gw_ids::{FlowState, IdsConfig, RuleError, RuleSet, load};
use gw_packet::build::{self, TcpKind};

const COMMUNITY: &str = include_str!("fixtures/community.rules");

/// Rules active (not commented out) in the file.
const ACTIVE: usize = 887;
/// Loaded / skipped counts observed for the active rules.
const LOADED: usize = 301;
const SKIPPED: usize = 586;

#[test]
fn loads_with_expected_counts_and_reasons() {
    let active = COMMUNITY
        .lines()
        .filter(|l| l.starts_with("alert "))
        .count();
    assert_eq!(active, ACTIVE);

    let (rules, report) = load(COMMUNITY);
    assert_eq!(report.loaded, LOADED, "{:#?}", report.unsupported_options);
    assert_eq!(report.skipped.len(), SKIPPED);
    assert_eq!(rules.len(), LOADED);
    assert_eq!(report.loaded + report.skipped.len(), ACTIVE);
    // Nothing in the published file is malformed: every skip is for unsupported features.
    assert_eq!(report.skipped_malformed(), 0);
    assert!(report.issues.is_empty(), "{:?}", report.issues);
    for s in &report.skipped {
        assert!(s.line > 0);
        assert!(
            s.sid.is_some(),
            "every community rule has a sid: line {}",
            s.line
        );
        let RuleError::Unsupported(names) = &s.reason else {
            panic!("line {}: {}", s.line, s.reason);
        };
        assert!(!names.is_empty() && !s.reason.to_string().is_empty());
        assert!(
            COMMUNITY
                .lines()
                .nth(s.line - 1)
                .unwrap()
                .starts_with("alert ")
        );
    }
    // The per-option counts tie to the skipped rules.
    let per_rule: usize = report
        .skipped
        .iter()
        .map(|s| match &s.reason {
            RuleError::Unsupported(n) => n.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(report.unsupported_options.values().sum::<usize>(), per_rule);
    for (name, count) in [
        ("http_uri", 336),
        ("http_header", 297),
        ("urilen", 127),
        ("file_data", 86),
        ("flowbits", 40),
        ("byte_extract", 2),
        ("detection_filter", 13),
        ("pcre:U", 72),
        ("pcre (back reference)", 1),
    ] {
        assert_eq!(report.unsupported_options.get(name), Some(&count), "{name}");
    }
    // All loaded rules are tcp or udp, with a fast pattern.
    assert!(rules.iter().all(|r| r.rule.fast_pattern().is_some()));
}

/// The 2,641 rules the file ships commented out, enabled: a much larger parser workout
/// (icmp rules, byte_jump, isdataat, flags, itype...).
#[test]
fn commented_out_rules_parse_too() {
    let enabled: String = COMMUNITY
        .lines()
        .map(|l| match l.strip_prefix("# alert ") {
            Some(rest) => format!("alert {rest}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let (rules, report) = load(&enabled);
    assert_eq!(report.loaded + report.skipped.len(), 3528);
    assert_eq!((report.loaded, report.skipped.len()), (1407, 2121));
    assert_eq!(report.skipped_malformed(), 0, "{:?}", report.skipped);
    assert!(report.skipped.iter().all(|s| s.sid.is_some()));
    // Compiling all of them into one set works, and the prefilter agrees with brute force on
    // payloads built from the rules' own fast patterns.
    let set = RuleSet::new(rules.into_iter().map(|r| r.rule).collect());
    let e = ep("192.168.1.10", "203.0.113.5");
    let mut checked = 0;
    for r in set.rules().iter().step_by(7) {
        let Some(fp) = r.fast_pattern() else { continue };
        let mut payload = b"xx".to_vec();
        payload.extend_from_slice(&fp.bytes);
        payload.extend_from_slice(b"\r\n");
        for frame in [
            build::tcp(&e, 40000, 80, TcpKind::Ack, 1, &payload),
            build::udp(&e, 40000, 53, &payload),
            build::icmpv4_echo(&e, 1, 1, &payload),
        ] {
            let parsed = gw_packet::parse(&frame).unwrap();
            for flow in [
                FlowState::default(),
                FlowState {
                    from_client: true,
                    established: true,
                },
            ] {
                let p = common::packet(&frame, &parsed, flow);
                assert_eq!(
                    set.matching(&p),
                    set.matching_brute_force(&p),
                    "sid {}",
                    r.sid
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "{checked}");
}

fn community_ids() -> Harness {
    let (ids, report) = IdsConfig::parse(COMMUNITY);
    assert_eq!(report.loaded, LOADED);
    Harness {
        ids,
        now: std::time::Instant::now(),
    }
}

/// sid 688 "SQL sa login failed": `flow:to_client,established; content:"Login failed for
/// user 'sa'"; fast_pattern:only;` from source port 1433.
#[test]
fn sql_sa_login_failed() {
    let mut h = community_ids();
    let client = ep("192.168.1.10", "198.51.100.7");
    let server = rev(&client);
    let reply = b"\x04\x01\x00\x40Login failed for user 'sa'.\x00";
    // Before any handshake the flow is not established: quiet.
    let f = build::tcp(&server, 1433, 40001, TcpKind::Ack, 7, reply);
    assert!(!h.sids(&f).contains(&688));
    h.handshake(&client, 40002, 1433);
    let f = build::tcp(&server, 1433, 40002, TcpKind::Ack, 501, reply);
    let v = h.send(&f);
    let a = v
        .alerts
        .iter()
        .find(|a| a.sid == 688)
        .expect("sid 688 fires");
    assert_eq!((a.gid, a.rev), (1, 16));
    assert_eq!(&*a.msg, "SQL sa login failed");
    // Near misses: another user; the same text sent by the client (to_server, and source port
    // not 1433).
    let f = build::tcp(
        &server,
        1433,
        40002,
        TcpKind::Ack,
        600,
        b"Login failed for user 'bob'",
    );
    assert!(!h.sids(&f).contains(&688));
    let f = build::tcp(&client, 40002, 1433, TcpKind::Ack, 102, reply);
    assert!(!h.sids(&f).contains(&688));
}

fn dns_query(id: u16, flags: u16, qname: &[u8]) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&flags.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(qname);
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

/// sid 24034: DNS query for jebena.ananikolic.su, `flow:to_server; byte_test:1,!&,0xF8,2;`
/// (a standard query, not a response) and the encoded name as `fast_pattern:only`.
#[test]
fn dns_blacklist_with_byte_test() {
    let mut h = community_ids();
    let dev = ep("192.168.1.10", "8.8.8.8");
    let name = b"\x06jebena\x0aananikolic\x02su\x00";
    let q = build::udp(&dev, 53000, 53, &dns_query(0x1234, 0x0100, name));
    assert!(h.sids(&q).contains(&24034));
    // Near misses: a response carrying the name (QR bit set: byte_test fails), another
    // domain, a query to another port.
    let resp = build::udp(&rev(&dev), 53, 53001, &dns_query(0x1234, 0x8180, name));
    assert!(!h.sids(&resp).contains(&24034));
    let other = b"\x06jebenb\x0aananikolic\x02su\x00";
    let q2 = build::udp(&dev, 53002, 53, &dns_query(1, 0x0100, other));
    assert!(!h.sids(&q2).contains(&24034));
    let q3 = build::udp(&dev, 53003, 5353, &dns_query(1, 0x0100, name));
    assert!(!h.sids(&q3).contains(&24034));
}

/// sid 21255: FTP banner `content:"220|20|"; depth:4; content:"0wns j0"; distance:0; nocase;`
/// from port 21, `flow:established,to_client`.
#[test]
fn ftp_banner_depth_distance_nocase() {
    let mut h = community_ids();
    let client = ep("192.168.1.10", "198.51.100.21");
    let server = rev(&client);
    h.handshake(&client, 40010, 21);
    let send = |h: &mut Harness, payload: &[u8]| {
        let f = build::tcp(&server, 21, 40010, TcpKind::Ack, 501, payload);
        h.sids(&f).contains(&21255)
    };
    assert!(send(&mut h, b"220 Welcome, this box 0WNS J0\r\n"));
    assert!(send(&mut h, b"220 0wns j0"));
    // "220 " must be at the start (depth 4), and the second content must follow it.
    assert!(!send(&mut h, b"230 0wns j0\r\n"));
    assert!(!send(&mut h, b" 220 0wns j0\r\n"));
    assert!(!send(&mut h, b"220 0wns j\r\n"));
}

/// sid 20080 (Derusbi): `content:"|00 00 00 01 00 00 00|"; depth:7; offset:1; content:"|01 00
/// 00 00 68 01 00 00|"; within:8; distance:8;` to port 12080, to_server established.
#[test]
fn derusbi_offset_depth_distance_within() {
    let mut h = community_ids();
    let client = ep("192.168.1.10", "198.51.100.80");
    h.handshake(&client, 40020, 12080);
    let build_payload = |lead: &[u8], gap: usize| {
        let mut p = lead.to_vec();
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0]);
        p.extend(std::iter::repeat_n(0xAA, gap));
        p.extend_from_slice(&[1, 0, 0, 0, 0x68, 1, 0, 0]);
        p.extend_from_slice(b"trailer");
        p
    };
    let send = |h: &mut Harness, payload: Vec<u8>| {
        let f = build::tcp(&client, 40020, 12080, TcpKind::Ack, 101, &payload);
        h.sids(&f).contains(&20080)
    };
    assert!(send(&mut h, build_payload(b"\x42", 8)));
    // First content at offset 0 or 2 instead of 1: outside offset 1 / depth 7.
    assert!(!send(&mut h, build_payload(b"", 8)));
    assert!(!send(&mut h, build_payload(b"\x42\x42", 8)));
    // Gap of 7 or 9 bytes: outside distance 8 / within 8.
    assert!(!send(&mut h, build_payload(b"\x42", 7)));
    assert!(!send(&mut h, build_payload(b"\x42", 9)));
}

/// sid 31607 (Glupteba): `dsize:15<>18; content:"|3A|bpass|0A|"; fast_pattern:only;
/// pcre:"/[0-9A-Z]{8}\x3abpass\x0a/";`.
#[test]
fn glupteba_dsize_and_pcre() {
    let mut h = community_ids();
    let client = ep("192.168.1.10", "198.51.100.99");
    h.handshake(&client, 40030, 7000);
    let mut send = |payload: &[u8]| {
        let f = build::tcp(&client, 40030, 7000, TcpKind::Ack, 101, payload);
        h.sids(&f).contains(&31607)
    };
    assert!(send(b"ABCD1234:bpass\n"));
    assert!(send(b"xxxAB12CD34:bpass\n"));
    assert!(!send(b"abcd1234:bpass\n"), "pcre is case-sensitive");
    assert!(
        !send(b"xxxxABCD1234:bpass\n"),
        "19 bytes: outside dsize 15<>18"
    );
    assert!(!send(b"ABCD1234:bpas\n\n"), "no fast pattern");
}
