//! Shared helpers for netrun integration tests.
