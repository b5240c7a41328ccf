//! Masking in the PostgreSQL adapter: which result columns are sensitive, and rewriting the
//! messages that carry values to the client.
//!
//! A result column is sensitive when it *comes from* a configured table column. PostgreSQL
//! says where a plain column comes from in the RowDescription (table OID and attribute number),
//! which covers aliases, `p.*`, cursors and prepared statements without parsing anything; the
//! catalog maps the OID to `schema.table.column`, and a view's columns to the table columns its
//! query reads. A computed column (table OID 0) is judged by the statement's lineage, from the
//! SQL analysis. The content detector then looks at every text value regardless.
//!
//! Only messages that need it are rebuilt: a DataRow with nothing to mask is forwarded as the
//! original bytes.

pub(crate) mod copy;
pub(crate) mod message;
pub(crate) mod value;

use gatehouse_core::masking::inference::MaskedData;
use gatehouse_core::masking::{ColumnMask, MaskCounts, MaskStyle, ReasonCounts, SessionMasks};
use gatehouse_core::policy::{ColumnRef, OutputColumn, StatementInfo, TableRef};

use crate::catalog::Catalog;
use crate::codec::{BodyReader, CodecError};
pub(crate) use value::ValueKind;

/// One column of a RowDescription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldDesc {
    pub name: String,
    pub table_oid: u32,
    pub attnum: i16,
    pub type_oid: u32,
    pub binary: bool,
}

/// Parses the columns of a RowDescription body.
pub(crate) fn row_description(body: bytes::Bytes) -> Result<Vec<FieldDesc>, CodecError> {
    let mut r = BodyReader::new(body, "RowDescription");
    let n = usize::try_from(r.i16()?).map_err(|_| CodecError::Malformed {
        what: "RowDescription",
    })?;
    let mut out = Vec::with_capacity(n.min(1600));
    for _ in 0..n {
        let name = String::from_utf8_lossy(&r.cstr()?).into_owned();
        let table_oid = r.i32()? as u32;
        let attnum = r.i16()?;
        let type_oid = r.i32()? as u32;
        let _typlen = r.i16()?;
        let _typmod = r.i32()?;
        let format = r.i16()?;
        out.push(FieldDesc {
            name,
            table_oid,
            attnum,
            type_oid,
            binary: format == 1,
        });
    }
    Ok(out)
}

/// How one result column is treated.
#[derive(Debug, Clone)]
pub(crate) struct FieldPlan {
    pub name: String,
    pub kind: ValueKind,
    pub binary: bool,
    pub mask: Option<ColumnMask>,
}

/// The masking of one result set (from one RowDescription), with its counts so far.
#[derive(Debug, Clone)]
pub(crate) struct ResultPlan {
    pub fields: Vec<FieldPlan>,
    /// The content detector's style, when it runs.
    pub detect: Option<MaskStyle>,
    pub counts: Vec<ReasonCounts>,
}

impl ResultPlan {
    /// Whether any DataRow of this result may need rewriting.
    pub(crate) fn active(&self) -> bool {
        self.detect.is_some() || self.fields.iter().any(|f| f.mask.is_some())
    }

    /// Adds this result's counts to `into`.
    pub(crate) fn drain_counts(&mut self, into: &mut MaskCounts) {
        for (f, c) in self.fields.iter().zip(self.counts.iter_mut()) {
            into.add(&f.name, std::mem::take(c));
        }
    }
}

/// What the lineage of the statement says about computed result columns (table OID 0).
#[derive(Debug, Clone, Default)]
pub(crate) struct LineageMask {
    /// Per output position, up to the first `*` (positions after it are not known).
    positions: Vec<Option<ColumnMask>>,
    /// The strongest mask of any output (used where positions are not known).
    any: Option<ColumnMask>,
}

impl LineageMask {
    fn for_field(&self, i: usize) -> Option<ColumnMask> {
        match self.positions.get(i) {
            Some(m) => *m,
            None => self.any,
        }
    }

    /// A lineage that masks every computed column (nothing is known about the statement).
    pub(crate) fn all(mask: Option<ColumnMask>) -> Self {
        Self {
            positions: Vec::new(),
            any: mask,
        }
    }
}

/// Resolves where sources live and whether they are sensitive.
pub(crate) struct Resolver<'a> {
    pub catalog: Option<&'a Catalog>,
    pub masks: &'a SessionMasks,
    pub search_path: &'a [String],
    pub user: &'a str,
}

/// Maximum depth of views over views followed.
const MAX_VIEW_DEPTH: usize = 16;

/// The stronger of two masks (see [`ColumnMask::merge`]).
fn stronger(a: Option<ColumnMask>, b: Option<ColumnMask>) -> Option<ColumnMask> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.merge(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// The mask of output `o`'s source `src`: masked whole when the output is computed from it.
fn through(o: &OutputColumn, src: &ColumnRef, m: Option<ColumnMask>) -> Option<ColumnMask> {
    if o.derived.contains(src) {
        m.map(ColumnMask::derive)
    } else {
        m
    }
}

impl Resolver<'_> {
    /// The mask of a result column the server attributes to `oid`/`attnum`; `None` in the
    /// second place when the relation is not in the catalog.
    pub(crate) fn table_field(&self, oid: u32, attnum: i16) -> Option<Option<ColumnMask>> {
        self.relation_column(oid, attnum, 0)
    }

    fn relation_column(&self, oid: u32, attnum: i16, depth: usize) -> Option<Option<ColumnMask>> {
        let rel = self.catalog?.relation(oid)?;
        let (column, _) = rel.column(attnum)?;
        let mut m = self.masks.table_column(&rel.schema, &rel.name, column);
        if matches!(rel.kind, 'v' | 'm') {
            match self.catalog.and_then(|c| c.view_sources(oid, attnum)) {
                Some(o) => {
                    for s in &o.sources {
                        m = stronger(m, through(o, s, self.source_at(s, depth + 1)));
                    }
                }
                // A view whose query could not be analysed: its columns are as sensitive
                // as anything it could read.
                None => {
                    m = stronger(
                        m,
                        self.masks.source(&ColumnRef {
                            table: None,
                            column: column.to_owned(),
                        }),
                    )
                }
            }
        }
        Some(m)
    }

    /// The mask of a value computed from `source`.
    pub(crate) fn source(&self, source: &ColumnRef) -> Option<ColumnMask> {
        self.source_at(source, 0)
    }

    fn source_at(&self, source: &ColumnRef, depth: usize) -> Option<ColumnMask> {
        let direct = self.masks.source(source);
        let (Some(catalog), Some(table)) = (self.catalog, source.table.as_ref()) else {
            return direct;
        };
        if depth > MAX_VIEW_DEPTH {
            return direct;
        }
        let Some(schema) = &table.schema else {
            // Unresolved (a masked session never guesses the server's search_path): the
            // strongest mask of every relation of that name the catalog knows, judged by
            // their real columns; the patterns alone for a name it does not know.
            let mut m = None;
            let mut known = false;
            for s in catalog.schemas_named(&table.name) {
                known = true;
                let qualified = ColumnRef {
                    table: Some(TableRef {
                        schema: Some(s.to_owned()),
                        name: table.name.clone(),
                    }),
                    column: source.column.clone(),
                };
                m = stronger(m, self.source_at(&qualified, depth + 1));
            }
            return if known { m } else { direct };
        };
        let Some((oid, rel)) = catalog.relation_named(schema, &table.name) else {
            return direct;
        };
        // Known relation: judge by its real columns. A whole-row source reads all of them, and
        // so does a name that is no column of it (`p.f` is the function `f(p)` then).
        let whole = source.column == "*"
            || !rel
                .columns
                .iter()
                .any(|(_, name, _)| source.column.eq_ignore_ascii_case(name));
        let mut m = None;
        for (attnum, name, _) in &rel.columns {
            if whole || source.column.eq_ignore_ascii_case(name) {
                m = stronger(m, self.relation_column(oid, *attnum, depth).flatten());
            }
        }
        m
    }

    /// The lineage masks of what a Query/Parse runs (`effective` includes prepared bodies).
    pub(crate) fn lineage(
        &self,
        effective: &[StatementInfo],
        cursors: Option<ColumnMask>,
    ) -> LineageMask {
        let with_outputs: Vec<&StatementInfo> = effective
            .iter()
            .filter(|s| s.outputs.is_some() && s.kind != "declare")
            .collect();
        let fetches = effective.iter().any(|s| s.kind == "fetch");
        let mut out = LineageMask::default();
        if fetches {
            out.any = cursors;
        }
        let single = with_outputs.len() == 1 && !fetches;
        for s in with_outputs {
            let Some(outputs) = &s.outputs else { continue };
            let mut star_seen = false;
            for o in outputs {
                let mut m = None;
                for src in &o.sources {
                    m = stronger(m, through(o, src, self.source(src)));
                }
                out.any = stronger(out.any, m);
                star_seen |= o.star;
                if single && !star_seen {
                    out.positions.push(m);
                }
            }
        }
        out
    }

    /// The strongest mask of what a `DECLARE ... CURSOR FOR` reads (FETCH results).
    pub(crate) fn declared(&self, effective: &[StatementInfo]) -> Option<ColumnMask> {
        let mut m = None;
        for s in effective.iter().filter(|s| s.kind == "declare") {
            for o in s.outputs.iter().flatten() {
                for src in &o.sources {
                    m = stronger(m, through(o, src, self.source(src)));
                }
            }
        }
        m
    }

    /// What a `COPY ... TO STDOUT` sends: its format options and columns.
    pub(crate) fn copy_spec(&self, s: &StatementInfo) -> Option<copy::CopySpec> {
        let info = s.copy.as_ref()?;
        let one_byte = |v: &Option<String>, default: u8| -> u8 {
            v.as_deref()
                .and_then(|t| t.as_bytes().first().copied())
                .unwrap_or(default)
        };
        let csv = info.format == "csv";
        let fields = if info.query {
            let lineage = self.lineage(std::slice::from_ref(s), None);
            s.outputs
                .iter()
                .flatten()
                .enumerate()
                .map(|(i, o)| FieldPlan {
                    name: format!("column {}", i + 1),
                    kind: ValueKind::Other,
                    binary: false,
                    mask: if o.star {
                        lineage.any
                    } else {
                        lineage.for_field(i)
                    },
                })
                .collect()
        } else {
            self.copy_table_fields(info).unwrap_or_default()
        };
        Some(copy::CopySpec {
            csv: csv.then(|| {
                let quote = one_byte(&info.quote, b'"');
                (
                    one_byte(&info.delimiter, b','),
                    quote,
                    one_byte(&info.escape, quote),
                )
            }),
            delimiter: one_byte(&info.delimiter, b'\t'),
            fields,
            header: info.header,
        })
    }

    /// The columns of `COPY table [(cols)]`, in the order they are sent.
    fn copy_table_fields(&self, info: &gatehouse_core::policy::CopyInfo) -> Option<Vec<FieldPlan>> {
        let catalog = self.catalog?;
        let table = info.table.as_ref()?;
        let schema = match &table.schema {
            Some(s) => s.as_str(),
            None => catalog.schema_of(&table.name, self.search_path, self.user)?,
        };
        let (oid, rel) = catalog.relation_named(schema, &table.name)?;
        let plan = |attnum: i16, name: &str, ty: u32| FieldPlan {
            name: name.to_owned(),
            kind: ValueKind::of(ty),
            binary: false,
            mask: self.table_field(oid, attnum).flatten(),
        };
        if info.columns.is_empty() {
            Some(
                rel.columns
                    .iter()
                    .map(|(n, name, ty)| plan(*n, name, *ty))
                    .collect(),
            )
        } else {
            info.columns
                .iter()
                .map(|c| {
                    rel.columns
                        .iter()
                        .find(|(_, name, _)| name == c)
                        .map(|(n, name, ty)| plan(*n, name, *ty))
                })
                .collect()
        }
    }

    /// The plan of one result set.
    pub(crate) fn plan(&self, fields: &[FieldDesc], lineage: &LineageMask) -> ResultPlan {
        let plans = fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mask = if f.table_oid == 0 {
                    lineage.for_field(i)
                } else {
                    match self.table_field(f.table_oid, f.attnum) {
                        Some(m) => m,
                        // A relation the catalog does not know (a temporary table): by name,
                        // and by what the statement reads.
                        None => stronger(
                            self.masks.source(&ColumnRef {
                                table: None,
                                column: f.name.clone(),
                            }),
                            lineage.for_field(i),
                        ),
                    }
                };
                FieldPlan {
                    name: f.name.clone(),
                    kind: ValueKind::of(f.type_oid),
                    binary: f.binary,
                    mask,
                }
            })
            .collect::<Vec<_>>();
        ResultPlan {
            counts: vec![ReasonCounts::default(); plans.len()],
            fields: plans,
            detect: self.masks.pan_style(),
        }
    }
}

impl MaskedData for Resolver<'_> {
    fn mask(&self, column: &ColumnRef) -> Option<ColumnMask> {
        self.source(column)
    }

    fn opaque_function(&self, name: &str) -> bool {
        self.catalog.is_some_and(|c| c.is_user_function(name))
    }

    fn views(&self, table: &TableRef) -> Vec<&StatementInfo> {
        let Some(catalog) = self.catalog else {
            return Vec::new();
        };
        match &table.schema {
            Some(s) => catalog.view_query(s, &table.name).into_iter().collect(),
            // Unresolved: whichever of them the server picks.
            None => catalog
                .schemas_named(&table.name)
                .filter_map(|s| catalog.view_query(s, &table.name))
                .collect(),
        }
    }
}

/// The `builtin:masked-inference` refusal of `stmt` for `masks`, if any (see
/// [`gatehouse_core::masking::inference`]); for `gatehouse explain` and the relay alike.
pub fn masked_inference(
    catalog: Option<&Catalog>,
    masks: &SessionMasks,
    search_path: &[String],
    user: &str,
    stmt: &StatementInfo,
) -> Option<gatehouse_core::policy::Decision> {
    if !masks.is_active() {
        return None;
    }
    let r = Resolver {
        catalog,
        masks,
        search_path,
        user,
    };
    gatehouse_core::masking::inference::judge(stmt, &r)
}

/// For `gatehouse explain`: how each output column of `stmt` would be masked for `masks`
/// (computed columns by lineage; plain columns as the RowDescription would resolve them).
/// One line per masked output; empty when nothing would be.
pub fn describe_output_masks(
    catalog: Option<&Catalog>,
    masks: &SessionMasks,
    search_path: &[String],
    user: &str,
    stmt: &StatementInfo,
) -> Vec<String> {
    let r = Resolver {
        catalog,
        masks,
        search_path,
        user,
    };
    let mut out = Vec::new();
    for (i, o) in stmt.outputs.iter().flatten().enumerate() {
        let mut m = None;
        let mut why: Vec<String> = Vec::new();
        for src in &o.sources {
            if let Some(sm) = through(o, src, r.source(src)) {
                m = stronger(m, Some(sm));
                why.push(match &src.table {
                    Some(t) => format!(
                        "{}{}.{}",
                        t.schema
                            .as_deref()
                            .map(|s| format!("{s}."))
                            .unwrap_or_default(),
                        t.name,
                        src.column
                    ),
                    None => src.column.clone(),
                });
            }
        }
        if let Some(m) = m {
            let style = match m.effective_style() {
                MaskStyle::Last4 => "last4",
                MaskStyle::Redact => "redact",
                MaskStyle::Token => "token",
            };
            let what = if o.star { "*" } else { "column" };
            out.push(format!(
                "output {} ({what}): {style}{} from {}",
                i + 1,
                if m.verification_code {
                    " (verification code)"
                } else {
                    ""
                },
                why.join(", ")
            ));
        }
    }
    out
}

/// Entry points for the fuzz targets (`fuzz/fuzz_targets/mask_server_messages.rs`): the
/// rewriters of server messages that carry text, on arbitrary bytes. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    use gatehouse_core::masking::{MaskStyle, TokenKey};

    /// What one rewriter made of a message: `Err` for a malformed one (the relay then ends
    /// the session), `Ok(None)` for "forward unchanged", `Ok(Some(bytes))` for the rewrite.
    pub type Rewritten = Result<Option<Vec<u8>>, ()>;

    /// Runs the error/notice masker (`style` picks the mask style), the withholding rewrite
    /// and the notification masker over `msg` (a whole message: tag, length, body).
    pub fn rewrite_text_messages(msg: &[u8], style: u8) -> [Rewritten; 3] {
        let key = TokenKey::from_bytes([7; 32]);
        let style = match style % 3 {
            0 => MaskStyle::Last4,
            1 => MaskStyle::Redact,
            _ => MaskStyle::Token,
        };
        [
            super::message::error_or_notice(msg, style, &key).map(|o| o.map(|(m, _)| m)),
            super::message::withhold(msg).map(Some),
            super::message::notification(msg, style, &key).map(|o| o.map(|(m, _)| m)),
        ]
    }
}
