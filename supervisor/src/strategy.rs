//! Restart strategies: which siblings restart with a child that must restart.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// How a supervisor reacts when one child must be restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Restart only the child that exited.
    #[default]
    OneForOne,
    /// Stop every other child (reverse start order), then restart all in start order.
    OneForAll,
    /// Stop the children started after the exited one (reverse order), then restart the
    /// exited child and those, in start order.
    RestForOne,
}

impl Strategy {
    /// Indexes (in start order) of the children restarted when child `index` of `len`
    /// children must restart. Always contains `index`.
    pub fn affected(self, index: usize, len: usize) -> Range<usize> {
        match self {
            Self::OneForOne => index..index + 1,
            Self::OneForAll => 0..len,
            Self::RestForOne => index..len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affected_ranges() {
        assert_eq!(Strategy::OneForOne.affected(2, 5), 2..3);
        assert_eq!(Strategy::OneForAll.affected(2, 5), 0..5);
        assert_eq!(Strategy::RestForOne.affected(2, 5), 2..5);
        assert_eq!(Strategy::RestForOne.affected(4, 5), 4..5);
    }
}
