//! Turning a source invoice into destination records: the invoice's lines computed exactly (time
//! at its hourly rate, expenses, fixed-fee and additional items, rolled up per task when asked),
//! then the flow's field mappings evaluated over them.
//!
//! Money is `rust_decimal` from end to end: amounts reach expressions as exact decimal strings
//! (`"1234.50"`), and the `decimal` filter turns one into a JSON number for the destination. A
//! line's amount is what the source charges for it, rounded as the source rounds (half up, to the
//! cent), so the destination's total equals the source's to the cent.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use minijinja::Environment;
use rust_decimal::prelude::ToPrimitive as _;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::Serialize;
use serde_json::Value;

use crate::flow::Options;

/// The expression environment of flows: the spec template environment plus `decimal`.
pub fn environment() -> Environment<'static> {
    let mut env = weft_core::template::environment();
    env.add_filter("decimal", decimal_filter);
    env
}

/// `"1234.50" | decimal` → the number 1234.5 (exact for money: at most 15 significant digits).
fn decimal_filter(value: minijinja::Value) -> Result<minijinja::Value, minijinja::Error> {
    let text = value.to_string();
    let parsed: Decimal = text.trim().parse().map_err(|_| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("`{text}` is not a decimal number"),
        )
    })?;
    parsed.to_f64().map(minijinja::Value::from).ok_or_else(|| {
        minijinja::Error::new(
            minijinja::ErrorKind::InvalidOperation,
            format!("`{text}` is out of range"),
        )
    })
}

/// One computed line of a source invoice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Line {
    /// `time`, `expense`, `fixed_fee` or `additional`.
    pub kind: &'static str,
    /// Text for the destination line.
    pub description: String,
    /// What the source charges, exact (major units, e.g. `"125.50"`).
    pub amount: String,
    /// Hours, for time lines (two decimals); `none` otherwise.
    pub hours: Option<String>,
    /// Expense category, for expense lines; `none` otherwise.
    pub category: Option<String>,
    /// The task (story) it belongs to, when known.
    pub task: Option<String>,
    /// Source records it stands for.
    pub count: usize,
    #[serde(skip)]
    cents: i64,
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Cents as a decimal string of major units.
pub fn cents_text(cents: i64) -> String {
    Decimal::new(cents, 2).to_string()
}

/// A time entry's value: minutes / 60 × hourly rate, rounded half up to the cent (as Kantata
/// values it).
pub fn time_cents(minutes: i64, rate_in_cents: i64) -> i64 {
    (Decimal::from(minutes) * Decimal::from(rate_in_cents) / Decimal::from(60))
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .unwrap_or(i64::MAX)
}

/// The lines of a Kantata invoice (with its line items embedded), or why it cannot be priced.
pub fn kantata_lines(invoice: &Value, options: &Options) -> Result<Vec<Line>, String> {
    let list = |name: &str| {
        invoice
            .get(name)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let mut lines = Vec::new();
    // Time: one line per entry, or per task.
    let mut time: IndexMap<String, (i64, i64, usize)> = IndexMap::new();
    for (i, entry) in list("time_entries").iter().enumerate() {
        let minutes = int(&entry["time_in_minutes"])
            .ok_or_else(|| format!("time entry {} has no time_in_minutes", entry["id"]))?;
        let rate = int(&entry["rate_in_cents"]).unwrap_or(0);
        let cents = time_cents(minutes, rate);
        let task = text(&entry["story_id"]);
        if options.roll_up_time {
            let slot = time
                .entry(task.clone().unwrap_or_default())
                .or_insert((0, 0, 0));
            slot.0 += minutes;
            slot.1 += cents;
            slot.2 += 1;
        } else {
            let hours = Decimal::from(minutes) / Decimal::from(60);
            let notes = text(&entry["notes"]).unwrap_or_else(|| "Time".to_owned());
            let date = text(&entry["date_performed"]).unwrap_or_default();
            lines.push(Line {
                kind: "time",
                description: format!("{date} {notes} ({} h)", hours.round_dp(2))
                    .trim()
                    .to_owned(),
                amount: cents_text(cents),
                hours: Some(hours.round_dp(2).to_string()),
                category: None,
                task,
                count: 1,
                cents,
            });
        }
        let _ = i;
    }
    for (task, (minutes, cents, count)) in time {
        let hours = (Decimal::from(minutes) / Decimal::from(60)).round_dp(2);
        lines.push(Line {
            kind: "time",
            description: format!(
                "Time{}: {count} entr{}, {hours} h",
                if task.is_empty() {
                    String::new()
                } else {
                    format!(" on task {task}")
                },
                if count == 1 { "y" } else { "ies" }
            ),
            amount: cents_text(cents),
            hours: Some(hours.to_string()),
            category: None,
            task: (!task.is_empty()).then_some(task),
            count,
            cents,
        });
    }
    // Expenses.
    let mut expenses: IndexMap<String, (i64, usize, Option<String>)> = IndexMap::new();
    for e in list("expenses") {
        let cents = int(&e["amount_in_cents"])
            .ok_or_else(|| format!("expense {} has no amount_in_cents", e["id"]))?;
        let category = text(&e["category"]);
        let task = text(&e["story_id"]);
        if options.roll_up_expenses {
            let slot = expenses.entry(task.clone().unwrap_or_default()).or_insert((
                0,
                0,
                category.clone(),
            ));
            slot.0 += cents;
            slot.1 += 1;
        } else {
            let notes = text(&e["notes"]).unwrap_or_default();
            lines.push(Line {
                kind: "expense",
                description: format!(
                    "{}{}",
                    category.clone().unwrap_or_else(|| "Expense".to_owned()),
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!(": {notes}")
                    }
                ),
                amount: cents_text(cents),
                hours: None,
                category,
                task,
                count: 1,
                cents,
            });
        }
    }
    for (task, (cents, count, category)) in expenses {
        lines.push(Line {
            kind: "expense",
            description: format!(
                "Expenses{}: {count} item{}",
                if task.is_empty() {
                    String::new()
                } else {
                    format!(" on task {task}")
                },
                if count == 1 { "" } else { "s" }
            ),
            amount: cents_text(cents),
            hours: None,
            category,
            task: (!task.is_empty()).then_some(task),
            count,
            cents,
        });
    }
    for (name, kind, label) in [
        ("fixed_fee_items", "fixed_fee", "Fixed fee"),
        ("additional_items", "additional", "Additional item"),
    ] {
        for item in list(name) {
            let cents = int(&item["amount_in_cents"])
                .ok_or_else(|| format!("{kind} item {} has no amount_in_cents", item["id"]))?;
            let notes = text(&item["notes"]);
            let description = match (&notes, kind == "fixed_fee" && !options.fixed_fee_details) {
                (Some(n), false) => format!("{label}: {n}"),
                _ => label.to_owned(),
            };
            lines.push(Line {
                kind,
                description,
                amount: cents_text(cents),
                hours: None,
                category: None,
                task: text(&item["story_id"]),
                count: 1,
                cents,
            });
        }
    }
    if lines.is_empty() {
        return Err(
            "the invoice has no lines (time entries, expenses, fixed-fee or additional items)"
                .to_owned(),
        );
    }
    Ok(lines)
}

/// The sum of `lines`, exact, as a decimal string.
pub fn total(lines: &[Line]) -> String {
    cents_text(lines.iter().map(|l| l.cents).sum())
}

/// Evaluates each expression of `map` over `ctx`; a field whose expression gives `none` or an
/// empty string is left out.
pub fn evaluate(
    env: &Environment<'_>,
    section: &str,
    map: &IndexMap<String, String>,
    ctx: &minijinja::Value,
) -> Result<serde_json::Map<String, Value>, String> {
    let mut out = serde_json::Map::new();
    for (field, expr) in map {
        let compiled = env
            .compile_expression(expr)
            .map_err(|e| format!("mapping.{section}.{field}: {e}"))?;
        let value = compiled
            .eval(ctx)
            .map_err(|e| format!("mapping.{section}.{field} (`{expr}`): {e}"))?;
        if value.is_none() || value.is_undefined() || value.as_str() == Some("") {
            continue;
        }
        let json =
            serde_json::to_value(&value).map_err(|e| format!("mapping.{section}.{field}: {e}"))?;
        out.insert(field.clone(), json);
    }
    Ok(out)
}

/// The options as expressions see them: `options.default_account_code` (snake case, like every
/// other name in scope).
pub fn options_value(options: &Options) -> Value {
    match serde_json::to_value(options) {
        Ok(Value::Object(map)) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.replace('-', "_"), v))
                .collect(),
        ),
        _ => Value::Null,
    }
}

/// The tables as a template value.
pub fn tables_value(tables: &BTreeMap<String, BTreeMap<String, String>>) -> minijinja::Value {
    minijinja::Value::from_serialize(tables)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn invoice() -> Value {
        json!({
            "id": "7",
            "time_entries": [
                {"id": "1", "time_in_minutes": 50, "rate_in_cents": 12500, "story_id": "3", "notes": "Design", "date_performed": "2026-01-05"},
                {"id": "2", "time_in_minutes": 25, "rate_in_cents": 9999, "story_id": "3"},
                {"id": "4", "time_in_minutes": 60, "rate_in_cents": 10000, "story_id": "5"}
            ],
            "expenses": [{"id": "9", "amount_in_cents": 4599, "category": "Travel", "notes": "Train"}],
            "fixed_fee_items": [{"id": "10", "amount_in_cents": 100000, "notes": "Phase 1"}],
            "additional_items": [{"id": "11", "amount_in_cents": 2500, "notes": "Hosting"}]
        })
    }

    #[test]
    fn lines_are_priced_exactly_and_roll_up_keeps_the_total() {
        // 50 min at 125.00/h = 104.1666… → 104.17; 25 min at 99.99/h = 41.6625 → 41.66.
        assert_eq!(time_cents(50, 12500), 10417);
        assert_eq!(time_cents(25, 9999), 4166);
        let opts = Options::default();
        let lines = kantata_lines(&invoice(), &opts).unwrap();
        assert_eq!(lines.len(), 6);
        assert_eq!(lines[0].amount, "104.17");
        assert_eq!(total(&lines), "1316.82");
        let rolled = kantata_lines(
            &invoice(),
            &Options {
                roll_up_time: true,
                ..Options::default()
            },
        )
        .unwrap();
        assert_eq!(rolled.iter().filter(|l| l.kind == "time").count(), 2);
        assert_eq!(
            total(&rolled),
            total(&lines),
            "rolling up never changes the total"
        );
        assert!(kantata_lines(&json!({"id": "1"}), &opts).is_err());
    }

    #[test]
    fn mappings_evaluate_with_the_decimal_filter() {
        let env = environment();
        let map: IndexMap<String, String> = [
            ("UnitAmount".to_owned(), "line.amount | decimal".to_owned()),
            (
                "AccountCode".to_owned(),
                "tables.accounts[line.kind] | default('200')".to_owned(),
            ),
            ("Empty".to_owned(), "''".to_owned()),
        ]
        .into_iter()
        .collect();
        let ctx = minijinja::context! {
            line => json!({"kind": "expense", "amount": "45.99"}),
            tables => json!({"accounts": {"time": "210"}}),
        };
        let out = evaluate(&env, "line", &map, &ctx).unwrap();
        assert_eq!(out["UnitAmount"], json!(45.99));
        assert_eq!(out["AccountCode"], "200");
        assert!(!out.contains_key("Empty"));
    }
}
