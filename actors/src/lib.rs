//! netrun actors.
