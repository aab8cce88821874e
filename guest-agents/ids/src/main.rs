//! `gw-ids`: the IDS stage of one device's chains. Started by `gw-vswitch`; loads the `ids`
//! entry of the controller policy (Snort rules, all-devices and per-device sections), reports
//! what it skipped, and reloads when the policy version changes.

use std::collections::VecDeque;
use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use gw_chain::{Inspector, Policy, StageArgs, Verdict};
use gw_ids::{IdsConfig, VerdictAction};
use gw_packet::{Direction, Mac, Parsed};

/// Snort-rule IDS middlebox for one device.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
}

/// Alerts kept for the stats file.
const RECENT_ALERTS: usize = 32;

struct Stage {
    /// The device, or a placeholder for the default chain (which gets only the all-devices
    /// rules).
    device: Mac,
    ids: IdsConfig,
    loaded: usize,
    skipped: usize,
    recent: VecDeque<serde_json::Value>,
}

impl Inspector for Stage {
    const KIND: &'static str = "ids";

    fn configure(&mut self, policy: &Policy) -> Result<Vec<String>> {
        let text = policy.configs.get("ids").map_or("", String::as_str);
        let (ids, report) = IdsConfig::parse(text);
        let mut lines = vec![format!(
            "{} rules loaded, {} skipped ({} unsupported, {} malformed)",
            report.loaded,
            report.skipped.len(),
            report.skipped_unsupported(),
            report.skipped_malformed()
        )];
        for s in &report.skipped {
            let sid = s.sid.map_or_else(|| "-".to_string(), |x| x.to_string());
            lines.push(format!(
                "skipped rule at line {} (sid {sid}): {}",
                s.line, s.reason
            ));
        }
        for (opt, n) in &report.unsupported_options {
            lines.push(format!("unsupported option {opt:?} in {n} rules"));
        }
        for i in &report.issues {
            lines.push(format!("line {}: {}", i.line, i.error));
        }
        self.ids = ids;
        self.loaded = report.loaded;
        self.skipped = report.skipped.len();
        Ok(lines)
    }

    fn inspect(&mut self, dir: Direction, parsed: &Parsed, frame: &[u8], now: Instant) -> Verdict {
        let v = self.ids.inspect(&self.device, dir, parsed, frame, now);
        for a in &v.alerts {
            let line = format!(
                "[{}:{}:{}] {} ({dir:?}, {:?})",
                a.gid, a.sid, a.rev, a.msg, a.action
            );
            eprintln!("ids: alert {line}");
            if self.recent.len() == RECENT_ALERTS {
                self.recent.pop_front();
            }
            self.recent.push_back(serde_json::json!({
                "sid": a.sid, "rev": a.rev, "msg": &*a.msg,
                "action": format!("{:?}", a.action).to_lowercase(),
                "direction": format!("{dir:?}"),
            }));
        }
        match v.action {
            VerdictAction::Pass => Verdict::Pass,
            VerdictAction::Drop => {
                let sid = v.alerts.first().map_or(0, |a| a.sid);
                Verdict::Drop(format!("IDS rule sid {sid}"))
            }
        }
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::json!({
            "rules_loaded": self.loaded,
            "rules_skipped": self.skipped,
            "counters": self.ids.stats(),
            "recent_alerts": self.recent,
        })
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let stage = Stage {
        device: args.stage.device()?.unwrap_or([0; 6]),
        ids: IdsConfig::parse("").0,
        loaded: 0,
        skipped: 0,
        recent: VecDeque::new(),
    };
    gw_chain::run_middlebox(&args.stage, stage)
}
