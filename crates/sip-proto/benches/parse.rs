//! Parse and serialize typical presence/IM traffic: a Lync SUBSCRIBE, a NOTIFY carrying PIDF,
//! a MESSAGE and an INVITE with SDP (the fixtures under `tests/fixtures/`).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use entente_sip_proto::{parse, Frame, Framer};

const CASES: &[(&str, &[u8])] = &[
    (
        "subscribe",
        include_bytes!("../tests/fixtures/lync_subscribe.sip"),
    ),
    (
        "notify_pidf",
        include_bytes!("../tests/fixtures/notify_pidf.sip"),
    ),
    ("message", include_bytes!("../tests/fixtures/message.sip")),
    (
        "invite_sdp",
        include_bytes!("../tests/fixtures/lync_invite_im.sip"),
    ),
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("parse");
    for (name, raw) in CASES {
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(*name, |b| b.iter(|| parse(black_box(raw))));
    }
    g.finish();

    let mut g = c.benchmark_group("serialize");
    for (name, raw) in CASES {
        let msg = parse(raw).expect("fixture parses");
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(*name, |b| b.iter(|| black_box(&msg).to_bytes()));
    }
    g.finish();

    let mut g = c.benchmark_group("typed");
    let sub = parse(CASES[0].1).expect("fixture parses");
    g.bench_function("subscribe_transaction_keys", |b| {
        b.iter(|| {
            let h = black_box(&sub).headers();
            (
                h.top_via().ok(),
                h.cseq().ok(),
                h.call_id(),
                h.from().ok(),
                h.to().ok(),
            )
        })
    });
    g.finish();

    let mut g = c.benchmark_group("framer");
    let stream: Vec<u8> = CASES
        .iter()
        .flat_map(|(_, raw)| raw.iter().copied())
        .collect();
    g.throughput(Throughput::Bytes(stream.len() as u64));
    g.bench_function("four_messages_1k_reads", |b| {
        b.iter(|| {
            let mut f = Framer::default();
            let mut n = 0;
            for chunk in stream.chunks(1024) {
                f.push(chunk);
                while let Ok(Some(Frame::Message(_))) = f.poll() {
                    n += 1;
                }
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
