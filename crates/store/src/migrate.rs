//! Versioned schema migrations, tracked in SQLite's `user_version`.
//!
//! Each migration runs once, in order, inside a transaction together with the version bump, so
//! a store is always at exactly one known version. A store newer than this binary is refused
//! rather than written with an older idea of the schema.

use rusqlite::Connection;

use crate::sqlite::StoreError;

/// The migrations, in order; the version after applying `MIGRATIONS[i]` is `i + 1`.
const MIGRATIONS: &[&str] = &[
    include_str!("../migrations/0001_audit.sql"),
    include_str!("../migrations/0002_drop_kind_index.sql"),
    include_str!("../migrations/0003_session_bounds.sql"),
];

/// The store's schema version and this binary's; a newer store is refused.
fn versions(conn: &Connection) -> Result<(i64, i64), StoreError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    if current > known {
        return Err(StoreError::TooNew {
            found: current,
            known,
        });
    }
    Ok((current, known))
}

/// For a read-only opening: the store must be at exactly this binary's version (it cannot be
/// migrated from here, and an older schema may lack what the reader needs).
pub fn check(conn: &Connection) -> Result<(), StoreError> {
    match versions(conn)? {
        (found, known) if found < known => Err(StoreError::TooOld { found, known }),
        _ => Ok(()),
    }
}

pub fn run(conn: &mut Connection) -> Result<(), StoreError> {
    let (current, _) = versions(conn)?;
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(current).unwrap_or(0))
    {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
        tx.commit()?;
    }
    Ok(())
}
