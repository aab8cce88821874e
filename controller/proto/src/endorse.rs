//! Vendor endorsement of a gateway's keys.
//!
//! When `cargo xtask image` provisions an image it derives the gateway's attestation and agent
//! keys from the device secret it installs, and the vendor key signs
//! `ENDORSEMENT_CONTEXT || len(id) as u16 LE || id || attestation key || agent key`.
//! A controller that trusts the vendor key accepts the gateway at enrollment without an operator.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain separation of endorsement signatures.
pub const ENDORSEMENT_CONTEXT: &[u8] = b"gatewarden/endorsement/v1\0";

/// Longest gateway id.
pub const GATEWAY_ID_MAX: usize = 64;

/// Why an endorsement or gateway id is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EndorseError {
    /// Gateway ids are 1..=64 characters of `[A-Za-z0-9._-]`.
    #[error("gateway id {0:?} is not 1-64 characters of A-Z a-z 0-9 . _ -")]
    BadId(String),
    /// A key is not a valid, strong ed25519 public key.
    #[error("{0} is not a valid ed25519 public key")]
    BadKey(&'static str),
    /// The signature does not verify.
    #[error("endorsement signature does not verify with vendor key {0}")]
    BadSignature(String),
}

/// A gateway's identity as provisioned, with the vendor's signature over it. Stored in the
/// image (`/etc/gatewarden/endorsement.json`) and presented at enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    /// Gateway id, unique in a fleet.
    pub gateway_id: String,
    /// Attestation public key (hex).
    pub attestation_key: String,
    /// Trusted-agent public key (hex).
    pub agent_key: String,
    /// Vendor public key that signed (hex).
    pub vendor_key: String,
    /// ed25519 signature (hex) over [`Endorsement::message`].
    pub signature: String,
}

/// Check a gateway id.
pub fn check_id(id: &str) -> Result<(), EndorseError> {
    let ok = !id.is_empty()
        && id.len() <= GATEWAY_ID_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(EndorseError::BadId(id.into()))
    }
}

fn key(hex_key: &str, what: &'static str) -> Result<VerifyingKey, EndorseError> {
    crate::parse_public_key(hex_key).ok_or(EndorseError::BadKey(what))
}

impl Endorsement {
    /// The signed message for these keys.
    pub fn message(gateway_id: &str, attestation_key: &[u8; 32], agent_key: &[u8; 32]) -> Vec<u8> {
        let mut m = ENDORSEMENT_CONTEXT.to_vec();
        m.extend_from_slice(&(gateway_id.len() as u16).to_le_bytes());
        m.extend_from_slice(gateway_id.as_bytes());
        m.extend_from_slice(attestation_key);
        m.extend_from_slice(agent_key);
        m
    }

    /// Sign a gateway's keys with the vendor key.
    pub fn sign(
        vendor: &SigningKey,
        gateway_id: &str,
        attestation_key: &VerifyingKey,
        agent_key: &VerifyingKey,
    ) -> Result<Self, EndorseError> {
        check_id(gateway_id)?;
        let msg = Self::message(gateway_id, attestation_key.as_bytes(), agent_key.as_bytes());
        Ok(Self {
            gateway_id: gateway_id.into(),
            attestation_key: hex::encode(attestation_key.as_bytes()),
            agent_key: hex::encode(agent_key.as_bytes()),
            vendor_key: hex::encode(vendor.verifying_key().as_bytes()),
            signature: hex::encode(vendor.sign(&msg).to_bytes()),
        })
    }

    /// The parsed keys `(attestation, agent)`, checked for weakness.
    pub fn keys(&self) -> Result<(VerifyingKey, VerifyingKey), EndorseError> {
        Ok((
            key(&self.attestation_key, "attestation key")?,
            key(&self.agent_key, "agent key")?,
        ))
    }

    /// Verify the vendor signature; returns the vendor key.
    pub fn verify(&self) -> Result<VerifyingKey, EndorseError> {
        check_id(&self.gateway_id)?;
        let (ak, gk) = self.keys()?;
        let vendor = key(&self.vendor_key, "vendor key")?;
        let bad = || EndorseError::BadSignature(self.vendor_key.clone());
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig).map_err(|_| bad())?;
        let msg = Self::message(&self.gateway_id, ak.as_bytes(), gk.as_bytes());
        vendor
            .verify_strict(&msg, &Signature::from_bytes(&sig))
            .map_err(|_| bad())?;
        Ok(vendor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn sign_verify_and_tamper() {
        let e =
            Endorsement::sign(&k(1), "gw-1", &k(2).verifying_key(), &k(3).verifying_key()).unwrap();
        assert_eq!(e.verify().unwrap(), k(1).verifying_key());
        let mut other = e.clone();
        other.gateway_id = "gw-2".into();
        assert!(matches!(other.verify(), Err(EndorseError::BadSignature(_))));
        let mut swapped = e.clone();
        swapped.attestation_key = hex::encode(k(4).verifying_key().as_bytes());
        assert!(matches!(
            swapped.verify(),
            Err(EndorseError::BadSignature(_))
        ));
        assert!(
            Endorsement::sign(
                &k(1),
                "bad id",
                &k(2).verifying_key(),
                &k(3).verifying_key()
            )
            .is_err()
        );
        assert!(check_id(&"x".repeat(65)).is_err());
    }
}
