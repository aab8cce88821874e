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
use std::time::Duration;

use ed25519_dalek::SigningKey;
use gw_controller::policy::{compile, sign};
use gw_tests::camera::{
    self, CLIENT, DEVICE, DEVICE_MAC, check_traffic, hop_dropped, verdict_dropped, wait_for,
};
use gw_tests::netns::{self, Netns, http_get, veth};
use gw_tests::{SoftwareMonitor, bin};

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

/// Every stage's stats, for failure messages.
fn all_stats(run: &Path) -> String {
    serde_json::to_string_pretty(&gw_chain::read_stats(run)).unwrap_or_default()
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
    let devices = BTreeMap::from([(DEVICE_MAC.to_string(), camera::policy())]);
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
        || all_stats(&run),
    );

    // 1. Through vSwitch → firewall → IDS → monitor → vSwitch, both ways.
    check_traffic(&dev, &cli, Duration::from_secs(5), || all_stats(&run));
    wait_for(
        "firewall and IDS drops in the stats",
        Duration::from_secs(10),
        || {
            verdict_dropped(&stats(&run, &camera::stage("firewall"))) >= 1
                && verdict_dropped(&stats(&run, &camera::stage("ids"))) >= 1
        },
        || all_stats(&run),
    );

    // 2. A rogue process (`gw-dp-rogue`): it steals the IDS's socket path for a moment to
    //    capture one genuinely tagged hop-1 frame (client → device), then injects it once,
    //    replayed, forged, and at the wrong stages.
    let ids = camera::stage("ids");
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
    let camera_addr: SocketAddr = format!("{DEVICE}:80").parse().unwrap();
    let traffic = {
        let cli_name = cli.name.clone();
        std::thread::spawn(move || {
            for _ in 0..5 {
                let _ = http_get(&cli_name, camera_addr, "/captured", Duration::from_secs(2));
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

    let mon_name = camera::stage("monitor");
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
        || all_stats(&run),
    );
    let (passed, dropped) = gw_chain::hop_totals(&run);
    assert!(passed > 20, "hops passed: {passed}");
    assert!(dropped >= 4, "hops dropped: {dropped}");

    // 3. A new chain layout (the firewall alone): new chain ids, fresh hop slots (the monitor
    //    keeps a chain's hop count), every stage restarted; traffic flows again.
    let layout = gw_proto::wire::DatapathConfig {
        signing: true,
        middleboxes: vec!["firewall".into()],
    };
    let doc = compile("gw-host", 2, &devices, Some(&layout));
    let signed = sign(&doc, &command).expect("policy signs");
    agent
        .policy_set(signed.version, &signed.body, &signed.signature)
        .expect("POLICY_SET v2");
    let mac = gw_packet::parse_mac(DEVICE_MAC).unwrap();
    let new_chain = format!(
        "{:08x}",
        gw_chain::chain_id(Some(&mac), gw_packet::Direction::ToDevice, 2)
    );
    wait_for(
        "the vSwitch and the firewall on the new layout",
        Duration::from_secs(30),
        || {
            let fw = stats(&run, &camera::stage("firewall"));
            fw["policy_version"] == 2 && fw["chains"].get(&new_chain).is_some()
        },
        || all_stats(&run),
    );
    let got = http_get(
        &cli.name,
        camera_addr,
        "/after-relayout",
        Duration::from_secs(5),
    );
    assert_eq!(
        got.as_deref(),
        Ok("hello from the camera"),
        "{}",
        all_stats(&run)
    );
}
