//! Guest-side client of the Gatewarden hypercall ABI.
//!
//! [`Client`] turns typed calls into [`gw_abi::Request`] bodies and decodes the responses. The
//! [`Transport`] carries them: [`SocketTransport`] talks to the host software monitor
//! (`gw-swmon`); the hypervisor transports (HVC from the kernel module or the trapped MMIO
//! window, VMMCALL) plug in behind the same trait.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
};

use ed25519_dalek::{Signature, VerifyingKey};
use gw_abi::{AbiError, Function, MAX_REQUEST, MAX_RESPONSE, Request, Response, frame};
use vtpm::{ComponentKind, Digest, Event, MonitorIdentity, PcrSelection};

/// Environment variable naming the software monitor socket.
pub const ENV_MONITOR: &str = "GATEWARDEN_MONITOR";
/// Socket path used when [`ENV_MONITOR`] is not set.
pub const DEFAULT_SOCKET: &str = "/run/gatewarden/monitor.sock";

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The transport failed (monitor not running, connection lost).
    #[error("monitor transport: {0}")]
    Io(#[from] std::io::Error),
    /// The monitor refused the call.
    #[error("monitor refused the call: {0} (code {code})", code = .0.code())]
    Monitor(AbiError),
    /// The monitor answered with something this client does not understand.
    #[error("unexpected response from the monitor: {0}")]
    Protocol(&'static str),
}

impl From<AbiError> for CallError {
    fn from(e: AbiError) -> Self {
        CallError::Monitor(e)
    }
}

impl CallError {
    /// The ABI error, if the monitor refused the call.
    pub fn abi(&self) -> Option<AbiError> {
        match self {
            CallError::Monitor(e) => Some(*e),
            _ => None,
        }
    }
}

/// Result of a client call.
pub type CallResult<T> = Result<T, CallError>;

/// Carries one call to the monitor and back.
pub trait Transport {
    /// Send `request` (an encoded body) for `function`, write the response body into
    /// `response` and return its length, or the monitor's error.
    fn call(
        &mut self,
        function: Function,
        request: &[u8],
        response: &mut [u8],
    ) -> CallResult<usize>;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn call(
        &mut self,
        function: Function,
        request: &[u8],
        response: &mut [u8],
    ) -> CallResult<usize> {
        (**self).call(function, request, response)
    }
}

/// The software monitor's Unix socket.
pub struct SocketTransport {
    stream: UnixStream,
}

impl SocketTransport {
    /// Connect to the monitor listening at `path`.
    pub fn connect(path: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(path).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot connect to monitor at {}: {e}", path.display()),
            )
        })?;
        Ok(Self { stream })
    }
}

impl Transport for SocketTransport {
    fn call(
        &mut self,
        function: Function,
        request: &[u8],
        response: &mut [u8],
    ) -> CallResult<usize> {
        let header = frame::request_header(function, request.len());
        // One write per frame keeps the request atomic on the stream.
        let mut msg = Vec::with_capacity(header.len() + request.len());
        msg.extend_from_slice(&header);
        msg.extend_from_slice(request);
        self.stream.write_all(&msg)?;
        let mut h = [0u8; frame::RESPONSE_HEADER];
        self.stream.read_exact(&mut h)?;
        let len = frame::parse_response_header(h)
            .map_err(|_| CallError::Protocol("bad response frame"))??;
        if len > response.len() {
            return Err(CallError::Protocol("response larger than the buffer"));
        }
        self.stream.read_exact(&mut response[..len])?;
        Ok(len)
    }
}

/// Version and identity of the monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    /// ABI major version.
    pub major: u16,
    /// ABI minor version.
    pub minor: u16,
    /// Identity as it appears in quotes.
    pub identity: MonitorIdentity,
    /// Attestation public key.
    pub attestation_key: VerifyingKey,
    /// Trusted-agent (control channel) public key.
    pub agent_key: VerifyingKey,
}

/// A quote with the PCR values it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteBundle {
    /// Encoded `vtpm::SignedQuote`.
    pub quote: Vec<u8>,
    /// Values of the selected PCRs, ascending index order.
    pub pcrs: Vec<Digest>,
}

/// A typed client of the ABI over any transport.
pub struct Client<T: Transport> {
    transport: T,
    req: Vec<u8>,
    resp: Vec<u8>,
}

impl Client<Box<dyn Transport>> {
    /// Connect to the software monitor named by `$GATEWARDEN_MONITOR`, or [`DEFAULT_SOCKET`].
    pub fn connect_default() -> CallResult<Self> {
        Ok(Client::new(Box::new(SocketTransport::connect(
            &default_socket(),
        )?)))
    }
}

/// How a guest program reaches the monitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportKind {
    /// The software monitor's socket if it exists, else the hypervisor's call window.
    Auto,
    /// The software monitor's Unix socket.
    Socket,
    /// The hypervisor's EL0 call window (aarch64 Linux guests; needs `/dev/mem`).
    Hypervisor,
}

impl std::str::FromStr for TransportKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "socket" => Ok(Self::Socket),
            "hypervisor" => Ok(Self::Hypervisor),
            _ => Err(format!("{s:?}: expected auto, socket or hypervisor")),
        }
    }
}

/// Open a client over the transport `kind` selects (`socket` names the software monitor).
pub fn open(kind: TransportKind, socket: &Path) -> std::io::Result<Client<Box<dyn Transport>>> {
    let use_socket = match kind {
        TransportKind::Socket => true,
        TransportKind::Hypervisor => false,
        TransportKind::Auto => {
            socket.exists() || !cfg!(all(target_arch = "aarch64", target_os = "linux"))
        }
    };
    if use_socket {
        let t = SocketTransport::connect(socket).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "{e}: is the monitor running? (socket {}, set --monitor or ${ENV_MONITOR})",
                    socket.display()
                ),
            )
        })?;
        return Ok(Client::new(Box::new(t)));
    }
    #[cfg(all(target_arch = "aarch64", target_os = "linux"))]
    {
        let t = window::WindowTransport::open()
            .map_err(|e| std::io::Error::new(e.kind(), format!("reaching the hypervisor: {e}")))?;
        Ok(Client::new(Box::new(t)))
    }
    #[cfg(not(all(target_arch = "aarch64", target_os = "linux")))]
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "the hypervisor transport exists only in aarch64 Linux guests; use --transport socket",
    ))
}

/// The monitor socket path from the environment, or the default.
pub fn default_socket() -> PathBuf {
    std::env::var_os(ENV_MONITOR)
        .map(PathBuf::from)
        .unwrap_or_else(|| DEFAULT_SOCKET.into())
}

macro_rules! expect {
    ($resp:expr, $pat:pat => $val:expr) => {
        match $resp {
            $pat => Ok($val),
            _ => Err(CallError::Protocol("response does not match the call")),
        }
    };
}

impl<T: Transport> Client<T> {
    /// A client over `transport`.
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            req: vec![0; MAX_REQUEST],
            resp: vec![0; MAX_RESPONSE],
        }
    }

    fn call(&mut self, request: &Request<'_>) -> CallResult<Response<'_>> {
        let n = request.encode(&mut self.req)?;
        // Offer no more response buffer than the function can fill: the window transport
        // faults in, and the hypervisor checks, every page offered.
        let f = request.function();
        let len = self
            .transport
            .call(f, &self.req[..n], &mut self.resp[..f.response_bound()])?;
        Ok(Response::decode(&self.resp[..len])?)
    }

    /// VERSION.
    pub fn version(&mut self) -> CallResult<VersionInfo> {
        let r = self.call(&Request::Version)?;
        let (major, minor, identity, ak, gk) = expect!(r, Response::Version { major, minor, identity, attestation_key, agent_key } => (major, minor, identity, attestation_key, agent_key))?;
        let key = |b: [u8; 32]| {
            VerifyingKey::from_bytes(&b).map_err(|_| CallError::Protocol("invalid public key"))
        };
        Ok(VersionInfo {
            major,
            minor,
            identity,
            attestation_key: key(ak)?,
            agent_key: key(gk)?,
        })
    }

    /// PCR_READ.
    pub fn pcr_read(&mut self, pcr: u16) -> CallResult<Digest> {
        expect!(self.call(&Request::PcrRead { pcr })?, Response::Pcr { value } => value)
    }

    /// PCR_EXTEND.
    pub fn pcr_extend(
        &mut self,
        pcr: u16,
        digest: &Digest,
        kind: ComponentKind,
        name: &str,
        version: &str,
    ) -> CallResult<()> {
        expect!(self.call(&Request::PcrExtend { pcr, digest: *digest, kind, name, version })?, Response::Done => ())
    }

    /// QUOTE.
    pub fn quote(&mut self, nonce: &[u8; 32], selection: &PcrSelection) -> CallResult<QuoteBundle> {
        let r = self.call(&Request::Quote {
            nonce: *nonce,
            selection: *selection,
        })?;
        let (quote, pcrs) = expect!(r, Response::Quote { quote, pcrs } => (quote.to_vec(), pcrs))?;
        if pcrs.len() % 32 != 0 {
            return Err(CallError::Protocol("PCR values not a multiple of 32 bytes"));
        }
        let pcrs = pcrs
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32-byte chunk"))
            .collect();
        Ok(QuoteBundle { quote, pcrs })
    }

    /// The whole event log (several EVENT_LOG_READ calls) and whether it overflowed.
    pub fn event_log(&mut self) -> CallResult<(Vec<Event>, bool)> {
        let mut all = Vec::new();
        loop {
            let r = self.call(&Request::EventLogRead {
                start: all.len() as u32,
            })?;
            let (total, overflowed, events) = expect!(r, Response::EventLog { total, overflowed, events } => (total, overflowed, events))?;
            let got = events.len();
            all.extend(events);
            if all.len() >= total as usize || got == 0 {
                return Ok((all, overflowed));
            }
        }
    }

    /// HOP_KEY_REGISTER: returns `(slot, pcr)`.
    pub fn hop_register(
        &mut self,
        chain: u32,
        stage: u8,
        hops: u8,
        name: &str,
        version: &str,
    ) -> CallResult<(u16, u16)> {
        expect!(self.call(&Request::HopKeyRegister { chain, stage, hops, name, version })?, Response::Slot { slot, pcr } => (slot, pcr))
    }

    /// HOP_TAG: the 48-byte trailer to append to `packet`.
    pub fn hop_tag(
        &mut self,
        slot: u16,
        packet: &[u8],
    ) -> CallResult<[u8; gw_hoptag::TRAILER_LEN]> {
        let r = self.call(&Request::HopTag { slot, packet })?;
        let t = expect!(r, Response::Tagged { trailer } => trailer)?;
        t.try_into()
            .map_err(|_| CallError::Protocol("trailer has the wrong length"))
    }

    /// HOP_CHECK: the accepted sequence number.
    pub fn hop_check(&mut self, slot: u16, frame: &[u8]) -> CallResult<u64> {
        expect!(self.call(&Request::HopCheck { slot, frame })?, Response::Checked { seq } => seq)
    }

    /// AGENT_SIGN.
    pub fn agent_sign(&mut self, message: &[u8]) -> CallResult<Signature> {
        expect!(self.call(&Request::AgentSign { message })?, Response::Signed { signature } => signature)
    }

    /// AGENT_VERIFY.
    pub fn agent_verify(&mut self, message: &[u8], signature: &Signature) -> CallResult<()> {
        expect!(self.call(&Request::AgentVerify { message, signature: *signature })?, Response::Done => ())
    }

    /// The stored policy's version and length, without its bytes (one POLICY_GET at an offset
    /// past any policy).
    pub fn policy_version(&mut self) -> CallResult<(u64, u32)> {
        let r = self.call(&Request::PolicyGet { offset: u32::MAX })?;
        expect!(r, Response::Policy { version, total, .. } => (version, total))
    }

    /// The whole stored policy (several POLICY_GET calls): `(version, bytes)`.
    pub fn policy_get(&mut self) -> CallResult<(u64, Vec<u8>)> {
        let mut all = Vec::new();
        loop {
            let r = self.call(&Request::PolicyGet {
                offset: all.len() as u32,
            })?;
            let (version, total, chunk) =
                expect!(r, Response::Policy { version, total, chunk } => (version, total, chunk))?;
            all.extend_from_slice(chunk);
            if all.len() >= total as usize || chunk.is_empty() {
                return Ok((version, all));
            }
        }
    }

    /// POLICY_SET.
    pub fn policy_set(
        &mut self,
        version: u64,
        policy: &[u8],
        signature: &Signature,
    ) -> CallResult<()> {
        expect!(self.call(&Request::PolicySet { version, policy, signature: *signature })?, Response::Done => ())
    }
}

/// The hypervisor's EL0 call window (aarch64 Linux guests).
#[cfg(feature = "in-process")]
pub mod in_process;

#[cfg(all(target_arch = "aarch64", target_os = "linux"))]
pub mod window {
    use std::{io, os::fd::OwnedFd, ptr::NonNull};

    use gw_abi::{AbiError, Function, regs::aarch64::EL0_WINDOW};

    use super::{CallError, CallResult, Transport};

    /// Calls through the trapped call window page, mapped from `/dev/mem` (needs root).
    pub struct WindowTransport {
        window: NonNull<u64>,
        _mem: OwnedFd,
    }

    /// Map one page of guest-physical address space from `/dev/mem` (needs root). The mapping
    /// stays valid while the returned descriptor lives.
    ///
    /// # Safety
    ///
    /// The caller must not touch the page unless `phys` is memory it may read and write.
    pub unsafe fn map_phys_page(phys: u64) -> io::Result<(OwnedFd, *mut u8)> {
        use rustix::fs::{Mode, OFlags};
        let mem = rustix::fs::open(
            "/dev/mem",
            OFlags::RDWR | OFlags::SYNC | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("opening /dev/mem: {e}")))?;
        // SAFETY: a fresh shared mapping of one page; the caller vouches for how it is used.
        let p = unsafe {
            rustix::mm::mmap(
                core::ptr::null_mut(),
                4096,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::SHARED,
                &mem,
                phys,
            )
        }
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("mapping physical page {phys:#x}: {e}"),
            )
        })?;
        Ok((mem, p.cast()))
    }

    impl WindowTransport {
        /// Map the call window, and lock this process's pages in memory.
        ///
        /// The hypervisor identifies a caller by all of its code, which it finds in the
        /// process's page tables (`docs/abi.md`, "Program identity"): locking maps every code
        /// page now (Linux maps lazily otherwise, and a half-mapped program is another
        /// program) and keeps them where they are, so they are measured once.
        pub fn open() -> io::Result<Self> {
            rustix::mm::mlockall(rustix::mm::MlockAllFlags::CURRENT).map_err(|e| {
                io::Error::new(
                    io::Error::from(e).kind(),
                    format!("locking the program's pages in memory: {e}"),
                )
            })?;
            // SAFETY: the window is never mapped by stage 2: every access traps to the
            // hypervisor, and we access it only with the call store.
            let (mem, p) = unsafe { map_phys_page(EL0_WINDOW) }?;
            let window = NonNull::new(p.cast::<u64>())
                .ok_or_else(|| io::Error::other("mmap returned null"))?;
            Ok(Self { window, _mem: mem })
        }
    }

    impl WindowTransport {
        /// The caller's mapping of the window, for tests that issue the trapping store in
        /// their own assembly (`str x0, [xN]` with the call's registers loaded as for HVC).
        pub fn window_ptr(&self) -> *mut u64 {
            self.window.as_ptr()
        }

        /// One call with raw register values, for testing the hypervisor's argument checks.
        /// Returns `(x0, x1)`: the status and the response length.
        ///
        /// # Safety
        ///
        /// The hypervisor writes up to `resp_cap` bytes at `resp_addr` if that range is valid
        /// guest memory of this process: it must be memory the caller may overwrite, or invalid.
        pub unsafe fn raw_call(
            &self,
            function: u64,
            req_addr: u64,
            req_len: u64,
            resp_addr: u64,
            resp_cap: u64,
        ) -> (u64, u64) {
            let status: u64;
            let len: u64;
            // SAFETY: as in `call`; the caller vouches for the response range.
            unsafe {
                core::arch::asm!(
                    "str x0, [x5]",
                    inout("x0") function => status,
                    inout("x1") req_addr => len,
                    in("x2") req_len,
                    in("x3") resp_addr,
                    in("x4") resp_cap,
                    in("x5") self.window.as_ptr(),
                    options(nostack)
                )
            };
            (status, len)
        }
    }

    /// Fault in every page of `buf` for writing, so the hypervisor's translation finds them.
    fn touch(buf: &mut [u8]) {
        for i in (0..buf.len()).step_by(4096) {
            // SAFETY: `i` is in bounds; a volatile write of the byte's own value.
            unsafe { core::ptr::write_volatile(&mut buf[i], core::ptr::read_volatile(&buf[i])) };
        }
    }

    impl Transport for WindowTransport {
        fn call(
            &mut self,
            function: Function,
            request: &[u8],
            response: &mut [u8],
        ) -> CallResult<usize> {
            let mut sum = 0u8;
            for i in (0..request.len()).step_by(4096) {
                // SAFETY: `i` is in bounds; a volatile read faults the page in.
                sum ^= unsafe { core::ptr::read_volatile(&request[i]) };
            }
            core::hint::black_box(sum);
            touch(response);
            // SAFETY: the hypervisor writes at most `response.len()` bytes into `response`.
            let (status, len) = unsafe {
                self.raw_call(
                    function.aarch64_id() as u64,
                    request.as_ptr() as u64,
                    request.len() as u64,
                    response.as_mut_ptr() as u64,
                    response.len() as u64,
                )
            };
            match AbiError::from_code(status as i64) {
                Some(e) => Err(CallError::Monitor(e)),
                None if len as usize <= response.len() => Ok(len as usize),
                None => Err(CallError::Protocol("response length beyond the buffer")),
            }
        }
    }
}
