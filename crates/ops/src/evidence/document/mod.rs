//! The document the html and md renderers share: the report laid out as a header, the summary
//! table and one section per requirement, each with figures and tables.
//!
//! Why a model between the report and the renderers: every cell is plain text, escaped by the
//! renderer for its format, so no value from the store (statement text is attacker-controlled)
//! can become markup, and both formats say exactly the same things.

mod sections;

use std::collections::BTreeMap;

use super::summary::{Capped, Report, Status};

/// The report laid out for people: a header, the summary table, one section per requirement.
pub(crate) struct Doc {
    pub(crate) title: String,
    pub(crate) meta: Vec<(String, String)>,
    pub(crate) summary: Vec<[String; 4]>,
    pub(crate) summary_status: Vec<Status>,
    pub(crate) summary_links: Vec<String>,
    pub(crate) sections: Vec<Section>,
}

/// One requirement: its headline figures and its drill-down tables.
pub(crate) struct Section {
    pub(crate) id: String,
    pub(crate) heading: String,
    pub(crate) status: Status,
    pub(crate) intro: String,
    pub(crate) figures: Vec<(String, String)>,
    pub(crate) tables: Vec<Table>,
}

/// A table of plain-text cells.
pub(crate) struct Table {
    pub(crate) caption: String,
    pub(crate) headers: Vec<String>,
    pub(crate) rows: Vec<Vec<String>>,
    /// Rows in total (more than `rows` when the list was capped).
    pub(crate) total: u64,
}

/// The report as a document, sections in report order.
pub(crate) fn document(r: &Report) -> Doc {
    let sections = vec![
        sections::cardholder_access(r),
        sections::administrative_actions(r),
        sections::audit_log_access(r),
        sections::invalid_access_attempts(r),
        sections::record_completeness(r),
        sections::masking(r),
        sections::pan_scan(r),
        sections::approved_access(r),
        sections::identities(r),
        sections::integrity(r),
        sections::retention(r),
        sections::control_failures(r),
    ];
    let meta = &r.report;
    Doc {
        title: meta.title.clone(),
        meta: vec![
            fig("period", meta.period.describe()),
            fig("generated", &meta.generated_at),
            fig("gatehouse", &meta.gatehouse_version),
            fig("configuration", &meta.config),
            fig("audit store", &meta.store),
            fig("records in the period", meta.records_in_period),
            fig("records in the store", meta.records_in_store),
            fig("records per kind", reasons(&meta.records_by_kind)),
        ],
        summary: r
            .summary
            .iter()
            .map(|s| {
                [
                    s.requirement.clone(),
                    s.title.clone(),
                    s.figure.clone(),
                    s.status.as_str().to_owned(),
                ]
            })
            .collect(),
        summary_status: r.summary.iter().map(|s| s.status).collect(),
        summary_links: r.summary.iter().map(|s| s.section.clone()).collect(),
        sections,
    }
}

/// A table with exactly the given rows.
pub(super) fn table<const N: usize>(
    caption: &str,
    headers: [&str; N],
    rows: Vec<[String; N]>,
) -> Table {
    let total = rows.len() as u64;
    Table {
        caption: caption.to_owned(),
        headers: headers.iter().map(|h| (*h).to_owned()).collect(),
        rows: rows.into_iter().map(Vec::from).collect(),
        total,
    }
}

/// A table of a capped list: its kept items, and its true total.
pub(super) fn capped_table<T, const N: usize>(
    caption: &str,
    headers: [&str; N],
    list: &Capped<T>,
    row: impl Fn(&T) -> [String; N],
) -> Table {
    let mut t = table(caption, headers, list.items.iter().map(row).collect());
    t.total = list.total;
    t
}

/// A table of counts per key.
pub(super) fn map_table(
    caption: &str,
    key: &str,
    value: &str,
    map: &BTreeMap<String, u64>,
) -> Table {
    table(
        caption,
        [key, value],
        map.iter()
            .map(|(k, v)| [k.clone(), v.to_string()])
            .collect(),
    )
}

/// An optional value, `-` when absent.
pub(super) fn opt(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "-".to_owned())
}

/// An optional number, `-` when absent.
pub(super) fn opt_num<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_owned(), |x| x.to_string())
}

/// A labelled figure.
pub(super) fn fig(label: &str, value: impl ToString) -> (String, String) {
    (label.to_owned(), value.to_string())
}

/// Counts per key on one line (`a: 1, b: 2`), `-` when empty.
pub(super) fn reasons(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".to_owned();
    }
    m.iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
