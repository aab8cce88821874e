//! `gw-vswitch`: the Gatewarden vSwitch.
//!
//! Bridges a LAN port (the IoT devices) and a WAN port at layer 2 with AF_PACKET sockets, and
//! sends every IP packet through its device's chain of middlebox processes, each hop tagged and
//! checked by the monitor (see `docs/datapath.md`):
//!
//! - IPv4 and IPv6 (TCP, UDP, ICMP, ICMPv6 including neighbour discovery) go through the chain of
//!   the device they belong to: the source MAC on the LAN port, the destination MAC on the WAN
//!   port. Devices without a policy share the default chain.
//! - ARP is handled here: a request or reply whose sender MAC differs from the frame's source
//!   MAC is dropped (spoofing); the rest is bridged and the sender's address learned.
//! - Every other ethertype is dropped and counted.
//!
//! The vSwitch is stage 0 of every chain. It starts one process per middlebox per device
//! (`gw-firewall`, `gw-ids`, `gw-monitor` from `--bin-dir`), restarts them when they exit, and
//! follows the controller's policy from the monitor's vault.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use clap::Parser;
use gw_chain::{DatapathConfig, Policy, StageCounters, chain_id, socket_path};
use gw_hcall::{CallError, TransportKind};
use gw_packet::{Direction, Mac, Network};

/// Bridge a LAN and a WAN port through per-device middlebox chains.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// LAN interface (the IoT devices' side).
    #[arg(long)]
    lan: String,
    /// WAN interface (the uplink).
    #[arg(long)]
    wan: String,
    /// Directory of hop sockets and stats files.
    #[arg(long, default_value = gw_chain::RUN_DIR)]
    run_dir: PathBuf,
    /// Software monitor socket (host tests).
    #[arg(long, env = gw_hcall::ENV_MONITOR, default_value = gw_hcall::DEFAULT_SOCKET)]
    monitor: PathBuf,
    /// How to reach the monitor: `auto`, `socket` or `hypervisor`.
    #[arg(long, default_value = "auto")]
    transport: TransportKind,
    /// Directory holding the middlebox binaries (default: this binary's directory).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

/// Counters of the switching itself (not of a chain).
#[derive(Default)]
struct SwitchCounters {
    arp_bridged: AtomicU64,
    arp_spoofed: AtomicU64,
    other_ethertype: AtomicU64,
    unparsable: AtomicU64,
    oversize: AtomicU64,
    tx_failed: AtomicU64,
}

/// What the port threads need to send a packet into a chain.
struct Chains {
    /// Devices with their own chains.
    devices: BTreeSet<Mac>,
    /// Chain id → stage-0 slot.
    slots: HashMap<u32, u16>,
    /// Hop signing on.
    signing: bool,
    /// Hops of every chain.
    hops: u8,
}

struct Shared {
    cli: Cli,
    chains: RwLock<Chains>,
    counters: Mutex<BTreeMap<u32, StageCounters>>,
    switch: SwitchCounters,
    learned: Mutex<BTreeMap<Mac, std::net::Ipv4Addr>>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    deepen_hop_queues();
    let lan = Arc::new(open_port(&cli.lan)?);
    let wan = Arc::new(open_port(&cli.wan)?);
    let mut client = gw_hcall::open(cli.transport, &cli.monitor)?;
    let policy = Policy::fetch(&mut client).context("reading the policy from the monitor")?;
    let bin_dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("binary has no directory")?
            .to_path_buf(),
    };
    std::fs::create_dir_all(&cli.run_dir)
        .with_context(|| format!("creating {}", cli.run_dir.display()))?;
    let shared = Arc::new(Shared {
        cli,
        chains: RwLock::new(Chains {
            devices: BTreeSet::new(),
            slots: HashMap::new(),
            signing: true,
            hops: 1,
        }),
        counters: Mutex::new(BTreeMap::new()),
        switch: SwitchCounters::default(),
        learned: Mutex::new(BTreeMap::new()),
    });
    let mut sup = Supervisor {
        bin_dir,
        children: BTreeMap::new(),
        returns: BTreeMap::new(),
        layout: None,
    };
    sup.apply(&shared, &mut client, &policy)?;
    let mut policy_version = policy.version;

    for (from, to, dir) in [
        (lan.clone(), wan.clone(), Direction::FromDevice),
        (wan.clone(), lan.clone(), Direction::ToDevice),
    ] {
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("{dir:?}"))
            .spawn(move || {
                if let Err(e) = ingress(&shared, &from, &to, dir) {
                    eprintln!("gw-vswitch: {dir:?} port: {e:#}");
                    std::process::exit(1);
                }
            })?;
    }
    eprintln!(
        "gw-vswitch: bridging {} (LAN) and {} (WAN); policy v{policy_version}",
        shared.cli.lan, shared.cli.wan
    );

    // The main thread: the chains' return hops, the policy and the middlebox processes.
    let mut buf = vec![0u8; gw_chain::MAX_DATAGRAM + 1];
    let mut last_tick = Instant::now();
    loop {
        let ids: Vec<u32> = sup.returns.keys().copied().collect();
        let sockets: Vec<&UnixDatagram> = ids.iter().map(|id| &sup.returns[id]).collect();
        let ready = gw_chain::readable(&sockets)?;
        for (id, ready) in ids.iter().zip(ready) {
            if !ready {
                continue;
            }
            for _ in 0..64 {
                let n = match sup.returns[id].recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e.into()),
                };
                egress(&shared, &mut client, *id, &buf[..n], &lan, &wan)?;
            }
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= Duration::from_secs(1) {
            last_tick = now;
            let (version, _) = client.policy_version()?;
            if version != policy_version {
                let policy = Policy::fetch(&mut client)?;
                match sup.apply(&shared, &mut client, &policy) {
                    Ok(()) => eprintln!("gw-vswitch: policy v{} applied", policy.version),
                    Err(e) => {
                        eprintln!("gw-vswitch: policy v{} not applied: {e:#}", policy.version)
                    }
                }
                policy_version = policy.version;
            }
            sup.reap();
            write_stats(&shared, policy_version);
        }
    }
}

/// Unix datagram queue length the hops want: a burst of segments waits in the next stage's
/// queue instead of being dropped (Linux's default is 10 datagrams), but not so deep that a
/// slow chain builds seconds of queueing delay (bufferbloat) that TCP then retransmits into.
const HOP_QUEUE: u32 = 64;

/// Raise `net.unix.max_dgram_qlen` (this network namespace) to [`HOP_QUEUE`] if it is lower.
/// Best effort: without it the data path still works, with more `send_failed` under load.
fn deepen_hop_queues() {
    let path = "/proc/sys/net/unix/max_dgram_qlen";
    let current = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok());
    if current.is_some_and(|c| c < HOP_QUEUE)
        && let Err(e) = std::fs::write(path, HOP_QUEUE.to_string())
    {
        eprintln!("gw-vswitch: cannot raise {path} to {HOP_QUEUE}: {e}");
    }
}

/// Stop the kernel merging received segments on `iface` (GRO): a merged frame is bigger than
/// the port's MTU, so it could neither be sent on nor be what the device sent. Sets the
/// interface's GRO size limits (`IFLA_GRO_MAX_SIZE`, and `IFLA_GRO_IPV4_MAX_SIZE` on kernels
/// that have it; older ones ignore it) to 0 over rtnetlink: no merge fits in 0 bytes.
fn disable_gro(iface: &str) -> Result<()> {
    use netlink_packet_core::{
        NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};
    use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

    let index: u32 = std::fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
        .with_context(|| format!("no interface {iface:?}"))?
        .trim()
        .parse()
        .context("interface index")?;
    let mut link = LinkMessage::default();
    link.header.index = index;
    link.attributes.push(LinkAttribute::GroMaxSize(0));
    link.attributes.push(LinkAttribute::GroIpv4MaxSize(0));
    let mut msg = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::SetLink(link)),
    );
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    let mut socket = Socket::new(NETLINK_ROUTE).context("opening a netlink socket")?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&buf, 0).context("sending RTM_SETLINK")?;
    let (reply, _) = socket
        .recv_from_full()
        .context("reading the netlink answer")?;
    let answer = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| anyhow::anyhow!("netlink answer: {e}"))?;
    match answer.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => {
            Err(anyhow::anyhow!("RTM_SETLINK {iface}: {}", e.to_io()))
        }
        _ => Ok(()),
    }
}

/// Open an AF_PACKET socket on `iface`: promiscuous (it is a bridge port) and blind to the
/// frames it sends itself (a BPF filter on the packet type), so the bridge never loops.
fn open_port(iface: &str) -> Result<afpacket::sync::RawPacketStream> {
    disable_gro(iface).with_context(|| format!("turning GRO off on {iface:?}"))?;
    let mut s = afpacket::sync::RawPacketStream::new()
        .context("opening an AF_PACKET socket (needs CAP_NET_RAW)")?;
    s.bind(iface)
        .with_context(|| format!("binding to interface {iface:?}"))?;
    s.set_promisc(iface, true)
        .with_context(|| format!("promiscuous mode on {iface:?}"))?;
    // ld pkttype (SKF_AD_OFF + SKF_AD_PKTTYPE); jeq PACKET_OUTGOING → drop; else accept.
    let filter = vec![
        (0x30, 0, 0, 0xffff_f004),
        (0x15, 0, 1, 4),
        (0x06, 0, 0, 0),
        (0x06, 0, 0, 0x0004_0000),
    ];
    s.set_bpf_filter(filter)
        .with_context(|| format!("attaching the inbound-only filter on {iface:?}"))?;
    // Frames queued before the filter was attached may include our own.
    s.drain();
    Ok(s)
}

/// A port's receive loop: ARP here, IP into the device's chain, the rest dropped.
fn ingress(
    shared: &Shared,
    port: &afpacket::sync::RawPacketStream,
    other: &afpacket::sync::RawPacketStream,
    dir: Direction,
) -> Result<()> {
    let mut client = gw_hcall::open(shared.cli.transport, &shared.cli.monitor)?;
    let sock = gw_chain::hop_sender()?;
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(gw_chain::MAX_DATAGRAM);
    let sw = &shared.switch;
    loop {
        let n = (&*port).read(&mut buf)?;
        let frame = &buf[..n];
        if n > gw_abi_max_packet() {
            // Larger than any hop carries (offloads merged segments): never forwarded unchecked.
            sw.oversize.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Ok(parsed) = gw_packet::parse(frame) else {
            sw.unparsable.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        match parsed.network {
            Network::Arp(arp) => {
                if arp.sender_mac != parsed.src_mac {
                    sw.arp_spoofed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if dir == Direction::FromDevice {
                    shared
                        .learned
                        .lock()
                        .expect("learned table")
                        .insert(arp.sender_mac, arp.sender_ip);
                }
                match (&*other).write(frame) {
                    Ok(n) if n == frame.len() => sw.arp_bridged.fetch_add(1, Ordering::Relaxed),
                    _ => sw.tx_failed.fetch_add(1, Ordering::Relaxed),
                };
            }
            Network::Other(_) => {
                sw.other_ethertype.fetch_add(1, Ordering::Relaxed);
            }
            Network::Ip(_) => {
                let mac = match dir {
                    Direction::FromDevice => parsed.src_mac,
                    Direction::ToDevice => parsed.dst_mac,
                };
                let (chain, slot, signing, hops) = {
                    let c = shared.chains.read().expect("chains");
                    let device = c.devices.contains(&mac).then_some(&mac);
                    let chain = chain_id(device, dir, c.hops);
                    (chain, c.slots.get(&chain).copied(), c.signing, c.hops)
                };
                let Some(slot) = slot else {
                    count(shared, chain, |c| c.send_failed += 1);
                    continue;
                };
                out.clear();
                out.extend_from_slice(frame);
                if signing {
                    match client.hop_tag(slot, frame) {
                        Ok(t) => out.extend_from_slice(&t),
                        Err(CallError::Monitor(e)) => {
                            count(shared, chain, |c| c.hop_drop(e));
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                let next = socket_path(&shared.cli.run_dir, chain, 1 % hops);
                let sent = sock.send_to(&out, &next).is_ok();
                count(shared, chain, |c| {
                    c.received += 1;
                    if sent {
                        c.forwarded += 1
                    } else {
                        c.send_failed += 1
                    }
                });
            }
        }
    }
}

fn gw_abi_max_packet() -> usize {
    gw_chain::MAX_DATAGRAM - gw_hoptag::TRAILER_LEN
}

fn count(shared: &Shared, chain: u32, f: impl FnOnce(&mut StageCounters)) {
    f(shared
        .counters
        .lock()
        .expect("counters")
        .entry(chain)
        .or_default());
}

/// A packet back from the last middlebox: check the last hop, then out of the right port.
fn egress(
    shared: &Shared,
    client: &mut gw_hcall::Client<Box<dyn gw_hcall::Transport>>,
    chain: u32,
    frame: &[u8],
    lan: &afpacket::sync::RawPacketStream,
    wan: &afpacket::sync::RawPacketStream,
) -> Result<()> {
    let (slot, signing) = {
        let c = shared.chains.read().expect("chains");
        (c.slots.get(&chain).copied(), c.signing)
    };
    let Some(slot) = slot else {
        return Ok(());
    };
    let packet = if signing {
        match client.hop_check(slot, frame) {
            Ok(_) => {
                count(shared, chain, |c| c.hop_passed += 1);
                &frame[..frame.len() - gw_hoptag::TRAILER_LEN]
            }
            Err(CallError::Monitor(e)) => {
                count(shared, chain, |c| c.hop_drop(e));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    } else {
        frame
    };
    // The direction is the chain id's low bit: from-device leaves on the WAN port.
    let port = if chain & 1 == 0 { wan } else { lan };
    match (&*port).write(packet) {
        Ok(n) if n == packet.len() => count(shared, chain, |c| c.forwarded += 1),
        _ => {
            shared.switch.tx_failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

fn write_stats(shared: &Shared, policy_version: u64) {
    let sw = &shared.switch;
    let chains: BTreeMap<String, StageCounters> = shared
        .counters
        .lock()
        .expect("counters")
        .iter()
        .map(|(id, c)| (format!("{id:08x}"), c.clone()))
        .collect();
    let learned: BTreeMap<String, String> = shared
        .learned
        .lock()
        .expect("learned")
        .iter()
        .map(|(m, ip)| (gw_packet::mac_string(m), ip.to_string()))
        .collect();
    let value = serde_json::json!({
        "kind": "vswitch",
        "policy_version": policy_version,
        "signing": shared.chains.read().expect("chains").signing,
        "chains": chains,
        "switch": {
            "arp_bridged": sw.arp_bridged.load(Ordering::Relaxed),
            "arp_spoofed": sw.arp_spoofed.load(Ordering::Relaxed),
            "other_ethertype": sw.other_ethertype.load(Ordering::Relaxed),
            "unparsable": sw.unparsable.load(Ordering::Relaxed),
            "oversize": sw.oversize.load(Ordering::Relaxed),
            "tx_failed": sw.tx_failed.load(Ordering::Relaxed),
        },
        "learned": learned,
    });
    if let Err(e) = gw_chain::write_stats(&shared.cli.run_dir, "vswitch", &value) {
        eprintln!("gw-vswitch: writing stats: {e}");
    }
}

/// A middlebox process the vSwitch runs.
struct Proc {
    child: Option<Child>,
    args: Vec<String>,
    program: PathBuf,
    restarts: u32,
    next_start: Instant,
}

/// Starts and restarts middlebox processes and owns the return-hop sockets.
struct Supervisor {
    bin_dir: PathBuf,
    /// (device or "default", middlebox) → process.
    children: BTreeMap<(String, String), Proc>,
    /// Chain id → stage-0 socket.
    returns: BTreeMap<u32, UnixDatagram>,
    /// The middlebox list the processes were started for.
    layout: Option<DatapathConfig>,
}

impl Supervisor {
    /// Register, bind and start whatever `policy` needs that is not running yet; stop what it
    /// no longer names.
    fn apply(
        &mut self,
        shared: &Shared,
        client: &mut gw_hcall::Client<Box<dyn gw_hcall::Transport>>,
        policy: &Policy,
    ) -> Result<()> {
        let dp = policy.datapath()?;
        let devices = policy.devices()?;
        if self
            .layout
            .as_ref()
            .is_some_and(|l| l.middleboxes != dp.middleboxes)
        {
            // A new layout means new hop counts: every stage starts over.
            for (_, p) in std::mem::take(&mut self.children) {
                stop(p);
            }
        }
        let mut wanted: Vec<Option<Mac>> = vec![None];
        wanted.extend(devices.iter().copied().map(Some));
        let mut slots = HashMap::new();
        for dev in &wanted {
            for dir in [Direction::FromDevice, Direction::ToDevice] {
                let chain = chain_id(dev.as_ref(), dir, dp.hops());
                let (slot, _pcr) = client
                    .hop_register(chain, 0, dp.hops(), "vswitch", env!("CARGO_PKG_VERSION"))
                    .with_context(|| format!("registering stage 0 of chain {chain:08x}"))?;
                slots.insert(chain, slot);
                if let std::collections::btree_map::Entry::Vacant(e) = self.returns.entry(chain) {
                    let s = gw_chain::bind(&socket_path(&shared.cli.run_dir, chain, 0))?;
                    s.set_nonblocking(true)?;
                    e.insert(s);
                }
            }
        }
        self.returns.retain(|id, _| slots.contains_key(id));
        {
            let mut c = shared.chains.write().expect("chains");
            c.devices = devices.iter().copied().collect();
            c.slots = slots;
            c.signing = dp.signing;
            c.hops = dp.hops();
        }
        let names: BTreeSet<String> = wanted
            .iter()
            .map(|d| d.as_ref().map_or("default".into(), gw_packet::mac_string))
            .collect();
        let stale: Vec<_> = self
            .children
            .keys()
            .filter(|(d, _)| !names.contains(d))
            .cloned()
            .collect();
        for k in stale {
            if let Some(p) = self.children.remove(&k) {
                stop(p);
            }
        }
        for dev in &names {
            for mb in &dp.middleboxes {
                let key = (dev.clone(), mb.clone());
                if self.children.contains_key(&key) {
                    continue;
                }
                let program = self.bin_dir.join(format!("gw-{mb}"));
                let args = vec![
                    "--device".into(),
                    dev.clone(),
                    "--run-dir".into(),
                    shared.cli.run_dir.display().to_string(),
                    "--monitor".into(),
                    shared.cli.monitor.display().to_string(),
                    "--transport".into(),
                    match shared.cli.transport {
                        TransportKind::Auto => "auto",
                        TransportKind::Socket => "socket",
                        TransportKind::Hypervisor => "hypervisor",
                    }
                    .into(),
                ];
                let mut p = Proc {
                    child: None,
                    args,
                    program,
                    restarts: 0,
                    next_start: Instant::now(),
                };
                start(&mut p);
                self.children.insert(key, p);
            }
        }
        self.layout = Some(dp);
        Ok(())
    }

    /// Restart exited middleboxes, with a growing delay for ones that keep failing.
    fn reap(&mut self) {
        let now = Instant::now();
        for ((dev, mb), p) in &mut self.children {
            if let Some(child) = &mut p.child
                && let Ok(Some(status)) = child.try_wait()
            {
                eprintln!("gw-vswitch: {mb} for {dev} exited ({status}); restarting");
                p.child = None;
                p.restarts += 1;
                p.next_start = now + Duration::from_secs(1 << p.restarts.min(5));
            }
            if p.child.is_none() && now >= p.next_start {
                start(p);
            }
        }
    }
}

fn start(p: &mut Proc) {
    match Command::new(&p.program).args(&p.args).spawn() {
        Ok(c) => p.child = Some(c),
        Err(e) => {
            eprintln!("gw-vswitch: starting {}: {e}", p.program.display());
            p.restarts += 1;
            p.next_start = Instant::now() + Duration::from_secs(1 << p.restarts.min(5));
        }
    }
}

fn stop(mut p: Proc) {
    if let Some(mut c) = p.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}
