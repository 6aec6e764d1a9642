//! The flow expression environment: the spec template environment plus exact arithmetic for
//! money, and the evaluation of a mapping (field → expression) into a JSON object.
//!
//! Money never passes through floating point: `muldiv` computes `a × b ÷ c` on decimals and
//! rounds half away from zero to a whole number (cents); `cents` and `decimal` turn a whole
//! number of cents or a decimal text into an exact decimal that is written into the JSON body as
//! a number with exactly its digits (see [`crate::exact`]). Overflow is an error of the record,
//! never a panic or a wrapped value.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use indexmap::IndexMap;
use minijinja::{Environment, Error, ErrorKind, Expression, Value as JValue};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::Value;

/// Names of the functions the environment adds (not variables, for the load-time check).
pub const FUNCTIONS: &[&str] = &["muldiv", "ratio"];

/// The environment flows use.
pub fn environment() -> Environment<'static> {
    let mut env = weft_core::template::environment();
    // An undefined value may be tested (`record.notes or ''`), never printed or written.
    env.set_undefined_behavior(minijinja::UndefinedBehavior::SemiStrict);
    env.add_filter("decimal", decimal_filter);
    env.add_filter("cents", cents_filter);
    env.add_function("muldiv", muldiv);
    env.add_function("ratio", ratio);
    env
}

fn invalid(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// A whole number or a decimal, read exactly from a MiniJinja value (numbers as written, text
/// parsed; floats refused when they are not finite).
fn to_decimal(value: &JValue) -> Result<Decimal, Error> {
    if let Some(d) = value.as_str().and_then(crate::exact::unmark) {
        return Ok(d);
    }
    if let Ok(i) = i64::try_from(value.clone()) {
        return Ok(Decimal::from(i));
    }
    let text = value.to_string();
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("nan") || trimmed.contains("inf") {
        return Err(invalid(format!("`{text}` is not a number")));
    }
    trimmed
        .parse::<Decimal>()
        .or_else(|_| Decimal::from_scientific(trimmed))
        .map_err(|_| invalid(format!("`{text}` is not a decimal number")))
}

fn decimal_filter(value: JValue) -> Result<JValue, Error> {
    Ok(JValue::from(crate::exact::mark(to_decimal(&value)?)))
}

fn cents_filter(value: JValue) -> Result<JValue, Error> {
    let cents = i64::try_from(value.clone())
        .map_err(|_| invalid(format!("`{value}` is not a whole number of cents")))?;
    Ok(JValue::from(crate::exact::mark(Decimal::new(cents, 2))))
}

/// `a × b ÷ c`, rounded half away from zero to a whole number.
fn muldiv(a: JValue, b: JValue, c: JValue) -> Result<i64, Error> {
    let (a, b, c) = (to_decimal(&a)?, to_decimal(&b)?, to_decimal(&c)?);
    if c.is_zero() {
        return Err(invalid("muldiv: division by zero".to_owned()));
    }
    let product = a
        .checked_mul(b)
        .ok_or_else(|| invalid(format!("muldiv: {a} × {b} is too large")))?;
    let quotient = product
        .checked_div(c)
        .ok_or_else(|| invalid(format!("muldiv: {product} ÷ {c} is out of range")))?;
    i64::try_from(quotient.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero))
        .map_err(|_| invalid(format!("muldiv: {quotient} is too large")))
}

/// `a ÷ b` as decimal text with `places` decimals, rounded half away from zero.
fn ratio(a: JValue, b: JValue, places: u32) -> Result<String, Error> {
    let (a, b) = (to_decimal(&a)?, to_decimal(&b)?);
    if b.is_zero() {
        return Err(invalid("ratio: division by zero".to_owned()));
    }
    let q = a
        .checked_div(b)
        .ok_or_else(|| invalid(format!("ratio: {a} ÷ {b} is out of range")))?;
    Ok(
        q.round_dp_with_strategy(places.min(12), RoundingStrategy::MidpointAwayFromZero)
            .to_string(),
    )
}

/// The shared environment, and each expression compiled once per process (flows have a few
/// dozen; a run evaluates them for every record).
fn compiled(expr: &str) -> Result<Arc<Expression<'static, 'static>>, String> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Expression<'static, 'static>>>>> =
        OnceLock::new();
    let env = ENV.get_or_init(environment);
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(found) = crate::lock(cache).get(expr) {
        return Ok(found.clone());
    }
    let compiled = Arc::new(
        env.compile_expression_owned(expr.to_owned())
            .map_err(|e| e.to_string())?,
    );
    crate::lock(cache).insert(expr.to_owned(), compiled.clone());
    Ok(compiled)
}

fn detail(e: &Error) -> String {
    if e.kind() == minijinja::ErrorKind::UndefinedError {
        return "it uses a value this record does not have (a missing field, a table with no row for the key, or a list with no match); give the table the row, or write `… or ''` where a value may be missing".to_owned();
    }
    e.detail().map_or_else(|| e.to_string(), str::to_owned)
}

/// The names `expr` reads, with their attribute paths where it reads attributes
/// (`record.id`); none when it does not compile.
pub fn reads(expr: &str) -> Option<std::collections::HashSet<String>> {
    compiled(expr).ok().map(|e| e.undeclared_variables(true))
}

/// Evaluates one expression into JSON (`None` for an empty result: none or "").
pub fn value(what: &str, expr: &str, ctx: &JValue) -> Result<Option<Value>, String> {
    let compiled = compiled(expr).map_err(|e| format!("{what}: {e}"))?;
    let value = compiled
        .eval(ctx)
        .map_err(|e| format!("{what} (`{expr}`): {}", detail(&e)))?;
    if value.is_undefined() {
        return Err(format!(
            "{what}: `{expr}` is undefined for this record (a missing field or a misspelt name); write `… or ''` where a field may be missing"
        ));
    }
    if value.is_none() || value.as_str() == Some("") {
        return Ok(None);
    }
    serde_json::to_value(&value)
        .map(Some)
        .map_err(|e| format!("{what}: {e}"))
}

/// Evaluates a mapping (field → expression) into a JSON object; fields whose value is empty
/// are left out.
pub fn evaluate(
    section: &str,
    map: &IndexMap<String, String>,
    ctx: &JValue,
) -> Result<serde_json::Map<String, Value>, String> {
    let mut out = serde_json::Map::new();
    for (field, expr) in map {
        if let Some(v) = value(&format!("{section}.{field}"), expr, ctx)? {
            out.insert(field.clone(), v);
        }
    }
    Ok(out)
}

/// Whether an expression's result counts as true.
pub fn truthy(what: &str, expr: &str, ctx: &JValue) -> Result<bool, String> {
    let compiled = compiled(expr).map_err(|e| format!("{what}: {e}"))?;
    compiled
        .eval(ctx)
        .map(|v| v.is_true())
        .map_err(|e| format!("{what} (`{expr}`): {}", detail(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(expr: &str) -> Result<Option<Value>, String> {
        value("t", expr, &minijinja::context! { x => 50, rate => 12500 })
    }

    #[test]
    fn muldiv_rounds_half_away_from_zero_and_overflow_is_an_error() {
        assert_eq!(
            eval("muldiv(x, rate, 60)").unwrap(),
            Some(serde_json::json!(10417))
        );
        assert_eq!(
            eval("muldiv(25, 9999, 60)").unwrap(),
            Some(serde_json::json!(4166))
        );
        assert_eq!(eval("muldiv(1, 3, 2)").unwrap(), Some(serde_json::json!(2)));
        let big = eval("muldiv(9223372036854775807, 9223372036854775807, 1)");
        assert!(big.unwrap_err().contains("too large"));
        assert!(
            eval("muldiv(1, 1, 0)")
                .unwrap_err()
                .contains("division by zero")
        );
        assert_eq!(
            eval("ratio(50, 60, 2)").unwrap(),
            Some(serde_json::json!("0.83"))
        );
    }

    /// Sums of cents (lines rolled up per task) never wrap or turn into floats: past i64 they
    /// are exact or an error, and a body refuses what it cannot write exactly.
    #[test]
    fn sums_of_cents_are_exact_or_an_error() {
        assert_eq!(
            eval("[10417, 4166, 2] | sum").unwrap(),
            Some(serde_json::json!(14585))
        );
        match eval("[9223372036854775807, 9223372036854775807, 9223372036854775807] | sum") {
            Err(_) => {}
            Ok(v) => panic!("a sum past i64 came back as {v:?}"),
        }
        match eval("(9223372036854775807 + 1) | cents") {
            Err(_) => {}
            Ok(v) => panic!("cents past i64 came back as {v:?}"),
        }
    }

    #[test]
    fn money_stays_exact_into_the_body() {
        let v = eval("10417 | cents").unwrap().unwrap();
        assert_eq!(crate::exact::to_vec(&v), b"104.17");
        let v = eval("'1234567890123456.78' | decimal").unwrap().unwrap();
        assert_eq!(crate::exact::to_vec(&v), b"1234567890123456.78");
        assert!(eval("'NaN' | decimal").is_err());
        assert!(eval("'inf' | decimal").is_err());
        assert!(eval("'12abc' | decimal").is_err());
    }
}
