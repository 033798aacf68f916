//! Counters for the data path. Every drop has a counter; silence is a signal.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

macro_rules! counters {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fmeta])* pub $field: AtomicU64,)*
        }

        /// A point-in-time copy of the counters.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct TransportSnapshot {
            $($(#[$fmeta])* pub $field: u64,)*
        }

        impl $name {
            /// Reads every counter.
            pub fn snapshot(&self) -> TransportSnapshot {
                TransportSnapshot { $($field: self.$field.load(Relaxed),)* }
            }
        }

        impl TransportSnapshot {
            /// `(name, value)` for every counter, in declaration order.
            pub fn fields(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field),)*]
            }
        }
    };
}

counters! {
    /// Transport and session counters shared by the receive loop, the send path and the
    /// session actors.
    TransportStats {
        /// Datagrams received.
        rx_packets,
        /// Bytes received.
        rx_bytes,
        /// Datagrams sent.
        tx_packets,
        /// Bytes sent.
        tx_bytes,
        /// Application datagrams delivered to the inbound queue.
        delivered,
        /// Dropped: the inbound queue was full (policy: drop newest).
        dropped_queue_full,
        /// Dropped: the datagram did not parse (bad version, kind, lengths).
        dropped_malformed,
        /// Dropped: larger than the largest packet netrun accepts.
        dropped_oversize,
        /// Datagrams relayed toward their destination (header rewritten, payload untouched).
        forwarded,
        /// Dropped: addressed to another node, but not sent by a direct session neighbour
        /// (a relay forwards only for the mesh).
        dropped_not_neighbour,
        /// Dropped: addressed to another node and no route toward it.
        dropped_no_route,
        /// Dropped: the TTL ran out here.
        dropped_ttl_expired,
        /// Dropped: this node is the packet's source (it looped back).
        dropped_looped,
        /// Dropped: the same `(source, stream, counter)` was relayed recently.
        dropped_duplicate,
        /// Dropped: the socket was full when relaying (policy: drop, never block the
        /// receive loop).
        dropped_forward_full,
        /// Dropped: sealed packet from a node with no session.
        dropped_no_session,
        /// Dropped: the replay window refused the counter.
        dropped_replay,
        /// Dropped: the AEAD tag did not verify.
        dropped_auth,
        /// Dropped: a control batch for a session whose actor is gone.
        dropped_session_gone,
        /// Handshakes completed.
        handshakes_ok,
        /// Handshakes that failed (authentication, identity, timeout).
        handshake_failures,
        /// Handshake first messages dropped as replays.
        handshake_replays,
        /// Socket errors on receive or send.
        socket_errors,
        /// Dropped on send by the test-only loss hook ([`Wire::set_loss`](crate::wire::Wire::set_loss)).
        dropped_injected,
        /// Streams a peer opened that were refused because the accept queue was full.
        streams_refused,
        /// Stream segments or frames that did not decode.
        stream_malformed,
        /// Control envelopes that did not decode.
        envelope_malformed,
        /// Dropped: a control envelope for a subprotocol nothing on this node serves.
        dropped_no_handler,
        /// Dropped: the serving subsystem's inbound queue was full (policy: drop newest).
        dropped_handler_full,
    }
}

impl TransportStats {
    /// Adds one to a counter.
    #[inline]
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}
