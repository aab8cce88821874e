//! Prometheus metrics (served at `/metrics`).

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{
        counter::Counter,
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets},
    },
    registry::Registry,
};

/// Label set of per-status counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// `affirming`, `warning`, `contraindicated`, `unreachable`.
    pub status: String,
}

/// Label set of enrollment outcomes.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// `accepted`, `pending`, `refused`.
    pub outcome: String,
}

/// The controller's metrics.
pub struct Metrics {
    registry: Registry,
    /// Challenges sent.
    pub challenges: Counter,
    /// Challenges that got no answer within an epoch.
    pub missed: Counter,
    /// Results recorded, by status.
    pub results: Family<StatusLabel, Counter>,
    /// Enrollment requests, by outcome.
    pub enrollments: Family<OutcomeLabel, Counter>,
    /// Gateways with an open session.
    pub connected: Gauge,
    /// Seconds from evidence received to result committed.
    pub verify_seconds: Histogram,
    /// Webhook deliveries that failed for good.
    pub webhook_failures: Counter,
    /// Gateway reports whose agent signature did not verify.
    pub reports_rejected: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Register every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatewarden");
        let m = Self {
            challenges: Counter::default(),
            missed: Counter::default(),
            results: Family::default(),
            enrollments: Family::default(),
            connected: Gauge::default(),
            verify_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            webhook_failures: Counter::default(),
            reports_rejected: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("challenges", "Challenges sent", m.challenges.clone());
        registry.register(
            "missed_challenges",
            "Challenges without an answer within an epoch",
            m.missed.clone(),
        );
        registry.register(
            "results",
            "Attestation results by status",
            m.results.clone(),
        );
        registry.register(
            "enrollments",
            "Enrollment requests by outcome",
            m.enrollments.clone(),
        );
        registry.register(
            "connected_gateways",
            "Gateways with an open session",
            m.connected.clone(),
        );
        registry.register(
            "verify_seconds",
            "Evidence received to result committed",
            m.verify_seconds.clone(),
        );
        registry.register(
            "webhook_failures",
            "Webhook deliveries given up after retries",
            m.webhook_failures.clone(),
        );
        registry.register(
            "reports_rejected",
            "Gateway reports not signed by the gateway's trusted agent",
            m.reports_rejected.clone(),
        );
        Self { registry, ..m }
    }

    /// Count a result.
    pub fn result(&self, status: &str) {
        self.results
            .get_or_create(&StatusLabel {
                status: status.into(),
            })
            .inc();
    }

    /// Count an enrollment outcome.
    pub fn enrollment(&self, outcome: &str) {
        self.enrollments
            .get_or_create(&OutcomeLabel {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
