//! The data path on the host: `gw-vswitch` bridging two veth ports in a network namespace, the
//! real middlebox processes per device, every hop tagged and checked by the software monitor.
//! An IoT device (HTTP server) and a WAN client live in their own namespaces.
//!
//! Checks: an HTTP GET passes through the chain; a destination the device's MUD profile does
//! not allow is blocked; an IDS drop rule stops a matching request; a forged, a replayed and a
//! hop-skipping packet injected by a rogue process are each dropped and counted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use gw_controller::policy::{DevicePolicy, compile, sign};
use gw_tests::netns::{self, Netns, http_get, http_server, veth};
use gw_tests::{SoftwareMonitor, bin};

const DEVICE_MAC: &str = "02:77:00:00:00:10";
const DEVICE: &str = "192.168.77.10";
const CLIENT: &str = "192.168.77.20";

fn mud() -> serde_json::Value {
    serde_json::json!({
        "ietf-mud:mud": {
            "mud-version": 1,
            "mud-url": "https://devices.example.com/gatewarden-test-camera.json",
            "last-update": "2026-11-23T00:00:00+00:00",
            "cache-validity": 48,
            "is-supported": true,
            "systeminfo": "Gatewarden test camera",
            "from-device-policy": {"access-lists": {"access-list": [{"name": "from-dev"}]}},
            "to-device-policy": {"access-lists": {"access-list": [{"name": "to-dev"}]}}
        },
        "ietf-access-control-list:acls": {
            "acl": [
                {
                    "name": "from-dev",
                    "type": "ipv4-acl-type",
                    "aces": {"ace": [{
                        "name": "cloud-8080",
                        "matches": {
                            "ipv4": {"protocol": 6, "destination-ipv4-network": format!("{CLIENT}/32")},
                            "tcp": {
                                "destination-port": {"operator": "eq", "port": 8080},
                                "ietf-mud:direction-initiated": "from-device"
                            }
                        },
                        "actions": {"forwarding": "accept"}
                    }]}
                },
                {
                    "name": "to-dev",
                    "type": "ipv4-acl-type",
                    "aces": {"ace": [{
                        "name": "http-in",
                        "matches": {
                            "ipv4": {"protocol": 6},
                            "tcp": {
                                "destination-port": {"operator": "eq", "port": 80},
                                "ietf-mud:direction-initiated": "to-device"
                            }
                        },
                        "actions": {"forwarding": "accept"}
                    }]}
                }
            ]
        }
    })
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn stats(run: &Path, name: &str) -> serde_json::Value {
    gw_chain::read_stats(run)
        .remove(name)
        .unwrap_or(serde_json::Value::Null)
}

/// Sum of counter `key` in `hop_dropped` of every chain in a stats file.
fn hop_dropped(v: &serde_json::Value, key: &str) -> u64 {
    gw_chain::stage_counters_in(v)
        .iter()
        .map(|c| c.hop_dropped.get(key).copied().unwrap_or(0))
        .sum()
}

/// Every stage's stats, for failure messages.
fn all_stats(run: &Path) -> String {
    serde_json::to_string_pretty(&gw_chain::read_stats(run)).unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn packets_walk_their_chain_and_injected_ones_are_dropped() {
    if !netns::available() {
        return;
    }
    let tag = std::process::id();
    let gw = Netns::new(&format!("gwdp{tag}-gw"));
    let dev = Netns::new(&format!("gwdp{tag}-dev"));
    let cli = Netns::new(&format!("gwdp{tag}-cli"));
    veth(&dev, "dev0", &gw, "lan0");
    veth(&cli, "cli0", &gw, "wan0");
    dev.ip(&["link", "set", "dev0", "address", DEVICE_MAC]);
    dev.ip(&["addr", "add", &format!("{DEVICE}/24"), "dev", "dev0"]);
    cli.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", "cli0"]);

    // The monitor, provisioned with the controller key, holding the signed policy.
    let command = SigningKey::from_bytes(&rand::random());
    let mon =
        SoftwareMonitor::with_controller_key(&hex::encode(command.verifying_key().as_bytes()));
    let mut devices = BTreeMap::new();
    devices.insert(
        DEVICE_MAC.to_string(),
        DevicePolicy {
            name: Some("camera".into()),
            mud: Some(mud()),
            ids_rules: vec![
                r#"drop tcp any any -> any 80 (msg:"forbidden path"; flow:to_server,established; content:"/forbidden"; sid:1000001; rev:1;)"#.into(),
            ],
            ..Default::default()
        },
    );
    let doc = compile("gw-host", 1, &devices, None);
    let signed = sign(&doc, &command).expect("policy signs");
    let mut agent = gw_hcall::Client::new(
        gw_hcall::SocketTransport::connect(&mon.socket).expect("monitor socket"),
    );
    agent
        .policy_set(signed.version, &signed.body, &signed.signature)
        .expect("POLICY_SET");

    let run_dir = tempfile::tempdir().expect("run dir");
    let run = run_dir.path().to_path_buf();
    let mut vswitch = gw.command(bin("gw-vswitch"));
    vswitch
        .args(["--lan", "lan0", "--wan", "wan0", "--transport", "socket"])
        .arg("--run-dir")
        .arg(&run)
        .arg("--monitor")
        .arg(&mon.socket)
        .arg("--bin-dir")
        .arg(bin("gw-vswitch").parent().expect("bin dir"))
        .stderr(Stdio::inherit());
    let _vswitch = Proc(vswitch.spawn().expect("start gw-vswitch"));
    // Every stage publishes its stats once it runs: vSwitch + 3 middleboxes × 2 devices.
    wait_for(
        "the vSwitch and six middleboxes",
        Duration::from_secs(30),
        || gw_chain::read_stats(&run).len() >= 7,
    );

    http_server(
        &dev,
        format!("{DEVICE}:80").parse().unwrap(),
        "hello from the camera",
    );
    for port in [8080, 9000] {
        http_server(&cli, format!("{CLIENT}:{port}").parse().unwrap(), "cloud");
    }
    let dev_http: SocketAddr = format!("{DEVICE}:80").parse().unwrap();
    let t = Duration::from_secs(5);

    // 1. WAN client → device: through vSwitch → firewall → IDS → monitor → vSwitch.
    let got = http_get(&cli.name, dev_http, "/status", t);
    assert_eq!(
        got.as_deref(),
        Ok("hello from the camera"),
        "{}",
        all_stats(&run)
    );
    // The device to the destination its MUD profile allows, and to one it does not.
    let cloud = |port: u16| -> SocketAddr { format!("{CLIENT}:{port}").parse().unwrap() };
    assert_eq!(
        http_get(&dev.name, cloud(8080), "/", t).as_deref(),
        Ok("cloud")
    );
    let blocked = http_get(&dev.name, cloud(9000), "/", Duration::from_secs(3));
    assert!(
        blocked.is_err(),
        "MUD-disallowed destination reached: {blocked:?}"
    );
    // The IDS drop rule.
    let dropped = http_get(&cli.name, dev_http, "/forbidden", Duration::from_secs(3));
    assert!(
        dropped.is_err(),
        "IDS drop rule did not stop the request: {dropped:?}"
    );
    // Still fine afterwards.
    assert_eq!(
        http_get(&cli.name, dev_http, "/again", t).as_deref(),
        Ok("hello from the camera")
    );
    let fw = format!("firewall-{}", DEVICE_MAC.replace(':', ""));
    let ids = format!("ids-{}", DEVICE_MAC.replace(':', ""));
    let mon_name = format!("monitor-{}", DEVICE_MAC.replace(':', ""));
    wait_for(
        "firewall and IDS drops in the stats",
        Duration::from_secs(10),
        || {
            let dropped = |name: &str| -> u64 {
                gw_chain::stage_counters_in(&stats(&run, name))
                    .iter()
                    .map(|c| c.verdict_dropped)
                    .sum()
            };
            dropped(&fw) >= 1 && dropped(&ids) >= 1
        },
    );

    // 2. A rogue process (`gw-dp-rogue`): it steals the IDS's socket path for a moment to
    //    capture one genuinely tagged hop-1 frame (client → device), then injects it once,
    //    replayed, forged, and at the wrong stages.
    let before = stats(&run, &ids);
    let rogue = std::process::Command::new(bin("gw-dp-rogue"))
        .args([
            "--device",
            DEVICE_MAC,
            "--direction",
            "to-device",
            "--stage",
            "2",
        ])
        .arg("--run-dir")
        .arg(&run)
        .stdout(Stdio::piped())
        .spawn()
        .expect("start gw-dp-rogue");
    // Traffic for it to capture: requests until one frame has been taken.
    let traffic = {
        let cli_name = cli.name.clone();
        std::thread::spawn(move || {
            for _ in 0..5 {
                let _ = http_get(&cli_name, dev_http, "/captured", Duration::from_secs(2));
            }
        })
    };
    let out = rogue.wait_with_output().expect("gw-dp-rogue runs");
    assert!(out.status.success(), "gw-dp-rogue failed: {out:?}");
    let _ = traffic.join();
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(
        summary["sent"].as_array().map(Vec::len),
        Some(5),
        "{summary}"
    );

    wait_for(
        "the injected packets in the counters",
        Duration::from_secs(10),
        || {
            let ids_now = stats(&run, &ids);
            hop_dropped(&ids_now, "replay") > hop_dropped(&before, "replay")
                && hop_dropped(&ids_now, "bad_tag") > hop_dropped(&before, "bad_tag")
                && hop_dropped(&stats(&run, &mon_name), "wrong_hop") >= 1
                && hop_dropped(&stats(&run, "vswitch"), "wrong_hop") >= 1
        },
    );
    let (passed, dropped) = gw_chain::hop_totals(&run);
    assert!(passed > 20, "hops passed: {passed}");
    assert!(dropped >= 4, "hops dropped: {dropped}");
}
