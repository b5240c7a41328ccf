//! The output formats: `json` renders the report itself, `html` and `md` render its document
//! (one file per format, each escaping every cell for its own syntax).

mod html;
mod json;
mod markdown;

use std::path::Path;

use super::EvidenceError;
use super::document::document;
use super::summary::Report;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Html,
    Json,
    Md,
}

impl Format {
    /// `html` (or `htm`), `json`, `md` (or `markdown`), in any case.
    pub fn parse(s: &str) -> Result<Self, EvidenceError> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "html" | "htm" => Self::Html,
            "json" => Self::Json,
            "md" | "markdown" => Self::Md,
            _ => return Err(EvidenceError::UnsupportedFormat(s.to_owned())),
        })
    }

    /// `--format`, else the output file's extension, else html.
    pub fn choose(explicit: Option<&str>, output: &Path) -> Result<Self, EvidenceError> {
        if let Some(f) = explicit {
            return Self::parse(f);
        }
        Ok(output
            .extension()
            .and_then(|e| e.to_str())
            .and_then(|e| Self::parse(e).ok())
            .unwrap_or(Self::Html))
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Html => "html",
            Self::Json => "json",
            Self::Md => "md",
        }
    }
}

/// The report as text in `format`.
pub fn render(report: &Report, format: Format) -> Result<String, EvidenceError> {
    Ok(match format {
        Format::Json => json::render_json(report)?,
        Format::Html => html::render_html(&document(report)),
        Format::Md => markdown::render_md(&document(report)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_format_follows_the_extension() {
        let f = |p: &str| Format::choose(None, Path::new(p)).unwrap();
        assert_eq!(f("r.json"), Format::Json);
        assert_eq!(f("r.md"), Format::Md);
        assert_eq!(f("r.HTML"), Format::Html);
        assert_eq!(f("r.txt"), Format::Html);
        assert_eq!(f("r"), Format::Html);
        assert_eq!(
            Format::choose(Some("md"), Path::new("r.json")).unwrap(),
            Format::Md
        );
        assert!(Format::choose(Some("pdf"), Path::new("r")).is_err());
    }

    #[test]
    fn evidence_escaping_leaves_no_markup() {
        let hostile = "<script>alert('x')</script> | `a` *b* [c](d) & \"q\"\nnext";
        let h = html::html_escape(hostile);
        assert!(!h.contains('<') && !h.contains('>') && !h.contains('"'));
        let m = markdown::md_escape(hostile);
        assert!(!m.contains('<') && !m.contains('>') && !m.contains('\n'));
        assert!(!m.replace("\\|", "").contains('|'));
    }
}
