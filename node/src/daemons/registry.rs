//! [`Daemons`]: the node's daemon kinds, its hosted daemons and their supervision.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use netrun_actors::capability::CapabilityHandle;
use netrun_actors::daemon::{
    DaemonArgs, DaemonClient, DaemonControlActor, DaemonControlArgs, DaemonHostActor, DaemonMsg,
    DaemonOptions, DaemonRecord, DaemonService, MAX_DAEMONS, OutputSink, SpawnFuture, StopFuture,
};
use netrun_actors::wire::Wire;
use netrun_messages::daemon::{
    MAX_LOAD_PERMILLE, SpawnRefusal, SpawnRequest, SpawnResult, StopResult,
};
use netrun_messages::{CapabilitySet, Identity, NodeId, OriginHash};
use netrun_runtime::daemon::{
    DaemonConfig, DaemonFactories, DaemonFactory, DaemonHost, DaemonSnapshot, FactoryError,
    HostConfig, Recovery,
};
use netrun_supervisor::{ChildRef, ChildSpec, Restart, SupervisorHandle};
use ractor::SpawnErr;
use tracing::{Instrument, info, info_span};

use super::placement::PlacementCandidates;
use super::wiring::Links;
use super::{DaemonHandle, DaemonSpawnError};
use crate::node::{Inner, Node};

/// Id of the daemons subtree under the root supervisor.
const SUBTREE: &str = "daemons";
/// Id of the daemon control actor in the daemons subtree.
const CONTROL_CHILD: &str = "daemon_control";
/// How long the supervisor waits for a daemon told to stop before killing it. A stop has
/// already waited out the daemon's grace period by then; this only covers the message the
/// actor is handling.
const FORCE_STOP_WAIT: Duration = Duration::from_secs(1);

/// The metadata key under which a node announces its daemon load (per mille of
/// [`MAX_DAEMONS`]); placement reads it from the capability index.
pub const LOAD_METADATA_KEY: &str = "netrun.daemon.load";

/// Which peers may place daemons on this node (`[daemons]` in the config,
/// `NodeBuilder::remote_spawns`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RemoteSpawns {
    /// Any session peer: mesh membership (PSK and handshake) is the authorization.
    #[default]
    AnyPeer,
    /// No peer: daemons run here only when spawned locally.
    Nobody,
    /// Only these nodes.
    Only(BTreeSet<NodeId>),
}

impl RemoteSpawns {
    /// Whether `peer` may place a daemon here.
    pub fn allows(&self, peer: NodeId) -> bool {
        match self {
            Self::AnyPeer => true,
            Self::Nobody => false,
            Self::Only(nodes) => nodes.contains(&peer),
        }
    }
}

/// The node's daemons (shared by the node handle, the control service and the handles).
pub(crate) struct Daemons {
    node: NodeId,
    /// Which peers may place daemons here.
    remote_spawns: RemoteSpawns,
    input_origin: OriginHash,
    /// The node's live capability set (announced; carries the daemon load).
    capabilities: CapabilityHandle,
    /// The node, once started (wiring a daemon serves and subscribes through it).
    node_slot: Arc<OnceLock<Weak<Inner>>>,
    root: SupervisorHandle,
    client: DaemonClient,
    factories: Mutex<DaemonFactories>,
    state: Mutex<State>,
    sink: Mutex<Option<Arc<dyn OutputSink>>>,
    candidates: Mutex<Option<Arc<dyn PlacementCandidates>>>,
    shutting_down: AtomicBool,
    me: Weak<Daemons>,
}

#[derive(Default)]
struct State {
    hosted: BTreeMap<OriginHash, Entry>,
    /// Origins being spawned (so two spawns of one identity cannot race).
    reserved: BTreeSet<OriginHash>,
}

/// One hosted daemon.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) record: Arc<DaemonRecord>,
    pub(crate) child: ChildRef<DaemonMsg>,
    /// The node that placed it here, if a peer did (only that peer may stop it remotely).
    pub(crate) placed_by: Option<NodeId>,
    /// Its served services and channel inputs; they end when the entry is dropped.
    pub(crate) links: Arc<Links>,
}

/// The control service the daemon control actor calls (holds the registry weakly, so the
/// supervision tree does not keep it alive).
struct Service(Weak<Daemons>);

impl Daemons {
    /// Creates the registry and adds the daemon control actor to the daemons subtree.
    pub(crate) async fn start(
        identity: &Identity,
        capabilities: CapabilityHandle,
        remote_spawns: RemoteSpawns,
        node_slot: Arc<OnceLock<Weak<Inner>>>,
        wire: &Arc<Wire>,
        root: &SupervisorHandle,
    ) -> Result<Arc<Self>, SpawnErr> {
        let client = DaemonClient::new(Arc::clone(wire));
        let daemons = Arc::new_cyclic(|me| Self {
            node: identity.node_id(),
            remote_spawns,
            input_origin: identity.origin_hash(),
            capabilities,
            node_slot,
            root: root.clone(),
            client: client.clone(),
            factories: Mutex::new(DaemonFactories::new()),
            state: Mutex::new(State::default()),
            sink: Mutex::new(None),
            candidates: Mutex::new(None),
            shutting_down: AtomicBool::new(false),
            me: me.clone(),
        });
        let service: Arc<dyn DaemonService> = Arc::new(Service(Arc::downgrade(&daemons)));
        let wire = Arc::clone(wire);
        let spec = ChildSpec::actor(CONTROL_CHILD, move || {
            let args = DaemonControlArgs {
                wire: Arc::clone(&wire),
                service: Arc::clone(&service),
                client: client.clone(),
            };
            (DaemonControlActor, args)
        });
        let startup = |e: netrun_supervisor::SupervisorError| SpawnErr::StartupFailed(Box::new(e));
        let subtree = root.child_supervisor(SUBTREE).await.map_err(startup)?;
        subtree.add_child(spec).await.map_err(startup)?;
        Ok(daemons)
    }

    /// This node's id.
    pub(crate) fn node(&self) -> NodeId {
        self.node
    }

    /// The client for remote daemon control requests.
    pub(crate) fn client(&self) -> &DaemonClient {
        &self.client
    }

    /// What this node offers now.
    pub(crate) fn capabilities(&self) -> CapabilitySet {
        self.capabilities.capabilities()
    }

    /// The node, once it has started and while it runs.
    fn node_handle(&self) -> Option<Node> {
        self.node_slot
            .get()
            .and_then(Weak::upgrade)
            .map(Node::from_inner)
    }

    /// Announces the daemon load (a change is announced within the announcer's minimum
    /// interval, so a burst of spawns is one announcement).
    fn announce_load(&self) {
        let load = self.load_permille().to_string();
        if let Err(error) = self
            .capabilities
            .set_metadata(LOAD_METADATA_KEY, Some(load))
        {
            tracing::warn!(%error, "daemon load not announced");
        }
    }

    /// Daemon slots in use, per mille of [`MAX_DAEMONS`].
    pub(crate) fn load_permille(&self) -> u16 {
        let hosted = self.lock_state().hosted.len();
        u16::try_from(hosted * usize::from(MAX_LOAD_PERMILLE) / MAX_DAEMONS)
            .unwrap_or(MAX_LOAD_PERMILLE)
            .min(MAX_LOAD_PERMILLE)
    }

    /// Refuses spawns from now on (the node is shutting down).
    pub(crate) fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub(crate) fn register(
        &self,
        kind: String,
        factory: DaemonFactory,
    ) -> Result<(), DaemonSpawnError> {
        lock(&self.factories)
            .register(kind, factory)
            .map_err(DaemonSpawnError::from)
    }

    pub(crate) fn has_kind(&self, kind: &str) -> bool {
        lock(&self.factories).contains(kind)
    }

    pub(crate) fn set_sink(&self, sink: Option<Arc<dyn OutputSink>>) {
        *lock(&self.sink) = sink;
    }

    pub(crate) fn set_candidates(&self, candidates: Option<Arc<dyn PlacementCandidates>>) {
        *lock(&self.candidates) = candidates;
    }

    pub(crate) fn candidates(&self) -> Option<Arc<dyn PlacementCandidates>> {
        lock(&self.candidates).clone()
    }

    /// The hosted daemon `origin`.
    pub(crate) fn entry(&self, origin: OriginHash) -> Option<Entry> {
        self.lock_state().hosted.get(&origin).cloned()
    }

    /// Every hosted daemon, by origin.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.lock_state().hosted.values().cloned().collect()
    }

    /// Whether `record` is still the hosted daemon of its origin (a handle to a daemon that
    /// was stopped, or stopped and spawned again, is stale).
    pub(crate) fn is_current(&self, record: &Arc<DaemonRecord>) -> bool {
        self.lock_state()
            .hosted
            .get(&record.origin())
            .is_some_and(|e| Arc::ptr_eq(&e.record, record))
    }

    /// The current daemons subtree supervisor.
    pub(crate) async fn subtree(&self) -> Result<SupervisorHandle, DaemonSpawnError> {
        self.root
            .child_supervisor(SUBTREE)
            .await
            .map_err(|_| DaemonSpawnError::NotReady)
    }

    /// Builds a daemon of `kind` from its factory (for a spawn, or to read requirements).
    pub(crate) fn build(
        &self,
        kind: &str,
        config: &DaemonConfig,
    ) -> Result<(DaemonFactory, Box<dyn netrun_runtime::daemon::MeshDaemon>), DaemonSpawnError>
    {
        let factories = lock(&self.factories).clone();
        let factory = factories
            .factory(kind)
            .cloned()
            .ok_or_else(|| DaemonSpawnError::FactoryNotFound(kind.to_owned()))?;
        let daemon = factories.build(kind, config)?;
        Ok((factory, daemon))
    }

    /// Spawns a daemon on this node: fresh from its factory, or restored from `snapshot`;
    /// `placed_by` is the peer that asked for it, if one did. Once it runs, its wiring is
    /// set up; if that fails the daemon is stopped again and the error returned.
    pub(crate) async fn spawn_local(
        &self,
        kind: &str,
        identity: Identity,
        config: DaemonConfig,
        options: DaemonOptions,
        snapshot: Option<DaemonSnapshot>,
        placed_by: Option<NodeId>,
    ) -> Result<DaemonHandle, DaemonSpawnError> {
        let origin = identity.origin_hash();
        let span = info_span!(
            "netrun.daemon.spawn",
            node = %self.node,
            kind,
            origin = %origin,
            restored = snapshot.is_some(),
        );
        async move {
            let wiring = options.wiring.clone();
            let mut result = self
                .spawn_inner(kind, identity, config, options, snapshot, placed_by)
                .await;
            if let Ok(handle) = &result {
                if let Err(error) = self.wire(handle, &wiring).await {
                    if let Some(entry) = self.entry(handle.origin_hash()) {
                        entry.record.begin_stop();
                        self.stop(&entry).await;
                    }
                    result = Err(error);
                }
            }
            match &result {
                Ok(_) => info!("daemon spawned"),
                Err(error) => info!(%error, "daemon spawn refused"),
            }
            result
        }
        .instrument(span)
        .await
    }

    async fn spawn_inner(
        &self,
        kind: &str,
        identity: Identity,
        config: DaemonConfig,
        options: DaemonOptions,
        snapshot: Option<DaemonSnapshot>,
        placed_by: Option<NodeId>,
    ) -> Result<DaemonHandle, DaemonSpawnError> {
        if self.is_shutting_down() {
            return Err(DaemonSpawnError::ShuttingDown);
        }
        options.host.validate().map_err(DaemonSpawnError::Config)?;
        if let Some(snapshot) = &snapshot {
            if snapshot.entity != identity.entity_id() {
                return Err(DaemonSpawnError::WrongIdentity);
            }
        }
        let origin = identity.origin_hash();
        let _reservation = self.reserve(origin)?;
        let (factory, daemon) = self.build(kind, &config)?;
        let host = match snapshot {
            None => DaemonHost::new(daemon, identity, options.host)?,
            Some(snapshot) => {
                let recovery = Recovery::from_snapshot(identity, options.host, snapshot);
                DaemonHost::restore(super::now(), daemon, recovery)
                    .map_err(|failure| DaemonSpawnError::Restore(failure.error))?
                    .0
            }
        };
        let sink = lock(&self.sink).clone();
        let record = DaemonRecord::new(
            kind.to_owned(),
            factory,
            config,
            options,
            host,
            self.input_origin,
            sink,
        );
        let spec = {
            let record = Arc::clone(&record);
            ChildSpec::actor(child_id(origin), move || {
                let args = DaemonArgs {
                    record: Arc::clone(&record),
                };
                (DaemonHostActor, args)
            })
            .restart(Restart::Transient)
            .shutdown(FORCE_STOP_WAIT)
        };
        let child = spec.child_ref::<DaemonMsg>();
        let entry = Entry {
            record: Arc::clone(&record),
            child: child.clone(),
            placed_by,
            links: Arc::new(Links::default()),
        };
        self.lock_state().hosted.insert(origin, entry);
        self.announce_load();
        // Started from a task of its own: the actor (and every span it opens) must not
        // become a child of the caller's span, which would then stay open for as long as
        // the daemon runs.
        let added = match self.subtree().await {
            Ok(subtree) => tokio::spawn(async move { subtree.add_child(spec).await })
                .await
                .map_err(|_| DaemonSpawnError::NotReady)
                .and_then(|added| added.map_err(DaemonSpawnError::Supervisor)),
            Err(error) => Err(error),
        };
        if let Err(error) = added {
            self.lock_state().hosted.remove(&origin);
            self.announce_load();
            return Err(error);
        }
        Ok(DaemonHandle::new(record, child, self.node, self.me.clone()))
    }

    /// Stops daemon `origin` (see `DaemonHandle::stop`) and forgets it.
    pub(crate) async fn stop(&self, entry: &Entry) -> Option<DaemonSnapshot> {
        let record = &entry.record;
        let grace = record.options().stop_grace;
        let asked = entry
            .child
            .call(|reply| DaemonMsg::Shutdown { grace, reply }, Some(grace))
            .await;
        let final_snapshot = asked.ok().flatten();
        // Removes the spec (no restart) and forces the stop if the daemon is still running.
        if let Ok(subtree) = self.subtree().await {
            let _ = subtree.remove_child(&child_id(record.origin())).await;
        }
        {
            let mut state = self.lock_state();
            if state
                .hosted
                .get(&record.origin())
                .is_some_and(|e| Arc::ptr_eq(&e.record, record))
            {
                state.hosted.remove(&record.origin());
            }
        }
        self.announce_load();
        if let Some(sink) = lock(&self.sink).as_ref() {
            sink.retire(record.origin());
        }
        info!(origin = %record.origin(), "daemon stopped");
        final_snapshot.or_else(|| record.last_snapshot())
    }

    /// Registers the daemon's output channel, serves its services and subscribes it to its
    /// input channels.
    async fn wire(
        &self,
        handle: &DaemonHandle,
        wiring: &netrun_messages::daemon::DaemonWiring,
    ) -> Result<(), DaemonSpawnError> {
        let node = self.node_handle().ok_or(DaemonSpawnError::NotReady)?;
        super::channels::register(&node, handle.origin_hash()).await;
        for service in &wiring.services {
            node.serve_daemon(handle.origin_hash(), service.name.as_str(), service.reply)
                .map_err(|e| DaemonSpawnError::Wiring(e.to_string()))?;
        }
        for input in &wiring.inputs {
            node.subscribe_daemon(handle.origin_hash(), input.publisher, &input.channel)
                .await
                .map_err(|e| DaemonSpawnError::Wiring(e.to_string()))?;
        }
        Ok(())
    }

    fn reserve(&self, origin: OriginHash) -> Result<Reservation<'_>, DaemonSpawnError> {
        let mut state = self.lock_state();
        if state.hosted.contains_key(&origin) || state.reserved.contains(&origin) {
            return Err(DaemonSpawnError::AlreadyRunning(origin));
        }
        if state.hosted.len() + state.reserved.len() >= MAX_DAEMONS {
            return Err(DaemonSpawnError::TooMany);
        }
        state.reserved.insert(origin);
        Ok(Reservation {
            daemons: self,
            origin,
        })
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

/// Holds an origin reserved while its spawn is in progress.
struct Reservation<'a> {
    daemons: &'a Daemons,
    origin: OriginHash,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.daemons.lock_state().reserved.remove(&self.origin);
    }
}

impl DaemonService for Service {
    fn spawn(&self, from: NodeId, request: SpawnRequest) -> SpawnFuture {
        let daemons = self.0.upgrade();
        Box::pin(async move {
            let Some(daemons) = daemons else {
                return SpawnResult::Refused(SpawnRefusal::ShuttingDown);
            };
            let span = info_span!("netrun.daemon.remote_spawn", from = %from, kind = %request.kind);
            async move {
                if !daemons.remote_spawns.allows(from) {
                    return SpawnResult::Refused(SpawnRefusal::NotPermitted);
                }
                if !daemons.has_kind(&request.kind) {
                    return SpawnResult::Refused(SpawnRefusal::FactoryNotFound);
                }
                let host = match HostConfig::from_wire(&request.host) {
                    Ok(host) => host,
                    Err(error) => return SpawnResult::Refused(SpawnRefusal::invalid(error)),
                };
                let config = match DaemonConfig::from_bytes(request.config.clone()) {
                    Ok(config) => config,
                    Err(error) => return SpawnResult::Refused(SpawnRefusal::invalid(error)),
                };
                let identity = Identity::from_seed(*request.identity_seed);
                let options = DaemonOptions {
                    host,
                    wiring: request.wiring,
                    ..DaemonOptions::default()
                };
                match daemons
                    .spawn_local(&request.kind, identity, config, options, None, Some(from))
                    .await
                {
                    Ok(handle) => SpawnResult::Spawned {
                        origin: handle.origin_hash(),
                        entity: handle.entity(),
                    },
                    Err(error) => SpawnResult::Refused(error.refusal()),
                }
            }
            .instrument(span)
            .await
        })
    }

    fn stop(&self, from: NodeId, origin: OriginHash) -> StopFuture {
        let daemons = self.0.upgrade();
        Box::pin(async move {
            let Some(daemons) = daemons else {
                return StopResult::NotFound;
            };
            let Some(entry) = daemons.entry(origin) else {
                return StopResult::NotFound;
            };
            if entry.placed_by != Some(from) {
                return StopResult::NotPermitted;
            }
            if entry.record.begin_stop() {
                // Another stop is under way; it ends the daemon.
                return StopResult::Stopped;
            }
            let span = info_span!("netrun.daemon.remote_stop", from = %from, origin = %origin);
            daemons.stop(&entry).instrument(span).await;
            StopResult::Stopped
        })
    }

    fn capabilities(&self) -> (CapabilitySet, u16) {
        match self.0.upgrade() {
            Some(daemons) => (daemons.capabilities(), daemons.load_permille()),
            None => (CapabilitySet::default(), MAX_LOAD_PERMILLE),
        }
    }
}

impl From<FactoryError> for DaemonSpawnError {
    fn from(error: FactoryError) -> Self {
        match error {
            FactoryError::NotFound(kind) => Self::FactoryNotFound(kind),
            FactoryError::AlreadyRegistered(kind) => Self::FactoryAlreadyRegistered(kind),
            other => Self::Factory(other),
        }
    }
}

/// The daemons subtree child id of daemon `origin`.
pub(crate) fn child_id(origin: OriginHash) -> String {
    format!("daemon/{origin}")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Maps and options with no invariant spanning a panic; keep using them.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl std::fmt::Debug for Daemons {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemons")
            .field("node", &self.node)
            .field("hosted", &self.lock_state().hosted.len())
            .finish_non_exhaustive()
    }
}
