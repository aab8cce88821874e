//! `gw-loadgen`: simulate many gateways against a running controller.
//!
//! Each simulated gateway is the real gateway agent (`gw_agent`: enrollment, mutual TLS,
//! challenges, policy) over an in-process instance of the real monitor core (`gw_core`, the
//! code the hypervisor and the software monitor run) with its own device secret, a 50-entry
//! event log and a vendor endorsement. Quotes are genuinely signed and verified; only the
//! process boundary of the software monitor is left out, so one machine can hold thousands.
//! The identities say `InsecureSoftwareMonitor`: they are simulations.

use std::{
    cell::RefCell,
    net::SocketAddr,
    path::PathBuf,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use clap::Parser;
use ed25519_dalek::SigningKey;
use gw_abi::Function;
use gw_core::{Caller, Config, Monitor};
use gw_hcall::{CallResult, Client, Transport, in_process::InProcess};
use gw_proto::{endorse::Endorsement, manifest::ReferenceManifest};
use hyper::Method;
use vtpm::{ComponentKind, DeviceSecret, KeyHierarchy, MonitorIdentity, MonitorKind};

/// Simulate gateways against a controller.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Controller agent port.
    #[arg(long)]
    controller: SocketAddr,
    /// Controller operator API (to trust the simulation's vendor key and import its manifest).
    #[arg(long)]
    api: SocketAddr,
    /// Controller state directory (fleet CA and operator token).
    #[arg(long)]
    controller_dir: PathBuf,
    /// Number of gateways.
    #[arg(long, default_value_t = 100)]
    gateways: usize,
    /// Gateways started per second.
    #[arg(long, default_value_t = 500)]
    ramp: usize,
    /// How long to run once all are started (e.g. 10m).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Where agent keys and certificates go (a fresh directory).
    #[arg(long)]
    state_dir: PathBuf,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// Event-log entries each simulated gateway starts with (the agent binding adds one more).
const LOG_ENTRIES: usize = 49;

type SimMonitor = Monitor<64, 4>;

/// The monitor core called in process, counting quotes.
struct Counted {
    inner: InProcess<64, 4>,
    quotes: Arc<AtomicU64>,
}

impl Transport for Counted {
    fn call(
        &mut self,
        function: Function,
        request: &[u8],
        response: &mut [u8],
    ) -> CallResult<usize> {
        if function == Function::Quote {
            self.quotes.fetch_add(1, Ordering::Relaxed);
        }
        self.inner.call(function, request, response)
    }
}

fn digest(label: &str) -> [u8; 32] {
    vtpm::sha256(label.as_bytes())
}

/// The components every simulated gateway measures, as `(pcr, kind, name, digest)`.
fn components() -> Vec<(u16, ComponentKind, String, [u8; 32])> {
    let mut v = vec![
        (
            1,
            ComponentKind::Hypervisor,
            "gw-loadgen-monitor".to_string(),
            digest("hv"),
        ),
        (
            3,
            ComponentKind::GuestKernel,
            "linux".into(),
            digest("kernel"),
        ),
        (
            4,
            ComponentKind::GuestInitramfs,
            "initramfs".into(),
            digest("initramfs"),
        ),
        (5, ComponentKind::GuestDtb, "dtb".into(), digest("dtb")),
        (
            6,
            ComponentKind::GuestCmdline,
            "cmdline".into(),
            digest("cmdline"),
        ),
    ];
    for i in 0..LOG_ENTRIES - v.len() {
        v.push((
            32 + i as u16,
            ComponentKind::MiddleboxBinary,
            format!("mb-{i}"),
            digest(&format!("middlebox {i}")),
        ));
    }
    v
}

const AGENT_PROGRAM: &str = "gw-loadgen simulated agent";

fn manifest() -> ReferenceManifest {
    let mut m = ReferenceManifest::new("gw-loadgen", env!("CARGO_PKG_VERSION"), "simulated");
    for (_, kind, name, d) in components() {
        let ev = vtpm::Event::new(vtpm::PcrIndex::new(1).expect("pcr"), d, kind, &name, "1");
        m.allow(&gw_proto::component::name(&ev).expect("named"), &d);
    }
    m.allow("agent", &digest(AGENT_PROGRAM));
    m
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GW_LOG")
                .unwrap_or_else(|_| "error".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    gw_controller::raise_fd_limit();
    std::fs::create_dir_all(&args.state_dir)?;
    let token = std::fs::read_to_string(args.controller_dir.join("operator.token"))
        .context("reading the operator token")?;
    let ca = args.controller_dir.join("ca.cert.pem");
    let api = gw_controller::client::ApiClient::new(args.api, "localhost", &ca, token.trim())?;

    // The simulation's vendor: trusted, and signing the simulation's reference manifest.
    let vendor = SigningKey::from_bytes(&digest("gw-loadgen vendor"));
    let setup = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    setup.block_on(async {
        let body = serde_json::json!({
            "key": hex::encode(vendor.verifying_key().as_bytes()),
            "name": "gw-loadgen",
        });
        api.call(
            Method::POST,
            "/api/v1/vendors",
            Some(body.to_string().into_bytes()),
        )
        .await?;
        let signed = serde_json::to_vec(&manifest().sign(&vendor))?;
        api.call(Method::POST, "/api/v1/manifests", Some(signed))
            .await?;
        anyhow::Ok(())
    })?;
    let ca_pem = std::fs::read(&ca)?;

    let quotes = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let ramp_done = Duration::from_secs_f64(args.gateways as f64 / args.ramp.max(1) as f64);
    let total = ramp_done + args.duration;
    eprintln!(
        "gw-loadgen: {} gateways ({} per second), then {} of steady state",
        args.gateways,
        args.ramp,
        humantime::format_duration(args.duration)
    );

    let mut workers = Vec::new();
    for w in 0..args.threads.max(1) {
        let ids: Vec<usize> = (w..args.gateways).step_by(args.threads.max(1)).collect();
        let (quotes, started, failed) = (quotes.clone(), started.clone(), failed.clone());
        let (ca_pem, vendor, state) = (ca_pem.clone(), vendor.clone(), args.state_dir.clone());
        let (controller, ramp, threads) = (args.controller, args.ramp.max(1), args.threads.max(1));
        workers.push(std::thread::spawn(move || -> Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                let per_worker = Duration::from_secs_f64(threads as f64 / ramp as f64);
                for i in ids {
                    let sim = simulate(i, &vendor, &ca_pem, &state, controller, quotes.clone())?;
                    let failed = failed.clone();
                    tokio::task::spawn_local(async move {
                        if let Err(e) = sim.await {
                            eprintln!("gateway sim-{i}: {e}");
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                    started.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(per_worker).await;
                }
                tokio::time::sleep_until((t0 + total).into()).await;
                anyhow::Ok(())
            })
        }));
    }
    let mut last = (Instant::now(), 0u64);
    while t0.elapsed() < total {
        std::thread::sleep(Duration::from_secs(10).min(total.saturating_sub(t0.elapsed())));
        let q = quotes.load(Ordering::Relaxed);
        let rate = (q - last.1) as f64 / last.0.elapsed().as_secs_f64();
        last = (Instant::now(), q);
        eprintln!(
            "gw-loadgen: {:>6.0}s  gateways {}  quotes answered {q}  ({rate:.0}/s)  failed {}",
            t0.elapsed().as_secs_f64(),
            started.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed)
        );
    }
    for w in workers {
        w.join().map_err(|_| anyhow::anyhow!("worker panicked"))??;
    }
    println!(
        "{}",
        serde_json::json!({
            "gateways": args.gateways,
            "seconds": t0.elapsed().as_secs_f64(),
            "quotes": quotes.load(Ordering::Relaxed),
            "failed": failed.load(Ordering::Relaxed),
            "log_entries": LOG_ENTRIES + 1,
        })
    );
    Ok(())
}

/// Provision gateway `i` and return its agent's future.
fn simulate(
    i: usize,
    vendor: &SigningKey,
    ca_pem: &[u8],
    state: &std::path::Path,
    controller: SocketAddr,
    quotes: Arc<AtomicU64>,
) -> Result<impl std::future::Future<Output = Result<(), gw_agent::AgentError>> + use<>> {
    let id = format!("sim-{i}");
    let secret = DeviceSecret::new(digest(&format!("gw-loadgen device {i}")));
    let keys = KeyHierarchy::derive(&secret);
    let endorsement = Endorsement::sign(
        vendor,
        &id,
        &keys.attestation_key().verifying_key(),
        &keys.control_key().verifying_key(),
    )?;
    let mut monitor = Box::new(SimMonitor::new(Config {
        keys: &keys,
        identity: MonitorIdentity::new(
            MonitorKind::InsecureSoftwareMonitor,
            "gw-loadgen simulated monitor",
            digest("hv"),
        ),
        // A fresh run is a new boot: counters keep moving forward across runs.
        boot_counter: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
        controller_key: None,
        hop_master: digest(&format!("hop {i}")),
    }));
    for (pcr, kind, name, d) in components() {
        monitor
            .measure(pcr, &d, kind, &name, "1")
            .map_err(|e| anyhow::anyhow!("measuring: {e:?}"))?;
    }
    let monitor = Rc::new(RefCell::new(monitor));
    let caller = Caller {
        space: i as u64,
        program: digest(AGENT_PROGRAM),
    };
    let settings = gw_agent::Settings {
        controller,
        server_name: "localhost".into(),
        ca_pem: ca_pem.to_vec(),
        endorsement,
        state_dir: state.join(&id),
        config_dir: state.join(&id).join("config"),
        report_every: Duration::from_secs(3600),
        datapath_dir: None,
    };
    Ok(gw_agent::run(settings, move || {
        Ok(Client::new(Box::new(Counted {
            inner: InProcess::new(monitor.clone(), caller),
            quotes: quotes.clone(),
        }) as Box<dyn Transport>))
    }))
}
