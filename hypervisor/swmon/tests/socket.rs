//! The software monitor as a separate process: persistence, caller identification, hostile
//! input over the socket.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use ed25519_dalek::{Signer, SigningKey};
use gw_abi::{AbiError, Function, frame};
use gw_hcall::{Client, SocketTransport};
use vtpm::{Evidence, Expectation, PcrSelection, verify};

struct Swmon {
    child: Child,
    socket: PathBuf,
}

impl Swmon {
    fn start(dir: &Path, extra: &[&str]) -> Self {
        let socket = dir.join("monitor.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_gw-swmon"))
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .args(extra)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn gw-swmon");
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "gw-swmon did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { child, socket }
    }

    fn client(&self) -> Client<SocketTransport> {
        Client::new(SocketTransport::connect(&self.socket).unwrap())
    }
}

impl Drop for Swmon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn quotes_verify_and_say_insecure_and_state_persists() {
    let dir = tempfile::tempdir().unwrap();
    let sel = PcrSelection::from_indices([1, 8, 512]).unwrap();
    let mut last = None;
    let mut key0 = None;
    for boot in 1..=2u64 {
        let mon = Swmon::start(dir.path(), &[]);
        let mut c = mon.client();
        let v = c.version().unwrap();
        assert_eq!(v.identity.kind, vtpm::MonitorKind::InsecureSoftwareMonitor);
        // The device secret persists: same attestation key after a restart.
        assert_eq!(*key0.get_or_insert(v.attestation_key), v.attestation_key);
        c.pcr_extend(
            512,
            &[boot as u8; 32],
            vtpm::ComponentKind::MiddleboxConfig,
            "cfg",
            "1",
        )
        .unwrap();
        let nonce = [boot as u8; 32];
        let q = c.quote(&nonce, &sel).unwrap();
        let (log, overflowed) = c.event_log().unwrap();
        assert!(!overflowed);
        let ok = verify(
            &Evidence {
                quote: &q.quote,
                pcrs: &q.pcrs,
                log: &log,
            },
            &Expectation {
                key: &v.attestation_key,
                nonce: &nonce,
                selection: &sel,
                last,
                accept_format1: false,
            },
        )
        .unwrap();
        assert!(ok.is_insecure_software_monitor());
        assert_eq!(
            ok.body.counters.boot, boot,
            "boot counter persisted and incremented"
        );
        // PCR 1 holds the monitor's own measurement.
        assert_ne!(ok.pcrs[0].1, [0; 32]);
        last = Some(ok.body.counters);
    }
}

#[test]
fn policy_needs_the_controller_key() {
    let dir = tempfile::tempdir().unwrap();
    let controller = SigningKey::from_bytes(&[42; 32]);
    let hexkey = hex::encode(controller.verifying_key().to_bytes());
    let mon = Swmon::start(dir.path(), &["--controller-key", &hexkey]);
    let mut c = mon.client();
    let policy = br#"{"devices":[]}"#;
    let sig = controller.sign(&gw_abi::policy_signing_input(1, policy));
    c.policy_set(1, policy, &sig).unwrap();
    assert_eq!(c.policy_get().unwrap(), (1, policy.to_vec()));
    let forged = SigningKey::from_bytes(&[1; 32]).sign(&gw_abi::policy_signing_input(2, policy));
    assert_eq!(
        c.policy_set(2, policy, &forged).unwrap_err().abi(),
        Some(AbiError::BadSignature)
    );
    assert_eq!(
        c.policy_set(1, policy, &sig).unwrap_err().abi(),
        Some(AbiError::StalePolicy)
    );
}

#[test]
fn hostile_frames_get_errors_and_the_monitor_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mon = Swmon::start(dir.path(), &[]);
    let mut raw = UnixStream::connect(&mon.socket).unwrap();
    let read_status = |s: &mut UnixStream| {
        let mut h = [0u8; frame::RESPONSE_HEADER];
        s.read_exact(&mut h).unwrap();
        frame::parse_response_header(h).unwrap()
    };
    // Unknown function.
    raw.write_all(&frame::request_header(Function::Version, 0)[..4])
        .unwrap();
    raw.write_all(&0x99u16.to_le_bytes()).unwrap();
    assert_eq!(read_status(&mut raw), Err(AbiError::NotSupported));
    // Garbage bodies for every function.
    let mut seed = 1u64;
    for f in Function::ALL {
        for len in [0usize, 1, 7, 33, 300] {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 56) as u8
                })
                .collect();
            raw.write_all(&frame::request_header(f, body.len()))
                .unwrap();
            raw.write_all(&body).unwrap();
            let st = read_status(&mut raw);
            if let Ok(n) = st {
                let mut b = vec![0; n];
                raw.read_exact(&mut b).unwrap();
            }
        }
    }
    // An absurd length: answered, then the connection is closed.
    raw.write_all(&u32::MAX.to_le_bytes()).unwrap();
    assert_eq!(read_status(&mut raw), Err(AbiError::InvalidParameter));
    let mut rest = Vec::new();
    assert_eq!(raw.read_to_end(&mut rest).unwrap(), 0);
    // Others are still served.
    assert!(mon.client().version().is_ok());
}

#[test]
fn a_second_monitor_refuses_a_live_socket_and_replaces_a_stale_one() {
    let dir = tempfile::tempdir().unwrap();
    let mon = Swmon::start(dir.path(), &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_gw-swmon"))
        .arg("--socket")
        .arg(&mon.socket)
        .arg("--state-dir")
        .arg(dir.path().join("state2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"));
    drop(mon);
    // The socket file is left behind by the killed monitor; a new one takes its place.
    let mon = Swmon::start(dir.path(), &[]);
    assert!(mon.client().version().is_ok());
}
