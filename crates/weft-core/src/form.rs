//! Applying a spec's connection-form rules to what a person typed: required, whitespace,
//! ranges, choices, patterns, lengths, defaults. Error messages name the field by its label and
//! never repeat a secret's value.

use std::fmt;

use serde::Serialize;

use crate::model::{Field, FieldKind, Scalar, Whitespace};

/// A value that passed its field's rules.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum FieldValue {
    /// Text (also URLs and enum choices).
    Text(String),
    /// A whole number.
    Integer(i64),
    /// Yes or no.
    Boolean(bool),
}

impl fmt::Debug for FieldValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(t) => write!(f, "Text({} chars)", t.chars().count()),
            Self::Integer(n) => write!(f, "Integer({n})"),
            Self::Boolean(b) => write!(f, "Boolean({b})"),
        }
    }
}

impl FieldValue {
    /// The value as JSON, for templates.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Text(t) => serde_json::Value::String(t.clone()),
            Self::Integer(n) => serde_json::Value::from(*n),
            Self::Boolean(b) => serde_json::Value::Bool(*b),
        }
    }
}

/// Why a value was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{label}: {reason}")]
pub struct FieldError {
    /// The field's label.
    pub label: String,
    /// The field's id.
    pub id: String,
    /// What is wrong and what to do, without the value itself when the field is secret.
    pub reason: String,
}

/// Checks `input` (as typed; `None` when nothing was given) against `field`'s rules and returns
/// the value to store (`None` for an optional field left empty without a default).
pub fn check(field: &Field, input: Option<&str>) -> Result<Option<FieldValue>, FieldError> {
    let fail = |reason: String| FieldError {
        label: field.label.clone(),
        id: field.id.clone(),
        reason,
    };
    let text = match input {
        Some(raw) => {
            let trimmed = raw.trim();
            if trimmed.len() != raw.len() && !trimmed.is_empty() {
                match field.whitespace {
                    Whitespace::Reject => {
                        let place = match (
                            raw.starts_with(char::is_whitespace),
                            raw.ends_with(char::is_whitespace),
                        ) {
                            (true, true) => "leading and trailing spaces",
                            (true, false) => "a leading space",
                            _ => "a trailing space",
                        };
                        return Err(fail(format!(
                            "the value has {place}; remove spaces before and after it (often picked up when copying)"
                        )));
                    }
                    Whitespace::Trim => Some(trimmed),
                    Whitespace::Keep => Some(raw),
                }
            } else if trimmed.is_empty() {
                None
            } else {
                Some(raw)
            }
        }
        None => None,
    };
    let Some(text) = text else {
        return match (&field.default, field.required) {
            (Some(default), _) => Ok(Some(from_default(default))),
            (None, true) => Err(fail("a value is required".to_owned())),
            (None, false) => Ok(None),
        };
    };
    let shown = |t: &str| {
        if field.secret {
            "the value".to_owned()
        } else {
            format!("`{t}`")
        }
    };
    match field.ty {
        FieldKind::Integer => {
            let n: i64 = text
                .parse()
                .map_err(|_| fail(format!("{} is not a whole number", shown(text))))?;
            let (min, max) = (field.min.unwrap_or(i64::MIN), field.max.unwrap_or(i64::MAX));
            if n < min || n > max {
                return Err(fail(format!(
                    "{n} is outside the allowed range {min}–{max}"
                )));
            }
            Ok(Some(FieldValue::Integer(n)))
        }
        FieldKind::Boolean => match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "y" | "1" | "on" => Ok(Some(FieldValue::Boolean(true))),
            "false" | "no" | "n" | "0" | "off" => Ok(Some(FieldValue::Boolean(false))),
            _ => Err(fail(format!("{} is not yes or no", shown(text)))),
        },
        FieldKind::Enum => {
            if field.choices.iter().any(|c| c == text) {
                Ok(Some(FieldValue::Text(text.to_owned())))
            } else {
                Err(fail(format!(
                    "{} is not one of: {}",
                    shown(text),
                    field.choices.join(", ")
                )))
            }
        }
        FieldKind::Text | FieldKind::Url => {
            if let Some(max) = field.max_length {
                let len = text.chars().count();
                if len > max as usize {
                    return Err(fail(format!(
                        "the value is {len} characters long; at most {max} are allowed"
                    )));
                }
            }
            if field.ty == FieldKind::Url {
                match url::Url::parse(text) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    _ => {
                        return Err(fail(format!(
                            "{} is not an absolute http(s) URL",
                            shown(text)
                        )));
                    }
                }
            }
            if let Some(pattern) = &field.pattern {
                // The validator has compiled every pattern already; a pattern that still fails
                // to compile refuses the value rather than letting it through unchecked.
                let matches =
                    regex::Regex::new(&format!("^(?:{pattern})$")).map(|re| re.is_match(text));
                if !matches.unwrap_or(false) {
                    let message = field
                        .pattern_message
                        .clone()
                        .unwrap_or_else(|| format!("it must match `{pattern}`"));
                    return Err(fail(format!("{} is not accepted: {message}", shown(text))));
                }
            }
            Ok(Some(FieldValue::Text(text.to_owned())))
        }
    }
}

fn from_default(default: &Scalar) -> FieldValue {
    match default {
        Scalar::Boolean(b) => FieldValue::Boolean(*b),
        Scalar::Integer(n) => FieldValue::Integer(*n),
        Scalar::Text(t) => FieldValue::Text(t.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(toml_text: &str) -> Field {
        toml::from_str(toml_text).expect("a field")
    }

    #[test]
    fn whitespace_is_refused_with_where_it_is() {
        let f = field("id = \"client_id\"\nlabel = \"Client ID\"\nrequired = true");
        let e = check(&f, Some(" abc")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Client ID: the value has a leading space; remove spaces before and after it (often picked up when copying)"
        );
        assert!(
            check(&f, Some("abc "))
                .unwrap_err()
                .reason
                .contains("a trailing space")
        );
        assert!(
            check(&f, Some(" abc "))
                .unwrap_err()
                .reason
                .contains("leading and trailing")
        );
        assert_eq!(
            check(&f, Some("abc")).unwrap(),
            Some(FieldValue::Text("abc".into()))
        );
        assert_eq!(
            check(&f, Some("   ")).unwrap_err().reason,
            "a value is required"
        );
        assert_eq!(check(&f, None).unwrap_err().reason, "a value is required");
        let trim = field("id = \"x\"\nlabel = \"X\"\nwhitespace = \"trim\"");
        assert_eq!(
            check(&trim, Some(" a ")).unwrap(),
            Some(FieldValue::Text("a".into()))
        );
    }

    #[test]
    fn ranges_defaults_choices_and_patterns() {
        let c = field(
            "id = \"concurrency\"\nlabel = \"Concurrency level\"\ntype = \"integer\"\nmin = 1\nmax = 25\ndefault = 5",
        );
        assert_eq!(
            check(&c, Some("26")).unwrap_err().reason,
            "26 is outside the allowed range 1–25"
        );
        assert_eq!(
            check(&c, Some("0")).unwrap_err().reason,
            "0 is outside the allowed range 1–25"
        );
        assert_eq!(check(&c, None).unwrap(), Some(FieldValue::Integer(5)));
        assert!(check(&c, Some("five")).is_err());
        let e = field(
            "id = \"s\"\nlabel = \"Status\"\ntype = \"enum\"\nchoices = [\"DRAFT\", \"AUTHORISED\"]",
        );
        assert!(
            check(&e, Some("PAID"))
                .unwrap_err()
                .reason
                .contains("DRAFT, AUTHORISED")
        );
        let p = field("id = \"k\"\nlabel = \"Key\"\nsecret = true\npattern = \"[a-z]+\"");
        let err = check(&p, Some("ABC")).unwrap_err();
        assert!(
            !err.reason.contains("ABC"),
            "a secret is never repeated: {err}"
        );
        assert_eq!(
            check(&p, Some("abc")).unwrap(),
            Some(FieldValue::Text("abc".into()))
        );
    }

    #[test]
    fn debug_never_shows_text() {
        assert_eq!(
            format!("{:?}", FieldValue::Text("s3cret".into())),
            "Text(6 chars)"
        );
    }
}
