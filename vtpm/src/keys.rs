//! The key hierarchy: one device secret, HKDF-SHA256, three purpose-bound keys.
//!
//! See `docs/keys.md`. Labels are part of the format: changing one changes every derived key.

use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// HKDF salt: fixes the derivation to this version of the hierarchy.
pub const HKDF_SALT: &[u8] = b"gatewarden/key-hierarchy/v1";
/// HKDF salt for a device secret generated on the board (`BootEntropy::fresh_device_secret`).
pub const FRESH_SECRET_SALT: &[u8] = b"gatewarden/fresh-device-secret/v1";
/// HKDF info for the ed25519 attestation key (signs quotes).
pub const INFO_ATTESTATION: &[u8] = b"attestation-key";
/// HKDF info for the ed25519 control-channel key (trusted agent, AGENT_SIGN).
pub const INFO_CONTROL: &[u8] = b"control-channel-key";
/// HKDF info for the symmetric sealing key.
pub const INFO_SEALING: &[u8] = b"sealing-key";
/// HKDF info for the root of the per-boot keys (hop master, guest seeds).
pub const INFO_BOOT_ROOT: &[u8] = b"boot-root";
/// HKDF info, under the per-boot PRK, of the hop master.
pub const INFO_HOP_MASTER: &[u8] = b"hop-master";
/// HKDF info, under the per-boot PRK, of the bytes the guest gets in place of the loader's seeds.
pub const INFO_GUEST_SEED: &[u8] = b"guest-seed";

/// Per-boot entropy a board offers: each source labelled, any of them possibly absent.
///
/// Sources are mixed into the per-boot keys with their label and length (so no two different
/// collections encode alike); none has to be secret from the outside world for the result to
/// be secret, since the device secret is mixed in too. They make each boot's keys fresh.
#[derive(Default)]
pub struct BootEntropy<'a> {
    sources: [(&'a str, &'a [u8]); 8],
    len: usize,
}

impl<'a> BootEntropy<'a> {
    /// Add `bytes` from the source `label` (an empty source is recorded as absent). At most
    /// eight sources; more are ignored.
    pub fn add(&mut self, label: &'a str, bytes: &'a [u8]) -> &mut Self {
        if self.len < self.sources.len() {
            self.sources[self.len] = (label, bytes);
            self.len += 1;
        }
        self
    }

    /// Whether a source other than `counter` labels brought bytes: false means the boot's keys
    /// differ only by the counter's value (the console warns).
    pub fn has_unpredictable(&self, counter_label: &str) -> bool {
        self.sources[..self.len]
            .iter()
            .any(|(l, b)| *l != counter_label && !b.is_empty())
    }

    /// A new device secret for a board whose secret store is blank (a Raspberry Pi's OTP on
    /// its first boot): HKDF-SHA256 over every source under its own salt, so it shares nothing
    /// with any boot's keys. It is only as unpredictable as the sources: the caller checks
    /// [`has_unpredictable`](Self::has_unpredictable) first.
    pub fn fresh_device_secret(&self) -> DeviceSecret {
        let mut ex = hkdf::HkdfExtract::<Sha256>::new(Some(FRESH_SECRET_SALT));
        self.absorb(&mut ex);
        let (mut prk, _) = ex.finalize();
        let secret = DeviceSecret::new(prk.as_slice().try_into().expect("SHA-256 output"));
        prk.as_mut_slice().zeroize();
        secret
    }

    fn absorb(&self, ex: &mut hkdf::HkdfExtract<Sha256>) {
        for (label, bytes) in &self.sources[..self.len] {
            ex.input_ikm(&(label.len() as u32).to_le_bytes());
            ex.input_ikm(label.as_bytes());
            ex.input_ikm(&(bytes.len() as u32).to_le_bytes());
            ex.input_ikm(bytes);
        }
    }
}

/// The per-boot keys: the hop master and the guest's replacement seeds. Holds the HKDF
/// pseudorandom key alone (wiped on drop); each expansion starts from it.
#[derive(ZeroizeOnDrop)]
pub struct BootKeys {
    prk: [u8; 32],
}

impl BootKeys {
    fn hkdf(&self) -> Hkdf<Sha256> {
        Hkdf::<Sha256>::from_prk(&self.prk).expect("a SHA-256 PRK is 32 bytes")
    }

    /// The 32-byte hop master (the PRK every hop key is expanded from).
    pub fn hop_master(&self) -> [u8; 32] {
        let mut okm = [0u8; 32];
        self.hkdf()
            .expand(INFO_HOP_MASTER, &mut okm)
            .expect("HKDF output length is valid");
        okm
    }

    /// `out.len()` bytes for the guest in place of a loader seed called `name` (`rng-seed`,
    /// `kaslr-seed`): fresh per boot, and independent of the hop master (another HKDF info).
    /// HKDF gives at most 8,160 bytes; the rest of a longer `out` is zeroed.
    pub fn guest_seed(&self, name: &str, out: &mut [u8]) {
        let n = out.len().min(255 * 32);
        let (head, tail) = out.split_at_mut(n);
        self.hkdf()
            .expand_multi_info(&[INFO_GUEST_SEED, b"\0", name.as_bytes()], head)
            .expect("HKDF output length is valid");
        tail.fill(0);
    }
}

impl core::fmt::Debug for BootKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("BootKeys(..)")
    }
}

/// The board-provided device secret (RPi OTP, a provisioned blob, or a per-image secret in QEMU).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DeviceSecret([u8; 32]);

impl DeviceSecret {
    /// Wrap 32 secret bytes.
    pub const fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret's bytes, for writing it to the board's store once (a Pi's OTP) and for
    /// comparing it with what the store reads back.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether the secret is all zero (a blank store).
    pub fn is_blank(&self) -> bool {
        self.0 == [0; 32]
    }
}

impl core::fmt::Debug for DeviceSecret {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DeviceSecret(..)")
    }
}

/// Keys derived from the device secret. Dropping it wipes them.
#[derive(ZeroizeOnDrop)]
pub struct KeyHierarchy {
    attestation: [u8; 32],
    control: [u8; 32],
    sealing: [u8; 32],
    boot_root: [u8; 32],
}

impl KeyHierarchy {
    /// Derive all keys from `secret` with HKDF-SHA256.
    pub fn derive(secret: &DeviceSecret) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(HKDF_SALT), &secret.0);
        let expand = |info: &[u8]| {
            let mut okm = [0u8; 32];
            // 32 bytes is far below HKDF's 255 * 32 limit, so expand cannot fail.
            hk.expand(info, &mut okm)
                .expect("HKDF output length is valid");
            okm
        };
        Self {
            attestation: expand(INFO_ATTESTATION),
            control: expand(INFO_CONTROL),
            sealing: expand(INFO_SEALING),
            boot_root: expand(INFO_BOOT_ROOT),
        }
    }

    /// This boot's keys: HKDF-Extract with the device secret's boot root as salt over the
    /// labelled entropy sources. The guest, which may see every source (a DTB seed it was
    /// never shown still sits in RAM the loader used), cannot compute them without the
    /// device secret.
    pub fn boot_keys(&self, entropy: &BootEntropy<'_>) -> BootKeys {
        let mut ex = hkdf::HkdfExtract::<Sha256>::new(Some(&self.boot_root));
        entropy.absorb(&mut ex);
        let (mut prk, _) = ex.finalize();
        let keys = BootKeys {
            prk: prk.as_slice().try_into().expect("SHA-256 output"),
        };
        prk.as_mut_slice().zeroize();
        keys
    }

    /// The ed25519 attestation key that signs quotes.
    pub fn attestation_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.attestation)
    }

    /// The ed25519 control-channel key of the gateway's trusted agent.
    pub fn control_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.control)
    }

    /// The 256-bit sealing key.
    pub fn sealing_key(&self) -> &[u8; 32] {
        &self.sealing
    }
}
