//! MQTT discovery rules: the topics, and the table that validates received publishes and
//! tracks each node's incarnation, without I/O (time is an argument). The MQTT backend in
//! `netrun-actors` owns the broker connection and drives this table.
//!
//! ```text
//!  netrun/<mesh>/nodes/<node>/announce   retained, signed MqttAnnounce
//!  netrun/<mesh>/nodes/<node>/goodbye    retained, signed goodbye (also the last will)
//!
//!  publish(topic, payload) ─▶ PeerTable::handle(now, now_ms, …)
//!      topic parse ─ decode ─ signature, node and kind == topic ─ mesh ─ not us
//!      ─ freshness (within the TTL, at most MAX_CLOCK_SKEW ahead) ─ incarnation
//!      ─▶ Outcome::{Found, Lost, Ignored}   (every refusal counted)
//!  timer ─▶ PeerTable::expire(now) ─▶ peers whose announce was not refreshed: lost
//! ```
//!
//! - The same announce again (same incarnation, same addresses) is a refresh, not news;
//!   new addresses or a new, later incarnation are reported as found.
//! - A goodbye ends the live incarnation it names; the ended incarnation is remembered, so
//!   its retained announce, delivered before or after the goodbye, cannot bring it back.
//! - A live peer not refreshed for the TTL is reported lost; an ended one is forgotten one
//!   TTL later. The table holds at most `max` nodes, live or ended; more are refused and
//!   counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use netrun_messages::mqtt_announce::{AnnounceKind, MAX_MQTT_ANNOUNCE_LEN, MqttAnnounce};
use netrun_messages::{MeshFingerprint, NodeId};

use super::{DiscoveredPeer, DiscoverySource};

/// How far in the future an announce's timestamp may be (clock skew between hosts).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(60);

/// What one received publish amounts to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A new peer, a new incarnation, or new addresses.
    Found(DiscoveredPeer),
    /// A live incarnation said goodbye.
    Lost {
        /// The node that left.
        node: NodeId,
        /// Its retained announce topic, to delete on its behalf (when the table is set to
        /// clear retained announces on goodbye).
        clear: Option<String>,
    },
    /// Nothing to report (a refresh, a duplicate, our own message, or a counted rejection).
    Ignored,
}

/// Rejection and event counters of the table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Found outcomes.
    pub found: u64,
    /// Peers lost, by goodbye or by expiry.
    pub lost: u64,
    /// Payloads that did not decode, or arrived on a malformed topic.
    pub malformed: u64,
    /// Payloads whose signature, key-derived node id, topic node or topic kind was wrong.
    pub forged: u64,
    /// Validly signed payloads for another mesh.
    pub foreign_mesh: u64,
    /// Announces too old (or too far in the future), replayed, or of an ended incarnation.
    pub stale: u64,
    /// New nodes refused because the table was full.
    pub table_full: u64,
}

/// What the table knows about one node.
#[derive(Debug)]
struct Entry {
    incarnation: u64,
    issued_at_ms: u64,
    live: bool,
    addrs: Vec<SocketAddr>,
    /// When it was last refreshed (live) or ended (gone).
    touched: Instant,
}

/// The MQTT peer table: validates publishes and tracks incarnations.
#[derive(Debug)]
pub struct PeerTable {
    mesh: MeshFingerprint,
    own: NodeId,
    ttl: Duration,
    max: usize,
    clear_on_goodbye: bool,
    entries: HashMap<NodeId, Entry>,
    counters: Counters,
}

impl PeerTable {
    /// A table for node `own` in `mesh`: announces older than `ttl` are refused and a
    /// peer not refreshed for `ttl` is lost; at most `max` nodes are remembered; with
    /// `clear_on_goodbye`, a goodbye's outcome names the retained announce to delete.
    pub fn new(
        mesh: MeshFingerprint,
        own: NodeId,
        ttl: Duration,
        max: usize,
        clear_on_goodbye: bool,
    ) -> Self {
        Self {
            mesh,
            own,
            ttl,
            max,
            clear_on_goodbye,
            entries: HashMap::new(),
            counters: Counters::default(),
        }
    }

    /// The counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Live peers held.
    pub fn live(&self) -> usize {
        self.entries.values().filter(|e| e.live).count()
    }

    /// Handles one publish on `topic` at local time `now` and wall-clock time `now_ms`.
    pub fn handle(&mut self, now: Instant, now_ms: u64, topic: &str, payload: &[u8]) -> Outcome {
        let Some((mesh, topic_node, topic_kind)) = parse_topic(topic) else {
            self.counters.malformed += 1;
            return Outcome::Ignored;
        };
        if mesh != self.mesh {
            self.counters.foreign_mesh += 1;
            return Outcome::Ignored;
        }
        if payload.is_empty() && topic_kind == AnnounceKind::Announce {
            // A deleted retained announce, delivered to subscribers: nothing to do.
            return Outcome::Ignored;
        }
        if payload.len() > MAX_MQTT_ANNOUNCE_LEN {
            self.counters.malformed += 1;
            return Outcome::Ignored;
        }
        let Ok(msg) = MqttAnnounce::decode(payload) else {
            self.counters.malformed += 1;
            return Outcome::Ignored;
        };
        if msg.verify().is_err() || msg.node != topic_node || msg.kind != topic_kind {
            self.counters.forged += 1;
            return Outcome::Ignored;
        }
        if msg.mesh != self.mesh {
            self.counters.foreign_mesh += 1;
            return Outcome::Ignored;
        }
        if msg.node == self.own {
            return Outcome::Ignored;
        }
        match msg.kind {
            AnnounceKind::Announce => self.announce(now, now_ms, msg),
            AnnounceKind::Goodbye => self.goodbye(now, &msg),
        }
    }

    fn announce(&mut self, now: Instant, now_ms: u64, msg: MqttAnnounce) -> Outcome {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let skew_ms = u64::try_from(MAX_CLOCK_SKEW.as_millis()).unwrap_or(u64::MAX);
        if msg.issued_at_ms.saturating_add(ttl_ms) < now_ms
            || msg.issued_at_ms > now_ms.saturating_add(skew_ms)
        {
            self.counters.stale += 1;
            return Outcome::Ignored;
        }
        let len = self.entries.len();
        match self.entries.get_mut(&msg.node) {
            Some(e) if e.incarnation == msg.incarnation => {
                if !e.live || msg.issued_at_ms < e.issued_at_ms {
                    // An ended incarnation, or a replay older than what we have.
                    self.counters.stale += 1;
                    return Outcome::Ignored;
                }
                e.issued_at_ms = msg.issued_at_ms;
                e.touched = now;
                if e.addrs == msg.addrs {
                    return Outcome::Ignored;
                }
                e.addrs.clone_from(&msg.addrs);
            }
            Some(e) => {
                if msg.issued_at_ms <= e.issued_at_ms {
                    self.counters.stale += 1;
                    return Outcome::Ignored;
                }
                *e = Entry::live(now, &msg);
            }
            None if len >= self.max => {
                self.counters.table_full += 1;
                return Outcome::Ignored;
            }
            None => {
                self.entries.insert(msg.node, Entry::live(now, &msg));
            }
        }
        self.counters.found += 1;
        Outcome::Found(DiscoveredPeer {
            node: msg.node,
            entity: msg.public_key,
            addrs: msg.addrs,
            source: DiscoverySource::Mqtt,
        })
    }

    fn goodbye(&mut self, now: Instant, msg: &MqttAnnounce) -> Outcome {
        let len = self.entries.len();
        match self.entries.get_mut(&msg.node) {
            Some(e) if e.incarnation == msg.incarnation && e.live => {
                e.live = false;
                e.touched = now;
                self.counters.lost += 1;
                Outcome::Lost {
                    node: msg.node,
                    clear: self
                        .clear_on_goodbye
                        .then(|| announce_topic(&self.mesh, msg.node)),
                }
            }
            // Already gone, or the retained goodbye of an earlier incarnation.
            Some(_) => Outcome::Ignored,
            None if len >= self.max => {
                self.counters.table_full += 1;
                Outcome::Ignored
            }
            // Remember the ended incarnation, so its retained announce (which may arrive
            // after the goodbye) cannot bring it back.
            None => {
                self.entries.insert(
                    msg.node,
                    Entry {
                        incarnation: msg.incarnation,
                        issued_at_ms: msg.issued_at_ms,
                        live: false,
                        addrs: Vec::new(),
                        touched: now,
                    },
                );
                Outcome::Ignored
            }
        }
    }

    /// Reports live peers whose announce was not refreshed within the TTL (ascending), and
    /// forgets gone ones after another TTL.
    pub fn expire(&mut self, now: Instant) -> Vec<NodeId> {
        let ttl = self.ttl;
        let mut lost = Vec::new();
        self.entries.retain(|node, e| {
            if now.saturating_duration_since(e.touched) < ttl {
                return true;
            }
            if e.live {
                e.live = false;
                e.touched = now;
                lost.push(*node);
                true
            } else {
                false
            }
        });
        self.counters.lost += lost.len() as u64;
        lost.sort_unstable();
        lost
    }
}

impl Entry {
    fn live(now: Instant, msg: &MqttAnnounce) -> Self {
        Self {
            incarnation: msg.incarnation,
            issued_at_ms: msg.issued_at_ms,
            live: true,
            addrs: msg.addrs.clone(),
            touched: now,
        }
    }
}

/// The announce topic of `node` in `mesh`.
pub fn announce_topic(mesh: &MeshFingerprint, node: NodeId) -> String {
    format!("netrun/{mesh}/nodes/{node}/announce")
}

/// The goodbye topic of `node` in `mesh`.
pub fn goodbye_topic(mesh: &MeshFingerprint, node: NodeId) -> String {
    format!("netrun/{mesh}/nodes/{node}/goodbye")
}

/// Parses `netrun/<mesh>/nodes/<node>/<announce|goodbye>`.
pub fn parse_topic(topic: &str) -> Option<(MeshFingerprint, NodeId, AnnounceKind)> {
    let mut parts = topic.split('/');
    let (Some("netrun"), Some(mesh), Some("nodes"), Some(node), Some(kind), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let mesh = MeshFingerprint::from_hex(mesh)?;
    if node.len() != 16 {
        return None;
    }
    let node = NodeId(u64::from_str_radix(node, 16).ok()?);
    let kind = match kind {
        "announce" => AnnounceKind::Announce,
        "goodbye" => AnnounceKind::Goodbye,
        _ => return None,
    };
    Some((mesh, node, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;
    use netrun_messages::Identity;

    const TTL: Duration = Duration::from_secs(120);
    const NOW_MS: u64 = 1_800_000_000_000;

    fn mesh() -> MeshFingerprint {
        MeshFingerprint::from_psk(&[7; 32])
    }

    fn table(max: usize) -> PeerTable {
        PeerTable::new(
            mesh(),
            Identity::from_seed([0; 32]).node_id(),
            TTL,
            max,
            true,
        )
    }

    fn signed(id: &Identity, kind: AnnounceKind, inc: u64, at: u64) -> (String, Vec<u8>) {
        let addrs = match kind {
            AnnounceKind::Announce => vec!["192.0.2.7:4000".parse().expect("addr")],
            AnnounceKind::Goodbye => vec![],
        };
        let msg = MqttAnnounce::sign(id, kind, mesh(), inc, at, addrs).expect("signs");
        let topic = match kind {
            AnnounceKind::Announce => announce_topic(&mesh(), id.node_id()),
            AnnounceKind::Goodbye => goodbye_topic(&mesh(), id.node_id()),
        };
        (topic, msg.to_vec())
    }
    #[test]
    fn announce_then_goodbye_then_no_resurrection() {
        let mut t = table(16);
        let now = t0();
        let peer = Identity::from_seed([1; 32]);
        let (topic, payload) = signed(&peer, AnnounceKind::Announce, 5, NOW_MS);
        let Outcome::Found(found) = t.handle(now, NOW_MS, &topic, &payload) else {
            panic!("expected Found");
        };
        assert_eq!(found.node, peer.node_id());
        assert_eq!(found.entity, peer.entity_id());
        // The same announce again is a refresh, not a new Found.
        assert_eq!(t.handle(now, NOW_MS, &topic, &payload), Outcome::Ignored);
        // A goodbye of another incarnation does nothing.
        let (gt, other_bye) = signed(&peer, AnnounceKind::Goodbye, 4, NOW_MS);
        assert_eq!(t.handle(now, NOW_MS, &gt, &other_bye), Outcome::Ignored);
        let (gt, bye) = signed(&peer, AnnounceKind::Goodbye, 5, NOW_MS - 10_000);
        assert_eq!(
            t.handle(now, NOW_MS, &gt, &bye),
            Outcome::Lost {
                node: peer.node_id(),
                clear: Some(topic.clone())
            }
        );
        // The retained announce of the ended incarnation cannot bring it back.
        let (_, late) = signed(&peer, AnnounceKind::Announce, 5, NOW_MS + 1);
        assert_eq!(t.handle(now, NOW_MS, &topic, &late), Outcome::Ignored);
        // A restart (new incarnation, later timestamp) is found again.
        let (_, restart) = signed(&peer, AnnounceKind::Announce, 6, NOW_MS + 2);
        assert!(matches!(
            t.handle(now, NOW_MS, &topic, &restart),
            Outcome::Found(_)
        ));
        assert_eq!(t.counters.found, 2);
        assert_eq!(t.counters.lost, 1);
    }

    #[test]
    fn a_retained_goodbye_before_its_announce_keeps_the_peer_gone() {
        let mut t = table(16);
        let now = t0();
        let peer = Identity::from_seed([1; 32]);
        // A late subscriber gets both retained messages, goodbye first.
        let (gt, bye) = signed(&peer, AnnounceKind::Goodbye, 5, NOW_MS - 60_000);
        assert_eq!(t.handle(now, NOW_MS, &gt, &bye), Outcome::Ignored);
        let (topic, announce) = signed(&peer, AnnounceKind::Announce, 5, NOW_MS - 1_000);
        assert_eq!(t.handle(now, NOW_MS, &topic, &announce), Outcome::Ignored);
        assert_eq!(t.live(), 0);
        // The node restarted since: its new incarnation is found.
        let (_, restarted) = signed(&peer, AnnounceKind::Announce, 6, NOW_MS);
        assert!(matches!(
            t.handle(now, NOW_MS, &topic, &restarted),
            Outcome::Found(_)
        ));
        // And the old retained goodbye, delivered again, does not end the new one.
        assert_eq!(t.handle(now, NOW_MS, &gt, &bye), Outcome::Ignored);
        assert_eq!(t.live(), 1);
    }

    #[test]
    fn forgeries_are_counted_not_reported() {
        let mut t = table(16);
        let now = t0();
        let honest = Identity::from_seed([1; 32]);
        let forger = Identity::from_seed([2; 32]);
        // The forger's valid announce published on the honest node's topic.
        let (_, payload) = signed(&forger, AnnounceKind::Announce, 1, NOW_MS);
        let honest_topic = announce_topic(&mesh(), honest.node_id());
        assert_eq!(
            t.handle(now, NOW_MS, &honest_topic, &payload),
            Outcome::Ignored
        );
        // The honest node's id and key with the forger's signature.
        let mut msg = MqttAnnounce::decode(&payload).expect("decodes");
        msg.node = honest.node_id();
        msg.public_key = honest.entity_id();
        assert_eq!(
            t.handle(now, NOW_MS, &honest_topic, &msg.to_vec()),
            Outcome::Ignored
        );
        // An announce replayed onto the goodbye topic.
        let (_, announce) = signed(&honest, AnnounceKind::Announce, 1, NOW_MS);
        let bye_topic = goodbye_topic(&mesh(), honest.node_id());
        assert_eq!(
            t.handle(now, NOW_MS, &bye_topic, &announce),
            Outcome::Ignored
        );
        assert_eq!(t.counters.forged, 3);
        // Garbage and bad topics.
        assert_eq!(
            t.handle(now, NOW_MS, &honest_topic, b"junk"),
            Outcome::Ignored
        );
        assert_eq!(
            t.handle(now, NOW_MS, "netrun/x/nodes/y/announce", &announce),
            Outcome::Ignored
        );
        assert_eq!(t.counters.malformed, 2);
        // An empty retained clear is silently ignored.
        assert_eq!(t.handle(now, NOW_MS, &honest_topic, b""), Outcome::Ignored);
        assert_eq!(t.counters.found, 0);
    }

    #[test]
    fn foreign_stale_own_and_full_are_refused() {
        let mut t = table(1);
        let now = t0();
        let peer = Identity::from_seed([1; 32]);
        // Signed for another mesh, published in ours.
        let other = MeshFingerprint::from_psk(&[8; 32]);
        let msg = MqttAnnounce::sign(&peer, AnnounceKind::Announce, other, 1, NOW_MS, vec![])
            .expect("signs");
        let topic = announce_topic(&mesh(), peer.node_id());
        assert_eq!(
            t.handle(now, NOW_MS, &topic, &msg.to_vec()),
            Outcome::Ignored
        );
        assert_eq!(t.counters.foreign_mesh, 1);
        // Too old and too far in the future.
        let (_, old) = signed(&peer, AnnounceKind::Announce, 1, NOW_MS - 121_000);
        assert_eq!(t.handle(now, NOW_MS, &topic, &old), Outcome::Ignored);
        let (_, future) = signed(&peer, AnnounceKind::Announce, 1, NOW_MS + 61_000);
        assert_eq!(t.handle(now, NOW_MS, &topic, &future), Outcome::Ignored);
        assert_eq!(t.counters.stale, 2);
        // Our own announce.
        let me = Identity::from_seed([0; 32]);
        let (mt, mine) = signed(&me, AnnounceKind::Announce, 1, NOW_MS);
        assert_eq!(t.handle(now, NOW_MS, &mt, &mine), Outcome::Ignored);
        // The table holds one peer.
        let (_, ok) = signed(&peer, AnnounceKind::Announce, 1, NOW_MS);
        assert!(matches!(
            t.handle(now, NOW_MS, &topic, &ok),
            Outcome::Found(_)
        ));
        let third = Identity::from_seed([3; 32]);
        let (tt, full) = signed(&third, AnnounceKind::Announce, 1, NOW_MS);
        assert_eq!(t.handle(now, NOW_MS, &tt, &full), Outcome::Ignored);
        assert_eq!(t.counters.table_full, 1);
    }

    #[test]
    fn unrefreshed_peers_expire_then_are_forgotten() {
        let mut t = table(16);
        let now = t0();
        let peer = Identity::from_seed([1; 32]);
        let (topic, payload) = signed(&peer, AnnounceKind::Announce, 1, NOW_MS);
        assert!(matches!(
            t.handle(now, NOW_MS, &topic, &payload),
            Outcome::Found(_)
        ));
        assert!(t.expire(now + TTL / 2).is_empty());
        assert_eq!(t.expire(now + TTL), vec![peer.node_id()]);
        assert_eq!(t.live(), 0);
        assert_eq!(t.entries.len(), 1);
        assert!(t.expire(now + TTL * 2).is_empty());
        assert!(t.entries.is_empty());
    }

    #[test]
    fn topics_round_trip() {
        let node = NodeId(0x0123_4567_89ab_cdef);
        let t = announce_topic(&mesh(), node);
        assert_eq!(
            parse_topic(&t),
            Some((mesh(), node, AnnounceKind::Announce))
        );
        let t = goodbye_topic(&mesh(), node);
        assert_eq!(parse_topic(&t), Some((mesh(), node, AnnounceKind::Goodbye)));
        assert_eq!(parse_topic(&format!("{t}/extra")), None);
        assert_eq!(
            parse_topic("netrun/zz/nodes/0123456789abcdef/announce"),
            None
        );
    }
}
