//! `gw-controller`: run the Gatewarden attestation controller, or operate one.

// The controller allocates per message, per result and per query on every thread; glibc's
// allocator spent a fifth of its CPU time under load (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use gw_controller::{
    Controller, Settings,
    alerts::Webhook,
    api::{GatewayDetail, ManifestInfo, Summary},
    client::ApiClient,
    pki::Pki,
    store::{GatewayRow, ResultRow, Store},
};
use hyper::Method;
use tokio::io::AsyncWriteExt;

/// Gatewarden attestation controller.
///
/// `serve` runs it: gateways connect to the agent port (mutual TLS), operators use the HTTPS
/// API and dashboard. The other commands talk to a running controller's API.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    /// State directory: CA, server certificate, policy-signing key, operator token, and the
    /// SQLite database unless --database says otherwise.
    #[arg(
        long,
        env = "GW_CONTROLLER_DIR",
        default_value = "/var/lib/gatewarden-controller",
        global = true
    )]
    state_dir: PathBuf,
    /// API address the operator commands talk to.
    #[arg(
        long,
        env = "GW_CONTROLLER_API",
        default_value = "127.0.0.1:8443",
        global = true
    )]
    api: SocketAddr,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create the state directory (CA, keys, token) and print what gateways are provisioned with.
    Init {
        /// Names and addresses gateways reach the controller by (server certificate SANs).
        #[arg(long = "server-name", default_values = ["localhost", "127.0.0.1", "10.0.2.2"])]
        server_names: Vec<String>,
    },
    /// Run the controller.
    Serve {
        /// Where gateways connect (mutual TLS).
        #[arg(long, default_value = "0.0.0.0:7443")]
        agent_listen: SocketAddr,
        /// Operator API, dashboard and metrics (HTTPS).
        #[arg(long, default_value = "127.0.0.1:8443")]
        api_listen: SocketAddr,
        /// `sqlite://PATH` or `postgres://USER@HOST/DB` (default: SQLite in the state directory).
        #[arg(long, env = "GW_DATABASE_URL")]
        database: Option<String>,
        /// Time between challenges to each gateway (e.g. 30s, 5m).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        epoch: Duration,
        /// Random spread of each challenge, as a fraction of the epoch.
        #[arg(long, default_value_t = 0.1)]
        jitter: f64,
        /// Challenges a gateway may miss before it is unreachable.
        #[arg(long, default_value_t = 3)]
        unreachable_after: u32,
        /// Server certificate names, used when the state directory is first created.
        #[arg(long = "server-name", default_values = ["localhost", "127.0.0.1", "10.0.2.2"])]
        server_names: Vec<String>,
        /// Trust a vendor key for endorsements and manifests: `HEXKEY=NAME` (repeatable).
        #[arg(long = "trust-vendor")]
        trust_vendor: Vec<String>,
        /// POST every state change to this http:// URL (repeatable).
        #[arg(long = "webhook")]
        webhooks: Vec<String>,
        /// File holding the webhook HMAC secret.
        #[arg(long, requires = "webhooks")]
        webhook_secret_file: Option<PathBuf>,
    },
    /// Counts by state.
    Summary,
    /// Print the Prometheus metrics.
    Metrics,
    /// List gateways and their state.
    Gateways,
    /// One gateway: state, devices, policy, latest result.
    Show {
        /// Gateway id.
        id: String,
    },
    /// A gateway's attestation history, newest first.
    History {
        /// Gateway id.
        id: String,
        /// How many results.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Approve a pending gateway.
    Approve {
        /// Gateway id.
        id: String,
    },
    /// Revoke a gateway whose image may be compromised: it is never served or enrolled again
    /// under its keys, and its session ends.
    Revoke {
        /// Gateway id.
        id: String,
        /// Why (recorded in its history).
        #[arg(long)]
        reason: String,
    },
    /// Revoke every endorsement by a vendor key: the key is no longer trusted, enrollments it
    /// endorses are refused, and every gateway it endorsed is revoked.
    RevokeVendor {
        /// ed25519 public key, 64 hex digits.
        key: String,
        /// Why (recorded in each gateway's history).
        #[arg(long)]
        reason: String,
    },
    /// Trust a vendor key (endorsements, manifests).
    TrustVendor {
        /// ed25519 public key, 64 hex digits.
        key: String,
        /// Vendor name.
        name: String,
    },
    /// Import a signed reference manifest (from `cargo xtask image`).
    ImportManifest {
        /// The signed manifest file.
        file: PathBuf,
    },
    /// List reference manifests.
    Manifests,
    /// Stop accepting a manifest.
    RetireManifest {
        /// Manifest id.
        id: i64,
    },
    /// Copy stdin/stdout to a TCP connection: QEMU's user network runs this for each guest
    /// connection to the controller (`guestfwd=...-cmd:gw-controller relay ADDR`), so the guest
    /// reaches the controller and nothing else.
    Relay {
        /// Controller agent address.
        addr: SocketAddr,
    },
    /// Set one device's policy (JSON file: name, mud, block, allow, ids_rules); the gateway's
    /// policy is recompiled, signed and sent.
    SetPolicy {
        /// Gateway id.
        id: String,
        /// Device MAC address.
        mac: String,
        /// Policy file.
        file: PathBuf,
    },
    /// Set a gateway's data path: hop signing on or off (for overhead measurements; the
    /// setting is signed, measured and so visible in attestation) and the middlebox chain.
    SetDatapath {
        /// Gateway id.
        id: String,
        /// Tag and check every hop through the monitor.
        #[arg(long, value_parser = ["on", "off"], default_value = "on")]
        signing: String,
        /// Middleboxes of every chain, in order (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "firewall,ids,monitor")]
        middleboxes: Vec<String>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    gw_controller::raise_fd_limit();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GW_LOG").unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init { server_names } => {
            let pki = Pki::load_or_create(&cli.state_dir, &server_names)?;
            print_provisioning(&cli.state_dir, &pki);
            Ok(())
        }
        Command::Serve {
            agent_listen,
            api_listen,
            database,
            epoch,
            jitter,
            unreachable_after,
            server_names,
            trust_vendor,
            webhooks,
            webhook_secret_file,
        } => {
            if epoch < Duration::from_millis(100) {
                bail!("--epoch must be at least 100ms");
            }
            let pki = Pki::load_or_create(&cli.state_dir, &server_names)
                .with_context(|| format!("state directory {}", cli.state_dir.display()))?;
            let url = database.unwrap_or_else(|| {
                format!("sqlite://{}", cli.state_dir.join("controller.db").display())
            });
            let store = Store::open(&url)
                .await
                .with_context(|| format!("opening database {}", redact(&url)))?;
            for tv in &trust_vendor {
                let (key, name) = tv
                    .split_once('=')
                    .context("--trust-vendor takes HEXKEY=NAME")?;
                let key = gw_proto::parse_public_key(key)
                    .with_context(|| format!("--trust-vendor {key}: not an ed25519 public key"))?;
                if !store.add_vendor(key.as_bytes(), name).await? {
                    tracing::warn!(
                        "--trust-vendor {name}: that key's endorsements were revoked; it stays untrusted"
                    );
                }
            }
            let secret = match &webhook_secret_file {
                Some(f) => std::fs::read(f)
                    .with_context(|| format!("reading {}", f.display()))?
                    .trim_ascii()
                    .to_vec(),
                None => Vec::new(),
            };
            if !webhooks.is_empty() && secret.len() < 16 {
                bail!("--webhook needs --webhook-secret-file with at least 16 bytes");
            }
            let hooks = webhooks
                .iter()
                .map(|u| Webhook::new(u, &secret))
                .collect::<Result<Vec<_>, _>>()?;
            let agents = tokio::net::TcpListener::bind(agent_listen)
                .await
                .with_context(|| format!("listening for gateways on {agent_listen}"))?;
            let api = tokio::net::TcpListener::bind(api_listen)
                .await
                .with_context(|| format!("listening for operators on {api_listen}"))?;
            let settings = Settings {
                epoch,
                jitter,
                unreachable_after,
            };
            let ctl = Controller::new(store, pki, settings);
            say(&format!(
                "gw-controller: gateways on {}, dashboard and API on https://{}/ , database {}, epoch {}",
                agents.local_addr()?,
                api.local_addr()?,
                redact(&url),
                humantime::format_duration(epoch)
            ));
            print_provisioning(&cli.state_dir, &ctl.pki);
            // Results as they are committed, one line each. A closed stdout (the reader went
            // away) stops the printing, never the controller.
            let mut results = ctl.results.subscribe();
            tokio::spawn(async move {
                use std::io::Write;
                loop {
                    let r = match results.recv().await {
                        Ok(r) => r,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    };
                    let why = if r.reasons.is_empty() {
                        String::new()
                    } else {
                        format!(" — {}", r.reasons.join("; "))
                    };
                    let mut out = std::io::stdout().lock();
                    if writeln!(out, "result {} {}{why}", r.gateway_id, r.status)
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
            tokio::select! {
                r = gw_controller::serve(ctl, agents, api, hooks) => r,
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("gw-controller: interrupted, stopping");
                    Ok(())
                }
            }
        }
        Command::Relay { addr } => {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            let (mut r, mut w) = tcp.into_split();
            let up = async {
                tokio::io::copy(&mut tokio::io::stdin(), &mut w).await?;
                w.shutdown().await
            };
            let down = async {
                let mut out = tokio::io::stdout();
                tokio::io::copy(&mut r, &mut out).await?;
                out.flush().await
            };
            tokio::try_join!(up, down)?;
            Ok(())
        }
        cmd => operate(&cli.state_dir, cli.api, cmd).await,
    }
}

/// Hide a password in a database URL before printing it.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if url[s + 3..at].contains(':') => {
            let user_end = s + 3 + url[s + 3..at].find(':').unwrap_or(0);
            format!("{}:***{}", &url[..user_end], &url[at..])
        }
        _ => url.into(),
    }
}

/// Print a line to stdout; a closed stdout is not an error worth stopping a server for.
fn say(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

fn print_provisioning(dir: &Path, pki: &Pki) {
    say(&format!(
        "provision gateways with: CA {} · command key {} · operator token in {}",
        pki.ca_cert_path().display(),
        hex::encode(pki.command_key().verifying_key().as_bytes()),
        dir.join("operator.token").display()
    ));
}

async fn operate(dir: &Path, api: SocketAddr, cmd: Command) -> Result<()> {
    let token_path = dir.join("operator.token");
    let token = std::fs::read_to_string(&token_path)
        .with_context(|| format!("reading the operator token {}", token_path.display()))?;
    let client = ApiClient::new(api, "localhost", &dir.join("ca.cert.pem"), token.trim())?;
    match cmd {
        Command::Summary => {
            let s: Summary = client.get_json("/api/v1/summary").await?;
            println!(
                "{} gateways, {} pending, {} results",
                s.total, s.pending, s.results
            );
            for (st, n) in s.by_status {
                println!("  {st:<16} {n}");
            }
        }
        Command::Metrics => {
            let b = client.call(Method::GET, "/metrics", None).await?;
            print!("{}", String::from_utf8_lossy(&b));
        }
        Command::Gateways => {
            let gws: Vec<GatewayRow> = client.get_json("/api/v1/gateways").await?;
            println!(
                "{:<24} {:<16} {:<10} {:<26} AGENT",
                "GATEWAY", "STATUS", "ENROLLED", "MONITOR"
            );
            for g in gws {
                println!(
                    "{:<24} {:<16} {:<10} {:<26} {}",
                    g.id,
                    g.status,
                    g.enrollment,
                    g.monitor,
                    g.agent_version.unwrap_or_default()
                );
            }
        }
        Command::Show { id } => {
            let d: GatewayDetail = client.get_json(&format!("/api/v1/gateways/{id}")).await?;
            println!("{}", serde_json::to_string_pretty(&d)?);
        }
        Command::History { id, limit } => {
            let rows: Vec<ResultRow> = client
                .get_json(&format!("/api/v1/gateways/{id}/results?limit={limit}"))
                .await?;
            for r in rows {
                let problems = gw_controller::appraise::problems_in(&r.ear);
                println!("{} {:<16} {}", r.at, r.status, problems.join("; "));
            }
        }
        Command::Approve { id } => {
            client
                .call(
                    Method::POST,
                    &format!("/api/v1/gateways/{id}/approve"),
                    None,
                )
                .await?;
            println!("approved {id}");
        }
        Command::Revoke { id, reason } => {
            let body = serde_json::json!({ "reason": reason });
            client
                .call(
                    Method::POST,
                    &format!("/api/v1/gateways/{id}/revoke"),
                    Some(body.to_string().into_bytes()),
                )
                .await?;
            println!("revoked {id}");
        }
        Command::RevokeVendor { key, reason } => {
            let body = serde_json::json!({ "reason": reason });
            let b = client
                .call(
                    Method::POST,
                    &format!("/api/v1/vendors/{key}/revoke"),
                    Some(body.to_string().into_bytes()),
                )
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&b)?;
            let ids: Vec<&str> = v["gateways"]
                .as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
                .unwrap_or_default();
            println!(
                "revoked vendor {key}; gateways revoked with it: {}",
                if ids.is_empty() {
                    "none".into()
                } else {
                    ids.join(", ")
                }
            );
        }
        Command::TrustVendor { key, name } => {
            let body = serde_json::json!({ "key": key, "name": name });
            client
                .call(
                    Method::POST,
                    "/api/v1/vendors",
                    Some(body.to_string().into_bytes()),
                )
                .await?;
            println!("trusting vendor {name}");
        }
        Command::ImportManifest { file } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let b = client
                .call(Method::POST, "/api/v1/manifests", Some(text))
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&b)?;
            println!("imported as manifest {}", v["id"]);
        }
        Command::Manifests => {
            let ms: Vec<ManifestInfo> = client.get_json("/api/v1/manifests").await?;
            for m in ms {
                println!(
                    "{:>4} {:<8} {} {} ({}) {}",
                    m.id,
                    if m.allowed { "allowed" } else { "retired" },
                    m.name,
                    m.version,
                    m.board,
                    m.components.join(",")
                );
            }
        }
        Command::RetireManifest { id } => {
            client
                .call(
                    Method::POST,
                    &format!("/api/v1/manifests/{id}/retire"),
                    None,
                )
                .await?;
            println!("manifest {id} retired");
        }
        Command::SetPolicy { id, mac, file } => {
            let text =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let b = client
                .call(
                    Method::PUT,
                    &format!("/api/v1/gateways/{id}/devices/{mac}/policy"),
                    Some(text),
                )
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&b)?;
            println!("policy v{} signed and sent to {id}", v["version"]);
        }
        Command::SetDatapath {
            id,
            signing,
            middleboxes,
        } => {
            let dp = gw_proto::wire::DatapathConfig {
                signing: signing == "on",
                middleboxes,
            };
            dp.validate().map_err(anyhow::Error::msg)?;
            let b = client
                .call(
                    Method::PUT,
                    &format!("/api/v1/gateways/{id}/datapath"),
                    Some(serde_json::to_vec(&dp)?),
                )
                .await?;
            let v: serde_json::Value = serde_json::from_slice(&b)?;
            println!(
                "data path of {id}: signing {signing}, chain {}; policy v{} signed and sent",
                dp.middleboxes.join(" → "),
                v["version"]
            );
        }
        Command::Init { .. } | Command::Serve { .. } | Command::Relay { .. } => {
            unreachable!("handled by run")
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            super::redact("postgres://gw:secret@db/gw"),
            "postgres://gw:***@db/gw"
        );
        assert_eq!(super::redact("postgres://gw@db/gw"), "postgres://gw@db/gw");
        assert_eq!(super::redact("sqlite:///x.db"), "sqlite:///x.db");
    }
}
