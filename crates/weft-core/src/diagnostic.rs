//! Located problems in a spec file, and their rustc-style rendering.

use std::fmt;
use std::ops::Range;

use codespan_reporting::diagnostic::{Diagnostic as CsDiagnostic, Label};
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term::{self, Config};
use serde::Serialize;

/// How bad a problem is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The spec cannot be used.
    Error,
    /// The spec works, but something is likely wrong; `--deny-warnings` makes it an error.
    Warning,
}

/// One problem found in a spec file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// What is wrong, starting lowercase, without a final period.
    pub message: String,
    /// Dotted key path of the offending key, e.g. `resources.invoices.list.pagination`; empty for the whole file.
    pub key: String,
    /// Byte range in the file, when known.
    #[serde(skip)]
    pub span: Option<Range<usize>>,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    /// An error at `key`.
    pub fn error(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            message: message.into(),
            key: key.into(),
            span: None,
            hint: None,
        }
    }

    /// A warning at `key`.
    pub fn warning(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(key, message)
        }
    }

    /// Adds a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Sets the byte span.
    pub fn with_span(mut self, span: Range<usize>) -> Self {
        self.span = Some(span);
        self
    }

    /// Whether this is an error (not a warning).
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A spec file's name and text, for locating and rendering diagnostics.
#[derive(Debug, Clone)]
pub struct SourceFile {
    name: String,
    text: String,
}

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LineCol {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

impl fmt::Display for LineCol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Line and column (both from 1, the column in characters) of byte `offset` in `text`, clamped
/// to the text and to a character boundary. Every file Weft reads locates its problems with it.
pub fn line_col(text: &str, offset: usize) -> LineCol {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    LineCol {
        line,
        column: before[line_start..].chars().count() + 1,
    }
}

impl SourceFile {
    /// A file named `name` (as shown in diagnostics) holding `text`.
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }

    /// The name shown in diagnostics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file's text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Line and column of a byte offset (clamped to the text, and to a character boundary).
    pub fn line_col(&self, offset: usize) -> LineCol {
        line_col(&self.text, offset)
    }

    /// A span made safe for rendering: inside the text and on character boundaries.
    fn clamp(&self, span: &Range<usize>) -> Range<usize> {
        let mut start = span.start.min(self.text.len());
        let mut end = span.end.clamp(start, self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        while !self.text.is_char_boundary(end) {
            end += 1;
        }
        start..end
    }

    /// Renders one diagnostic the way rustc does: a header, `file:line:column`, the source
    /// line with the span underlined, then the key path and the hint.
    pub fn render(&self, diagnostic: &Diagnostic) -> String {
        let file = SimpleFile::new(self.name.as_str(), self.text.as_str());
        let mut cs = match diagnostic.severity {
            Severity::Error => CsDiagnostic::error(),
            Severity::Warning => CsDiagnostic::warning(),
        }
        .with_message(&diagnostic.message);
        match &diagnostic.span {
            Some(span) => cs = cs.with_label(Label::primary((), self.clamp(span))),
            None => {
                // Without a span, still name the file so every diagnostic is located.
                cs = cs.with_label(Label::primary((), 0..0).with_message("in this file"));
            }
        }
        if !diagnostic.key.is_empty() {
            cs = cs.with_note(format!("key: {}", diagnostic.key));
        }
        if let Some(hint) = &diagnostic.hint {
            cs = cs.with_note(format!("help: {hint}"));
        }
        let config = Config::default();
        term::emit_into_string(&config, &file, &cs)
            .unwrap_or_else(|_| self.render_short(diagnostic))
    }

    /// One line: `file:line:column: severity: message [key]`.
    pub fn render_short(&self, diagnostic: &Diagnostic) -> String {
        let at = self.line_col(diagnostic.span.as_ref().map_or(0, |s| s.start));
        let severity = match diagnostic.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        format!("{}:{at}: {severity}: {}", self.name, diagnostic.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let file = SourceFile::new("x.toml", "a = 1\nbé = 2\n");
        assert_eq!(file.line_col(0), LineCol { line: 1, column: 1 });
        assert_eq!(file.line_col(6), LineCol { line: 2, column: 1 });
        // Inside the two-byte `é`: clamped back to its start.
        assert_eq!(file.line_col(8), LineCol { line: 2, column: 2 });
        assert_eq!(file.line_col(999), LineCol { line: 3, column: 1 });
    }

    #[test]
    fn renders_location_key_and_hint() {
        let file = SourceFile::new("specs/x.toml", "id = \"x\"\nname = 3\n");
        let d = Diagnostic::error("name", "invalid type: integer `3`, expected a string")
            .with_span(16..17)
            .with_hint("quote the name");
        let out = file.render(&d);
        assert!(out.contains("specs/x.toml:2:8"), "{out}");
        assert!(out.contains("key: name"), "{out}");
        assert!(out.contains("help: quote the name"), "{out}");
    }
}
