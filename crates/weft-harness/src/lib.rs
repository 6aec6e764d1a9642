//! Weft's test harness. Everything here is deterministic: time is simulated, data is seeded,
//! and servers listen on 127.0.0.1 only.
//!
//! - [`cdylib`]: building plugin libraries for tests, found by cargo's own account.
//! - [`clock`]: simulated time, manual or scaled.
//! - [`faults`]: seeded, per-route fault injection.
//! - [`log`]: every request a simulator received, for assertions.
//! - [`postgres`]: a fresh PostgreSQL database per test (`WEFT_TEST_PG_URL`, or a throwaway
//!   cluster).
//! - [`server`]: serving a simulator on loopback, wrapped in the log and the faults.
//! - [`kantata`], [`xero`], [`quickbooks`], [`hubspot`]: the simulators.

pub mod cdylib;
pub mod clock;
pub mod faults;
pub mod hubspot;
pub mod kantata;
pub mod log;
pub mod postgres;
pub mod quickbooks;
pub mod server;
pub mod smtp;
pub mod xero;

/// Mixes a seed with a few numbers into one seed (splitmix64): the simulators' seeded data.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for p in parts {
        x ^= p.wrapping_add(0x9e37_79b9_7f4a_7c15);
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 31;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 29;
    }
    x
}
