//! The gateway in QEMU under the hypervisor, attested by a real controller: enrollment of an
//! unendorsed gateway (pending until approved), appraisal against the image's signed reference
//! manifest, a policy applied through the hypervisor's POLICY_SET, and a modified config named;
//! reboots: attested again with a later clock, a counter rollback with a clock set back; a rogue
//! process in the guest replaying, reusing and forging evidence and hiding or relabelling a
//! measurement in the log, each named, and enrolling the
//! gateway's id with keys of its own (a key swap), refused; a policy signed by a controller the
//! image was not provisioned for, refused by the hypervisor and named.

use gw_tests::{
    fleet::{ControllerProc, ImageController, component, reasons},
    qemu::{Qemu, image_dir},
};

#[test]
fn gateway_in_qemu_is_attested_and_a_modified_config_is_named() {
    let img = image_dir("qemu-virt");
    // The controller the image was provisioned for (its keys), with a fresh database; it does
    // not trust the image's vendor yet.
    let other = hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[0x33; 32])
            .verifying_key()
            .as_bytes(),
    );
    let ImageController {
        state,
        ctl,
        gateway_id: id,
        vendor,
    } = ImageController::start(&img, Some(&other), "3s");

    let mut q = boot_with_agent(&ctl);

    // Unendorsed (as far as this controller knows): pending, not attested, until approved.
    let deadline = std::time::Instant::now() + gw_tests::fleet::WAIT;
    loop {
        let (code, body) = ctl.request(hyper::Method::GET, &format!("/api/v1/gateways/{id}"), None);
        if code == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["gateway"]["enrollment"], "pending", "{v:#}");
            assert_eq!(v["gateway"]["monitor"], "hypervisor", "{v:#}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never asked to enroll; guest agent log:\n{}",
            q.run("cat /tmp/gw-agent.log")
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    assert!(ctl.latest(&id).is_none());
    // The operator trusts the vendor (for its manifests), imports the image's reference
    // manifest and approves the gateway.
    let out = ctl.cli(&["trust-vendor", vendor.trim(), "image-vendor"]);
    assert!(out.status.success(), "{out:?}");
    let out = ctl.cli(&[
        "import-manifest",
        img.join("reference.json").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let out = ctl.cli(&["approve", &id]);
    assert!(out.status.success(), "{out:?}");

    // Attested: every measured component matches the signed reference values, the device tree
    // too (measured without its per-boot seeds; the image's manifest lists QEMU's tree).
    let r = gw_tests::fleet::wait_boot_chain_affirmed(&ctl, &id, &mut q);
    assert_eq!(r["status"], "affirming", "{r:#}");
    assert!(reasons(&r).is_empty(), "{r:#}");

    // The agent's device inventory (from the guest's ARP table), signed through the
    // hypervisor's AGENT_SIGN and checked by the controller: QEMU's forward is a neighbour.
    let deadline = std::time::Instant::now() + gw_tests::fleet::WAIT;
    loop {
        let d = ctl.get(&format!("/api/v1/gateways/{id}"));
        let seen = d["devices"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|dev| dev["ip"] == "10.0.2.100");
        if seen {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no signed device report: {d:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }

    // A device policy: signed by the controller, checked by the hypervisor (POLICY_SET with the
    // provisioned key), measured, and proven by the next quote.
    let policy = state.path().join("policy.json");
    std::fs::write(&policy, r#"{"name": "thermostat", "block": ["192.0.2.1"]}"#).unwrap();
    let out = ctl.cli(&[
        "set-policy",
        &id,
        "02:00:00:00:00:01",
        policy.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let after = ctl.last_result_id(&id);
    let r = ctl.wait_result(&id, after, "the policy proven", |r| {
        component(r, "policy") == "affirming" && component(r, "config:firewall") == "affirming"
    });
    assert_eq!(r["status"], "affirming", "{r:#}");
    let fw = q.run("cat /run/gatewarden/config/firewall.conf");
    assert!(fw.contains("192.0.2.1"), "{fw}");

    // A rogue process in the guest loads another firewall config: contraindicated, named.
    let r = gw_tests::fleet::rogue_firewall_config(&mut q, &ctl, &id);
    assert!(
        reasons(&r)
            .iter()
            .any(|x| x.starts_with("config:firewall: modified")),
        "{r:#}"
    );
}

/// Boot the qemu-virt image against `ctl` and wait for the agent and a shell prompt.
fn boot_with_agent(ctl: &ControllerProc) -> Qemu {
    let mut q = Qemu::boot_virt_with_controller(2, ctl.agent_addr);
    q.expect("gatewarden-guest: agent started");
    q.expect("# ");
    q
}

/// Whether a result's quote verified (it then carries the quote's counters).
fn verified(r: &serde_json::Value) -> bool {
    r["ear"]["gw.counters"].is_array()
}

/// The first line of `out` that is a JSON document (a test tool's summary).
fn json_line(out: &str) -> serde_json::Value {
    out.lines()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .unwrap_or_else(|| panic!("no JSON summary in: {out}"))
}

/// The quote counters `(boot, quote)` of a verified result.
fn counters(r: &serde_json::Value) -> (u64, u64) {
    let c = &r["ear"]["gw.counters"];
    (c[0].as_u64().unwrap(), c[1].as_u64().unwrap())
}

/// The hypervisor's boot counter is the board clock's seconds at boot: a rebooted gateway is
/// attested again (its counters move forward though the quote counter starts over), and a
/// board whose clock was set back boots with a smaller counter, which the controller names a
/// counter rollback, as it would a restored vTPM state.
#[test]
fn a_rebooted_gateway_is_attested_again_and_a_clock_set_back_reads_as_rollback() {
    let img = image_dir("qemu-virt");
    let ImageController {
        state: _state,
        ctl,
        gateway_id: id,
        ..
    } = ImageController::start_endorsed(&img, "2s");
    let boot = |extra: &[&str]| {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut q = Qemu::boot_virt_with(2, ctl.agent_addr, &extra);
        q.expect("gatewarden-hv: boot counter ");
        q.expect("gatewarden-guest: agent started");
        q
    };

    let q = boot(&[]);
    let first = ctl.wait_result(&id, 0, "a verified result", verified);
    assert_eq!(first["status"], "affirming", "{first:#}");
    drop(q);

    // Reboot (a new QEMU: same image, same keys, a later clock).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let q = boot(&[]);
    let after = ctl.last_result_id(&id);
    let again = ctl.wait_result(&id, after, "a verified result after the reboot", verified);
    assert_eq!(again["status"], "affirming", "{again:#}");
    assert!(
        counters(&again).0 > counters(&first).0,
        "boot counter did not grow: {:?} then {:?}",
        counters(&first),
        counters(&again)
    );
    drop(q);

    // The board's clock set back (QEMU's RTC base in 2020): the boot counter goes backwards.
    let _q = boot(&["-rtc", "base=2020-01-01T00:00:00"]);
    let after = ctl.last_result_id(&id);
    let r = ctl.wait_result(&id, after, "the rollback", |r| {
        r["status"] == "contraindicated"
    });
    assert!(
        reasons(&r)
            .iter()
            .any(|x| x.starts_with("evidence: counter rollback")),
        "{r:#}"
    );
}

/// A compromised gateway: root in the guest holds the agent's TLS certificate and the call
/// window, not the hypervisor's keys. `gw-agent-rogue` replays a quote, reuses a nonce, forges a
/// quote signature, hides a measurement behind a `Reset` and relabels one, forges a report signature, and tries to sign a report as the trusted agent; the
/// controller names each attack and recovers on honest evidence, the hypervisor refuses to sign.
#[test]
fn a_rogue_process_in_the_guest_replays_reuses_and_forges_evidence_and_each_is_named() {
    let img = image_dir("qemu-virt");
    let ImageController {
        state: _state,
        ctl,
        gateway_id: id,
        ..
    } = ImageController::start_endorsed(&img, "2s");
    let mut q = boot_with_agent(&ctl);
    // The real agent has enrolled, signed its first report (binding the trusted agent to its
    // program) and answered a challenge.
    let first = ctl.wait_result(&id, 0, "a verified result", verified);
    assert_eq!(first["status"], "affirming", "{first:#}");
    let first_id = first["id"].as_i64().unwrap();

    let out = q.run(
        "kill $(pidof gw-agent); . /etc/gatewarden/agent.conf; gw-agent-rogue --controller $GW_CONTROLLER --server-name $GW_SERVER_NAME; echo rc=$?",
    );
    assert!(out.contains("rc=0"), "{out}");
    let summary = json_line(&out);
    assert_eq!(
        summary["sent"],
        serde_json::json!([
            "honest",
            "replayed quote",
            "reused nonce",
            "forged signature",
            "hidden event",
            "relabelled event",
            "honest",
            "forged report"
        ]),
        "{summary}"
    );
    let sign = summary["agent_sign"].as_str().unwrap();
    assert!(
        sign.contains("denied (code -3)"),
        "the hypervisor signed for a rogue: {sign}"
    );

    // Results after the real agent's: in order, honest, each attack named, honest again.
    let rows = ctl.get(&format!("/api/v1/gateways/{id}/results?limit=20"));
    let mut rows: Vec<&serde_json::Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["id"].as_i64().unwrap() > first_id)
        .collect();
    rows.sort_by_key(|r| r["id"].as_i64());
    let named = |what: &str| {
        rows.iter().position(|r| {
            r["status"] == "contraindicated"
                && reasons(r)
                    .iter()
                    .any(|x| x.starts_with(&format!("evidence: {what}")))
        })
    };
    let replayed = named("replayed quote").unwrap_or_else(|| panic!("{rows:#?}"));
    let reused = named("reused nonce").unwrap_or_else(|| panic!("{rows:#?}"));
    let forged = named("forged signature").unwrap_or_else(|| panic!("{rows:#?}"));
    assert!(replayed < reused && reused < forged, "{rows:#?}");
    // The hidden event changes which PCRs the log touches, so the quote's selection is not
    // the one the log asks for; the relabelled event no longer matches the quote's log digest.
    let after = |from: usize, what: &str| {
        (from + 1..rows.len()).find(|&i| {
            rows[i]["status"] == "contraindicated"
                && reasons(rows[i])
                    .iter()
                    .any(|x| x.starts_with(&format!("evidence: {what}")))
        })
    };
    let hidden = after(
        forged,
        "quote PCR selection differs from the requested selection",
    )
    .unwrap_or_else(|| panic!("the hidden event was not named: {rows:#?}"));
    let relabelled = after(hidden, "event log does not match the quoted log digest")
        .unwrap_or_else(|| panic!("the relabelled event was not named: {rows:#?}"));
    assert!(
        rows[relabelled + 1..]
            .iter()
            .any(|r| verified(r) && r["status"] == "affirming"),
        "no honest result after the forgery: {rows:#?}"
    );
    // The forged report was dropped: its device never shows, and it is counted.
    let devices = ctl.get(&format!("/api/v1/gateways/{id}"))["devices"].to_string();
    assert!(!devices.contains("02:00:00:00:00:66"), "{devices}");
    let metrics = ctl.request(hyper::Method::GET, "/metrics", None).1;
    assert!(
        metrics
            .lines()
            .any(|l| l.trim() == "gatewarden_reports_rejected_total 1"),
        "{metrics}"
    );

    // A key swap: a process enrolls the gateway's id with attestation and agent keys of its own,
    // as a cloned or replaced gateway would. Refused, recorded, and the enrolled keys stay.
    let before = ctl.last_result_id(&id);
    let out = q.run(
        ". /etc/gatewarden/agent.conf; gw-agent-rogue --swap-key --controller $GW_CONTROLLER --server-name $GW_SERVER_NAME; echo rc=$?",
    );
    assert!(out.contains("rc=0"), "{out}");
    let swap = json_line(&out);
    assert!(
        swap["enrollment"]
            .as_str()
            .is_some_and(|e| e.contains("gateway key swap")),
        "the controller did not refuse the swapped keys: {swap}"
    );
    let r = ctl.wait_result(&id, before, "the key swap", |r| {
        reasons(r)
            .iter()
            .any(|x| x.starts_with("identity: gateway key swap"))
    });
    assert_eq!(r["status"], "contraindicated", "{r:#}");
    let enrolled = ctl.get(&format!("/api/v1/gateways/{id}"))["gateway"]["attestation_key"].clone();
    assert_ne!(enrolled, swap["swapped_attestation_key"], "{enrolled}");

    // The real agent back (its next verified result, below, is under the enrolled key), and two programs that are not the image's middleboxes taking
    // data-path stages: one claiming to be the firewall, one under a name no manifest lists.
    // The hypervisor measures each (HOP_KEY_REGISTER) and the next quote shows them.
    let out = q.run(
        ". /etc/gatewarden/agent.conf; gw-agent --controller $GW_CONTROLLER --server-name $GW_SERVER_NAME --transport hypervisor >/tmp/gw-agent.log 2>&1 & \
         gwctl --transport hypervisor hop register --chain 4242 --stage 1 --hops 2 --name firewall; \
         gwctl --transport hypervisor hop register --chain 4243 --stage 1 --hops 2 --name evil; echo rc=$?",
    );
    assert!(out.contains("rc=0"), "{out}");
    let after = ctl.last_result_id(&id);
    let r = ctl.wait_result(&id, after, "the foreign middleboxes named", |r| {
        verified(r) && component(r, "middlebox:evil") != "absent"
    });
    assert_eq!(r["status"], "contraindicated", "{r:#}");
    let why = reasons(&r);
    assert!(
        why.iter()
            .any(|x| x.starts_with("middlebox:firewall: modified")),
        "{r:#}"
    );
    assert!(
        why.iter()
            .any(|x| x.starts_with("middlebox:evil: unknown middlebox")),
        "{r:#}"
    );
}

/// A controller the image was not provisioned for (its command key differs) sets a policy: the
/// hypervisor's POLICY_SET refuses the signature (the command key is fixed in the hypervisor at
/// provisioning, out of the guest's reach), the agent applies and measures nothing and says so,
/// and the next quote shows no policy running, which the controller names.
#[test]
fn a_policy_not_signed_by_the_provisioned_controller_is_refused_by_the_hypervisor() {
    let img = image_dir("qemu-virt");
    let impostor = ed25519_dalek::SigningKey::from_bytes(&[0x5a; 32]);
    let ImageController {
        state,
        ctl,
        gateway_id: id,
        ..
    } = ImageController::start_endorsed_signing_with(&img, "2s", &impostor);
    let mut q = boot_with_agent(&ctl);
    ctl.wait_result(&id, 0, "a verified result", verified);

    let policy = state.path().join("policy.json");
    std::fs::write(&policy, r#"{"name": "plug", "block": ["192.0.2.7"]}"#).unwrap();
    let out = ctl.cli(&[
        "set-policy",
        &id,
        "02:00:00:00:00:07",
        policy.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let deadline = std::time::Instant::now() + gw_tests::fleet::WAIT;
    loop {
        let d = ctl.get(&format!("/api/v1/gateways/{id}"));
        if let Some(e) = d["policy"]["error"].as_str() {
            assert!(e.contains("signature refused by the monitor"), "{e}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no policy outcome: {d:#}\nguest agent log:\n{}",
            q.run("cat /tmp/gw-agent.log")
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    // Nothing applied, nothing measured.
    let fw = q.run("cat /run/gatewarden/config/firewall.conf 2>&1; echo end");
    assert!(!fw.contains("192.0.2.7"), "{fw}");
    let pcr = q.run("gwctl --transport hypervisor pcr read 11");
    assert!(pcr.contains(&"0".repeat(64)), "{pcr}");
    let after = ctl.last_result_id(&id);
    let r = ctl.wait_result(&id, after, "the unapplied policy", |r| {
        r["status"] == "contraindicated"
    });
    assert!(
        reasons(&r)
            .iter()
            .any(|x| x == "policy: policy v1 was sent but is not running"),
        "{r:#}"
    );
}
