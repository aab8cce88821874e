//! The attestation controller with real gateway agents and software monitors, on SQLite and on
//! PostgreSQL: enrollment, epoch attestation, signed policy, and each attack detected and named.

use ed25519_dalek::SigningKey;
use gw_tests::fleet::{
    ControllerProc, Db, Gateway, component, fresh_postgres, host_manifest, import, reasons,
};

fn vendor() -> SigningKey {
    SigningKey::from_bytes(&[0x42; 32])
}

fn status(r: &serde_json::Value) -> &str {
    r["status"].as_str().unwrap_or("")
}

/// The software monitor is the only caveat an honest host gateway has.
fn only_monitor_warning(r: &serde_json::Value) -> bool {
    status(r) == "warning" && reasons(r).iter().all(|x| x.starts_with("monitor:"))
}

/// Honest gateways, policy, and the attacks that change what runs on a gateway.
fn fleet_lifecycle(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(dir.path(), &db, &vendor(), "1s");
    let manifest = host_manifest("1");
    import(&ctl, &manifest.sign(&vendor()));

    let mut a = Gateway::new("gw-a", &vendor(), &ctl.command_key());
    let mut b = Gateway::new("gw-b", &vendor(), &ctl.command_key());
    a.start_agent(&ctl);
    b.start_agent(&ctl);

    // Endorsed by the trusted vendor: accepted, certified and attested every epoch.
    for g in [&a, &b] {
        let r = ctl.wait_result(&g.id, 0, "an honest result", only_monitor_warning);
        assert_eq!(component(&r, "hypervisor"), "affirming", "{r:#}");
        assert_eq!(component(&r, "agent"), "affirming", "{r:#}");
        assert_eq!(component(&r, "monitor"), "warning");
    }
    let gws = ctl.get("/api/v1/gateways");
    assert_eq!(gws.as_array().unwrap().len(), 2);
    assert!(
        gws[0]["agent_version"]
            .as_str()
            .unwrap()
            .starts_with("gw-agent")
    );

    // A device policy: compiled, signed, applied through POLICY_SET, measured; the next
    // quote proves it.
    let policy = dir.path().join("cam.json");
    std::fs::write(
        &policy,
        r#"{"name": "camera", "block": ["203.0.113.7"], "allow": [], "ids_rules": ["alert tcp any any -> any 23 (msg:\"telnet\"; sid:1000001; rev:1;)"]}"#,
    )
    .unwrap();
    let out = ctl.cli(&[
        "set-policy",
        "gw-a",
        "AA:BB:CC:00:00:01",
        policy.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("policy v1"));
    let after = ctl.last_result_id("gw-a");
    let r = ctl.wait_result("gw-a", after, "policy v1 proven", |r| {
        component(r, "policy") == "affirming" && component(r, "config:firewall") == "affirming"
    });
    assert!(only_monitor_warning(&r), "{r:#}");
    assert_eq!(component(&r, "config:ids"), "affirming");
    let ids = std::fs::read_to_string(a.config_dir().join("ids.conf")).unwrap();
    assert!(ids.contains("sid:1000001"), "{ids}");
    let detail = ctl.get("/api/v1/gateways/gw-a");
    assert_eq!(detail["policy"]["version"], 1);
    assert!(detail["policy"]["applied_at"].is_i64(), "{detail:#}");

    // Modified config: a rogue guest process loads (and measures) another firewall config.
    let bogus = vtpm::sha256(b"{\"devices\": {}}");
    let out = a.monitor.gwctl(&[
        "pcr",
        "extend",
        "512",
        &hex::encode(bogus),
        "--kind",
        "middlebox-config",
        "--name",
        "firewall",
    ]);
    assert!(out.status.success(), "{out:?}");
    let after = ctl.last_result_id("gw-a");
    let r = ctl.wait_result("gw-a", after, "the modified config named", |r| {
        status(r) == "contraindicated"
    });
    assert_eq!(component(&r, "config:firewall"), "contraindicated", "{r:#}");
    assert!(
        reasons(&r)
            .iter()
            .any(|x| x.starts_with("config:firewall: modified")),
        "{r:#}"
    );

    // Modified middlebox binary on gateway b: a changed copy of a known middlebox registers.
    let tampered = b.dir().join("gwctl");
    let mut bytes = std::fs::read(gw_tests::bin("gwctl")).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&tampered, bytes).unwrap();
    std::fs::set_permissions(
        &tampered,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = std::process::Command::new(&tampered)
        .env("GATEWARDEN_MONITOR", &b.monitor.socket)
        .args([
            "hop", "register", "--chain", "7", "--stage", "1", "--hops", "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let after = ctl.last_result_id("gw-b");
    let r = ctl.wait_result("gw-b", after, "the modified binary named", |r| {
        status(r) == "contraindicated"
    });
    assert_eq!(component(&r, "middlebox:gwctl"), "contraindicated", "{r:#}");
    assert!(
        reasons(&r)
            .iter()
            .any(|x| x.starts_with("middlebox:gwctl: modified")),
        "{r:#}"
    );

    // The genuine binary is affirmed (on gateway a, which has no tampered copy).
    let out = a.monitor.gwctl(&[
        "hop", "register", "--chain", "7", "--stage", "1", "--hops", "2",
    ]);
    assert!(out.status.success(), "{out:?}");
    let after = ctl.last_result_id("gw-a");
    let r = ctl.wait_result("gw-a", after, "the genuine middlebox", |r| {
        component(r, "middlebox:gwctl") == "affirming"
    });
    assert_eq!(component(&r, "config:firewall"), "contraindicated");

    // Unreachable is not failed: gateway b's agent stops answering.
    b.stop_agent();
    let after = ctl.last_result_id("gw-b");
    let r = ctl.wait_result("gw-b", after, "unreachable", |r| status(r) == "unreachable");
    assert!(reasons(&r).is_empty() || !reasons(&r).iter().any(|x| x.contains("contraindicated")));
    let summary = ctl.get("/api/v1/summary");
    assert_eq!(summary["by_status"]["unreachable"], 1, "{summary:#}");
    assert_eq!(summary["by_status"]["contraindicated"], 1, "{summary:#}");
    // It comes back when its agent does.
    b.start_agent(&ctl);
    let after = ctl.last_result_id("gw-b");
    ctl.wait_result("gw-b", after, "attested again", |r| {
        status(r) != "unreachable"
    });

    let metrics = ctl.request(hyper::Method::GET, "/metrics", None).1;
    assert!(metrics.contains("gatewarden_challenges_total"), "{metrics}");
    assert!(metrics.contains("gatewarden_results_total{status=\"contraindicated\"}"));
}

#[test]
fn fleet_lifecycle_on_sqlite() {
    fleet_lifecycle(Db::Sqlite);
}

#[test]
fn fleet_lifecycle_on_postgres() {
    fleet_lifecycle(Db::Postgres(fresh_postgres("lifecycle")));
}

/// Agent settings for a rogue agent played by the test, using gateway `g`'s identity.
fn rogue_settings(ctl: &ControllerProc, g: &Gateway) -> gw_agent::Settings {
    gw_agent::Settings {
        controller: ctl.agent_addr,
        server_name: "localhost".into(),
        ca_pem: std::fs::read(ctl.dir.join("ca.cert.pem")).unwrap(),
        endorsement: g.endorsement.clone(),
        state_dir: g.dir().join("rogue"),
        config_dir: g.dir().join("rogue-config"),
        report_every: std::time::Duration::from_secs(60),
        datapath_dir: None,
    }
}

/// The next challenge nonce from the controller (skipping anything else it sends).
async fn next_challenge<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> [u8; 32] {
    loop {
        match gw_proto::wire::read_msg::<_, gw_proto::wire::ControllerMsg>(r)
            .await
            .expect("controller message")
        {
            gw_proto::wire::ControllerMsg::Challenge { nonce } => return nonce,
            _ => continue,
        }
    }
}

/// A compromised gateway that holds a valid client certificate but not the monitor's keys
/// replays, reuses and forges evidence; each is caught and named.
#[test]
fn replayed_reused_and_forged_evidence_is_named() {
    use gw_proto::wire::{AgentMsg, PROTOCOL_VERSION, write_msg};
    let dir = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(dir.path(), &Db::Sqlite, &vendor(), "1s");
    // This test process plays the agent (it binds the agent key, so it is measured as the
    // agent): allow it, so that only the evidence tampering is under test.
    let mut manifest = host_manifest("1");
    let me = vtpm::sha256(&std::fs::read(std::env::current_exe().unwrap()).unwrap());
    manifest.allow("agent", &me);
    import(&ctl, &manifest.sign(&vendor()));
    let g = Gateway::new("gw-rogue", &vendor(), &ctl.command_key());
    let s = rogue_settings(&ctl, &g);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut mon = gw_hcall::open(gw_hcall::TransportKind::Socket, &g.monitor.socket).unwrap();
        gw_agent::ensure_enrolled(&s, &mut mon).await.unwrap();
        let tls = gw_agent::connect_enrolled(&s).await.unwrap();
        let (mut r, mut w) = tokio::io::split(tls);
        let hello = AgentMsg::Hello {
            protocol: PROTOCOL_VERSION,
            agent_version: "rogue".into(),
        };
        write_msg(&mut w, &hello).await.unwrap();
        let send = |ev: gw_proto::wire::EvidenceMsg| AgentMsg::Evidence(Box::new(ev));

        // 1. Honest.
        let n1 = next_challenge(&mut r).await;
        let ev1 = gw_agent::evidence(&mut mon, &n1).unwrap();
        write_msg(&mut w, &send(ev1.clone())).await.unwrap();
        // 2. The same evidence again: a replayed quote.
        let _n2 = next_challenge(&mut r).await;
        write_msg(&mut w, &send(ev1.clone())).await.unwrap();
        // 3. A fresh quote, but over the first nonce: a reused nonce.
        let _n3 = next_challenge(&mut r).await;
        let ev3 = gw_agent::evidence(&mut mon, &n1).unwrap();
        write_msg(&mut w, &send(ev3)).await.unwrap();
        // 4. A fresh quote with its signature altered: a forgery.
        let n4 = next_challenge(&mut r).await;
        let mut ev4 = gw_agent::evidence(&mut mon, &n4).unwrap();
        let last = ev4.quote.len() - 1;
        ev4.quote[last] ^= 0x01;
        write_msg(&mut w, &send(ev4)).await.unwrap();
        // 5. Honest again: the gateway recovers.
        let n5 = next_challenge(&mut r).await;
        let ev5 = gw_agent::evidence(&mut mon, &n5).unwrap();
        write_msg(&mut w, &send(ev5)).await.unwrap();
        let _ = next_challenge(&mut r).await;

        // Reports: one with a forged agent signature is dropped, a signed one is kept.
        let report = |mac: &str| {
            postcard::to_stdvec(&gw_proto::wire::GatewayReport {
                devices: vec![gw_proto::wire::Device {
                    mac: mac.into(),
                    ip: Some("192.0.2.10".into()),
                    hostname: Some("cam".into()),
                }],
                datapath: None,
            })
            .unwrap()
        };
        let forged = gw_proto::wire::SignedReport {
            body: report("02:00:00:00:00:66"),
            signature: ed25519_dalek::Signature::from_bytes(&[7; 64]),
        };
        write_msg(&mut w, &AgentMsg::Report(forged)).await.unwrap();
        let body = report("02:00:00:00:00:01");
        let signature = mon.agent_sign(&body).unwrap();
        write_msg(
            &mut w,
            &AgentMsg::Report(gw_proto::wire::SignedReport { body, signature }),
        )
        .await
        .unwrap();
        let _ = next_challenge(&mut r).await;
    });
    let devices = ctl.get("/api/v1/gateways/gw-rogue")["devices"].clone();
    assert_eq!(
        devices,
        serde_json::json!([{"mac": "02:00:00:00:00:01", "ip": "192.0.2.10", "hostname": "cam"}]),
        "only the agent-signed report counts"
    );
    let metrics = ctl.request(hyper::Method::GET, "/metrics", None).1;
    assert!(
        metrics.contains("gatewarden_reports_rejected_total 1"),
        "{metrics}"
    );

    let rows = ctl.get("/api/v1/gateways/gw-rogue/results?limit=10");
    let rows: Vec<&serde_json::Value> = rows.as_array().unwrap().iter().rev().collect();
    assert!(rows.len() >= 5, "{rows:#?}");
    assert!(only_monitor_warning(rows[0]), "{:#}", rows[0]);
    let named = |r: &serde_json::Value, what: &str| {
        assert_eq!(status(r), "contraindicated", "{r:#}");
        assert!(
            reasons(r)
                .iter()
                .any(|x| x.starts_with(&format!("evidence: {what}"))),
            "expected {what}: {r:#}"
        );
    };
    named(rows[1], "replayed quote");
    named(rows[2], "reused nonce");
    named(rows[3], "forged signature");
    assert!(only_monitor_warning(rows[4]), "{:#}", rows[4]);
}

/// A monitor whose boot counter was rolled back (its state restored from an old copy).
#[test]
fn counter_rollback_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(dir.path(), &Db::Sqlite, &vendor(), "1s");
    import(&ctl, &host_manifest("1").sign(&vendor()));
    let mut g = Gateway::new("gw-rollback", &vendor(), &ctl.command_key());
    g.start_agent(&ctl);
    ctl.wait_result(&g.id, 0, "an honest result", only_monitor_warning);
    // Reboot with the boot counter restored to its first value.
    std::fs::write(g.monitor.state_dir().join("boot-counter"), "0\n").unwrap();
    let key = ctl.command_key();
    g.monitor.restart(Some(&key));
    let after = ctl.last_result_id(&g.id);
    let r = ctl.wait_result(&g.id, after, "the rollback", |r| {
        status(r) == "contraindicated"
    });
    assert!(
        reasons(&r)
            .iter()
            .any(|x| x.starts_with("evidence: counter rollback")),
        "{r:#}"
    );
    // A genuine reboot (counter moves on) is accepted.
    g.monitor.restart(Some(&key));
    g.monitor.restart(Some(&key));
    let after = ctl.last_result_id(&g.id);
    ctl.wait_result(
        &g.id,
        after,
        "attested after a real reboot",
        only_monitor_warning,
    );
}

/// Unendorsed gateways wait for an operator; a known id with another key is refused.
#[test]
fn unendorsed_gateways_wait_and_key_swaps_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(dir.path(), &Db::Sqlite, &vendor(), "1s");
    import(&ctl, &host_manifest("1").sign(&vendor()));

    // Endorsed by a vendor the controller does not trust.
    let stranger = SigningKey::from_bytes(&[0x17; 32]);
    let mut u = Gateway::new("gw-unendorsed", &stranger, &ctl.command_key());
    u.start_agent(&ctl);
    let deadline = std::time::Instant::now() + gw_tests::fleet::WAIT;
    loop {
        let (code, body) = ctl.request(hyper::Method::GET, "/api/v1/gateways/gw-unendorsed", None);
        if code == 200 {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["gateway"]["enrollment"], "pending", "{v:#}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateway never appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    assert!(
        ctl.latest("gw-unendorsed").is_none(),
        "a pending gateway was attested"
    );
    assert_eq!(ctl.get("/api/v1/summary")["pending"], 1);
    let out = ctl.cli(&["gateways"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("pending"),
        "{out:?}"
    );
    // The operator approves; the waiting agent gets its certificate and is attested.
    let out = ctl.cli(&["approve", "gw-unendorsed"]);
    assert!(out.status.success(), "{out:?}");
    ctl.wait_result(
        "gw-unendorsed",
        0,
        "attested after approval",
        only_monitor_warning,
    );

    // Another machine claims an enrolled id (endorsed, even): refused, and named on the
    // gateway's record.
    let mut a = Gateway::new("gw-a", &vendor(), &ctl.command_key());
    a.start_agent(&ctl);
    ctl.wait_result("gw-a", 0, "an honest result", only_monitor_warning);
    let mut impostor = Gateway::new("gw-a", &vendor(), &ctl.command_key());
    impostor.start_agent(&ctl);
    let after = ctl.last_result_id("gw-a");
    let r = ctl.wait_result("gw-a", after, "the key swap", |r| {
        status(r) == "contraindicated"
    });
    assert!(
        reasons(&r)
            .iter()
            .any(|x| x.starts_with("identity: gateway key swap")),
        "{r:#}"
    );
    let deadline = std::time::Instant::now() + gw_tests::fleet::WAIT;
    let exit = loop {
        if let Some(s) = impostor.agent_exited() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "impostor agent kept running"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(!exit.success());
    // The genuine gateway keeps being attested.
    let after = ctl.last_result_id("gw-a");
    ctl.wait_result(
        "gw-a",
        after,
        "genuine gw-a still attested",
        only_monitor_warning,
    );
}

/// A policy not signed with the key the gateway's monitor was provisioned with is refused by
/// the agent (through the monitor), not applied, and the attestation says so.
#[test]
fn policy_not_signed_by_the_provisioned_controller_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(dir.path(), &Db::Sqlite, &vendor(), "1s");
    import(&ctl, &host_manifest("1").sign(&vendor()));
    // This gateway trusts another controller's key.
    let other = hex::encode(
        SigningKey::from_bytes(&[0x99; 32])
            .verifying_key()
            .as_bytes(),
    );
    let mut g = Gateway::new("gw-other", &vendor(), &other);
    g.start_agent(&ctl);
    ctl.wait_result(&g.id, 0, "an honest result", only_monitor_warning);
    let policy = dir.path().join("p.json");
    std::fs::write(&policy, r#"{"block": ["198.51.100.1"]}"#).unwrap();
    let out = ctl.cli(&[
        "set-policy",
        "gw-other",
        "aa:bb:cc:dd:ee:01",
        policy.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let deadline = std::time::Instant::now() + gw_tests::fleet::WAIT;
    loop {
        let d = ctl.get("/api/v1/gateways/gw-other");
        if let Some(e) = d["policy"]["error"].as_str() {
            assert!(e.contains("signature refused by the monitor"), "{e}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no policy outcome: {d:#}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(!g.config_dir().join("firewall.conf").exists());
    let out = g.monitor.gwctl(&["pcr", "read", "11"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&"0".repeat(64)),
        "{out:?}"
    );
    let after = ctl.last_result_id(&g.id);
    let r = ctl.wait_result(&g.id, after, "the unapplied policy", |r| {
        status(r) == "contraindicated"
    });
    assert!(
        reasons(&r)
            .iter()
            .any(|x| x == "policy: policy v1 was sent but is not running"),
        "{r:#}"
    );
}

/// Two controller replicas on one PostgreSQL database: a gateway connected to the first gets
/// the policy an operator sets through the second (the replicas tell each other through
/// LISTEN/NOTIFY), applies it, and its next quote proves it.
#[test]
fn a_policy_set_on_one_replica_reaches_a_gateway_connected_to_another() {
    let db = Db::Postgres(fresh_postgres("replicas"));
    let dir = tempfile::tempdir().unwrap();
    let one = ControllerProc::start(dir.path(), &db, &vendor(), "1s");
    // The second replica shares the state directory's keys (CA, command key) and the database.
    let two = ControllerProc::start(dir.path(), &db, &vendor(), "1s");
    import(&one, &host_manifest("1").sign(&vendor()));
    let mut g = Gateway::new("gw-replicas", &vendor(), &one.command_key());
    g.start_agent(&one);
    one.wait_result(&g.id, 0, "an honest result", only_monitor_warning);

    let policy = dir.path().join("cam.json");
    std::fs::write(&policy, r#"{"name": "camera", "block": ["203.0.113.9"]}"#).unwrap();
    let out = two.cli(&[
        "set-policy",
        &g.id,
        "AA:BB:CC:00:00:09",
        policy.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{out:?}");
    let after = one.last_result_id(&g.id);
    let r = one.wait_result(&g.id, after, "the policy proven", |r| {
        component(r, "policy") == "affirming" && component(r, "config:firewall") == "affirming"
    });
    assert!(only_monitor_warning(&r), "{r:#}");
    let fw = std::fs::read_to_string(g.config_dir().join("firewall.conf")).unwrap();
    assert!(fw.contains("203.0.113.9"), "{fw}");
    // Both replicas see it applied.
    for ctl in [&one, &two] {
        let detail = ctl.get(&format!("/api/v1/gateways/{}", g.id));
        assert!(detail["policy"]["applied_at"].is_i64(), "{detail:#}");
    }
}

/// Wait until `g`'s agent has exited (the controller refused it); returns its status.
fn wait_exit(g: &mut Gateway) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + gw_tests::fleet::WAIT;
    loop {
        if let Some(s) = g.agent_exited() {
            return s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{}: the agent kept running",
            g.id
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn revoked_by_operator(r: &serde_json::Value, why: &str) -> bool {
    status(r) == "contraindicated"
        && reasons(r)
            .iter()
            .any(|x| x == &format!("identity: revoked by the operator: {why}"))
}

/// Revocation: every image built before the isolation fixes may have leaked its keys, so an
/// operator revokes one gateway (CLI) and every endorsement of a vendor key (API). Revoked
/// gateways lose their session, are named contraindicated with the reason, and are never served
/// or enrolled again; a new enrollment endorsed by the revoked key is refused. Gateways not
/// revoked (the same vendor's before its key is revoked, another vendor's after) keep being
/// attested.
fn revocation(db: Db) {
    let dir = tempfile::tempdir().unwrap();
    let ctl = ControllerProc::start(dir.path(), &db, &vendor(), "1s");
    import(&ctl, &host_manifest("1").sign(&vendor()));
    let other = SigningKey::from_bytes(&[0x43; 32]);
    let other_hex = hex::encode(other.verifying_key().as_bytes());
    let out = ctl.cli(&["trust-vendor", &other_hex, "other-vendor"]);
    assert!(out.status.success(), "{out:?}");

    let mut a = Gateway::new("gw-a", &vendor(), &ctl.command_key());
    let mut b = Gateway::new("gw-b", &vendor(), &ctl.command_key());
    let mut c = Gateway::new("gw-c", &other, &ctl.command_key());
    for g in [&mut a, &mut b, &mut c] {
        g.start_agent(&ctl);
    }
    for g in ["gw-a", "gw-b", "gw-c"] {
        ctl.wait_result(g, 0, "an honest result", only_monitor_warning);
    }

    // One gateway, by the CLI.
    let why_a = "image built before the DMA isolation fix";
    let out = ctl.cli(&["revoke", "gw-a", "--reason", why_a]);
    assert!(out.status.success(), "{out:?}");
    ctl.wait_result("gw-a", 0, "the revocation", |r| {
        revoked_by_operator(r, why_a)
    });
    assert!(!wait_exit(&mut a).success());
    let v = ctl.get("/api/v1/gateways/gw-a");
    assert_eq!(v["gateway"]["enrollment"], "revoked", "{v:#}");
    assert_eq!(v["gateway"]["revoked_reason"], why_a);
    // Its agent comes back (a reboot): refused, and nothing is attested for it.
    let last = ctl.last_result_id("gw-a");
    a.start_agent(&ctl);
    assert!(!wait_exit(&mut a).success());
    assert_eq!(
        ctl.last_result_id("gw-a"),
        last,
        "a revoked gateway was attested"
    );
    // The same vendor's other gateway is untouched.
    let after = ctl.last_result_id("gw-b");
    ctl.wait_result("gw-b", after, "gw-b still attested", only_monitor_warning);

    // Every endorsement of the vendor key, by the API.
    let key = hex::encode(vendor().verifying_key().as_bytes());
    let why_v = "vendor signing key leaked";
    let (code, body) = ctl.request(
        hyper::Method::POST,
        &format!("/api/v1/vendors/{key}/revoke"),
        Some(&format!(r#"{{"reason": "{why_v}"}}"#)),
    );
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["gateways"],
        serde_json::json!(["gw-b"]),
        "gw-a was revoked already"
    );
    let why_b = format!("its vendor's endorsements were revoked: {why_v}");
    ctl.wait_result("gw-b", 0, "the vendor revocation", |r| {
        revoked_by_operator(r, &why_b)
    });
    assert!(!wait_exit(&mut b).success());
    let vendors = ctl.get("/api/v1/vendors");
    let revoked = vendors
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["key"] == key)
        .unwrap();
    assert!(revoked["revoked_at"].is_i64(), "{vendors:#}");
    assert_eq!(revoked["revoked_reason"], why_v);
    // Another vendor's gateway is untouched.
    let after = ctl.last_result_id("gw-c");
    ctl.wait_result("gw-c", after, "gw-c still attested", only_monitor_warning);

    // A new gateway endorsed by the revoked key is refused at enrollment, never listed.
    let mut d = Gateway::new("gw-d", &vendor(), &ctl.command_key());
    d.start_agent(&ctl);
    assert!(!wait_exit(&mut d).success());
    let (code, _) = ctl.request(hyper::Method::GET, "/api/v1/gateways/gw-d", None);
    assert_eq!(
        code, 404,
        "an enrollment endorsed by a revoked key was recorded"
    );

    // What the API refuses.
    let post = |path: &str, body: &str| ctl.request(hyper::Method::POST, path, Some(body));
    assert_eq!(
        post("/api/v1/gateways/gw-a/revoke", r#"{"reason": "again"}"#).0,
        409
    );
    assert_eq!(
        post("/api/v1/gateways/nope/revoke", r#"{"reason": "x"}"#).0,
        404
    );
    assert_eq!(
        post("/api/v1/gateways/gw-c/revoke", r#"{"reason": "  "}"#).0,
        400
    );
    assert_eq!(post("/api/v1/gateways/gw-c/revoke", "not json").0, 400);
    assert_eq!(
        post(
            &format!("/api/v1/vendors/{}/revoke", "00".repeat(32)),
            r#"{"reason": "x"}"#
        )
        .0,
        400,
        "not a valid key"
    );
    let stranger = hex::encode(
        SigningKey::from_bytes(&[0x55; 32])
            .verifying_key()
            .as_bytes(),
    );
    assert_eq!(
        post(
            &format!("/api/v1/vendors/{stranger}/revoke"),
            r#"{"reason": "x"}"#
        )
        .0,
        404
    );
    // A revoked key cannot be trusted again.
    let (code, body) = post(
        "/api/v1/vendors",
        &format!(r#"{{"key": "{key}", "name": "again"}}"#),
    );
    assert_eq!(code, 409, "{body}");
    // gw-c was never touched by any of that.
    let after = ctl.last_result_id("gw-c");
    ctl.wait_result("gw-c", after, "gw-c still attested", only_monitor_warning);
}

#[test]
fn revocation_on_sqlite() {
    revocation(Db::Sqlite);
}

#[test]
fn revocation_on_postgres() {
    revocation(Db::Postgres(fresh_postgres("revocation")));
}
