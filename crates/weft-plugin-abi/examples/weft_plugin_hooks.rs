//! A plugin with every hook, for the engine's hook tests: it extracts `data.items`, upper-cases
//! each record's `name`, and signs a request with a checksum of its method and URL.

use std::collections::BTreeMap;

use weft_plugin_abi::{Call, Capabilities, Hook, Manifest, Records, Signed};

fn manifest() -> Manifest {
    Manifest {
        name: "hooks".to_owned(),
        version: "0.1.0".to_owned(),
        description: "Every hook, for tests.".to_owned(),
        capabilities: Capabilities {
            hooks: vec![Hook::Extract, Hook::Transform, Hook::Sign],
            operations: Vec::new(),
        },
    }
}

fn invoke(call: Call) -> Result<serde_json::Value, String> {
    let reply = match call {
        Call::Extract { body, .. } => {
            let items = body
                .pointer("/data/items")
                .and_then(|v| v.as_array())
                .ok_or("the body has no `data.items` array")?;
            serde_json::to_value(Records {
                records: items.clone(),
            })
        }
        Call::Transform { records, .. } => {
            let records = records
                .into_iter()
                .map(|mut record| {
                    if let Some(name) = record.get("name").and_then(|v| v.as_str()) {
                        record["name"] = name.to_uppercase().into();
                    }
                    record
                })
                .collect();
            serde_json::to_value(Records { records })
        }
        Call::Sign { request } => {
            let sum = format!("{} {}", request.method, request.url)
                .bytes()
                .fold(0u32, |acc, b| {
                    acc.wrapping_mul(31).wrapping_add(u32::from(b))
                });
            let headers = BTreeMap::from([("X-Signature".to_owned(), format!("{sum:08x}"))]);
            serde_json::to_value(Signed { headers })
        }
        other => return Err(format!("`{other:?}` is not a hook of this plugin")),
    };
    reply.map_err(|e| e.to_string())
}

weft_plugin_abi::export_plugin!(manifest: manifest, invoke: invoke);
