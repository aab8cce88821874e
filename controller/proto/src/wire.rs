//! Messages between a gateway agent and the controller.
//!
//! The agent always connects out (gateways sit behind NAT; nothing listens on a gateway) over
//! TLS. A connection without a client certificate may only enroll; every other exchange needs
//! the client certificate issued at enrollment. Each message is a frame: a 4-byte big-endian
//! length, then the postcard encoding of [`AgentMsg`] or [`ControllerMsg`], at most
//! [`MAX_FRAME`] bytes.

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use vtpm::{Digest, Event};

use crate::endorse::Endorsement;

/// Largest frame either side sends or accepts.
pub const MAX_FRAME: usize = 1024 * 1024;
/// Version of this protocol; a controller refuses agents that speak another.
pub const PROTOCOL_VERSION: u16 = 1;
/// Domain separation of the enrollment binding.
pub const ENROLL_CONTEXT: &[u8] = b"gatewarden/enroll/v1\0";

/// Gateway agent → controller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AgentMsg {
    /// Ask for a client certificate (only message allowed without one).
    Enroll(Box<EnrollRequest>),
    /// First message on a certified connection.
    Hello {
        /// Protocol version the agent speaks.
        protocol: u16,
        /// Agent build, for the fleet view.
        agent_version: String,
    },
    /// Answer to a [`ControllerMsg::Challenge`].
    Evidence(Box<EvidenceMsg>),
    /// Outcome of applying a [`ControllerMsg::Policy`].
    PolicyResult {
        /// Policy version the result is about.
        version: u64,
        /// `None` when applied and measured; otherwise why not.
        error: Option<String>,
    },
    /// Device inventory and data-path counters, signed by the trusted agent.
    Report(SignedReport),
}

/// Controller → gateway agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ControllerMsg {
    /// Enrollment accepted: the client certificate (DER) for the key in the CSR.
    Enrolled {
        /// Client certificate, DER.
        certificate: Vec<u8>,
    },
    /// Enrollment recorded, waiting for an operator: try again later.
    EnrollPending {
        /// Seconds until the agent should ask again.
        retry_after_s: u32,
    },
    /// The request is refused; the connection closes.
    Refused {
        /// Why, for the agent's log.
        reason: String,
    },
    /// Attest now: answer with [`AgentMsg::Evidence`] for this nonce.
    Challenge {
        /// Fresh random nonce, never reused.
        nonce: [u8; 32],
    },
    /// A policy signed with the controller's command key: apply it through POLICY_SET.
    Policy(SignedPolicy),
}

/// An enrollment request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The vendor endorsement from the image (its signature may be absent or untrusted: the
    /// gateway then waits for an operator).
    pub endorsement: Endorsement,
    /// PKCS#10 request (DER) for the agent's TLS client key.
    pub csr: Vec<u8>,
    /// AGENT_SIGN over [`enroll_binding`]: proves the agent key.
    pub agent_signature: Signature,
    /// A quote (any selection) with nonce [`enroll_binding`]: proves the attestation
    /// key and shows which kind of monitor holds it.
    pub quote: Vec<u8>,
}

/// What the enrollment proofs sign: binds the gateway id to the TLS key request.
pub fn enroll_binding(gateway_id: &str, csr: &[u8]) -> [u8; 32] {
    let mut m = ENROLL_CONTEXT.to_vec();
    m.extend_from_slice(&(gateway_id.len() as u16).to_le_bytes());
    m.extend_from_slice(gateway_id.as_bytes());
    m.extend_from_slice(csr);
    vtpm::sha256(&m)
}

/// Evidence for one challenge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceMsg {
    /// The nonce being answered (informational: the controller checks the signed one).
    pub nonce: [u8; 32],
    /// Encoded `vtpm::SignedQuote`.
    pub quote: Vec<u8>,
    /// Values of the selected PCRs, ascending.
    pub pcrs: Vec<Digest>,
    /// The event log, cut to the quote's event count.
    pub log: Vec<Event>,
}

/// A controller-signed policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedPolicy {
    /// Strictly increasing per gateway.
    pub version: u64,
    /// The policy document (JSON, see `gw_proto::wire::PolicyDocument`).
    pub body: Vec<u8>,
    /// ed25519 over `gw_abi::policy_signing_input(version, body)`.
    pub signature: Signature,
}

/// The compiled policy a gateway applies: per-device chains and one config per middlebox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDocument {
    /// Gateway this policy is for (an agent refuses another gateway's policy).
    pub gateway_id: String,
    /// Same as [`SignedPolicy::version`].
    pub version: u64,
    /// Middlebox name → configuration text. The agent writes each and measures its SHA-256
    /// as component `config:<name>`.
    pub configs: std::collections::BTreeMap<String, String>,
}

/// Middleboxes a chain may have, in the order the controller accepts them.
pub const MIDDLEBOXES: [&str; 3] = ["firewall", "ids", "monitor"];

/// Data-path settings of a gateway: policy entry `datapath` (JSON). Part of the signed and
/// measured policy, so switching hop signing off shows in attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatapathConfig {
    /// Tag and check every hop (default). Off only for overhead measurements.
    #[serde(default = "yes")]
    pub signing: bool,
    /// Middleboxes of every chain, in order (default: all of [`MIDDLEBOXES`]).
    #[serde(default = "default_middleboxes")]
    pub middleboxes: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_middleboxes() -> Vec<String> {
    MIDDLEBOXES.iter().map(|s| s.to_string()).collect()
}

impl Default for DatapathConfig {
    fn default() -> Self {
        Self {
            signing: true,
            middleboxes: default_middleboxes(),
        }
    }
}

impl DatapathConfig {
    /// Check the middlebox list: known names, each at most once.
    pub fn validate(&self) -> Result<(), String> {
        for (i, m) in self.middleboxes.iter().enumerate() {
            if !MIDDLEBOXES.contains(&m.as_str()) {
                return Err(format!(
                    "unknown middlebox {m:?} (known: {})",
                    MIDDLEBOXES.join(", ")
                ));
            }
            if self.middleboxes[..i].contains(m) {
                return Err(format!("middlebox {m:?} appears twice"));
            }
        }
        Ok(())
    }

    /// Hops of every chain: one per middlebox plus the return hop to the vSwitch.
    pub fn hops(&self) -> u8 {
        u8::try_from(self.middleboxes.len() + 1).unwrap_or(u8::MAX)
    }

    /// Stage of middlebox `kind` (1-based), if the chain has it.
    pub fn stage_of(&self, kind: &str) -> Option<u8> {
        self.middleboxes
            .iter()
            .position(|m| m == kind)
            .and_then(|i| u8::try_from(i + 1).ok())
    }
}

/// A [`GatewayReport`] as the gateway's trusted agent signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// Postcard encoding of the [`GatewayReport`].
    pub body: Vec<u8>,
    /// AGENT_SIGN over `body` (`gw_abi::report_signing_input`), with the gateway's agent key.
    pub signature: Signature,
}

impl SignedReport {
    /// Verify with the gateway's agent key and decode.
    pub fn open(&self, agent_key: &ed25519_dalek::VerifyingKey) -> Option<GatewayReport> {
        agent_key
            .verify_strict(&gw_abi::report_signing_input(&self.body), &self.signature)
            .ok()?;
        postcard::from_bytes(&self.body).ok()
    }
}

/// Devices behind the gateway and data-path counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayReport {
    /// Devices seen (DHCP leases, ARP/neighbour tables).
    pub devices: Vec<Device>,
    /// Data-path hop counters, when a vSwitch publishes them.
    pub datapath: Option<DatapathCounters>,
}

/// Data-path counters of the vSwitch and middleboxes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatapathCounters {
    /// Packets dropped because a hop tag failed, was replayed or skipped a hop.
    pub hop_drops: u64,
    /// Packets passed with a valid hop tag.
    pub hop_passes: u64,
}

/// One IoT device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Current IP address, if known.
    pub ip: Option<String>,
    /// Hostname from DHCP, if any.
    pub hostname: Option<String>,
}

/// Framing errors.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed or the socket failed.
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    /// A frame longer than [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    /// A frame that does not decode.
    #[error("malformed message: {0}")]
    Decode(#[from] postcard::Error),
}

/// Write one message as a frame.
pub async fn write_msg<W: AsyncWrite + Unpin, M: Serialize>(
    w: &mut W,
    msg: &M,
) -> Result<(), FrameError> {
    let body = postcard::to_stdvec(msg)?;
    if body.len() > MAX_FRAME {
        return Err(FrameError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    w.write_all(&frame).await?;
    w.flush().await?;
    Ok(())
}

/// Read one frame and decode it.
pub async fn read_msg<R: AsyncRead + Unpin, M: for<'de> Deserialize<'de>>(
    r: &mut R,
) -> Result<M, FrameError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(postcard::from_bytes(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let msg = ControllerMsg::Challenge { nonce: [9; 32] };
        write_msg(&mut a, &msg).await.unwrap();
        let back: ControllerMsg = read_msg(&mut b).await.unwrap();
        assert_eq!(back, msg);
        // A length prefix over the limit is refused before any allocation.
        a.write_all(&(MAX_FRAME as u32 + 1).to_be_bytes())
            .await
            .unwrap();
        assert!(matches!(
            read_msg::<_, ControllerMsg>(&mut b).await,
            Err(FrameError::TooLarge(_))
        ));
        // Garbage is a decode error, not a panic.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[0, 0, 0, 2, 0xff, 0xff]).await.unwrap();
        assert!(matches!(
            read_msg::<_, AgentMsg>(&mut b).await,
            Err(FrameError::Decode(_))
        ));
    }

    #[test]
    fn binding_depends_on_id_and_csr() {
        assert_ne!(enroll_binding("a", b"x"), enroll_binding("b", b"x"));
        assert_ne!(enroll_binding("a", b"x"), enroll_binding("a", b"y"));
    }
}
