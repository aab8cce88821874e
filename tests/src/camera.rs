//! The data-path scenario shared by the host and QEMU end-to-end tests: an IoT camera (an HTTP
//! server on the LAN) with a MUD profile and an IDS rule, a client on the WAN side.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use gw_controller::policy::DevicePolicy;

use crate::netns::{Netns, http_get, http_server, ip_ok};
use crate::qemu::Qemu;

/// The camera's MAC address.
pub const DEVICE_MAC: &str = "02:77:00:00:00:10";
/// The camera's IPv4 address.
pub const DEVICE: &str = "192.168.77.10";
/// The WAN client's (and "cloud" server's) IPv4 address.
pub const CLIENT: &str = "192.168.77.20";
/// The IDS rule: requests for `/forbidden` are dropped.
pub const IDS_RULE: &str = r#"drop tcp any any -> any 80 (msg:"forbidden path"; flow:to_server,established; content:"/forbidden"; sid:1000001; rev:1;)"#;

/// Name of a stage's stats file for the camera (`firewall-027700000010`).
pub fn stage(kind: &str) -> String {
    format!("{kind}-{}", DEVICE_MAC.replace(':', ""))
}

/// The camera's MUD profile: it may open TCP to the client's port 8080 and accept
/// connections to its ports 80 (HTTP) and 5201 (iperf3, for the benchmark); nothing else.
pub fn mud() -> serde_json::Value {
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
                    }, {
                        "name": "iperf3-in",
                        "matches": {
                            "ipv4": {"protocol": 6},
                            "tcp": {
                                "destination-port": {"operator": "eq", "port": 5201},
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

/// The camera's policy as an operator sets it.
pub fn policy() -> DevicePolicy {
    DevicePolicy {
        name: Some("camera".into()),
        mud: Some(mud()),
        ids_rules: vec![IDS_RULE.into()],
        ..Default::default()
    }
}

/// Set the camera's [`policy`] for gateway `id` through the controller `ctl` (once the gateway
/// has enrolled; the policy file goes to `dir`) and wait until a result proves it running:
/// signed by the controller, pushed by the agent, checked and stored by the hypervisor. Returns
/// that result.
pub fn set_camera_policy(
    ctl: &crate::fleet::ControllerProc,
    dir: &std::path::Path,
    id: &str,
) -> anyhow::Result<serde_json::Value> {
    wait_for(
        "the gateway's enrolment",
        crate::fleet::WAIT,
        || {
            ctl.request(hyper::Method::GET, &format!("/api/v1/gateways/{id}"), None)
                .0
                == 200
        },
        String::new,
    );
    let file = dir.join("camera.json");
    std::fs::write(&file, serde_json::to_vec(&policy())?)?;
    let path = file
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    let out = ctl.cli(&["set-policy", id, DEVICE_MAC, path]);
    anyhow::ensure!(out.status.success(), "set-policy: {out:?}");
    Ok(ctl.wait_result(id, 0, "the camera's policy proven", |r| {
        crate::fleet::component(r, "policy") == "affirming"
    }))
}

/// Poll `f` every 200 ms until it holds; panic with `what` (and `detail()`) after `timeout`.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            detail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Sum of counter `key` in `hop_dropped` over every chain of a stage's stats.
pub fn hop_dropped(stats: &serde_json::Value, key: &str) -> u64 {
    gw_chain::stage_counters_in(stats)
        .iter()
        .map(|c| c.hop_dropped.get(key).copied().unwrap_or(0))
        .sum()
}

/// Sum of `verdict_dropped` over every chain of a stage's stats.
pub fn verdict_dropped(stats: &serde_json::Value) -> u64 {
    gw_chain::stage_counters_in(stats)
        .iter()
        .map(|c| c.verdict_dropped)
        .sum()
}

/// Start the camera's HTTP server (in `dev`) and the client's servers on 8080 and 9000 (in
/// `cli`), then check what the gateway lets through: the client's GET reaches the camera, the
/// camera reaches port 8080 but not 9000 (MUD), a GET for `/forbidden` is dropped (IDS), and
/// traffic flows again afterwards. `detail()` is added to failure messages.
pub fn check_traffic(dev: &Netns, cli: &Netns, timeout: Duration, detail: impl Fn() -> String) {
    http_server(
        dev,
        format!("{DEVICE}:80").parse().unwrap(),
        "hello from the camera",
    );
    for port in [8080, 9000] {
        http_server(cli, format!("{CLIENT}:{port}").parse().unwrap(), "cloud");
    }
    let camera: SocketAddr = format!("{DEVICE}:80").parse().unwrap();
    let cloud = |port: u16| -> SocketAddr { format!("{CLIENT}:{port}").parse().unwrap() };
    let got = http_get(&cli.name, camera, "/status", timeout);
    assert_eq!(got.as_deref(), Ok("hello from the camera"), "{}", detail());
    let got = http_get(&dev.name, cloud(8080), "/", timeout);
    assert_eq!(got.as_deref(), Ok("cloud"), "{}", detail());
    let blocked = http_get(&dev.name, cloud(9000), "/", Duration::from_secs(3));
    assert!(
        blocked.is_err(),
        "MUD-disallowed destination reached: {blocked:?}"
    );
    let dropped = http_get(&cli.name, camera, "/forbidden", Duration::from_secs(3));
    assert!(
        dropped.is_err(),
        "the IDS drop rule did not stop the request: {dropped:?}"
    );
    let got = http_get(&cli.name, camera, "/again", timeout);
    assert_eq!(got.as_deref(), Ok("hello from the camera"), "{}", detail());
}

/// The gateway VM with its data-path NICs: LAN and WAN taps (QEMU `vnet_hdr=off`: full frames
/// with checksums, never merged super-frames), moved into the camera's and the client's
/// namespaces once QEMU opened them.
pub struct DatapathVm {
    /// The VM, its console at a shell prompt with the vSwitch started.
    pub q: Qemu,
    /// The camera's namespace (LAN side), the camera's MAC and address on its tap.
    pub dev: Netns,
    /// The client's namespace (WAN side).
    pub cli: Netns,
}

impl DatapathVm {
    /// Boot the qemu-virt image (2 CPUs), its agent forwarded to `controller`.
    pub fn boot(controller: SocketAddr) -> DatapathVm {
        Self::boot_board("qemu-virt", 2, controller)
    }

    /// Boot board `board`'s image with `smp` CPUs and the board's own kind of NIC for the LAN
    /// and WAN ports (virtio on qemu-virt; QEMU's usb-net behind the Pis' dwc2 port, QEMU adding
    /// a hub for them).
    pub fn boot_board(board: &str, smp: u32, controller: SocketAddr) -> DatapathVm {
        let tag = std::process::id() % 100_000;
        let (lan_tap, wan_tap) = (format!("gwq{tag}l"), format!("gwq{tag}w"));
        let mut extra = Vec::new();
        for (name, tap, mac) in [
            ("lan", &lan_tap, "52:54:00:77:00:01"),
            ("wan", &wan_tap, "52:54:00:77:00:02"),
        ] {
            extra.extend([
                "-netdev".to_string(),
                format!("tap,id={name},ifname={tap},script=no,downscript=no,vnet_hdr=off"),
                "-device".to_string(),
                crate::qemu::board_net_device(board, name, mac),
            ]);
        }
        let mut q = if board == "qemu-virt" {
            Qemu::boot_virt_with(smp, controller, &extra)
        } else {
            Qemu::boot_board_with(board, smp, Some(controller), &extra)
        };
        let dev = Netns::new(&format!("gwqd{tag}-dev"));
        let cli = Netns::new(&format!("gwqd{tag}-cli"));
        wait_for(
            "QEMU's tap devices",
            Duration::from_secs(30),
            || std::path::Path::new(&format!("/sys/class/net/{wan_tap}")).exists(),
            String::new,
        );
        ip_ok(&["link", "set", &lan_tap, "netns", &dev.name]);
        ip_ok(&["link", "set", &wan_tap, "netns", &cli.name]);
        dev.ip(&["link", "set", &lan_tap, "address", DEVICE_MAC]);
        dev.ip(&["addr", "add", &format!("{DEVICE}/24"), "dev", &lan_tap]);
        dev.ip(&["link", "set", &lan_tap, "up"]);
        cli.ip(&["addr", "add", &format!("{CLIENT}/24"), "dev", &wan_tap]);
        cli.ip(&["link", "set", &wan_tap, "up"]);
        q.expect("gatewarden-guest: vSwitch started");
        q.expect("# ");
        DatapathVm { q, dev, cli }
    }
}
