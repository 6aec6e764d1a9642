//! A workspace's flows: where they are (`flows/NAME.toml` beside `weft.toml`), which exist, and
//! which tenant each connection of a flow addresses. Shared by `weft sync|flow|tables` and the
//! console, so both find and run flows by the same rules.

use std::path::{Path, PathBuf};

use crate::flow::Flow;
use crate::request::Tenant;
use crate::workspace::Connection;

/// The file of flow `name` in the workspace at `dir` (which may not exist).
pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join("flows").join(format!("{name}.toml"))
}

/// The names of the workspace's flows (the `.toml` files of `flows/`), sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("flows"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let p = e.path();
                    (p.extension().is_some_and(|x| x == "toml"))
                        .then(|| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
                        .flatten()
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The file of flow `name`, which must exist; otherwise a message naming the flows there are.
pub fn find(dir: &Path, name: &str) -> Result<PathBuf, String> {
    let file = path(dir, name);
    // A name is one file stem: no separators, nothing that leaves `flows/`.
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\'])
        && !name.contains('\0');
    if plain && file.is_file() {
        return Ok(file);
    }
    let known = names(dir);
    Err(format!(
        "no flow `{name}` ({} does not exist); {}",
        file.display(),
        if known.is_empty() {
            "there are none yet: `weft init --template NAME` writes one (a NAME that is no template is answered with the list of templates)".to_owned()
        } else {
            format!("the flows are: {}", known.join(", "))
        }
    ))
}

/// The tenant connection `connection` addresses as `alias` of `flow`, for a connector with
/// tenants: the one the flow names, else the connection's only one.
pub fn tenant(flow: &Flow, alias: &str, connection: &Connection) -> Result<Tenant, String> {
    let name = flow.connection_name(alias);
    let tenants = &connection.tenants;
    let wanted = flow
        .file
        .connections
        .get(alias)
        .and_then(|c| c.tenant.clone());
    let chosen = match &wanted {
        Some(id) => tenants.iter().find(|t| &t.id == id).ok_or_else(|| {
            format!(
                "flow `{}` names tenant {id} for `{alias}`, which connection `{name}` does not reach; run `weft connection authorize {name}` and select it",
                flow.name
            )
        })?,
        None => match tenants.as_slice() {
            [only] => only,
            [] => {
                return Err(format!(
                    "connection `{name}` has no organisation yet; run `weft connection authorize {name}`"
                ));
            }
            many => {
                return Err(format!(
                    "connection `{name}` reaches {} organisations; set `tenant` under [connections.{alias}] in {} to one of: {}",
                    many.len(),
                    flow.path.display(),
                    many.iter()
                        .map(|t| format!("{} ({})", t.id, t.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        },
    };
    Ok(Tenant {
        id: chosen.id.clone(),
        name: chosen.name.clone(),
    })
}

/// How one run of a flow is asked for.
#[derive(Default)]
pub struct RunOptions<'a> {
    /// Run only this stream.
    pub stream: Option<String>,
    /// Compute and report, write nothing.
    pub dry_run: bool,
    /// When another run holds the flow, wait at most this long (refuse at once when `None`).
    pub wait: Option<std::time::Duration>,
    /// Told what the run is doing as it goes.
    pub progress: Option<&'a (dyn Fn(&str) + Sync)>,
}

/// Why [`run`] did not give a report.
#[derive(Debug, thiserror::Error)]
pub enum FlowRunError {
    /// The organisation a connection should address cannot be chosen.
    #[error("{0}")]
    Tenant(String),
    /// The run failed as a whole (or another run holds the flow).
    #[error(transparent)]
    Run(#[from] crate::run::RunError),
}

/// Runs `flow` once over its connections, opened by alias (`opened`), as `weft sync run` does:
/// each connection addressing the tenant [`tenant`] picks, under the flow lock, against the
/// state database `state`, on `clock`.
pub async fn run(
    flow: &Flow,
    opened: &std::collections::BTreeMap<String, crate::connect::Opened>,
    state: &crate::state::State,
    clock: &dyn crate::limits::Clock,
    options: RunOptions<'_>,
) -> Result<crate::run::Report, FlowRunError> {
    let mut endpoints = std::collections::BTreeMap::new();
    for (alias, o) in opened {
        let tenant = match o.session.spec().file().tenants {
            Some(_) => Some(tenant(flow, alias, &o.connection).map_err(FlowRunError::Tenant)?),
            None => None,
        };
        endpoints.insert(
            alias.clone(),
            crate::run::Endpoint {
                session: &o.session,
                tenant,
            },
        );
    }
    let run = crate::run::Run {
        flow,
        endpoints,
        state,
        clock,
        dry_run: options.dry_run,
        only: options.stream,
        wait: options.wait,
        progress: options.progress,
    };
    Ok(run.run().await?)
}

/// Whether a run of `flow` addresses tenant `id`: one of its connections addresses it (see
/// [`tenant`]). `Err` names the tenants it does address, for a message.
pub fn addresses(
    flow: &Flow,
    connections: &indexmap::IndexMap<String, Connection>,
    id: &str,
) -> Result<(), String> {
    let mut addressed = Vec::new();
    for alias in flow.file.connections.keys() {
        let Some(connection) = connections.get(&flow.connection_name(alias)) else {
            continue;
        };
        if let Ok(t) = tenant(flow, alias, connection) {
            if t.id == id {
                return Ok(());
            }
            addressed.push(format!("{} ({}, as `{alias}`)", t.id, t.name));
        }
    }
    Err(if addressed.is_empty() {
        format!(
            "flow `{}` addresses no tenant {id}: none of its connections reaches organisations",
            flow.name
        )
    } else {
        format!(
            "flow `{}` addresses no tenant {id}; it addresses {}",
            flow.name,
            addressed.join(", ")
        )
    })
}
