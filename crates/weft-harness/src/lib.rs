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
//! - [`kantata`], [`xero`], [`quickbooks`]: the simulators.

pub mod cdylib;
pub mod clock;
pub mod faults;
pub mod kantata;
pub mod log;
pub mod postgres;
pub mod quickbooks;
pub mod server;
pub mod smtp;
pub mod xero;
