//! The loader: TOML text → [`Spec`], with every problem located.
//!
//! It parses with spans, deserializes each section, each resource operation and each list entry
//! on its own (so one bad section does not hide the others), deserializes the whole file once
//! more (for the problems that only show as a whole), then runs [`crate::validate`]. Nothing in
//! here panics on any input.

use std::ops::Range;
use std::path::Path;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue, ValueDeserializer};

use crate::diagnostic::{Diagnostic, Severity, SourceFile};
use crate::model::{Budget, Field, Operation, RecordField, Resource, SetupStep, SpecFile};

/// A spec that loaded with no errors (warnings may remain).
#[derive(Debug, Clone)]
pub struct Spec {
    file: SpecFile,
    source: SourceFile,
}

impl Spec {
    /// The spec's model.
    pub fn file(&self) -> &SpecFile {
        &self.file
    }

    /// The spec's id.
    pub fn id(&self) -> &str {
        &self.file.id
    }

    /// The file it came from.
    pub fn source(&self) -> &SourceFile {
        &self.source
    }
}

/// The outcome of loading one file: its diagnostics and, when there was no error, the spec.
#[derive(Debug, Clone)]
pub struct Report {
    /// The file, for rendering.
    pub source: SourceFile,
    /// Every problem found, errors first, each in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The spec, present when no diagnostic is an error.
    pub spec: Option<Spec>,
}

impl Report {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    /// Number of warnings.
    pub fn warning_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| !d.is_error()).count()
    }

    /// All diagnostics rendered rustc-style, one after the other.
    pub fn render(&self) -> String {
        self.diagnostics
            .iter()
            .map(|d| self.source.render(d))
            .collect()
    }
}

/// Loads a spec from text. `name` is the path shown in diagnostics; its file stem must equal the spec id.
pub fn load_str(name: &str, text: &str) -> Report {
    let source = SourceFile::new(name, text);
    let mut diagnostics = Vec::new();
    let stem = Path::new(name)
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_owned();

    let (root, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for err in syntax {
            diagnostics.push(
                from_toml_error(&err, None).with_hint(
                    "fix the TOML syntax; the rest of the file is checked once it parses",
                ),
            );
        }
        return finish(source, diagnostics, None);
    }

    probe_sections(&root, &mut diagnostics);
    let whole: Option<SpecFile> = match deserialize(&Spanned::new(
        root.span(),
        DeValue::Table(root.get_ref().clone()),
    )) {
        Ok(file) => Some(file),
        Err(err) => {
            diagnostics.push(from_toml_error(&err, Some(&root)));
            None
        }
    };

    let mut file = None;
    if let Some(spec_file) = whole {
        if diagnostics.iter().all(|d| !d.is_error()) {
            let mut found = crate::validate::validate(&spec_file, &stem);
            for d in &mut found {
                if d.span.is_none() {
                    d.span = span_of(&root, &d.key);
                }
            }
            diagnostics.extend(found);
            file = Some(spec_file);
        }
    }
    finish(source, diagnostics, file)
}

/// Loads a spec file from disk; a file that cannot be read is reported as a diagnostic too.
pub fn load_file(path: &Path) -> Report {
    let name = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => load_str(&name, &text),
            Err(err) => {
                let offset = err.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(err.as_bytes()).into_owned();
                let d = Diagnostic::error("", "the file is not valid UTF-8")
                    .with_span(offset..offset + 1)
                    .with_hint("save the spec as UTF-8");
                finish(SourceFile::new(name, text), vec![d], None)
            }
        },
        Err(err) => {
            let d = Diagnostic::error("", format!("cannot read the file: {err}"))
                .with_hint("check the path and its permissions");
            finish(SourceFile::new(name, String::new()), vec![d], None)
        }
    }
}

fn finish(source: SourceFile, mut diagnostics: Vec<Diagnostic>, file: Option<SpecFile>) -> Report {
    // Same problem reported by two passes: keep one.
    let mut seen = std::collections::HashSet::new();
    diagnostics.retain(|d| seen.insert((d.span.clone(), d.message.clone())));
    diagnostics.sort_by_key(|d| (d.severity, d.span.as_ref().map_or(0, |s| s.start)));
    let spec = match file {
        Some(file) if diagnostics.iter().all(|d| d.severity == Severity::Warning) => Some(Spec {
            file,
            source: source.clone(),
        }),
        _ => None,
    };
    Report {
        source,
        diagnostics,
        spec,
    }
}

fn deserialize<T: DeserializeOwned>(value: &Spanned<DeValue<'_>>) -> Result<T, toml::de::Error> {
    T::deserialize(ValueDeserializer::from(value.clone()))
}

/// Deserializes each part that has a type of its own, so that the problems of every part are found.
fn probe_sections(root: &Spanned<DeTable<'_>>, diagnostics: &mut Vec<Diagnostic>) {
    fn probe<T: DeserializeOwned>(
        value: &Spanned<DeValue<'_>>,
        root: &Spanned<DeTable<'_>>,
        out: &mut Vec<Diagnostic>,
    ) {
        if let Err(err) = deserialize::<T>(value) {
            out.push(from_toml_error(&err, Some(root)));
        }
    }
    fn each_entry<T: DeserializeOwned>(
        value: &Spanned<DeValue<'_>>,
        root: &Spanned<DeTable<'_>>,
        out: &mut Vec<Diagnostic>,
    ) {
        if let DeValue::Array(items) = value.get_ref() {
            for item in items.iter() {
                probe::<T>(item, root, out);
            }
        }
    }
    for (key, value) in root.get_ref() {
        match key.get_ref().as_ref() {
            "fields" => each_entry::<Field>(value, root, diagnostics),
            "setup" => each_entry::<SetupStep>(value, root, diagnostics),
            "limits" => {
                if let Some(budget) = table(value).and_then(|t| t.get("budget")) {
                    each_entry::<Budget>(budget, root, diagnostics);
                }
            }
            "resources" => {
                let Some(resources) = table(value) else {
                    continue;
                };
                for (_, resource) in resources {
                    probe::<Resource>(resource, root, diagnostics);
                    let Some(parts) = table(resource) else {
                        continue;
                    };
                    for (part, value) in parts {
                        match part.get_ref().as_ref() {
                            "list" | "get" | "create" | "update" => {
                                probe::<Operation>(value, root, diagnostics)
                            }
                            "fields" => {
                                for (_, field) in table(value).into_iter().flatten() {
                                    probe::<RecordField>(field, root, diagnostics);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

fn table<'a, 'i>(value: &'a Spanned<DeValue<'i>>) -> Option<&'a DeTable<'i>> {
    match value.get_ref() {
        DeValue::Table(t) => Some(t),
        _ => None,
    }
}

/// Turns a TOML or serde error into a diagnostic, with the key path at its span and a
/// "did you mean" hint for unknown keys and variants.
fn from_toml_error(err: &toml::de::Error, root: Option<&Spanned<DeTable<'_>>>) -> Diagnostic {
    let message = err.message().trim().trim_end_matches('.').to_owned();
    let key = match (root, err.span()) {
        (Some(root), Some(span)) => path_at(root, &span),
        _ => String::new(),
    };
    let mut d = Diagnostic::error(key, message.clone());
    if let Some(span) = err.span() {
        d = d.with_span(span);
    }
    if let Some(hint) = suggestion(&message) {
        d = d.with_hint(hint);
    }
    d
}

/// From "unknown field `pagnation`, expected one of `path`, `pagination`": "did you mean `pagination`?".
fn suggestion(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("unknown variant `"))?;
    let (given, rest) = rest.split_once('`')?;
    let expected: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let best = expected
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(given, candidate), *candidate))
        .min()?;
    if best.0 <= given.len().max(3) / 2 {
        Some(format!("did you mean `{}`?", best.1))
    } else if expected.is_empty() {
        Some("remove this key".to_owned())
    } else {
        Some(format!("expected one of: {}", expected.join(", ")))
    }
}

/// The dotted key path of the innermost key or value covering `span`.
///
/// Tables opened by a `[header]` do not span their contents, so the search visits every node
/// rather than only those whose span covers the target.
pub(crate) fn path_at(root: &Spanned<DeTable<'_>>, span: &Range<usize>) -> String {
    fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
        outer.start <= inner.start && inner.end <= outer.end.max(outer.start + 1)
    }
    /// Returns (depth-first path, exact) for the best match below `value`.
    fn search(value: &DeValue<'_>, span: &Range<usize>, path: &mut String) -> bool {
        match value {
            DeValue::Table(table) => {
                for (key, child) in table {
                    let len = path.len();
                    push_key(path, key.get_ref());
                    if covers(&key.span(), span) || search(child.get_ref(), span, path) {
                        return true;
                    }
                    if covers(&child.span(), span)
                        && !matches!(child.get_ref(), DeValue::Table(_) | DeValue::Array(_))
                    {
                        return true;
                    }
                    if covers(&child.span(), span) && child.span() != (0..0) {
                        // A table or array covering the span with no deeper match: the error is about it.
                        return true;
                    }
                    path.truncate(len);
                }
                false
            }
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    if search(item.get_ref(), span, path) || covers(&item.span(), span) {
                        return true;
                    }
                    path.truncate(len);
                }
                false
            }
            _ => false,
        }
    }
    let mut path = String::new();
    if search(&DeValue::Table(root.get_ref().clone()), span, &mut path) {
        path
    } else {
        String::new()
    }
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    if key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !key.is_empty()
    {
        path.push_str(key);
    } else {
        path.push_str(&format!("{key:?}"));
    }
}

/// The span of the value at a dotted key path such as `resources.invoices.list.path` or
/// `fields[2].id`; falls back to the nearest ancestor that exists.
pub(crate) fn span_of(root: &Spanned<DeTable<'_>>, key: &str) -> Option<Range<usize>> {
    let mut best = None;
    let mut current = DeValue::Table(root.get_ref().clone());
    for segment in split_path(key) {
        let next = match (&current, segment) {
            (DeValue::Table(t), Segment::Key(k)) => t.get(k).cloned(),
            (DeValue::Array(a), Segment::Index(i)) => a.get(i).cloned(),
            _ => None,
        };
        let Some(next) = next else { break };
        // Point at the key of a table entry when the value is a whole table (its span is large).
        best = Some(next.span());
        current = next.into_inner();
    }
    best.or_else(|| Some(0..0))
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

fn split_path(key: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    for part in key.split('.').filter(|p| !p.is_empty()) {
        let (name, mut rest) = part.split_once('[').map_or((part, ""), |(n, r)| (n, r));
        let name = name.trim_matches('"');
        if !name.is_empty() {
            out.push(Segment::Key(name));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.parse() {
                out.push(Segment::Index(i));
            }
            rest = after.trim_start_matches('[');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_spans_agree() {
        let text = "a = 1\n[b]\nc = [ { d = 2 }, { d = 3 } ]\n";
        let (root, errors) = DeTable::parse_recoverable(text);
        assert!(errors.is_empty());
        let span = span_of(&root, "b.c[1].d").unwrap();
        assert_eq!(&text[span.clone()], "3");
        assert_eq!(path_at(&root, &span), "b.c[1].d");
    }

    #[test]
    fn suggests_close_names() {
        let m = "unknown field `pagnation`, expected one of `path`, `pagination`";
        assert_eq!(suggestion(m).unwrap(), "did you mean `pagination`?");
    }
}
