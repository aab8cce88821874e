//! Key slots and the trusted agent are bound to the measured program that claimed them: a
//! second program (`gwctl`, a different executable from this test) is refused, and what it
//! may do is measured where the verifier sees it.

use gw_abi::AbiError;
use gw_hcall::{Client, SocketTransport};
use gw_tests::SoftwareMonitor;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_rogue_program_cannot_use_or_steal_slots_or_the_agent() {
    let mon = SoftwareMonitor::start();
    let mut me = Client::new(SocketTransport::connect(&mon.socket).unwrap());
    let (slot, pcr) = me.hop_register(9, 0, 2, "vswitch", "1").unwrap();
    me.agent_sign(b"first report").unwrap();
    let denied = format!("code {}", AbiError::Denied.code());

    // Taking over the vSwitch's stage: refused, the program differs.
    let o = mon.gwctl(&[
        "hop", "tag", "--chain", "9", "--stage", "0", "--hops", "2", "00ff",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains(&denied),
        "{}",
        stderr(&o)
    );
    // The agent key is bound to this test program.
    std::fs::write(mon.socket.with_extension("report"), b"forged").unwrap();
    let report = mon.socket.with_extension("report");
    let o = mon.gwctl(&["agent", "sign", report.to_str().unwrap()]);
    assert!(
        !o.status.success() && stderr(&o).contains(&denied),
        "{}",
        stderr(&o)
    );
    // The policy is readable by anyone (integrity-protected, not secret: docs/abi.md); none
    // is stored yet, and the rogue is told so rather than denied.
    let o = mon.gwctl(&["policy"]);
    assert!(
        !stderr(&o).contains(&denied) && stderr(&o).contains("no policy has been set"),
        "{}",
        stderr(&o)
    );

    // A free stage is the rogue's to take, but it is measured: attestation shows who it is.
    let o = mon.gwctl(&[
        "hop", "register", "--chain", "9", "--stage", "1", "--hops", "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("slot 1 pcr {}", pcr + 1)
    );
    let (log, _) = me.event_log().unwrap();
    let theirs = log
        .iter()
        .find(|e| e.name.as_str() == "gwctl")
        .expect("rogue registration logged");
    let mine = log.iter().find(|e| e.pcr.get() == pcr).unwrap();
    assert_eq!(theirs.pcr.get(), pcr + 1);
    assert_ne!(
        theirs.digest, mine.digest,
        "programs are told apart by measurement"
    );

    // Packets: what the rogue tags at stage 1 reaches us at the last hop; forgeries do not.
    let o = mon.gwctl(&[
        "hop", "tag", "--chain", "9", "--stage", "1", "--hops", "2", "c0ffee",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let frame = hex::decode(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    assert_eq!(me.hop_check(slot, &frame).unwrap(), 1);
    assert_eq!(
        me.hop_check(slot, &frame).unwrap_err().abi(),
        Some(AbiError::Replay)
    );
    // A fresh frame with one flipped bit (a replayed one is refused before its tag is checked).
    let o = mon.gwctl(&[
        "hop", "tag", "--chain", "9", "--stage", "1", "--hops", "2", "c0ffee",
    ]);
    let mut forged = hex::decode(String::from_utf8_lossy(&o.stdout).trim()).unwrap();
    forged[0] ^= 1;
    assert_eq!(
        me.hop_check(slot, &forged).unwrap_err().abi(),
        Some(AbiError::BadTag)
    );
    // Our own tag for hop 0 presented back at hop 1's check (a skipped middlebox).
    let t = me.hop_tag(slot, b"c0ffee").unwrap();
    let mut skip = b"c0ffee".to_vec();
    skip.extend_from_slice(&t);
    assert_eq!(
        me.hop_check(slot, &skip).unwrap_err().abi(),
        Some(AbiError::WrongHop)
    );
    assert_eq!(t.len(), gw_hoptag::TRAILER_LEN);
}
