//! Placing a daemon on the best node for it.
//!
//! 1. The daemon is built once from its factory (which must be registered here too) to
//!    read its `requirements()`.
//! 2. Candidates come from a [`PlacementCandidates`] provider. The default,
//!    [`IndexCandidates`], reads the capability index: this node (its live capability set,
//!    RTT zero) and every node whose verified announcement meets the requirements, with
//!    the RTT of its session if there is one and its load from the `netrun.daemon.load`
//!    metadata it announces; a session peer whose announcement has not arrived yet is
//!    asked directly. [`SessionCandidates`] asks every session peer directly instead;
//!    either can be replaced through [`Node::set_placement_candidates`].
//! 3. [`rank`] orders the matching candidates: lowest RTT, then least saturation, then
//!    lowest node id.
//! 4. The daemon is spawned on the first; if that node refuses for certain (kind not
//!    registered, full, shutting down, invalid, the factory failed) or the request could not
//!    be sent, on the next. If every candidate refuses, the last refusal is returned
//!    (`FactoryNotFound` when the kind is registered nowhere that matches). A node that
//!    already runs the identity, or that does not answer (it may have spawned the daemon
//!    and lost the reply), ends the placement with that error: trying another node could
//!    run one identity twice.
//!
//! A remote spawn travels in a `DAEMON` control envelope inside the session to the chosen
//! node, identity seed and [`DaemonWiring`](super::DaemonWiring) included, and is limited
//! to what one datagram carries (a configuration of a few KiB). The wiring makes a placed
//! daemon reachable wherever it lands: its services are served by its host (callers find
//! them with `call_service`) and its channel inputs are subscribed there. Any session peer
//! may ask a node to host a daemon: mesh membership (the PSK and the session handshake) is
//! the authorization. Only the node that placed a daemon may stop it remotely
//! ([`Node::stop_daemon_on`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use netrun_actors::daemon::{DaemonOptions, RemoteError};
use netrun_actors::session::PeerState;
use netrun_messages::daemon::{MAX_LOAD_PERMILLE, SpawnRefusal};
use netrun_runtime::daemon::{Candidate, rank};
use tracing::{Instrument, debug, info_span};

use super::registry::LOAD_METADATA_KEY;
use super::{DaemonCallError, DaemonHandle, DaemonSpawnError};
use crate::{
    CapabilityFilter, CapabilitySet, DaemonConfig, EntityId, Identity, Node, NodeId, OriginHash,
};

/// Longest a capability query or a remote spawn waits for a peer (across its attempts).
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a remote spawn waits for the chosen peer (across its attempts).
pub const REMOTE_SPAWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a remote stop waits: the daemon's grace period (30 s by default) and a margin.
pub const REMOTE_STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// One node that could host a daemon.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementCandidate {
    /// The node.
    pub node: NodeId,
    /// What it offers.
    pub capabilities: CapabilitySet,
    /// Round-trip time from this node (`Some(ZERO)` for this node, `None` if unknown).
    pub rtt: Option<Duration>,
    /// Its load, 0.0 (idle) to 1.0 (full).
    pub saturation: f32,
}

/// The future a [`PlacementCandidates`] provider returns.
pub type CandidatesFuture<'a> = Pin<Box<dyn Future<Output = Vec<PlacementCandidate>> + Send + 'a>>;

/// Where placement takes its candidate nodes from.
pub trait PlacementCandidates: Send + Sync + 'static {
    /// The nodes `node` may place a daemon with `requirements` on, itself included if it
    /// may host one. Ranking filters by the requirements again, so a provider may return
    /// nodes that do not meet them.
    fn candidates<'a>(
        &'a self,
        node: &'a Node,
        requirements: &'a CapabilityFilter,
    ) -> CandidatesFuture<'a>;
}

/// The outcome of a placed spawn.
#[derive(Debug, Clone)]
pub struct PlacedDaemon {
    /// The node the daemon runs on.
    pub node: NodeId,
    /// Its origin hash.
    pub origin_hash: OriginHash,
    /// Its public key.
    pub entity: EntityId,
    /// Its kind.
    pub kind: String,
    /// The handle, when it landed on this node.
    pub local: Option<DaemonHandle>,
}

/// The default provider: this node, the nodes in the capability index that meet the
/// requirements, and session peers not indexed yet (asked directly).
#[derive(Debug, Clone, Copy, Default)]
pub struct IndexCandidates;

impl PlacementCandidates for IndexCandidates {
    fn candidates<'a>(
        &'a self,
        node: &'a Node,
        requirements: &'a CapabilityFilter,
    ) -> CandidatesFuture<'a> {
        Box::pin(async move {
            let peers = up_peers(node).await;
            let local = node.node_id();
            let mut candidates = vec![this_node(node)];
            let index = node.capability_state();
            for id in index.find(requirements) {
                if id == local {
                    continue;
                }
                let Some(capabilities) = index.capabilities_of(id) else {
                    continue;
                };
                let load = announced_load(&capabilities);
                candidates.push(peer_candidate(&peers, id, capabilities, load));
            }
            // Session peers whose announcement has not arrived yet (a session that just
            // came up) are asked directly.
            let unindexed: Vec<_> = peers
                .into_iter()
                .filter(|p| index.get(p.node).is_none())
                .collect();
            if !unindexed.is_empty() {
                candidates.extend(ask_peers(node, &unindexed).await);
            }
            candidates
        })
    }
}

/// This node as a candidate: its live capability set, RTT zero, its daemon load.
fn this_node(node: &Node) -> PlacementCandidate {
    let daemons = node.daemon_registry();
    PlacementCandidate {
        node: node.node_id(),
        capabilities: daemons.capabilities(),
        rtt: Some(Duration::ZERO),
        saturation: f32::from(daemons.load_permille()) / 1000.0,
    }
}

/// The session peers that are up.
async fn up_peers(node: &Node) -> Vec<crate::PeerInfo> {
    node.peers()
        .await
        .into_iter()
        .filter(|p| p.state == PeerState::Up)
        .collect()
}

/// The daemon load a node announces, per mille (0 if it announces none or garbage).
fn announced_load(capabilities: &CapabilitySet) -> u16 {
    capabilities
        .metadata
        .get(LOAD_METADATA_KEY)
        .and_then(|v| v.parse::<u16>().ok())
        .unwrap_or(0)
}

/// Another node as a candidate: the RTT of its session if it has one, its load.
fn peer_candidate(
    peers: &[crate::PeerInfo],
    node: NodeId,
    capabilities: CapabilitySet,
    load_permille: u16,
) -> PlacementCandidate {
    PlacementCandidate {
        node,
        capabilities,
        rtt: peers.iter().find(|p| p.node == node).and_then(|p| p.rtt),
        saturation: f32::from(load_permille.min(MAX_LOAD_PERMILLE)) / 1000.0,
    }
}

/// Asks every session peer for its capabilities and load (one `DAEMON` query each); peers
/// that do not answer within [`QUERY_TIMEOUT`] are not candidates.
#[derive(Debug, Clone, Copy, Default)]
pub struct SessionCandidates;

impl PlacementCandidates for SessionCandidates {
    fn candidates<'a>(
        &'a self,
        node: &'a Node,
        _requirements: &'a CapabilityFilter,
    ) -> CandidatesFuture<'a> {
        Box::pin(async move {
            let peers = up_peers(node).await;
            let mut candidates = vec![this_node(node)];
            candidates.extend(ask_peers(node, &peers).await);
            candidates
        })
    }
}

/// Asks each of `peers` for its capabilities and load (concurrently: a session peer count
/// is small and bounded); those that answer within [`QUERY_TIMEOUT`] are candidates,
/// ascending by node id.
async fn ask_peers(node: &Node, peers: &[crate::PeerInfo]) -> Vec<PlacementCandidate> {
    let client = node.daemon_registry().client();
    let mut queries = tokio::task::JoinSet::new();
    for peer in peers {
        let client = client.clone();
        let peer_node = peer.node;
        queries.spawn(async move { (peer_node, client.query(peer_node, QUERY_TIMEOUT).await) });
    }
    let mut answers = Vec::with_capacity(peers.len());
    while let Some(answer) = queries.join_next().await {
        if let Ok(answer) = answer {
            answers.push(answer);
        }
    }
    answers.sort_by_key(|(peer, _)| *peer);
    let mut candidates = Vec::with_capacity(answers.len());
    for (peer, answer) in answers {
        match answer {
            Ok(reply) => candidates.push(peer_candidate(
                peers,
                peer,
                reply.capabilities,
                reply.load_permille,
            )),
            Err(error) => debug!(%peer, %error, "no capability answer; not a candidate"),
        }
    }
    candidates
}

impl Node {
    /// Spawns a daemon of `kind` on the best node for it (see the module docs of
    /// `netrun::daemons` for the order), with default hosting options.
    pub async fn spawn_daemon_placed(
        &self,
        kind: &str,
        identity: Identity,
        config: DaemonConfig,
    ) -> Result<PlacedDaemon, DaemonSpawnError> {
        self.spawn_daemon_placed_with(kind, identity, config, DaemonOptions::default())
            .await
    }

    /// Like [`spawn_daemon_placed`](Self::spawn_daemon_placed), with hosting options (a
    /// remote node uses the host configuration; the other options are its defaults).
    pub async fn spawn_daemon_placed_with(
        &self,
        kind: &str,
        identity: Identity,
        config: DaemonConfig,
        options: DaemonOptions,
    ) -> Result<PlacedDaemon, DaemonSpawnError> {
        let span = info_span!(
            "netrun.daemon.place",
            node = %self.node_id(),
            kind,
            origin = %identity.origin_hash(),
            target = tracing::field::Empty,
        );
        self.place_inner(kind, identity, config, options, span.clone())
            .instrument(span)
            .await
    }

    async fn place_inner(
        &self,
        kind: &str,
        identity: Identity,
        config: DaemonConfig,
        options: DaemonOptions,
        span: tracing::Span,
    ) -> Result<PlacedDaemon, DaemonSpawnError> {
        let daemons = self.daemon_registry();
        if daemons.is_shutting_down() {
            return Err(DaemonSpawnError::ShuttingDown);
        }
        let requirements = {
            let (_, daemon) = daemons.build(kind, &config)?;
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| daemon.requirements()))
                .map_err(|_| {
                    DaemonSpawnError::Factory(netrun_runtime::daemon::FactoryError::Panicked {
                        kind: kind.to_owned(),
                        message: "requirements() panicked".to_owned(),
                    })
                })?
        };
        let provider = daemons
            .candidates()
            .unwrap_or_else(|| Arc::new(IndexCandidates));
        let candidates = provider.candidates(self, &requirements).await;
        let views: Vec<Candidate<'_>> = candidates
            .iter()
            .map(|c| Candidate {
                node: c.node,
                caps: &c.capabilities,
                rtt: c.rtt,
                saturation: c.saturation,
            })
            .collect();
        let ranked = rank(&requirements, &views);
        if daemons.entry(identity.origin_hash()).is_some() {
            return Err(DaemonSpawnError::AlreadyRunning(identity.origin_hash()));
        }
        let mut last = DaemonSpawnError::NoCandidate;
        for target in ranked {
            span.record("target", tracing::field::display(target));
            if target == self.node_id() {
                match daemons
                    .spawn_local(
                        kind,
                        identity.clone(),
                        config.clone(),
                        options.clone(),
                        None,
                        None,
                    )
                    .await
                {
                    Ok(handle) => {
                        return Ok(PlacedDaemon {
                            node: target,
                            origin_hash: handle.origin_hash(),
                            entity: handle.entity(),
                            kind: kind.to_owned(),
                            local: Some(handle),
                        });
                    }
                    // The identity runs here already: placing it elsewhere would fork it.
                    Err(error @ DaemonSpawnError::AlreadyRunning(_)) => return Err(error),
                    Err(error) => {
                        debug!(%error, "this node refused the daemon; trying the next");
                        last = error;
                    }
                }
                continue;
            }
            let spawned = daemons
                .client()
                .spawn(
                    target,
                    kind,
                    &identity,
                    &config,
                    &options,
                    REMOTE_SPAWN_TIMEOUT,
                )
                .await;
            match spawned {
                Ok((origin_hash, entity)) if entity == identity.entity_id() => {
                    return Ok(PlacedDaemon {
                        node: target,
                        origin_hash,
                        entity,
                        kind: kind.to_owned(),
                        local: None,
                    });
                }
                Ok(_) => {
                    debug!(%target, "node reported another identity; trying the next");
                    last = DaemonSpawnError::WrongIdentity;
                }
                // Definite refusals: the daemon does not run there, the next node may do.
                Err(RemoteError::Refused { refusal, .. })
                    if refusal != SpawnRefusal::AlreadyRunning =>
                {
                    debug!(%target, %refusal, "node refused; trying the next");
                    last = match refusal {
                        SpawnRefusal::FactoryNotFound => {
                            DaemonSpawnError::FactoryNotFound(kind.to_owned())
                        }
                        refusal => DaemonSpawnError::Remote(RemoteError::Refused {
                            node: target,
                            refusal,
                        }),
                    };
                }
                // Nothing was sent: the node never heard of the daemon.
                Err(RemoteError::Send(error)) => {
                    debug!(%target, %error, "request not sent; trying the next");
                    last = DaemonSpawnError::Remote(RemoteError::Send(error));
                }
                // Already running there, or no answer (it may have spawned it): trying
                // another node could run the identity twice.
                Err(error) => return Err(DaemonSpawnError::Remote(error)),
            }
        }
        Err(last)
    }
}

impl Node {
    /// Stops daemon `origin` on node `host`: here, like [`Node::stop_daemon`]; on another
    /// node, through the `DAEMON` control subprotocol, which that node accepts only from
    /// the node that placed the daemon there ([`StopResult::NotPermitted`](super::StopResult)
    /// otherwise). The remote node waits out the daemon's grace period, so this can take
    /// up to [`REMOTE_STOP_TIMEOUT`].
    pub async fn stop_daemon_on(
        &self,
        host: NodeId,
        origin: OriginHash,
    ) -> Result<(), DaemonCallError> {
        if host == self.node_id() {
            return self.stop_daemon(origin).await.map(|_| ());
        }
        self.daemon_registry()
            .client()
            .stop(host, origin, REMOTE_STOP_TIMEOUT)
            .await
            .map_err(DaemonCallError::Remote)
    }
}
