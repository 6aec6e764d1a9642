//! `weft spec check`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;
use weft_core::{Diagnostic, load_file};

use crate::{Io, specs};

#[derive(Debug, Subcommand)]
pub(crate) enum SpecCmd {
    /// Check spec files (or directories of them) and print every problem with its location.
    ///
    /// Exits 0 when all are valid, 1 when any has an error (or a warning, with --deny-warnings).
    Check {
        /// Spec files or directories holding them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Treat warnings as errors.
        #[arg(long)]
        deny_warnings: bool,
        /// Print one JSON object per file instead of rendered diagnostics.
        #[arg(long)]
        json: bool,
    },
    /// Record a real read of a resource through a connection as a cassette: every exchange
    /// with the API, secrets and personal fields redacted, for `weft spec test` to replay.
    Record(crate::cmd_cassette::RecordArgs),
    /// Replay a spec's recorded cassettes through the engine, offline: paging, extraction, the
    /// cursor and field rules checked against what the provider answered.
    Test {
        /// The spec file.
        spec: PathBuf,
        /// The folder of cassettes (`weft spec record … --out DIR`).
        #[arg(long, default_value = "cassettes")]
        cassettes: PathBuf,
    },
}

#[derive(Serialize)]
struct FileResult<'a> {
    file: &'a str,
    valid: bool,
    diagnostics: Vec<Located<'a>>,
}

#[derive(Serialize)]
struct Located<'a> {
    line: usize,
    column: usize,
    #[serde(flatten)]
    diagnostic: &'a Diagnostic,
}

pub(crate) fn run(
    cmd: SpecCmd,
    workspace: Option<&std::path::Path>,
    io: &mut Io<'_>,
) -> Result<u8> {
    let (paths, deny_warnings, json) = match cmd {
        SpecCmd::Check {
            paths,
            deny_warnings,
            json,
        } => (paths, deny_warnings, json),
        SpecCmd::Record(args) => return crate::cmd_cassette::record(&args, workspace, io),
        SpecCmd::Test { spec, cassettes } => {
            return crate::cmd_cassette::test(&spec, &cassettes, io);
        }
    };
    let mut files = Vec::new();
    for path in &paths {
        files.extend(specs::spec_files(path)?);
    }
    let (mut errors, mut warnings) = (0, 0);
    let mut results = Vec::new();
    for file in &files {
        let report = load_file(file);
        let e = report.diagnostics.iter().filter(|d| d.is_error()).count();
        let w = report.warning_count();
        errors += e;
        warnings += w;
        if json {
            let located = report
                .diagnostics
                .iter()
                .map(|d| {
                    let at = report
                        .source
                        .line_col(d.span.as_ref().map_or(0, |s| s.start));
                    Located {
                        line: at.line,
                        column: at.column,
                        diagnostic: d,
                    }
                })
                .collect();
            let valid = e == 0 && !(deny_warnings && w > 0);
            let result = FileResult {
                file: report.source.name(),
                valid,
                diagnostics: located,
            };
            results.push(serde_json::to_string(&result)?);
        } else {
            write!(io.err, "{}", report.render())?;
        }
    }
    if json {
        for line in results {
            writeln!(io.out, "{line}")?;
        }
    } else {
        writeln!(
            io.err,
            "checked {} spec file{}: {errors} error{}, {warnings} warning{}",
            files.len(),
            if files.len() == 1 { "" } else { "s" },
            if errors == 1 { "" } else { "s" },
            if warnings == 1 { "" } else { "s" },
        )?;
    }
    Ok(u8::from(errors > 0 || (deny_warnings && warnings > 0)))
}
