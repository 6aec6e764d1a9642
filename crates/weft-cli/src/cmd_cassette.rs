//! `weft spec record CONNECTION RESOURCE`: a real read through a recording proxy on
//! 127.0.0.1, saved as a cassette (`weft_engine::cassette`) with every secret and personal field
//! redacted; `weft spec test SPEC --cassettes DIR`: each cassette of that connector replayed
//! from 127.0.0.1 through the engine (paging, extraction, cursor, field rules), offline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, anyhow, bail};
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use weft_engine::cassette::{self, Cassette, Exchange};
use weft_engine::limits::{Clock, Limiter, SystemClock};
use weft_engine::request::{Hosts, RequestContext, Tenant};
use weft_engine::secrets::{MasterKey, Secret, SecretStore};
use weft_engine::session::Session;
use weft_engine::tokens::TokenKeeper;

use crate::cmd_use::{Listing, list_to_end};
use crate::{Io, connect, specs};

/// The most a recorded or replayed body may hold.
const MAX_BODY: usize = 64 << 20;

/// The hosts a spec's OAuth endpoints use: never recorded (their answers are tokens).
fn auth_hosts(spec: &weft_core::Spec) -> Vec<String> {
    let file = spec.file();
    let text = serde_json::to_string(&file.auth).unwrap_or_default();
    file.hosts
        .keys()
        .filter(|h| text.contains(&format!("hosts.{h}")))
        .cloned()
        .collect()
}

/// Every string of the sealed record `id` long enough to be a credential.
fn secrets_of(store: &SecretStore, id: &str, out: &mut Vec<String>) {
    let Ok(Some(secret)) = store.get(id) else {
        return;
    };
    let text = secret.expose();
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => collect_strings(&v, out),
        Err(_) => out.push(text.to_owned()),
    }
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) if s.len() >= 8 => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

type Log = Arc<Mutex<Vec<Exchange>>>;

/// One proxied host: where requests go, and where they are logged.
struct Proxy {
    name: String,
    real: String,
    local: String,
    log: Log,
    http: reqwest::Client,
}

/// Headers not passed on either way.
fn hop(name: &str) -> bool {
    matches!(
        name,
        "host" | "content-length" | "connection" | "transfer-encoding" | "accept-encoding"
    )
}

async fn forward(
    proxy: Arc<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let url = format!("{}{target}", proxy.real.trim_end_matches('/'));
    let mut request = proxy.http.request(method.clone(), &url);
    for (name, value) in &headers {
        if !hop(name.as_str()) {
            request = request.header(name, value);
        }
    }
    let sent = request.body(body.to_vec()).send().await;
    let answer = match sent {
        Ok(a) => a,
        Err(e) => {
            let reason = if e.is_timeout() {
                "timed out"
            } else {
                "could not be reached"
            };
            return (
                StatusCode::BAD_GATEWAY,
                format!("weft spec record: {} {reason}", proxy.name),
            )
                .into_response();
        }
    };
    let status = answer.status();
    let answer_headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let bases = [(proxy.name.clone(), proxy.real.clone())];
    let mut kept = BTreeMap::new();
    let mut response = axum::response::Response::builder().status(status.as_u16());
    for (name, value) in &answer_headers {
        let n = name.as_str();
        if hop(n) {
            continue;
        }
        let v = value.to_str().unwrap_or_default();
        if cassette::kept_header(n) {
            kept.insert(n.to_owned(), cassette::keep_body(v, &[], &bases));
        }
        let local = v.replace(proxy.real.trim_end_matches('/'), &proxy.local);
        if let (Ok(hn), Ok(hv)) = (HeaderName::try_from(n), HeaderValue::from_str(&local)) {
            response = response.header(hn, hv);
        }
    }
    proxy
        .log
        .lock()
        .map(|mut l| {
            l.push(Exchange {
                method: method.as_str().to_owned(),
                host: proxy.name.clone(),
                target,
                request: (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned()),
                status: status.as_u16(),
                headers: kept,
                body: text.clone(),
            });
        })
        .ok();
    // The engine follows absolute paging URLs: they must come back through the proxy.
    let local = text.replace(proxy.real.trim_end_matches('/'), &proxy.local);
    response
        .body(Body::from(local))
        .unwrap_or_else(|_| StatusCode::BAD_GATEWAY.into_response())
}

use axum::response::IntoResponse as _;

/// Serves `router` on a free port of 127.0.0.1 on `rt`; its address.
fn listen(rt: &tokio::runtime::Runtime, router: axum::Router) -> Result<SocketAddr> {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .context("cannot listen on 127.0.0.1")?;
    let addr = listener.local_addr()?;
    rt.spawn(async move { axum::serve(listener, router).await });
    Ok(addr)
}

/// What `weft spec record` takes.
#[derive(Debug, clap::Args)]
pub(crate) struct RecordArgs {
    /// The connection to read through.
    connection: String,
    /// The resource to read (to its end).
    resource: String,
    /// A list parameter the spec passes through (repeatable).
    #[arg(long = "param", value_name = "NAME=VALUE")]
    params: Vec<String>,
    /// Read only what changed since this time (RFC 3339, a date, or `7d`).
    #[arg(long)]
    since: Option<String>,
    /// The tenant to address, when the connection reaches several.
    #[arg(long)]
    tenant: Option<String>,
    /// The folder the cassette is written to (`CONNECTOR-RESOURCE.json`).
    #[arg(long, default_value = "cassettes")]
    out: PathBuf,
}

/// `weft spec record`.
pub(crate) fn record(args: &RecordArgs, workspace: Option<&Path>, io: &mut Io<'_>) -> Result<u8> {
    let (connection, resource) = (args.connection.as_str(), args.resource.as_str());
    let (since, tenant, out) = (args.since.as_deref(), args.tenant.as_deref(), &args.out);
    let params = parse_params(&args.params)?;
    let mut all = crate::cmd_client::scopes(workspace)?;
    let (at, found) = connect::find(&all, connection)?;
    let spec = specs::find(&found.connector)?;
    if spec
        .file()
        .resources
        .get(resource)
        .is_none_or(|r| r.list.is_none())
    {
        bail!(
            "connector `{}` has no resource `{resource}` that can be listed; see `weft connectors show {}`",
            spec.id(),
            spec.id()
        );
    }
    let skip = auth_hosts(&spec);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let log: Log = Arc::default();
    let current = Hosts::new(spec.file(), &found.hosts)?;
    let mut overrides = found.hosts.clone();
    let mut bases = Vec::new();
    for name in spec.file().hosts.keys().filter(|h| !skip.contains(h)) {
        let real = current
            .get(name)
            .ok_or_else(|| anyhow!("host `{name}` has no URL"))?
            .to_owned();
        // The proxy must know its own address to rewrite paging URLs: bind first.
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .context("cannot listen on 127.0.0.1")?;
        let local = format!("http://{}", listener.local_addr()?);
        let proxy = Arc::new(Proxy {
            name: name.clone(),
            real: real.clone(),
            local: local.clone(),
            log: log.clone(),
            http: weft_engine::http::client()?,
        });
        let router = axum::Router::new()
            .fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                    forward(proxy.clone(), method, uri, headers, body)
                },
            )
            .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY));
        rt.spawn(async move { axum::serve(listener, router).await });
        overrides.insert(name.clone(), local);
        bases.push((name.clone(), real));
    }
    if let Some(c) = all[at].file.connections.get_mut(connection) {
        c.hosts = overrides;
    }
    let opened = weft_engine::connect::open(
        &all,
        spec.clone(),
        connection,
        &weft_core::callback_url(weft_core::DEFAULT_CALLBACK_PORT),
    )?;
    let mut records = 0u64;
    let mut chosen = None;
    let outcome = list_to_end(
        &opened,
        Listing {
            connection,
            resource,
            params: params.clone(),
            since,
        },
        |c| {
            let t = crate::cmd_use::tenant(c, tenant)?;
            chosen = t.as_ref().map(|t: &Tenant| t.id.clone());
            Ok(t)
        },
        |_| {
            records += 1;
            ControlFlow::Continue(())
        },
    )?;
    if let Err((_, text)) = outcome {
        bail!("the read of `{resource}` failed, so nothing was recorded: {text}");
    }
    let mut secrets = Vec::new();
    if let Ok(store) = all[at].secrets() {
        secrets_of(
            &store,
            &weft_engine::workspace::connection_tokens_id(connection),
            &mut secrets,
        );
        if let Some(client) = &found.client {
            secrets_of(
                &store,
                &weft_engine::workspace::client_secret_id(client),
                &mut secrets,
            );
        }
    }
    let exchanges: Vec<Exchange> = log
        .lock()
        .map_err(|_| anyhow!("the recording was lost"))?
        .drain(..)
        .map(|mut e| {
            e.body = cassette::keep_body(&e.body, &secrets, &bases);
            e.request = e.request.map(|r| cassette::keep_body(&r, &secrets, &bases));
            e.target = cassette::keep_body(&e.target, &secrets, &[]);
            e
        })
        .collect();
    let tape = Cassette {
        format: cassette::FORMAT,
        connector: spec.id().to_owned(),
        resource: resource.to_owned(),
        params,
        tenant: chosen,
        cursor: since.map(str::to_owned),
        records,
        exchanges,
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let path = out.join(format!("{}-{resource}.json", spec.id()));
    tape.save(&path)?;
    writeln!(
        io.out,
        "recorded {records} record(s) of `{resource}` in {} exchange(s) to {} (secrets and personal fields redacted; review it before committing); replay it with `weft spec test SPEC --cassettes {}`",
        tape.exchanges.len(),
        path.display(),
        out.display()
    )?;
    Ok(0)
}

fn parse_params(params: &[String]) -> Result<BTreeMap<String, String>> {
    params
        .iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow!("--param `{p}`: write it as NAME=VALUE"))
        })
        .collect()
}

/// The exchanges of a cassette served in order to a replay, by host.
struct Replay {
    host: String,
    tape: Arc<Mutex<(Vec<Exchange>, Vec<bool>)>>,
    bases: Arc<Mutex<Vec<(String, String)>>>,
    missed: Arc<Mutex<Vec<String>>>,
}

async fn answer(replay: Arc<Replay>, method: Method, uri: Uri) -> axum::response::Response {
    let target = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
    let bases = replay.bases.lock().map(|b| b.clone()).unwrap_or_default();
    let found = replay.tape.lock().ok().and_then(|mut t| {
        let (tape, used) = &mut *t;
        let at = tape.iter().enumerate().position(|(i, e)| {
            !used[i] && e.host == replay.host && e.method == method.as_str() && e.target == target
        })?;
        used[at] = true;
        Some(tape[at].clone())
    });
    let Some(e) = found else {
        if let Ok(mut m) = replay.missed.lock() {
            m.push(format!("{method} {target} on host `{}`", replay.host));
        }
        return (
            StatusCode::BAD_REQUEST,
            format!("weft spec test: nothing was recorded for {method} {target}"),
        )
            .into_response();
    };
    let mut response = axum::response::Response::builder().status(e.status);
    for (n, v) in &e.headers {
        if let (Ok(hn), Ok(hv)) = (
            HeaderName::try_from(n.as_str()),
            HeaderValue::from_str(&cassette::replay_body(v, &bases)),
        ) {
            response = response.header(hn, hv);
        }
    }
    response
        .body(Body::from(cassette::replay_body(&e.body, &bases)))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// `weft spec test`.
pub(crate) fn test(spec_path: &Path, cassettes: &Path, io: &mut Io<'_>) -> Result<u8> {
    let report = weft_core::load::load_file(spec_path);
    let Some(spec) = report.spec else {
        bail!(
            "{} has errors; `weft spec check {}` lists them",
            spec_path.display(),
            spec_path.display()
        );
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(cassettes)
        .with_context(|| format!("cannot read the cassettes folder {}", cassettes.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut tapes = Vec::new();
    for f in &files {
        let tape = Cassette::load(f)?;
        if tape.connector == spec.id() {
            tapes.push((f.clone(), tape));
        }
    }
    if tapes.is_empty() {
        bail!(
            "no cassette of connector `{}` in {}; record one with `weft spec record CONNECTION RESOURCE --out {}`",
            spec.id(),
            cassettes.display(),
            cassettes.display()
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut failed = 0;
    for (path, tape) in tapes {
        match replay_one(&spec, &tape, &rt) {
            Ok(found) => writeln!(io.out, "✓ {}: {found}", path.display())?,
            Err(e) => {
                failed += 1;
                writeln!(io.out, "✘ {}: {e:#}", path.display())?;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}

/// Replays one cassette; what the read found.
fn replay_one(
    spec: &weft_core::Spec,
    tape: &Cassette,
    rt: &tokio::runtime::Runtime,
) -> Result<String> {
    let file = spec.file();
    let resource = file
        .resources
        .get(&tape.resource)
        .ok_or_else(|| anyhow!("the spec has no resource `{}` any more", tape.resource))?;
    let list = resource
        .list
        .as_ref()
        .ok_or_else(|| anyhow!("resource `{}` can no longer be listed", tape.resource))?;
    let used = vec![false; tape.exchanges.len()];
    let shared = Arc::new(Mutex::new((tape.exchanges.clone(), used)));
    let bases: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let missed: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut overrides = BTreeMap::new();
    // Every host of the spec answers from the recording, so a replay never reaches a network.
    for host in file.hosts.keys() {
        let replay = Arc::new(Replay {
            host: host.clone(),
            tape: shared.clone(),
            bases: bases.clone(),
            missed: missed.clone(),
        });
        let router = axum::Router::new()
            .fallback(move |method: Method, uri: Uri| answer(replay.clone(), method, uri));
        let addr = listen(rt, router)?;
        let url = format!("http://{addr}");
        overrides.insert(host.clone(), url.clone());
        bases
            .lock()
            .map_err(|_| anyhow!("replay state lost"))?
            .push((host.clone(), url));
    }
    // A throwaway credential store: the replay answers without looking at the token.
    // Made new (never one a killed replay left behind), removed when dropped.
    let dir = tempfile::Builder::new()
        .prefix("weft-spec-test-")
        .tempdir()
        .context("cannot make a temporary folder for the replay's credentials")?;
    let mut store =
        SecretStore::open(&dir.path().join("credentials.json"), MasterKey::generate()?)?;
    store.put(
        "connection:replay:tokens",
        &weft_engine::oauth::TokenSet::fixed(Secret::new("replayed".to_owned()), 0)
            .to_sealed_json(),
    )?;
    let http = weft_engine::http::client()?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let keeper = TokenKeeper::new(
        "replay",
        "connection:replay:tokens",
        store,
        None,
        None,
        http.clone(),
        clock.clone(),
    );
    let session = Session::new(
        spec.clone(),
        Hosts::new(file, &overrides)?,
        Limiter::new(file, 1),
        http,
        keeper,
        clock,
    );
    let ctx = RequestContext {
        tenant: tape.tenant.clone().map(|id| Tenant {
            id,
            name: String::new(),
        }),
        cursor: tape.cursor.clone(),
        params: tape.params.clone(),
        ..RequestContext::with_field_defaults(file)
    };
    let mut records = 0u64;
    let mut problems = Vec::new();
    let mut newest: Option<jiff::Timestamp> = None;
    let mut undated = 0u64;
    let outcome = connect::runtime()?.block_on(session.list(&tape.resource, &ctx, |record| {
        records += 1;
        for p in weft_engine::write::check_read(resource, &record) {
            if problems.len() < 5 {
                problems.push(format!("record {records}: {p}"));
            }
        }
        if let Some(inc) = &list.incremental {
            match weft_engine::extract::at_path(&record, &inc.field)
                .and_then(|v| weft_engine::cursor::parse_field(v, inc.field_format))
            {
                Some(t) => newest = newest.max(Some(t)),
                None => undated += 1,
            }
        }
        ControlFlow::Continue(())
    }));
    drop(dir);
    let missed = missed.lock().map(|m| m.clone()).unwrap_or_default();
    if let Some(first) = missed.first() {
        bail!(
            "the spec asked for {first}, which the recording does not have (its paging, parameters or paths changed since the recording; record it again if that is intended)"
        );
    }
    if let Err(e) = outcome {
        bail!("the replayed read failed: {e}");
    }
    let unused = shared
        .lock()
        .map(|t| t.1.iter().filter(|u| !**u).count())
        .unwrap_or(0);
    if unused > 0 {
        bail!(
            "the read stopped with {unused} recorded exchange(s) left unasked (the spec stops paging earlier than the provider did)"
        );
    }
    if records != tape.records {
        bail!(
            "the read gave {records} record(s) where the recording gave {}",
            tape.records
        );
    }
    if !problems.is_empty() {
        bail!(
            "records break the spec's field rules: {}",
            problems.join("; ")
        );
    }
    if undated > 0 {
        bail!(
            "{undated} record(s) have no change time the cursor can read in `{}`",
            list.incremental.as_ref().map_or("", |i| i.field.as_str())
        );
    }
    Ok(match newest {
        Some(t) => format!(
            "{records} record(s) of `{}` in {} exchange(s); next cursor from {t}",
            tape.resource,
            tape.exchanges.len()
        ),
        None => format!(
            "{records} record(s) of `{}` in {} exchange(s)",
            tape.resource,
            tape.exchanges.len()
        ),
    })
}
