//! vTPM costs: PCR extend, quote signing, quote verification (single and batched).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vtpm::{
    ComponentKind, DeviceSecret, Evidence, Expectation, KeyHierarchy, Locality, MonitorIdentity,
    MonitorKind, PcrIndex, PcrSelection, Vtpm, verify, verify_batch,
};

const EVENTS: usize = 50;

struct Taken {
    quote: Vec<u8>,
    pcrs: Vec<[u8; 32]>,
    log: Vec<vtpm::Event>,
    key: ed25519_dalek::VerifyingKey,
    nonce: [u8; 32],
}

/// A gateway with a 50-entry event log spread over 12 PCRs, quoted once.
fn gateway(i: u8, sel: &PcrSelection) -> Taken {
    let keys = KeyHierarchy::derive(&DeviceSecret::new([i; 32]));
    let mut v = Vtpm::<256>::new(
        &keys,
        MonitorIdentity::new(MonitorKind::Hypervisor, "bench", [0; 32]),
        1,
    );
    for e in 0..EVENTS {
        let pcr = PcrIndex::new([1, 3, 4, 5, 6, 9, 10, 32, 33, 34, 512, 513][e % 12]).unwrap();
        v.extend(
            Locality::Monitor,
            pcr,
            &vtpm::sha256(&[i, e as u8]),
            ComponentKind::Other,
            "component",
            "1.0",
        )
        .unwrap();
    }
    let nonce = [i; 32];
    let q = v.quote(&nonce, sel).unwrap();
    let mut buf = [0u8; 1024];
    Taken {
        quote: q.encode(&mut buf).unwrap().to_vec(),
        pcrs: sel.iter().map(|p| v.read(p)).collect(),
        log: v.log().entries().to_vec(),
        key: v.attestation_public_key(),
        nonce,
    }
}

fn benches(c: &mut Criterion) {
    let keys = KeyHierarchy::derive(&DeviceSecret::new([1; 32]));
    let mut v = Vtpm::<1>::new(
        &keys,
        MonitorIdentity::new(MonitorKind::Hypervisor, "bench", [0; 32]),
        1,
    );
    c.bench_function("pcr_extend", |b| {
        let mut bank = vtpm::PcrBank::new();
        let pcr = PcrIndex::new(10).unwrap();
        b.iter(|| bank.extend(pcr, black_box(&[3; 32])))
    });

    let sel = PcrSelection::from_indices([1, 3, 4, 5, 6, 9, 10, 32, 33, 34, 512, 513]).unwrap();
    c.bench_function("quote_sign", |b| {
        b.iter(|| v.quote(black_box(&[1; 32]), &sel).unwrap())
    });

    let fleet: Vec<Taken> = (0..64).map(|i| gateway(i, &sel)).collect();
    let items: Vec<_> = fleet
        .iter()
        .map(|t| {
            (
                Evidence {
                    quote: &t.quote,
                    pcrs: &t.pcrs,
                    log: &t.log,
                },
                Expectation {
                    key: &t.key,
                    nonce: &t.nonce,
                    selection: &sel,
                    last: None,
                    accept_format1: false,
                },
            )
        })
        .collect();
    let mut g = c.benchmark_group("quote_verify");
    g.throughput(Throughput::Elements(1));
    g.bench_function("single", |b| {
        b.iter(|| verify(black_box(&items[0].0), &items[0].1).unwrap())
    });
    g.throughput(Throughput::Elements(64));
    g.bench_function("batch64", |b| {
        b.iter(|| {
            let r = verify_batch(black_box(&items));
            assert!(r.iter().all(Result::is_ok));
        })
    });
    g.finish();
}

criterion_group!(vtpm_benches, benches);
criterion_main!(vtpm_benches);
