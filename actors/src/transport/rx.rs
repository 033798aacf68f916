//! The receive loop: batches, header parse, relay or key lookup, open in place, dispatch.
//!
//! Application data goes to the node's inbound queue, subsystem control envelopes to the
//! queue their subprotocol's handler registered with the wire, and session traffic
//! (heartbeats, stream segments and stream envelopes) to the session actor, one message
//! per session per batch.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use netrun_messages::envelope::{Envelope, Subprotocol, TRACE_CONTEXT_LEN};
use netrun_messages::header::MAX_PACKET_LEN;
use netrun_messages::{NodeId, PacketFlags, PacketKind, RoutingHeader, TraceContext};
use netrun_runtime::crypto::{OpenError, open_datagram};
use ractor::ActorRef;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::forward::Relay;
use super::{MAX_BATCH, Received, TransportMsg};
use crate::session::{ControlFrame, SessionMsg};
use crate::sessions::SessionsMsg;
use crate::stats::TransportStats;
use crate::wire::{PeerKeys, Wire};

/// Consecutive socket errors after which the loop gives up and fails the transport.
const MAX_CONSECUTIVE_ERRORS: u32 = 16;

/// Runs until the socket fails for good or the task is aborted.
pub(super) async fn receive_loop(
    socket: Arc<UdpSocket>,
    wire: Arc<Wire>,
    inbound: mpsc::Sender<Received>,
    transport: ActorRef<TransportMsg>,
) {
    // One extra byte detects datagrams larger than netrun ever sends.
    let mut buf = vec![0u8; MAX_PACKET_LEN + 1];
    let mut batch = Batch::default();
    let mut relay = Relay::default();
    let mut errors = 0u32;
    loop {
        if let Err(e) = socket.readable().await {
            let _ = transport.send_message(TransportMsg::ReceiveFailed(e.to_string()));
            return;
        }
        // One clock read per batch: liveness works in milliseconds, not per packet.
        batch.now_ms = wire.now_ms();
        relay.begin_batch(&wire, wire.instant_of(batch.now_ms).into_std());
        for _ in 0..MAX_BATCH {
            match socket.try_recv_from(&mut buf) {
                Ok((len, from)) => {
                    errors = 0;
                    let datagram = &mut buf[..len];
                    match receive(&wire, datagram) {
                        None => {}
                        Some(routing) if routing.dst != wire.local() => {
                            relay.forward(&wire, &socket, datagram, from);
                        }
                        Some(routing) => {
                            handle_datagram(&wire, &inbound, &mut batch, routing, datagram, from)
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if is_transient(&e) => {
                    TransportStats::bump(&wire.stats().socket_errors);
                }
                Err(e) => {
                    TransportStats::bump(&wire.stats().socket_errors);
                    errors += 1;
                    if errors >= MAX_CONSECUTIVE_ERRORS {
                        let _ = transport.send_message(TransportMsg::ReceiveFailed(e.to_string()));
                        return;
                    }
                    warn!(error = %e, "udp receive error; backing off");
                    tokio::time::sleep(Duration::from_millis(1 << errors.min(10))).await;
                    break;
                }
            }
        }
        batch.flush(&wire);
    }
}

/// Errors a UDP socket reports for one datagram (ICMP feedback), not for the socket.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// What one batch collected for actors: one message per destination when flushed.
#[derive(Default)]
struct Batch {
    control: HashMap<NodeId, (ActorRef<SessionMsg>, u64, Vec<ControlFrame>)>,
    handshakes: Vec<(SocketAddr, Bytes)>,
    /// The wire clock when the batch started.
    now_ms: u64,
}

impl Batch {
    fn push_control(&mut self, keys: &PeerKeys, peer: NodeId, frame: ControlFrame) {
        self.control
            .entry(peer)
            .or_insert_with(|| (keys.session.clone(), keys.epoch, Vec::new()))
            .2
            .push(frame);
    }

    fn flush(&mut self, wire: &Wire) {
        for (_, (actor, epoch, frames)) in self.control.drain() {
            let count = frames.len() as u64;
            if actor
                .send_message(SessionMsg::Control { epoch, frames })
                .is_err()
            {
                wire.stats()
                    .dropped_session_gone
                    .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
            }
        }
        if !self.handshakes.is_empty() {
            let handshakes = std::mem::take(&mut self.handshakes);
            match wire.sessions() {
                Some(sessions) => {
                    let _ = sessions.send_message(SessionsMsg::Handshakes(handshakes));
                }
                None => {
                    let n = handshakes.len() as u64;
                    wire.stats()
                        .dropped_no_session
                        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
}

/// Counts a received datagram and reads its routing header; `None` (counted) if it is
/// oversize or the header does not parse.
#[inline]
fn receive(wire: &Wire, datagram: &[u8]) -> Option<RoutingHeader> {
    let stats = wire.stats();
    TransportStats::bump(&stats.rx_packets);
    stats
        .rx_bytes
        .fetch_add(datagram.len() as u64, std::sync::atomic::Ordering::Relaxed);
    if datagram.len() > MAX_PACKET_LEN {
        TransportStats::bump(&stats.dropped_oversize);
        return None;
    }
    match RoutingHeader::parse(datagram) {
        Ok(routing) => Some(routing),
        Err(_) => {
            TransportStats::bump(&stats.dropped_malformed);
            None
        }
    }
}

/// A datagram addressed to this node: a handshake, or a sealed packet to open and dispatch.
fn handle_datagram(
    wire: &Wire,
    inbound: &mpsc::Sender<Received>,
    batch: &mut Batch,
    routing: RoutingHeader,
    datagram: &mut [u8],
    from: SocketAddr,
) {
    let stats = wire.stats();
    if !routing.kind.is_sealed() {
        batch
            .handshakes
            .push((from, Bytes::copy_from_slice(datagram)));
        return;
    }
    let Some(keys) = wire.peer(routing.src) else {
        TransportStats::bump(&stats.dropped_no_session);
        return;
    };
    // A pending rotation gets a second try, on an untouched copy (a failed open may have
    // overwritten the buffer).
    let next = keys.next.load_full();
    let backup = next.as_ref().map(|_| datagram.to_vec());
    let (header, range, promoted) = match open_datagram(&keys.pair.rx, datagram) {
        Ok((header, range)) => (header, range, None),
        Err(first) => {
            let retried = match (next, backup) {
                (Some(next), Some(mut copy)) => match open_datagram(&next.rx, &mut copy) {
                    Ok((header, range)) => {
                        datagram[..copy.len()].copy_from_slice(&copy);
                        Some((header, range, next.id))
                    }
                    Err(_) => None,
                },
                _ => None,
            };
            match retried {
                Some((header, range, id)) => (header, range, Some(id)),
                None => {
                    count_open_error(stats, &first);
                    debug!(peer = %routing.src, error = %first, "dropped sealed packet");
                    return;
                }
            }
        }
    };
    keys.touch(batch.now_ms);
    if let Some(pair) = promoted {
        let _ = keys.session.send_message(SessionMsg::Promote { pair });
    }
    match header.kind {
        PacketKind::Data => {
            let plaintext = &datagram[range];
            let (trace, body) = if header.flags.contains(PacketFlags::TRACED) {
                match plaintext.split_at_checked(TRACE_CONTEXT_LEN) {
                    Some((trace, body)) => (TraceContext::decode(trace).ok(), body),
                    None => {
                        TransportStats::bump(&stats.dropped_malformed);
                        return;
                    }
                }
            } else {
                (None, plaintext)
            };
            let received = Received {
                peer: header.src,
                stream: header.stream,
                flags: header.flags,
                payload: Bytes::copy_from_slice(body),
                trace,
            };
            match inbound.try_send(received) {
                Ok(()) => TransportStats::bump(&stats.delivered),
                Err(_) => TransportStats::bump(&stats.dropped_queue_full),
            }
        }
        PacketKind::Control => {
            let payload = Bytes::copy_from_slice(&datagram[range]);
            // Subsystem envelopes go straight to their handler queue: the session actor
            // would only forward them (stream envelopes are the session's own).
            match Envelope::decode(&payload) {
                Ok(envelope) if envelope.subprotocol != Subprotocol::STREAM => {
                    wire.dispatch(header.src, &envelope, &payload);
                }
                Ok(_) => batch.push_control(
                    &keys,
                    header.src,
                    ControlFrame {
                        kind: PacketKind::Control,
                        stream: header.stream,
                        flags: header.flags,
                        payload,
                    },
                ),
                Err(_) => TransportStats::bump(&stats.envelope_malformed),
            }
        }
        kind => {
            let payload = Bytes::copy_from_slice(&datagram[range]);
            let frame = ControlFrame {
                kind,
                stream: header.stream,
                flags: header.flags,
                payload,
            };
            batch.push_control(&keys, header.src, frame);
        }
    }
}

fn count_open_error(stats: &TransportStats, e: &OpenError) {
    let counter = match e {
        OpenError::Replay(_) | OpenError::TooOld(_) | OpenError::TooFarAhead(_) => {
            &stats.dropped_replay
        }
        OpenError::Authentication => &stats.dropped_auth,
        _ => &stats.dropped_malformed,
    };
    TransportStats::bump(counter);
}
