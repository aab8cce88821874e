//! Signed reference manifests: the reference values a controller appraises evidence against.
//!
//! A manifest names, per component (see [`crate::component`]), the digests that are allowed.
//! It travels as a [`SignedManifest`] envelope whose `payload` is the manifest's JSON text,
//! signed byte for byte (no canonicalisation needed): ed25519 over
//! `MANIFEST_CONTEXT || payload`.

use std::collections::BTreeMap;

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Domain separation of manifest signatures.
pub const MANIFEST_CONTEXT: &[u8] = b"gatewarden/reference-manifest/v1\0";
/// The `format` value of this manifest layout.
pub const MANIFEST_FORMAT: &str = "gatewarden-reference/v1";

/// Why a manifest is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The envelope or payload is not valid JSON of the right shape.
    #[error("manifest is not valid: {0}")]
    Json(#[from] serde_json::Error),
    /// The payload declares another format.
    #[error("unsupported manifest format {0:?} (expected {MANIFEST_FORMAT})")]
    Format(String),
    /// A digest is not 64 hex digits.
    #[error("component {0}: digest {1:?} is not 64 hex digits")]
    Digest(String, String),
    /// The signer key is not a valid ed25519 key.
    #[error("manifest signer is not a valid ed25519 public key")]
    Signer,
    /// The signature does not verify.
    #[error("manifest signature does not verify")]
    Signature,
}

/// Reference values for one image (or one set of middleboxes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceManifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: String,
    /// A name for operators, e.g. `gatewarden-qemu-virt`.
    pub name: String,
    /// Release version, e.g. `0.1.0+abc123`.
    pub version: String,
    /// Board the image is for (`qemu-virt`, `host` for software monitors).
    pub board: String,
    /// Allowed digests (hex) per component name.
    pub components: BTreeMap<String, Vec<String>>,
    /// PCRs every quote from a gateway running this image must cover, whatever its event log
    /// touches: the measurements the image always makes (the hypervisor's boot chain). A log
    /// that hides one of them is named, not trusted. Absent in manifests signed before
    /// 2026-12-02.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quoted_pcrs: Vec<u16>,
    /// Accept format-1 quotes, which do not bind the event log, from gateways running this
    /// image: for images built before format 2, during migration only (docs/quote-format.md).
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub accept_quote_format_1: bool,
}

impl ReferenceManifest {
    /// An empty manifest.
    pub fn new(name: &str, version: &str, board: &str) -> Self {
        Self {
            format: MANIFEST_FORMAT.into(),
            name: name.into(),
            version: version.into(),
            board: board.into(),
            components: BTreeMap::new(),
            quoted_pcrs: Vec::new(),
            accept_quote_format_1: false,
        }
    }

    /// Allow `digest` for `component`.
    pub fn allow(&mut self, component: &str, digest: &[u8; 32]) -> &mut Self {
        let list = self.components.entry(component.into()).or_default();
        let d = hex::encode(digest);
        if !list.contains(&d) {
            list.push(d);
        }
        self
    }

    /// True when `component` may have `digest`.
    pub fn allows(&self, component: &str, digest: &[u8; 32]) -> bool {
        let d = hex::encode(digest);
        self.components
            .get(component)
            .is_some_and(|l| l.iter().any(|x| x.eq_ignore_ascii_case(&d)))
    }

    /// True when the manifest says anything about `component`.
    pub fn covers(&self, component: &str) -> bool {
        self.components.contains_key(component)
    }

    fn check(&self) -> Result<(), ManifestError> {
        if self.format != MANIFEST_FORMAT {
            return Err(ManifestError::Format(self.format.clone()));
        }
        for (c, list) in &self.components {
            for d in list {
                if crate::hex32(d).is_none() {
                    return Err(ManifestError::Digest(c.clone(), d.clone()));
                }
            }
        }
        Ok(())
    }

    /// Sign with `key` into an envelope.
    pub fn sign(&self, key: &SigningKey) -> SignedManifest {
        let payload = serde_json::to_string_pretty(self).expect("manifest serialises");
        let mut msg = MANIFEST_CONTEXT.to_vec();
        msg.extend_from_slice(payload.as_bytes());
        SignedManifest {
            payload,
            signer: hex::encode(key.verifying_key().as_bytes()),
            signature: hex::encode(key.sign(&msg).to_bytes()),
        }
    }
}

/// A manifest with its signature, as files and the API carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The manifest's JSON text, exactly as signed.
    pub payload: String,
    /// Signer public key (hex).
    pub signer: String,
    /// ed25519 signature (hex) over `MANIFEST_CONTEXT || payload`.
    pub signature: String,
}

impl SignedManifest {
    /// Parse an envelope from JSON text.
    pub fn from_json(text: &str) -> Result<Self, ManifestError> {
        Ok(serde_json::from_str(text)?)
    }

    /// Verify the signature and parse the payload; returns the signer and the manifest.
    pub fn open(&self) -> Result<(VerifyingKey, ReferenceManifest), ManifestError> {
        let signer = crate::parse_public_key(&self.signer).ok_or(ManifestError::Signer)?;
        let mut sig = [0u8; 64];
        hex::decode_to_slice(&self.signature, &mut sig).map_err(|_| ManifestError::Signature)?;
        let mut msg = MANIFEST_CONTEXT.to_vec();
        msg.extend_from_slice(self.payload.as_bytes());
        signer
            .verify_strict(&msg, &Signature::from_bytes(&sig))
            .map_err(|_| ManifestError::Signature)?;
        let manifest: ReferenceManifest = serde_json::from_str(&self.payload)?;
        manifest.check()?;
        Ok((signer, manifest))
    }

    /// SHA-256 of the signed payload: the manifest's immutable identity.
    pub fn digest(&self) -> [u8; 32] {
        vtpm::sha256(self.payload.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut m = ReferenceManifest::new("test", "1", "host");
        m.allow("kernel", &[1; 32]).allow("kernel", &[2; 32]);
        let s = m.sign(&key);
        let text = serde_json::to_string(&s).unwrap();
        let (signer, back) = SignedManifest::from_json(&text).unwrap().open().unwrap();
        assert_eq!(signer, key.verifying_key());
        assert_eq!(back, m);
        assert!(back.allows("kernel", &[2; 32]) && !back.allows("kernel", &[3; 32]));
        let mut t = s.clone();
        t.payload = t.payload.replace("\"1\"", "\"2\"");
        assert!(matches!(t.open(), Err(ManifestError::Signature)));
        let mut bad = ReferenceManifest::new("x", "1", "host");
        bad.components.insert("kernel".into(), vec!["zz".into()]);
        assert!(matches!(
            bad.sign(&key).open(),
            Err(ManifestError::Digest(..))
        ));
    }
}
