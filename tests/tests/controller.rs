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
    assert!(gws[0]["agent_version"].as_str().unwrap().starts_with("gw-agent"));

    // A device policy: compiled, signed, applied through POLICY_SET, measured; the next
    // quote proves it.
    let policy = dir.path().join("cam.json");
    std::fs::write(
        &policy,
        r#"{"name": "camera", "block": ["203.0.113.7"], "allow": [], "ids_rules": ["alert tcp any any -> any 23 (msg:\"telnet\"; sid:1000001; rev:1;)"]}"#,
    )
    .unwrap();
    let out = ctl.cli(&["set-policy", "gw-a", "AA:BB:CC:00:00:01", policy.to_str().unwrap()]);
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
        "pcr", "extend", "512", &hex::encode(bogus), "--kind", "middlebox-config", "--name", "firewall",
    ]);
    assert!(out.status.success(), "{out:?}");
    let after = ctl.last_result_id("gw-a");
    let r = ctl.wait_result("gw-a", after, "the modified config named", |r| {
        status(r) == "contraindicated"
    });
    assert_eq!(component(&r, "config:firewall"), "contraindicated", "{r:#}");
    assert!(
        reasons(&r).iter().any(|x| x.starts_with("config:firewall: modified")),
        "{r:#}"
    );

    // Modified middlebox binary on gateway b: a changed copy of a known middlebox registers.
    let tampered = b.dir().join("gwctl");
    let mut bytes = std::fs::read(gw_tests::bin("gwctl")).unwrap();
    bytes.extend_from_slice(b"tampered");
    std::fs::write(&tampered, bytes).unwrap();
    std::fs::set_permissions(&tampered, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    let out = std::process::Command::new(&tampered)
        .env("GATEWARDEN_MONITOR", &b.monitor.socket)
        .args(["hop", "register", "--chain", "7", "--stage", "1", "--hops", "2"])
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
    let out = a
        .monitor
        .gwctl(&["hop", "register", "--chain", "7", "--stage", "1", "--hops", "2"]);
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
    ctl.wait_result("gw-b", after, "attested again", |r| status(r) != "unreachable");

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
