//! Applies the parts of a spec that plugins run: record extraction, record transforms, request
//! signing, and whole resources (read and write sessions).
//!
//! Each function takes the spec's own choice when no plugin is named, so a caller can route every
//! operation through here; the plugins come from [`Plugins`], which loads them on first use.

use std::sync::Arc;

use serde_json::Value;
use weft_core::model::{Operation, Resource, SpecFile};
use weft_plugin_abi::{
    Batch, Call, Closed, Hook, HttpRequest, ItemResult, Opened, Records, ResourceOperation, Signed,
    Written,
};

use crate::extract::{ExtractError, records};
use crate::plugin::{CallError, LoadError, Plugin, Plugins};
use crate::request::Request;

/// A hook could not run.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The plugin could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The plugin failed, panicked or replied nonsense.
    #[error(transparent)]
    Call(#[from] CallError),
    /// The plugin does not provide what the spec asks of it.
    #[error(
        "plugin `{plugin}` does not provide {needs}, which {key} of connector `{connector}` asks of it; its manifest lists {provides}"
    )]
    Missing {
        /// The plugin.
        plugin: String,
        /// What the spec needs, e.g. "the `sign` hook".
        needs: String,
        /// Key path of the reference.
        key: String,
        /// Connector id.
        connector: String,
        /// What the plugin does provide.
        provides: String,
    },
    /// The spec's own extraction failed.
    #[error(transparent)]
    Extract(#[from] ExtractError),
    /// A transform returned another number of records than it was given.
    #[error(
        "plugin `{plugin}` transformed {given} records into {returned}; a transform must return one record for each"
    )]
    Count {
        /// The plugin.
        plugin: String,
        /// Records given.
        given: usize,
        /// Records returned.
        returned: usize,
    },
    /// A signature header that cannot go on a request.
    #[error(
        "plugin `{plugin}` returned the header `{name}`, which is not a valid header name or value"
    )]
    BadHeader {
        /// The plugin.
        plugin: String,
        /// The header name.
        name: String,
    },
}

/// Whether `plugin` provides what a spec reference needs (`extract`, `transform`, `sign` or
/// `resource`), and, when it does not, what it provides instead.
pub fn provides(plugin: &Plugin, needs: &str) -> Result<(), String> {
    let caps = &plugin.manifest().capabilities;
    let ok = match needs {
        "resource" => !caps.operations.is_empty(),
        hook => caps.hooks.iter().any(|h| h.as_str() == hook),
    };
    if ok {
        return Ok(());
    }
    let mut offered: Vec<String> = caps
        .hooks
        .iter()
        .map(|h| format!("the `{}` hook", h.as_str()))
        .collect();
    if !caps.operations.is_empty() {
        let ops: Vec<&str> = caps.operations.iter().map(|o| o.as_str()).collect();
        offered.push(format!("resource operations {}", ops.join(", ")));
    }
    Err(if offered.is_empty() {
        "nothing".to_owned()
    } else {
        offered.join(", ")
    })
}

/// Loads the plugin a spec names at `key` and checks it provides `needs`.
fn resolve(
    plugins: &Plugins,
    spec: &SpecFile,
    key: &str,
    name: &str,
    needs: &str,
) -> Result<Arc<Plugin>, HookError> {
    let plugin = plugins.get(name)?;
    provides(&plugin, needs).map_err(|provides| HookError::Missing {
        plugin: name.to_owned(),
        needs: if needs == "resource" {
            "resource operations".to_owned()
        } else {
            format!("the `{needs}` hook")
        },
        key: key.to_owned(),
        connector: spec.id.clone(),
        provides,
    })?;
    Ok(plugin)
}

/// Checks every plugin reference of `spec`: `(key path, plugin name, outcome)` for each.
pub fn check(spec: &SpecFile, plugins: &Plugins) -> Vec<(String, String, Result<(), HookError>)> {
    spec.plugin_refs()
        .into_iter()
        .map(|r| {
            let outcome = resolve(plugins, spec, &r.key, r.plugin, r.needs).map(|_| ());
            (r.key, r.plugin.to_owned(), outcome)
        })
        .collect()
}

/// The records of a response `body` to `op` of `resource`: by the plugin named in
/// `hooks.extract`, else by the spec's `records`.
pub fn extract(
    plugins: &Plugins,
    spec: &SpecFile,
    resource: &str,
    op_name: &str,
    op: &Operation,
    body: &Value,
) -> Result<Vec<Value>, HookError> {
    let Some(name) = &op.hooks.extract else {
        return Ok(records(body, &op.records)?);
    };
    let key = format!("resources.{resource}.{op_name}.hooks.extract");
    let plugin = resolve(plugins, spec, &key, name, Hook::Extract.as_str())?;
    let reply: Records = plugin.call(&Call::Extract {
        resource: resource.to_owned(),
        operation: op_name.to_owned(),
        body: body.clone(),
    })?;
    Ok(reply.records)
}

/// `records` rewritten by the plugin named in `hooks.transform`, or unchanged when none is.
pub fn transform(
    plugins: &Plugins,
    spec: &SpecFile,
    resource: &str,
    op_name: &str,
    op: &Operation,
    records: Vec<Value>,
) -> Result<Vec<Value>, HookError> {
    let Some(name) = &op.hooks.transform else {
        return Ok(records);
    };
    let key = format!("resources.{resource}.{op_name}.hooks.transform");
    let plugin = resolve(plugins, spec, &key, name, Hook::Transform.as_str())?;
    let given = records.len();
    let reply: Records = plugin.call(&Call::Transform {
        resource: resource.to_owned(),
        operation: op_name.to_owned(),
        records,
    })?;
    if reply.records.len() != given {
        return Err(HookError::Count {
            plugin: name.clone(),
            given,
            returned: reply.records.len(),
        });
    }
    Ok(reply.records)
}

/// Signs `request` (whose body is `body`) with the plugin named in `requests.sign`; the headers
/// it returns replace any of the same name. Unchanged when the spec names no signer.
pub fn sign(
    plugins: &Plugins,
    spec: &SpecFile,
    mut request: Request,
    body: Option<&Value>,
) -> Result<Request, HookError> {
    let Some(name) = &spec.requests.sign else {
        return Ok(request);
    };
    let plugin = resolve(plugins, spec, "requests.sign", name, Hook::Sign.as_str())?;
    let reply: Signed = plugin.call(&Call::Sign {
        request: HttpRequest {
            method: request.method.as_str().to_owned(),
            url: request.url.to_string(),
            headers: request.headers.iter().cloned().collect(),
            body: body.cloned(),
        },
    })?;
    for (header, value) in reply.headers {
        let valid_name = !header.is_empty()
            && header
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !valid_name || value.bytes().any(|b| b == b'\r' || b == b'\n') {
            return Err(HookError::BadHeader {
                plugin: name.clone(),
                name: header,
            });
        }
        request
            .headers
            .retain(|(existing, _)| !existing.eq_ignore_ascii_case(&header));
        request.headers.push((header, value));
    }
    Ok(request)
}

/// An open read or write session of a resource a plugin runs. Closed on drop when not closed
/// explicitly (the error of a drop-time close is lost; call [`Session::close`] to see it).
#[derive(Debug)]
pub struct Session {
    plugin: Arc<Plugin>,
    id: u64,
    open: bool,
}

impl Session {
    /// Opens `operation` of `resource` (which must name a plugin) on `location`.
    pub fn open(
        plugins: &Plugins,
        spec: &SpecFile,
        resource_name: &str,
        resource: &Resource,
        operation: ResourceOperation,
        location: &str,
    ) -> Result<Self, HookError> {
        let key = format!("resources.{resource_name}.plugin");
        let Some(name) = &resource.plugin else {
            return Err(HookError::Missing {
                plugin: "(none)".to_owned(),
                needs: "resource operations".to_owned(),
                key,
                connector: spec.id.clone(),
                provides: "nothing: the resource names no plugin".to_owned(),
            });
        };
        let plugin = resolve(plugins, spec, &key, name, "resource")?;
        if !plugin
            .manifest()
            .capabilities
            .operations
            .contains(&operation)
        {
            return Err(HookError::Missing {
                plugin: name.clone(),
                needs: format!("the `{}` operation", operation.as_str()),
                key,
                connector: spec.id.clone(),
                provides: provides(&plugin, "").unwrap_err(),
            });
        }
        // An array keeps the declaration order (a JSON object would not, once parsed).
        let fields = resource
            .fields
            .iter()
            .map(|(name, field)| {
                let mut rule = serde_json::to_value(field).unwrap_or(Value::Null);
                if let Value::Object(map) = &mut rule {
                    map.insert("name".to_owned(), Value::String(name.clone()));
                }
                rule
            })
            .collect();
        let opened: Opened = plugin.call(&Call::Open {
            resource: resource_name.to_owned(),
            operation,
            location: location.to_owned(),
            fields,
        })?;
        Ok(Self {
            plugin,
            id: opened.session,
            open: true,
        })
    }

    /// The next records of a read session, at most `max`.
    pub fn next(&mut self, max: u32) -> Result<Batch, HookError> {
        Ok(self.plugin.call(&Call::Next {
            session: self.id,
            max,
        })?)
    }

    /// Writes `records` in a write session; one result per record, in order.
    pub fn write(&mut self, records: Vec<Value>) -> Result<Vec<ItemResult>, HookError> {
        let given = records.len();
        let written: Written = self.plugin.call(&Call::Write {
            session: self.id,
            records,
        })?;
        if written.results.len() != given {
            return Err(HookError::Count {
                plugin: self.plugin.name().to_owned(),
                given,
                returned: written.results.len(),
            });
        }
        Ok(written.results)
    }

    /// Ends the session (a write session flushes); returns the records read or written.
    pub fn close(mut self) -> Result<u64, HookError> {
        self.open = false;
        let closed: Closed = self.plugin.call(&Call::Close { session: self.id })?;
        Ok(closed.count)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.open {
            let _ = self
                .plugin
                .call::<Closed>(&Call::Close { session: self.id });
        }
    }
}
