//! A plugin whose reads panic: the host must get an error and carry on.

use weft_plugin_abi::{Call, Capabilities, Closed, Hook, Manifest, ResourceOperation};

fn manifest() -> Manifest {
    Manifest {
        name: "panics".to_owned(),
        version: "0.1.0".to_owned(),
        description: "Panics on every call but `close`.".to_owned(),
        capabilities: Capabilities {
            hooks: vec![Hook::Transform],
            operations: vec![ResourceOperation::List],
        },
    }
}

fn invoke(call: Call) -> Result<serde_json::Value, String> {
    match call {
        Call::Close { .. } => serde_json::to_value(Closed { count: 0 }).map_err(|e| e.to_string()),
        other => panic!("deliberate panic on {other:?}"),
    }
}

weft_plugin_abi::export_plugin!(manifest: manifest, invoke: invoke);
