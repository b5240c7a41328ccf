//! How an error reads in a log line or a record: the error and its sources on one line,
//! `outer: inner: innermost` (the form `anyhow`'s `{:#}` prints, which these texts kept when
//! the operations got error types of their own).

/// `e` and every source below it, joined by `: `.
pub(crate) fn with_sources(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}")]
    struct Outer {
        path: String,
        #[source]
        source: std::io::Error,
    }

    #[test]
    fn sources_follow_the_error() {
        let e = Outer {
            path: "/x".into(),
            source: std::io::Error::other("disk gone"),
        };
        assert_eq!(with_sources(&e), "reading /x: disk gone");
        assert_eq!(with_sources(&std::io::Error::other("alone")), "alone");
    }
}
