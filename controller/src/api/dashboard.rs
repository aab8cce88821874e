//! The dashboard: server-rendered pages (no script needed), so it works from any browser on
//! the management network and renders the same data the API returns.
//!
//! - `/`: fleet overview, counts by state, pending approvals.
//! - `/ui/gateways/{id}`: attestation history with reasons, devices and their policies, revoking
//!   the gateway.
//! - Vendors on the overview, each endorsement key revocable.

use std::sync::Arc;

use axum::{
    Form, Router,
    extract::{Path, State},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
};
use html_escape::encode_text as esc;
use serde::Deserialize;

use crate::{Controller, policy::DevicePolicy};

type Ctl = State<Arc<Controller>>;

pub(super) fn routes() -> Router<Arc<Controller>> {
    Router::new()
        .route("/", get(overview))
        .route("/ui/gateways/{id}", get(gateway_page))
        .route("/ui/gateways/{id}/approve", post(approve))
        .route("/ui/gateways/{id}/revoke", post(revoke_gateway))
        .route("/ui/vendors/{key}/revoke", post(revoke_vendor))
        .route("/ui/gateways/{id}/policy", post(set_policy))
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}\
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}\
.affirming{background:#d8f5d0}.warning{background:#fff2c2}.contraindicated{background:#ffd4d4}\
.unreachable{background:#e0e0e0}.revoked{background:#ffd4d4}.none{background:#f4f4f4}.cards{display:flex;gap:1rem}\
.card{border:1px solid #ccc;border-radius:6px;padding:.6rem 1rem;min-width:8rem}\
.card b{font-size:1.6rem;display:block}textarea{width:40rem;height:10rem;font-family:monospace}\
.error{color:#a00}";

fn page(title: &str, body: &str, refresh: bool) -> Html<String> {
    let meta = if refresh {
        r#"<meta http-equiv="refresh" content="10">"#
    } else {
        ""
    };
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{meta}<title>{t} · Gatewarden</title>\
         <style>{STYLE}</style></head><body><h1>{t}</h1>{body}\
         <p><a href=\"/\">Fleet</a> · <a href=\"/metrics\">Metrics</a> · <a href=\"/api/v1/openapi.json\">API</a></p></body></html>",
        t = esc(title)
    ))
}

pub(super) fn signin_html(error: Option<&str>) -> String {
    let err = error
        .map(|e| format!("<p class=\"error\" id=\"error\">{}</p>", esc(e)))
        .unwrap_or_default();
    page(
        "Sign in",
        &format!(
            "{err}<form method=\"post\" action=\"/signin\"><label>Operator token \
             <input id=\"token\" name=\"token\" type=\"password\" autocomplete=\"off\"></label> \
             <button id=\"signin\" type=\"submit\">Sign in</button></form>\
             <p>The token is in the controller's state directory (<code>operator.token</code>).</p>"
        ),
        false,
    )
    .0
}

pub(super) async fn signin_page() -> Html<String> {
    Html(signin_html(None))
}

fn time(ms: Option<i64>) -> String {
    let Some(ms) = ms else { return "—".into() };
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "?".into())
}

async fn overview(State(ctl): Ctl) -> Response {
    let (summary, gws) = match (super::summarise(&ctl).await, ctl.store.gateways().await) {
        (Ok(s), Ok(g)) => (s, g),
        (Err(e), _) | (_, Err(e)) => return super::ApiError::from(e).into_response(),
    };
    let mut body = String::from("<div class=\"cards\" id=\"counts\">");
    body.push_str(&format!(
        "<div class=\"card\">Gateways<b id=\"count-total\">{}</b></div>",
        summary.total
    ));
    for (st, n) in &summary.by_status {
        body.push_str(&format!(
            "<div class=\"card {st}\">{st}<b id=\"count-{st}\">{n}</b></div>"
        ));
    }
    body.push_str(&format!(
        "<div class=\"card\">pending<b id=\"count-pending\">{}</b></div></div>",
        summary.pending
    ));
    body.push_str(
        "<h2>Gateways</h2><table id=\"gateways\"><tr><th>Gateway</th><th>Status</th><th>Since</th>\
         <th>Last result</th><th>Monitor</th><th>Agent</th><th>Enrollment</th></tr>",
    );
    for g in &gws {
        let enrollment = if g.enrollment == "pending" {
            format!(
                "pending <form method=\"post\" action=\"/ui/gateways/{id}/approve\" style=\"display:inline\">\
                 <button id=\"approve-{id}\">Approve</button></form>",
                id = esc(&g.id)
            )
        } else {
            esc(&g.enrollment).into_owned()
        };
        body.push_str(&format!(
            "<tr><td><a id=\"gw-{id}\" href=\"/ui/gateways/{id}\">{id}</a></td><td class=\"{st}\">{st}</td>\
             <td>{since}</td><td>{last}</td><td>{mon}</td><td>{agent}</td><td>{enrollment}</td></tr>",
            id = esc(&g.id),
            st = esc(&g.status),
            since = time(Some(g.status_since)),
            last = time(g.last_result_at),
            mon = esc(&g.monitor),
            agent = esc(g.agent_version.as_deref().unwrap_or("—")),
        ));
    }
    body.push_str("</table>");
    let vendors = ctl.store.vendor_list().await.unwrap_or_default();
    body.push_str(
        "<h2>Vendors</h2><table id=\"vendors\"><tr><th>Vendor</th><th>Key</th><th>Endorsements</th></tr>",
    );
    for v in &vendors {
        let state = match (&v.revoked_at, &v.revoked_reason) {
            (Some(t), reason) => format!(
                "revoked {}: {}",
                time(Some(*t)),
                esc(reason.as_deref().unwrap_or(""))
            ),
            (None, _) => format!(
                "trusted <form method=\"post\" action=\"/ui/vendors/{key}/revoke\" style=\"display:inline\">\
                 <input id=\"revoke-reason-{key}\" name=\"reason\" placeholder=\"reason\" required> \
                 <button id=\"revoke-{key}\">Revoke every endorsement</button></form>",
                key = esc(&v.key)
            ),
        };
        body.push_str(&format!(
            "<tr><td>{}</td><td><code>{}…</code></td><td>{state}</td></tr>",
            esc(&v.name),
            esc(&v.key[..16])
        ));
    }
    body.push_str("</table>");
    page("Fleet", &body, true).into_response()
}

async fn gateway_page(State(ctl): Ctl, Path(id): Path<String>) -> Response {
    let detail = match super::detail(&ctl, &id).await {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    let history = match ctl.store.history(&id, 50).await {
        Ok(h) => h,
        Err(e) => return super::ApiError::from(e).into_response(),
    };
    let policies = ctl.store.device_policies(&id).await.unwrap_or_default();
    let g = &detail.gateway;
    let mut body = format!(
        "<p>Status: <span id=\"status\" class=\"{st}\">{st}</span> since {since} · monitor {mon} · \
         attestation key <code>{ak}</code> · agent {agent}</p>",
        st = esc(&g.status),
        since = time(Some(g.status_since)),
        mon = esc(&g.monitor),
        ak = esc(&g.attestation_key[..16]),
        agent = esc(g.agent_version.as_deref().unwrap_or("—")),
    );
    match &g.revoked_reason {
        Some(why) if g.enrollment == "revoked" => body.push_str(&format!(
            "<p id=\"revoked\" class=\"contraindicated\">Revoked: {}</p>",
            esc(why)
        )),
        _ => body.push_str(&format!(
            "<form method=\"post\" action=\"/ui/gateways/{id}/revoke\"><label>Revoke this gateway \
             (its image may be compromised) because <input id=\"revoke-reason\" name=\"reason\" required></label> \
             <button id=\"revoke\">Revoke</button></form>",
            id = esc(&id)
        )),
    }
    if let Some(p) = &detail.policy {
        body.push_str(&format!(
            "<p id=\"policy-state\">Policy v{} — {}</p>",
            p.version,
            match (&p.applied_at, &p.error) {
                (_, Some(e)) => format!("refused by the gateway: {}", esc(e)),
                (Some(t), _) => format!("applied {}", time(Some(*t))),
                _ => "sent, not yet applied".into(),
            }
        ));
    }
    if let Some((drops, passes)) = detail.datapath {
        body.push_str(&format!(
            "<p>Data path: {passes} packets passed, {drops} dropped (hop tag failed)</p>"
        ));
    }
    body.push_str("<h2>Attestation history</h2><table id=\"history\"><tr><th>Time</th><th>Status</th><th>Reasons</th></tr>");
    for r in &history {
        let reasons = crate::appraise::problems_in(&r.ear);
        body.push_str(&format!(
            "<tr><td>{}</td><td class=\"{st}\">{st}</td><td>{}</td></tr>",
            time(Some(r.at)),
            reasons
                .iter()
                .map(|r| esc(r).to_string())
                .collect::<Vec<_>>()
                .join("<br>"),
            st = esc(&r.status),
        ));
    }
    body.push_str("</table><h2>Devices</h2><table id=\"devices\"><tr><th>MAC</th><th>IP</th><th>Hostname</th><th>Policy</th></tr>");
    let mut macs: Vec<String> = detail.devices.iter().map(|d| d.mac.clone()).collect();
    for (mac, _) in &policies {
        if !macs.contains(mac) {
            macs.push(mac.clone());
        }
    }
    for mac in &macs {
        let dev = detail.devices.iter().find(|d| &d.mac == mac);
        let policy = policies
            .iter()
            .find(|(m, _)| m == mac)
            .map(|(_, s)| s.as_str())
            .unwrap_or("—");
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code class=\"device-policy\">{}</code></td></tr>",
            esc(mac),
            esc(dev.and_then(|d| d.ip.as_deref()).unwrap_or("—")),
            esc(dev.and_then(|d| d.hostname.as_deref()).unwrap_or("—")),
            esc(policy)
        ));
    }
    body.push_str(&format!(
        "</table><h2>Set a device policy</h2><form method=\"post\" action=\"/ui/gateways/{id}/policy\">\
         <p><label>MAC <input id=\"policy-mac\" name=\"mac\" placeholder=\"aa:bb:cc:dd:ee:ff\"></label></p>\
         <p><label>Policy (JSON: name, mud, block, allow, ids_rules)<br>\
         <textarea id=\"policy-json\" name=\"policy\">{{\"block\": [], \"allow\": [], \"ids_rules\": []}}</textarea></label></p>\
         <button id=\"policy-submit\">Sign and send</button></form>",
        id = esc(&id)
    ));
    page(&format!("Gateway {id}"), &body, false).into_response()
}

async fn approve(State(ctl): Ctl, Path(id): Path<String>) -> Response {
    match ctl.store.approve(&id).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => super::ApiError::from(e).into_response(),
    }
}

#[derive(Deserialize)]
struct RevokeForm {
    reason: String,
}

async fn revoke_gateway(
    State(ctl): Ctl,
    Path(id): Path<String>,
    Form(f): Form<RevokeForm>,
) -> Response {
    let reason = match super::valid_reason(&f.reason) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    match ctl.revoke_gateway(&id, &reason).await {
        Ok(_) => Redirect::to(&format!("/ui/gateways/{id}")).into_response(),
        Err(e) => super::ApiError::from(e).into_response(),
    }
}

async fn revoke_vendor(
    State(ctl): Ctl,
    Path(key): Path<String>,
    Form(f): Form<RevokeForm>,
) -> Response {
    let reason = match super::valid_reason(&f.reason) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let Some(key) = gw_proto::parse_public_key(&key) else {
        return super::bad("not an ed25519 public key").into_response();
    };
    match ctl.revoke_vendor(key.as_bytes(), &reason).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(e) => super::ApiError::from(e).into_response(),
    }
}

#[derive(Deserialize)]
struct PolicyForm {
    mac: String,
    policy: String,
}

async fn set_policy(
    State(ctl): Ctl,
    Path(id): Path<String>,
    Form(f): Form<PolicyForm>,
) -> Response {
    let policy: DevicePolicy = match serde_json::from_str(&f.policy) {
        Ok(p) => p,
        Err(e) => {
            return super::bad(format!("device policy: {e}")).into_response();
        }
    };
    match super::set_device_policy(&ctl, &id, &f.mac, &policy).await {
        Ok(_) => Redirect::to(&format!("/ui/gateways/{id}")).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_time() {
        assert_eq!(super::time(Some(0)), "1970-01-01T00:00:00Z");
        assert_eq!(super::time(None), "—");
    }
}
