//! A published channel's configuration and its validation.

use std::collections::BTreeSet;

use netrun_messages::{CapabilityError, CapabilityFilter, CapabilitySet, ChannelName, EntityId};
use thiserror::Error;

/// Largest roster a channel may be configured with.
pub const MAX_SUBSCRIBERS_LIMIT: usize = 65_536;
/// Most trusted token roots per channel (the reference's allow-list bound).
pub const MAX_TOKEN_ROOTS: usize = 64;

/// Who may see (and so subscribe to) a channel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Visibility {
    /// Every peer.
    #[default]
    Global,
    /// Only peers whose indexed capabilities match the filter; to everyone else the
    /// channel does not exist (`UnknownChannel`). Matchmaking, like every capability
    /// filter: capabilities are self-asserted, so this hides a channel, it does not
    /// protect it. Use `require_token` for that.
    Filter(CapabilityFilter),
}

/// How a publisher runs one channel.
///
/// Access control is `require_token` with `token_roots`: a subscriber must present a token
/// chain rooted at one of the roots (the publisher's own key when the set is empty) that
/// grants it SUBSCRIBE on this channel. The capability filters are matchmaking only: they
/// compare self-asserted capabilities and never authorize anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelConfig {
    /// The channel.
    pub name: ChannelName,
    /// Who sees the channel.
    pub visibility: Visibility,
    /// Subscribers must present a valid token chain.
    pub require_token: bool,
    /// Keys whose tokens are honoured as chain roots; empty means the publisher's own key.
    /// Only meaningful with `require_token`.
    pub token_roots: BTreeSet<EntityId>,
    /// Matchmaking: the publishing node's own capabilities must match to publish.
    pub publish_filter: Option<CapabilityFilter>,
    /// Matchmaking: a subscriber's indexed capabilities must match to subscribe.
    pub subscribe_filter: Option<CapabilityFilter>,
    /// Deliver over reliable streams (else best effort).
    pub reliable: bool,
    /// Delivery priority (larger is more urgent).
    pub priority: u8,
    /// Most subscribers (1..=[`MAX_SUBSCRIBERS_LIMIT`]).
    pub max_subscribers: usize,
}

/// A [`ChannelConfig`] that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelConfigError {
    /// `max_subscribers` is zero.
    #[error("max_subscribers must be at least 1")]
    ZeroSubscribers,
    /// `max_subscribers` is over [`MAX_SUBSCRIBERS_LIMIT`].
    #[error("max_subscribers {0} exceeds 65536")]
    TooManySubscribers(usize),
    /// More than [`MAX_TOKEN_ROOTS`] roots.
    #[error("{0} token roots exceed the limit of 64")]
    TooManyRoots(usize),
    /// Roots are configured but tokens are not required, so they would never be used.
    #[error("token_roots given without require_token")]
    RootsWithoutToken,
    /// A filter cannot be encoded (too many tags, a tag too long…).
    #[error("capability filter: {0}")]
    Filter(#[from] CapabilityError),
}

impl ChannelConfig {
    /// A global, token-free, reliable channel with priority 0 and room for 1024
    /// subscribers.
    pub fn new(name: ChannelName) -> Self {
        Self {
            name,
            visibility: Visibility::Global,
            require_token: false,
            token_roots: BTreeSet::new(),
            publish_filter: None,
            subscribe_filter: None,
            reliable: true,
            priority: 0,
            max_subscribers: 1024,
        }
    }

    /// Sets the visibility.
    #[must_use]
    pub fn with_visibility(mut self, visibility: Visibility) -> Self {
        self.visibility = visibility;
        self
    }

    /// Requires (or not) a token to subscribe.
    #[must_use]
    pub fn with_require_token(mut self, require: bool) -> Self {
        self.require_token = require;
        self
    }

    /// Trusts `root` as a token chain root.
    #[must_use]
    pub fn with_token_root(mut self, root: EntityId) -> Self {
        self.token_roots.insert(root);
        self
    }

    /// Sets the publish matchmaking filter.
    #[must_use]
    pub fn with_publish_filter(mut self, filter: CapabilityFilter) -> Self {
        self.publish_filter = Some(filter);
        self
    }

    /// Sets the subscribe matchmaking filter.
    #[must_use]
    pub fn with_subscribe_filter(mut self, filter: CapabilityFilter) -> Self {
        self.subscribe_filter = Some(filter);
        self
    }

    /// Reliable (true) or best-effort delivery.
    #[must_use]
    pub fn with_reliable(mut self, reliable: bool) -> Self {
        self.reliable = reliable;
        self
    }

    /// Sets the priority.
    #[must_use]
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the roster bound.
    #[must_use]
    pub fn with_max_subscribers(mut self, max: usize) -> Self {
        self.max_subscribers = max;
        self
    }

    /// Checks every limit.
    pub fn validate(&self) -> Result<(), ChannelConfigError> {
        if self.max_subscribers == 0 {
            return Err(ChannelConfigError::ZeroSubscribers);
        }
        if self.max_subscribers > MAX_SUBSCRIBERS_LIMIT {
            return Err(ChannelConfigError::TooManySubscribers(self.max_subscribers));
        }
        if self.token_roots.len() > MAX_TOKEN_ROOTS {
            return Err(ChannelConfigError::TooManyRoots(self.token_roots.len()));
        }
        if !self.require_token && !self.token_roots.is_empty() {
            return Err(ChannelConfigError::RootsWithoutToken);
        }
        if let Visibility::Filter(filter) = &self.visibility {
            filter.encoded_len()?;
        }
        for filter in [&self.publish_filter, &self.subscribe_filter]
            .into_iter()
            .flatten()
        {
            filter.encoded_len()?;
        }
        Ok(())
    }

    /// Whether a peer with these (indexed) capabilities sees the channel. A peer with no
    /// known capabilities sees only global channels.
    pub fn visible_to(&self, capabilities: Option<&CapabilitySet>) -> bool {
        match &self.visibility {
            Visibility::Global => true,
            Visibility::Filter(filter) => capabilities.is_some_and(|caps| filter.matches(caps)),
        }
    }

    /// Matchmaking: whether a subscriber with these capabilities fits the subscribe
    /// filter (always, without one; never, with one and no known capabilities).
    pub fn subscriber_fits(&self, capabilities: Option<&CapabilitySet>) -> bool {
        match &self.subscribe_filter {
            None => true,
            Some(filter) => capabilities.is_some_and(|caps| filter.matches(caps)),
        }
    }

    /// Matchmaking: whether the local node, with these capabilities, may publish.
    pub fn publisher_fits(&self, capabilities: &CapabilitySet) -> bool {
        self.publish_filter
            .as_ref()
            .is_none_or(|filter| filter.matches(capabilities))
    }
}
