//! The Gatewarden monitor core: everything a hypercall can do, independent of how it arrived.
//!
//! The EL2 / SVM hypervisor and the host software monitor both own one [`Monitor`]. The
//! platform layer decodes the trap (registers, guest buffers, or a socket frame), identifies
//! the [`Caller`], and passes the request bytes to [`Monitor::handle`], which validates, acts
//! and encodes the response. No input makes it panic; every failure is an [`AbiError`].
//!
//! Mediation rules (P_sw3), also in `docs/abi.md`:
//! * a hop key slot is bound to the program that registered it (measured into a PCR); other
//!   programs are denied, a new process of the same program takes the slot over (logged);
//! * the trusted agent (AGENT_SIGN, AGENT_VERIFY, POLICY_SET) is bound to the first program
//!   that uses it, measured into PCR 8; other programs are denied;
//! * the policy is readable only by the agent and by registered chain stages.
#![no_std]

use core::fmt::Write as _;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use gw_abi::{
    AbiError, AbiResult, EVENTS_PER_READ, Function, MAX_POLICY, POLICY_CHUNK, Request, Response,
};
use gw_hoptag::{HopError, HopKey, HopReceiver, HopSender};
use vtpm::{
    ComponentKind, Digest, KeyHierarchy, Locality, MonitorIdentity, PCR_COUNT, PcrIndex, Vtpm,
    VtpmError,
    pcr::{MIDDLEBOX_BINARIES, PCR_GATEWAY_AGENT, PCR_POLICY},
    quote::SIGNED_QUOTE_MAX,
};
use zerocopy::IntoBytes;

/// Response room HOP_TAG and HOP_CHECK need (a trailer plus encoding overhead).
pub const HOP_RESPONSE_MIN: usize = gw_hoptag::TRAILER_LEN + 8;

/// Most hop key slots a monitor can hold (one PCR each in the middlebox-binary range).
pub const MAX_SLOTS: usize = 480;

/// Who made a call, as established by the platform layer (never by the caller's own claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    /// Address space: the process (software monitor: pid; hypervisor: TTBR0/CR3 base).
    pub space: u64,
    /// SHA-256 of the calling program, measured by the monitor.
    pub program: Digest,
}

/// Boot-time configuration from the board / provisioning.
pub struct Config<'a> {
    /// Keys derived from the device secret.
    pub keys: &'a KeyHierarchy,
    /// Identity in quotes.
    pub identity: MonitorIdentity,
    /// Persistent boot counter (must grow every boot).
    pub boot_counter: u64,
    /// The controller's command-signing key, if provisioned.
    pub controller_key: Option<VerifyingKey>,
    /// Per-boot secret from the hardware RNG; all hop keys are derived from it.
    pub hop_master: [u8; 32],
}

struct Slot {
    chain: u32,
    stage: u8,
    hops: u8,
    owner: Caller,
    pcr: u16,
    sender: HopSender,
    receiver: HopReceiver,
}

struct Vault {
    version: u64,
    bytes: heapless::Vec<u8, MAX_POLICY>,
}

/// Data-path statistics over all hop key slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HopStats {
    /// Packets tagged.
    pub tagged: u64,
    /// Packets that passed HOP_CHECK.
    pub passed: u64,
    /// Packets dropped by HOP_CHECK (any reason).
    pub dropped: u64,
}

/// The monitor: vTPM with an event log of `LOG` entries, up to `SLOTS` hop key slots.
pub struct Monitor<const LOG: usize, const SLOTS: usize> {
    vtpm: Vtpm<LOG>,
    identity: MonitorIdentity,
    agent_key: SigningKey,
    controller_key: Option<VerifyingKey>,
    agent: Option<Digest>,
    hop_master: [u8; 32],
    slots: heapless::Vec<Slot, SLOTS>,
    vault: Vault,
    stats: HopStats,
    scratch: [u8; PCR_COUNT * 32],
}

fn vtpm_err(e: VtpmError) -> AbiError {
    match e {
        VtpmError::BadPcr(_) | VtpmError::NotResettable(_) => AbiError::InvalidParameter,
        VtpmError::Denied(_) => AbiError::Denied,
        VtpmError::LogFull => AbiError::LogFull,
        VtpmError::Quote(_) => AbiError::Exhausted,
    }
}

fn hop_err(e: HopError) -> AbiError {
    match e {
        HopError::Malformed => AbiError::HopMalformed,
        HopError::WrongChain => AbiError::WrongChain,
        HopError::WrongHop => AbiError::WrongHop,
        HopError::BadTag => AbiError::BadTag,
        HopError::Replay => AbiError::Replay,
        HopError::TooOld => AbiError::TooOld,
        HopError::Exhausted => AbiError::Exhausted,
    }
}

impl<const LOG: usize, const SLOTS: usize> Monitor<LOG, SLOTS> {
    /// A monitor for this boot. Measure the boot chain with [`Monitor::measure`] before the
    /// guest runs.
    pub fn new(config: Config<'_>) -> Self {
        const { assert!(SLOTS <= MAX_SLOTS, "one middlebox PCR per slot") };
        Self {
            vtpm: Vtpm::new(config.keys, config.identity.clone(), config.boot_counter),
            identity: config.identity,
            agent_key: config.keys.control_key(),
            controller_key: config.controller_key,
            agent: None,
            hop_master: config.hop_master,
            slots: heapless::Vec::new(),
            vault: Vault {
                version: 0,
                bytes: heapless::Vec::new(),
            },
            stats: HopStats::default(),
            scratch: [0; PCR_COUNT * 32],
        }
    }

    /// Extend a PCR with monitor locality (boot measurements).
    pub fn measure(
        &mut self,
        pcr: u16,
        digest: &Digest,
        kind: ComponentKind,
        name: &str,
        version: &str,
    ) -> Result<(), VtpmError> {
        let pcr = PcrIndex::try_from(pcr)?;
        self.vtpm
            .extend(Locality::Monitor, pcr, digest, kind, name, version)
    }

    /// The vTPM (read-only, for the platform's console and tests).
    pub fn vtpm(&self) -> &Vtpm<LOG> {
        &self.vtpm
    }

    /// Data-path counters.
    pub fn hop_stats(&self) -> HopStats {
        self.stats
    }

    /// Handle a call with a raw function number (from a trap or a frame). Unknown numbers
    /// return [`AbiError::NotSupported`].
    pub fn handle_raw(
        &mut self,
        caller: &Caller,
        function: u16,
        req: &[u8],
        out: &mut [u8],
    ) -> AbiResult<usize> {
        let f = Function::from_number(function).ok_or(AbiError::NotSupported)?;
        self.handle(caller, f, req, out)
    }

    /// Decode `req` for `function`, execute it for `caller`, and encode the response into `out`.
    pub fn handle(
        &mut self,
        caller: &Caller,
        function: Function,
        req: &[u8],
        out: &mut [u8],
    ) -> AbiResult<usize> {
        let request = Request::decode(function, req)?;
        match request {
            Request::Version => Response::Version {
                major: gw_abi::ABI_MAJOR,
                minor: gw_abi::ABI_MINOR,
                identity: self.identity.clone(),
                attestation_key: self.vtpm.attestation_public_key().to_bytes(),
                agent_key: self.agent_key.verifying_key().to_bytes(),
            }
            .encode(out),
            Request::PcrExtend {
                pcr,
                digest,
                kind,
                name,
                version,
            } => {
                if kind == ComponentKind::Reset {
                    return Err(AbiError::InvalidParameter);
                }
                let pcr = PcrIndex::new(pcr).ok_or(AbiError::InvalidParameter)?;
                self.vtpm
                    .extend(Locality::Guest, pcr, &digest, kind, name, version)
                    .map_err(vtpm_err)?;
                Response::Done.encode(out)
            }
            Request::PcrRead { pcr } => {
                let pcr = PcrIndex::new(pcr).ok_or(AbiError::InvalidParameter)?;
                Response::Pcr {
                    value: self.vtpm.read(pcr),
                }
                .encode(out)
            }
            Request::Quote { nonce, selection } => {
                if selection.is_empty() {
                    return Err(AbiError::InvalidParameter);
                }
                // Size the response before signing, so a too-small buffer does not burn a
                // quote counter value.
                if out.len() < selection.len() * 32 + SIGNED_QUOTE_MAX + 16 {
                    return Err(AbiError::BufferTooSmall);
                }
                let quote = self.vtpm.quote(&nonce, &selection).map_err(vtpm_err)?;
                let mut qbuf = [0u8; SIGNED_QUOTE_MAX];
                let qlen = quote
                    .encode(&mut qbuf)
                    .map_err(|_| AbiError::Exhausted)?
                    .len();
                let n = selection.len() * 32;
                for (chunk, pcr) in self.scratch[..n].chunks_exact_mut(32).zip(selection.iter()) {
                    chunk.copy_from_slice(&self.vtpm.read(pcr));
                }
                Response::Quote {
                    quote: &qbuf[..qlen],
                    pcrs: &self.scratch[..n],
                }
                .encode(out)
            }
            Request::EventLogRead { start } => {
                let log = self.vtpm.log();
                let entries = log.entries();
                let from = (start as usize).min(entries.len());
                let to = (from + EVENTS_PER_READ).min(entries.len());
                let events = heapless::Vec::from_slice(&entries[from..to])
                    .map_err(|_| AbiError::Exhausted)?;
                Response::EventLog {
                    total: entries.len() as u32,
                    overflowed: log.overflowed(),
                    events,
                }
                .encode(out)
            }
            Request::HopKeyRegister {
                chain,
                stage,
                hops,
                name,
                version,
            } => {
                let (slot, pcr) = self.register(caller, chain, stage, hops, name, version)?;
                Response::Slot { slot, pcr }.encode(out)
            }
            Request::HopTag { slot, packet } => {
                // Check the response fits before a sequence number is used up.
                if out.len() < HOP_RESPONSE_MIN {
                    return Err(AbiError::BufferTooSmall);
                }
                let s = self.owned_slot(caller, slot)?;
                let trailer = s.sender.tag(packet).map_err(hop_err)?;
                self.stats.tagged += 1;
                Response::Tagged {
                    trailer: trailer.as_bytes(),
                }
                .encode(out)
            }
            Request::HopCheck { slot, frame } => {
                // Check the response fits before the packet is marked as seen.
                if out.len() < HOP_RESPONSE_MIN {
                    return Err(AbiError::BufferTooSmall);
                }
                let s = self.owned_slot(caller, slot)?;
                // One parse of the trailer; its sequence number is the answer.
                let checked = gw_hoptag::Trailer::split(frame)
                    .and_then(|(packet, trailer)| s.receiver.check(packet, trailer));
                match checked {
                    Ok(seq) => {
                        self.stats.passed += 1;
                        Response::Checked { seq }.encode(out)
                    }
                    Err(e) => {
                        self.stats.dropped += 1;
                        Err(hop_err(e))
                    }
                }
            }
            Request::AgentSign { message } => {
                self.bind_agent(caller)?;
                let input = gw_abi::report_signing_input(message);
                Response::Signed {
                    signature: self.agent_key.sign(&input),
                }
                .encode(out)
            }
            Request::AgentVerify { message, signature } => {
                self.bind_agent(caller)?;
                let key = self.controller_key.ok_or(AbiError::NotProvisioned)?;
                key.verify_strict(&gw_abi::command_signing_input(message), &signature)
                    .map_err(|_| AbiError::BadSignature)?;
                Response::Done.encode(out)
            }
            Request::PolicySet {
                version,
                policy,
                signature,
            } => {
                self.bind_agent(caller)?;
                let key = self.controller_key.ok_or(AbiError::NotProvisioned)?;
                if version <= self.vault.version {
                    return Err(AbiError::StalePolicy);
                }
                key.verify_strict(&gw_abi::policy_signing_input(version, policy), &signature)
                    .map_err(|_| AbiError::BadSignature)?;
                let mut label = heapless::String::<24>::new();
                let _ = write!(label, "{version}");
                // Measure first: if the log is full the policy is refused (fail closed).
                self.measure(
                    PCR_POLICY,
                    &vtpm::sha256(policy),
                    ComponentKind::Policy,
                    "policy",
                    &label,
                )
                .map_err(vtpm_err)?;
                self.vault.bytes =
                    heapless::Vec::from_slice(policy).map_err(|_| AbiError::InvalidParameter)?;
                self.vault.version = version;
                Response::Done.encode(out)
            }
            // Any caller may read: the middleboxes that enforce the policy hold it in guest
            // memory anyway, so hiding it from guest processes would hide nothing from a
            // compromised guest kernel. What the vault guarantees is integrity: only a
            // controller-signed policy is stored, and its digest is measured (PCR 11). Data-path
            // stages must read it before they know which hop slots to register.
            Request::PolicyGet { offset } => {
                let bytes = &self.vault.bytes;
                let from = (offset as usize).min(bytes.len());
                let to = (from + POLICY_CHUNK).min(bytes.len());
                Response::Policy {
                    version: self.vault.version,
                    total: bytes.len() as u32,
                    chunk: &bytes[from..to],
                }
                .encode(out)
            }
        }
    }

    fn bind_agent(&mut self, caller: &Caller) -> AbiResult<()> {
        match self.agent {
            Some(p) if p == caller.program => Ok(()),
            Some(_) => Err(AbiError::Denied),
            None => {
                self.measure(
                    PCR_GATEWAY_AGENT,
                    &caller.program,
                    ComponentKind::GatewayAgent,
                    "gateway-agent",
                    "",
                )
                .map_err(vtpm_err)?;
                self.agent = Some(caller.program);
                Ok(())
            }
        }
    }

    fn owned_slot(&mut self, caller: &Caller, slot: u16) -> AbiResult<&mut Slot> {
        let s = self.slots.get_mut(slot as usize).ok_or(AbiError::NoSlot)?;
        if s.owner != *caller {
            return Err(AbiError::Denied);
        }
        Ok(s)
    }

    fn hop_key(&self, chain: u32, hop: u8) -> HopKey {
        let hk =
            hkdf::Hkdf::<sha2::Sha256>::from_prk(&self.hop_master).expect("32-byte PRK is valid");
        let mut info = [0u8; 9];
        info[..4].copy_from_slice(b"hop\0");
        info[4..8].copy_from_slice(&chain.to_le_bytes());
        info[8] = hop;
        let mut key = [0u8; 32];
        hk.expand(&info, &mut key)
            .expect("32 bytes is a valid HKDF length");
        HopKey::new(key)
    }

    fn register(
        &mut self,
        caller: &Caller,
        chain: u32,
        stage: u8,
        hops: u8,
        name: &str,
        version: &str,
    ) -> AbiResult<(u16, u16)> {
        if hops == 0 || stage >= hops {
            return Err(AbiError::InvalidParameter);
        }
        if self
            .slots
            .iter()
            .any(|s| s.chain == chain && s.hops != hops)
        {
            return Err(AbiError::InvalidParameter);
        }
        let kind = if stage == 0 {
            ComponentKind::VSwitch
        } else {
            ComponentKind::MiddleboxBinary
        };
        // The event's version field records the stage assignment, set by the monitor (not the
        // caller's version string): a verifier checks which program holds which (chain, stage).
        let _caller_version = version;
        let assignment = gw_abi::stage_assignment(chain, stage, hops);
        let version = assignment.as_str();
        if let Some(i) = self
            .slots
            .iter()
            .position(|s| s.chain == chain && s.stage == stage)
        {
            let (pcr, owner) = (self.slots[i].pcr, self.slots[i].owner);
            if owner.program != caller.program {
                return Err(AbiError::Denied);
            }
            // Same measured program, new process: take over, logged so the verifier sees it.
            self.measure(pcr, &caller.program, kind, name, version)
                .map_err(vtpm_err)?;
            self.slots[i].owner = *caller;
            return Ok((i as u16, pcr));
        }
        if self.slots.is_full() {
            return Err(AbiError::NoSlot);
        }
        let index = self.slots.len();
        let pcr = MIDDLEBOX_BINARIES.start() + index as u16;
        self.measure(pcr, &caller.program, kind, name, version)
            .map_err(vtpm_err)?;
        let send_hop = stage;
        let recv_hop = if stage == 0 { hops - 1 } else { stage - 1 };
        let slot = Slot {
            chain,
            stage,
            hops,
            owner: *caller,
            pcr,
            sender: HopSender::new(&self.hop_key(chain, send_hop), chain, send_hop),
            receiver: HopReceiver::new(&self.hop_key(chain, recv_hop), chain, recv_hop),
        };
        // Cannot fail: checked `is_full` above.
        let _ = self.slots.push(slot);
        Ok((index as u16, pcr))
    }
}
