//! `weft connectors list|show`.

use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;
use weft_core::{DEFAULT_CALLBACK_PORT, callback_url, docs};

use crate::{Io, specs};

#[derive(Debug, Subcommand)]
pub(crate) enum ConnectorsCmd {
    /// List every connector: built-in ones and those in WEFT_SPEC_PATH.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show a connector: setup steps with the callback URL filled in, form fields and their
    /// rules, authentication, limits and resources.
    Show {
        /// Connector id (or a former name, such as `mavenlink`).
        id: String,
        /// Print JSON (the whole spec) instead of text.
        #[arg(long, conflicts_with = "markdown")]
        json: bool,
        /// Print the Markdown reference itself (as in docs/connectors/) instead of text laid
        /// out for a terminal.
        #[arg(long)]
        markdown: bool,
        /// Port of the local callback server, as in the callback URL.
        #[arg(long, default_value_t = DEFAULT_CALLBACK_PORT, value_parser = clap::value_parser!(u16).range(1..))]
        callback_port: u16,
    },
}

#[derive(Serialize)]
struct Summary<'a> {
    id: &'a str,
    name: &'a str,
    former_names: &'a [String],
    version: &'a str,
    auth: Vec<&'static str>,
    tenants: bool,
    resources: Vec<&'a str>,
}

pub(crate) fn run(cmd: ConnectorsCmd, io: &mut Io<'_>) -> Result<u8> {
    match cmd {
        ConnectorsCmd::List { json } => {
            let specs = specs::catalogue()?;
            let rows: Vec<Summary<'_>> = specs
                .iter()
                .map(|s| {
                    let f = s.file();
                    let mut auth = Vec::new();
                    if f.auth.oauth2.is_some() {
                        auth.push("oauth2");
                    }
                    if f.auth.client_credentials.is_some() {
                        auth.push("client-credentials");
                    }
                    if f.auth.token.is_some() {
                        auth.push("token");
                    }
                    Summary {
                        id: &f.id,
                        name: &f.name,
                        former_names: &f.former_names,
                        version: &f.version,
                        auth,
                        tenants: f.tenants.is_some(),
                        resources: f.resources.keys().map(String::as_str).collect(),
                    }
                })
                .collect();
            if json {
                serde_json::to_writer_pretty(&mut *io.out, &rows)?;
                writeln!(io.out)?;
            } else {
                let mut table =
                    crate::table::Columns::new(&["ID", "NAME", "VERSION", "RESOURCES"]).right(&[3]);
                for r in &rows {
                    let mut name = r.name.to_owned();
                    if !r.former_names.is_empty() {
                        name = format!("{name} (was {})", r.former_names.join(", "));
                    }
                    table.row([
                        r.id.to_owned(),
                        name,
                        r.version.to_owned(),
                        r.resources.len().to_string(),
                    ]);
                }
                table.write(io.out)?;
            }
            Ok(0)
        }
        ConnectorsCmd::Show {
            id,
            json,
            markdown,
            callback_port,
        } => {
            let spec = specs::find(&id)?;
            let url = callback_url(callback_port);
            if json {
                #[derive(Serialize)]
                struct Shown<'a> {
                    callback_url: &'a str,
                    spec: &'a weft_core::model::SpecFile,
                }
                serde_json::to_writer_pretty(
                    &mut *io.out,
                    &Shown {
                        callback_url: &url,
                        spec: spec.file(),
                    },
                )?;
                writeln!(io.out)?;
            } else if markdown {
                write!(io.out, "{}", docs::markdown(&spec, &url))?;
            } else {
                let text = crate::render::markdown_to_text(&docs::markdown(&spec, &url));
                write!(io.out, "{text}")?;
            }
            Ok(0)
        }
    }
}
