//! Frame splitting throughput: the per-message cost every forwarded byte pays.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use bytes::{BufMut, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatehouse_pg::codec::{FrameReader, Side};

fn data_rows(n: usize) -> BytesMut {
    let mut b = BytesMut::new();
    for i in 0..n {
        let v = format!("value-{i:08}");
        b.put_u8(b'D');
        b.put_i32(4 + 2 + 2 * (4 + v.len()) as i32);
        b.put_i16(2);
        for _ in 0..2 {
            b.put_i32(v.len() as i32);
            b.put_slice(v.as_bytes());
        }
    }
    b
}

fn bench(c: &mut Criterion) {
    let input = data_rows(10_000);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(input.len() as u64));
    g.bench_function("split_10k_data_rows", |b| {
        let reader = FrameReader::new(Side::Backend, 1 << 30);
        b.iter(|| {
            let mut buf = input.clone();
            let mut n = 0;
            while let Ok(Some(f)) = reader.next_frame(&mut buf) {
                n += f.len();
            }
            n
        })
    });
    g.bench_function("scan_headers_10k_data_rows", |b| {
        let reader = FrameReader::new(Side::Backend, 1 << 30);
        b.iter(|| {
            let mut off = 0usize;
            while let Ok(0) = reader.check_header(&input[off..]) {
                let len = i32::from_be_bytes([
                    input[off + 1],
                    input[off + 2],
                    input[off + 3],
                    input[off + 4],
                ]);
                off += len as usize + 1;
                if off >= input.len() {
                    break;
                }
            }
            off
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
