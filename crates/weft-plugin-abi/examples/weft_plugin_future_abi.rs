//! A library that claims an ABI no host supports yet, and exports nothing else: the host must
//! refuse it by its version before it looks for any other symbol.

/// An ABI version far beyond what hosts support.
#[unsafe(no_mangle)]
pub extern "C" fn weft_plugin_abi_version() -> u32 {
    weft_plugin_abi::ABI_VERSION + 100
}
