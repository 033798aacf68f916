//! capability (being written).
