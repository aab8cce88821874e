//! Quotes: what the vTPM signs for a verifier, and how it is encoded.
//!
//! Wire format (see `docs/quote-format.md`): a [`SignedQuote`] is the postcard encoding of
//! `{ body: bytes, signature: [u8; 64] }`; `body` is the postcard encoding of [`QuoteBody`]; the
//! signature is ed25519 over [`QUOTE_CONTEXT`] followed by `body`. Verifiers check the signature
//! over the exact bytes before decoding the body.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::{Digest, pcr::PcrBank, pcr::PcrSelection};

/// Length of a verifier nonce.
pub const NONCE_LEN: usize = 32;
/// Upper bound of an encoded quote body.
pub const BODY_MAX: usize = 512;
/// Upper bound of an encoded [`SignedQuote`].
pub const SIGNED_QUOTE_MAX: usize = BODY_MAX + 80;
/// Domain separation prefix of the signed message.
pub const QUOTE_CONTEXT: &[u8] = b"gatewarden/quote/v1\0";
/// Version of the [`QuoteBody`] layout the vTPM signs: 2 binds the whole event log
/// (`log_digest`). Format 1 (no log digest) is still decoded, and verified only where the
/// verifier is told to accept it (`docs/quote-format.md`, migration).
pub const QUOTE_FORMAT_VERSION: u16 = 2;
/// The format before the whole log was bound.
pub const QUOTE_FORMAT_1: u16 = 1;

/// What kind of monitor made the quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MonitorKind {
    /// The Gatewarden micro-hypervisor: keys and PCRs isolated from the guest.
    Hypervisor,
    /// The host software monitor used for development: keys live in an ordinary process.
    /// A verifier must never treat it as a trustworthy gateway.
    InsecureSoftwareMonitor,
}

/// Identity of the monitor that holds the vTPM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonitorIdentity {
    /// Hypervisor or insecure software monitor.
    pub kind: MonitorKind,
    /// Version string, e.g. `gatewarden-hv 0.1.0 aarch64`.
    pub version: heapless::String<48>,
    /// SHA-256 of the monitor's image (from the image manifest), or of the software monitor binary.
    pub build: Digest,
}

impl MonitorIdentity {
    /// Build an identity; `version` is truncated to 48 bytes.
    pub fn new(kind: MonitorKind, version: &str, build: Digest) -> Self {
        Self {
            kind,
            version: crate::log::truncated(version),
            build,
        }
    }
}

/// Boot and quote counters. Ordered lexicographically: a new boot restarts the quote counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Counters {
    /// Persistent boot counter, grows every boot.
    pub boot: u64,
    /// Quote counter, grows every quote within a boot.
    pub quote: u64,
}

/// The signed content of a quote (either format; see [`QuoteBody::encode`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteBody {
    /// [`QUOTE_FORMAT_VERSION`] or [`QUOTE_FORMAT_1`].
    pub format: u16,
    /// Who made the quote.
    pub identity: MonitorIdentity,
    /// The verifier's nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Which PCRs the composite digest covers.
    pub selection: PcrSelection,
    /// SHA-256 over the selected PCR values in ascending index order.
    pub pcr_digest: Digest,
    /// Boot and quote counters.
    pub counters: Counters,
    /// Number of event log entries at quote time.
    pub event_count: u32,
    /// Whether an extend was refused because the event log was full.
    pub log_overflowed: bool,
    /// Format 2: the event log's running digest at quote time (`log::log_digest`), binding every
    /// entry's PCR, digest, kind, name and version. `None` in format 1.
    pub log_digest: Option<Digest>,
}

/// Format 1 on the wire: the fields in order, no log digest. Format 2 is this followed by the
/// log digest (encoded as the tuple `(WireV1, Digest)`: postcard writes a tuple's elements in
/// order, so the bytes are those of one struct with a last field).
#[derive(Serialize, Deserialize)]
struct WireV1 {
    format: u16,
    identity: MonitorIdentity,
    nonce: [u8; NONCE_LEN],
    selection: PcrSelection,
    pcr_digest: Digest,
    counters: Counters,
    event_count: u32,
    log_overflowed: bool,
}

impl QuoteBody {
    fn wire(&self) -> WireV1 {
        WireV1 {
            format: self.format,
            identity: self.identity.clone(),
            nonce: self.nonce,
            selection: self.selection,
            pcr_digest: self.pcr_digest,
            counters: self.counters,
            event_count: self.event_count,
            log_overflowed: self.log_overflowed,
        }
    }

    fn from_wire(w: WireV1, log_digest: Option<Digest>) -> Self {
        Self {
            format: w.format,
            identity: w.identity,
            nonce: w.nonce,
            selection: w.selection,
            pcr_digest: w.pcr_digest,
            counters: w.counters,
            event_count: w.event_count,
            log_overflowed: w.log_overflowed,
            log_digest,
        }
    }

    /// Postcard encoding of the body in its format (2 needs `log_digest`, 1 must have none).
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], QuoteError> {
        let r = match (self.format, self.log_digest) {
            (QUOTE_FORMAT_VERSION, Some(d)) => postcard::to_slice(&(self.wire(), d), buf),
            (QUOTE_FORMAT_1, None) => postcard::to_slice(&self.wire(), buf),
            _ => return Err(QuoteError::Malformed),
        };
        r.map_err(|_| QuoteError::TooLarge)
    }

    /// Decode a body of either format; trailing bytes and unknown formats are refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, QuoteError> {
        let (format, _) =
            postcard::take_from_bytes::<u16>(bytes).map_err(|_| QuoteError::Malformed)?;
        match format {
            QUOTE_FORMAT_VERSION => match postcard::take_from_bytes::<(WireV1, Digest)>(bytes) {
                Ok(((w, d), [])) => Ok(Self::from_wire(w, Some(d))),
                _ => Err(QuoteError::Malformed),
            },
            QUOTE_FORMAT_1 => match postcard::take_from_bytes::<WireV1>(bytes) {
                Ok((w, [])) => Ok(Self::from_wire(w, None)),
                _ => Err(QuoteError::Malformed),
            },
            _ => Err(QuoteError::Malformed),
        }
    }
}

/// A quote as sent to a verifier: the exact signed body bytes and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedQuote {
    /// Postcard encoding of [`QuoteBody`].
    pub body: heapless::Vec<u8, BODY_MAX>,
    /// ed25519 signature over [`QUOTE_CONTEXT`] || `body`.
    pub signature: Signature,
}

/// Errors encoding or decoding quotes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The body or quote does not fit its bound.
    #[error("quote encoding exceeds its bound")]
    TooLarge,
    /// The bytes are not a valid encoding.
    #[error("malformed quote encoding")]
    Malformed,
}

/// The message an attestation key signs for `body`.
pub fn signed_message(body: &[u8], out: &mut [u8; QUOTE_CONTEXT.len() + BODY_MAX]) -> usize {
    out[..QUOTE_CONTEXT.len()].copy_from_slice(QUOTE_CONTEXT);
    out[QUOTE_CONTEXT.len()..QUOTE_CONTEXT.len() + body.len()].copy_from_slice(body);
    QUOTE_CONTEXT.len() + body.len()
}

impl SignedQuote {
    /// Encode to `buf`, returning the used prefix.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], QuoteError> {
        postcard::to_slice(self, buf).map_err(|_| QuoteError::TooLarge)
    }

    /// Decode from `bytes`; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<Self, QuoteError> {
        match postcard::take_from_bytes(bytes) {
            Ok((q, [])) => Ok(q),
            _ => Err(QuoteError::Malformed),
        }
    }

    /// Check the signature with `key` (strict: rejects malleable and small-order encodings).
    pub fn verify_signature(&self, key: &VerifyingKey) -> bool {
        let mut msg = [0u8; QUOTE_CONTEXT.len() + BODY_MAX];
        let n = signed_message(&self.body, &mut msg);
        key.verify_strict(&msg[..n], &self.signature).is_ok()
    }

    /// Decode the body (either format). Only meaningful after
    /// [`SignedQuote::verify_signature`].
    pub fn body(&self) -> Result<QuoteBody, QuoteError> {
        QuoteBody::decode(&self.body)
    }
}

/// The boot counter a board without a persistent source quotes on every boot (the hypervisor's
/// fallback): the verifier takes a quote counter that starts over there as a reboot
/// (docs/quote-format.md).
pub const NO_BOOT_COUNTER: u64 = 0;

/// Signs quotes; keeps the counters.
pub(crate) struct Attestor {
    key: SigningKey,
    identity: MonitorIdentity,
    counters: Counters,
}

impl Attestor {
    pub(crate) fn new(key: SigningKey, identity: MonitorIdentity, boot: u64) -> Self {
        Self {
            key,
            identity,
            counters: Counters { boot, quote: 0 },
        }
    }

    pub(crate) fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub(crate) fn quote(
        &mut self,
        bank: &PcrBank,
        nonce: &[u8; NONCE_LEN],
        selection: &PcrSelection,
        event_count: u32,
        log_overflowed: bool,
        log_digest: Digest,
    ) -> Result<SignedQuote, QuoteError> {
        self.counters.quote = self
            .counters
            .quote
            .checked_add(1)
            .ok_or(QuoteError::TooLarge)?;
        let body = QuoteBody {
            format: QUOTE_FORMAT_VERSION,
            identity: self.identity.clone(),
            nonce: *nonce,
            selection: *selection,
            pcr_digest: bank.composite(selection),
            counters: self.counters,
            event_count,
            log_overflowed,
            log_digest: Some(log_digest),
        };
        let mut raw = [0u8; BODY_MAX];
        let used = body.encode(&mut raw)?;
        let body_bytes = heapless::Vec::from_slice(used).map_err(|_| QuoteError::TooLarge)?;
        let mut msg = [0u8; QUOTE_CONTEXT.len() + BODY_MAX];
        let n = signed_message(&body_bytes, &mut msg);
        Ok(SignedQuote {
            signature: self.key.sign(&msg[..n]),
            body: body_bytes,
        })
    }
}
