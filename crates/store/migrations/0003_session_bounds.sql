-- Every index is rewritten on each group commit. An index over all records by session
-- touched one page per concurrent session per commit; sessions are now found by their
-- start and end records only (a handful of rows), and their records by seq range.
DROP INDEX IF EXISTS audit_records_session;
CREATE INDEX audit_session_starts ON audit_records (session_id) WHERE kind = 'session_start';
CREATE INDEX audit_session_ends ON audit_records (session_id) WHERE kind = 'session_end';
CREATE INDEX audit_session_start_seq ON audit_records (seq) WHERE kind = 'session_start';
