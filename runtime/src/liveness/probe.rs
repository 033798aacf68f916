//! The heartbeat's `stream` field: `probe << 1 | is_reply`.

/// A heartbeat probe as carried in the packet header's `stream` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct HeartbeatProbe {
    /// Probe id (63 bits), chosen by the pinging side and echoed by the reply.
    pub id: u64,
    /// Whether this heartbeat answers a probe.
    pub is_reply: bool,
}

impl HeartbeatProbe {
    /// Largest probe id that fits the field.
    pub const MAX_ID: u64 = u64::MAX >> 1;

    /// A ping with `id` (masked to 63 bits).
    pub const fn ping(id: u64) -> Self {
        Self {
            id: id & Self::MAX_ID,
            is_reply: false,
        }
    }

    /// The reply to this probe.
    pub const fn reply(self) -> Self {
        Self {
            id: self.id,
            is_reply: true,
        }
    }

    /// The `stream` field value.
    pub const fn to_stream(self) -> u64 {
        (self.id << 1) | self.is_reply as u64
    }

    /// Decodes a `stream` field value (every value is valid).
    pub const fn from_stream(stream: u64) -> Self {
        Self {
            id: stream >> 1,
            is_reply: stream & 1 == 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(stream: u64) {
            prop_assert_eq!(HeartbeatProbe::from_stream(stream).to_stream(), stream);
        }
    }

    #[test]
    fn reply_sets_low_bit() {
        let p = HeartbeatProbe::ping(5);
        assert_eq!(p.to_stream(), 10);
        assert_eq!(p.reply().to_stream(), 11);
        assert_eq!(HeartbeatProbe::ping(u64::MAX).id, HeartbeatProbe::MAX_ID);
    }
}
