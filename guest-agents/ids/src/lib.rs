//! Gatewarden IDS middlebox (library): Snort-syntax rules evaluated on the packets of each
//! protected IoT device.
//!
//! # Use
//!
//! ```
//! use std::time::Instant;
//! use gw_ids::{IdsConfig, VerdictAction};
//! use gw_packet::{Direction, build};
//!
//! let text = "\
//! ipvar HOME_NET 192.168.1.0/24
//! alert tcp $HOME_NET any -> any 23 (msg:\"telnet root\"; flow:to_server; content:\"root\"; sid:1000001; rev:1;)
//! # device 02:00:00:00:00:01
//! drop udp $HOME_NET any -> any 53 (msg:\"DNS tunnel\"; content:\"|00 10 00 01|\"; sid:1000002;)
//! ";
//! let (mut ids, report) = IdsConfig::parse(text);
//! assert_eq!((report.loaded, report.skipped.len()), (2, 0));
//!
//! let dev = [2, 0, 0, 0, 0, 1];
//! let ep = build::Endpoints {
//!     src_mac: dev,
//!     dst_mac: [2, 0, 0, 0, 0, 2],
//!     src: "192.168.1.10".parse().unwrap(),
//!     dst: "8.8.8.8".parse().unwrap(),
//! };
//! let frame = build::udp(&ep, 40000, 53, b"\x12\x34\x01\x00\x00\x10\x00\x01");
//! let parsed = gw_packet::parse(&frame).unwrap();
//! let v = ids.inspect(&dev, Direction::FromDevice, &parsed, &frame, Instant::now());
//! assert_eq!(v.action, VerdictAction::Drop);
//! assert_eq!(v.alerts[0].sid, 1000002);
//! ```
//!
//! # Configuration text
//!
//! Snort rules text: one rule per line or continued with a trailing `\`, `#` comments, blank
//! lines, and `var` / `ipvar` / `portvar` definitions (the Snort 2.9 `snort.conf` defaults are
//! predefined, see [`DEFAULT_VARIABLES`]; `HOME_NET` and `EXTERNAL_NET` are `any`). A comment
//! `# device aa:bb:cc:dd:ee:ff` starts the rules of one device; rules before the first such
//! header apply to every device. Other Snort directives (`include`, `config`,
//! `preprocessor`, ...) are reported in [`LoadReport::issues`] and ignored.
//!
//! # Supported rule language
//!
//! Header: `action proto src sport dir dst dport (options)`.
//!
//! - actions `alert`, `log`, `pass`, `drop`, `reject`, `sdrop` (the last three drop);
//! - protocols `ip` (every IP packet), `tcp`, `udp`, `icmp` (ICMPv4 and ICMPv6);
//! - addresses: `any`, IPv4 / IPv6 addresses and CIDRs, `$VAR`, lists `[a,b]` (nested),
//!   negation `!` (a list matches when some positive item matches, or it has none, and no
//!   negated item matches);
//! - ports: `any`, `80`, `1024:`, `:1023`, `1:100`, `$VAR`, lists, negation; `ip` and `icmp`
//!   rules must use `any`;
//! - direction `->` or `<>` (either way round).
//!
//! Options:
//!
//! - informational: `msg`, `sid` (required), `rev`, `gid`, `classtype`, `reference`,
//!   `metadata`, `priority`, and Snort 3's `service` and `rem` (`service` is ignored: the
//!   header's ports still apply, as in Snort without service detection);
//! - `content` with `|hex|` bytes, `\"` `\;` `\\` `\:` escapes and `!` negation, and its
//!   modifiers `nocase`, `offset`, `depth`, `distance`, `within`, `rawbytes` (the payload is
//!   raw anyway), `fast_pattern` (plain, `only`, `offset,length`, and Snort 3's
//!   `fast_pattern_offset` / `fast_pattern_length`), as separate options (Snort 2) or inside
//!   the content option after commas (Snort 3: `content:"a", nocase, depth 4;`);
//! - `pcre` with flags `i s m x A E G R B O` (see the `pcre` notes below);
//! - `isdataat:[!]n[,relative]`, `pkt_data` (cursor back to the start of the packet data);
//! - `byte_test` (operators `< > <= >= = & ^`, `!`, `relative`, `big`/`little`,
//!   `string[,hex|dec|oct]` (decimal when no base is given), `bitmask`) and `byte_jump` (`relative`, `multiplier`, `align`,
//!   `from_beginning`, `from_end`, `post_offset`, `bitmask`, same encodings); their `dce`
//!   form and `byte_extract` variables are unsupported;
//! - `flow` with `to_server`, `from_client`, `to_client`, `from_server`, `established`,
//!   `not_established`, `stateless`, and `no_stream` / `no_frag` (always true: nothing is
//!   reassembled);
//! - `dsize` (`N`, `<N`, `>N`, `A<>B` inclusive as in Snort 2.9, `A<=>B`), `flags` (with
//!   `+ * !` modifiers and an ignore mask), `itype`, `icode` (`A<>B` exclusive as in Snort),
//!   `icmp_id`, `icmp_seq` (echo messages), `ttl` (also `A-B`), `ip_proto`, `sameip`, `id`,
//!   `seq`, `ack`, `window`.
//!
//! Numbers in these may be compared with `=`, `!`, `<`, `>`, `<=`, `>=`.
//!
//! # Skip policy
//!
//! A rule is loaded whole or not at all. Every other option (`http_*` buffers and sticky
//! buffers, `uricontent`, `file_data`, `flowbits`, `byte_extract`, `byte_math`, `urilen`, `detection_filter`, `threshold`, `flow:only_stream`, `pcre` flags `U I P H D M C K S
//! Y`, regex syntax the `regex` crate lacks, ...) makes the rule [`RuleError::Unsupported`];
//! malformed rules get the other [`RuleError`] variants. Each skipped rule is in
//! [`LoadReport::skipped`] with its line, sid and reason, and
//! [`LoadReport::unsupported_options`] counts the skipped rules per unsupported option. A
//! duplicate `gid:sid` in the same scope is skipped (the first one stays). Loading never
//! panics, whatever the input.
//!
//! # Matching
//!
//! Each packet is inspected on its own (no stream reassembly, no HTTP or other protocol
//! decoding); the payload searched is the TCP/UDP payload, the ICMP data after the 8-byte ICMP
//! header, or the IP payload for other protocols ([`Packet`]).
//!
//! 1. The flow table ([`FlowTable`]) gives the packet's direction (from client or from
//!    server) and whether its flow is established.
//! 2. [`RuleSet`]: the packet's protocol group and the `ip` group are consulted; an
//!    Aho-Corasick scan of the payload over the rules' fast patterns selects candidate rules,
//!    and rules without a positive content are always candidates.
//! 3. Each candidate is verified fully: protocol, addresses and ports, the non-payload options,
//!    then the payload options in rule order with a cursor. A content with `offset`/`depth`
//!    searches `offset..offset+depth` of the payload; one with `distance`/`within` searches
//!    from the end of the previous match plus `distance`, `within` bytes long (Snort 3's
//!    `uniSearchReal` window, negative distances allowed, start clamped to 0). A negated content
//!    must not occur in its window (and, as in Snort, fails when its window is empty). A rule
//!    matches if *some* choice of occurrences satisfies every option in order, like Snort's
//!    retries of earlier matches; the search is memoised and bounded (20,000 steps per rule
//!    and packet; running out counts as no match and is counted in [`Stats`]).
//! 4. [`IdsConfig::inspect`] decides: any matching `pass` rule suppresses everything; else
//!    any `drop` / `reject` / `sdrop` drops the packet; all matching non-pass rules are
//!    reported as [`Alert`]s.
//!
//! ## `pcre`
//!
//! Evaluated with `regex::bytes` with Unicode off (PCRE's non-UTF mode); `$` without `m` is
//! PCRE's "end or before a final newline". Back references, look-around and other features
//! the `regex` crate lacks make the rule unsupported rather than approximated. A relative (`R`)
//! pcre searches from the cursor, where `^` anchors; the cursor moves to the end of the match.

mod bytes;
mod detect;
mod engine;
mod error;
mod flow;
mod ids;
mod load;
mod packet;
mod pcre;
mod rule;
mod vars;

pub use engine::{EvalStats, RuleId, RuleSet};
pub use error::{LineError, RuleError};
pub use flow::{FlowCounters, FlowSettings, FlowTable};
pub use ids::{Alert, IdsConfig, IdsOptions, Stats, Verdict, VerdictAction};
pub use load::{LineIssue, LoadReport, Scope, ScopedRule, SkippedRule, load, load_with};
pub use packet::{FlowState, Packet, TcpHeader};
pub use rule::{Action, FastPattern, Header, MAX_PAYLOAD_OPTIONS, MAX_RULE_LEN, Protocol, Rule};
pub use vars::{AddrSpec, DEFAULT_VARIABLES, IpNet, PortSpec, VarKind, Variables};
