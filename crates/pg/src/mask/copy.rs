//! Masking `COPY ... TO STDOUT` data (text, CSV and binary formats), which is how pg_dump and
//! bulk exports read tables: the same column rules and detector as DataRows, applied per field.
//!
//! PostgreSQL sends one row per CopyData message (the binary header rides with the first), and
//! that fast path masks each message on its own. A row split across messages is reassembled
//! first: the incomplete tail is held back (bounded) and masked with the rest of its row, so a
//! card number cannot slip through a message boundary unseen. What cannot be parsed is still
//! masked in place, length-preserving.

use gatehouse_core::masking::{MaskStyle, TokenKey, mask_pans_with};

use super::value::{self, Masked, ValueKind};
use gatehouse_core::masking::{MaskReason, ReasonCounts};

use super::FieldPlan;

/// The layout of the COPY data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CopyFormat {
    Text {
        delimiter: u8,
    },
    Csv {
        delimiter: u8,
        quote: u8,
        escape: u8,
    },
    Binary,
}

/// The masking of one COPY TO STDOUT.
#[derive(Debug, Clone)]
pub(crate) struct CopyPlan {
    pub format: CopyFormat,
    /// Per column in order; empty or shorter when the columns are not known (then only the
    /// detector applies to the rest).
    pub fields: Vec<FieldPlan>,
    pub detect: Option<MaskStyle>,
    pub counts: Vec<ReasonCounts>,
    /// A header line (CSV/text HEADER) not seen yet: it holds names, not data.
    pub header_pending: bool,
    /// The binary signature and header not seen yet.
    pub binary_header_pending: bool,
    /// The start of a row whose end has not arrived yet.
    pub carry: Vec<u8>,
}

/// What to send for one CopyData message.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CopyOut {
    /// The original message.
    Keep,
    /// This payload instead.
    Replace(Vec<u8>),
    /// Nothing yet: the message ends inside a row, which is sent once complete.
    Hold,
}

/// Most bytes held back waiting for the end of a row; beyond it they are masked and sent as
/// they are (a row this long is not being split by PostgreSQL).
const CARRY_LIMIT: usize = 1 << 20;

/// What the statement says about a COPY before the data arrives (the CopyOutResponse then
/// says whether it is binary).
#[derive(Debug, Clone)]
pub(crate) struct CopySpec {
    /// `(delimiter, quote, escape)` for CSV; `None` for text.
    pub csv: Option<(u8, u8, u8)>,
    /// Text format delimiter.
    pub delimiter: u8,
    pub fields: Vec<FieldPlan>,
    pub header: bool,
}

impl CopySpec {
    /// The plan for the data, once the CopyOutResponse has told the format.
    pub(crate) fn plan(&self, binary: bool, detect: Option<MaskStyle>) -> CopyPlan {
        let format = match (binary, self.csv) {
            (true, _) => CopyFormat::Binary,
            (false, Some((delimiter, quote, escape))) => CopyFormat::Csv {
                delimiter,
                quote,
                escape,
            },
            (false, None) => CopyFormat::Text {
                delimiter: self.delimiter,
            },
        };
        let mut fields = self.fields.clone();
        for f in &mut fields {
            f.binary = binary;
        }
        if fields.is_empty() {
            fields.push(FieldPlan {
                name: "copy".to_owned(),
                kind: ValueKind::Other,
                binary,
                mask: None,
            });
        }
        CopyPlan {
            format,
            counts: vec![ReasonCounts::default(); fields.len()],
            fields,
            detect,
            header_pending: self.header && !binary,
            binary_header_pending: binary,
            carry: Vec::new(),
        }
    }
}

impl CopyPlan {
    /// Adds this COPY's counts to `into`.
    pub(crate) fn drain_counts(&mut self, into: &mut super::MaskCounts) {
        for (f, c) in self.fields.iter().zip(self.counts.iter_mut()) {
            into.add(&f.name, std::mem::take(c));
        }
    }
}

const BINARY_SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

/// The length of the leading whole tuples (with the header when it is pending, and the
/// trailer) of binary COPY data.
fn binary_complete_len(data: &[u8], header_pending: bool) -> usize {
    let be32 = |at: usize| -> Option<i32> {
        Some(i32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?))
    };
    let mut at = 0usize;
    if header_pending {
        let Some(ext) = be32(BINARY_SIGNATURE.len() + 4).and_then(|e| usize::try_from(e).ok())
        else {
            return 0;
        };
        at = BINARY_SIGNATURE.len() + 8 + ext;
        if at > data.len() {
            return 0;
        }
    }
    let mut complete = at;
    loop {
        let Some(n) = data
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .map(i16::from_be_bytes)
        else {
            return complete;
        };
        at += 2;
        if n < 0 {
            return at;
        }
        for _ in 0..n {
            let Some(len) = be32(at) else {
                return complete;
            };
            at += 4 + usize::try_from(len).unwrap_or(0);
            if at > data.len() {
                return complete;
            }
        }
        complete = at;
    }
}

impl CopyPlan {
    pub(crate) fn active(&self) -> bool {
        self.detect.is_some() || self.fields.iter().any(|f| f.mask.is_some())
    }

    /// Takes the payload of one CopyData message: rows complete in it are masked and sent, an
    /// incomplete tail is held until its row completes.
    pub(crate) fn push(&mut self, data: &[u8], key: &TokenKey) -> CopyOut {
        if self.carry.is_empty() && self.complete_len(data) == data.len() {
            return match self.mask(data, key) {
                Some(v) => CopyOut::Replace(v),
                None => CopyOut::Keep,
            };
        }
        self.carry.extend_from_slice(data);
        let mut n = self.complete_len(&self.carry);
        if n == 0 {
            if self.carry.len() <= CARRY_LIMIT {
                return CopyOut::Hold;
            }
            n = self.carry.len();
        }
        let rest = self.carry.split_off(n);
        let complete = std::mem::replace(&mut self.carry, rest);
        match self.mask(&complete, key) {
            Some(v) => CopyOut::Replace(v),
            None => CopyOut::Replace(complete),
        }
    }

    /// At the end of the COPY: whatever is still held (a last row without its terminator).
    pub(crate) fn finish(&mut self, key: &TokenKey) -> Option<Vec<u8>> {
        if self.carry.is_empty() {
            return None;
        }
        let held = std::mem::take(&mut self.carry);
        Some(self.mask(&held, key).unwrap_or(held))
    }

    /// How many leading bytes of `data` are whole rows (and header/trailer).
    fn complete_len(&self, data: &[u8]) -> usize {
        match self.format {
            CopyFormat::Text { .. } | CopyFormat::Csv { .. } => {
                memchr::memrchr(b'\n', data).map_or(0, |i| i + 1)
            }
            CopyFormat::Binary => binary_complete_len(data, self.binary_header_pending),
        }
    }

    /// Masks the payload of whole rows; `None` when nothing changed.
    pub(crate) fn mask(&mut self, data: &[u8], key: &TokenKey) -> Option<Vec<u8>> {
        let parsed = match self.format {
            CopyFormat::Binary => self.binary(data, key),
            CopyFormat::Text { delimiter } => Ok(self.text(data, key, delimiter)),
            CopyFormat::Csv {
                delimiter,
                quote,
                escape,
            } => Ok(self.csv(data, key, delimiter, quote, escape)),
        };
        match parsed {
            Ok(out) => out,
            // Not row-aligned: mask card numbers in place, keeping every length.
            Err(()) => mask_pans_with(MaskStyle::Last4, key, data)
                .filter(|(m, _)| m.len() == data.len())
                .map(|(m, n)| {
                    self.count(usize::MAX, MaskReason::Pan, n);
                    m
                }),
        }
    }

    fn count(&mut self, i: usize, reason: MaskReason, n: u64) {
        let len = self.counts.len();
        // Values of unknown columns are counted against the last slot (named "copy").
        let i = if i < len { i } else { len.saturating_sub(1) };
        if let Some(c) = self.counts.get_mut(i) {
            c.add(reason, n);
        }
    }

    /// Whether field `i` is computed from a masked column (masked whole, NULLs too).
    fn derived(&self, i: usize) -> bool {
        self.fields
            .get(i)
            .and_then(|f| f.mask)
            .is_some_and(|m| m.derived)
    }

    /// One field in text form (`binary` false) or binary form.
    fn field(&mut self, i: usize, v: &[u8], binary: bool, key: &TokenKey) -> Masked {
        let plan = self.fields.get(i).map(|f| (f.kind, f.mask));
        let (kind, mask) = plan.unwrap_or((ValueKind::Other, None));
        if let Some(mask) = mask {
            let out = value::mask_sensitive(kind, binary, mask, key, v);
            let reason = if mask.verification_code {
                MaskReason::VerificationCode
            } else {
                MaskReason::Column
            };
            if out != Masked::Keep {
                self.count(i, reason, 1);
            }
            return out;
        }
        let Some(style) = self.detect else {
            return Masked::Keep;
        };
        if !value::may_hold_pan(kind, binary, v) {
            return Masked::Keep;
        }
        let mut n = 0;
        let out = value::detect(kind, binary, style, key, v, &mut n);
        self.count(i, MaskReason::Pan, n);
        out
    }

    fn text(&mut self, data: &[u8], key: &TokenKey, delimiter: u8) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut line_start = 0;
        while line_start < data.len() {
            let line_end = memchr::memchr(b'\n', data.get(line_start..)?)
                .map_or(data.len(), |n| line_start + n);
            if std::mem::take(&mut self.header_pending) {
                line_start = line_end + 1;
                continue;
            }
            let mut field_start = line_start;
            let mut i = 0;
            loop {
                let line = data.get(field_start..line_end)?;
                let field_end =
                    memchr::memchr(delimiter, line).map_or(line_end, |n| field_start + n);
                let v = data.get(field_start..field_end)?;
                // A value computed from a masked column is masked NULL or not.
                let derived = self.derived(i);
                if v != b"\\N" || derived {
                    let v = if v == b"\\N" { &b""[..] } else { v };
                    let m = self.field(i, v, false, key);
                    let rendered = match m {
                        Masked::Keep => None,
                        Masked::Value(bytes) => Some(bytes),
                        Masked::Null => Some(b"\\N".to_vec()),
                    };
                    if let Some(bytes) = rendered {
                        let buf = out.get_or_insert_with(|| Vec::with_capacity(data.len() + 16));
                        buf.extend_from_slice(data.get(copied..field_start)?);
                        buf.extend_from_slice(&bytes);
                        copied = field_end;
                    }
                }
                i += 1;
                if field_end >= line_end {
                    break;
                }
                field_start = field_end + 1;
            }
            line_start = line_end + 1;
        }
        let mut buf = out?;
        buf.extend_from_slice(data.get(copied..)?);
        Some(buf)
    }

    fn csv(
        &mut self,
        data: &[u8],
        key: &TokenKey,
        delimiter: u8,
        quote: u8,
        escape: u8,
    ) -> Option<Vec<u8>> {
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        let mut at = 0;
        let mut i = 0;
        let mut header = std::mem::take(&mut self.header_pending);
        while at < data.len() {
            // One field: quoted or not; then a delimiter, a line end, or the end.
            let (content, field_start, field_end, quoted);
            if data.get(at) == Some(&quote) {
                let mut j = at + 1;
                loop {
                    match data.get(j) {
                        None => break,
                        Some(&b) if b == escape && escape != quote => {
                            j += 2;
                        }
                        Some(&b) if b == quote => {
                            if escape == quote && data.get(j + 1) == Some(&quote) {
                                j += 2;
                            } else {
                                break;
                            }
                        }
                        Some(_) => j += 1,
                    }
                }
                content = (at + 1, j.min(data.len()));
                field_start = at;
                field_end = (j + 1).min(data.len());
                quoted = true;
            } else {
                let rest = data.get(at..)?;
                let end = rest
                    .iter()
                    .position(|&b| b == delimiter || b == b'\n' || b == b'\r')
                    .map_or(data.len(), |n| at + n);
                content = (at, end);
                field_start = at;
                field_end = end;
                quoted = false;
            }
            let v = data.get(content.0..content.1)?;
            // An unquoted empty field is NULL: kept, unless computed from a masked column.
            if !header && (quoted || !v.is_empty() || self.derived(i)) {
                let rendered = match self.field(i, v, false, key) {
                    Masked::Keep => None,
                    Masked::Value(bytes) if quoted => {
                        let mut q = vec![quote];
                        q.extend(bytes);
                        q.push(quote);
                        Some(q)
                    }
                    Masked::Value(bytes) => Some(bytes),
                    Masked::Null => Some(Vec::new()),
                };
                if let Some(bytes) = rendered {
                    let buf = out.get_or_insert_with(|| Vec::with_capacity(data.len() + 16));
                    buf.extend_from_slice(data.get(copied..field_start)?);
                    buf.extend_from_slice(&bytes);
                    copied = field_end;
                }
            }
            at = field_end;
            match data.get(at) {
                Some(&b) if b == delimiter => {
                    at += 1;
                    i += 1;
                }
                Some(b'\r') | Some(b'\n') => {
                    while matches!(data.get(at), Some(b'\r') | Some(b'\n')) {
                        at += 1;
                    }
                    i = 0;
                    header = false;
                }
                _ => at += 1,
            }
        }
        let mut buf = out?;
        buf.extend_from_slice(data.get(copied..)?);
        Some(buf)
    }

    fn binary(&mut self, data: &[u8], key: &TokenKey) -> Result<Option<Vec<u8>>, ()> {
        let mut at = 0usize;
        if self.binary_header_pending {
            if !data.starts_with(BINARY_SIGNATURE) {
                return Err(());
            }
            at = BINARY_SIGNATURE.len() + 4;
            let ext = data.get(at..at + 4).ok_or(())?;
            let ext = usize::try_from(i32::from_be_bytes(ext.try_into().map_err(|_| ())?))
                .map_err(|_| ())?;
            at = at.checked_add(4 + ext).ok_or(())?;
            if at > data.len() {
                return Err(());
            }
            self.binary_header_pending = false;
        }
        let mut out: Option<Vec<u8>> = None;
        let mut copied = 0;
        while at < data.len() {
            let n = i16::from_be_bytes(data.get(at..at + 2).ok_or(())?.try_into().map_err(|_| ())?);
            at += 2;
            if n < 0 {
                // The trailer.
                if at != data.len() {
                    return Err(());
                }
                break;
            }
            for i in 0..usize::try_from(n).map_err(|_| ())? {
                let len =
                    i32::from_be_bytes(data.get(at..at + 4).ok_or(())?.try_into().map_err(|_| ())?);
                let start = at + 4;
                let end = if len < 0 {
                    start
                } else {
                    start
                        .checked_add(usize::try_from(len).map_err(|_| ())?)
                        .ok_or(())?
                };
                let v = data.get(start..end).ok_or(())?;
                let m = if len < 0 && !self.derived(i) {
                    Masked::Keep
                } else {
                    self.field(i, v, true, key)
                };
                if m != Masked::Keep {
                    let buf = out.get_or_insert_with(|| Vec::with_capacity(data.len() + 16));
                    buf.extend_from_slice(data.get(copied..at).ok_or(())?);
                    match m {
                        Masked::Value(bytes) => {
                            buf.extend_from_slice(
                                &i32::try_from(bytes.len()).map_err(|_| ())?.to_be_bytes(),
                            );
                            buf.extend_from_slice(&bytes);
                        }
                        _ => buf.extend_from_slice(&(-1i32).to_be_bytes()),
                    }
                    copied = end;
                }
                at = end;
            }
        }
        match out {
            None => Ok(None),
            Some(mut buf) => {
                buf.extend_from_slice(data.get(copied..).ok_or(())?);
                Ok(Some(buf))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_core::masking::ColumnMask;

    fn plan(format: CopyFormat, kinds: &[(ValueKind, bool)]) -> CopyPlan {
        let fields: Vec<FieldPlan> = kinds
            .iter()
            .enumerate()
            .map(|(i, (kind, masked))| FieldPlan {
                name: format!("c{i}"),
                kind: *kind,
                binary: format == CopyFormat::Binary,
                mask: masked.then_some(ColumnMask {
                    style: MaskStyle::Last4,
                    verification_code: false,
                    derived: false,
                }),
            })
            .collect();
        CopyPlan {
            format,
            counts: vec![ReasonCounts::default(); fields.len()],
            fields,
            detect: Some(MaskStyle::Last4),
            header_pending: false,
            binary_header_pending: format == CopyFormat::Binary,
            carry: Vec::new(),
        }
    }

    fn key() -> TokenKey {
        TokenKey::from_bytes([0; 32])
    }

    #[test]
    fn text_rows() {
        let mut p = plan(
            CopyFormat::Text { delimiter: b'\t' },
            &[
                (ValueKind::Int4, false),
                (ValueKind::Text, true),
                (ValueKind::Int8, true),
                (ValueKind::Text, false),
            ],
        );
        let out = p.mask(
            b"1\t4111111111111111\t5555555555554444\tcard 6011111111111117\n",
            &key(),
        );
        assert_eq!(
            out.as_deref(),
            Some(&b"1\t************1111\t4444\tcard ************1117\n"[..])
        );
        assert_eq!(p.mask(b"2\t\\N\t\\N\tnothing\n", &key()), None);
        // A row split inside a card number: nothing is sent until the row is whole.
        assert_eq!(
            p.push(b"3\t4111111111111111\t42\tcard 601111", &key()),
            CopyOut::Hold
        );
        assert_eq!(
            p.push(b"1111111117\n4\t", &key()),
            CopyOut::Replace(b"3\t************1111\t42\tcard ************1117\n".to_vec())
        );
        assert_eq!(p.finish(&key()), Some(b"4\t".to_vec()));
        assert_eq!(p.finish(&key()), None);
        assert_eq!(
            p.counts[1].get(MaskReason::Column),
            2,
            "card_number masked in rows 1 and 3"
        );
        assert_eq!(
            p.counts[3].get(MaskReason::Pan),
            2,
            "a card number found in the notes of rows 1 and 3"
        );
    }

    #[test]
    fn csv_rows_with_quotes() {
        let mut p = plan(
            CopyFormat::Csv {
                delimiter: b',',
                quote: b'"',
                escape: b'"',
            },
            &[
                (ValueKind::Int4, false),
                (ValueKind::Text, true),
                (ValueKind::Text, false),
            ],
        );
        p.header_pending = true;
        assert_eq!(p.mask(b"id,card_number,note\n", &key()), None);
        let out = p.mask(
            b"1,\"4111 1111 1111 1111\",\"said \"\"hi\"\", 5555555555554444\"\n",
            &key(),
        );
        assert_eq!(
            out.as_deref(),
            Some(&b"1,\"**** **** **** 1111\",\"said \"\"hi\"\", ************4444\"\n"[..])
        );
    }

    #[test]
    fn binary_rows() {
        let mut p = plan(
            CopyFormat::Binary,
            &[(ValueKind::Int8, true), (ValueKind::Text, false)],
        );
        let mut msg = BINARY_SIGNATURE.to_vec();
        msg.extend([0, 0, 0, 0, 0, 0, 0, 0]);
        msg.extend(2i16.to_be_bytes());
        msg.extend(8i32.to_be_bytes());
        msg.extend(4111111111111111i64.to_be_bytes());
        msg.extend(20i32.to_be_bytes());
        msg.extend(b"pan 5555555555554444");
        let out = p.mask(&msg, &key()).unwrap_or_default();
        assert!(out.ends_with(b"pan ************4444"));
        let at = BINARY_SIGNATURE.len() + 8 + 2 + 4;
        assert_eq!(&out[at..at + 8], &1111i64.to_be_bytes());
        let trailer = (-1i16).to_be_bytes();
        assert_eq!(p.mask(&trailer, &key()), None);

        // The same data split in the middle of the card number: held, then masked whole.
        let mut p = plan(
            CopyFormat::Binary,
            &[(ValueKind::Int8, true), (ValueKind::Text, false)],
        );
        let cut = msg.len() - 8;
        assert_eq!(
            p.push(&msg[..cut], &key()),
            CopyOut::Replace(msg[..BINARY_SIGNATURE.len() + 8].to_vec())
        );
        match p.push(&msg[cut..], &key()) {
            CopyOut::Replace(v) => assert!(v.ends_with(b"pan ************4444"), "{v:?}"),
            other => panic!("{other:?}"),
        }
        // Garbage: no panic; card numbers still masked in place.
        let mut p = plan(CopyFormat::Binary, &[]);
        let out = p.mask(b"junk 4111111111111111", &key());
        assert_eq!(out.as_deref(), Some(&b"junk ************1111"[..]));
    }
}
