//! A spec's form field as an HTML input: its rules as HTML constraints (checked again on the
//! server by `weft_core::form`), the value typed (never a secret's), its error beside it.

use serde::Serialize;
use weft_core::form::{self, FieldValue};
use weft_core::model::{Field, FieldKind, Scalar};

/// One input of a form page.
#[derive(Debug, Clone, Serialize, Default)]
pub(crate) struct FieldView {
    /// The input's `name` and `id`.
    pub(crate) id: String,
    pub(crate) label: String,
    pub(crate) help: Option<String>,
    /// `text`, `password`, `number`, `url`, `checkbox` or `select`.
    pub(crate) input: &'static str,
    pub(crate) required: bool,
    pub(crate) pattern: Option<String>,
    pub(crate) min: Option<i64>,
    pub(crate) max: Option<i64>,
    pub(crate) maxlength: Option<u32>,
    pub(crate) minlength: Option<u32>,
    pub(crate) choices: Vec<(String, String)>,
    /// The value to show (never a secret's).
    pub(crate) value: String,
    pub(crate) checked: bool,
    pub(crate) error: Option<String>,
    pub(crate) autocomplete: &'static str,
}

/// The HTML `pattern` of a spec pattern, when the browser reads it the same way: anchors are
/// implied in HTML, and inline flags or classes the browser's `v` mode reads differently are
/// left to the server's check.
fn html_pattern(pattern: &str) -> Option<String> {
    let inner = pattern.strip_prefix('^').unwrap_or(pattern);
    let inner = inner.strip_suffix('$').unwrap_or(inner);
    let plain = !inner.contains("(?")
        && !inner.contains("\\p")
        && !inner.contains("\\A")
        && !inner.contains("\\z");
    plain.then(|| inner.to_owned())
}

fn default_text(field: &Field) -> String {
    match &field.default {
        Some(Scalar::Text(t)) => t.clone(),
        Some(Scalar::Integer(n)) => n.to_string(),
        Some(Scalar::Boolean(b)) => b.to_string(),
        None => String::new(),
    }
}

/// The input of `field` with what was typed (`typed`, `None` on a fresh form: the default).
pub(crate) fn view(field: &Field, id: &str, typed: Option<&str>) -> FieldView {
    let input = match field.ty {
        _ if field.secret => "password",
        FieldKind::Text => "text",
        FieldKind::Integer => "number",
        FieldKind::Url => "url",
        FieldKind::Boolean => "checkbox",
        FieldKind::Enum => "select",
    };
    let value = if field.secret {
        String::new()
    } else {
        typed.map_or_else(|| default_text(field), str::to_owned)
    };
    FieldView {
        id: id.to_owned(),
        label: field.label.clone(),
        help: field.help.clone(),
        input,
        required: field.required && field.ty != FieldKind::Boolean,
        pattern: field.pattern.as_deref().and_then(html_pattern),
        min: field.min,
        max: field.max,
        maxlength: field.max_length,
        minlength: None,
        choices: field
            .choices
            .iter()
            .map(|c| (c.clone(), c.clone()))
            .collect(),
        checked: matches!(value.as_str(), "true" | "on" | "yes"),
        value,
        error: None,
        autocomplete: if field.secret { "new-password" } else { "off" },
    }
}

/// Checks what was typed for `field` (a checkbox sends nothing when unticked); the error
/// goes beside the field.
pub(crate) fn check(
    field: &Field,
    view: &mut FieldView,
    typed: Option<&str>,
) -> Option<FieldValue> {
    let typed = match (field.ty, typed) {
        (FieldKind::Boolean, None) => Some("false"),
        (FieldKind::Boolean, Some(_)) => Some("true"),
        (_, Some("")) => None,
        (_, t) => t,
    };
    match form::check(field, typed) {
        Ok(v) => v,
        Err(e) => {
            view.error = Some(e.reason);
            None
        }
    }
}

/// A plain text input the console itself defines (names of clients and connections).
pub(crate) fn name_input(id: &str, label: &str, help: &str, value: &str) -> FieldView {
    FieldView {
        id: id.to_owned(),
        label: label.to_owned(),
        help: Some(help.to_owned()),
        input: "text",
        required: true,
        pattern: Some(r"\S(.*\S)?".into()),
        maxlength: Some(100),
        value: value.to_owned(),
        autocomplete: "off",
        ..FieldView::default()
    }
}
