//! Applying a spec's connection-form rules to what a person typed: required, whitespace,
//! ranges, choices, patterns, lengths, defaults. Error messages name the field by its label and
//! never repeat a secret's value.
//!
//! A connection signs in with one of the methods its spec declares under `[auth]`
//! ([`choose_method`]); a field listing `methods` applies only to connections of those methods
//! ([`check_for`]): required only there, refused anywhere else.

use std::fmt;

use serde::Serialize;

use crate::model::{AuthMethod, Field, FieldKind, Scalar, SpecFile, Whitespace};

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
    /// The value as text, as a connection's `fields` keep it in `weft.toml` (`76`, `true`,
    /// `sandbox`); [`check`] reads it back to the same value.
    pub fn to_text(&self) -> String {
        match self {
            Self::Text(t) => t.clone(),
            Self::Integer(n) => n.to_string(),
            Self::Boolean(b) => b.to_string(),
        }
    }

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

/// Checks `input` against `field`'s rules for a connection signing in with `method`: a field of
/// another method is never required, takes no default and refuses any value given.
pub fn check_for(
    field: &Field,
    method: AuthMethod,
    input: Option<&str>,
) -> Result<Option<FieldValue>, FieldError> {
    if field.applies_to(method) {
        return check(field, input);
    }
    if input.is_some_and(|t| !t.trim().is_empty()) {
        return Err(FieldError {
            label: field.label.clone(),
            id: field.id.clone(),
            reason: format!(
                "it belongs to connections signing in with {}, and this one signs in with {method}; leave it empty",
                method_list(&field.methods)
            ),
        });
    }
    Ok(None)
}

/// Why a connection's sign-in method cannot be settled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// The spec declares no method (every resource is run by a plugin).
    #[error("connector `{connector}` declares no sign-in method")]
    NoneDeclared {
        /// The connector.
        connector: String,
    },
    /// The method chosen is not declared.
    #[error("connector `{connector}` does not sign in with `{method}`; choose {declared}")]
    NotDeclared {
        /// The connector.
        connector: String,
        /// The method chosen.
        method: String,
        /// The methods it declares, for the message.
        declared: String,
    },
    /// A value was given for a field of another method.
    #[error(transparent)]
    OtherMethod(#[from] FieldError),
    /// What was given fits no single declared method.
    #[error(
        "{given} belong to different sign-in methods of connector `{connector}`; give only those of one: {declared}"
    )]
    Mixed {
        /// The connector.
        connector: String,
        /// What was given, for the message.
        given: String,
        /// The methods it declares.
        declared: String,
    },
    /// More than one method fits and none was chosen.
    #[error("connector `{connector}` signs in with {declared}; choose which this connection uses")]
    Ambiguous {
        /// The connector.
        connector: String,
        /// The methods that fit, for the message.
        declared: String,
        /// The methods that fit.
        methods: Vec<AuthMethod>,
    },
}

/// `a`, `a or b`, `a, b or c`: methods as a sentence names them.
pub fn method_list(methods: &[AuthMethod]) -> String {
    let names: Vec<String> = methods.iter().map(|m| format!("`{m}`")).collect();
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// The sign-in method of a new connection of `spec`: `chosen` when given (it must be declared,
/// and no field in `given` — ids of the fields given a value — may belong to another method);
/// otherwise the one declared method that every field in `given` belongs to and `fits` accepts
/// (the caller's own knowledge of what was given, such as an OAuth client, which only a
/// method using one takes). More than one left is [`MethodError::Ambiguous`].
pub fn choose_method(
    spec: &SpecFile,
    chosen: Option<AuthMethod>,
    given: &[&str],
    fits: impl Fn(AuthMethod) -> bool,
) -> Result<AuthMethod, MethodError> {
    let declared = spec.auth.methods();
    if declared.is_empty() {
        return Err(MethodError::NoneDeclared {
            connector: spec.id.clone(),
        });
    }
    let given: Vec<&Field> = given
        .iter()
        .filter_map(|id| spec.fields.iter().find(|f| f.id == *id))
        .collect();
    if let Some(method) = chosen {
        if !declared.contains(&method) {
            return Err(MethodError::NotDeclared {
                connector: spec.id.clone(),
                method: method.to_string(),
                declared: method_list(&declared),
            });
        }
        // Only the method matters here: the values themselves are checked by their callers.
        if let Some(field) = given.iter().find(|f| !f.applies_to(method)) {
            check_for(field, method, Some("given"))?;
        }
        return Ok(method);
    }
    let fitting: Vec<AuthMethod> = declared
        .iter()
        .copied()
        .filter(|m| fits(*m) && given.iter().all(|f| f.applies_to(*m)))
        .collect();
    match fitting.as_slice() {
        [one] => Ok(*one),
        [] => Err(MethodError::Mixed {
            connector: spec.id.clone(),
            given: if given.is_empty() {
                "the values given".to_owned()
            } else {
                given
                    .iter()
                    .map(|f| f.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            declared: method_list(&declared),
        }),
        several => Err(MethodError::Ambiguous {
            connector: spec.id.clone(),
            declared: method_list(several),
            methods: several.to_vec(),
        }),
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

    fn two_methods() -> SpecFile {
        let text = r#"
id = "acme"
name = "Acme"
version = "1.0.0"
[hosts]
api = "https://api.acme.example"
[auth.oauth2]
authorize-url = "{{ hosts.api }}/authorize"
token-url = "{{ hosts.api }}/token"
client-id = "{{ fields.client_id }}"
client-secret = "{{ fields.client_secret }}"
[auth.token]
value = "{{ fields.token }}"
[[fields]]
id = "client_id"
label = "Client ID"
required = true
methods = ["oauth2"]
[[fields]]
id = "client_secret"
label = "Client secret"
secret = true
required = true
methods = ["oauth2"]
[[fields]]
id = "token"
label = "Access token"
secret = true
required = true
methods = ["token"]
pattern = '^tok-'
[[fields]]
id = "region"
label = "Region"
required = true
[test]
resource = "me"
"#;
        toml::from_str(text).expect("a spec")
    }

    #[test]
    fn a_field_of_another_method_is_neither_required_nor_accepted() {
        let spec = two_methods();
        let token = &spec.fields[2];
        assert_eq!(
            check_for(token, AuthMethod::Token, None)
                .unwrap_err()
                .reason,
            "a value is required"
        );
        assert_eq!(check_for(token, AuthMethod::OAuth2, None).unwrap(), None);
        assert_eq!(
            check_for(token, AuthMethod::OAuth2, Some("  ")).unwrap(),
            None
        );
        let err = check_for(token, AuthMethod::OAuth2, Some("s3cret")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Access token: it belongs to connections signing in with `token`, and this one signs in with oauth2; leave it empty"
        );
        // A field without `methods` belongs to every method.
        let region = &spec.fields[3];
        for m in [AuthMethod::OAuth2, AuthMethod::Token] {
            assert!(check_for(region, m, None).is_err());
        }
    }

    #[test]
    fn the_method_is_chosen_inferred_or_refused() {
        let spec = two_methods();
        let any = |_| true;
        assert_eq!(
            choose_method(&spec, Some(AuthMethod::Token), &[], any).unwrap(),
            AuthMethod::Token
        );
        let e = choose_method(&spec, Some(AuthMethod::ClientCredentials), &[], any).unwrap_err();
        assert_eq!(
            e.to_string(),
            "connector `acme` does not sign in with `client-credentials`; choose `oauth2` or `token`"
        );
        // A field of the chosen method is given: whatever its rules, the method stands.
        assert_eq!(
            choose_method(&spec, Some(AuthMethod::Token), &["token", "region"], any).unwrap(),
            AuthMethod::Token
        );
        let e = choose_method(&spec, Some(AuthMethod::Token), &["client_id"], any).unwrap_err();
        assert!(
            matches!(&e, MethodError::OtherMethod(f) if f.id == "client_id"),
            "{e}"
        );
        // Inferred from what was given, or from what the caller knows fits.
        assert_eq!(
            choose_method(&spec, None, &["token", "region"], any).unwrap(),
            AuthMethod::Token
        );
        assert_eq!(
            choose_method(&spec, None, &[], AuthMethod::uses_client).unwrap(),
            AuthMethod::OAuth2
        );
        let e = choose_method(&spec, None, &["region"], any).unwrap_err();
        assert_eq!(
            e,
            MethodError::Ambiguous {
                connector: "acme".into(),
                declared: "`oauth2` or `token`".into(),
                methods: vec![AuthMethod::OAuth2, AuthMethod::Token],
            }
        );
        let e = choose_method(&spec, None, &["client_id", "token"], any).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Client ID, Access token belong to different sign-in methods of connector `acme`; give only those of one: `oauth2` or `token`"
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
