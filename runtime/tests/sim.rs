//! Deterministic simulation of two nodes driving the runtime cores over a lossy link.
//!
//! Virtual clock (an arbitrary origin plus offsets), one seeded RNG per run, a link with
//! per-packet loss, latency jitter (which reorders) and duplication. Every scenario states
//! its invariants by name; a failure message names the invariant and the seed.
//!
//! Node A initiates, node B responds. The drivers below play the role the session actor
//! will: they carry packets between the cores and apply the session-swap rule (an
//! unconfirmed session is promoted on its first authenticated packet, never before).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use netrun_messages::{Header, Identity, PacketKind};
use netrun_runtime::crypto::{
    OpenError, open_datagram, open_heartbeat, seal_datagram, seal_heartbeat,
};
use netrun_runtime::handshake::{
    BackoffConfig, Established, HandshakeBackoff, HandshakeError, Initiator, Responder,
    ResponderConfig,
};
use netrun_runtime::liveness::{HeartbeatProbe, Liveness, LivenessConfig, LivenessEvent};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const PSK: [u8; 32] = [0x5a; 32];
const A: usize = 0;
const B: usize = 1;
const MS: Duration = Duration::from_millis(1);

#[path = "common/link.rs"]
mod link;

use link::{DelayLine, LinkConfig, origin};

// ---------------------------------------------------------------------------------------
// Link

const PERFECT: LinkConfig = LinkConfig {
    loss: 0.0,
    duplicate: 0.0,
    latency: Duration::from_millis(5),
    jitter: Duration::ZERO,
    partition: None,
};

/// The same config both ways, and a switch to cut either direction.
struct Link {
    config: LinkConfig,
    line: DelayLine<Vec<u8>>,
    blocked_to: [bool; 2],
}

impl Link {
    fn new(config: LinkConfig, seed: u64) -> Self {
        Self {
            config,
            line: DelayLine::new(origin(), seed),
            blocked_to: [false; 2],
        }
    }

    /// Sends `bytes`; returns how many copies will arrive (0, 1 or 2).
    fn send(&mut self, now: Instant, to: usize, bytes: &[u8]) -> u32 {
        if self.blocked_to[to] {
            return 0;
        }
        self.line.send(&self.config, now, to, bytes.to_vec())
    }

    fn next_at(&self) -> Option<Instant> {
        self.line.next_at()
    }

    fn pop_due(&mut self, now: Instant) -> Option<link::Flight<Vec<u8>>> {
        self.line.pop_due(now)
    }
}

// ---------------------------------------------------------------------------------------
// The two drivers (what the session actor does around the cores)

struct Dialer {
    id: Identity,
    psk: [u8; 32],
    remote: Identity,
    rng: ChaCha8Rng,
    backoff: HandshakeBackoff,
    initiator: Option<Initiator>,
    deadline: Option<Instant>,
    session: Option<Established>,
    liveness: Option<Liveness>,
    auth_failures: u32,
    events: Vec<(Duration, LivenessEvent)>,
    gave_up: bool,
}

impl Dialer {
    fn new(id: Identity, remote: Identity, psk: [u8; 32], seed: u64) -> Self {
        Self {
            id,
            psk,
            remote,
            rng: ChaCha8Rng::seed_from_u64(seed),
            backoff: HandshakeBackoff::new(BackoffConfig::default()),
            initiator: None,
            deadline: None,
            session: None,
            liveness: None,
            auth_failures: 0,
            events: Vec::new(),
            gave_up: false,
        }
    }
}

struct Listener {
    id: Identity,
    rng: ChaCha8Rng,
    responder: Responder,
    session: Option<Established>,
    last_heard: Option<Instant>,
    pending: Vec<Established>,
    promotions: u32,
    replays_dropped: u32,
}

/// Unconfirmed sessions a listener keeps per peer; the oldest is dropped first.
const MAX_PENDING: usize = 4;

impl Listener {
    fn new(id: Identity, psk: [u8; 32], seed: u64) -> Self {
        Self {
            responder: Responder::new(id.clone(), &psk, ResponderConfig::default()),
            id,
            rng: ChaCha8Rng::seed_from_u64(seed),
            session: None,
            last_heard: None,
            pending: Vec::new(),
            promotions: 0,
            replays_dropped: 0,
        }
    }

    fn confirmed(&self) -> bool {
        self.session.as_ref().is_some_and(Established::is_confirmed)
    }
}

struct World {
    origin: Instant,
    now: Instant,
    link: Link,
    a: Dialer,
    b: Listener,
    scratch: Vec<u8>,
}

impl World {
    fn new(link: LinkConfig, seed: u64, a: Dialer, b: Listener) -> Self {
        let origin = origin();
        Self {
            origin,
            now: origin,
            link: Link::new(link, seed),
            a,
            b,
            scratch: Vec::new(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.now - self.origin
    }

    /// Runs until `until` (virtual) or `stop` holds.
    fn run(&mut self, until: Duration, stop: impl Fn(&World) -> bool) {
        let end = self.origin + until;
        while self.now <= end && !stop(self) {
            self.step_dialer();
            while let Some(flight) = self.link.pop_due(self.now) {
                match flight.to {
                    A => self.deliver_to_a(flight.payload),
                    _ => self.deliver_to_b(flight.payload),
                }
            }
            let mut next = end + MS;
            for t in [
                self.link.next_at(),
                self.a.deadline.filter(|_| self.a.session.is_none()),
                self.a.liveness.as_ref().map(Liveness::poll_timeout),
            ]
            .into_iter()
            .flatten()
            {
                next = next.min(t);
            }
            self.now = self.now.max(next);
        }
    }

    fn step_dialer(&mut self) {
        let now = self.now;
        let a = &mut self.a;
        if a.session.is_none() && !a.gave_up && a.deadline.is_none_or(|d| now >= d) {
            match a.backoff.next_attempt() {
                Some(wait) => {
                    let id = a.rng.r#gen();
                    let (init, msg1) =
                        Initiator::start(now, &a.id, a.remote.entity_id(), &a.psk, id, &mut a.rng)
                            .expect("start");
                    a.initiator = Some(init);
                    a.deadline = Some(now + wait);
                    self.link.send(now, B, &msg1);
                }
                None => a.gave_up = true,
            }
        }
        let (Some(session), Some(liveness)) = (&a.session, &mut a.liveness) else {
            return;
        };
        while let Some(event) = liveness.poll(now) {
            a.events.push((now - self.origin, event));
        }
        if let Some(probe) = liveness.poll_heartbeat(now) {
            let dst = session.peer_node;
            seal_heartbeat(
                &session.tx,
                a.id.node_id(),
                dst,
                probe.to_stream(),
                &mut self.scratch,
            )
            .expect("seal");
            self.link.send(now, B, &self.scratch);
        }
    }

    fn deliver_to_a(&mut self, mut bytes: Vec<u8>) {
        let now = self.now;
        let a = &mut self.a;
        let Ok((header, _)) = Header::parse(&bytes) else {
            return;
        };
        match header.kind {
            PacketKind::HandshakeResponse => {
                let Some(init) = a.initiator.as_mut() else {
                    return;
                };
                match init.handle_response(now, &bytes) {
                    Ok(est) => {
                        a.session = Some(est);
                        a.backoff.reset();
                        a.liveness =
                            Some(Liveness::new(LivenessConfig::default(), now).expect("config"));
                    }
                    Err(HandshakeError::Authentication) => a.auth_failures += 1,
                    Err(_) => {}
                }
            }
            PacketKind::Heartbeat => {
                let (Some(s), Some(l)) = (&a.session, &mut a.liveness) else {
                    return;
                };
                if open_heartbeat(&s.rx, &bytes).is_ok() {
                    let _ = l.on_heartbeat(now, HeartbeatProbe::from_stream(header.stream));
                }
            }
            _ => {
                let (Some(s), Some(l)) = (&a.session, &mut a.liveness) else {
                    return;
                };
                if open_datagram(&s.rx, &mut bytes).is_ok() {
                    l.on_authenticated_packet(now);
                }
            }
        }
    }

    fn deliver_to_b(&mut self, bytes: Vec<u8>) {
        let now = self.now;
        let b = &mut self.b;
        let Ok((header, _)) = Header::parse(&bytes) else {
            return;
        };
        match header.kind {
            PacketKind::HandshakeInit => {
                let live = b
                    .session
                    .as_ref()
                    .zip(b.last_heard)
                    .map(|(s, heard)| s.live(heard));
                match b
                    .responder
                    .handle_init(now, &bytes, live.as_ref(), &mut b.rng)
                {
                    Ok((est, response)) => {
                        if b.pending.len() == MAX_PENDING {
                            b.pending.remove(0);
                        }
                        b.pending.push(est);
                        self.link.send(now, A, &response);
                    }
                    Err(HandshakeError::Replay) => b.replays_dropped += 1,
                    Err(_) => {}
                }
            }
            PacketKind::Heartbeat => {
                b.pending.retain(|p| !p.is_unconfirmed_expired(now));
                let opened_current = b
                    .session
                    .as_ref()
                    .is_some_and(|s| open_heartbeat(&s.rx, &bytes).is_ok());
                if !opened_current {
                    // Newest first: the latest attempt is the likeliest to be the real one.
                    let Some(i) = (0..b.pending.len())
                        .rev()
                        .find(|&i| open_heartbeat(&b.pending[i].rx, &bytes).is_ok())
                    else {
                        return;
                    };
                    let promoted = b.pending.remove(i);
                    assert!(
                        promoted.is_confirmed(),
                        "invariant promoted_only_when_confirmed"
                    );
                    b.session = Some(promoted);
                    b.pending.clear();
                    b.promotions += 1;
                }
                b.last_heard = Some(now);
                let probe = HeartbeatProbe::from_stream(header.stream);
                if !probe.is_reply {
                    let s = b.session.as_ref().expect("session");
                    seal_heartbeat(
                        &s.tx,
                        b.id.node_id(),
                        s.peer_node,
                        probe.reply().to_stream(),
                        &mut self.scratch,
                    )
                    .expect("seal");
                    self.link.send(now, A, &self.scratch);
                }
            }
            _ => {}
        }
    }
}

fn ids() -> (Identity, Identity) {
    (
        Identity::from_seed([0xa; 32]),
        Identity::from_seed([0xb; 32]),
    )
}

fn world(link: LinkConfig, seed: u64, a_psk: [u8; 32]) -> World {
    let (a, b) = ids();
    World::new(
        link,
        seed,
        Dialer::new(a, b.clone(), a_psk, seed ^ 0xaaaa),
        Listener::new(b, PSK, seed ^ 0xbbbb),
    )
}

fn both_confirmed(w: &World) -> bool {
    w.a.session.is_some() && w.b.confirmed()
}

/// A connected world on a perfect link.
fn connected(seed: u64) -> World {
    let mut w = world(PERFECT, seed, PSK);
    w.run(Duration::from_secs(2), both_confirmed);
    assert!(
        both_confirmed(&w),
        "invariant handshake_completes_on_perfect_link"
    );
    w
}

// ---------------------------------------------------------------------------------------
// Scenarios

#[test]
fn handshake_completes_under_30_percent_loss() {
    let lossy = LinkConfig {
        loss: 0.3,
        duplicate: 0.05,
        latency: 10 * MS,
        jitter: 20 * MS,
        partition: None,
    };
    let budget = HandshakeBackoff::new(BackoffConfig::default()).total_budget();
    for seed in 0..40 {
        let mut w = world(lossy, seed, PSK);
        w.run(budget + Duration::from_secs(10), both_confirmed);
        assert!(
            w.a.session.is_some(),
            "invariant initiator_established (seed {seed})"
        );
        assert!(
            w.b.confirmed(),
            "invariant responder_confirmed (seed {seed})"
        );
        let (a, b) = (w.a.session.as_ref().unwrap(), w.b.session.as_ref().unwrap());
        assert_eq!(
            a.initiator_ephemeral, b.initiator_ephemeral,
            "invariant same_handshake (seed {seed})"
        );
        // Keys agree both ways.
        let mut buf = Vec::new();
        seal_datagram(
            &b.tx,
            Header::new(PacketKind::Data, b.peer_node, a.peer_node),
            b"ok",
            &mut buf,
        )
        .unwrap();
        let (_, r) = open_datagram(&a.rx, &mut buf).unwrap();
        assert_eq!(&buf[r], b"ok", "invariant keys_agree (seed {seed})");
    }
}

#[test]
fn ten_thousand_datagrams_under_reordering_and_duplication() {
    const N: u64 = 10_000;
    for seed in [1u64, 2, 3] {
        let w = connected(seed);
        let (a, b) = (w.a.session.as_ref().unwrap(), w.b.session.as_ref().unwrap());
        let config = LinkConfig {
            loss: 0.05,
            duplicate: 0.2,
            latency: 2 * MS,
            jitter: 20 * MS,
            partition: None,
        };
        let mut link = Link::new(config, seed);
        let mut now = w.now;
        let mut arrives: HashMap<u64, u32> = HashMap::new();
        let mut delivered: HashMap<u64, u32> = HashMap::new();
        let (mut replays, mut other_errors) = (0u32, 0u32);
        let mut buf = Vec::new();
        let header = Header::new(PacketKind::Data, a.peer_node, b.peer_node);
        let mut receive = |link: &mut Link, now: Instant| {
            while let Some(mut f) = link.pop_due(now) {
                match open_datagram(&a.rx, &mut f.payload) {
                    Ok((_, r)) => {
                        let id = u64::from_le_bytes(f.payload[r].try_into().unwrap());
                        *delivered.entry(id).or_default() += 1;
                    }
                    Err(OpenError::Replay(_)) => replays += 1,
                    Err(_) => other_errors += 1,
                }
            }
        };
        for id in 0..N {
            // 20 000 packets/s: 20 ms of jitter keeps ~400 in flight, inside the 1024 window.
            now += Duration::from_micros(50);
            seal_datagram(&b.tx, header, &id.to_le_bytes(), &mut buf).unwrap();
            let copies = link.send(now, A, &buf);
            if copies > 0 {
                arrives.insert(id, copies);
            }
            receive(&mut link, now);
        }
        receive(&mut link, now + Duration::from_secs(1));
        assert!(
            delivered.values().all(|&n| n == 1),
            "invariant at_most_once (seed {seed})"
        );
        let missing = arrives
            .keys()
            .filter(|id| !delivered.contains_key(id))
            .count();
        assert_eq!(
            missing, 0,
            "invariant every_non_lost_delivered (seed {seed})"
        );
        assert_eq!(
            delivered.len(),
            arrives.len(),
            "invariant nothing_invented (seed {seed})"
        );
        let extra: u32 = arrives.values().map(|c| c - 1).sum();
        assert_eq!(
            replays, extra,
            "invariant duplicates_rejected_as_replay (seed {seed})"
        );
        assert_eq!(
            other_errors, 0,
            "invariant no_spurious_errors (seed {seed})"
        );
        assert!(
            extra > 1000 && arrives.len() < N as usize,
            "the link really reordered, duplicated and lost"
        );
    }
}

#[test]
fn replayed_packets_and_handshakes_are_rejected() {
    let mut w = connected(7);
    let (a, b) = (w.a.session.as_ref().unwrap(), w.b.session.as_ref().unwrap());
    let header = Header::new(PacketKind::Data, b.peer_node, a.peer_node);
    let mut captured = Vec::new();
    for i in 0..2000u32 {
        let mut buf = Vec::new();
        seal_datagram(&a.tx, header, &i.to_le_bytes(), &mut buf).unwrap();
        captured.push(buf.clone());
        open_datagram(&b.rx, &mut buf).unwrap();
    }
    for (i, mut old) in captured.into_iter().enumerate() {
        let err = open_datagram(&b.rx, &mut old).unwrap_err();
        let expected = if i < 2000 - 1024 { "too old" } else { "replay" };
        assert!(
            matches!(
                (&err, expected),
                (OpenError::TooOld(_), "too old") | (OpenError::Replay(_), "replay")
            ),
            "invariant no_replay_accepted: packet {i} gave {err}"
        );
    }
    // A recorded initiation replayed to the responder is dropped.
    let (a_id, b_id) = ids();
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let (_, msg1) = Initiator::start(w.now, &a_id, b_id.entity_id(), &PSK, 5, &mut rng).unwrap();
    let live = w.b.session.as_ref().map(|s| s.live(w.now));
    let first =
        w.b.responder
            .handle_init(w.now, &msg1, live.as_ref(), &mut rng);
    assert!(
        first.is_ok(),
        "a fresh ephemeral from the same identity is a rotation"
    );
    let again =
        w.b.responder
            .handle_init(w.now, &msg1, live.as_ref(), &mut rng);
    assert!(
        matches!(again, Err(HandshakeError::Replay)),
        "invariant handshake_replay_dropped"
    );
    w.run(w.elapsed() + Duration::from_secs(1), |_| false);
}

#[test]
fn restarted_peer_rehandshakes_and_replaces_the_session() {
    let mut w = connected(11);
    let old_ephemeral = w.b.session.as_ref().unwrap().initiator_ephemeral;
    let old_a = w.a.session.take().unwrap();
    // A restarts: same identity, no state, fresh randomness.
    let (a_id, b_id) = ids();
    w.a = Dialer::new(a_id, b_id, PSK, 0x1234);
    let horizon = w.elapsed() + Duration::from_secs(5);
    w.run(horizon, |w| {
        w.a.session.is_some()
            && w.b
                .session
                .as_ref()
                .is_some_and(|s| s.initiator_ephemeral != old_ephemeral)
    });
    let (a, b) = (w.a.session.as_ref().unwrap(), w.b.session.as_ref().unwrap());
    assert_ne!(
        b.initiator_ephemeral, old_ephemeral,
        "invariant session_rotated"
    );
    assert_eq!(
        b.initiator_ephemeral, a.initiator_ephemeral,
        "invariant rotated_to_new_handshake"
    );
    assert_eq!(w.b.promotions, 2, "invariant one_promotion_per_handshake");
    // Traffic under the old keys no longer reaches the new session.
    let mut stale = Vec::new();
    seal_datagram(
        &old_a.tx,
        Header::new(PacketKind::Data, b.peer_node, a.peer_node),
        b"old",
        &mut stale,
    )
    .unwrap();
    assert!(
        matches!(
            open_datagram(&b.rx, &mut stale),
            Err(OpenError::Authentication)
        ),
        "invariant old_keys_dead"
    );
}

#[test]
fn wrong_psk_never_yields_a_confirmed_session() {
    for seed in 0..5 {
        let mut w = world(PERFECT, seed, [0x11; 32]);
        let budget = HandshakeBackoff::new(BackoffConfig::default()).total_budget();
        w.run(budget + Duration::from_secs(15), |w| {
            w.a.gave_up && w.link.next_at().is_none()
        });
        assert!(
            w.a.session.is_none(),
            "invariant initiator_never_established (seed {seed})"
        );
        assert_eq!(
            w.a.auth_failures,
            BackoffConfig::default().max_attempts,
            "invariant every_attempt_fails_authentication"
        );
        assert!(w.a.gave_up, "invariant retries_bounded (seed {seed})");
        assert!(
            w.b.session.is_none() && !w.b.confirmed(),
            "invariant responder_never_confirmed (seed {seed})"
        );
        assert!(
            w.b.pending.iter().all(|p| !p.is_confirmed()
                && p.is_unconfirmed_expired(w.now + ResponderConfig::default().confirm_timeout)),
            "invariant pending_sessions_expire (seed {seed})"
        );
    }
}

#[test]
fn silent_peer_goes_suspected_then_failed_on_time() {
    let mut w = connected(21);
    // Healthy exchange for 5 s: no events.
    let until = w.elapsed() + Duration::from_secs(5);
    w.run(until, |_| false);
    assert!(
        w.a.events.is_empty(),
        "invariant no_false_suspicion: {:?}",
        w.a.events
    );
    let srtt =
        w.a.liveness
            .as_ref()
            .unwrap()
            .rtt()
            .srtt()
            .expect("rtt measured");
    assert_eq!(srtt, 10 * MS, "invariant rtt_is_two_link_latencies");
    // B falls silent (everything B sends is lost).
    w.link.blocked_to[A] = true;
    let until = w.elapsed() + Duration::from_secs(40);
    w.run(until, |_| false);
    // Replies already in flight when the link went dark still count: read it afterwards.
    let last_heard = w.a.liveness.as_ref().unwrap().last_heard() - w.origin;
    let config = LivenessConfig::default();
    assert_eq!(
        w.a.events,
        vec![
            (last_heard + config.suspect_after, LivenessEvent::Suspected),
            (last_heard + config.fail_after, LivenessEvent::Failed),
            (last_heard + config.idle_timeout, LivenessEvent::IdleTimeout),
        ],
        "invariant detector_fires_at_configured_times"
    );
    // B speaks again: recovery.
    w.link.blocked_to[A] = false;
    let until = w.elapsed() + Duration::from_secs(2);
    w.run(until, |_| false);
    assert_eq!(
        w.a.events.last().map(|e| e.1),
        Some(LivenessEvent::Recovered),
        "invariant recovers_on_traffic"
    );
}
