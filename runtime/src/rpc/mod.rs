//! nRPC cores: the caller's call table, the server's dispatch table, and the resilience
//! policies around them (retry, hedge, circuit breaker, node selection) plus per-service
//! metrics. Wire frames live in `netrun_messages::rpc`; the RPC actor drives these cores.
//!
//! ```text
//!  caller                                               server
//!  Calls::start(now, target, spec, ctx, rng) ─ REQUEST ─▶ Dispatch::handle_request(now, from, ..)
//!     │  poll_timeout / handle_timeout(now)                 │ Admission::Dispatch(Incoming) → handler
//!     │  cancel(id)              ─ CANCEL ──────────────────▶ handle_cancel → ctx (notify handler)
//!     │  consumed(id, n) ─ poll_transmit ─ CREDIT ──────────▶ handle_credit → credit available
//!     ◀─ RESPONSE / STREAM_ITEM / STREAM_END ─ finish(key, outcome) / send_item(key, body)
//!  Calls::handle_frame(now, from, frame) ─ poll_event ─▶ Item / Finished{ctx, result, latency}
//! ```
//!
//! Rules the cores keep:
//! - **Correlation.** Call ids are drawn from the caller's RNG (never sequential). A frame
//!   for a call is accepted only from the node the call was sent to; anything else is
//!   counted and dropped. The server keys calls by (caller, call id) and ignores a second
//!   REQUEST with an id already in flight (the first wins).
//! - **Deadlines.** The caller's deadline travels as a relative budget. On expiry the caller
//!   reports [`RpcError::Timeout`] and sends CANCEL; the server cancels the handler when its
//!   copy of the budget runs out and sends nothing for it.
//! - **Cancel.** Dropping a pending call sends CANCEL; the server marks the call cancelled,
//!   hands the actor the handler's context to notify, keeps the slot until the handler
//!   finishes (so the in-flight bound counts running handlers) and sends no result.
//! - **Streaming credit.** The caller grants items by total (`grant`: items `0..grant` may be
//!   sent), starting from the request's window and moving as the application consumes
//!   items. The server never sends an item beyond the grant; the caller treats one as a
//!   protocol violation. Items are delivered in sequence order; STREAM_END says how many
//!   items were sent, so an end that overtakes items waits for them.
//! - **Bounds.** In-flight calls on both sides, services, per-caller load on the server,
//!   stream windows and buffered items are all bounded by configuration.
//! - **Draining.** A service can stop accepting new calls (answered `Unavailable`) while its
//!   in-flight calls finish; the core reports when it is drained.

mod breaker;
mod client;
mod hedge;
mod metrics;
mod retry;
mod select;
mod server;
#[cfg(test)]
mod tests;

use netrun_messages::rpc::Status;
use thiserror::Error;

pub use breaker::{
    BreakerConfig, BreakerOpen, BreakerState, Breakers, CircuitBreaker, DEFAULT_MAX_BREAKERS,
    Permit,
};
pub use client::{CallEvent, CallSpec, Calls, CallsConfig, CallsStats, Finished, FrameVerdict};
pub use hedge::{Hedge, HedgeError, HedgePolicy, HedgeStep, MAX_HEDGES};
pub use metrics::{
    Direction, LatencyHistogram, MAX_METRIC_SERVICES, RpcMetrics, ServiceMetrics, ServiceSnapshot,
};
pub use retry::RetryPolicy;
pub use select::{Candidate, SelectPolicy, Selector};
pub use server::{
    Admission, CallKey, Completion, Dispatch, DispatchConfig, DispatchStats, HandlerError,
    Incoming, ItemError, ServeError, ServerEvent, StopOutcome,
};

/// Why a call failed, as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RpcError {
    /// No node serving the service could be reached (none known, or none with a session).
    #[error("no route to a node serving the call")]
    NoRoute,
    /// The deadline passed before a result arrived (CANCEL was sent).
    #[error("deadline passed")]
    Timeout,
    /// The call was cancelled (by the caller, or the server reported it cancelled).
    #[error("call cancelled")]
    Cancelled,
    /// The server answered with a non-Ok status.
    #[error("server error {status}: {message}")]
    ServerError {
        /// The status code (a protocol code or one from the application band).
        status: Status,
        /// The server's message (at most `MAX_MESSAGE_LEN` bytes).
        message: String,
    },
    /// The frame could not be sent or the session went away.
    #[error("transport: {0}")]
    Transport(#[from] TransportError),
    /// A body could not be encoded or decoded.
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// The server refused the caller's capability.
    #[error("capability denied")]
    CapabilityDenied,
    /// The target's circuit breaker is open: the call was not sent.
    #[error("circuit breaker open for the target")]
    CircuitOpen,
    /// The caller's in-flight call table is full: the call was not sent.
    #[error("too many calls in flight")]
    Overloaded,
    /// The server broke the protocol (for instance sent stream items beyond its credit).
    #[error("protocol violation: {0}")]
    Protocol(Violation),
    /// A body is larger than one call carries (frames travel in single datagrams; large
    /// payloads go over streams). Nothing was sent.
    #[error("body of {len} bytes exceeds the {max}-byte call limit")]
    TooLarge {
        /// The body's size.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// A transport failure under a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TransportError {
    /// No session to the target node.
    #[error("no session to the node")]
    NoSession,
    /// The session closed while the call was pending.
    #[error("session closed")]
    SessionClosed,
    /// The send path refused the frame (queue full).
    #[error("send queue full")]
    Backpressure,
    /// The node's RPC service is not running (restarting or shut down).
    #[error("rpc service not running")]
    Stopped,
}

/// Which way a codec failure happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodecDirection {
    /// Building the request (or a typed body) failed.
    Encode,
    /// Reading the response (or a typed body) failed.
    Decode,
}

/// A body that could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{direction:?}: {detail}")]
pub struct CodecError {
    /// Which way.
    pub direction: CodecDirection,
    /// What the codec reported.
    pub detail: String,
}

/// How a server broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Violation {
    /// A stream item arrived with a sequence number at or beyond the granted credit.
    #[error("stream item beyond the granted credit")]
    BeyondCredit,
    /// A frame kind that does not fit the call (an item for a unary call, an Ok RESPONSE
    /// for a streaming call).
    #[error("frame does not fit the call")]
    UnexpectedFrame,
    /// STREAM_END claims an item count that contradicts the items seen or granted.
    #[error("stream end item count is inconsistent")]
    ItemCount,
}

/// The class of an [`RpcError`], for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// [`RpcError::NoRoute`].
    NoRoute,
    /// [`RpcError::Timeout`].
    Timeout,
    /// [`RpcError::Cancelled`].
    Cancelled,
    /// [`RpcError::ServerError`].
    Server,
    /// [`RpcError::Transport`].
    Transport,
    /// [`RpcError::Codec`] and [`RpcError::TooLarge`].
    Codec,
    /// [`RpcError::CapabilityDenied`].
    CapabilityDenied,
    /// [`RpcError::CircuitOpen`].
    CircuitOpen,
    /// [`RpcError::Overloaded`].
    Overloaded,
    /// [`RpcError::Protocol`].
    Protocol,
}

impl ErrorKind {
    /// Number of kinds.
    pub const COUNT: usize = 10;
    /// Every kind, in index order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::NoRoute,
        Self::Timeout,
        Self::Cancelled,
        Self::Server,
        Self::Transport,
        Self::Codec,
        Self::CapabilityDenied,
        Self::CircuitOpen,
        Self::Overloaded,
        Self::Protocol,
    ];

    /// Index into per-kind counters.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A stable snake-case name (`no_route`, `timeout`, …).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NoRoute => "no_route",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::Server => "server_error",
            Self::Transport => "transport",
            Self::Codec => "codec",
            Self::CapabilityDenied => "capability_denied",
            Self::CircuitOpen => "breaker_open",
            Self::Overloaded => "overloaded",
            Self::Protocol => "protocol",
        }
    }
}

impl RpcError {
    /// The caller-side error for a non-Ok status from the server: `Cancelled`,
    /// `DeadlineExceeded` (→ [`RpcError::Timeout`]) and `CapabilityDenied` have their own
    /// variants; every other code is a [`RpcError::ServerError`].
    pub fn from_status(status: Status, message: &str) -> Self {
        match status {
            Status::CANCELLED => Self::Cancelled,
            Status::DEADLINE_EXCEEDED => Self::Timeout,
            Status::CAPABILITY_DENIED => Self::CapabilityDenied,
            _ => Self::ServerError {
                status,
                message: message.to_owned(),
            },
        }
    }

    /// The error's class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::NoRoute => ErrorKind::NoRoute,
            Self::Timeout => ErrorKind::Timeout,
            Self::Cancelled => ErrorKind::Cancelled,
            Self::ServerError { .. } => ErrorKind::Server,
            Self::Transport(_) => ErrorKind::Transport,
            Self::Codec(_) | Self::TooLarge { .. } => ErrorKind::Codec,
            Self::CapabilityDenied => ErrorKind::CapabilityDenied,
            Self::CircuitOpen => ErrorKind::CircuitOpen,
            Self::Overloaded => ErrorKind::Overloaded,
            Self::Protocol(_) => ErrorKind::Protocol,
        }
    }

    /// Whether another attempt may succeed: timeouts, transport failures, a full local
    /// call table, and server errors that say the node was in trouble (`Internal`,
    /// `Unavailable`, `ResourceExhausted`). Not retried: no route (resolution found
    /// nothing), cancellation, codec and protocol errors, capability denial, an open
    /// breaker, `NotFound`, `InvalidArgument` and application-band statuses.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout | Self::Transport(_) | Self::Overloaded => true,
            Self::ServerError { status, .. } => is_transient(*status),
            _ => false,
        }
    }

    /// Whether the error counts against the target's circuit breaker: the node (or the
    /// path to it) failed, as opposed to the caller or the application. Timeouts,
    /// transport failures, protocol violations and transient server statuses count;
    /// application errors, `NotFound`, cancellation and local refusals (including a
    /// stopped local RPC service) do not.
    pub fn is_node_failure(&self) -> bool {
        match self {
            Self::Transport(TransportError::Stopped) => false,
            Self::Timeout | Self::Transport(_) | Self::Protocol(_) => true,
            Self::ServerError { status, .. } => is_transient(*status),
            _ => false,
        }
    }
}

fn is_transient(status: Status) -> bool {
    matches!(
        status,
        Status::INTERNAL | Status::UNAVAILABLE | Status::RESOURCE_EXHAUSTED
    )
}

/// Mixes a u64 (SplitMix64 finaliser): the cheap hash the selection policies use.
pub(crate) const fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
