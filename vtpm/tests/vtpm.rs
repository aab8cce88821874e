//! Host tests of the vTPM: extend maths, the full bank, event log bounds, quotes and every
//! verifier rejection.

use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use vtpm::{
    ComponentKind, Counters, DeviceSecret, Event, Evidence, Expectation, KeyHierarchy, Locality,
    MonitorIdentity, MonitorKind, PCR_COUNT, PcrIndex, PcrSelection, SignedQuote, VerifyError,
    Vtpm, VtpmError, pcr, sha256, verify, verify_batch,
};

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

fn keys(seed: u8) -> KeyHierarchy {
    KeyHierarchy::derive(&DeviceSecret::new([seed; 32]))
}

fn identity() -> MonitorIdentity {
    MonitorIdentity::new(MonitorKind::Hypervisor, "gatewarden-hv test", [7; 32])
}

fn pcr(i: u16) -> PcrIndex {
    PcrIndex::new(i).unwrap()
}

/// A vTPM with a measured boot chain and two middleboxes.
fn booted() -> Vtpm<256> {
    let mut v = Vtpm::<256>::new(&keys(1), identity(), 5);
    let m = Locality::Monitor;
    v.extend(
        m,
        pcr(1),
        &sha256(b"hv"),
        ComponentKind::Hypervisor,
        "gatewarden-hv",
        "0.1.0",
    )
    .unwrap();
    v.extend(
        m,
        pcr(3),
        &sha256(b"k"),
        ComponentKind::GuestKernel,
        "vmlinuz",
        "6.1",
    )
    .unwrap();
    v.extend(
        m,
        pcr(4),
        &sha256(b"i"),
        ComponentKind::GuestInitramfs,
        "initrd",
        "",
    )
    .unwrap();
    v.extend(
        m,
        pcr(32),
        &sha256(b"fw"),
        ComponentKind::MiddleboxBinary,
        "firewall",
        "1",
    )
    .unwrap();
    v.extend(
        Locality::Guest,
        pcr(512),
        &sha256(b"fwcfg"),
        ComponentKind::MiddleboxConfig,
        "firewall.json",
        "3",
    )
    .unwrap();
    v
}

fn selection() -> PcrSelection {
    PcrSelection::from_indices([1, 3, 4, 5, 32, 512]).unwrap()
}

struct Taken {
    quote: Vec<u8>,
    pcrs: Vec<[u8; 32]>,
    log: Vec<vtpm::Event>,
}

fn take(v: &mut Vtpm<256>, nonce: &[u8; 32], sel: &PcrSelection) -> Taken {
    let q = v.quote(nonce, sel).unwrap();
    let mut buf = [0u8; 1024];
    let quote = q.encode(&mut buf).unwrap().to_vec();
    Taken {
        quote,
        pcrs: sel.iter().map(|p| v.read(p)).collect(),
        log: v.log().entries().to_vec(),
    }
}

fn check(
    t: &Taken,
    key: &ed25519_dalek::VerifyingKey,
    nonce: &[u8; 32],
    last: Option<Counters>,
) -> Result<vtpm::Verified, VerifyError> {
    check_over(t, key, nonce, last, &selection())
}

/// [`check`] against another expected selection.
fn check_over(
    t: &Taken,
    key: &ed25519_dalek::VerifyingKey,
    nonce: &[u8; 32],
    last: Option<Counters>,
    sel: &PcrSelection,
) -> Result<vtpm::Verified, VerifyError> {
    verify(
        &Evidence {
            quote: &t.quote,
            pcrs: &t.pcrs,
            log: &t.log,
        },
        &Expectation {
            key,
            nonce,
            selection: sel,
            last,
            accept_format1: false,
        },
    )
}

#[test]
fn extend_matches_known_answer() {
    // Independent computation: Python hashlib, sha256(sha256(0^32 || H("hypervisor")) || H("kernel")).
    let mut bank = vtpm::PcrBank::new();
    bank.extend(pcr(0), &sha256(b"hypervisor"));
    bank.extend(pcr(0), &sha256(b"kernel"));
    assert_eq!(
        bank.read(pcr(0)),
        hex32("823e1da5716c28b232f9ffeb2d25fe6bab34b185a128158ff55460ad14fa13d9")
    );
    let sel = PcrSelection::from_indices([0, 5]).unwrap();
    assert_eq!(
        bank.composite(&sel),
        hex32("30ffeacc676773061a344666637c474ac8d1776897f5eb6c446bd93e789808e5")
    );
}

proptest! {
    #[test]
    fn extend_is_hash_chain(pcr_i in 0u16..PCR_COUNT as u16, ms in prop::collection::vec(any::<[u8; 32]>(), 0..8)) {
        use sha2::Digest as _;
        let mut bank = vtpm::PcrBank::new();
        let mut expect = [0u8; 32];
        for m in &ms {
            bank.extend(pcr(pcr_i), m);
            let mut buf = expect.to_vec();
            buf.extend_from_slice(m);
            expect = sha2::Sha256::digest(&buf).into();
        }
        prop_assert_eq!(bank.read(pcr(pcr_i)), expect);
    }

    #[test]
    fn selection_iterates_exactly_its_members(mut idx in prop::collection::vec(0u16..1024, 0..64)) {
        let sel = PcrSelection::from_indices(idx.iter().copied()).unwrap();
        idx.sort();
        idx.dedup();
        let got: Vec<u16> = sel.iter().map(PcrIndex::get).collect();
        prop_assert_eq!(sel.len(), idx.len());
        prop_assert_eq!(got, idx);
    }
}

#[test]
fn all_1024_pcrs_are_independent_and_quotable() {
    let mut v = Vtpm::<{ PCR_COUNT + 8 }>::new(&keys(2), identity(), 1);
    for i in 0..PCR_COUNT as u16 {
        let d = sha256(&i.to_le_bytes());
        v.extend(
            Locality::Monitor,
            pcr(i),
            &d,
            ComponentKind::Other,
            "pcr",
            "",
        )
        .unwrap();
    }
    for i in 0..PCR_COUNT as u16 {
        assert_eq!(
            v.read(pcr(i)),
            pcr::extend_value(&[0; 32], &sha256(&i.to_le_bytes())),
            "PCR {i}"
        );
    }
    assert!(PcrIndex::new(PCR_COUNT as u16).is_none());
    let all = PcrSelection::all();
    let nonce = [9; 32];
    let q = v.quote(&nonce, &all).unwrap();
    let mut buf = [0u8; 1024];
    let bytes = q.encode(&mut buf).unwrap().to_vec();
    let pcrs: Vec<_> = all.iter().map(|p| v.read(p)).collect();
    let ok = verify(
        &Evidence {
            quote: &bytes,
            pcrs: &pcrs,
            log: v.log().entries(),
        },
        &Expectation {
            key: &v.attestation_public_key(),
            nonce: &nonce,
            selection: &all,
            last: None,
            accept_format1: false,
        },
    )
    .unwrap();
    assert_eq!(ok.pcrs.len(), PCR_COUNT);
}

#[test]
fn guest_cannot_touch_monitor_pcrs_and_resets_are_limited() {
    let mut v = Vtpm::<16>::new(&keys(3), identity(), 1);
    for i in [0u16, 1, 3, 7, 8, 11, 32, 511] {
        assert_eq!(
            v.extend(
                Locality::Guest,
                pcr(i),
                &[1; 32],
                ComponentKind::Other,
                "x",
                ""
            ),
            Err(VtpmError::Denied(i))
        );
    }
    v.extend(
        Locality::Guest,
        pcr(9),
        &[1; 32],
        ComponentKind::VSwitch,
        "vswitch",
        "",
    )
    .unwrap();
    assert_eq!(
        v.reset(Locality::Guest, pcr(9)),
        Err(VtpmError::NotResettable(9))
    );
    v.extend(
        Locality::Guest,
        pcr(16),
        &[1; 32],
        ComponentKind::Other,
        "dbg",
        "",
    )
    .unwrap();
    v.reset(Locality::Guest, pcr(16)).unwrap();
    assert_eq!(v.read(pcr(16)), [0; 32]);
    // The reset is logged so replay reproduces it.
    assert_eq!(vtpm::log::replay(v.log().entries(), pcr(16)), [0; 32]);
    assert_eq!(vtpm::log::replay(v.log().entries(), pcr(9)), v.read(pcr(9)));
}

#[test]
fn full_log_fails_closed_and_quote_says_so() {
    let mut v = Vtpm::<2>::new(&keys(4), identity(), 1);
    v.extend(
        Locality::Guest,
        pcr(20),
        &[1; 32],
        ComponentKind::Other,
        "a",
        "",
    )
    .unwrap();
    v.extend(
        Locality::Guest,
        pcr(20),
        &[2; 32],
        ComponentKind::Other,
        "b",
        "",
    )
    .unwrap();
    let before = v.read(pcr(20));
    assert_eq!(
        v.extend(
            Locality::Guest,
            pcr(20),
            &[3; 32],
            ComponentKind::Other,
            "c",
            ""
        ),
        Err(VtpmError::LogFull)
    );
    assert_eq!(
        v.read(pcr(20)),
        before,
        "refused extend must not change the PCR"
    );
    let q = v
        .quote(&[0; 32], &PcrSelection::from_indices([20]).unwrap())
        .unwrap();
    let body = q.body().unwrap();
    assert!(body.log_overflowed);
    assert_eq!(body.event_count, 2);
}

#[test]
fn names_are_truncated_at_char_boundaries() {
    let long = "é".repeat(40); // 80 bytes
    let e = vtpm::Event::new(pcr(1), [0; 32], ComponentKind::Other, &long, &long);
    assert!(e.name.len() <= vtpm::log::NAME_MAX && long.starts_with(e.name.as_str()));
    assert!(e.version.len() <= vtpm::log::VERSION_MAX && long.starts_with(e.version.as_str()));
}

#[test]
fn key_hierarchy_is_deterministic_and_separated() {
    let a = keys(1);
    let b = keys(1);
    let c = keys(2);
    assert_eq!(
        a.attestation_key().to_bytes(),
        b.attestation_key().to_bytes()
    );
    assert_ne!(
        a.attestation_key().to_bytes(),
        c.attestation_key().to_bytes()
    );
    assert_ne!(a.attestation_key().to_bytes(), a.control_key().to_bytes());
    assert_ne!(a.sealing_key(), &a.attestation_key().to_bytes());
    assert_ne!(a.sealing_key(), &a.control_key().to_bytes());
}

#[test]
fn quote_round_trip() {
    let mut v = booted();
    let key = v.attestation_public_key();
    let nonce = [0x42; 32];
    let t = take(&mut v, &nonce, &selection());
    let ok = check(&t, &key, &nonce, None).unwrap();
    assert_eq!(ok.body.nonce, nonce);
    assert_eq!(ok.body.counters, Counters { boot: 5, quote: 1 });
    assert_eq!(ok.body.identity, identity());
    assert!(!ok.is_insecure_software_monitor());
    assert_eq!(ok.pcrs.len(), 6);
    assert_eq!(ok.pcrs[3], (pcr(5), [0; 32]));
    // Decoding the wire form gives back the same quote.
    assert_eq!(
        SignedQuote::decode(&t.quote).unwrap().body().unwrap(),
        ok.body
    );
}

#[test]
fn software_monitor_identity_is_reported() {
    let id = MonitorIdentity::new(MonitorKind::InsecureSoftwareMonitor, "gw-swmon", [0; 32]);
    let mut v = Vtpm::<8>::new(&keys(1), id, 1);
    let key = v.attestation_public_key();
    let nonce = [1; 32];
    let q = v.quote(&nonce, &selection()).unwrap();
    let mut buf = [0u8; 1024];
    let bytes = q.encode(&mut buf).unwrap().to_vec();
    let pcrs = vec![[0u8; 32]; 6];
    let ok = verify(
        &Evidence {
            quote: &bytes,
            pcrs: &pcrs,
            log: &[],
        },
        &Expectation {
            key: &key,
            nonce: &nonce,
            selection: &selection(),
            last: None,
            accept_format1: false,
        },
    )
    .unwrap();
    assert!(ok.is_insecure_software_monitor());
}

#[test]
fn tampered_signature_is_rejected() {
    let mut v = booted();
    let key = v.attestation_public_key();
    let nonce = [1; 32];
    let mut t = take(&mut v, &nonce, &selection());
    let n = t.quote.len();
    t.quote[n - 1] ^= 1; // last byte of the signature
    assert_eq!(
        check(&t, &key, &nonce, None).unwrap_err(),
        VerifyError::BadSignature
    );

    // Body altered, signature kept.
    let mut t = take(&mut v, &nonce, &selection());
    let mut q = SignedQuote::decode(&t.quote).unwrap();
    let last = q.body.len() - 1;
    q.body[last] ^= 1;
    let mut buf = [0u8; 1024];
    t.quote = q.encode(&mut buf).unwrap().to_vec();
    assert_eq!(
        check(&t, &key, &nonce, None).unwrap_err(),
        VerifyError::BadSignature
    );

    // A quote signed by another key (forged): valid signature, wrong signer.
    let mut other = Vtpm::<256>::new(&keys(99), identity(), 5);
    let t = take(&mut other, &nonce, &selection());
    assert_eq!(
        check(&t, &key, &nonce, None).unwrap_err(),
        VerifyError::BadSignature
    );

    // Garbage bytes.
    let t = Taken {
        quote: vec![1, 2, 3],
        pcrs: vec![],
        log: vec![],
    };
    assert_eq!(
        check(&t, &key, &nonce, None).unwrap_err(),
        VerifyError::Malformed
    );
}

#[test]
fn signed_garbage_body_is_malformed_not_accepted() {
    let sk = SigningKey::from_bytes(&[5; 32]);
    let body: heapless::Vec<u8, 512> = heapless::Vec::from_slice(&[0xff; 40]).unwrap();
    let mut msg = vtpm::quote::QUOTE_CONTEXT.to_vec();
    msg.extend_from_slice(&body);
    let q = SignedQuote {
        signature: sk.sign(&msg),
        body,
    };
    let mut buf = [0u8; 1024];
    let t = Taken {
        quote: q.encode(&mut buf).unwrap().to_vec(),
        pcrs: vec![],
        log: vec![],
    };
    assert_eq!(
        check(&t, &sk.verifying_key(), &[0; 32], None).unwrap_err(),
        VerifyError::Malformed
    );
}

#[test]
fn wrong_nonce_is_rejected() {
    let mut v = booted();
    let key = v.attestation_public_key();
    let t = take(&mut v, &[1; 32], &selection());
    assert_eq!(
        check(&t, &key, &[2; 32], None).unwrap_err(),
        VerifyError::NonceMismatch
    );
}

#[test]
fn selection_and_pcr_values_are_checked() {
    let mut v = booted();
    let key = v.attestation_public_key();
    let nonce = [1; 32];
    // Quote over fewer PCRs than requested.
    let fewer = PcrSelection::from_indices([1, 3]).unwrap();
    let t = take(&mut v, &nonce, &fewer);
    assert_eq!(
        check(&t, &key, &nonce, None).unwrap_err(),
        VerifyError::SelectionMismatch
    );
    // Claimed PCR values that do not hash to the quoted digest.
    let mut t = take(&mut v, &nonce, &selection());
    t.pcrs[1][0] ^= 1;
    assert_eq!(
        check(&t, &key, &nonce, None).unwrap_err(),
        VerifyError::PcrDigestMismatch
    );
    // Missing values.
    let mut t = take(&mut v, &nonce, &selection());
    t.pcrs.pop();
    assert_eq!(
        check(&t, &key, &nonce, None).unwrap_err(),
        VerifyError::SelectionMismatch
    );
}

#[test]
fn counter_rollback_is_rejected() {
    let mut v = booted();
    let key = v.attestation_public_key();
    let nonce = [1; 32];
    let first = take(&mut v, &nonce, &selection());
    let ok = check(&first, &key, &nonce, None).unwrap();
    let second = take(&mut v, &nonce, &selection());
    let ok2 = check(&second, &key, &nonce, Some(ok.body.counters)).unwrap();
    assert!(ok2.body.counters > ok.body.counters);
    // Replaying the first quote after the second was accepted (same nonce reused).
    assert_eq!(
        check(&first, &key, &nonce, Some(ok2.body.counters)).unwrap_err(),
        VerifyError::CounterRollback {
            last: ok2.body.counters,
            quoted: ok.body.counters
        }
    );
    // A reboot with an older boot counter.
    let mut old = Vtpm::<256>::new(&keys(1), identity(), 4);
    let t = take(
        &mut old,
        &nonce,
        &PcrSelection::from_indices([1, 3, 4, 5, 32, 512]).unwrap(),
    );
    assert!(matches!(
        check(&t, &key, &nonce, Some(ok2.body.counters)).unwrap_err(),
        VerifyError::CounterRollback { .. }
    ));
}

/// A board without a boot counter (a Raspberry Pi: the hypervisor quotes boot counter 0,
/// `NO_BOOT_COUNTER`, on every boot): a reboot restarts the quote counter and is accepted; a
/// board that had a counter and quotes 0 is still a rollback.
#[test]
fn a_counterless_board_reboots_without_a_rollback() {
    let nonce = [1; 32];
    let none = vtpm::NO_BOOT_COUNTER;
    let mut before = Vtpm::<256>::new(&keys(1), identity(), none);
    let key = before.attestation_public_key();
    let sel = selection();
    let mut last = None;
    for _ in 0..3 {
        let q = take(&mut before, &nonce, &sel);
        last = Some(check(&q, &key, &nonce, last).unwrap().body.counters);
    }
    // The reboot: counters (0, 1) after (0, 3).
    let mut after = Vtpm::<256>::new(&keys(1), identity(), none);
    let q = take(&mut after, &nonce, &sel);
    let ok = check(&q, &key, &nonce, last).unwrap();
    assert_eq!((ok.body.counters.boot, ok.body.counters.quote), (none, 1));
    // A board whose counter read 5 before now quotes none: rollback.
    let mut counted = Vtpm::<256>::new(&keys(1), identity(), 5);
    let q5 = take(&mut counted, &nonce, &sel);
    let c5 = check(&q5, &key, &nonce, None).unwrap().body.counters;
    let mut reset = Vtpm::<256>::new(&keys(1), identity(), none);
    let q1 = take(&mut reset, &nonce, &sel);
    assert!(matches!(
        check(&q1, &key, &nonce, Some(c5)).unwrap_err(),
        VerifyError::CounterRollback { .. }
    ));
}

#[test]
fn tampered_event_log_is_rejected() {
    let mut v = booted();
    let key = v.attestation_public_key();
    let nonce = [1; 32];
    // Format 2 signs the whole log: any change is a digest mismatch, found before the replay.
    // An entry's digest changed (e.g. hiding a modified middlebox).
    let mut t = take(&mut v, &nonce, &selection());
    t.log[3].digest[0] ^= 1;
    assert_eq!(
        check(&t, &key, &nonce, None).unwrap_err(),
        VerifyError::EventLogDigestMismatch
    );
    // Entry dropped.
    let mut t = take(&mut v, &nonce, &selection());
    t.log.remove(1);
    assert_eq!(
        check(&t, &key, &nonce, None).unwrap_err(),
        VerifyError::EventLogLength { got: 4, quoted: 5 }
    );
    // Entry moved to another PCR, length kept.
    let mut t = take(&mut v, &nonce, &selection());
    t.log[2].pcr = pcr(5);
    assert_eq!(
        check(&t, &key, &nonce, None).unwrap_err(),
        VerifyError::EventLogDigestMismatch
    );
    // Order swapped inside one PCR.
    v.extend(
        Locality::Monitor,
        pcr(32),
        &sha256(b"ids"),
        ComponentKind::MiddleboxBinary,
        "ids",
        "1",
    )
    .unwrap();
    let mut t = take(&mut v, &nonce, &selection());
    t.log.swap(3, 5);
    assert_eq!(
        check(&t, &key, &nonce, None).unwrap_err(),
        VerifyError::EventLogDigestMismatch
    );
    // The benign twin: the untouched log verifies.
    let t = take(&mut v, &nonce, &selection());
    check(&t, &key, &nonce, None).unwrap();
}

fn enc(e: &Event) -> Vec<u8> {
    let mut buf = [0u8; vtpm::log::EVENT_ENCODED_MAX];
    postcard::to_slice(e, &mut buf).unwrap().to_vec()
}

#[test]
fn log_digest_known_answer() {
    // Independent computation (Python hashlib over the postcard bytes written out by hand):
    // L1 = sha256("gatewarden/log/v2\0" || 0^32 || e1), L2 = sha256(ctx || L1 || e2).
    let e1 = Event::new(
        pcr(1),
        [0x11; 32],
        ComponentKind::Hypervisor,
        "gatewarden-hv",
        "0.1.0",
    );
    let e2 = Event::new(
        pcr(700),
        [0x22; 32],
        ComponentKind::MiddleboxBinary,
        "firewall",
        "",
    );
    let mut wire1 = vec![0x01];
    wire1.extend([0x11; 32]);
    wire1.extend([0x01, 13]);
    wire1.extend(b"gatewarden-hv");
    wire1.extend([5]);
    wire1.extend(b"0.1.0");
    assert_eq!(enc(&e1), wire1, "the event's encoding");
    let mut wire2 = vec![0xbc, 0x05];
    wire2.extend([0x22; 32]);
    wire2.extend([0x0a, 8]);
    wire2.extend(b"firewall");
    wire2.extend([0]);
    assert_eq!(enc(&e2), wire2);
    assert_eq!(
        vtpm::log::log_digest(std::slice::from_ref(&e1)),
        hex32("08c530afe6a40ee87148d1e97df73c2e2df35b25797a0e6b5db7d3facde0416e")
    );
    assert_eq!(
        vtpm::log::log_digest(&[e1.clone(), e2.clone()]),
        hex32("3d4eb84b6e9a34d73845ed95a3d07e1bee11601dd4ac89e2a81fc067a4296003")
    );
    // The log keeps the same digest as it appends.
    let mut log = vtpm::EventLog::<4>::new();
    log.push(e1).unwrap();
    log.push(e2).unwrap();
    assert_eq!(log.digest(), vtpm::log::log_digest(log.entries()));
}

/// The attacks an independent review made on format 1, each against format 2 (refused) and
/// against a format-1 quote a verifier was told to accept (the migration path).
#[test]
fn a_hidden_or_relabelled_measurement_is_refused() {
    let mut v = booted();
    let key = v.attestation_public_key();
    let nonce = [3; 32];
    // A foreign program's HOP_KEY_REGISTER measurement on PCR 700.
    v.extend(
        Locality::Monitor,
        pcr(700),
        &sha256(b"rogue"),
        ComponentKind::MiddleboxBinary,
        "firewall",
        "",
    )
    .unwrap();
    let at = v.log().len() - 1;
    let honest = v.log().entries().to_vec();
    // Hidden: the event becomes a Reset on an untouched PCR, and the (compromised) agent asks for
    // a quote over the PCRs the doctored log touches.
    let mut hidden = honest.clone();
    hidden[at] = Event::reset(pcr(701));
    let sel = PcrSelection::from_indices(hidden.iter().map(|e| e.pcr.get())).unwrap();
    let bundle = v.quote(&nonce, &sel).unwrap();
    let mut qbuf = [0u8; vtpm::quote::SIGNED_QUOTE_MAX];
    let quote = bundle.encode(&mut qbuf).unwrap().to_vec();
    let pcrs: Vec<_> = sel.iter().map(|p| v.read(p)).collect();
    let run = |log: &[Event], quote: &[u8], accept_format1| {
        verify(
            &Evidence {
                quote,
                pcrs: &pcrs,
                log,
            },
            &Expectation {
                key: &key,
                nonce: &nonce,
                selection: &sel,
                last: None,
                accept_format1,
            },
        )
    };
    assert_eq!(
        run(&hidden, &quote, false).unwrap_err(),
        VerifyError::EventLogDigestMismatch
    );
    // Relabelled: the modified middlebox as `Other`, which would read "no reference value".
    let mut relabelled = honest.clone();
    relabelled[at].kind = ComponentKind::Other;
    assert_eq!(
        run(&relabelled, &quote, false).unwrap_err(),
        VerifyError::EventLogDigestMismatch
    );
    // The benign twin: the honest log, over the PCRs it touches, verifies.
    let sel_honest = PcrSelection::from_indices(honest.iter().map(|e| e.pcr.get())).unwrap();
    let t = take(&mut v, &nonce, &sel_honest);
    check_over(&t, &key, &nonce, None, &sel_honest).unwrap();

    // Format 1, as images before 2026-12-02 signed it: the same body without a log digest.
    let mut body = vtpm::SignedQuote::decode(&quote).unwrap().body().unwrap();
    body.format = vtpm::quote::QUOTE_FORMAT_1;
    body.log_digest = None;
    let mut raw = [0u8; vtpm::quote::BODY_MAX];
    let body_bytes = body.encode(&mut raw).unwrap().to_vec();
    let mut msg = [0u8; vtpm::quote::QUOTE_CONTEXT.len() + vtpm::quote::BODY_MAX];
    let n = vtpm::quote::signed_message(&body_bytes, &mut msg);
    let v1 = vtpm::SignedQuote {
        body: heapless::Vec::from_slice(&body_bytes).unwrap(),
        signature: keys(1).attestation_key().sign(&msg[..n]),
    };
    let v1 = v1.encode(&mut qbuf).unwrap().to_vec();
    assert_eq!(
        run(&hidden, &v1, false).unwrap_err(),
        VerifyError::Format1NotAccepted,
        "format 1 only where a manifest allows it"
    );
    // Accepted for migration, the Reset on a PCR that cannot be reset is still refused.
    assert_eq!(
        run(&hidden, &v1, true).unwrap_err(),
        VerifyError::ResetOfNonResettablePcr(701)
    );
}

#[test]
fn batch_verification_matches_single() {
    let mut gws: Vec<Vtpm<256>> = (0..64)
        .map(|i| {
            let mut v = Vtpm::<256>::new(&keys(i), identity(), 1);
            v.extend(
                Locality::Monitor,
                pcr(1),
                &sha256(&[i]),
                ComponentKind::Hypervisor,
                "hv",
                "",
            )
            .unwrap();
            v
        })
        .collect();
    let sel = selection();
    let nonces: Vec<[u8; 32]> = (0..64u8).map(|i| [i; 32]).collect();
    let mut taken: Vec<Taken> = gws
        .iter_mut()
        .zip(&nonces)
        .map(|(v, n)| take(v, n, &sel))
        .collect();
    let keys: Vec<_> = gws.iter().map(|v| v.attestation_public_key()).collect();
    let run = |taken: &[Taken]| {
        let items: Vec<_> = taken
            .iter()
            .zip(&keys)
            .zip(&nonces)
            .map(|((t, k), n)| {
                (
                    Evidence {
                        quote: &t.quote,
                        pcrs: &t.pcrs,
                        log: &t.log,
                    },
                    Expectation {
                        key: k,
                        nonce: n,
                        selection: &sel,
                        last: None,
                        accept_format1: false,
                    },
                )
            })
            .collect();
        verify_batch(&items)
    };
    assert!(run(&taken).iter().all(Result::is_ok));
    // One bad signature and one bad nonce: exactly those two fail, with their own errors.
    let n = taken[10].quote.len();
    taken[10].quote[n - 1] ^= 1;
    taken[20].quote = take(&mut gws[20], &[0xee; 32], &sel).quote;
    taken[20].pcrs = sel.iter().map(|p| gws[20].read(p)).collect();
    let res = run(&taken);
    for (i, r) in res.iter().enumerate() {
        match i {
            10 => assert_eq!(r.as_ref().unwrap_err(), &VerifyError::BadSignature),
            20 => assert_eq!(r.as_ref().unwrap_err(), &VerifyError::NonceMismatch),
            _ => assert!(r.is_ok(), "quote {i}: {r:?}"),
        }
    }
}

mod boot_keys {
    use vtpm::{BootEntropy, DeviceSecret, KeyHierarchy};

    fn hop(secret: u8, sources: &[(&str, &[u8])]) -> [u8; 32] {
        let k = KeyHierarchy::derive(&DeviceSecret::new([secret; 32]));
        let mut e = BootEntropy::default();
        for (l, b) in sources {
            e.add(l, b);
        }
        k.boot_keys(&e).hop_master()
    }

    const SOURCES: &[(&str, &[u8])] = &[
        ("dtb:rng-seed", &[1; 32]),
        ("dtb:kaslr-seed", &[2; 8]),
        ("rndr", &[]),
        ("cntpct", &[3; 8]),
    ];

    #[test]
    fn the_hop_master_depends_on_the_device_secret_and_on_every_source() {
        let base = hop(1, SOURCES);
        // Another device secret, same boot entropy: a guest that knows every source still
        // cannot compute the hop master.
        assert_ne!(hop(2, SOURCES), base);
        // Each source changes it.
        for i in 0..SOURCES.len() {
            let mut s = SOURCES.to_vec();
            let changed = [9u8; 8];
            s[i].1 = &changed;
            assert_ne!(hop(1, &s), base, "source {}", SOURCES[i].0);
        }
        // Same inputs, same key (the derivation is a function).
        assert_eq!(hop(1, SOURCES), base);
        // Sources are framed by label and length: moving bytes between them changes the key.
        assert_ne!(hop(1, &[("a", b"bc")]), hop(1, &[("ab", b"c")]));
        assert_ne!(hop(1, &[("a", b"b"), ("c", b"")]), hop(1, &[("a", b"bc")]));
    }

    #[test]
    fn known_answer() {
        // Pins the derivation (labels, framing, HKDF) to docs/keys.md: the expected value was
        // computed independently with Python's hmac/hashlib from that description.
        assert_eq!(
            hex::encode(hop(1, SOURCES)),
            "8503882c3cdfffdb597bf4f977636bf240022800eab50e0a7d2af8e1780cf379"
        );
    }

    #[test]
    fn guest_seeds_are_fresh_and_independent_of_the_hop_master() {
        let k = KeyHierarchy::derive(&DeviceSecret::new([1; 32]));
        let mut e = BootEntropy::default();
        e.add("dtb:rng-seed", &[1; 32]).add("cntpct", &[3; 8]);
        let boot = k.boot_keys(&e);
        let (mut rng, mut kaslr) = ([0u8; 32], [0u8; 8]);
        boot.guest_seed("rng-seed", &mut rng);
        boot.guest_seed("kaslr-seed", &mut kaslr);
        assert_ne!(rng, [1; 32], "the loader's seed is replaced");
        assert_ne!(rng, boot.hop_master());
        assert_ne!(rng[..8], kaslr);
        // Another boot (another counter value) gives the guest other seeds.
        let mut e2 = BootEntropy::default();
        e2.add("dtb:rng-seed", &[1; 32]).add("cntpct", &[4; 8]);
        let mut rng2 = [0u8; 32];
        k.boot_keys(&e2).guest_seed("rng-seed", &mut rng2);
        assert_ne!(rng, rng2);
        // Long outputs are filled, never left with the caller's bytes.
        let mut long = vec![0xAAu8; 9000];
        boot.guest_seed("rng-seed", &mut long);
        assert!(long[8160..].iter().all(|b| *b == 0));
        assert!(long[..32] == rng);
    }

    #[test]
    fn a_board_with_only_its_counter_is_flagged() {
        let mut e = BootEntropy::default();
        e.add("dtb:rng-seed", &[]).add("cntpct", &[3; 8]);
        assert!(!e.has_unpredictable("cntpct"));
        e.add("rndr", &[5; 32]);
        assert!(e.has_unpredictable("cntpct"));
    }
}

/// The signed quote's wire format, pinned: the signature's length prefix comes from the
/// `ed25519` crate's serde (a byte string), so a dependency update must not change it.
#[test]
fn signed_quote_encoding_known_answer() {
    let q = SignedQuote {
        body: heapless::Vec::from_slice(&[1, 2, 3]).unwrap(),
        signature: ed25519_dalek::Signature::from_bytes(&[0x5a; 64]),
    };
    let mut buf = [0u8; vtpm::quote::SIGNED_QUOTE_MAX];
    let bytes = q.encode(&mut buf).unwrap().to_vec();
    let mut want = vec![3, 1, 2, 3, 0x40];
    want.extend([0x5a; 64]);
    assert_eq!(bytes, want);
    assert_eq!(SignedQuote::decode(&want).unwrap(), q);
}

/// The format-2 body's wire format, pinned field by field (docs/quote-format.md): format 1's
/// fields, then the 32-byte log digest; format 1 is the same bytes without it.
#[test]
fn quote_body_format_2_known_answer() {
    let body = vtpm::QuoteBody {
        format: 2,
        identity: MonitorIdentity::new(MonitorKind::Hypervisor, "hv", [0xbb; 32]),
        nonce: [0x01; 32],
        selection: PcrSelection::from_indices([1, 65]).unwrap(),
        pcr_digest: [0x02; 32],
        counters: Counters {
            boot: 300,
            quote: 1,
        },
        event_count: 5,
        log_overflowed: false,
        log_digest: Some([0x03; 32]),
    };
    let mut want = vec![2, 0, 2, b'h', b'v'];
    want.extend([0xbb; 32]);
    want.extend([0x01; 32]);
    // Selection: 16 u64 varints; PCR 1 is bit 1 of word 0, PCR 65 bit 1 of word 1.
    want.extend([2, 2]);
    want.extend([0; 14]);
    want.extend([0x02; 32]);
    want.extend([0xac, 0x02, 1, 5, 0]);
    let v1 = want.clone();
    want.extend([0x03; 32]);
    let mut buf = [0u8; vtpm::quote::BODY_MAX];
    assert_eq!(body.encode(&mut buf).unwrap(), &want[..]);
    assert_eq!(vtpm::QuoteBody::decode(&want).unwrap(), body);
    let mut old = body.clone();
    old.format = 1;
    old.log_digest = None;
    let mut v1_bytes = v1;
    v1_bytes[0] = 1;
    assert_eq!(old.encode(&mut buf).unwrap(), &v1_bytes[..]);
    assert_eq!(vtpm::QuoteBody::decode(&v1_bytes).unwrap(), old);
    // A format-2 body without its digest, or with trailing bytes, is refused.
    assert!(vtpm::QuoteBody::decode(&want[..want.len() - 1]).is_err());
    want.push(0);
    assert!(vtpm::QuoteBody::decode(&want).is_err());
}
