//! ABI encode/decode round trips, id mapping and hostile input.

use ed25519_dalek::Signature;
use gw_abi::{
    AbiError, Function, MAX_PACKET, MAX_RESPONSE, Request, Response, frame,
    regs::{self, CallRegs},
};
use proptest::prelude::*;
use vtpm::{ComponentKind, MonitorIdentity, MonitorKind, PcrSelection};

fn samples() -> Vec<Request<'static>> {
    let sig = Signature::from_bytes(&[3; 64]);
    vec![
        Request::Version,
        Request::PcrExtend {
            pcr: 512,
            digest: [1; 32],
            kind: ComponentKind::MiddleboxConfig,
            name: "fw.json",
            version: "7",
        },
        Request::PcrRead { pcr: 1023 },
        Request::Quote {
            nonce: [9; 32],
            selection: PcrSelection::from_indices([0, 1, 1023]).unwrap(),
        },
        Request::EventLogRead { start: 17 },
        Request::HopKeyRegister {
            chain: 4,
            stage: 1,
            hops: 3,
            name: "ids",
            version: "0.1",
        },
        Request::HopTag {
            slot: 2,
            packet: &[0xab; 1500],
        },
        Request::HopCheck {
            slot: 2,
            frame: &[0xcd; 1548],
        },
        Request::AgentSign { message: b"report" },
        Request::AgentVerify {
            message: b"command",
            signature: sig,
        },
        Request::PolicyGet { offset: 8192 },
        Request::PolicySet {
            version: 2,
            policy: b"{}",
            signature: sig,
        },
    ]
}

#[test]
fn every_function_has_a_sample_and_round_trips() {
    let reqs = samples();
    for f in Function::ALL {
        assert!(
            reqs.iter().any(|r| r.function() == f),
            "{} has no sample",
            f.name()
        );
    }
    let mut buf = vec![0u8; gw_abi::MAX_REQUEST];
    for r in &reqs {
        let n = r.encode(&mut buf).unwrap();
        assert_eq!(&Request::decode(r.function(), &buf[..n]).unwrap(), r);
        // Sent with any other function id, it is refused.
        for f in Function::ALL.into_iter().filter(|f| *f != r.function()) {
            assert_eq!(Request::decode(f, &buf[..n]), Err(AbiError::Malformed));
        }
        // Trailing bytes are refused.
        buf[n] = 0;
        assert_eq!(
            Request::decode(r.function(), &buf[..n + 1]),
            Err(AbiError::Malformed)
        );
        // Every truncation is refused.
        for cut in 0..n.min(64) {
            assert!(Request::decode(r.function(), &buf[..cut]).is_err());
        }
    }
}

#[test]
fn function_ids() {
    for f in Function::ALL {
        assert_eq!(f.aarch64_id() >> 16, 0xC600);
        assert_eq!(Function::from_aarch64_id(f.aarch64_id() as u64), Some(f));
        assert_eq!(Function::from_x86_id(f.x86_id() as u64), Some(f));
        // Upper bits set in x0 (SMC32 vs SMC64 confusion, garbage): not ours.
        assert_eq!(
            Function::from_aarch64_id(f.aarch64_id() as u64 | 1 << 32),
            None
        );
    }
    assert_eq!(Function::from_aarch64_id(0x8400_0000), None); // PSCI_VERSION
    assert_eq!(Function::from_aarch64_id(0xC600_00FF), None);
    assert_eq!(Function::from_x86_id(0x4757_0000 | 0x99), None);
}

#[test]
fn error_codes_are_distinct_and_round_trip() {
    for e in AbiError::ALL {
        assert!(e.code() < 0);
        assert_eq!(AbiError::from_code(e.code() as i64), Some(e));
    }
    let mut codes: Vec<_> = AbiError::ALL.iter().map(|e| e.code()).collect();
    codes.sort();
    codes.dedup();
    assert_eq!(codes.len(), AbiError::ALL.len());
    assert_eq!(AbiError::NotSupported.code(), -1, "SMCCC NOT_SUPPORTED");
    assert_eq!(AbiError::from_code(0), None);
    assert_eq!(AbiError::from_code(-9999), Some(AbiError::NotSupported));
}

#[test]
fn bounds_are_enforced_on_encode_and_decode() {
    let big = vec![0u8; MAX_PACKET + 1];
    let r = Request::HopTag {
        slot: 0,
        packet: &big,
    };
    let mut buf = vec![0u8; gw_abi::MAX_REQUEST];
    assert_eq!(r.encode(&mut buf), Err(AbiError::InvalidParameter));
    // Hand-encode the oversize request: decode still refuses it.
    let n = postcard::to_slice(&r, &mut buf).unwrap().len();
    assert_eq!(
        Request::decode(Function::HopTag, &buf[..n]),
        Err(AbiError::InvalidParameter)
    );
    let bad_stage = Request::HopKeyRegister {
        chain: 1,
        stage: 3,
        hops: 3,
        name: "",
        version: "",
    };
    assert_eq!(bad_stage.encode(&mut buf), Err(AbiError::InvalidParameter));
    // A response that does not fit the caller's buffer.
    let resp = Response::Pcr { value: [0; 32] };
    assert_eq!(resp.encode(&mut [0u8; 10]), Err(AbiError::BufferTooSmall));
}

#[test]
fn responses_round_trip() {
    let mut events = heapless::Vec::new();
    events
        .push(vtpm::Event::new(
            vtpm::PcrIndex::new(3).unwrap(),
            [1; 32],
            ComponentKind::GuestKernel,
            "vmlinuz",
            "6.1",
        ))
        .unwrap();
    let all = [
        Response::Version {
            major: 1,
            minor: 0,
            identity: MonitorIdentity::new(MonitorKind::Hypervisor, "hv", [2; 32]),
            attestation_key: [3; 32],
            agent_key: [4; 32],
        },
        Response::Done,
        Response::Pcr { value: [5; 32] },
        Response::Quote {
            quote: &[1, 2, 3],
            pcrs: &[0; 64],
        },
        Response::EventLog {
            total: 1,
            overflowed: false,
            events,
        },
        Response::Slot { slot: 1, pcr: 33 },
        Response::Tagged { trailer: &[7; 48] },
        Response::Checked { seq: 99 },
        Response::Signed {
            signature: Signature::from_bytes(&[8; 64]),
        },
        Response::Policy {
            version: 3,
            total: 2,
            chunk: b"{}",
        },
    ];
    let mut buf = vec![0u8; 4096];
    for r in &all {
        let n = r.encode(&mut buf).unwrap();
        assert_eq!(&Response::decode(&buf[..n]).unwrap(), r);
    }
}

#[test]
fn fixed_size_responses_fit_their_bound() {
    let long = "v".repeat(200);
    let largest = [
        (
            Function::Version,
            Response::Version {
                major: u16::MAX,
                minor: u16::MAX,
                identity: MonitorIdentity::new(
                    MonitorKind::InsecureSoftwareMonitor,
                    &long,
                    [0xff; 32],
                ),
                attestation_key: [0xff; 32],
                agent_key: [0xff; 32],
            },
        ),
        (Function::PcrExtend, Response::Done),
        (Function::PcrRead, Response::Pcr { value: [0xff; 32] }),
        (
            Function::HopKeyRegister,
            Response::Slot {
                slot: u16::MAX,
                pcr: u16::MAX,
            },
        ),
        (
            Function::HopTag,
            Response::Tagged {
                trailer: &[0xff; 64], // the hop trailer is 48 bytes
            },
        ),
        (Function::HopCheck, Response::Checked { seq: u64::MAX }),
        (
            Function::AgentSign,
            Response::Signed {
                signature: Signature::from_bytes(&[0xff; 64]),
            },
        ),
        (Function::AgentVerify, Response::Done),
        (Function::PolicySet, Response::Done),
    ];
    let mut buf = vec![0u8; MAX_RESPONSE];
    for (f, r) in &largest {
        let n = r.encode(&mut buf).unwrap();
        assert!(
            n <= f.response_bound(),
            "{} answers up to {n} bytes, over its bound {}",
            f.name(),
            f.response_bound()
        );
    }
    for f in Function::ALL {
        if !largest.iter().any(|(g, _)| *g == f) {
            assert_eq!(f.response_bound(), MAX_RESPONSE, "{}", f.name());
        }
    }
}

#[test]
fn buffer_checks() {
    let ok = CallRegs {
        function: 0,
        req_addr: 0x1000,
        req_len: 100,
        resp_addr: 0x2000,
        resp_cap: 100,
    };
    assert_eq!(regs::check_buffers(&ok), Ok(()));
    let overlap = CallRegs {
        resp_addr: 0x1010,
        ..ok
    };
    assert_eq!(regs::check_buffers(&overlap), Err(AbiError::BadAddress));
    let wrap = CallRegs {
        req_addr: u64::MAX - 10,
        ..ok
    };
    assert_eq!(regs::check_buffers(&wrap), Err(AbiError::BadAddress));
    let huge = CallRegs {
        req_len: 1 << 40,
        ..ok
    };
    assert_eq!(regs::check_buffers(&huge), Err(AbiError::InvalidParameter));
    let x = regs::aarch64::encode(regs::ReturnRegs::err(AbiError::Denied));
    assert_eq!(x[0] as i64, -3);
}

#[test]
fn frames() {
    let h = frame::request_header(Function::PcrRead, 10);
    let n = frame::request_len([h[0], h[1], h[2], h[3]]).unwrap();
    assert_eq!(n, 12);
    assert_eq!(
        frame::request_len(u32::MAX.to_le_bytes()),
        Err(AbiError::InvalidParameter)
    );
    assert_eq!(
        frame::parse_response_header(frame::response_header(Ok(5))),
        Ok(Ok(5))
    );
    assert_eq!(
        frame::parse_response_header(frame::response_header(Err(AbiError::Replay))),
        Ok(Err(AbiError::Replay))
    );
}

proptest! {
    #[test]
    fn random_bytes_never_panic(f in 0u16..0x50, bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Some(f) = Function::from_number(f) {
            let _ = Request::decode(f, &bytes);
        }
        let _ = Response::decode(&bytes);
        let _ = vtpm::SignedQuote::decode(&bytes);
    }
}
