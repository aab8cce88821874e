//! Matching semantics: content positions, nocase, negation, pcre, byte options, header
//! fields, flow state, per-device scoping, pass/drop/alert precedence, counters.

mod common;

use common::{DEV, GW, Harness, OTHER_DEV, ep, rev};
use gw_ids::{Action, FlowState, IdsConfig, RuleSet, VerdictAction, load};
use gw_packet::Direction;
use gw_packet::build::{self, TcpKind};

fn set(rules: &str) -> RuleSet {
    let (rules, report) = load(rules);
    assert!(report.skipped.is_empty(), "{report:#?}");
    RuleSet::new(rules.into_iter().map(|r| r.rule).collect())
}

const STATELESS: FlowState = FlowState {
    from_client: true,
    established: false,
};

/// Sids of `set` matching a TCP packet 192.168.1.10:40000 → 203.0.113.5:80 with `payload`.
/// Also checks that the prefilter and brute force agree.
fn tcp_hits(set: &RuleSet, payload: &[u8]) -> Vec<u32> {
    let f = build::tcp(
        &ep("192.168.1.10", "203.0.113.5"),
        40000,
        80,
        TcpKind::Ack,
        1,
        payload,
    );
    hits(set, &f, STATELESS)
}

fn hits(set: &RuleSet, frame: &[u8], flow: FlowState) -> Vec<u32> {
    let parsed = gw_packet::parse(frame).unwrap();
    let p = common::packet(frame, &parsed, flow);
    let fast = set.matching(&p);
    assert_eq!(fast, set.matching_brute_force(&p));
    let mut sids: Vec<u32> = fast.iter().map(|&i| set.rule(i).unwrap().sid).collect();
    sids.sort_unstable();
    sids
}

fn fires(rule_options: &str, payload: &[u8]) -> bool {
    let s = set(&format!(
        "alert tcp any any -> any any ({rule_options} sid:1;)"
    ));
    !tcp_hits(&s, payload).is_empty()
}

#[test]
fn offset_and_depth() {
    let r = r#"content:"abc"; offset:2; depth:5;"#;
    assert!(fires(r, b"xxabc"));
    assert!(fires(r, b"xxxxabc"));
    assert!(!fires(r, b"xabcxxx"), "starts before offset");
    assert!(!fires(r, b"xxxxxabc"), "ends after offset+depth");
    assert!(fires(r#"content:"abc"; depth:3;"#, b"abcdef"));
    assert!(!fires(r#"content:"abc"; depth:3;"#, b"xabc"));
    assert!(
        fires(r#"content:"abc"; offset:-5;"#, b"abc"),
        "negative offset clamps to 0"
    );
    assert!(!fires(r#"content:"abc"; offset:1;"#, b"abc"));
}

#[test]
fn distance_and_within() {
    let r = r#"content:"ab"; content:"cd"; distance:2; within:4;"#;
    assert!(fires(r, b"ab..cd"));
    assert!(
        fires(r, b"ab....cd"),
        "cd ends exactly at cursor+distance+within"
    );
    assert!(!fires(r, b"ab.cd"), "before distance");
    assert!(!fires(r, b"ab.....cd"), "beyond within");
    assert!(!fires(r, b"cd..ab"), "order matters");
    // Negative distance: look back into the previous match.
    assert!(fires(
        r#"content:"abcd"; content:"bc"; distance:-3; within:2;"#,
        b"abcd"
    ));
    // within alone counts from the end of the previous match.
    assert!(fires(r#"content:"a"; content:"b"; within:1;"#, b"ab"));
    assert!(!fires(r#"content:"a"; content:"b"; within:1;"#, b"a.b"));
    // Another occurrence of the first content is tried when the later one fails (Snort's
    // retry): "a" at 2 is followed by "b".
    assert!(fires(r#"content:"a"; content:"b"; within:1;"#, b"a.ab"));
    // A non-relative content after a relative one is searched from the start again.
    assert!(fires(
        r#"content:"zz"; content:"q"; distance:0; content:"a"; depth:1;"#,
        b"azzq"
    ));
    // Three-level backtracking: the only solution uses the second "x" and the third "y".
    let r = r#"content:"x"; content:"y"; distance:0; content:"z"; within:1;"#;
    assert!(fires(r, b"x..y..xy.yz"));
    assert!(!fires(r, b"x..y..xy.y.z"));
}

#[test]
fn nocase_and_negation() {
    assert!(fires(r#"content:"GeT"; nocase;"#, b"xx get yy"));
    assert!(!fires(r#"content:"GeT";"#, b"xx get yy"));
    assert!(fires(r#"content:"a"; content:!"b";"#, b"a c"));
    assert!(!fires(r#"content:"a"; content:!"b";"#, b"a b"));
    // A negated relative content only looks in its window.
    let r = r#"content:"user"; content:!"root"; distance:0; within:8;"#;
    assert!(fires(r, b"user alice       root"));
    assert!(!fires(r, b"user root"));
    // As in Snort, a negated content whose window is empty (cursor at the end) fails.
    assert!(!fires(
        r#"content:"end"; content:!"x"; distance:0;"#,
        b"the end"
    ));
    assert!(fires(
        r#"content:"end"; content:!"x"; distance:0;"#,
        b"the end."
    ));
    assert!(fires(r#"content:!"x"; nocase;"#, b"abc"));
    assert!(!fires(r#"content:!"X"; nocase;"#, b"abxc"));
}

#[test]
fn fast_pattern_only_does_not_move_the_cursor() {
    // Snort does not evaluate a fast_pattern:only content in the rule tree, so the next
    // relative content counts from the start.
    let r = r#"content:"zzzz"; fast_pattern:only; content:"a"; distance:0; within:1;"#;
    assert!(fires(r, b"a...zzzz"));
    assert!(!fires(r, b"b...zzzz"));
    assert!(!fires(r, b"a...zzz"));
}

#[test]
fn pcre_options() {
    assert!(fires(r#"pcre:"/^GET\s+\/admin/i";"#, b"get   /ADMIN"));
    assert!(!fires(r#"pcre:"/^GET\s+\/admin/i";"#, b" get /admin"));
    assert!(fires(r#"pcre:!"/secret/";"#, b"nothing here"));
    assert!(!fires(r#"pcre:!"/secret/";"#, b"a secret"));
    // R: relative to the end of the previous match; ^ anchors there.
    let r = r#"content:"key="; pcre:"/^[0-9]{4}\b/R";"#;
    assert!(fires(r, b"x key=1234 y"));
    assert!(!fires(r, b"x key=12345"));
    assert!(!fires(r, b"1234 key=abcd"));
    // pcre moves the cursor to the end of its match.
    let r = r#"pcre:"/id=\d+/"; content:"&"; within:1;"#;
    assert!(fires(r, b"id=42&x"));
    assert!(!fires(r, b"id=42 &x"));
    // $ is PCRE's: end, or before a final newline.
    assert!(fires(r#"pcre:"/done$/";"#, b"all done\n"));
    assert!(!fires(r#"pcre:"/done$/";"#, b"all done\nmore"));
}

#[test]
fn isdataat_byte_test_byte_jump_pkt_data() {
    assert!(fires(r#"content:"LEN"; isdataat:4,relative;"#, b"LEN12345"));
    assert!(!fires(
        r#"content:"LEN"; isdataat:5,relative;"#,
        b"LEN12345"
    ));
    assert!(fires(
        r#"content:"LEN"; isdataat:!5,relative;"#,
        b"LEN12345"
    ));
    assert!(fires("isdataat:3;", b"abcd") && !fires("isdataat:4;", b"abcd"));
    // A length-prefixed field: jump over it, then look right after.
    let r = r#"content:"HDR"; byte_jump:1,0,relative; content:"END"; within:3;"#;
    assert!(fires(r, b"HDR\x03abcEND"));
    assert!(!fires(r, b"HDR\x02abcEND"));
    let r = r#"content:"v="; byte_test:3,>,100,0,relative,string,dec;"#;
    assert!(fires(r, b"v=101") && !fires(r, b"v=100") && !fires(r, b"v=1"));
    // pkt_data puts the cursor back at the start.
    let r = r#"content:"tail"; pkt_data; content:"head"; within:4;"#;
    assert!(fires(r, b"head...tail"));
    assert!(!fires(r, b".head..tail"));
}

#[test]
fn dsize_flags_and_header_options() {
    assert!(fires("dsize:3;", b"abc") && !fires("dsize:3;", b"abcd"));
    assert!(fires("dsize:2<>4;", b"abcd") && !fires("dsize:2<>4;", b"abcde"));
    assert!(fires("dsize:>2;", b"abc") && !fires("dsize:>3;", b"abc"));
    // build::tcp with payload sends PSH+ACK (0x18).
    assert!(fires("flags:PA;", b"x") && !fires("flags:A;", b"x"));
    assert!(fires("flags:A+;", b"x") && fires("flags:*SA;", b"x") && fires("flags:!SR;", b"x"));
    assert!(fires("flags:A,P;", b"x"), "P ignored by the mask");
    assert!(fires("seq:1;", b"x") && !fires("seq:2;", b"x"));
    assert!(fires("ack:1;", b"x") && fires("window:64240;", b"x"));
    assert!(fires("ttl:64;", b"x") && fires("ttl:60-70;", b"x") && !fires("ttl:<64;", b"x"));
    assert!(fires("ip_proto:tcp;", b"x") && !fires("ip_proto:udp;", b"x"));
    assert!(!fires("sameip;", b"x"));
}

#[test]
fn icmp_rules() {
    let s = set(r#"
alert icmp any any -> any any (itype:8; icode:0; icmp_id:77; icmp_seq:5; content:"ping"; depth:4; sid:1;)
alert icmp any any -> any any (itype:>5; dsize:8; sid:2;)
alert ip any any -> any any (content:"ping"; sid:3;)
alert udp any any -> any any (content:"ping"; sid:4;)
"#);
    let e = ep("192.168.1.10", "203.0.113.5");
    // The ICMP data starts after the 8-byte header: "ping" is at depth 4.
    let f = build::icmpv4_echo(&e, 77, 5, b"pingdata");
    assert_eq!(hits(&s, &f, STATELESS), [1, 2, 3]);
    let f = build::icmpv4_echo(&e, 78, 5, b"pingdata");
    assert_eq!(hits(&s, &f, STATELESS), [2, 3]);
    let f = build::udp(&e, 1, 2, b"pingdata");
    assert_eq!(hits(&s, &f, STATELESS), [3, 4]);
}

#[test]
fn addresses_ports_and_bidirectional() {
    let s = set(r#"
alert tcp [192.168.1.0/24,!192.168.1.99] any -> !203.0.113.0/24 ![80,443] (sid:1;)
alert tcp 192.168.1.10 40000 <> 198.51.100.1 22 (sid:2;)
alert tcp any any -> 2001:db8::/32 any (sid:3;)
"#);
    let one = |src: &str, dst: &str, sp: u16, dp: u16| {
        let f = build::tcp(&ep(src, dst), sp, dp, TcpKind::Ack, 1, b"x");
        hits(&s, &f, STATELESS)
    };
    assert_eq!(one("192.168.1.10", "198.51.100.1", 1, 8080), [1]);
    assert_eq!(
        one("192.168.1.99", "198.51.100.1", 1, 8080),
        Vec::<u32>::new()
    );
    assert_eq!(
        one("192.168.1.10", "203.0.113.1", 1, 8080),
        Vec::<u32>::new()
    );
    assert_eq!(
        one("192.168.1.10", "198.51.100.1", 1, 443),
        Vec::<u32>::new()
    );
    assert_eq!(one("192.168.1.10", "198.51.100.1", 40000, 22), [1, 2]);
    assert_eq!(one("198.51.100.1", "192.168.1.10", 22, 40000), [2]);
    assert_eq!(
        one("198.51.100.1", "192.168.1.10", 22, 40001),
        Vec::<u32>::new()
    );
    assert_eq!(one("fd00::1", "2001:db8::5", 1, 2), [3]);
    assert_eq!(one("fd00::1", "2001:db9::5", 1, 2), Vec::<u32>::new());
}

#[test]
fn flow_direction_and_established() {
    let mut h = Harness::new(
        r#"
alert tcp any any -> any any (msg:"to server established"; flow:to_server,established; content:"cmd"; sid:1;)
alert tcp any any -> any any (msg:"to client"; flow:to_client; content:"cmd"; sid:2;)
alert tcp any any -> any any (msg:"not established"; flow:not_established; content:"cmd"; sid:3;)
alert tcp any any -> any any (msg:"stateless"; flow:stateless; content:"cmd"; sid:4;)
alert udp any any -> any any (flow:established,from_server; content:"ans"; sid:5;)
"#,
    );
    let client = ep("192.168.1.10", "203.0.113.5");
    let server = rev(&client);
    // Before the handshake completes: not established.
    let f = build::tcp(&client, 40000, 80, TcpKind::Syn, 1, b"cmd");
    assert_eq!(h.sids(&f), [3, 4]);
    let f = build::tcp(&server, 80, 40000, TcpKind::SynAck, 1, b"cmd");
    assert_eq!(h.sids(&f), [2, 3, 4]);
    let f = build::tcp(&client, 40000, 80, TcpKind::Ack, 2, b"cmd");
    assert_eq!(
        h.sids(&f),
        [1, 4],
        "the handshake's final ACK is established"
    );
    let f = build::tcp(&server, 80, 40000, TcpKind::Ack, 2, b"cmd");
    assert_eq!(h.sids(&f), [2, 4]);
    // The device is the server here: a connection opened from outside.
    h.handshake(&server, 50000, 8080);
    let f = build::tcp(&client, 8080, 50000, TcpKind::Ack, 2, b"cmd");
    assert_eq!(h.sids(&f), [2, 4]);
    let f = build::tcp(&server, 50000, 8080, TcpKind::Ack, 2, b"cmd");
    assert_eq!(h.sids(&f), [1, 4]);
    // A RST ends the flow: later packets are midstream, never established.
    let f = build::tcp(&server, 50000, 8080, TcpKind::Rst, 3, b"");
    assert!(h.sids(&f).is_empty());
    let f = build::tcp(&server, 50000, 8080, TcpKind::Ack, 3, b"cmd");
    assert_eq!(h.sids(&f), [3, 4]);

    // UDP: established once the other side answered.
    let q = build::udp(&client, 5000, 53, b"ans");
    assert!(h.sids(&q).is_empty());
    let a = build::udp(&server, 53, 5000, b"ans");
    assert_eq!(h.sids(&a), [5]);
    // Idle flows expire; the next packet opens a new flow.
    h.tick(120);
    assert!(h.sids(&a).is_empty());
}

#[test]
fn per_device_scoping() {
    let mut h = Harness::new(
        r#"
alert tcp any any -> any any (msg:"everyone"; content:"evil"; sid:1;)
# device 02:00:00:00:00:01
drop tcp any any -> any any (msg:"device 1 only"; content:"evil"; sid:2;)
# device 02:00:00:00:00:09
alert tcp any any -> any any (msg:"device 9 only"; content:"evil"; sid:3;)
"#,
    );
    let e = ep("192.168.1.10", "203.0.113.5");
    let f = build::tcp(&e, 40000, 80, TcpKind::Ack, 1, b"evil");
    let v = h.send_as(DEV, Direction::FromDevice, &f);
    assert_eq!(v.action, VerdictAction::Drop);
    let got: Vec<_> = v
        .alerts
        .iter()
        .map(|a| (a.sid, a.device_rule, a.action))
        .collect();
    assert_eq!(got, [(2, true, Action::Drop), (1, false, Action::Alert)]);
    assert!(
        v.alerts
            .iter()
            .all(|a| a.direction == Direction::FromDevice)
    );
    let v = h.send_as(OTHER_DEV, Direction::FromDevice, &f);
    assert_eq!(v.action, VerdictAction::Pass);
    let got: Vec<_> = v.alerts.iter().map(|a| a.sid).collect();
    assert_eq!(got, [1, 3]);
    let v = h.send_as([2, 0, 0, 0, 0, 5], Direction::ToDevice, &f);
    let got: Vec<_> = v.alerts.iter().map(|a| a.sid).collect();
    assert_eq!(got, [1]);
    assert_eq!(h.ids.device_rules(&DEV).unwrap().len(), 1);
    assert!(h.ids.device_rules(&GW).is_none());
    assert_eq!(h.ids.global_rules().len(), 1);
}

#[test]
fn pass_drop_alert_precedence_and_counters() {
    let mut h = Harness::new(
        r#"
alert tcp any any -> any any (msg:"alert"; content:"bad"; sid:1; rev:2; classtype:misc-activity;)
drop tcp any any -> any any (msg:"drop"; content:"worse"; sid:2;)
reject tcp any any -> any any (msg:"reject"; content:"reject"; sid:3;)
sdrop tcp any any -> any any (msg:"sdrop"; content:"quiet"; sid:4;)
log tcp any any -> any any (msg:"log"; content:"note"; sid:5;)
pass tcp any any -> any 8443 (msg:"trusted"; content:"bad"; sid:6;)
"#,
    );
    let e = ep("192.168.1.10", "203.0.113.5");
    let mut send = |dp: u16, payload: &[u8]| {
        let f = build::tcp(&e, 40000, dp, TcpKind::Ack, 1, payload);
        h.send(&f)
    };
    let v = send(80, b"bad");
    assert_eq!(v.action, VerdictAction::Pass);
    assert_eq!(v.alerts.len(), 1);
    let a = &v.alerts[0];
    assert_eq!(
        (a.sid, a.rev, &*a.msg, a.action),
        (1, 2, "alert", Action::Alert)
    );
    assert_eq!(a.classtype.as_deref(), Some("misc-activity"));
    let v = send(80, b"bad and worse");
    assert_eq!(v.action, VerdictAction::Drop);
    let got: Vec<_> = v.alerts.iter().map(|a| a.sid).collect();
    assert_eq!(got, [2, 1], "drop-like alerts first");
    for (payload, sid, action) in [
        (&b"reject"[..], 3, Action::Reject),
        (b"quiet", 4, Action::Sdrop),
    ] {
        let v = send(80, payload);
        assert_eq!(v.action, VerdictAction::Drop);
        assert_eq!((v.alerts[0].sid, v.alerts[0].action), (sid, action));
    }
    let v = send(80, b"note");
    assert_eq!(
        (v.action, v.alerts[0].action),
        (VerdictAction::Pass, Action::Log)
    );
    // The pass rule suppresses the alert and the drop.
    let v = send(8443, b"bad and worse");
    assert_eq!(v.action, VerdictAction::Pass);
    assert!(v.alerts.is_empty());
    assert_eq!(v.passed_by, Some((1, 6)));
    let v = send(80, b"clean");
    assert_eq!((v.action, v.alerts.len()), (VerdictAction::Pass, 0));

    let arp = build::arp_request(
        DEV,
        "192.168.1.10".parse().unwrap(),
        "192.168.1.1".parse().unwrap(),
    );
    let v = h.send(&arp);
    assert_eq!((v.action, v.alerts.len()), (VerdictAction::Pass, 0));

    let s = h.ids.stats();
    assert_eq!(s.packets, 7);
    assert_eq!(s.non_ip, 1);
    assert_eq!(s.from_device, 7);
    assert_eq!(s.alerts, 6);
    assert_eq!(s.drops, 3);
    assert_eq!(s.pass_suppressed, 1);
    assert_eq!(s.budget_exhausted, 0);
    assert!(s.rules_evaluated >= 7);
    // Two flows: to port 80 and to port 8443.
    assert_eq!(s.flows.active, 2);
}

#[test]
fn prefilter_only_evaluates_candidates() {
    // 500 rules with distinct contents: a packet matching one of them evaluates only that
    // rule (plus the content-less one), not all of them.
    let mut text = String::new();
    for i in 0..500 {
        text.push_str(&format!(
            "alert tcp any any -> any any (content:\"token{i:04}\"; sid:{};)\n",
            i + 1
        ));
    }
    text.push_str("alert tcp any any -> any any (dsize:>1000; sid:9999;)\n");
    let (mut ids, report) = IdsConfig::parse(&text);
    assert_eq!(report.loaded, 501);
    let f = build::tcp(
        &ep("10.0.0.1", "10.0.0.2"),
        1,
        2,
        TcpKind::Ack,
        1,
        b"..token0042..",
    );
    let parsed = gw_packet::parse(&f).unwrap();
    let v = ids.inspect(
        &DEV,
        Direction::FromDevice,
        &parsed,
        &f,
        std::time::Instant::now(),
    );
    assert_eq!(v.alerts.iter().map(|a| a.sid).collect::<Vec<_>>(), [43]);
    assert_eq!(ids.stats().rules_evaluated, 2);
}
