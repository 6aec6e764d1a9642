//! The plugin host: finds native plugins in the configured directories, loads them with
//! libloading, checks their ABI version and manifest, and calls them.
//!
//! Architecture invariant: this module is the only place with unsafe loading code. Everything
//! else sees a [`Plugin`], whose [`Plugin::call`] is safe: a plugin's error or panic comes back
//! as a [`CallError`], never as an abort of the host.
//!
//! A library is loaded only from the directories [`search_dirs`] lists (next to the running
//! binary, the development checkout's `target/<profile>/`, and `WEFT_PLUGIN_PATH`), and it is
//! never unloaded: the handle is leaked on purpose, so the function pointers stay valid for the
//! life of the process.

use std::collections::HashMap;
use std::env::consts::{DLL_PREFIX, DLL_SUFFIX};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use weft_plugin_abi::{
    ABI_MIN, ABI_VERSION, AbiVersionFn, Buffer, Call, ErrorReply, FreeFn, InvokeFn, Manifest,
    ManifestFn, status, symbols,
};

/// The environment variable listing extra plugin directories (separated like `PATH`).
pub const PLUGIN_PATH_VAR: &str = "WEFT_PLUGIN_PATH";

/// What to run to build the shipped plugins.
const BUILD_HINT: &str = "run `cargo xtask plugins build`";

/// A plugin could not be found or loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No library file for the plugin in any plugin directory.
    #[error(
        "plugin `{name}` not found: no `{file}` in {}; {BUILD_HINT}, or add its directory to {PLUGIN_PATH_VAR}",
        display_dirs(searched)
    )]
    NotFound {
        /// The plugin name.
        name: String,
        /// The file name looked for.
        file: String,
        /// The directories searched, in order.
        searched: Vec<PathBuf>,
    },
    /// The operating system refused to load the library.
    #[error("plugin library `{}` could not be opened: {source}; {BUILD_HINT} to rebuild it for this machine", path.display())]
    Open {
        /// The library.
        path: PathBuf,
        /// What the loader said.
        #[source]
        source: libloading::Error,
    },
    /// A required export is missing.
    #[error("`{}` does not export `{symbol}`, so it is not a Weft plugin or is incomplete; rebuild it with `weft_plugin_abi::export_plugin!` ({BUILD_HINT})", path.display())]
    MissingSymbol {
        /// The library.
        path: PathBuf,
        /// The symbol.
        symbol: &'static str,
        /// What the loader said.
        #[source]
        source: libloading::Error,
    },
    /// The plugin speaks an ABI this host does not.
    #[error("`{}` speaks plugin ABI {found}, but this weft supports {min}..={max}; rebuild the plugin against this weft's weft-plugin-abi ({BUILD_HINT}) or upgrade weft", path.display())]
    AbiOutOfRange {
        /// The library.
        path: PathBuf,
        /// The version it reports.
        found: u32,
        /// The oldest supported.
        min: u32,
        /// The newest supported.
        max: u32,
    },
    /// The manifest could not be read or breaks a rule.
    #[error("`{}` has a bad manifest: {reason}; fix the plugin's manifest and rebuild it ({BUILD_HINT})", path.display())]
    BadManifest {
        /// The library.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// A call into a loaded plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin reported an error.
    #[error("plugin `{plugin}`: {message}")]
    Failed {
        /// The plugin name.
        plugin: String,
        /// Its message.
        message: String,
    },
    /// The plugin panicked; the panic was caught inside the plugin and the host carries on.
    #[error("plugin `{plugin}` crashed: {message}; report it to the plugin's authors")]
    Panicked {
        /// The plugin name.
        plugin: String,
        /// The panic message.
        message: String,
    },
    /// The plugin's reply is not what the protocol says.
    #[error(
        "plugin `{plugin}` replied something Weft cannot read ({reason}); rebuild it against this weft ({BUILD_HINT})"
    )]
    BadReply {
        /// The plugin name.
        plugin: String,
        /// What is wrong.
        reason: String,
    },
}

/// A loaded plugin. Cheap to share; the library stays loaded for the life of the process.
#[derive(Debug)]
pub struct Plugin {
    path: PathBuf,
    abi: u32,
    manifest: Manifest,
    invoke: InvokeFn,
    free: FreeFn,
}

impl Plugin {
    /// Loads the library at `path`: the ABI version first, then the other exports, then the
    /// manifest. Prefer [`Plugins::get`], which loads only from the plugin directories.
    pub fn load(path: &Path) -> Result<Self, LoadError> {
        // SAFETY: loading a library runs its initializers. Only libraries from the configured
        // plugin directories (or a path a test built) are loaded; that trust is the contract.
        let library =
            unsafe { libloading::Library::new(path) }.map_err(|source| LoadError::Open {
                path: path.to_owned(),
                source,
            })?;
        // Never unloaded: the function pointers below must stay valid for the whole process.
        let library: &'static libloading::Library = Box::leak(Box::new(library));
        let version: AbiVersionFn = symbol(library, path, symbols::ABI_VERSION)?;
        // SAFETY: the symbol has the signature `weft_plugin_abi` gives it and takes no input.
        let abi = unsafe { version() };
        if !(ABI_MIN..=ABI_VERSION).contains(&abi) {
            return Err(LoadError::AbiOutOfRange {
                path: path.to_owned(),
                found: abi,
                min: ABI_MIN,
                max: ABI_VERSION,
            });
        }
        let manifest_fn: ManifestFn = symbol(library, path, symbols::MANIFEST)?;
        let invoke: InvokeFn = symbol(library, path, symbols::INVOKE)?;
        let free: FreeFn = symbol(library, path, symbols::FREE)?;
        let mut out = Buffer::empty();
        // SAFETY: `out` is a valid, writable buffer; the plugin fills it and we free it below.
        let code = unsafe { manifest_fn(&mut out) };
        // SAFETY: `out` was filled by this plugin, which exports `free`.
        let bytes = unsafe { take(out, free) };
        let bad = |reason: String| LoadError::BadManifest {
            path: path.to_owned(),
            reason,
        };
        if code != status::OK {
            let reason = serde_json::from_slice::<ErrorReply>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| format!("the manifest export failed with status {code}"));
            return Err(bad(reason));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        check_manifest(&manifest).map_err(bad)?;
        Ok(Self {
            path: path.to_owned(),
            abi,
            manifest,
            invoke,
            free,
        })
    }

    /// The manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    /// The library file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ABI version the plugin reports.
    pub fn abi(&self) -> u32 {
        self.abi
    }

    /// Sends one call and reads the reply as `T`.
    pub fn call<T: DeserializeOwned>(&self, call: &Call) -> Result<T, CallError> {
        let input = serde_json::to_vec(call).map_err(|e| CallError::BadReply {
            plugin: self.name().to_owned(),
            reason: format!("the call does not serialize: {e}"),
        })?;
        let mut out = Buffer::empty();
        // SAFETY: `input` is alive and `input.len()` bytes long for the call; `out` is a valid,
        // writable buffer. The plugin's body runs inside `catch_unwind`, so it does not unwind here.
        let code = unsafe { (self.invoke)(input.as_ptr(), input.len(), &mut out) };
        // SAFETY: `out` was filled by this plugin's invoke; its own `free` releases it.
        let bytes = unsafe { take(out, self.free) };
        let plugin = || self.name().to_owned();
        let message = || {
            serde_json::from_slice::<ErrorReply>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned())
        };
        match code {
            status::OK => serde_json::from_slice(&bytes).map_err(|e| CallError::BadReply {
                plugin: plugin(),
                reason: e.to_string(),
            }),
            status::FAILED => Err(CallError::Failed {
                plugin: plugin(),
                message: message(),
            }),
            status::PANICKED => Err(CallError::Panicked {
                plugin: plugin(),
                message: message(),
            }),
            other => Err(CallError::BadReply {
                plugin: plugin(),
                reason: format!("unknown status {other}"),
            }),
        }
    }
}

/// The plugins of one process: where to look, and those already loaded (by file).
#[derive(Debug)]
pub struct Plugins {
    dirs: Vec<PathBuf>,
    loaded: Mutex<HashMap<PathBuf, Arc<Plugin>>>,
}

impl Plugins {
    /// Plugins found in `dirs`, in order of preference.
    pub fn new(dirs: Vec<PathBuf>) -> Self {
        Self {
            dirs,
            loaded: Mutex::new(HashMap::new()),
        }
    }

    /// Plugins found in the standard directories ([`search_dirs`]).
    pub fn from_env() -> Self {
        Self::new(search_dirs())
    }

    /// The directories searched, in order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The library of plugin `name` in the first directory that has one.
    pub fn locate(&self, name: &str) -> Result<PathBuf, LoadError> {
        let file = library_file(name);
        self.dirs
            .iter()
            .map(|dir| dir.join(&file))
            .find(|path| path.is_file())
            .ok_or_else(|| LoadError::NotFound {
                name: name.to_owned(),
                file,
                searched: self.dirs.clone(),
            })
    }

    /// Plugin `name`, loaded on first use.
    pub fn get(&self, name: &str) -> Result<Arc<Plugin>, LoadError> {
        let path = self.locate(name)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plugin) = loaded.get(&path) {
            return Ok(plugin.clone());
        }
        let plugin = Arc::new(Plugin::load(&path)?);
        if plugin.name() != name {
            return Err(LoadError::BadManifest {
                path,
                reason: format!(
                    "the file is named for plugin `{name}` but its manifest says `{}`",
                    plugin.name()
                ),
            });
        }
        loaded.insert(path, plugin.clone());
        Ok(plugin)
    }

    /// Every plugin library file in the plugin directories, by name (the first of each name).
    pub fn discover(&self) -> Vec<(String, PathBuf)> {
        let mut found: Vec<(String, PathBuf)> = Vec::new();
        for dir in &self.dirs {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut here: Vec<(String, PathBuf)> = entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let file = entry.file_name().into_string().ok()?;
                    let stem = file
                        .strip_prefix(DLL_PREFIX)?
                        .strip_suffix(DLL_SUFFIX)?
                        .strip_prefix(LIBRARY_PREFIX)?;
                    let name = stem.replace('_', "-");
                    Some((name, entry.path()))
                })
                .collect();
            here.sort();
            for (name, path) in here {
                if !found.iter().any(|(n, _)| *n == name) {
                    found.push((name, path));
                }
            }
        }
        found
    }
}

/// The start of every plugin library's name, after the platform prefix.
const LIBRARY_PREFIX: &str = "weft_plugin_";

/// The library file of plugin `name` on this platform, e.g. `libweft_plugin_files.so`.
pub fn library_file(name: &str) -> String {
    format!(
        "{DLL_PREFIX}{LIBRARY_PREFIX}{}{DLL_SUFFIX}",
        name.replace('-', "_")
    )
}

/// The plugin directories, in order: next to the running binary, the development checkout's
/// `target/<profile>/` (and `$CARGO_TARGET_DIR/<profile>/` when set), then each entry of
/// `WEFT_PLUGIN_PATH`.
pub fn search_dirs() -> Vec<PathBuf> {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_owned))
    {
        dirs.push(dir);
    }
    let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    if checkout.join("Cargo.toml").is_file() {
        dirs.push(checkout.join("target").join(profile));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(target).join(profile));
    }
    if let Some(path) = std::env::var_os(PLUGIN_PATH_VAR) {
        dirs.extend(std::env::split_paths(&path).filter(|p| !p.as_os_str().is_empty()));
    }
    let mut unique: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let dir = dir.canonicalize().unwrap_or(dir);
        if !unique.contains(&dir) {
            unique.push(dir);
        }
    }
    unique
}

/// Resolves `name` in `library` as a function pointer of type `T`.
fn symbol<T: Copy>(
    library: &'static libloading::Library,
    path: &Path,
    name: &'static str,
) -> Result<T, LoadError> {
    // SAFETY: `T` is the signature `weft_plugin_abi` declares for `name`; plugins generate their
    // exports with its macro. The library is never unloaded, so the pointer stays valid.
    let found = unsafe { library.get::<T>(name.as_bytes()) };
    found
        .map(|s| *s)
        .map_err(|source| LoadError::MissingSymbol {
            path: path.to_owned(),
            symbol: name,
            source,
        })
}

/// Copies a plugin buffer into host memory and gives it back to the plugin's `free`.
///
/// # Safety
///
/// `buffer` must have been filled by the plugin whose `free` is given, and not freed yet.
unsafe fn take(buffer: Buffer, free: FreeFn) -> Vec<u8> {
    if buffer.ptr.is_null() {
        return Vec::new();
    }
    // SAFETY: the plugin handed over `len` initialized bytes at `ptr`, alive until freed.
    let bytes = unsafe { std::slice::from_raw_parts(buffer.ptr, buffer.len) }.to_vec();
    // SAFETY: freed once, by the side that allocated it.
    unsafe { free(buffer) };
    bytes
}

fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    let name = &manifest.name;
    let valid_name = name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid_name {
        return Err(format!(
            "name `{name}` must be lowercase letters, digits and `-`, starting with a letter"
        ));
    }
    let parts: Vec<&str> = manifest.version.split('.').collect();
    if parts.len() != 3
        || parts
            .iter()
            .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "version `{}` is not MAJOR.MINOR.PATCH",
            manifest.version
        ));
    }
    Ok(())
}

fn display_dirs(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        return "no directory".to_owned();
    }
    dirs.iter()
        .map(|d| format!("`{}`", d.display()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_files_follow_the_platform() {
        assert_eq!(
            library_file("files"),
            format!("{DLL_PREFIX}weft_plugin_files{DLL_SUFFIX}")
        );
        assert_eq!(
            library_file("future-abi"),
            format!("{DLL_PREFIX}weft_plugin_future_abi{DLL_SUFFIX}")
        );
    }

    #[test]
    fn a_missing_plugin_says_where_it_looked_and_what_to_run() {
        let dir = std::env::temp_dir().join(format!("weft-plugin-missing-{}", std::process::id()));
        let plugins = Plugins::new(vec![dir.clone()]);
        let err = plugins.get("nowhere").unwrap_err();
        assert!(matches!(err, LoadError::NotFound { .. }));
        let text = err.to_string();
        assert!(text.contains(&library_file("nowhere")), "{text}");
        assert!(text.contains(&dir.display().to_string()), "{text}");
        assert!(text.contains("cargo xtask plugins build"), "{text}");
    }

    #[test]
    fn a_file_that_is_not_a_library_fails_to_open() {
        let dir = std::env::temp_dir().join(format!("weft-plugin-junk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(library_file("junk"));
        std::fs::write(&path, b"not a library").unwrap();
        let err = Plugins::new(vec![dir.clone()]).get("junk").unwrap_err();
        assert!(matches!(err, LoadError::Open { .. }), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn manifests_are_checked() {
        let mut manifest = Manifest {
            name: "files".to_owned(),
            version: "0.1.0".to_owned(),
            description: String::new(),
            capabilities: Default::default(),
        };
        assert_eq!(check_manifest(&manifest), Ok(()));
        manifest.name = "Files".to_owned();
        assert!(check_manifest(&manifest).unwrap_err().contains("lowercase"));
        manifest.name = "files".to_owned();
        manifest.version = "1.0".to_owned();
        assert!(check_manifest(&manifest).unwrap_err().contains("MAJOR"));
    }
}
