//! Arbitrary text as a MySQL statement: the analyser must answer every input with an analysis
//! or an error — never a panic, never a stack overflow — and the same answer twice (the
//! gateway caches it by text).
#![no_main]

use gatehouse_sql::mysql::{MysqlContext, analyze_mysql};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else {
        return;
    };
    let ctx = MysqlContext {
        database: Some("shop".into()),
    };
    let first = analyze_mysql(sql, &ctx);
    let again = analyze_mysql(sql, &ctx);
    assert_eq!(first, again, "the analysis is deterministic");
});
