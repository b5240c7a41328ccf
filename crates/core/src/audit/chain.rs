//! Verification of a stored chain: every record hashes to itself, links to its predecessor,
//! and agrees with every signed checkpoint.
//!
//! Records are pushed one at a time in stored order so that verification streams (the store
//! may hold years of records); only the checkpoints are held in memory.

use std::collections::BTreeMap;

use super::checkpoint::{Checkpoint, CheckpointSigner};
use super::record::{AuditRecord, GENESIS_HASH};

/// The first problem found, naming the record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("record {seq}: content does not match its hash (modified)")]
    Modified { seq: u64 },
    #[error("record {seq}: records {from}..={to} are missing (deleted)")]
    Missing { seq: u64, from: u64, to: u64 },
    #[error("record {seq}: out of order after record {prev} (reordered or inserted)")]
    OutOfOrder { seq: u64, prev: u64 },
    #[error(
        "record {seq}: does not chain from record {prev} (inserted, deleted or reordered records)"
    )]
    BrokenLink { seq: u64, prev: u64 },
    #[error("checkpoint at record {seq}: signature is not valid for the audit signing key")]
    BadCheckpointSignature { seq: u64 },
    #[error("record {seq}: does not match the signed checkpoint (history rewritten)")]
    CheckpointMismatch { seq: u64 },
    #[error("record {seq}: missing, but a signed checkpoint covers it (records deleted)")]
    CheckpointBeyondEnd { seq: u64 },
    /// The store starts after record 1 (a retention purge) but no valid signed checkpoint at
    /// `seq - 1` carries this record's `prev_hash`: the older records were cut off unanchored.
    #[error(
        "record {seq}: records 1..={} are missing and no signed checkpoint at record {} anchors it (deleted)",
        seq.saturating_sub(1),
        seq.saturating_sub(1)
    )]
    Unanchored { seq: u64 },
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub checkpoints: u64,
    pub first_seq: Option<u64>,
    pub last_seq: Option<u64>,
    pub head_hash: String,
}

/// Incremental verifier; see [`verify_chain`] for the one-call form.
pub struct ChainVerifier<'a> {
    signer: &'a CheckpointSigner,
    checkpoints: BTreeMap<u64, Checkpoint>,
    prev: Option<(u64, String)>,
    first: Option<u64>,
    count: u64,
}

impl<'a> ChainVerifier<'a> {
    pub fn new(
        signer: &'a CheckpointSigner,
        checkpoints: Vec<Checkpoint>,
    ) -> Result<Self, VerifyError> {
        let mut map = BTreeMap::new();
        for cp in checkpoints {
            if !signer.verifies(&cp) {
                return Err(VerifyError::BadCheckpointSignature { seq: cp.seq });
            }
            map.insert(cp.seq, cp);
        }
        Ok(Self {
            signer,
            checkpoints: map,
            prev: None,
            first: None,
            count: 0,
        })
    }

    pub fn push(&mut self, rec: &AuditRecord) -> Result<(), VerifyError> {
        let _ = self.signer;
        let seq = rec.seq;
        match &self.prev {
            None => {
                // The chain starts at 1 from the genesis hash, or, after a retention purge,
                // at K > 1 anchored by a signed checkpoint at K-1 whose hash is record K's
                // `prev_hash` (every checkpoint's signature was checked in `new`).
                if seq == 0 {
                    return Err(VerifyError::OutOfOrder { seq, prev: 0 });
                }
                if seq > 1 {
                    let anchored = self
                        .checkpoints
                        .get(&(seq - 1))
                        .is_some_and(|cp| cp.hash == rec.prev_hash);
                    if !anchored {
                        return Err(VerifyError::Unanchored { seq });
                    }
                } else if rec.prev_hash != GENESIS_HASH {
                    return Err(VerifyError::BrokenLink { seq, prev: 0 });
                }
            }
            Some((pseq, phash)) => {
                if seq <= *pseq {
                    return Err(VerifyError::OutOfOrder { seq, prev: *pseq });
                }
                if seq > pseq + 1 {
                    return Err(VerifyError::Missing {
                        seq,
                        from: pseq + 1,
                        to: seq - 1,
                    });
                }
                if rec.expected_hash() != rec.hash {
                    return Err(VerifyError::Modified { seq });
                }
                if &rec.prev_hash != phash {
                    return Err(VerifyError::BrokenLink { seq, prev: *pseq });
                }
            }
        }
        if rec.expected_hash() != rec.hash {
            return Err(VerifyError::Modified { seq });
        }
        if let Some(cp) = self.checkpoints.get(&seq)
            && cp.hash != rec.hash
        {
            return Err(VerifyError::CheckpointMismatch { seq });
        }
        self.first.get_or_insert(seq);
        self.prev = Some((seq, rec.hash.clone()));
        self.count += 1;
        Ok(())
    }

    pub fn finish(self) -> Result<VerifyReport, VerifyError> {
        let last = self.prev.as_ref().map(|(s, _)| *s);
        if let Some((&cp_seq, _)) = self.checkpoints.iter().next_back()
            && last.is_none_or(|l| cp_seq > l)
        {
            return Err(VerifyError::CheckpointBeyondEnd {
                seq: last.map_or(1, |l| l + 1),
            });
        }
        Ok(VerifyReport {
            records: self.count,
            checkpoints: self.checkpoints.len() as u64,
            first_seq: self.first,
            last_seq: last,
            head_hash: self
                .prev
                .map(|(_, h)| h)
                .unwrap_or_else(|| GENESIS_HASH.to_owned()),
        })
    }
}

/// Verifies records (in stored order) against the checkpoints signed by `signer`.
pub fn verify_chain<'r>(
    signer: &CheckpointSigner,
    checkpoints: Vec<Checkpoint>,
    records: impl IntoIterator<Item = &'r AuditRecord>,
) -> Result<VerifyReport, VerifyError> {
    let mut v = ChainVerifier::new(signer, checkpoints)?;
    for r in records {
        v.push(r)?;
    }
    v.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{AuditEvent, RecordKind};

    fn chain(n: u64) -> Vec<AuditRecord> {
        let mut out: Vec<AuditRecord> = Vec::new();
        let mut prev = GENESIS_HASH.to_owned();
        for seq in 1..=n {
            let mut ev = AuditEvent::new(RecordKind::Statement, "s");
            ev.statement = Some(format!("SELECT {seq}"));
            let r = AuditRecord::chain(seq, &prev, ev);
            prev = r.hash.clone();
            out.push(r);
        }
        out
    }

    fn signer() -> (CheckpointSigner, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("gh-chain-{}", uuid::Uuid::new_v4()));
        (CheckpointSigner::load_or_create(&dir).unwrap(), dir)
    }

    #[test]
    fn intact_chain_verifies() {
        let (s, dir) = signer();
        let recs = chain(5);
        let cp = s.sign(3, &recs[2].hash, "t");
        let rep = verify_chain(&s, vec![cp], &recs).unwrap();
        assert_eq!(rep.records, 5);
        assert_eq!(rep.head_hash, recs[4].hash);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn detects_modify_delete_reorder_insert_truncate() {
        let (s, dir) = signer();
        let recs = chain(5);

        let mut m = recs.clone();
        m[2].event.statement = Some("DROP TABLE x".into());
        assert_eq!(
            verify_chain(&s, vec![], &m),
            Err(VerifyError::Modified { seq: 3 })
        );

        let mut d = recs.clone();
        d.remove(1);
        assert_eq!(
            verify_chain(&s, vec![], &d),
            Err(VerifyError::Missing {
                seq: 3,
                from: 2,
                to: 2
            })
        );

        let mut r = recs.clone();
        r.swap(1, 2);
        assert_eq!(
            verify_chain(&s, vec![], &r),
            Err(VerifyError::Missing {
                seq: 3,
                from: 2,
                to: 2
            })
        );

        // Re-hashed insertion: record 3 replaced by a self-consistent forgery.
        let mut i = recs.clone();
        let forged = AuditRecord::chain(3, "ff", AuditEvent::new(RecordKind::Statement, "x"));
        i[2] = forged;
        assert_eq!(
            verify_chain(&s, vec![], &i),
            Err(VerifyError::BrokenLink { seq: 3, prev: 2 })
        );

        // Tail truncated below a signed checkpoint.
        let cp = s.sign(5, &recs[4].hash, "t");
        assert_eq!(
            verify_chain(&s, vec![cp], &recs[..4]),
            Err(VerifyError::CheckpointBeyondEnd { seq: 5 })
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_purged_start_verifies_only_when_anchored_by_a_signed_checkpoint() {
        let (s, dir) = signer();
        let recs = chain(8);
        // Records 1..=4 purged; the checkpoint at 4 anchors record 5.
        let anchor = s.sign(4, &recs[3].hash, "t");
        let head = s.sign(8, &recs[7].hash, "t");
        let rep = verify_chain(&s, vec![anchor.clone(), head.clone()], &recs[4..]).unwrap();
        assert_eq!(rep.records, 4);
        assert_eq!(rep.first_seq, Some(5));

        // No checkpoint at 4: the cut is reported, naming the first kept record.
        let err = verify_chain(&s, vec![head.clone()], &recs[4..]).unwrap_err();
        assert_eq!(err, VerifyError::Unanchored { seq: 5 });
        assert!(
            err.to_string()
                .starts_with("record 5: records 1..=4 are missing"),
            "{err}"
        );

        // A checkpoint at 3 does not anchor a start at 5.
        let early = s.sign(3, &recs[2].hash, "t");
        assert_eq!(
            verify_chain(&s, vec![early, head.clone()], &recs[4..]),
            Err(VerifyError::Unanchored { seq: 5 })
        );

        // A checkpoint at 4 whose hash is not record 5's prev_hash (record 5 replaced).
        let mut forged = recs[4..].to_vec();
        forged[0] = AuditRecord::chain(5, &"ab".repeat(32), recs[4].event.clone());
        assert_eq!(
            verify_chain(&s, vec![anchor.clone()], &forged),
            Err(VerifyError::Unanchored { seq: 5 })
        );

        // An anchor signed by another key is refused outright.
        let (other, dir2) = signer();
        let alien = other.sign(4, &recs[3].hash, "t");
        assert_eq!(
            verify_chain(&s, vec![alien], &recs[4..]).unwrap_err(),
            VerifyError::BadCheckpointSignature { seq: 4 }
        );

        // The first kept record modified after the purge.
        let mut m = recs[4..].to_vec();
        m[0].event.statement = Some("DROP TABLE x".into());
        assert_eq!(
            verify_chain(&s, vec![anchor], &m),
            Err(VerifyError::Modified { seq: 5 })
        );
        std::fs::remove_dir_all(dir).unwrap();
        std::fs::remove_dir_all(dir2).unwrap();
    }
}
