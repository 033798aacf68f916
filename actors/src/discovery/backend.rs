//! The generic backend actor: drives any [`DiscoveryBackend`] and reports to the
//! coordinator.
//!
//! `pre_start` calls [`DiscoveryBackend::start`] (an error fails the start, and the
//! supervisor retries with backoff). Then the actor polls: each `Poll` message awaits
//! [`DiscoveryBackend::next_event`] for at most [`POLL_WAIT`], reports what it got through
//! the [`DiscoveryHandle`], publishes the backend's status and queues the next `Poll`, so a
//! stop request waits at most one `POLL_WAIT`. `post_stop` calls
//! [`DiscoveryBackend::stop`] (where goodbyes are sent). A killed actor skips `post_stop`;
//! dropping the backend must release what it holds.

use std::marker::PhantomData;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tracing::{debug, warn};

use super::{DiscoveryBackend, DiscoveryHandle};

/// Longest one `next_event` call is awaited before the actor serves its mailbox.
pub const POLL_WAIT: Duration = Duration::from_millis(250);

/// Startup inputs of a backend actor. Built afresh for every incarnation.
#[derive(Debug)]
pub struct BackendArgs<B> {
    /// The backend to drive.
    pub backend: B,
    /// Where reports and status go.
    pub discovery: DiscoveryHandle,
}

/// Messages a backend actor handles.
#[derive(Debug)]
pub enum BackendMsg {
    /// Wait (bounded) for the backend's next event.
    Poll,
}

/// An actor driving backend `B`.
pub struct BackendActor<B>(PhantomData<fn() -> B>);

impl<B> BackendActor<B> {
    /// The actor.
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<B> Default for BackendActor<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> std::fmt::Debug for BackendActor<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BackendActor")
    }
}

/// A backend actor's state.
#[derive(Debug)]
pub struct BackendState<B> {
    backend: B,
    discovery: DiscoveryHandle,
    finished: bool,
}

impl<B: DiscoveryBackend> Actor for BackendActor<B> {
    type Msg = BackendMsg;
    type State = BackendState<B>;
    type Arguments = BackendArgs<B>;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let BackendArgs {
            mut backend,
            discovery,
        } = args;
        if let Err(e) = backend.start().await {
            warn!(backend = backend.name(), error = %e, "discovery backend did not start");
            let mut status = backend.status();
            status.running = false;
            discovery.publish_status(&myself.get_cell(), status);
            return Err(e.into());
        }
        let state = BackendState {
            backend,
            discovery,
            finished: false,
        };
        state.publish(&myself);
        myself.send_message(BackendMsg::Poll)?;
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            BackendMsg::Poll if !state.finished => {
                match tokio::time::timeout(POLL_WAIT, state.backend.next_event()).await {
                    Ok(Some(event)) => {
                        state.discovery.report(event);
                    }
                    Ok(None) => {
                        debug!(
                            backend = state.backend.name(),
                            "backend has nothing more to report"
                        );
                        state.finished = true;
                    }
                    Err(_) => {}
                }
                state.publish(&myself);
                if !state.finished {
                    myself.send_message(BackendMsg::Poll)?;
                }
            }
            BackendMsg::Poll => {}
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.backend.stop().await;
        let mut status = state.backend.status();
        status.running = false;
        state.discovery.publish_status(&myself.get_cell(), status);
        Ok(())
    }
}

impl<B: DiscoveryBackend> BackendState<B> {
    fn publish(&self, myself: &ActorRef<BackendMsg>) {
        self.discovery
            .publish_status(&myself.get_cell(), self.backend.status());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use netrun_messages::Identity;

    use super::*;
    use crate::discovery::coordinator::{CoordinatorActor, CoordinatorArgs, CoordinatorConfig};
    use crate::discovery::{
        BackendStatus, DiscoveredPeer, DiscoveryError, DiscoveryEvent, DiscoverySource,
    };
    use crate::wire::Wire;

    /// Reports one peer twice (the second time with a mismatched id), then nothing more;
    /// records its lifecycle calls.
    struct Fake {
        calls: Arc<Mutex<Vec<&'static str>>>,
        queue: Vec<DiscoveryEvent>,
        fail_start: bool,
    }

    impl DiscoveryBackend for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }

        async fn start(&mut self) -> Result<(), DiscoveryError> {
            self.calls.lock().expect("lock").push("start");
            if self.fail_start {
                return Err(DiscoveryError::Config {
                    backend: "fake",
                    reason: "no".into(),
                });
            }
            Ok(())
        }

        async fn next_event(&mut self) -> Option<DiscoveryEvent> {
            self.queue.pop()
        }

        async fn stop(&mut self) {
            self.calls.lock().expect("lock").push("stop");
        }

        fn status(&self) -> BackendStatus {
            BackendStatus {
                name: "fake".into(),
                running: true,
                found: 2 - self.queue.len() as u64,
                errors: 0,
                detail: String::new(),
            }
        }
    }

    #[tokio::test]
    async fn a_backend_reports_through_the_coordinator_and_stops_cleanly() {
        let local = Identity::from_seed([9; 32]);
        let discovery = DiscoveryHandle::new();
        let wire = Wire::new(local.node_id());
        let (coordinator, _) = Actor::spawn(
            None,
            CoordinatorActor,
            CoordinatorArgs {
                discovery: discovery.clone(),
                wire,
                config: CoordinatorConfig::default(),
            },
        )
        .await
        .expect("coordinator starts");
        let entity = Identity::from_seed([1; 32]).entity_id();
        let peer = DiscoveredPeer {
            node: entity.node_id(),
            entity,
            addrs: vec!["127.0.0.1:9".parse().expect("addr")],
            source: DiscoverySource::Mdns,
        };
        let mut forged = peer.clone();
        forged.node = netrun_messages::NodeId(1);
        let calls = Arc::new(Mutex::new(Vec::new()));
        let fake = Fake {
            calls: Arc::clone(&calls),
            queue: vec![
                DiscoveryEvent::Found(forged),
                DiscoveryEvent::Found(peer.clone()),
            ],
            fail_start: false,
        };
        let (backend, handle) = Actor::spawn(
            None,
            BackendActor::<Fake>::new(),
            BackendArgs {
                backend: fake,
                discovery: discovery.clone(),
            },
        )
        .await
        .expect("backend starts");
        let mut found = Vec::new();
        for _ in 0..200 {
            found = discovery.peers().await;
            if !found.is_empty() && discovery.backends()[0].found == 2 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].node, peer.node);
        assert_eq!(found[0].source, DiscoverySource::Mdns);
        let stats = discovery.status().await.coordinator.expect("running");
        assert_eq!(stats.table.mismatched, 1);
        assert!(discovery.backends()[0].running);

        backend.stop(None);
        handle.await.expect("stopped");
        assert_eq!(*calls.lock().expect("lock"), vec!["start", "stop"]);
        assert!(!discovery.backends()[0].running, "shown stopped");

        let failing = Fake {
            calls: Arc::clone(&calls),
            queue: Vec::new(),
            fail_start: true,
        };
        let spawned = Actor::spawn(
            None,
            BackendActor::<Fake>::new(),
            BackendArgs {
                backend: failing,
                discovery: discovery.clone(),
            },
        )
        .await;
        assert!(spawned.is_err(), "a failed start fails the actor's start");
        coordinator.stop(None);
    }
}
