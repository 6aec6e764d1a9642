//! Exact decimals in JSON bodies.
//!
//! `serde_json` (without its arbitrary-precision feature, which would change how every other
//! number is compared) can only hold a decimal number as an `f64`. Money must not pass through
//! floating point, so a mapped decimal is carried as a marked string ([`mark`]) and written into
//! the request body as a JSON number with exactly its digits ([`to_vec`]). Record checks read a
//! marked string as a number ([`unmark`]); displays show it plain ([`plain`]).

use rust_decimal::Decimal;
use serde_json::Value;

/// The marker: a private-use character and a name no provider text carries.
const MARK: &str = "\u{E000}weft-decimal:";

/// A decimal, marked to be written as an exact JSON number.
pub fn mark(d: Decimal) -> String {
    format!("{MARK}{d}")
}

/// The decimal a marked string carries.
pub fn unmark(text: &str) -> Option<Decimal> {
    text.strip_prefix(MARK)?.parse().ok()
}

/// Whether `value` is a marked decimal.
pub fn is_decimal(value: &Value) -> bool {
    value.as_str().and_then(unmark).is_some()
}

/// `value` with every marked decimal turned into a plain JSON number for display (the digits
/// shown as they are; an `f64` only for showing, never for sending).
pub fn plain(value: &Value) -> Value {
    match value {
        Value::String(s) => match s.strip_prefix(MARK) {
            Some(d) => Value::String(d.to_owned()),
            None => value.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(plain).collect()),
        Value::Object(o) => Value::Object(o.iter().map(|(k, v)| (k.clone(), plain(v))).collect()),
        other => other.clone(),
    }
}

/// The JSON text of `value`, marked decimals written as numbers with exactly their digits.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let text = value.to_string();
    // serde_json writes the private-use character as it is (it escapes only controls, quotes
    // and backslashes), so a marked string appears as `"<MARK>digits"`.
    let quoted = format!("\"{MARK}");
    if !text.contains(&quoted) {
        return text.into_bytes();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(&quoted) {
        out.push_str(&rest[..at]);
        let after = &rest[at + quoted.len()..];
        let end = after.find('"').unwrap_or(after.len());
        let digits = &after[..end];
        if digits.parse::<Decimal>().is_ok() {
            out.push_str(digits);
        } else {
            // Not a decimal after all: keep the text as it was.
            out.push_str(&rest[at..at + quoted.len() + end + 1]);
        }
        rest = after.get(end + 1..).unwrap_or_default();
    }
    out.push_str(rest);
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_decimals_become_exact_numbers_and_nothing_else_changes() {
        let body = serde_json::json!({
            "a": mark("104.17".parse().unwrap()),
            "b": [mark("-0.10".parse().unwrap()), "104.17", 3.5],
            "c": "text with \"quotes\"",
        });
        assert_eq!(
            String::from_utf8(to_vec(&body)).unwrap(),
            r#"{"a":104.17,"b":[-0.10,"104.17",3.5],"c":"text with \"quotes\""}"#
        );
        assert_eq!(plain(&body)["a"], "104.17");
        assert!(is_decimal(&body["a"]));
        assert!(!is_decimal(&body["c"]));
    }
}
