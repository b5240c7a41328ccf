//! The audit journal: where a record becomes durable before its statement runs.
//!
//! Why a journal and not the store: making each statement's record durable through SQLite
//! cost a hand-off to the writer thread, B-tree inserts and a commit per batch, on the
//! statement's critical path. Here the session itself appends a framed record under a short
//! lock (one `pwrite` into a preallocated file); "durable" is then that write (`durability =
//! "os"`) or one `fdatasync` shared by every session waiting at that moment (`"fsync"`).
//! SQLite stays the store every reader uses, fed from the same records by an indexer thread;
//! a segment is recycled only once everything in it is indexed, so the journal is what a crash
//! recovers from and the index can be rebuilt from it.
//!
//! Layout, like PostgreSQL's WAL: a directory of segment files `NNNNNNNNNNNNNNNN.seg` of a fixed
//! size, zero-filled when created (an `fdatasync` after overwriting allocated blocks is several
//! times cheaper than after appending). A segment starts with a 16-byte header (magic, its own
//! number: a recycled file keeps its old number until reused, which marks its content stale),
//! then frames `[len u32 LE][crc32c u32 LE][payload]`, the payload being the record's canonical
//! bytes (exactly what its hash covers). Every write ends with an 8-byte zero marker that the
//! next write overwrites, so a scan ends exactly where the writer stopped: at a zero header (a
//! clean end), or at a frame that fails its length, CRC, parse or chain check — a torn tail,
//! which recovery cuts and reports, never accepts.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::record::{AuditEvent, AuditRecord, hash_of};

const MAGIC: &[u8; 8] = b"GHAUDJ01";
/// Magic and segment number.
pub(crate) const HEADER_LEN: u64 = 16;
const FRAME_HEADER_LEN: usize = 8;
/// Written after the last frame; overwritten by the next write.
pub(crate) const END_MARKER: [u8; 8] = [0; 8];
/// The largest frame a scan accepts (a record is a few KiB; captured results are bounded far
/// below this). A larger length is a torn or corrupt header.
const MAX_FRAME: usize = 256 << 20;
/// Segment size unless configured (PostgreSQL uses 16 MiB; half keeps test start-up cheap).
pub const DEFAULT_SEGMENT_SIZE: u64 = 8 << 20;
/// Recycled segments kept for reuse; more are deleted.
const MAX_SPARES: usize = 2;

/// A failure of the journal, safe to log (paths and OS errors only).
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("audit journal {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "audit journal: record {seq} does not continue the store's chain after record {head} \
         (the journal or the store was altered or replaced)"
    )]
    Discontinuous { seq: u64, head: u64 },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> JournalError + '_ {
    move |source| JournalError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Where recovery found a torn tail (a frame a crash left half-written) and cut it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub segment: u64,
    pub offset: u64,
    /// Bytes from the cut to the end of what the torn frame claimed (bounded by the segment).
    pub bytes: u64,
}

/// Appends `payload` as one frame.
pub(crate) fn encode_frame(out: &mut Vec<u8>, payload: &[u8]) {
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

#[derive(Deserialize)]
struct CanonicalRecord {
    seq: u64,
    prev_hash: String,
    event: AuditEvent,
}

/// A frame's payload back as a record, its hash recomputed over the stored bytes.
fn decode_payload(payload: &[u8]) -> Option<AuditRecord> {
    let c: CanonicalRecord = serde_json::from_slice(payload).ok()?;
    Some(AuditRecord {
        seq: c.seq,
        event: c.event,
        prev_hash: c.prev_hash,
        hash: hash_of(payload),
    })
}

/// The little-endian u32 at `at` (0 when out of range: the caller checked the length).
fn le_u32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|s| <[u8; 4]>::try_from(s).ok())
        .map_or(0, u32::from_le_bytes)
}

pub(crate) fn segment_path(dir: &Path, no: u64) -> PathBuf {
    dir.join(format!("{no:016}.seg"))
}

fn header(no: u64) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&no.to_le_bytes());
    h
}

/// Segment numbers present in `dir`, ascending (a missing directory has none).
fn list_segments(dir: &Path) -> Result<Vec<u64>, JournalError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if stem.len() == 16
            && let Ok(no) = stem.parse::<u64>()
        {
            out.push(no);
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// What a scan of the journal found.
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// The last valid record's (seq, hash).
    pub last: Option<(u64, String)>,
    /// Where the next frame goes: (segment, offset).
    pub end: Option<(u64, u64)>,
    /// Segments in use before `end`'s, with the last seq each holds.
    pub full: Vec<(u64, Option<u64>)>,
    /// Segments after `end`'s (recycled or never used).
    pub spares: Vec<u64>,
    pub torn: Option<TornTail>,
}

/// Reads every valid record in order, calling `f` for each; stops at the writer's end.
/// Safe to run while a gateway appends (a frame being written reads as the end).
pub fn scan(dir: &Path, mut f: impl FnMut(AuditRecord)) -> Result<ScanOutcome, JournalError> {
    let mut out = ScanOutcome::default();
    let segments = list_segments(dir)?;
    let mut stopped = false;
    for no in segments {
        if stopped {
            out.spares.push(no);
            continue;
        }
        let path = segment_path(dir, no);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            // Recycled while this scan ran (a reader beside a running gateway).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                stopped = true;
                continue;
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        if data.get(..HEADER_LEN as usize) != Some(&header(no)[..]) {
            // A recycled segment (its old number) or one never written: stale content.
            stopped = true;
            out.spares.push(no);
            continue;
        }
        if let Some((prev, _)) = out.end.take() {
            out.full.push((prev, out.last.as_ref().map(|l| l.0)));
        }
        let mut off = HEADER_LEN as usize;
        loop {
            let Some(h) = data.get(off..off + FRAME_HEADER_LEN) else {
                // The file ends inside a frame header (it was not preallocated this far).
                if data
                    .get(off..)
                    .is_some_and(|rest| rest.iter().any(|b| *b != 0))
                {
                    out.torn = Some(TornTail {
                        segment: no,
                        offset: off as u64,
                        bytes: (data.len() - off) as u64,
                    });
                    stopped = true;
                }
                break;
            };
            let (len, crc) = (le_u32(h, 0) as usize, le_u32(h, 4));
            if len == 0 && crc == 0 {
                break;
            }
            let start = off + FRAME_HEADER_LEN;
            let record = if len <= MAX_FRAME {
                data.get(start..start + len)
                    .filter(|p| crc32c::crc32c(p) == crc)
                    .and_then(decode_payload)
            } else {
                None
            };
            let chains = record.as_ref().is_some_and(|r| match &out.last {
                None => true,
                Some((seq, hash)) => r.seq == seq + 1 && &r.prev_hash == hash,
            });
            match record {
                Some(r) if chains => {
                    out.last = Some((r.seq, r.hash.clone()));
                    f(r);
                    off = start + len;
                }
                _ => {
                    let claimed = if len <= MAX_FRAME {
                        (FRAME_HEADER_LEN + len).min(data.len() - off)
                    } else {
                        data.len() - off
                    };
                    out.torn = Some(TornTail {
                        segment: no,
                        offset: off as u64,
                        bytes: claimed as u64,
                    });
                    stopped = true;
                    break;
                }
            }
        }
        out.end = Some((no, off as u64));
    }
    Ok(out)
}

/// Creates segment `no` zero-filled to `size`, durably (file and directory entry).
pub(crate) fn create_segment(dir: &Path, no: u64, size: u64) -> Result<File, JournalError> {
    let path = segment_path(dir, no);
    let tmp = dir.join(format!("{no:016}.tmp"));
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(&header(no)).map_err(io_err(&tmp))?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size.saturating_sub(HEADER_LEN);
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        f.write_all(zeros.get(..n).unwrap_or_default())
            .map_err(io_err(&tmp))?;
        left -= n as u64;
    }
    f.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
    sync_dir(dir)?;
    Ok(f)
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn open_segment(dir: &Path, no: u64) -> Result<File, JournalError> {
    let path = segment_path(dir, no);
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err(&path))
}

/// The append side, owned by the auditor's state (behind its lock).
pub(crate) struct JournalWriter {
    dir: PathBuf,
    segment_size: u64,
    current: Arc<File>,
    current_no: u64,
    /// The last seq written into the current segment.
    current_last: Option<u64>,
    offset: u64,
    /// Bytes written since start (all segments): positions that durability waits for.
    pub(crate) written: u64,
    /// Closed segments written since the last flush (the flusher syncs them too).
    pub(crate) unsynced: Vec<Arc<File>>,
    /// Closed segments with the last seq in each, oldest first: recycled once indexed.
    pub(crate) full: Vec<(u64, Option<u64>)>,
    /// Recycled or preallocated segments ready for reuse, ascending.
    pub(crate) spares: Vec<u64>,
    /// Debug builds only: while this file exists, appends fail as a full disk would
    /// (`GATEHOUSE_TEST_JOURNAL_FAILPOINT`), so tests can prove the fail-closed path.
    failpoint: Option<PathBuf>,
}

/// The failpoint of debug builds; release builds have none.
fn failpoint() -> Option<PathBuf> {
    if cfg!(debug_assertions) {
        std::env::var_os("GATEHOUSE_TEST_JOURNAL_FAILPOINT").map(PathBuf::from)
    } else {
        None
    }
}

impl JournalWriter {
    /// Opens the journal in `dir` for appending after a scan, cutting a torn tail.
    /// `fresh` starts a new segment after every existing one and discards the old ones (the
    /// store is ahead of the journal, so its content is history the store already holds).
    pub(crate) fn open(
        dir: &Path,
        segment_size: u64,
        scan: &ScanOutcome,
        fresh: bool,
    ) -> Result<Self, JournalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut spares = scan.spares.clone();
        let mut full = scan.full.clone();
        let (no, offset, last) = match scan.end {
            Some((no, off)) if !fresh => (no, off, scan.last.as_ref().map(|l| l.0)),
            _ => {
                let existing = list_segments(dir)?;
                for old in &existing {
                    let p = segment_path(dir, *old);
                    std::fs::remove_file(&p).map_err(io_err(&p))?;
                }
                spares.clear();
                full.clear();
                let no = existing.last().map_or(1, |n| n + 1);
                create_segment(dir, no, segment_size)?;
                (no, HEADER_LEN, None)
            }
        };
        let file = open_segment(dir, no)?;
        // The marker at the end cuts a torn tail: the next scan stops there.
        let path = segment_path(dir, no);
        file.write_all_at(&END_MARKER, offset)
            .map_err(io_err(&path))?;
        if scan.torn.is_some() && !fresh {
            file.sync_data().map_err(io_err(&path))?;
        }
        // A segment after the end that still carries its own number would read as in use.
        for s in &spares {
            let p = segment_path(dir, *s);
            if let Ok(f) = open_segment(dir, *s) {
                f.write_all_at(&header(0), 0).map_err(io_err(&p))?;
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            segment_size: segment_size.max(HEADER_LEN + 4096),
            current: Arc::new(file),
            current_no: no,
            current_last: last,
            offset,
            written: 0,
            unsynced: Vec::new(),
            full,
            spares,
            failpoint: failpoint(),
        })
    }

    /// Writes `frames` (ending with [`END_MARKER`]) whose last record is `last_seq`; returns
    /// the position durability waits for. Nothing moves on failure: the next write goes to
    /// the same place.
    pub(crate) fn append(&mut self, frames: &[u8], last_seq: u64) -> Result<u64, JournalError> {
        let len = frames.len() as u64;
        if self.offset + len > self.segment_size && self.offset > HEADER_LEN {
            self.switch()?;
        }
        let path_of = |w: &Self| segment_path(&w.dir, w.current_no);
        if self.failpoint.as_deref().is_some_and(Path::exists) {
            return Err(io_err(&path_of(self))(std::io::Error::other(
                "no space left on device (injected by the test failpoint)",
            )));
        }
        self.current
            .write_all_at(frames, self.offset)
            .map_err(|e| io_err(&path_of(self))(e))?;
        let data = len.saturating_sub(END_MARKER.len() as u64);
        self.offset += data;
        self.written += data;
        self.current_last = Some(last_seq);
        Ok(self.written)
    }

    fn switch(&mut self) -> Result<(), JournalError> {
        let next = self.current_no + 1;
        let file = if let Some(i) = self.spares.iter().position(|s| *s == next) {
            self.spares.remove(i);
            let f = open_segment(&self.dir, next)?;
            let path = segment_path(&self.dir, next);
            let mut start = header(next).to_vec();
            start.extend_from_slice(&END_MARKER);
            f.write_all_at(&start, 0).map_err(io_err(&path))?;
            f
        } else {
            // Spares are numbered after the current segment; any others are stale.
            for s in std::mem::take(&mut self.spares) {
                let _ = std::fs::remove_file(segment_path(&self.dir, s));
            }
            create_segment(&self.dir, next, self.segment_size)?
        };
        let old = std::mem::replace(&mut self.current, Arc::new(file));
        self.unsynced.push(old);
        self.full.push((self.current_no, self.current_last.take()));
        self.current_no = next;
        self.offset = HEADER_LEN;
        Ok(())
    }

    /// The files a flush must sync: closed segments written since the last flush and the
    /// current one.
    pub(crate) fn files_to_sync(&mut self) -> Vec<Arc<File>> {
        let mut files = std::mem::take(&mut self.unsynced);
        files.push(self.current.clone());
        files
    }

    /// The full segments whose records are all indexed (seq ≤ `indexed`), removed from the
    /// list: the caller recycles them with [`recycle`].
    pub(crate) fn take_indexed(&mut self, indexed: u64) -> Vec<u64> {
        let keep_from = self
            .full
            .iter()
            .position(|(_, last)| last.is_some_and(|l| l > indexed))
            .unwrap_or(self.full.len());
        self.full.drain(..keep_from).map(|(no, _)| no).collect()
    }

    /// Whether a full segment holds only records up to `indexed`.
    pub(crate) fn has_indexed(&self, indexed: u64) -> bool {
        self.full
            .first()
            .is_some_and(|(_, last)| last.is_none_or(|l| l <= indexed))
    }

    /// The number a recycled or preallocated segment takes: after every known one.
    pub(crate) fn next_spare_no(&self) -> u64 {
        self.spares
            .last()
            .copied()
            .unwrap_or(self.current_no)
            .max(self.current_no)
            + 1
    }

    /// Empties the journal once the store holds every record (a graceful stop): the store is
    /// then the only copy, so what readers and `audit verify` see is the store alone.
    pub(crate) fn clear(&mut self) -> Result<(), JournalError> {
        let path = segment_path(&self.dir, self.current_no);
        self.current
            .write_all_at(&END_MARKER, HEADER_LEN)
            .and_then(|()| self.current.sync_data())
            .map_err(io_err(&path))?;
        self.offset = HEADER_LEN;
        self.current_last = None;
        for (no, _) in std::mem::take(&mut self.full) {
            let _ = std::fs::remove_file(segment_path(&self.dir, no));
        }
        Ok(())
    }

    pub(crate) fn wants_spare(&self) -> bool {
        self.spares.is_empty() && self.offset > self.segment_size / 4
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn segment_size(&self) -> u64 {
        self.segment_size
    }
}

/// Turns indexed segment `no` into spare `to` (renamed; its header still names `no`, so its
/// content reads as stale) or deletes it when enough spares exist.
pub(crate) fn recycle(dir: &Path, no: u64, to: Option<u64>) -> Result<(), JournalError> {
    let from = segment_path(dir, no);
    match to {
        Some(to) => std::fs::rename(&from, segment_path(dir, to)).map_err(io_err(&from)),
        None => std::fs::remove_file(&from).map_err(io_err(&from)),
    }
}

/// Whether another spare may be kept.
pub(crate) fn room_for_spare(spares: &[u64]) -> bool {
    spares.len() < MAX_SPARES
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{GENESIS_HASH, canonical_bytes, event_json};
    use crate::audit::{AuditEvent, RecordKind};

    fn frames(from: u64, n: u64, prev: &mut String) -> (Vec<u8>, u64) {
        let mut buf = Vec::new();
        for seq in from..from + n {
            let ev = AuditEvent::new(RecordKind::Statement, format!("s{seq}"));
            let c = canonical_bytes(seq, prev, &event_json(&ev));
            *prev = hash_of(&c);
            encode_frame(&mut buf, &c);
        }
        buf.extend_from_slice(&END_MARKER);
        (buf, from + n - 1)
    }

    /// A fresh 1 MiB-segment journal in `d` holding records 1..=n: the writer, the chain head
    /// and the bytes written.
    fn journal_of(d: &Path, n: u64) -> (JournalWriter, String, Vec<u8>) {
        let mut w = JournalWriter::open(d, 1 << 20, &ScanOutcome::default(), true).unwrap();
        let mut prev = GENESIS_HASH.to_owned();
        let (buf, last) = frames(1, n, &mut prev);
        w.append(&buf, last).unwrap();
        (w, prev, buf)
    }

    fn dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("gh-journal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn seqs(d: &Path) -> (Vec<u64>, ScanOutcome) {
        let mut v = Vec::new();
        let out = scan(d, |r| {
            assert_eq!(r.hash, r.expected_hash());
            v.push(r.seq)
        })
        .unwrap();
        (v, out)
    }

    #[test]
    fn appends_across_segments_and_scans_back() {
        let d = dir();
        let mut w = JournalWriter::open(&d, 8192, &ScanOutcome::default(), true).unwrap();
        let mut prev = GENESIS_HASH.to_owned();
        let mut next = 1;
        for _ in 0..40 {
            let (buf, last) = frames(next, 3, &mut prev);
            w.append(&buf, last).unwrap();
            next = last + 1;
        }
        assert!(w.full.len() >= 2, "several segments used: {:?}", w.full);
        let (got, out) = seqs(&d);
        assert_eq!(got, (1..next).collect::<Vec<_>>());
        assert_eq!(out.last.as_ref().map(|l| l.0), Some(next - 1));
        assert!(out.torn.is_none());

        // Recycle the indexed segments; their stale content is never read again.
        let indexed = w.take_indexed(next - 1);
        assert!(!indexed.is_empty());
        for no in indexed {
            let to = room_for_spare(&w.spares).then(|| w.next_spare_no());
            recycle(&d, no, to).unwrap();
            if let Some(to) = to {
                w.spares.push(to);
            }
        }
        let (buf, last) = frames(next, 200, &mut prev);
        w.append(&buf, last).unwrap();
        next = last + 1;
        let (got, out) = seqs(&d);
        assert_eq!(got.last(), Some(&(next - 1)));
        assert!(got.windows(2).all(|p| p[1] == p[0] + 1), "{got:?}");
        assert!(out.torn.is_none(), "{:?}", out.torn);
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn a_torn_tail_is_cut_and_reported() {
        let d = dir();
        let (w, mut prev, buf) = journal_of(&d, 5);
        // A crash half-way through the next write: its header and part of its payload.
        let (next, _) = frames(6, 1, &mut prev.clone());
        let half = next.len() / 2;
        let seg = segment_path(&d, 1);
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        let end = HEADER_LEN + (buf.len() - END_MARKER.len()) as u64;
        f.write_all_at(&next[..half], end).unwrap();
        drop(w);

        let (got, out) = seqs(&d);
        assert_eq!(got, vec![1, 2, 3, 4, 5]);
        let torn = out.torn.clone().expect("torn tail reported");
        assert_eq!((torn.segment, torn.offset), (1, end));
        // Reopening cuts it: the next record goes where the torn one was, and reads back.
        let mut w = JournalWriter::open(&d, 1 << 20, &out, false).unwrap();
        let (buf, last) = frames(6, 2, &mut prev);
        w.append(&buf, last).unwrap();
        let (got, out) = seqs(&d);
        assert_eq!(got, vec![1, 2, 3, 4, 5, 6, 7]);
        assert!(out.torn.is_none());
        std::fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn corrupt_or_forged_frames_end_the_valid_prefix() {
        let d = dir();
        journal_of(&d, 4);
        let seg = segment_path(&d, 1);
        let bytes = std::fs::read(&seg).unwrap();
        // Flip one payload byte of the third frame: the scan keeps records 1 and 2 only.
        let mut off = HEADER_LEN as usize;
        for _ in 0..2 {
            let len = u32::from_le_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
            off += 8 + len;
        }
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[bytes[off + 20] ^ 1], (off + 20) as u64)
            .unwrap();
        let (got, out) = seqs(&d);
        assert_eq!(got, vec![1, 2]);
        assert_eq!(out.torn.map(|t| t.offset), Some(off as u64));
        // A huge length is a torn header, not an allocation.
        f.write_all_at(&u32::MAX.to_le_bytes(), off as u64).unwrap();
        let (got, out) = seqs(&d);
        assert_eq!(got, vec![1, 2]);
        assert!(out.torn.is_some());
        std::fs::remove_dir_all(d).unwrap();
    }

    /// Whatever bytes a segment holds, a scan returns a prefix of the chain and never panics.
    #[test]
    fn random_damage_yields_a_prefix() {
        use rand::{Rng, SeedableRng};
        let d = dir();
        let (w, _, buf) = journal_of(&d, 20);
        drop(w);
        let seg = segment_path(&d, 1);
        let good = std::fs::read(&seg).unwrap();
        let used = HEADER_LEN as usize + buf.len();
        let mut rng = rand::rngs::StdRng::seed_from_u64(13);
        for _ in 0..200 {
            let mut bytes = good.clone();
            for _ in 0..rng.random_range(1..8) {
                let at = rng.random_range(0..used);
                bytes[at] = rng.random();
            }
            std::fs::write(&seg, &bytes).unwrap();
            let (got, _) = seqs(&d);
            assert_eq!(got, (1..=got.len() as u64).collect::<Vec<_>>());
        }
        std::fs::remove_dir_all(d).unwrap();
    }
}
