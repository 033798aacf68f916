//! The iterative lookup state machine (FIND_NODE / FIND_VALUE), α requests in flight.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use netrun_messages::discovery::DhtId;

use super::buckets::Contact;
use super::key::{Distance, xor_distance};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    InFlight(Instant),
    Responded,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    contact: Contact,
    state: State,
    /// The query round this contact is (or would be) asked in: seeds are round 1, a contact
    /// learned from a round-`d` answer is round `d + 1`.
    round: u32,
}

/// One iterative lookup toward `target`.
///
/// Candidates are ordered by distance. The lookup keeps at most `alpha` requests in flight
/// to the closest not-yet-asked candidates, and ends when the `k` closest candidates that
/// have not failed have all answered (or a value arrived, for FIND_VALUE).
#[derive(Debug, Clone)]
pub struct Lookup {
    target: DhtId,
    local: DhtId,
    k: usize,
    alpha: usize,
    timeout: Duration,
    candidates: BTreeMap<Distance, Candidate>,
    found_round: Option<u32>,
    value: Option<Vec<u8>>,
    queries: u32,
}

impl Lookup {
    /// A lookup from `local` toward `target`, seeded with contacts from the local table.
    pub fn new(
        local: DhtId,
        target: DhtId,
        seeds: Vec<Contact>,
        k: usize,
        alpha: usize,
        timeout: Duration,
    ) -> Self {
        let mut lookup = Self {
            target,
            local,
            k: k.max(1),
            alpha: alpha.max(1),
            timeout,
            candidates: BTreeMap::new(),
            found_round: None,
            value: None,
            queries: 0,
        };
        if seeds.iter().any(|c| c.id == target) {
            lookup.found_round = Some(0);
        }
        for c in seeds {
            lookup.add(c, 1);
        }
        lookup
    }

    fn add(&mut self, contact: Contact, round: u32) {
        if contact.id == self.local {
            return;
        }
        let d = xor_distance(&contact.id, &self.target);
        self.candidates.entry(d).or_insert(Candidate {
            contact,
            state: State::Waiting,
            round,
        });
        // Bound the candidate set: far candidates beyond 4k never get asked.
        while self.candidates.len() > self.k * 4 {
            self.candidates.pop_last();
        }
    }

    /// The contacts to ask now (marked in flight).
    pub fn next_queries(&mut self, now: Instant) -> Vec<Contact> {
        if self.is_done() {
            return Vec::new();
        }
        let mut in_flight = self
            .candidates
            .values()
            .filter(|c| matches!(c.state, State::InFlight(_)))
            .count();
        let mut out = Vec::new();
        for c in self
            .candidates
            .values_mut()
            .filter(|c| c.state != State::Failed)
            .take(self.k)
        {
            if in_flight >= self.alpha {
                break;
            }
            if c.state == State::Waiting {
                c.state = State::InFlight(now);
                in_flight += 1;
                self.queries += 1;
                out.push(c.contact.clone());
            }
        }
        out
    }

    /// `from` answered with contacts.
    pub fn on_nodes(&mut self, from: &DhtId, contacts: Vec<Contact>) {
        let round = self.mark(from, State::Responded).unwrap_or(1);
        if self.found_round.is_none() && contacts.iter().any(|c| c.id == self.target) {
            self.found_round = Some(round);
        }
        for c in contacts {
            self.add(c, round + 1);
        }
    }

    /// `from` answered with the value.
    pub fn on_value(&mut self, from: &DhtId, value: Vec<u8>) {
        let round = self.mark(from, State::Responded).unwrap_or(1);
        if self.value.is_none() {
            self.value = Some(value);
            self.found_round = Some(round);
        }
    }

    /// A request to `from` failed.
    pub fn on_failure(&mut self, from: &DhtId) {
        self.mark(from, State::Failed);
    }

    /// Fails requests in flight longer than the timeout; returns their ids.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<DhtId> {
        let mut failed = Vec::new();
        for c in self.candidates.values_mut() {
            if let State::InFlight(at) = c.state
                && now.saturating_duration_since(at) >= self.timeout
            {
                c.state = State::Failed;
                failed.push(c.contact.id);
            }
        }
        failed
    }

    fn mark(&mut self, id: &DhtId, state: State) -> Option<u32> {
        let d = xor_distance(id, &self.target);
        let c = self.candidates.get_mut(&d)?;
        if matches!(c.state, State::InFlight(_)) {
            c.state = state;
        }
        Some(c.round)
    }

    /// Whether the lookup has finished.
    pub fn is_done(&self) -> bool {
        if self.value.is_some() {
            return true;
        }
        self.candidates
            .values()
            .filter(|c| c.state != State::Failed)
            .take(self.k)
            .all(|c| c.state == State::Responded)
    }

    /// The target.
    pub fn target(&self) -> DhtId {
        self.target
    }

    /// The value, if one was found.
    pub fn value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }

    /// The `k` closest contacts that answered, closest first.
    pub fn closest(&self) -> Vec<Contact> {
        self.candidates
            .values()
            .filter(|c| c.state == State::Responded)
            .take(self.k)
            .map(|c| c.contact.clone())
            .collect()
    }

    /// The query round in which the target (or the value) was first learned; 0 if the local
    /// table already knew it.
    pub fn hops(&self) -> Option<u32> {
        self.found_round
    }

    /// Requests sent so far.
    pub fn queries(&self) -> u32 {
        self.queries
    }
}
