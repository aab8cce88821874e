//! Operating the controller: signed alert webhooks with retries, and no committed result lost
//! when the process is killed mid-write.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use gw_tests::fleet::{ControllerProc, Db, Gateway, host_manifest, import};

fn vendor() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

/// One received webhook: headers (lowercase names) and body.
type Hook = (Vec<(String, String)>, Vec<u8>);

/// Webhooks accepted so far.
type Received = Arc<Mutex<Vec<Hook>>>;

/// A webhook receiver that fails the first `fail_first` deliveries with 503. Returns its URL,
/// what it accepted and how many attempts it saw.
fn receiver(fail_first: usize) -> (String, Received, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/gatewarden", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let attempts = Arc::new(Mutex::new(0usize));
    let (g, a) = (got.clone(), attempts.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut headers = Vec::new();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            loop {
                line.clear();
                reader.read_line(&mut line).unwrap();
                let l = line.trim_end();
                if l.is_empty() {
                    break;
                }
                let (k, v) = l.split_once(':').unwrap();
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
            let len: usize = headers
                .iter()
                .find(|(k, _)| k == "content-length")
                .map(|(_, v)| v.parse().unwrap())
                .unwrap_or(0);
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let n = {
                let mut a = a.lock().unwrap();
                *a += 1;
                *a
            };
            let status = if n <= fail_first {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            if n > fail_first {
                g.lock().unwrap().push((headers, body));
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, got, attempts)
}

#[test]
fn state_changes_are_posted_signed_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, "a webhook secret of enough length\n").unwrap();
    let (url, got, attempts) = receiver(1);
    let vendor_hex = hex::encode(vendor().verifying_key().as_bytes());
    let ctl = ControllerProc::start_with(
        dir.path(),
        &Db::Sqlite,
        &vendor_hex,
        "1s",
        &[
            "--webhook",
            &url,
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    import(&ctl, &host_manifest("1").sign(&vendor()));
    let mut g = Gateway::new("gw-hooked", &vendor(), &ctl.command_key());
    g.start_agent(&ctl);
    ctl.wait_result("gw-hooked", 0, "attested", |r| r["status"] == "warning");
    g.stop_agent();
    ctl.wait_result("gw-hooked", 0, "unreachable", |r| {
        r["status"] == "unreachable"
    });

    let deadline = Instant::now() + Duration::from_secs(60);
    let hooks = loop {
        let hooks = got.lock().unwrap().clone();
        if hooks.len() >= 2 {
            break hooks;
        }
        assert!(Instant::now() < deadline, "webhooks received: {hooks:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // The first delivery failed and was retried.
    assert!(*attempts.lock().unwrap() >= 3);
    let mut statuses = Vec::new();
    for (headers, body) in &hooks {
        let h = |k: &str| {
            headers
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| panic!("no {k} header"))
        };
        let ts: i64 = h("x-gatewarden-timestamp").parse().unwrap();
        assert_eq!(
            h("x-gatewarden-signature"),
            gw_controller::alerts::signature(b"a webhook secret of enough length", ts, body),
            "signature does not verify"
        );
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(v["gateway_id"], "gw-hooked");
        statuses.push(v["status"].as_str().unwrap().to_owned());
    }
    // Only changes are posted: warning once (not every epoch), then unreachable.
    assert_eq!(statuses, ["warning", "unreachable"], "{hooks:?}");
}

#[test]
fn killing_the_controller_mid_write_loses_no_committed_result() {
    let dir = tempfile::tempdir().unwrap();
    let vendor_hex = hex::encode(vendor().verifying_key().as_bytes());
    let mut ctl = ControllerProc::start_with(dir.path(), &Db::Sqlite, &vendor_hex, "100ms", &[]);
    import(&ctl, &host_manifest("1").sign(&vendor()));
    let mut gws: Vec<Gateway> = (0..4)
        .map(|i| Gateway::new(&format!("gw-{i}"), &vendor(), &ctl.command_key()))
        .collect();
    for g in &mut gws {
        g.start_agent(&ctl);
    }
    // Results stream in (about 40 a second); kill at an arbitrary moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    while ctl
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("result "))
        .count()
        < 60
    {
        assert!(Instant::now() < deadline, "results did not arrive");
        std::thread::sleep(Duration::from_millis(20));
    }
    ctl.kill9();
    // Every result the controller printed had been committed before it was printed.
    let printed = ctl
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.starts_with("result "))
        .count() as i64;
    drop(gws);
    let again = ControllerProc::start_with(dir.path(), &Db::Sqlite, &vendor_hex, "100ms", &[]);
    let stored = again.get("/api/v1/summary")["results"].as_i64().unwrap();
    assert!(
        stored >= printed,
        "{printed} results were reported committed, {stored} survived"
    );
    // The database is intact, and history reads back in order.
    let history = again.get("/api/v1/gateways/gw-0/results?limit=10000");
    let ids: Vec<i64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]));
    assert!(!ids.is_empty());
}
