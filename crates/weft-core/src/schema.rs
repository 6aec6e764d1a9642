//! The JSON Schema of spec files, generated from the model, for editors (Taplo, VS Code).

use crate::model::SpecFile;

/// File name of the committed schema, next to the specs.
pub const FILE_NAME: &str = "weft-spec.schema.json";

/// The schema as pretty JSON with a trailing newline.
pub fn json() -> String {
    let mut schema = schemars::schema_for!(SpecFile);
    schema.insert("title".into(), "Weft connector spec".into());
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
