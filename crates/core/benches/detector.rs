//! Throughput of the card-number content detector, which runs over every text byte a client
//! receives when `detectors = ["pan"]`. Target: over 1 GB/s per core on text without cards.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatehouse_core::masking::{MaskStyle, TokenKey, detector, mask_pans_with};

fn corpus() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    // Prose without digits, typical result text with digits (ids, dates, amounts), and the
    // same with a card number every ~500 bytes.
    let prose = "The quick brown fox jumps over the lazy dog; customers asked about refunds, \
        chargebacks and the status of their orders in the support chat. "
        .repeat(8192)
        .into_bytes();
    let row = "order 918273 placed 2026-11-22 10:41:07 amount 1249.50 EUR customer 44817 \
        status settled note: delivered to the front desk, signed by J. Smith; ";
    let numeric = row.repeat(8192).into_bytes();
    let carded = format!("{row}{row}{row}card 4111 1111 1111 1111 on file; ")
        .repeat(2048)
        .into_bytes();
    (prose, numeric, carded)
}

fn bench(c: &mut Criterion) {
    let (prose, numeric, carded) = corpus();
    let key = TokenKey::from_bytes([3; 32]);
    let mut g = c.benchmark_group("detector");
    for (name, text) in [
        ("prose_without_digits", &prose),
        ("rows_with_digits_no_cards", &numeric),
        ("rows_with_cards", &carded),
    ] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(format!("find/{name}"), |b| {
            b.iter(|| {
                let mut n = 0u32;
                detector::find_pans(text, |_| n += 1);
                n
            })
        });
        g.bench_function(format!("mask_last4/{name}"), |b| {
            b.iter(|| mask_pans_with(MaskStyle::Last4, &key, text).map_or(0, |(v, _)| v.len()))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
