//! `gw-agent-rogue`: a test tool playing a compromised gateway. It runs as root in the
//! gateway's Linux, so it holds what the guest holds: the agent's TLS client certificate and the
//! call window. It does not hold the hypervisor's keys. Over one session it answers the
//! controller's challenges with:
//!
//! 1. honest evidence,
//! 2. the first evidence again (a **replayed quote**),
//! 3. a fresh quote over the first nonce (a **reused nonce**),
//! 4. a fresh quote with one signature bit flipped (a **forged signature**),
//! 5. a fresh quote whose log has its last measurement turned into a `Reset` of an untouched
//!    PCR (a **hidden event**),
//! 6. a fresh quote whose log has its last measurement relabelled as `Other` (a **relabelled
//!    event**),
//! 7. honest evidence again.
//!
//! It then tries to sign a device report as the trusted agent (the hypervisor refuses: the agent
//! is bound to the real agent's program) and sends one with a made-up signature. It prints a
//! JSON summary; the controller's results must name each attack (`tests/tests/qemu_controller.rs`).
//!
//! With `--swap-key` it instead plays a **gateway key swap**: it enrolls under this gateway's id
//! with attestation and agent keys of its own (a monitor core in process, keys from fresh
//! randomness), as a cloned or replaced gateway would. The controller must refuse and record it.
//! It is in the qemu-virt image for the end-to-end tests, like `gw-dp-rogue`.

use std::{cell::RefCell, rc::Rc, time::Duration};

use anyhow::{Context, Result, bail};
use clap::Parser;
use gw_hcall::in_process::InProcess;
use gw_proto::wire::{
    AgentMsg, ControllerMsg, Device, EvidenceMsg, GatewayReport, PROTOCOL_VERSION, SignedReport,
    read_msg, write_msg,
};
use vtpm::{DeviceSecret, KeyHierarchy, MonitorIdentity, MonitorKind};

/// Play a compromised gateway against the controller (test tool; stop the real gw-agent first).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    gateway: gw_agent::cli::GatewayArgs,
    /// Enroll under this gateway's id with keys of our own (a key swap) instead.
    #[arg(long)]
    swap_key: bool,
}

/// Enroll as `settings.endorsement.gateway_id` with fresh keys; prints the controller's answer.
fn swap_key(mut settings: gw_agent::Settings) -> Result<()> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).context("randomness for the swapped keys")?;
    let keys = KeyHierarchy::derive(&DeviceSecret::new(secret));
    let (ak, gk) = (
        keys.attestation_key().verifying_key(),
        keys.control_key().verifying_key(),
    );
    // Same id, our keys; the vendor's signature no longer matches, which only matters for a
    // gateway the controller does not know yet.
    settings.endorsement.attestation_key = hex::encode(ak.as_bytes());
    settings.endorsement.agent_key = hex::encode(gk.as_bytes());
    let program = vtpm::sha256(b"gw-agent-rogue swapped-key agent");
    let monitor = Box::new(gw_core::Monitor::<16, 1>::new(gw_core::Config {
        keys: &keys,
        identity: MonitorIdentity::new(
            MonitorKind::InsecureSoftwareMonitor,
            "gw-agent-rogue swapped-key monitor",
            program,
        ),
        boot_counter: 1,
        controller_key: None,
        hop_master: [0; 32],
    }));
    let caller = gw_core::Caller { space: 1, program };
    let mut client: gw_agent::Monitor = gw_hcall::Client::new(Box::new(InProcess::new(
        Rc::new(RefCell::new(monitor)),
        caller,
    )));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let answer = match rt.block_on(gw_agent::ensure_enrolled(&settings, &mut client)) {
        Ok(()) => "enrolled".to_owned(),
        Err(e) => e.to_string(),
    };
    println!(
        "{}",
        serde_json::json!({
            "swapped_attestation_key": hex::encode(ak.as_bytes()),
            "enrollment": answer,
        })
    );
    Ok(())
}

/// The next challenge, skipping anything else the controller sends.
async fn next_challenge<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Result<[u8; 32]> {
    let wait = Duration::from_secs(120);
    loop {
        let m = tokio::time::timeout(wait, read_msg::<_, ControllerMsg>(r))
            .await
            .context("no challenge within 120 s")??;
        match m {
            ControllerMsg::Challenge { nonce } => return Ok(nonce),
            ControllerMsg::Refused { reason } => bail!("the controller refused us: {reason}"),
            _ => continue,
        }
    }
}

/// Index of the log's last measurement (not a `Reset`): the one a rogue would hide.
fn last_measurement(log: &[vtpm::Event]) -> Result<usize> {
    log.iter()
        .rposition(|e| e.kind != vtpm::ComponentKind::Reset)
        .context("the event log has no measurement")
}

/// A middlebox PCR no event touches, to hide a measurement behind a `Reset` of it.
fn untouched_pcr(log: &[vtpm::Event]) -> Result<vtpm::PcrIndex> {
    vtpm::pcr::MIDDLEBOX_BINARIES
        .rev()
        .find(|i| log.iter().all(|e| e.pcr.get() != *i))
        .and_then(vtpm::PcrIndex::new)
        .context("every middlebox PCR is in the log")
}

fn report(mac: &str) -> Result<Vec<u8>> {
    Ok(postcard::to_stdvec(&GatewayReport {
        devices: vec![Device {
            mac: mac.into(),
            ip: Some("192.0.2.66".into()),
            hostname: Some("rogue".into()),
        }],
        datapath: None,
    })?)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let g = args.gateway;
    let (ca_pem, endorsement) = g.provisioned()?;
    let settings = gw_agent::Settings {
        controller: g.controller,
        server_name: g.server_name,
        ca_pem,
        endorsement,
        state_dir: g.state_dir.clone(),
        config_dir: std::env::temp_dir().join("gw-agent-rogue-config"),
        report_every: Duration::from_secs(3600),
        datapath_dir: None,
    };
    if args.swap_key {
        // Its own state directory: the real agent's certificate stays where it is.
        let state_dir = std::env::temp_dir().join("gw-agent-rogue-swapped");
        let _ = std::fs::remove_dir_all(&state_dir);
        return swap_key(gw_agent::Settings {
            state_dir,
            ..settings
        });
    }
    let mut mon = gw_hcall::open(g.transport, &g.monitor)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let tls = gw_agent::connect_enrolled(&settings)
            .await
            .with_context(|| {
                format!(
                    "connecting with the agent's certificate from {}",
                    g.state_dir.display()
                )
            })?;
        let (mut r, mut w) = tokio::io::split(tls);
        let hello = AgentMsg::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: "gw-agent-rogue".into(),
        };
        write_msg(&mut w, &hello).await?;
        let send = |ev: EvidenceMsg| AgentMsg::Evidence(Box::new(ev));
        let mut sent = Vec::new();

        let n1 = next_challenge(&mut r).await?;
        let ev1 = gw_agent::evidence(&mut mon, &n1)?;
        write_msg(&mut w, &send(ev1.clone())).await?;
        sent.push("honest");

        let _n2 = next_challenge(&mut r).await?;
        write_msg(&mut w, &send(ev1)).await?;
        sent.push("replayed quote");

        let _n3 = next_challenge(&mut r).await?;
        write_msg(&mut w, &send(gw_agent::evidence(&mut mon, &n1)?)).await?;
        sent.push("reused nonce");

        let n4 = next_challenge(&mut r).await?;
        let mut ev4 = gw_agent::evidence(&mut mon, &n4)?;
        let last = ev4.quote.len() - 1;
        ev4.quote[last] ^= 0x01;
        write_msg(&mut w, &send(ev4)).await?;
        sent.push("forged signature");

        // The log, not the quote, is doctored: the quote binds the whole log (format 2).
        let n5 = next_challenge(&mut r).await?;
        let mut ev5 = gw_agent::evidence(&mut mon, &n5)?;
        let at = last_measurement(&ev5.log)?;
        ev5.log[at] = vtpm::Event::reset(untouched_pcr(&ev5.log)?);
        write_msg(&mut w, &send(ev5)).await?;
        sent.push("hidden event");

        let n6 = next_challenge(&mut r).await?;
        let mut ev6 = gw_agent::evidence(&mut mon, &n6)?;
        let at = last_measurement(&ev6.log)?;
        ev6.log[at].kind = vtpm::ComponentKind::Other;
        write_msg(&mut w, &send(ev6)).await?;
        sent.push("relabelled event");

        let n7 = next_challenge(&mut r).await?;
        write_msg(&mut w, &send(gw_agent::evidence(&mut mon, &n7)?)).await?;
        sent.push("honest");

        // Sign a report as the trusted agent: the hypervisor answers for the bound agent only.
        let body = report("02:00:00:00:00:66")?;
        let agent_sign = match mon.agent_sign(&body) {
            Ok(_) => "signed".to_owned(),
            Err(e) => e.to_string(),
        };
        // A report with a made-up signature: the controller drops it.
        let forged = SignedReport {
            body,
            signature: ed25519_dalek::Signature::from_bytes(&[7; 64]),
        };
        write_msg(&mut w, &AgentMsg::Report(forged)).await?;
        sent.push("forged report");
        // One more round trip, so the controller has processed everything before we go.
        let _ = next_challenge(&mut r).await?;
        println!(
            "{}",
            serde_json::json!({ "sent": sent, "agent_sign": agent_sign })
        );
        Ok(())
    })
}
