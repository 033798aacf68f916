//! When the local node (re)announces its capabilities.

use netrun_messages::{
    AnnouncementError, CapabilityAnnouncement, CapabilityError, CapabilitySet, Identity, NodeId,
};
use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use super::service_tag;

/// Announcement cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnouncerConfig {
    /// Least time between two announcements caused by changes (≥ 1 s).
    pub min_interval_secs: u64,
    /// Time between periodic re-announcements (≥ `min_interval_secs`, < `ttl_secs`).
    pub reannounce_interval_secs: u64,
    /// TTL stamped on each announcement.
    pub ttl_secs: u32,
}

impl Default for AnnouncerConfig {
    fn default() -> Self {
        // Two re-announcements per TTL: one lost announcement does not expire the entry.
        Self {
            min_interval_secs: 10,
            reannounce_interval_secs: 150,
            ttl_secs: 300,
        }
    }
}

/// Why an [`Announcer`] could not be built or take a capability set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AnnouncerError {
    /// `min_interval_secs` is zero (versions assume at most one announcement per second).
    #[error("min_interval_secs must be at least 1")]
    ZeroMinInterval,
    /// The re-announce interval is shorter than the minimum interval.
    #[error("reannounce interval {reannounce} s is below the minimum interval {min} s")]
    ReannounceBelowMin {
        /// Configured re-announce interval.
        reannounce: u64,
        /// Configured minimum interval.
        min: u64,
    },
    /// The re-announce interval is not shorter than the TTL, so entries would expire
    /// between announcements.
    #[error("reannounce interval {reannounce} s must be shorter than the ttl {ttl} s")]
    IntervalNotBelowTtl {
        /// Configured re-announce interval.
        reannounce: u64,
        /// Configured TTL.
        ttl: u32,
    },
    /// The capability set cannot be encoded.
    #[error("capability set: {0}")]
    Capabilities(#[from] CapabilityError),
}

impl AnnouncerConfig {
    /// Checks `1 ≤ min_interval ≤ reannounce_interval < ttl`.
    pub fn validate(&self) -> Result<(), AnnouncerError> {
        if self.min_interval_secs == 0 {
            return Err(AnnouncerError::ZeroMinInterval);
        }
        if self.reannounce_interval_secs < self.min_interval_secs {
            return Err(AnnouncerError::ReannounceBelowMin {
                reannounce: self.reannounce_interval_secs,
                min: self.min_interval_secs,
            });
        }
        if self.reannounce_interval_secs >= u64::from(self.ttl_secs) {
            return Err(AnnouncerError::IntervalNotBelowTtl {
                reannounce: self.reannounce_interval_secs,
                ttl: self.ttl_secs,
            });
        }
        Ok(())
    }
}

/// `base` with `services` among its tags and `metadata` over its metadata.
fn compose(
    base: &CapabilitySet,
    services: &BTreeSet<String>,
    metadata: &BTreeMap<String, String>,
) -> CapabilitySet {
    let mut set = base.clone();
    set.tags.extend(services.iter().cloned());
    set.metadata
        .extend(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
    set
}

/// The local node's announcement schedule.
///
/// The [`Announcer`] holds the node's identity and current [`CapabilitySet`] and decides
/// when a fresh signed announcement is due:
///
/// - at start (the first poll);
/// - after a change, but no sooner than `min_interval_secs` after the previous
///   announcement (a burst of changes becomes one announcement carrying the latest set);
/// - every `reannounce_interval_secs` regardless, which validation keeps shorter than the
///   TTL stamped on each announcement, so neither the node's own index nor its peers'
///   ever let the entry expire while the node runs;
/// - at once if the wall clock stepped backwards past the previous announcement.
///
/// Versions are `max(previous + 1, now_unix)`: strictly increasing within a run, and a
/// restarted node (whose previous run announced at most once per second) starts above its
/// old versions, so peers do not discard its announcements as stale.
#[derive(Debug)]
pub struct Announcer {
    identity: Identity,
    config: AnnouncerConfig,
    /// The set as the application gave it.
    base: CapabilitySet,
    /// Service tags (`nrpc:<service>`) the node adds for what it serves.
    services: BTreeSet<String>,
    /// Metadata entries the runtime maintains (such as the daemon load).
    metadata: BTreeMap<String, String>,
    /// What is announced: `base` with the service tags and the runtime's metadata.
    capabilities: CapabilitySet,
    /// Time and version of the last announcement, if any.
    last: Option<(u64, u64)>,
    changed: bool,
}

impl Announcer {
    /// An announcer for `identity` starting with `capabilities`; the first poll announces.
    pub fn new(
        identity: Identity,
        config: AnnouncerConfig,
        capabilities: CapabilitySet,
    ) -> Result<Self, AnnouncerError> {
        config.validate()?;
        capabilities.validate()?;
        Ok(Self {
            identity,
            config,
            base: capabilities.clone(),
            services: BTreeSet::new(),
            metadata: BTreeMap::new(),
            capabilities,
            last: None,
            changed: false,
        })
    }

    /// Replaces the application's capability set; the service tags and the runtime's
    /// metadata stay. Returns whether the announced set changed (a change schedules an
    /// announcement, rate-limited). A set that would not encode is refused and nothing
    /// changes.
    pub fn set_capabilities(
        &mut self,
        capabilities: CapabilitySet,
    ) -> Result<bool, AnnouncerError> {
        let next = compose(&capabilities, &self.services, &self.metadata);
        next.validate()?;
        self.base = capabilities;
        Ok(self.announce(next))
    }

    /// Adds the tag `nrpc:<service>`. Returns whether the set changed.
    pub fn add_service(&mut self, service: &str) -> Result<bool, AnnouncerError> {
        let mut services = self.services.clone();
        services.insert(service_tag(service));
        self.set_services(services)
    }

    /// Removes the tag `nrpc:<service>`. Returns whether the set changed.
    pub fn remove_service(&mut self, service: &str) -> Result<bool, AnnouncerError> {
        let mut services = self.services.clone();
        services.remove(&service_tag(service));
        self.set_services(services)
    }

    /// Sets (or, with `None`, removes) a metadata entry the runtime maintains; it
    /// overrides the application's entry of the same key. Returns whether the set changed.
    pub fn set_metadata(
        &mut self,
        key: &str,
        value: Option<String>,
    ) -> Result<bool, AnnouncerError> {
        let mut metadata = self.metadata.clone();
        match value {
            Some(value) => metadata.insert(key.to_owned(), value),
            None => metadata.remove(key),
        };
        let next = compose(&self.base, &self.services, &metadata);
        next.validate()?;
        self.metadata = metadata;
        Ok(self.announce(next))
    }

    fn set_services(&mut self, services: BTreeSet<String>) -> Result<bool, AnnouncerError> {
        let next = compose(&self.base, &services, &self.metadata);
        next.validate()?;
        self.services = services;
        Ok(self.announce(next))
    }

    /// Makes `next` the announced set; whether it changed.
    fn announce(&mut self, next: CapabilitySet) -> bool {
        if next == self.capabilities {
            return false;
        }
        self.capabilities = next;
        self.changed = true;
        true
    }

    /// The announced capability set.
    pub fn capabilities(&self) -> &CapabilitySet {
        &self.capabilities
    }

    /// The announcing node.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Version of the last announcement, if any.
    pub fn last_version(&self) -> Option<u64> {
        self.last.map(|(_, version)| version)
    }

    /// The configuration.
    pub fn config(&self) -> &AnnouncerConfig {
        &self.config
    }

    /// A signed announcement if one is due at `now_unix` (see the [type docs](Self)).
    /// The caller folds it into its own index and sends it to its peers.
    pub fn poll_announce(
        &mut self,
        now_unix: u64,
    ) -> Result<Option<CapabilityAnnouncement>, AnnouncementError> {
        if !self.is_due(now_unix) {
            return Ok(None);
        }
        let version = self
            .last
            .map_or(now_unix, |(_, v)| v.saturating_add(1).max(now_unix));
        let announcement = CapabilityAnnouncement::sign(
            &self.identity,
            version,
            now_unix,
            self.config.ttl_secs,
            self.capabilities.clone(),
        )?;
        self.last = Some((now_unix, version));
        self.changed = false;
        Ok(Some(announcement))
    }

    /// When [`Announcer::poll_announce`] next has something (unix seconds); at or before
    /// `now` means immediately.
    pub fn poll_timeout(&self) -> u64 {
        let Some((at, _)) = self.last else {
            return 0;
        };
        let periodic = at.saturating_add(self.config.reannounce_interval_secs);
        if self.changed {
            periodic.min(at.saturating_add(self.config.min_interval_secs))
        } else {
            periodic
        }
    }

    fn is_due(&self, now: u64) -> bool {
        match self.last {
            None => true,
            // The clock stepped back: the schedule means nothing, announce and restart it.
            Some((at, _)) if now < at => true,
            Some(_) => now >= self.poll_timeout(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capability::{CapabilityIndex, IndexConfig};

    const T0: u64 = 1_800_000_000;

    fn announcer(config: AnnouncerConfig) -> Announcer {
        Announcer::new(
            Identity::from_seed([9; 32]),
            config,
            CapabilitySet::new().with_tag("role:worker"),
        )
        .expect("valid")
    }

    #[test]
    fn config_validation() {
        assert_eq!(AnnouncerConfig::default().validate(), Ok(()));
        let bad = |min, re, ttl| AnnouncerConfig {
            min_interval_secs: min,
            reannounce_interval_secs: re,
            ttl_secs: ttl,
        };
        assert_eq!(
            bad(0, 10, 20).validate(),
            Err(AnnouncerError::ZeroMinInterval)
        );
        assert!(matches!(
            bad(10, 5, 20).validate(),
            Err(AnnouncerError::ReannounceBelowMin { .. })
        ));
        assert!(matches!(
            bad(1, 20, 20).validate(),
            Err(AnnouncerError::IntervalNotBelowTtl { .. })
        ));
        assert!(matches!(
            bad(1, 30, 20).validate(),
            Err(AnnouncerError::IntervalNotBelowTtl { .. })
        ));
        assert!(
            Announcer::new(
                Identity::from_seed([1; 32]),
                bad(1, 30, 20),
                CapabilitySet::new()
            )
            .is_err()
        );
    }

    #[test]
    fn service_tags_and_runtime_metadata_survive_a_new_set() {
        let mut a = announcer(AnnouncerConfig::default());
        a.add_service("echo").expect("valid");
        a.set_metadata("netrun.load", Some("250".into()))
            .expect("valid");
        let mut app = CapabilitySet::new().with_tag("gpu");
        app.metadata.insert("netrun.load".into(), "0".into());
        app.metadata.insert("zone".into(), "eu".into());
        assert!(a.set_capabilities(app.clone()).expect("valid"));
        let set = a.capabilities();
        assert!(set.has_tag("gpu") && set.has_tag("nrpc:echo"));
        assert!(
            !set.has_tag("role:worker"),
            "the application's set is replaced"
        );
        assert_eq!(
            set.metadata.get("netrun.load").map(String::as_str),
            Some("250")
        );
        assert_eq!(set.metadata.get("zone").map(String::as_str), Some("eu"));
        assert!(a.remove_service("echo").expect("valid"));
        assert!(a.set_metadata("netrun.load", None).expect("valid"));
        assert_eq!(a.capabilities(), &app, "only the application's set is left");
    }

    #[test]
    fn start_change_rate_limit_and_period() {
        let mut a = announcer(AnnouncerConfig::default());
        assert_eq!(a.poll_timeout(), 0);
        let first = a.poll_announce(T0).expect("signs").expect("due at start");
        assert_eq!(first.version, T0);
        assert_eq!(first.ttl_secs, 300);
        first.verify().expect("verifies");
        assert!(a.poll_announce(T0).expect("ok").is_none());
        assert_eq!(a.poll_timeout(), T0 + 150);

        // A change two seconds later waits for the minimum interval.
        assert!(a.add_service("echo").expect("valid"));
        assert!(!a.add_service("echo").expect("valid"), "no-op change");
        assert_eq!(a.poll_timeout(), T0 + 10);
        assert!(a.poll_announce(T0 + 2).expect("ok").is_none());
        // A second change in the burst is coalesced.
        assert!(a.add_service("sum").expect("valid"));
        let second = a.poll_announce(T0 + 10).expect("signs").expect("due");
        assert!(second.capabilities.has_tag("nrpc:echo"));
        assert!(second.capabilities.has_tag("nrpc:sum"));
        assert_eq!(second.version, T0 + 10);
        assert!(a.poll_announce(T0 + 11).expect("ok").is_none());

        // Unchanged: only the periodic re-announcement.
        assert_eq!(a.poll_timeout(), T0 + 160);
        assert!(a.poll_announce(T0 + 159).expect("ok").is_none());
        let third = a.poll_announce(T0 + 160).expect("signs").expect("periodic");
        assert_eq!(third.capabilities, second.capabilities);
        assert!(third.version > second.version);

        assert!(a.remove_service("echo").expect("valid"));
        let fourth = a.poll_announce(T0 + 170).expect("signs").expect("due");
        assert!(!fourth.capabilities.has_tag("nrpc:echo"));
    }

    #[test]
    fn versions_increase_and_survive_restart_and_clock_step() {
        let mut a = announcer(AnnouncerConfig {
            min_interval_secs: 1,
            reannounce_interval_secs: 1,
            ttl_secs: 3,
        });
        let v1 = a.poll_announce(T0).expect("ok").expect("due").version;
        let v2 = a.poll_announce(T0 + 1).expect("ok").expect("due").version;
        assert!(v2 > v1);
        // The clock steps back an hour: announce at once, version still increases.
        let v3 = a
            .poll_announce(T0 - 3600)
            .expect("ok")
            .expect("due")
            .version;
        assert!(v3 > v2);
        // A restarted announcer a second later starts above the old run.
        let mut restarted = announcer(AnnouncerConfig::default());
        let v4 = restarted
            .poll_announce(T0 + 2)
            .expect("ok")
            .expect("due")
            .version;
        assert!(v4 > v2);
    }

    #[test]
    fn oversize_capabilities_are_refused_up_front() {
        let mut a = announcer(AnnouncerConfig::default());
        let mut huge = CapabilitySet::new();
        for i in 0..=netrun_messages::capability::MAX_TAGS {
            huge.tags.insert(format!("t{i}"));
        }
        assert!(matches!(
            a.set_capabilities(huge),
            Err(AnnouncerError::Capabilities(_))
        ));
        assert!(a.capabilities().has_tag("role:worker"));
    }

    /// A node that lives for ten TTLs, driven by a simulated clock, never drops out of its
    /// own index or a peer's, although every entry lives only one TTL.
    #[test]
    fn long_lived_node_stays_present_across_ttls() {
        let config = AnnouncerConfig {
            min_interval_secs: 5,
            reannounce_interval_secs: 40,
            ttl_secs: 60,
        };
        let mut a = announcer(config);
        let node = a.node_id();
        let mut own = CapabilityIndex::new(node, IndexConfig::default()).expect("valid");
        let mut peer = CapabilityIndex::new(NodeId(1), IndexConfig::default()).expect("valid");
        let mut announcements = 0;
        for now in T0..T0 + 10 * 60 {
            if now == T0 + 123 {
                a.add_service("late").expect("valid");
            }
            if let Some(ann) = a.poll_announce(now).expect("signs") {
                announcements += 1;
                let bytes = ann.to_bytes().expect("encodes");
                own.handle_announcement(now, ann, None)
                    .expect("own accepted");
                peer.handle_announcement(now, &bytes, None)
                    .expect("peer accepted");
            }
            assert!(
                own.handle_timeout(now).is_empty(),
                "own entry expired at {now}"
            );
            assert!(
                peer.handle_timeout(now).is_empty(),
                "peer entry expired at {now}"
            );
            assert!(own.get(node).is_some() && peer.get(node).is_some());
            if now >= T0 + 123 + 5 {
                assert_eq!(peer.find_service("late"), vec![node]);
            }
        }
        // One at start, one for the change, then one every 40 s.
        assert!((15..=17).contains(&announcements), "{announcements}");
        assert_eq!(peer.counters().expired, 0);

        // Once the node stops announcing, peers drop it within one TTL.
        let last = T0 + 10 * 60;
        let mut gone_at = None;
        for now in last..last + 61 {
            if peer.handle_timeout(now).contains(&node) {
                gone_at = Some(now);
                break;
            }
        }
        assert!(gone_at.is_some());
        assert!(peer.get(node).is_none());
        assert!(peer.find_service("late").is_empty());
    }
}
