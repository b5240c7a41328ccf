//! SQLite backend (WAL mode, versioned migrations).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use futures_util::TryStreamExt;
use gatehouse_core::audit::{
    AuditEvent, AuditLog, AuditRecord, Checkpoint, Outcome, RecordKind, StoreFailure,
};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Db(#[from] sqlx::Error),
    #[error("store migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store: cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("store: record {seq} is unreadable: {problem}")]
    Corrupt { seq: i64, problem: String },
    #[error("store: the database {0} does not exist (has the gateway ever run with this config?)")]
    Missing(String),
}

/// One session as listed by `gatehouse sessions list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionSummary {
    pub session_id: String,
    pub started_at: String,
    pub ended_at: Option<String>,
    pub subject: Option<String>,
    pub connection: Option<String>,
    pub client_addr: Option<String>,
    pub statements: i64,
}

/// The SQLite store. Cloning shares the pool.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

const COLUMNS: &str = "seq, time, kind, session_id, subject, groups, issuer, client_addr, \
    connection, statement, params, outcome, sqlstate, rule, rows, duration_ms, statement_seq, \
    detail, prev_hash, hash";

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if let Some(dir) = Path::new(path).parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let opts = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self { pool })
    }

    /// Opens an existing database for reading (CLI commands must not create one).
    pub async fn open_existing(url: &str) -> Result<Self, StoreError> {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        let path = path.split_once('?').map_or(path, |(p, _)| p);
        if !Path::new(path).exists() {
            return Err(StoreError::Missing(path.to_owned()));
        }
        Self::open(url).await
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Calls `f` for every record in chain order, streaming (bounded memory).
    pub async fn for_each_record<F>(
        &self,
        since_time: Option<&str>,
        mut f: F,
    ) -> Result<(), StoreError>
    where
        F: FnMut(AuditRecord) -> bool,
    {
        let sql = match since_time {
            Some(_) => format!("SELECT {COLUMNS} FROM audit_records WHERE time >= ? ORDER BY seq"),
            None => format!("SELECT {COLUMNS} FROM audit_records ORDER BY seq"),
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(t) = since_time {
            q = q.bind(t.to_owned());
        }
        let mut rows = q.fetch(&self.pool);
        while let Some(row) = rows.try_next().await? {
            if !f(record_from_row(&row)?) {
                break;
            }
        }
        Ok(())
    }

    pub async fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, hash, time, signature, key_id FROM audit_checkpoints ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Checkpoint {
                    seq: u64_of(r.try_get::<i64, _>("seq")?),
                    hash: r.try_get("hash")?,
                    time: r.try_get("time")?,
                    signature: r.try_get("signature")?,
                    key_id: r.try_get("key_id")?,
                })
            })
            .collect()
    }

    pub async fn sessions(&self, limit: i64) -> Result<Vec<SessionSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT s.session_id, s.time AS started_at, s.subject, s.connection, s.client_addr,
                    (SELECT e.time FROM audit_records e
                      WHERE e.session_id = s.session_id AND e.kind = 'session_end'
                      ORDER BY e.seq DESC LIMIT 1) AS ended_at,
                    (SELECT count(*) FROM audit_records c
                      WHERE c.session_id = s.session_id AND c.kind = 'statement') AS statements
               FROM audit_records s
              WHERE s.kind = 'session_start'
              ORDER BY s.seq DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SessionSummary {
                    session_id: r.try_get("session_id")?,
                    started_at: r.try_get("started_at")?,
                    ended_at: r.try_get("ended_at")?,
                    subject: r.try_get("subject")?,
                    connection: r.try_get("connection")?,
                    client_addr: r.try_get("client_addr")?,
                    statements: r.try_get("statements")?,
                })
            })
            .collect()
    }

    /// Every record of one session, in order (sessions are bounded by `result_cap_bytes`
    /// per statement; a very long session is paged by the caller through `limit`).
    pub async fn session_records(
        &self,
        session_id: &str,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM audit_records WHERE session_id = ? ORDER BY seq LIMIT ?"
        )))
        .bind(session_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(record_from_row).collect()
    }

    /// Runs a raw statement (tests use it to tamper with the store and prove detection).
    pub async fn execute_raw(&self, sql: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    async fn append_inner(
        &self,
        records: &[AuditRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        // SQLite allows 32766 bound parameters; 20 per row → chunks of 1000 rows.
        for chunk in records.chunks(1000) {
            let mut qb: QueryBuilder<Sqlite> =
                QueryBuilder::new(format!("INSERT INTO audit_records ({COLUMNS}) "));
            qb.push_values(chunk, |mut b, r| {
                let e = &r.event;
                b.push_bind(i64_of(r.seq))
                    .push_bind(e.time.clone())
                    .push_bind(e.kind.as_str())
                    .push_bind(e.session_id.clone())
                    .push_bind(e.subject.clone())
                    .push_bind(serde_json::to_string(&e.groups).unwrap_or_else(|_| "[]".into()))
                    .push_bind(e.issuer.clone())
                    .push_bind(e.client_addr.clone())
                    .push_bind(e.connection.clone())
                    .push_bind(e.statement.clone())
                    .push_bind(
                        e.params
                            .as_ref()
                            .and_then(|p| serde_json::to_string(p).ok()),
                    )
                    .push_bind(e.outcome.map(Outcome::as_str))
                    .push_bind(e.sqlstate.clone())
                    .push_bind(e.rule.clone())
                    .push_bind(e.rows.map(i64_of))
                    .push_bind(e.duration_ms)
                    .push_bind(e.statement_seq.map(i64_of))
                    .push_bind(e.detail.clone())
                    .push_bind(r.prev_hash.clone())
                    .push_bind(r.hash.clone());
            });
            qb.build().execute(&mut *tx).await?;
        }
        if let Some(cp) = checkpoint {
            sqlx::query(
                "INSERT OR IGNORE INTO audit_checkpoints (seq, hash, time, signature, key_id)
                 VALUES (?, ?, ?, ?, ?)",
            )
            .bind(i64_of(cp.seq))
            .bind(&cp.hash)
            .bind(&cp.time)
            .bind(&cp.signature)
            .bind(&cp.key_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn head_inner(&self) -> Result<Option<(u64, String)>, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some((u64_of(r.try_get("seq")?), r.try_get("hash")?))),
            None => Ok(None),
        }
    }
}

impl AuditLog for SqliteStore {
    async fn head(&mut self) -> Result<Option<(u64, String)>, StoreFailure> {
        self.head_inner()
            .await
            .map_err(|e| StoreFailure(e.to_string()))
    }

    async fn append(
        &mut self,
        records: &[AuditRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StoreFailure> {
        self.append_inner(records, checkpoint)
            .await
            .map_err(|e| StoreFailure(e.to_string()))
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn record_from_row(r: &SqliteRow) -> Result<AuditRecord, StoreError> {
    let seq: i64 = r.try_get("seq")?;
    let corrupt = |problem: String| StoreError::Corrupt { seq, problem };
    let kind: String = r.try_get("kind")?;
    let groups: String = r.try_get("groups")?;
    let params: Option<String> = r.try_get("params")?;
    let outcome: Option<String> = r.try_get("outcome")?;
    let event = AuditEvent {
        time: r.try_get("time")?,
        kind: RecordKind::parse(&kind).ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?,
        session_id: r.try_get("session_id")?,
        subject: r.try_get("subject")?,
        groups: serde_json::from_str(&groups).map_err(|e| corrupt(format!("groups: {e}")))?,
        issuer: r.try_get("issuer")?,
        client_addr: r.try_get("client_addr")?,
        connection: r.try_get("connection")?,
        statement: r.try_get("statement")?,
        params: match params {
            Some(p) => Some(serde_json::from_str(&p).map_err(|e| corrupt(format!("params: {e}")))?),
            None => None,
        },
        outcome: match outcome {
            Some(o) => {
                Some(Outcome::parse(&o).ok_or_else(|| corrupt(format!("unknown outcome {o:?}")))?)
            }
            None => None,
        },
        sqlstate: r.try_get("sqlstate")?,
        rule: r.try_get("rule")?,
        rows: r.try_get::<Option<i64>, _>("rows")?.map(u64_of),
        duration_ms: r.try_get("duration_ms")?,
        statement_seq: r.try_get::<Option<i64>, _>("statement_seq")?.map(u64_of),
        detail: r.try_get("detail")?,
    };
    Ok(AuditRecord {
        seq: u64_of(seq),
        event,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::audit::{ChainVerifier, CheckpointSigner, spawn_writer};

    #[tokio::test]
    async fn round_trip_verifies_and_tampering_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/a.db", dir.path().display());
        let store = SqliteStore::open(&url).await.unwrap();
        let signer = CheckpointSigner::load_or_create(dir.path()).unwrap();
        let (auditor, task) = spawn_writer(store.clone(), signer, 3, true).await.unwrap();
        for i in 0..7u64 {
            let mut ev = AuditEvent::new(RecordKind::Statement, "s1");
            ev.statement = Some(format!("SELECT {i}"));
            ev.params = Some(vec![Some("x".into()), None]);
            ev.groups = vec!["dba".into()];
            ev.rows = Some(i);
            ev.duration_ms = Some(0.125 * i as f64);
            ev.detail = Some(r#"{"tls":true}"#.into());
            auditor.record(ev).await.unwrap();
        }
        drop(auditor);
        task.await.unwrap();

        let verify = |store: SqliteStore, dir: std::path::PathBuf| async move {
            let signer = CheckpointSigner::load(&dir).unwrap();
            let cps = store.checkpoints().await.unwrap();
            let mut v = ChainVerifier::new(&signer, cps).map_err(|e| e.to_string())?;
            let mut err = None;
            store
                .for_each_record(None, |r| match v.push(&r) {
                    Ok(()) => true,
                    Err(e) => {
                        err = Some(e.to_string());
                        false
                    }
                })
                .await
                .unwrap();
            if let Some(e) = err {
                return Err(e);
            }
            v.finish().map(|r| r.records).map_err(|e| e.to_string())
        };
        assert_eq!(verify(store.clone(), dir.path().to_owned()).await, Ok(7));

        store
            .execute_raw("UPDATE audit_records SET statement = 'SELECT 42' WHERE seq = 4")
            .await
            .unwrap();
        let err = verify(store.clone(), dir.path().to_owned())
            .await
            .unwrap_err();
        assert!(err.starts_with("record 4:"), "{err}");
    }
}
