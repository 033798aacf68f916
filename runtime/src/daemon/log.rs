//! The input log: events accepted since the last snapshot, bounded in count and bytes.
//!
//! A restart restores the snapshot and replays this log, so every accepted event that
//! succeeded is in exactly one of the two. Failed events are never logged (their effect is
//! discarded by the restart). The host truncates the log whenever it takes a snapshot; when
//! the log is full it takes one before accepting more.

use std::collections::VecDeque;

use netrun_messages::CausalEvent;

/// Per-entry bookkeeping counted against the byte bound besides the event encoding.
const ENTRY_OVERHEAD: usize = 8;

/// One accepted input, numbered by the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedInput {
    /// The host's sequence number for this input (1, 2, …; failed inputs leave gaps).
    pub input_seq: u64,
    /// The event as delivered.
    pub event: CausalEvent,
}

/// The bounded log (see the module docs).
#[derive(Debug, Clone)]
pub(super) struct InputLog {
    entries: VecDeque<LoggedInput>,
    bytes: usize,
    max_events: usize,
    max_bytes: usize,
}

impl LoggedInput {
    /// Bytes this entry counts against the log's byte bound.
    fn cost(&self) -> usize {
        self.event.encoded_len() + ENTRY_OVERHEAD
    }
}

impl InputLog {
    pub(super) fn new(max_events: usize, max_bytes: usize) -> Self {
        Self {
            entries: VecDeque::new(),
            bytes: 0,
            max_events,
            max_bytes,
        }
    }

    /// Whether `event` does not fit. An empty log always takes one event, so an event
    /// larger than the byte bound is not refused forever.
    pub(super) fn is_full_for(&self, event: &CausalEvent) -> bool {
        if self.entries.is_empty() {
            return false;
        }
        self.entries.len() >= self.max_events
            || self.bytes + event.encoded_len() + ENTRY_OVERHEAD > self.max_bytes
    }

    /// Appends an entry; the caller checked [`is_full_for`](Self::is_full_for).
    pub(super) fn push(&mut self, entry: LoggedInput) {
        self.bytes += entry.cost();
        self.entries.push_back(entry);
    }

    /// Forgets every entry (their effects are in a new snapshot).
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn to_vec(&self) -> Vec<LoggedInput> {
        self.entries.iter().cloned().collect()
    }
}
