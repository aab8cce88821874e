//! `gwctl`: talk to the Gatewarden monitor from the gateway guest.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use gw_hcall::{Client, Transport, TransportKind};
use vtpm::{ComponentKind, PcrSelection};

mod pcrlist;

/// Read and extend PCRs, take quotes and read the event log through the Gatewarden monitor.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Software monitor socket.
    #[arg(long, env = gw_hcall::ENV_MONITOR, default_value = gw_hcall::DEFAULT_SOCKET, global = true)]
    monitor: PathBuf,
    /// How to reach the monitor: the software monitor's socket, the hypervisor's call window
    /// (aarch64 guests, needs /dev/mem), or `auto` (the socket if it exists, else the window).
    #[arg(long, default_value = "auto", global = true)]
    transport: TransportKind,
    /// Print machine-readable JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

fn connect(kind: TransportKind, socket: &std::path::Path) -> Result<Client<Box<dyn Transport>>> {
    Ok(gw_hcall::open(kind, socket)?)
}

#[derive(Subcommand, Debug)]
enum Command {
    /// ABI version, monitor identity and public keys.
    Version,
    /// Read or extend a PCR.
    Pcr {
        #[command(subcommand)]
        op: PcrOp,
    },
    /// Take a signed quote for a verifier nonce and check it locally.
    Quote {
        /// Verifier nonce: 64 hex digits.
        #[arg(long)]
        nonce: String,
        /// PCRs to cover, e.g. `0-11,32-35`.
        #[arg(long, default_value = "0-11")]
        pcrs: String,
    },
    /// Print the event log.
    Log,
    /// Print the controller policy held by the monitor (agent and chain stages only).
    Policy,
    /// Data-path debugging: register a chain stage, tag or check one packet.
    Hop {
        #[command(subcommand)]
        op: HopOp,
    },
    /// Trusted agent: sign a report with the gateway's control-channel key.
    Agent {
        #[command(subcommand)]
        op: AgentOp,
    },
}

/// Where in which chain this program stands (registered, or taken over, before every call).
#[derive(clap::Args, Debug)]
struct Stage {
    /// Chain id.
    #[arg(long)]
    chain: u32,
    /// Stage in the chain: 0 is the vSwitch, k the k-th middlebox.
    #[arg(long)]
    stage: u8,
    /// Hops in the chain (middleboxes + 1).
    #[arg(long)]
    hops: u8,
    /// Name measured with this program (the event-log name, e.g. a middlebox's). The name is
    /// the caller's claim; the digest is the monitor's measurement of the caller.
    #[arg(long, default_value = "gwctl")]
    name: String,
}

#[derive(Subcommand, Debug)]
enum HopOp {
    /// Register this program at a chain stage; prints the slot and the PCR it was measured into.
    Register {
        #[command(flatten)]
        at: Stage,
    },
    /// Tag a packet (hex) as this stage's outgoing hop; prints packet||trailer in hex.
    Tag {
        #[command(flatten)]
        at: Stage,
        /// Packet bytes in hex.
        packet: String,
    },
    /// Check a tagged frame (hex) as this stage's incoming hop; prints the sequence number.
    Check {
        #[command(flatten)]
        at: Stage,
        /// packet||trailer in hex.
        frame: String,
    },
}

#[derive(Subcommand, Debug)]
enum AgentOp {
    /// Sign a report (the file's bytes) with the control-channel key; prints the signature.
    Sign {
        /// File holding the report.
        file: PathBuf,
    },
}

/// Kinds of measurement a guest program may log (the boot chain, agent and middlebox
/// binaries are measured by the monitor itself).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ExtendKind {
    /// Anything else.
    Other,
    /// A vSwitch configuration.
    VswitchConfig,
    /// A middlebox configuration.
    MiddleboxConfig,
}

impl From<ExtendKind> for ComponentKind {
    fn from(k: ExtendKind) -> Self {
        match k {
            ExtendKind::Other => ComponentKind::Other,
            ExtendKind::VswitchConfig => ComponentKind::VSwitchConfig,
            ExtendKind::MiddleboxConfig => ComponentKind::MiddleboxConfig,
        }
    }
}

#[derive(Subcommand, Debug)]
enum PcrOp {
    /// Print the value of PCR N.
    Read {
        /// PCR index (0-1023).
        index: u16,
    },
    /// Extend PCR N with a SHA-256 digest given as 64 hex digits.
    Extend {
        /// PCR index (guest-extendable ranges only, see docs/pcr-map.md).
        index: u16,
        /// The measurement: 64 hex digits.
        digest: String,
        /// Component name for the event log.
        #[arg(long, default_value = "gwctl")]
        name: String,
        /// Component version for the event log.
        #[arg(long, default_value = "")]
        component_version: String,
        /// What was measured, for the event log.
        #[arg(long, value_enum, default_value = "other")]
        kind: ExtendKind,
    },
}

fn hex32(s: &str, what: &str) -> Result<[u8; 32]> {
    let bytes = hex::decode(s.trim()).with_context(|| format!("{what} is not hex"))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        anyhow::anyhow!("{what} must be 32 bytes (64 hex digits), got {}", b.len())
    })
}

/// Print a PCR value as text or JSON.
fn print_pcr(json: bool, index: u16, value: &[u8; 32]) {
    if json {
        println!(
            "{}",
            serde_json::json!({ "pcr": index, "value": hex::encode(value) })
        );
    } else {
        println!("{}", hex::encode(value));
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut client = connect(cli.transport, &cli.monitor)?;
    match cli.command {
        Command::Version => {
            let v = client.version()?;
            let insecure = v.identity.kind == vtpm::MonitorKind::InsecureSoftwareMonitor;
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "abi": format!("{}.{}", v.major, v.minor),
                        "monitor": v.identity.version.as_str(),
                        "kind": format!("{:?}", v.identity.kind),
                        "insecure": insecure,
                        "build": hex::encode(v.identity.build),
                        "attestation_key": hex::encode(v.attestation_key.to_bytes()),
                        "agent_key": hex::encode(v.agent_key.to_bytes()),
                    })
                );
            } else {
                println!("abi: {}.{}", v.major, v.minor);
                println!(
                    "monitor: {}{}",
                    v.identity.version,
                    if insecure {
                        " (INSECURE software monitor)"
                    } else {
                        ""
                    }
                );
                println!("build: {}", hex::encode(v.identity.build));
                println!(
                    "attestation key: {}",
                    hex::encode(v.attestation_key.to_bytes())
                );
                println!("agent key: {}", hex::encode(v.agent_key.to_bytes()));
            }
        }
        Command::Pcr {
            op: PcrOp::Read { index },
        } => {
            let value = client
                .pcr_read(index)
                .with_context(|| format!("reading PCR {index}"))?;
            print_pcr(cli.json, index, &value);
        }
        Command::Pcr {
            op:
                PcrOp::Extend {
                    index,
                    digest,
                    name,
                    component_version,
                    kind,
                },
        } => {
            let digest = hex32(&digest, "digest")?;
            client
                .pcr_extend(index, &digest, kind.into(), &name, &component_version)
                .with_context(|| format!("extending PCR {index}"))?;
            let value = client.pcr_read(index)?;
            print_pcr(cli.json, index, &value);
        }
        Command::Quote { nonce, pcrs } => {
            let nonce = hex32(&nonce, "nonce")?;
            let selection: PcrSelection = pcrlist::parse(&pcrs)?;
            let key = client.version()?.attestation_key;
            let bundle = client
                .quote(&nonce, &selection)
                .context("taking the quote")?;
            let (mut log, _) = client.event_log()?;
            // Events measured after the quote are not covered by it: keep the quoted prefix.
            let quoted = vtpm::SignedQuote::decode(&bundle.quote)
                .and_then(|q| q.body())
                .map_err(|e| anyhow::anyhow!("the monitor returned a malformed quote: {e}"))?;
            log.truncate(quoted.event_count as usize);
            // Check our own quote, so a broken monitor is noticed here and not only remotely.
            let verified = vtpm::verify(
                &vtpm::Evidence {
                    quote: &bundle.quote,
                    pcrs: &bundle.pcrs,
                    log: &log,
                },
                &vtpm::Expectation {
                    key: &key,
                    nonce: &nonce,
                    selection: &selection,
                    last: None,
                    // Our own monitor signs format 2.
                    accept_format1: false,
                },
            )
            .map_err(|e| anyhow::anyhow!("the monitor's own quote does not verify: {e}"))?;
            let values: Vec<_> = verified
                .pcrs
                .iter()
                .map(|(i, v)| (i.get(), hex::encode(v)))
                .collect();
            if cli.json {
                println!(
                    "{}",
                    serde_json::json!({
                        "quote": hex::encode(&bundle.quote),
                        "pcrs": values.iter().map(|(i, v)| serde_json::json!({"pcr": i, "value": v})).collect::<Vec<_>>(),
                        "counters": { "boot": verified.body.counters.boot, "quote": verified.body.counters.quote },
                        "insecure": verified.is_insecure_software_monitor(),
                    })
                );
            } else {
                println!("quote: {}", hex::encode(&bundle.quote));
                for (i, v) in &values {
                    println!("pcr {i}: {v}");
                }
                println!(
                    "counters: boot {} quote {}",
                    verified.body.counters.boot, verified.body.counters.quote
                );
                if verified.is_insecure_software_monitor() {
                    println!("warning: quote made by the INSECURE software monitor");
                }
            }
        }
        Command::Log => {
            let (log, overflowed) = client.event_log()?;
            if cli.json {
                let entries: Vec<_> = log
                    .iter()
                    .map(|e| serde_json::json!({
                        "pcr": e.pcr.get(), "kind": format!("{:?}", e.kind), "name": e.name.as_str(),
                        "version": e.version.as_str(), "digest": hex::encode(e.digest),
                    }))
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({ "overflowed": overflowed, "events": entries })
                );
            } else {
                for (n, e) in log.iter().enumerate() {
                    println!(
                        "{n:4} pcr {:4} {:16} {} {} {}",
                        e.pcr.get(),
                        format!("{:?}", e.kind),
                        hex::encode(e.digest),
                        e.name,
                        e.version
                    );
                }
                if overflowed {
                    println!("warning: the event log overflowed; later extends were refused");
                }
            }
        }
        Command::Policy => {
            let (version, bytes) = client.policy_get().context("reading the policy")?;
            if version == 0 {
                bail!("no policy has been set");
            }
            use std::io::Write;
            eprintln!("policy version {version}, {} bytes", bytes.len());
            std::io::stdout().write_all(&bytes)?;
        }
        Command::Hop { op } => {
            let register = |client: &mut Client<Box<dyn Transport>>, at: &Stage| {
                client
                    .hop_register(
                        at.chain,
                        at.stage,
                        at.hops,
                        &at.name,
                        env!("CARGO_PKG_VERSION"),
                    )
                    .with_context(|| {
                        format!("registering at chain {} stage {}", at.chain, at.stage)
                    })
            };
            match op {
                HopOp::Register { at } => {
                    let (slot, pcr) = register(&mut client, &at)?;
                    println!("slot {slot} pcr {pcr}");
                }
                HopOp::Tag { at, packet } => {
                    let packet = hex::decode(packet.trim()).context("packet is not hex")?;
                    let (slot, _) = register(&mut client, &at)?;
                    let trailer = client.hop_tag(slot, &packet).context("tagging")?;
                    println!("{}{}", hex::encode(&packet), hex::encode(trailer));
                }
                HopOp::Check { at, frame } => {
                    let frame = hex::decode(frame.trim()).context("frame is not hex")?;
                    let (slot, _) = register(&mut client, &at)?;
                    let seq = client.hop_check(slot, &frame).context("checking")?;
                    println!("{seq}");
                }
            }
        }
        Command::Agent {
            op: AgentOp::Sign { file },
        } => {
            let report =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let sig = client.agent_sign(&report).context("signing the report")?;
            println!("{}", hex::encode(sig.to_bytes()));
        }
    }
    Ok(())
}
