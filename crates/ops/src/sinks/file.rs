//! `kind = "file"`: the trail as lines in a local file (for a log shipper to pick up),
//! synced after every batch and rotated by size.

use std::io::Write;
use std::path::PathBuf;

use gatehouse_core::config::SinkFormat;

use super::error::DeliveryError;
use super::line_seq;

/// Lines appended to a file, rotated at `max_bytes` (`path.1` … `path.<keep>`).
pub(super) struct FileOut {
    pub(super) path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: Option<std::fs::File>,
    size: u64,
}

impl FileOut {
    pub(super) fn new(path: PathBuf, max_bytes: u64, keep: u32) -> Self {
        Self {
            path,
            max_bytes,
            keep,
            file: None,
            size: 0,
        }
    }

    /// At start: drops a partial last line (a write cut short) and returns the seq of the last
    /// whole line, if the file has one.
    pub(super) fn recover(&self, format: SinkFormat) -> std::io::Result<Option<u64>> {
        use std::io::{Read, Seek, SeekFrom};
        let mut f = match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = f.metadata()?.len();
        let start = len.saturating_sub(256 * 1024);
        f.seek(SeekFrom::Start(start))?;
        let mut tail = Vec::new();
        f.read_to_end(&mut tail)?;
        let whole = tail.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        if whole < tail.len() {
            let keep = start + whole as u64;
            tracing::warn!(path = %self.path.display(), bytes = len - keep, "file sink: dropping a partial last line");
            f.set_len(keep)?;
            f.sync_data()?;
        }
        let lines = tail.get(..whole).unwrap_or_default();
        let last = lines
            .strip_suffix(b"\n")
            .and_then(|l| l.rsplit(|b| *b == b'\n').next())
            .and_then(|l| std::str::from_utf8(l).ok());
        Ok(last.and_then(|l| line_seq(format, l)))
    }

    fn open(&mut self) -> Result<(), DeliveryError> {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|source| DeliveryError::Open {
                path: self.path.clone(),
                source,
            })?;
        self.size = f.metadata()?.len();
        self.file = Some(f);
        Ok(())
    }

    /// `path` becomes `path.1`, `path.1` becomes `path.2`, ... ; `path.<keep>` is removed.
    fn rotate(&mut self) -> Result<(), DeliveryError> {
        self.file = None;
        let numbered = |n: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        let _ = std::fs::remove_file(numbered(self.keep));
        for n in (1..self.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1)).map_err(|source| {
                    DeliveryError::Rotate {
                        path: from.clone(),
                        source,
                    }
                })?;
            }
        }
        std::fs::rename(&self.path, numbered(1)).map_err(|source| DeliveryError::Rotate {
            path: self.path.clone(),
            source,
        })?;
        self.open()
    }

    pub(super) fn write(&mut self, lines: &[String]) -> Result<(), DeliveryError> {
        if self.file.is_none() {
            self.open()?;
        }
        for line in lines {
            let len = line.len() as u64 + 1;
            if self.size > 0 && self.size + len > self.max_bytes {
                if let Some(f) = &self.file {
                    f.sync_data()?;
                }
                self.rotate()?;
            }
            let Some(f) = self.file.as_mut() else {
                return Err(DeliveryError::NotOpen(self.path.clone()));
            };
            let mut buf = Vec::with_capacity(line.len() + 1);
            buf.extend_from_slice(line.as_bytes());
            buf.push(b'\n');
            if let Err(source) = f.write_all(&buf) {
                // Reopen next time: a partial line is possible, the retry appends it whole.
                self.file = None;
                return Err(DeliveryError::Write {
                    path: self.path.clone(),
                    source,
                });
            }
            self.size += len;
        }
        if let Some(f) = &self.file {
            f.sync_data().map_err(|source| DeliveryError::Sync {
                path: self.path.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_rotation_keeps_n() {
        let dir = std::env::temp_dir().join(format!("gh-sink-rot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut f = FileOut {
            path: dir.join("a.log"),
            max_bytes: 20,
            keep: 2,
            file: None,
            size: 0,
        };
        let lines: Vec<String> = (0..5).map(|i| format!("line-{i}-xxxxxx")).collect();
        f.write(&lines).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log")).unwrap(),
            "line-4-xxxxxx\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("a.log.1")).unwrap(),
            "line-3-xxxxxx\n"
        );
        assert!(dir.join("a.log.2").exists());
        assert!(!dir.join("a.log.3").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
