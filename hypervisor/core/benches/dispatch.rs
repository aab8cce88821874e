//! HOP_TAG + HOP_CHECK through the monitor's dispatcher (decode, caller check, encode): what a
//! hypercall costs once trapped, measured beside the bare primitive in the hoptag bench.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gw_abi::{Function, MAX_RESPONSE, Request, Response};
use gw_core::{Caller, Config, Monitor};
use std::hint::black_box;
use vtpm::{DeviceSecret, KeyHierarchy, MonitorIdentity, MonitorKind};

fn dispatch(c: &mut Criterion) {
    let keys = KeyHierarchy::derive(&DeviceSecret::new([1; 32]));
    let mut m = Box::new(Monitor::<64, 8>::new(Config {
        keys: &keys,
        identity: MonitorIdentity::new(MonitorKind::Hypervisor, "bench", [0; 32]),
        boot_counter: 1,
        controller_key: None,
        hop_master: [3; 32],
    }));
    let me = Caller {
        space: 1,
        program: [1; 32],
    };
    let mut out = vec![0u8; MAX_RESPONSE];
    let mut req = vec![0u8; gw_abi::MAX_REQUEST];
    let reg = Request::HopKeyRegister {
        chain: 1,
        stage: 0,
        hops: 1,
        name: "vswitch",
        version: "1",
    };
    let n = reg.encode(&mut req).unwrap();
    m.handle(&me, Function::HopKeyRegister, &req[..n], &mut out)
        .unwrap();

    let mut g = c.benchmark_group("monitor_hop_tag_check");
    for size in [64usize, 512, 1500] {
        let packet = vec![0x5au8; size];
        let mut frame = Vec::with_capacity(size + 48);
        let mut creq = vec![0u8; size + 128];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &packet, |b, p| {
            b.iter(|| {
                let n = Request::HopTag {
                    slot: 0,
                    packet: black_box(p),
                }
                .encode(&mut req)
                .unwrap();
                let len = m
                    .handle(&me, Function::HopTag, &req[..n], &mut out)
                    .unwrap();
                let Ok(Response::Tagged { trailer }) = Response::decode(&out[..len]) else {
                    panic!()
                };
                frame.clear();
                frame.extend_from_slice(p);
                frame.extend_from_slice(trailer);
                let n = Request::HopCheck {
                    slot: 0,
                    frame: &frame,
                }
                .encode(&mut creq)
                .unwrap();
                m.handle(&me, Function::HopCheck, &creq[..n], &mut out)
                    .unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
