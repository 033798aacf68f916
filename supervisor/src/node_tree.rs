//! The supervision tree of one netrun node (ARCHITECTURE.md):
//!
//! ```text
//! root            one_for_one
//! ├── transport   one_for_all: udp_transport, router
//! ├── sessions    one_for_one: sessions (its Session{peer} actors are its linked children)
//! ├── discovery   one_for_one: pingwave (when enabled), then further discovery backends
//! ├── state       one_for_one   (capability fold, folds, logs, replication)
//! ├── channels    one_for_one   (one actor per channel)
//! ├── blobs       one_for_one   (blob adapters)
//! ├── daemons     one_for_one   (daemon_control, then one daemon/<origin> per daemon; see
//! │                              [`daemons_config`])
//! └── control     the local control socket, when the node serves one
//! ```
//!
//! Subtrees that later subsystems fill start empty and take dynamic children. Callers hold
//! [`ChildRef`]s, which follow the current incarnation across restarts.
//!
//! Session actors are linked to the Sessions actor rather than added to the generic
//! supervisor: a session is never restarted from its arguments (its keys come from a
//! handshake that cannot be replayed), so its "restart" is a new handshake that the
//! Sessions actor drives for static peers, and only the Sessions actor can withdraw a
//! crashed session's keys from the data path.

use std::sync::Arc;

use netrun_actors::control::{ControlActor, ControlArgs, ControlMsg, ControlService};
use netrun_actors::pingwave::{PingwaveActor, PingwaveArgs, PingwaveHandle, PingwaveMsg};
use netrun_actors::router::{RouterActor, RouterArgs, RouterMsg};
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
    /// Routing table limits.
    pub routing: RoutingConfig,
    /// Pingwave timing and radius; `None` runs no pingwave actor.
    pub pingwave: Option<PingwaveConfig>,
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
}

/// Subtrees that start empty and are filled by later subsystems.
const EMPTY_SUBTREES: [&str; 4] = ["state", "channels", "blobs", "daemons"];

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
    let mut discovery = SupervisorArgs::new(
        "discovery",
        SupervisorConfig::with_strategy(Strategy::OneForOne),
    );
    if let Some((spec, _)) = pingwave_spec {
        discovery = discovery.child(spec);
    }

    let mut root =
        SupervisorArgs::new("root", SupervisorConfig::with_strategy(Strategy::OneForOne))
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
                SupervisorArgs::new(
                    "sessions",
                    SupervisorConfig::with_strategy(Strategy::OneForOne),
                )
                .child(sessions_spec),
            ))
            .child(ChildSpec::supervisor("discovery", discovery));
    for name in EMPTY_SUBTREES {
        let config = if name == "daemons" {
            daemons_config()
        } else {
            SupervisorConfig::with_strategy(Strategy::OneForOne)
        };
        root = root.child(ChildSpec::supervisor(
            name,
            SupervisorArgs::new(name, config),
        ));
    }
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
    })
}

/// Policy of the daemons subtree: one_for_one with the default backoff (doubling to 60 s)
/// and crash-loop gate (5 crashes in 60 s) per daemon, and a restart intensity high enough
/// that only those per-daemon policies ever apply. The subtree's children are added at run
/// time and would be lost if it escalated and restarted, so its intensity allows every
/// daemon of a full node to crash as often as its gate lets it within one period (the gate
/// admits at most five crashes per window, a few more around a cooldown's end: eight).
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
