//! `gw-firewall`: the firewall stage of one device's chains. Started by `gw-vswitch`; reads
//! the `firewall` entry of the controller policy from the monitor and re-reads it when the
//! policy version changes.

use std::time::Instant;

use anyhow::Result;
use clap::Parser;
use gw_chain::{Inspector, Policy, StageArgs, Verdict};
use gw_firewall::{Decision, DevicePolicy, Firewall, Options, device_entry};
use gw_packet::{Direction, Mac, Parsed};

/// Stateful firewall middlebox (MUD profiles, block and allow lists) for one device.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
}

struct Stage {
    device: Option<Mac>,
    fw: Firewall,
}

impl Inspector for Stage {
    const KIND: &'static str = "firewall";

    fn configure(&mut self, policy: &Policy) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        let entry = match (&self.device, policy.configs.get("firewall")) {
            (Some(mac), Some(text)) => device_entry(text, mac),
            _ => Ok(None),
        };
        let compiled = entry.and_then(|e| e.as_ref().map(DevicePolicy::from_entry).transpose());
        let policy = match compiled {
            Ok(p) => p,
            // Fail closed: a device whose rules cannot be read gets only infrastructure.
            Err(e) => {
                lines.push(format!("device policy unusable, denying its traffic: {e}"));
                Some(DevicePolicy::deny_all())
            }
        };
        match &policy {
            None => lines.push(
                "no policy for this device: lists and profile empty, everything passes (tracked)"
                    .into(),
            ),
            Some(p) => {
                if let Some(m) = &p.mud {
                    lines.push(format!(
                        "MUD profile {}: {} from-device and {} to-device entries",
                        m.url,
                        m.from_device.len(),
                        m.to_device.len()
                    ));
                }
                lines.extend(p.findings().iter().map(ToString::to_string));
            }
        }
        self.fw.set_policy(policy);
        Ok(lines)
    }

    fn inspect(&mut self, dir: Direction, parsed: &Parsed, frame: &[u8], now: Instant) -> Verdict {
        match self.fw.inspect(dir, parsed, frame, now) {
            Decision::Pass(_) => Verdict::Pass,
            Decision::Drop(r) => Verdict::Drop(r.to_string()),
        }
    }

    fn stats(&self) -> serde_json::Value {
        serde_json::to_value(self.fw.stats()).unwrap_or_default()
    }

    fn tick(&mut self, now: Instant) {
        self.fw.expire(now);
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let stage = Stage {
        device: args.stage.device()?,
        fw: Firewall::new(None, Options::default()),
    };
    gw_chain::run_middlebox(&args.stage, stage)
}
