-- Audit chain: one row per record; seq is the chain position (and the rowid).
CREATE TABLE audit_records (
    seq           INTEGER PRIMARY KEY,
    time          TEXT    NOT NULL,
    kind          TEXT    NOT NULL,
    session_id    TEXT    NOT NULL,
    subject       TEXT,
    groups        TEXT    NOT NULL,
    issuer        TEXT,
    client_addr   TEXT,
    connection    TEXT,
    statement     TEXT,
    params        TEXT,
    outcome       TEXT,
    sqlstate      TEXT,
    rule          TEXT,
    rows          INTEGER,
    duration_ms   REAL,
    statement_seq INTEGER,
    detail        TEXT,
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL
);
CREATE INDEX audit_records_session ON audit_records (session_id, seq);
CREATE INDEX audit_records_time ON audit_records (time);
CREATE INDEX audit_records_kind ON audit_records (kind, seq);

-- Signed chain positions (Ed25519 over seq, hash, time).
CREATE TABLE audit_checkpoints (
    seq       INTEGER PRIMARY KEY,
    hash      TEXT NOT NULL,
    time      TEXT NOT NULL,
    signature TEXT NOT NULL,
    key_id    TEXT NOT NULL
);
