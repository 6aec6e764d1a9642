//! A library with the right ABI version and a manifest but no `invoke` export: the host must
//! report the missing symbol.

use weft_plugin_abi::{Buffer, Capabilities, Manifest};

fn manifest() -> Manifest {
    Manifest {
        name: "no-invoke".to_owned(),
        version: "0.1.0".to_owned(),
        description: String::new(),
        capabilities: Capabilities::default(),
    }
}

/// The ABI this library speaks.
#[unsafe(no_mangle)]
pub extern "C" fn weft_plugin_abi_version() -> u32 {
    weft_plugin_abi::ABI_VERSION
}

/// Writes the manifest into `out`.
///
/// # Safety
///
/// `out` must point to a writable buffer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn weft_plugin_manifest(out: *mut Buffer) -> i32 {
    // SAFETY: the host passes a valid out-pointer.
    unsafe { weft_plugin_abi::__export::manifest(out, manifest) }
}

/// Frees a buffer this library returned.
///
/// # Safety
///
/// `buffer` must come from this library, freed once.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn weft_plugin_free(buffer: Buffer) {
    // SAFETY: the host gives back a buffer this library allocated, once.
    unsafe { weft_plugin_abi::__export::free(buffer) }
}
