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
    /// A list operation's request: `cursor`, `page` (the paging values of the page asked for),
    /// `params`, `tenant`, plus `hosts`, `fields`.
    List,
    /// A get operation's request: `id`, `params`, `tenant`, plus `hosts`, `fields`.
    Get,
    /// A create operation's request: `record`, `params`, `tenant`, `idempotency_key`, plus
    /// `hosts`, `fields`.
    Create,
    /// An update operation's request: `id`, `record`, `params`, `tenant`, `idempotency_key`,
    /// plus `hosts`, `fields`.
    Update,
    /// A delete operation's request: `id`, `record`, `params`, `tenant`, `idempotency_key`, plus
    /// `hosts`, `fields`.
    Delete,
    /// An action's request: `id`, `record`, `params`, `tenant`, `idempotency_key`, plus
    /// `hosts`, `fields`.
    Action,
    /// One item of an `envelope` body: `record`, `index`, `operation`, `id`, `idempotency_key`,
    /// `params`, `tenant`, plus `fields`.
    BodyItem,
    /// The key an item-results `match` sends: `record`, `index`.
    ItemKey,
    /// The headers of every request (`[requests]`): `params`, `tenant`, plus `hosts`, `fields`.
    Requests,
    /// An error message: `status`, `body`.
    ErrorMessage,
    /// The connection-test description: `record`.
    Describe,
    /// A record filter (`keep-if`), an expression: `record`.
    Keep,
    /// The revocation endpoint: `token` (the token revoked, escaped for a URL), plus `hosts`,
    /// `fields`.
    Revoke,
}

impl Scope {
    /// Every scope.
    pub const ALL: [Self; 17] = [
        Self::Auth,
        Self::ApplyToken,
        Self::TenantHeader,
        Self::Setup,
        Self::List,
        Self::Get,
        Self::Create,
        Self::Update,
        Self::Delete,
        Self::Action,
        Self::BodyItem,
        Self::ItemKey,
        Self::Requests,
        Self::ErrorMessage,
        Self::Describe,
        Self::Keep,
        Self::Revoke,
    ];

    /// The request scope of an operation kind (`list`, `get`, `create`, `update`, `delete`;
    /// any other name is an action).
    pub fn of_operation(kind: &str) -> Self {
        match kind {
            "list" => Self::List,
            "get" => Self::Get,
            "create" => Self::Create,
            "update" => Self::Update,
            "delete" => Self::Delete,
            _ => Self::Action,
        }
    }

    /// Where a template of this scope sits, for messages.
    pub fn place(self) -> &'static str {
        match self {
            Self::Auth => "in an auth setting",
            Self::ApplyToken => "in the token header",
            Self::TenantHeader => "in the tenant header",
            Self::Setup => "in a setup step",
            Self::List => "in a `list` operation",
            Self::Get => "in a `get` operation",
            Self::Create => "in a `create` operation",
            Self::Update => "in an `update` operation",
            Self::Delete => "in a `delete` operation",
            Self::Action => "in an action",
            Self::BodyItem => "in a body item",
            Self::ItemKey => "in an item match key",
            Self::Requests => "in the headers of every request",
            Self::ErrorMessage => "in an error message",
            Self::Describe => "in the connection test's description",
            Self::Keep => "in a record filter",
            Self::Revoke => "in the revocation endpoint",
        }
    }

    /// The top-level variable names allowed here.
    pub fn roots(self) -> &'static [&'static str] {
        match self {
            Self::Auth => &["hosts", "fields"],
            Self::ApplyToken => &["hosts", "fields", "token"],
            Self::TenantHeader => &["hosts", "fields", "tenant"],
            Self::Setup => &["hosts", "fields", "callback_url", "connector"],
            Self::List => &["hosts", "fields", "cursor", "page", "params", "tenant"],
            Self::Get => &["hosts", "fields", "id", "params", "tenant"],
            Self::Create => &[
                "hosts",
                "fields",
                "record",
                "params",
                "tenant",
                "idempotency_key",
            ],
            Self::Update | Self::Delete | Self::Action => &[
                "hosts",
                "fields",
                "id",
                "record",
                "params",
                "tenant",
                "idempotency_key",
            ],
            Self::BodyItem => &[
                "fields",
                "record",
                "index",
                "operation",
                "id",
                "idempotency_key",
                "params",
                "tenant",
            ],
            Self::ItemKey => &["record", "index"],
            Self::Requests => &["hosts", "fields", "params", "tenant"],
            Self::ErrorMessage => &["status", "body"],
            Self::Describe | Self::Keep => &["record"],
            Self::Revoke => &["hosts", "fields", "token"],
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
    /// Why a request has no `tenant` (the spec declares no `[tenants]`, or the resource is not
    /// tenanted); `None` when it has one.
    pub no_tenant: Option<String>,
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
                    format!(
                        "template variable `{root}` is not available {}",
                        scope.place()
                    )
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
        if root == "tenant"
            && scope != Scope::TenantHeader
            && let Some(reason) = &names.no_tenant
        {
            problems.push(TemplateProblem {
                message: format!("template variable `tenant` is not available: {reason}"),
                range,
                hint: Some(
                    "declare [tenants] (and leave tenanted unset), or leave `tenant` out of this template"
                        .to_owned(),
                ),
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
    for (name, range) in filters(source) {
        let unknown = env
            .empty_state()
            .apply_filter(&name, &[minijinja::Value::UNDEFINED])
            .is_err_and(|e| e.kind() == minijinja::ErrorKind::UnknownFilter);
        if unknown {
            problems.push(TemplateProblem {
                message: format!("unknown filter `{name}`"),
                range: Some(range),
                hint: Some(format!(
                    "filters are MiniJinja's built-ins, such as {}",
                    KNOWN_FILTERS.join(", ")
                )),
            });
        }
    }
    problems
}

/// Filters named in the unknown-filter hint (a test checks each exists).
const KNOWN_FILTERS: [&str; 7] = [
    "default", "join", "lower", "upper", "trim", "replace", "map",
];

/// The filters `source` applies (`value | name`, `{% filter name %}`), with their byte ranges:
/// what lies inside `{{ … }}` and `{% … %}`, outside string literals.
fn filters(source: &str) -> Vec<(String, std::ops::Range<usize>)> {
    let bytes = source.as_bytes();
    let ident = |from: usize| -> std::ops::Range<usize> {
        let mut end = from;
        while end < bytes.len()
            && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_')
            && (end > from || !bytes[end].is_ascii_digit())
        {
            end += 1;
        }
        from..end
    };
    let skip_spaces = |mut at: usize| {
        while at < bytes.len() && bytes[at].is_ascii_whitespace() {
            at += 1;
        }
        at
    };
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = source[at..].find(['{']).map(|i| at + i) {
        let close = match bytes.get(open + 1) {
            Some(b'{') => b'}',
            Some(b'%') => b'%',
            _ => {
                at = open + 1;
                continue;
            }
        };
        let mut i = open + 2;
        // `{% filter name %}` names a filter too.
        let first = ident(skip_spaces(
            i + usize::from(matches!(bytes.get(i), Some(b'-' | b'+'))),
        ));
        if close == b'%' && &source[first.clone()] == "filter" {
            let name = ident(skip_spaces(first.end));
            if !name.is_empty() {
                out.push((source[name.clone()].to_owned(), name));
            }
        }
        let mut quote = None;
        while i < bytes.len() {
            let b = bytes[i];
            match quote {
                Some(_) if b == b'\\' => i += 1,
                Some(q) if b == q => quote = None,
                Some(_) => {}
                None if b == b'"' || b == b'\'' => quote = Some(b),
                None if b == close && bytes.get(i + 1) == Some(&b'}') => break,
                None if b == b'|' => {
                    let name = ident(skip_spaces(i + 1));
                    if !name.is_empty() {
                        out.push((source[name.clone()].to_owned(), name));
                    }
                }
                None => {}
            }
            i += 1;
        }
        at = i.min(bytes.len());
        if at == open {
            at += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        Names {
            hosts: ["api".to_owned()].into(),
            fields: ["client_id".to_owned()].into(),
            no_tenant: None,
        }
    }

    #[test]
    fn accepts_declared_names() {
        let env = environment();
        assert!(check(&env, "{{ hosts.api }}/x/{{ id }}", Scope::Get, &names()).is_empty());
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
            "template variable `token` is not available in an auth setting"
        );
        let p = check(&env, "{{ user }}", Scope::Auth, &names());
        assert_eq!(p[0].message, "unknown template variable `user`");
        let p = check(&env, "{{ hosts.api ", Scope::Auth, &names());
        assert!(p[0].message.starts_with("template does not parse"), "{p:?}");
    }

    #[test]
    fn each_operation_gets_the_names_it_is_given() {
        let env = environment();
        let one = |source: &str, scope| check(&env, source, scope, &names());
        assert!(one("/x/{{ cursor }}", Scope::List).is_empty());
        assert_eq!(
            one("/x/{{ cursor }}", Scope::Get)[0].message,
            "template variable `cursor` is not available in a `get` operation"
        );
        assert!(!one("/x/{{ id }}", Scope::List).is_empty());
        assert!(!one("/x/{{ id }}", Scope::Create).is_empty());
        assert!(one("/x/{{ id }}/{{ record.n }}", Scope::Update).is_empty());
        assert!(!one("{{ id }}", Scope::Requests).is_empty());
        assert!(one("{{ tenant.id }}", Scope::List).is_empty());
        let untenanted = Names {
            no_tenant: Some("this spec declares no [tenants]".to_owned()),
            ..names()
        };
        let p = check(&env, "/o/{{ tenant.id }}", Scope::List, &untenanted);
        assert_eq!(
            p[0].message,
            "template variable `tenant` is not available: this spec declares no [tenants]"
        );
    }

    #[test]
    fn filters_are_found_and_unknown_ones_refused() {
        let env = environment();
        let found: Vec<String> = filters(
            "{{ a | lower }}|{{ b|default('x | y')|join(\", \") }}{% filter upper %}z{% endfilter %}{% if c | length %}{% endif %}",
        )
        .into_iter()
        .map(|(name, _)| name)
        .collect();
        assert_eq!(found, ["lower", "default", "join", "upper", "length"]);
        let p = check(&env, "{{ params.q | shout }}", Scope::List, &names());
        assert_eq!(p[0].message, "unknown filter `shout`");
        assert_eq!(p[0].range, Some(14..19));
        for known in KNOWN_FILTERS {
            let source = format!("{{{{ params.q | {known} }}}}");
            assert!(
                check(&env, &source, Scope::List, &names()).is_empty(),
                "{known}"
            );
        }
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
