//! Daemons on nRPC: a hosted daemon answers requests to a service, and what a daemon is
//! connected to (its served services and channel inputs) lives and ends with it.
//!
//! A request to a served daemon is one input (its body, as a byte input of the node's
//! input chain); the daemon processes it like any other event, its outputs are linked,
//! signed and published on its output channel as usual, and the response is made of the
//! payloads it produced for that request ([`DaemonReply`]). Errors map to nRPC statuses:
//! a failure or panic in `process` → `internal`; a full queue or input log →
//! `resource_exhausted`; restarting, stopping or stopped → `unavailable`.

use std::sync::Mutex;

use bytes::Bytes;
use netrun_actors::rpc::ServeHandle;
pub use netrun_messages::daemon::{ChannelInput, DaemonReply, DaemonWiring, ServedService};
use netrun_messages::rpc::Status;
use netrun_runtime::daemon::DeliverError;
use netrun_runtime::rpc::HandlerError;
use tokio::task::JoinHandle;

use super::{DaemonCallError, DaemonHandle};
use crate::rpc::RequestContext;
use crate::{Node, OriginHash};

/// What a hosted daemon is connected to. Dropped with the daemon's registry entry (when
/// it stops): its services are withdrawn and its channel inputs end.
#[derive(Debug, Default)]
pub(crate) struct Links {
    services: Mutex<Vec<ServeHandle>>,
    inputs: Mutex<Vec<InputTask>>,
}

impl Links {
    pub(crate) fn add_service(&self, handle: ServeHandle) {
        lock(&self.services).push(handle);
    }

    pub(crate) fn add_input(&self, task: JoinHandle<()>) {
        lock(&self.inputs).push(InputTask(task));
    }
}

/// A channel input's forwarding task, aborted when dropped.
#[derive(Debug)]
struct InputTask(JoinHandle<()>);

impl Drop for InputTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Node {
    /// Serves nRPC `service` with daemon `origin` (hosted here) until the daemon stops:
    /// each request body becomes one input, and the response is the daemon's outputs for
    /// it as `reply` says. The service is announced like any other (`nrpc:<service>`), so
    /// [`Node::call_service`] finds it from any node. A retried call may be processed
    /// twice (nRPC suppresses duplicates only while the first is in flight).
    pub fn serve_daemon(
        &self,
        origin: OriginHash,
        service: &str,
        reply: DaemonReply,
    ) -> Result<(), DaemonCallError> {
        let (entry, daemon) = self.hosted(origin)?;
        let handle = self
            .serve(service, move |request: RequestContext| {
                let daemon = daemon.clone();
                async move { answer(&daemon, request.body().clone(), reply).await }
            })
            .map_err(|e| DaemonCallError::Serve(e.to_string()))?;
        entry.links.add_service(handle);
        Ok(())
    }
}

/// Delivers one request to `daemon` and builds the response from its outputs.
async fn answer(
    daemon: &DaemonHandle,
    body: Bytes,
    reply: DaemonReply,
) -> Result<Bytes, HandlerError> {
    let answer = daemon.ask(body).await.map_err(status_of)?;
    match reply {
        DaemonReply::Last => Ok(answer.outputs.last().cloned().unwrap_or_default()),
        DaemonReply::All => rmp_serde::to_vec(&answer.outputs)
            .map(Bytes::from)
            .map_err(|e| HandlerError::internal(format!("response body: {e}"))),
    }
}

/// The nRPC status a caller gets when the daemon did not process its request.
fn status_of(error: DaemonCallError) -> HandlerError {
    let status = match &error {
        DaemonCallError::Deliver(DeliverError::Processing { .. }) => Status::INTERNAL,
        DaemonCallError::Full | DaemonCallError::Deliver(DeliverError::Backpressure) => {
            Status::RESOURCE_EXHAUSTED
        }
        DaemonCallError::Timeout => Status::DEADLINE_EXCEEDED,
        _ => Status::UNAVAILABLE,
    };
    HandlerError::new(status, error.to_string())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Plain lists of handles; a panic while pushing leaves them usable.
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
