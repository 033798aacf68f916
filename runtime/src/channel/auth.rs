//! Token-chain authorization with a verified-signature cache, a per-peer failure limiter
//! and issuer revocation.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use netrun_messages::channel::membership::MAX_TOKEN_CHAIN;
use netrun_messages::token::{MAX_CLOCK_SKEW_SECS, MAX_TOKEN_TTL_SECS};
use netrun_messages::{ChannelHash, EntityId, NodeId, PermissionToken, TokenScope};
use thiserror::Error;

/// Fixed-point scale of the failure buckets (one failure = 1000 units).
const UNIT: u64 = 1000;

/// Authorization limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthConfig {
    /// Tolerated clock difference with token issuers; clamped to five minutes.
    pub clock_skew_secs: u64,
    /// Verified chains remembered (LRU).
    pub cache_capacity: usize,
    /// Failures a peer may make in a burst before it is rate limited.
    pub failure_burst: u32,
    /// Time over which a spent failure budget refills completely.
    pub failure_window_secs: u64,
    /// Peers whose failures are tracked; beyond it the least recently failing is forgotten.
    pub max_tracked_peers: usize,
    /// Issuer cut-offs remembered.
    pub max_revoked_issuers: usize,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            clock_skew_secs: 60,
            cache_capacity: 4096,
            // The reference's default: 16 failures a minute.
            failure_burst: 16,
            failure_window_secs: 60,
            max_tracked_peers: 4096,
            max_revoked_issuers: 1024,
        }
    }
}

/// An [`AuthConfig`] that cannot work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AuthConfigError {
    /// A capacity, burst or window is zero.
    #[error("{0} must be at least 1")]
    Zero(&'static str),
}

impl AuthConfig {
    /// Checks every bound is at least one.
    pub fn validate(&self) -> Result<(), AuthConfigError> {
        let checks = [
            (self.cache_capacity == 0, "cache_capacity"),
            (self.failure_burst == 0, "failure_burst"),
            (self.failure_window_secs == 0, "failure_window_secs"),
            (self.max_tracked_peers == 0, "max_tracked_peers"),
            (self.max_revoked_issuers == 0, "max_revoked_issuers"),
        ];
        match checks.into_iter().find(|(bad, _)| *bad) {
            Some((_, what)) => Err(AuthConfigError::Zero(what)),
            None => Ok(()),
        }
    }

    /// The skew actually applied: at most five minutes.
    pub fn effective_skew(&self) -> u64 {
        self.clock_skew_secs.min(MAX_CLOCK_SKEW_SECS)
    }
}

/// Why a token chain was refused (told apart locally; the wire says `Unauthorized`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum TokenRejection {
    /// No token was presented.
    #[error("no token presented")]
    Missing,
    /// More links than [`MAX_TOKEN_CHAIN`].
    #[error("token chain too long")]
    ChainTooLong,
    /// The first link's issuer is not a trusted root.
    #[error("chain root is not trusted")]
    UntrustedRoot,
    /// A link's issuer is not the previous link's subject, or it outlives its parent.
    #[error("token chain is broken")]
    BrokenChain,
    /// The last link names another subject.
    #[error("token is for another subject")]
    WrongSubject,
    /// A link is for another channel.
    #[error("token is for another channel")]
    WrongChannel,
    /// The last link does not grant what is asked.
    #[error("token scope does not grant the request")]
    ScopeNotGranted,
    /// A parent link lacks DELEGATE.
    #[error("a parent token does not allow delegation")]
    DelegationNotAllowed,
    /// A parent link's depth does not allow its child.
    #[error("delegation depth exhausted")]
    DepthExhausted,
    /// A child link grants more than its parent.
    #[error("delegated scope exceeds the parent's")]
    ScopeEscalation,
    /// A link is not valid yet.
    #[error("token not valid yet")]
    NotYetValid,
    /// A link has expired.
    #[error("token expired")]
    Expired,
    /// A link's validity window is longer than one year.
    #[error("token lifetime exceeds one year")]
    TooLong,
    /// A link's issuer was revoked after it was signed.
    #[error("token issuer revoked")]
    Revoked,
    /// A signature does not verify.
    #[error("token signature does not verify")]
    BadSignature,
}

/// Why [`Authenticator::authorize`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AuthError {
    /// The peer spent its failure budget; nothing was verified.
    #[error("too many authorization failures")]
    RateLimited,
    /// The chain was refused.
    #[error("unauthorized: {0}")]
    Denied(TokenRejection),
}

/// The revocation table is full of live cut-offs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("revocation table is full")]
pub struct RevocationsFull;

/// What to authorize: who asks, for what, with which credentials.
#[derive(Debug, Clone, Copy)]
pub struct AuthRequest<'a> {
    /// The session peer that sent the request (charged on failure).
    pub peer: NodeId,
    /// The entity that must be the last link's subject.
    pub subject: &'a EntityId,
    /// The channel every link must name.
    pub channel: ChannelHash,
    /// The permission the last link must grant.
    pub needed: TokenScope,
    /// Issuers trusted as the first link's issuer.
    pub roots: &'a BTreeSet<EntityId>,
    /// The presented chain, root first.
    pub chain: &'a [PermissionToken],
}

/// One link of an accepted chain, kept to re-check revocation later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrantLink {
    /// Who signed the link.
    pub issuer: EntityId,
    /// When the link became valid.
    pub not_before: u64,
}

/// What an accepted chain grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The entity authorized.
    pub subject: EntityId,
    /// The channel.
    pub channel: ChannelHash,
    /// The earliest `not_after` along the chain (unix seconds).
    pub not_after: u64,
    /// The chain's links, root first.
    pub links: Vec<GrantLink>,
}

/// Authorization totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthCounters {
    /// Chains accepted.
    pub accepted: u64,
    /// Chains refused (each charged to the peer).
    pub denied: u64,
    /// Requests refused by the limiter without any verification.
    pub rate_limited: u64,
    /// Accepted chains whose signatures came from the cache.
    pub cache_hits: u64,
    /// Individual signature verifications run.
    pub signatures_verified: u64,
    /// Failure records forgotten because the table was full.
    pub peers_forgotten: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: u64,
    updated: u64,
}

/// The authorization core shared by a publisher's channels.
///
/// [`Authenticator::authorize`] runs, in order:
///
/// 1. the per-peer failure limiter: a peer out of failure budget gets
///    [`AuthError::RateLimited`] before any token is looked at, so a flood of bad tokens
///    costs no signature checks;
/// 2. the structural checks on the root-first chain, cheapest first: length, trusted root,
///    channel, validity window (skew clamped to five minutes), lifetime within one year,
///    revocation, link continuity (each issuer is the previous subject), DELEGATE and a
///    strictly decreasing depth on every parent, scope narrowing, child expiry within the
///    parent's, and finally subject and scope of the last link;
/// 3. the signatures, unless this exact chain (by BLAKE3 of its bytes) verified before and
///    is still in the bounded LRU cache. The cache holds only "these signatures verify";
///    every other check runs on every call, so a cached chain still expires, still gets
///    revoked and is still bound to its subject.
///
/// A failure charges the peer's bucket; a success empties its record.
///
/// Revocation: [`Authenticator::revoke_issuer`] records a cut-off time for an issuer and
/// bumps the [generation](Authenticator::generation). Every link that issuer signed with
/// `not_before` at or before the cut-off is refused from then on, which also refuses every
/// chain delegated below it; tokens the issuer mints later are accepted again. Cut-offs
/// older than the longest possible token life are pruned.
#[derive(Debug)]
pub struct Authenticator {
    config: AuthConfig,
    cache: HashMap<[u8; 32], u64>,
    cache_order: BTreeMap<u64, [u8; 32]>,
    tick: u64,
    buckets: HashMap<NodeId, Bucket>,
    bucket_order: BTreeSet<(u64, NodeId)>,
    revoked: HashMap<EntityId, u64>,
    generation: u64,
    counters: AuthCounters,
}

impl Authenticator {
    /// An authenticator with empty cache, limiter and revocations.
    pub fn new(config: AuthConfig) -> Result<Self, AuthConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            cache: HashMap::new(),
            cache_order: BTreeMap::new(),
            tick: 0,
            buckets: HashMap::new(),
            bucket_order: BTreeSet::new(),
            revoked: HashMap::new(),
            generation: 0,
            counters: AuthCounters::default(),
        })
    }

    /// Whether `request.chain` lets `request.subject` do `request.needed` on the channel at
    /// `now_unix`. See the [type docs](Self) for the order of checks.
    pub fn authorize(
        &mut self,
        now_unix: u64,
        request: &AuthRequest<'_>,
    ) -> Result<Grant, AuthError> {
        let peer = request.peer;
        self.admit(now_unix, peer)?;
        match self.verify(now_unix, request) {
            Ok(grant) => {
                self.counters.accepted += 1;
                if let Some(bucket) = self.buckets.remove(&peer) {
                    self.bucket_order.remove(&(bucket.updated, peer));
                }
                Ok(grant)
            }
            Err(rejection) => {
                self.counters.denied += 1;
                self.charge(now_unix, peer);
                Err(AuthError::Denied(rejection))
            }
        }
    }

    /// [`AuthError::RateLimited`] (counted) if `peer` has no failure budget left at
    /// `now_unix`; the gate [`Authenticator::authorize`] starts with, for callers that
    /// must refuse before doing anything else.
    pub fn admit(&mut self, now_unix: u64, peer: NodeId) -> Result<(), AuthError> {
        if self.allows(now_unix, peer) {
            Ok(())
        } else {
            self.counters.rate_limited += 1;
            Err(AuthError::RateLimited)
        }
    }

    /// Whether `peer` still has failure budget at `now_unix` (a peer never seen has).
    pub fn allows(&self, now_unix: u64, peer: NodeId) -> bool {
        self.buckets
            .get(&peer)
            .is_none_or(|bucket| self.refilled(bucket, now_unix) >= UNIT)
    }

    /// Refuses, from now on, every link `issuer` signed with `not_before <= now_unix`
    /// (and so every chain below such a link). Bumps the generation.
    pub fn revoke_issuer(
        &mut self,
        now_unix: u64,
        issuer: EntityId,
    ) -> Result<(), RevocationsFull> {
        // A link signed before this is past its (at most one-year) life plus skew.
        let horizon = now_unix
            .saturating_sub(MAX_TOKEN_TTL_SECS)
            .saturating_sub(MAX_CLOCK_SKEW_SECS);
        self.revoked.retain(|_, cutoff| *cutoff >= horizon);
        if !self.revoked.contains_key(&issuer)
            && self.revoked.len() >= self.config.max_revoked_issuers
        {
            return Err(RevocationsFull);
        }
        let cutoff = self.revoked.entry(issuer).or_insert(now_unix);
        *cutoff = (*cutoff).max(now_unix);
        self.generation += 1;
        Ok(())
    }

    /// Whether a link signed by `issuer` valid from `not_before` is revoked.
    pub fn is_revoked(&self, issuer: &EntityId, not_before: u64) -> bool {
        self.revoked
            .get(issuer)
            .is_some_and(|&cutoff| not_before <= cutoff)
    }

    /// Whether any link of an accepted grant has since been revoked.
    pub fn grant_revoked(&self, grant: &Grant) -> bool {
        grant
            .links
            .iter()
            .any(|link| self.is_revoked(&link.issuer, link.not_before))
    }

    /// Bumped by every revocation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The configuration.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Running totals.
    pub fn counters(&self) -> &AuthCounters {
        &self.counters
    }

    /// Number of chains in the verified cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    fn verify(&mut self, now: u64, request: &AuthRequest<'_>) -> Result<Grant, TokenRejection> {
        use TokenRejection as R;
        let &AuthRequest {
            subject,
            channel,
            needed,
            roots,
            chain,
            ..
        } = request;
        let (Some(first), Some(last)) = (chain.first(), chain.last()) else {
            return Err(R::Missing);
        };
        if chain.len() > MAX_TOKEN_CHAIN {
            return Err(R::ChainTooLong);
        }
        if !roots.contains(first.issuer()) {
            return Err(R::UntrustedRoot);
        }
        let skew = self.config.effective_skew();
        for (i, link) in chain.iter().enumerate() {
            if link.channel_hash() != channel {
                return Err(R::WrongChannel);
            }
            if now.saturating_add(skew) < link.not_before() {
                return Err(R::NotYetValid);
            }
            if now.saturating_sub(skew) >= link.not_after() {
                return Err(R::Expired);
            }
            if link.not_after() - link.not_before() > MAX_TOKEN_TTL_SECS {
                return Err(R::TooLong);
            }
            if self.is_revoked(link.issuer(), link.not_before()) {
                return Err(R::Revoked);
            }
            if let Some(child) = chain.get(i + 1) {
                if child.issuer() != link.subject() || child.not_after() > link.not_after() {
                    return Err(R::BrokenChain);
                }
                if !link.scope().contains(TokenScope::DELEGATE) {
                    return Err(R::DelegationNotAllowed);
                }
                if child.delegation_depth() >= link.delegation_depth() {
                    return Err(R::DepthExhausted);
                }
                if !child.scope().is_subset_of(link.scope()) {
                    return Err(R::ScopeEscalation);
                }
            }
        }
        if last.subject() != subject {
            return Err(R::WrongSubject);
        }
        if !last.scope().contains(needed) {
            return Err(R::ScopeNotGranted);
        }
        let key = chain_key(chain);
        if self.cache_touch(&key) {
            self.counters.cache_hits += 1;
        } else {
            for link in chain {
                self.counters.signatures_verified += 1;
                link.verify_signature().map_err(|_| R::BadSignature)?;
            }
            self.cache_insert(key);
        }
        Ok(Grant {
            subject: *subject,
            channel,
            not_after: chain.iter().map(|t| t.not_after()).min().unwrap_or(0),
            links: chain
                .iter()
                .map(|t| GrantLink {
                    issuer: *t.issuer(),
                    not_before: t.not_before(),
                })
                .collect(),
        })
    }

    fn refilled(&self, bucket: &Bucket, now: u64) -> u64 {
        let capacity = u64::from(self.config.failure_burst) * UNIT;
        let per_sec = capacity / self.config.failure_window_secs;
        let elapsed = now.saturating_sub(bucket.updated);
        bucket
            .level
            .saturating_add(elapsed.saturating_mul(per_sec.max(1)))
            .min(capacity)
    }

    /// Takes one failure from `peer`'s budget.
    fn charge(&mut self, now: u64, peer: NodeId) {
        let capacity = u64::from(self.config.failure_burst) * UNIT;
        let level = match self.buckets.get(&peer) {
            Some(bucket) => {
                let level = self.refilled(bucket, now);
                self.bucket_order.remove(&(bucket.updated, peer));
                level
            }
            None => {
                if self.buckets.len() >= self.config.max_tracked_peers
                    && let Some((_, oldest)) = self.bucket_order.pop_first()
                {
                    self.buckets.remove(&oldest);
                    self.counters.peers_forgotten += 1;
                }
                capacity
            }
        };
        self.buckets.insert(
            peer,
            Bucket {
                level: level.saturating_sub(UNIT),
                updated: now,
            },
        );
        self.bucket_order.insert((now, peer));
    }

    fn cache_touch(&mut self, key: &[u8; 32]) -> bool {
        let Some(tick) = self.cache.get_mut(key) else {
            return false;
        };
        self.cache_order.remove(tick);
        self.tick += 1;
        *tick = self.tick;
        self.cache_order.insert(self.tick, *key);
        true
    }

    fn cache_insert(&mut self, key: [u8; 32]) {
        if self.cache.len() >= self.config.cache_capacity
            && let Some((_, oldest)) = self.cache_order.pop_first()
        {
            self.cache.remove(&oldest);
        }
        self.tick += 1;
        self.cache.insert(key, self.tick);
        self.cache_order.insert(self.tick, key);
    }
}

/// BLAKE3 of the chain's concatenated wire bytes.
fn chain_key(chain: &[PermissionToken]) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new();
    for token in chain {
        hasher.update(&token.to_bytes());
    }
    *hasher.finalize().as_bytes()
}
