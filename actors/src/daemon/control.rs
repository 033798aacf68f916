//! `DaemonControl`: serves the `DAEMON` subprotocol.
//!
//! Inbound envelopes arrive through a bounded queue (a full queue drops the newest,
//! counted by the wire) and are pumped to the actor in batches. Requests go to the node's
//! [`DaemonService`]; replies go to the [`DaemonClient`] waiting for them. A spawn or a
//! stop runs in its own task (it goes through the daemons supervisor, which may be busy
//! stopping this very actor; a stop waits out the daemon's grace period), bounded by
//! [`MAX_SPAWNS_IN_FLIGHT`]; its answer is remembered so that a re-sent request is answered
//! again instead of being carried out twice.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use netrun_messages::daemon::{
    CapabilityReply, DaemonControlMessage, SpawnRefusal, SpawnReply, SpawnRequest, SpawnResult,
    StopReply, StopResult,
};
use netrun_messages::{CapabilitySet, NodeId, OriginHash, Subprotocol};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, warn};

use super::client::{DaemonClient, Disposition};
use crate::pump::{self, Credit, Tasks};
use crate::wire::{Inbound, Wire};

/// Most remote spawns and stops served at once; more are refused as busy.
pub const MAX_SPAWNS_IN_FLIGHT: usize = 16;

/// The future of one remote spawn.
pub type SpawnFuture = Pin<Box<dyn Future<Output = SpawnResult> + Send>>;
/// The future of one remote stop.
pub type StopFuture = Pin<Box<dyn Future<Output = StopResult> + Send>>;

/// What the node does for daemon control requests from peers.
pub trait DaemonService: Send + Sync + 'static {
    /// Hosts the daemon `from` asked for and says how it went.
    fn spawn(&self, from: NodeId, request: SpawnRequest) -> SpawnFuture;
    /// Stops daemon `origin` if `from` placed it here.
    fn stop(&self, from: NodeId, origin: OriginHash) -> StopFuture;
    /// This node's capability set and its daemon load in per mille.
    fn capabilities(&self) -> (CapabilitySet, u16);
}

/// Startup inputs of the daemon control actor.
pub struct DaemonControlArgs {
    /// The shared data path.
    pub wire: Arc<Wire>,
    /// The node's side of the protocol.
    pub service: Arc<dyn DaemonService>,
    /// Where replies go, and the memory of served spawns (shared by every incarnation).
    pub client: DaemonClient,
}

/// The daemon control actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct DaemonControlActor;

/// Messages the daemon control actor handles.
#[derive(Debug)]
pub enum DaemonControlMsg {
    /// Envelopes from one pump batch; the credit, dropped once they are handled, lets the
    /// pump take the next batch.
    Inbound(Vec<Inbound>, Credit),
}

/// The daemon control actor's state.
pub struct DaemonControlState {
    wire: Arc<Wire>,
    service: Arc<dyn DaemonService>,
    client: DaemonClient,
    _pump: Tasks,
}

impl Actor for DaemonControlActor {
    type Msg = DaemonControlMsg;
    type State = DaemonControlState;
    type Arguments = DaemonControlArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: DaemonControlArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // One batch in flight (a full queue drops newest, counted in
        // `dropped_handler_full`).
        let pump = pump::serve_envelopes(
            &args.wire,
            Subprotocol::DAEMON,
            myself,
            1,
            DaemonControlMsg::Inbound,
        );
        Ok(DaemonControlState {
            wire: args.wire,
            service: args.service,
            client: args.client,
            _pump: Tasks::new([pump]),
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: DaemonControlMsg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            DaemonControlMsg::Inbound(batch, _credit) => {
                for inbound in batch {
                    state.on_inbound(inbound).await;
                }
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.wire.unserve(Subprotocol::DAEMON);
        Ok(())
    }
}

impl DaemonControlState {
    async fn on_inbound(&mut self, inbound: Inbound) {
        let peer = inbound.peer;
        let message = match DaemonControlMessage::decode(&inbound.body) {
            Ok(message) => message,
            Err(error) => {
                self.client.count_malformed();
                debug!(%peer, %error, "malformed daemon control message");
                return;
            }
        };
        match message {
            DaemonControlMessage::Spawn(request) => {
                let request_id = request.request_id;
                let run = self.service.spawn(peer, request);
                let busy = move || {
                    Some(DaemonControlMessage::SpawnReply(SpawnReply {
                        request_id,
                        result: SpawnResult::Refused(SpawnRefusal::failed(
                            "too many remote daemon requests in flight",
                        )),
                    }))
                };
                self.serve_request(peer, request_id, busy, async move {
                    let result = run.await;
                    DaemonControlMessage::SpawnReply(SpawnReply { request_id, result })
                })
                .await;
            }
            DaemonControlMessage::Stop(request) => {
                let request_id = request.request_id;
                let run = self.service.stop(peer, request.origin);
                // Busy: no answer; the requester re-sends within its timeout.
                self.serve_request(peer, request_id, || None, async move {
                    let result = run.await;
                    DaemonControlMessage::StopReply(StopReply { request_id, result })
                })
                .await;
            }
            DaemonControlMessage::Query(query) => {
                let (capabilities, load_permille) = self.service.capabilities();
                let reply = DaemonControlMessage::QueryReply(CapabilityReply {
                    request_id: query.request_id,
                    capabilities,
                    load_permille: load_permille.min(1000),
                });
                send(&self.wire, peer, &reply).await;
            }
            reply @ (DaemonControlMessage::SpawnReply(_)
            | DaemonControlMessage::StopReply(_)
            | DaemonControlMessage::QueryReply(_)) => {
                self.client.complete(peer, reply);
            }
        }
    }

    /// Carries out a spawn or stop request once: in its own task, answering a repeat
    /// from the remembered reply (or not at all while the first is in flight). When too
    /// many are in flight, `busy` builds the answer (if there is one).
    async fn serve_request(
        &mut self,
        peer: NodeId,
        request_id: u64,
        busy: impl FnOnce() -> Option<DaemonControlMessage>,
        run: impl Future<Output = DaemonControlMessage> + Send + 'static,
    ) {
        let key = (peer, request_id);
        match self.client.begin_request(key, MAX_SPAWNS_IN_FLIGHT) {
            Some(Disposition::InFlight) => {}
            Some(Disposition::Answered(reply)) => send(&self.wire, peer, &reply).await,
            None => {
                if let Some(busy) = busy() {
                    send(&self.wire, peer, &busy).await;
                }
            }
            Some(Disposition::Start) => {
                let client = self.client.clone();
                tokio::spawn(async move {
                    let reply = run.await;
                    client.finish_request(key, reply.clone());
                    send(client.wire(), peer, &reply).await;
                });
            }
        }
    }
}

async fn send(wire: &Wire, peer: NodeId, message: &DaemonControlMessage) {
    let body = match message.encode() {
        Ok(body) => body,
        Err(error) => {
            warn!(%peer, %error, "daemon control reply does not encode");
            return;
        }
    };
    if let Err(error) = wire
        .send_envelope(peer, Subprotocol::DAEMON, None, &body)
        .await
    {
        debug!(%peer, %error, "daemon control reply not sent");
    }
}

impl std::fmt::Debug for DaemonControlState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonControlState").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for DaemonControlArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaemonControlArgs").finish_non_exhaustive()
    }
}
