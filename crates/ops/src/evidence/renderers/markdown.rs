//! `--format md`: the same document as Markdown, for a wiki or a ticket; nothing in a cell can
//! become markup or raw HTML.

use std::fmt::Write as _;

use crate::evidence::document::Doc;

/// Escapes text for a Markdown table cell: no markup, no raw HTML, no cell breaks.
pub(super) fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '|' => out.push_str("\\|"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '#' | '!' | '~' => {
                out.push('\\');
                out.push(ch);
            }
            '\r' | '\n' | '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The document as Markdown.
pub(super) fn render_md(doc: &Doc) -> String {
    let mut m = String::new();
    let e = md_escape;
    let _ = writeln!(m, "# {}\n", e(&doc.title));
    kv_md(&mut m, &doc.meta);
    m.push_str("## Summary\n\n| Requirement | Evidence | Figure | Status |\n|---|---|---|---|\n");
    for (row, link) in doc.summary.iter().zip(&doc.summary_links) {
        let [req, title, figure, st] = row;
        let _ = writeln!(
            m,
            "| [{}](#{}) | {} | {} | **{}** |",
            e(req),
            link,
            e(title),
            e(figure),
            e(st)
        );
    }
    m.push('\n');
    for s in &doc.sections {
        let _ = writeln!(
            m,
            "<a id=\"{}\"></a>\n\n## {} ({})\n\n{}\n",
            s.id,
            e(&s.heading),
            s.status.as_str(),
            e(&s.intro)
        );
        kv_md(&mut m, &s.figures);
        for t in &s.tables {
            let _ = writeln!(m, "### {}\n", e(&t.caption));
            if t.rows.is_empty() {
                m.push_str("none\n\n");
                continue;
            }
            let heads: Vec<String> = t.headers.iter().map(|x| e(x)).collect();
            let _ = writeln!(m, "| {} |", heads.join(" | "));
            let _ = writeln!(m, "|{}", "---|".repeat(t.headers.len()));
            for row in &t.rows {
                let cells: Vec<String> = row.iter().map(|x| e(x)).collect();
                let _ = writeln!(m, "| {} |", cells.join(" | "));
            }
            if t.total > t.rows.len() as u64 {
                let _ = writeln!(m, "\n{} of {} shown.", t.rows.len(), t.total);
            }
            m.push('\n');
        }
    }
    m
}

fn kv_md(m: &mut String, kv: &[(String, String)]) {
    if kv.is_empty() {
        return;
    }
    m.push_str("| | |\n|---|---|\n");
    for (k, v) in kv {
        let _ = writeln!(m, "| {} | {} |", md_escape(k), md_escape(v));
    }
    m.push('\n');
}
