//! The Gatewarden gateway agent: enrolls with the controller, keeps one outbound mutual-TLS
//! connection, answers each challenge with a quote and the event log, applies controller-signed
//! policy through the monitor, and reports devices and data-path counters.
//!
//! Everything that needs the gateway's keys goes through the monitor (hypervisor or software
//! monitor) via [`gw_hcall::Client`]; the agent itself holds only its TLS client key, which
//! authenticates the connection but cannot forge evidence or accept a forged policy.

pub mod cli;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use gw_hcall::{Client, Transport};
use gw_proto::{
    endorse::Endorsement,
    wire::{
        AgentMsg, ControllerMsg, DatapathCounters, Device, EnrollRequest, EvidenceMsg,
        GatewayReport, PROTOCOL_VERSION, PolicyDocument, SignedPolicy, SignedReport,
        enroll_binding, read_msg, write_msg,
    },
};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio::{net::TcpStream, time::timeout};
use tokio_rustls::{TlsConnector, client::TlsStream};
use vtpm::{ComponentKind, Event, PcrIndex, PcrSelection, pcr::MIDDLEBOX_CONFIGS};

/// Agent errors.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The monitor failed or refused.
    #[error("monitor: {0}")]
    Monitor(#[from] gw_hcall::CallError),
    /// Network or TLS failure (retried).
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A protocol frame failed.
    #[error("protocol: {0}")]
    Frame(#[from] gw_proto::wire::FrameError),
    /// The controller refused us (not retried).
    #[error("controller refused: {0}")]
    Refused(String),
    /// Local configuration is unusable.
    #[error("{0}")]
    Config(String),
    /// TLS setup failed.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// Key generation failed.
    #[error("key: {0}")]
    Key(#[from] rcgen::Error),
}

/// Result type of the agent.
pub type AgentResult<T> = Result<T, AgentError>;

/// Where and how to reach the controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Controller agent port.
    pub controller: SocketAddr,
    /// Name in the controller's certificate.
    pub server_name: String,
    /// Fleet CA (PEM) the controller's certificate chains to.
    pub ca_pem: Vec<u8>,
    /// The image's endorsement.
    pub endorsement: Endorsement,
    /// Where the TLS key and certificate are kept.
    pub state_dir: PathBuf,
    /// Where middlebox configs are written.
    pub config_dir: PathBuf,
    /// How often to send a report.
    pub report_every: Duration,
    /// The data path's run directory (stats files of the vSwitch and middleboxes), if any.
    pub datapath_dir: Option<PathBuf>,
}

/// The monitor client the agent uses.
pub type Monitor = Client<Box<dyn Transport>>;

fn tls_config(
    ca_pem: &[u8],
    client: Option<(Vec<u8>, PrivateKeyDer<'static>)>,
) -> AgentResult<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(ca_pem)
        .map_err(|e| AgentError::Config(format!("controller CA certificate: {e}")))?;
    roots.add(ca)?;
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    Ok(match client {
        Some((cert, key)) => {
            builder.with_client_auth_cert(vec![CertificateDer::from(cert)], key)?
        }
        None => builder.with_no_client_auth(),
    })
}

async fn connect(
    s: &Settings,
    client: Option<(Vec<u8>, PrivateKeyDer<'static>)>,
) -> AgentResult<TlsStream<TcpStream>> {
    let config = tls_config(&s.ca_pem, client)?;
    let tcp = timeout(Duration::from_secs(10), TcpStream::connect(s.controller))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out"))??;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(s.server_name.clone())
        .map_err(|e| AgentError::Config(format!("server name {:?}: {e}", s.server_name)))?;
    Ok(TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await?)
}

fn key_path(s: &Settings) -> PathBuf {
    s.state_dir.join("tls.key.pem")
}

fn cert_path(s: &Settings) -> PathBuf {
    s.state_dir.join("tls.cert.der")
}

/// Write a file atomically (temporary file, fsync, rename) with `mode`.
fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Enroll if this gateway has no client certificate yet. Waits (retrying as the controller
/// asks) while the enrollment is pending approval.
pub async fn ensure_enrolled(s: &Settings, monitor: &mut Monitor) -> AgentResult<()> {
    if cert_path(s).exists() && key_path(s).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&s.state_dir)?;
    let key = if key_path(s).exists() {
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(key_path(s))?)?
    } else {
        let k = rcgen::KeyPair::generate()?;
        write_atomic(&key_path(s), k.serialize_pem().as_bytes(), 0o600)?;
        k
    };
    let mut params = rcgen::CertificateParams::default();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, s.endorsement.gateway_id.clone());
    let csr = params.serialize_request(&key)?.der().to_vec();
    let id = &s.endorsement.gateway_id;
    let binding = enroll_binding(id, &csr);
    let agent_signature = monitor.agent_sign(&binding)?;
    // The selection does not matter for this proof; PCR 1 (the monitor) is always there.
    let selection = PcrSelection::from_indices([vtpm::pcr::PCR_HYPERVISOR]).expect("valid PCR");
    let quote = monitor.quote(&binding, &selection)?.quote;
    let request = EnrollRequest {
        endorsement: s.endorsement.clone(),
        csr,
        agent_signature,
        quote,
    };
    loop {
        let mut tls = connect(s, None).await?;
        write_msg(&mut tls, &AgentMsg::Enroll(Box::new(request.clone()))).await?;
        match read_msg::<_, ControllerMsg>(&mut tls).await? {
            ControllerMsg::Enrolled { certificate } => {
                write_atomic(&cert_path(s), &certificate, 0o644)?;
                tracing::info!("enrolled as {id}");
                return Ok(());
            }
            ControllerMsg::EnrollPending { retry_after_s } => {
                tracing::info!("enrollment of {id} is waiting for operator approval");
                tokio::time::sleep(Duration::from_secs(u64::from(retry_after_s.clamp(1, 3600))))
                    .await;
            }
            ControllerMsg::Refused { reason } => return Err(AgentError::Refused(reason)),
            other => {
                return Err(AgentError::Refused(format!(
                    "unexpected answer to enrollment: {other:?}"
                )));
            }
        }
    }
}

/// Evidence for `nonce`: a quote over every PCR the event log touches, and the log cut to
/// the quote's event count. Retries if measurements land between reading the log and quoting.
pub fn evidence(monitor: &mut Monitor, nonce: &[u8; 32]) -> AgentResult<EvidenceMsg> {
    for _ in 0..4 {
        let (log, _) = monitor.event_log()?;
        let selection = selection_of(&log);
        let bundle = monitor.quote(nonce, &selection)?;
        let count = vtpm::SignedQuote::decode(&bundle.quote)
            .ok()
            .and_then(|q| q.body().ok())
            .map(|b| b.event_count as usize)
            .ok_or(gw_hcall::CallError::Protocol(
                "monitor returned a malformed quote",
            ))?;
        let log = if count <= log.len() {
            log[..count].to_vec()
        } else {
            let (again, _) = monitor.event_log()?;
            again[..count.min(again.len())].to_vec()
        };
        if selection_of(&log) == selection {
            return Ok(EvidenceMsg {
                nonce: *nonce,
                quote: bundle.quote,
                pcrs: bundle.pcrs,
                log,
            });
        }
    }
    Err(gw_hcall::CallError::Protocol("event log kept changing while quoting").into())
}

fn selection_of(log: &[Event]) -> PcrSelection {
    PcrSelection::from_indices(log.iter().map(|e| e.pcr.get())).unwrap_or_else(PcrSelection::none)
}

/// Apply a signed policy: the monitor checks the controller's signature and measures the
/// policy (POLICY_SET); only then are the middlebox configs written and each measured.
pub fn apply_policy(
    s: &Settings,
    monitor: &mut Monitor,
    policy: &SignedPolicy,
) -> Result<(), String> {
    let doc: PolicyDocument =
        serde_json::from_slice(&policy.body).map_err(|e| format!("policy is not valid: {e}"))?;
    if doc.gateway_id != s.endorsement.gateway_id || doc.version != policy.version {
        return Err(format!(
            "policy is for {} v{}, not this gateway's v{}",
            doc.gateway_id, doc.version, policy.version
        ));
    }
    monitor
        .policy_set(policy.version, &policy.body, &policy.signature)
        .map_err(|e| match e.abi() {
            Some(gw_abi::AbiError::BadSignature) => {
                "policy signature refused by the monitor: not signed by the provisioned controller key"
                    .to_string()
            }
            Some(gw_abi::AbiError::StalePolicy) => {
                format!("policy v{} is not newer than the running one", policy.version)
            }
            _ => format!("monitor refused the policy: {e}"),
        })?;
    std::fs::create_dir_all(&s.config_dir).map_err(|e| format!("config dir: {e}"))?;
    let slots = MIDDLEBOX_CONFIGS.end() - MIDDLEBOX_CONFIGS.start() + 1;
    for (i, (name, text)) in doc.configs.iter().enumerate() {
        if i >= usize::from(slots) {
            return Err("more middlebox configs than config PCRs".into());
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("middlebox name {name:?} is not [A-Za-z0-9-]+"));
        }
        write_atomic(
            &s.config_dir.join(format!("{name}.conf")),
            text.as_bytes(),
            0o644,
        )
        .map_err(|e| format!("writing {name} config: {e}"))?;
        let pcr = PcrIndex::new(MIDDLEBOX_CONFIGS.start() + i as u16).expect("in range");
        monitor
            .pcr_extend(
                pcr.get(),
                &vtpm::sha256(text.as_bytes()),
                ComponentKind::MiddleboxConfig,
                name,
                &format!("v{}", policy.version),
            )
            .map_err(|e| format!("measuring {name} config: {e}"))?;
    }
    Ok(())
}

/// Devices from the kernel's ARP table and, if present, dnsmasq's lease file.
pub fn devices() -> Vec<Device> {
    let mut out: Vec<Device> = Vec::new();
    if let Ok(arp) = std::fs::read_to_string("/proc/net/arp") {
        for line in arp.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() >= 4 && f[3] != "00:00:00:00:00:00" {
                out.push(Device {
                    mac: f[3].to_ascii_lowercase(),
                    ip: Some(f[0].into()),
                    hostname: None,
                });
            }
        }
    }
    for path in [
        "/var/lib/misc/dnsmasq.leases",
        "/var/lib/dnsmasq/dnsmasq.leases",
    ] {
        let Ok(leases) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in leases.lines() {
            // expiry mac ip hostname client-id
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let mac = f[1].to_ascii_lowercase();
            let host = (f[3] != "*").then(|| f[3].to_owned());
            match out.iter_mut().find(|d| d.mac == mac) {
                Some(d) => d.hostname = host,
                None => out.push(Device {
                    mac,
                    ip: Some(f[2].into()),
                    hostname: host,
                }),
            }
        }
    }
    out.sort_by(|a, b| a.mac.cmp(&b.mac));
    out.dedup_by(|a, b| a.mac == b.mac);
    out
}

/// The current report, signed by the trusted agent (AGENT_SIGN) so the controller can tell it
/// came from this gateway's agent and was not altered.
pub fn signed_report(s: &Settings, monitor: &mut Monitor) -> AgentResult<AgentMsg> {
    let body = postcard::to_stdvec(&report(s))
        .map_err(|e| AgentError::Config(format!("encoding the report: {e}")))?;
    let signature = monitor.agent_sign(&body)?;
    Ok(AgentMsg::Report(SignedReport { body, signature }))
}

fn report(s: &Settings) -> GatewayReport {
    // Only a running data path (one that has published stats) has counters to report.
    let datapath = s
        .datapath_dir
        .as_ref()
        .filter(|d| d.join("stats").is_dir())
        .map(|d| {
            let (hop_passes, hop_drops) = gw_chain::hop_totals(d);
            DatapathCounters {
                hop_drops,
                hop_passes,
            }
        });
    GatewayReport {
        devices: devices(),
        datapath,
    }
}

/// Connect with the client certificate issued at enrollment.
pub async fn connect_enrolled(s: &Settings) -> AgentResult<TlsStream<TcpStream>> {
    let cert = std::fs::read(cert_path(s))?;
    let key = PrivateKeyDer::from_pem_slice(std::fs::read(key_path(s))?.as_slice())
        .map_err(|e| AgentError::Config(format!("TLS key: {e}")))?;
    connect(s, Some((cert, key))).await
}

/// One session: connect with the client certificate, then serve challenges and policy until
/// the connection drops.
pub async fn session(s: &Settings, monitor: &mut Monitor) -> AgentResult<()> {
    let tls = connect_enrolled(s).await?;
    let (mut r, mut w) = tokio::io::split(tls);
    write_msg(
        &mut w,
        &AgentMsg::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: concat!("gw-agent ", env!("CARGO_PKG_VERSION")).into(),
        },
    )
    .await?;
    tracing::info!("connected to the controller at {}", s.controller);
    write_msg(&mut w, &signed_report(s, monitor)?).await?;
    let mut reports = tokio::time::interval(s.report_every);
    reports.tick().await;
    // Reading in its own task keeps reads whole while the loop also waits on the timer.
    let (tx, mut inbox) = tokio::sync::mpsc::channel(8);
    let reader = tokio::spawn(async move {
        loop {
            let m = read_msg::<_, ControllerMsg>(&mut r).await;
            let stop = m.is_err();
            if tx.send(m).await.is_err() || stop {
                break;
            }
        }
    });
    let result = async {
        loop {
            tokio::select! {
                _ = reports.tick() => write_msg(&mut w, &signed_report(s, monitor)?).await?,
                m = inbox.recv() => {
                    let Some(m) = m else { return Ok(()) };
                    match m? {
                        ControllerMsg::Challenge { nonce } => {
                            let ev = evidence(monitor, &nonce)?;
                            write_msg(&mut w, &AgentMsg::Evidence(Box::new(ev))).await?;
                        }
                        ControllerMsg::Policy(p) => {
                            let outcome = apply_policy(s, monitor, &p);
                            match &outcome {
                                Ok(()) => tracing::info!("policy v{} applied and measured", p.version),
                                Err(e) => tracing::warn!("policy v{} refused: {e}", p.version),
                            }
                            write_msg(&mut w, &AgentMsg::PolicyResult { version: p.version, error: outcome.err() }).await?;
                        }
                        ControllerMsg::Refused { reason } => return Err(AgentError::Refused(reason)),
                        other => tracing::warn!("ignoring unexpected message {other:?}"),
                    }
                }
            }
        }
    }
    .await;
    reader.abort();
    result
}

/// Enroll if needed, then keep a session up for ever, reconnecting with backoff. The monitor
/// is opened afresh for every attempt (a software monitor may have restarted). Returns only
/// when the controller refuses this gateway or the configuration is unusable.
pub async fn run(
    s: Settings,
    open_monitor: impl Fn() -> std::io::Result<Monitor>,
) -> AgentResult<()> {
    let mut backoff = Duration::from_secs(1);
    loop {
        let attempt = async {
            let mut monitor = open_monitor()?;
            ensure_enrolled(&s, &mut monitor).await?;
            session(&s, &mut monitor).await
        }
        .await;
        match attempt {
            Err(AgentError::Refused(reason)) => return Err(AgentError::Refused(reason)),
            Err(AgentError::Config(c)) => return Err(AgentError::Config(c)),
            Err(e) => tracing::warn!("{e}; reconnecting in {}s", backoff.as_secs()),
            Ok(()) => {
                tracing::warn!("controller closed the connection; reconnecting");
                backoff = Duration::from_secs(1);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}
