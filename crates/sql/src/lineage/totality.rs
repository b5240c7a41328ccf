//! Which PostgreSQL operations answer every value of an operand (are *total* in it).
//!
//! Why: a masked identity may return a value computed from a masked column, because the
//! result is masked whole. But if the computation can fail on some values (`'12ab'::numeric`,
//! `1 / (d - 3)`, `chr(n)`, an overflow), whether the statement fails is itself a bit of the
//! value, and a client can ask as many such questions as it likes. So the output lineage
//! records every operation a column value reaches that is not known to be total in that
//! operand (`ColumnUses::fallible`), and masking refuses it for masked columns.
//!
//! The lists below are allow-lists: anything not named here (a function of an extension,
//! a new builtin, an operator on a type the gateway does not model) counts as fallible.
//! An operation is listed only when it fails on no value of the listed operands, given the
//! other operands: `substr(x, 2, 3)` is total in `x`, not in its positions (a negative
//! length fails).

use pg_query::protobuf as pb;

use crate::analyze::strings;

/// Which arguments of a function may carry any value without the call failing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TotalIn {
    /// Every argument.
    All,
    /// The first argument (the text worked on); the others are positions, lengths, names.
    First,
    /// The first and third (`regexp_replace(source, pattern, replacement)`).
    FirstAndThird,
    /// The odd positions (the values of `json_build_object(key, value, ...)`: a NULL key
    /// fails).
    Values,
    /// None: the function is not known to be total in any argument.
    None,
}

impl TotalIn {
    /// Whether argument `i` (0-based) may carry any value.
    pub(super) fn argument(self, i: usize) -> bool {
        match self {
            TotalIn::All => true,
            TotalIn::First => i == 0,
            TotalIn::FirstAndThird => i == 0 || i == 2,
            TotalIn::Values => i % 2 == 1,
            TotalIn::None => false,
        }
    }
}

/// Builtins total in every argument.
const TOTAL_IN_ALL: &[&str] = &[
    "ascii",
    "bit_length",
    "btrim",
    "char_length",
    "character_length",
    "concat",
    "concat_ws",
    "count",
    "initcap",
    "length",
    "lower",
    "ltrim",
    "max",
    "md5",
    "min",
    "octet_length",
    "position",
    "quote_ident",
    "quote_literal",
    "quote_nullable",
    "replace",
    "reverse",
    "rtrim",
    "sha224",
    "sha256",
    "sha384",
    "sha512",
    "strpos",
    "textcat",
    "to_json",
    "to_jsonb",
    "translate",
    "upper",
    "array_agg",
    "json_agg",
    "jsonb_agg",
    "json_build_array",
    "jsonb_build_array",
    "row_to_json",
    "string_agg",
];

/// Builtins total in their first argument only.
const TOTAL_IN_FIRST: &[&str] = &[
    "encode",
    "left",
    "lpad",
    "overlay",
    "right",
    "rpad",
    "split_part",
    "substr",
    "substring",
];

/// How a call of `funcname` (as written) is total. Only builtins, named plainly or in
/// `pg_catalog`: a function of another schema may be anything.
pub(super) fn function(funcname: &[pb::Node]) -> TotalIn {
    let name = match strings(funcname).as_slice() {
        [name] | ["pg_catalog", name] => name.to_ascii_lowercase(),
        _ => return TotalIn::None,
    };
    let name = name.as_str();
    if TOTAL_IN_ALL.contains(&name) {
        TotalIn::All
    } else if TOTAL_IN_FIRST.contains(&name) {
        TotalIn::First
    } else if name == "regexp_replace" {
        TotalIn::FirstAndThird
    } else if matches!(name, "json_build_object" | "jsonb_build_object") {
        TotalIn::Values
    } else {
        TotalIn::None
    }
}

/// Whether a cast to `type_name` answers every value: casts to the text types (every value
/// has a text form; an explicit cast to `varchar(n)` or `char(n)` truncates instead of
/// failing). Casts to arrays parse, and fail.
pub(super) fn cast(type_name: Option<&pb::TypeName>) -> bool {
    let Some(t) = type_name else {
        return false;
    };
    if !t.array_bounds.is_empty() || t.setof || t.pct_type {
        return false;
    }
    matches!(
        strings(&t.names).as_slice(),
        ["text" | "varchar" | "bpchar" | "char" | "name"]
            | [
                "pg_catalog",
                "text" | "varchar" | "bpchar" | "char" | "name"
            ]
    )
}

/// The name of a cast's target type, for the refusal.
pub(super) fn type_label(type_name: Option<&pb::TypeName>) -> String {
    type_name
        .map(|t| strings(&t.names).join("."))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "another type".to_owned())
}

/// Whether a binary or unary operator answers every value of its operands: only text
/// concatenation (arithmetic overflows and divides by zero; operators on other types parse).
pub(super) fn operator(name: &[pb::Node]) -> bool {
    matches!(strings(name).as_slice(), ["||"] | ["pg_catalog", "||"])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_of_partial_functions_are_not_total() {
        assert!(TotalIn::First.argument(0));
        assert!(!TotalIn::First.argument(1));
        assert!(TotalIn::FirstAndThird.argument(2));
        assert!(!TotalIn::FirstAndThird.argument(1));
        assert!(TotalIn::Values.argument(1));
        assert!(!TotalIn::Values.argument(0));
        assert!(!TotalIn::None.argument(0));
        assert!(TotalIn::All.argument(7));
    }
}
