//! The per-packet AEAD: ChaCha20-Poly1305 with a 64-bit counter nonce.
//!
//! [`PacketCipher`] is the data-path implementation (`ring`, chosen by measurement; see
//! `docs/adr/0003-packet-aead-backend.md`). [`PortableCipher`] is a second, independent
//! implementation (RustCrypto `chacha20poly1305`) with the same API: tests check that both
//! produce identical ciphertexts and tags, and the benches compare them.
//!
//! Nonce layout (12 bytes): 4 zero bytes ‖ counter as u64 little-endian. Each cipher caches
//! the nonce template and writes only the 8 counter bytes per packet.

use chacha20poly1305::{AeadInPlace, ChaCha20Poly1305, KeyInit};
use netrun_messages::header::TAG_LEN;
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};
use thiserror::Error;

/// ChaCha20-Poly1305 key size.
pub const KEY_LEN: usize = 32;
/// ChaCha20-Poly1305 nonce size.
pub const NONCE_LEN: usize = 12;
/// Offset of the counter inside the nonce (the first four bytes stay zero).
const COUNTER_OFFSET: usize = 4;

/// The AEAD refused to seal or open a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum AeadError {
    /// The buffer is shorter than a tag (open) or larger than the cipher can process (seal).
    #[error("buffer length {0} is not valid for the aead")]
    Length(usize),
    /// The tag does not verify: wrong key, wrong associated data, or tampered bytes.
    #[error("aead tag does not verify")]
    Authentication,
}

/// The 12-byte nonce for `counter`: 4 zero bytes ‖ counter (u64 little-endian).
#[inline]
pub fn nonce_for(counter: u64) -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    nonce[COUNTER_OFFSET..].copy_from_slice(&counter.to_le_bytes());
    nonce
}

/// ChaCha20-Poly1305 over `ring`: the data-path cipher. Seals and opens in place.
pub struct PacketCipher {
    key: LessSafeKey,
    /// Cached nonce template; only bytes `4..12` change per packet.
    template: [u8; NONCE_LEN],
}

impl PacketCipher {
    /// A cipher for a 32-byte key.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        // `UnboundKey::new` only fails for a wrong key length, which the type rules out; the
        // fallback keeps the function total without a panic path.
        let unbound =
            UnboundKey::new(&CHACHA20_POLY1305, key).unwrap_or_else(|_| unreachable_key_length());
        Self {
            key: LessSafeKey::new(unbound),
            template: [0u8; NONCE_LEN],
        }
    }

    #[inline]
    fn nonce(&self, counter: u64) -> Nonce {
        let mut nonce = self.template;
        nonce[COUNTER_OFFSET..].copy_from_slice(&counter.to_le_bytes());
        Nonce::assume_unique_for_key(nonce)
    }

    /// Encrypts `buf` in place and returns the tag. The caller guarantees that `counter` is
    /// never reused under this key (see [`TxKey`](super::TxKey)).
    #[inline]
    pub fn seal_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        let tag = self
            .key
            .seal_in_place_separate_tag(self.nonce(counter), Aad::from(aad), buf)
            .map_err(|_| AeadError::Length(buf.len()))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Verifies and decrypts `buf` (ciphertext ‖ tag) in place; returns the plaintext length
    /// (`buf.len() - TAG_LEN`). On failure the buffer content is unspecified.
    #[inline]
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, AeadError> {
        if buf.len() < TAG_LEN {
            return Err(AeadError::Length(buf.len()));
        }
        self.key
            .open_in_place(self.nonce(counter), Aad::from(aad), buf)
            .map(|plain| plain.len())
            .map_err(|_| AeadError::Authentication)
    }

    /// Verifies a tag over an empty plaintext (heartbeats) without touching any caller buffer.
    #[inline]
    pub fn verify_empty(
        &self,
        counter: u64,
        aad: &[u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AeadError> {
        let mut copy = *tag;
        self.open_in_place(counter, aad, &mut copy).map(|_| ())
    }
}

impl std::fmt::Debug for PacketCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketCipher").finish_non_exhaustive()
    }
}

/// ChaCha20-Poly1305 over RustCrypto: the reference implementation, used by tests and
/// benches to cross-check [`PacketCipher`]. Same API and nonce layout.
pub struct PortableCipher {
    aead: ChaCha20Poly1305,
}

impl PortableCipher {
    /// A cipher for a 32-byte key.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            aead: ChaCha20Poly1305::new(key.into()),
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<[u8; TAG_LEN], AeadError> {
        let nonce = nonce_for(counter);
        let tag = self
            .aead
            .encrypt_in_place_detached((&nonce).into(), aad, buf)
            .map_err(|_| AeadError::Length(buf.len()))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&tag);
        Ok(out)
    }

    /// Verifies and decrypts `buf` (ciphertext ‖ tag) in place; returns the plaintext length.
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, AeadError> {
        let Some(split) = buf.len().checked_sub(TAG_LEN) else {
            return Err(AeadError::Length(buf.len()));
        };
        let nonce = nonce_for(counter);
        let (body, tag) = buf.split_at_mut(split);
        let tag = chacha20poly1305::Tag::clone_from_slice(tag);
        self.aead
            .decrypt_in_place_detached((&nonce).into(), aad, body, &tag)
            .map_err(|_| AeadError::Authentication)?;
        Ok(split)
    }
}

impl std::fmt::Debug for PortableCipher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortableCipher").finish_non_exhaustive()
    }
}

#[cold]
fn unreachable_key_length() -> UnboundKey {
    // A 32-byte key is always accepted by ring's ChaCha20-Poly1305; this function exists only
    // to keep `PacketCipher::new` free of `unwrap`. Falling back to a fixed key would be a
    // silent security bug, so abort loudly instead.
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 8439 §2.8.2 test vector.
    const RFC_KEY: &str = "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f";
    const RFC_NONCE: &str = "070000004041424344454647";
    const RFC_AAD: &str = "50515253c0c1c2c3c4c5c6c7";
    const RFC_PLAINTEXT: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    const RFC_CIPHERTEXT: &str = "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116";
    const RFC_TAG: &str = "1ae10b594f09e26a7e902ecbd0600691";

    fn key() -> [u8; 32] {
        hex::decode(RFC_KEY).unwrap().try_into().unwrap()
    }

    #[test]
    fn rfc8439_vector_raw() {
        // The RFC nonce is not of our "4 zero bytes ‖ counter" form, so check ring directly
        // through its raw API, then both of our wrappers with our own nonce layout below.
        let nonce: [u8; 12] = hex::decode(RFC_NONCE).unwrap().try_into().unwrap();
        let aad = hex::decode(RFC_AAD).unwrap();
        let sealing = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key()).unwrap());
        let mut buf = RFC_PLAINTEXT.to_vec();
        let tag = sealing
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut buf,
            )
            .unwrap();
        assert_eq!(hex::encode(&buf), RFC_CIPHERTEXT);
        assert_eq!(hex::encode(tag.as_ref()), RFC_TAG);

        let portable = ChaCha20Poly1305::new((&key()).into());
        let mut buf = RFC_PLAINTEXT.to_vec();
        let tag = portable
            .encrypt_in_place_detached((&nonce).into(), &aad, &mut buf)
            .unwrap();
        assert_eq!(hex::encode(&buf), RFC_CIPHERTEXT);
        assert_eq!(hex::encode(tag), RFC_TAG);
    }

    #[test]
    fn rfc8439_key_and_text_through_both_wrappers() {
        let aad = hex::decode(RFC_AAD).unwrap();
        let fast = PacketCipher::new(&key());
        let portable = PortableCipher::new(&key());
        let counter = 0x4746_4544_4342_4140;
        let mut a = RFC_PLAINTEXT.to_vec();
        let mut b = RFC_PLAINTEXT.to_vec();
        let ta = fast.seal_in_place(counter, &aad, &mut a).unwrap();
        let tb = portable.seal_in_place(counter, &aad, &mut b).unwrap();
        assert_eq!(a, b);
        assert_eq!(ta, tb);
        a.extend_from_slice(&ta);
        let n = portable.open_in_place(counter, &aad, &mut a).unwrap();
        assert_eq!(&a[..n], RFC_PLAINTEXT);
    }

    #[test]
    fn nonce_layout() {
        assert_eq!(
            nonce_for(0x0102_0304_0506_0708),
            [0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]
        );
    }

    #[test]
    fn tamper_and_short_buffers_fail() {
        let c = PacketCipher::new(&[7; 32]);
        let mut buf = b"hello".to_vec();
        let tag = c.seal_in_place(1, b"aad", &mut buf).unwrap();
        buf.extend_from_slice(&tag);
        let mut bad = buf.clone();
        bad[0] ^= 1;
        assert_eq!(
            c.open_in_place(1, b"aad", &mut bad),
            Err(AeadError::Authentication)
        );
        let mut bad = buf.clone();
        assert_eq!(
            c.open_in_place(2, b"aad", &mut bad),
            Err(AeadError::Authentication)
        );
        let mut bad = buf.clone();
        assert_eq!(
            c.open_in_place(1, b"aaD", &mut bad),
            Err(AeadError::Authentication)
        );
        assert_eq!(
            c.open_in_place(1, b"aad", &mut [0u8; 15]),
            Err(AeadError::Length(15))
        );
        assert_eq!(c.open_in_place(1, b"aad", &mut buf), Ok(5));
        let empty_tag = c.seal_in_place(9, b"hb", &mut []).unwrap();
        assert_eq!(c.verify_empty(9, b"hb", &empty_tag), Ok(()));
        assert_eq!(
            c.verify_empty(10, b"hb", &empty_tag),
            Err(AeadError::Authentication)
        );
    }

    proptest! {
        #[test]
        fn ring_and_rustcrypto_agree(
            key: [u8; 32],
            counter: u64,
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            text in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let fast = PacketCipher::new(&key);
            let portable = PortableCipher::new(&key);
            let mut a = text.clone();
            let mut b = text.clone();
            let ta = fast.seal_in_place(counter, &aad, &mut a).unwrap();
            let tb = portable.seal_in_place(counter, &aad, &mut b).unwrap();
            prop_assert_eq!(&a, &b);
            prop_assert_eq!(ta, tb);
            // Each opens what the other sealed.
            a.extend_from_slice(&ta);
            b.extend_from_slice(&tb);
            let na = portable.open_in_place(counter, &aad, &mut a).unwrap();
            let nb = fast.open_in_place(counter, &aad, &mut b).unwrap();
            prop_assert_eq!(&a[..na], &text[..]);
            prop_assert_eq!(&b[..nb], &text[..]);
        }
    }
}
