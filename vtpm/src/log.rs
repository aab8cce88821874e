//! The measurement event log: one typed entry per extend (and per reset), bounded, no heap.

use serde::{Deserialize, Serialize};

use crate::{Digest, VtpmError, pcr::PcrIndex};

/// Longest component name kept in an event.
pub const NAME_MAX: usize = 48;
/// Longest component version kept in an event.
pub const VERSION_MAX: usize = 24;

/// Component name in an event (truncated at a character boundary to [`NAME_MAX`] bytes).
pub type EventName = heapless::String<NAME_MAX>;
/// Component version in an event (truncated to [`VERSION_MAX`] bytes).
pub type EventVersion = heapless::String<VERSION_MAX>;

/// What was measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum ComponentKind {
    /// Boot firmware or loader.
    BootFirmware = 0,
    /// The hypervisor image.
    Hypervisor = 1,
    /// Hypervisor configuration (board description).
    HypervisorConfig = 2,
    /// Guest kernel.
    GuestKernel = 3,
    /// Guest initramfs.
    GuestInitramfs = 4,
    /// Guest device tree.
    GuestDtb = 5,
    /// Guest kernel command line.
    GuestCmdline = 6,
    /// Gateway agent binary.
    GatewayAgent = 7,
    /// vSwitch binary.
    VSwitch = 8,
    /// vSwitch configuration.
    VSwitchConfig = 9,
    /// A middlebox binary.
    MiddleboxBinary = 10,
    /// A middlebox configuration.
    MiddleboxConfig = 11,
    /// Controller-signed policy.
    Policy = 12,
    /// Anything else a guest measures.
    Other = 13,
    /// A PCR reset: replay sets the PCR back to zero.
    Reset = 14,
}

/// One event log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The PCR that was extended.
    pub pcr: PcrIndex,
    /// The measurement extended into it (all zero for [`ComponentKind::Reset`]).
    pub digest: Digest,
    /// What was measured.
    pub kind: ComponentKind,
    /// Component name, e.g. `firewall`.
    pub name: EventName,
    /// Component version, e.g. `0.1.0`.
    pub version: EventVersion,
}

/// `s` cut at a character boundary to at most `M` bytes.
pub(crate) fn truncated<const M: usize>(s: &str) -> heapless::String<M> {
    let mut end = s.len().min(M);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = heapless::String::new();
    // Cannot fail: `end <= M` bytes.
    let _ = out.push_str(&s[..end]);
    out
}

impl Event {
    /// An extend event; `name` and `version` are truncated to their maximum lengths.
    pub fn new(
        pcr: PcrIndex,
        digest: Digest,
        kind: ComponentKind,
        name: &str,
        version: &str,
    ) -> Self {
        Self {
            pcr,
            digest,
            kind,
            name: truncated(name),
            version: truncated(version),
        }
    }

    /// A reset event for `pcr`.
    pub fn reset(pcr: PcrIndex) -> Self {
        Self::new(pcr, [0; 32], ComponentKind::Reset, "reset", "")
    }
}

/// A bounded event log of at most `N` entries.
///
/// Overflow fails closed: [`EventLog::push`] refuses the entry (so the caller refuses the
/// extend) and the log remembers it, so every later quote says an extend was refused.
pub struct EventLog<const N: usize> {
    entries: heapless::Vec<Event, N>,
    overflowed: bool,
    digest: Digest,
}

impl<const N: usize> Default for EventLog<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> EventLog<N> {
    /// An empty log.
    pub const fn new() -> Self {
        Self {
            entries: heapless::Vec::new(),
            overflowed: false,
            digest: [0; 32],
        }
    }

    /// Append `event`, or record the overflow and fail.
    pub fn push(&mut self, event: Event) -> Result<(), VtpmError> {
        let next = chain(&self.digest, &event);
        self.entries.push(event).map_err(|_| {
            self.overflowed = true;
            VtpmError::LogFull
        })?;
        self.digest = next;
        Ok(())
    }

    /// The running digest over every entry ([`log_digest`] of [`EventLog::entries`]), which
    /// format-2 quotes sign.
    pub fn digest(&self) -> Digest {
        self.digest
    }

    /// Entries in extend order.
    pub fn entries(&self) -> &[Event] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether an extend was ever refused because the log was full.
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }
}

/// Domain separation of the event log's running digest.
pub const LOG_CHAIN_CONTEXT: &[u8] = b"gatewarden/log/v2\0";

/// Upper bound of an encoded [`Event`] (postcard: PCR, digest, kind, name, version).
pub const EVENT_ENCODED_MAX: usize = 3 + 32 + 1 + 1 + NAME_MAX + 1 + VERSION_MAX;

/// One step of the running digest: SHA-256(LOG_CHAIN_CONTEXT || `prev` || postcard(`event`)).
/// Every field of the event (PCR, digest, kind, name, version) is bound, in order.
pub fn chain(prev: &Digest, event: &Event) -> Digest {
    use sha2::Digest as _;
    let mut buf = [0u8; EVENT_ENCODED_MAX];
    let encoded = postcard::to_slice(event, &mut buf).expect("an event fits its bound");
    let mut h = sha2::Sha256::new();
    h.update(LOG_CHAIN_CONTEXT);
    h.update(prev);
    h.update(&*encoded);
    h.finalize().into()
}

/// The running digest over `events`, from all zeros: what a format-2 quote's `log_digest` must
/// equal for the log a verifier received.
pub fn log_digest(events: &[Event]) -> Digest {
    events.iter().fold([0; 32], |d, e| chain(&d, e))
}

/// Replay `events` from all-zero PCRs and return the value of `pcr` (resets included).
pub fn replay(events: &[Event], pcr: PcrIndex) -> Digest {
    events
        .iter()
        .filter(|e| e.pcr == pcr)
        .fold([0; 32], |acc, e| match e.kind {
            ComponentKind::Reset => [0; 32],
            _ => crate::pcr::extend_value(&acc, &e.digest),
        })
}
