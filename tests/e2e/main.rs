//! End-to-end and snapshot tests: one test binary, one module per boundary.

mod diagnostics;
mod specs;
