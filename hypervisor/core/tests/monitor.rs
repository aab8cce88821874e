//! The monitor core driven through its ABI, as the hypervisor and software monitor drive it.

use ed25519_dalek::{Signer, SigningKey};
use gw_abi::{AbiError, Function, MAX_RESPONSE, Request, Response};
use gw_core::{Caller, Config, Monitor};
use proptest::prelude::*;
use vtpm::{
    ComponentKind, DeviceSecret, Evidence, Expectation, KeyHierarchy, MonitorIdentity, MonitorKind,
    PcrSelection, verify,
};

type Mon = Monitor<256, 16>;

const VSWITCH: Caller = Caller {
    space: 100,
    program: [0xa1; 32],
};
const FIREWALL: Caller = Caller {
    space: 200,
    program: [0xb2; 32],
};
const IDS: Caller = Caller {
    space: 300,
    program: [0xc3; 32],
};
const ROGUE: Caller = Caller {
    space: 666,
    program: [0x66; 32],
};
const AGENT: Caller = Caller {
    space: 400,
    program: [0xd4; 32],
};

fn controller() -> SigningKey {
    SigningKey::from_bytes(&[0x77; 32])
}

fn monitor() -> Box<Mon> {
    let keys = KeyHierarchy::derive(&DeviceSecret::new([1; 32]));
    let mut m = Box::new(Mon::new(Config {
        keys: &keys,
        identity: MonitorIdentity::new(MonitorKind::Hypervisor, "test", [0; 32]),
        boot_counter: 3,
        controller_key: Some(controller().verifying_key()),
        hop_master: [9; 32],
    }));
    m.measure(
        1,
        &vtpm::sha256(b"hv"),
        ComponentKind::Hypervisor,
        "hv",
        "0.1",
    )
    .unwrap();
    m.measure(
        3,
        &vtpm::sha256(b"kernel"),
        ComponentKind::GuestKernel,
        "vmlinuz",
        "6.1",
    )
    .unwrap();
    m
}

/// Call and decode, giving the response an owned lifetime through a leaked buffer.
fn call(m: &mut Mon, who: &Caller, req: Request<'_>) -> Result<Response<'static>, AbiError> {
    let mut rb = vec![0u8; gw_abi::MAX_REQUEST];
    let n = req.encode(&mut rb).unwrap();
    let out: &'static mut [u8] = Box::leak(vec![0u8; MAX_RESPONSE].into_boxed_slice());
    let len = m.handle(who, req.function(), &rb[..n], out)?;
    Ok(Response::decode(&out[..len]).unwrap())
}

fn register(m: &mut Mon, who: &Caller, chain: u32, stage: u8, hops: u8) -> Result<u16, AbiError> {
    match call(
        m,
        who,
        Request::HopKeyRegister {
            chain,
            stage,
            hops,
            name: "prog",
            version: "1",
        },
    )? {
        Response::Slot { slot, .. } => Ok(slot),
        r => panic!("unexpected {r:?}"),
    }
}

fn tag(m: &mut Mon, who: &Caller, slot: u16, packet: &[u8]) -> Result<Vec<u8>, AbiError> {
    match call(m, who, Request::HopTag { slot, packet })? {
        Response::Tagged { trailer } => {
            let mut f = packet.to_vec();
            f.extend_from_slice(trailer);
            Ok(f)
        }
        r => panic!("unexpected {r:?}"),
    }
}

fn check(m: &mut Mon, who: &Caller, slot: u16, frame: &[u8]) -> Result<u64, AbiError> {
    match call(m, who, Request::HopCheck { slot, frame })? {
        Response::Checked { seq } => Ok(seq),
        r => panic!("unexpected {r:?}"),
    }
}

#[test]
fn version_reports_identity_and_keys() {
    let mut m = monitor();
    let Response::Version {
        major,
        identity,
        attestation_key,
        ..
    } = call(&mut m, &ROGUE, Request::Version).unwrap()
    else {
        panic!()
    };
    assert_eq!(major, gw_abi::ABI_MAJOR);
    assert_eq!(identity.kind, MonitorKind::Hypervisor);
    assert_eq!(
        attestation_key,
        m.vtpm().attestation_public_key().to_bytes()
    );
}

#[test]
fn guest_extend_read_and_locality() {
    let mut m = monitor();
    let d = [5; 32];
    call(
        &mut m,
        &AGENT,
        Request::PcrExtend {
            pcr: 512,
            digest: d,
            kind: ComponentKind::MiddleboxConfig,
            name: "fw.json",
            version: "1",
        },
    )
    .unwrap();
    let Response::Pcr { value } = call(&mut m, &AGENT, Request::PcrRead { pcr: 512 }).unwrap()
    else {
        panic!()
    };
    assert_eq!(value, vtpm::pcr::extend_value(&[0; 32], &d));
    for pcr in [0, 1, 3, 8, 11, 32] {
        assert_eq!(
            call(
                &mut m,
                &ROGUE,
                Request::PcrExtend {
                    pcr,
                    digest: d,
                    kind: ComponentKind::Other,
                    name: "x",
                    version: ""
                }
            ),
            Err(AbiError::Denied),
            "PCR {pcr}"
        );
    }
    assert_eq!(
        call(&mut m, &ROGUE, Request::PcrRead { pcr: 1024 }),
        Err(AbiError::InvalidParameter)
    );
    assert_eq!(
        call(
            &mut m,
            &ROGUE,
            Request::PcrExtend {
                pcr: 20,
                digest: d,
                kind: ComponentKind::Reset,
                name: "",
                version: ""
            }
        ),
        Err(AbiError::InvalidParameter),
        "a guest cannot forge reset events"
    );
}

#[test]
fn quote_and_event_log_verify() {
    let mut m = monitor();
    register(&mut m, &FIREWALL, 1, 1, 2).unwrap();
    let sel = PcrSelection::from_indices([1, 3, 32]).unwrap();
    let nonce = [0x11; 32];
    let Response::Quote { quote, pcrs } = call(
        &mut m,
        &ROGUE,
        Request::Quote {
            nonce,
            selection: sel,
        },
    )
    .unwrap() else {
        panic!()
    };
    let mut log = Vec::new();
    loop {
        let Response::EventLog { total, events, .. } = call(
            &mut m,
            &ROGUE,
            Request::EventLogRead {
                start: log.len() as u32,
            },
        )
        .unwrap() else {
            panic!()
        };
        log.extend(events);
        if log.len() >= total as usize {
            break;
        }
    }
    let pcrs: Vec<[u8; 32]> = pcrs.chunks(32).map(|c| c.try_into().unwrap()).collect();
    let key = m.vtpm().attestation_public_key();
    let ok = verify(
        &Evidence {
            quote,
            pcrs: &pcrs,
            log: &log,
        },
        &Expectation {
            key: &key,
            nonce: &nonce,
            selection: &sel,
            last: None,
            accept_format1: false,
        },
    )
    .unwrap();
    // The registered firewall's program digest is what PCR 32 holds.
    assert_eq!(
        ok.pcrs[2].1,
        vtpm::pcr::extend_value(&[0; 32], &FIREWALL.program)
    );
    assert_eq!(
        call(
            &mut m,
            &ROGUE,
            Request::Quote {
                nonce,
                selection: PcrSelection::none()
            }
        ),
        Err(AbiError::InvalidParameter)
    );
}

#[test]
fn quote_into_small_buffer_fails_without_signing() {
    let mut m = monitor();
    let req = Request::Quote {
        nonce: [0; 32],
        selection: PcrSelection::all(),
    };
    let mut rb = [0u8; 512];
    let n = req.encode(&mut rb).unwrap();
    let mut out = [0u8; 4096];
    assert_eq!(
        m.handle(&ROGUE, Function::Quote, &rb[..n], &mut out),
        Err(AbiError::BufferTooSmall)
    );
}

#[test]
fn packet_walks_the_chain_and_misrouting_is_dropped() {
    let mut m = monitor();
    // Chain 7: vSwitch → firewall → ids → vSwitch (3 hops).
    let vs = register(&mut m, &VSWITCH, 7, 0, 3).unwrap();
    let fw = register(&mut m, &FIREWALL, 7, 1, 3).unwrap();
    let ids = register(&mut m, &IDS, 7, 2, 3).unwrap();
    let pkt = b"GET / HTTP/1.1\r\n";
    let f0 = tag(&mut m, &VSWITCH, vs, pkt).unwrap();
    assert_eq!(check(&mut m, &FIREWALL, fw, &f0), Ok(1));
    let f1 = tag(&mut m, &FIREWALL, fw, pkt).unwrap();
    assert_eq!(check(&mut m, &IDS, ids, &f1), Ok(1));
    let f2 = tag(&mut m, &IDS, ids, pkt).unwrap();
    assert_eq!(check(&mut m, &VSWITCH, vs, &f2), Ok(1));

    // Skipping the firewall: the vSwitch's frame shown to the IDS.
    let g0 = tag(&mut m, &VSWITCH, vs, pkt).unwrap();
    assert_eq!(check(&mut m, &IDS, ids, &g0), Err(AbiError::WrongHop));
    // Skipping everything: straight back to the vSwitch.
    assert_eq!(check(&mut m, &VSWITCH, vs, &g0), Err(AbiError::WrongHop));
    // Replay of an accepted frame.
    assert_eq!(check(&mut m, &FIREWALL, fw, &f0), Err(AbiError::Replay));
    // Modified payload.
    let mut bad = g0.clone();
    bad[0] ^= 0x20;
    assert_eq!(check(&mut m, &FIREWALL, fw, &bad), Err(AbiError::BadTag));
    // The untouched frame still passes afterwards.
    assert_eq!(check(&mut m, &FIREWALL, fw, &g0), Ok(2));
    let s = m.hop_stats();
    assert_eq!((s.tagged, s.passed, s.dropped), (4, 4, 4));
}

#[test]
fn slots_are_bound_to_their_program() {
    let mut m = monitor();
    let fw = register(&mut m, &FIREWALL, 1, 1, 2).unwrap();
    // Another program can neither use nor steal the slot.
    assert_eq!(tag(&mut m, &ROGUE, fw, b"x"), Err(AbiError::Denied));
    assert_eq!(check(&mut m, &ROGUE, fw, &[0; 60]), Err(AbiError::Denied));
    assert_eq!(register(&mut m, &ROGUE, 1, 1, 2), Err(AbiError::Denied));
    assert_eq!(tag(&mut m, &ROGUE, 99, b"x"), Err(AbiError::NoSlot));
    // The same program in a new process takes over; the old process loses the slot.
    let restarted = Caller {
        space: 201,
        ..FIREWALL
    };
    assert_eq!(register(&mut m, &restarted, 1, 1, 2), Ok(fw));
    assert!(tag(&mut m, &restarted, fw, b"x").is_ok());
    assert_eq!(tag(&mut m, &FIREWALL, fw, b"x"), Err(AbiError::Denied));
    // The takeover is in the event log.
    let n = m
        .vtpm()
        .log()
        .entries()
        .iter()
        .filter(|e| e.pcr.get() == 32)
        .count();
    assert_eq!(n, 2);
    // Inconsistent chain length or stage.
    assert_eq!(
        register(&mut m, &IDS, 1, 2, 3),
        Err(AbiError::InvalidParameter)
    );
    // hops = 0 is refused by the encoder; hand-encoded, the monitor refuses it too.
    let bad = Request::HopKeyRegister {
        chain: 2,
        stage: 0,
        hops: 0,
        name: "",
        version: "",
    };
    let mut rb = [0u8; 64];
    let n = postcard::to_slice(&bad, &mut rb).unwrap().len();
    let mut out = [0u8; 64];
    assert_eq!(
        m.handle(&IDS, Function::HopKeyRegister, &rb[..n], &mut out),
        Err(AbiError::InvalidParameter)
    );
}

#[test]
fn slots_run_out_cleanly() {
    let mut m = monitor();
    for chain in 0..16 {
        register(&mut m, &VSWITCH, chain, 0, 1).unwrap();
    }
    assert_eq!(register(&mut m, &VSWITCH, 99, 0, 1), Err(AbiError::NoSlot));
}

fn sign_policy(version: u64, policy: &[u8]) -> ed25519_dalek::Signature {
    controller().sign(&gw_abi::policy_signing_input(version, policy))
}

#[test]
fn trusted_agent_and_policy_vault() {
    let mut m = monitor();
    let Response::Signed { signature } =
        call(&mut m, &AGENT, Request::AgentSign { message: b"report" }).unwrap()
    else {
        panic!()
    };
    let keys = KeyHierarchy::derive(&DeviceSecret::new([1; 32]));
    keys.control_key()
        .verifying_key()
        .verify_strict(&gw_abi::report_signing_input(b"report"), &signature)
        .unwrap();
    // The agent is now bound and measured into PCR 8.
    assert_eq!(
        m.vtpm().read(vtpm::PcrIndex::new(8).unwrap()),
        vtpm::pcr::extend_value(&[0; 32], &AGENT.program)
    );
    assert_eq!(
        call(&mut m, &ROGUE, Request::AgentSign { message: b"forged" }),
        Err(AbiError::Denied)
    );

    let cmd = b"apply policy 2";
    let good = controller().sign(&gw_abi::command_signing_input(cmd));
    assert_eq!(
        call(
            &mut m,
            &AGENT,
            Request::AgentVerify {
                message: cmd,
                signature: good
            }
        ),
        Ok(Response::Done)
    );
    let forged = SigningKey::from_bytes(&[1; 32]).sign(&gw_abi::command_signing_input(cmd));
    assert_eq!(
        call(
            &mut m,
            &AGENT,
            Request::AgentVerify {
                message: cmd,
                signature: forged
            }
        ),
        Err(AbiError::BadSignature)
    );
    assert_eq!(
        call(
            &mut m,
            &AGENT,
            Request::AgentVerify {
                message: b"other",
                signature: good
            }
        ),
        Err(AbiError::BadSignature)
    );

    let policy = vec![b'p'; 20_000];
    call(
        &mut m,
        &AGENT,
        Request::PolicySet {
            version: 2,
            policy: &policy,
            signature: sign_policy(2, &policy),
        },
    )
    .unwrap();
    assert_eq!(
        call(
            &mut m,
            &AGENT,
            Request::PolicySet {
                version: 2,
                policy: &policy,
                signature: sign_policy(2, &policy)
            }
        ),
        Err(AbiError::StalePolicy)
    );
    assert_eq!(
        call(
            &mut m,
            &AGENT,
            Request::PolicySet {
                version: 3,
                policy: b"evil",
                signature: sign_policy(3, &policy)
            }
        ),
        Err(AbiError::BadSignature)
    );
    assert_eq!(
        m.vtpm().read(vtpm::PcrIndex::new(11).unwrap()),
        vtpm::pcr::extend_value(&[0; 32], &vtpm::sha256(&policy))
    );
    // Read back in chunks by the agent.
    let mut got = Vec::new();
    loop {
        let Response::Policy {
            version,
            total,
            chunk,
        } = call(
            &mut m,
            &AGENT,
            Request::PolicyGet {
                offset: got.len() as u32,
            },
        )
        .unwrap()
        else {
            panic!()
        };
        assert_eq!(version, 2);
        got.extend_from_slice(chunk);
        if got.len() >= total as usize {
            break;
        }
    }
    assert_eq!(got, policy);
    // Any program may read it (a data-path stage reads it before it registers); none but the
    // agent may replace it.
    let Response::Policy { chunk, .. } =
        call(&mut m, &ROGUE, Request::PolicyGet { offset: 0 }).unwrap()
    else {
        panic!()
    };
    assert_eq!(chunk, &policy[..chunk.len()]);
}

#[test]
fn without_controller_key_agent_verify_is_not_provisioned() {
    let keys = KeyHierarchy::derive(&DeviceSecret::new([1; 32]));
    let mut m = Box::new(Mon::new(Config {
        keys: &keys,
        identity: MonitorIdentity::new(MonitorKind::InsecureSoftwareMonitor, "t", [0; 32]),
        boot_counter: 1,
        controller_key: None,
        hop_master: [0; 32],
    }));
    let sig = controller().sign(b"x");
    assert_eq!(
        call(
            &mut m,
            &AGENT,
            Request::AgentVerify {
                message: b"x",
                signature: sig
            }
        ),
        Err(AbiError::NotProvisioned)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]
    #[test]
    fn hostile_requests_get_error_codes(f in 0u16..0x60, bytes in prop::collection::vec(any::<u8>(), 0..300), cap in 0usize..200) {
        let mut m = monitor();
        let mut out = vec![0u8; cap];
        if let Err(e) = m.handle_raw(&ROGUE, f, &bytes, &mut out) {
            prop_assert!(e.code() < 0);
        }
        // Still serving afterwards.
        prop_assert!(call(&mut m, &ROGUE, Request::Version).is_ok());
    }
}

#[test]
fn hop_calls_into_small_buffers_consume_nothing() {
    let mut m = monitor();
    let vs = register(&mut m, &VSWITCH, 5, 0, 1).unwrap();
    let mut rb = vec![0u8; 256];
    let n = Request::HopTag {
        slot: vs,
        packet: b"pkt",
    }
    .encode(&mut rb)
    .unwrap();
    let mut small = [0u8; 8];
    assert_eq!(
        m.handle(&VSWITCH, Function::HopTag, &rb[..n], &mut small),
        Err(AbiError::BufferTooSmall)
    );
    // The sequence number was not used up: the next tag is still seq 1.
    let f = tag(&mut m, &VSWITCH, vs, b"pkt").unwrap();
    let n = Request::HopCheck {
        slot: vs,
        frame: &f,
    }
    .encode(&mut rb)
    .unwrap();
    assert_eq!(
        m.handle(&VSWITCH, Function::HopCheck, &rb[..n], &mut small),
        Err(AbiError::BufferTooSmall)
    );
    // Nor was the packet marked as seen: it still passes once.
    assert_eq!(check(&mut m, &VSWITCH, vs, &f), Ok(1));
}

/// HOP_KEY_REGISTER records which (chain, stage) the measured program took, in a field the
/// monitor sets (the event's version), so a verifier checks stage assignments, not only
/// binaries; the caller's own version string is not what is logged.
#[test]
fn registration_records_the_stage_assignment() {
    let mut m = monitor();
    register(&mut m, &VSWITCH, 0x2a, 0, 4).unwrap();
    register(&mut m, &FIREWALL, 0x2a, 2, 4).unwrap();
    let log = m.vtpm().log().entries();
    let n = log.len();
    assert_eq!(log[n - 2].version.as_str(), "c0000002a s0/4");
    assert_eq!(log[n - 1].version.as_str(), "c0000002a s2/4");
    assert_eq!(log[n - 1].kind, vtpm::ComponentKind::MiddleboxBinary);
    assert_eq!(
        gw_abi::parse_stage_assignment(log[n - 1].version.as_str()),
        Some((0x2a, 2, 4))
    );
    for bad in [
        "1",
        "c2a s2/4",
        "c0000002a s2",
        "x0000002a s2/4",
        "c0000002a s999/4",
    ] {
        assert_eq!(gw_abi::parse_stage_assignment(bad), None, "{bad}");
    }
}

/// The functions that do not bind a caller answer the same whoever calls, so the hypervisor may
/// skip measuring the caller for them (`Function::binds_caller`). The binding functions are the
/// twin: the same requests from another program are answered differently.
#[test]
fn only_binding_functions_depend_on_the_caller() {
    let requests = |f: Function| -> Option<Request<'static>> {
        Some(match f {
            Function::Version => Request::Version,
            Function::PcrExtend => Request::PcrExtend {
                pcr: 16,
                digest: [5; 32],
                kind: ComponentKind::Other,
                name: "x",
                version: "1",
            },
            Function::PcrRead => Request::PcrRead { pcr: 16 },
            Function::Quote => Request::Quote {
                nonce: [1; 32],
                selection: PcrSelection::from_indices([0, 16]).unwrap(),
            },
            Function::EventLogRead => Request::EventLogRead { start: 0 },
            Function::PolicyGet => Request::PolicyGet { offset: 0 },
            _ => return None,
        })
    };
    for f in Function::ALL {
        let (mut a, mut b) = (monitor(), monitor());
        let who = [VSWITCH, ROGUE];
        if let Some(req) = requests(f) {
            assert!(!f.binds_caller(), "{f:?}");
            let ra = call(&mut a, &who[0], req.clone()).map(|r| format!("{r:?}"));
            let rb = call(&mut b, &who[1], req).map(|r| format!("{r:?}"));
            assert_eq!(ra, rb, "{f:?} answered differently for another caller");
        } else {
            assert!(f.binds_caller(), "{f:?}");
        }
    }
    // The twin: registration binds, so a second program is refused the same slot.
    let mut m = monitor();
    register(&mut m, &VSWITCH, 7, 0, 2).unwrap();
    assert_eq!(register(&mut m, &ROGUE, 7, 0, 2), Err(AbiError::Denied));
}
