//! The transport actor: binds, publishes the socket, supervises its receive task.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::UdpSocket;
use tracing::{info, warn};

use super::{TransportArgs, TransportMsg, rx};
use crate::wire::Wire;

/// The `UdpTransport` actor.
#[derive(Debug, Clone, Copy, Default)]
pub struct UdpTransport;

/// State of a running transport.
#[derive(Debug)]
pub struct TransportState {
    wire: Arc<Wire>,
    local_addr: SocketAddr,
}

impl Actor for UdpTransport {
    type Msg = TransportMsg;
    type State = TransportState;
    type Arguments = TransportArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        args.wire.stop_receiver().await;
        // A restart rebinds the port the first incarnation got, even when configured as 0.
        let bind = match args.wire.previously_bound() {
            Some(previous) if args.bind.port() == 0 || args.fallback_to_ephemeral => previous,
            _ => args.bind,
        };
        let socket = match bind_udp(bind) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && args.fallback_to_ephemeral => {
                let mut any = bind;
                any.set_port(0);
                warn!(requested = %bind, "udp port in use; binding an ephemeral port");
                bind_udp(any)?
            }
            Err(e) => return Err(Box::new(e)),
        };
        let socket = Arc::new(socket);
        let local_addr = socket.local_addr()?;
        args.wire.set_socket(Some(Arc::clone(&socket)));
        info!(node = %args.wire.local(), addr = %local_addr, "transport bound");
        let rx_task = tokio::spawn(rx::receive_loop(
            socket,
            Arc::clone(&args.wire),
            args.inbound,
            myself,
        ));
        args.wire.set_receiver(rx_task);
        Ok(TransportState {
            wire: args.wire,
            local_addr,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            TransportMsg::LocalAddr(reply) => {
                let _ = reply.send(state.local_addr);
            }
            TransportMsg::ReceiveFailed(reason) => {
                return Err(reason.into());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.wire.stop_receiver().await;
        Ok(())
    }
}

/// Kernel socket buffer size requested for the UDP socket. Bursts of a full stream window
/// (or a receive batch the loop has not reached yet) must fit; the kernel caps the request
/// at `net.core.rmem_max` / `wmem_max`, so this is best effort.
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;

/// Binds a non-blocking UDP socket with enlarged kernel buffers.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        warn!(error = %e, "could not enlarge the udp receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        warn!(error = %e, "could not enlarge the udp send buffer");
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}
