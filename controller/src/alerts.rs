//! Alert webhooks: every gateway state change is POSTed as JSON to each configured URL,
//! signed with HMAC-SHA256 (`X-Gatewarden-Signature: sha256=<hex>` over the exact body, with
//! the timestamp in `X-Gatewarden-Timestamp` prefixed to the signed bytes as `"<ts>."`, so a
//! receiver can refuse replays). Failed deliveries are retried with exponential backoff
//! (1 s, 2 s, 4 s, … up to `max_attempts`), then counted as failures.

use std::{sync::Arc, time::Duration};

use http_body_util::Full;
use hyper::{Request, body::Bytes};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::sync::broadcast::error::RecvError;

use crate::{Controller, StateChange};

/// One webhook receiver.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// `http://host:port/path`.
    pub url: hyper::Uri,
    /// Shared HMAC secret.
    pub secret: Vec<u8>,
}

/// Webhook configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The URL does not parse or is not plain http.
    #[error("webhook URL {0:?}: {1}")]
    Url(String, String),
}

impl Webhook {
    /// Parse a receiver. Only `http://` is delivered directly; put a TLS-terminating relay in
    /// front of receivers outside the management network.
    pub fn new(url: &str, secret: &[u8]) -> Result<Self, WebhookError> {
        let uri: hyper::Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| {
            WebhookError::Url(url.into(), e.to_string())
        })?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(WebhookError::Url(
                url.into(),
                "only http://HOST[:PORT]/PATH receivers are supported".into(),
            ));
        }
        Ok(Self {
            url: uri,
            secret: secret.to_vec(),
        })
    }
}

/// The signature header value for `body` sent at `timestamp`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Deliver state changes to `hooks` until the controller stops.
pub async fn run(ctl: Arc<Controller>, hooks: Vec<Webhook>, max_attempts: u32) {
    if hooks.is_empty() {
        return;
    }
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut rx = ctl.results.subscribe();
    loop {
        let ev = match rx.recv().await {
            Ok(ev) => ev,
            Err(RecvError::Lagged(n)) => {
                tracing::error!("webhooks: {n} results skipped (receiver too slow)");
                continue;
            }
            Err(RecvError::Closed) => return,
        };
        if !ev.changed {
            continue;
        }
        let change = StateChange {
            gateway_id: ev.gateway_id,
            status: ev.status,
            at: ev.at,
            reasons: ev.reasons,
        };
        let body = Bytes::from(serde_json::to_vec(&change).expect("state change serialises"));
        for hook in &hooks {
            let client = client.clone();
            let hook = hook.clone();
            let body = body.clone();
            let ctl = ctl.clone();
            tokio::spawn(async move {
                if !deliver(&client, &hook, body, max_attempts).await {
                    ctl.metrics.webhook_failures.inc();
                }
            });
        }
    }
}

async fn deliver(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    hook: &Webhook,
    body: Bytes,
    max_attempts: u32,
) -> bool {
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=max_attempts.max(1) {
        let ts = crate::store::now_ms() / 1000;
        let req = Request::post(hook.url.clone())
            .header("content-type", "application/json")
            .header("x-gatewarden-timestamp", ts.to_string())
            .header("x-gatewarden-signature", signature(&hook.secret, ts, &body))
            .body(Full::new(body.clone()))
            .expect("request parts are valid");
        match tokio::time::timeout(Duration::from_secs(10), client.request(req)).await {
            Ok(Ok(resp)) if resp.status().is_success() => return true,
            Ok(Ok(resp)) => tracing::warn!("webhook {} answered {}", hook.url, resp.status()),
            Ok(Err(e)) => tracing::warn!("webhook {}: {e}", hook.url),
            Err(_) => tracing::warn!("webhook {}: timed out", hook.url),
        }
        if attempt < max_attempts {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(300));
        }
    }
    tracing::error!(
        "webhook {}: giving up after {max_attempts} attempts",
        hook.url
    );
    false
}
