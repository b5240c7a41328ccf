//! Settings that change how the server reads text, judged the same way on every route that can
//! set them: startup parameters (`options` too), `SET`, `set_config(...)`, `ALTER ROLE/DATABASE
//! ... SET`.
//!
//! Why: the gateway parses a statement once and judges what it parsed. If the server then reads
//! the same bytes differently, a harmless-looking statement can carry a smuggled one. Two kinds
//! of setting can cause that:
//! - the client encoding: in SJIS, BIG5, GBK, UHC, JOHAB and GB18030 (under any of their
//!   spellings) the second byte of a character may be `\` or `'`, so the server would end a
//!   string literal where the gateway does not. Encodings are judged by an **allow-list** of
//!   the encodings in which every byte below 0x80 is the ASCII character it looks like (UTF-8,
//!   the single-byte encodings, the EUC family, MULE_INTERNAL, SQL_ASCII), after normalising
//!   the name the way PostgreSQL does (`clean_encoding_name`: letters and digits, lower
//!   case). A name the list does not know is refused, so a new alias cannot slip through.
//! - `standard_conforming_strings` off (backslashes escape in every literal) and
//!   `backslash_quote`.
//!
//! MySQL has the same two risks under other names: `SET NAMES`, `character_set_client` and
//! `character_set_connection` (gbk, big5, sjis, cp932 have `\` as a second byte; MySQL's
//! single-byte and UTF-8 charset names are on the allow-list), and `sql_mode` with
//! `NO_BACKSLASH_ESCAPES`, `ANSI_QUOTES` or `ANSI` (strings and names read differently).

use super::decide::{Decision, block};

/// What a route sets a setting to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettingValue<'a> {
    /// A value known before the statement runs.
    Known(&'a str),
    /// Back to the session's default (`RESET`, `SET ... TO DEFAULT`).
    Default,
    /// An expression the gateway cannot evaluate (`set_config(n, v || '', ...)`).
    Unknown,
}

/// Encodings (normalised names, PostgreSQL's aliases included) whose multi-byte characters
/// never contain a byte below 0x80.
const ASCII_SAFE_ENCODINGS: &[&str] = &[
    "utf8",
    "unicode",
    "sqlascii",
    "muleinternal",
    "eucjp",
    "euccn",
    "euckr",
    "euctw",
    "eucjis2004",
    "latin1",
    "latin2",
    "latin3",
    "latin4",
    "latin5",
    "latin6",
    "latin7",
    "latin8",
    "latin9",
    "latin10",
    "iso88591",
    "iso88592",
    "iso88593",
    "iso88594",
    "iso88595",
    "iso88596",
    "iso88597",
    "iso88598",
    "iso88599",
    "iso885910",
    "iso885913",
    "iso885914",
    "iso885915",
    "iso885916",
    "koi8",
    "koi8r",
    "koi8u",
    "alt",
    "win",
    "abc",
    "tcvn",
    "tcvn5712",
    "vscii",
    "win866",
    "win874",
    "win1250",
    "win1251",
    "win1252",
    "win1253",
    "win1254",
    "win1255",
    "win1256",
    "win1257",
    "win1258",
    "windows866",
    "windows874",
    "windows1250",
    "windows1251",
    "windows1252",
    "windows1253",
    "windows1254",
    "windows1255",
    "windows1256",
    "windows1257",
    "windows1258",
    // MySQL character set names (the single-byte ones and UTF-8).
    "utf8mb3",
    "utf8mb4",
    "ascii",
    "binary",
    "cp1250",
    "cp1251",
    "cp1256",
    "cp1257",
    "greek",
    "hebrew",
    "swe7",
    "dec8",
    "cp850",
    "cp852",
    "cp866",
    "hp8",
    "armscii8",
    "geostd8",
    "keybcs2",
    "macce",
    "macroman",
    "tis620",
];

/// PostgreSQL's `clean_encoding_name`: the letters and digits of the name, in lower case.
pub fn normalize_encoding(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// Whether the server would read statements in this client encoding with every ASCII byte as
/// the character it looks like (so the gateway's parse and the server's agree).
pub fn encoding_is_safe(name: &str) -> bool {
    ASCII_SAFE_ENCODINGS.contains(&normalize_encoding(name).as_str())
}

/// A setting name as PostgreSQL compares it: case-insensitive, and (for `-c`/`--name=` in
/// `options`) with `-` read as `_`.
pub fn normalize_setting_name(name: &str) -> String {
    name.trim().to_ascii_lowercase().replace('-', "_")
}

/// The settings this module guards (normalised names).
pub const GUARDED_SETTINGS: &[&str] = &[
    "client_encoding",
    "names",
    "standard_conforming_strings",
    "backslash_quote",
];

/// `sql_mode` flags that change how MySQL reads strings and quoted names (compared in upper
/// case, as whole comma-separated words: `ANSI` implies `ANSI_QUOTES`).
const SQL_MODE_FLAGS_REFUSED: &[&str] = &["NO_BACKSLASH_ESCAPES", "ANSI_QUOTES", "ANSI"];

/// Whether a MySQL `sql_mode` value keeps strings and identifiers read as the gateway reads
/// them. The value set by `SET` of an expression (`@unknown`, or anything with a character
/// that cannot be in a mode list) is not known, so not safe.
fn sql_mode_is_safe(v: &str) -> bool {
    let v = v.trim().trim_matches(['\'', '"']);
    if !v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ',' || c == ' ')
    {
        return false;
    }
    !v.split(',').any(|flag| {
        let flag = flag.trim().to_ascii_uppercase();
        SQL_MODE_FLAGS_REFUSED.iter().any(|r| flag.contains(r))
    })
}

/// PostgreSQL's boolean spellings of true (`parse_bool`: prefixes of true/yes, on, 1).
pub fn is_true_value(v: &str) -> bool {
    let v = v
        .trim()
        .trim_matches(['\'', '"'])
        .trim()
        .to_ascii_lowercase();
    if v.is_empty() {
        return false;
    }
    // `default` is what a SET ... TO DEFAULT may be rendered as (the server's default: on).
    v == "on"
        || v == "1"
        || v == "default"
        || "true".starts_with(v.as_str())
        || "yes".starts_with(v.as_str())
}

/// The refusal for setting `name` (normalised) to `value` by the route `how` (`SET`,
/// `set_config`, `ALTER ROLE ... SET`, `startup parameter`), if any.
pub fn setting_refusal(name: &str, value: SettingValue<'_>, how: &str) -> Option<Decision> {
    let shown = |v: SettingValue<'_>| match v {
        SettingValue::Known(v) => v.trim().trim_matches(['\'', '"']).to_owned(),
        SettingValue::Default => "DEFAULT".to_owned(),
        SettingValue::Unknown => "an expression the gateway cannot evaluate".to_owned(),
    };
    match name {
        "standard_conforming_strings" => match value {
            SettingValue::Known(v) if is_true_value(v) => None,
            SettingValue::Default => None,
            v => Some(block(
                "builtin:standard-conforming-strings",
                format!("{how} standard_conforming_strings = {}", shown(v)),
            )),
        },
        "backslash_quote" => Some(block(
            "builtin:backslash-quote",
            format!("{how} backslash_quote"),
        )),
        "sql_mode" => match value {
            SettingValue::Known(v) if sql_mode_is_safe(v) => None,
            SettingValue::Default => None,
            v => Some(block(
                "builtin:sql-mode",
                format!(
                    "{how} sql_mode = {} (NO_BACKSLASH_ESCAPES, ANSI_QUOTES and ANSI change how \
                     the server reads strings and names)",
                    shown(v)
                ),
            )),
        },
        "client_encoding" | "names" | "character_set_client" | "character_set_connection" => {
            match value {
                SettingValue::Known(v) if encoding_is_safe(v.trim().trim_matches(['\'', '"'])) => {
                    None
                }
                SettingValue::Default => None,
                v => Some(block(
                    "builtin:client-encoding",
                    format!(
                        "{how} client_encoding = {} (only encodings in which ASCII bytes stand for \
                     themselves, such as UTF8)",
                        shown(v)
                    ),
                )),
            }
        }
        _ => None,
    }
}

/// The refusal for a `set_config` whose *name* is not a constant: it could be any guarded
/// setting, so its value must be harmless for each of them.
pub fn unknown_name_refusal(value: SettingValue<'_>) -> Option<Decision> {
    if let SettingValue::Known(v) = value {
        // A value no guarded setting accepts as a change (pg_dump sets
        // `restrict_nonsystem_relation_kind` this way) is judged as such.
        let harmful = GUARDED_SETTINGS
            .iter()
            .filter(|n| **n != "backslash_quote")
            .any(|n| setting_refusal(n, value, "set_config").is_some() && accepted_by(n, v));
        let bq = accepted_by("backslash_quote", v);
        if !harmful && !bq {
            return None;
        }
    }
    Some(block(
        "builtin:set-config-unknown",
        "set_config with a setting name the gateway cannot evaluate (it could change how the \
         server reads text)",
    ))
}

/// Whether the server would accept `v` as a value of the guarded setting `name` (values it
/// rejects change nothing).
fn accepted_by(name: &str, v: &str) -> bool {
    let v = v.trim().to_ascii_lowercase();
    let boolean = |v: &str| {
        !v.is_empty()
            && ["true", "false", "yes", "no", "on", "off", "1", "0"]
                .iter()
                .any(|b| b.starts_with(v) && (v.len() > 1 || !matches!(v, "o")))
    };
    match name {
        "standard_conforming_strings" => boolean(&v),
        "backslash_quote" => boolean(&v) || v == "safe_encoding",
        // Any name PostgreSQL might know as an encoding: judge it as one.
        _ => {
            !v.is_empty()
                && v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-. ".contains(c))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_by_what_the_server_uses() {
        for safe in [
            "UTF8",
            "utf-8",
            "Unicode",
            "LATIN1",
            "iso-8859-15",
            "EUC_JP",
            "WIN1252",
        ] {
            assert!(encoding_is_safe(safe), "{safe}");
        }
        for unsafe_ in [
            "SJIS",
            "Shift_JIS",
            "shift-jis-2004",
            "SHIFT_JIS_2004",
            "MSKANJI",
            "WIN932",
            "windows-932",
            "BIG5",
            "win950",
            "GBK",
            "CP936",
            "win936",
            "windows936",
            "GB18030",
            "UHC",
            "win949",
            "JOHAB",
            "something-new",
            "",
        ] {
            assert!(!encoding_is_safe(unsafe_), "{unsafe_}");
        }
    }

    #[test]
    fn every_value_form_is_judged() {
        let k = SettingValue::Known;
        assert!(setting_refusal("client_encoding", k("win932"), "SET").is_some());
        assert!(setting_refusal("client_encoding", k("'UTF8'"), "SET").is_none());
        assert!(setting_refusal("client_encoding", SettingValue::Unknown, "x").is_some());
        assert!(setting_refusal("client_encoding", SettingValue::Default, "x").is_none());
        assert!(setting_refusal("standard_conforming_strings", k("of"), "x").is_some());
        assert!(setting_refusal("standard_conforming_strings", k("ON"), "x").is_none());
        assert!(
            setting_refusal("standard_conforming_strings", SettingValue::Unknown, "x").is_some()
        );
        assert!(setting_refusal("backslash_quote", k("on"), "x").is_some());
        assert!(setting_refusal("work_mem", k("64MB"), "x").is_none());
        // MySQL.
        assert!(setting_refusal("sql_mode", k("'NO_BACKSLASH_ESCAPES'"), "SET").is_some());
        assert!(setting_refusal("sql_mode", k("strict_trans_tables,ansi"), "SET").is_some());
        assert!(setting_refusal("sql_mode", k("@unknown"), "SET").is_some());
        assert!(
            setting_refusal("sql_mode", k("STRICT_TRANS_TABLES,NO_ZERO_DATE"), "SET").is_none()
        );
        assert!(setting_refusal("sql_mode", k(""), "SET").is_none());
        assert!(setting_refusal("sql_mode", SettingValue::Default, "SET").is_none());
        assert!(setting_refusal("character_set_client", k("gbk"), "SET").is_some());
        assert!(setting_refusal("character_set_client", k("sjis"), "SET").is_some());
        assert!(setting_refusal("character_set_connection", k("big5"), "SET").is_some());
        assert!(setting_refusal("character_set_client", k("cp932"), "SET").is_some());
        assert!(setting_refusal("character_set_client", k("@unknown"), "SET").is_some());
        assert!(setting_refusal("names", k("utf8mb4"), "SET").is_none());
        assert!(setting_refusal("names", k("latin1"), "SET").is_none());
    }

    #[test]
    fn unknown_names_need_values_no_guarded_setting_takes() {
        assert!(unknown_name_refusal(SettingValue::Known("view, foreign-table")).is_none());
        assert!(unknown_name_refusal(SettingValue::Known("off")).is_some());
        assert!(unknown_name_refusal(SettingValue::Known("sjis")).is_some());
        assert!(unknown_name_refusal(SettingValue::Known("safe_encoding")).is_some());
        assert!(unknown_name_refusal(SettingValue::Unknown).is_some());
    }
}
