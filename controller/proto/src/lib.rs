//! The Gatewarden controller protocol, shared by the controller, the gateway agent, the load
//! generator and `cargo xtask image`.
//!
//! - [`wire`]: messages between a gateway agent and the controller and their framing.
//! - [`endorse`]: the vendor endorsement of a gateway's keys, made when an image is provisioned.
//! - [`manifest`]: signed reference manifests (reference values for appraisal).
//! - [`component`]: how event-log entries map to the components an appraisal names.
//!
//! Design record: `docs/controller.md`.

pub mod component;
pub mod endorse;
pub mod manifest;
pub mod wire;

pub use ed25519_dalek::{Signature, SigningKey, VerifyingKey};

/// Parse 32 bytes written as 64 hex digits.
pub fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s.trim(), &mut out).ok()?;
    Some(out)
}

/// Parse an ed25519 public key written as 64 hex digits, refusing weak (small-order) keys.
pub fn parse_public_key(s: &str) -> Option<VerifyingKey> {
    let key = VerifyingKey::from_bytes(&hex32(s)?).ok()?;
    (!key.is_weak()).then_some(key)
}
