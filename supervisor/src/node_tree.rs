//! The supervision tree of one netrun node (ARCHITECTURE.md):
//!
//! ```text
//! root            one_for_one
//! ├── transport   one_for_all: udp_transport, router
//! ├── sessions    one_for_one: sessions (its Session{peer} actors are its linked children)
//! ├── discovery   one_for_one: coordinator, bootstrap, peer_exchange, dht, pingwave, further backends
//! ├── state       one_for_one: capability_fold (later: folds, logs, replication)
//! ├── channels    one_for_one: membership, then channel/<name> per published channel
//!                               (dynamic: `Node::register_channel` adds them)
//! ├── blobs       one_for_one   (blob adapters)
//! ├── daemons     one_for_one   (daemon_control, then one daemon/<origin> per daemon; see
//! │                              [`daemons_config`])
//! ├── services    one_for_one: rpc (the nRPC actor; its handler registry outlives it)
//! └── control     the local control socket, when the node serves one
//! ```
//!
//! Subtrees that later subsystems fill start empty and take dynamic children. Callers hold
//! [`ChildRef`]s, which follow the current incarnation across restarts.
//!
//! Each discovery backend is its own child of `discovery`, so a crashed backend is
//! restarted alone; backends reach the coordinator (and the node reaches the DHT) through
//! the [`DiscoveryHandle`], which follows their current incarnations.
//!
//! Session actors are linked to the Sessions actor rather than added to the generic
//! supervisor: a session is never restarted from its arguments (its keys come from a
//! handshake that cannot be replayed), so its "restart" is a new handshake that the
//! Sessions actor drives for static peers, and only the Sessions actor can withdraw a
//! crashed session's keys from the data path.

use std::sync::Arc;

use netrun_actors::capability::{CapabilityActor, CapabilityArgs, CapabilityHandle, CapabilityMsg};
use netrun_actors::channel::{ChannelsHandle, MembershipActor, MembershipMsg};
use netrun_actors::control::{ControlActor, ControlArgs, ControlMsg, ControlService};
use netrun_actors::discovery::backend::{BackendActor, BackendArgs};
use netrun_actors::discovery::bootstrap::Bootstrap;
use netrun_actors::discovery::coordinator::{CoordinatorActor, CoordinatorArgs, CoordinatorConfig};
use netrun_actors::discovery::kademlia::{KademliaActor, KademliaArgs, KademliaSettings};
use netrun_actors::discovery::peer_exchange::{
    PeerExchangeActor, PeerExchangeArgs, PeerExchangeSettings,
};
use netrun_actors::discovery::{DiscoveryBackend, DiscoveryHandle};
use netrun_actors::pingwave::{PingwaveActor, PingwaveArgs, PingwaveHandle, PingwaveMsg};
use netrun_actors::router::{RouterActor, RouterArgs, RouterMsg};
use netrun_actors::rpc::{RpcActor, RpcArgs, RpcMsg, RpcShared};
use netrun_actors::sessions::{SessionsActor, SessionsArgs, SessionsMsg};
use netrun_actors::transport::{Received, TransportArgs, TransportMsg, UdpTransport};
use netrun_actors::wire::Wire;
use netrun_messages::{EntityId, Identity};
use netrun_runtime::liveness::LivenessConfig;
use netrun_runtime::pingwave::PingwaveConfig;
use netrun_runtime::routing::RoutingConfig;
use ractor::SpawnErr;
use tokio::sync::mpsc;
use zeroize::Zeroizing;

use crate::{ChildRef, ChildSpec, Strategy, SupervisorArgs, SupervisorConfig, SupervisorHandle};

/// What the node tree needs to start.
pub struct NodeTreeArgs {
    /// This node's identity.
    pub identity: Arc<Identity>,
    /// The mesh PSK.
    pub psk: Arc<Zeroizing<[u8; 32]>>,
    /// The shared data path.
    pub wire: Arc<Wire>,
    /// UDP bind address.
    pub bind: std::net::SocketAddr,
    /// Bind an ephemeral port if `bind`'s port is taken.
    pub bind_fallback: bool,
    /// Where application datagrams go.
    pub inbound: mpsc::Sender<Received>,
    /// Liveness timing of every session.
    pub liveness: LivenessConfig,
    /// Peers to keep connected.
    pub static_peers: Vec<(std::net::SocketAddr, EntityId)>,
    /// The control socket and its service, if the node serves one.
    pub control: Option<(std::path::PathBuf, ControlService)>,
    /// The nRPC handler registry and configuration (shared by every incarnation).
    pub rpc: Arc<RpcShared>,
    /// Routing table limits.
    pub routing: RoutingConfig,
    /// Pingwave timing and radius; `None` runs no pingwave actor.
    pub pingwave: Option<PingwaveConfig>,
    /// The discovery subtree.
    pub discovery: DiscoveryTreeArgs,
    /// The capability fold's state (index, announcer), shared with the node.
    pub capabilities: CapabilityHandle,
    /// Channel state (published channels, authenticator), shared with the node.
    pub channels: ChannelsHandle,
}

/// What the discovery subtree runs.
#[derive(Debug)]
pub struct DiscoveryTreeArgs {
    /// The handle backends report through and the node asks through.
    pub handle: DiscoveryHandle,
    /// Coordinator limits.
    pub coordinator: CoordinatorConfig,
    /// Seed peers for the bootstrap backend (no bootstrap child when empty).
    pub seeds: Vec<(std::net::SocketAddr, EntityId)>,
    /// How often the bootstrap backend re-reports its seeds.
    pub reannounce: std::time::Duration,
    /// Peer exchange, if enabled.
    pub peer_exchange: Option<PeerExchangeSettings>,
    /// The Kademlia DHT, if enabled.
    pub dht: Option<KademliaSettings>,
    /// Further backend children (mDNS, MQTT, …), e.g. built with [`backend_spec`]; started
    /// after the ones above.
    pub backends: Vec<ChildSpec>,
}

impl DiscoveryTreeArgs {
    /// A coordinator and nothing else: peers are found only when sessions come up.
    pub fn manual(handle: DiscoveryHandle) -> Self {
        Self {
            handle,
            coordinator: CoordinatorConfig::default(),
            seeds: Vec::new(),
            reannounce: netrun_actors::discovery::bootstrap::DEFAULT_REANNOUNCE,
            peer_exchange: None,
            dht: None,
            backends: Vec::new(),
        }
    }
}

/// A child that drives backend `B` (built by `make` for every incarnation) in a generic
/// backend actor reporting to `discovery`.
pub fn backend_spec<B, F>(id: impl Into<String>, discovery: DiscoveryHandle, make: F) -> ChildSpec
where
    B: DiscoveryBackend,
    F: Fn() -> B + Send + Sync + 'static,
{
    ChildSpec::actor(id, move || {
        (
            BackendActor::<B>::new(),
            BackendArgs {
                backend: make(),
                discovery: discovery.clone(),
            },
        )
    })
}

impl std::fmt::Debug for NodeTreeArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTreeArgs")
            .field("bind", &self.bind)
            .finish_non_exhaustive()
    }
}

/// A running node tree.
#[derive(Debug, Clone)]
pub struct NodeTree {
    /// The root supervisor.
    pub root: SupervisorHandle,
    /// The UDP transport, whatever its incarnation.
    pub transport: ChildRef<TransportMsg>,
    /// The Sessions actor, whatever its incarnation.
    pub sessions: ChildRef<SessionsMsg>,
    /// The router, whatever its incarnation.
    pub router: ChildRef<RouterMsg>,
    /// The pingwave actor, if enabled, and the view it publishes (nodes heard, counters).
    pub pingwave: Option<(ChildRef<PingwaveMsg>, PingwaveHandle)>,
    /// The control actor, if any.
    pub control: Option<ChildRef<ControlMsg>>,
    /// The capability fold actor.
    pub capability_fold: ChildRef<CapabilityMsg>,
    /// The channel membership actor.
    pub membership: ChildRef<MembershipMsg>,
    /// The nRPC actor, whatever its incarnation.
    pub rpc: ChildRef<RpcMsg>,
}

/// Builds and starts the node tree. Children start in order; if one fails to start, the
/// ones already started are stopped in reverse order and the error is returned.
pub async fn spawn(args: NodeTreeArgs) -> Result<NodeTree, SpawnErr> {
    let transport_spec = {
        let wire = Arc::clone(&args.wire);
        let inbound = args.inbound.clone();
        let (bind, fallback) = (args.bind, args.bind_fallback);
        ChildSpec::actor("udp_transport", move || {
            let args = TransportArgs {
                bind,
                fallback_to_ephemeral: fallback,
                wire: Arc::clone(&wire),
                inbound: inbound.clone(),
            };
            (UdpTransport, args)
        })
    };
    let sessions_spec = {
        let wire = Arc::clone(&args.wire);
        let identity = Arc::clone(&args.identity);
        let psk = Arc::clone(&args.psk);
        let liveness = args.liveness;
        let peers = args.static_peers.clone();
        ChildSpec::actor("sessions", move || {
            let args = SessionsArgs {
                wire: Arc::clone(&wire),
                identity: Arc::clone(&identity),
                psk: Arc::clone(&psk),
                liveness,
                static_peers: peers.clone(),
            };
            (SessionsActor, args)
        })
    };
    let router_spec = {
        let wire = Arc::clone(&args.wire);
        let config = args.routing;
        ChildSpec::actor("router", move || {
            let args = RouterArgs {
                wire: Arc::clone(&wire),
                config,
            };
            (RouterActor, args)
        })
    };
    let pingwave_spec = args.pingwave.map(|config| {
        let wire = Arc::clone(&args.wire);
        let handle = PingwaveHandle::new();
        let view = handle.clone();
        let spec = ChildSpec::actor("pingwave", move || {
            let args = PingwaveArgs {
                wire: Arc::clone(&wire),
                config,
                handle: view.clone(),
            };
            (PingwaveActor, args)
        });
        (spec, handle)
    });
    let transport = transport_spec.child_ref::<TransportMsg>();
    let sessions = sessions_spec.child_ref::<SessionsMsg>();
    let router = router_spec.child_ref::<RouterMsg>();
    let pingwave = pingwave_spec
        .as_ref()
        .map(|(spec, handle)| (spec.child_ref::<PingwaveMsg>(), handle.clone()));
    let capability_fold_spec = {
        let fold = CapabilityArgs {
            wire: Arc::clone(&args.wire),
            handle: args.capabilities.clone(),
        };
        ChildSpec::actor("capability_fold", move || (CapabilityActor, fold.clone()))
    };
    let membership_spec = {
        let membership = args.channels.membership_args();
        ChildSpec::actor("membership", move || (MembershipActor, membership.clone()))
    };
    let rpc_spec = {
        let rpc = RpcArgs {
            wire: Arc::clone(&args.wire),
            shared: Arc::clone(&args.rpc),
        };
        ChildSpec::actor("rpc", move || (RpcActor, rpc.clone()))
    };
    let capability_fold = capability_fold_spec.child_ref::<CapabilityMsg>();
    let membership = membership_spec.child_ref::<MembershipMsg>();
    let rpc = rpc_spec.child_ref::<RpcMsg>();
    let mut discovery = discovery_subtree(&args);
    if let Some((spec, _)) = pingwave_spec {
        discovery = discovery.child(spec);
    }

    // `channels` and `daemons` also take dynamic children at run time.
    let mut root = one_for_one("root")
        .child(ChildSpec::supervisor(
            "transport",
            SupervisorArgs::new(
                "transport",
                SupervisorConfig::with_strategy(Strategy::OneForAll),
            )
            .child(transport_spec)
            .child(router_spec),
        ))
        .child(ChildSpec::supervisor(
            "sessions",
            one_for_one("sessions").child(sessions_spec),
        ))
        .child(ChildSpec::supervisor("discovery", discovery))
        .child(ChildSpec::supervisor(
            "state",
            one_for_one("state").child(capability_fold_spec),
        ))
        .child(ChildSpec::supervisor(
            "channels",
            one_for_one("channels").child(membership_spec),
        ))
        .child(ChildSpec::supervisor("blobs", one_for_one("blobs")))
        .child(ChildSpec::supervisor(
            "daemons",
            SupervisorArgs::new("daemons", daemons_config()),
        ))
        .child(ChildSpec::supervisor(
            "services",
            one_for_one("services").child(rpc_spec),
        ));
    let control = match args.control {
        Some((path, service)) => {
            let spec = ChildSpec::actor("control", move || {
                (
                    ControlActor,
                    ControlArgs {
                        path: path.clone(),
                        service: Arc::clone(&service),
                    },
                )
            });
            let child = spec.child_ref::<ControlMsg>();
            root = root.child(spec);
            Some(child)
        }
        None => None,
    };
    let (root, _join) = crate::spawn(root).await?;
    Ok(NodeTree {
        root,
        transport,
        sessions,
        router,
        pingwave,
        control,
        capability_fold,
        membership,
        rpc,
    })
}

/// Policy of the daemons subtree: one_for_one with the default backoff (doubling to 60 s)
/// and crash-loop gate (the sixth crash within 60 s gates restarts) per daemon, and a
/// restart intensity high enough that only those per-daemon policies ever apply. The
/// subtree's children are added at run time and would be lost if it escalated and
/// restarted, so its intensity allows every daemon of a full node to crash as often as its
/// gate lets it within one period (the gate admits at most six crashes per window, five
/// restarted and the sixth gated, and a few more around a cooldown's end: eight).
pub fn daemons_config() -> SupervisorConfig {
    let per_daemon = 8;
    SupervisorConfig {
        intensity: crate::RestartIntensity {
            max_restarts: u32::try_from(netrun_actors::daemon::MAX_DAEMONS * per_daemon)
                .unwrap_or(u32::MAX),
            ..crate::RestartIntensity::default()
        },
        ..SupervisorConfig::with_strategy(Strategy::OneForOne)
    }
}

/// An empty one_for_one supervisor named `name`.
fn one_for_one(name: &str) -> SupervisorArgs {
    SupervisorArgs::new(name, SupervisorConfig::with_strategy(Strategy::OneForOne))
}

/// The discovery subtree: the coordinator first (backends report to it), then one child
/// per backend, one_for_one.
fn discovery_subtree(args: &NodeTreeArgs) -> SupervisorArgs {
    let d = &args.discovery;
    let mut tree = one_for_one("discovery");
    let coordinator = CoordinatorArgs {
        discovery: d.handle.clone(),
        wire: Arc::clone(&args.wire),
        config: d.coordinator,
    };
    tree = tree.child(ChildSpec::actor("coordinator", move || {
        (CoordinatorActor, coordinator.clone())
    }));
    if !d.seeds.is_empty() {
        let (seeds, every) = (d.seeds.clone(), d.reannounce);
        tree = tree.child(backend_spec("bootstrap", d.handle.clone(), move || {
            Bootstrap::new(&seeds, every)
        }));
    }
    if let Some(settings) = d.peer_exchange {
        let px = PeerExchangeArgs {
            wire: Arc::clone(&args.wire),
            identity: Arc::clone(&args.identity),
            discovery: d.handle.clone(),
            settings,
        };
        tree = tree.child(ChildSpec::actor("peer_exchange", move || {
            (PeerExchangeActor, px.clone())
        }));
    }
    if let Some(settings) = &d.dht {
        let dht = KademliaArgs {
            wire: Arc::clone(&args.wire),
            identity: Arc::clone(&args.identity),
            discovery: d.handle.clone(),
            settings: settings.clone(),
        };
        tree = tree.child(ChildSpec::actor("dht", move || {
            (KademliaActor, dht.clone())
        }));
    }
    // A spec's clone shares its slot, so ChildRefs the caller took from it stay valid.
    for spec in &d.backends {
        tree = tree.child(spec.clone());
    }
    tree
}
