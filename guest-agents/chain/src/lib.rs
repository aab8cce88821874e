//! Chains of the Gatewarden data path (P_comm2).
//!
//! Every IoT device gets two **chains**, one per [`Direction`]: the vSwitch (stage 0) hands a
//! packet to the first middlebox (stage 1), each middlebox to the next, and the last one back to
//! the vSwitch. Every hop is a Unix datagram socket named after its receiving stage
//! ([`socket_path`]); every datagram is `packet ‖ 48-byte trailer` where the trailer comes from
//! HOP_TAG and is checked with HOP_CHECK, both in the monitor, which alone holds the hop keys.
//! A stage drops and counts anything whose check fails: forged, replayed, out-of-window packets
//! and packets that skipped or repeated a hop (see `docs/datapath.md`).
//!
//! The configuration comes from the controller's signed policy, read from the monitor's vault
//! with POLICY_GET (allowed to hop-slot owners), never from files another guest process could
//! edit. [`DatapathConfig`] (policy entry `datapath`) says which middleboxes a chain has and
//! whether hop signing is on; because the policy is measured into PCR 11 before it is stored,
//! "signing off" shows in attestation.

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gw_abi::AbiError;
use gw_hcall::{CallError, Client, Transport, TransportKind};
use gw_packet::{Direction, Mac};
use serde::{Deserialize, Serialize};

/// Default directory of hop sockets and counter files in the gateway guest.
pub const RUN_DIR: &str = "/run/gatewarden/datapath";

/// Largest datagram on a hop: a jumbo frame and its trailer.
pub const MAX_DATAGRAM: usize = gw_abi::MAX_PACKET + gw_hoptag::TRAILER_LEN;

/// Data-path errors.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The monitor could not be reached or refused a setup call.
    #[error("monitor: {0}")]
    Monitor(#[from] CallError),
    /// The stored policy is not a policy document.
    #[error("the policy in the monitor is not valid JSON policy: {0}")]
    Policy(String),
    /// A hop socket could not be set up.
    #[error("{what} {path}: {source}")]
    Socket {
        /// What was being done.
        what: &'static str,
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

pub use gw_proto::wire::DatapathConfig;

/// The controller policy as the monitor holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Version (0 = none stored yet).
    pub version: u64,
    /// Middlebox name → config text.
    pub configs: BTreeMap<String, String>,
}

impl Policy {
    /// Decode the bytes POLICY_GET returns (a JSON [`gw_proto::wire::PolicyDocument`]).
    pub fn decode(version: u64, bytes: &[u8]) -> Result<Self, ChainError> {
        if version == 0 {
            return Ok(Self::default());
        }
        let doc: gw_proto::wire::PolicyDocument =
            serde_json::from_slice(bytes).map_err(|e| ChainError::Policy(e.to_string()))?;
        Ok(Self {
            version,
            configs: doc.configs,
        })
    }

    /// Read the whole policy from the monitor.
    pub fn fetch<T: Transport>(client: &mut Client<T>) -> Result<Self, ChainError> {
        let (version, bytes) = client.policy_get()?;
        Self::decode(version, &bytes)
    }

    /// The `datapath` entry, or the defaults when there is none.
    pub fn datapath(&self) -> Result<DatapathConfig, ChainError> {
        let Some(text) = self.configs.get("datapath") else {
            return Ok(DatapathConfig::default());
        };
        let dp: DatapathConfig = serde_json::from_str(text)
            .map_err(|e| ChainError::Policy(format!("entry \"datapath\": {e}")))?;
        dp.validate()
            .map_err(|e| ChainError::Policy(format!("entry \"datapath\": {e}")))?;
        Ok(dp)
    }

    /// Devices with a policy: the `monitor` entry's device list (every device the controller
    /// has a policy for). Entries that are not MAC addresses are errors.
    pub fn devices(&self) -> Result<Vec<Mac>, ChainError> {
        #[derive(Deserialize)]
        struct Devices {
            devices: Vec<String>,
        }
        let Some(text) = self.configs.get("monitor") else {
            return Ok(Vec::new());
        };
        let d: Devices = serde_json::from_str(text)
            .map_err(|e| ChainError::Policy(format!("entry \"monitor\": {e}")))?;
        d.devices
            .iter()
            .map(|m| {
                gw_packet::parse_mac(m)
                    .ok_or_else(|| ChainError::Policy(format!("{m:?} is not a MAC address")))
            })
            .collect()
    }
}

/// The chain id of `device`'s traffic in `dir` through a chain of `hops` hops (middleboxes + 1).
/// `None` is the default chain, shared by devices without a policy. Ids are stable across
/// policy changes that keep the layout, so a restarted stage takes its slot over: 31 bits of
/// SHA-256(MAC or `default`, hop count), then the direction bit. A new layout gives new ids,
/// hence fresh hop slots (the hypervisor fixes a chain's hop count at its first registration).
pub fn chain_id(device: Option<&Mac>, dir: Direction, hops: u8) -> u32 {
    let mut input = Vec::with_capacity(8);
    match device {
        None => input.extend_from_slice(b"default"),
        Some(mac) => input.extend_from_slice(mac),
    }
    input.push(hops);
    let d = vtpm::sha256(&input);
    let base = u32::from_le_bytes([d[0], d[1], d[2], d[3]]) & 0x7fff_ffff;
    base << 1 | u32::from(dir == Direction::ToDevice)
}

/// The socket a stage of a chain receives on.
pub fn socket_path(run_dir: &Path, chain: u32, stage: u8) -> PathBuf {
    run_dir.join(format!("c{chain:08x}-s{stage}.sock"))
}

/// Which of `sockets` have datagrams queued, waiting at most 200 ms (so callers keep a
/// once-a-second timer). An interrupted wait reports none ready.
pub fn readable(sockets: &[&UnixDatagram]) -> std::io::Result<Vec<bool>> {
    let mut fds: Vec<rustix::event::PollFd<'_>> = sockets
        .iter()
        .map(|s| rustix::event::PollFd::new(*s, rustix::event::PollFlags::IN))
        .collect();
    let timeout = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 200_000_000,
    };
    match rustix::event::poll(&mut fds, Some(&timeout)) {
        Ok(_) | Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(fds.iter().map(|f| !f.revents().is_empty()).collect())
}

/// How long a stage waits for room in the next stage's queue before dropping a packet (counted
/// as `send_failed`): back-pressure for bursts, no hang on a stuck stage.
pub const HOP_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// A socket for sending hops: unbound, blocking up to [`HOP_SEND_TIMEOUT`].
pub fn hop_sender() -> std::io::Result<UnixDatagram> {
    let s = UnixDatagram::unbound()?;
    s.set_write_timeout(Some(HOP_SEND_TIMEOUT))?;
    Ok(s)
}

/// Bind a hop socket, replacing a stale one left by a previous process.
pub fn bind(path: &Path) -> Result<UnixDatagram, ChainError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| ChainError::Socket {
            what: "creating the directory of",
            path: path.into(),
            source,
        })?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ChainError::Socket {
                what: "removing stale",
                path: path.into(),
                source,
            });
        }
    }
    UnixDatagram::bind(path).map_err(|source| ChainError::Socket {
        what: "binding",
        path: path.into(),
        source,
    })
}

/// Counters of one stage, published in `<run>/stats/<name>.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageCounters {
    /// Datagrams (or, at the vSwitch, frames) received.
    pub received: u64,
    /// Hops whose HOP_CHECK passed.
    pub hop_passed: u64,
    /// Hops dropped by HOP_CHECK, by error (`bad_tag`, `replay`, `wrong_hop`, …).
    pub hop_dropped: BTreeMap<String, u64>,
    /// Packets that did not parse (dropped).
    pub unparsable: u64,
    /// Packets this stage's own decision dropped (firewall, IDS, vSwitch rules).
    pub verdict_dropped: u64,
    /// Packets sent on.
    pub forwarded: u64,
    /// Packets that could not be sent on (next stage not running); dropped.
    pub send_failed: u64,
}

impl StageCounters {
    /// Count a HOP_CHECK refusal.
    pub fn hop_drop(&mut self, e: AbiError) {
        *self
            .hop_dropped
            .entry(hop_error_name(e).into())
            .or_default() += 1;
    }

    /// All HOP_CHECK refusals.
    pub fn hop_drops(&self) -> u64 {
        self.hop_dropped.values().sum()
    }
}

/// Short name of a HOP_CHECK error, as counters use it.
pub fn hop_error_name(e: AbiError) -> &'static str {
    match e {
        AbiError::HopMalformed => "malformed",
        AbiError::WrongChain => "wrong_chain",
        AbiError::WrongHop => "wrong_hop",
        AbiError::BadTag => "bad_tag",
        AbiError::Replay => "replay",
        AbiError::TooOld => "too_old",
        AbiError::Denied => "denied",
        AbiError::NoSlot => "no_slot",
        _ => "other",
    }
}

/// Write `value` to `<run>/stats/<name>.json` atomically (temporary file, then rename), so a
/// reader never sees half a file.
pub fn write_stats(run_dir: &Path, name: &str, value: &impl Serialize) -> std::io::Result<()> {
    let dir = run_dir.join("stats");
    std::fs::create_dir_all(&dir)?;
    let tmp = dir.join(format!(".{name}.json.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(tmp, dir.join(format!("{name}.json")))
}

/// Every stage's published stats, by name.
pub fn read_stats(run_dir: &Path) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(run_dir.join("stats")) else {
        return out;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".json")
            && !stem.starts_with('.')
            && let Ok(bytes) = std::fs::read(e.path())
            && let Ok(v) = serde_json::from_slice(&bytes)
        {
            out.insert(stem.to_string(), v);
        }
    }
    out
}

/// Sum of every stage's hop counters: `(passed, dropped)`.
pub fn hop_totals(run_dir: &Path) -> (u64, u64) {
    let mut passed = 0;
    let mut dropped = 0;
    for v in read_stats(run_dir).values() {
        for c in stage_counters_in(v) {
            passed += c.hop_passed;
            dropped += c.hop_drops();
        }
    }
    (passed, dropped)
}

/// The [`StageCounters`] inside one stats file (`{"chains": {"<id>": {...}}}`).
pub fn stage_counters_in(v: &serde_json::Value) -> Vec<StageCounters> {
    v.get("chains")
        .and_then(|c| c.as_object())
        .map(|m| {
            m.values()
                .filter_map(|c| serde_json::from_value(c.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What a middlebox decides about a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it on.
    Pass,
    /// Drop it, for this reason.
    Drop(String),
}

/// A middlebox's packet logic, driven by [`run_middlebox`].
pub trait Inspector {
    /// Name of the middlebox (`firewall`, `ids`, `monitor`): its stage in the chain and the
    /// policy entry it reads.
    const KIND: &'static str;

    /// Apply a (new) policy. Returns lines for the log (e.g. what a config could not use).
    fn configure(&mut self, policy: &Policy) -> anyhow::Result<Vec<String>>;

    /// Decide about one packet of the device, travelling in `dir`.
    fn inspect(
        &mut self,
        dir: Direction,
        parsed: &gw_packet::Parsed,
        frame: &[u8],
        now: Instant,
    ) -> Verdict;

    /// Middlebox-specific counters for the stats file.
    fn stats(&self) -> serde_json::Value;

    /// Called about once a second (flush exports, expire state).
    fn tick(&mut self, _now: Instant) {}
}

/// Command-line arguments every middlebox process takes (the vSwitch passes them).
#[derive(clap::Args, Debug, Clone)]
pub struct StageArgs {
    /// The device whose chains this process serves (`aa:bb:cc:dd:ee:ff`), or `default` for
    /// devices without a policy.
    #[arg(long)]
    pub device: String,
    /// Directory of hop sockets and stats files.
    #[arg(long, default_value = RUN_DIR)]
    pub run_dir: PathBuf,
    /// Software monitor socket (host tests).
    #[arg(long, env = gw_hcall::ENV_MONITOR, default_value = gw_hcall::DEFAULT_SOCKET)]
    pub monitor: PathBuf,
    /// How to reach the monitor: `auto`, `socket` or `hypervisor`.
    #[arg(long, default_value = "auto")]
    pub transport: TransportKind,
}

impl StageArgs {
    /// The device, `None` for the default chain.
    pub fn device(&self) -> anyhow::Result<Option<Mac>> {
        if self.device == "default" {
            return Ok(None);
        }
        gw_packet::parse_mac(&self.device).map(Some).ok_or_else(|| {
            anyhow::anyhow!(
                "--device {:?} is not a MAC address or \"default\"",
                self.device
            )
        })
    }

    /// Name of this process's stats file.
    pub fn stats_name(&self, kind: &str) -> String {
        format!("{kind}-{}", self.device.replace(':', ""))
    }
}

/// Verdict drops written to stderr, at most [`DropLog::PER_SECOND`] a second.
#[derive(Debug)]
struct DropLog {
    window: Instant,
    logged: u32,
    suppressed: u64,
}

impl DropLog {
    const PER_SECOND: u32 = 10;

    fn new() -> Self {
        DropLog {
            window: Instant::now(),
            logged: 0,
            suppressed: 0,
        }
    }

    fn drop(&mut self, now: Instant, kind: &str, dir: Direction, p: &gw_packet::Parsed, why: &str) {
        if now.duration_since(self.window) >= Duration::from_secs(1) {
            if self.suppressed > 0 {
                eprintln!("{kind}: ({} more drops not logged)", self.suppressed);
            }
            self.window = now;
            self.logged = 0;
            self.suppressed = 0;
        }
        if self.logged >= Self::PER_SECOND {
            self.suppressed += 1;
            return;
        }
        self.logged += 1;
        let what = match &p.network {
            gw_packet::Network::Ip(ip) => {
                let ports = ip
                    .l4
                    .ports()
                    .map_or(String::new(), |(s, d)| format!(" {s}→{d}"));
                format!("{} → {} proto {}{ports}", ip.src, ip.dst, ip.l4.protocol())
            }
            gw_packet::Network::Arp(a) => format!("ARP {} → {}", a.sender_ip, a.target_ip),
            gw_packet::Network::Other(t) => format!("ethertype {t:#06x}"),
        };
        eprintln!("{kind}: drop {dir:?} {what}: {why}");
    }
}

/// One direction of a middlebox process.
struct Port {
    dir: Direction,
    chain: u32,
    slot: u16,
    socket: UnixDatagram,
    /// Sends to `next` (blocking, with a timeout; `socket` is non-blocking for polling).
    tx: UnixDatagram,
    next: PathBuf,
    counters: StageCounters,
    log: DropLog,
}

/// Run a middlebox stage: register with the monitor for both chains of the device, receive,
/// check, inspect, tag and forward until killed. Returns only on a setup or monitor failure.
pub fn run_middlebox<I: Inspector>(args: &StageArgs, mut inspector: I) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let device = args.device()?;
    let mut client = gw_hcall::open(args.transport, &args.monitor)?;
    let mut policy = Policy::fetch(&mut client).context("reading the policy")?;
    let mut dp = policy.datapath()?;
    let stage = dp
        .stage_of(I::KIND)
        .with_context(|| format!("the policy's chain {:?} has no {}", dp.middleboxes, I::KIND))?;
    let hops = dp.hops();
    for line in inspector.configure(&policy)? {
        eprintln!("{}: {line}", I::KIND);
    }
    let mut ports = Vec::new();
    for dir in [Direction::FromDevice, Direction::ToDevice] {
        let chain = chain_id(device.as_ref(), dir, hops);
        let (slot, pcr) = client
            .hop_register(chain, stage, hops, I::KIND, env!("CARGO_PKG_VERSION"))
            .with_context(|| format!("registering at stage {stage} of chain {chain:08x}"))?;
        let socket = bind(&socket_path(&args.run_dir, chain, stage))?;
        socket.set_nonblocking(true)?;
        eprintln!(
            "{}: device {} {dir:?}: chain {chain:08x} stage {stage}/{hops}, slot {slot}, PCR {pcr}",
            I::KIND,
            args.device
        );
        ports.push(Port {
            dir,
            chain,
            slot,
            socket,
            tx: hop_sender()?,
            next: socket_path(&args.run_dir, chain, (stage + 1) % hops),
            counters: StageCounters::default(),
            log: DropLog::new(),
        });
    }
    let stats_name = args.stats_name(I::KIND);
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    let mut last_tick = Instant::now();
    // Started by the vSwitch: when it goes, so do we (it restarts every stage when it returns).
    let parent = rustix::process::getppid();
    loop {
        let sockets: Vec<&UnixDatagram> = ports.iter().map(|p| &p.socket).collect();
        let ready = readable(&sockets)?;
        for (port, ready) in ports.iter_mut().zip(ready) {
            if !ready {
                continue;
            }
            // Drain what is queued, so one busy direction cannot starve the timer below.
            for _ in 0..64 {
                let n = match port.socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                };
                step(
                    &mut client,
                    &mut inspector,
                    port,
                    dp.signing,
                    &buf[..n],
                    &mut out,
                )?;
            }
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= Duration::from_secs(1) {
            last_tick = now;
            if rustix::process::getppid() != parent {
                eprintln!("{}: the vSwitch is gone; exiting", I::KIND);
                return Ok(());
            }
            inspector.tick(now);
            let (version, _) = client.policy_version()?;
            if version != policy.version {
                policy = Policy::fetch(&mut client)?;
                let new = policy.datapath()?;
                if new.middleboxes != dp.middleboxes {
                    // The vSwitch restarts every stage for a new chain layout.
                    eprintln!("{}: chain layout changed; exiting for a restart", I::KIND);
                    return Ok(());
                }
                dp = new;
                match inspector.configure(&policy) {
                    Ok(lines) => {
                        for line in lines {
                            eprintln!("{}: {line}", I::KIND);
                        }
                        eprintln!(
                            "{}: policy v{} applied (signing {})",
                            I::KIND,
                            policy.version,
                            if dp.signing { "on" } else { "off" }
                        );
                    }
                    // Keep enforcing the previous config rather than none.
                    Err(e) => {
                        eprintln!("{}: policy v{} not applied: {e:#}", I::KIND, policy.version)
                    }
                }
            }
            let chains: BTreeMap<String, &StageCounters> = ports
                .iter()
                .map(|p| (format!("{:08x}", p.chain), &p.counters))
                .collect();
            let value = serde_json::json!({
                "kind": I::KIND,
                "device": args.device,
                "policy_version": policy.version,
                "signing": dp.signing,
                "chains": chains,
                "middlebox": inspector.stats(),
            });
            if let Err(e) = write_stats(&args.run_dir, &stats_name, &value) {
                eprintln!("{}: writing stats: {e}", I::KIND);
            }
        }
    }
}

/// One datagram through one middlebox stage.
fn step<I: Inspector, T: Transport>(
    client: &mut Client<T>,
    inspector: &mut I,
    port: &mut Port,
    signing: bool,
    frame: &[u8],
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    port.counters.received += 1;
    let packet = if signing {
        match client.hop_check(port.slot, frame) {
            Ok(_) => {
                port.counters.hop_passed += 1;
                &frame[..frame.len() - gw_hoptag::TRAILER_LEN]
            }
            Err(CallError::Monitor(e)) => {
                port.counters.hop_drop(e);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        frame
    };
    let Ok(parsed) = gw_packet::parse(packet) else {
        port.counters.unparsable += 1;
        return Ok(());
    };
    let now = Instant::now();
    if let Verdict::Drop(why) = inspector.inspect(port.dir, &parsed, packet, now) {
        port.counters.verdict_dropped += 1;
        port.log.drop(now, I::KIND, port.dir, &parsed, &why);
        return Ok(());
    }
    out.clear();
    out.extend_from_slice(packet);
    if signing {
        out.extend_from_slice(&client.hop_tag(port.slot, packet)?);
    }
    match port.tx.send_to(out, &port.next) {
        Ok(_) => port.counters.forwarded += 1,
        Err(_) => port.counters.send_failed += 1,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_are_stable_distinct_and_directional() {
        let a = [2, 0, 0, 0, 0, 1];
        let b = [2, 0, 0, 0, 0, 2];
        let ids = [
            chain_id(Some(&a), Direction::FromDevice, 4),
            chain_id(Some(&a), Direction::ToDevice, 4),
            chain_id(Some(&b), Direction::FromDevice, 4),
            chain_id(Some(&b), Direction::ToDevice, 4),
            chain_id(None, Direction::FromDevice, 4),
            chain_id(None, Direction::ToDevice, 4),
            chain_id(Some(&a), Direction::FromDevice, 2),
            chain_id(None, Direction::FromDevice, 2),
        ];
        let set: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(set.len(), ids.len(), "a new layout gets new chains");
        assert_eq!(ids[0] | 1, ids[1]);
        assert_eq!(ids[0] & 1, 0);
        assert_eq!(chain_id(Some(&a), Direction::FromDevice, 4), ids[0]);
    }

    #[test]
    fn policy_entries_decode_with_defaults_and_errors() {
        let mut configs = BTreeMap::new();
        configs.insert(
            "monitor".to_string(),
            r#"{"devices": ["02:00:00:00:00:01"]}"#.to_string(),
        );
        let doc = gw_proto::wire::PolicyDocument {
            gateway_id: "gw".into(),
            version: 4,
            configs,
        };
        let p = Policy::decode(4, &serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(p.devices().unwrap(), vec![[2, 0, 0, 0, 0, 1]]);
        let dp = p.datapath().unwrap();
        assert!(dp.signing);
        assert_eq!(dp.hops(), 4);
        assert_eq!(dp.stage_of("ids"), Some(2));
        assert_eq!(dp.stage_of("nat"), None);
        let mut p2 = p.clone();
        p2.configs.insert(
            "datapath".into(),
            r#"{"signing": false, "middleboxes": ["firewall"]}"#.into(),
        );
        assert_eq!(p2.datapath().unwrap().hops(), 2);
        p2.configs
            .insert("datapath".into(), r#"{"sign": false}"#.into());
        assert!(p2.datapath().is_err());
        p2.configs
            .insert("monitor".into(), r#"{"devices": ["zz"]}"#.into());
        assert!(p2.devices().is_err());
        assert_eq!(Policy::decode(0, b"").unwrap(), Policy::default());
        assert!(Policy::decode(1, b"not json").is_err());
    }

    #[test]
    fn stats_files_are_written_atomically_and_summed() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = StageCounters {
            hop_passed: 5,
            ..Default::default()
        };
        c.hop_drop(AbiError::Replay);
        c.hop_drop(AbiError::WrongHop);
        let v = serde_json::json!({"chains": {"00000002": c, "00000003": c}});
        write_stats(dir.path(), "ids-020000000001", &v).unwrap();
        write_stats(dir.path(), "vswitch", &serde_json::json!({"chains": {}})).unwrap();
        assert_eq!(hop_totals(dir.path()), (10, 4));
        assert_eq!(read_stats(dir.path()).len(), 2);
    }
}
