//! The operator API against its OpenAPI document, and its access control, in process.

use std::collections::BTreeSet;

use axum::{body::Body, http::Request};
use gw_controller::{
    Controller, Settings,
    api::{OPENAPI, ROUTES, router},
    pki::Pki,
    store::Store,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn controller(dir: &std::path::Path) -> std::sync::Arc<Controller> {
    let store = Store::open(&format!("sqlite://{}", dir.join("c.db").display()))
        .await
        .unwrap();
    let pki = Pki::load_or_create(dir, &["localhost".into()]).unwrap();
    Controller::new(store, pki, Settings::default())
}

#[test]
fn openapi_document_lists_exactly_the_routes() {
    let doc: serde_json::Value = serde_json::from_str(OPENAPI).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let routed: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, routed);
    // Every $ref resolves.
    let text = OPENAPI;
    for r in text.split("\"$ref\": \"#/").skip(1) {
        let path = &r[..r.find('"').unwrap()];
        let mut v = &doc;
        for part in path.split('/') {
            v = &v[part];
        }
        assert!(!v.is_null(), "dangling $ref #/{path}");
    }
}

#[tokio::test]
async fn every_route_is_served_and_needs_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller(dir.path()).await;
    let token = ctl.pki.operator_token().to_owned();
    let app = router(ctl);
    for (method, path) in ROUTES {
        let uri = path
            .replace(
                "{id}",
                if path.starts_with("/api/v1/manifests") {
                    "1"
                } else {
                    "gw-x"
                },
            )
            .replace("{mac}", "aa:bb:cc:dd:ee:ff");
        let req = |auth: Option<&str>| {
            let mut b = Request::builder()
                .method(method.to_uppercase().as_str())
                .uri(&uri)
                .header("content-type", "application/json");
            if let Some(t) = auth {
                b = b.header("authorization", format!("Bearer {t}"));
            }
            b.body(Body::from("{}")).unwrap()
        };
        let anon = app.clone().oneshot(req(None)).await.unwrap();
        assert_eq!(anon.status(), 401, "{method} {uri} without a token");
        let wrong = app
            .clone()
            .oneshot(req(Some(&"0".repeat(64))))
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{method} {uri} with a wrong token");
        let resp = app.clone().oneshot(req(Some(&token))).await.unwrap();
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        // Served by a handler: success, or a JSON error naming the problem — never the
        // router's empty 404 or a 405.
        assert_ne!(status, 405, "{method} {uri}");
        assert!(
            status.is_success()
                || status == 204
                || serde_json::from_slice::<serde_json::Value>(&body)
                    .is_ok_and(|v| v["error"].is_string()),
            "{method} {uri}: {status} {body:?}"
        );
    }
    // Health and the document need no token.
    for open in ["/healthz", "/api/v1/openapi.json"] {
        let r = app
            .clone()
            .oneshot(Request::get(open).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{open}");
    }
    // The dashboard sends a browser without the cookie to sign in.
    let r = app
        .clone()
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = controller(dir.path()).await;
    let token = ctl.pki.operator_token().to_owned();
    let app = router(ctl);
    let call = |method: &str, uri: &str, body: &str| {
        Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(body.to_owned()))
            .unwrap()
    };
    let cases = [
        (
            "POST",
            "/api/v1/vendors",
            r#"{"key": "zz", "name": "x"}"#,
            400,
            "not a valid ed25519",
        ),
        (
            "POST",
            "/api/v1/manifests",
            "not json",
            400,
            "manifest is not valid",
        ),
        (
            "PUT",
            "/api/v1/gateways/nope/devices/aa:bb:cc:dd:ee:ff/policy",
            "{}",
            404,
            "no such gateway",
        ),
        (
            "PUT",
            "/api/v1/gateways/nope/devices/zz/policy",
            "{}",
            400,
            "not a MAC address",
        ),
        (
            "PUT",
            "/api/v1/gateways/nope/devices/aa:bb:cc:dd:ee:ff/policy",
            r#"{"blok": []}"#,
            400,
            "unknown field",
        ),
        (
            "POST",
            "/api/v1/gateways/nope/approve",
            "",
            409,
            "not a pending gateway",
        ),
        (
            "PUT",
            "/api/v1/gateways/nope/datapath",
            r#"{"signing": false, "middleboxes": ["firewall", "nat"]}"#,
            400,
            "unknown middlebox",
        ),
        (
            "PUT",
            "/api/v1/gateways/nope/datapath",
            r#"{"middleboxes": ["ids", "ids"]}"#,
            400,
            "appears twice",
        ),
        (
            "PUT",
            "/api/v1/gateways/nope/datapath",
            r#"{"signing": false}"#,
            404,
            "no such gateway",
        ),
        (
            "GET",
            "/api/v1/gateways/nope/datapath",
            "",
            404,
            "no such gateway",
        ),
    ];
    for (m, uri, body, want, says) in cases {
        let r = app.clone().oneshot(call(m, uri, body)).await.unwrap();
        let status = r.status().as_u16();
        let text = String::from_utf8_lossy(&r.into_body().collect().await.unwrap().to_bytes())
            .into_owned();
        assert_eq!(status, want, "{m} {uri}: {text}");
        assert!(text.contains(says), "{m} {uri}: {text}");
    }
}
