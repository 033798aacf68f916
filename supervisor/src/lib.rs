//! netrun supervision.
