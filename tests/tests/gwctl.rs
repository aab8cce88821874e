//! `gwctl` as a user runs it, against the software monitor.

use gw_tests::{SoftwareMonitor, bin};
use std::process::Command;
use vtpm::{Evidence, Expectation, PcrSelection};

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "gwctl failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&ok(o)).expect("gwctl --json prints JSON")
}

#[test]
fn extend_read_quote_and_verify_on_the_host() {
    let mon = SoftwareMonitor::start();
    let digest = "11".repeat(32);
    let extended = ok(&mon.gwctl(&["pcr", "extend", "600", &digest, "--name", "firewall.json"]));
    // Independent computation of SHA-256(0^32 || 0x11^32).
    let expect = {
        let mut buf = vec![0u8; 32];
        buf.extend_from_slice(&[0x11; 32]);
        hex::encode(vtpm::sha256(&buf))
    };
    assert_eq!(extended.trim(), expect);
    assert_eq!(ok(&mon.gwctl(&["pcr", "read", "600"])).trim(), expect);

    let version = json(&mon.gwctl(&["--json", "version"]));
    assert_eq!(version["insecure"], true);
    let key_bytes: [u8; 32] = hex::decode(version["attestation_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes).unwrap();

    let nonce = "ab".repeat(32);
    let q = json(&mon.gwctl(&["--json", "quote", "--nonce", &nonce, "--pcrs", "0-2,600"]));
    assert_eq!(q["insecure"], true);
    let log = json(&mon.gwctl(&["--json", "log"]));
    // Re-verify on the host from what gwctl printed, as a remote verifier would.
    let quote = hex::decode(q["quote"].as_str().unwrap()).unwrap();
    let pcrs: Vec<[u8; 32]> = q["pcrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            hex::decode(p["value"].as_str().unwrap())
                .unwrap()
                .try_into()
                .unwrap()
        })
        .collect();
    let events = gw_tests::events_from_json(&log);
    let sel = PcrSelection::from_indices([0, 1, 2, 600]).unwrap();
    let nonce_b: [u8; 32] = [0xab; 32];
    let v = vtpm::verify(
        &Evidence {
            quote: &quote,
            pcrs: &pcrs,
            log: &events,
        },
        &Expectation {
            key: &key,
            nonce: &nonce_b,
            selection: &sel,
            last: None,
            accept_format1: false,
        },
    )
    .unwrap();
    assert!(v.is_insecure_software_monitor());
    // A verifier with a different nonce refuses the same evidence.
    assert_eq!(
        vtpm::verify(
            &Evidence {
                quote: &quote,
                pcrs: &pcrs,
                log: &events
            },
            &Expectation {
                key: &key,
                nonce: &[0; 32],
                selection: &sel,
                last: None,
                accept_format1: false,
            },
        ),
        Err(vtpm::VerifyError::NonceMismatch)
    );
}

#[test]
fn user_errors_are_clear() {
    let mon = SoftwareMonitor::start();
    let cases: &[(&[&str], &str)] = &[
        (&["pcr", "extend", "1", &"00".repeat(32)], "denied"),
        (&["pcr", "extend", "600", "xyz"], "not hex"),
        (&["pcr", "extend", "600", "abcd"], "64 hex digits"),
        (&["pcr", "read", "5000"], "invalid parameter"),
        (
            &["quote", "--nonce", "00", "--pcrs", "0-1"],
            "64 hex digits",
        ),
        (
            &["quote", "--nonce", &"00".repeat(32), "--pcrs", "9-3"],
            "reversed",
        ),
        (&["policy"], "no policy has been set"),
    ];
    for (args, needle) in cases {
        let o = mon.gwctl(args);
        assert!(!o.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: expected {needle:?} in {err}"
        );
    }
    // No monitor at all.
    let o = Command::new(bin("gwctl"))
        .args(["--monitor", "/nonexistent/monitor.sock", "version"])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("is the monitor running?"));
    // --help documents every command.
    let help = String::from_utf8(
        Command::new(bin("gwctl"))
            .arg("--help")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    for cmd in ["version", "pcr", "quote", "log", "policy"] {
        assert!(help.contains(cmd), "--help lacks {cmd}");
    }
}
