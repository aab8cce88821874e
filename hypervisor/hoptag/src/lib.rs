//! Per-hop packet tags (property P_comm2, secure data channel).
//!
//! Every hop of a chain (vSwitch → middlebox → … → vSwitch) has its own key, held only by the
//! monitor. The sender of hop `h` gets a [`Trailer`] appended to the packet; the receiver of hop
//! `h` checks it. The tag is HMAC-SHA256 with the hop key over the trailer header (chain id, hop
//! index, sequence number) followed by the packet bytes, so a tag is bound to one packet, one
//! position in one chain and one sequence number. Wire layout: `docs/hop-tags.md`.
//!
//! `no_std`, no heap: this runs inside the hypervisor on every packet.
#![no_std]

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zerocopy::{
    FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned,
    byteorder::little_endian::{U32, U64},
};
use zeroize::{Zeroize, ZeroizeOnDrop};

type HmacSha256 = Hmac<Sha256>;

/// Magic bytes at the start of every trailer.
pub const MAGIC: [u8; 2] = *b"GW";
/// Trailer layout version.
pub const VERSION: u8 = 1;
/// Length of the HMAC-SHA256 tag.
pub const TAG_LEN: usize = 32;
/// Length of the authenticated trailer header.
pub const HEADER_LEN: usize = 16;
/// Length of the whole trailer appended to a packet.
pub const TRAILER_LEN: usize = HEADER_LEN + TAG_LEN;
/// Width of the replay window in packets.
pub const WINDOW: u64 = 128;

/// The authenticated header at the start of a trailer (16 bytes, little-endian integers).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct TrailerHeader {
    /// [`MAGIC`].
    pub magic: [u8; 2],
    /// [`VERSION`].
    pub version: u8,
    /// Hop index inside the chain (0 = vSwitch to first middlebox).
    pub hop: u8,
    /// Chain identifier (one chain per protected device and direction).
    pub chain: U32,
    /// Sequence number, assigned by the monitor, starting at 1.
    pub seq: U64,
}

/// The trailer: header plus tag (48 bytes), appended after the packet bytes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned,
)]
#[repr(C)]
pub struct Trailer {
    /// Authenticated metadata.
    pub header: TrailerHeader,
    /// HMAC-SHA256 over `header || packet`.
    pub tag: [u8; TAG_LEN],
}

impl Trailer {
    /// Parse the trailer at the end of `frame`, returning `(packet, trailer)`.
    pub fn split(frame: &[u8]) -> Result<(&[u8], &Trailer), HopError> {
        let (packet, trailer) = Trailer::ref_from_suffix(frame).map_err(|_| HopError::Malformed)?;
        Ok((packet, trailer))
    }
}

/// Why a hop operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HopError {
    /// Too short, bad magic or unknown version.
    #[error("malformed hop trailer")]
    Malformed,
    /// The trailer names another chain.
    #[error("packet belongs to another chain")]
    WrongChain,
    /// The trailer names another hop: the packet skipped or repeated a hop.
    #[error("packet presented at the wrong hop")]
    WrongHop,
    /// The tag does not verify: packet or metadata altered, or forged.
    #[error("hop tag mismatch")]
    BadTag,
    /// This sequence number was already accepted.
    #[error("replayed packet")]
    Replay,
    /// The sequence number is older than the replay window.
    #[error("packet older than the replay window")]
    TooOld,
    /// The sender's sequence space is used up; rekey.
    #[error("sequence numbers exhausted")]
    Exhausted,
}

/// A 256-bit hop key (per boot, from the hardware RNG). Wiped on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct HopKey([u8; 32]);

impl HopKey {
    /// Wrap key bytes.
    pub const fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl core::fmt::Debug for HopKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HopKey(..)")
    }
}

/// A keyed MAC with the HMAC pads precomputed, so each packet costs only its own blocks.
#[derive(Clone)]
struct Keyed(HmacSha256);

impl Keyed {
    fn new(key: &HopKey) -> Self {
        // HMAC accepts keys of any length.
        Self(HmacSha256::new_from_slice(&key.0).expect("HMAC takes any key length"))
    }

    fn mac(&self, header: &TrailerHeader, packet: &[u8]) -> HmacSha256 {
        let mut m = self.0.clone();
        m.update(header.as_bytes());
        m.update(packet);
        m
    }
}

/// The sending side of one hop: assigns sequence numbers and tags packets.
#[derive(Clone)]
pub struct HopSender {
    keyed: Keyed,
    chain: u32,
    hop: u8,
    next_seq: u64,
}

impl HopSender {
    /// Sender for `hop` of `chain`.
    pub fn new(key: &HopKey, chain: u32, hop: u8) -> Self {
        Self {
            keyed: Keyed::new(key),
            chain,
            hop,
            next_seq: 1,
        }
    }

    /// Tag `packet` with the next sequence number.
    pub fn tag(&mut self, packet: &[u8]) -> Result<Trailer, HopError> {
        let seq = self.next_seq;
        self.next_seq = seq.checked_add(1).ok_or(HopError::Exhausted)?;
        let header = TrailerHeader {
            magic: MAGIC,
            version: VERSION,
            hop: self.hop,
            chain: U32::new(self.chain),
            seq: U64::new(seq),
        };
        let tag = self
            .keyed
            .mac(&header, packet)
            .finalize()
            .into_bytes()
            .into();
        Ok(Trailer { header, tag })
    }
}

/// The receiving side of one hop: checks tags and rejects replays.
#[derive(Clone)]
pub struct HopReceiver {
    keyed: Keyed,
    chain: u32,
    hop: u8,
    window: ReplayWindow,
}

impl HopReceiver {
    /// Receiver for `hop` of `chain`.
    pub fn new(key: &HopKey, chain: u32, hop: u8) -> Self {
        Self {
            keyed: Keyed::new(key),
            chain,
            hop,
            window: ReplayWindow::new(),
        }
    }

    /// Check `trailer` against `packet`; on success the sequence number is marked as seen.
    ///
    /// The replay window is only updated after the tag verifies, so forged packets cannot
    /// push it forward. The tag comparison is constant time.
    pub fn check(&mut self, packet: &[u8], trailer: &Trailer) -> Result<u64, HopError> {
        let h = &trailer.header;
        if h.magic != MAGIC || h.version != VERSION {
            return Err(HopError::Malformed);
        }
        if h.chain.get() != self.chain {
            return Err(HopError::WrongChain);
        }
        if h.hop != self.hop {
            return Err(HopError::WrongHop);
        }
        let seq = h.seq.get();
        self.window.precheck(seq)?;
        self.keyed
            .mac(h, packet)
            .verify_slice(&trailer.tag)
            .map_err(|_| HopError::BadTag)?;
        self.window.accept(seq);
        Ok(seq)
    }

    /// Check a whole frame (`packet || trailer`), returning the packet bytes.
    pub fn check_frame<'f>(&mut self, frame: &'f [u8]) -> Result<&'f [u8], HopError> {
        let (packet, trailer) = Trailer::split(frame)?;
        self.check(packet, trailer)?;
        Ok(packet)
    }
}

/// Sliding anti-replay window of [`WINDOW`] sequence numbers (as in RFC 4303 §3.4.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    /// Highest sequence number accepted (0: none yet).
    top: u64,
    /// Bit `i` set: `top - i` was accepted.
    seen: u128,
}

impl ReplayWindow {
    /// Nothing seen yet.
    pub const fn new() -> Self {
        Self { top: 0, seen: 0 }
    }

    /// Would `seq` be accepted? Does not change the window.
    pub fn precheck(&self, seq: u64) -> Result<(), HopError> {
        if seq == 0 {
            return Err(HopError::Malformed);
        }
        if seq > self.top {
            return Ok(());
        }
        let age = self.top - seq;
        if age >= WINDOW {
            Err(HopError::TooOld)
        } else if self.seen & (1u128 << age) != 0 {
            Err(HopError::Replay)
        } else {
            Ok(())
        }
    }

    /// Mark `seq` as seen. Call only after [`ReplayWindow::precheck`] and tag verification.
    pub fn accept(&mut self, seq: u64) {
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = seq;
        } else {
            self.seen |= 1u128 << (self.top - seq);
        }
    }
}
