//! Using a connection: `weft connection test NAME` and `weft read CONNECTION RESOURCE`.
//!
//! Both run the spec through the engine: the request rendered from the spec, the connection's
//! host overrides and tenant, the limiter, the executor (retries, `Retry-After`, error rules),
//! and, for reads, the pager, streaming one JSON record per line.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use weft_core::model::ErrorClass;
use weft_engine::http::CallError;
use weft_engine::request::{OpKind, RequestContext, Tenant};
use weft_engine::secrets::Secret;
use weft_engine::session::SessionError;
use weft_engine::workspace::Connection;

use crate::{Io, connect, specs};

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

/// The tenant to use for a tenanted resource: the one asked for, or the only one.
pub(crate) fn tenant(connection: &Connection, wanted: Option<&str>) -> Result<Option<Tenant>> {
    let chosen = match wanted {
        Some(id) => connection
            .tenants
            .iter()
            .find(|t| t.id == id)
            .ok_or_else(|| {
                anyhow!(
                    "the connection does not reach tenant `{id}`; its tenants: {}",
                    connection
                        .tenants
                        .iter()
                        .map(|t| t.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?,
        None => match connection.tenants.as_slice() {
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

/// The exit code and remedy for a failed call.
fn failure(name: &str, err: &SessionError) -> (u8, String) {
    use weft_engine::connect::Failure;
    let message = match err {
        SessionError::Call(CallError::Refused { message, .. }) => message.clone(),
        _ => err.to_string(),
    };
    let refused = matches!(err, SessionError::Call(CallError::Refused { .. }));
    match weft_engine::connect::classify(err) {
        Failure::Unauthorized if refused => (
            exit::UNAUTHORIZED,
            format!(
                "{message}\nremedy: the provider refused the credentials; if the client secret was regenerated, run `weft client edit CLIENT`, then `weft connection authorize {name}` (or, for a pasted token, `weft connection edit {name} --token-stdin`)"
            ),
        ),
        Failure::Unauthorized => (exit::UNAUTHORIZED, message),
        Failure::Forbidden => (
            exit::FORBIDDEN,
            format!(
                "{message}\nremedy: the user who granted access lacks the permission this call needs"
            ),
        ),
        Failure::Tenant if refused => (
            exit::TENANT,
            format!(
                "{message}\nremedy: the organisation is no longer connected; run `weft connection authorize {name}` and select it"
            ),
        ),
        Failure::Tenant => (
            exit::TENANT,
            format!(
                "{message}\nremedy: run `weft connection authorize {name}` and select an organisation"
            ),
        ),
        Failure::RateLimited if refused => (
            exit::RATE_LIMITED,
            format!("{message}\nremedy: wait for the provider's limit window, then try again"),
        ),
        Failure::RateLimited => (exit::RATE_LIMITED, message),
        Failure::Conflict => (
            1,
            format!(
                "{message}\nremedy: the record changed at the provider since it was read; read it again with `weft read {name} RESOURCE`, then write your change on top of its current version"
            ),
        ),
        Failure::Unreachable => (exit::UNREACHABLE, message),
        Failure::NotAuthorized => (exit::NOT_AUTHORIZED, message),
        Failure::ClientRefused => (
            exit::UNAUTHORIZED,
            format!(
                "{message}\nremedy: the provider no longer accepts the OAuth client's secret; generate a new secret in the app's settings at the provider, then run `weft client edit CLIENT --secret-stdin` with it"
            ),
        ),
        Failure::Other => (1, message),
    }
}

/// `weft connection test NAME [--tenant ID]`: the spec's test call, once per organisation the
/// connection reaches (or for the one `--tenant` names), one line each. The exit code is the
/// first failure's.
pub(crate) fn test(
    name: &str,
    wanted: Option<&str>,
    workspace: Option<&Path>,
    io: &mut Io<'_>,
) -> Result<u8> {
    let opened = connect::open(name, workspace)?;
    let file = opened.session.spec().file();
    let resource = &file.resources[&file.test.resource];
    let tenants: Vec<Option<Tenant>> = if !file.is_tenanted(resource) {
        if wanted.is_some() {
            bail!(
                "connector `{}` has no organisations to choose from; leave out --tenant",
                file.id
            );
        }
        vec![None]
    } else if wanted.is_some() || opened.connection.tenants.len() < 2 {
        vec![tenant(&opened.connection, wanted)?]
    } else {
        opened
            .connection
            .tenants
            .iter()
            .map(|t| {
                Some(Tenant {
                    id: t.id.clone(),
                    name: t.name.clone(),
                })
            })
            .collect()
    };
    let runtime = connect::runtime()?;
    let mut code = 0;
    for tenant in tenants {
        let label = match &tenant {
            Some(t) if opened.connection.tenants.len() > 1 => {
                format!("connection `{name}` ({}, {})", t.name, t.id)
            }
            _ => format!("connection `{name}`"),
        };
        match test_one(name, &opened, tenant, &runtime)? {
            Ok(description) => writeln!(io.out, "{label} works: {description}")?,
            Err((failed, text)) => {
                writeln!(io.err, "error: {label} failed its test: {text}")?;
                if code == 0 {
                    code = failed;
                }
            }
        }
    }
    Ok(code)
}

/// The spec's test call for one organisation (or none): the description of what answered, or
/// the exit code and message of the failure.
fn test_one(
    name: &str,
    opened: &connect::Opened,
    tenant: Option<Tenant>,
    runtime: &tokio::runtime::Runtime,
) -> Result<Result<String, (u8, String)>> {
    use weft_engine::connect::TestFailure;
    match runtime.block_on(weft_engine::connect::test_call(&opened.session, tenant)) {
        Ok(description) => Ok(Ok(description)),
        Err(TestFailure::Call(err)) => Ok(Err(failure(name, &err))),
        Err(TestFailure::Unreadable(text)) => Err(anyhow!(text)),
        Err(TestFailure::Unexpected(text)) => Ok(Err((1, text))),
    }
}

/// What to list: a resource of a connection, read to its end.
pub(crate) struct Listing<'a> {
    /// The connection's name, for messages.
    pub(crate) connection: &'a str,
    /// The resource.
    pub(crate) resource: &'a str,
    /// List parameters the spec passes through (a flow's `params`).
    pub(crate) params: BTreeMap<String, String>,
    /// `--since`, for resources that read incrementally.
    pub(crate) since: Option<&'a str>,
}

/// Lists a resource of an opened connection to its end through the engine (the spec's request,
/// limits, retries and pager; one page in memory), with a progress line on a terminal's stderr.
/// `tenant` chooses the tenant when the resource is tenanted. `each` gets every record and may
/// stop the list. A failed call is `Ok(Err((exit code, message with its remedy)))`.
pub(crate) fn list_to_end(
    opened: &connect::Opened,
    what: Listing<'_>,
    tenant: impl FnOnce(&Connection) -> Result<Option<Tenant>>,
    mut each: impl FnMut(serde_json::Value) -> ControlFlow<()>,
) -> Result<Result<(), (u8, String)>> {
    let session = &opened.session;
    let file = session.spec().file();
    let Some(resource) = file.resources.get(what.resource) else {
        bail!(
            "connector `{}` has no resource `{}`; see `weft connectors show {}`",
            file.id,
            what.resource,
            file.id
        );
    };
    let Some(list) = resource.list.as_ref() else {
        bail!(
            "resource `{}` of `{}` cannot be listed",
            what.resource,
            file.id
        );
    };
    let tenant = if file.is_tenanted(resource) {
        tenant(&opened.connection)?
    } else {
        None
    };
    let cursor = match (what.since, &list.incremental) {
        (None, _) => None,
        (Some(since), Some(inc)) => Some(weft_engine::cursor::format(
            weft_engine::cursor::parse_since(since)?,
            inc,
        )),
        (Some(_), None) => bail!(
            "resource `{}` of `{}` does not read incrementally; leave out --since",
            what.resource,
            file.id
        ),
    };
    let ctx = RequestContext {
        tenant,
        cursor,
        params: what.params,
        ..session.context(BTreeMap::new())
    };
    let progress = crate::progress::Progress::spinner(
        true,
        "{spinner} {pos} records of {msg} ({per_sec}, {elapsed})",
        what.resource.to_owned(),
    );
    let outcome = connect::runtime()?.block_on(session.list(what.resource, &ctx, |record| {
        let next = each(record);
        if next.is_continue() {
            progress.inc(1);
        }
        next
    }));
    drop(progress);
    Ok(outcome
        .map(|_| ())
        .map_err(|err| failure(what.connection, &err)))
}

/// `weft read CONNECTION RESOURCE`: one JSON record per line on stdout, a progress line on a
/// terminal's stderr.
pub(crate) fn read(args: ReadArgs, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    if let Some(code) =
        crate::cmd_plugins::read_via_plugin(&args.connection, &args.resource, args.limit, io)?
    {
        return Ok(code);
    }
    let opened = connect::open(&args.connection, workspace)?;
    let mut written: u64 = 0;
    let mut failed: Option<std::io::Error> = None;
    let outcome = list_to_end(
        &opened,
        Listing {
            connection: &args.connection,
            resource: &args.resource,
            params: BTreeMap::new(),
            since: args.since.as_deref(),
        },
        |connection| tenant(connection, args.tenant.as_deref()),
        |record| {
            if args.limit.is_some_and(|l| written >= l) {
                return ControlFlow::Break(());
            }
            if let Err(e) = serde_json::to_writer(&mut *io.out, &record)
                .map_err(std::io::Error::from)
                .and_then(|()| io.out.write_all(b"\n"))
            {
                failed = Some(e);
                return ControlFlow::Break(());
            }
            written += 1;
            ControlFlow::Continue(())
        },
    )?;
    if let Some(e) = failed {
        // A closed pipe (`weft read … | head`) is the reader's choice, not a failure.
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(0);
        }
        return Err(e).context("cannot write to standard output");
    }
    if let Err((code, text)) = outcome {
        writeln!(
            io.err,
            "error: stopped after {written} record(s) of `{}`: {text}",
            args.resource
        )?;
        return Ok(if code == 0 { 1 } else { code });
    }
    let stats = opened.session.stats();
    writeln!(
        io.err,
        "read {written} record(s) of `{}` from `{}` in {} call(s)",
        args.resource, args.connection, stats.calls
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
    if spec.file().auth.token.is_none() {
        bail!("connector `{connector}` takes no pasted token; it authorizes with OAuth");
    }
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
    let value = match weft_engine::connect::token_field(spec.file()) {
        Some(field) => match weft_core::form::check(field, Some(text.expose()))? {
            Some(weft_core::form::FieldValue::Text(t)) => Secret::new(t),
            _ => bail!("{}: a value is required", field.label),
        },
        None if text.expose().trim().is_empty() => bail!("the token is empty"),
        None => text,
    };
    weft_engine::connect::store_pasted_token(scope, name, &value)?;
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
    #[arg(long, conflicts_with_all = ["delete", "action"])]
    update: bool,
    /// Delete the records (each carries its primary key) instead of creating.
    #[arg(long, conflicts_with = "action")]
    delete: bool,
    /// Run the resource's action NAME (void, send, approve…) on each record (each carries its
    /// primary key) instead of creating.
    #[arg(long, value_name = "NAME")]
    action: Option<String>,
    /// Tenant id, when the connection reaches several.
    #[arg(long)]
    tenant: Option<String>,
}

/// `weft write CONNECTION RESOURCE < records.jsonl`: one result per input record on stdout.
pub(crate) fn write(args: WriteArgs, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    if args.delete || args.action.is_some() {
        // Plugins run list, create and update only.
    } else if let Some(code) =
        crate::cmd_plugins::write_via_plugin(&args.connection, &args.resource, args.update, io)?
    {
        return Ok(code);
    }
    use std::io::BufRead as _;
    use weft_engine::write::{ItemResult, check_record, idempotency_key_for};

    let opened = connect::open(&args.connection, workspace)?;
    let session = &opened.session;
    let file = session.spec().file();
    let Some(resource) = file.resources.get(&args.resource) else {
        bail!(
            "connector `{}` has no resource `{}`; see `weft connectors show {}`",
            file.id,
            args.resource,
            file.id
        );
    };
    let name = match (&args.action, args.delete, args.update) {
        (Some(action), ..) => action.as_str(),
        (None, true, _) => "delete",
        (None, false, true) => "update",
        (None, false, false) => "create",
    };
    // A spec's `hooks.transform` plugin reshapes a created or updated record.
    let kind = match name {
        "create" => Some(OpKind::Create),
        "update" => Some(OpKind::Update),
        _ => None,
    };
    let Some(op) = resource.operation(name) else {
        let actions: Vec<&str> = resource.actions.keys().map(String::as_str).collect();
        bail!(
            "resource `{}` of `{}` cannot be {}{}",
            args.resource,
            file.id,
            match name {
                "create" => "created".to_owned(),
                "update" => "updated".to_owned(),
                "delete" => "deleted".to_owned(),
                action => format!("given the action `{action}`"),
            },
            if args.action.is_some() && !actions.is_empty() {
                format!(" (its actions: {})", actions.join(", "))
            } else {
                String::new()
            }
        );
    };
    let creating = name == "create";
    // Deletes and actions name their record; they are not checked as writes of its fields.
    let checked = creating || name == "update";
    let tenant = if file.is_tenanted(resource) {
        tenant(&opened.connection, args.tenant.as_deref())?
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
                // A spec's `hooks.transform` plugin reshapes the record before its rules apply.
                let transformed = match kind {
                    Some(kind) => session
                        .transform(&args.resource, kind, vec![record])
                        .map_err(|e| e.to_string())
                        .and_then(|mut one| {
                            one.pop()
                                .ok_or_else(|| "the transform plugin returned no record".to_owned())
                        }),
                    None => Ok(record),
                };
                let record = match transformed {
                    Ok(record) => record,
                    Err(message) => {
                        results.push(ItemResult {
                            index,
                            status: "failed",
                            id: None,
                            errors: vec![message],
                        });
                        continue;
                    }
                };
                let problems = if checked {
                    check_record(resource, &record, creating)
                } else if record.get(&resource.primary_key).is_none() {
                    vec![format!("`{}` is required", resource.primary_key)]
                } else {
                    Vec::new()
                };
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

    let runtime = connect::runtime()?;
    let size = if checked {
        op.batch_size.unwrap_or(1).max(1) as usize
    } else {
        1
    };
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
            ..session.context(BTreeMap::new())
        };
        let scope = format!(
            "{}/{}/{}/{}",
            args.connection,
            args.resource,
            name,
            tenant_id.clone().unwrap_or_default()
        );
        let key = idempotency_key_for(op, &scope, &records);
        let outcome =
            runtime.block_on(session.write(&args.resource, name, &ctx, &records, key.as_deref()));
        match outcome {
            Ok(written) => {
                for (offset, mut result) in written.into_iter().enumerate() {
                    result.index = chunk[offset].0;
                    results.push(result);
                }
            }
            // A delete or an action names one record: its "not found" is that record's.
            Err(SessionError::Call(CallError::Refused {
                class: ErrorClass::NotFound,
                ref message,
                ..
            })) if !checked => {
                for (index, _) in chunk {
                    results.push(ItemResult {
                        index: *index,
                        status: "failed",
                        id: None,
                        errors: vec![message.clone()],
                    });
                }
            }
            Err(
                ref e @ SessionError::Call(CallError::Refused {
                    class: class @ (ErrorClass::Validation | ErrorClass::Conflict),
                    ref message,
                    ..
                }),
            ) => {
                // A conflict is this record's too, with what to do about it.
                let message = match class {
                    ErrorClass::Conflict => failure(&args.connection, e).1,
                    _ => message.clone(),
                };
                for (index, _) in chunk {
                    results.push(ItemResult {
                        index: *index,
                        status: "failed",
                        id: None,
                        errors: vec![message.clone()],
                    });
                }
            }
            Err(other) => {
                stopped = Some((chunk[0].0, failure(&args.connection, &other).1));
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
