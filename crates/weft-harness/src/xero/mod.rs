//! The Xero simulator.
