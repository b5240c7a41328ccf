//! Statement analysis cost: a parse + tree walk on a cache miss, a hash lookup on a hit (by
//! exact text, or by shape when only literal values differ).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_sql::{AnalysisCache, AnalysisContext, analyze};

fn bench(c: &mut Criterion) {
    let ctx = AnalysisContext::default();
    let short = "SELECT abalance FROM pgbench_accounts WHERE aid = 48213";
    let long = format!(
        "WITH recent AS (SELECT p.id, p.customer_id, p.amount FROM public.payments p \
         WHERE p.created_at > now() - interval '1 day') \
         SELECT c.name, sum(r.amount), count(*) FROM recent r JOIN customers c ON c.id = r.customer_id \
         WHERE c.id IN ({}) GROUP BY c.name HAVING sum(r.amount) > 100 ORDER BY 2 DESC LIMIT 50",
        (1..200)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    c.bench_function("analysis/short_uncached", |b| {
        b.iter(|| analyze(short, &ctx).unwrap())
    });
    c.bench_function("analysis/long_uncached", |b| {
        b.iter(|| analyze(&long, &ctx).unwrap())
    });
    let cache = AnalysisCache::new(1 << 20);
    cache.analyze(short, &ctx).unwrap();
    c.bench_function("analysis/short_cached", |b| {
        b.iter(|| cache.analyze(short, &ctx).unwrap())
    });
    // pgbench's simple protocol: a new literal every time, answered by the statement's shape.
    let texts: Vec<String> = (0..1000)
        .map(|i| format!("SELECT abalance FROM pgbench_accounts WHERE aid = {i}"))
        .collect();
    let mut i = 0usize;
    c.bench_function("analysis/short_new_literal_each_time", |b| {
        b.iter(|| {
            i = (i + 1) % texts.len();
            cache.analyze(&texts[i], &ctx).unwrap()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
