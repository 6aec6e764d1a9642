//! A plugin whose manifest names it badly: the host must refuse it with a typed error.

use weft_plugin_abi::{Call, Capabilities, Manifest};

fn manifest() -> Manifest {
    Manifest {
        name: "Bad Manifest!".to_owned(),
        version: "one".to_owned(),
        description: String::new(),
        capabilities: Capabilities::default(),
    }
}

fn invoke(_: Call) -> Result<serde_json::Value, String> {
    Err("never called".to_owned())
}

weft_plugin_abi::export_plugin!(manifest: manifest, invoke: invoke);
