//! A compiled rule set: rules grouped by protocol, each group with an Aho-Corasick prefilter.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use gw_packet::L4;

use crate::detect::Budget;
use crate::packet::Packet;
use crate::rule::{Protocol, Rule};

/// Index of a rule in its [`RuleSet`].
pub type RuleId = u32;

/// Fast patterns of a group being built, with their rules.
type Patterns = Vec<(Vec<u8>, RuleId)>;

/// One automaton over the distinct fast patterns of a group, with the rules behind each.
#[derive(Debug)]
struct Automaton {
    ac: AhoCorasick,
    rules_of_pattern: Vec<Vec<RuleId>>,
}

impl Automaton {
    fn build(mut patterns: Patterns, nocase: bool) -> Option<Automaton> {
        if patterns.is_empty() {
            return None;
        }
        if nocase {
            for (p, _) in &mut patterns {
                p.make_ascii_lowercase();
            }
        }
        patterns.sort();
        let mut distinct: Vec<Vec<u8>> = Vec::new();
        let mut rules_of_pattern: Vec<Vec<RuleId>> = Vec::new();
        for (p, r) in patterns {
            if distinct.last() != Some(&p) {
                distinct.push(p);
                rules_of_pattern.push(Vec::new());
            }
            if let Some(v) = rules_of_pattern.last_mut() {
                v.push(r);
            }
        }
        let ac = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .ascii_case_insensitive(nocase)
            .build(&distinct)
            // Building only fails when limits are exceeded; a rule set that large cannot
            // be held anyway. The group then falls back to checking its rules one by one
            // (see `Group::always`), which stays correct.
            .ok()?;
        Some(Automaton {
            ac,
            rules_of_pattern,
        })
    }

    fn candidates(&self, payload: &[u8], out: &mut Vec<RuleId>) {
        let mut seen = vec![false; self.rules_of_pattern.len()];
        for m in self.ac.find_overlapping_iter(payload) {
            let p = m.pattern().as_usize();
            if !seen[p] {
                seen[p] = true;
                out.extend_from_slice(&self.rules_of_pattern[p]);
            }
        }
    }
}

#[derive(Debug, Default)]
struct Group {
    exact: Option<Automaton>,
    nocase: Option<Automaton>,
    /// Rules without a fast pattern: checked on every packet of the group's protocol.
    always: Vec<RuleId>,
    /// Every rule of the group (for the brute-force reference evaluation).
    all: Vec<RuleId>,
}

/// Statistics of one evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvalStats {
    /// Rules fully evaluated (prefilter candidates and content-less rules).
    pub evaluated: u32,
    /// Evaluations that ran out of search budget (counted as no match).
    pub budget_exhausted: u32,
}

/// A compiled set of rules.
///
/// Rules are grouped by protocol (`tcp`, `udp`, `icmp`, `ip`). For each group, the fast
/// patterns of its rules go into two Aho-Corasick automata (case-sensitive, and ASCII
/// case-insensitive for `nocase` patterns); a packet's payload is scanned once per automaton
/// and only the rules whose fast pattern occurs are evaluated in full. Rules without a positive
/// content are evaluated on every packet of their protocol. The prefilter never loses a match:
/// a rule can only match a payload containing its fast pattern.
#[derive(Debug)]
pub struct RuleSet {
    rules: Vec<Rule>,
    tcp: Group,
    udp: Group,
    icmp: Group,
    ip: Group,
}

impl RuleSet {
    /// Compile `rules`.
    pub fn new(rules: Vec<Rule>) -> RuleSet {
        let mut per: [(Patterns, Patterns, Group); 4] = Default::default();
        for (i, r) in rules.iter().enumerate() {
            let id = i as RuleId;
            let g = match r.protocol {
                Protocol::Tcp => 0,
                Protocol::Udp => 1,
                Protocol::Icmp => 2,
                Protocol::Ip => 3,
            };
            let (exact, nocase, group) = &mut per[g];
            group.all.push(id);
            match r.fast_pattern() {
                Some(f) if f.nocase => nocase.push((f.bytes.clone(), id)),
                Some(f) => exact.push((f.bytes.clone(), id)),
                None => group.always.push(id),
            }
        }
        let [tcp, udp, icmp, ip] = per.map(|(exact, nocase, mut group)| {
            let fallback: Vec<RuleId> = exact.iter().chain(&nocase).map(|&(_, id)| id).collect();
            group.exact = Automaton::build(exact.clone(), false);
            group.nocase = Automaton::build(nocase.clone(), true);
            // If an automaton could not be built, its rules are checked one by one.
            if (group.exact.is_none() && !exact.is_empty())
                || (group.nocase.is_none() && !nocase.is_empty())
            {
                group.always.extend(fallback);
                group.always.sort_unstable();
                group.always.dedup();
                group.exact = None;
                group.nocase = None;
            }
            group
        });
        RuleSet {
            rules,
            tcp,
            udp,
            icmp,
            ip,
        }
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// True if there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules, indexed by [`RuleId`].
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// One rule.
    pub fn rule(&self, id: RuleId) -> Option<&Rule> {
        self.rules.get(id as usize)
    }

    fn groups(&self, l4: &L4) -> [Option<&Group>; 2] {
        let specific = match l4 {
            L4::Tcp { .. } => Some(&self.tcp),
            L4::Udp { .. } => Some(&self.udp),
            L4::Icmpv4 { .. } | L4::Icmpv6 { .. } => Some(&self.icmp),
            L4::Other(_) => None,
        };
        [specific, Some(&self.ip)]
    }

    /// The rules matching `p`, in ascending [`RuleId`] order, found through the prefilter.
    pub fn matching(&self, p: &Packet<'_>) -> Vec<RuleId> {
        self.matching_with_stats(p).0
    }

    /// [`RuleSet::matching`], with evaluation statistics.
    pub fn matching_with_stats(&self, p: &Packet<'_>) -> (Vec<RuleId>, EvalStats) {
        let mut cand = Vec::new();
        for g in self.groups(&p.l4).into_iter().flatten() {
            if !p.payload.is_empty() {
                if let Some(a) = &g.exact {
                    a.candidates(p.payload, &mut cand);
                }
                if let Some(a) = &g.nocase {
                    a.candidates(p.payload, &mut cand);
                }
            }
            cand.extend_from_slice(&g.always);
        }
        cand.sort_unstable();
        cand.dedup();
        self.evaluate(cand, p)
    }

    /// The rules matching `p`, found by evaluating every rule of the packet's protocol
    /// groups without the prefilter. A reference for tests: it must always equal
    /// [`RuleSet::matching`].
    pub fn matching_brute_force(&self, p: &Packet<'_>) -> Vec<RuleId> {
        let mut cand = Vec::new();
        for g in self.groups(&p.l4).into_iter().flatten() {
            cand.extend_from_slice(&g.all);
        }
        cand.sort_unstable();
        self.evaluate(cand, p).0
    }

    fn evaluate(&self, mut cand: Vec<RuleId>, p: &Packet<'_>) -> (Vec<RuleId>, EvalStats) {
        let mut stats = EvalStats::default();
        cand.retain(|&id| {
            let rule = &self.rules[id as usize];
            stats.evaluated += 1;
            let mut budget = Budget::new();
            let m = rule.matches_with(p, &mut budget);
            if budget.exhausted {
                stats.budget_exhausted += 1;
            }
            m
        });
        (cand, stats)
    }
}
