//! netrun public API.
