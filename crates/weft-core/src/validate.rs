//! Cross-checks of a deserialized spec: references that must resolve, templates that must
//! parse and use declared names, rules that must fit together. Every problem is reported,
//! each at its key path (the loader turns paths into file positions).

use std::collections::{BTreeSet, HashSet};

use crate::diagnostic::Diagnostic;
use crate::form::method_list;
use crate::load::key_segment;
use crate::model::{
    AuthMethod, Extract, Field, FieldKind, FieldType, OnExhausted, Operation, PageStop, Pagination,
    Pkce, Resource, Scalar, SpecFile, TenantSelect, WriteBody, well_known,
};
use crate::template::{self, Names, Scope};

/// Checks `spec`; `stem` is the file stem the id must equal (empty to skip that check).
pub fn validate(spec: &SpecFile, stem: &str) -> Vec<Diagnostic> {
    let names = Names {
        hosts: spec.hosts.keys().cloned().collect(),
        fields: spec.fields.iter().map(|f| f.id.clone()).collect(),
        no_tenant: spec
            .tenants
            .is_none()
            .then(|| "this spec declares no [tenants]".to_owned()),
    };
    let mut v = Validator {
        spec,
        names,
        env: template::environment(),
        out: Vec::new(),
    };
    v.identity(stem);
    v.hosts();
    v.auth();
    v.fields();
    v.setup();
    v.limits();
    v.requests();
    v.error_rules("errors", &spec.errors);
    for (name, resource) in &spec.resources {
        v.resource(name, resource);
    }
    v.tenants();
    v.connection_test();
    v.out
}

struct Validator<'a> {
    spec: &'a SpecFile,
    names: Names,
    env: minijinja::Environment<'static>,
    out: Vec<Diagnostic>,
}

/// The most calls in flight `limits.concurrency.max` may allow.
const MAX_CONCURRENCY: u32 = 1000;

fn is_identifier(s: &str, separator: char) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == separator)
        && !s.ends_with(separator)
}

impl Validator<'_> {
    fn error(
        &mut self,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<Option<String>>,
    ) {
        let mut d = Diagnostic::error(key, message);
        d.hint = hint.into();
        self.out.push(d);
    }

    fn warning(
        &mut self,
        key: impl Into<String>,
        message: impl Into<String>,
        hint: impl Into<Option<String>>,
    ) {
        let mut d = Diagnostic::warning(key, message);
        d.hint = hint.into();
        self.out.push(d);
    }

    fn template(&mut self, key: &str, source: &str, scope: Scope) {
        for problem in template::check(&self.env, source, scope, &self.names) {
            self.error(key, problem.message, problem.hint);
        }
        self.method_fields(key, source);
    }

    /// A template read by connections of some sign-in method (`auth.token.value`: the token
    /// method's; anything outside `[auth]`: every connection's) may read only the fields
    /// that belong to all of them, because a connection of another method has no value.
    fn method_fields(&mut self, key: &str, source: &str) {
        // Setup steps name fields by their labels, for every reader of the instructions.
        if key.starts_with("setup") {
            return;
        }
        let declared = self.spec.auth.methods();
        let users: Vec<AuthMethod> = match [
            ("auth.oauth2.", AuthMethod::OAuth2),
            ("auth.client-credentials.", AuthMethod::ClientCredentials),
            ("auth.token.", AuthMethod::Token),
        ]
        .into_iter()
        .find(|(prefix, _)| key.starts_with(prefix))
        {
            Some((_, method)) => vec![method],
            None => declared,
        };
        let Some(vars) = template::variables(&self.env, source) else {
            return;
        };
        let mut problems = Vec::new();
        for field in &self.spec.fields {
            if field.methods.is_empty() || !template::reads(&vars, &format!("fields.{}", field.id))
            {
                continue;
            }
            let missing: Vec<AuthMethod> = users
                .iter()
                .copied()
                .filter(|m| !field.applies_to(*m))
                .collect();
            if missing.is_empty() {
                continue;
            }
            let whose = if key.starts_with("auth.") {
                format!("the {} sign-in", method_list(&users))
            } else {
                format!("every connection (signing in with {})", method_list(&users))
            };
            problems.push((
                format!(
                    "this template is used by {whose}, but field `{}` belongs only to {}: a connection signing in with {} has no value for it",
                    field.id,
                    method_list(&field.methods),
                    method_list(&missing)
                ),
                format!(
                    "read a field of that method, or add {} to field `{}`'s `methods`",
                    method_list(&missing),
                    field.id
                ),
            ));
        }
        for (message, hint) in problems {
            self.error(key, message, Some(hint));
        }
    }

    /// Whether the template `source` reads the variable `name`; `None` when it does not parse
    /// (that is reported on its own, so checks that depend on the answer are skipped).
    fn reads(&self, source: &str, name: &str) -> Option<bool> {
        template::variables(&self.env, source).map(|vars| template::reads(&vars, name))
    }

    /// Reports `target` when it names no resource.
    fn resource_ref(&mut self, key: &str, target: &str) -> bool {
        if self.spec.resources.contains_key(target) {
            return true;
        }
        let declared: Vec<_> = self.spec.resources.keys().map(String::as_str).collect();
        self.error(
            key,
            format!("`{target}` names no resource"),
            Some(format!("declared resources: {}", declared.join(", "))),
        );
        false
    }

    fn https_url(&mut self, key: &str, value: &str) {
        match url::Url::parse(value) {
            Ok(u) if u.scheme() == "https" || u.scheme() == "http" => {
                if u.host_str().is_none_or(str::is_empty) {
                    self.error(key, format!("`{value}` has no host"), None);
                }
            }
            Ok(u) => self.error(
                key,
                format!(
                    "`{value}` uses `{}`; only http and https are supported",
                    u.scheme()
                ),
                None,
            ),
            Err(err) => self.error(
                key,
                format!("`{value}` is not an absolute URL: {err}"),
                Some("write the full address, such as \"https://api.example.com\"".to_owned()),
            ),
        }
    }

    fn identity(&mut self, stem: &str) {
        let spec = self.spec;
        if !is_identifier(&spec.id, '-') {
            self.error(
                "id",
                format!("`{}` is not a valid id", spec.id),
                Some("use lowercase letters, digits and `-`, starting with a letter".to_owned()),
            );
        } else if !stem.is_empty() && stem != spec.id {
            self.error(
                "id",
                format!("id `{}` differs from the file name `{stem}.toml`", spec.id),
                Some(format!(
                    "rename the file to `{}.toml` or set id = \"{stem}\"",
                    spec.id
                )),
            );
        }
        if spec.name.trim().is_empty() {
            self.error("name", "the name is empty", None);
        }
        let parts: Vec<_> = spec.version.split('.').collect();
        if parts.len() != 3
            || parts
                .iter()
                .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
        {
            self.error(
                "version",
                format!("`{}` is not a version", spec.version),
                Some("use MAJOR.MINOR.PATCH, such as \"1.0.0\"".to_owned()),
            );
        }
        for (i, doc) in spec.docs.iter().enumerate() {
            self.https_url(&format!("docs[{i}].url"), &doc.url);
        }
    }

    /// Whether every resource is run by a plugin, so the spec needs no host and no auth.
    fn all_plugins(&self) -> bool {
        let resources = &self.spec.resources;
        !resources.is_empty() && resources.values().all(|r| r.plugin.is_some())
    }

    /// Reports a plugin name that could not name a plugin library.
    fn plugin_name(&mut self, key: &str, name: &str) {
        if !is_identifier(name, '-') {
            self.error(
                key,
                format!("`{name}` is not a plugin name"),
                Some("plugin names are lowercase letters, digits and `-`, as in its manifest (see `weft plugins list`)".to_owned()),
            );
        }
    }

    fn hosts(&mut self) {
        if self.spec.hosts.is_empty() && !self.all_plugins() {
            self.error(
                "hosts",
                "no host is declared",
                Some("add a base URL, such as `api = \"https://api.example.com\"`".to_owned()),
            );
        }
        for (name, url) in &self.spec.hosts {
            let key = format!("hosts.{}", key_segment(name));
            if !is_identifier(name, '_') {
                self.error(
                    &key,
                    if name.is_empty() {
                        "a host name is empty; it must be lowercase letters, digits and `_`"
                            .to_owned()
                    } else {
                        format!("host name `{name}` must be lowercase letters, digits and `_`")
                    },
                    None,
                );
            }
            self.https_url(&key, url);
            if url.ends_with('/') {
                self.warning(
                    &key,
                    "the base URL ends with `/`; paths start with one, so requests would have `//`",
                    Some("remove the trailing `/`".to_owned()),
                );
            }
        }
    }

    fn auth(&mut self) {
        let auth = &self.spec.auth;
        if auth.oauth2.is_none()
            && auth.client_credentials.is_none()
            && auth.token.is_none()
            && !self.all_plugins()
        {
            self.error(
                "auth",
                "no authentication method is declared",
                Some("declare [auth.oauth2], [auth.client-credentials] or [auth.token]".to_owned()),
            );
        }
        if let Some(o) = &auth.oauth2 {
            self.template("auth.oauth2.authorize-url", &o.authorize_url, Scope::Auth);
            self.template("auth.oauth2.token-url", &o.token_url, Scope::Auth);
            self.revocation(o);
            self.template("auth.oauth2.client-id", &o.client_id, Scope::Auth);
            match &o.client_secret {
                Some(secret) => {
                    self.template("auth.oauth2.client-secret", secret, Scope::Auth);
                    self.secret_template("auth.oauth2.client-secret", secret);
                }
                None if o.pkce == Pkce::None => self.error(
                    "auth.oauth2",
                    "a client without a secret must use PKCE",
                    Some("set pkce = \"S256\" or give client-secret".to_owned()),
                ),
                None => {}
            }
            for (name, value) in &o.authorize_params {
                self.template(
                    &format!("auth.oauth2.authorize-params.{}", key_segment(name)),
                    value,
                    Scope::Auth,
                );
            }
            if o.scopes
                .iter()
                .any(|s| s.trim().is_empty() || s.contains(' '))
            {
                self.error(
                    "auth.oauth2.scopes",
                    "a scope is empty or contains a space",
                    Some("list each scope as its own string".to_owned()),
                );
            }
            if let Some(refresh) = &o.refresh {
                if refresh.grace.is_some() && !refresh.rotates {
                    self.warning(
                        "auth.oauth2.refresh.grace",
                        "a grace period only matters when refresh tokens rotate",
                        Some("set rotates = true or remove grace".to_owned()),
                    );
                }
                if let Some(lifetime) = o.access_token_lifetime
                    && refresh.ahead >= lifetime
                {
                    self.error("auth.oauth2.refresh.ahead", format!("refreshing {} ahead of a {lifetime} token lifetime would refresh on every call", refresh.ahead), Some("make `ahead` shorter than `access-token-lifetime`".to_owned()));
                }
            }
        }
        if let Some(c) = &auth.client_credentials {
            self.template(
                "auth.client-credentials.token-url",
                &c.token_url,
                Scope::Auth,
            );
            self.template(
                "auth.client-credentials.client-id",
                &c.client_id,
                Scope::Auth,
            );
            self.template(
                "auth.client-credentials.client-secret",
                &c.client_secret,
                Scope::Auth,
            );
            self.secret_template("auth.client-credentials.client-secret", &c.client_secret);
        }
        if let Some(t) = &auth.token {
            self.template("auth.token.value", &t.value, Scope::Auth);
            self.secret_template("auth.token.value", &t.value);
        }
        self.template("auth.apply.value", &auth.apply.value, Scope::ApplyToken);
        if self.reads(&auth.apply.value, "token") == Some(false) {
            self.error(
                "auth.apply.value",
                "the header value does not use `token`",
                Some("such as \"Bearer {{ token }}\"".to_owned()),
            );
        }
    }

    /// A credential template must come from a secret field, never be written in the spec.
    fn secret_template(&mut self, key: &str, source: &str) {
        let Some(vars) = template::variables(&self.env, source) else {
            return;
        };
        if !template::reads(&vars, "fields") {
            self.error(
                key,
                "a credential is written into the spec",
                Some("declare a secret field and use \"{{ fields.<id> }}\"".to_owned()),
            );
        } else if let Some(f) = self
            .spec
            .fields
            .iter()
            .find(|f| !f.secret && template::reads(&vars, &format!("fields.{}", f.id)))
        {
            let id = f.id.clone();
            self.error(
                key,
                format!("credential comes from field `{id}`, which is not secret"),
                Some(format!("set secret = true on field `{id}`")),
            );
        }
    }

    fn fields(&mut self) {
        let mut seen = HashSet::new();
        for (i, field) in self.spec.fields.iter().enumerate() {
            let key = format!("fields[{i}]");
            if !is_identifier(&field.id, '_') {
                self.error(
                    format!("{key}.id"),
                    format!("field id `{}` must be snake_case", field.id),
                    Some("templates use it as `fields.<id>`".to_owned()),
                );
            }
            if !seen.insert(field.id.as_str()) {
                self.error(
                    format!("{key}.id"),
                    format!("field `{}` is declared twice", field.id),
                    None,
                );
            }
            if field.label.trim().is_empty() {
                self.error(format!("{key}.label"), "the label is empty", None);
            }
            self.field_rules(&key, field);
            self.field_methods(&key, field);
        }
        if let Some((i, field)) = self
            .spec
            .fields
            .iter()
            .enumerate()
            .find(|(_, f)| f.id == well_known::CONCURRENCY)
        {
            let limit = i64::from(self.concurrency_upper());
            if field.ty != FieldKind::Integer {
                self.error(
                    format!("fields[{i}].type"),
                    "the concurrency field must be an integer",
                    None,
                );
            } else {
                let within = format!(
                    "the concurrency field must stay within 1..{limit} (`limits.concurrency.max`)"
                );
                if field.min.is_some_and(|min| min < 1) {
                    self.error(format!("fields[{i}].min"), within.clone(), None);
                }
                if field.max.is_some_and(|max| max > limit) {
                    self.error(format!("fields[{i}].max"), within, None);
                }
            }
        }
    }

    /// A field's `methods` must name declared sign-in methods, each once; the concurrency
    /// field belongs to every connection.
    fn field_methods(&mut self, key: &str, f: &Field) {
        let declared = self.spec.auth.methods();
        let mut seen = Vec::new();
        for (j, method) in f.methods.iter().enumerate() {
            let at = format!("{key}.methods[{j}]");
            if !declared.contains(method) {
                let hint = if declared.is_empty() {
                    format!("declare [auth.{method}], or remove `methods`")
                } else {
                    format!(
                        "this spec signs in with {}; declare [auth.{method}] or remove `{method}`",
                        method_list(&declared)
                    )
                };
                self.error(
                    at,
                    format!("`{method}` is not a sign-in method of this spec"),
                    Some(hint),
                );
            } else if seen.contains(method) {
                self.warning(at, format!("`{method}` is listed twice"), None);
            }
            seen.push(*method);
        }
        if f.id == well_known::CONCURRENCY && !f.methods.is_empty() {
            self.error(
                format!("{key}.methods"),
                "the concurrency field belongs to every connection, whatever its sign-in method",
                Some("remove `methods`".to_owned()),
            );
        }
    }

    fn field_rules(&mut self, key: &str, f: &Field) {
        let kind = f.ty;
        let only = |what: &str, on: &str| {
            format!(
                "`{what}` only applies to {on} fields; this one is `{}`",
                kind_name(kind)
            )
        };
        if (f.min.is_some() || f.max.is_some()) && kind != FieldKind::Integer {
            let at = if f.min.is_some() { "min" } else { "max" };
            self.error(format!("{key}.{at}"), only(at, "integer"), None);
        }
        if !f.choices.is_empty() && kind != FieldKind::Enum {
            self.error(format!("{key}.choices"), only("choices", "enum"), None);
        }
        let textual = matches!(kind, FieldKind::Text | FieldKind::Url);
        if f.max_length.is_some() && !textual {
            self.error(
                format!("{key}.max-length"),
                only("max-length", "text and url"),
                None,
            );
        }
        if f.pattern.is_some() && !textual {
            self.error(
                format!("{key}.pattern"),
                only("pattern", "text and url"),
                None,
            );
        }
        if f.secret && kind != FieldKind::Text {
            self.error(format!("{key}.secret"), only("secret", "text"), None);
        }
        if f.secret && f.default.is_some() {
            self.error(
                format!("{key}.default"),
                "a secret field cannot have a default",
                Some("secrets are entered by the person, never written in a spec".to_owned()),
            );
        }
        if f.pattern_message.is_some() && f.pattern.is_none() {
            self.warning(
                format!("{key}.pattern-message"),
                "`pattern-message` without `pattern` is never shown",
                None,
            );
        }
        if let Some(pattern) = &f.pattern
            && let Err(err) = regex::Regex::new(pattern)
        {
            // The last line of regex's report is `error: <what>`.
            let report = err.to_string();
            let last = report.lines().last().unwrap_or("invalid").trim();
            let detail = last.strip_prefix("error:").unwrap_or(last).trim();
            self.error(
                format!("{key}.pattern"),
                format!("the pattern is not a valid regular expression: {detail}"),
                None,
            );
        }
        match kind {
            FieldKind::Integer => match (f.min, f.max) {
                (Some(min), Some(max)) if min > max => {
                    self.error(
                        format!("{key}.max"),
                        format!("max {max} is below min {min}"),
                        None,
                    );
                }
                (Some(_), Some(_)) => {}
                _ => self.error(
                    key,
                    "an integer field needs `min` and `max`",
                    Some("such as min = 1 and max = 100".to_owned()),
                ),
            },
            FieldKind::Enum => {
                if f.choices.is_empty() {
                    self.error(
                        key,
                        "an enum field needs `choices`",
                        Some("such as choices = [\"eu\", \"us\"]".to_owned()),
                    );
                }
                let unique: HashSet<_> = f.choices.iter().collect();
                if unique.len() != f.choices.len() {
                    self.error(format!("{key}.choices"), "a choice is listed twice", None);
                }
            }
            _ => {}
        }
        let Some(default) = &f.default else { return };
        let dkey = format!("{key}.default");
        match (kind, default) {
            (FieldKind::Integer, Scalar::Integer(n)) => {
                if f.min.is_some_and(|min| *n < min) || f.max.is_some_and(|max| *n > max) {
                    self.error(
                        dkey,
                        format!(
                            "default {n} is outside {}..{}",
                            f.min.unwrap_or(i64::MIN),
                            f.max.unwrap_or(i64::MAX)
                        ),
                        None,
                    );
                }
            }
            (FieldKind::Boolean, Scalar::Boolean(_)) | (FieldKind::Text, Scalar::Text(_)) => {}
            (FieldKind::Enum, Scalar::Text(s)) => {
                if !f.choices.contains(s) {
                    self.error(
                        dkey,
                        format!("default `{s}` is not one of the choices"),
                        Some(format!("choices: {}", f.choices.join(", "))),
                    );
                }
            }
            (FieldKind::Url, Scalar::Text(s)) => self.https_url(&dkey, s),
            _ => self.error(
                dkey,
                format!(
                    "the default does not fit {} field",
                    a_or_an(&format!("`{}`", kind_name(kind)))
                ),
                None,
            ),
        }
    }

    fn setup(&mut self) {
        let spec = self.spec;
        for (i, step) in spec.setup.iter().enumerate() {
            let key = format!("setup[{i}]");
            self.template(&format!("{key}.text"), &step.text, Scope::Setup);
            if let Some(fills) = &step.fills
                && !spec.fields.iter().any(|f| &f.id == fills)
            {
                let declared: Vec<_> = spec.fields.iter().map(|f| f.id.as_str()).collect();
                self.error(
                    format!("{key}.fills"),
                    format!("`{fills}` names no form field"),
                    Some(format!("declared fields: {}", declared.join(", "))),
                );
            }
            if step.check == Some(crate::model::SetupCheck::FieldValid) && step.fills.is_none() {
                self.error(
                    format!("{key}.check"),
                    "`field-valid` needs `fills` to name the field",
                    None,
                );
            }
            if let Some(url) = &step.url {
                self.https_url(&format!("{key}.url"), url);
            }
        }
    }

    /// `limits.concurrency.max`, or the largest allowed when it is out of range (reported by
    /// [`Self::limits`]), so that what is checked against it does not repeat its mistake.
    fn concurrency_upper(&self) -> u32 {
        let max = self.spec.limits.concurrency.max;
        if (1..=MAX_CONCURRENCY).contains(&max) {
            max
        } else {
            MAX_CONCURRENCY
        }
    }

    fn limits(&mut self) {
        let limits = &self.spec.limits;
        let c = limits.concurrency;
        let upper = self.concurrency_upper();
        if upper != c.max {
            self.error(
                "limits.concurrency.max",
                format!("max {} is outside 1..{MAX_CONCURRENCY}", c.max),
                None,
            );
        }
        if c.default == 0 || c.default > upper {
            self.error(
                "limits.concurrency.default",
                format!("default {} is outside 1..{upper}", c.default),
                None,
            );
        }
        let mut names = HashSet::new();
        for (i, b) in limits.budget.iter().enumerate() {
            let key = format!("limits.budget[{i}]");
            if !names.insert(b.name.as_str()) {
                self.error(
                    format!("{key}.name"),
                    format!("budget `{}` is declared twice", b.name),
                    None,
                );
            }
            match (b.calls, b.window, b.concurrent) {
                (Some(calls), Some(window), None) => {
                    if calls == 0 {
                        self.error(
                            format!("{key}.calls"),
                            "a budget of 0 calls allows nothing",
                            None,
                        );
                    }
                    if window.as_millis() == 0 {
                        self.error(format!("{key}.window"), "the window is empty", None);
                    }
                }
                (None, None, Some(n)) => {
                    if n == 0 {
                        self.error(
                            format!("{key}.concurrent"),
                            "a budget of 0 concurrent calls allows nothing",
                            None,
                        );
                    }
                    if b.on_exhausted == OnExhausted::Checkpoint {
                        self.error(format!("{key}.on-exhausted"), "a concurrency budget frees up within a call; `checkpoint` fits daily caps", Some("use on-exhausted = \"wait\"".to_owned()));
                    }
                }
                _ => self.error(
                    &key,
                    "a budget is either `calls` with `window`, or `concurrent`",
                    Some(
                        "such as `calls = 60` and `window = \"1m\"`, or `concurrent = 5`"
                            .to_owned(),
                    ),
                ),
            }
            if b.scope == crate::model::BudgetScope::Tenant && self.spec.tenants.is_none() {
                self.error(
                    format!("{key}.scope"),
                    "a per-tenant budget needs [tenants]",
                    Some("use scope = \"connection\" or declare [tenants]".to_owned()),
                );
            }
            if b.problem.is_some()
                && limits.headers.problem.is_none()
                && limits.problem_body.is_none()
            {
                self.error(
                    format!("{key}.problem"),
                    "`problem` needs `limits.headers.problem` or `limits.problem-body` to say where a 429 names it",
                    None,
                );
            }
            self.budget_reach(&key, b);
        }
        if let Some(path) = &limits.problem_body {
            self.dotted("limits.problem-body", path);
        }
        let r = &limits.retry;
        if r.max_attempts == 0 || r.max_attempts > 20 {
            self.error(
                "limits.retry.max-attempts",
                format!("{} attempts is outside 1..20", r.max_attempts),
                None,
            );
        }
        if r.initial_backoff > r.max_backoff {
            self.error(
                "limits.retry.initial-backoff",
                "the first backoff is longer than the longest",
                None,
            );
        }
        if limits.timeout.as_millis() == 0 {
            self.error("limits.timeout", "a timeout of zero fails every call", None);
        }
    }

    fn requests(&mut self) {
        let spec = self.spec;
        if let Some(host) = &spec.requests.host {
            self.host_ref("requests.host", host);
        }
        if !spec.requests.path_prefix.is_empty() && !spec.requests.path_prefix.starts_with('/') {
            self.error(
                "requests.path-prefix",
                "the prefix must start with `/`",
                None,
            );
        }
        for (name, value) in &spec.requests.headers {
            self.template(
                &format!("requests.headers.{}", key_segment(name)),
                value,
                Scope::Requests,
            );
        }
        for (name, value) in &spec.requests.query {
            self.template(
                &format!("requests.query.{}", key_segment(name)),
                value,
                Scope::Requests,
            );
        }
        if let Some(plugin) = &spec.requests.sign {
            self.plugin_name("requests.sign", plugin);
        }
    }

    fn host_ref(&mut self, key: &str, host: &str) {
        if !self.spec.hosts.contains_key(host) {
            let declared: Vec<_> = self.spec.hosts.keys().map(String::as_str).collect();
            let hint = if declared.is_empty() {
                "this spec declares no host; add it under [hosts]".to_owned()
            } else {
                format!("declared hosts: {}", declared.join(", "))
            };
            self.error(
                key,
                format!("host `{host}` is not declared in [hosts]"),
                Some(hint),
            );
        }
    }

    fn error_rules(&mut self, key: &str, rules: &[crate::model::ErrorRule]) {
        for (i, rule) in rules.iter().enumerate() {
            for status in &rule.status {
                if !(100..=599).contains(status) {
                    self.error(
                        format!("{key}[{i}].status"),
                        format!("{status} is not an HTTP status"),
                        None,
                    );
                }
            }
            if let Some(message) = &rule.message {
                self.template(&format!("{key}[{i}].message"), message, Scope::ErrorMessage);
            }
        }
    }

    fn resource(&mut self, name: &str, r: &Resource) {
        let key = format!("resources.{}", key_segment(name));
        if !is_identifier(name, '_') {
            self.error(
                &key,
                format!("resource name `{name}` must be snake_case"),
                None,
            );
        }
        if r.primary_key.is_empty() {
            self.error(
                format!("{key}.primary-key"),
                "the primary key is empty",
                None,
            );
        } else if !r.fields.is_empty() && !r.fields.contains_key(&r.primary_key) {
            self.error(
                format!("{key}.primary-key"),
                format!(
                    "primary key `{}` is not among the record fields",
                    r.primary_key
                ),
                Some(record_fields(r)),
            );
        }
        if let Some(plugin) = &r.plugin {
            self.plugin_name(&format!("{key}.plugin"), plugin);
            let actions = r
                .actions
                .keys()
                .map(|a| format!("actions.{}", key_segment(a)));
            for op_name in r.operations().map(|(n, _)| n.to_owned()).chain(actions) {
                self.error(
                    format!("{key}.{op_name}"),
                    format!("resource `{name}` is run by plugin `{plugin}`, so it declares no HTTP operation"),
                    Some(format!("remove `{op_name}` (the plugin's manifest says which operations it runs), or remove `plugin`")),
                );
            }
        } else if r.operations().next().is_none() && r.actions.is_empty() {
            self.error(
                &key,
                "the resource has no operation",
                Some("declare list, get, create, update, delete or an action".to_owned()),
            );
        }
        if r.tenanted == Some(true) && self.spec.tenants.is_none() {
            self.error(
                format!("{key}.tenanted"),
                "the resource needs a tenant but the spec declares no [tenants]",
                Some("declare [tenants] or set tenanted = false".to_owned()),
            );
        }
        // A resource that is not tenanted is called without a tenant.
        let tenanted = self.names.no_tenant.clone();
        if r.tenanted == Some(false) && tenanted.is_none() {
            self.names.no_tenant = Some(format!(
                "resource `{name}` is not tenanted (tenanted = false)"
            ));
        }
        for (op_name, op) in r.operations() {
            self.operation(&format!("{key}.{op_name}"), op_name, op, r);
        }
        self.actions(&key, r);
        self.names.no_tenant = tenanted;
        for (field_name, field) in &r.fields {
            self.record_field(&format!("{key}.fields.{}", key_segment(field_name)), field);
        }
    }

    /// One record field's rules, and its nested fields' (objects and list elements).
    fn record_field(&mut self, fkey: &str, field: &crate::model::RecordField) {
        let fkey = fkey.to_owned();
        let ty = field.ty;
        if ty == FieldType::Money && field.unit.is_none() {
            self.error(&fkey, "a money field needs `unit` (cents or decimal)", None);
        }
        if ty != FieldType::Money && field.unit.is_some() {
            self.error(
                format!("{fkey}.unit"),
                "`unit` only applies to money fields",
                None,
            );
        }
        let dated = matches!(ty, FieldType::Date | FieldType::Datetime);
        if dated && field.format.is_none() {
            self.error(
                &fkey,
                "a date or datetime field needs `format`",
                Some("rfc3339, naive-utc, date, ms-json, epoch-seconds or epoch-millis".to_owned()),
            );
        }
        if !dated && field.format.is_some() {
            self.error(
                format!("{fkey}.format"),
                "`format` only applies to date and datetime fields",
                None,
            );
        }
        if field.max_length.is_some() && ty != FieldType::String {
            self.error(
                format!("{fkey}.max-length"),
                "`max-length` only applies to string fields",
                None,
            );
        }
        if !field.choices.is_empty() && ty != FieldType::String {
            self.error(
                format!("{fkey}.enum"),
                "`enum` only applies to string fields",
                None,
            );
        }
        match (&field.references, ty) {
            (Some(target), FieldType::Reference | FieldType::Array) => {
                self.resource_ref(&format!("{fkey}.references"), target);
            }
            (None, FieldType::Reference) => {
                self.error(&fkey, "a reference field needs `references`", None)
            }
            (Some(_), _) => self.error(
                format!("{fkey}.references"),
                "`references` only applies to reference fields and arrays of ids",
                None,
            ),
            (None, _) => {}
        }
        if field.required && field.read_only {
            self.error(&fkey, "a field cannot be both required and read-only", None);
        }
        self.update_rules(&fkey, field);
        if field.read_only && field.write_only {
            self.error(
                &fkey,
                "a field cannot be both read-only and write-only",
                None,
            );
        }
        if !field.fields.is_empty() && !matches!(field.ty, FieldType::Object | FieldType::Array) {
            self.error(
                format!("{fkey}.fields"),
                "nested `fields` only apply to object fields and lists of objects",
                None,
            );
        }
        for (name, nested) in &field.fields {
            self.record_field(&format!("{fkey}.fields.{}", key_segment(name)), nested);
        }
    }

    fn operation(&mut self, key: &str, kind: &str, op: &Operation, r: &Resource) {
        if let Some(host) = &op.host {
            self.host_ref(&format!("{key}.host"), host);
        } else if self.spec.requests.host.is_none() {
            self.error(
                key,
                "no host: the operation names none and `requests.host` is not set",
                None,
            );
        }
        if !op.path.starts_with('/') {
            self.error(
                format!("{key}.path"),
                format!("path `{}` must start with `/`", op.path),
                None,
            );
        }
        let scope = Scope::of_operation(kind);
        self.template(&format!("{key}.path"), &op.path, scope);
        for (name, value) in &op.query {
            self.template(&format!("{key}.query.{}", key_segment(name)), value, scope);
        }
        for (name, value) in &op.headers {
            self.template(
                &format!("{key}.headers.{}", key_segment(name)),
                value,
                scope,
            );
        }
        self.error_rules(&format!("{key}.errors"), &op.errors);
        self.extract(&format!("{key}.records"), &op.records);
        self.hooks(key, kind, op);
        self.read_side(key, kind, op);
        let writes = kind == "create" || kind == "update";
        // Delete and actions: one record each, named by `id` (or in the body).
        let one_record = kind == "delete" || kind == "action";
        let not_here = |what: &str, on: &str| format!("`{what}` only applies to {on}");
        if kind == "list" {
            match &op.pagination {
                None => self.error(
                    key,
                    "a list needs `pagination`",
                    Some(
                        "use pagination = { style = \"none\" } when one response holds everything"
                            .to_owned(),
                    ),
                ),
                Some(p) => {
                    for param in self.pagination(&format!("{key}.pagination"), p) {
                        if op.query.contains_key(param) {
                            self.error(
                                format!("{key}.query.{}", key_segment(param)),
                                format!(
                                    "query parameter `{param}` is set by pagination and also in `query`"
                                ),
                                Some("remove it from `query`".to_owned()),
                            );
                        }
                    }
                }
            }
        } else if op.pagination.is_some() {
            self.error(
                format!("{key}.pagination"),
                not_here("pagination", "list"),
                None,
            );
        }
        if let Some(inc) = &op.incremental {
            let ikey = format!("{key}.incremental");
            if kind != "list" {
                self.error(&ikey, not_here("incremental", "list"), None);
            }
            if inc.param.is_some() && inc.header.is_some() {
                self.error(
                    &ikey,
                    "the cursor goes in exactly one of `param` or `header`",
                    None,
                );
            } else if inc.param.is_none() && inc.header.is_none() {
                // Or a template places it: a query text, a path, or a search body.
                let mut sources: Vec<String> = vec![op.path.clone()];
                sources.extend(op.query.values().cloned());
                sources.extend(op.headers.values().cloned());
                if let Some(body) = &op.read_body {
                    let mut strings = Vec::new();
                    body_strings(body, &mut String::new(), &mut strings);
                    sources.extend(strings.into_iter().map(|(_, s)| s));
                }
                let reads: Option<Vec<bool>> =
                    sources.iter().map(|s| self.reads(s, "cursor")).collect();
                if reads.is_some_and(|r| !r.contains(&true)) {
                    self.error(
                        &ikey,
                        "the cursor goes nowhere: no `param`, no `header`, and no template of the operation uses `cursor`",
                        Some("set param or header, or place `{{ cursor }}` in the query, path or read-body".to_owned()),
                    );
                }
            }
            self.dotted(&format!("{ikey}.field"), &inc.field);
            if !r.fields.is_empty() && !declares_path(&r.fields, &inc.field) {
                self.error(
                    format!("{ikey}.field"),
                    format!("`{}` is not among the record fields", inc.field),
                    Some(record_fields(r)),
                );
            }
        }
        // A batched update names its records by their primary key inside the body (Xero's
        // `POST /Invoices` upserts by `InvoiceID`); any other get or update needs `id`.
        let batched_update = kind == "update"
            && matches!(op.body, Some(WriteBody::Plural { .. }))
            && op.batch_size.unwrap_or(1) > 1;
        self.id_in_body(key, kind, op);
        if (kind == "get" || kind == "update" || one_record) && !batched_update && !op.id_in_body {
            // Templates that do not parse are reported on their own; then this is not judged.
            let reads_id: Option<Vec<bool>> = std::iter::once(&op.path)
                .chain(op.query.values())
                .map(|source| self.reads(source, "id"))
                .collect();
            if reads_id.is_some_and(|reads| !reads.contains(&true)) {
                self.error(
                    format!("{key}.path"),
                    format!(
                        "{} must say which record, but neither its path nor its query uses `id`",
                        operation_name(key, kind)
                    ),
                    Some("such as path = \"/invoices/{{ id }}\"; a batched update (plural body, batch-size above 1) names records by their primary key instead, and `id-in-body = true` says the body does".to_owned()),
                );
            }
        }
        if writes {
            match &op.body {
                None => self.error(
                    key,
                    format!("{} needs `body`", a_or_an(&format!("`{kind}`"))),
                    Some("such as body = { shape = \"plural\", key = \"Invoices\" }".to_owned()),
                ),
                Some(WriteBody::Singular { .. }) if op.batch_size.unwrap_or(1) > 1 => {
                    self.error(
                        format!("{key}.batch-size"),
                        "a singular body carries one record; batches need shape = \"plural\"",
                        None,
                    );
                }
                Some(_) => {}
            }
            if op.batch_size == Some(0) {
                self.error(
                    format!("{key}.batch-size"),
                    "a batch size of 0 writes nothing",
                    None,
                );
            }
            self.write_parts(key, kind, op);
            // A singular body with a batch is an error above; the warning would only repeat it.
            let singular = matches!(op.body, Some(WriteBody::Singular { .. }));
            if op.batch_size.unwrap_or(1) > 1 && !singular && op.item_errors.is_none() {
                self.warning(
                    key,
                    "a batch write without `item-errors` cannot tell which records failed",
                    Some("declare item-errors, or set batch-size = 1".to_owned()),
                );
            }
            if let Some(items) = &op.item_errors
                && let Some(warnings) = &items.warnings_field
            {
                if warnings.trim().is_empty() {
                    self.error(
                        format!("{key}.item-errors.warnings-field"),
                        "`warnings-field` is blank: no field of an item could hold its warnings",
                        Some("name the field of each item holding its warnings, or leave the key out".to_owned()),
                    );
                } else if *warnings == items.errors_field {
                    self.error(
                        format!("{key}.item-errors.warnings-field"),
                        format!("`warnings-field` names `{warnings}`, the errors field: an item's errors would fail it whatever its status"),
                        Some("name the field holding the provider's warnings (a list apart from the errors)".to_owned()),
                    );
                }
            }
        } else if one_record {
            self.write_parts(key, kind, op);
            for (present, what) in [
                (op.batch_size.is_some(), "batch-size"),
                (op.item_errors.is_some(), "item-errors"),
            ] {
                if present {
                    self.error(
                        format!("{key}.{what}"),
                        format!(
                            "{} writes one record: `{what}` only applies to create and update",
                            operation_name(key, kind)
                        ),
                        None,
                    );
                }
            }
            if !op.hooks.is_empty() {
                self.error(
                    format!("{key}.hooks"),
                    "plugin hooks apply to list, get, create and update",
                    None,
                );
            }
        } else {
            for (present, what, on) in [
                (
                    op.body.is_some(),
                    "body",
                    "writes (create, update, delete, actions)",
                ),
                (op.batch_size.is_some(), "batch-size", "create and update"),
                (
                    op.idempotency.is_some(),
                    "idempotency",
                    "writes (create, update, delete, actions)",
                ),
                (op.item_errors.is_some(), "item-errors", "create and update"),
                (
                    !op.merge.is_empty(),
                    "merge",
                    "writes (create, update, delete, actions)",
                ),
            ] {
                if present {
                    self.error(format!("{key}.{what}"), not_here(what, on), None);
                }
            }
        }
    }

    // ---- Write side (issue 15): delete, actions, body shaping, idempotency, item results ----

    /// A budget's operations must exist; its sizing field must be an integer form field, on a
    /// rate budget.
    fn budget_reach(&mut self, key: &str, b: &crate::model::Budget) {
        for (i, op) in b.operations.iter().enumerate() {
            let okey = format!("{key}.operations[{i}]");
            let Some((resource, name)) = op.split_once('.') else {
                self.error(
                    &okey,
                    format!("`{op}` is not `RESOURCE.OPERATION`"),
                    Some("such as \"deals.create\"".to_owned()),
                );
                continue;
            };
            match self.spec.resources.get(resource) {
                None => {
                    self.resource_ref(&okey, resource);
                }
                Some(r) if r.operation(name).is_none() => {
                    let mut has: Vec<String> = r.operations().map(|(n, _)| n.to_owned()).collect();
                    has.extend(r.actions.keys().cloned());
                    self.error(
                        &okey,
                        format!("resource `{resource}` has no operation `{name}`"),
                        Some(format!("its operations: {}", has.join(", "))),
                    );
                }
                Some(_) => {}
            }
        }
        if let Some(field) = &b.calls_field {
            let fkey = format!("{key}.calls-field");
            match self.spec.fields.iter().find(|f| &f.id == field) {
                None => self.error(
                    &fkey,
                    format!("`{field}` is not a form field"),
                    Some("declare it under [[fields]] with type = \"integer\"".to_owned()),
                ),
                Some(f) if f.ty != FieldKind::Integer => self.error(
                    &fkey,
                    format!("form field `{field}` is not an integer, so it cannot size a budget"),
                    None,
                ),
                Some(_) => {}
            }
            if b.calls.is_none() || b.window.is_none() {
                self.error(
                    &fkey,
                    "`calls-field` sizes a rate budget: it needs `calls` (used while the field is unset) and `window`",
                    None,
                );
            }
        }
    }

    /// A resource's named actions: each a one-record operation whose name is its own.
    fn actions(&mut self, key: &str, r: &Resource) {
        for (name, op) in &r.actions {
            let akey = format!("{key}.actions.{}", key_segment(name));
            if !is_identifier(name, '_') {
                self.error(
                    &akey,
                    format!("action name `{name}` must be snake_case"),
                    None,
                );
            } else if ["list", "get", "create", "update", "delete"].contains(&name.as_str()) {
                self.error(
                    &akey,
                    format!("`{name}` is an operation of its own, not an action"),
                    Some(format!(
                        "declare it as `[{key}.{name}]`, or give the action another name"
                    )),
                );
            }
            self.operation(&akey, "action", op, r);
        }
    }

    /// `id-in-body`: only where one record is named, and only with a body to carry it.
    fn id_in_body(&mut self, key: &str, kind: &str, op: &Operation) {
        if !op.id_in_body {
            return;
        }
        if kind == "list" || kind == "get" || kind == "create" {
            self.error(
                format!("{key}.id-in-body"),
                "`id-in-body` only applies to update, delete and actions",
                None,
            );
        } else if op.body.is_none() {
            self.error(
                format!("{key}.id-in-body"),
                "`id-in-body` needs a `body` to carry the record's id",
                Some("such as body = { shape = \"bare\" }".to_owned()),
            );
        }
    }

    /// The parts of a write every kind of write shares: its body shape, merged constants,
    /// idempotency key and per-item results.
    fn write_parts(&mut self, key: &str, kind: &str, op: &Operation) {
        // The request of a batch is one for many records: no template of it can read one.
        if op.batch_size.unwrap_or(1) > 1 {
            let templates = std::iter::once(("path".to_owned(), &op.path))
                .chain(
                    op.query
                        .iter()
                        .map(|(n, v)| (format!("query.{}", key_segment(n)), v)),
                )
                .chain(
                    op.headers
                        .iter()
                        .map(|(n, v)| (format!("headers.{}", key_segment(n)), v)),
                );
            for (at, source) in templates {
                if self.reads(source, "record") == Some(true) {
                    self.error(
                        format!("{key}.{at}"),
                        "`record` is only known to the request of a one-record write, and this one sends batches",
                        Some("set batch-size = 1, or read the record in an envelope's item instead".to_owned()),
                    );
                }
            }
        }
        if !op.merge.is_empty() && op.body.is_none() {
            self.error(
                format!("{key}.merge"),
                "`merge` sets fields of the record in the body, but this operation sends no body",
                Some("declare `body`, or remove `merge`".to_owned()),
            );
        }
        if let Some(WriteBody::Envelope {
            key: list_key,
            item,
        }) = &op.body
        {
            if list_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
                self.error(
                    format!("{key}.body.key"),
                    "the key of the item list is blank",
                    Some("name it, or leave `key` out to send the list itself".to_owned()),
                );
            }
            if item.is_empty() {
                self.error(
                    format!("{key}.body.item"),
                    "an empty item sends nothing of the record",
                    Some("such as item = { operation = \"{{ operation }}\", Record = \"{{ record }}\" }".to_owned()),
                );
            }
            self.item_templates(&format!("{key}.body.item"), item);
        }
        if let Some(idem) = &op.idempotency {
            if idem.max_length < 16 {
                self.error(
                    format!("{key}.idempotency.max-length"),
                    "keys shorter than 16 characters cannot be unique enough",
                    None,
                );
            }
            for (name, value) in [("header", &idem.header), ("query", &idem.query)] {
                if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
                    self.error(
                        format!("{key}.idempotency.{name}"),
                        format!("the idempotency {name} name is blank"),
                        None,
                    );
                }
            }
            if idem.header.is_none() && idem.query.is_none() && !self.reads_key(op) {
                self.error(
                    format!("{key}.idempotency"),
                    "the idempotency key goes nowhere: no `header`, no `query`, and no template of the operation reads `idempotency_key`",
                    Some("such as header = \"Idempotency-Key\" or query = \"requestid\"".to_owned()),
                );
            }
        } else if self.reads_key(op) {
            self.error(
                key,
                format!(
                    "{} reads `idempotency_key` but declares no `idempotency`",
                    operation_name(key, kind)
                ),
                Some("such as idempotency = { query = \"requestid\", max-length = 50 }".to_owned()),
            );
        }
        if let Some(items) = &op.item_errors {
            self.item_errors(&format!("{key}.item-errors"), items);
        }
    }

    /// Whether a template of `op` (path, query, headers, body items) reads `idempotency_key`.
    fn reads_key(&self, op: &Operation) -> bool {
        let mut sources: Vec<&str> = std::iter::once(op.path.as_str())
            .chain(op.query.values().map(String::as_str))
            .chain(op.headers.values().map(String::as_str))
            .collect();
        if let Some(WriteBody::Envelope { item, .. }) = &op.body {
            fn strings<'a>(v: &'a serde_json::Value, into: &mut Vec<&'a str>) {
                match v {
                    serde_json::Value::String(s) => into.push(s),
                    serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, into)),
                    serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, into)),
                    _ => {}
                }
            }
            item.values().for_each(|v| strings(v, &mut sources));
        }
        sources
            .into_iter()
            .any(|s| self.reads(s, "idempotency_key") == Some(true))
    }

    /// Every string of an envelope's item template, checked as a body-item template.
    fn item_templates(&mut self, key: &str, item: &serde_json::Map<String, serde_json::Value>) {
        for (name, value) in item {
            let vkey = format!("{key}.{}", key_segment(name));
            match value {
                serde_json::Value::String(source) => {
                    self.template(&vkey, source, Scope::BodyItem);
                }
                serde_json::Value::Object(inner) => self.item_templates(&vkey, inner),
                serde_json::Value::Array(list) => {
                    for (i, v) in list.iter().enumerate() {
                        let ikey = format!("{vkey}[{i}]");
                        match v {
                            serde_json::Value::String(source) => {
                                self.template(&ikey, source, Scope::BodyItem);
                            }
                            serde_json::Value::Object(inner) => self.item_templates(&ikey, inner),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Per-item results: something must fail an item, paths must be dotted, a match must name
    /// both sides.
    fn item_errors(&mut self, key: &str, items: &crate::model::ItemErrors) {
        match (&items.status_field, items.error_values.is_empty()) {
            (Some(_), true) => self.error(
                format!("{key}.status-field"),
                "`status-field` without `error-values` cannot fail an item",
                Some(
                    "list the statuses that mean failure, such as error-values = [\"ERROR\"]"
                        .to_owned(),
                ),
            ),
            (None, false) => self.error(
                format!("{key}.error-values"),
                "`error-values` without `status-field`: no field is compared with them",
                Some("name the field of each item holding its status".to_owned()),
            ),
            _ => {}
        }
        if items.status_field.is_none()
            && items.fault_field.is_none()
            && items.warnings_field.is_none()
            && items.separate_errors.is_none()
        {
            self.error(
                key,
                "nothing here can fail an item: no `status-field`, `fault-field`, `warnings-field` or `separate-errors`",
                Some("such as fault-field = \"Fault\", or status-field with error-values".to_owned()),
            );
        }
        for (name, path) in [
            ("status-field", items.status_field.as_deref()),
            ("fault-field", items.fault_field.as_deref()),
            ("errors-field", Some(items.errors_field.as_str())),
            ("message-field", Some(items.message_field.as_str())),
            ("id-field", items.id_field.as_deref()),
        ] {
            if let Some(path) = path {
                self.dotted(&format!("{key}.{name}"), path);
            }
        }
        if let Some(m) = &items.match_by {
            self.template(&format!("{key}.match.sent"), &m.sent, Scope::ItemKey);
            self.dotted(&format!("{key}.match.returned"), &m.returned);
        }
        if let Some(separate) = &items.separate_errors {
            self.dotted(&format!("{key}.separate-errors.path"), &separate.path);
            self.dotted(&format!("{key}.separate-errors.keys"), &separate.keys);
            if items.match_by.is_none() {
                self.error(
                    format!("{key}.separate-errors"),
                    "errors listed apart name their records by key, but no `match` says which key a record has",
                    Some("such as match = { sent = \"{{ record.properties.email }}\", returned = \"properties.email\" }".to_owned()),
                );
            }
        }
    }

    /// Fields required on update only, or refused on create.
    fn update_rules(&mut self, fkey: &str, field: &crate::model::RecordField) {
        if field.update_only && field.required {
            self.error(
                fkey,
                "a field cannot be required on create and refused on create (`update-only`)",
                Some("use required-on-update = true for a field only updates carry".to_owned()),
            );
        }
        if field.read_only && (field.update_only || field.required_on_update) {
            self.error(
                fkey,
                "a read-only field is never written, so `update-only` and `required-on-update` do not apply",
                None,
            );
        }
    }

    fn hooks(&mut self, key: &str, kind: &str, op: &Operation) {
        if let Some(plugin) = &op.hooks.extract {
            self.plugin_name(&format!("{key}.hooks.extract"), plugin);
            if kind != "list" && kind != "get" {
                self.error(
                    format!("{key}.hooks.extract"),
                    "`hooks.extract` only applies to list and get",
                    None,
                );
            } else if op.records != Extract::Root {
                self.error(
                    format!("{key}.records"),
                    format!("plugin `{plugin}` extracts the records from the whole body, so `records` cannot point inside it"),
                    Some("set records = { style = \"root\" }, or remove `hooks.extract`".to_owned()),
                );
            }
        }
        if let Some(plugin) = &op.hooks.transform {
            self.plugin_name(&format!("{key}.hooks.transform"), plugin);
        }
    }

    fn extract(&mut self, key: &str, extract: &Extract) {
        match extract {
            Extract::Root => {}
            Extract::Path { path, .. } => self.dotted(&format!("{key}.path"), path),
            Extract::Index {
                index,
                key_field,
                id_field,
                ..
            } => {
                self.dotted(&format!("{key}.index"), index);
                self.dotted(&format!("{key}.key-field"), key_field);
                self.dotted(&format!("{key}.id-field"), id_field);
            }
        }
    }

    fn dotted(&mut self, key: &str, path: &str) {
        if let Err(problem) = crate::fieldpath::segments(path) {
            self.error(
                key,
                format!("`{path}` is not a dotted path: {problem}"),
                Some("write names separated by `.`, such as `meta.page_count`; quote a name that holds a dot: `properties.\"hs.date\"`".to_owned()),
            );
        }
    }

    /// Checks `p` and returns the query parameters it sets.
    fn pagination<'p>(&mut self, key: &str, p: &'p Pagination) -> BTreeSet<&'p str> {
        let mut params: BTreeSet<&str> = BTreeSet::new();
        match p {
            Pagination::None => {}
            Pagination::Page {
                page_param,
                size_param,
                size,
                stop,
                ..
            } => {
                params.extend(page_param.as_deref());
                if let Some(s) = size_param {
                    params.insert(s);
                }
                self.page_size(key, *size);
                if let PageStop::PageCount { path } = stop {
                    self.dotted(&format!("{key}.stop.path"), path);
                }
                if size_param.is_none() && matches!(stop, PageStop::ShortPage) {
                    self.warning(format!("{key}.stop"), "a short-page stop with a size the provider fixes relies on `size` being exact", None);
                }
            }
            Pagination::Offset {
                offset_param,
                limit_param,
                size,
                stop,
            } => {
                params.extend(offset_param.as_deref());
                params.extend(limit_param.as_deref());
                self.page_size(key, *size);
                if matches!(stop, PageStop::PageCount { .. }) {
                    self.error(
                        format!("{key}.stop"),
                        "offset paging has no page count; stop on a short or empty page",
                        Some("use stop = { when = \"short-page\" }".to_owned()),
                    );
                }
            }
            Pagination::Cursor {
                cursor_param,
                next,
                size_param,
                size,
            } => {
                params.extend(cursor_param.as_deref());
                self.dotted(&format!("{key}.next"), next);
                if let Some(s) = size_param {
                    params.insert(s);
                    if size.is_none() {
                        self.error(key, "`size-param` needs `size`", None);
                    }
                }
                if let Some(size) = size {
                    self.page_size(key, *size);
                }
            }
            Pagination::NextUrl {
                next,
                size_param,
                size,
            } => {
                self.dotted(&format!("{key}.next"), next);
                if let Some(s) = size_param {
                    params.insert(s);
                    if size.is_none() {
                        self.error(key, "`size-param` needs `size`", None);
                    }
                }
                if let Some(size) = size {
                    self.page_size(key, *size);
                }
            }
        }
        params
    }

    // ---- Auth side of spec language v2 (issue 15): revocation, refresh-token lifetimes ----

    /// The revocation endpoint and the shape of its request.
    fn revocation(&mut self, o: &crate::model::OAuth2) {
        use crate::model::RevokeBody;
        if let Some(url) = &o.revoke_url {
            self.template("auth.oauth2.revoke-url", url, Scope::Revoke);
        }
        match (&o.revoke_url, &o.revoke_request) {
            (None, Some(_)) => self.error(
                "auth.oauth2.revoke-request",
                "`revoke-request` without `revoke-url` says how to call an endpoint that is not declared",
                Some("declare revoke-url, or remove revoke-request".to_owned()),
            ),
            (Some(url), Some(r))
                if r.body == RevokeBody::None && self.reads(url, "token") == Some(false) =>
            {
                self.error(
                    "auth.oauth2.revoke-request.body",
                    "with body = \"none\" the token goes nowhere: `revoke-url` does not use `token`",
                    Some("such as revoke-url = \"{{ hosts.api }}/oauth/v1/refresh-tokens/{{ token }}\", or send it in a body (form or json)".to_owned()),
                );
            }
            _ => {}
        }
        if let Some(refresh) = &o.refresh
            && let (Some(idle), Some(absolute)) = (refresh.idle_lifetime, refresh.absolute_lifetime)
            && absolute < idle
        {
            self.warning(
                "auth.oauth2.refresh.absolute-lifetime",
                format!("an absolute lifetime of {absolute} ends every grant before its {idle} idle lifetime could"),
                Some("remove idle-lifetime, or check the provider's figures".to_owned()),
            );
        }
    }

    // ---- Read side of spec language v2 (issue 15): paging values, list bodies, filters ----

    /// The read-side keys of operation `kind` at `key`: a `read-body` only on a list that
    /// sends a body; a `keep-if` only on a list, as an expression over `record`; and paging
    /// values that go somewhere when a paging parameter is left out.
    fn read_side(&mut self, key: &str, kind: &str, op: &Operation) {
        if let Some(body) = &op.read_body {
            let bkey = format!("{key}.read-body");
            if kind != "list" {
                self.error(
                    &bkey,
                    "`read-body` only applies to list",
                    Some("a write's body is the record itself (`body`)".to_owned()),
                );
            } else if op.method.unwrap_or_default() == crate::model::Method::Get {
                self.error(
                    &bkey,
                    "a GET request carries no body",
                    Some(
                        "set method = \"POST\" (a list stays a read whatever its method)"
                            .to_owned(),
                    ),
                );
            }
            if !body.is_object() {
                self.error(&bkey, "`read-body` must be a table", Some("such as read-body = { limit = 100, after = \"{{ page.cursor | default('') }}\" }".to_owned()));
            }
            let mut strings = Vec::new();
            body_strings(body, &mut String::new(), &mut strings);
            for (path, source) in strings {
                self.template(&format!("{bkey}{path}"), &source, Scope::of_operation(kind));
            }
        }
        if let Some(expr) = &op.keep_if {
            let kkey = format!("{key}.keep-if");
            if kind != "list" {
                self.error(&kkey, "`keep-if` only applies to list", None);
            }
            self.expression(&kkey, expr, Scope::Keep);
        }
        let Some(p) = op.pagination.as_ref().filter(|_| kind == "list") else {
            return;
        };
        let omitted: Option<(&str, &str)> = match p {
            Pagination::Page {
                page_param: None, ..
            } => Some(("page-param", "page.number")),
            Pagination::Offset {
                offset_param: None, ..
            } => Some(("offset-param", "page.offset")),
            Pagination::Offset {
                limit_param: None, ..
            } => Some(("limit-param", "page.size")),
            Pagination::Cursor {
                cursor_param: None, ..
            } => Some(("cursor-param", "page.cursor")),
            _ => None,
        };
        let Some((param, value)) = omitted else {
            return;
        };
        let mut sources: Vec<String> = vec![op.path.clone()];
        sources.extend(op.query.values().cloned());
        sources.extend(op.headers.values().cloned());
        if let Some(body) = &op.read_body {
            let mut strings = Vec::new();
            body_strings(body, &mut String::new(), &mut strings);
            sources.extend(strings.into_iter().map(|(_, s)| s));
        }
        let reads: Option<Vec<bool>> = sources.iter().map(|s| self.reads(s, "page")).collect();
        if reads.is_some_and(|r| !r.contains(&true)) {
            self.error(
                format!("{key}.pagination"),
                format!("without `{param}` the page asked for goes nowhere: no template of the operation uses `page`"),
                Some(format!("set `{param}`, or place `{{{{ {value} }}}}` in the path, query or read-body")),
            );
        }
    }

    /// Checks an expression (`keep-if`): it parses, and reads only what `scope` allows.
    fn expression(&mut self, key: &str, expr: &str, scope: Scope) {
        if expr.trim().is_empty() {
            self.error(
                key,
                "the expression is empty",
                Some("such as \"not record.archived\"".to_owned()),
            );
            return;
        }
        if let Err(e) = self.env.compile_expression(expr) {
            self.error(
                key,
                format!(
                    "the expression does not parse: {}",
                    e.detail().unwrap_or("syntax error")
                ),
                Some(
                    "expressions are MiniJinja: `not record.archived`, `record.type == 'ACCREC'`"
                        .to_owned(),
                ),
            );
            return;
        }
        self.template(key, &format!("{{{{ {expr} }}}}"), scope);
    }

    // ---- end of the read-side block ----

    fn page_size(&mut self, key: &str, size: u32) {
        if size == 0 || size > 10_000 {
            self.error(
                format!("{key}.size"),
                format!("page size {size} is outside 1..10000"),
                None,
            );
        }
    }

    fn tenants(&mut self) {
        let spec = self.spec;
        let Some(t) = &spec.tenants else { return };
        let from_callback = matches!(t.select, TenantSelect::CallbackParam { .. });
        match (&t.resource, from_callback) {
            (None, false) => self.error(
                "tenants",
                "the tenants of a grant must be listed to be selected: `resource` is missing",
                Some("name the resource whose list gives the tenants, with id-field and name-field; or select = { by = \"callback-param\", param = \"…\" } when the provider names the tenant in the callback".to_owned()),
            ),
            (None, true) => {}
            (Some(resource), _) => match spec.resources.get(resource) {
                None => {
                    self.resource_ref("tenants.resource", resource);
                }
                Some(r) => {
                    if r.list.is_none() {
                        self.error(
                            "tenants.resource",
                            format!("resource `{resource}` has no list operation"),
                            None,
                        );
                    }
                    if r.tenanted != Some(false) {
                        self.error(
                            "tenants.resource",
                            format!("resource `{resource}` needs a tenant, but it is what lists them"),
                            Some(format!("set tenanted = false on resources.{resource}")),
                        );
                    }
                }
            },
        }
        if t.resource.is_some() {
            for (what, value) in [("id-field", &t.id_field), ("name-field", &t.name_field)] {
                match value {
                    None => self.error(
                        "tenants",
                        format!("a tenant list needs `{what}`: the field of a tenant record"),
                        None,
                    ),
                    Some(path) => self.dotted(&format!("tenants.{what}"), path),
                }
            }
        }
        match &t.header {
            Some(header) => {
                self.template("tenants.header.value", &header.value, Scope::TenantHeader);
                if self.reads(&header.value, "tenant.id") == Some(false) {
                    self.error(
                        "tenants.header.value",
                        "the tenant header does not use `tenant.id`",
                        Some("such as value = \"{{ tenant.id }}\"".to_owned()),
                    );
                }
            }
            None => self.tenant_in_templates(),
        }
        match &t.select {
            TenantSelect::TokenClaim { claim, field } if claim.is_empty() || field.is_empty() => {
                self.error(
                    "tenants.select",
                    "`claim` and `field` must both be named",
                    None,
                );
            }
            TenantSelect::CallbackParam { param } if param.trim().is_empty() => {
                self.error(
                    "tenants.select.param",
                    "`param` names no callback parameter",
                    Some("such as param = \"realmId\"".to_owned()),
                );
            }
            TenantSelect::CallbackParam { param } if param == "code" || param == "state" => {
                self.error(
                    "tenants.select.param",
                    format!("`{param}` is OAuth's own callback parameter, not a tenant"),
                    None,
                );
            }
            _ => {}
        }
    }

    /// Without a tenant header, every operation of a tenanted resource must place
    /// `tenant.id` itself (path, query or headers), or its requests would reach no tenant.
    fn tenant_in_templates(&mut self) {
        let spec = self.spec;
        for (name, r) in &spec.resources {
            if !spec.is_tenanted(r) {
                continue;
            }
            for (op_name, op) in r.operations() {
                let reads: Option<Vec<bool>> = std::iter::once(&op.path)
                    .chain(op.query.values())
                    .chain(op.headers.values())
                    .chain(spec.requests.query.values())
                    .chain(spec.requests.headers.values())
                    .map(|source| self.reads(source, "tenant.id"))
                    .collect();
                if reads.is_some_and(|r| !r.contains(&true)) {
                    self.error(
                        format!("resources.{}.{op_name}.path", key_segment(name)),
                        "without a tenant header this request reaches no tenant: neither its path, query nor headers use `tenant.id`",
                        Some("such as path = \"/v3/company/{{ tenant.id }}/query\", or declare tenants.header, or set tenanted = false on the resource".to_owned()),
                    );
                }
            }
        }
    }

    fn connection_test(&mut self) {
        let spec = self.spec;
        let test = &spec.test;
        if let Some(describe) = &test.describe {
            self.template("test.describe", describe, Scope::Describe);
        }
        let Some(resource) = spec.resources.get(&test.resource) else {
            self.resource_ref("test.resource", &test.resource);
            return;
        };
        let op = match test.operation.as_str() {
            "list" => resource.list.as_ref(),
            "get" => {
                self.error(
                    "test.operation",
                    "the connection test cannot know a record id; use a `list` operation",
                    None,
                );
                return;
            }
            other => {
                self.error(
                    "test.operation",
                    format!("`{other}` cannot be a connection test"),
                    Some("use \"list\"".to_owned()),
                );
                return;
            }
        };
        if op.is_none() && resource.plugin.is_none() {
            self.error(
                "test.operation",
                format!(
                    "resource `{}` has no `{}` operation",
                    test.resource, test.operation
                ),
                None,
            );
        }
        if test.success_status.is_empty()
            || test.success_status.iter().any(|s| !(200..=299).contains(s))
        {
            self.error("test.success-status", "success statuses must be 2xx", None);
        }
    }
}

/// Whether `fields` declare the value at `path`: a top-level field, or one nested in object
/// fields (`MetaData.LastUpdatedTime`, `properties.hs_lastmodifieddate`). An object field
/// declared without nested fields accepts any path under it. A path that does not parse
/// declares nothing (reported on its own).
fn declares_path(
    fields: &indexmap::IndexMap<String, crate::model::RecordField>,
    path: &str,
) -> bool {
    let Ok(names) = crate::fieldpath::segments(path) else {
        return true;
    };
    let mut level = fields;
    for (i, name) in names.iter().enumerate() {
        let Some(field) = level.get(name) else {
            return false;
        };
        if i + 1 == names.len() {
            return true;
        }
        if field.ty != FieldType::Object {
            return false;
        }
        if field.fields.is_empty() {
            return true;
        }
        level = &field.fields;
    }
    false
}

/// The strings of a `read-body`, each with its key path below the body (`.filterGroups[0].value`).
fn body_strings(value: &serde_json::Value, path: &mut String, out: &mut Vec<(String, String)>) {
    match value {
        serde_json::Value::String(s) => out.push((path.clone(), s.clone())),
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                body_strings(item, path, out);
                path.truncate(len);
            }
        }
        serde_json::Value::Object(map) => {
            for (name, item) in map {
                let len = path.len();
                path.push('.');
                path.push_str(&key_segment(name));
                body_strings(item, path, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// A hint naming the record fields of `r`.
fn record_fields(r: &Resource) -> String {
    let declared: Vec<_> = r.fields.keys().map(String::as_str).collect();
    format!("declared record fields: {}", declared.join(", "))
}

/// `word` with its indefinite article: "an `update`", "a `get`", "a `url`".
/// How a message names the operation at `key`: "a `get`", or "the action `void`".
fn operation_name(key: &str, kind: &str) -> String {
    match (kind, key.rsplit_once(".actions.")) {
        ("action", Some((_, name))) => format!("the action `{name}`"),
        _ => a_or_an(&format!("`{kind}`")),
    }
}

fn a_or_an(word: &str) -> String {
    let bare = word.trim_start_matches('`').to_ascii_lowercase();
    // Said "you-": a url, a uuid.
    let you = ["url", "uuid", "uni", "use"]
        .iter()
        .any(|p| bare.starts_with(p));
    let vowel = bare.starts_with(['a', 'e', 'i', 'o', 'u']);
    let article = if vowel && !you { "an" } else { "a" };
    format!("{article} {word}")
}

fn kind_name(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Text => "text",
        FieldKind::Integer => "integer",
        FieldKind::Boolean => "boolean",
        FieldKind::Enum => "enum",
        FieldKind::Url => "url",
    }
}

#[cfg(test)]
mod tests {
    use super::a_or_an;

    #[test]
    fn articles_follow_the_sound() {
        assert_eq!(a_or_an("`update`"), "an `update`");
        assert_eq!(a_or_an("`integer`"), "an `integer`");
        assert_eq!(a_or_an("`get`"), "a `get`");
        assert_eq!(a_or_an("`url`"), "a `url`");
    }
}
