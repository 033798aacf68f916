//! `Control`: the local control socket that the CLI and operators talk to.
//!
//! The actor owns a Unix domain socket (mode 0600) in the node's data directory. The
//! protocol is one request line in, one response line out, per connection turn; what the
//! lines mean is the node's business, given as a [`ControlService`]. Connections are
//! bounded ([`MAX_CONNECTIONS`]) and so is a request line ([`MAX_LINE`]).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SpawnErr};
use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Longest request line accepted.
pub const MAX_LINE: usize = 64 * 1024;
/// Most concurrent control connections; more are closed at once.
pub const MAX_CONNECTIONS: usize = 32;

/// A boxed future returned by a [`ControlService`].
pub type Reply = Pin<Box<dyn Future<Output = String> + Send>>;

/// Answers one request line with one response line (without the newline).
pub type ControlService = Arc<dyn Fn(String) -> Reply + Send + Sync>;

/// Why the control socket could not be opened.
#[derive(Debug, Error)]
pub enum ControlError {
    /// Another process is serving this socket: a node already runs on this data directory.
    #[error("a node is already running with control socket {0}")]
    InUse(PathBuf),
    /// Creating or binding the socket failed.
    #[error("control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// Startup inputs of the control actor.
pub struct ControlArgs {
    /// Socket path.
    pub path: PathBuf,
    /// The request handler.
    pub service: ControlService,
}

impl std::fmt::Debug for ControlArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlArgs")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The control actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct ControlActor;

/// The control actor's state.
#[derive(Debug)]
pub struct ControlState {
    path: PathBuf,
    accept: JoinHandle<()>,
}

/// Messages the control actor handles (none yet besides lifecycle).
#[derive(Debug)]
pub enum ControlMsg {}

/// Binds the control socket, refusing to steal one a live node serves.
pub async fn bind(path: &Path) -> Result<UnixListener, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        match UnixStream::connect(path).await {
            Ok(_) => return Err(ControlError::InUse(path.to_path_buf())),
            // Nobody listening: a stale socket from a node that did not shut down cleanly.
            Err(_) => std::fs::remove_file(path).map_err(io_err)?,
        }
    }
    let listener = UnixListener::bind(path).map_err(io_err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    }
    Ok(listener)
}

impl ControlActor {
    /// Spawns the control actor, linked to `supervisor` when given.
    pub async fn spawn(
        args: ControlArgs,
        supervisor: Option<ActorCell>,
    ) -> Result<ActorRef<ControlMsg>, SpawnErr> {
        let (actor, _) = match supervisor {
            Some(sup) => Actor::spawn_linked(None, ControlActor, args, sup).await?,
            None => Actor::spawn(None, ControlActor, args).await?,
        };
        Ok(actor)
    }
}

impl Actor for ControlActor {
    type Msg = ControlMsg;
    type State = ControlState;
    type Arguments = ControlArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let listener = bind(&args.path).await?;
        let service = args.service;
        let live = Arc::new(AtomicUsize::new(0));
        let accept = tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "control accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if live.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
                    live.fetch_sub(1, Ordering::AcqRel);
                    debug!("control connection refused: too many open");
                    continue;
                }
                let service = Arc::clone(&service);
                let live = Arc::clone(&live);
                tokio::spawn(async move {
                    if let Err(e) = serve(stream, service).await {
                        debug!(error = %e, "control connection ended");
                    }
                    live.fetch_sub(1, Ordering::AcqRel);
                });
            }
        });
        Ok(ControlState {
            path: args.path,
            accept,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.accept.abort();
        let _ = std::fs::remove_file(&state.path);
        Ok(())
    }
}

async fn serve(stream: UnixStream, service: ControlService) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_LINE as u64 + 1));
    let mut line = String::new();
    loop {
        line.clear();
        reader.get_mut().set_limit(MAX_LINE as u64 + 1);
        let n = reader.read_line(&mut line).await?;
        if n == 0 {
            return Ok(());
        }
        if n > MAX_LINE {
            write
                .write_all(b"{\"ok\":false,\"error\":\"request line too long\"}\n")
                .await?;
            return Ok(());
        }
        let mut response = service(line.trim_end().to_string()).await;
        response.push('\n');
        write.write_all(response.as_bytes()).await?;
    }
}
