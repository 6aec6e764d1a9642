//! Templates in specs are MiniJinja templates. This module parses them and checks that each
//! uses only the variables its place allows; the engine renders them with the same environment.

use std::collections::BTreeSet;

use minijinja::{Environment, UndefinedBehavior};

/// The variables a template may use, by the place it appears in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Auth endpoints and credentials: `hosts`, `fields`.
    Auth,
    /// The value of the header carrying the access token: `token`, plus `hosts`, `fields`.
    ApplyToken,
    /// The tenant header: `tenant` (`tenant.id`, `tenant.name`), plus `hosts`, `fields`.
    TenantHeader,
    /// Setup instructions: `callback_url`, `connector`, plus `hosts`, `fields`.
    Setup,
    /// A request of an operation: `id`, `record`, `cursor`, `params`, `tenant`, plus `hosts`, `fields`.
    Request,
    /// An error message: `status`, `body`.
    ErrorMessage,
    /// The connection-test description: `record`.
    Describe,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Self; 7] = [
        Self::Auth,
        Self::ApplyToken,
        Self::TenantHeader,
        Self::Setup,
        Self::Request,
        Self::ErrorMessage,
        Self::Describe,
    ];

    /// The top-level variable names allowed here.
    pub fn roots(self) -> &'static [&'static str] {
        match self {
            Self::Auth => &["hosts", "fields"],
            Self::ApplyToken => &["hosts", "fields", "token"],
            Self::TenantHeader => &["hosts", "fields", "tenant"],
            Self::Setup => &["hosts", "fields", "callback_url", "connector"],
            Self::Request => &[
                "hosts", "fields", "id", "record", "cursor", "params", "tenant",
            ],
            Self::ErrorMessage => &["status", "body"],
            Self::Describe => &["record"],
        }
    }
}

/// The names a template can be checked against.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Declared host names.
    pub hosts: BTreeSet<String>,
    /// Declared form field ids.
    pub fields: BTreeSet<String>,
}

/// A problem in one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateProblem {
    /// What is wrong.
    pub message: String,
    /// Byte range inside the template text, when known.
    pub range: Option<std::ops::Range<usize>>,
    /// What to do.
    pub hint: Option<String>,
}

/// The environment every spec template is parsed and rendered with: strict about undefined
/// variables, no auto-escaping (the engine encodes URLs and JSON itself).
pub fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env
}

/// The variables `source` reads, with their attribute chains (`id`, `hosts.api`, `tenant.id`);
/// `None` when it does not parse ([`check`] says why).
pub fn variables(env: &Environment<'_>, source: &str) -> Option<BTreeSet<String>> {
    let template = env.template_from_str(source).ok()?;
    Some(template.undeclared_variables(true).into_iter().collect())
}

/// Whether `variables` (from [`variables`]) read `name` or an attribute of it: `tenant.id`
/// is read by `{{ tenant.id }}` but not by `{{ tenant.name }}` or by the text "tenant.id".
pub fn reads(variables: &BTreeSet<String>, name: &str) -> bool {
    variables.iter().any(|v| {
        v.strip_prefix(name)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    })
}

/// Parses `source` and checks its variables against `scope` and `names`.
pub fn check(
    env: &Environment<'_>,
    source: &str,
    scope: Scope,
    names: &Names,
) -> Vec<TemplateProblem> {
    let template = match env.template_from_str(source) {
        Ok(template) => template,
        Err(err) => {
            return vec![TemplateProblem {
                message: format!(
                    "template does not parse: {}",
                    err.detail().unwrap_or("syntax error")
                ),
                range: err.range(),
                hint: Some(
                    "templates are MiniJinja: `{{ hosts.api }}`, `{% if id %}…{% endif %}`"
                        .to_owned(),
                ),
            }];
        }
    };
    let mut problems = Vec::new();
    let used: BTreeSet<String> = template.undeclared_variables(true).into_iter().collect();
    for name in used {
        let mut parts = name.splitn(3, '.');
        let root = parts.next().unwrap_or_default();
        let attribute = parts.next();
        let at = source.find(root);
        let range = at.map(|i| i..i + name.len());
        if !scope.roots().contains(&root) {
            let elsewhere = Scope::ALL.iter().any(|s| s.roots().contains(&root));
            problems.push(TemplateProblem {
                message: if elsewhere {
                    format!("template variable `{root}` is not available here")
                } else {
                    format!("unknown template variable `{root}`")
                },
                range,
                hint: Some(format!(
                    "here a template may use: {}",
                    scope.roots().join(", ")
                )),
            });
            continue;
        }
        let (declared, what) = match root {
            "hosts" => (&names.hosts, "host"),
            "fields" => (&names.fields, "form field"),
            _ => continue,
        };
        match attribute {
            Some(attribute) if !declared.contains(attribute) => problems.push(TemplateProblem {
                message: format!("`{root}.{attribute}` names no declared {what}"),
                range,
                hint: Some(if declared.is_empty() {
                    format!("this spec declares no {what}")
                } else {
                    format!(
                        "declared: {}",
                        declared.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                }),
            }),
            Some(_) => {}
            None => problems.push(TemplateProblem {
                message: format!("`{root}` is a table; use one entry, such as `{root}.<name>`"),
                range,
                hint: None,
            }),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            hosts: ["api".to_owned()].into(),
            fields: ["client_id".to_owned()].into(),
        }
    }

    #[test]
    fn accepts_declared_names() {
        let env = environment();
        assert!(check(&env, "{{ hosts.api }}/x/{{ id }}", Scope::Request, &names()).is_empty());
        assert!(check(&env, "{{ fields.client_id }}", Scope::Auth, &names()).is_empty());
    }

    #[test]
    fn refuses_unknown_names_and_bad_syntax() {
        let env = environment();
        let p = check(&env, "{{ hosts.login }}", Scope::Auth, &names());
        assert_eq!(p[0].message, "`hosts.login` names no declared host");
        let p = check(&env, "{{ token }}", Scope::Auth, &names());
        assert_eq!(
            p[0].message,
            "template variable `token` is not available here"
        );
        let p = check(&env, "{{ user }}", Scope::Auth, &names());
        assert_eq!(p[0].message, "unknown template variable `user`");
        let p = check(&env, "{{ hosts.api ", Scope::Auth, &names());
        assert!(p[0].message.starts_with("template does not parse"), "{p:?}");
    }

    #[test]
    fn reads_variables_not_text() {
        let env = environment();
        let vars = variables(&env, "/videos/{{ record.id }}").unwrap();
        assert!(!reads(&vars, "id"));
        assert!(reads(&vars, "record"));
        let vars = variables(&env, "{{ tenant.id }}-{{ identity }}").unwrap();
        assert!(reads(&vars, "tenant.id"));
        assert!(!reads(&vars, "tenant.name"));
        assert!(!reads(&vars, "id"));
        assert!(variables(&env, "{{ id ").is_none());
    }
}
