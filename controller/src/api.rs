//! The operator interface over HTTPS: REST/JSON API (`/api/v1`, described by
//! `controller/openapi.json`), the dashboard (`/`), and Prometheus metrics (`/metrics`).
//!
//! Every route but `/healthz` and the dashboard's sign-in page needs the operator token, as
//! `Authorization: Bearer <token>` or, for the dashboard, the `gw_token` cookie set by
//! signing in with it. There are no passwords.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Form, Json, Router,
    extract::{Path, Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{Controller, policy::DevicePolicy, store::StoreError};
use gw_proto::wire::DatapathConfig;

mod dashboard;

/// The OpenAPI document of the REST API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Every API route as `(method, path)` in OpenAPI path syntax, checked against the document by
/// a test so the two cannot drift.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/api/v1/summary"),
    ("get", "/api/v1/gateways"),
    ("get", "/api/v1/gateways/{id}"),
    ("get", "/api/v1/gateways/{id}/results"),
    ("post", "/api/v1/gateways/{id}/approve"),
    ("put", "/api/v1/gateways/{id}/manifests"),
    ("get", "/api/v1/gateways/{id}/devices/{mac}/policy"),
    ("put", "/api/v1/gateways/{id}/devices/{mac}/policy"),
    ("get", "/api/v1/gateways/{id}/datapath"),
    ("put", "/api/v1/gateways/{id}/datapath"),
    ("get", "/api/v1/manifests"),
    ("post", "/api/v1/manifests"),
    ("post", "/api/v1/manifests/{id}/retire"),
    ("get", "/api/v1/vendors"),
    ("post", "/api/v1/vendors"),
    ("post", "/api/v1/gateways/{id}/revoke"),
    ("post", "/api/v1/vendors/{key}/revoke"),
];

/// An API error: status code and a message for the operator.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("api: {e}");
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("no such {what}"))
}

type Ctl = State<Arc<Controller>>;
type ApiResult<T> = Result<T, ApiError>;

/// Constant-time comparison of the presented token.
fn token_ok(ctl: &Controller, presented: &str) -> bool {
    use subtle::ConstantTimeEq;
    let want = ctl.pki.operator_token().as_bytes();
    presented.len() == want.len() && bool::from(presented.as_bytes().ct_eq(want))
}

fn presented_token(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_owned());
    }
    headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())?
        .split(';')
        .filter_map(|c| c.trim().strip_prefix("gw_token="))
        .next()
        .map(str::to_owned)
}

async fn require_token(State(ctl): Ctl, req: Request, next: Next) -> Response {
    match presented_token(req.headers()) {
        Some(t) if token_ok(&ctl, &t) => next.run(req).await,
        _ if req.uri().path().starts_with("/api/") || req.uri().path() == "/metrics" => {
            ApiError(StatusCode::UNAUTHORIZED, "operator token required".into()).into_response()
        }
        _ => Redirect::to("/signin").into_response(),
    }
}

/// The whole operator router.
pub fn router(ctl: Arc<Controller>) -> Router {
    let protected = Router::new()
        .route("/api/v1/summary", get(summary))
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/gateways/{id}", get(gateway))
        .route("/api/v1/gateways/{id}/results", get(results))
        .route("/api/v1/gateways/{id}/approve", post(approve))
        .route("/api/v1/gateways/{id}/manifests", put(set_manifests))
        .route(
            "/api/v1/gateways/{id}/devices/{mac}/policy",
            get(get_device_policy).put(put_device_policy),
        )
        .route(
            "/api/v1/gateways/{id}/datapath",
            get(get_datapath).put(put_datapath),
        )
        .route("/api/v1/manifests", get(manifests).post(import_manifest))
        .route("/api/v1/manifests/{id}/retire", post(retire_manifest))
        .route("/api/v1/vendors", get(vendors).post(add_vendor))
        .route("/api/v1/gateways/{id}/revoke", post(revoke_gateway))
        .route("/api/v1/vendors/{key}/revoke", post(revoke_vendor))
        .route("/metrics", get(metrics))
        .merge(dashboard::routes())
        .route_layer(middleware::from_fn_with_state(ctl.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/signin", get(dashboard::signin_page).post(signin))
        .merge(protected)
        .with_state(ctl)
}

/// Serve the router over TLS on `listener`.
pub async fn serve(ctl: Arc<Controller>, listener: TcpListener) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(ctl.pki.api_tls()?);
    let app = router(ctl);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("api accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
                    .await
            else {
                tracing::debug!("api {peer}: TLS handshake failed");
                return;
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let io = hyper_util::rt::TokioIo::new(tls);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!("api {peer}: {e}");
            }
        });
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn metrics(State(ctl): Ctl) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctl.metrics.render(),
    )
}

#[derive(Deserialize)]
struct SigninForm {
    token: String,
}

async fn signin(State(ctl): Ctl, Form(f): Form<SigninForm>) -> Response {
    if token_ok(&ctl, f.token.trim()) {
        (
            [(
                header::SET_COOKIE,
                format!(
                    "gw_token={}; Path=/; HttpOnly; Secure; SameSite=Strict",
                    f.token.trim()
                ),
            )],
            Redirect::to("/"),
        )
            .into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Html(dashboard::signin_html(Some("That token is not valid."))),
        )
            .into_response()
    }
}

/// Counts of gateways by status.
#[derive(Debug, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct Summary {
    /// Gateways in total.
    pub total: usize,
    /// Waiting for operator approval.
    pub pending: usize,
    /// Count per status (`none`, `affirming`, `warning`, `contraindicated`, `unreachable`).
    pub by_status: BTreeMap<String, usize>,
    /// Results stored.
    pub results: i64,
}

async fn summary(State(ctl): Ctl) -> ApiResult<Json<Summary>> {
    Ok(Json(summarise(&ctl).await?))
}

pub(crate) async fn summarise(ctl: &Controller) -> Result<Summary, StoreError> {
    let gws = ctl.store.gateways().await?;
    let mut s = Summary {
        total: gws.len(),
        results: ctl.store.result_count().await?,
        ..Default::default()
    };
    for st in [
        "none",
        "affirming",
        "warning",
        "contraindicated",
        "unreachable",
    ] {
        s.by_status.insert(st.into(), 0);
    }
    for g in &gws {
        if g.enrollment == "pending" {
            s.pending += 1;
        } else {
            *s.by_status.entry(g.status.clone()).or_default() += 1;
        }
    }
    Ok(s)
}

async fn gateways(State(ctl): Ctl) -> ApiResult<Json<Vec<crate::store::GatewayRow>>> {
    Ok(Json(ctl.store.gateways().await?))
}

/// A gateway with what is known about it.
#[derive(Debug, Serialize, Deserialize)]
pub struct GatewayDetail {
    /// The stored row.
    pub gateway: crate::store::GatewayRow,
    /// Devices behind it.
    pub devices: Vec<gw_proto::wire::Device>,
    /// Data-path hop drops and passes last reported.
    pub datapath: Option<(u64, u64)>,
    /// Newest policy version and whether it was applied.
    pub policy: Option<PolicySummary>,
    /// The newest result.
    pub latest: Option<crate::store::ResultRow>,
}

/// Policy state of a gateway.
#[derive(Debug, Serialize, Deserialize)]
pub struct PolicySummary {
    /// Version.
    pub version: u64,
    /// When the gateway reported it applied (ms).
    pub applied_at: Option<i64>,
    /// Error reported by the gateway.
    pub error: Option<String>,
}

async fn gateway(State(ctl): Ctl, Path(id): Path<String>) -> ApiResult<Json<GatewayDetail>> {
    Ok(Json(detail(&ctl, &id).await?))
}

pub(crate) async fn detail(ctl: &Controller, id: &str) -> ApiResult<GatewayDetail> {
    let gateway = ctl.store.gateway(id).await?.ok_or(not_found("gateway"))?;
    Ok(GatewayDetail {
        devices: ctl.store.devices(id).await?,
        datapath: ctl.store.datapath(id).await?,
        policy: ctl.store.latest_policy(id).await?.map(|p| PolicySummary {
            version: p.version,
            applied_at: p.applied_at,
            error: p.error,
        }),
        latest: ctl.store.history(id, 1).await?.into_iter().next(),
        gateway,
    })
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<i64>,
}

async fn results(
    State(ctl): Ctl,
    Path(id): Path<String>,
    Query(q): Query<Limit>,
) -> ApiResult<Json<Vec<crate::store::ResultRow>>> {
    ctl.store.gateway(&id).await?.ok_or(not_found("gateway"))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    Ok(Json(ctl.store.history(&id, limit).await?))
}

async fn approve(State(ctl): Ctl, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if ctl.store.approve(&id).await? {
        tracing::info!("gateway {id} approved by the operator");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::CONFLICT,
            format!("{id} is not a pending gateway"),
        ))
    }
}

#[derive(Deserialize, Serialize)]
struct ManifestIds {
    ids: Option<Vec<i64>>,
}

/// Parse a JSON request body; errors are the API's own JSON errors (any content type is
/// accepted: the body is what counts).
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| bad(format!("{what}: {e}")))
}

async fn set_manifests(
    State(ctl): Ctl,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let m: ManifestIds = json_body(&body, "manifest ids")?;
    if let Some(ids) = &m.ids {
        let known: Vec<i64> = ctl.store.manifests().await?.iter().map(|m| m.id).collect();
        if let Some(x) = ids.iter().find(|i| !known.contains(i)) {
            return Err(bad(format!("no manifest {x}")));
        }
    }
    if ctl
        .store
        .set_gateway_manifests(&id, m.ids.as_deref())
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("gateway"))
    }
}

async fn get_datapath(State(ctl): Ctl, Path(id): Path<String>) -> ApiResult<Json<DatapathConfig>> {
    ctl.store.gateway(&id).await?.ok_or(not_found("gateway"))?;
    Ok(Json(match ctl.store.datapath_settings(&id).await? {
        Some(json) => {
            serde_json::from_str(&json).map_err(|_| StoreError::Corrupt("datapath settings"))?
        }
        None => DatapathConfig::default(),
    }))
}

async fn put_datapath(
    State(ctl): Ctl,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Published>> {
    let dp: DatapathConfig = json_body(&body, "data-path settings")?;
    dp.validate().map_err(bad)?;
    if !ctl
        .store
        .set_datapath_settings(&id, &serde_json::to_string(&dp).expect("serialises"))
        .await?
    {
        return Err(not_found("gateway"));
    }
    let version = ctl
        .publish_policy(&id)
        .await
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))?;
    Ok(Json(Published { version }))
}

async fn get_device_policy(
    State(ctl): Ctl,
    Path((id, mac)): Path<(String, String)>,
) -> ApiResult<Json<DevicePolicy>> {
    let mac = crate::policy::normalise_mac(&mac).map_err(|e| bad(e.to_string()))?;
    let spec = ctl
        .store
        .device_policies(&id)
        .await?
        .into_iter()
        .find(|(m, _)| *m == mac)
        .ok_or(not_found("device policy"))?
        .1;
    Ok(Json(
        serde_json::from_str(&spec).map_err(|_| StoreError::Corrupt("device policy"))?,
    ))
}

/// Answer of a policy change.
#[derive(Debug, Serialize, Deserialize)]
pub struct Published {
    /// The signed policy version now sent to the gateway.
    pub version: u64,
}

async fn put_device_policy(
    State(ctl): Ctl,
    Path((id, mac)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Published>> {
    let policy: DevicePolicy = json_body(&body, "device policy")?;
    Ok(Json(Published {
        version: set_device_policy(&ctl, &id, &mac, &policy).await?,
    }))
}

pub(crate) async fn set_device_policy(
    ctl: &Controller,
    id: &str,
    mac: &str,
    policy: &DevicePolicy,
) -> ApiResult<u64> {
    let mac = crate::policy::normalise_mac(mac).map_err(|e| bad(e.to_string()))?;
    policy.validate().map_err(|e| bad(e.to_string()))?;
    ctl.store.gateway(id).await?.ok_or(not_found("gateway"))?;
    ctl.store
        .put_device_policy(
            id,
            &mac,
            &serde_json::to_string(policy).expect("serialises"),
        )
        .await?;
    ctl.publish_policy(id)
        .await
        .map_err(|e| ApiError(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))
}

/// A manifest as listed (without its envelope).
#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestInfo {
    /// Id.
    pub id: i64,
    /// Payload digest (hex).
    pub digest: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Board.
    pub board: String,
    /// Whether gateways may match it.
    pub allowed: bool,
    /// Components it covers.
    pub components: Vec<String>,
}

async fn manifests(State(ctl): Ctl) -> ApiResult<Json<Vec<ManifestInfo>>> {
    let mut out = Vec::new();
    for m in ctl.store.manifests().await? {
        let components = gw_proto::manifest::SignedManifest::from_json(&m.envelope)
            .ok()
            .and_then(|e| e.open().ok())
            .map(|(_, man)| man.components.keys().cloned().collect())
            .unwrap_or_default();
        out.push(ManifestInfo {
            id: m.id,
            digest: m.digest,
            name: m.name,
            version: m.version,
            board: m.board,
            allowed: m.allowed,
            components,
        });
    }
    Ok(Json(out))
}

/// Answer of a manifest import.
#[derive(Debug, Serialize, Deserialize)]
pub struct Imported {
    /// Manifest id (the existing one when the same payload was imported before).
    pub id: i64,
}

async fn import_manifest(State(ctl): Ctl, body: String) -> ApiResult<Json<Imported>> {
    let env =
        gw_proto::manifest::SignedManifest::from_json(&body).map_err(|e| bad(e.to_string()))?;
    let (signer, m) = env.open().map_err(|e| bad(e.to_string()))?;
    let vendors = ctl.store.vendors().await?;
    if !vendors.iter().any(|(k, _)| k == signer.as_bytes()) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "manifest signer {} is not a trusted vendor key (add it with POST /api/v1/vendors)",
                hex::encode(signer.as_bytes())
            ),
        ));
    }
    let id = ctl
        .store
        .import_manifest(
            &env.digest(),
            &m.name,
            &m.version,
            &m.board,
            &body,
            signer.as_bytes(),
        )
        .await?;
    tracing::info!(
        "manifest {id} imported: {} {} ({})",
        m.name,
        m.version,
        m.board
    );
    Ok(Json(Imported { id }))
}

async fn retire_manifest(State(ctl): Ctl, Path(id): Path<i64>) -> ApiResult<StatusCode> {
    if ctl.store.set_manifest_allowed(id, false).await? {
        ctl.manifests_changed().await;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found("manifest"))
    }
}

/// A trusted vendor key.
#[derive(Debug, Serialize, Deserialize)]
pub struct Vendor {
    /// ed25519 public key (hex).
    pub key: String,
    /// Name.
    pub name: String,
}

async fn vendors(State(ctl): Ctl) -> ApiResult<Json<Vec<crate::store::VendorRow>>> {
    Ok(Json(ctl.store.vendor_list().await?))
}

async fn add_vendor(State(ctl): Ctl, body: axum::body::Bytes) -> ApiResult<StatusCode> {
    let v: Vendor = json_body(&body, "vendor")?;
    let key = gw_proto::parse_public_key(&v.key)
        .ok_or_else(|| bad("key is not a valid ed25519 public key (64 hex digits)"))?;
    if v.name.trim().is_empty() {
        return Err(bad("vendor name is empty"));
    }
    if !ctl.store.add_vendor(key.as_bytes(), v.name.trim()).await? {
        return Err(ApiError(
            StatusCode::CONFLICT,
            "that vendor key's endorsements were revoked; it cannot be trusted again".into(),
        ));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Why an operator revokes (the request body of both revoke routes).
#[derive(Deserialize)]
struct Revocation {
    reason: String,
}

fn revocation_reason(body: &[u8]) -> ApiResult<String> {
    let r: Revocation = json_body(body, "revocation")?;
    valid_reason(&r.reason)
}

/// An operator's reason for a revocation, trimmed: 1 to 500 characters (API and dashboard).
fn valid_reason(reason: &str) -> ApiResult<String> {
    let reason = reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(bad("reason must be 1 to 500 characters"));
    }
    Ok(reason.to_owned())
}

async fn revoke_gateway(
    State(ctl): Ctl,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<StatusCode> {
    let reason = revocation_reason(&body)?;
    ctl.store.gateway(&id).await?.ok_or(not_found("gateway"))?;
    if ctl.revoke_gateway(&id, &reason).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(
            StatusCode::CONFLICT,
            format!("{id} is already revoked"),
        ))
    }
}

#[derive(Serialize)]
struct VendorRevoked {
    /// The gateways revoked with it.
    gateways: Vec<String>,
}

async fn revoke_vendor(
    State(ctl): Ctl,
    Path(key): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<VendorRevoked>> {
    let key = gw_proto::parse_public_key(&key)
        .ok_or_else(|| bad("key is not a valid ed25519 public key (64 hex digits)"))?;
    let reason = revocation_reason(&body)?;
    let gateways = ctl
        .revoke_vendor(key.as_bytes(), &reason)
        .await?
        .ok_or(not_found("vendor"))?;
    Ok(Json(VendorRevoked { gateways }))
}
