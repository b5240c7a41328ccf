//! `--format html`: one self-contained file an auditor can open, print and archive (inline
//! CSS, a Content-Security-Policy that allows nothing else, no scripts, no external resources).

use std::fmt::Write as _;

use crate::evidence::document::Doc;

/// Escapes text for HTML element content and quoted attribute values.
pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const CSS: &str = "
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;font-size:14px;color:#1f2328;max-width:1200px;margin:24px auto;padding:0 16px;line-height:1.45}
h1{font-size:24px;margin:0 0 8px}h2{font-size:19px;margin:32px 0 8px;padding-bottom:4px;border-bottom:2px solid #d0d7de}
h3{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;width:100%;margin:6px 0 12px}
th,td{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top;overflow-wrap:anywhere}
th{background:#f6f8fa}
table.kv th{width:32%}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-weight:600;font-size:12px}
.ok{background:#dafbe1;color:#116329;border:1px solid #4ac26b}
.attention{background:#fff8c5;color:#7d4e00;border:1px solid #d4a72c}
p.intro{color:#57606a;margin:4px 0 8px}
p.note{color:#57606a;font-style:italic;margin:2px 0 12px}
.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
footer{margin-top:32px;color:#57606a;font-size:12px}
@media print{body{margin:0;max-width:none;font-size:11px}a{color:inherit;text-decoration:none}h2{break-after:avoid}tr{break-inside:avoid}section{break-before:auto}.status{border:1px solid #000}}
";

/// The document as an HTML page.
pub(super) fn render_html(doc: &Doc) -> String {
    let mut h = String::new();
    let e = html_escape;
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<header>\n<h1>{}</h1>\n",
        e(&doc.title),
        e(&doc.title)
    );
    kv_html(&mut h, &doc.meta);
    h.push_str("</header>\n<main>\n<h2 id=\"summary\">Summary</h2>\n<table class=\"summary\">\n<thead><tr><th>Requirement</th><th>Evidence</th><th>Figure</th><th>Status</th></tr></thead>\n<tbody>\n");
    for ((row, status), link) in doc
        .summary
        .iter()
        .zip(&doc.summary_status)
        .zip(&doc.summary_links)
    {
        let [req, title, figure, st] = row;
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td><td><span class=\"status {}\">{}</span></td></tr>",
            e(link),
            e(req),
            e(title),
            e(figure),
            status.as_str(),
            e(st)
        );
    }
    h.push_str("</tbody>\n</table>\n");
    for s in &doc.sections {
        let _ = write!(
            h,
            "<section id=\"{}\">\n<h2>{} <span class=\"status {}\">{}</span></h2>\n<p class=\"intro\">{}</p>\n",
            e(&s.id),
            e(&s.heading),
            s.status.as_str(),
            s.status.as_str(),
            e(&s.intro)
        );
        kv_html(&mut h, &s.figures);
        for t in &s.tables {
            let _ = writeln!(h, "<h3>{}</h3>", e(&t.caption));
            if t.rows.is_empty() {
                h.push_str("<p class=\"note\">none</p>\n");
                continue;
            }
            h.push_str("<table>\n<thead><tr>");
            for head in &t.headers {
                let _ = write!(h, "<th>{}</th>", e(head));
            }
            h.push_str("</tr></thead>\n<tbody>\n");
            for row in &t.rows {
                h.push_str("<tr>");
                for (cell, head) in row.iter().zip(&t.headers) {
                    let class = if head == "statement" || head.starts_with("rule /") {
                        " class=\"mono\""
                    } else if !cell.is_empty() && cell.chars().all(|c| c.is_ascii_digit()) {
                        " class=\"num\""
                    } else {
                        ""
                    };
                    let _ = write!(h, "<td{class}>{}</td>", e(cell));
                }
                h.push_str("</tr>\n");
            }
            h.push_str("</tbody>\n</table>\n");
            if t.total > t.rows.len() as u64 {
                let _ = writeln!(
                    h,
                    "<p class=\"note\">{} of {} shown; the JSON report has the counts, `gatehouse audit export` the records.</p>",
                    t.rows.len(),
                    t.total
                );
            }
        }
        h.push_str("</section>\n");
    }
    let _ = write!(
        h,
        "</main>\n<footer>Computed from the audit records by gatehouse {}; figures are recomputable with <span class=\"mono\">gatehouse evidence --format json</span>.</footer>\n</body>\n</html>\n",
        e(doc
            .meta
            .iter()
            .find(|(k, _)| k == "gatehouse")
            .map_or("", |(_, v)| v.as_str()))
    );
    h
}

fn kv_html(h: &mut String, kv: &[(String, String)]) {
    if kv.is_empty() {
        return;
    }
    h.push_str("<table class=\"kv\">\n<tbody>\n");
    for (k, v) in kv {
        let _ = writeln!(
            h,
            "<tr><th>{}</th><td>{}</td></tr>",
            html_escape(k),
            html_escape(v)
        );
    }
    h.push_str("</tbody>\n</table>\n");
}
