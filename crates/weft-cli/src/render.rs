//! A connector's Markdown reference (`weft_core::docs`) made readable on a terminal: headings
//! underlined, emphasis, code and link markup removed (a link keeps its address), and tables
//! laid out by comfy-table, wrapped to the width. `weft connectors show --markdown` prints the
//! Markdown itself.

use comfy_table::{ContentArrangement, Table, presets};

/// The width tables are wrapped to.
const WIDTH: u16 = 100;

/// `markdown` (the subset `weft_core::docs` writes) as plain text.
pub(crate) fn markdown_to_text(markdown: &str) -> String {
    let mut out = String::new();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for line in markdown.lines() {
        if let Some(inner) = line.strip_prefix("| ") {
            let cells: Vec<&str> = inner.trim_end_matches(" |").split(" | ").collect();
            // The separator under the header.
            if !cells.iter().all(|c| c.chars().all(|ch| ch == '-')) {
                rows.push(cells.iter().map(|c| inline(c)).collect());
            }
            continue;
        }
        if line.starts_with("|---") {
            continue;
        }
        flush_table(&mut rows, &mut out);
        let (text, underline) = match line {
            l if l.starts_with("# ") => (inline(&l[2..]), Some('=')),
            l if l.starts_with("## ") => (inline(&l[3..]), Some('-')),
            l if l.starts_with("### ") => (inline(&l[4..]), None),
            l => (inline(l), None),
        };
        out.push_str(&text);
        out.push('\n');
        if let Some(c) = underline {
            out.extend(std::iter::repeat_n(c, text.chars().count()));
            out.push('\n');
        }
    }
    flush_table(&mut rows, &mut out);
    out
}

/// Writes the table gathered in `rows` (the first is the header), if any.
fn flush_table(rows: &mut Vec<Vec<String>>, out: &mut String) {
    if rows.is_empty() {
        return;
    }
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_HORIZONTAL_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_width(WIDTH)
        .set_header(rows.remove(0));
    for row in rows.drain(..) {
        table.add_row(row);
    }
    for line in table.lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// A line's inline markup removed: `**bold**`, `` `code` ``, `[text](address)` (kept as
/// "text (address)"), `<address>`, and `<br>` (a line break in a table cell).
fn inline(text: &str) -> String {
    let text = text
        .replace("<br>", "\n")
        .replace("**", "")
        .replace('`', "");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find(['[', '<']) {
        out.push_str(&rest[..start]);
        let tail = &rest[start..];
        if let Some(link) = tail.strip_prefix('[')
            && let Some((label, after)) = link.split_once("](")
            && let Some((address, after)) = after.split_once(')')
        {
            out.push_str(&format!("{label} ({address})"));
            rest = after;
        } else if let Some(inner) = tail.strip_prefix('<')
            && let Some((address, after)) = inner.split_once('>')
            && address.contains("://")
        {
            out.push_str(address);
            rest = after;
        } else {
            out.push_str(&tail[..1]);
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::markdown_to_text;

    #[test]
    fn markup_goes_and_tables_line_up() {
        let md = "# Xero\n\nConnector id `xero`, see [docs](https://x.test/a).\n\n## Setup\n\n1. **Copy the ID**\n   Where: <https://x.test/b>\n\n| Field | Id | Rules |\n|---|---|---|\n| Client ID | `client_id` | required |\n| Concurrency | `concurrency` | 1–25<br>default 5 |\n";
        let text = markdown_to_text(md);
        assert!(text.starts_with("Xero\n====\n"), "{text}");
        assert!(text.contains("Setup\n-----\n"), "{text}");
        assert!(
            text.contains("Connector id xero, see docs (https://x.test/a)."),
            "{text}"
        );
        assert!(
            text.contains("1. Copy the ID\n   Where: https://x.test/b\n"),
            "{text}"
        );
        for markup in ["**", "`", "|---", "<br>", "](", "<https"] {
            assert!(!text.contains(markup), "{markup} left in:\n{text}");
        }
        let row = text.lines().find(|l| l.contains("client_id")).unwrap();
        let header = text.lines().find(|l| l.contains("Rules")).unwrap();
        assert_eq!(row.find("client_id"), header.find("Id"), "{text}");
    }
}
