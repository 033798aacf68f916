//! Discovery wire types: pingwaves, signed peer lists and Kademlia DHT messages.
//!
//! All three travel as bodies of a [control envelope](crate::envelope) under
//! [`Subprotocol::PINGWAVE`](crate::Subprotocol::PINGWAVE),
//! [`Subprotocol::PEER_EXCHANGE`](crate::Subprotocol::PEER_EXCHANGE) and
//! [`Subprotocol::DHT`](crate::Subprotocol::DHT). They are hand-encoded, little-endian, and
//! start with a version byte ([`DISCOVERY_VERSION`]) and a kind byte. Every decoder is
//! total: it bounds each count and length against a constant before it allocates, refuses
//! non-zero reserved bytes and trailing bytes, and never panics. Layouts are in
//! `docs/protocol/discovery.md`.
//!
//! Nothing decoded here is an identity. A [`PeerEntry`] names a key and addresses that a node
//! *may* try to open a session with; the Noise handshake is what proves who answers.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use thiserror::Error;

use crate::error::DecodeError;
use crate::identity::{Identity, Signature, SignatureError};
use crate::ids::{EntityId, NodeId};
use crate::reader::Reader;

/// Version byte of every discovery message.
pub const DISCOVERY_VERSION: u8 = 1;
/// Encoded size of a [`Pingwave`].
pub const PINGWAVE_LEN: usize = 32;
/// Encoded size of a [`PingwaveEcho`].
pub const PINGWAVE_ECHO_LEN: usize = 24;
/// Encoded size of a [`PingwaveWithdraw`].
pub const PINGWAVE_WITHDRAW_LEN: usize = 24;
/// Most addresses one peer entry carries: a node rarely has more than a v4, a v6 and two
/// mapped addresses, and the bound keeps an entry under 100 bytes.
pub const MAX_ADDRS_PER_PEER: usize = 4;
/// Most entries in one signed peer list: enough to seed a new node's first lookups, small
/// enough (< 4 KiB) to fit one datagram.
pub const MAX_PEER_LIST_ENTRIES: usize = 32;
/// Most contacts in one DHT `Nodes` response: Kademlia's k.
pub const MAX_DHT_CONTACTS: usize = 20;
/// Largest value a DHT record carries: a contact record is under 100 bytes; 1 KiB leaves
/// room for small service records while keeping a `Value` response inside one datagram.
pub const MAX_DHT_VALUE_LEN: usize = 1024;

const KIND_WAVE: u8 = 1;
const KIND_ECHO: u8 = 2;
const KIND_WITHDRAW: u8 = 3;
const PEER_LIST_KIND: u8 = 1;
const PEER_LIST_CONTEXT: &[u8] = b"netrun peer list v1\0";
const PEER_LIST_FIXED: usize = 4 + 8 + 32 + 8;
const CONTACT_KIND: u8 = 2;
const CONTACT_CONTEXT: &[u8] = b"netrun contact v1\0";
/// Version, kind, `issued_at_ms` and signature: everything of a contact record but its entry.
const CONTACT_FIXED: usize = 2 + 8 + 64;
/// Largest encoded [`SignedContact`]: a peer entry with [`MAX_ADDRS_PER_PEER`] IPv6
/// addresses plus the fixed part; well under [`MAX_DHT_VALUE_LEN`].
pub const MAX_SIGNED_CONTACT_LEN: usize = CONTACT_FIXED + 33 + MAX_ADDRS_PER_PEER * 19;

// ---------------------------------------------------------------------------------------
// Pingwave

/// A pingwave: a periodic probe flooded to a hop radius.
///
/// The origin stamps `hops = 0`, `ttl = radius` and its own monotonic `sent_at_micros`. Each
/// relay adds one hop, takes one TTL and adds the RTT of the link it arrived on to
/// `path_rtt_micros`; a direct neighbour (it arrives with `hops == 0`) echoes `seq` and
/// `sent_at_micros` back so the origin measures the link RTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pingwave {
    /// The node that started the wave.
    pub origin: NodeId,
    /// The origin's wave counter; larger is fresher.
    pub seq: u64,
    /// Hops the wave may still travel, counting the link it arrived on: the origin stamps
    /// the radius, and a receiver propagates only while `ttl > 1`, so a wave reaches nodes
    /// at most `radius` hops away.
    pub ttl: u8,
    /// Hops the wave has travelled before this receiver.
    pub hops: u8,
    /// Sum of measured link RTTs along the path, in microseconds (saturating).
    pub path_rtt_micros: u32,
    /// The origin's monotonic clock at sending, in microseconds; only the origin reads it.
    pub sent_at_micros: u64,
}

/// A direct neighbour's answer to a pingwave, so the origin can measure the link RTT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PingwaveEcho {
    /// The wave's sequence number.
    pub seq: u64,
    /// The wave's `sent_at_micros`, returned unchanged.
    pub sent_at_micros: u64,
}

/// A neighbour's notice that it can no longer be used to reach `origin`.
///
/// Sent over the session to direct neighbours only. The receiver drops the route to
/// `origin` it learned through the sender, and only if the last wave of `origin` that came
/// through the sender is not fresher than `seq`, so a delayed notice cannot remove a route
/// the sender has re-learned since.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PingwaveWithdraw {
    /// The destination the sender no longer reaches (or reaches through the receiver).
    pub origin: NodeId,
    /// The freshest wave sequence of `origin` the sender had seen.
    pub seq: u64,
}

/// Any pingwave message, as decoded from a `PINGWAVE` envelope body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PingwaveMessage {
    /// A probe.
    Wave(Pingwave),
    /// An echo of a probe.
    Echo(PingwaveEcho),
    /// A route withdrawal.
    Withdraw(PingwaveWithdraw),
}

impl Pingwave {
    /// Encodes the fixed 32-byte layout.
    pub fn encode(&self) -> [u8; PINGWAVE_LEN] {
        let mut out = [0u8; PINGWAVE_LEN];
        out[0] = DISCOVERY_VERSION;
        out[1] = KIND_WAVE;
        out[2] = self.ttl;
        out[3] = self.hops;
        out[4..8].copy_from_slice(&self.path_rtt_micros.to_le_bytes());
        out[8..16].copy_from_slice(&self.origin.0.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.sent_at_micros.to_le_bytes());
        out
    }
}

impl PingwaveEcho {
    /// Encodes the fixed 24-byte layout.
    pub fn encode(&self) -> [u8; PINGWAVE_ECHO_LEN] {
        let mut out = [0u8; PINGWAVE_ECHO_LEN];
        out[0] = DISCOVERY_VERSION;
        out[1] = KIND_ECHO;
        out[8..16].copy_from_slice(&self.seq.to_le_bytes());
        out[16..24].copy_from_slice(&self.sent_at_micros.to_le_bytes());
        out
    }
}

impl PingwaveWithdraw {
    /// Encodes the fixed 24-byte layout.
    pub fn encode(&self) -> [u8; PINGWAVE_WITHDRAW_LEN] {
        let mut out = [0u8; PINGWAVE_WITHDRAW_LEN];
        out[0] = DISCOVERY_VERSION;
        out[1] = KIND_WITHDRAW;
        out[8..16].copy_from_slice(&self.origin.0.to_le_bytes());
        out[16..24].copy_from_slice(&self.seq.to_le_bytes());
        out
    }
}

impl PingwaveMessage {
    /// Encodes any of the messages.
    pub fn to_vec(&self) -> Vec<u8> {
        match self {
            Self::Wave(w) => w.encode().to_vec(),
            Self::Echo(e) => e.encode().to_vec(),
            Self::Withdraw(w) => w.encode().to_vec(),
        }
    }

    /// Decodes a pingwave, an echo or a withdrawal; the length must match the kind exactly.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        r.version(DISCOVERY_VERSION, "pingwave")?;
        match r.u8()? {
            KIND_WAVE => {
                let ttl = r.u8()?;
                let hops = r.u8()?;
                let path_rtt_micros = r.u32()?;
                let wave = Pingwave {
                    origin: NodeId(r.u64()?),
                    seq: r.u64()?,
                    ttl,
                    hops,
                    path_rtt_micros,
                    sent_at_micros: r.u64()?,
                };
                r.finish()?;
                Ok(Self::Wave(wave))
            }
            KIND_ECHO => {
                r.reserved::<6>("pingwave echo")?;
                let echo = PingwaveEcho {
                    seq: r.u64()?,
                    sent_at_micros: r.u64()?,
                };
                r.finish()?;
                Ok(Self::Echo(echo))
            }
            KIND_WITHDRAW => {
                r.reserved::<6>("pingwave withdraw")?;
                let withdraw = PingwaveWithdraw {
                    origin: NodeId(r.u64()?),
                    seq: r.u64()?,
                };
                r.finish()?;
                Ok(Self::Withdraw(withdraw))
            }
            _ => Err(DecodeError::Invalid("pingwave kind")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Peer entries and signed peer lists

/// A peer a node has heard of: a public key and where it might be reached.
///
/// The node id is derived from the key ([`PeerEntry::node_id`]), never carried separately,
/// so an entry cannot pair one node's id with another's key. It is still only a hint: the
/// handshake proves the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerEntry {
    /// The peer's ed25519 public key.
    pub public_key: EntityId,
    /// Addresses to try, at most [`MAX_ADDRS_PER_PEER`].
    pub addrs: Vec<SocketAddr>,
}

impl PeerEntry {
    /// The node id the key derives.
    pub fn node_id(&self) -> NodeId {
        self.public_key.node_id()
    }

    /// Encoded size.
    pub fn encoded_len(&self) -> usize {
        33 + self.addrs.iter().map(socket_addr_len).sum::<usize>()
    }

    /// Appends the encoding: key, address count, then per address a family byte (4 or 6),
    /// the IP and the port.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.public_key.0);
        let n = self.addrs.len().min(MAX_ADDRS_PER_PEER);
        out.push(n as u8);
        for addr in &self.addrs[..n] {
            put_socket_addr(out, addr);
        }
    }

    /// Decodes one entry from the front of `buf`, returning it and the bytes used.
    pub fn decode_prefix(buf: &[u8]) -> Result<(Self, usize), DecodeError> {
        let mut r = Reader::new(buf);
        let entry = Self::read(&mut r)?;
        Ok((entry, r.position()))
    }

    fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let public_key = EntityId(r.array::<32>()?);
        let count = usize::from(r.u8()?);
        if count > MAX_ADDRS_PER_PEER {
            return Err(DecodeError::TooLong {
                what: "peer addresses",
                len: count,
                max: MAX_ADDRS_PER_PEER,
            });
        }
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            addrs.push(read_socket_addr(r)?);
        }
        Ok(Self { public_key, addrs })
    }
}

/// A peer list signed by the node that sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPeerList {
    /// The signer's node id; must derive from `signer_key`.
    pub signer: NodeId,
    /// The signer's public key.
    pub signer_key: EntityId,
    /// The signer's wall clock when it signed, in milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// The peers, at most [`MAX_PEER_LIST_ENTRIES`].
    pub entries: Vec<PeerEntry>,
    /// ed25519 signature over the domain-separated encoding of everything above.
    pub signature: Signature,
}

/// Why a peer list could not be built or was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PeerListError {
    /// More entries than [`MAX_PEER_LIST_ENTRIES`].
    #[error("peer list has {0} entries, more than allowed")]
    TooManyEntries(usize),
    /// An entry has more than [`MAX_ADDRS_PER_PEER`] addresses.
    #[error("peer entry has {0} addresses, more than allowed")]
    TooManyAddrs(usize),
    /// The signer node id does not derive from the signer key.
    #[error("signer node id does not match the signer key")]
    SignerMismatch,
    /// The signature does not verify under the signer key.
    #[error("peer list signature: {0}")]
    Signature(#[from] SignatureError),
}

impl SignedPeerList {
    /// Signs `entries` as `identity` at wall-clock time `issued_at_ms`.
    pub fn sign(
        identity: &Identity,
        issued_at_ms: u64,
        entries: Vec<PeerEntry>,
    ) -> Result<Self, PeerListError> {
        if entries.len() > MAX_PEER_LIST_ENTRIES {
            return Err(PeerListError::TooManyEntries(entries.len()));
        }
        if let Some(e) = entries.iter().find(|e| e.addrs.len() > MAX_ADDRS_PER_PEER) {
            return Err(PeerListError::TooManyAddrs(e.addrs.len()));
        }
        let mut list = Self {
            signer: identity.node_id(),
            signer_key: identity.entity_id(),
            issued_at_ms,
            entries,
            signature: Signature([0; 64]),
        };
        let mut msg = PEER_LIST_CONTEXT.to_vec();
        list.encode_unsigned(&mut msg);
        list.signature = identity.sign(&msg);
        Ok(list)
    }

    /// Checks the signer id against the key and the signature against the contents.
    pub fn verify(&self) -> Result<(), PeerListError> {
        if NodeId::from_public_key(&self.signer_key.0) != self.signer {
            return Err(PeerListError::SignerMismatch);
        }
        let mut msg = PEER_LIST_CONTEXT.to_vec();
        self.encode_unsigned(&mut msg);
        self.signer_key.verify(&msg, &self.signature)?;
        Ok(())
    }

    /// Encodes the list with its signature.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            PEER_LIST_FIXED
                + 64
                + self
                    .entries
                    .iter()
                    .map(PeerEntry::encoded_len)
                    .sum::<usize>(),
        );
        self.encode_unsigned(&mut out);
        out.extend_from_slice(&self.signature.0);
        out
    }

    fn encode_unsigned(&self, out: &mut Vec<u8>) {
        let n = self.entries.len().min(MAX_PEER_LIST_ENTRIES);
        out.push(DISCOVERY_VERSION);
        out.push(PEER_LIST_KIND);
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.extend_from_slice(&self.signer.0.to_le_bytes());
        out.extend_from_slice(&self.signer_key.0);
        out.extend_from_slice(&self.issued_at_ms.to_le_bytes());
        for e in &self.entries[..n] {
            e.encode_into(out);
        }
    }

    /// Decodes a list (the signature is not checked here; call [`verify`](Self::verify)).
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        r.version(DISCOVERY_VERSION, "peer list")?;
        if r.u8()? != PEER_LIST_KIND {
            return Err(DecodeError::Invalid("peer list kind"));
        }
        let count = usize::from(r.u16()?);
        if count > MAX_PEER_LIST_ENTRIES {
            return Err(DecodeError::TooLong {
                what: "peer list entries",
                len: count,
                max: MAX_PEER_LIST_ENTRIES,
            });
        }
        let signer = NodeId(r.u64()?);
        let signer_key = EntityId(r.array::<32>()?);
        let issued_at_ms = r.u64()?;
        let mut entries = Vec::with_capacity(count);
        for _ in 0..count {
            entries.push(PeerEntry::read(&mut r)?);
        }
        let signature = Signature(r.array::<64>()?);
        r.finish()?;
        Ok(Self {
            signer,
            signer_key,
            issued_at_ms,
            entries,
            signature,
        })
    }
}

/// A node's DHT contact record: its peer entry and wall-clock issue time, signed by the key
/// the entry names.
///
/// Stored under `{mesh}:node:{node id}`. The signature binds the addresses to the key, so a
/// member storing a record under another node's key cannot choose the addresses; the issue
/// time orders records, so an older one cannot replace a newer one where it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedContact {
    /// The node's key and addresses; the node id derives from the key.
    pub entry: PeerEntry,
    /// The node's wall clock when it signed, in milliseconds since the Unix epoch.
    pub issued_at_ms: u64,
    /// ed25519 signature by `entry.public_key` over the domain-separated encoding of
    /// everything above.
    pub signature: Signature,
}

/// Why a contact record could not be built or was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ContactError {
    /// The entry has more than [`MAX_ADDRS_PER_PEER`] addresses.
    #[error("contact has {0} addresses, more than allowed")]
    TooManyAddrs(usize),
    /// The entry's key is not the signing identity's key.
    #[error("contact entry does not carry the signer's key")]
    KeyMismatch,
    /// The signature does not verify under the entry's key.
    #[error("contact signature: {0}")]
    Signature(#[from] SignatureError),
}

impl SignedContact {
    /// Signs `entry` as `identity` at wall-clock time `issued_at_ms`; the entry must carry
    /// the identity's key.
    pub fn sign(
        identity: &Identity,
        issued_at_ms: u64,
        entry: PeerEntry,
    ) -> Result<Self, ContactError> {
        if entry.addrs.len() > MAX_ADDRS_PER_PEER {
            return Err(ContactError::TooManyAddrs(entry.addrs.len()));
        }
        if entry.public_key != identity.entity_id() {
            return Err(ContactError::KeyMismatch);
        }
        let mut record = Self {
            entry,
            issued_at_ms,
            signature: Signature([0; 64]),
        };
        let mut msg = CONTACT_CONTEXT.to_vec();
        record.encode_unsigned(&mut msg);
        record.signature = identity.sign(&msg);
        Ok(record)
    }

    /// The node id the record is for (derived from the entry's key).
    pub fn node_id(&self) -> NodeId {
        self.entry.node_id()
    }

    /// Checks the signature against the contents under the entry's key.
    pub fn verify(&self) -> Result<(), ContactError> {
        let mut msg = CONTACT_CONTEXT.to_vec();
        self.encode_unsigned(&mut msg);
        self.entry.public_key.verify(&msg, &self.signature)?;
        Ok(())
    }

    /// Encodes the record with its signature.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(CONTACT_FIXED + self.entry.encoded_len());
        self.encode_unsigned(&mut out);
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Version, kind, entry, issue time: the bytes the signature covers (after the context).
    fn encode_unsigned(&self, out: &mut Vec<u8>) {
        out.push(DISCOVERY_VERSION);
        out.push(CONTACT_KIND);
        self.entry.encode_into(out);
        out.extend_from_slice(&self.issued_at_ms.to_le_bytes());
    }

    /// Decodes a record (the signature is not checked here; call [`verify`](Self::verify)).
    /// Bounded: at most [`MAX_SIGNED_CONTACT_LEN`] bytes are read, and trailing bytes are an
    /// error.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        if buf.len() > MAX_SIGNED_CONTACT_LEN {
            return Err(DecodeError::TooLong {
                what: "contact record",
                len: buf.len(),
                max: MAX_SIGNED_CONTACT_LEN,
            });
        }
        let mut r = Reader::new(buf);
        r.version(DISCOVERY_VERSION, "contact record")?;
        if r.u8()? != CONTACT_KIND {
            return Err(DecodeError::Invalid("contact record kind"));
        }
        let entry = PeerEntry::read(&mut r)?;
        let issued_at_ms = r.u64()?;
        let signature = Signature(r.array::<64>()?);
        r.finish()?;
        Ok(Self {
            entry,
            issued_at_ms,
            signature,
        })
    }
}

// ---------------------------------------------------------------------------------------
// DHT

/// A 256-bit Kademlia key or node id.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct DhtId(pub [u8; 32]);

impl DhtId {
    /// The DHT id of a node: BLAKE3 of its ed25519 public key.
    pub fn of_public_key(public_key: &EntityId) -> Self {
        Self(*blake3::hash(&public_key.0).as_bytes())
    }

    /// The DHT key of a (namespaced) key string: BLAKE3 of its UTF-8 bytes.
    pub fn of_key(key: &str) -> Self {
        Self(*blake3::hash(key.as_bytes()).as_bytes())
    }
}

impl std::fmt::Debug for DhtId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// A DHT message; a response carries the `request_id` of its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhtMessage {
    /// Chosen by the requester, echoed by the responder.
    pub request_id: u64,
    /// What the message says.
    pub body: DhtBody,
}

/// The DHT requests and responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DhtBody {
    /// Request: the contacts closest to `target` the responder knows.
    FindNode {
        /// The id looked up.
        target: DhtId,
    },
    /// Request: the value under `key`, or else the closest contacts.
    FindValue {
        /// The key looked up.
        key: DhtId,
    },
    /// Request: keep `value` under `key` for `ttl_secs` (the responder may shorten it).
    Store {
        /// The key.
        key: DhtId,
        /// Requested lifetime in seconds.
        ttl_secs: u32,
        /// The value, at most [`MAX_DHT_VALUE_LEN`] bytes.
        value: Vec<u8>,
    },
    /// Response: up to [`MAX_DHT_CONTACTS`] contacts.
    Nodes {
        /// The contacts, closest first.
        contacts: Vec<PeerEntry>,
    },
    /// Response to `FindValue`: the stored value.
    Value {
        /// The value.
        value: Vec<u8>,
    },
    /// Response to `Store`.
    StoreAck {
        /// Whether the responder kept the record.
        stored: bool,
    },
}

const DHT_FIND_NODE: u8 = 1;
const DHT_FIND_VALUE: u8 = 2;
const DHT_STORE: u8 = 3;
const DHT_NODES: u8 = 4;
const DHT_VALUE: u8 = 5;
const DHT_STORE_ACK: u8 = 6;

impl DhtMessage {
    /// Whether this is a response (it answers a request with the same id).
    pub fn is_response(&self) -> bool {
        matches!(
            self.body,
            DhtBody::Nodes { .. } | DhtBody::Value { .. } | DhtBody::StoreAck { .. }
        )
    }

    /// Encodes the message: version, kind, two reserved bytes, request id, then the body.
    /// Counts and lengths beyond the limits are truncated to them.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(DISCOVERY_VERSION);
        let kind = match &self.body {
            DhtBody::FindNode { .. } => DHT_FIND_NODE,
            DhtBody::FindValue { .. } => DHT_FIND_VALUE,
            DhtBody::Store { .. } => DHT_STORE,
            DhtBody::Nodes { .. } => DHT_NODES,
            DhtBody::Value { .. } => DHT_VALUE,
            DhtBody::StoreAck { .. } => DHT_STORE_ACK,
        };
        out.push(kind);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&self.request_id.to_le_bytes());
        match &self.body {
            DhtBody::FindNode { target: id } | DhtBody::FindValue { key: id } => {
                out.extend_from_slice(&id.0);
            }
            DhtBody::Store {
                key,
                ttl_secs,
                value,
            } => {
                out.extend_from_slice(&key.0);
                out.extend_from_slice(&ttl_secs.to_le_bytes());
                put_value(&mut out, value);
            }
            DhtBody::Nodes { contacts } => {
                let n = contacts.len().min(MAX_DHT_CONTACTS);
                out.push(n as u8);
                for c in &contacts[..n] {
                    c.encode_into(&mut out);
                }
            }
            DhtBody::Value { value } => put_value(&mut out, value),
            DhtBody::StoreAck { stored } => out.push(u8::from(*stored)),
        }
        out
    }

    /// Decodes a message, bounding every count and length.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(buf);
        r.version(DISCOVERY_VERSION, "dht")?;
        let kind = r.u8()?;
        r.reserved::<2>("dht")?;
        let request_id = r.u64()?;
        let body = match kind {
            DHT_FIND_NODE => DhtBody::FindNode {
                target: DhtId(r.array::<32>()?),
            },
            DHT_FIND_VALUE => DhtBody::FindValue {
                key: DhtId(r.array::<32>()?),
            },
            DHT_STORE => DhtBody::Store {
                key: DhtId(r.array::<32>()?),
                ttl_secs: r.u32()?,
                value: read_value(&mut r)?,
            },
            DHT_NODES => {
                let n = usize::from(r.u8()?);
                if n > MAX_DHT_CONTACTS {
                    return Err(DecodeError::TooLong {
                        what: "dht contacts",
                        len: n,
                        max: MAX_DHT_CONTACTS,
                    });
                }
                let mut contacts = Vec::with_capacity(n);
                for _ in 0..n {
                    contacts.push(PeerEntry::read(&mut r)?);
                }
                DhtBody::Nodes { contacts }
            }
            DHT_VALUE => DhtBody::Value {
                value: read_value(&mut r)?,
            },
            DHT_STORE_ACK => DhtBody::StoreAck {
                stored: match r.u8()? {
                    0 => false,
                    1 => true,
                    _ => return Err(DecodeError::Invalid("store ack")),
                },
            },
            _ => return Err(DecodeError::Invalid("dht kind")),
        };
        r.finish()?;
        Ok(Self { request_id, body })
    }
}

/// Encoded size of one address: family byte, IP, port.
pub(crate) fn socket_addr_len(addr: &SocketAddr) -> usize {
    if addr.is_ipv4() { 7 } else { 19 }
}

/// Appends one address: a family byte (4 or 6), the IP, the port (u16 LE).
pub(crate) fn put_socket_addr(out: &mut Vec<u8>, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_le_bytes());
}

/// Reads one address written by [`put_socket_addr`].
pub(crate) fn read_socket_addr(r: &mut Reader<'_>) -> Result<SocketAddr, DecodeError> {
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        _ => return Err(DecodeError::Invalid("address family")),
    };
    Ok(SocketAddr::new(ip, r.u16()?))
}

fn put_value(out: &mut Vec<u8>, value: &[u8]) {
    let n = value.len().min(MAX_DHT_VALUE_LEN);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(&value[..n]);
}

fn read_value(r: &mut Reader<'_>) -> Result<Vec<u8>, DecodeError> {
    let n = usize::from(r.u16()?);
    if n > MAX_DHT_VALUE_LEN {
        return Err(DecodeError::TooLong {
            what: "dht value",
            len: n,
            max: MAX_DHT_VALUE_LEN,
        });
    }
    Ok(r.take(n)?.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
        ]
    }

    fn entry() -> impl Strategy<Value = PeerEntry> {
        (
            any::<[u8; 32]>(),
            proptest::collection::vec(addr(), 0..=MAX_ADDRS_PER_PEER),
        )
            .prop_map(|(k, addrs)| PeerEntry {
                public_key: EntityId(k),
                addrs,
            })
    }

    fn body() -> impl Strategy<Value = DhtBody> {
        prop_oneof![
            any::<[u8; 32]>().prop_map(|t| DhtBody::FindNode { target: DhtId(t) }),
            any::<[u8; 32]>().prop_map(|t| DhtBody::FindValue { key: DhtId(t) }),
            (
                any::<[u8; 32]>(),
                any::<u32>(),
                proptest::collection::vec(any::<u8>(), 0..=MAX_DHT_VALUE_LEN)
            )
                .prop_map(|(k, ttl_secs, value)| DhtBody::Store {
                    key: DhtId(k),
                    ttl_secs,
                    value
                }),
            proptest::collection::vec(entry(), 0..=MAX_DHT_CONTACTS)
                .prop_map(|contacts| DhtBody::Nodes { contacts }),
            proptest::collection::vec(any::<u8>(), 0..64)
                .prop_map(|value| DhtBody::Value { value }),
            any::<bool>().prop_map(|stored| DhtBody::StoreAck { stored }),
        ]
    }

    proptest! {
        #[test]
        fn pingwave_round_trip(origin: u64, seq: u64, ttl: u8, hops: u8, rtt: u32, sent: u64) {
            let w = PingwaveMessage::Wave(Pingwave {
                origin: NodeId(origin), seq, ttl, hops, path_rtt_micros: rtt, sent_at_micros: sent,
            });
            prop_assert_eq!(PingwaveMessage::decode(&w.to_vec()).expect("decodes"), w);
            let e = PingwaveMessage::Echo(PingwaveEcho { seq, sent_at_micros: sent });
            prop_assert_eq!(PingwaveMessage::decode(&e.to_vec()).expect("decodes"), e);
            let x = PingwaveMessage::Withdraw(PingwaveWithdraw { origin: NodeId(origin), seq });
            let bytes = x.to_vec();
            prop_assert_eq!(bytes.len(), PINGWAVE_WITHDRAW_LEN);
            prop_assert_eq!(PingwaveMessage::decode(&bytes).expect("decodes"), x);
        }

        #[test]
        fn dht_round_trip(request_id: u64, body in body()) {
            let m = DhtMessage { request_id, body };
            prop_assert_eq!(DhtMessage::decode(&m.to_vec()).expect("decodes"), m);
        }

        #[test]
        fn peer_list_round_trip(seed: [u8; 32], at: u64,
                                entries in proptest::collection::vec(entry(), 0..8)) {
            let id = Identity::from_seed(seed);
            let list = SignedPeerList::sign(&id, at, entries).expect("in bounds");
            let decoded = SignedPeerList::decode(&list.to_vec()).expect("decodes");
            prop_assert_eq!(&decoded, &list);
            prop_assert!(decoded.verify().is_ok());
        }

        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = PingwaveMessage::decode(&bytes);
            let _ = SignedPeerList::decode(&bytes);
            let _ = DhtMessage::decode(&bytes);
            let _ = PeerEntry::decode_prefix(&bytes);
            let _ = SignedContact::decode(&bytes).map(|c| c.verify());
        }

        #[test]
        fn contact_round_trip(seed: [u8; 32], at: u64, entry in entry()) {
            let id = Identity::from_seed(seed);
            let entry = PeerEntry { public_key: id.entity_id(), ..entry };
            let record = SignedContact::sign(&id, at, entry).expect("in bounds");
            let bytes = record.to_vec();
            prop_assert!(bytes.len() <= MAX_SIGNED_CONTACT_LEN);
            let decoded = SignedContact::decode(&bytes).expect("decodes");
            prop_assert_eq!(&decoded, &record);
            prop_assert!(decoded.verify().is_ok());
        }
    }

    #[test]
    fn contacts_are_signed_only_for_their_own_key_and_decoded_strictly() {
        let id = Identity::from_seed([9; 32]);
        let other = Identity::from_seed([10; 32]);
        let entry = PeerEntry {
            public_key: id.entity_id(),
            addrs: vec![SocketAddr::from(([10, 0, 0, 1], 7000))],
        };
        let foreign = PeerEntry {
            public_key: other.entity_id(),
            ..entry.clone()
        };
        assert_eq!(
            SignedContact::sign(&id, 1, foreign),
            Err(ContactError::KeyMismatch)
        );
        let too_many = PeerEntry {
            addrs: vec![SocketAddr::from(([10, 0, 0, 1], 7000)); MAX_ADDRS_PER_PEER + 1],
            ..entry.clone()
        };
        assert_eq!(
            SignedContact::sign(&id, 1, too_many),
            Err(ContactError::TooManyAddrs(MAX_ADDRS_PER_PEER + 1))
        );
        let record = SignedContact::sign(&id, 5, entry).expect("signs");
        let bytes = record.to_vec();
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            SignedContact::decode(&longer),
            Err(DecodeError::TrailingBytes(1))
        ));
        assert!(SignedContact::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(matches!(
            SignedContact::decode(&[0; MAX_SIGNED_CONTACT_LEN + 1]),
            Err(DecodeError::TooLong { .. })
        ));
        // A signed peer list is not a contact record, and vice versa.
        let list = SignedPeerList::sign(&id, 5, Vec::new()).expect("signs");
        assert!(SignedContact::decode(&list.to_vec()).is_err());
        assert!(SignedPeerList::decode(&bytes).is_err());
        // Any one flipped byte of the signed part or the signature is caught.
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            let rejected = !SignedContact::decode(&bad).is_ok_and(|c| c.verify().is_ok());
            assert!(rejected, "flipped byte {i} accepted");
        }
        // The issue time is covered by the signature.
        let replayed = SignedContact {
            issued_at_ms: 6,
            ..record
        };
        assert_eq!(
            replayed.verify(),
            Err(ContactError::Signature(SignatureError::Invalid))
        );
    }

    #[test]
    fn tampered_or_mislabelled_peer_lists_are_refused() {
        let id = Identity::from_seed([7; 32]);
        let other = Identity::from_seed([8; 32]);
        let entry = PeerEntry {
            public_key: other.entity_id(),
            addrs: vec!["10.0.0.1:4000".parse().expect("addr")],
        };
        let list = SignedPeerList::sign(&id, 5, vec![entry]).expect("signs");
        let mut bytes = list.to_vec();
        let last_addr_byte = bytes.len() - 64 - 3;
        bytes[last_addr_byte] ^= 1;
        let tampered = SignedPeerList::decode(&bytes).expect("decodes");
        assert!(matches!(
            tampered.verify(),
            Err(PeerListError::Signature(SignatureError::Invalid))
        ));
        let mut relabelled = list.clone();
        relabelled.signer = other.node_id();
        assert_eq!(relabelled.verify(), Err(PeerListError::SignerMismatch));
        let too_many = vec![
            PeerEntry {
                public_key: other.entity_id(),
                addrs: vec![]
            };
            MAX_PEER_LIST_ENTRIES + 1
        ];
        assert_eq!(
            SignedPeerList::sign(&id, 5, too_many),
            Err(PeerListError::TooManyEntries(MAX_PEER_LIST_ENTRIES + 1))
        );
    }

    #[test]
    fn oversized_counts_are_refused_before_allocation() {
        let mut m = DhtMessage {
            request_id: 1,
            body: DhtBody::Nodes { contacts: vec![] },
        }
        .to_vec();
        m[12] = (MAX_DHT_CONTACTS + 1) as u8;
        assert!(matches!(
            DhtMessage::decode(&m),
            Err(DecodeError::TooLong { .. })
        ));
        let mut v = DhtMessage {
            request_id: 1,
            body: DhtBody::Value { value: vec![] },
        }
        .to_vec();
        v[12..14].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(
            DhtMessage::decode(&v),
            Err(DecodeError::TooLong { .. })
        ));
    }
}
