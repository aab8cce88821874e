//! Per-architecture register conventions.
//!
//! Buffer-carrying calls name a request buffer and a response buffer in guest memory. Addresses
//! are guest virtual addresses of the caller (translated by the monitor through the caller's own
//! page tables), buffers must not overlap each other or the monitor, and lengths are bounded by
//! [`crate::MAX_REQUEST`] / [`crate::MAX_RESPONSE`].

/// A decoded call: function id and buffer descriptors, architecture-neutral.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallRegs {
    /// Raw function id register.
    pub function: u64,
    /// Request buffer address.
    pub req_addr: u64,
    /// Request length in bytes.
    pub req_len: u64,
    /// Response buffer address.
    pub resp_addr: u64,
    /// Response buffer capacity in bytes.
    pub resp_cap: u64,
}

/// What the monitor writes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReturnRegs {
    /// 0 on success, a negative [`crate::AbiError`] code otherwise.
    pub status: i64,
    /// Bytes written to the response buffer (0 on error).
    pub resp_len: u64,
}

impl ReturnRegs {
    /// Success with `len` response bytes.
    pub const fn ok(len: usize) -> Self {
        Self {
            status: 0,
            resp_len: len as u64,
        }
    }

    /// Failure.
    pub const fn err(e: crate::AbiError) -> Self {
        Self {
            status: e as i64,
            resp_len: 0,
        }
    }
}

/// aarch64: `HVC #0` from EL1 (SMCCC 1.1 register use).
///
/// | register | in | out |
/// |---|---|---|
/// | x0 | function id `0xC600_00nn` | status |
/// | x1 | request address | response length |
/// | x2 | request length | — |
/// | x3 | response address | — |
/// | x4 | response capacity | — |
///
/// x2–x17 are preserved (SMCCC 1.1), except that register-only VERSION returns the monitor
/// kind in x2.
///
/// Guest user space (EL0) cannot execute HVC. It maps the call window page
/// ([`aarch64::EL0_WINDOW`], never mapped by stage 2) from `/dev/mem`, loads x0-x4 as above and
/// stores x0 to the window with a single `str x0, [xN]`. The store traps to the hypervisor,
/// which runs the call with the caller's registers and resumes after the store with x0/x1 set.
pub mod aarch64 {
    use super::{CallRegs, ReturnRegs};

    /// Guest-physical address of the EL0 call window (a 4 KiB page no stage 2 maps).
    pub const EL0_WINDOW: u64 = 0xF0_0000_0000;

    /// Decode from `x0..x4`.
    pub const fn decode(x: &[u64; 5]) -> CallRegs {
        CallRegs {
            function: x[0],
            req_addr: x[1],
            req_len: x[2],
            resp_addr: x[3],
            resp_cap: x[4],
        }
    }

    /// Values for `x0` and `x1`.
    pub const fn encode(r: ReturnRegs) -> [u64; 2] {
        [r.status as u64, r.resp_len]
    }
}

/// x86_64: `VMMCALL` (AMD SVM); the monitor checks CPL and the caller.
///
/// | register | in | out |
/// |---|---|---|
/// | rax | function id `0x4757_00nn` | status |
/// | rbx | request address | response length |
/// | rcx | request length | — |
/// | rdx | response address | — |
/// | rsi | response capacity | — |
pub mod x86_64 {
    use super::{CallRegs, ReturnRegs};

    /// Decode from `rax, rbx, rcx, rdx, rsi`.
    pub const fn decode(rax: u64, rbx: u64, rcx: u64, rdx: u64, rsi: u64) -> CallRegs {
        CallRegs {
            function: rax,
            req_addr: rbx,
            req_len: rcx,
            resp_addr: rdx,
            resp_cap: rsi,
        }
    }

    /// Values for `rax` and `rbx`.
    pub const fn encode(r: ReturnRegs) -> [u64; 2] {
        [r.status as u64, r.resp_len]
    }
}

/// Check a pair of guest buffers before any translation: lengths within bounds, no address
/// overflow, no overlap between request and response.
pub fn check_buffers(c: &CallRegs) -> Result<(), crate::AbiError> {
    use crate::AbiError::{BadAddress, InvalidParameter};
    if c.req_len as usize > crate::MAX_REQUEST || c.resp_cap as usize > crate::MAX_RESPONSE {
        return Err(InvalidParameter);
    }
    let req_end = c.req_addr.checked_add(c.req_len).ok_or(BadAddress)?;
    let resp_end = c.resp_addr.checked_add(c.resp_cap).ok_or(BadAddress)?;
    let overlap = c.req_len > 0 && c.resp_cap > 0 && c.req_addr < resp_end && c.resp_addr < req_end;
    if overlap { Err(BadAddress) } else { Ok(()) }
}
