//! Rendering spec operations into requests.

use std::collections::BTreeMap;

use weft_core::load_str;
use weft_engine::EngineError;
use weft_engine::request::{Hosts, OpKind, RequestContext, Tenant, build};

const SPEC: &str = r#"
id = "acme"
name = "Acme"
version = "1.0.0"
[hosts]
api = "https://api.acme.example"
login = "https://login.acme.example"
[requests]
host = "api"
path-prefix = "/v2"
headers = { Accept = "application/json" }
[auth.token]
value = "{{ fields.token }}"
[[fields]]
id = "token"
label = "Token"
secret = true
[tenants]
resource = "orgs"
id-field = "id"
name-field = "name"
select = { by = "choose" }
header = { name = "acme-org", value = "{{ tenant.id }}" }
[test]
resource = "orgs"
[resources.orgs]
primary-key = "id"
tenanted = false
[resources.orgs.list]
path = "/orgs"
prefixed = false
records = { style = "root" }
pagination = { style = "none" }
[resources.invoices]
primary-key = "id"
[resources.invoices.list]
path = "/invoices"
query = { order = "updated:asc", since = "{{ cursor | default('') }}", project = "{{ params.project | default('') }}" }
records = { style = "path", path = "items" }
pagination = { style = "page", page-param = "page", size = 100, size-param = "size", stop = { when = "short-page" } }
[resources.invoices.get]
path = "/invoices/{{ id }}"
records = { style = "path", path = "items" }
"#;

fn spec() -> weft_core::Spec {
    let report = load_str("acme.toml", SPEC);
    assert!(report.diagnostics.is_empty(), "{}", report.render());
    report.spec.unwrap()
}

/// The request for `kind` of `invoices` in `spec`, with its declared hosts.
fn invoices(
    spec: &weft_core::Spec,
    kind: OpKind,
    ctx: &RequestContext,
) -> Result<weft_engine::request::Request, EngineError> {
    let hosts = Hosts::new(spec.file(), &BTreeMap::new()).unwrap();
    let env = weft_core::template::environment();
    build(&env, spec.file(), &hosts, "invoices", kind, ctx, &[])
}

fn tenant() -> Option<Tenant> {
    Some(Tenant {
        id: "org-1".into(),
        name: "Org One".into(),
    })
}

#[test]
fn list_with_prefix_query_pagination_and_tenant() {
    let spec = spec();
    let hosts = Hosts::new(spec.file(), &BTreeMap::new()).unwrap();
    let env = weft_core::template::environment();
    let ctx = RequestContext {
        cursor: Some("2024-01-01T00:00:00Z".into()),
        tenant: tenant(),
        ..Default::default()
    };
    let page = [
        ("page".to_owned(), "2".to_owned()),
        ("size".to_owned(), "100".to_owned()),
    ];
    let req = build(
        &env,
        spec.file(),
        &hosts,
        "invoices",
        OpKind::List,
        &ctx,
        &page,
    )
    .unwrap();
    assert_eq!(req.method.as_str(), "GET");
    assert_eq!(
        req.url.as_str(),
        "https://api.acme.example/v2/invoices?order=updated%3Aasc&since=2024-01-01T00%3A00%3A00Z&page=2&size=100"
    );
    assert_eq!(
        req.headers,
        vec![
            ("Accept".into(), "application/json".into()),
            ("acme-org".into(), "org-1".into())
        ]
    );
}

#[test]
fn overrides_replace_hosts_and_unprefixed_paths_stay_bare() {
    let spec = spec();
    let overrides = BTreeMap::from([("api".to_owned(), "http://127.0.0.1:4000/".to_owned())]);
    let hosts = Hosts::new(spec.file(), &overrides).unwrap();
    let env = weft_core::template::environment();
    let req = build(
        &env,
        spec.file(),
        &hosts,
        "orgs",
        OpKind::List,
        &RequestContext::default(),
        &[],
    )
    .unwrap();
    assert_eq!(req.url.as_str(), "http://127.0.0.1:4000/orgs");
}

#[test]
fn mistakes_are_typed_errors() {
    let spec = spec();
    let env = weft_core::template::environment();
    let typo = BTreeMap::from([("apii".to_owned(), "http://127.0.0.1:1".to_owned())]);
    assert!(matches!(
        Hosts::new(spec.file(), &typo),
        Err(EngineError::UnknownHost { .. })
    ));
    let hosts = Hosts::new(spec.file(), &BTreeMap::new()).unwrap();
    let no_tenant = build(
        &env,
        spec.file(),
        &hosts,
        "invoices",
        OpKind::List,
        &RequestContext::default(),
        &[],
    );
    assert!(matches!(no_tenant, Err(EngineError::NoTenant { .. })));
    let ctx = RequestContext {
        tenant: tenant(),
        ..Default::default()
    };
    let no_id = invoices(&spec, OpKind::Get, &ctx).unwrap_err();
    assert!(no_id.to_string().contains("invoices.get.path"), "{no_id}");
    let no_op = build(
        &env,
        spec.file(),
        &hosts,
        "invoices",
        OpKind::Create,
        &ctx,
        &[],
    );
    assert!(matches!(no_op, Err(EngineError::NoOperation { .. })));
}

/// A cursor kept in epoch seconds or milliseconds (as Stripe and HubSpot keep theirs): the
/// spec declares it, the engine reads records' change times in it and sends the cursor in it.
#[test]
fn epoch_cursors_are_read_from_records_and_sent_as_digits() {
    let text = SPEC.replace(
        "[resources.invoices.get]",
        "[resources.invoices.list.incremental]\nfield = \"updated\"\nfield-format = \"epoch-millis\"\nparam = \"since\"\nformat = \"epoch-seconds\"\nprecision = \"second\"\noverlap = \"1m\"\n\n[resources.invoices.get]",
    );
    let report = load_str("acme.toml", &text);
    assert!(report.diagnostics.is_empty(), "{}", report.render());
    let spec = report.spec.unwrap();
    let inc = spec.file().resources["invoices"]
        .list
        .as_ref()
        .and_then(|l| l.incremental.clone())
        .unwrap();
    let record = serde_json::json!({ "id": 7, "updated": 1_717_156_830_750_i64 });
    let changed = weft_engine::cursor::parse_field(&record["updated"], inc.field_format).unwrap();
    let ctx = RequestContext {
        cursor: Some(weft_engine::cursor::format(changed, &inc)),
        tenant: tenant(),
        ..Default::default()
    };
    let req = invoices(&spec, OpKind::List, &ctx).unwrap();
    // One minute of overlap, in whole seconds.
    assert!(
        req.url.as_str().ends_with("&since=1717156770"),
        "{}",
        req.url
    );
    let typo = text.replace("\"epoch-seconds\"", "\"epoch-second\"");
    let report = load_str("acme.toml", &typo);
    let rendered = report.render();
    assert!(report.spec.is_none(), "{rendered}");
    assert!(rendered.contains("epoch-seconds"), "{rendered}");
}

/// Query parameters declared for every request (QuickBooks' `minorversion`) go on every
/// request, before the operation's own; an operation's parameter of the same name replaces
/// one.
#[test]
fn request_wide_query_parameters_go_on_every_request() {
    let text = SPEC.replace(
        "headers = { Accept = \"application/json\" }",
        "headers = { Accept = \"application/json\" }\nquery = { minorversion = \"75\", order = \"id\" }",
    );
    let report = load_str("acme.toml", &text);
    assert!(report.diagnostics.is_empty(), "{}", report.render());
    let spec = report.spec.unwrap();
    let ctx = RequestContext {
        tenant: tenant(),
        id: Some("7".into()),
        ..Default::default()
    };
    let get = invoices(&spec, OpKind::Get, &ctx).unwrap();
    assert_eq!(
        get.url.as_str(),
        "https://api.acme.example/v2/invoices/7?minorversion=75&order=id"
    );
    // The list's own `order` replaces the default one.
    let list = invoices(&spec, OpKind::List, &ctx).unwrap();
    assert_eq!(
        list.url.as_str(),
        "https://api.acme.example/v2/invoices?minorversion=75&order=updated%3Aasc"
    );
    // A template that cannot be rendered in every request is refused where it stands.
    let bad = text.replace("minorversion = \"75\"", "minorversion = \"{{ id }}\"");
    let rendered = load_str("acme.toml", &bad).render();
    assert!(
        rendered.contains("requests.query.minorversion"),
        "{rendered}"
    );
}

/// Issue 15 item 4: a spec whose tenant rides in the path has no tenant header; a tenanted
/// request without a tenant is still refused.
#[test]
fn a_tenant_in_the_path_needs_no_header() {
    let text = SPEC
        .replace(
            "header = { name = \"acme-org\", value = \"{{ tenant.id }}\" }\n",
            "",
        )
        .replace(
            "select = { by = \"choose\" }",
            "select = { by = \"callback-param\", param = \"realmId\" }",
        )
        .replace(
            "path = \"/invoices\"",
            "path = \"/company/{{ tenant.id }}/invoices\"",
        )
        .replace(
            "path = \"/invoices/{{ id }}\"",
            "path = \"/company/{{ tenant.id }}/invoices/{{ id }}\"",
        );
    let report = load_str("acme.toml", &text);
    assert!(report.diagnostics.is_empty(), "{}", report.render());
    let spec = report.spec.unwrap();
    let ctx = RequestContext {
        id: Some("7".into()),
        tenant: tenant(),
        ..Default::default()
    };
    let req = invoices(&spec, OpKind::Get, &ctx).unwrap();
    assert_eq!(
        req.url.as_str(),
        "https://api.acme.example/v2/company/org-1/invoices/7"
    );
    assert_eq!(
        req.headers,
        vec![("Accept".into(), "application/json".into())]
    );
    let none = RequestContext {
        id: Some("7".into()),
        ..Default::default()
    };
    assert!(matches!(
        invoices(&spec, OpKind::Get, &none),
        Err(EngineError::NoTenant { .. })
    ));
}
