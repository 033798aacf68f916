//! Channel membership messages: subscribe, unsubscribe, the publisher's acknowledgement
//! and its eviction notice.
//!
//! A subscriber asks a publisher to add it to a channel's roster with [`Subscribe`] and
//! leaves with [`Unsubscribe`]; the publisher answers both with an [`Ack`] that echoes the
//! request's random `nonce`, so the subscriber matches the answer to its request (and
//! accepts it only from the node it asked). A rejection carries a [`RejectReason`]. When
//! the publisher removes a subscriber without being asked (its token expired, an issuer
//! was revoked, the channel was unregistered) it tells it with [`Evicted`], which echoes
//! the nonce of the Subscribe that admitted the subscription and says why
//! ([`EvictReason`]).
//!
//! The four messages are the rmp-serde body of a
//! [`Subprotocol::MEMBERSHIP`](crate::Subprotocol::MEMBERSHIP) envelope, as the
//! externally tagged enum [`MembershipMessage`]: rmp-serde's default form, so structs are
//! msgpack arrays in field order and an enum is a one-entry map from the variant name to
//! its value (a unit variant is just its name).
//!
//! ```text
//! MembershipMessage = { "Subscribe":   [nonce u64, channel str, tokens [bin 161]*, options [best_effort bool]] }
//!                   | { "Unsubscribe": [nonce u64, channel str] }
//!                   | { "Ack":         [nonce u64, channel str, result AckResult] }
//!                   | { "Evicted":     [nonce u64, channel str, reason EvictReason] }
//! AckResult         = { "Subscribed": [reliable bool, priority u8, token_expires_at u64 | nil] }
//!                   | "Unsubscribed"
//!                   | { "Rejected": "Unauthorized" | "UnknownChannel" | "RateLimited" | "TooManySubscribers" }
//! EvictReason       = "TokenExpired" | "IssuerRevoked" | "ChannelClosed"
//! ```
//!
//! Decoding ([`MembershipMessage::decode`]) is total and typed: the body is bounded by the
//! envelope limit, nesting is capped, nothing may follow the message, the channel name is
//! validated and canonicalized, the token chain holds at most [`MAX_TOKEN_CHAIN`] tokens
//! (checked against the list's declared count before anything is reserved or kept) and
//! every token must be a well-formed [`PermissionToken`] (signatures are the publisher's
//! job, after its rate limiter). Layout and rules: `docs/protocol/channel.md`.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{ChannelName, ChannelNameError};
use crate::bounded::BoundedSeq;
use crate::envelope::{EncodeError, Envelope, Subprotocol, TraceContext, decode_body};
use crate::error::DecodeError;
use crate::token::{PermissionToken, TokenError};

/// Most tokens in a presented chain: a root grant plus three delegations. Longer chains are
/// refused at decode time, before any signature is looked at.
pub const MAX_TOKEN_CHAIN: usize = 4;

/// One membership message (the body of a `MEMBERSHIP` envelope).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipMessage {
    /// Join a channel.
    Subscribe(Subscribe),
    /// Leave a channel.
    Unsubscribe(Unsubscribe),
    /// The publisher's answer to either.
    Ack(Ack),
    /// The publisher removed the receiving subscriber from a roster without being asked.
    Evicted(Evicted),
}

/// A request to join `channel` on the receiving publisher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Random correlation id, echoed in the [`Ack`].
    pub nonce: u64,
    /// The channel (canonical).
    pub channel: ChannelName,
    /// Credentials: a root-first token chain ending in a grant for the subscriber; empty
    /// when the subscriber has none.
    pub tokens: TokenChain,
    /// The subscriber's delivery preferences.
    pub options: SubscribeOptions,
}

/// A request to leave `channel`. Leaving a channel one is not on is not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Random correlation id, echoed in the [`Ack`].
    pub nonce: u64,
    /// The channel (canonical).
    pub channel: ChannelName,
}

/// The publisher's answer to a [`Subscribe`] or [`Unsubscribe`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The request's nonce.
    pub nonce: u64,
    /// The request's channel.
    pub channel: ChannelName,
    /// What happened.
    pub result: AckResult,
}

/// The publisher's notice that it removed the receiving node from `channel`'s roster on
/// its own. It is never answered: the subscriber ends the subscription if the notice is
/// for one it holds with the sender, and ignores it otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// The nonce of the Subscribe that admitted (or last renewed) the subscription, so a
    /// notice about an earlier admission cannot end a later one.
    pub nonce: u64,
    /// The channel (canonical).
    pub channel: ChannelName,
    /// Why.
    pub reason: EvictReason,
}

/// Why a publisher removed a subscriber without being asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EvictReason {
    /// Its token chain expired (the publisher's expiry sweep).
    TokenExpired,
    /// An issuer in its token chain was revoked.
    IssuerRevoked,
    /// The publisher stopped publishing the channel.
    ChannelClosed,
}

/// The outcome an [`Ack`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AckResult {
    /// The subscriber is on the roster (new or renewed).
    Subscribed(Granted),
    /// The subscriber is not on the roster (whether or not it was before).
    Unsubscribed,
    /// The subscribe was refused.
    Rejected(RejectReason),
}

/// What a successful subscribe grants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Granted {
    /// Events arrive over a reliable stream (else best effort).
    pub reliable: bool,
    /// The channel's priority (larger is more urgent).
    pub priority: u8,
    /// When the presented token chain stops being valid (unix seconds, before skew): the
    /// subscriber should re-subscribe with a fresh token before then. `None` when the
    /// channel takes no token.
    pub token_expires_at: Option<u64>,
}

/// Why a subscribe was refused. Authorization sub-reasons (missing token, bad signature,
/// capability mismatch…) are deliberately not told apart on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RejectReason {
    /// The credentials do not allow subscribing.
    Unauthorized,
    /// The publisher has no such channel (or does not show it to this subscriber).
    UnknownChannel,
    /// Too many recent authorization failures from this peer; retry later.
    RateLimited,
    /// The channel's roster is full.
    TooManySubscribers,
}

/// A subscriber's delivery preferences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SubscribeOptions {
    /// Deliver best effort even if the channel is reliable (a consumer that prefers fresh
    /// events to complete ones).
    pub best_effort: bool,
}

/// A root-first chain of at most [`MAX_TOKEN_CHAIN`] permission tokens: `tokens[0]` is
/// issued by a root the publisher trusts, each next token is delegated by the previous
/// token's subject, and the last one names the subscriber.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenChain(Vec<PermissionToken>);

/// Why a membership message could not be decoded.
#[derive(Debug, Error)]
pub enum MembershipError {
    /// The body is not well-formed msgpack of the expected shape, is too long or has
    /// trailing bytes.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The envelope belongs to another subprotocol.
    #[error("envelope subprotocol {0:#06x} is not membership")]
    WrongSubprotocol(u16),
    /// The channel name is invalid.
    #[error("channel name: {0}")]
    ChannelName(#[from] ChannelNameError),
    /// The token chain is longer than [`MAX_TOKEN_CHAIN`].
    #[error("token chain of {0} tokens exceeds the limit of 4")]
    TokenChainTooLong(usize),
    /// A token in the chain is malformed.
    #[error("token: {0}")]
    Token(#[from] TokenError),
}

impl MembershipMessage {
    /// The rmp-serde body.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        Ok(rmp_serde::to_vec(&RawMessage::from(self))?)
    }

    /// A complete `MEMBERSHIP` envelope carrying this message.
    pub fn to_envelope(&self, trace: Option<TraceContext>) -> Result<Vec<u8>, EncodeError> {
        let body = self.encode()?;
        Ok(Envelope::new(Subprotocol::MEMBERSHIP, trace, &body)?.to_vec())
    }

    /// Decodes an rmp-serde body (see the [module docs](self) for every check).
    pub fn decode(body: &[u8]) -> Result<Self, MembershipError> {
        decode_body::<RawMessage>(body, "membership body")?.try_into()
    }

    /// Decodes the body of an envelope, which must be a `MEMBERSHIP` envelope.
    pub fn from_envelope(envelope: &Envelope<'_>) -> Result<Self, MembershipError> {
        if envelope.subprotocol != Subprotocol::MEMBERSHIP {
            return Err(MembershipError::WrongSubprotocol(envelope.subprotocol.0));
        }
        Self::decode(envelope.body)
    }

    /// The channel the message is about.
    pub fn channel(&self) -> &ChannelName {
        match self {
            Self::Subscribe(m) => &m.channel,
            Self::Unsubscribe(m) => &m.channel,
            Self::Ack(m) => &m.channel,
            Self::Evicted(m) => &m.channel,
        }
    }

    /// The correlation nonce (for [`Evicted`], the admitting Subscribe's).
    pub fn nonce(&self) -> u64 {
        match self {
            Self::Subscribe(m) => m.nonce,
            Self::Unsubscribe(m) => m.nonce,
            Self::Ack(m) => m.nonce,
            Self::Evicted(m) => m.nonce,
        }
    }
}

impl fmt::Display for EvictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::TokenExpired => "token expired",
            Self::IssuerRevoked => "token issuer revoked",
            Self::ChannelClosed => "channel closed",
        })
    }
}

impl TokenChain {
    /// A chain of `tokens`, root first; refuses more than [`MAX_TOKEN_CHAIN`].
    pub fn new(tokens: Vec<PermissionToken>) -> Result<Self, MembershipError> {
        if tokens.len() > MAX_TOKEN_CHAIN {
            return Err(MembershipError::TokenChainTooLong(tokens.len()));
        }
        Ok(Self(tokens))
    }

    /// A chain of one directly issued token.
    pub fn single(token: PermissionToken) -> Self {
        Self(vec![token])
    }

    /// The tokens, root first.
    pub fn as_slice(&self) -> &[PermissionToken] {
        &self.0
    }

    /// Whether no token was presented.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of tokens.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

/// The wire shape: like the public types, with unvalidated names and token bytes.
#[derive(Serialize, Deserialize)]
enum RawMessage {
    Subscribe(RawSubscribe),
    Unsubscribe(RawUnsubscribe),
    Ack(RawAck),
    Evicted(RawEvicted),
}

#[derive(Serialize, Deserialize)]
struct RawSubscribe {
    nonce: u64,
    channel: String,
    tokens: RawTokens,
    options: SubscribeOptions,
}

/// The wire token list, bounded while it is read: nothing is reserved or kept beyond
/// [`MAX_TOKEN_CHAIN`] entries, and a longer list is reported by its length.
type RawTokens = BoundedSeq<Bytes, MAX_TOKEN_CHAIN>;

#[derive(Serialize, Deserialize)]
struct RawUnsubscribe {
    nonce: u64,
    channel: String,
}

#[derive(Serialize, Deserialize)]
struct RawAck {
    nonce: u64,
    channel: String,
    result: AckResult,
}

#[derive(Serialize, Deserialize)]
struct RawEvicted {
    nonce: u64,
    channel: String,
    reason: EvictReason,
}

impl From<&MembershipMessage> for RawMessage {
    fn from(message: &MembershipMessage) -> Self {
        match message {
            MembershipMessage::Subscribe(m) => Self::Subscribe(RawSubscribe {
                nonce: m.nonce,
                channel: m.channel.as_str().to_owned(),
                tokens: RawTokens::new(
                    m.tokens
                        .as_slice()
                        .iter()
                        .map(|t| Bytes::copy_from_slice(&t.to_bytes()))
                        .collect(),
                ),
                options: m.options,
            }),
            MembershipMessage::Unsubscribe(m) => Self::Unsubscribe(RawUnsubscribe {
                nonce: m.nonce,
                channel: m.channel.as_str().to_owned(),
            }),
            MembershipMessage::Ack(m) => Self::Ack(RawAck {
                nonce: m.nonce,
                channel: m.channel.as_str().to_owned(),
                result: m.result,
            }),
            MembershipMessage::Evicted(m) => Self::Evicted(RawEvicted {
                nonce: m.nonce,
                channel: m.channel.as_str().to_owned(),
                reason: m.reason,
            }),
        }
    }
}

impl TryFrom<RawMessage> for MembershipMessage {
    type Error = MembershipError;

    fn try_from(raw: RawMessage) -> Result<Self, Self::Error> {
        Ok(match raw {
            RawMessage::Subscribe(m) => {
                let raw_tokens = m
                    .tokens
                    .into_items()
                    .map_err(MembershipError::TokenChainTooLong)?;
                let channel = ChannelName::new(&m.channel)?;
                let tokens = raw_tokens
                    .iter()
                    .map(|bytes| PermissionToken::from_bytes(bytes))
                    .collect::<Result<Vec<_>, _>>()?;
                Self::Subscribe(Subscribe {
                    nonce: m.nonce,
                    channel,
                    tokens: TokenChain(tokens),
                    options: m.options,
                })
            }
            RawMessage::Unsubscribe(m) => Self::Unsubscribe(Unsubscribe {
                nonce: m.nonce,
                channel: ChannelName::new(&m.channel)?,
            }),
            RawMessage::Ack(m) => Self::Ack(Ack {
                nonce: m.nonce,
                channel: ChannelName::new(&m.channel)?,
                result: m.result,
            }),
            RawMessage::Evicted(m) => Self::Evicted(Evicted {
                nonce: m.nonce,
                channel: ChannelName::new(&m.channel)?,
                reason: m.reason,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::MAX_BODY_LEN;
    use crate::identity::Identity;
    use crate::token::TokenScope;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000;

    fn token(seed: u8, channel: &ChannelName) -> PermissionToken {
        let issuer = Identity::from_seed([seed; 32]);
        let subject = Identity::from_seed([seed.wrapping_add(1); 32]);
        PermissionToken::try_issue(
            &issuer,
            subject.entity_id(),
            TokenScope::SUBSCRIBE,
            channel.hash(),
            NOW,
            600,
            0,
            u64::from(seed),
        )
        .expect("issues")
    }

    fn name() -> impl Strategy<Value = ChannelName> {
        "[a-zA-Z0-9_:-]{1,8}([./][a-zA-Z0-9_:-]{1,8}){0,3}"
            .prop_map(|s| ChannelName::new(&s).expect("valid by construction"))
    }

    fn reason() -> impl Strategy<Value = RejectReason> {
        prop_oneof![
            Just(RejectReason::Unauthorized),
            Just(RejectReason::UnknownChannel),
            Just(RejectReason::RateLimited),
            Just(RejectReason::TooManySubscribers),
        ]
    }

    fn evict_reason() -> impl Strategy<Value = EvictReason> {
        prop_oneof![
            Just(EvictReason::TokenExpired),
            Just(EvictReason::IssuerRevoked),
            Just(EvictReason::ChannelClosed),
        ]
    }

    fn result() -> impl Strategy<Value = AckResult> {
        prop_oneof![
            (
                any::<bool>(),
                any::<u8>(),
                proptest::option::of(any::<u64>())
            )
                .prop_map(|(reliable, priority, token_expires_at)| {
                    AckResult::Subscribed(Granted {
                        reliable,
                        priority,
                        token_expires_at,
                    })
                }),
            Just(AckResult::Unsubscribed),
            reason().prop_map(AckResult::Rejected),
        ]
    }

    fn message() -> impl Strategy<Value = MembershipMessage> {
        prop_oneof![
            (
                any::<u64>(),
                name(),
                0..=MAX_TOKEN_CHAIN,
                any::<bool>(),
                any::<u8>()
            )
                .prop_map(|(nonce, channel, n, best_effort, seed)| {
                    let tokens = (0..n)
                        .map(|i| token(seed.wrapping_add(i as u8 * 2), &channel))
                        .collect();
                    MembershipMessage::Subscribe(Subscribe {
                        nonce,
                        tokens: TokenChain::new(tokens).expect("bounded"),
                        channel,
                        options: SubscribeOptions { best_effort },
                    })
                }),
            (any::<u64>(), name()).prop_map(|(nonce, channel)| {
                MembershipMessage::Unsubscribe(Unsubscribe { nonce, channel })
            }),
            (any::<u64>(), name(), result()).prop_map(|(nonce, channel, result)| {
                MembershipMessage::Ack(Ack {
                    nonce,
                    channel,
                    result,
                })
            }),
            (any::<u64>(), name(), evict_reason()).prop_map(|(nonce, channel, reason)| {
                MembershipMessage::Evicted(Evicted {
                    nonce,
                    channel,
                    reason,
                })
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(msg in message(), traced: bool) {
            let body = msg.encode().expect("encodes");
            prop_assert_eq!(&MembershipMessage::decode(&body).expect("decodes"), &msg);
            let trace = traced.then_some(TraceContext { trace_id: [1; 16], span_id: [2; 8], flags: 1 });
            let bytes = msg.to_envelope(trace).expect("enveloped");
            let env = Envelope::decode(&bytes).expect("envelope decodes");
            prop_assert_eq!(env.trace, trace);
            prop_assert_eq!(MembershipMessage::from_envelope(&env).expect("decodes"), msg);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(msg) = MembershipMessage::decode(&bytes) {
                // Whatever decodes re-encodes and decodes to the same value.
                let again = msg.encode().expect("re-encodes");
                prop_assert_eq!(MembershipMessage::decode(&again).expect("decodes"), msg);
            }
        }

        #[test]
        fn mutated_bodies_never_panic(msg in message(), at: usize, byte: u8) {
            let mut body = msg.encode().expect("encodes");
            let at = at % body.len();
            body[at] = byte;
            let _ = MembershipMessage::decode(&body);
        }
    }

    #[test]
    fn canonicalizes_names_on_decode() {
        let raw = RawMessage::Unsubscribe(RawUnsubscribe {
            nonce: 9,
            channel: "FOO.Bar".into(),
        });
        let body = rmp_serde::to_vec(&raw).expect("encodes");
        let msg = MembershipMessage::decode(&body).expect("decodes");
        assert_eq!(msg.channel().as_str(), "foo.bar");
        assert_eq!(msg.nonce(), 9);
    }

    #[test]
    fn evicted_layout_and_errors() {
        let evicted = |channel: &str, reason: &str| {
            // {"Evicted": [7, channel, reason]}
            let mut body = vec![0x81, 0xa7];
            body.extend_from_slice(b"Evicted");
            body.extend_from_slice(&[0x93, 0x07, 0xa0 | channel.len() as u8]);
            body.extend_from_slice(channel.as_bytes());
            body.push(0xa0 | reason.len() as u8);
            body.extend_from_slice(reason.as_bytes());
            body
        };
        let message = MembershipMessage::Evicted(Evicted {
            nonce: 7,
            channel: ChannelName::new("a.b").expect("valid"),
            reason: EvictReason::TokenExpired,
        });
        assert_eq!(
            message.encode().expect("encodes"),
            evicted("a.b", "TokenExpired")
        );
        let decoded = MembershipMessage::decode(&evicted("A.B", "ChannelClosed")).expect("decodes");
        assert_eq!(decoded.channel().as_str(), "a.b");
        assert_eq!(decoded.nonce(), 7);
        assert!(matches!(
            decoded,
            MembershipMessage::Evicted(Evicted {
                reason: EvictReason::ChannelClosed,
                ..
            })
        ));
        assert!(matches!(
            MembershipMessage::decode(&evicted("a.b", "Bored")),
            Err(MembershipError::Decode(DecodeError::Body(_)))
        ));
        assert!(matches!(
            MembershipMessage::decode(&evicted("a..b", "IssuerRevoked")),
            Err(MembershipError::ChannelName(ChannelNameError::EmptySegment))
        ));
        assert_eq!(
            EvictReason::IssuerRevoked.to_string(),
            "token issuer revoked"
        );
    }

    #[test]
    fn typed_errors() {
        let channel = ChannelName::new("a.b").expect("valid");
        let sub = |tokens: Vec<Bytes>, channel: &str| {
            rmp_serde::to_vec(&RawMessage::Subscribe(RawSubscribe {
                nonce: 1,
                channel: channel.into(),
                tokens: RawTokens::new(tokens),
                options: SubscribeOptions::default(),
            }))
            .expect("encodes")
        };
        let good = Bytes::copy_from_slice(&token(1, &channel).to_bytes());

        let too_many = sub(vec![good.clone(); MAX_TOKEN_CHAIN + 1], "a.b");
        assert!(matches!(
            MembershipMessage::decode(&too_many),
            Err(MembershipError::TokenChainTooLong(5))
        ));
        assert!(matches!(
            TokenChain::new(vec![token(1, &channel); MAX_TOKEN_CHAIN + 1]),
            Err(MembershipError::TokenChainTooLong(5))
        ));
        let short = sub(vec![good.slice(..160)], "a.b");
        assert!(matches!(
            MembershipMessage::decode(&short),
            Err(MembershipError::Token(TokenError::InvalidFormat))
        ));
        let bad_name = sub(vec![good.clone()], "a..b");
        assert!(matches!(
            MembershipMessage::decode(&bad_name),
            Err(MembershipError::ChannelName(ChannelNameError::EmptySegment))
        ));
        let mut trailing = sub(vec![good], "a.b");
        trailing.push(0xc0);
        assert!(matches!(
            MembershipMessage::decode(&trailing),
            Err(MembershipError::Decode(DecodeError::TrailingBytes(1)))
        ));
        assert!(matches!(
            MembershipMessage::decode(&[0x81, 0xa3, b'F', b'o', b'o', 0xc0]),
            Err(MembershipError::Decode(DecodeError::Body(_)))
        ));
        assert!(matches!(
            MembershipMessage::decode(&vec![0x91; MAX_BODY_LEN + 1]),
            Err(MembershipError::Decode(DecodeError::TooLong { .. }))
        ));
        // Deep nesting is refused, not followed.
        assert!(matches!(
            MembershipMessage::decode(&[0x91; 4096]),
            Err(MembershipError::Decode(DecodeError::Body(_)))
        ));
        let other = Envelope::new(Subprotocol::CHANNEL, None, b"\xc0").expect("valid");
        assert!(matches!(
            MembershipMessage::from_envelope(&other),
            Err(MembershipError::WrongSubprotocol(0x0700))
        ));
    }

    /// A Subscribe body `{"Subscribe": [1, "a.b", <tokens>, [false]]}` with the token list
    /// given as raw msgpack.
    fn subscribe_with_raw_tokens(tokens: &[u8]) -> Vec<u8> {
        let mut body = vec![0x81, 0xa9];
        body.extend_from_slice(b"Subscribe");
        body.extend_from_slice(&[0x94, 0x01, 0xa3, b'a', b'.', b'b']);
        body.extend_from_slice(tokens);
        body.extend_from_slice(&[0x91, 0xc2]);
        body
    }

    #[test]
    fn token_counts_are_checked_before_entries_are_kept() {
        // The shape is right: an empty list decodes.
        assert!(MembershipMessage::decode(&subscribe_with_raw_tokens(&[0x90])).is_ok());
        // A list declaring more entries than the chain bound is refused for its length
        // whatever the entries are: they are stepped over, never decoded as tokens.
        let five_nils = subscribe_with_raw_tokens(&[0x95, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0]);
        assert!(matches!(
            MembershipMessage::decode(&five_nils),
            Err(MembershipError::TokenChainTooLong(5))
        ));
        // Within the bound, every entry must be a token's bytes.
        let one_nil = subscribe_with_raw_tokens(&[0x91, 0xc0]);
        assert!(matches!(
            MembershipMessage::decode(&one_nil),
            Err(MembershipError::Decode(DecodeError::Body(_)))
        ));
        // Thirty thousand empty entries (as many as fit in a body) are counted, not kept.
        let mut many = vec![0xdc];
        many.extend_from_slice(&30_000u16.to_be_bytes());
        many.extend(std::iter::repeat_n([0xc4, 0x00], 30_000).flatten());
        assert!(matches!(
            MembershipMessage::decode(&subscribe_with_raw_tokens(&many)),
            Err(MembershipError::TokenChainTooLong(30_000))
        ));
        // A hostile count with nothing behind it: refused, nothing reserved for it.
        let hostile = subscribe_with_raw_tokens(&[0xdd, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            MembershipMessage::decode(&hostile),
            Err(MembershipError::Decode(DecodeError::Body(_)))
        ));
    }

    #[test]
    fn options_default_when_absent() {
        // A sender whose options array is empty (fields it does not know): defaults apply.
        let body = rmp_serde::to_vec(&RawMessage::Subscribe(RawSubscribe {
            nonce: 3,
            channel: "x".into(),
            tokens: RawTokens::new(vec![]),
            options: SubscribeOptions::default(),
        }))
        .expect("encodes");
        // [best_effort] with one element, then replace it by an empty array: defaults apply.
        let mut empty_options = body.clone();
        let last = empty_options.len() - 2;
        assert_eq!(&empty_options[last..], &[0x91, 0xc2]);
        empty_options.truncate(last);
        empty_options.push(0x90);
        match MembershipMessage::decode(&empty_options).expect("decodes") {
            MembershipMessage::Subscribe(s) => assert_eq!(s.options, SubscribeOptions::default()),
            other => panic!("unexpected {other:?}"),
        }
    }
}
