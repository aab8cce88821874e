//! The PCR bank, PCR selections and the PCR allocation map.
//!
//! The allocation map is part of the attestation contract with the controller; it is described
//! in `docs/pcr-map.md`. Changing a range is a breaking change of the reference manifest format.

use core::ops::RangeInclusive;

use serde::{Deserialize, Serialize};

use crate::{Digest, VtpmError};

/// Number of PCRs in the bank (32 KiB of SHA-256 values).
pub const PCR_COUNT: usize = 1024;

/// Boot firmware / loader that started the hypervisor (when the board can measure it).
pub const PCR_BOOT_FIRMWARE: u16 = 0;
/// The hypervisor image (digest from the signed image manifest).
pub const PCR_HYPERVISOR: u16 = 1;
/// Hypervisor configuration: board description, build options.
pub const PCR_HYPERVISOR_CONFIG: u16 = 2;
/// Guest kernel image.
pub const PCR_GUEST_KERNEL: u16 = 3;
/// Guest initramfs.
pub const PCR_GUEST_INITRAMFS: u16 = 4;
/// Guest device tree, after the hypervisor's edits.
pub const PCR_GUEST_DTB: u16 = 5;
/// Guest kernel command line.
pub const PCR_GUEST_CMDLINE: u16 = 6;
/// Gateway agent binary.
pub const PCR_GATEWAY_AGENT: u16 = 8;
/// vSwitch binary.
pub const PCR_VSWITCH: u16 = 9;
/// vSwitch configuration (chains, signing switch).
pub const PCR_VSWITCH_CONFIG: u16 = 10;
/// The controller-signed policy accepted by POLICY_SET.
pub const PCR_POLICY: u16 = 11;
/// Debug PCR, resettable (ABI 1.0 has no guest reset call; the monitor may reset it).
pub const PCR_DEBUG: u16 = 16;
/// Middlebox binaries: middlebox slot `i` is measured into `MIDDLEBOX_BINARIES.start() + i`.
pub const MIDDLEBOX_BINARIES: RangeInclusive<u16> = 32..=511;
/// Middlebox configurations: slot `i` into `MIDDLEBOX_CONFIGS.start() + i`.
pub const MIDDLEBOX_CONFIGS: RangeInclusive<u16> = 512..=991;
/// Application PCRs, resettable (ABI 1.0 has no guest reset call; the monitor may reset them).
pub const APPLICATION: RangeInclusive<u16> = 992..=1023;

/// Who is asking: the monitor itself (hypervisor code) or the guest through a hypercall.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Locality {
    /// The hypervisor / software monitor itself.
    Monitor,
    /// Guest software through the hypercall interface.
    Guest,
}

/// A PCR index checked to be below [`PCR_COUNT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u16", into = "u16")]
pub struct PcrIndex(u16);

impl PcrIndex {
    /// `Some` if `index < PCR_COUNT`.
    pub const fn new(index: u16) -> Option<Self> {
        if (index as usize) < PCR_COUNT {
            Some(Self(index))
        } else {
            None
        }
    }

    /// The raw index.
    pub const fn get(self) -> u16 {
        self.0
    }

    /// Whether the PCR may be reset (only [`PCR_DEBUG`] and the [`APPLICATION`] range).
    pub fn is_resettable(self) -> bool {
        self.0 == PCR_DEBUG || APPLICATION.contains(&self.0)
    }

    /// Whether only the monitor may extend this PCR: the boot chain, the gateway agent (bound by
    /// the monitor on first use of the agent key), the policy PCR and the
    /// middlebox binaries (measured by the monitor at key registration).
    pub fn monitor_only(self) -> bool {
        self.0 <= PCR_GATEWAY_AGENT || self.0 == PCR_POLICY || MIDDLEBOX_BINARIES.contains(&self.0)
    }
}

impl TryFrom<u16> for PcrIndex {
    type Error = VtpmError;
    fn try_from(v: u16) -> Result<Self, VtpmError> {
        Self::new(v).ok_or(VtpmError::BadPcr(v))
    }
}

impl From<PcrIndex> for u16 {
    fn from(p: PcrIndex) -> u16 {
        p.0
    }
}

pub(crate) fn check_access(locality: Locality, pcr: PcrIndex) -> Result<(), VtpmError> {
    if locality == Locality::Guest && pcr.monitor_only() {
        Err(VtpmError::Denied(pcr.0))
    } else {
        Ok(())
    }
}

/// The PCR extend operation: `SHA-256(old || measurement)`.
pub fn extend_value(old: &Digest, measurement: &Digest) -> Digest {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(old);
    h.update(measurement);
    h.finalize().into()
}

/// A bank of [`PCR_COUNT`] SHA-256 PCRs, all zero at boot.
#[derive(Clone)]
pub struct PcrBank {
    values: [Digest; PCR_COUNT],
}

impl Default for PcrBank {
    fn default() -> Self {
        Self::new()
    }
}

impl PcrBank {
    /// All PCRs zero.
    pub const fn new() -> Self {
        Self {
            values: [[0; 32]; PCR_COUNT],
        }
    }

    /// Extend `pcr` with `measurement`.
    pub fn extend(&mut self, pcr: PcrIndex, measurement: &Digest) {
        let slot = &mut self.values[pcr.0 as usize];
        *slot = extend_value(slot, measurement);
    }

    /// Value of `pcr`.
    pub fn read(&self, pcr: PcrIndex) -> Digest {
        self.values[pcr.0 as usize]
    }

    pub(crate) fn reset(&mut self, pcr: PcrIndex) {
        self.values[pcr.0 as usize] = [0; 32];
    }

    /// The composite digest of the selected PCRs: SHA-256 over their values in ascending order.
    pub fn composite(&self, selection: &PcrSelection) -> Digest {
        composite_digest(selection.iter().map(|p| &self.values[p.0 as usize]))
    }
}

/// SHA-256 over the concatenation of `values` (the selected PCRs in ascending index order).
pub fn composite_digest<'a>(values: impl IntoIterator<Item = &'a Digest>) -> Digest {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    for v in values {
        h.update(v);
    }
    h.finalize().into()
}

/// A set of PCRs, as a 1,024-bit bitmap.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PcrSelection([u64; PCR_COUNT / 64]);

impl core::fmt::Debug for PcrSelection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_set()
            .entries(self.iter().map(PcrIndex::get))
            .finish()
    }
}

impl Default for PcrSelection {
    fn default() -> Self {
        Self::none()
    }
}

impl PcrSelection {
    /// The empty selection.
    pub const fn none() -> Self {
        Self([0; PCR_COUNT / 64])
    }

    /// Every PCR.
    pub const fn all() -> Self {
        Self([u64::MAX; PCR_COUNT / 64])
    }

    /// A selection of the given indices; `None` if any is out of range.
    pub fn from_indices(indices: impl IntoIterator<Item = u16>) -> Option<Self> {
        let mut s = Self::none();
        for i in indices {
            s.insert(PcrIndex::new(i)?);
        }
        Some(s)
    }

    /// Add `pcr`.
    pub fn insert(&mut self, pcr: PcrIndex) {
        self.0[pcr.0 as usize / 64] |= 1 << (pcr.0 % 64);
    }

    /// Whether `pcr` is selected.
    pub fn contains(&self, pcr: PcrIndex) -> bool {
        self.0[pcr.0 as usize / 64] & (1 << (pcr.0 % 64)) != 0
    }

    /// Number of selected PCRs.
    pub fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|w| *w == 0)
    }

    /// Selected PCRs in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = PcrIndex> + '_ {
        self.0.iter().enumerate().flat_map(|(word, bits)| {
            let mut rest = *bits;
            core::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as u16;
                rest &= rest - 1;
                Some(PcrIndex(word as u16 * 64 + bit))
            })
        })
    }
}
