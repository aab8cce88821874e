//! `gw-agent`: the Gatewarden gateway agent (runs in the gateway's Linux, static musl).

use std::{path::PathBuf, time::Duration};

use anyhow::Result;
use clap::Parser;
use gw_agent::{Settings, cli::GatewayArgs};

/// Gatewarden gateway agent: enrolls with the controller, answers its challenges through the
/// monitor, applies the policy it signs. It only ever connects out.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    #[command(flatten)]
    gateway: GatewayArgs,
    /// Where middlebox configs are written.
    #[arg(long, default_value = "/run/gatewarden/config")]
    config_dir: PathBuf,
    /// Seconds between device/counter reports.
    #[arg(long, default_value_t = 30)]
    report_every: u64,
    /// Run directory of the data path (its stats files); reported when it exists.
    #[arg(long, default_value = gw_chain::RUN_DIR)]
    datapath_dir: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GW_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let g = args.gateway;
    let (ca_pem, endorsement) = g.provisioned()?;
    // Fail early and clearly if the monitor cannot be reached at all.
    drop(gw_hcall::open(g.transport, &g.monitor)?);
    let settings = Settings {
        controller: g.controller,
        server_name: g.server_name,
        ca_pem,
        endorsement,
        state_dir: g.state_dir,
        config_dir: args.config_dir,
        report_every: Duration::from_secs(args.report_every.max(1)),
        datapath_dir: Some(args.datapath_dir),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (transport, socket) = (g.transport, g.monitor);
    rt.block_on(gw_agent::run(settings, || {
        gw_hcall::open(transport, &socket)
    }))?;
    Ok(())
}
