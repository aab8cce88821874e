//! HOP_TAG + HOP_CHECK primitive cost per packet size.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gw_hoptag::{HopKey, HopReceiver, HopSender};
use std::hint::black_box;

fn tag_and_check(c: &mut Criterion) {
    let mut g = c.benchmark_group("hop_tag_check");
    for size in [64usize, 512, 1500] {
        let packet = vec![0xa5u8; size];
        let key = HopKey::new([7; 32]);
        let mut tx = HopSender::new(&key, 1, 0);
        let mut rx = HopReceiver::new(&key, 1, 0);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::from_parameter(size), &packet, |b, p| {
            b.iter(|| {
                let t = tx.tag(black_box(p)).unwrap();
                rx.check(black_box(p), &t).unwrap()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, tag_and_check);
criterion_main!(benches);
