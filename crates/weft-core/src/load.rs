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
            diagnostics.push(syntax_error(&err, text));
        }
        return finish(source, diagnostics, None);
    }

    probe_sections(&root, &mut diagnostics);
    let whole: Option<SpecFile> = every_error(
        &Spanned::new(root.span(), DeValue::Table(root.get_ref().clone())),
        &root,
        &mut diagnostics,
    );

    let mut file = None;
    if let Some(spec_file) = whole
        && diagnostics.iter().all(|d| !d.is_error())
    {
        let mut found = crate::validate::validate(&spec_file, &stem);
        for d in &mut found {
            if d.span.is_none() {
                d.span = span_of(&root, &d.key);
            }
        }
        diagnostics.extend(found);
        file = Some(spec_file);
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

/// The most errors reported for one part of a file.
const ERRORS_PER_PART: usize = 32;

/// Deserializes `value`; after an error, leaves out the entry the error is about and tries
/// again, so that every bad value of a table is reported rather than the first one only.
/// Returns the value when it had no error.
fn every_error<T: DeserializeOwned>(
    value: &Spanned<DeValue<'_>>,
    root: &Spanned<DeTable<'_>>,
    out: &mut Vec<Diagnostic>,
) -> Option<T> {
    let mut current = value.clone();
    let mut removed = Vec::new();
    for attempt in 0..ERRORS_PER_PART {
        let err = match deserialize::<T>(&current) {
            Ok(parsed) => return (attempt == 0).then_some(parsed),
            Err(err) => err,
        };
        let missing = explain(err.message().trim().trim_end_matches('.')).missing_key;
        if missing.as_ref().is_some_and(|key| removed.contains(key)) {
            // Missing only because it was left out here.
            break;
        }
        out.push(from_toml_error(&err, Some(root)));
        // A missing key cannot be left out to find more; nor can an error without a place.
        let Some(span) = err.span().filter(|_| missing.is_none()) else {
            break;
        };
        match remove_at(current.get_mut(), &span) {
            Some(key) => removed.push(key),
            None => break,
        }
    }
    None
}

/// Removes from `value` the innermost table entry or array item that `span` lies in, and
/// returns the key of the entry (empty for an array item); `None` when there is none.
fn remove_at(value: &mut DeValue<'_>, span: &Range<usize>) -> Option<String> {
    // Tables opened by a `[header]` do not span their contents, so every child is searched.
    let holds = |outer: Range<usize>| {
        outer != (0..0) && outer.start <= span.start && span.end <= outer.end.max(outer.start + 1)
    };
    match value {
        DeValue::Table(table) => {
            let mut gone = None;
            for (key, child) in table.iter_mut() {
                if let Some(inner) = remove_at(child.get_mut(), span) {
                    return Some(inner);
                }
                if holds(key.span()) || holds(child.span()) {
                    gone = Some(key.get_ref().to_string());
                    break;
                }
            }
            let gone = gone?;
            table.remove(gone.as_str()).map(|_| gone)
        }
        DeValue::Array(items) => {
            let mut gone = None;
            for (i, item) in items.iter_mut().enumerate() {
                if let Some(inner) = remove_at(item.get_mut(), span) {
                    return Some(inner);
                }
                if holds(item.span()) {
                    gone = Some(i);
                    break;
                }
            }
            let gone = gone?;
            let mut kept = toml::de::DeArray::new();
            for (i, item) in items.iter().enumerate() {
                if i != gone {
                    kept.push(item.clone());
                }
            }
            *items = kept;
            Some(String::new())
        }
        _ => None,
    }
}

/// Deserializes each part that has a type of its own, so that the problems of every part are found.
fn probe_sections(root: &Spanned<DeTable<'_>>, diagnostics: &mut Vec<Diagnostic>) {
    fn probe<T: DeserializeOwned>(
        value: &Spanned<DeValue<'_>>,
        root: &Spanned<DeTable<'_>>,
        out: &mut Vec<Diagnostic>,
    ) {
        every_error::<T>(value, root, out);
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

/// A TOML syntax error as a diagnostic; a duplicate names the key it is about.
fn syntax_error(err: &toml::de::Error, text: &str) -> Diagnostic {
    let mut d = from_toml_error(err, None)
        .with_hint("fix the TOML syntax; the rest of the file is checked once it parses");
    let named = d.span.clone().and_then(|span| text.get(span));
    if let Some(name) = named.filter(|name| d.message == "duplicate key" && !name.is_empty()) {
        d.message = format!("duplicate key `{name}`");
        d.hint =
            Some("a key, or a [table], may be defined only once; remove or merge one".to_owned());
    }
    d
}

/// Turns a TOML or serde error into a diagnostic in the words of a TOML file, with the key
/// path at its span and a hint: "did you mean" for unknown keys and values, the key to add
/// for a missing one, the quotes to add or remove for a wrong type.
fn from_toml_error(err: &toml::de::Error, root: Option<&Spanned<DeTable<'_>>>) -> Diagnostic {
    let raw = err.message().trim().trim_end_matches('.');
    let explained = explain(raw);
    let mut span = err.span();
    // An unknown key inside a tagged table (`pagination = { style = "page", … }`) is reported
    // at the whole table: narrow it to the key itself.
    if let (Some(root), Some(within), Some(name)) = (root, &span, &explained.unknown_key)
        && let Some(at) = key_within(root, name, within)
    {
        span = Some(at);
    }
    let key = match (root, &span) {
        (Some(root), Some(span)) => path_at(root, span),
        _ => String::new(),
    };
    let hint = match &explained.missing_key {
        Some(name) if key.is_empty() => Some(format!("add `{name}` at the top level of the file")),
        Some(name) => Some(format!("add `{name}` to `{key}`")),
        None => explained.hint,
    };
    let mut d = Diagnostic::error(key, explained.message);
    d.hint = hint;
    if let Some(span) = span {
        d = d.with_span(span);
    }
    d
}

/// A serde message said in the words of a TOML file.
struct Explained {
    message: String,
    hint: Option<String>,
    /// The key an "unknown field" message is about.
    unknown_key: Option<String>,
    /// The key a "missing field" message is about.
    missing_key: Option<String>,
}

fn explain(message: &str) -> Explained {
    let mut out = Explained {
        message: message.to_owned(),
        hint: None,
        unknown_key: None,
        missing_key: None,
    };
    if let Some(rest) = message.strip_prefix("unknown field `") {
        if let Some((given, expected)) = rest.split_once('`') {
            out.message = format!("unknown key `{given}`");
            out.hint = Some(suggestion(given, &quoted(expected), "remove this key"));
            out.unknown_key = Some(given.to_owned());
        }
    } else if let Some(rest) = message.strip_prefix("unknown variant `") {
        if let Some((given, expected)) = rest.split_once('`') {
            out.message = format!("unknown value `{given}`");
            out.hint = Some(suggestion(
                given,
                &quoted(expected),
                "no value is accepted here",
            ));
        }
    } else if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some((name, _)) = rest.split_once('`') {
            out.message = format!("missing key `{name}`");
            out.missing_key = Some(name.to_owned());
        }
    } else if let Some((head, rest)) = message.split_once(": ") {
        if let ("invalid type" | "invalid value", Some((found, expected))) =
            (head, rest.rsplit_once(", expected "))
        {
            let found = found_plain(found);
            let expected = expected_plain(expected);
            out.hint = match (found.split(' ').next(), expected.as_str()) {
                (Some("string"), "a boolean") => {
                    Some("write true or false, without quotes".to_owned())
                }
                (Some("string"), e) if e.contains("integer") => {
                    Some("write a number, without quotes".to_owned())
                }
                (Some("integer" | "float" | "boolean"), "a string") => {
                    Some("put the value in quotes".to_owned())
                }
                _ => None,
            };
            out.message = format!("{head}: {found}, expected {expected}");
        }
    } else if message.starts_with("data did not match any variant of untagged enum") {
        out.message = "the value has none of the accepted types".to_owned();
        out.hint = Some("see the reference for the types this key accepts".to_owned());
    }
    out
}

/// The names in backticks of "expected one of `a`, `b`" or "expected `a` or `b`".
fn quoted(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// What serde says it found, in TOML words: `sequence` is an array, `map` a table.
fn found_plain(found: &str) -> String {
    match found {
        "sequence" => "array".to_owned(),
        "map" => "table".to_owned(),
        _ => found.replacen("floating point", "float", 1),
    }
}

/// What serde says it expected, in TOML words.
fn expected_plain(expected: &str) -> String {
    let s = match expected {
        "i8" | "i16" | "i32" | "i64" => "an integer",
        "u8" => "an integer from 0 to 255",
        "u16" => "an integer from 0 to 65535",
        "u32" => "an integer from 0 to 4294967295",
        "u64" => "a non-negative integer",
        "f32" | "f64" => "a number",
        "a sequence" => "an array",
        "a map" => "a table",
        e if e.starts_with("struct ") || e.starts_with("internally tagged enum ") => "a table",
        e => e,
    };
    s.to_owned()
}

/// "did you mean `pagination`?" when one of `expected` is close to `given`, else the list of
/// them, else `otherwise`.
pub(crate) fn suggestion(given: &str, expected: &[&str], otherwise: &str) -> String {
    // Close: a few edits away, or a prefix (`int` for `integer`); the fewest edits win.
    let close = expected
        .iter()
        .map(|candidate| (strsim::damerau_levenshtein(given, candidate), *candidate))
        .filter(|(distance, candidate)| {
            *distance <= given.len().max(3) / 2
                || (given.len() >= 3 && candidate.starts_with(given))
        })
        .min();
    match close {
        Some((_, candidate)) => format!("did you mean `{candidate}`?"),
        None if expected.is_empty() => otherwise.to_owned(),
        None => format!("expected one of: {}", expected.join(", ")),
    }
}

/// The span of the key named `name` that lies within `within`, the least deeply nested one
/// when there are several (an unknown `path` beside a nested `stop = { path = … }`).
fn key_within(
    root: &Spanned<DeTable<'_>>,
    name: &str,
    within: &Range<usize>,
) -> Option<Range<usize>> {
    fn search(
        value: &DeValue<'_>,
        name: &str,
        within: &Range<usize>,
        depth: usize,
        best: &mut Option<(usize, Range<usize>)>,
    ) {
        match value {
            DeValue::Table(table) => {
                for (key, child) in table {
                    let span = key.span();
                    let inside = within.start <= span.start && span.end <= within.end;
                    if inside && key.get_ref() == name && best.as_ref().is_none_or(|b| depth < b.0)
                    {
                        *best = Some((depth, span));
                    }
                    search(child.get_ref(), name, within, depth + 1, best);
                }
            }
            DeValue::Array(items) => {
                for item in items.iter() {
                    search(item.get_ref(), name, within, depth + 1, best);
                }
            }
            _ => {}
        }
    }
    let mut best = None;
    search(
        &DeValue::Table(root.get_ref().clone()),
        name,
        within,
        0,
        &mut best,
    );
    best.map(|(_, span)| span)
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
    path.push_str(&key_segment(key));
}

/// `key` as one segment of a dotted key path: bare when TOML would allow it bare, else quoted
/// as a TOML basic string (`"me.v2"`, `"eu[1]"`, `""`), so a path names each key unambiguously.
pub(crate) fn key_segment(key: &str) -> std::borrow::Cow<'_, str> {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        key.into()
    } else {
        format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\"")).into()
    }
}

/// The span of the value at a dotted key path such as `resources.invoices.list.path` or
/// `fields[2].id`; falls back to the nearest ancestor that exists.
pub(crate) fn span_of(root: &Spanned<DeTable<'_>>, key: &str) -> Option<Range<usize>> {
    let mut best = None;
    let mut current = DeValue::Table(root.get_ref().clone());
    for segment in split_path(key) {
        let next = match (&current, segment) {
            (DeValue::Table(t), Segment::Key(k)) => t.get(k.as_str()).cloned(),
            (DeValue::Array(a), Segment::Index(i)) => a.get(i).cloned(),
            _ => None,
        };
        let Some(next) = next else { break };
        // Point at the key of a table entry when the value is a whole table (its span is large).
        best = Some(next.span());
        current = next.into_inner();
    }
    best.or(Some(0..0))
}

enum Segment {
    Key(String),
    Index(usize),
}

/// The segments of a dotted key path as [`key_segment`] writes them: bare keys, quoted keys
/// (which may hold `.`, `[` or nothing), and `[n]` indices.
fn split_path(key: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut chars = key.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {}
            '"' => {
                let mut name = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => name.extend(chars.next()),
                        c => name.push(c),
                    }
                }
                out.push(Segment::Key(name));
            }
            '[' => {
                let index: String = chars.by_ref().take_while(|c| *c != ']').collect();
                if let Ok(i) = index.parse() {
                    out.push(Segment::Index(i));
                }
            }
            c => {
                let mut name = String::from(c);
                while let Some(c) = chars.next_if(|c| !matches!(c, '.' | '[')) {
                    name.push(c);
                }
                out.push(Segment::Key(name));
            }
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
    fn quoted_keys_are_found_by_their_path() {
        let text = "[hosts]\napi = \"a\"\n\"eu.1[x]\" = \"b\"\n\"\" = \"c\"\n";
        let (root, errors) = DeTable::parse_recoverable(text);
        assert!(errors.is_empty());
        for (key, value) in [("eu.1[x]", "\"b\""), ("", "\"c\"")] {
            let path = format!("hosts.{}", key_segment(key));
            let span = span_of(&root, &path).unwrap();
            assert_eq!(&text[span.clone()], value, "{path}");
            assert_eq!(path_at(&root, &span), path);
        }
        assert_eq!(key_segment("say \"hi\""), "\"say \\\"hi\\\"\"");
    }

    #[test]
    fn suggests_close_names() {
        let m = explain("unknown field `pagnation`, expected one of `path`, `pagination`");
        assert_eq!(m.message, "unknown key `pagnation`");
        assert_eq!(m.hint.unwrap(), "did you mean `pagination`?");
        let m = explain("unknown variant `int`, expected one of `text`, `integer`");
        assert_eq!(m.hint.unwrap(), "did you mean `integer`?");
        let m = explain("unknown field `scope`, expected `scope-separator` or `scopes`");
        assert_eq!(m.hint.unwrap(), "did you mean `scopes`?");
        let m = explain("unknown field `x`, there are no fields");
        assert_eq!(m.hint.unwrap(), "remove this key");
    }

    #[test]
    fn says_types_in_toml_words() {
        let m = explain("invalid type: string \"25\", expected u32");
        assert_eq!(
            m.message,
            "invalid type: string \"25\", expected an integer from 0 to 4294967295"
        );
        assert_eq!(m.hint.unwrap(), "write a number, without quotes");
        let m = explain("invalid type: sequence, expected a map");
        assert_eq!(m.message, "invalid type: array, expected a table");
    }
}
