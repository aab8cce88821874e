//! The Gatewarden attestation controller.
//!
//! - [`pki`]: the fleet CA, the controller's TLS certificate, the policy-signing key.
//! - [`store`]: SQLite (default) or PostgreSQL.
//! - [`appraise`]: EAR-shaped results from verified evidence, reference values and policy.
//! - [`policy`]: per-device policy, compiled into middlebox configs and signed.
//! - [`gateways`]: the agent listener: enrollment, epoch challenges, verification.
//! - [`api`]: operator REST API, dashboard and Prometheus metrics.
//! - [`alerts`]: signed webhooks on every state change.
//! - [`client`]: HTTPS client of the operator API (CLI, tests).
//!
//! Design record: `docs/controller.md`.

pub mod alerts;
pub mod api;
pub mod appraise;
pub mod client;
pub mod gateways;
pub mod metrics;
pub mod pki;
pub mod policy;
pub mod store;

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::sync::{Mutex, broadcast, mpsc};

/// Tunables of a running controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Time between challenges to each gateway.
    pub epoch: Duration,
    /// Fraction of the epoch by which each challenge is moved at random (spreads load).
    pub jitter: f64,
    /// Challenges a gateway may miss before it is `unreachable`.
    pub unreachable_after: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            epoch: Duration::from_secs(30),
            jitter: 0.1,
            unreachable_after: 3,
        }
    }
}

/// A gateway's state changed (what the dashboard, webhooks and logs see).
#[derive(Debug, Clone, serde::Serialize)]
pub struct StateChange {
    /// Gateway.
    pub gateway_id: String,
    /// New status.
    pub status: String,
    /// When (ms).
    pub at: i64,
    /// Reasons (non-affirming components).
    pub reasons: Vec<String>,
}

/// Everything a running controller shares between its tasks.
pub struct Controller {
    /// Database.
    pub store: store::Store,
    /// Keys and certificates.
    pub pki: pki::Pki,
    /// Tunables.
    pub settings: Settings,
    /// Counters and gauges.
    pub metrics: metrics::Metrics,
    /// Every attestation result and state change as it happens.
    pub results: broadcast::Sender<ResultEvent>,
    /// Sessions of connected gateways, to push policy.
    sessions: Mutex<HashMap<String, mpsc::Sender<gateways::SessionCmd>>>,
    /// Batching quote verifier.
    verifier: gateways::VerifierHandle,
    /// Checked reference manifests and when they were loaded.
    manifests: Mutex<Option<(std::time::Instant, Manifests)>>,
}

/// Checked reference manifests, prepared for appraisal.
pub type Manifests = Arc<Vec<appraise::Reference>>;

/// One result as it is recorded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResultEvent {
    /// Gateway.
    pub gateway_id: String,
    /// Overall status.
    pub status: String,
    /// Whether the status changed with this result.
    pub changed: bool,
    /// Problems, `component: reason`.
    pub reasons: Vec<String>,
    /// When (ms).
    pub at: i64,
}

impl Controller {
    /// Assemble a controller.
    pub fn new(store: store::Store, pki: pki::Pki, settings: Settings) -> Arc<Self> {
        let (results, _) = broadcast::channel(4096);
        Arc::new(Self {
            store,
            pki,
            settings,
            metrics: metrics::Metrics::new(),
            results,
            sessions: Mutex::new(HashMap::new()),
            verifier: gateways::spawn_verifier(),
            manifests: Mutex::new(None),
        })
    }
}

/// Serve gateways on `agents` and operators on `api` until one of them fails.
pub async fn serve(
    ctl: Arc<Controller>,
    agents: tokio::net::TcpListener,
    api: tokio::net::TcpListener,
    hooks: Vec<alerts::Webhook>,
) -> anyhow::Result<()> {
    tokio::spawn(alerts::run(ctl.clone(), hooks, 6));
    tokio::spawn(gateways::follow_replicas(ctl.clone()));
    tokio::try_join!(gateways::serve(ctl.clone(), agents), api::serve(ctl, api))?;
    Ok(())
}

/// Each connected gateway holds a socket: raise the soft limit on open files to the hard limit.
pub fn raise_fd_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut l = getrlimit(Resource::Nofile);
    l.current = l.maximum;
    let _ = setrlimit(Resource::Nofile, l);
}
