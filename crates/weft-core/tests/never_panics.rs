//! Property tests of the loader's promise: on any input it returns a report instead of
//! panicking, every span it reports lies within the text, and the report renders.
//!
//! Inputs are arbitrary bytes, TOML-looking noise, and the shipped specs damaged the ways an
//! editor damages a file: cut short, a line lost, a line doubled, a stretch overwritten.

use proptest::prelude::*;
use proptest::sample::Index;
use weft_core::load_str;

const SPECS: [(&str, &str); 2] = [
    ("specs/xero.toml", include_str!("../../../specs/xero.toml")),
    (
        "specs/kantata.toml",
        include_str!("../../../specs/kantata.toml"),
    ),
];

/// Loads `text` and checks the report: spans inside the text, on character boundaries, and a
/// rendering that does not panic.
fn check(name: &str, text: &str) -> Result<(), TestCaseError> {
    let report = load_str(name, text);
    for d in &report.diagnostics {
        if let Some(span) = &d.span {
            prop_assert!(
                span.start <= span.end && span.end <= text.len(),
                "span {span:?} of `{}` outside a text of {} bytes",
                d.message,
                text.len()
            );
            prop_assert!(
                text.is_char_boundary(span.start) && text.is_char_boundary(span.end),
                "span {span:?} of `{}` splits a character",
                d.message
            );
        }
    }
    let rendered = report.render();
    prop_assert!(report.diagnostics.is_empty() || !rendered.is_empty());
    Ok(())
}

/// The largest character boundary of `text` at or before `at`.
fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// One of the shipped specs.
fn spec() -> impl Strategy<Value = (&'static str, &'static str)> {
    prop::sample::select(SPECS.to_vec())
}

/// The lines of `text`, each with its newline.
fn lines(text: &str) -> Vec<&str> {
    text.split_inclusive('\n').collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        let text = String::from_utf8_lossy(&bytes);
        check("fuzz/arbitrary.toml", &text)?;
    }

    #[test]
    fn toml_looking_noise(text in "[a-z_.=\\[\\]{}\"', \n0-9#-]{0,512}") {
        check("fuzz/noise.toml", &text)?;
    }

    #[test]
    fn truncated_spec((name, text) in spec(), at in any::<Index>()) {
        let at = floor_boundary(text, at.index(text.len() + 1));
        check(name, &text[..at])?;
    }

    #[test]
    fn spec_missing_a_line((name, text) in spec(), which in any::<Index>()) {
        let mut lines = lines(text);
        lines.remove(which.index(lines.len()));
        check(name, &lines.concat())?;
    }

    #[test]
    fn spec_with_a_doubled_line((name, text) in spec(), which in any::<Index>()) {
        let mut lines = lines(text);
        let i = which.index(lines.len());
        lines.insert(i, lines[i]);
        check(name, &lines.concat())?;
    }

    #[test]
    fn spec_with_a_stretch_overwritten(
        (name, text) in spec(),
        start in any::<Index>(),
        len in 0usize..64,
        with in "[ -~\n]{0,32}",
    ) {
        let start = floor_boundary(text, start.index(text.len() + 1));
        let end = floor_boundary(text, start + len);
        let damaged = format!("{}{with}{}", &text[..start], &text[end..]);
        check(name, &damaged)?;
    }
}
