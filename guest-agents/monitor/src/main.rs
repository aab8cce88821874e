//! `gw-monitor`: the monitor stage of one device's chains. Started by `gw-vswitch`; records
//! the device's flows when the `monitor` entry of the controller policy lists it, and exports
//! `<run-dir>/monitor/<mac>.json` (flow records, SPIN-like view) and `<mac>.pcap` (readable by
//! tcpdump and Wireshark) every `--export-every` seconds. It never drops a packet.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Parser;
use gw_chain::{Inspector, Policy, StageArgs, Verdict};
use gw_monitor::{Monitor, Options};
use gw_packet::{Direction, Mac, Parsed, mac_string};

/// Flow-record and capture middlebox for one device.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    stage: StageArgs,
    /// Seconds between exports of the flow records and the capture.
    #[arg(long, default_value_t = 10)]
    export_every: u64,
}

struct Stage {
    device: Option<Mac>,
    monitor: Monitor,
    export_dir: PathBuf,
    export_every: Duration,
    last_export: Instant,
}

/// Write `bytes` to `path` through a temporary file, so readers never see half a file.
fn write_atomic(path: &Path, write: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    write(&mut f)?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

impl Stage {
    fn export(&self) -> Result<()> {
        let Some(mac) = self.device.filter(|m| self.monitor.is_recorded(m)) else {
            return Ok(());
        };
        std::fs::create_dir_all(&self.export_dir)?;
        let name = mac_string(&mac).replace(':', "");
        write_atomic(&self.export_dir.join(format!("{name}.json")), |f| {
            serde_json::to_writer_pretty(
                f,
                &serde_json::json!({
                    "snapshot": self.monitor.snapshot_json(),
                    "spin": self.monitor.spin_view(&mac),
                }),
            )?;
            Ok(())
        })?;
        write_atomic(&self.export_dir.join(format!("{name}.pcap")), |f| {
            self.monitor.write_pcap(&mac, std::io::BufWriter::new(f))?;
            Ok(())
        })
    }
}

impl Inspector for Stage {
    const KIND: &'static str = "monitor";

    fn configure(&mut self, policy: &Policy) -> Result<Vec<String>> {
        let listed = policy.devices()?;
        let record = self.device.filter(|m| listed.contains(m));
        let recording = self.device.is_some_and(|m| self.monitor.is_recorded(&m));
        // Keep the records when the new policy still lists the device.
        if record.is_some() != recording {
            let devices: Vec<Mac> = record.into_iter().collect();
            self.monitor = Monitor::new(&devices, Options::default())?;
        }
        Ok(vec![match record {
            Some(m) => format!(
                "recording {} into {}",
                mac_string(&m),
                self.export_dir.display()
            ),
            None => "not recording (the device has no policy)".into(),
        }])
    }

    fn inspect(&mut self, dir: Direction, parsed: &Parsed, frame: &[u8], _now: Instant) -> Verdict {
        if let Some(mac) = &self.device {
            self.monitor
                .observe(mac, dir, parsed, frame, SystemTime::now());
        }
        Verdict::Pass
    }

    fn stats(&self) -> serde_json::Value {
        let snap = self.monitor.snapshot_json();
        serde_json::json!({
            "recording": self.device.is_some_and(|m| self.monitor.is_recorded(&m)),
            "devices": snap.get("devices").cloned().unwrap_or_default(),
        })
    }

    fn tick(&mut self, now: Instant) {
        self.monitor.expire(SystemTime::now());
        if now.duration_since(self.last_export) >= self.export_every {
            self.last_export = now;
            if let Err(e) = self.export() {
                eprintln!("monitor: export: {e:#}");
            }
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let stage = Stage {
        device: args.stage.device()?,
        monitor: Monitor::new(&[], Options::default())?,
        export_dir: args.stage.run_dir.join("monitor"),
        export_every: Duration::from_secs(args.export_every.max(1)),
        last_export: Instant::now(),
    };
    gw_chain::run_middlebox(&args.stage, stage)
}
