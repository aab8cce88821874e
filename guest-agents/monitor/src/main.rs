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
    /// `export_every`, or longer when exports are slow.
    next_export: Duration,
    last_export: Instant,
}

/// Write `path` through a buffered temporary file (`.<name>.tmp` next to it), so readers never
/// see half a file and the writer makes few system calls.
fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<()>,
) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("export");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let f = std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 16, f);
    write(&mut w)?;
    std::io::Write::flush(&mut w)?;
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
            serde_json::to_writer(
                f,
                &serde_json::json!({
                    "snapshot": self.monitor.snapshot_json(),
                    "spin": self.monitor.spin_view(&mac),
                }),
            )?;
            Ok(())
        })?;
        write_atomic(&self.export_dir.join(format!("{name}.pcap")), |f| {
            self.monitor.write_pcap(&mac, f)?;
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
        // Counters only, every second: the flow records go to the export (`--export-every`),
        // whose cost grows with the number of flows.
        let device = self
            .device
            .as_ref()
            .and_then(|m| self.monitor.device_stats(m));
        serde_json::json!({
            "recording": self.device.is_some_and(|m| self.monitor.is_recorded(&m)),
            "flows_active": self.monitor.flows_active(),
            "traffic": device.map(|d| d.traffic),
            "flows_expired": device.map(|d| d.flows_expired),
            "flows_evicted": device.map(|d| d.flows_evicted),
            "unrecorded": self.monitor.unrecorded(),
        })
    }

    fn tick(&mut self, now: Instant) {
        self.monitor.expire(SystemTime::now());
        if now.duration_since(self.last_export) >= self.next_export {
            self.last_export = now;
            if let Err(e) = self.export() {
                eprintln!("monitor: export: {e:#}");
            }
            // The export's cost grows with flows and captures; keep it under 5 % of the time
            // so a slow gateway keeps forwarding.
            self.next_export = self.export_every.max(now.elapsed() * 20);
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
        next_export: Duration::from_secs(args.export_every.max(1)),
        last_export: Instant::now(),
    };
    gw_chain::run_middlebox(&args.stage, stage)
}
