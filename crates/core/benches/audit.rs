//! Costs on the statement path: chaining an audit record, masking PANs in statement text.
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gatehouse_core::audit::{AuditEvent, AuditRecord, RecordKind};
use gatehouse_core::pan::mask_pans;

fn bench(c: &mut Criterion) {
    let mut ev = AuditEvent::new(
        RecordKind::Statement,
        "01a203e8-c834-712f-863b-8912cc920522",
    );
    ev.subject = Some("fraud-bot".into());
    ev.groups = vec!["fraud-bots".into()];
    ev.statement = Some("SELECT abalance FROM pgbench_accounts WHERE aid = 48213;".into());
    c.bench_function("audit/chain_record", |b| {
        b.iter(|| AuditRecord::chain(42, "00ff", ev.clone()))
    });

    let clean = "SELECT id, amount, created_at FROM payments WHERE customer_id = 1234 AND amount > 10.50 ORDER BY created_at DESC LIMIT 100; ".repeat(64);
    let dirty = clean.replace("1234", "4111111111111111");
    let mut g = c.benchmark_group("pan");
    g.throughput(Throughput::Bytes(clean.len() as u64));
    g.bench_function("mask_text_without_pans", |b| {
        b.iter(|| mask_pans(&clean).len())
    });
    g.throughput(Throughput::Bytes(dirty.len() as u64));
    g.bench_function("mask_text_with_pans", |b| {
        b.iter(|| mask_pans(&dirty).len())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
