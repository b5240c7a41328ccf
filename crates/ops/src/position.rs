//! Small files that hold one number, how far a reader of the audit trail has come: a sink's
//! last delivered seq (`data_dir/sinks/<name>.seq`), the drop box's chained offset
//! (`data_dir/audit-access.offset`). Written so that a crash leaves the old number or the new
//! one, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A position file that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum PositionError {
    #[error("{} does not hold a number", .0.display())]
    NotANumber(PathBuf),
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The number stored in `path` (0 when there is no such file).
pub(crate) fn read_position(path: &Path) -> Result<u64, PositionError> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .trim()
            .parse()
            .map_err(|_| PositionError::NotANumber(path.to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(PositionError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Persists a position: temporary file, fsync, rename (a crash leaves the old or the new).
pub(crate) fn write_position(path: &Path, seq: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("seq.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    writeln!(f, "{seq}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_roundtrip() {
        let dir = std::env::temp_dir().join(format!("gh-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x.seq");
        assert_eq!(read_position(&p).unwrap(), 0);
        write_position(&p, 77).unwrap();
        assert_eq!(read_position(&p).unwrap(), 77);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
