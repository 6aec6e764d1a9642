//! The tables of the `list` commands: columns aligned by display width (comfy-table), however
//! long or wide (accents, CJK, emoji) a value is, with no borders and no trailing spaces, so
//! the output reads well on a terminal and splits on whitespace in a pipe.

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};

/// A table under these column headers.
pub(crate) struct Columns {
    table: Table,
    right: Vec<usize>,
}

impl Columns {
    /// A table whose columns are `headers`.
    pub(crate) fn new(headers: &[&str]) -> Self {
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(headers.iter().copied());
        Self {
            table,
            right: Vec::new(),
        }
    }

    /// Aligns columns `indexes` (numbers) to the right.
    pub(crate) fn right(mut self, indexes: &[usize]) -> Self {
        self.right.extend_from_slice(indexes);
        self
    }

    /// Adds a row, one value per column.
    pub(crate) fn row<I, T>(&mut self, values: I)
    where
        I: IntoIterator<Item = T>,
        T: std::fmt::Display,
    {
        let row: Vec<String> = values.into_iter().map(|v| v.to_string()).collect();
        self.table.add_row(row);
    }

    /// Writes the table, a line per row.
    pub(crate) fn write(mut self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        for index in self.right.clone() {
            if let Some(column) = self.table.column_mut(index) {
                column.set_cell_alignment(CellAlignment::Right);
            }
        }
        // Two spaces between columns, none before the first.
        for column in self.table.column_iter_mut() {
            column.set_padding((0, 2));
        }
        for line in self.table.lines() {
            writeln!(out, "{}", line.trim_end())?;
        }
        Ok(())
    }
}
