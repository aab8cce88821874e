//! The key hierarchy: one device secret, HKDF-SHA256, three purpose-bound keys.
//!
//! See `docs/keys.md`. Labels are part of the format: changing one changes every derived key.

use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// HKDF salt: fixes the derivation to this version of the hierarchy.
pub const HKDF_SALT: &[u8] = b"gatewarden/key-hierarchy/v1";
/// HKDF info for the ed25519 attestation key (signs quotes).
pub const INFO_ATTESTATION: &[u8] = b"attestation-key";
/// HKDF info for the ed25519 control-channel key (trusted agent, AGENT_SIGN).
pub const INFO_CONTROL: &[u8] = b"control-channel-key";
/// HKDF info for the symmetric sealing key.
pub const INFO_SEALING: &[u8] = b"sealing-key";

/// The board-provided device secret (RPi OTP, a provisioned blob, or a per-image secret in QEMU).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DeviceSecret([u8; 32]);

impl DeviceSecret {
    /// Wrap 32 secret bytes.
    pub const fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
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
        }
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
