//! The data path in QEMU under the hypervisor: the gateway VM with a LAN and a WAN NIC (tap
//! devices moved into network namespaces made here: the camera on the LAN side, a client on
//! the WAN side; no traffic leaves the machine). The controller's policy reaches the vSwitch and
//! middleboxes through the agent and the hypervisor's POLICY_SET; every hop is tagged and
//! checked by the hypervisor (HVC from EL0).
//!
//! Checks: an HTTP GET passes through the chain; a MUD-disallowed destination is blocked; an
//! IDS rule drops a matching payload; a forged, a replayed and a hop-skipping packet injected
//! by a rogue guest process are each dropped and counted, and the counters reach the
//! controller; the middleboxes' measurements are accepted by attestation; a copy of the
//! firewall patched away from its call site is named modified, a faithful copy is not.

use std::net::SocketAddr;
use std::time::Duration;

use gw_tests::camera::{
    self, DEVICE, DEVICE_MAC, check_traffic, hop_dropped, verdict_dropped, wait_for,
};
use gw_tests::fleet::ImageController;
use gw_tests::netns::{self, http_get};
use gw_tests::qemu::{Qemu, image_dir};

/// A guest file holding JSON, parsed (the console adds prompt noise around it).
fn guest_json(q: &mut Qemu, path: &str) -> serde_json::Value {
    let out = q.run(&format!("cat {path}"));
    let (Some(a), Some(b)) = (out.find('{'), out.rfind('}')) else {
        return serde_json::Value::Null;
    };
    serde_json::from_str(&out[a..=b]).unwrap_or(serde_json::Value::Null)
}

const STATS: &str = "/run/gatewarden/datapath/stats";

/// Poll a guest JSON file once a second until `ok` holds for it.
fn wait_guest(
    q: &mut Qemu,
    path: &str,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = std::time::Instant::now() + gw_tests::fleet::WAIT;
    loop {
        let v = guest_json(q, path);
        if ok(&v) {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {v:#}\nvSwitch log:\n{}",
            q.run("tail -n 40 /tmp/gw-vswitch.log")
        );
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn qemu_gateway_carries_device_traffic_through_hypervisor_signed_chains() {
    if !netns::available() {
        return;
    }
    let img = image_dir("qemu-virt");
    // The controller trusts the image's vendor: the gateway enrolls endorsed.
    let ImageController {
        state,
        ctl,
        gateway_id: id,
        ..
    } = ImageController::start_endorsed(&img, "3s");

    let gw_tests::camera::DatapathVm { mut q, dev, cli } =
        gw_tests::camera::DatapathVm::boot(ctl.agent_addr);

    // The camera's policy: signed by the controller, pushed by the agent (the gateway enrolls
    // endorsed: the controller trusts the image's vendor), checked and stored by the
    // hypervisor, read by the vSwitch and each middlebox.
    let r = camera::set_camera_policy(&ctl, state.path(), &id).unwrap();
    assert_ne!(r["status"], "contraindicated", "{r:#}");
    let fw = camera::stage("firewall");
    wait_guest(
        &mut q,
        &format!("{STATS}/{fw}.json"),
        "the camera's chain",
        |v| !v.is_null(),
    );

    // 1. The traffic checks, through the hypervisor-signed chain (TCG is slow: generous
    //    timeouts).
    check_traffic(&dev, &cli, Duration::from_secs(20), String::new);
    let fw_stats = guest_json(&mut q, &format!("{STATS}/{fw}.json"));
    let ids_stats = guest_json(&mut q, &format!("{STATS}/{}.json", camera::stage("ids")));
    assert!(verdict_dropped(&fw_stats) >= 1, "{fw_stats:#}");
    assert!(verdict_dropped(&ids_stats) >= 1, "{ids_stats:#}");

    // 2. A rogue guest process steals the IDS's hop socket for one frame, then injects it
    //    genuine, replayed, forged, and at the wrong stages.
    q.send(&format!(
        "gw-dp-rogue --device {DEVICE_MAC} --direction to-device --stage 2 --timeout 60 \
         >/tmp/rogue.json 2>/tmp/rogue.err; echo rogue-ex''it=$?"
    ));
    let camera_addr: SocketAddr = format!("{DEVICE}:80").parse().unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (cli_name, stop) = (cli.name.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let _ = http_get(&cli_name, camera_addr, "/captured", Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(500));
            }
        })
    };
    q.expect("rogue-exit=");
    let code = q.expect("\n");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = traffic.join();
    assert!(
        code.trim() == "0",
        "gw-dp-rogue failed ({code:?}): {}",
        q.run("cat /tmp/rogue.err")
    );
    let summary = guest_json(&mut q, "/tmp/rogue.json");
    assert_eq!(
        summary["sent"].as_array().map(Vec::len),
        Some(5),
        "{summary}"
    );
    let ids = format!("{STATS}/{}.json", camera::stage("ids"));
    wait_guest(
        &mut q,
        &ids,
        "replayed and forged hops dropped at the IDS",
        |v| hop_dropped(v, "replay") >= 1 && hop_dropped(v, "bad_tag") >= 1,
    );
    let mon = format!("{STATS}/{}.json", camera::stage("monitor"));
    wait_guest(
        &mut q,
        &mon,
        "a hop-skipping packet dropped at the monitor",
        |v| hop_dropped(v, "wrong_hop") >= 1,
    );
    let vsw = format!("{STATS}/vswitch.json");
    wait_guest(
        &mut q,
        &vsw,
        "a repeated-hop packet dropped at the vSwitch",
        |v| hop_dropped(v, "wrong_hop") >= 1,
    );

    // 3. The counters reach the controller in the agent's signed report.
    wait_for(
        "the hop drops reported to the controller",
        gw_tests::fleet::WAIT,
        || {
            let d = ctl.get(&format!("/api/v1/gateways/{id}"));
            d["datapath"][0].as_u64().unwrap_or(0) >= 4
                && d["datapath"][1].as_u64().unwrap_or(0) > 20
        },
        || {
            format!(
                "{:#}",
                ctl.get(&format!("/api/v1/gateways/{id}"))["datapath"]
            )
        },
    );
    // Every stage's registration (HOP_KEY_REGISTER measured the vSwitch and each middlebox)
    // matches the image's reference values: the gateway is not contraindicated.
    let after = ctl.last_result_id(&id);
    let r = ctl.wait_result(&id, after, "a result with the chains running", |_| true);
    assert_ne!(r["status"], "contraindicated", "{r:#}");

    // 4. A program's identity is its whole code. Two copies of the firewall registered beside
    //    the chain, each for a device of its own: a byte-for-byte copy (the benign twin) reads
    //    as the genuine firewall; a copy changed in one byte of code it runs only on a panic
    //    (far from the call site, so it works as before) is named modified. Before
    //    2026-12-02 only the call-site page was measured and the patched copy read genuine.
    let host_fw = std::fs::read(firewall_elf()).unwrap();
    let (off, byte) = unrun_code_byte(&host_fw);
    let out = q.run(&format!(
        "fw=$(which gw-firewall); sha256sum $fw; cp $fw /tmp/fw-copy; cp $fw /tmp/fw-patched; \
         printf '\\{:03o}' | dd of=/tmp/fw-patched bs=1 seek={off} conv=notrunc 2>/dev/null; \
         cmp -s $fw /tmp/fw-copy; echo copy=$?; cmp -s $fw /tmp/fw-patched; echo patched=$?",
        byte ^ 1
    ));
    assert!(out.contains("copy=0") && out.contains("patched=1"), "{out}");
    assert!(
        out.contains(&hex::encode(vtpm::sha256(&host_fw))),
        "the image's firewall is not {}: {out}",
        firewall_elf().display()
    );
    let register = |q: &mut Qemu, bin: &str, mac: &str| {
        q.run(&format!(
            "/tmp/{bin} --device {mac} --transport hypervisor >/tmp/{bin}.log 2>&1 & true"
        ));
        let deadline = std::time::Instant::now() + gw_tests::fleet::WAIT;
        // Both chains of the device (the `''` keeps the echoed command from matching).
        while !q
            .run(&format!(
                "[ $(grep -c slot /tmp/{bin}.log) = 2 ] && echo regis''tered"
            ))
            .contains("registered")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "{bin} did not register: {}",
                q.run(&format!("cat /tmp/{bin}.log"))
            );
            std::thread::sleep(Duration::from_secs(1));
        }
    };
    let fw_modified = |r: &serde_json::Value| {
        gw_tests::fleet::reasons(r)
            .iter()
            .any(|x| x.starts_with("middlebox:firewall: modified"))
    };
    // A result challenged after the one in flight when the copy registered.
    let next_but_one = |what: &str| {
        let r = ctl.wait_result(&id, ctl.last_result_id(&id), what, |_| true);
        ctl.wait_result(&id, r["id"].as_i64().unwrap(), what, |_| true)
    };
    register(&mut q, "fw-copy", "02:00:00:00:00:71");
    let r = next_but_one("a result with the copy registered");
    assert!(
        r["status"] != "contraindicated" && !fw_modified(&r),
        "a genuine copy read as modified: {r:#}"
    );
    register(&mut q, "fw-patched", "02:00:00:00:00:72");
    let r = next_but_one("a result with the patched copy registered");
    assert_eq!(r["status"], "contraindicated", "{r:#}");
    assert!(fw_modified(&r), "the patched firewall was not named: {r:#}");
}

/// The guest's firewall binary, as the image holds it.
fn firewall_elf() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/aarch64-unknown-linux-musl/release/gw-firewall")
}

/// File offset and value of a byte of code the firewall runs only on a panic (inside
/// `core::panicking::panic_fmt`): changed, the copy works as before but measures differently.
fn unrun_code_byte(file: &[u8]) -> (u64, u8) {
    use elf::{ElfBytes, abi::PF_X, abi::PT_LOAD, abi::STT_FUNC, endian::AnyEndian};
    let elf = ElfBytes::<AnyEndian>::minimal_parse(file).expect("an ELF file");
    let (syms, names) = elf
        .symbol_table()
        .expect("a symbol table")
        .expect("the firewall is not stripped");
    let f = syms
        .iter()
        .find(|s| {
            s.st_symtype() == STT_FUNC
                && s.st_size > 8
                && names
                    .get(s.st_name as usize)
                    .is_ok_and(|n| n.contains("9panicking9panic_fmt"))
        })
        .expect("core::panicking::panic_fmt in the symbol table");
    let va = f.st_value + 4;
    let seg = elf
        .segments()
        .expect("program headers")
        .iter()
        .find(|p| {
            p.p_type == PT_LOAD
                && p.p_flags & PF_X != 0
                && (p.p_vaddr..p.p_vaddr + p.p_filesz).contains(&va)
        })
        .expect("panic_fmt in an executable segment");
    let off = va - seg.p_vaddr + seg.p_offset;
    (off, file[off as usize])
}
