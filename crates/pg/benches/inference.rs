//! The per-statement cost of judging a masked identity's statement (`builtin:masked-inference`)
//! once it is analysed: what every statement of a masked session pays on top of the analysis
//! (itself cached by shape, see `gatehouse-sql`'s `analysis` bench).
#![allow(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse_core::masking::inference::{MaskedData, judge};
use gatehouse_core::masking::{ColumnMask, MaskStyle};
use gatehouse_core::policy::ColumnRef;
use gatehouse_sql::{AnalysisContext, analyze};

/// `*.card_number` masked `last4` (so the join compares like with like), `*.cvv` a
/// verification code.
struct Masks;

impl MaskedData for Masks {
    fn mask(&self, c: &ColumnRef) -> Option<ColumnMask> {
        let table = c.table.as_ref().map(|t| t.name.as_str());
        let card = c.column == "card_number" || (table == Some("payments") && c.column == "*");
        let cvv = c.column == "cvv";
        (card || cvv).then_some(ColumnMask {
            style: MaskStyle::Last4,
            verification_code: cvv,
            derived: false,
        })
    }
}

fn bench(c: &mut Criterion) {
    let ctx = AnalysisContext {
        search_path: Vec::new(),
        ..AnalysisContext::default()
    };
    let mut g = c.benchmark_group("inference");
    for (name, sql) in [
        (
            "lookup_allowed",
            "SELECT id, card_number FROM payments WHERE id = 42",
        ),
        (
            "join_group_allowed",
            "SELECT p.card_number, count(*) FROM payments p JOIN orders o ON o.card_number = p.card_number \
             WHERE right(p.card_number, 4) = '1111' GROUP BY p.card_number ORDER BY 2 DESC LIMIT 10",
        ),
        (
            "implicit_flow_refused",
            "SELECT id FROM payments WHERE substr(card_number, 1, 1) = '4' ORDER BY id",
        ),
        (
            "no_masked_column",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 7",
        ),
    ] {
        let stmts = analyze(sql, &ctx).unwrap();
        let expected = name.ends_with("refused");
        assert_eq!(judge(&stmts[0], &Masks).is_some(), expected, "{sql}");
        g.bench_function(name, |b| {
            b.iter(|| stmts.iter().filter_map(|s| judge(s, &Masks)).count())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
