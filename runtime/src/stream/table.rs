//! The per-session stream table the session actor holds.
//!
//! The actor hands it whole batches: every opened `Stream` packet goes to
//! [`Streams::handle_segment`], every `Subprotocol::STREAM` envelope body to
//! [`Streams::handle_frame`]; then it drains [`Streams::poll_transmit`] and
//! [`Streams::poll_control`] once per batch, which is what coalesces grants and NACKs.

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

use bytes::Bytes;
use netrun_messages::DecodeError;
use netrun_messages::stream::{Reset, ResetReason, SegmentHeader, StreamFrame};
use thiserror::Error;

use super::{Outgoing, Reliability, Stream, StreamConfig, StreamConfigError, StreamEvent};

/// Streams one session holds at most: bounds the memory a peer can make us commit (each
/// stream may buffer up to its window).
pub const DEFAULT_MAX_STREAMS: usize = 1024;
/// RESETs for unknown or refused streams waiting to be sent; more are dropped and counted.
const MAX_TABLE_RESETS: usize = 64;

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TableError {
    /// The table holds its maximum number of streams.
    #[error("stream table is full")]
    Full,
    /// A stream with this id is already open.
    #[error("stream {0} is already open")]
    Exists(u64),
    /// The configuration was refused.
    #[error("stream config: {0}")]
    Config(#[from] StreamConfigError),
}

/// A bounded table of streams keyed by stream id.
#[derive(Debug)]
pub struct Streams {
    streams: BTreeMap<u64, Stream>,
    max_streams: usize,
    accept_config: StreamConfig,
    cursor: u64,
    resets: VecDeque<Reset>,
    refused: u64,
    resets_dropped: u64,
}

impl Streams {
    /// A table of at most `max_streams`; streams the peer opens first get `accept_config`
    /// with the reliability of the packet that created them.
    pub fn new(max_streams: usize, accept_config: StreamConfig) -> Result<Self, StreamConfigError> {
        accept_config.validate()?;
        Ok(Self {
            streams: BTreeMap::new(),
            max_streams,
            accept_config,
            cursor: 0,
            resets: VecDeque::new(),
            refused: 0,
            resets_dropped: 0,
        })
    }

    /// Opens stream `id` locally.
    pub fn open(&mut self, id: u64, config: StreamConfig) -> Result<&mut Stream, TableError> {
        if self.streams.contains_key(&id) {
            return Err(TableError::Exists(id));
        }
        if self.streams.len() >= self.max_streams {
            return Err(TableError::Full);
        }
        let stream = Stream::new(id, config)?;
        Ok(self.streams.entry(id).or_insert(stream))
    }

    /// The stream `id`.
    pub fn get(&self, id: u64) -> Option<&Stream> {
        self.streams.get(&id)
    }

    /// The stream `id`, mutably.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Stream> {
        self.streams.get_mut(&id)
    }

    /// Removes stream `id`.
    pub fn remove(&mut self, id: u64) -> Option<Stream> {
        self.streams.remove(&id)
    }

    /// Streams held.
    pub fn len(&self) -> usize {
        self.streams.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// Segments for unknown streams refused because the table was full.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// A `Stream` packet's plaintext for stream `id`; `reliable` is the packet header's
    /// `RELIABLE` flag. An unknown stream is created with the accept config; when the table
    /// is full the peer gets a RESET (`REFUSED`) instead.
    pub fn handle_segment(
        &mut self,
        now: Instant,
        id: u64,
        reliable: bool,
        plaintext: Bytes,
    ) -> Result<(), DecodeError> {
        // Parse first so garbage never creates a stream.
        SegmentHeader::parse(&plaintext)?;
        if !self.streams.contains_key(&id) {
            let reliability = if reliable {
                Reliability::Reliable
            } else {
                Reliability::BestEffort
            };
            let config = self.accept_config.with_reliability(reliability);
            if self.open(id, config).is_err() {
                self.refused += 1;
                self.queue_reset(id, ResetReason::REFUSED);
                return Ok(());
            }
        }
        match self.streams.get_mut(&id) {
            Some(stream) => stream.handle_segment_bytes(now, plaintext),
            None => Ok(()),
        }
    }

    /// A control frame from the peer. Frames for unknown streams are ignored, except a
    /// PROBE, which is answered with a RESET so the prober stops.
    pub fn handle_frame(&mut self, now: Instant, frame: &StreamFrame) {
        let id = frame.stream();
        match self.streams.get_mut(&id) {
            Some(stream) => stream.handle_frame(now, frame),
            None => {
                if matches!(frame, StreamFrame::Probe(_)) {
                    self.queue_reset(id, ResetReason::REFUSED);
                }
            }
        }
    }

    /// The next segment to send and its stream id: highest priority first, round robin
    /// among streams of equal priority. Costs O(n log n) in the streams that have data.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(u64, Outgoing)> {
        let cursor = self.cursor;
        let mut order: Vec<(u8, u64, u64)> = self
            .streams
            .iter()
            .filter(|(_, s)| s.tx.has_pending() && s.failed.is_none())
            .map(|(&id, s)| {
                let rank = id.wrapping_sub(cursor).wrapping_sub(1);
                (u8::MAX - s.config.priority, rank, id)
            })
            .collect();
        order.sort_unstable();
        for (_, _, id) in order {
            if let Some(out) = self.streams.get_mut(&id).and_then(|s| s.poll_transmit(now)) {
                self.cursor = id;
                return Some((id, out));
            }
        }
        None
    }

    /// The next control frame: RESETs the table owes first, then each stream's frames.
    pub fn poll_control(&mut self, now: Instant) -> Option<StreamFrame> {
        if let Some(reset) = self.resets.pop_front() {
            return Some(StreamFrame::Reset(reset));
        }
        self.streams
            .values_mut()
            .find_map(|stream| stream.poll_control(now))
    }

    /// The next lifecycle event and its stream id.
    pub fn poll_event(&mut self) -> Option<(u64, StreamEvent)> {
        self.streams
            .iter_mut()
            .find_map(|(&id, stream)| stream.poll_event().map(|e| (id, e)))
    }

    /// The earliest timer of any stream.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.streams.values().filter_map(Stream::poll_timeout).min()
    }

    /// Runs the timers of every stream that is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        for stream in self.streams.values_mut() {
            if stream.poll_timeout().is_some_and(|at| at <= now) {
                stream.handle_timeout(now);
            }
        }
    }

    /// Removes streams that are done (failed, or closed both ways) once their last frames
    /// and events were taken; returns how many.
    pub fn reap(&mut self) -> usize {
        let before = self.streams.len();
        self.streams
            .retain(|_, s| !(s.is_done() && s.reset_due.is_none() && s.events.is_empty()));
        before - self.streams.len()
    }

    fn queue_reset(&mut self, stream: u64, reason: ResetReason) {
        if self.resets.len() < MAX_TABLE_RESETS {
            self.resets.push_back(Reset { stream, reason });
        } else {
            self.resets_dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_clock::t0;
    use std::time::Duration;

    fn segment(seq: u64, offset: u64, data: &[u8]) -> Bytes {
        let mut v = Vec::new();
        SegmentHeader {
            seq,
            offset,
            fin: false,
        }
        .encode_with(data, &mut v);
        Bytes::from(v)
    }

    #[test]
    fn accepts_refuses_and_schedules_by_priority() {
        let now = t0();
        let mut t = Streams::new(2, StreamConfig::default()).expect("config");
        t.open(1, StreamConfig::default()).expect("open");
        assert_eq!(
            t.open(1, StreamConfig::default()).err(),
            Some(TableError::Exists(1))
        );
        t.handle_segment(now, 2, false, segment(0, 0, b"hi"))
            .expect("segment");
        assert_eq!(
            t.get(2).map(|s| s.config().reliability),
            Some(Reliability::BestEffort)
        );
        t.handle_segment(now, 3, true, segment(0, 0, b"x"))
            .expect("segment");
        assert_eq!(t.refused(), 1);
        assert!(matches!(
            t.poll_control(now),
            Some(StreamFrame::Reset(Reset { stream: 3, .. }))
        ));
        assert!(
            t.handle_segment(now, 4, true, Bytes::from_static(b"bad"))
                .is_err()
        );

        let s1 = t.get_mut(1).expect("open");
        *s1 = Stream::new(1, StreamConfig::default().with_priority(9)).expect("config");
        s1.send(now, Bytes::from_static(b"a")).expect("send");
        t.get_mut(2)
            .expect("open")
            .send(now, Bytes::from_static(b"b"))
            .expect("send");
        let first = t.poll_transmit(now).map(|(id, _)| id);
        let second = t.poll_transmit(now).map(|(id, _)| id);
        assert_eq!((first, second), (Some(1), Some(2)));
        assert!(t.poll_transmit(now).is_none());

        t.get_mut(2).expect("open").abort();
        assert!(t.poll_timeout().is_some());
        t.handle_timeout(now + Duration::from_secs(1));
        assert_eq!(t.reap(), 0, "the RESET and event are still owed");
        while t.poll_control(now).is_some() {}
        while t.poll_event().is_some() {}
        assert_eq!(t.reap(), 1);
        assert_eq!(t.len(), 1);
    }
}
