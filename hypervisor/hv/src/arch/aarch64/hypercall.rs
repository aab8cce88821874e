//! Gatewarden hypercalls from the guest kernel (`HVC #0`, function ids `0xC600_00nn`).
//!
//! Buffers are guest virtual addresses, translated page by page through the guest's own page
//! tables and stage 2 (`AT S12E1R/W`), and must land in guest RAM: a buffer that touches an
//! unmapped page, a device, or hypervisor memory gets BAD_ADDRESS. Requests are copied into a
//! per-CPU bounce buffer before decoding, so the guest cannot change them mid-call.

use aarch64_cpu::registers::*;
use core::{
    cell::UnsafeCell,
    sync::atomic::{AtomicU64, Ordering},
};

use gw_abi::{AbiError, Function, MAX_REQUEST, MAX_RESPONSE, regs};
use gw_core::{Caller, Monitor};

use super::{cpu, trap::TrapFrame};
use crate::{
    board::MAX_CPUS,
    guest::{self, Access, GuestMemory, GuestPhys, GuestVirt},
};

/// The hypervisor's monitor: event log of 1,024 entries, 64 hop key slots.
pub type HvMonitor = Monitor<1024, 64>;

/// The monitor, created once at boot by the primary CPU.
pub static MONITOR: spin::Once<spin::Mutex<HvMonitor>> = spin::Once::new();

/// Guest RAM bounds `[start, end)`: the only place guest buffers may be.
static GUEST_RAM: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Digest of the guest kernel: the program identity of EL1 callers.
static KERNEL_DIGEST: spin::Once<[u8; 32]> = spin::Once::new();

/// Record guest RAM and the kernel measurement (primary CPU, at boot).
pub fn set_guest(ram: (u64, u64), kernel_digest: [u8; 32]) {
    GUEST_RAM[0].store(ram.0, Ordering::Release);
    GUEST_RAM[1].store(ram.0 + ram.1, Ordering::Release);
    KERNEL_DIGEST.call_once(|| kernel_digest);
}

struct Bounce(
    UnsafeCell<[[u8; MAX_REQUEST]; MAX_CPUS]>,
    UnsafeCell<[[u8; MAX_RESPONSE]; MAX_CPUS]>,
);

// SAFETY: CPU `i` only ever touches slot `i`, and a CPU handles one trap at a time.
unsafe impl Sync for Bounce {}

static BOUNCE: Bounce = Bounce(
    UnsafeCell::new([[0; MAX_REQUEST]; MAX_CPUS]),
    UnsafeCell::new([[0; MAX_RESPONSE]; MAX_CPUS]),
);

/// Which translation regime checks a caller's buffers: the kernel's (EL1) or a process's (EL0).
#[derive(Clone, Copy, PartialEq, Eq)]
enum From {
    El1,
    El0,
}

// The guest's stage-1 walk for a buffer is done by `AT S12E*` (`gw_at`). HCR_EL2.PTW turns a
// walk through device memory into a stage-2 fault, and the device holes are unmapped, so a walk
// the guest aimed at a device reports a fault in PAR_EL1. Should an access of the walk still
// abort (an external abort from the memory system), the EL2 sync handler sees the abort inside
// [gw_at_start, gw_at_end) and resumes at gw_at_aborted, which answers "fault": the hypercall
// gets BAD_ADDRESS instead of the hypervisor stopping (`trap::hv_el2_sync`).
core::arch::global_asm!(
    r#"
    .section .text.gw_at, "ax"
    .balign 4
    .global gw_at
// x0: VA; x1: 0 s12e1r, 1 s12e1w, 2 s12e0r, 3 s12e0w. Returns PAR_EL1, or 1 (F) if aborted.
gw_at:
    cmp     x1, #1
    b.eq    2f
    cmp     x1, #2
    b.eq    3f
    cmp     x1, #3
    b.eq    4f
    .global gw_at_start
gw_at_start:
    at      s12e1r, x0
    b       5f
2:  at      s12e1w, x0
    b       5f
3:  at      s12e0r, x0
    b       5f
4:  at      s12e0w, x0
    .global gw_at_end
gw_at_end:
5:  isb
    mrs     x0, par_el1
    ret
    .global gw_at_aborted
gw_at_aborted:
    mov     x0, #1
    ret
"#
);

unsafe extern "C" {
    fn gw_at(va: u64, op: u64) -> u64;
    static gw_at_start: u8;
    static gw_at_end: u8;
    static gw_at_aborted: u8;
}

/// Where an abort taken at EL2 resumes, if it was taken by the walk of an `AT` in `gw_at`.
pub fn at_fixup(elr: u64) -> Option<u64> {
    let start = core::ptr::addr_of!(gw_at_start) as u64;
    let end = core::ptr::addr_of!(gw_at_end) as u64;
    let resume = core::ptr::addr_of!(gw_at_aborted) as u64;
    (start..end).contains(&elr).then_some(resume)
}

/// Guest RAM, `[start, end)` (ARM physical).
pub fn guest_ram() -> (u64, u64) {
    (
        GUEST_RAM[0].load(Ordering::Acquire),
        GUEST_RAM[1].load(Ordering::Acquire),
    )
}

/// Whether `pa` is guest RAM.
pub fn in_guest_ram(pa: u64) -> bool {
    let (lo, hi) = guest_ram();
    pa >= lo && pa < hi
}

/// The guest RAM address a guest VA reads from, in the kernel's (`el0` false) or the current
/// process's translation regime.
pub fn guest_pa(va: u64, el0: bool) -> Option<u64> {
    translate(va, false, if el0 { From::El0 } else { From::El1 })
}

/// Translate a guest VA for reading or writing with `from`'s permissions; `None` unless it
/// maps to guest RAM.
fn translate(va: u64, write: bool, from: From) -> Option<u64> {
    let saved = PAR_EL1.get();
    let op = match (from, write) {
        (From::El1, false) => 0,
        (From::El1, true) => 1,
        (From::El0, false) => 2,
        (From::El0, true) => 3,
    };
    // SAFETY: gw_at only executes one address translation instruction and reads PAR_EL1, which
    // is saved above and restored below so the guest never sees the change; an abort during
    // its walk resumes at gw_at_aborted (`at_fixup`).
    let par = unsafe { gw_at(va, op) };
    PAR_EL1.set(saved);
    if par & 1 != 0 {
        return None;
    }
    let pa = (par & 0x0000_ffff_ffff_f000) | (va & 0xfff);
    in_guest_ram(pa).then_some(pa)
}

/// Guest memory as `from`'s translation regime reaches it: `AT S12E*` walks, then the EL2
/// identity map of guest RAM.
struct Regime(From);

impl GuestMemory for Regime {
    fn translate(&self, va: GuestVirt, access: Access) -> Option<GuestPhys> {
        translate(va.0, access == Access::Write, self.0).map(GuestPhys)
    }

    fn read(&self, pa: GuestPhys, buf: &mut [u8]) {
        // SAFETY: `pa..pa + len` lies in one page of guest RAM (`GuestMemory`'s contract, met
        // by `translate`), which the EL2 identity map covers; it never overlaps hypervisor
        // memory, and `buf` is ours.
        unsafe { core::ptr::copy_nonoverlapping(pa.0 as *const u8, buf.as_mut_ptr(), buf.len()) }
    }

    fn write(&mut self, pa: GuestPhys, buf: &[u8]) {
        // SAFETY: as in `read`, for writing.
        unsafe { core::ptr::copy_nonoverlapping(buf.as_ptr(), pa.0 as *mut u8, buf.len()) }
    }
}

/// Handle a Gatewarden call from the guest kernel (HVC); returns x0, sets x1 (and x2).
pub fn dispatch(f: &mut TrapFrame) -> u64 {
    let caller = Caller {
        space: TTBR0_EL1.get(),
        program: *KERNEL_DIGEST.get().unwrap_or(&[0; 32]),
    };
    dispatch_from(f, caller, From::El1)
}

/// Handle a call made through the EL0 call window; returns x0, sets x1 (and x2).
///
/// The caller is its address space (TTBR0_EL1: table base and ASID) and, as its program
/// identity, the code of that address space (`code`): measured, and held read-only, for the
/// calls whose answer depends on who calls; the others need no identity and skip the walk.
pub fn dispatch_el0(f: &mut TrapFrame) -> u64 {
    let space = TTBR0_EL1.get();
    let needs_identity = Function::from_aarch64_id(f.x[0]).is_some_and(Function::binds_caller);
    let caller = if needs_identity {
        match super::code::identity(f.elr - 4) {
            Ok((space, program)) => Caller { space, program },
            Err(e) => {
                f.x[1] = 0;
                return e as i64 as u64;
            }
        }
    } else {
        Caller {
            space,
            program: [0; 32],
        }
    };
    dispatch_from(f, caller, From::El0)
}

fn dispatch_from(f: &mut TrapFrame, caller: Caller, from: From) -> u64 {
    let r = regs::aarch64::decode(&[f.x[0], f.x[1], f.x[2], f.x[3], f.x[4]]);
    let Some(function) = Function::from_aarch64_id(r.function) else {
        return AbiError::NotSupported as i64 as u64;
    };
    // Register-only VERSION: no buffers, answers ABI version and monitor kind.
    if function == Function::Version && r.req_len == 0 && r.resp_cap == 0 {
        f.x[1] = ((gw_abi::ABI_MAJOR as u64) << 16) | gw_abi::ABI_MINOR as u64;
        f.x[2] = 0;
        return 0;
    }
    match buffer_call(function, &r, caller, from) {
        Ok(len) => {
            f.x[1] = len as u64;
            0
        }
        Err(e) => {
            f.x[1] = 0;
            e as i64 as u64
        }
    }
}

fn buffer_call(
    function: Function,
    r: &regs::CallRegs,
    caller: Caller,
    from: From,
) -> Result<usize, AbiError> {
    let idx = cpu::cpu_id() as usize;
    if idx >= MAX_CPUS {
        return Err(AbiError::InvalidParameter);
    }
    // SAFETY: slot `idx` belongs to this CPU (see `Bounce`).
    let (req, resp) = unsafe { (&mut (*BOUNCE.0.get())[idx], &mut (*BOUNCE.1.get())[idx]) };
    let monitor = MONITOR.get().ok_or(AbiError::NotProvisioned)?;
    // The arch-neutral path (`guest::buffer_call`): request copied first, response buffer
    // checked writable as far as this function's answer can reach before the call runs (a call
    // with side effects must not take effect and then report BAD_ADDRESS), answer copied out.
    guest::buffer_call(
        &mut Regime(from),
        r,
        function.response_bound(),
        req,
        resp,
        |req, resp| monitor.lock().handle(&caller, function, req, resp),
    )
}
