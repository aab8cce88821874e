//! The IDS middlebox state: per-device rule sets, the flow table, verdicts and counters.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use gw_packet::{Direction, Mac, Parsed};

use crate::engine::RuleSet;
use crate::flow::{FlowCounters, FlowSettings, FlowTable};
use crate::load::{LoadReport, Scope, load_with};
use crate::packet::Packet;
use crate::rule::{Action, Rule};
use crate::vars::Variables;

/// What to do with the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerdictAction {
    /// Forward it.
    Pass,
    /// Drop it.
    Drop,
}

/// A rule that fired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// Generator id.
    pub gid: u32,
    /// Signature id.
    pub sid: u32,
    /// Revision.
    pub rev: u32,
    /// Message.
    pub msg: Arc<str>,
    /// The rule's action (never [`Action::Pass`]).
    pub action: Action,
    /// Classification.
    pub classtype: Option<Arc<str>>,
    /// Which way the packet travelled.
    pub direction: Direction,
    /// True if the rule came from the device's own section, false for an all-devices rule.
    pub device_rule: bool,
}

/// The outcome of inspecting one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Forward or drop.
    pub action: VerdictAction,
    /// The non-pass rules that fired, drop-like actions first, then by gid and sid. Empty
    /// when a pass rule matched.
    pub alerts: Vec<Alert>,
    /// `(gid, sid)` of the pass rule that suppressed everything, if one matched.
    pub passed_by: Option<(u32, u32)>,
}

impl Verdict {
    fn pass() -> Verdict {
        Verdict {
            action: VerdictAction::Pass,
            alerts: Vec::new(),
            passed_by: None,
        }
    }
}

/// Counters of an [`IdsConfig`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// IP packets inspected.
    pub packets: u64,
    /// Non-IP frames (ARP, ...): passed without inspection.
    pub non_ip: u64,
    /// Packets sent by devices.
    pub from_device: u64,
    /// Packets sent to devices.
    pub to_device: u64,
    /// Alerts reported (one per fired non-pass rule).
    pub alerts: u64,
    /// Packets dropped.
    pub drops: u64,
    /// Packets on which a pass rule suppressed alerts or drops it would otherwise have had.
    pub pass_suppressed: u64,
    /// Full rule evaluations (prefilter candidates and content-less rules).
    pub rules_evaluated: u64,
    /// Rule evaluations that ran out of search budget (counted as no match).
    pub budget_exhausted: u64,
    /// Flow table counters.
    pub flows: FlowCounters,
}

/// Options for [`IdsConfig::parse_with`].
#[derive(Debug, Clone)]
pub struct IdsOptions {
    /// Variables the rules text starts with.
    pub variables: Variables,
    /// Flow table limits.
    pub flows: FlowSettings,
}

impl Default for IdsOptions {
    /// Snort 2.9 default variables, default flow limits.
    fn default() -> Self {
        IdsOptions {
            variables: Variables::default(),
            flows: FlowSettings::default(),
        }
    }
}

/// The IDS: rules for all devices, rules per device, flow state and counters.
#[derive(Debug)]
pub struct IdsConfig {
    global: RuleSet,
    devices: HashMap<Mac, RuleSet>,
    flows: FlowTable,
    stats: Stats,
}

impl IdsConfig {
    /// Build from the controller's IDS configuration text (see [`crate::load`] for the
    /// format), with the default options.
    pub fn parse(text: &str) -> (IdsConfig, LoadReport) {
        IdsConfig::parse_with(text, IdsOptions::default())
    }

    /// [`IdsConfig::parse`] with explicit options.
    pub fn parse_with(text: &str, options: IdsOptions) -> (IdsConfig, LoadReport) {
        let (rules, report) = load_with(text, options.variables);
        let mut global = Vec::new();
        let mut per: HashMap<Mac, Vec<Rule>> = HashMap::new();
        for r in rules {
            match r.scope {
                Scope::AllDevices => global.push(r.rule),
                Scope::Device(m) => per.entry(m).or_default().push(r.rule),
            }
        }
        let ids = IdsConfig {
            global: RuleSet::new(global),
            devices: per
                .into_iter()
                .map(|(m, rules)| (m, RuleSet::new(rules)))
                .collect(),
            flows: FlowTable::new(options.flows),
            stats: Stats::default(),
        };
        (ids, report)
    }

    /// The rules that apply to every device.
    pub fn global_rules(&self) -> &RuleSet {
        &self.global
    }

    /// The rules of one device's section (not including the all-devices rules).
    pub fn device_rules(&self, device: &Mac) -> Option<&RuleSet> {
        self.devices.get(device)
    }

    /// Counters.
    pub fn stats(&self) -> Stats {
        Stats {
            flows: self.flows.counters(),
            ..self.stats
        }
    }

    /// Inspect one frame of `device`'s traffic travelling in `dir`: update the flow table,
    /// evaluate the all-devices rules and the device's rules, and decide.
    ///
    /// Order of evaluation (Snort's default `pass, drop, alert, log` order): if any matching
    /// rule is a `pass` rule the packet passes with no alerts; otherwise, if any matching
    /// rule is `drop`, `reject` or `sdrop` the packet is dropped; every matching non-pass rule
    /// is listed in [`Verdict::alerts`]. Frames that are not IP pass uninspected.
    pub fn inspect(
        &mut self,
        device: &Mac,
        dir: Direction,
        parsed: &Parsed,
        frame: &[u8],
        now: Instant,
    ) -> Verdict {
        let Some(ip) = parsed.ip() else {
            self.stats.non_ip += 1;
            return Verdict::pass();
        };
        let flow = self.flows.update(ip.src, ip.dst, &ip.l4, now);
        let Some(packet) = Packet::from_frame(parsed, frame, flow) else {
            // Only when `parsed` does not describe `frame` (payload range out of bounds).
            self.stats.non_ip += 1;
            return Verdict::pass();
        };
        self.stats.packets += 1;
        match dir {
            Direction::FromDevice => self.stats.from_device += 1,
            Direction::ToDevice => self.stats.to_device += 1,
        }
        let mut fired: Vec<(&Rule, bool)> = Vec::new();
        let sets = [
            (Some(&self.global), false),
            (self.devices.get(device), true),
        ];
        for (set, device_rule) in sets {
            let Some(set) = set else { continue };
            let (ids, st) = set.matching_with_stats(&packet);
            self.stats.rules_evaluated += u64::from(st.evaluated);
            self.stats.budget_exhausted += u64::from(st.budget_exhausted);
            fired.extend(
                ids.into_iter()
                    .filter_map(|id| set.rule(id))
                    .map(|r| (r, device_rule)),
            );
        }
        if fired.is_empty() {
            return Verdict::pass();
        }
        if let Some((r, _)) = fired.iter().find(|(r, _)| r.action == Action::Pass) {
            if fired.iter().any(|(r, _)| r.action != Action::Pass) {
                self.stats.pass_suppressed += 1;
            }
            return Verdict {
                passed_by: Some((r.gid, r.sid)),
                ..Verdict::pass()
            };
        }
        let mut alerts: Vec<Alert> = fired
            .iter()
            .map(|&(r, device_rule)| Alert {
                gid: r.gid,
                sid: r.sid,
                rev: r.rev,
                msg: r.msg.clone(),
                action: r.action,
                classtype: r.classtype.clone(),
                direction: dir,
                device_rule,
            })
            .collect();
        alerts.sort_by_key(|a| (!a.action.drops(), a.gid, a.sid, !a.device_rule));
        let drop = alerts.iter().any(|a| a.action.drops());
        self.stats.alerts += alerts.len() as u64;
        if drop {
            self.stats.drops += 1;
        }
        Verdict {
            action: if drop {
                VerdictAction::Drop
            } else {
                VerdictAction::Pass
            },
            alerts,
            passed_by: None,
        }
    }
}
