//! `gw-agent`: the Gatewarden gateway agent (runs in the gateway's Linux, static musl).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{Context, Result};
use clap::Parser;
use gw_agent::Settings;
use gw_hcall::TransportKind;
use gw_proto::endorse::Endorsement;

/// Gatewarden gateway agent: enrolls with the controller, answers its challenges through the
/// monitor, applies the policy it signs. It only ever connects out.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Controller agent port, HOST:PORT (an IP address).
    #[arg(long, env = "GW_CONTROLLER")]
    controller: SocketAddr,
    /// Name the controller's certificate carries.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// Fleet CA certificate (PEM) provisioned with the image.
    #[arg(long, default_value = "/etc/gatewarden/controller-ca.pem")]
    ca: PathBuf,
    /// This gateway's endorsement (JSON) provisioned with the image.
    #[arg(long, default_value = "/etc/gatewarden/endorsement.json")]
    endorsement: PathBuf,
    /// Where the TLS key and certificate are kept.
    #[arg(long, default_value = "/var/lib/gatewarden-agent")]
    state_dir: PathBuf,
    /// Where middlebox configs are written.
    #[arg(long, default_value = "/run/gatewarden/config")]
    config_dir: PathBuf,
    /// Seconds between device/counter reports.
    #[arg(long, default_value_t = 30)]
    report_every: u64,
    /// Run directory of the data path (its stats files); reported when it exists.
    #[arg(long, default_value = gw_chain::RUN_DIR)]
    datapath_dir: PathBuf,
    /// Software monitor socket.
    #[arg(long, env = gw_hcall::ENV_MONITOR, default_value = gw_hcall::DEFAULT_SOCKET)]
    monitor: PathBuf,
    /// How to reach the monitor: auto, socket or hypervisor.
    #[arg(long, default_value = "auto")]
    transport: TransportKind,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GW_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let endorsement: Endorsement = serde_json::from_slice(
        &std::fs::read(&args.endorsement)
            .with_context(|| format!("reading {}", args.endorsement.display()))?,
    )
    .with_context(|| format!("{} is not an endorsement", args.endorsement.display()))?;
    gw_proto::endorse::check_id(&endorsement.gateway_id)?;
    let ca_pem =
        std::fs::read(&args.ca).with_context(|| format!("reading {}", args.ca.display()))?;
    // Fail early and clearly if the monitor cannot be reached at all.
    drop(gw_hcall::open(args.transport, &args.monitor)?);
    let settings = Settings {
        controller: args.controller,
        server_name: args.server_name,
        ca_pem,
        endorsement,
        state_dir: args.state_dir,
        config_dir: args.config_dir,
        report_every: Duration::from_secs(args.report_every.max(1)),
        datapath_dir: Some(args.datapath_dir),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (transport, socket) = (args.transport, args.monitor);
    rt.block_on(gw_agent::run(settings, || {
        gw_hcall::open(transport, &socket)
    }))?;
    Ok(())
}
