//! Permission tokens: ed25519-signed, scoped, time-bounded, delegatable grants on a channel.
//!
//! A token says "`issuer` lets `subject` do `scope` on channel `channel_hash` between
//! `not_before` and `not_after`". It has one fixed wire form of [`WIRE_SIZE`] bytes; any
//! other length is refused, so there is no in-place upgrade from another layout.
//!
//! ```text
//!  off size field             notes
//!    0  32  issuer            EntityId (ed25519 public key) that signed the token
//!   32  32  subject           EntityId the grant is for
//!   64   4  scope             TokenScope bits, u32 LE; undefined bits are refused
//!   68   4  channel_hash      ChannelHash, u32 LE
//!   72   8  not_before        unix seconds, u64 LE
//!   80   8  not_after         unix seconds, u64 LE; must be > not_before
//!   88   1  delegation_depth  how many further delegations the subject may make
//!   89   8  nonce             u64 LE; makes two otherwise equal grants distinct
//!   97  64  signature         ed25519 over SIGNING_TAG ‖ bytes 0..97
//! ```
//!
//! The signature covers a domain tag followed by the first [`SIGNED_LEN`] bytes, so a token
//! signature can never be replayed as a signature over any other netrun structure. Validity
//! is checked by [`PermissionToken::check`] against a caller-supplied clock; the tolerated
//! skew is clamped to [`MAX_CLOCK_SKEW_SECS`]. Delegation ([`PermissionToken::delegate`])
//! only narrows: the child's scope is a subset, its depth one less, and its expiry never
//! later than the parent's, so the one-year TTL cap holds along a whole chain.

use thiserror::Error;

use crate::channel::ChannelHash;
use crate::identity::{Identity, Signature};
use crate::ids::EntityId;

/// Encoded token size.
pub const WIRE_SIZE: usize = 161;
/// Bytes covered by the signature (everything before it).
pub const SIGNED_LEN: usize = 97;
/// Longest lifetime a token may be issued with: one year. Longer grants should be re-issued.
pub const MAX_TOKEN_TTL_SECS: u64 = 365 * 24 * 60 * 60;
/// Largest clock skew a verifier tolerates: five minutes. Larger requests are clamped.
pub const MAX_CLOCK_SKEW_SECS: u64 = 5 * 60;
/// Longest lifetime of a delegated token: 30 days, whatever the parent allows.
pub const DELEGATION_MAX_TTL_SECS: u64 = 30 * 24 * 60 * 60;
/// Domain-separation prefix of the signed message.
const SIGNING_TAG: &[u8; 16] = b"netrun token v1\0";

/// What a token allows, as a set of bits. [`TokenScope::NONE`] authorizes nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TokenScope(u32);

impl TokenScope {
    /// No permission.
    pub const NONE: Self = Self(0);
    /// Publish to the channel.
    pub const PUBLISH: Self = Self(1);
    /// Subscribe to the channel.
    pub const SUBSCRIBE: Self = Self(1 << 1);
    /// Issue narrower tokens for the channel to others.
    pub const DELEGATE: Self = Self(1 << 2);
    const ALL: u32 = 0b111;

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// A scope from bits; `None` if an undefined bit is set.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        if bits & !Self::ALL == 0 {
            Some(Self(bits))
        } else {
            None
        }
    }

    /// Whether every permission of `needed` is granted. Asking for [`TokenScope::NONE`]
    /// is never granted: an empty request is a caller bug, not a free pass.
    pub const fn contains(self, needed: Self) -> bool {
        needed.0 != 0 && self.0 & needed.0 == needed.0
    }

    /// Whether this scope grants nothing outside `parent`.
    pub const fn is_subset_of(self, parent: Self) -> bool {
        self.0 & !parent.0 == 0
    }

    /// The union of two scopes.
    #[must_use]
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Why a token could not be issued, decoded, delegated or accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TokenError {
    /// The bytes are not a token: wrong length, undefined scope bits or an empty validity
    /// window.
    #[error("malformed permission token")]
    InvalidFormat,
    /// A token was requested with a lifetime of zero seconds.
    #[error("token ttl is zero")]
    ZeroTtl,
    /// A token was requested with a lifetime over [`MAX_TOKEN_TTL_SECS`].
    #[error("token ttl {0} s exceeds one year")]
    TtlTooLong(u64),
    /// `not_before` is still in the future, even allowing for clock skew.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `not_after` has passed, even allowing for clock skew.
    #[error("token has expired")]
    Expired,
    /// The token was issued to another entity.
    #[error("token is for another subject")]
    WrongSubject,
    /// The token is for another channel.
    #[error("token is for another channel")]
    WrongChannel,
    /// The token does not grant the requested permission.
    #[error("token scope does not grant the request")]
    ScopeNotGranted,
    /// The signature does not verify under the issuer key.
    #[error("token signature does not verify")]
    BadSignature,
    /// Only the subject of a token may delegate it.
    #[error("only the token subject may delegate it")]
    NotSubject,
    /// The parent token lacks [`TokenScope::DELEGATE`].
    #[error("token does not allow delegation")]
    DelegationNotAllowed,
    /// The parent token's delegation depth is zero.
    #[error("token delegation depth is exhausted")]
    DepthExhausted,
    /// The child scope asks for more than the parent grants.
    #[error("delegated scope exceeds the parent scope")]
    ScopeEscalation,
}

/// A signed permission grant. See the [module docs](self) for the wire form.
///
/// Fields are read-only: a token is built by [`PermissionToken::try_issue`],
/// [`PermissionToken::delegate`] or [`PermissionToken::from_bytes`], never assembled by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PermissionToken {
    issuer: EntityId,
    subject: EntityId,
    scope: TokenScope,
    channel: ChannelHash,
    not_before: u64,
    not_after: u64,
    delegation_depth: u8,
    nonce: u64,
    signature: Signature,
}

impl PermissionToken {
    /// Issues a token valid from `now_unix` for `ttl_secs` seconds, signed by `issuer`.
    ///
    /// `nonce` should be random; it keeps two grants with equal fields distinct.
    #[allow(clippy::too_many_arguments)]
    pub fn try_issue(
        issuer: &Identity,
        subject: EntityId,
        scope: TokenScope,
        channel: ChannelHash,
        now_unix: u64,
        ttl_secs: u64,
        delegation_depth: u8,
        nonce: u64,
    ) -> Result<Self, TokenError> {
        check_ttl(ttl_secs)?;
        let mut token = Self {
            issuer: issuer.entity_id(),
            subject,
            scope,
            channel,
            not_before: now_unix,
            not_after: now_unix.saturating_add(ttl_secs),
            delegation_depth,
            nonce,
            signature: Signature([0; 64]),
        };
        if token.not_after <= token.not_before {
            // Only reachable at the very end of the u64 clock.
            return Err(TokenError::InvalidFormat);
        }
        token.signature = issuer.sign(&token.signed_message());
        Ok(token)
    }

    /// Issues a narrower token for `new_subject`, signed by `holder`, who must be this
    /// token's subject.
    ///
    /// Rules: this token must verify and carry [`TokenScope::DELEGATE`] with depth > 0;
    /// `scope` must be a subset of this token's scope; the child's depth is one less; its
    /// validity starts at `max(now, parent.not_before)` and ends at
    /// `min(parent.not_after, now + DELEGATION_MAX_TTL_SECS, now + ttl_secs)`.
    pub fn delegate(
        &self,
        holder: &Identity,
        new_subject: EntityId,
        scope: TokenScope,
        now_unix: u64,
        ttl_secs: u64,
        nonce: u64,
    ) -> Result<Self, TokenError> {
        check_ttl(ttl_secs)?;
        if holder.entity_id() != self.subject {
            return Err(TokenError::NotSubject);
        }
        if !self.scope.contains(TokenScope::DELEGATE) {
            return Err(TokenError::DelegationNotAllowed);
        }
        if self.delegation_depth == 0 {
            return Err(TokenError::DepthExhausted);
        }
        if !scope.is_subset_of(self.scope) {
            return Err(TokenError::ScopeEscalation);
        }
        self.verify_signature()?;
        let not_after = self
            .not_after
            .min(now_unix.saturating_add(DELEGATION_MAX_TTL_SECS))
            .min(now_unix.saturating_add(ttl_secs));
        let not_before = now_unix.max(self.not_before);
        if not_after <= not_before {
            return Err(TokenError::Expired);
        }
        let mut child = Self {
            issuer: self.subject,
            subject: new_subject,
            scope,
            channel: self.channel,
            not_before,
            not_after,
            delegation_depth: self.delegation_depth - 1,
            nonce,
            signature: Signature([0; 64]),
        };
        child.signature = holder.sign(&child.signed_message());
        Ok(child)
    }

    /// The entity that signed the token.
    pub const fn issuer(&self) -> &EntityId {
        &self.issuer
    }

    /// The entity the token is for.
    pub const fn subject(&self) -> &EntityId {
        &self.subject
    }

    /// What the token allows.
    pub const fn scope(&self) -> TokenScope {
        self.scope
    }

    /// The channel the token is for.
    pub const fn channel_hash(&self) -> ChannelHash {
        self.channel
    }

    /// First valid second (unix time).
    pub const fn not_before(&self) -> u64 {
        self.not_before
    }

    /// First second at which the token is no longer valid (unix time).
    pub const fn not_after(&self) -> u64 {
        self.not_after
    }

    /// How many further delegations the subject may make.
    pub const fn delegation_depth(&self) -> u8 {
        self.delegation_depth
    }

    /// The issuer's nonce.
    pub const fn nonce(&self) -> u64 {
        self.nonce
    }

    /// The issuer's signature.
    pub const fn signature(&self) -> &Signature {
        &self.signature
    }

    /// Encodes the fixed [`WIRE_SIZE`]-byte form.
    pub fn to_bytes(&self) -> [u8; WIRE_SIZE] {
        let mut out = [0u8; WIRE_SIZE];
        self.write_signed_part(&mut out);
        out[SIGNED_LEN..].copy_from_slice(&self.signature.0);
        out
    }

    /// Decodes the fixed form. Any length other than [`WIRE_SIZE`], an undefined scope bit
    /// or `not_after <= not_before` is [`TokenError::InvalidFormat`]. Does not verify the
    /// signature (see [`PermissionToken::verify_signature`] and [`PermissionToken::check`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TokenError> {
        let bytes: &[u8; WIRE_SIZE] = bytes.try_into().map_err(|_| TokenError::InvalidFormat)?;
        let scope = TokenScope::from_bits(le_u32(bytes, 64)).ok_or(TokenError::InvalidFormat)?;
        let not_before = le_u64(bytes, 72);
        let not_after = le_u64(bytes, 80);
        if not_after <= not_before {
            return Err(TokenError::InvalidFormat);
        }
        let mut issuer = [0u8; 32];
        issuer.copy_from_slice(&bytes[0..32]);
        let mut subject = [0u8; 32];
        subject.copy_from_slice(&bytes[32..64]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&bytes[SIGNED_LEN..]);
        Ok(Self {
            issuer: EntityId(issuer),
            subject: EntityId(subject),
            scope,
            channel: ChannelHash(le_u32(bytes, 68)),
            not_before,
            not_after,
            delegation_depth: bytes[88],
            nonce: le_u64(bytes, 89),
            signature: Signature(signature),
        })
    }

    /// Verifies the issuer's signature.
    pub fn verify_signature(&self) -> Result<(), TokenError> {
        self.issuer
            .verify(&self.signed_message(), &self.signature)
            .map_err(|_| TokenError::BadSignature)
    }

    /// Whether this token lets `subject` do `needed` on `channel` at `now_unix`.
    ///
    /// `skew_secs` is the tolerated clock difference, clamped to [`MAX_CLOCK_SKEW_SECS`]:
    /// the token is not yet valid while `now + skew < not_before` and expired once
    /// `now - skew >= not_after`. Cheap field checks run before the signature check.
    pub fn check(
        &self,
        now_unix: u64,
        skew_secs: u64,
        subject: &EntityId,
        channel: ChannelHash,
        needed: TokenScope,
    ) -> Result<(), TokenError> {
        if self.subject != *subject {
            return Err(TokenError::WrongSubject);
        }
        if self.channel != channel {
            return Err(TokenError::WrongChannel);
        }
        if !self.scope.contains(needed) {
            return Err(TokenError::ScopeNotGranted);
        }
        let skew = skew_secs.min(MAX_CLOCK_SKEW_SECS);
        if now_unix.saturating_add(skew) < self.not_before {
            return Err(TokenError::NotYetValid);
        }
        if now_unix.saturating_sub(skew) >= self.not_after {
            return Err(TokenError::Expired);
        }
        self.verify_signature()
    }

    /// The signed message: [`SIGNING_TAG`] followed by the first [`SIGNED_LEN`] bytes.
    fn signed_message(&self) -> [u8; SIGNING_TAG.len() + SIGNED_LEN] {
        let mut message = [0u8; SIGNING_TAG.len() + SIGNED_LEN];
        message[..SIGNING_TAG.len()].copy_from_slice(SIGNING_TAG);
        let mut body = [0u8; WIRE_SIZE];
        self.write_signed_part(&mut body);
        message[SIGNING_TAG.len()..].copy_from_slice(&body[..SIGNED_LEN]);
        message
    }

    fn write_signed_part(&self, out: &mut [u8; WIRE_SIZE]) {
        out[0..32].copy_from_slice(&self.issuer.0);
        out[32..64].copy_from_slice(&self.subject.0);
        out[64..68].copy_from_slice(&self.scope.0.to_le_bytes());
        out[68..72].copy_from_slice(&self.channel.0.to_le_bytes());
        out[72..80].copy_from_slice(&self.not_before.to_le_bytes());
        out[80..88].copy_from_slice(&self.not_after.to_le_bytes());
        out[88] = self.delegation_depth;
        out[89..97].copy_from_slice(&self.nonce.to_le_bytes());
    }
}

fn check_ttl(ttl_secs: u64) -> Result<(), TokenError> {
    if ttl_secs == 0 {
        Err(TokenError::ZeroTtl)
    } else if ttl_secs > MAX_TOKEN_TTL_SECS {
        Err(TokenError::TtlTooLong(ttl_secs))
    } else {
        Ok(())
    }
}

fn le_u32(bytes: &[u8; WIRE_SIZE], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn le_u64(bytes: &[u8; WIRE_SIZE], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NOW: u64 = 1_800_000_000;
    const CH: ChannelHash = ChannelHash(0xdead_beef);
    const RW: TokenScope = TokenScope::PUBLISH.with(TokenScope::SUBSCRIBE);
    const ALL: TokenScope = RW.with(TokenScope::DELEGATE);

    fn ids() -> (Identity, Identity, Identity) {
        (
            Identity::from_seed([1; 32]),
            Identity::from_seed([2; 32]),
            Identity::from_seed([3; 32]),
        )
    }

    fn issue(
        issuer: &Identity,
        subject: &Identity,
        scope: TokenScope,
        depth: u8,
    ) -> PermissionToken {
        PermissionToken::try_issue(issuer, subject.entity_id(), scope, CH, NOW, 3600, depth, 7)
            .expect("valid issue")
    }

    #[test]
    fn wire_layout_and_round_trip() {
        let (root, alice, _) = ids();
        let token = issue(&root, &alice, RW, 0);
        let bytes = token.to_bytes();
        assert_eq!(bytes.len(), WIRE_SIZE);
        assert_eq!(&bytes[0..32], &root.public_key());
        assert_eq!(&bytes[32..64], &alice.public_key());
        assert_eq!(bytes[64], 0b011);
        assert_eq!(&bytes[68..72], &0xdead_beefu32.to_le_bytes());
        assert_eq!(&bytes[72..80], &NOW.to_le_bytes());
        assert_eq!(&bytes[80..88], &(NOW + 3600).to_le_bytes());
        assert_eq!(PermissionToken::from_bytes(&bytes), Ok(token));
        let mut message = SIGNING_TAG.to_vec();
        message.extend_from_slice(&bytes[..SIGNED_LEN]);
        assert_eq!(root.verify(&message, token.signature()), Ok(()));
    }

    #[test]
    fn other_lengths_and_bad_fields_are_invalid_format() {
        let (root, alice, _) = ids();
        let bytes = issue(&root, &alice, RW, 0).to_bytes();
        for len in [0, 159, 160, 162, 169, 173] {
            let mut v = bytes.to_vec();
            v.resize(len, 0);
            assert_eq!(
                PermissionToken::from_bytes(&v),
                Err(TokenError::InvalidFormat),
                "{len}"
            );
        }
        let mut v = bytes;
        v[64] = 0x08;
        assert_eq!(
            PermissionToken::from_bytes(&v),
            Err(TokenError::InvalidFormat)
        );
        let mut v = bytes;
        v[80..88].copy_from_slice(&NOW.to_le_bytes());
        assert_eq!(
            PermissionToken::from_bytes(&v),
            Err(TokenError::InvalidFormat)
        );
    }

    #[test]
    fn ttl_bounds() {
        let (root, alice, _) = ids();
        let issue_ttl =
            |ttl| PermissionToken::try_issue(&root, alice.entity_id(), RW, CH, NOW, ttl, 0, 1);
        assert_eq!(issue_ttl(0), Err(TokenError::ZeroTtl));
        assert!(issue_ttl(MAX_TOKEN_TTL_SECS).is_ok());
        assert_eq!(
            issue_ttl(MAX_TOKEN_TTL_SECS + 1),
            Err(TokenError::TtlTooLong(MAX_TOKEN_TTL_SECS + 1))
        );
    }

    #[test]
    fn validity_window_and_skew_clamp() {
        let (root, alice, _) = ids();
        let t = issue(&root, &alice, RW, 0);
        let me = alice.entity_id();
        let check = |now, skew| t.check(now, skew, &me, CH, TokenScope::PUBLISH);
        assert_eq!(check(NOW, 0), Ok(()));
        assert_eq!(check(NOW - 1, 0), Err(TokenError::NotYetValid));
        assert_eq!(check(NOW - 60, 60), Ok(()));
        assert_eq!(check(NOW + 3599, 0), Ok(()));
        assert_eq!(check(NOW + 3600, 0), Err(TokenError::Expired));
        assert_eq!(check(NOW + 3600 + 299, 300), Ok(()));
        // A skew above five minutes is clamped: one hour of claimed skew buys only 300 s.
        assert_eq!(check(NOW + 3600 + 300, 3600), Err(TokenError::Expired));
        assert_eq!(check(NOW - 301, 3600), Err(TokenError::NotYetValid));
        assert_eq!(check(NOW - 300, u64::MAX), Ok(()));
        assert_eq!(check(u64::MAX, u64::MAX), Err(TokenError::Expired));
        assert_eq!(check(0, 0), Err(TokenError::NotYetValid));
    }

    #[test]
    fn subject_channel_scope_and_signature() {
        let (root, alice, bob) = ids();
        let t = issue(&root, &alice, TokenScope::SUBSCRIBE, 0);
        let me = alice.entity_id();
        assert_eq!(
            t.check(NOW, 0, &bob.entity_id(), CH, TokenScope::SUBSCRIBE),
            Err(TokenError::WrongSubject)
        );
        assert_eq!(
            t.check(NOW, 0, &me, ChannelHash(1), TokenScope::SUBSCRIBE),
            Err(TokenError::WrongChannel)
        );
        assert_eq!(
            t.check(NOW, 0, &me, CH, TokenScope::PUBLISH),
            Err(TokenError::ScopeNotGranted)
        );
        assert_eq!(
            t.check(NOW, 0, &me, CH, TokenScope::NONE),
            Err(TokenError::ScopeNotGranted)
        );
        assert!(!ALL.contains(TokenScope::NONE));
        // Forgeries: a widened scope, a bent signature, a re-signed token under another key.
        let mut bytes = t.to_bytes();
        bytes[64] |= TokenScope::PUBLISH.bits() as u8;
        let widened = PermissionToken::from_bytes(&bytes).expect("decodes");
        assert_eq!(
            widened.check(NOW, 0, &me, CH, TokenScope::PUBLISH),
            Err(TokenError::BadSignature)
        );
        let mut bytes = t.to_bytes();
        bytes[100] ^= 1;
        let bent = PermissionToken::from_bytes(&bytes).expect("decodes");
        assert_eq!(bent.verify_signature(), Err(TokenError::BadSignature));
        let mut bytes = t.to_bytes();
        bytes[0..32].copy_from_slice(&bob.public_key());
        let stolen = PermissionToken::from_bytes(&bytes).expect("decodes");
        assert_eq!(stolen.verify_signature(), Err(TokenError::BadSignature));
        let mut bytes = t.to_bytes();
        bytes[0..32].copy_from_slice(&[0xff; 32]);
        let junk_key = PermissionToken::from_bytes(&bytes).expect("decodes");
        assert_eq!(junk_key.verify_signature(), Err(TokenError::BadSignature));
    }

    #[test]
    fn delegation_narrows() {
        let (root, alice, bob) = ids();
        let parent = issue(&root, &alice, ALL, 2);
        let child = parent
            .delegate(
                &alice,
                bob.entity_id(),
                TokenScope::SUBSCRIBE,
                NOW + 10,
                60,
                9,
            )
            .expect("delegates");
        assert_eq!(child.issuer(), &alice.entity_id());
        assert_eq!(child.subject(), &bob.entity_id());
        assert_eq!(child.delegation_depth(), 1);
        assert_eq!(child.channel_hash(), CH);
        assert_eq!(
            (child.not_before(), child.not_after()),
            (NOW + 10, NOW + 70)
        );
        assert_eq!(
            child.check(NOW + 10, 0, &bob.entity_id(), CH, TokenScope::SUBSCRIBE),
            Ok(())
        );
        // The child never outlives the parent.
        let long = parent
            .delegate(&alice, bob.entity_id(), RW, NOW, MAX_TOKEN_TTL_SECS, 9)
            .expect("delegates");
        assert_eq!(long.not_after(), parent.not_after());
        // Only the subject may delegate; scope only narrows.
        assert_eq!(
            parent.delegate(&bob, bob.entity_id(), RW, NOW, 60, 9),
            Err(TokenError::NotSubject)
        );
        let sub_only = issue(
            &root,
            &alice,
            TokenScope::SUBSCRIBE.with(TokenScope::DELEGATE),
            1,
        );
        assert_eq!(
            sub_only.delegate(&alice, bob.entity_id(), RW, NOW, 60, 9),
            Err(TokenError::ScopeEscalation)
        );
        assert_eq!(
            issue(&root, &alice, RW, 3).delegate(&alice, bob.entity_id(), RW, NOW, 60, 9),
            Err(TokenError::DelegationNotAllowed)
        );
        assert_eq!(
            issue(&root, &alice, ALL, 0).delegate(&alice, bob.entity_id(), RW, NOW, 60, 9),
            Err(TokenError::DepthExhausted)
        );
        assert_eq!(
            parent.delegate(&alice, bob.entity_id(), RW, NOW, 0, 9),
            Err(TokenError::ZeroTtl)
        );
        assert_eq!(
            parent.delegate(&alice, bob.entity_id(), RW, NOW + 3600, 60, 9),
            Err(TokenError::Expired)
        );
        // Depth runs out along a chain.
        let grandchild = child.delegate(
            &bob,
            alice.entity_id(),
            TokenScope::SUBSCRIBE,
            NOW + 10,
            60,
            1,
        );
        assert_eq!(grandchild, Err(TokenError::DelegationNotAllowed));
        let c1 = parent
            .delegate(&alice, bob.entity_id(), ALL, NOW, 60, 1)
            .expect("c1");
        let c2 = c1
            .delegate(&bob, alice.entity_id(), ALL, NOW, 60, 2)
            .expect("c2");
        assert_eq!(c2.delegation_depth(), 0);
        assert_eq!(
            c2.delegate(&alice, bob.entity_id(), RW, NOW, 60, 3),
            Err(TokenError::DepthExhausted)
        );
    }

    #[test]
    fn delegation_caps_at_thirty_days() {
        let (root, alice, bob) = ids();
        let parent = PermissionToken::try_issue(
            &root,
            alice.entity_id(),
            ALL,
            CH,
            NOW,
            MAX_TOKEN_TTL_SECS,
            1,
            1,
        )
        .expect("issue");
        let child = parent
            .delegate(&alice, bob.entity_id(), RW, NOW, MAX_TOKEN_TTL_SECS, 2)
            .expect("delegates");
        assert_eq!(child.not_after(), NOW + DELEGATION_MAX_TTL_SECS);
    }

    #[test]
    fn delegate_refuses_a_forged_parent() {
        let (root, alice, bob) = ids();
        let mut bytes = issue(&root, &alice, ALL, 1).to_bytes();
        bytes[88] = 9;
        let forged = PermissionToken::from_bytes(&bytes).expect("decodes");
        assert_eq!(
            forged.delegate(&alice, bob.entity_id(), RW, NOW, 60, 1),
            Err(TokenError::BadSignature)
        );
    }

    proptest! {
        #[test]
        fn round_trip(
            seed: [u8; 32], subject: [u8; 32], scope in 0u32..8, channel: u32,
            now in 0u64..u64::MAX / 2, ttl in 1..=MAX_TOKEN_TTL_SECS, depth: u8, nonce: u64,
        ) {
            let issuer = Identity::from_seed(seed);
            let scope = TokenScope::from_bits(scope).expect("defined");
            let t = PermissionToken::try_issue(
                &issuer, EntityId(subject), scope, ChannelHash(channel), now, ttl, depth, nonce,
            ).expect("valid");
            let bytes = t.to_bytes();
            prop_assert_eq!(PermissionToken::from_bytes(&bytes), Ok(t));
            prop_assert_eq!(t.verify_signature(), Ok(()));
        }

        #[test]
        fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 155..170)) {
            if let Ok(t) = PermissionToken::from_bytes(&bytes) {
                prop_assert_eq!(&t.to_bytes()[..], &bytes[..]);
            }
        }
    }
}
