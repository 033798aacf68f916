//! Session packet crypto: the per-packet AEAD, the replay window, send/receive keys and the
//! one-call datagram helpers the transport uses.
//!
//! ```text
//!   send:  seal_datagram(tx, header, plaintext, out)
//!            TxKey::next_counter (atomic) → Header::write → PacketCipher::seal_in_place
//!   recv:  open_datagram(rx, datagram)          open_heartbeat(rx, datagram)
//!            length → Header::parse → RxKey::precheck (lock-free)
//!            → PacketCipher::open_in_place / verify_empty → RxKey::commit (one lock)
//! ```
//!
//! Nonce = 4 zero bytes ‖ counter (u64 LE). Associated data = the header with `ttl` and
//! `hop_count` zeroed, so relays may rewrite those two bytes and nothing else. Keys come
//! from the [handshake](crate::handshake); each direction has its own key.
//!
//! ```
//! use netrun_messages::{Header, NodeId, PacketKind};
//! use netrun_runtime::crypto::{RxKey, TxKey, open_datagram, seal_datagram};
//!
//! let key = [0x42u8; 32]; // from the handshake in real use
//! let (tx, rx) = (TxKey::new(&key), RxKey::new(&key));
//! let mut header = Header::new(PacketKind::Data, NodeId(1), NodeId(2));
//! header.stream = 9;
//! let mut datagram = Vec::new(); // reuse across packets: no allocation per packet
//! seal_datagram(&tx, header, b"hello", &mut datagram)?;
//! let (opened, plaintext) = open_datagram(&rx, &mut datagram)?;
//! assert_eq!((opened.stream, &datagram[plaintext]), (9, &b"hello"[..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cipher;
mod datagram;
mod keys;
mod replay;

pub use cipher::{AeadError, KEY_LEN, NONCE_LEN, PacketCipher, PortableCipher, nonce_for};
pub use datagram::{
    MIN_SEALED_LEN, OpenError, SealError, open_datagram, open_heartbeat, seal_datagram,
    seal_heartbeat, seal_in_place,
};
pub use keys::{CounterExhausted, REJECT_AFTER_PACKETS, REKEY_AFTER_PACKETS, RxKey, TxKey};
pub use replay::{MAX_FORWARD, ReplayError, ReplayWindow, WINDOW_SIZE};
