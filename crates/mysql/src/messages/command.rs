//! The command phase: what a client asks for (the first payload byte), and the text-protocol
//! result set it gets back (column definitions, rows).
//!
//! The gateway must know every command it relays: an unknown one is refused, never passed
//! through (it could carry SQL the rules never saw).

use super::MessageError;
use crate::wire::{Reader, put_lenenc, put_lenenc_bytes};

/// A client command, by its first payload byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandKind {
    Quit,
    InitDb,
    Query,
    FieldList,
    Statistics,
    Ping,
    ChangeUser,
    StmtPrepare,
    StmtExecute,
    StmtSendLongData,
    StmtClose,
    StmtReset,
    SetOption,
    StmtFetch,
    ResetConnection,
}

impl CommandKind {
    pub fn of(payload: &[u8]) -> Result<Self, MessageError> {
        let b = *payload
            .first()
            .ok_or(MessageError::Wire(crate::wire::WireError::Truncated {
                what: "command",
            }))?;
        Ok(match b {
            0x01 => Self::Quit,
            0x02 => Self::InitDb,
            0x03 => Self::Query,
            0x04 => Self::FieldList,
            0x09 => Self::Statistics,
            0x0e => Self::Ping,
            0x11 => Self::ChangeUser,
            0x16 => Self::StmtPrepare,
            0x17 => Self::StmtExecute,
            0x18 => Self::StmtSendLongData,
            0x19 => Self::StmtClose,
            0x1a => Self::StmtReset,
            0x1b => Self::SetOption,
            0x1c => Self::StmtFetch,
            0x1f => Self::ResetConnection,
            found => {
                return Err(MessageError::Unexpected {
                    what: "command",
                    found,
                });
            }
        })
    }
}

/// A `COM_QUERY` payload.
pub fn query(sql: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(sql.len() + 1);
    out.push(0x03);
    out.extend_from_slice(sql);
    out
}

/// `Protocol::ColumnDefinition41`: where a result column comes from (`org_table`/`org_name`
/// are what masking resolves), and how its values are typed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnDefinition {
    pub schema: Vec<u8>,
    pub table: Vec<u8>,
    pub org_table: Vec<u8>,
    pub name: Vec<u8>,
    pub org_name: Vec<u8>,
    pub charset: u16,
    pub length: u32,
    pub column_type: u8,
    pub flags: u16,
    pub decimals: u8,
}

impl ColumnDefinition {
    pub fn parse(payload: &[u8]) -> Result<Self, MessageError> {
        let mut r = Reader::new(payload);
        let catalog = r.lenenc_bytes("catalog")?;
        if catalog != b"def" {
            return Err(MessageError::Unsupported(
                "a column definition whose catalog is not \"def\"",
            ));
        }
        let schema = r.lenenc_bytes("schema")?.to_vec();
        let table = r.lenenc_bytes("table")?.to_vec();
        let org_table = r.lenenc_bytes("org_table")?.to_vec();
        let name = r.lenenc_bytes("name")?.to_vec();
        let org_name = r.lenenc_bytes("org_name")?.to_vec();
        let fixed = r.lenenc("fixed fields length")?;
        if fixed < 0x0c {
            return Err(MessageError::Unsupported("short fixed column fields"));
        }
        let charset = r.u16("character set")?;
        let length = r.u32("column length")?;
        let column_type = r.u8("column type")?;
        let flags = r.u16("flags")?;
        let decimals = r.u8("decimals")?;
        Ok(Self {
            schema,
            table,
            org_table,
            name,
            org_name,
            charset,
            length,
            column_type,
            flags,
            decimals,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        put_lenenc_bytes(out, b"def");
        put_lenenc_bytes(out, &self.schema);
        put_lenenc_bytes(out, &self.table);
        put_lenenc_bytes(out, &self.org_table);
        put_lenenc_bytes(out, &self.name);
        put_lenenc_bytes(out, &self.org_name);
        put_lenenc(out, 0x0c);
        out.extend_from_slice(&self.charset.to_le_bytes());
        out.extend_from_slice(&self.length.to_le_bytes());
        out.push(self.column_type);
        out.extend_from_slice(&self.flags.to_le_bytes());
        out.push(self.decimals);
        out.extend_from_slice(&[0, 0]);
    }
}

/// The values of a text-protocol row (`None`: SQL NULL), borrowed from the payload.
pub fn text_row(payload: &[u8], columns: usize) -> Result<Vec<Option<&[u8]>>, MessageError> {
    let mut r = Reader::new(payload);
    let mut out = Vec::with_capacity(columns);
    for _ in 0..columns {
        if payload.get(payload.len() - r.remaining()) == Some(&0xfb) {
            r.u8("NULL")?;
            out.push(None);
        } else {
            out.push(Some(r.lenenc_bytes("row value")?));
        }
    }
    if !r.is_empty() {
        return Err(MessageError::Unsupported(
            "a row with more values than columns",
        ));
    }
    Ok(out)
}

/// Builds a text-protocol row.
pub fn encode_text_row(values: &[Option<&[u8]>], out: &mut Vec<u8>) {
    for v in values {
        match v {
            None => out.push(0xfb),
            Some(b) => put_lenenc_bytes(out, b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_known_or_refused() {
        assert_eq!(CommandKind::of(&query(b"SELECT 1")), Ok(CommandKind::Query));
        assert_eq!(CommandKind::of(b"\x0e"), Ok(CommandKind::Ping));
        assert!(CommandKind::of(b"\x63").is_err());
        assert!(CommandKind::of(b"").is_err());
    }

    #[test]
    fn column_definitions_and_rows_round_trip() {
        let c = ColumnDefinition {
            schema: b"shop".to_vec(),
            table: b"p".to_vec(),
            org_table: b"payments".to_vec(),
            name: b"cn".to_vec(),
            org_name: b"card_number".to_vec(),
            charset: 45,
            length: 64,
            column_type: 0xfd,
            flags: 0,
            decimals: 0,
        };
        let mut out = Vec::new();
        c.encode(&mut out);
        assert_eq!(ColumnDefinition::parse(&out), Ok(c));

        let values: Vec<Option<&[u8]>> = vec![Some(b"4111111111111111"), None, Some(b"")];
        let mut row = Vec::new();
        encode_text_row(&values, &mut row);
        assert_eq!(text_row(&row, 3), Ok(values));
        assert!(text_row(&row, 2).is_err(), "more values than columns");
        assert!(text_row(&row, 4).is_err(), "fewer values than columns");
        assert!(text_row(b"\x10short", 1).is_err());
    }
}

/// Column types whose binary-protocol value has a fixed width, and that width.
pub fn fixed_width(column_type: u8) -> Option<usize> {
    match column_type {
        0x01 => Some(1),        // TINY
        0x02 | 0x0d => Some(2), // SHORT, YEAR
        0x03 | 0x09 => Some(4), // LONG, INT24
        0x04 => Some(4),        // FLOAT
        0x05 | 0x08 => Some(8), // DOUBLE, LONGLONG
        0x06 => Some(0),        // NULL
        _ => None,
    }
}

/// Whether a binary-protocol value of this type is one length byte and that many bytes
/// (DATE, DATETIME, TIMESTAMP, TIME); every other variable type is a length-encoded string.
pub fn is_temporal(column_type: u8) -> bool {
    matches!(column_type, 0x07 | 0x0a | 0x0b | 0x0c | 0x11 | 0x12 | 0x13)
}

/// The values of a binary-protocol row (`0x00`, NULL bitmap with a 2-bit offset, values), as
/// their bytes on the wire: little-endian integers and floats, temporal structures, string
/// contents. `None`: SQL NULL.
pub fn binary_row<'a>(
    payload: &'a [u8],
    column_types: &[u8],
) -> Result<Vec<Option<&'a [u8]>>, MessageError> {
    let mut r = Reader::new(payload);
    match r.u8("binary row header")? {
        0x00 => {}
        found => {
            return Err(MessageError::Unexpected {
                what: "binary row header",
                found,
            });
        }
    }
    let bitmap = r.bytes((column_types.len() + 7 + 2) / 8, "NULL bitmap")?;
    let mut out = Vec::with_capacity(column_types.len());
    for (i, &t) in column_types.iter().enumerate() {
        let bit = i + 2;
        let null = bitmap
            .get(bit / 8)
            .is_some_and(|b| b & (1 << (bit % 8)) != 0);
        if null {
            out.push(None);
            continue;
        }
        let v = match fixed_width(t) {
            Some(n) => r.bytes(n, "binary value")?,
            None if is_temporal(t) => {
                let n = r.u8("temporal length")?;
                r.bytes(usize::from(n), "temporal value")?
            }
            None => r.lenenc_bytes("binary value")?,
        };
        out.push(Some(v));
    }
    if !r.is_empty() {
        return Err(MessageError::Unsupported(
            "a binary row with more values than columns",
        ));
    }
    Ok(out)
}

/// Builds a binary-protocol row; each value must have its type's wire form (as
/// [`binary_row`] returns it).
pub fn encode_binary_row(values: &[Option<&[u8]>], column_types: &[u8], out: &mut Vec<u8>) {
    out.push(0x00);
    let mut bitmap = vec![0u8; (values.len() + 7 + 2) / 8];
    for (i, v) in values.iter().enumerate() {
        if v.is_none()
            && let Some(b) = bitmap.get_mut((i + 2) / 8)
        {
            *b |= 1 << ((i + 2) % 8);
        }
    }
    out.extend_from_slice(&bitmap);
    for (v, &t) in values.iter().zip(column_types) {
        let Some(v) = v else { continue };
        match fixed_width(t) {
            Some(_) => out.extend_from_slice(v),
            None if is_temporal(t) => {
                out.push(v.len().min(255) as u8);
                out.extend_from_slice(v.get(..v.len().min(255)).unwrap_or_default());
            }
            None => put_lenenc_bytes(out, v),
        }
    }
}

#[cfg(test)]
mod binary_tests {
    use super::*;

    #[test]
    fn binary_rows_round_trip_with_nulls_ints_strings_and_dates() {
        let types = [0x08, 0xfd, 0x03, 0x0c, 0x01];
        let big = 4_111_111_111_111_111i64.to_le_bytes();
        let date = [0xe8u8, 0x07, 12, 4, 10, 30, 0];
        let values: Vec<Option<&[u8]>> =
            vec![Some(&big), Some(b"note"), None, Some(&date), Some(&[9])];
        let mut row = Vec::new();
        encode_binary_row(&values, &types, &mut row);
        assert_eq!(
            row[1], 0b0001_0000,
            "the third column's NULL bit, after the 2-bit offset"
        );
        assert_eq!(binary_row(&row, &types), Ok(values));
        assert!(
            binary_row(&row, &types[..4]).is_err(),
            "more values than columns"
        );
        assert!(
            binary_row(&row[..row.len() - 1], &types).is_err(),
            "truncated"
        );
        assert!(
            binary_row(b"\x01\x00", &[0x01]).is_err(),
            "not a binary row"
        );
    }
}
