//! Handshake unit tests (two in-memory parties, no network).

use std::time::Duration;

use netrun_messages::header::HEADER_LEN;
use netrun_messages::{Header, Identity, NodeId, PacketKind};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;

use super::*;
use crate::crypto::{open_datagram, open_heartbeat, seal_datagram, seal_heartbeat};
use crate::test_clock::t0;

const PSK: [u8; 32] = [7; 32];

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

fn parties() -> (Identity, Identity) {
    (Identity::from_seed([1; 32]), Identity::from_seed([2; 32]))
}

#[test]
fn completes_and_keys_match() {
    let (a, b) = parties();
    let now = t0();
    let mut r = rng(1);
    let (mut init, msg1) = Initiator::start(now, &a, b.entity_id(), &PSK, 0xabc, &mut r).unwrap();
    assert_eq!(msg1.len(), HEADER_LEN + INIT_LEN);
    let (h1, _) = Header::parse(&msg1).unwrap();
    assert_eq!(
        (h1.kind, h1.src, h1.dst, h1.stream, h1.counter),
        (
            PacketKind::HandshakeInit,
            a.node_id(),
            b.node_id(),
            0xabc,
            0
        )
    );

    let mut responder = Responder::new(b.clone(), &PSK, ResponderConfig::default());
    let (resp_side, msg2) = responder.handle_init(now, &msg1, None, &mut r).unwrap();
    assert_eq!(resp_side.peer, a.entity_id());
    assert_eq!(resp_side.peer_node, a.node_id());
    assert!(!resp_side.is_confirmed());
    assert_eq!(msg2.len(), HEADER_LEN + RESPONSE_LEN);

    let init_side = init.handle_response(now, &msg2).unwrap();
    assert!(init_side.is_confirmed());
    assert_eq!(init_side.peer, b.entity_id());
    assert_eq!(init_side.initiator_ephemeral, resp_side.initiator_ephemeral);
    assert!(matches!(
        init.handle_response(now, &msg2),
        Err(HandshakeError::Finished)
    ));

    // Key confirmation: the initiator's first heartbeat confirms the responder's side.
    let mut out = Vec::new();
    seal_heartbeat(&init_side.tx, a.node_id(), b.node_id(), 0, &mut out).unwrap();
    open_heartbeat(&resp_side.rx, &out).unwrap();
    assert!(resp_side.is_confirmed());
    // And data flows both ways.
    let header = Header::new(PacketKind::Data, b.node_id(), a.node_id());
    seal_datagram(&resp_side.tx, header, b"hi", &mut out).unwrap();
    let (_, range) = open_datagram(&init_side.rx, &mut out).unwrap();
    assert_eq!(&out[range], b"hi");
}

#[test]
fn deterministic_under_seeded_rng() {
    let (a, b) = parties();
    let now = t0();
    let (_, m1) = Initiator::start(now, &a, b.entity_id(), &PSK, 1, &mut rng(5)).unwrap();
    let (_, m2) = Initiator::start(now, &a, b.entity_id(), &PSK, 1, &mut rng(5)).unwrap();
    let (_, m3) = Initiator::start(now, &a, b.entity_id(), &PSK, 1, &mut rng(6)).unwrap();
    assert_eq!(m1, m2);
    assert_ne!(m1, m3);
}

#[test]
fn wrong_psk_fails_at_initiator_and_never_confirms_responder() {
    let (a, b) = parties();
    let now = t0();
    let mut r = rng(2);
    let (mut init, msg1) = Initiator::start(now, &a, b.entity_id(), &[9; 32], 1, &mut r).unwrap();
    let mut responder = Responder::new(b, &PSK, ResponderConfig::default());
    let (resp_side, msg2) = responder.handle_init(now, &msg1, None, &mut r).unwrap();
    let err = init.handle_response(now, &msg2).unwrap_err();
    assert!(matches!(err, HandshakeError::Authentication), "{err}");
    assert!(err.to_string().contains("psk"));
    assert!(!resp_side.is_confirmed());
    assert!(resp_side.is_unconfirmed_expired(now + Duration::from_secs(10)));
    assert!(!resp_side.is_unconfirmed_expired(now + Duration::from_secs(9)));
}

#[test]
fn wrong_responder_key_or_header_fails_at_responder() {
    let (a, b) = parties();
    let c = Identity::from_seed([3; 32]);
    let now = t0();
    let mut r = rng(3);
    // Dialing c's key but sending to b's node id: b cannot decrypt.
    let (_, mut msg1) = Initiator::start(now, &a, c.entity_id(), &PSK, 1, &mut r).unwrap();
    msg1[16..24].copy_from_slice(&b.node_id().0.to_le_bytes());
    let mut responder = Responder::new(b.clone(), &PSK, ResponderConfig::default());
    assert!(matches!(
        responder.handle_init(now, &msg1, None, &mut r),
        Err(HandshakeError::Authentication)
    ));
    // A tampered source node id breaks the prologue.
    let (_, mut msg1) = Initiator::start(now, &a, b.entity_id(), &PSK, 1, &mut r).unwrap();
    msg1[8] ^= 1;
    assert!(matches!(
        responder.handle_init(now, &msg1, None, &mut r),
        Err(HandshakeError::Authentication)
    ));
    // Not addressed to us.
    let (_, msg1) = Initiator::start(now, &a, c.entity_id(), &PSK, 1, &mut r).unwrap();
    assert!(matches!(
        responder.handle_init(now, &msg1, None, &mut r),
        Err(HandshakeError::NotForUs(_))
    ));
    // Wrong kind and truncation.
    let (_, mut msg1) = Initiator::start(now, &a, b.entity_id(), &PSK, 1, &mut r).unwrap();
    msg1[1] = PacketKind::HandshakeResponse as u8;
    assert!(matches!(
        responder.handle_init(now, &msg1, None, &mut r),
        Err(HandshakeError::UnexpectedKind { .. })
    ));
    assert!(matches!(
        responder.handle_init(now, &msg1[..60], None, &mut r),
        Err(HandshakeError::Malformed(_))
    ));
}

#[test]
fn identity_claim_must_match_static_and_node_id() {
    let (a, b) = parties();
    let mallory = Identity::from_seed([4; 32]);
    let now = t0();
    let mut r = rng(4);
    let mut responder = Responder::new(b.clone(), &PSK, ResponderConfig::default());
    // Mallory proves her own static key but claims a's ed25519 key and a's node id.
    let mut state = noise::build(
        true,
        &mallory.x25519_secret(),
        Some(&b.x25519_public()),
        &PSK,
        &prologue(a.node_id(), b.node_id()),
        zeroize::Zeroizing::new([8; 32]),
    )
    .unwrap();
    let mut header = Header::new(PacketKind::HandshakeInit, a.node_id(), b.node_id());
    header.payload_len = INIT_LEN as u32;
    let mut msg1 = vec![0u8; HEADER_LEN + INIT_LEN];
    msg1[..HEADER_LEN].copy_from_slice(&header.encode());
    state
        .write_message(&a.public_key(), &mut msg1[HEADER_LEN..])
        .unwrap();
    assert!(matches!(
        responder.handle_init(now, &msg1, None, &mut r),
        Err(HandshakeError::IdentityMismatch)
    ));
}

#[test]
fn replay_and_rotation_at_responder() {
    let (a, b) = parties();
    let now = t0();
    let mut r = rng(5);
    let mut responder = Responder::new(b.clone(), &PSK, ResponderConfig::default());
    let (_, msg1) = Initiator::start(now, &a, b.entity_id(), &PSK, 1, &mut r).unwrap();
    let (first, _) = responder.handle_init(now, &msg1, None, &mut r).unwrap();
    // The same message again: dropped by the recent table before any DH work...
    assert!(matches!(
        responder.handle_init(now, &msg1, None, &mut r),
        Err(HandshakeError::Replay)
    ));
    // ...and by the rotation rule once the table forgot it.
    let later = now + Duration::from_secs(200);
    let live = first.live(later);
    assert!(matches!(
        responder.handle_init(later, &msg1, Some(&live), &mut r),
        Err(HandshakeError::Replay)
    ));
    // A restart of `a` (fresh ephemeral, same identity) is a rotation.
    let (_, fresh) = Initiator::start(later, &a, b.entity_id(), &PSK, 2, &mut r).unwrap();
    let (second, _) = responder
        .handle_init(later, &fresh, Some(&live), &mut r)
        .unwrap();
    assert_ne!(second.initiator_ephemeral, first.initiator_ephemeral);
    assert_eq!(responder.recent_len(), 1);
    // After the rotation, the superseded initiation replayed is still dropped before DH.
    let (_, older) = Initiator::start(later, &a, b.entity_id(), &PSK, 3, &mut r).unwrap();
    let (third, _) = responder
        .handle_init(later, &older, Some(&second.live(later)), &mut r)
        .unwrap();
    assert!(matches!(
        responder.handle_init(later, &fresh, Some(&third.live(later)), &mut r),
        Err(HandshakeError::Replay)
    ));
}

#[test]
fn responder_table_is_bounded() {
    let b = Identity::from_seed([2; 32]);
    let now = t0();
    let mut r = rng(6);
    let config = ResponderConfig {
        max_recent: 3,
        ..ResponderConfig::default()
    };
    let mut responder = Responder::new(b.clone(), &PSK, config);
    for i in 0..6u8 {
        let a = Identity::from_seed([10 + i; 32]);
        let (_, msg1) = Initiator::start(now, &a, b.entity_id(), &PSK, 1, &mut r).unwrap();
        responder
            .handle_init(now + Duration::from_millis(i.into()), &msg1, None, &mut r)
            .unwrap();
    }
    assert_eq!(responder.recent_len(), 3);
}

#[test]
fn response_checks_do_not_consume_the_handshake() {
    let (a, b) = parties();
    let now = t0();
    let mut r = rng(7);
    let (mut init, msg1) = Initiator::start(now, &a, b.entity_id(), &PSK, 42, &mut r).unwrap();
    let mut responder = Responder::new(b, &PSK, ResponderConfig::default());
    let (_, msg2) = responder.handle_init(now, &msg1, None, &mut r).unwrap();
    let mut wrong_id = msg2.clone();
    wrong_id[24] ^= 1;
    assert!(matches!(
        init.handle_response(now, &wrong_id),
        Err(HandshakeError::UnknownHandshake(_))
    ));
    let mut wrong_src = msg2.clone();
    wrong_src[8..16].copy_from_slice(&NodeId(5).0.to_le_bytes());
    assert!(matches!(
        init.handle_response(now, &wrong_src),
        Err(HandshakeError::WrongPeer(_))
    ));
    assert!(!init.is_finished());
    assert!(init.handle_response(now, &msg2).is_ok());
}

#[test]
fn invalid_remote_key_is_refused() {
    let a = Identity::from_seed([1; 32]);
    // y = 2 is not on the curve (decompression fails).
    let mut bad = [0u8; 32];
    bad[0] = 2;
    let err = Initiator::start(
        t0(),
        &a,
        netrun_messages::EntityId(bad),
        &PSK,
        1,
        &mut rng(1),
    );
    assert!(matches!(err, Err(HandshakeError::InvalidKey)));
}

#[test]
fn different_static_for_a_live_node_is_refused_until_it_times_out() {
    let (a, b) = parties();
    let now = t0();
    let mut r = rng(8);
    let mut responder = Responder::new(b.clone(), &PSK, ResponderConfig::default());
    // The caller's live session for a's node id holds some other static key.
    let live = LiveSession {
        static_key: [9; 32],
        initiator_ephemeral: [1; 32],
        last_heard: now,
    };
    let (_, msg1) = Initiator::start(now, &a, b.entity_id(), &PSK, 1, &mut r).unwrap();
    let refused = responder.handle_init(now + Duration::from_secs(29), &msg1, Some(&live), &mut r);
    assert!(matches!(refused, Err(HandshakeError::LiveSessionExists(n)) if n == a.node_id()));
    let (_, msg1) = Initiator::start(now, &a, b.entity_id(), &PSK, 2, &mut r).unwrap();
    let accepted = responder.handle_init(now + Duration::from_secs(30), &msg1, Some(&live), &mut r);
    assert!(accepted.is_ok());
}
