//! What a service handler sees: the request context, its cancellation signal, the stream
//! sink of a streaming service, and the handler traits (implemented by async closures).

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use netrun_messages::rpc::ServiceName;
use netrun_messages::{NodeId, TraceContext};
use netrun_runtime::rpc::{CallKey, HandlerError};
use ractor::ActorRef;
use thiserror::Error;
use tokio::sync::{Notify, Semaphore};

use super::MAX_CALL_BODY_LEN;
use super::msg::{Msg, RpcMsg};

/// The boxed future a [`Handler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Bytes, HandlerError>> + Send>>;
/// The boxed future a [`StreamingHandler`] returns.
pub type StreamingFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A unary service: one request body in, one response body (or a [`HandlerError`]) out.
///
/// Implemented by every `Fn(RequestContext) -> impl Future<Output = Result<Bytes,
/// HandlerError>>` that is `Send + Sync + 'static`. Each admitted request runs in its own
/// tokio task; a panic in the handler answers `internal` and the server keeps serving.
pub trait Handler: Send + Sync + 'static {
    /// Handles one request.
    fn handle(&self, request: RequestContext) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(RequestContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
{
    fn handle(&self, request: RequestContext) -> HandlerFuture {
        Box::pin(self(request))
    }
}

/// A server-streaming service: one request in, any number of items out through a
/// [`StreamSink`], then the end (Ok, or a [`HandlerError`] after the items sent).
pub trait StreamingHandler: Send + Sync + 'static {
    /// Handles one request, sending its items to `sink`.
    fn handle(&self, request: RequestContext, sink: StreamSink) -> StreamingFuture;
}

impl<F, Fut> StreamingHandler for F
where
    F: Fn(RequestContext, StreamSink) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn handle(&self, request: RequestContext, sink: StreamSink) -> StreamingFuture {
        Box::pin(self(request, sink))
    }
}

/// A registered handler of either kind.
#[derive(Clone)]
pub(crate) enum HandlerKind {
    Unary(Arc<dyn Handler>),
    Streaming(Arc<dyn StreamingHandler>),
}

impl std::fmt::Debug for HandlerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unary(_) => "Unary",
            Self::Streaming(_) => "Streaming",
        })
    }
}

/// One admitted request, as its handler gets it.
#[derive(Debug)]
pub struct RequestContext {
    pub(crate) caller: NodeId,
    pub(crate) service: ServiceName,
    pub(crate) deadline: Option<Instant>,
    pub(crate) body: Bytes,
    pub(crate) cancel: Cancellation,
    pub(crate) trace: Option<TraceContext>,
}

impl RequestContext {
    /// The calling node (the authenticated sender of the request).
    pub fn caller(&self) -> NodeId {
        self.caller
    }

    /// The service called.
    pub fn service(&self) -> &ServiceName {
        &self.service
    }

    /// When the caller's budget runs out, if it set one (arrival plus the budget the
    /// request carried). Past it the result is not sent and [`Self::cancellation`] fires.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The request body.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// Takes the body out (cheap: the body is a slice of the received packet).
    pub fn take_body(&mut self) -> Bytes {
        std::mem::take(&mut self.body)
    }

    /// The signal that fires when the caller cancels (CANCEL, or its call future was
    /// dropped) or the deadline passes. A cancelled request's result is not sent.
    pub fn cancellation(&self) -> &Cancellation {
        &self.cancel
    }

    /// Whether the request was cancelled or ran out of time.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// The caller's trace context, when its call was traced (the server's span should be
    /// a child of it).
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }
}

/// A cancellation signal: set once, observed by any number of clones.
#[derive(Debug, Clone, Default)]
pub struct Cancellation(Arc<CancelState>);

#[derive(Debug, Default)]
struct CancelState {
    fired: AtomicBool,
    notify: Notify,
}

impl Cancellation {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the signal fired.
    pub fn is_cancelled(&self) -> bool {
        self.0.fired.load(Ordering::Acquire)
    }

    /// Waits until the signal fires (at once if it already has).
    pub async fn cancelled(&self) {
        loop {
            let notified = self.0.notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the flag is read, so a concurrent `fire` is never missed.
            notified.as_mut().enable();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }

    /// Fires the signal (idempotent).
    pub fn cancel(&self) {
        if !self.0.fired.swap(true, Ordering::AcqRel) {
            self.0.notify.notify_waiters();
        }
    }
}

/// Why a stream item was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SinkError {
    /// The caller cancelled or the deadline passed: stop producing.
    #[error("the call was cancelled")]
    Cancelled,
    /// The item is larger than one datagram carries ([`MAX_CALL_BODY_LEN`]).
    #[error("stream item of {len} bytes exceeds {max}")]
    TooLarge {
        /// The item's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The RPC actor that admitted the request is gone (it restarted or the node stops).
    #[error("the rpc service stopped")]
    Closed,
}

/// Where a streaming handler sends its items, in order. [`StreamSink::send`] waits for the
/// caller's credit: the handler never runs more than the caller's window ahead of what
/// the caller's application consumed.
#[derive(Debug)]
pub struct StreamSink {
    pub(crate) key: CallKey,
    pub(crate) credit: Arc<Semaphore>,
    pub(crate) cancel: Cancellation,
    pub(crate) actor: ActorRef<RpcMsg>,
}

impl StreamSink {
    /// Sends one item, waiting for credit. Fails when the call was cancelled (stop
    /// producing and return), the item is too large, or the service stopped.
    pub async fn send(&mut self, item: Bytes) -> Result<(), SinkError> {
        if item.len() > MAX_CALL_BODY_LEN {
            return Err(SinkError::TooLarge {
                len: item.len(),
                max: MAX_CALL_BODY_LEN,
            });
        }
        if self.cancel.is_cancelled() {
            return Err(SinkError::Cancelled);
        }
        let permit = tokio::select! {
            permit = self.credit.acquire() => permit.map_err(|_| SinkError::Closed)?,
            () = self.cancel.cancelled() => return Err(SinkError::Cancelled),
        };
        // The credit is spent for good: the actor adds permits as the caller grants more.
        permit.forget();
        self.actor
            .send_message(RpcMsg(Msg::Item {
                key: self.key,
                body: item,
            }))
            .map_err(|_| SinkError::Closed)
    }

    /// Items that may be sent now without waiting.
    pub fn credit(&self) -> usize {
        self.credit.available_permits()
    }

    /// The call's cancellation signal.
    pub fn cancellation(&self) -> &Cancellation {
        &self.cancel
    }
}

/// Runs a future, turning a panic while polling it into `Err(payload)`.
pub(crate) struct CatchUnwind<F> {
    inner: Pin<Box<F>>,
}

impl<F: Future> CatchUnwind<F> {
    pub(crate) fn new(inner: F) -> Self {
        Self {
            inner: Box::pin(inner),
        }
    }
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.inner.as_mut();
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(value)) => Poll::Ready(Ok(value)),
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// The text of a panic payload, for the `internal` message (a `&str` or `String` panic).
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-text panic payload");
    format!("handler panicked: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cancellation_wakes_every_waiter_and_stays_set() {
        let c = Cancellation::new();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.cancelled().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!c.is_cancelled());
        c.cancel();
        c.cancel();
        for w in waiters {
            w.await.expect("waiter finished");
        }
        assert!(c.is_cancelled());
        c.cancelled().await;
    }

    #[tokio::test]
    async fn catch_unwind_reports_a_panic_with_its_message() {
        let ok = CatchUnwind::new(async { 7 }).await;
        assert_eq!(ok.ok(), Some(7));
        let panicked = CatchUnwind::new(async {
            if std::hint::black_box(true) {
                panic!("boom");
            }
            7
        })
        .await;
        let payload = panicked.expect_err("the panic is caught");
        assert_eq!(panic_message(payload.as_ref()), "handler panicked: boom");
    }
}
