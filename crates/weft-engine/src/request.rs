//! Rendering a spec operation into a concrete HTTP request: the host (with run-time overrides),
//! the prefixed path, the query and headers, each template rendered with the spec's one
//! template environment. Sending it is the HTTP client's job; this module only decides what to send.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use minijinja::Environment;
use serde::Serialize;
use url::Url;
use weft_core::model::{Method, Operation, SpecFile};

use crate::EngineError;

/// The operations of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OpKind {
    /// List records.
    List,
    /// Get one record by id.
    Get,
    /// Create records.
    Create,
    /// Update records.
    Update,
    /// Delete one record.
    Delete,
}

impl OpKind {
    /// The operation's name in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Get => "get",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }
}

/// The method of operation `name` when the spec names none: GET for `list` and `get`, PUT for
/// `update`, DELETE for `delete`, POST for `create` and actions.
pub fn default_method(name: &str) -> Method {
    match name {
        "list" | "get" => Method::Get,
        "update" => Method::Put,
        "delete" => Method::Delete,
        _ => Method::Post,
    }
}

/// A tenant a request is made for.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Tenant {
    /// The provider's tenant id.
    pub id: String,
    /// Its display name.
    pub name: String,
}

/// What the templates of one request may use. Secrets never go in here: credentials are applied
/// by the auth layer, after rendering.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestContext {
    /// Non-secret form field values, by field id.
    pub fields: BTreeMap<String, serde_json::Value>,
    /// Record id, for `get` and `update`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The record, for single-record writes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
    /// The incremental cursor, already formatted as the spec says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Caller-supplied parameters (filters of a flow).
    pub params: BTreeMap<String, String>,
    /// The tenant.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Tenant>,
    /// The idempotency key of a write, for templates (`{{ idempotency_key }}`) and for the
    /// header or query parameter the operation's `idempotency` names.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The paging values of the page asked for (a list's `page` in templates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<crate::paginate::PageVars>,
    /// The full URL the provider gave for the page asked for (`next-url` paging); the request
    /// goes there instead of the operation's path and query, on the operation's host only.
    #[serde(skip)]
    pub next_url: Option<String>,
}

impl RequestContext {
    /// A context holding the defaults of the spec's non-secret form fields, so templates that
    /// read an optional field see its default rather than an undefined value.
    pub fn with_field_defaults(spec: &SpecFile) -> Self {
        let fields = spec
            .fields
            .iter()
            .filter(|f| !f.secret)
            .filter_map(|f| match weft_core::form::check(f, None) {
                Ok(Some(value)) => Some((f.id.clone(), value.to_json())),
                _ => None,
            })
            .collect();
        Self {
            fields,
            ..Self::default()
        }
    }

    /// A context holding a connection's field values (`values`, by field id, as `weft.toml`
    /// keeps them) over the spec's defaults; a value its field refuses, or one for a field that
    /// is not a connection field, is an error naming it.
    pub fn with_connection_fields(
        spec: &SpecFile,
        values: &BTreeMap<String, String>,
    ) -> Result<Self, EngineError> {
        let mut ctx = Self::with_field_defaults(spec);
        let known = spec.connection_fields();
        for (id, value) in values {
            let bad = |reason: String| EngineError::BadField {
                field: id.clone(),
                value: value.clone(),
                reason,
            };
            let Some(field) = known.iter().find(|f| &f.id == id) else {
                return Err(bad(format!(
                    "connector `{}` has no connection field `{id}`",
                    spec.id
                )));
            };
            match weft_core::form::check(field, Some(value)) {
                Ok(Some(checked)) => {
                    ctx.fields.insert(id.clone(), checked.to_json());
                }
                Ok(None) => {}
                Err(e) => return Err(bad(e.reason)),
            }
        }
        Ok(ctx)
    }
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// Full URL, query included.
    pub url: Url,
    /// Headers in the order the spec gives them (defaults first).
    pub headers: Vec<(String, String)>,
    /// Whether sending it twice does no harm: reads, and writes the spec gives an idempotency
    /// key. Other writes are never sent again after a failure that may have reached the
    /// provider (a reset, a cut answer, a 500), since that could write twice.
    pub replay_safe: bool,
}

impl Request {
    /// Adds the access token the way the spec's `auth.apply` says (by default
    /// `Authorization: Bearer <token>`).
    pub fn with_token(mut self, spec: &SpecFile, token: &str) -> Result<Self, EngineError> {
        let apply = &spec.auth.apply;
        let value = weft_core::template::environment()
            .render_str(&apply.value, minijinja::context! { token => token })
            .map_err(|source| EngineError::Template {
                place: format!("{}.auth.apply.value", spec.id),
                reason: source.to_string(),
            })?;
        self.headers.push((apply.header.clone(), value));
        Ok(self)
    }
}

/// Base URLs by host name: the spec's, with run-time overrides applied (simulators, proxies).
#[derive(Debug, Clone)]
pub struct Hosts(IndexMap<String, String>);

impl Hosts {
    /// The spec's hosts with `overrides` replacing some of them; an override of an undeclared
    /// host is an error, so a typo cannot silently send traffic to the real service.
    pub fn new(spec: &SpecFile, overrides: &BTreeMap<String, String>) -> Result<Self, EngineError> {
        Self::for_connection(spec, &BTreeMap::new(), overrides)
    }

    /// The spec's hosts for a connection: a host chosen by a form field takes the URL of the
    /// connection's value of that field (`fields`, by field id; the field's default when
    /// absent), then `overrides` replace any host, so `--host` always wins.
    pub fn for_connection(
        spec: &SpecFile,
        fields: &BTreeMap<String, String>,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Self, EngineError> {
        for host in spec.hosts.values() {
            if let weft_core::model::Host::ByField(by) = host
                && let Some(value) = fields.get(&by.field)
                && !by.choices.contains_key(value)
            {
                return Err(EngineError::BadHostChoice {
                    field: by.field.clone(),
                    value: value.clone(),
                    choices: by.choices.keys().cloned().collect::<Vec<_>>().join(", "),
                });
            }
        }
        let mut hosts = spec.host_urls(fields);
        for (name, url) in overrides {
            match hosts.get_mut(name) {
                Some(slot) => {
                    Url::parse(url).map_err(|source| EngineError::BadHostOverride {
                        host: name.clone(),
                        url: url.clone(),
                        reason: source.to_string(),
                    })?;
                    *slot = url.trim_end_matches('/').to_owned();
                }
                None => {
                    return Err(EngineError::UnknownHost {
                        host: name.clone(),
                        connector: spec.id.clone(),
                        declared: spec.hosts.keys().cloned().collect::<Vec<_>>().join(", "),
                    });
                }
            }
        }
        Ok(Self(hosts))
    }

    /// The base URL of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// All hosts, for template contexts.
    pub fn as_map(&self) -> &IndexMap<String, String> {
        &self.0
    }
}

/// Renders operation `kind` of `resource` into a request. Query parameters that render empty are
/// left out; `extra_query` (pagination) is appended after the spec's own.
pub fn build(
    env: &Environment<'_>,
    spec: &SpecFile,
    hosts: &Hosts,
    resource: &str,
    kind: OpKind,
    ctx: &RequestContext,
    extra_query: &[(String, String)],
) -> Result<Request, EngineError> {
    build_named(env, spec, hosts, resource, kind.as_str(), ctx, extra_query)
}

/// The operation `name` of `resource` (`list`, `get`, `create`, `update`, `delete`, or one of
/// its actions).
pub fn operation<'s>(
    spec: &'s SpecFile,
    resource: &str,
    name: &str,
) -> Result<&'s Operation, EngineError> {
    spec.resources
        .get(resource)
        .ok_or_else(|| EngineError::UnknownResource {
            connector: spec.id.clone(),
            resource: resource.to_owned(),
        })?
        .operation(name)
        .ok_or_else(|| EngineError::NoOperation {
            connector: spec.id.clone(),
            resource: resource.to_owned(),
            operation: name.to_owned(),
        })
}

/// Renders operation `name` of `resource` (any operation, an action included) into a request,
/// as [`build`] does. A write's idempotency key (`ctx.idempotency_key`) goes in the header or
/// query parameter the operation's `idempotency` names.
pub fn build_named(
    env: &Environment<'_>,
    spec: &SpecFile,
    hosts: &Hosts,
    resource: &str,
    name: &str,
    ctx: &RequestContext,
    extra_query: &[(String, String)],
) -> Result<Request, EngineError> {
    let op = operation(spec, resource, name)?;
    let res = &spec.resources[resource];
    let is_list = name == OpKind::List.as_str();
    let first;
    let ctx = match first_page(is_list, op, ctx) {
        Some(with_page) => {
            first = with_page;
            &first
        }
        None => ctx,
    };
    let host_name = op
        .host
        .as_deref()
        .or(spec.requests.host.as_deref())
        .unwrap_or_default();
    let base = hosts
        .get(host_name)
        .ok_or_else(|| EngineError::UnknownHost {
            host: host_name.to_owned(),
            connector: spec.id.clone(),
            declared: hosts
                .as_map()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    // Absent values stay undefined (not `none`), so the strict environment refuses a template
    // that needs one, instead of sending "None" to the provider.
    #[derive(Serialize)]
    struct Scope<'a> {
        hosts: &'a IndexMap<String, String>,
        #[serde(flatten)]
        ctx: &'a RequestContext,
    }
    let value = minijinja::Value::from_serialize(Scope {
        hosts: hosts.as_map(),
        ctx,
    });
    let render = |what: String, template: &str| -> Result<String, EngineError> {
        env.render_str(template, &value)
            .map_err(|source| EngineError::Template {
                place: format!("{}.resources.{resource}.{name}.{what}", spec.id),
                reason: source.to_string(),
            })
    };
    // A tenanted request without a tenant is refused before anything renders, so the message
    // says what is missing even when a path needs `tenant.id`.
    let tenant_header = if spec.is_tenanted(res) {
        match (spec.tenants.as_ref(), &ctx.tenant) {
            (Some(t), Some(_)) => t.header.as_ref(),
            _ => {
                return Err(EngineError::NoTenant {
                    connector: spec.id.clone(),
                    resource: resource.to_owned(),
                });
            }
        }
    } else {
        None
    };
    let prefix = if op.prefixed {
        spec.requests.path_prefix.as_str()
    } else {
        ""
    };
    let mut url;
    if let Some(next) = &ctx.next_url {
        url = next_page_url(next, base)?;
    } else {
        let path = render("path".to_owned(), &op.path)?;
        url =
            Url::parse(&format!("{base}{prefix}{path}")).map_err(|source| EngineError::BadUrl {
                url: format!("{base}{prefix}{path}"),
                reason: source.to_string(),
            })?;
    }
    if ctx.next_url.is_none() {
        let mut pairs = Vec::new();
        let defaults = spec
            .requests
            .query
            .iter()
            .filter(|(name, _)| !op.query.contains_key(*name));
        for (name, template) in defaults.chain(&op.query) {
            let rendered = render(format!("query.{name}"), template)?;
            if !rendered.is_empty() {
                pairs.push((name.clone(), rendered));
            }
        }
        // The incremental cursor goes where the spec says, unless the spec's own query already
        // places it through `{{ cursor }}`.
        if let (Some(cursor), Some(inc)) = (&ctx.cursor, &op.incremental)
            && let Some(param) = &inc.param
            && !op.query.contains_key(param)
        {
            pairs.push((param.clone(), cursor.clone()));
        }
        if let (Some(key), Some(param)) = (
            &ctx.idempotency_key,
            op.idempotency.as_ref().and_then(|i| i.query.as_ref()),
        ) {
            pairs.retain(|(n, _)| n != param);
            pairs.push((param.clone(), key.clone()));
        }
        pairs.extend(extra_query.iter().cloned());
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
    }
    let mut headers = Vec::new();
    for (name, template) in spec.requests.headers.iter().chain(&op.headers) {
        let rendered = render(format!("headers.{name}"), template)?;
        headers.retain(|(n, _): &(String, String)| !n.eq_ignore_ascii_case(name));
        headers.push((name.clone(), rendered));
    }
    if let (Some(cursor), Some(header)) = (
        &ctx.cursor,
        op.incremental.as_ref().and_then(|i| i.header.as_ref()),
    ) {
        headers.retain(|(n, _): &(String, String)| !n.eq_ignore_ascii_case(header));
        headers.push((header.clone(), cursor.clone()));
    }
    if let (Some(key), Some(header)) = (
        &ctx.idempotency_key,
        op.idempotency.as_ref().and_then(|i| i.header.as_ref()),
    ) {
        headers.retain(|(n, _): &(String, String)| !n.eq_ignore_ascii_case(header));
        headers.push((header.clone(), key.clone()));
    }
    if let Some(header) = tenant_header {
        // Without a header the operation's own templates place `tenant.id`.
        let rendered = render("tenant header".to_owned(), &header.value)?;
        headers.push((header.name.clone(), rendered));
    }
    let method = op.method.unwrap_or(default_method(name));
    Ok(Request {
        method,
        url,
        headers,
        // A list is a read whatever its method (a search sent as POST).
        replay_safe: matches!(method, Method::Get) || is_list || op.idempotency.is_some(),
    })
}

/// `ctx` with the paging values of a list's first page, when the caller gave none (a single
/// call, such as the connection test's); `None` when `ctx` needs nothing added.
fn first_page(is_list: bool, op: &Operation, ctx: &RequestContext) -> Option<RequestContext> {
    if !is_list || ctx.page.is_some() {
        return None;
    }
    let pagination = op.pagination.as_ref()?;
    let ask = crate::paginate::Pager::new(pagination).next()?;
    let mut with_page = ctx.clone();
    with_page.page = Some(ask.vars);
    Some(with_page)
}

/// `next` (a page URL the provider gave) when it is on the operation's host: same scheme, host
/// and port as `base`. Anything else is refused, so a response cannot send the credentials
/// elsewhere; a relative link is taken relative to `base`.
fn next_page_url(next: &str, base: &str) -> Result<Url, EngineError> {
    let base_url = Url::parse(base).map_err(|source| EngineError::BadUrl {
        url: base.to_owned(),
        reason: source.to_string(),
    })?;
    let url = base_url.join(next).map_err(|source| EngineError::BadUrl {
        url: next.to_owned(),
        reason: source.to_string(),
    })?;
    let origin = |u: &Url| {
        (
            u.scheme().to_owned(),
            u.host_str().map(str::to_owned),
            u.port_or_known_default(),
        )
    };
    if origin(&url) != origin(&base_url) {
        return Err(EngineError::ForeignNextUrl {
            url: url.to_string(),
            host: base.to_owned(),
        });
    }
    Ok(url)
}

/// The JSON body of a read (`read-body` of the list of `resource`), rendered: each string a
/// template over the list's variables, a string that renders empty left out of its table.
/// `None` when the list declares no body.
pub fn read_body(
    env: &Environment<'_>,
    spec: &SpecFile,
    hosts: &Hosts,
    resource: &str,
    ctx: &RequestContext,
) -> Result<Option<serde_json::Value>, EngineError> {
    let Some((op, template)) = spec
        .resources
        .get(resource)
        .and_then(|r| r.list.as_ref())
        .and_then(|op| op.read_body.as_ref().map(|body| (op, body)))
    else {
        return Ok(None);
    };
    let first;
    let ctx = match first_page(true, op, ctx) {
        Some(with_page) => {
            first = with_page;
            &first
        }
        None => ctx,
    };
    #[derive(Serialize)]
    struct Scope<'a> {
        hosts: &'a IndexMap<String, String>,
        #[serde(flatten)]
        ctx: &'a RequestContext,
    }
    let value = minijinja::Value::from_serialize(Scope {
        hosts: hosts.as_map(),
        ctx,
    });
    fn walk(
        env: &Environment<'_>,
        value: &minijinja::Value,
        place: &str,
        node: &serde_json::Value,
    ) -> Result<Option<serde_json::Value>, EngineError> {
        use serde_json::Value as J;
        Ok(match node {
            J::String(source) => {
                let text =
                    env.render_str(source, value)
                        .map_err(|source| EngineError::Template {
                            place: place.to_owned(),
                            reason: source.to_string(),
                        })?;
                (!text.is_empty()).then_some(J::String(text))
            }
            J::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let rendered = walk(env, value, &format!("{place}[{i}]"), item)?;
                    out.push(rendered.unwrap_or_else(|| J::String(String::new())));
                }
                Some(J::Array(out))
            }
            J::Object(map) => {
                let mut out = serde_json::Map::new();
                for (name, item) in map {
                    if let Some(rendered) = walk(env, value, &format!("{place}.{name}"), item)? {
                        out.insert(name.clone(), rendered);
                    }
                }
                Some(J::Object(out))
            }
            other => Some(other.clone()),
        })
    }
    walk(
        env,
        &value,
        &format!("{}.resources.{resource}.list.read-body", spec.id),
        template,
    )
}
