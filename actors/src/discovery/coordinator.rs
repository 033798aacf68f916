//! The discovery coordinator: one table of discovered peers, fed by every backend, feeding
//! the session layer.
//!
//! ```text
//!  backends ──DiscoveryHandle::report──▶ Report(event) ─▶ PeerTable::on_found / on_lost
//!  Wire::subscribe ─▶ Peer(Up/Down) ─────────────────────▶ PeerTable::on_up / on_down
//!  Tick (250 ms) / any change ─▶ PeerTable::next_connects(budget)
//!        └─▶ task: Sessions.Connect{addr, key} ─▶ Connected{node, result} ─▶ on_connect_result
//! ```
//!
//! The budget bounds both concurrency (`max_connecting` handshakes in flight) and fan-out
//! (no automatic connect once the node has `auto_connect_limit` sessions). Connects go to
//! the Sessions actor through the wire's pointer to its current incarnation. A coordinator
//! restart forgets the table; backends re-report (bootstrap re-announces its seeds, peer
//! exchange repeats on its interval) and sessions that are up are re-read from the wire.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use netrun_messages::NodeId;
use ractor::rpc::CallResult;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tracing::{debug, info};

use super::table::{ConnectTo, Found, PeerTable, TableConfig, TableStats};
use super::{DiscoveryEvent, DiscoveryHandle, FoundPeer};
use crate::events::PeerEvent;
use crate::pump::{self, Tasks};
use crate::sessions::SessionsMsg;
use crate::wire::Wire;

/// How often due connects are checked.
const TICK: Duration = Duration::from_millis(250);

/// Coordinator limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoordinatorConfig {
    /// The table's size and backoff.
    pub table: TableConfig,
    /// No automatic connect once this many sessions are up (a large mesh is reached
    /// through relays and the DHT, not by a session with everyone).
    pub auto_connect_limit: usize,
    /// Handshakes the coordinator has in flight at once.
    pub max_connecting: usize,
    /// Longest the coordinator waits for one connect (the handshake gives up sooner).
    pub connect_timeout: Duration,
}

impl Default for CoordinatorConfig {
    fn default() -> Self {
        Self {
            table: TableConfig::default(),
            auto_connect_limit: 64,
            max_connecting: 4,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// The coordinator's counters (`netrun discovery`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoordinatorStats {
    /// Peers in the table.
    pub peers: usize,
    /// Of those, with a session up.
    pub connected: usize,
    /// Connects in flight.
    pub connecting: usize,
    /// The table's counters.
    pub table: TableStats,
    /// Reports dropped before reaching the coordinator (queue full or not running).
    pub dropped_reports: u64,
}

/// Startup inputs of the coordinator.
#[derive(Debug, Clone)]
pub struct CoordinatorArgs {
    /// The handle backends report through (the coordinator attaches itself to it).
    pub discovery: DiscoveryHandle,
    /// The shared data path: session events and the Sessions actor.
    pub wire: Arc<Wire>,
    /// Limits.
    pub config: CoordinatorConfig,
}

/// Messages the coordinator handles.
#[derive(Debug)]
pub enum CoordinatorMsg {
    /// A backend's report (sent by [`DiscoveryHandle::report`]).
    Report(DiscoveryEvent),
    /// A session event.
    Peer(PeerEvent),
    /// Session events were missed: re-read the sessions from the wire.
    Resync,
    /// A connect finished.
    Connected {
        /// The peer.
        node: NodeId,
        /// `Err` with the reason if it failed.
        result: Result<(), String>,
    },
    /// Periodic connect scheduling.
    Tick,
    /// Every discovered peer.
    Peers(RpcReplyPort<Vec<FoundPeer>>),
    /// The counters.
    Stats(RpcReplyPort<CoordinatorStats>),
}

/// The coordinator actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoordinatorActor;

/// The coordinator's state.
#[derive(Debug)]
pub struct CoordinatorState {
    args: CoordinatorArgs,
    table: PeerTable,
    connects: HashMap<NodeId, AbortHandle>,
    _tasks: Tasks,
}

impl Actor for CoordinatorActor {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let table = PeerTable::new(args.wire.local(), args.config.table);
        let events = pump::peer_events(
            &args.wire,
            myself.clone(),
            CoordinatorMsg::Peer,
            Some(|| CoordinatorMsg::Resync),
        );
        let tick = myself.send_interval(TICK, || CoordinatorMsg::Tick);
        let mut state = CoordinatorState {
            args,
            table,
            connects: HashMap::new(),
            _tasks: Tasks::new([events, tick]),
        };
        state.resync();
        state
            .args
            .discovery
            .attach_coordinator(Some(myself.clone()));
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let now = Instant::now().into_std();
        match message {
            CoordinatorMsg::Report(event) => {
                state.args.discovery.report_taken();
                state.on_report(now, event);
            }
            CoordinatorMsg::Peer(PeerEvent::Up { node, addr }) => {
                if let Some(keys) = state.args.wire.peer(node) {
                    state.table.on_up(now, node, keys.entity, addr);
                }
            }
            CoordinatorMsg::Peer(PeerEvent::Down { node }) => {
                if state.args.wire.peer(node).is_none() {
                    state.table.on_down(now, node);
                }
            }
            CoordinatorMsg::Peer(_) => return Ok(()),
            CoordinatorMsg::Resync => state.resync(),
            CoordinatorMsg::Connected { node, result } => {
                state.connects.remove(&node);
                if let Err(e) = &result {
                    debug!(peer = %node, error = %e, "discovered peer did not connect");
                }
                state.table.on_connect_result(now, node, result);
            }
            CoordinatorMsg::Tick => {}
            CoordinatorMsg::Peers(reply) => {
                let _ = reply.send(state.table.peers());
                return Ok(());
            }
            CoordinatorMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
                return Ok(());
            }
        }
        state.start_connects(&myself, now);
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.args.discovery.detach_coordinator(&myself);
        for (_, connect) in state.connects.drain() {
            connect.abort();
        }
        Ok(())
    }
}

impl CoordinatorState {
    fn on_report(&mut self, now: std::time::Instant, event: DiscoveryEvent) {
        match event {
            DiscoveryEvent::Found(peer) => {
                let outcome = self.table.on_found(now, &peer);
                match outcome {
                    Found::New => {
                        debug!(peer = %peer.node, source = %peer.source, "peer discovered")
                    }
                    Found::Mismatch => {
                        info!(claimed = %peer.node, source = %peer.source, "discovered entry's node id does not match its key; dropped")
                    }
                    _ => {}
                }
            }
            DiscoveryEvent::Lost { node, source } => {
                self.table.on_lost(node, source);
            }
        }
    }

    /// Marks every session on the wire as up (and every entry without one as down).
    fn resync(&mut self) {
        let now = Instant::now().into_std();
        let up: Vec<_> = self.args.wire.peers();
        for keys in &up {
            self.table.on_up(now, keys.node, keys.entity, keys.addr);
        }
        let stale: Vec<NodeId> = self
            .table
            .peers()
            .into_iter()
            .filter(|p| p.connected && self.args.wire.peer(p.node).is_none())
            .map(|p| p.node)
            .collect();
        for node in stale {
            self.table.on_down(now, node);
        }
    }

    fn start_connects(&mut self, myself: &ActorRef<CoordinatorMsg>, now: std::time::Instant) {
        let config = self.args.config;
        let in_flight = self.connects.len();
        let sessions_up = self.args.wire.session_count();
        let budget = config.max_connecting.saturating_sub(in_flight).min(
            config
                .auto_connect_limit
                .saturating_sub(sessions_up + in_flight),
        );
        if budget == 0 || self.table.next_due().is_none_or(|due| due > now) {
            return;
        }
        let Some(sessions) = self.args.wire.sessions() else {
            return;
        };
        for to in self.table.next_connects(now, budget) {
            let task = spawn_connect(
                (*sessions).clone(),
                myself.clone(),
                to,
                config.connect_timeout,
            );
            self.connects.insert(to.node, task);
        }
    }

    fn stats(&self) -> CoordinatorStats {
        let peers = self.table.peers();
        CoordinatorStats {
            peers: peers.len(),
            connected: peers.iter().filter(|p| p.connected).count(),
            connecting: self.connects.len(),
            table: self.table.stats(),
            dropped_reports: self.args.discovery.dropped_reports(),
        }
    }
}

fn spawn_connect(
    sessions: ActorRef<SessionsMsg>,
    coordinator: ActorRef<CoordinatorMsg>,
    to: ConnectTo,
    timeout: Duration,
) -> AbortHandle {
    let task = tokio::spawn(async move {
        let connect = |reply| SessionsMsg::Connect {
            addr: to.addr,
            peer: to.entity,
            reply,
        };
        let result = match sessions.call(connect, Some(timeout)).await {
            Ok(CallResult::Success(Ok(_))) => Ok(()),
            Ok(CallResult::Success(Err(e))) => Err(e.to_string()),
            Ok(CallResult::Timeout) => Err(format!("no session within {timeout:?}")),
            _ => Err("the session layer is restarting".to_string()),
        };
        let _ = coordinator.send_message(CoordinatorMsg::Connected {
            node: to.node,
            result,
        });
    });
    task.abort_handle()
}
