//! The Gatewarden hypercall ABI, shared by the hypervisor, the software monitor and guest code.
//!
//! A call is a [`Function`], a request body and a response buffer. Bodies are [`Request`] and
//! [`Response`] values encoded with postcard; both encoders and decoders are bounds-checked and
//! refuse trailing bytes. How a call reaches the monitor depends on the transport:
//!
//! * aarch64 `HVC #0` (see [`regs::aarch64`]), x86_64 `VMMCALL` (see [`regs::x86_64`]):
//!   the request and response live in guest memory, named by address and length in registers;
//! * the host software monitor: a length-prefixed frame on a Unix socket (see [`frame`]).
//!
//! The specification is `docs/abi.md`; this crate is its executable form.
#![no_std]

pub mod frame;
pub mod regs;

use ed25519_dalek::Signature;
use serde::{Deserialize, Serialize};
use vtpm::{ComponentKind, Event, MonitorIdentity, PcrSelection};

/// ABI major version: bumped on any incompatible change.
pub const ABI_MAJOR: u16 = 1;
/// ABI minor version: bumped when calls are added.
pub const ABI_MINOR: u16 = 0;

/// Largest encoded request the monitor accepts.
pub const MAX_REQUEST: usize = 64 * 1024 + 512;
/// Largest encoded response the monitor produces.
pub const MAX_RESPONSE: usize = 64 * 1024 + 512;
/// Largest packet HOP_TAG / HOP_CHECK take (jumbo frames included).
pub const MAX_PACKET: usize = 9216;
/// Bound on the fixed-size responses (VERSION, PCR_*, HOP_*, AGENT_*, POLICY_SET), see
/// [`Function::response_bound`].
pub const SMALL_RESPONSE: usize = 256;
/// Largest message AGENT_SIGN / AGENT_VERIFY take.
pub const MAX_AGENT_MESSAGE: usize = 16 * 1024;
/// Largest policy POLICY_SET takes and the vault keeps.
pub const MAX_POLICY: usize = 64 * 1024;
/// Events returned by one EVENT_LOG_READ.
pub const EVENTS_PER_READ: usize = 16;
/// Bytes of policy returned by one POLICY_GET.
pub const POLICY_CHUNK: usize = 8 * 1024;

/// Signing context of gateway → controller reports (AGENT_SIGN).
pub const AGENT_REPORT_CONTEXT: &[u8] = b"gatewarden/agent-report/v1\0";
/// Signing context of controller → gateway commands (AGENT_VERIFY).
pub const CONTROLLER_COMMAND_CONTEXT: &[u8] = b"gatewarden/controller-command/v1\0";
/// Signing context of policies (POLICY_SET): followed by the version (u64 LE) and SHA-256 of the
/// policy (see [`policy_signing_input`]).
pub const POLICY_CONTEXT: &[u8] = b"gatewarden/policy/v1\0";

/// Base of the SMCCC "vendor specific hypervisor service" range, fast call, SMC64.
pub const SMCCC_VENDOR_HYP: u32 = 0xC600_0000;
/// Base of Gatewarden function ids in `rax` for `VMMCALL` ("GW" in the high half).
pub const X86_BASE: u32 = 0x4757_0000;

/// Hypercall functions. The numeric value is the low 16 bits of the function id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Function {
    /// ABI version and monitor identity.
    Version = 0x00,
    /// Extend a guest-extendable PCR and log the event.
    PcrExtend = 0x10,
    /// Read a PCR.
    PcrRead = 0x11,
    /// Signed quote over a PCR selection for a verifier nonce.
    Quote = 0x12,
    /// Read event log entries.
    EventLogRead = 0x13,
    /// Register the calling program at a chain stage; binds hop keys to it and measures it.
    HopKeyRegister = 0x20,
    /// Tag an outgoing packet with the caller's hop key.
    HopTag = 0x21,
    /// Check an incoming tagged packet with the caller's hop key.
    HopCheck = 0x22,
    /// Sign a report with the gateway's control-channel key.
    AgentSign = 0x30,
    /// Verify a command signed by the controller.
    AgentVerify = 0x31,
    /// Read the controller policy kept in the vault.
    PolicyGet = 0x40,
    /// Store a controller-signed policy in the vault (measured).
    PolicySet = 0x41,
}

impl Function {
    /// Every function, in numeric order.
    pub const ALL: [Function; 12] = [
        Function::Version,
        Function::PcrExtend,
        Function::PcrRead,
        Function::Quote,
        Function::EventLogRead,
        Function::HopKeyRegister,
        Function::HopTag,
        Function::HopCheck,
        Function::AgentSign,
        Function::AgentVerify,
        Function::PolicyGet,
        Function::PolicySet,
    ];

    /// Largest encoded response the function returns: [`SMALL_RESPONSE`] for the fixed-size
    /// answers, [`MAX_RESPONSE`] for QUOTE, EVENT_LOG_READ and POLICY_GET. A caller needs no
    /// larger response buffer, and the hypervisor checks no more of it than this before the call
    /// runs: the hop calls made per packet then cost one page translation, not seventeen.
    pub const fn response_bound(self) -> usize {
        match self {
            Function::Quote | Function::EventLogRead | Function::PolicyGet => MAX_RESPONSE,
            Function::Version
            | Function::PcrExtend
            | Function::PcrRead
            | Function::HopKeyRegister
            | Function::HopTag
            | Function::HopCheck
            | Function::AgentSign
            | Function::AgentVerify
            | Function::PolicySet => SMALL_RESPONSE,
        }
    }

    /// Whether the answer depends on which program calls (the monitor binds hop slots and the
    /// trusted agent to a program identity). A platform may skip measuring the caller for the
    /// other functions: the monitor core never looks at their caller (tested in `gw-core`).
    pub const fn binds_caller(self) -> bool {
        match self {
            Function::HopKeyRegister
            | Function::HopTag
            | Function::HopCheck
            | Function::AgentSign
            | Function::AgentVerify
            | Function::PolicySet => true,
            Function::Version
            | Function::PcrExtend
            | Function::PcrRead
            | Function::Quote
            | Function::EventLogRead
            | Function::PolicyGet => false,
        }
    }

    /// The function with low bits `n`.
    pub fn from_number(n: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|f| *f as u16 == n)
    }

    /// The SMCCC function id passed in `x0` on aarch64.
    pub const fn aarch64_id(self) -> u32 {
        SMCCC_VENDOR_HYP | self as u32
    }

    /// Decode an aarch64 function id; anything outside our range is `None` (answered with -1).
    pub fn from_aarch64_id(id: u64) -> Option<Self> {
        if id >> 16 != (SMCCC_VENDOR_HYP >> 16) as u64 {
            return None;
        }
        Self::from_number(id as u16)
    }

    /// The function id passed in `rax` on x86_64.
    pub const fn x86_id(self) -> u32 {
        X86_BASE | self as u32
    }

    /// Decode an x86_64 function id (low 32 bits of `rax`).
    pub fn from_x86_id(id: u64) -> Option<Self> {
        let id = id as u32;
        if id >> 16 != X86_BASE >> 16 {
            return None;
        }
        Self::from_number(id as u16)
    }

    /// Name as used in docs and logs, e.g. `PCR_EXTEND`.
    pub const fn name(self) -> &'static str {
        match self {
            Function::Version => "VERSION",
            Function::PcrExtend => "PCR_EXTEND",
            Function::PcrRead => "PCR_READ",
            Function::Quote => "QUOTE",
            Function::EventLogRead => "EVENT_LOG_READ",
            Function::HopKeyRegister => "HOP_KEY_REGISTER",
            Function::HopTag => "HOP_TAG",
            Function::HopCheck => "HOP_CHECK",
            Function::AgentSign => "AGENT_SIGN",
            Function::AgentVerify => "AGENT_VERIFY",
            Function::PolicyGet => "POLICY_GET",
            Function::PolicySet => "POLICY_SET",
        }
    }
}

/// Error codes, returned as negative status values. 0 is success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(i32)]
pub enum AbiError {
    /// Unknown function id (SMCCC `NOT_SUPPORTED`).
    #[error("unknown or unsupported call")]
    NotSupported = -1,
    /// An argument is out of range or inconsistent.
    #[error("invalid parameter")]
    InvalidParameter = -2,
    /// The caller may not do this (locality, key slot bound to another program).
    #[error("denied")]
    Denied = -3,
    /// A guest address is unmapped, not guest RAM (device or monitor memory), or buffers overlap.
    #[error("bad guest address")]
    BadAddress = -4,
    /// The response does not fit the caller's buffer.
    #[error("response buffer too small")]
    BufferTooSmall = -5,
    /// The event log is full; the extend was refused.
    #[error("event log full")]
    LogFull = -6,
    /// No free key slot, or the slot does not exist.
    #[error("no such key slot or no free slot")]
    NoSlot = -7,
    /// Hop trailer malformed.
    #[error("malformed hop trailer")]
    HopMalformed = -8,
    /// Packet belongs to another chain.
    #[error("wrong chain")]
    WrongChain = -9,
    /// Packet presented at the wrong hop (skipped or repeated hop).
    #[error("wrong hop")]
    WrongHop = -10,
    /// Hop tag does not verify.
    #[error("bad hop tag")]
    BadTag = -11,
    /// Replayed packet.
    #[error("replayed packet")]
    Replay = -12,
    /// Packet older than the replay window.
    #[error("packet too old")]
    TooOld = -13,
    /// Signature does not verify.
    #[error("bad signature")]
    BadSignature = -14,
    /// The monitor lacks what this call needs (e.g. no controller key provisioned).
    #[error("not provisioned")]
    NotProvisioned = -15,
    /// The request body does not decode, or does not match the function.
    #[error("malformed request")]
    Malformed = -16,
    /// A policy older than or equal to the stored one.
    #[error("stale policy version")]
    StalePolicy = -17,
    /// Sequence numbers or counters exhausted.
    #[error("exhausted")]
    Exhausted = -18,
}

impl AbiError {
    /// Every error, for tests and docs.
    pub const ALL: [AbiError; 18] = [
        AbiError::NotSupported,
        AbiError::InvalidParameter,
        AbiError::Denied,
        AbiError::BadAddress,
        AbiError::BufferTooSmall,
        AbiError::LogFull,
        AbiError::NoSlot,
        AbiError::HopMalformed,
        AbiError::WrongChain,
        AbiError::WrongHop,
        AbiError::BadTag,
        AbiError::Replay,
        AbiError::TooOld,
        AbiError::BadSignature,
        AbiError::NotProvisioned,
        AbiError::Malformed,
        AbiError::StalePolicy,
        AbiError::Exhausted,
    ];

    /// The status value (negative).
    pub const fn code(self) -> i32 {
        self as i32
    }

    /// The error for a negative status; unknown negative codes map to `NotSupported`.
    pub fn from_code(code: i64) -> Option<Self> {
        if code >= 0 {
            return None;
        }
        Some(
            Self::ALL
                .into_iter()
                .find(|e| e.code() as i64 == code)
                .unwrap_or(AbiError::NotSupported),
        )
    }
}

/// A call's result: response length, or an error.
pub type AbiResult<T> = Result<T, AbiError>;

/// A request body. The variant must match the [`Function`] it is sent with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<'a> {
    /// VERSION.
    Version,
    /// PCR_EXTEND.
    PcrExtend {
        /// PCR index (guest-extendable ranges only, see `docs/pcr-map.md`).
        pcr: u16,
        /// The measurement.
        digest: [u8; 32],
        /// What was measured.
        kind: ComponentKind,
        /// Component name (truncated to 48 bytes in the log).
        name: &'a str,
        /// Component version (truncated to 24 bytes).
        version: &'a str,
    },
    /// PCR_READ.
    PcrRead {
        /// PCR index.
        pcr: u16,
    },
    /// QUOTE.
    Quote {
        /// Verifier nonce.
        nonce: [u8; 32],
        /// PCRs to cover.
        selection: PcrSelection,
    },
    /// EVENT_LOG_READ.
    EventLogRead {
        /// Index of the first entry.
        start: u32,
    },
    /// HOP_KEY_REGISTER.
    HopKeyRegister {
        /// Chain id (one per protected device and direction).
        chain: u32,
        /// Stage: 0 is the vSwitch (sends hop 0, receives the last hop); stage `k` in
        /// `1..hops` is the k-th middlebox (receives hop `k-1`, sends hop `k`).
        stage: u8,
        /// Number of hops in the chain (middleboxes + 1).
        hops: u8,
        /// Program name for the event log.
        name: &'a str,
        /// Program version for the event log.
        version: &'a str,
    },
    /// HOP_TAG.
    HopTag {
        /// Slot returned by HOP_KEY_REGISTER.
        slot: u16,
        /// Packet bytes.
        packet: &'a [u8],
    },
    /// HOP_CHECK.
    HopCheck {
        /// Slot returned by HOP_KEY_REGISTER.
        slot: u16,
        /// Packet bytes followed by the 48-byte trailer.
        frame: &'a [u8],
    },
    /// AGENT_SIGN.
    AgentSign {
        /// Report to sign (see [`report_signing_input`]).
        message: &'a [u8],
    },
    /// AGENT_VERIFY.
    AgentVerify {
        /// Command from the controller.
        message: &'a [u8],
        /// Controller signature over [`command_signing_input`].
        signature: Signature,
    },
    /// POLICY_GET.
    PolicyGet {
        /// Byte offset into the stored policy.
        offset: u32,
    },
    /// POLICY_SET.
    PolicySet {
        /// Policy version; must grow.
        version: u64,
        /// Policy bytes.
        policy: &'a [u8],
        /// Controller signature over [`policy_signing_input`].
        signature: Signature,
    },
}

impl Request<'_> {
    /// The function this request belongs to.
    pub fn function(&self) -> Function {
        match self {
            Request::Version => Function::Version,
            Request::PcrExtend { .. } => Function::PcrExtend,
            Request::PcrRead { .. } => Function::PcrRead,
            Request::Quote { .. } => Function::Quote,
            Request::EventLogRead { .. } => Function::EventLogRead,
            Request::HopKeyRegister { .. } => Function::HopKeyRegister,
            Request::HopTag { .. } => Function::HopTag,
            Request::HopCheck { .. } => Function::HopCheck,
            Request::AgentSign { .. } => Function::AgentSign,
            Request::AgentVerify { .. } => Function::AgentVerify,
            Request::PolicyGet { .. } => Function::PolicyGet,
            Request::PolicySet { .. } => Function::PolicySet,
        }
    }

    /// Check the bounds the ABI puts on a request's fields.
    pub fn check_bounds(&self) -> AbiResult<()> {
        let ok = match self {
            Request::HopTag { packet, .. } => packet.len() <= MAX_PACKET,
            Request::HopCheck { frame, .. } => frame.len() <= MAX_PACKET + 48,
            Request::AgentSign { message } | Request::AgentVerify { message, .. } => {
                message.len() <= MAX_AGENT_MESSAGE
            }
            Request::PolicySet { policy, .. } => policy.len() <= MAX_POLICY,
            Request::HopKeyRegister { hops, stage, .. } => *hops >= 1 && stage < hops,
            _ => true,
        };
        if ok {
            Ok(())
        } else {
            Err(AbiError::InvalidParameter)
        }
    }

    /// Encode into `buf`, returning the used length.
    pub fn encode(&self, buf: &mut [u8]) -> AbiResult<usize> {
        self.check_bounds()?;
        postcard::to_slice(self, buf)
            .map(|b| b.len())
            .map_err(|_| AbiError::BufferTooSmall)
    }

    /// Decode a request sent with `function`. Refuses trailing bytes, a variant that does not
    /// match `function`, and out-of-bounds fields.
    pub fn decode(function: Function, bytes: &[u8]) -> AbiResult<Request<'_>> {
        if bytes.len() > MAX_REQUEST {
            return Err(AbiError::InvalidParameter);
        }
        let req = match postcard::take_from_bytes::<Request<'_>>(bytes) {
            Ok((r, [])) => r,
            _ => return Err(AbiError::Malformed),
        };
        if req.function() != function {
            return Err(AbiError::Malformed);
        }
        req.check_bounds()?;
        Ok(req)
    }
}

/// A response body.
#[allow(
    clippy::large_enum_variant,
    reason = "the monitor has no heap; one response lives briefly on its stack per call"
)]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response<'a> {
    /// VERSION.
    Version {
        /// [`ABI_MAJOR`] of the monitor.
        major: u16,
        /// [`ABI_MINOR`] of the monitor.
        minor: u16,
        /// The monitor's identity (as it appears in quotes).
        identity: MonitorIdentity,
        /// The attestation public key.
        attestation_key: [u8; 32],
        /// The control-channel (trusted agent) public key.
        agent_key: [u8; 32],
    },
    /// Calls with no result (PCR_EXTEND, AGENT_VERIFY, POLICY_SET).
    Done,
    /// PCR_READ.
    Pcr {
        /// PCR value.
        value: [u8; 32],
    },
    /// QUOTE.
    Quote {
        /// The encoded `vtpm::SignedQuote`.
        quote: &'a [u8],
        /// The selected PCR values at quote time, 32 bytes each, ascending index order.
        pcrs: &'a [u8],
    },
    /// EVENT_LOG_READ.
    EventLog {
        /// Entries in the whole log.
        total: u32,
        /// Whether an extend was ever refused because the log was full.
        overflowed: bool,
        /// Up to [`EVENTS_PER_READ`] entries from `start`.
        events: heapless::Vec<Event, EVENTS_PER_READ>,
    },
    /// HOP_KEY_REGISTER.
    Slot {
        /// Slot handle for HOP_TAG / HOP_CHECK.
        slot: u16,
        /// PCR the program was measured into.
        pcr: u16,
    },
    /// HOP_TAG.
    Tagged {
        /// The 48-byte trailer to append to the packet.
        trailer: &'a [u8],
    },
    /// HOP_CHECK.
    Checked {
        /// Sequence number of the accepted packet.
        seq: u64,
    },
    /// AGENT_SIGN.
    Signed {
        /// ed25519 signature over [`report_signing_input`].
        signature: Signature,
    },
    /// POLICY_GET.
    Policy {
        /// Version of the stored policy (0: none).
        version: u64,
        /// Total policy length.
        total: u32,
        /// Up to [`POLICY_CHUNK`] bytes from the requested offset.
        chunk: &'a [u8],
    },
}

impl Response<'_> {
    /// Encode into `buf`, returning the used length.
    pub fn encode(&self, buf: &mut [u8]) -> AbiResult<usize> {
        postcard::to_slice(self, buf)
            .map(|b| b.len())
            .map_err(|_| AbiError::BufferTooSmall)
    }

    /// Decode a response; refuses trailing bytes.
    pub fn decode(bytes: &[u8]) -> AbiResult<Response<'_>> {
        match postcard::take_from_bytes::<Response<'_>>(bytes) {
            Ok((r, [])) => Ok(r),
            _ => Err(AbiError::Malformed),
        }
    }
}

/// The bytes an ed25519 signature covers: `context || extra || SHA-256(message)`.
///
/// Hashing the message first keeps the signed input small and fixed-size, so the hypervisor
/// signs and verifies large policies without buffering them twice.
pub type SigningInput = heapless::Vec<u8, 128>;

fn signing_input(context: &[u8], extra: &[u8], message: &[u8]) -> SigningInput {
    let mut v = SigningInput::new();
    // Contexts are < 64 bytes and `extra` is at most 8: always fits in 128.
    let _ = v.extend_from_slice(context);
    let _ = v.extend_from_slice(extra);
    let _ = v.extend_from_slice(&vtpm::sha256(message));
    v
}

/// What AGENT_SIGN signs for a gateway report.
pub fn report_signing_input(message: &[u8]) -> SigningInput {
    signing_input(AGENT_REPORT_CONTEXT, &[], message)
}

/// What a controller command signature covers (checked by AGENT_VERIFY).
pub fn command_signing_input(message: &[u8]) -> SigningInput {
    signing_input(CONTROLLER_COMMAND_CONTEXT, &[], message)
}

/// What a policy signature covers (checked by POLICY_SET).
pub fn policy_signing_input(version: u64, policy: &[u8]) -> SigningInput {
    signing_input(POLICY_CONTEXT, &version.to_le_bytes(), policy)
}

/// The stage assignment HOP_KEY_REGISTER records as the measured event's version, set by the
/// monitor (not the caller): `c<chain, 8 hex digits> s<stage>/<hops>`, at most 18 bytes.
pub fn stage_assignment(chain: u32, stage: u8, hops: u8) -> heapless::String<24> {
    use core::fmt::Write;
    let mut s = heapless::String::new();
    // Cannot fail: at most 18 bytes.
    let _ = write!(s, "c{chain:08x} s{stage}/{hops}");
    s
}

/// Parse a [`stage_assignment`]: `(chain, stage, hops)`.
pub fn parse_stage_assignment(v: &str) -> Option<(u32, u8, u8)> {
    let rest = v.strip_prefix('c')?;
    let (chain, rest) = rest.split_once(" s")?;
    let (stage, hops) = rest.split_once('/')?;
    if chain.len() != 8 {
        return None;
    }
    Some((
        u32::from_str_radix(chain, 16).ok()?,
        stage.parse().ok()?,
        hops.parse().ok()?,
    ))
}
