//! Using a connection: `weft connection test NAME` and `weft read CONNECTION RESOURCE`.
//!
//! Both run the spec through the engine: the request rendered from the spec, the connection's
//! host overrides and tenant, the limiter, the executor (retries, `Retry-After`, error rules),
//! and, for reads, the pager, streaming one JSON record per line.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::Deserialize;
use weft_core::Spec;
use weft_core::model::ErrorClass;
use weft_engine::extract::records;
use weft_engine::http::{CallError, client, send};
use weft_engine::limits::{LimitError, Limiter, SystemClock};
use weft_engine::paginate::Pager;
use weft_engine::request::{Hosts, OpKind, Request, RequestContext, Tenant, build};
use weft_engine::secrets::Secret;
use weft_engine::workspace::{Connection, connection_tokens_id};

use crate::cmd_client::scopes;
use crate::{Io, specs};

/// Exit codes of `weft connection test`, one per class of failure.
pub(crate) mod exit {
    /// The credentials were refused (revoked grant, wrong or expired token).
    pub(crate) const UNAUTHORIZED: u8 = 3;
    /// The grant lacks permission for the call.
    pub(crate) const FORBIDDEN: u8 = 4;
    /// No tenant, or the wrong one.
    pub(crate) const TENANT: u8 = 5;
    /// Rate limited (or a daily cap is spent).
    pub(crate) const RATE_LIMITED: u8 = 6;
    /// The provider could not be reached.
    pub(crate) const UNREACHABLE: u8 = 7;
    /// The connection has no credentials yet.
    pub(crate) const NOT_AUTHORIZED: u8 = 8;
}

/// Options of `weft read`.
#[derive(Debug, Args)]
pub(crate) struct ReadArgs {
    /// Connection name.
    connection: String,
    /// Resource name (see `weft connectors show CONNECTOR`).
    resource: String,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<u64>,
    /// Tenant id, when the connection reaches several.
    #[arg(long)]
    tenant: Option<String>,
    /// Only records changed since this date or instant (2024-05-31, 2024-05-31T12:00:00Z), for
    /// resources that read incrementally; the spec's overlap is applied.
    #[arg(long)]
    since: Option<String>,
}

#[derive(Deserialize)]
struct Tokens {
    access_token: String,
}

/// A connection ready to call: its spec, hosts, token and tenant.
struct Ready {
    spec: Spec,
    hosts: Hosts,
    connection: Connection,
    token: Secret,
}

fn ready(name: &str, workspace: Option<&Path>) -> Result<std::result::Result<Ready, String>> {
    let all = scopes(workspace)?;
    let Some((scope, connection)) = all
        .iter()
        .find_map(|s| s.file.connections.get(name).map(|c| (s, c.clone())))
    else {
        bail!("no connection `{name}`; see `weft connection list`");
    };
    let spec = specs::find(&connection.connector)?;
    let hosts = Hosts::new(spec.file(), &connection.hosts)?;
    let stored = scope.secrets()?.get(&connection_tokens_id(name))?;
    let Some(stored) = stored else {
        return Ok(Err(format!(
            "connection `{name}` has no credentials yet. Connectors with a pasted token take it with \
             `weft connection edit {name} --token-stdin`; the OAuth authorization flow is not built yet"
        )));
    };
    let tokens: Tokens = serde_json::from_str(stored.expose())
        .map_err(|_| anyhow!("the stored credentials of `{name}` are damaged; enter them again with `weft connection edit {name} --token-stdin`"))?;
    Ok(Ok(Ready {
        spec,
        hosts,
        connection,
        token: Secret::new(tokens.access_token),
    }))
}

fn tenant(ready: &Ready, wanted: Option<&str>) -> Result<Option<Tenant>> {
    let chosen = match wanted {
        Some(id) => ready
            .connection
            .tenants
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| {
                anyhow!(
                    "the connection does not reach tenant `{id}`; its tenants: {}",
                    ready
                        .connection
                        .tenants
                        .iter()
                        .map(|t| t.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
        None => match ready.connection.tenants.as_slice() {
            [] => return Ok(None),
            [only] => only,
            many => bail!(
                "the connection reaches {} tenants; pick one with --tenant ({})",
                many.len(),
                many.iter()
                    .map(|t| format!("{} = {}", t.id, t.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        },
    };
    Ok(Some(Tenant {
        id: chosen.id.clone(),
        name: chosen.name.clone(),
    }))
}

fn authorize(ready: &Ready, request: Request) -> Result<Request> {
    Ok(request.with_token(ready.spec.file(), ready.token.expose())?)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// The exit code and remedy for a failed call.
fn failure(name: &str, err: &CallError) -> (u8, String) {
    match err {
        CallError::Refused { class, message, .. } => match class {
            ErrorClass::Unauthorized | ErrorClass::TokenExpired => (
                exit::UNAUTHORIZED,
                format!(
                    "{message}\nremedy: the provider refused the credentials; if the client secret was regenerated, run `weft client edit`, then enter the token again with `weft connection edit {name} --token-stdin`"
                ),
            ),
            ErrorClass::Forbidden => (
                exit::FORBIDDEN,
                format!(
                    "{message}\nremedy: the user who granted access lacks the permission this call needs"
                ),
            ),
            ErrorClass::Tenant => (
                exit::TENANT,
                format!("{message}\nremedy: select the organisation again"),
            ),
            ErrorClass::RateLimited => (
                exit::RATE_LIMITED,
                format!("{message}\nremedy: wait for the provider's limit window, then try again"),
            ),
            _ => (1, message.clone()),
        },
        CallError::DailyCap { .. } => (exit::RATE_LIMITED, err.to_string()),
        CallError::Unreachable { .. } => (exit::UNREACHABLE, err.to_string()),
        CallError::NotJson { .. } => (1, err.to_string()),
    }
}

/// `weft connection test NAME`.
pub(crate) fn test(name: &str, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let ready = match ready(name, workspace)? {
        Ok(ready) => ready,
        Err(message) => {
            writeln!(io.err, "error: {message}")?;
            return Ok(exit::NOT_AUTHORIZED);
        }
    };
    let file = ready.spec.file();
    let test = &file.test;
    let resource = &file.resources[&test.resource];
    let ctx = RequestContext {
        tenant: if file.is_tenanted(resource) {
            tenant(&ready, None)?
        } else {
            None
        },
        ..RequestContext::with_field_defaults(file)
    };
    let env = weft_core::template::environment();
    let request = authorize(
        &ready,
        build(
            &env,
            file,
            &ready.hosts,
            &test.resource,
            OpKind::List,
            &ctx,
            &[],
        )?,
    )?;
    let op_rules = resource
        .list
        .as_ref()
        .map(|op| op.errors.clone())
        .unwrap_or_default();
    let http = client()?;
    let mut rng = fastrand::Rng::new();
    let outcome = runtime()?.block_on(send(
        &http,
        file,
        &op_rules,
        &request,
        None,
        &SystemClock,
        &mut rng,
    ));
    match outcome {
        Ok(answer) => {
            let extract = &resource
                .list
                .as_ref()
                .map(|op| op.records.clone())
                .unwrap_or(weft_core::model::Extract::Root);
            let found = records(&answer.body, extract)
                .map_err(|e| anyhow!("the test answer is not what the spec describes: {e}"))?;
            if !test.success_status.contains(&answer.status)
                || (test.needs_record && found.is_empty())
            {
                writeln!(
                    io.err,
                    "error: the test call answered {} with {} record(s); the spec expects one of {:?} with a record",
                    answer.status,
                    found.len(),
                    test.success_status
                )?;
                return Ok(1);
            }
            let description = test
                .describe
                .as_ref()
                .and_then(|d| {
                    env.render_str(d, minijinja::context! { record => found.first() })
                        .ok()
                })
                .unwrap_or_default();
            writeln!(io.out, "connection `{name}` works: {description}")?;
            Ok(0)
        }
        Err(err) => {
            let (code, text) = failure(name, &err);
            writeln!(io.err, "error: connection `{name}` failed its test: {text}")?;
            Ok(code)
        }
    }
}

/// `weft read CONNECTION RESOURCE`: one JSON record per line on stdout.
pub(crate) fn read(args: ReadArgs, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    if let Some(code) =
        crate::cmd_plugins::read_via_plugin(&args.connection, &args.resource, args.limit, io)?
    {
        return Ok(code);
    }
    let ready = match ready(&args.connection, workspace)? {
        Ok(ready) => ready,
        Err(message) => bail!(message),
    };
    let file = ready.spec.file();
    let Some(resource) = file.resources.get(&args.resource) else {
        bail!(
            "connector `{}` has no resource `{}`; see `weft connectors show {}`",
            file.id,
            args.resource,
            file.id
        );
    };
    let Some(list) = resource.list.as_ref() else {
        bail!(
            "resource `{}` of `{}` cannot be listed",
            args.resource,
            file.id
        );
    };
    let tenant = if file.is_tenanted(resource) {
        tenant(&ready, args.tenant.as_deref())?
    } else {
        None
    };
    let tenant_id = tenant.as_ref().map(|t| t.id.clone());
    let cursor = match (&args.since, &list.incremental) {
        (None, _) => None,
        (Some(since), Some(inc)) => Some(weft_engine::cursor::format(
            weft_engine::cursor::parse_since(since)?,
            inc,
        )),
        (Some(_), None) => bail!(
            "resource `{}` of `{}` does not read incrementally; leave out --since",
            args.resource,
            file.id
        ),
    };
    let ctx = RequestContext {
        tenant,
        cursor,
        params: BTreeMap::new(),
        ..RequestContext::with_field_defaults(file)
    };
    let env = weft_core::template::environment();
    let limiter = Limiter::new(file, ready.connection.concurrency);
    let http = client()?;
    let mut rng = fastrand::Rng::new();
    let mut pager = Pager::new(
        list.pagination
            .as_ref()
            .unwrap_or(&weft_core::model::Pagination::None),
    );
    let mut written: u64 = 0;
    let runtime = runtime()?;
    while let Some(query) = pager.next_query() {
        let request = authorize(
            &ready,
            build(
                &env,
                file,
                &ready.hosts,
                &args.resource,
                OpKind::List,
                &ctx,
                &query,
            )?,
        )?;
        let answer = runtime.block_on(async {
            let permit = limiter.acquire(tenant_id.as_deref(), &SystemClock).await;
            match permit {
                Err(LimitError::Exhausted { budget, free_at_ms }) => Err(anyhow!(
                    "the `{budget}` budget is spent until {free_at_ms} (Unix ms); read again then"
                )),
                Ok(_permit) => send(
                    &http,
                    file,
                    &list.errors,
                    &request,
                    None,
                    &SystemClock,
                    &mut rng,
                )
                .await
                .map_err(|e| anyhow!(failure(&args.connection, &e).1)),
            }
        })?;
        limiter.observe(tenant_id.as_deref(), &answer.headers, &SystemClock);
        let page =
            records(&answer.body, &list.records).map_err(|e| anyhow!("page {}: {e}", written))?;
        pager.advance(&answer.body, page.len())?;
        for record in page {
            if args.limit.is_some_and(|l| written >= l) {
                return Ok(0);
            }
            writeln!(io.out, "{}", serde_json::to_string(&record)?)?;
            written += 1;
        }
    }
    writeln!(
        io.err,
        "read {written} record(s) of `{}` from `{}`",
        args.resource, args.connection
    )?;
    Ok(0)
}

/// Reads a token from standard input, checks it against the spec's token field and seals it
/// as the connection's credentials.
pub(crate) fn store_token(
    name: &str,
    connector: &str,
    scope: &weft_engine::workspace::Workspace,
) -> Result<()> {
    use std::io::Read as _;
    let spec = specs::find(connector)?;
    let Some(token) = &spec.file().auth.token else {
        bail!("connector `{connector}` takes no pasted token; it authorizes with OAuth");
    };
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read the token from standard input")?;
    let len = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .map_or(text.len(), str::len);
    text.truncate(len);
    let text = Secret::new(text);
    // The field the token template reads gives the rules (required, whitespace, pattern).
    let field = spec
        .file()
        .fields
        .iter()
        .find(|f| token.value.contains(&format!("fields.{}", f.id)));
    let value = match field {
        Some(field) => match weft_core::form::check(field, Some(text.expose()))? {
            Some(weft_core::form::FieldValue::Text(t)) => Secret::new(t),
            _ => bail!("{}: a value is required", field.label),
        },
        None if text.expose().trim().is_empty() => bail!("the token is empty"),
        None => text,
    };
    let sealed = Secret::new(
        serde_json::json!({ "kind": "token", "access_token": value.expose() }).to_string(),
    );
    scope.secrets()?.put(&connection_tokens_id(name), &sealed)?;
    Ok(())
}

/// Options of `weft write`.
#[derive(Debug, Args)]
pub(crate) struct WriteArgs {
    /// Connection name.
    connection: String,
    /// Resource name.
    resource: String,
    /// Update existing records (each carries its primary key) instead of creating.
    #[arg(long)]
    update: bool,
    /// Tenant id, when the connection reaches several.
    #[arg(long)]
    tenant: Option<String>,
}

/// `weft write CONNECTION RESOURCE < records.jsonl`: one result per input record on stdout.
pub(crate) fn write(args: WriteArgs, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    if let Some(code) =
        crate::cmd_plugins::write_via_plugin(&args.connection, &args.resource, args.update, io)?
    {
        return Ok(code);
    }
    use std::io::BufRead as _;
    use weft_engine::write::{ItemResult, body, check_record, idempotency_key, item_results};

    let ready = match ready(&args.connection, workspace)? {
        Ok(ready) => ready,
        Err(message) => bail!(message),
    };
    let file = ready.spec.file();
    let Some(resource) = file.resources.get(&args.resource) else {
        bail!(
            "connector `{}` has no resource `{}`; see `weft connectors show {}`",
            file.id,
            args.resource,
            file.id
        );
    };
    let (kind, op) = if args.update {
        (OpKind::Update, resource.update.as_ref())
    } else {
        (OpKind::Create, resource.create.as_ref())
    };
    let Some(op) = op else {
        bail!(
            "resource `{}` of `{}` cannot be {}",
            args.resource,
            file.id,
            if args.update { "updated" } else { "created" }
        );
    };
    let tenant = if file.is_tenanted(resource) {
        tenant(&ready, args.tenant.as_deref())?
    } else {
        None
    };
    let tenant_id = tenant.as_ref().map(|t| t.id.clone());

    // Every input line gets a result: bad lines and refused records are reported, the rest go on.
    let mut results: Vec<ItemResult> = Vec::new();
    let mut valid: Vec<(usize, serde_json::Value)> = Vec::new();
    for (index, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("cannot read standard input")?;
        if line.trim().is_empty() {
            continue;
        }
        let errors = match serde_json::from_str::<serde_json::Value>(&line) {
            Err(e) => vec![format!("line {}: not JSON ({e})", index + 1)],
            Ok(record) => {
                let problems = check_record(resource, &record, !args.update);
                if problems.is_empty() {
                    valid.push((index, record));
                    continue;
                }
                problems
            }
        };
        results.push(ItemResult {
            index,
            status: "failed",
            id: None,
            errors,
        });
    }

    let env = weft_core::template::environment();
    let limiter = Limiter::new(file, ready.connection.concurrency);
    let http = client()?;
    let mut rng = fastrand::Rng::new();
    let runtime = runtime()?;
    let size = op.batch_size.unwrap_or(1).max(1) as usize;
    let mut stopped = None;
    for chunk in valid.chunks(size) {
        let records: Vec<serde_json::Value> = chunk.iter().map(|(_, r)| r.clone()).collect();
        let first = &records[0];
        let id = first.get(&resource.primary_key).and_then(|v| {
            v.as_str()
                .map(str::to_owned)
                .or_else(|| v.as_i64().map(|n| n.to_string()))
        });
        let ctx = RequestContext {
            tenant: tenant.clone(),
            id,
            record: (size == 1).then(|| first.clone()),
            ..RequestContext::with_field_defaults(file)
        };
        let mut request = authorize(
            &ready,
            build(&env, file, &ready.hosts, &args.resource, kind, &ctx, &[])?,
        )?;
        if let Some(idem) = &op.idempotency {
            let scope = format!(
                "{}/{}/{}/{}",
                args.connection,
                args.resource,
                kind.as_str(),
                tenant_id.clone().unwrap_or_default()
            );
            request.headers.push((
                idem.header.clone(),
                idempotency_key(&scope, &records, idem.max_length as usize),
            ));
        }
        let payload = body(op, &records);
        /// How a batch failed: its records were refused (reported, the run goes on), or the run must stop.
        enum Failed {
            Refused(String),
            Stop(String),
        }
        let outcome = runtime.block_on(async {
            match limiter.acquire(tenant_id.as_deref(), &SystemClock).await {
                Err(e) => Err(Failed::Stop(e.to_string())),
                Ok(_permit) => send(
                    &http,
                    file,
                    &op.errors,
                    &request,
                    Some(&payload),
                    &SystemClock,
                    &mut rng,
                )
                .await
                .map_err(|e| match &e {
                    CallError::Refused {
                        class: ErrorClass::Validation,
                        message,
                        ..
                    } => Failed::Refused(message.clone()),
                    other => Failed::Stop(failure(&args.connection, other).1),
                }),
            }
        });
        match outcome {
            Ok(answer) => {
                limiter.observe(tenant_id.as_deref(), &answer.headers, &SystemClock);
                let returned = records_of(&answer.body, &op.records);
                for (offset, mut result) in item_results(
                    0,
                    chunk.len(),
                    &returned,
                    op.item_errors.as_ref(),
                    &resource.primary_key,
                )
                .into_iter()
                .enumerate()
                {
                    result.index = chunk[offset].0;
                    results.push(result);
                }
            }
            Err(Failed::Refused(message)) => {
                for (index, _) in chunk {
                    results.push(ItemResult {
                        index: *index,
                        status: "failed",
                        id: None,
                        errors: vec![message.clone()],
                    });
                }
            }
            Err(Failed::Stop(message)) => {
                stopped = Some((chunk[0].0, message));
                break;
            }
        }
    }
    results.sort_by_key(|r| r.index);
    for r in &results {
        writeln!(io.out, "{}", serde_json::to_string(r)?)?;
    }
    let ok = results.iter().filter(|r| r.status == "ok").count();
    let failed = results.len() - ok;
    writeln!(io.err, "{ok} written, {failed} failed")?;
    if let Some((index, message)) = stopped {
        writeln!(
            io.err,
            "error: stopped at input record {index}: {message}; records from there on were not written, and writing them again is safe (same idempotency keys)"
        )?;
        return Ok(1);
    }
    Ok(u8::from(failed > 0))
}

fn records_of(
    body: &serde_json::Value,
    extract: &weft_core::model::Extract,
) -> Vec<serde_json::Value> {
    records(body, extract).unwrap_or_default()
}
