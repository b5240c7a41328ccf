-- Every index is rewritten on each group commit; listing sessions does not need this one
-- (it walks the chain backwards from the head, where new sessions are).
DROP INDEX IF EXISTS audit_records_kind;
