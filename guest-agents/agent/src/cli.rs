//! Command-line options every program speaking to the controller as this gateway shares
//! (`gw-agent`, and the test tool `gw-agent-rogue`): where the controller is, the image's
//! provisioned trust anchors, the agent's state, and the monitor.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{Context, Result};
use gw_proto::endorse::Endorsement;

/// Controller, provisioned files and monitor.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Controller agent port, HOST:PORT (an IP address).
    #[arg(long, env = "GW_CONTROLLER")]
    pub controller: SocketAddr,
    /// Name the controller's certificate carries.
    #[arg(long, env = "GW_SERVER_NAME", default_value = "localhost")]
    pub server_name: String,
    /// Fleet CA certificate (PEM) provisioned with the image.
    #[arg(long, default_value = "/etc/gatewarden/controller-ca.pem")]
    pub ca: PathBuf,
    /// This gateway's endorsement (JSON) provisioned with the image.
    #[arg(long, default_value = "/etc/gatewarden/endorsement.json")]
    pub endorsement: PathBuf,
    /// Where the agent's TLS key and certificate are kept.
    #[arg(long, default_value = "/var/lib/gatewarden-agent")]
    pub state_dir: PathBuf,
    /// Software monitor socket.
    #[arg(long, env = gw_hcall::ENV_MONITOR, default_value = gw_hcall::DEFAULT_SOCKET)]
    pub monitor: PathBuf,
    /// How to reach the monitor: auto, socket or hypervisor.
    #[arg(long, default_value = "auto")]
    pub transport: gw_hcall::TransportKind,
}

impl GatewayArgs {
    /// A board that makes its device secret on its first boot (a Raspberry Pi's OTP) has no
    /// endorsement in its image: the vendor signs the gateway's public keys (`gwctl version`)
    /// after that boot (`cargo xtask endorse`, docs/flashing.md) and the file appears later.
    fn wait_for_endorsement(&self) {
        let mut told = false;
        while !self.endorsement.exists() {
            if !told {
                tracing::warn!(
                    path = %self.endorsement.display(),
                    "no endorsement yet: this gateway's public keys (gwctl version) must be endorsed by its vendor (cargo xtask endorse); waiting for the file"
                );
                told = true;
            }
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    }

    /// Read the provisioned CA certificate and endorsement: `(ca_pem, endorsement)`.
    pub fn provisioned(&self) -> Result<(Vec<u8>, Endorsement)> {
        self.wait_for_endorsement();
        let endorsement: Endorsement = serde_json::from_slice(
            &std::fs::read(&self.endorsement)
                .with_context(|| format!("reading {}", self.endorsement.display()))?,
        )
        .with_context(|| format!("{} is not an endorsement", self.endorsement.display()))?;
        gw_proto::endorse::check_id(&endorsement.gateway_id)?;
        let ca_pem =
            std::fs::read(&self.ca).with_context(|| format!("reading {}", self.ca.display()))?;
        Ok((ca_pem, endorsement))
    }
}
