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
        c.wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("token"))
            .await
            .unwrap()
            .send_keys("wrong")
            .await
            .unwrap();
        c.wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("signin"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let err = c
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("error"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(err.contains("not valid"), "{err}");
        c.wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("token"))
            .await
            .unwrap()
            .send_keys(token.trim())
            .await
            .unwrap();
        c.wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("signin"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();

        // Fleet overview: counts by state.
        // Poll (re-finding the element) until its text is `want`: pages change under us after
        // clicks, and the fleet page refreshes itself.
        let wait_text = |id: &'static str, want: &'static str| {
            let c = c.clone();
            async move {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    let got = match c.find(Locator::Id(id)).await {
                        Ok(e) => e.text().await.unwrap_or_default(),
                        Err(_) => String::new(),
                    };
                    if got == want {
                        return;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "#{id} is {got:?}, expected {want:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        wait_text("count-total", "2").await;
        wait_text("count-pending", "1").await;
        wait_text("count-warning", "1").await;

        // Approve the pending gateway; it enrolls and is attested.
        c.wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("approve-gw-pending"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        wait_text("count-pending", "0").await;
        tokio::task::block_in_place(|| {
            ctl.wait_result("gw-pending", 0, "attested after approval", |r| {
                r["status"] == "warning"
            })
        });

        // A gateway's page: attestation history with reasons.
        c.wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("gw-gw-a"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let history = c
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("history"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(history.contains("warning"), "{history}");
        assert!(history.contains("insecure software monitor"), "{history}");

        // Set a device policy from the page: signed, sent, applied and proven.
        let mac = c
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("policy-mac"))
            .await
            .unwrap();
        mac.send_keys("02:00:00:00:00:2a").await.unwrap();
        let json = c
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("policy-json"))
            .await
            .unwrap();
        json.clear().await.unwrap();
        json.send_keys(r#"{"name": "plug", "block": ["203.0.113.9"]}"#)
            .await
            .unwrap();
        c.wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("policy-submit"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
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
        let devices = c
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("devices"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
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
        let state = c
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(Locator::Id("policy-state"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(state.contains("applied"), "{state}");
        c.close().await.unwrap();
    });
}
