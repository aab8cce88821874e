//! Property tests: loading never panics, inspection never panics, and the Aho-Corasick
//! prefilter finds exactly what evaluating every rule finds.

mod common;

use gw_ids::{FlowState, IdsConfig, RuleSet, load};
use gw_packet::Direction;
use gw_packet::build::{self, TcpKind};
use proptest::prelude::*;

const COMMUNITY: &str = include_str!("fixtures/community.rules");

/// Fragments of rule syntax, so random texts get deep into the parser.
const FRAGMENTS: &[&str] = &[
    "alert ",
    "drop ",
    "pass ",
    "tcp ",
    "udp ",
    "icmp ",
    "ip ",
    "any ",
    "$HOME_NET ",
    "!",
    "[",
    "]",
    ",",
    "1.2.3.4/24 ",
    "::1 ",
    "80 ",
    "1024: ",
    ":1023 ",
    "-> ",
    "<> ",
    "(",
    ")",
    ";",
    ":",
    "\"",
    "|",
    "\\",
    "\n",
    "# device 02:00:00:00:00:01\n",
    "ipvar X [",
    "portvar P ",
    "content:",
    "content:!\"",
    "nocase;",
    "depth:",
    "offset:",
    "distance:",
    "within:",
    "-",
    "fast_pattern:only;",
    "fast_pattern:1,2;",
    "pcre:\"/",
    "/smiR\"",
    "(?=",
    "\\1",
    "flow:",
    "to_server,established",
    "dsize:",
    "<>",
    "flags:",
    "SA+",
    "itype:",
    "isdataat:",
    "byte_test:",
    "byte_jump:",
    ",relative",
    ",string,dec",
    "sid:",
    "rev:",
    "msg:\"",
    "7",
    "0",
    "65536",
    "4294967296",
    "http_uri;",
    "flowbits:set,x;",
    "pkt_data;",
    "é",
    "\u{0}",
];

fn rule_text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn loading_never_panics_on_arbitrary_text(text in "\\PC{0,400}") {
        let (rules, report) = load(&text);
        prop_assert_eq!(rules.len(), report.loaded);
        for s in &report.skipped {
            prop_assert!(!s.reason.to_string().is_empty());
        }
    }

    #[test]
    fn loading_never_panics_on_rule_like_text(text in rule_text()) {
        let (ids, report) = IdsConfig::parse(&text);
        let per_device: usize = [[2u8, 0, 0, 0, 0, 1]]
            .iter()
            .filter_map(|m| ids.device_rules(m))
            .map(RuleSet::len)
            .sum();
        prop_assert_eq!(ids.global_rules().len() + per_device, report.loaded);
    }
}

fn community() -> &'static RuleSet {
    static SET: std::sync::OnceLock<RuleSet> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        // Every rule, including those the file ships commented out.
        let enabled: String = COMMUNITY
            .lines()
            .map(|l| {
                l.strip_prefix("# ")
                    .filter(|r| r.starts_with("alert "))
                    .unwrap_or(l)
            })
            .flat_map(|l| [l, "\n"])
            .collect();
        RuleSet::new(load(&enabled).0.into_iter().map(|r| r.rule).collect())
    })
}

/// Payload bytes biased towards what community rules look for.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(
            prop::sample::select(&b"GET /\r\nUSER 220 \x00\x01|:;%=.php?AZaz09"[..]),
            0..300
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_payloads_never_panic_and_prefilter_agrees(
        data in payload(),
        proto in 0u8..3,
        sp in any::<u16>(),
        dp in any::<u16>(),
        from_client in any::<bool>(),
        established in any::<bool>(),
    ) {
        let set = community();
        let e = common::ep("192.168.1.10", "203.0.113.5");
        let frame = match proto {
            0 => build::tcp(&e, sp, dp, TcpKind::Ack, 1, &data),
            1 => build::udp(&e, sp, dp, &data),
            _ => build::icmpv4_echo(&e, sp, dp, &data),
        };
        let parsed = gw_packet::parse(&frame).unwrap();
        let p = common::packet(&frame, &parsed, FlowState { from_client, established });
        prop_assert_eq!(set.matching(&p), set.matching_brute_force(&p));
    }

    #[test]
    fn inspect_never_panics_on_random_frames(frames in prop::collection::vec(
        prop::collection::vec(any::<u8>(), 0..200), 1..20)
    ) {
        let (mut ids, _) = IdsConfig::parse(
            "alert ip any any -> any any (content:\"a\"; sid:1;)\nalert tcp any any -> any any (flow:established; sid:2;)",
        );
        let now = std::time::Instant::now();
        for mut f in frames {
            // Half of them get a valid Ethernet/IPv4 start so the IP path is exercised.
            if f.len() > 34 && f[0] & 1 == 0 {
                f[12] = 0x08;
                f[13] = 0x00;
                f[14] = 0x45;
            }
            if let Ok(parsed) = gw_packet::parse(&f) {
                ids.inspect(&common::DEV, Direction::FromDevice, &parsed, &f, now);
            }
        }
    }
}

/// A tiny deterministic generator, so the agreement check below can also count how often
/// rules matched (a check where nothing ever matches would prove nothing).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, v: &[&'a str]) -> &'a str {
        v[self.below(v.len() as u64) as usize]
    }
}

fn random_option(g: &mut Lcg) -> String {
    let atoms = ["a", "b", "ab", "ba", "aab", "B", "A|00|", "|00|b"];
    match g.below(10) {
        0..=5 => {
            let neg = if g.below(6) == 0 { "!" } else { "" };
            let mut s = format!("content:{neg}\"{}\";", g.pick(&atoms));
            if g.below(3) == 0 {
                s.push_str(" nocase;");
            }
            match g.below(5) {
                0 => s.push_str(&format!(
                    " offset:{}; depth:{};",
                    g.below(4),
                    3 + g.below(6)
                )),
                1 => s.push_str(&format!(
                    " distance:{}; within:{};",
                    g.below(5) as i64 - 2,
                    3 + g.below(6)
                )),
                2 => s.push_str(&format!(" distance:{};", g.below(3))),
                _ => {}
            }
            s
        }
        6 => format!(
            "pcre:\"/{}/{}\";",
            g.pick(&["a+b", "^b", "b.a", "(ab|ba){2}", "a\\x00?b$"]),
            g.pick(&["", "i", "R", "Ri", "s"])
        ),
        7 => format!(
            "isdataat:{}{}{};",
            if g.below(3) == 0 { "!" } else { "" },
            g.below(8),
            if g.below(2) == 0 { ",relative" } else { "" }
        ),
        8 => format!("dsize:{};", g.pick(&[">4", "<10", "3<>12", "8"])),
        _ => format!(
            "byte_test:1,{},{},{}{};",
            g.pick(&["<", ">", "=", "&", "!&"]),
            g.below(128),
            g.below(6),
            if g.below(2) == 0 { ",relative" } else { "" }
        ),
    }
}

#[test]
fn prefilter_agrees_with_brute_force_on_random_rule_sets() {
    let mut g = Lcg(0x5eed);
    let mut matched = 0usize;
    let mut packets = 0usize;
    for round in 0..60 {
        let mut text = String::new();
        for sid in 1..=40 {
            let proto = g.pick(&["tcp", "udp", "ip"]);
            let opts: Vec<String> = (0..1 + g.below(4)).map(|_| random_option(&mut g)).collect();
            text.push_str(&format!(
                "alert {proto} any any -> any any ({} sid:{sid};)\n",
                opts.join(" ")
            ));
        }
        let (rules, report) = load(&text);
        assert!(report.skipped_malformed() <= report.skipped.len());
        assert!(report.loaded >= 20, "round {round}: {:?}", report.skipped);
        let set = RuleSet::new(rules.into_iter().map(|r| r.rule).collect());
        for _ in 0..100 {
            let len = g.below(24) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    *[b'a', b'b', b'A', b'B', 0, b'x']
                        .get(g.below(6) as usize)
                        .unwrap()
                })
                .collect();
            let e = common::ep("10.0.0.1", "10.0.0.2");
            let frame = if g.below(2) == 0 {
                build::tcp(&e, 1, 2, TcpKind::Ack, 1, &data)
            } else {
                build::udp(&e, 1, 2, &data)
            };
            let parsed = gw_packet::parse(&frame).unwrap();
            let p = common::packet(&frame, &parsed, FlowState::default());
            let fast = set.matching(&p);
            assert_eq!(
                fast,
                set.matching_brute_force(&p),
                "round {round}\n{text}\n{data:?}"
            );
            matched += fast.len();
            packets += 1;
        }
    }
    assert_eq!(packets, 6000);
    // Both outcomes occur often: the agreement is not vacuous.
    assert!(matched > 3000, "only {matched} matches");
}

/// Single-content rules against a naive reading of Snort's offset/depth rule.
#[test]
fn content_offset_depth_against_naive_reference() {
    let mut g = Lcg(42);
    for _ in 0..3000 {
        let pat: Vec<u8> = (0..1 + g.below(3))
            .map(|_| b"ab"[g.below(2) as usize])
            .collect();
        let data: Vec<u8> = (0..g.below(12))
            .map(|_| b"ab"[g.below(2) as usize])
            .collect();
        let offset = g.below(6) as usize;
        let depth = pat.len() + g.below(6) as usize;
        let text = format!(
            "alert udp any any -> any any (content:\"{}\"; offset:{offset}; depth:{depth}; sid:1;)",
            String::from_utf8(pat.clone()).unwrap()
        );
        let set = RuleSet::new(load(&text).0.into_iter().map(|r| r.rule).collect());
        let frame = build::udp(&common::ep("10.0.0.1", "10.0.0.2"), 1, 2, &data);
        let parsed = gw_packet::parse(&frame).unwrap();
        let p = common::packet(&frame, &parsed, FlowState::default());
        let expected = (offset..data.len()).any(|i| {
            i + pat.len() <= data.len().min(offset + depth) && data[i..].starts_with(&pat)
        });
        assert_eq!(!set.matching(&p).is_empty(), expected, "{text} on {data:?}");
    }
}
