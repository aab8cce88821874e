//! The operator dashboard in headless Chromium (Debian's `chromium` and `chromedriver`), with
//! a real click path: sign in, fleet counts, approve a pending gateway, open a gateway's
//! history, set a device policy and see it applied.

use std::{
    net::TcpListener,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use fantoccini::{ClientBuilder, Locator};
use gw_tests::fleet::{ControllerProc, Db, Gateway, component, host_manifest, import};

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chromedriver(port: u16) -> Driver {
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "start chromedriver (apt-get install chromium chromium-driver; `cargo xtask test` does)",
        );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Driver(child)
}

/// The element with `id`, waiting up to 30 s for it to appear.
async fn element(c: &fantoccini::Client, id: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id(id))
        .await
        .unwrap_or_else(|e| panic!("no #{id}: {e}"))
}

/// The text of the element with `id` once `done` accepts it, re-finding the element every 200 ms
/// for up to 30 s: after a click the old page may still be the one on screen, so an element with
/// the same id can be read before the next page replaces it.
async fn text_when(c: &fantoccini::Client, id: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = match c.find(Locator::Id(id)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if done(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "#{id} never became as expected; it reads:\n{got}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn operator_click_path_in_chromium() {
    let vendor = SigningKey::from_bytes(&[0x42; 32]);
    let dir = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(dir.path(), &Db::Sqlite, &vendor, "1s");
    import(&ctl, &host_manifest("1").sign(&vendor));
    let mut a = Gateway::new("gw-a", &vendor, &ctl.command_key());
    a.start_agent(&ctl);
    let stranger = SigningKey::from_bytes(&[0x17; 32]);
    let mut p = Gateway::new("gw-pending", &stranger, &ctl.command_key());
    p.start_agent(&ctl);
    ctl.wait_result("gw-a", 0, "attested", |r| r["status"] == "warning");
    let deadline = Instant::now() + Duration::from_secs(60);
    while ctl.get("/api/v1/summary")["pending"] != 1 {
        assert!(Instant::now() < deadline, "pending gateway never appeared");
        std::thread::sleep(Duration::from_millis(200));
    }

    let port = free_port();
    let _driver = chromedriver(port);
    let profile = tempfile::tempdir().unwrap();
    let token = std::fs::read_to_string(dir.path().join("operator.token")).unwrap();
    let base = format!("https://{}", ctl.api_addr);
    // Multi-threaded so the controller helpers (which block) can run in `block_in_place`.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    // The controller's certificate is issued by the fleet's own CA.
                    "--ignore-certificate-errors",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let c = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("WebDriver session");

        // Without the token, the dashboard sends us to sign in; a wrong token is refused.
        c.goto(&format!("{base}/")).await.unwrap();
        assert!(c.current_url().await.unwrap().path().ends_with("/signin"));
        element(&c, "token").await.send_keys("wrong").await.unwrap();
        element(&c, "signin").await.click().await.unwrap();
        let err = element(&c, "error").await.text().await.unwrap();
        assert!(err.contains("not valid"), "{err}");
        element(&c, "token")
            .await
            .send_keys(token.trim())
            .await
            .unwrap();
        element(&c, "signin").await.click().await.unwrap();

        // Fleet overview: counts by state.
        // The fleet page refreshes itself, so counts are polled.
        text_when(&c, "count-total", |t| t == "2").await;
        text_when(&c, "count-pending", |t| t == "1").await;
        text_when(&c, "count-warning", |t| t == "1").await;

        // Approve the pending gateway; it enrolls and is attested.
        element(&c, "approve-gw-pending")
            .await
            .click()
            .await
            .unwrap();
        text_when(&c, "count-pending", |t| t == "0").await;
        tokio::task::block_in_place(|| {
            ctl.wait_result("gw-pending", 0, "attested after approval", |r| {
                r["status"] == "warning"
            })
        });

        // A gateway's page: attestation history with reasons.
        element(&c, "gw-gw-a").await.click().await.unwrap();
        let history = element(&c, "history").await.text().await.unwrap();
        assert!(history.contains("warning"), "{history}");
        assert!(history.contains("insecure software monitor"), "{history}");

        // Set a device policy from the page: signed, sent, applied and proven.
        let mac = element(&c, "policy-mac").await;
        mac.send_keys("02:00:00:00:00:2a").await.unwrap();
        let json = element(&c, "policy-json").await;
        json.clear().await.unwrap();
        json.send_keys(r#"{"name": "plug", "block": ["203.0.113.9"]}"#)
            .await
            .unwrap();
        element(&c, "policy-submit").await.click().await.unwrap();
        let Ok(state) = c
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("policy-state"))
            .await
        else {
            panic!(
                "no policy state after submitting; page:\n{}",
                c.source().await.unwrap()
            );
        };
        let state = state.text().await.unwrap();
        assert!(state.contains("Policy v1"), "{state}");
        let devices = element(&c, "devices").await.text().await.unwrap();
        assert!(
            devices.contains("02:00:00:00:00:2a") && devices.contains("203.0.113.9"),
            "{devices}"
        );
        tokio::task::block_in_place(|| {
            ctl.wait_result("gw-a", 0, "policy proven", |r| {
                component(r, "config:firewall") == "affirming"
            })
        });
        c.refresh().await.unwrap();
        let state = element(&c, "policy-state").await.text().await.unwrap();
        assert!(state.contains("applied"), "{state}");

        // Revoke the gateway from its page: the page says why, and so does its history.
        element(&c, "revoke-reason")
            .await
            .send_keys("image may be compromised")
            .await
            .unwrap();
        element(&c, "revoke").await.click().await.unwrap();
        let revoked = element(&c, "revoked").await.text().await.unwrap();
        assert!(revoked.contains("image may be compromised"), "{revoked}");
        tokio::task::block_in_place(|| {
            ctl.wait_result("gw-a", 0, "the revocation", |r| {
                r["status"] == "contraindicated"
                    && gw_tests::fleet::reasons(r)
                        .iter()
                        .any(|x| x == "identity: revoked by the operator: image may be compromised")
            })
        });
        // The fleet page lists it revoked, and the vendor's endorsements can be revoked there.
        c.goto(&format!("{base}/")).await.unwrap();
        let table = element(&c, "gateways").await.text().await.unwrap();
        assert!(table.contains("revoked"), "{table}");
        let key = hex::encode(vendor.verifying_key().as_bytes());
        element(&c, &format!("revoke-reason-{key}"))
            .await
            .send_keys("vendor key leaked")
            .await
            .unwrap();
        element(&c, &format!("revoke-{key}"))
            .await
            .click()
            .await
            .unwrap();
        // The click posts a form and the next page replaces this one: wait for it.
        text_when(&c, "vendors", |v| {
            v.contains("revoked") && v.contains("vendor key leaked")
        })
        .await;
        // gw-pending was approved by the operator, not endorsed: it stays served.
        let v = tokio::task::block_in_place(|| ctl.get("/api/v1/gateways/gw-pending"));
        assert_eq!(v["gateway"]["enrollment"], "accepted", "{v:#}");
        c.close().await.unwrap();
    });
}
