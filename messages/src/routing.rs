//! The routing header: the first 24 bytes of every datagram, which is all a relay reads.
//!
//! A relay needs the destination to pick a next hop, the source to suppress loops, and the
//! TTL to bound a path. It rewrites `ttl` and `hop_count` in place and never touches (or
//! can open) the payload; those two bytes are excluded from the AEAD associated data
//! ([`Header::aad`](crate::Header::aad)), so the destination still authenticates everything
//! else. Layout: the first 24 bytes of the [packet header](crate::header).

use crate::error::{DecodeError, u64_le_at};
use crate::header::{PacketFlags, PacketKind, WIRE_VERSION};
use crate::ids::NodeId;

/// Size of the routing prefix.
pub const ROUTING_HEADER_LEN: usize = 24;

/// The fields of a datagram a relay reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoutingHeader {
    /// Packet kind (relays forward handshakes too, so a routed session can be opened).
    pub kind: PacketKind,
    /// Flags (priority scheduling).
    pub flags: PacketFlags,
    /// Hops left.
    pub ttl: u8,
    /// Hops taken.
    pub hop_count: u8,
    /// Originating node.
    pub src: NodeId,
    /// Destination node.
    pub dst: NodeId,
}

/// What a relay does with a packet after [`RoutingHeader::forward_in_place`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forward {
    /// Send it on toward `dst`; the header now carries one hop more and one TTL less.
    Onward {
        /// Where the packet is going.
        dst: NodeId,
    },
    /// The TTL ran out here: drop and count.
    TtlExpired,
}

impl RoutingHeader {
    /// Encoded size.
    pub const fn encoded_len(&self) -> usize {
        ROUTING_HEADER_LEN
    }

    /// Reads the routing fields from the front of a datagram.
    #[inline]
    pub fn parse(buf: &[u8]) -> Result<Self, DecodeError> {
        if buf.len() < ROUTING_HEADER_LEN {
            return Err(DecodeError::Truncated {
                need: ROUTING_HEADER_LEN,
                have: buf.len(),
            });
        }
        if buf[0] != WIRE_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "packet",
                version: buf[0],
            });
        }
        Ok(Self {
            kind: PacketKind::from_u8(buf[1])?,
            flags: PacketFlags::from_bits(buf[2]).ok_or(DecodeError::Reserved("flags"))?,
            ttl: buf[3],
            hop_count: buf[4],
            src: NodeId(u64_le_at(buf, 8)?),
            dst: NodeId(u64_le_at(buf, 16)?),
        })
    }

    /// Writes these fields over the first [`ROUTING_HEADER_LEN`] bytes of `out` (reserved
    /// bytes zeroed). Used by tests and by sources that build the prefix separately.
    pub fn write(&self, out: &mut [u8; ROUTING_HEADER_LEN]) {
        out[0] = WIRE_VERSION;
        out[1] = self.kind as u8;
        out[2] = self.flags.bits();
        out[3] = self.ttl;
        out[4] = self.hop_count;
        out[5..8].fill(0);
        out[8..16].copy_from_slice(&self.src.0.to_le_bytes());
        out[16..24].copy_from_slice(&self.dst.0.to_le_bytes());
    }

    /// The relay step: reads the destination and TTL and rewrites `ttl - 1` / `hop_count + 1`
    /// in place. Touches only bytes 3 and 4. A packet that arrives with TTL 0 expires here.
    #[inline]
    pub fn forward_in_place(packet: &mut [u8]) -> Result<Forward, DecodeError> {
        if packet.len() < ROUTING_HEADER_LEN {
            return Err(DecodeError::Truncated {
                need: ROUTING_HEADER_LEN,
                have: packet.len(),
            });
        }
        if packet[0] != WIRE_VERSION {
            return Err(DecodeError::UnknownVersion {
                what: "packet",
                version: packet[0],
            });
        }
        let ttl = packet[3];
        if ttl == 0 {
            return Ok(Forward::TtlExpired);
        }
        packet[3] = ttl - 1;
        packet[4] = packet[4].saturating_add(1);
        Ok(Forward::Onward {
            dst: NodeId(u64_le_at(packet, 16)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::{HEADER_LEN, Header};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn round_trip(kind in 1u8..=6, flags in 0u8..8, ttl: u8, hop_count: u8, src: u64, dst: u64) {
            let rh = RoutingHeader {
                kind: PacketKind::from_u8(kind).expect("kind"),
                flags: PacketFlags::from_bits(flags).expect("flags"),
                ttl, hop_count, src: NodeId(src), dst: NodeId(dst),
            };
            let mut out = [0u8; ROUTING_HEADER_LEN];
            rh.write(&mut out);
            prop_assert_eq!(rh.encoded_len(), out.len());
            prop_assert_eq!(RoutingHeader::parse(&out).expect("parses"), rh);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = RoutingHeader::parse(&bytes);
            let mut b = bytes.clone();
            let _ = RoutingHeader::forward_in_place(&mut b);
        }
    }

    #[test]
    fn forward_rewrites_only_ttl_and_hops_and_keeps_aad() {
        let mut header = Header::new(PacketKind::Data, NodeId(5), NodeId(9));
        header.ttl = 2;
        header.payload_len = 3;
        let mut packet = header.encode().to_vec();
        packet.extend_from_slice(&[1, 2, 3]);
        let before = packet.clone();
        assert_eq!(
            RoutingHeader::forward_in_place(&mut packet).expect("ok"),
            Forward::Onward { dst: NodeId(9) }
        );
        let (after, payload) = Header::parse(&packet).expect("parses");
        assert_eq!((after.ttl, after.hop_count), (1, 1));
        assert_eq!(payload, &[1, 2, 3]);
        assert_eq!(after.aad(), header.aad());
        let changed: Vec<usize> = (0..packet.len())
            .filter(|&i| packet[i] != before[i])
            .collect();
        assert_eq!(changed, vec![3, 4]);
        assert!(packet.len() > HEADER_LEN);
        RoutingHeader::forward_in_place(&mut packet).expect("ok");
        assert_eq!(
            RoutingHeader::forward_in_place(&mut packet).expect("ok"),
            Forward::TtlExpired
        );
    }
}
