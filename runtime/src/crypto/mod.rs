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
