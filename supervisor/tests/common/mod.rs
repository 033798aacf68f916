//! Test workers that record their lifecycle into a shared probe.

#![allow(dead_code, unreachable_pub, missing_docs, clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use netrun_supervisor::{ChildSpec, SupervisorHandle, TreeSnapshot};
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort};

/// Shared record of what test workers did.
#[derive(Clone, Default)]
pub struct Probe {
    log: Arc<Mutex<Vec<String>>>,
    pub live: Arc<AtomicUsize>,
    pub spawned: Arc<AtomicUsize>,
    cells: Arc<Mutex<Vec<ActorCell>>>,
    starts: Arc<Mutex<Vec<tokio::time::Instant>>>,
}

impl Probe {
    pub fn push(&self, entry: String) {
        self.log.lock().unwrap().push(entry);
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Records a cell spawned during the test (workers and supervisors alike).
    pub fn track(&self, cell: ActorCell) {
        self.cells.lock().unwrap().push(cell);
    }

    /// Tokio-clock time of every worker start, in order.
    pub fn starts(&self) -> Vec<tokio::time::Instant> {
        self.starts.lock().unwrap().clone()
    }

    pub fn cells(&self) -> Vec<ActorCell> {
        self.cells.lock().unwrap().clone()
    }
}

pub enum WorkerMsg {
    /// Replies with the worker's name.
    Ping(RpcReplyPort<String>),
    /// Returns an error from `handle`.
    Crash,
    /// Panics in `handle`.
    Panic,
    /// Stops itself with this reason.
    StopWith(Option<String>),
    /// Never returns from `handle` (ignores stop; only a kill ends it).
    Hang,
}

pub struct Worker;

pub struct WorkerState {
    name: String,
    probe: Probe,
}

impl Drop for WorkerState {
    fn drop(&mut self) {
        self.probe.live.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = (String, Probe);

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        (name, probe): (String, Probe),
    ) -> Result<WorkerState, ActorProcessingErr> {
        probe.live.fetch_add(1, Ordering::SeqCst);
        probe.spawned.fetch_add(1, Ordering::SeqCst);
        probe.track(myself.get_cell());
        probe
            .starts
            .lock()
            .unwrap()
            .push(tokio::time::Instant::now());
        probe.push(format!("start:{name}"));
        Ok(WorkerState { name, probe })
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Ping(reply) => {
                let _ = reply.send(state.name.clone());
            }
            WorkerMsg::Crash => return Err(format!("injected crash in {}", state.name).into()),
            WorkerMsg::Panic => panic!("injected panic in {}", state.name),
            WorkerMsg::StopWith(reason) => myself.stop(reason),
            WorkerMsg::Hang => {
                state.probe.push(format!("hang:{}", state.name));
                std::future::pending::<()>().await;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        state.probe.push(format!("stop:{}", state.name));
        Ok(())
    }
}

/// A permanent worker child named `id`.
pub fn worker(id: &str, probe: &Probe) -> ChildSpec {
    let name = id.to_owned();
    let probe = probe.clone();
    ChildSpec::actor(id, move || (Worker, (name.clone(), probe.clone())))
}

/// Polls (advancing paused time by 1 ms per step) until `cond` holds.
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    // Yield first so work that needs no timer finishes without moving the paused clock.
    for i in 0..2_000_000u32 {
        if cond() {
            return;
        }
        if i % 64 == 63 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        } else {
            tokio::task::yield_now().await;
        }
    }
    panic!("timed out waiting for {what}");
}

/// Polls the tree until `cond` holds.
pub async fn wait_for_tree(
    sup: &SupervisorHandle,
    what: &str,
    mut cond: impl FnMut(&TreeSnapshot) -> bool,
) -> TreeSnapshot {
    for _ in 0..200_000 {
        let tree = sup.tree().await.unwrap();
        if cond(&tree) {
            return tree;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Child `id` of the top level of `tree`.
pub fn child<'a>(tree: &'a TreeSnapshot, id: &str) -> &'a netrun_supervisor::ChildSnapshot {
    tree.children.iter().find(|c| c.id == id).unwrap()
}
