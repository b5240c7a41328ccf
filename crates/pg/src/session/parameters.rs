//! The startup parameters a client may pass to the upstream server, and how they are passed.
//!
//! Why: a startup parameter is a `SET` before the first statement, so it is judged like one
//! (`core::policy::settings`): the same refusals of encodings and parser settings. Names are
//! compared as PostgreSQL compares them (case-insensitively: libpq sends `PGTZ` as
//! `timezone`, `PGDATESTYLE` as `datestyle`), and `options` (`PGOPTIONS`) is parsed as the
//! server parses it (`pg_split_opts`: whitespace separates, a backslash escapes the next
//! character) so that each `-c name=value` / `--name=value` is judged on its own; any other
//! switch is refused by name. What reaches the server is the judged list, one parameter per
//! setting, never the client's `options` string.

use gatehouse_core::policy::settings::{SettingValue, normalize_setting_name, setting_refusal};

/// Settings a client may give at startup (normalised names). Anything that changes the role,
/// the server's reading of text, or privileges is absent; so is everything not listed.
const STARTUP_SETTINGS: &[&str] = &[
    "application_name",
    "client_encoding",
    "datestyle",
    "timezone",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "geqo",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "transaction_timeout",
    "work_mem",
    "maintenance_work_mem",
    "temp_buffers",
    "client_min_messages",
    "default_transaction_isolation",
    "default_transaction_read_only",
    "default_transaction_deferrable",
    "bytea_output",
    "xmloption",
    "jit",
    "synchronous_commit",
    "random_page_cost",
    "seq_page_cost",
    "effective_cache_size",
    "cursor_tuple_fraction",
    "from_collapse_limit",
    "join_collapse_limit",
    "max_parallel_workers_per_gather",
    "plan_cache_mode",
    "enable_seqscan",
    "enable_indexscan",
    "enable_bitmapscan",
    "enable_hashjoin",
    "enable_mergejoin",
    "enable_nestloop",
    "enable_partitionwise_join",
    "enable_partitionwise_aggregate",
    "default_statistics_target",
    "standard_conforming_strings",
];

/// Why a startup packet's parameters are refused (the text the client sees).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ParameterRefusal {
    #[error("replication connections are refused by Gatehouse")]
    Replication,
    #[error("startup parameter \"{0}\" is not allowed through Gatehouse")]
    NotAllowed(String),
    #[error("startup parameter \"{name}\" is refused by Gatehouse: {reason}")]
    Refused { name: String, reason: String },
    #[error("startup parameter \"options\": setting \"{0}\" is not allowed through Gatehouse")]
    OptionNotAllowed(String),
    #[error(
        "startup parameter \"options\": switch \"{0}\" is not allowed through Gatehouse (only -c name=value)"
    )]
    Switch(String),
    #[error("startup parameter \"options\": \"{0}\" is not name=value")]
    Malformed(String),
}

/// The parameters to send upstream (normalised names, `options` expanded), or why not.
/// `user` and `database` are the gateway's to interpret and are left out; `_pq_.` extensions
/// are negotiated by the caller and left out too.
pub(crate) fn session_parameters(
    params: &[(String, String)],
) -> Result<Vec<(String, String)>, ParameterRefusal> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (k, v) in params {
        let name = normalize_setting_name(k);
        match name.as_str() {
            "user" | "database" => {}
            _ if k.starts_with("_pq_.") => {}
            "replication" => {
                if !matches!(
                    v.to_ascii_lowercase().as_str(),
                    "false" | "off" | "no" | "0"
                ) {
                    return Err(ParameterRefusal::Replication);
                }
            }
            "options" => {
                for (n, value) in split_options(v)? {
                    judge(&n, &value).map_err(|e| match e {
                        ParameterRefusal::NotAllowed(n) => ParameterRefusal::OptionNotAllowed(n),
                        other => other,
                    })?;
                    push(&mut out, n, value);
                }
            }
            _ => {
                judge(&name, v)?;
                push(&mut out, name, v.clone());
            }
        }
    }
    Ok(out)
}

/// A later value for the same setting replaces the earlier one (as on the server).
fn push(out: &mut Vec<(String, String)>, name: String, value: String) {
    out.retain(|(n, _)| *n != name);
    out.push((name, value));
}

fn judge(name: &str, value: &str) -> Result<(), ParameterRefusal> {
    if let Some(d) = setting_refusal(name, SettingValue::Known(value), "startup parameter") {
        return Err(ParameterRefusal::Refused {
            name: name.to_owned(),
            reason: d.reason,
        });
    }
    if !STARTUP_SETTINGS.contains(&name) {
        return Err(ParameterRefusal::NotAllowed(name.to_owned()));
    }
    Ok(())
}

/// `options` as the server splits it (`pg_split_opts`), then each switch as
/// `process_postgres_switches` reads it; only `-c name=value`, `-cname=value` and
/// `--name=value` are accepted.
fn split_options(s: &str) -> Result<Vec<(String, String)>, ParameterRefusal> {
    let mut words: Vec<String> = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut w = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_ascii_whitespace() {
                break;
            }
            chars.next();
            if c == '\\' {
                if let Some(n) = chars.next() {
                    w.push(n);
                }
            } else {
                w.push(c);
            }
        }
        words.push(w);
    }
    let mut out = Vec::new();
    let mut it = words.into_iter();
    while let Some(w) = it.next() {
        let setting = if w == "-c" {
            it.next()
                .ok_or_else(|| ParameterRefusal::Malformed(w.clone()))?
        } else if let Some(rest) = w.strip_prefix("--") {
            rest.to_owned()
        } else if let Some(rest) = w.strip_prefix("-c") {
            rest.to_owned()
        } else {
            let switch: String = w.chars().take(2).collect();
            return Err(ParameterRefusal::Switch(switch));
        };
        let Some((name, value)) = setting.split_once('=') else {
            return Err(ParameterRefusal::Malformed(setting));
        };
        out.push((normalize_setting_name(name), value.to_owned()));
    }
    Ok(out)
}

/// The upstream's reported state must be one the gateway parses correctly (a role or
/// database default set earlier, outside the gateway, could say otherwise).
pub(crate) fn upstream_state_refusal(reported: &[(String, String)]) -> Option<String> {
    reported.iter().find_map(|(k, v)| {
        let name = normalize_setting_name(k);
        setting_refusal(&name, SettingValue::Known(v), "the upstream server reports")
            .map(|d| d.reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn names_compare_case_insensitively() {
        let got = session_parameters(&p(&[
            ("user", "a"),
            ("timezone", "UTC"),
            ("DateStyle", "ISO"),
            ("PGGEQO", "on"),
        ]));
        assert_eq!(got, Err(ParameterRefusal::NotAllowed("pggeqo".into())));
        let got = session_parameters(&p(&[
            ("timezone", "UTC"),
            ("DATESTYLE", "ISO"),
            ("geqo", "on"),
        ]));
        assert_eq!(
            got,
            Ok(p(&[
                ("timezone", "UTC"),
                ("datestyle", "ISO"),
                ("geqo", "on")
            ]))
        );
    }

    #[test]
    fn options_are_split_and_judged_per_setting() {
        assert_eq!(
            session_parameters(&p(&[(
                "options",
                "-c statement_timeout=5s --lock-timeout=1s"
            )])),
            Ok(p(&[("statement_timeout", "5s"), ("lock_timeout", "1s")]))
        );
        assert_eq!(
            session_parameters(&p(&[("options", r"-csearch_path=a\,\ b")])),
            Ok(p(&[("search_path", "a, b")]))
        );
        assert_eq!(session_parameters(&p(&[("options", "  ")])), Ok(vec![]));
        assert_eq!(
            session_parameters(&p(&[("options", "-c role=admin")])),
            Err(ParameterRefusal::OptionNotAllowed("role".into()))
        );
        assert!(matches!(
            session_parameters(&p(&[("options", "-c client_encoding=WIN932")])),
            Err(ParameterRefusal::Refused { .. })
        ));
        assert!(matches!(
            session_parameters(&p(&[("options", "-c Standard-Conforming-Strings=off")])),
            Err(ParameterRefusal::Refused { .. })
        ));
        assert_eq!(
            session_parameters(&p(&[("options", "-P")])),
            Err(ParameterRefusal::Switch("-P".into()))
        );
        assert_eq!(
            session_parameters(&p(&[("options", "-c")])),
            Err(ParameterRefusal::Malformed("-c".into()))
        );
        assert_eq!(
            session_parameters(&p(&[("options", "-c work_mem")])),
            Err(ParameterRefusal::Malformed("work_mem".into()))
        );
    }

    #[test]
    fn encodings_and_parser_settings_by_any_spelling() {
        for (k, v) in [
            ("client_encoding", "SJIS"),
            ("Client_Encoding", "shift-jis-2004"),
            ("client_encoding", "win936"),
            ("standard_conforming_strings", "off"),
            ("backslash_quote", "on"),
            ("role", "admin"),
            ("session_authorization", "postgres"),
        ] {
            assert!(session_parameters(&p(&[(k, v)])).is_err(), "{k}={v}");
        }
        assert!(session_parameters(&p(&[("replication", "database")])).is_err());
        assert!(session_parameters(&p(&[("client_encoding", "UTF8")])).is_ok());
        assert!(upstream_state_refusal(&p(&[("client_encoding", "SJIS")])).is_some());
        assert!(upstream_state_refusal(&p(&[("standard_conforming_strings", "off")])).is_some());
        assert!(upstream_state_refusal(&p(&[("client_encoding", "UTF8")])).is_none());
    }
}
