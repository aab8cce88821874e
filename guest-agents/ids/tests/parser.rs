//! Rule parser and loader: every supported construct, and malformed or unsupported rules
//! rejected with their reasons.

use gw_ids::{
    Action, LineError, Protocol, Rule, RuleError, Scope, VarKind, Variables, load, load_with,
};

fn parse(text: &str) -> Result<Rule, RuleError> {
    Rule::parse(text, &Variables::default())
}

fn ok(text: &str) -> Rule {
    parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn unsupported(text: &str) -> Vec<String> {
    match parse(text) {
        Err(RuleError::Unsupported(names)) => names,
        other => panic!("{text}: expected unsupported, got {other:?}"),
    }
}

#[test]
fn actions_and_protocols() {
    for (word, action, drops) in [
        ("alert", Action::Alert, false),
        ("log", Action::Log, false),
        ("pass", Action::Pass, false),
        ("drop", Action::Drop, true),
        ("reject", Action::Reject, true),
        ("sdrop", Action::Sdrop, true),
    ] {
        let r = ok(&format!("{word} tcp any any -> any any (sid:1;)"));
        assert_eq!(r.action, action);
        assert_eq!(r.action.drops(), drops);
        assert_eq!(r.action.as_str(), word);
    }
    for (word, proto) in [
        ("ip", Protocol::Ip),
        ("tcp", Protocol::Tcp),
        ("udp", Protocol::Udp),
        ("icmp", Protocol::Icmp),
    ] {
        assert_eq!(
            ok(&format!("alert {word} any any -> any any (sid:1;)")).protocol,
            proto
        );
    }
    assert_eq!(
        parse("activate tcp any any -> any any (sid:1;)").unwrap_err(),
        RuleError::UnknownAction("activate".into())
    );
    let e = parse("alert http (msg:\"snort 3 service rule\"; sid:1;)").unwrap_err();
    assert_eq!(e, RuleError::UnsupportedProtocol("http".into()));
    assert!(e.is_unsupported());
}

#[test]
fn header_fields() {
    let r = ok("alert tcp [10.0.0.0/8, !10.1.0.0/16] ![80,443] <> 2001:db8::/32 1024: (sid:1;)");
    assert!(r.header.bidirectional);
    assert!(r.header.src.matches(&"10.2.0.1".parse().unwrap()));
    assert!(!r.header.src.matches(&"10.1.0.1".parse().unwrap()));
    assert!(r.header.src_ports.matches(81) && !r.header.src_ports.matches(443));
    assert!(r.header.dst.matches(&"2001:db8::1".parse().unwrap()));
    assert!(r.header.dst_ports.matches(1024) && !r.header.dst_ports.matches(1023));
    let r = ok("alert udp $HOME_NET :1023 -> $EXTERNAL_NET $HTTP_PORTS (sid:2;)");
    assert!(r.header.dst_ports.matches(8080) && !r.header.dst_ports.matches(22));
    assert!(r.header.src_ports.matches(0) && !r.header.src_ports.matches(1024));

    for (text, check) in [
        ("alert tcp any any <- any any (sid:1;)", "direction"),
        ("alert tcp any any -> any (sid:1;)", "fields"),
        ("alert tcp any any any -> any any (sid:1;)", "fields"),
        ("alert tcp 1.2.3.4/40 any -> any any (sid:1;)", "address"),
        ("alert tcp any 70000 -> any any (sid:1;)", "port"),
        ("alert tcp any 90:80 -> any any (sid:1;)", "port"),
        ("alert tcp any any -> [1.2.3.4 any any (sid:1;)", "header"),
        ("alert tcp $NOPE any -> any any (sid:1;)", "variable"),
        ("alert tcp any any -> any $NOPE (sid:1;)", "variable"),
        ("alert tcp !any any -> any any (sid:1;)", "address"),
        ("alert tcp any !any -> any any (sid:1;)", "port"),
        ("alert icmp any 8 -> any any (sid:1;)", "port"),
        ("alert tcp any any -> any any", "options"),
        ("alert tcp any any -> any any (sid:1;", "options"),
        ("alert tcp any any -> any any (sid:1;) trailing", "options"),
    ] {
        let e = parse(text).expect_err(text);
        let kind = match e {
            RuleError::Header(_) => "header",
            RuleError::Address { .. } => "address",
            RuleError::Port { .. } => "port",
            RuleError::UndefinedVariable(_) => "variable",
            RuleError::Options(_) => "options",
            _ => "other",
        };
        let expected = if check == "direction" || check == "fields" {
            "header"
        } else {
            check
        };
        assert_eq!(kind, expected, "{text}: {e}");
        assert!(!e.is_unsupported());
    }
}

#[test]
fn informational_options() {
    let r = ok(
        r#"alert tcp any any -> any any (msg:"a \"quoted\"\; msg"; gid:3; sid:1000; rev:7; classtype:trojan-activity; priority:2; reference:cve,2000-0138; reference:url,example.org/x; metadata:policy balanced-ips drop, ruleset community; service:http; rem:"remark";)"#,
    );
    assert_eq!(&*r.msg, "a \"quoted\"; msg");
    assert_eq!((r.gid, r.sid, r.rev), (3, 1000, 7));
    assert_eq!(r.classtype.as_deref(), Some("trojan-activity"));
    assert_eq!(r.priority, Some(2));
    assert_eq!(r.references, ["cve,2000-0138", "url,example.org/x"]);
    assert_eq!(r.metadata.len(), 1);
    assert_eq!(
        parse("alert tcp any any -> any any (msg:\"x\";)").unwrap_err(),
        RuleError::MissingSid
    );
    for bad in [
        "sid:0;",
        "sid:abc;",
        "sid:99999999999;",
        "sid;",
        "rev:x; sid:1;",
        "priority:-1; sid:1;",
    ] {
        let e = parse(&format!("alert tcp any any -> any any ({bad})")).unwrap_err();
        assert!(matches!(e, RuleError::Option { .. }), "{bad}: {e}");
    }
    let e = parse("alert tcp any any -> any any (s!d:1;)").unwrap_err();
    assert!(matches!(e, RuleError::Options(_)));
}

#[test]
fn content_strings() {
    let r = ok(r#"alert tcp any any -> any any (content:"A|42 43|D\"\;\\\:|0a0D|"; sid:1;)"#);
    assert_eq!(r.fast_pattern().unwrap().bytes, b"ABCD\";\\:\n\r");
    for bad in [
        r#"content:"";"#,
        r#"content:"abc;"#,
        r#"content:abc;"#,
        r#"content:"|4|";"#,
        r#"content:"|41 4g|";"#,
        r#"content:"|41";"#,
        r#"content:"a\x41";"#,
        r#"content:"abc" junk;"#,
        r#"nocase; content:"a";"#,
        r#"content:"abc"; depth:2;"#,
        r#"content:"abc"; within:2;"#,
        r#"content:"abc"; offset:1; distance:1;"#,
        r#"content:"abc"; within:5; depth:5;"#,
        r#"content:"abc"; depth:5; depth:6;"#,
        r#"content:"abc"; offset:70000;"#,
        r#"content:"abc"; fast_pattern:only; offset:1;"#,
        r#"content:!"abc"; fast_pattern:only;"#,
        r#"content:"abc"; fast_pattern:2,5;"#,
        r#"content:"abc"; fast_pattern; content:"de"; fast_pattern;"#,
        r#"content:"abc", bogus;"#,
    ] {
        let text = format!("alert tcp any any -> any any ({bad} sid:1;)");
        let e = parse(&text).expect_err(bad);
        assert!(!e.is_unsupported(), "{bad}: {e}");
    }
}

#[test]
fn fast_pattern_choice() {
    // Longest positive content by default; negated contents never.
    let r = ok(
        r#"alert tcp any any -> any any (content:"ab"; content:!"longest-negated"; content:"abcd"; nocase; sid:1;)"#,
    );
    let fp = r.fast_pattern().unwrap();
    assert_eq!((fp.bytes.as_slice(), fp.nocase), (&b"abcd"[..], true));
    // An explicit fast_pattern wins.
    let r =
        ok(r#"alert tcp any any -> any any (content:"ab"; fast_pattern; content:"abcd"; sid:1;)"#);
    assert_eq!(r.fast_pattern().unwrap().bytes, b"ab");
    // offset,length selects a slice; Snort 3 inline syntax too.
    let r = ok(r#"alert tcp any any -> any any (content:"abcdef"; fast_pattern:1,3; sid:1;)"#);
    assert_eq!(r.fast_pattern().unwrap().bytes, b"bcd");
    let r = ok(
        r#"alert tcp any any -> any any (content:"abcdef", fast_pattern_offset 2, fast_pattern_length 2; sid:1;)"#,
    );
    assert_eq!(r.fast_pattern().unwrap().bytes, b"cd");
    let r = ok(
        r#"alert tcp any any -> any any (content:"x"; content:"yy"; fast_pattern:only; sid:1;)"#,
    );
    assert_eq!(r.fast_pattern().unwrap().bytes, b"yy");
    // No positive content: no fast pattern.
    let r = ok(r#"alert tcp any any -> any any (content:!"x"; pcre:"/y/"; sid:1;)"#);
    assert!(r.fast_pattern().is_none());
    // Snort 3 modifiers inside the content option.
    let r = ok(
        r#"alert tcp any any -> any any (content:"GET", nocase, depth 3, fast_pattern; content:"x", distance 0, within 10; sid:1;)"#,
    );
    assert!(r.fast_pattern().unwrap().nocase);
}

#[test]
fn unsupported_options_are_listed_and_skip_the_rule() {
    assert_eq!(
        unsupported(
            r#"alert tcp any any -> any any (content:"GET"; http_method; content:"/x"; http_uri; flowbits:set,foo; sid:1;)"#
        ),
        ["http_method", "http_uri", "flowbits"]
    );
    // Snort 3 sticky buffer before its content.
    assert_eq!(
        unsupported(r#"alert tcp any any -> any any (http_uri; content:"/x"; sid:1;)"#),
        ["http_uri"]
    );
    assert_eq!(
        unsupported(r#"alert tcp any any -> any any (uricontent:"/x"; nocase; sid:1;)"#),
        ["uricontent"]
    );
    assert_eq!(
        unsupported(
            r#"alert tcp any any -> any any (content:"x"; pcre:"/a/Ui"; pcre:"/b/P"; sid:1;)"#
        ),
        ["pcre:U", "pcre:P"]
    );
    assert_eq!(
        unsupported(r#"alert tcp any any -> any any (pcre:"/(a)\1/"; sid:1;)"#),
        ["pcre (back reference)"]
    );
    let names = unsupported(r#"alert tcp any any -> any any (pcre:"/a(?=b)/"; sid:1;)"#);
    assert!(names[0].starts_with("pcre (regex:"), "{names:?}");
    assert_eq!(
        unsupported("alert tcp any any -> any any (flow:to_server,only_stream; sid:1;)"),
        ["flow:only_stream"]
    );
    assert_eq!(
        unsupported(
            r#"alert tcp any any -> any any (byte_extract:2,0,len; content:"x"; within:len; sid:1;)"#
        ),
        ["byte_extract", "within (byte_extract variable `len`)"]
    );
    assert_eq!(
        unsupported("alert tcp any any -> any any (byte_test:4,>,1,0,dce; sid:1;)"),
        ["byte_test (dce)"]
    );
    assert_eq!(
        unsupported(
            "alert tcp any any -> any any (detection_filter:track by_src, count 5, seconds 60; file_data; sid:1;)"
        ),
        ["detection_filter", "file_data"]
    );
}

#[test]
fn pcre_options() {
    ok(r#"alert tcp any any -> any any (pcre:"/^USER\s+w0rm/smi"; sid:1;)"#);
    ok(r#"alert tcp any any -> any any (content:"a"; pcre:!"/b/R"; sid:1;)"#);
    ok(r#"alert tcp any any -> any any (pcre:"m#a/b#xAEGBO"; sid:1;)"#);
    for bad in [
        r#"pcre:"/a/Q";"#,
        r#"pcre:"abc";"#,
        r#"pcre:/a/;"#,
        r#"pcre:"/a";"#,
    ] {
        let e = parse(&format!("alert tcp any any -> any any ({bad} sid:1;)")).expect_err(bad);
        assert!(matches!(e, RuleError::Option { .. }), "{bad}: {e}");
    }
}

#[test]
fn non_payload_options() {
    for good in [
        "flow:to_server,established;",
        "flow:established,to_client;",
        "flow:from_server;",
        "flow:from_client,not_established;",
        "flow:stateless;",
        "flow:to_server,no_stream;",
        "dsize:>300;",
        "dsize:300<>400;",
        "dsize:<=10;",
        "flags:SA,12;",
        "flags:+S;",
        "flags:A+;",
        "flags:!R;",
        "flags:*SF;",
        "flags:0;",
        "ttl:<5;",
        "ttl:3-5;",
        "ttl:-5;",
        "ip_proto:!tcp;",
        "ip_proto:47;",
        "sameip;",
        "id:31337;",
        "seq:0;",
        "ack:>100;",
        "window:!512;",
        "isdataat:10,relative;",
        "isdataat:!10;",
        "byte_test:4,>,1000,20,relative,little;",
        "byte_jump:4,12,relative,align,multiplier 2,post_offset -4;",
        "pkt_data;",
    ] {
        ok(&format!("alert tcp any any -> any any ({good} sid:1;)"));
    }
    ok("alert icmp any any -> any any (itype:8; icode:0; icmp_id:1; icmp_seq:2; sid:1;)");
    ok("alert icmp any any -> any any (itype:>5; icode:1<>4; sid:1;)");
    for bad in [
        "flow:to_server,to_client;",
        "flow:established,not_established;",
        "flow:stateless,established;",
        "flow:sideways;",
        "flow:to_server; flow:established;",
        "dsize:abc;",
        "dsize:70000;",
        "dsize:1; dsize:2;",
        "flags:XZ;",
        "flags:;",
        "flags:+*S;",
        "ttl:300;",
        "isdataat:70000;",
        "isdataat:1,sideways;",
        "byte_test:5,>,1,0;",
        "byte_test:2,~,1,0;",
        "byte_jump:2;",
        "itype:256;",
    ] {
        let e = parse(&format!("alert tcp any any -> any any ({bad} sid:1;)")).expect_err(bad);
        assert!(matches!(e, RuleError::Option { .. }), "{bad}: {e}");
    }
}

#[test]
fn loader_report() {
    let text = "\
# a comment, then a blank line

ipvar HOME_NET [192.168.0.0/16,!192.168.99.0/24]
portvar  MY_PORTS   [8000:8100,9000]
var OLD_STYLE 10.0.0.0/8
ipvar BROKEN [1.2.3.4
preprocessor stream5_tcp: policy first, ports both [ 21 23 ]
alert tcp $HOME_NET any -> $OLD_STYLE $MY_PORTS (msg:\"multi\"; \\
    content:\"abc\"; \\
    sid:10;)
alert tcp any any -> any any (content:\"x\"; http_uri; sid:11;)
alert tcp any any -> any any (content:\"x\"; depth:0; sid:12;)
alert tcp any any -> any any (msg:\"no sid\";)
alert tcp any any -> any any (sid:10;)
alert tcp any any -> any any (content:\"y\"; http_uri; http_header; sid:13;)
# device 02:00:00:00:00:01
alert tcp any any -> any any (sid:10;)
# device not-a-mac
alert tcp any any -> any any (sid:20;)
# device 02:00:00:00:00:02
alert udp any any -> any any (sid:21;)
";
    let (rules, report) = load(text);
    assert_eq!(report.loaded, 3);
    assert_eq!(
        rules
            .iter()
            .map(|r| (r.rule.sid, r.rule.line))
            .collect::<Vec<_>>(),
        [(10, 8), (10, 17), (21, 21)]
    );
    assert_eq!(rules[0].scope, Scope::AllDevices);
    assert_eq!(rules[1].scope, Scope::Device([2, 0, 0, 0, 0, 1]));
    assert_eq!(rules[2].scope, Scope::Device([2, 0, 0, 0, 0, 2]));
    assert!(
        rules[0]
            .rule
            .header
            .src
            .matches(&"192.168.1.1".parse().unwrap())
    );
    assert!(
        !rules[0]
            .rule
            .header
            .src
            .matches(&"192.168.99.1".parse().unwrap())
    );
    assert!(rules[0].rule.header.dst_ports.matches(9000));

    let skipped: Vec<_> = report
        .skipped
        .iter()
        .map(|s| (s.line, s.sid, s.reason.clone()))
        .collect();
    assert_eq!(skipped.len(), 6, "{skipped:#?}");
    assert_eq!(
        skipped[0],
        (
            11,
            Some(11),
            RuleError::Unsupported(vec!["http_uri".into()])
        )
    );
    assert_eq!(skipped[1].0, 12);
    assert!(matches!(skipped[1].2, RuleError::Option { .. }));
    assert_eq!(skipped[2], (13, None, RuleError::MissingSid));
    assert_eq!(
        skipped[3],
        (
            14,
            Some(10),
            RuleError::Duplicate {
                gid: 1,
                sid: 10,
                first_line: 8
            }
        )
    );
    assert_eq!(skipped[4].0, 15);
    assert_eq!(
        skipped[5],
        (19, Some(20), RuleError::InvalidDeviceScope(18))
    );
    assert_eq!(report.skipped_unsupported(), 2);
    assert_eq!(report.skipped_malformed(), 4);
    assert_eq!(report.unsupported_options.get("http_uri"), Some(&2));
    assert_eq!(report.unsupported_options.get("http_header"), Some(&1));

    let issues: Vec<_> = report.issues.iter().map(|i| i.line).collect();
    assert_eq!(issues, [6, 7, 18]);
    assert!(matches!(report.issues[0].error, LineError::Variable(_)));
    assert!(matches!(report.issues[1].error, LineError::Ignored(_)));
    assert!(matches!(report.issues[2].error, LineError::DeviceHeader(_)));
}

#[test]
fn custom_variables() {
    let mut vars = Variables::empty();
    vars.define(VarKind::Ip, "HOME_NET", "10.0.0.0/8").unwrap();
    let (rules, report) = load_with(
        "alert tcp $HOME_NET any -> any any (sid:1;)\nalert tcp $EXTERNAL_NET any -> any any (sid:2;)",
        vars,
    );
    assert_eq!(rules.len(), 1);
    assert_eq!(
        report.skipped[0].reason,
        RuleError::UndefinedVariable("EXTERNAL_NET".into())
    );
}
