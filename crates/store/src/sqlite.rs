//! SQLite backend (WAL mode): a writer connection owned by the audit writer thread, and
//! short-lived reader connections for the CLI and the admin API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gatehouse_core::audit::{
    AuditEvent, AuditLog, AuditRecord, Checkpoint, Outcome, RecordKind, StoreFailure,
};
use rusqlite::{Connection, OpenFlags, Row, params};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("store: cannot create {path}: {source}")]
    Dir {
        path: String,
        source: std::io::Error,
    },
    #[error("store: record {seq} is unreadable: {problem}")]
    Corrupt { seq: i64, problem: String },
    #[error("store: the database {0} does not exist (has the gateway ever run with this config?)")]
    Missing(String),
    #[error("store: {0:?} is not a sqlite:// URL")]
    Url(String),
    #[error("store: schema version {found} is newer than this gatehouse knows ({known})")]
    TooNew { found: i64, known: i64 },
    #[error(
        "store: schema version {found} is older than this gatehouse's ({known}); start the \
         gateway once to migrate it"
    )]
    TooOld { found: i64, known: i64 },
    #[error("store: opened read-only")]
    ReadOnly,
    #[error("store: internal error: {0}")]
    Internal(String),
}

/// When a commit counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Each commit is fsynced: survives power loss.
    Fsync,
    /// Each commit reaches the operating system (WAL; fsync at checkpoints): survives a crash
    /// of the gateway process, not of the machine.
    Os,
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
    /// `postgres`, `mysql`, ...: the adapter that served the session.
    pub protocol: String,
    pub statements: i64,
}

/// A SQLite audit store, addressed by path. Cheap to clone; each reader call opens its own
/// connection (reads are rare: CLI, admin API, verification).
#[derive(Clone, Debug)]
pub struct SqliteStore {
    path: PathBuf,
    durability: Durability,
    /// Opened for reading only ([`SqliteStore::open_existing`]): every connection is
    /// `SQLITE_OPEN_READ_ONLY`, so a reader cannot change the audit trail even by mistake.
    read_only: bool,
}

const COLUMNS: &str = "seq, time, kind, session_id, subject, groups, issuer, client_addr, \
    connection, statement, params, outcome, sqlstate, rule, rows, duration_ms, statement_seq, \
    detail, prev_hash, hash";

const INSERT: &str = "INSERT INTO audit_records (seq, time, kind, session_id, subject, groups, \
    issuer, client_addr, connection, statement, params, outcome, sqlstate, rule, rows, \
    duration_ms, statement_seq, detail, prev_hash, hash) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)";

fn path_of(url: &str) -> Result<PathBuf, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .ok_or_else(|| StoreError::Url(url.to_owned()))?;
    let path = rest.split_once('?').map_or(rest, |(p, _)| p);
    Ok(PathBuf::from(path))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at a `sqlite://PATH` URL and migrates it, with
    /// every commit fsynced.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, Durability::Fsync)
    }

    /// Like [`SqliteStore::open`], with the chosen commit durability.
    pub fn open_with(url: &str, durability: Durability) -> Result<Self, StoreError> {
        let path = path_of(url)?;
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        let store = Self {
            path,
            durability,
            read_only: false,
        };
        let mut conn = store.connect(true)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        crate::migrate::run(&mut conn)?;
        Ok(store)
    }

    /// Opens an existing database for reading only (CLI commands must neither create one,
    /// nor migrate it, nor be able to change it). The schema must be this binary's.
    pub fn open_existing(url: &str) -> Result<Self, StoreError> {
        let path = path_of(url)?;
        if !path.exists() {
            return Err(StoreError::Missing(path.display().to_string()));
        }
        let store = Self {
            path,
            durability: Durability::Fsync,
            read_only: true,
        };
        let conn = store.connect(false)?;
        crate::migrate::check(&conn)?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The audit journal's directory: next to the database, `NAME.journal`. The journal holds
    /// the records the gateway has made durable but may not have stored here yet.
    pub fn journal_dir(&self) -> PathBuf {
        self.path.with_extension("journal")
    }

    fn connect(&self, create: bool) -> Result<Connection, StoreError> {
        if self.read_only {
            let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
            let conn = Connection::open_with_flags(&self.path, flags)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            return Ok(conn);
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(&self.path, flags)?;
        conn.busy_timeout(Duration::from_secs(5))?;
        conn.pragma_update(
            None,
            "synchronous",
            match self.durability {
                Durability::Fsync => "FULL",
                Durability::Os => "NORMAL",
            },
        )?;
        Ok(conn)
    }

    /// The connection the audit writer appends through.
    pub fn writer(&self) -> Result<SqliteWriter, StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        let conn = self.connect(false)?;
        // The audit journal makes records durable before their statements run; the store is
        // its index, so a commit need not wait for the disk. Before the journal recycles a
        // segment, `AuditLog::sync` makes everything stored so far durable.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        Ok(SqliteWriter { conn })
    }

    /// Calls `f` for every record in chain order, streaming (bounded memory); `f` returns
    /// false to stop.
    pub fn for_each_record<F>(&self, since_time: Option<&str>, mut f: F) -> Result<(), StoreError>
    where
        F: FnMut(AuditRecord) -> bool,
    {
        let conn = self.connect(false)?;
        let mut stmt = match since_time {
            Some(_) => conn.prepare(&format!(
                "SELECT {COLUMNS} FROM audit_records WHERE time >= ?1 ORDER BY seq"
            ))?,
            None => conn.prepare(&format!("SELECT {COLUMNS} FROM audit_records ORDER BY seq"))?,
        };
        let mut rows = match since_time {
            Some(t) => stmt.query(params![t])?,
            None => stmt.query([])?,
        };
        let mut last = None;
        while let Some(row) = rows.next()? {
            let rec = record_from_row(row)?;
            last = Some(rec.seq);
            if !f(rec) {
                return Ok(());
            }
        }
        drop(rows);
        drop(stmt);
        // Records durable in the journal but not indexed yet (the gateway indexes within
        // milliseconds; a crash leaves them for the next start): readers see them too.
        let indexed = match last {
            Some(seq) if since_time.is_none() => seq,
            _ => conn
                .query_row("SELECT COALESCE(MAX(seq), 0) FROM audit_records", [], |r| {
                    r.get::<_, i64>(0)
                })
                .map(u64_of)?,
        };
        // Only what continues the store without a gap: a segment recycled while this reads
        // holds records the store has by now, and a shorter prefix is still a true one.
        let mut next = indexed + 1;
        let mut go = true;
        gatehouse_core::audit::journal::scan(&self.journal_dir(), |rec| {
            if !go || rec.seq < next {
                return;
            }
            if rec.seq > next {
                go = false;
                return;
            }
            next += 1;
            if since_time.is_none_or(|t| rec.event.time.as_str() >= t) {
                go = f(rec);
            }
        })
        .map_err(|e| StoreError::Internal(e.to_string()))?;
        Ok(())
    }

    pub fn checkpoints(&self) -> Result<Vec<Checkpoint>, StoreError> {
        let conn = self.connect(false)?;
        let mut stmt = conn.prepare(
            "SELECT seq, hash, time, signature, key_id FROM audit_checkpoints ORDER BY seq",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(Checkpoint {
                seq: u64_of(r.get::<_, i64>(0)?),
                hash: r.get(1)?,
                time: r.get(2)?,
                signature: r.get(3)?,
                key_id: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn sessions(&self, limit: i64) -> Result<Vec<SessionSummary>, StoreError> {
        let conn = self.connect(false)?;
        let mut stmt = conn.prepare(
            "SELECT s.session_id, s.time, s.subject, s.connection, s.client_addr, e.time,
                    (SELECT count(*) FROM audit_records c
                      WHERE c.seq > s.seq AND c.seq < coalesce(e.seq, 9223372036854775807)
                        AND c.session_id = s.session_id AND c.kind = 'statement'),
                    json_extract(s.detail, '$.protocol')
               FROM audit_records s
               LEFT JOIN audit_records e
                 ON e.session_id = s.session_id AND e.kind = 'session_end'
              WHERE s.kind = 'session_start'
              ORDER BY s.seq DESC LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit], |r| {
            Ok(SessionSummary {
                session_id: r.get(0)?,
                started_at: r.get(1)?,
                subject: r.get(2)?,
                connection: r.get(3)?,
                client_addr: r.get(4)?,
                ended_at: r.get(5)?,
                statements: r.get(6)?,
                protocol: gatehouse_core::audit::detail::session_protocol(
                    r.get::<_, Option<String>>(7).ok().flatten().as_deref(),
                )
                .to_owned(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Every record of one session, in order, up to `limit`.
    pub fn session_records(
        &self,
        session_id: &str,
        limit: i64,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.connect(false)?;
        // A session's records lie between its start and end records: scan that seq range.
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM audit_records
              WHERE seq >= coalesce((SELECT min(seq) FROM audit_records
                                      WHERE kind = 'session_start' AND session_id = ?1), 0)
                AND seq <= coalesce((SELECT max(seq) FROM audit_records
                                      WHERE kind = 'session_end' AND session_id = ?1),
                                    9223372036854775807)
                AND session_id = ?1
              ORDER BY seq LIMIT ?2"
        ))?;
        let mut rows = stmt.query(params![session_id, limit])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(record_from_row(row)?);
        }
        Ok(out)
    }

    /// Up to `limit` records with `seq > after`, in chain order (continuous SIEM sinks tail the
    /// store with it).
    pub fn records_after(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let conn = self.connect(false)?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {COLUMNS} FROM audit_records WHERE seq > ?1 ORDER BY seq LIMIT ?2"
        ))?;
        let after = i64::try_from(after).unwrap_or(i64::MAX);
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![after, limit])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(record_from_row(row)?);
        }
        Ok(out)
    }

    /// The lowest stored seq (1 unless a retention purge ran), if any record is stored.
    pub fn first_seq(&self) -> Result<Option<u64>, StoreError> {
        let conn = self.connect(false)?;
        let v: Option<i64> =
            conn.query_row("SELECT min(seq) FROM audit_records", [], |r| r.get(0))?;
        Ok(v.map(u64_of))
    }

    /// The highest stored seq, if any record is stored.
    pub fn last_seq(&self) -> Result<Option<u64>, StoreError> {
        let conn = self.connect(false)?;
        let v: Option<i64> =
            conn.query_row("SELECT max(seq) FROM audit_records", [], |r| r.get(0))?;
        Ok(v.map(u64_of))
    }

    /// The first stored seq whose time is at or after `time` (RFC 3339 as stored), if any.
    pub fn first_seq_since(&self, time: &str) -> Result<Option<u64>, StoreError> {
        let conn = self.connect(false)?;
        let v: Option<i64> = conn.query_row(
            "SELECT min(seq) FROM audit_records WHERE time >= ?1",
            params![time],
            |r| r.get(0),
        )?;
        Ok(v.map(u64_of))
    }

    /// Retention: deletes every record with `seq <= anchor_seq` and every checkpoint older than
    /// `anchor_seq`, in one transaction, keeping the checkpoint at `anchor_seq`, which then
    /// anchors the first kept record. Refuses (deleting nothing) when no checkpoint is stored at
    /// `anchor_seq`. Returns the number of records deleted. Callers keep each call small (the
    /// audit writer waits for this transaction) by purging up to successive checkpoints.
    pub fn purge_through(&self, anchor_seq: u64) -> Result<u64, StoreError> {
        let mut conn = self.connect(false)?;
        let tx = conn.transaction()?;
        let anchor = i64_of(anchor_seq);
        let has_anchor: i64 = tx.query_row(
            "SELECT count(*) FROM audit_checkpoints WHERE seq = ?1",
            params![anchor],
            |r| r.get(0),
        )?;
        if has_anchor == 0 {
            return Err(StoreError::Internal(format!(
                "no signed checkpoint at record {anchor_seq}; refusing to purge through it"
            )));
        }
        let deleted = tx.execute("DELETE FROM audit_records WHERE seq <= ?1", params![anchor])?;
        tx.execute(
            "DELETE FROM audit_checkpoints WHERE seq < ?1",
            params![anchor],
        )?;
        tx.commit()?;
        Ok(deleted as u64)
    }

    /// Seqs of the stored checkpoints in `(after, through]`, ascending.
    pub fn checkpoint_seqs(&self, after: u64, through: u64) -> Result<Vec<u64>, StoreError> {
        let conn = self.connect(false)?;
        let mut stmt = conn.prepare(
            "SELECT seq FROM audit_checkpoints WHERE seq > ?1 AND seq <= ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![i64_of(after), i64_of(through)], |r| {
            r.get::<_, i64>(0)
        })?;
        let mut out = Vec::new();
        for r in rows {
            out.push(u64_of(r?));
        }
        Ok(out)
    }

    /// Runs raw SQL (tests use it to tamper with the store and prove detection).
    pub fn execute_raw(&self, sql: &str) -> Result<(), StoreError> {
        self.connect(false)?.execute_batch(sql)?;
        Ok(())
    }
}

/// The writer's connection: appends records and checkpoints atomically.
pub struct SqliteWriter {
    conn: Connection,
}

impl std::fmt::Debug for SqliteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWriter").finish_non_exhaustive()
    }
}

impl SqliteWriter {
    fn append_inner(
        &mut self,
        records: &[AuditRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(INSERT)?;
            for r in records {
                let e = &r.event;
                insert.execute(params![
                    i64_of(r.seq),
                    e.time,
                    e.kind.as_str(),
                    e.session_id,
                    e.subject,
                    serde_json::to_string(&e.groups).unwrap_or_else(|_| "[]".into()),
                    e.issuer,
                    e.client_addr,
                    e.connection,
                    e.statement,
                    e.params
                        .as_ref()
                        .and_then(|p| serde_json::to_string(p).ok()),
                    e.outcome.map(Outcome::as_str),
                    e.sqlstate,
                    e.rule,
                    e.rows.map(i64_of),
                    e.duration_ms,
                    e.statement_seq.map(i64_of),
                    e.detail,
                    r.prev_hash,
                    r.hash,
                ])?;
            }
            if let Some(cp) = checkpoint {
                tx.prepare_cached(
                    "INSERT OR IGNORE INTO audit_checkpoints (seq, hash, time, signature, key_id)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![
                    i64_of(cp.seq),
                    cp.hash,
                    cp.time,
                    cp.signature,
                    cp.key_id
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }
}

impl AuditLog for SqliteWriter {
    fn head(&mut self) -> Result<Option<(u64, String)>, StoreFailure> {
        let row = self.conn.query_row(
            "SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((u64_of(r.get::<_, i64>(0)?), r.get::<_, String>(1)?)),
        );
        match row {
            Ok(h) => Ok(Some(h)),
            Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
            Err(e) => Err(StoreFailure(e.to_string())),
        }
    }

    fn append(
        &mut self,
        records: &[AuditRecord],
        checkpoint: Option<&Checkpoint>,
    ) -> Result<(), StoreFailure> {
        self.append_inner(records, checkpoint)
            .map_err(|e| StoreFailure(e.to_string()))
    }

    fn sync(&mut self) -> Result<(), StoreFailure> {
        // A FULL checkpoint syncs the WAL, copies it into the database and syncs that.
        self.conn
            .query_row("PRAGMA wal_checkpoint(FULL)", [], |r| r.get::<_, i64>(0))
            .map_err(|e| StoreFailure(e.to_string()))
            .and_then(|busy| {
                if busy == 0 {
                    Ok(())
                } else {
                    Err(StoreFailure(
                        "the store is busy: WAL checkpoint did not complete".into(),
                    ))
                }
            })
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn record_from_row(r: &Row<'_>) -> Result<AuditRecord, StoreError> {
    let seq: i64 = r.get(0)?;
    let corrupt = |problem: String| StoreError::Corrupt { seq, problem };
    let kind: String = r.get(2)?;
    let groups: String = r.get(5)?;
    let params: Option<String> = r.get(10)?;
    let outcome: Option<String> = r.get(11)?;
    let event = AuditEvent {
        time: r.get(1)?,
        kind: RecordKind::parse(&kind).ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?,
        session_id: r.get(3)?,
        subject: r.get(4)?,
        groups: serde_json::from_str(&groups).map_err(|e| corrupt(format!("groups: {e}")))?,
        issuer: r.get(6)?,
        client_addr: r.get(7)?,
        connection: r.get(8)?,
        statement: r.get(9)?,
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
        sqlstate: r.get(12)?,
        rule: r.get(13)?,
        rows: r.get::<_, Option<i64>>(14)?.map(u64_of),
        duration_ms: r.get(15)?,
        statement_seq: r.get::<_, Option<i64>>(16)?.map(u64_of),
        detail: r.get(17)?,
    };
    Ok(AuditRecord {
        seq: u64_of(seq),
        event,
        prev_hash: r.get(18)?,
        hash: r.get(19)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::audit::{ChainVerifier, CheckpointSigner, WriterOptions, spawn_writer};

    fn opts(store: &SqliteStore) -> WriterOptions {
        let mut o = WriterOptions::new(store.journal_dir());
        o.checkpoint_every = 3;
        o
    }

    fn verify(store: &SqliteStore, dir: &Path) -> Result<u64, String> {
        let signer = CheckpointSigner::load(dir).unwrap();
        let cps = store.checkpoints().unwrap();
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
            .unwrap();
        if let Some(e) = err {
            return Err(e);
        }
        v.finish().map(|r| r.records).map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn round_trip_verifies_and_tampering_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/a.db", dir.path().display());
        let store = SqliteStore::open(&url).unwrap();
        let signer = CheckpointSigner::load_or_create(dir.path()).unwrap();
        let (auditor, done) = spawn_writer(store.writer().unwrap(), signer, opts(&store)).unwrap();
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
        done.wait().await;

        assert_eq!(verify(&store, dir.path()), Ok(7));
        let sessions = store.sessions(10).unwrap();
        assert!(sessions.is_empty());
        assert_eq!(store.session_records("s1", 100).unwrap().len(), 7);

        store
            .execute_raw("UPDATE audit_records SET statement = 'SELECT 42' WHERE seq = 4")
            .unwrap();
        let err = verify(&store, dir.path()).unwrap_err();
        assert!(err.starts_with("record 4:"), "{err}");
    }

    #[tokio::test]
    async fn purge_through_keeps_the_anchor_and_refuses_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/a.db", dir.path().display());
        let store = SqliteStore::open(&url).unwrap();
        let signer = CheckpointSigner::load_or_create(dir.path()).unwrap();
        let (auditor, done) = spawn_writer(store.writer().unwrap(), signer, opts(&store)).unwrap();
        for i in 0..7u64 {
            let mut ev = AuditEvent::new(RecordKind::Statement, "s1");
            ev.statement = Some(format!("SELECT {i}"));
            auditor.record(ev).await.unwrap();
            // Checkpoints fall on index batches; flushes pin them to records 3 and 6.
            if i == 2 || i == 5 {
                auditor.flush().await.unwrap();
            }
        }
        drop(auditor);
        done.wait().await;
        assert_eq!(store.checkpoint_seqs(0, 7).unwrap(), vec![3, 6, 7]);
        assert_eq!(store.checkpoint_seqs(3, 6).unwrap(), vec![6]);
        assert!(store.purge_through(4).is_err(), "no checkpoint at 4");
        assert_eq!(store.first_seq().unwrap(), Some(1));
        assert_eq!(store.purge_through(3).unwrap(), 3);
        assert_eq!(store.first_seq().unwrap(), Some(4));
        assert_eq!(store.last_seq().unwrap(), Some(7));
        assert_eq!(store.checkpoint_seqs(0, 7).unwrap(), vec![3, 6, 7]);
        assert_eq!(verify(&store, dir.path()), Ok(4));
        assert_eq!(store.purge_through(6).unwrap(), 3);
        assert_eq!(store.checkpoint_seqs(0, 7).unwrap(), vec![6, 7]);
        assert_eq!(verify(&store, dir.path()), Ok(1));
        // Without its anchor the cut is reported, naming the first record.
        store
            .execute_raw("DELETE FROM audit_checkpoints WHERE seq = 6")
            .unwrap();
        let err = verify(&store, dir.path()).unwrap_err();
        assert!(
            err.starts_with("record 7: records 1..=6 are missing"),
            "{err}"
        );
    }

    #[test]
    fn migrations_are_versioned_and_refuse_a_newer_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/a.db", dir.path().display());
        SqliteStore::open(&url).unwrap();
        // Re-opening is idempotent.
        let store = SqliteStore::open(&url).unwrap();
        store.execute_raw("PRAGMA user_version = 99").unwrap();
        assert!(matches!(
            SqliteStore::open(&url),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn an_existing_store_opened_for_reading_cannot_be_changed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/a.db", dir.path().display());
        let missing = format!("sqlite://{}/none.db", dir.path().display());
        assert!(matches!(
            SqliteStore::open_existing(&missing),
            Err(StoreError::Missing(_))
        ));
        let rw = SqliteStore::open(&url).unwrap();
        let ro = SqliteStore::open_existing(&url).unwrap();
        assert!(ro.execute_raw("DELETE FROM audit_records").is_err());
        assert!(ro.execute_raw("DROP TABLE audit_records").is_err());
        assert!(matches!(ro.writer(), Err(StoreError::ReadOnly)));
        assert_eq!(ro.sessions(10).unwrap().len(), 0);
        // It is not migrated from a reader either.
        rw.execute_raw("PRAGMA user_version = 1").unwrap();
        assert!(matches!(
            SqliteStore::open_existing(&url),
            Err(StoreError::TooOld { found: 1, .. })
        ));
    }
}
