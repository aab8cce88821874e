//! Gatewarden's virtual TPM.
//!
//! The hypervisor keeps one [`Vtpm`] in memory the guest can never map. It holds a bank of
//! [`PCR_COUNT`] SHA-256 PCRs, a bounded event log with one entry per extend, and an attestation
//! key derived from the device secret. A remote verifier sends a nonce, receives a signed
//! [`SignedQuote`] plus the event log, and checks them with [`verify`] (feature `alloc`).
//!
//! The core is `no_std` and allocation-free so it runs at EL2 / in VMX-root unchanged; the
//! verifier needs `alloc` (and `std` for ed25519 batch verification).
#![cfg_attr(not(feature = "std"), no_std)]

#[cfg(feature = "alloc")]
extern crate alloc;

pub mod code;
pub mod keys;
pub mod log;
pub mod pcr;
pub mod quote;
#[cfg(feature = "alloc")]
pub mod verify;

pub use keys::{BootEntropy, BootKeys, DeviceSecret, KeyHierarchy};
pub use log::{ComponentKind, Event, EventLog, EventName, EventVersion};
pub use pcr::{Locality, PCR_COUNT, PcrBank, PcrIndex, PcrSelection};
pub use quote::{
    Counters, MonitorIdentity, MonitorKind, NO_BOOT_COUNTER, NONCE_LEN, QuoteBody, QuoteError,
    SignedQuote,
};
#[cfg(feature = "alloc")]
pub use verify::{Evidence, Expectation, Verified, VerifyError, verify, verify_batch};

/// A SHA-256 digest: the value of a PCR and of every measurement.
pub type Digest = [u8; 32];

/// SHA-256 of `data`, the hash every measurement in Gatewarden uses.
pub fn sha256(data: &[u8]) -> Digest {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).into()
}

/// Errors of the vTPM core (extend, reset, quote).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum VtpmError {
    /// The PCR index is not below [`PCR_COUNT`].
    #[error("PCR index {0} out of range (0..{PCR_COUNT})")]
    BadPcr(u16),
    /// The caller's locality may not extend or reset this PCR.
    #[error("PCR {0} is reserved for a higher locality")]
    Denied(u16),
    /// Only PCRs documented as resettable may be reset.
    #[error("PCR {0} is not resettable")]
    NotResettable(u16),
    /// The event log is full; the extend was refused so PCRs and log stay consistent.
    #[error("event log full: extend refused")]
    LogFull,
    /// Quote creation failed.
    #[error(transparent)]
    Quote(#[from] QuoteError),
}

/// The whole virtual TPM: PCR bank, event log of capacity `N`, attestation key and counters.
pub struct Vtpm<const N: usize> {
    bank: PcrBank,
    log: EventLog<N>,
    attestor: quote::Attestor,
}

impl<const N: usize> Vtpm<N> {
    /// A fresh vTPM for this boot: all PCRs zero, empty log, quote counter zero.
    ///
    /// `boot_counter` comes from the board's persistent storage and must grow every boot.
    pub fn new(keys: &KeyHierarchy, identity: MonitorIdentity, boot_counter: u64) -> Self {
        Self {
            bank: PcrBank::new(),
            log: EventLog::new(),
            attestor: quote::Attestor::new(keys.attestation_key(), identity, boot_counter),
        }
    }

    /// Extend `pcr` with `digest` and log `event`. Fails closed: if the log is full nothing is
    /// extended, and the next quote reports that an extend was refused.
    pub fn extend(
        &mut self,
        locality: Locality,
        pcr: PcrIndex,
        digest: &Digest,
        kind: ComponentKind,
        name: &str,
        version: &str,
    ) -> Result<(), VtpmError> {
        pcr::check_access(locality, pcr)?;
        let event = Event::new(pcr, *digest, kind, name, version);
        self.log.push(event)?;
        self.bank.extend(pcr, digest);
        Ok(())
    }

    /// Reset a resettable PCR to zero; the reset is logged so a verifier can replay it.
    pub fn reset(&mut self, locality: Locality, pcr: PcrIndex) -> Result<(), VtpmError> {
        pcr::check_access(locality, pcr)?;
        if !pcr.is_resettable() {
            return Err(VtpmError::NotResettable(pcr.get()));
        }
        self.log.push(Event::reset(pcr))?;
        self.bank.reset(pcr);
        Ok(())
    }

    /// Current value of `pcr`.
    pub fn read(&self, pcr: PcrIndex) -> Digest {
        self.bank.read(pcr)
    }

    /// The PCR bank.
    pub fn bank(&self) -> &PcrBank {
        &self.bank
    }

    /// The event log.
    pub fn log(&self) -> &EventLog<N> {
        &self.log
    }

    /// Sign a quote over `selection` for the verifier's `nonce`.
    pub fn quote(
        &mut self,
        nonce: &[u8; NONCE_LEN],
        selection: &PcrSelection,
    ) -> Result<SignedQuote, VtpmError> {
        Ok(self.attestor.quote(
            &self.bank,
            nonce,
            selection,
            self.log.len() as u32,
            self.log.overflowed(),
            self.log.digest(),
        )?)
    }

    /// The attestation public key (enrolled with the controller).
    pub fn attestation_public_key(&self) -> ed25519_dalek::VerifyingKey {
        self.attestor.verifying_key()
    }
}
