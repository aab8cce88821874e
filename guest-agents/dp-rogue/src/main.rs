//! `gw-dp-rogue`: what a compromised guest process (root, but holding no hop slot) can try
//! against the data path, for the end-to-end tests.
//!
//! 1. Capture: move the target stage's hop socket aside, bind its path, wait for one genuinely
//!    tagged frame (the test sends traffic meanwhile), put the socket back.
//! 2. Inject, in order: the captured frame once (never delivered, so it passes), the same frame
//!    again (replay), a copy with a fresh sequence number and one changed packet byte (forged),
//!    the frame at the next stage and at the vSwitch (skipping and repeating hops).
//!
//! Prints a JSON summary. Every injected frame must be dropped and counted by its receiver
//! (`<run>/stats`); the tests check that, not this tool.
//!
//! With `--patch` it instead changes its own code after registering a stage (see [`patch`]).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use gw_packet::Direction;

mod patch;

/// Capture one tagged hop frame and inject forged, replayed and hop-skipping copies.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Data-path run directory.
    #[arg(long, default_value = gw_chain::RUN_DIR)]
    run_dir: PathBuf,
    /// Device whose chain to attack (`aa:bb:cc:dd:ee:ff`).
    #[arg(long, required_unless_present = "patch")]
    device: Option<String>,
    /// Direction of the chain.
    #[arg(long, value_parser = ["from-device", "to-device"], required_unless_present = "patch")]
    direction: Option<String>,
    /// Instead: register a stage of a chain of our own, tag, change our own code this way, tag
    /// again.
    #[arg(long, value_enum)]
    patch: Option<patch::How>,
    /// Monitor socket (software monitor); the hypervisor's call window when it is absent.
    #[arg(long, env = gw_hcall::ENV_MONITOR, default_value = gw_hcall::DEFAULT_SOCKET)]
    monitor: PathBuf,
    /// Stage whose incoming hop to capture (1 = first middlebox).
    #[arg(long, default_value_t = 2)]
    stage: u8,
    /// Hops of the chain (middleboxes + 1).
    #[arg(long, default_value_t = 4)]
    hops: u8,
    /// Seconds to wait for a frame to capture.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
}

fn main() -> Result<()> {
    let a = Args::parse();
    if let Some(how) = a.patch {
        return patch::patch(how, gw_hcall::TransportKind::Auto, &a.monitor);
    }
    let (Some(device), Some(direction)) = (&a.device, &a.direction) else {
        bail!("--device and --direction are required");
    };
    let mac = gw_packet::parse_mac(device).context("--device is not a MAC address")?;
    if a.stage == 0 || a.stage >= a.hops {
        bail!("--stage must be a middlebox stage, 1..{}", a.hops - 1);
    }
    let dir = if direction == "to-device" {
        Direction::ToDevice
    } else {
        Direction::FromDevice
    };
    let chain = gw_chain::chain_id(Some(&mac), dir, a.hops);
    let target = gw_chain::socket_path(&a.run_dir, chain, a.stage);
    if !target.exists() {
        bail!(
            "{} does not exist: is the data path running?",
            target.display()
        );
    }
    let aside = target.with_extension("aside");
    std::fs::rename(&target, &aside).context("moving the stage's socket aside")?;
    let captured = (|| -> Result<Vec<u8>> {
        let trap = UnixDatagram::bind(&target)?;
        trap.set_read_timeout(Some(Duration::from_secs(a.timeout)))?;
        eprintln!(
            "gw-dp-rogue: capturing at {} (send traffic now)",
            target.display()
        );
        let mut buf = vec![0u8; gw_chain::MAX_DATAGRAM];
        let n = trap.recv(&mut buf).context("no frame arrived to capture")?;
        Ok(buf[..n].to_vec())
    })();
    // Put the stage back whatever happened (rename replaces the trap's path).
    std::fs::rename(&aside, &target).context("putting the stage's socket back")?;
    let captured = captured?;
    if captured.len() < gw_hoptag::TRAILER_LEN + 14 {
        bail!(
            "captured a {}-byte datagram: not a tagged frame",
            captured.len()
        );
    }
    let out = UnixDatagram::unbound()?;
    let mut sent = Vec::new();
    let mut send = |what: &str, frame: &[u8], stage: u8| -> Result<()> {
        let to = gw_chain::socket_path(&a.run_dir, chain, stage);
        out.send_to(frame, &to)
            .with_context(|| format!("sending the {what} frame to {}", to.display()))?;
        sent.push(serde_json::json!({"frame": what, "stage": stage}));
        Ok(())
    };
    send("genuine", &captured, a.stage)?;
    send("replayed", &captured, a.stage)?;
    let mut forged = captured.clone();
    let t = forged.len() - gw_hoptag::TRAILER_LEN;
    // A fresh sequence number, so the check reaches the tag instead of stopping at REPLAY.
    forged[t + 8..t + 16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
    forged[20] ^= 0x01;
    send("forged", &forged, a.stage)?;
    send("skipped-hop", &captured, (a.stage + 1) % a.hops)?;
    send("repeated-hop", &captured, 0)?;
    println!(
        "{}",
        serde_json::json!({
            "chain": format!("{chain:08x}"),
            "captured_bytes": captured.len(),
            "sent": sent,
        })
    );
    Ok(())
}
