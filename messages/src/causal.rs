//! causal (being written).
