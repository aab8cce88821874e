//! Per-device policy: what operators set, and how it is compiled into middlebox configs and
//! signed for a gateway.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use serde::{Deserialize, Serialize};

use gw_proto::wire::{DatapathConfig, PolicyDocument, SignedPolicy};

/// An operator's policy for one IoT device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevicePolicy {
    /// A name for the device.
    #[serde(default)]
    pub name: Option<String>,
    /// The device's MUD file (RFC 8520 JSON), enforced by the firewall.
    #[serde(default)]
    pub mud: Option<serde_json::Value>,
    /// Destinations (IP addresses, CIDRs or domain names) always blocked.
    #[serde(default)]
    pub block: Vec<String>,
    /// Destinations always allowed.
    #[serde(default)]
    pub allow: Vec<String>,
    /// IDS rules (Snort syntax) for this device's traffic.
    #[serde(default)]
    pub ids_rules: Vec<String>,
}

/// Policy input errors.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    /// Not a MAC address.
    #[error("{0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
    Mac(String),
    /// The MUD document lacks what RFC 8520 requires.
    #[error("MUD file: {0}")]
    Mud(String),
    /// A list entry is empty or has whitespace.
    #[error("{0:?} is not an address, CIDR or domain name")]
    Destination(String),
    /// The compiled policy exceeds what the monitor's vault holds.
    #[error("compiled policy is {0} bytes; the gateway keeps at most {max}", max = gw_abi::MAX_POLICY)]
    TooLarge(usize),
}

/// Normalise a MAC address to lowercase `aa:bb:cc:dd:ee:ff`.
pub fn normalise_mac(mac: &str) -> Result<String, PolicyError> {
    let parts: Vec<&str> = mac.split([':', '-']).collect();
    let ok = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(parts.join(":").to_ascii_lowercase())
    } else {
        Err(PolicyError::Mac(mac.into()))
    }
}

impl DevicePolicy {
    /// Check what can be checked without the middleboxes: the MUD container and its URL,
    /// list entries.
    pub fn validate(&self) -> Result<(), PolicyError> {
        if let Some(mud) = &self.mud {
            let root = mud
                .get("ietf-mud:mud")
                .ok_or_else(|| PolicyError::Mud("no \"ietf-mud:mud\" container".into()))?;
            let url = root
                .get("mud-url")
                .and_then(|u| u.as_str())
                .ok_or_else(|| PolicyError::Mud("no \"mud-url\"".into()))?;
            if !url.starts_with("https://") {
                return Err(PolicyError::Mud(format!("mud-url {url:?} is not https")));
            }
            for dir in ["from-device-policy", "to-device-policy"] {
                if let Some(p) = root.get(dir)
                    && p.pointer("/access-lists/access-list").is_none()
                {
                    return Err(PolicyError::Mud(format!("{dir} has no access-lists")));
                }
            }
        }
        for d in self.block.iter().chain(&self.allow) {
            if d.is_empty() || d.chars().any(char::is_whitespace) {
                return Err(PolicyError::Destination(d.clone()));
            }
        }
        Ok(())
    }
}

/// Compile device policies (`mac → policy`) into one middlebox config each, plus the
/// gateway's data-path settings (entry `datapath`) when an operator set them.
pub fn compile(
    gateway_id: &str,
    version: u64,
    devices: &BTreeMap<String, DevicePolicy>,
    datapath: Option<&DatapathConfig>,
) -> PolicyDocument {
    let firewall: BTreeMap<&String, serde_json::Value> = devices
        .iter()
        .map(|(mac, p)| {
            (
                mac,
                serde_json::json!({ "mud": p.mud, "block": p.block, "allow": p.allow }),
            )
        })
        .collect();
    let mut ids = String::new();
    for (mac, p) in devices {
        if p.ids_rules.is_empty() {
            continue;
        }
        ids.push_str(&format!("# device {mac}\n"));
        for r in &p.ids_rules {
            ids.push_str(r.trim());
            ids.push('\n');
        }
    }
    let monitor: Vec<&String> = devices.keys().collect();
    let mut configs = BTreeMap::new();
    configs.insert(
        "firewall".into(),
        serde_json::to_string_pretty(&serde_json::json!({ "devices": firewall }))
            .expect("json serialises"),
    );
    configs.insert("ids".into(), ids);
    if let Some(dp) = datapath {
        configs.insert(
            "datapath".into(),
            serde_json::to_string(dp).expect("json serialises"),
        );
    }
    configs.insert(
        "monitor".into(),
        serde_json::to_string_pretty(&serde_json::json!({ "devices": monitor }))
            .expect("json serialises"),
    );
    PolicyDocument {
        gateway_id: gateway_id.into(),
        version,
        configs,
    }
}

/// Encode and sign a compiled policy with the controller's command key.
pub fn sign(doc: &PolicyDocument, key: &SigningKey) -> Result<SignedPolicy, PolicyError> {
    let body = serde_json::to_vec(doc).expect("policy serialises");
    if body.len() > gw_abi::MAX_POLICY {
        return Err(PolicyError::TooLarge(body.len()));
    }
    let signature = key.sign(&gw_abi::policy_signing_input(doc.version, &body));
    Ok(SignedPolicy {
        version: doc.version,
        body,
        signature,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_mud_are_checked() {
        assert_eq!(
            normalise_mac("AA-bb-CC-dd-EE-ff").unwrap(),
            "aa:bb:cc:dd:ee:ff"
        );
        assert!(normalise_mac("aa:bb").is_err());
        let bad = DevicePolicy {
            mud: Some(serde_json::json!({"ietf-mud:mud": {"mud-url": "http://x"}})),
            ..Default::default()
        };
        assert!(matches!(bad.validate(), Err(PolicyError::Mud(_))));
        let blank = DevicePolicy {
            block: vec!["a b".into()],
            ..Default::default()
        };
        assert!(blank.validate().is_err());
    }

    #[test]
    fn compile_and_sign_verify_with_the_abi_input() {
        let mut d = BTreeMap::new();
        d.insert(
            "aa:bb:cc:dd:ee:ff".to_string(),
            DevicePolicy {
                ids_rules: vec!["alert tcp any any -> any 80 (msg:\"x\"; sid:1;)".into()],
                ..Default::default()
            },
        );
        let doc = compile("gw-1", 3, &d, None);
        assert!(!doc.configs.contains_key("datapath"));
        let off = DatapathConfig {
            signing: false,
            ..Default::default()
        };
        let with = compile("gw-1", 3, &d, Some(&off));
        let back: DatapathConfig = serde_json::from_str(&with.configs["datapath"]).unwrap();
        assert_eq!(back, off);
        assert!(doc.configs["ids"].contains("sid:1"));
        let key = SigningKey::from_bytes(&[5; 32]);
        let sp = sign(&doc, &key).unwrap();
        key.verifying_key()
            .verify_strict(&gw_abi::policy_signing_input(3, &sp.body), &sp.signature)
            .unwrap();
    }
}
