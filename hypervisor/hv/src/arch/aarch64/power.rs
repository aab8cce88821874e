//! CPUs and the board's power, for the hypervisor and for the guest's PSCI calls.
//!
//! The guest always sees PSCI (HVC, or SMC trapped by HCR_EL2.TSC). Below it the board has one
//! of two things (board.toml `smp`, `reset`): PSCI firmware, which the hypervisor calls with a
//! CPU entering at `secondary_entry`; or, on the Raspberry Pis, no firmware at all: the loader
//! parks the secondaries on a spin table in the hypervisor's reservation, the hypervisor
//! releases each on the guest's first CPU_ON and parks it itself after CPU_OFF, and the PM
//! watchdog resets and powers off. Either way a CPU enters the guest only from here, at the
//! entry its CPU_ON named.

use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use crate::board::{MAX_CPUS, PM_WATCHDOG, SPIN_TABLE};

use super::{boot, cpu, mmu};

/// PSCI function ids the hypervisor calls or answers.
pub mod psci {
    /// PSCI_VERSION.
    pub const VERSION: u64 = 0x8400_0000;
    /// CPU_OFF.
    pub const CPU_OFF: u64 = 0x8400_0002;
    /// MIGRATE_INFO_TYPE.
    pub const MIGRATE_INFO_TYPE: u64 = 0x8400_0006;
    /// SYSTEM_OFF.
    pub const SYSTEM_OFF: u64 = 0x8400_0008;
    /// SYSTEM_RESET.
    pub const SYSTEM_RESET: u64 = 0x8400_0009;
    /// PSCI_FEATURES.
    pub const FEATURES: u64 = 0x8400_000a;
    /// CPU_ON (SMC64).
    pub const CPU_ON: u64 = 0xc400_0003;
    /// AFFINITY_INFO (SMC64).
    pub const AFFINITY_INFO: u64 = 0xc400_0004;
    /// INVALID_PARAMETERS.
    pub const INVALID_PARAMETERS: u64 = -2i64 as u64;
    /// ALREADY_ON.
    pub const ALREADY_ON: u64 = -4i64 as u64;
    /// ON_PENDING.
    pub const ON_PENDING: u64 = -5i64 as u64;
}

/// A CPU's state as AFFINITY_INFO reports it.
const ON: u8 = 0;
const OFF: u8 = 1;
const PENDING: u8 = 2;

/// Each CPU's state; CPU 0 (the primary) runs from the start.
static STATE: [AtomicU8; MAX_CPUS] = {
    let mut s = [const { AtomicU8::new(OFF) }; MAX_CPUS];
    s[0] = AtomicU8::new(ON);
    s
};
/// Where each CPU enters the guest (entry, context), set by CPU_ON.
static ENTRY: [[AtomicU64; 2]; MAX_CPUS] =
    [const { [AtomicU64::new(0), AtomicU64::new(0)] }; MAX_CPUS];
/// Spin-table boards: whether the loader's spin table has let the CPU go (once per boot).
static RELEASED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
/// VTTBR_EL2 of the guest, set by the primary before any CPU_ON.
static GUEST_VTTBR: AtomicU64 = AtomicU64::new(0);

/// Record the guest's stage-2 root for the secondaries.
pub fn set_guest_vttbr(vttbr: u64) {
    GUEST_VTTBR.store(vttbr, Ordering::Release);
}

/// The CPU index an MPIDR names, if this image runs it (affinity 0 only, as the boards have).
fn index(mpidr: u64) -> Option<usize> {
    let idx = (mpidr & 0xff) as usize;
    (idx < MAX_CPUS && mpidr & 0xff_00ff_ff00 == 0).then_some(idx)
}

unsafe extern "C" {
    static __data_start: u8;
    static __stacks_end: u8;
}

/// The guest's CPU_ON: `mpidr` enters the guest at `entry` with `x0 = ctx`.
pub fn cpu_on(mpidr: u64, entry: u64, ctx: u64) -> u64 {
    let Some(idx) = index(mpidr) else {
        return psci::INVALID_PARAMETERS;
    };
    match STATE[idx].load(Ordering::Acquire) {
        ON => return psci::ALREADY_ON,
        PENDING => return psci::ON_PENDING,
        _ => {}
    }
    ENTRY[idx][0].store(entry, Ordering::Relaxed);
    ENTRY[idx][1].store(ctx, Ordering::Relaxed);
    if STATE[idx]
        .compare_exchange(OFF, PENDING, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return psci::ON_PENDING;
    }
    match SPIN_TABLE {
        None => {
            // The firmware starts the CPU in the hypervisor, which then enters the guest.
            let r = cpu::smc(
                psci::CPU_ON,
                mpidr,
                boot::secondary_entry_address(),
                idx as u64,
            );
            if r != 0 {
                STATE[idx].store(OFF, Ordering::Release);
            }
            r
        }
        Some(table) => {
            if !RELEASED[idx].swap(true, Ordering::AcqRel) {
                // The CPU comes up with its MMU and caches off: what it reads before turning
                // them on (its tables, these statics, its stack) must be in memory, not only
                // in this CPU's cache.
                let (start, end) = (
                    core::ptr::addr_of!(__data_start) as u64,
                    core::ptr::addr_of!(__stacks_end) as u64,
                );
                cpu::clean_invalidate(start, end - start);
                let release = table + 8 * idx as u64;
                // SAFETY: the spin table lies in the hypervisor's reservation, which the EL2
                // map gives the hypervisor read/write (`plan::BoardMap::build_el2`); the loader
                // parked CPU `idx` reading this 8-byte slot.
                unsafe {
                    core::ptr::write_volatile(release as *mut u64, boot::spin_entry_address())
                };
                cpu::clean_invalidate(release, 8);
            }
            cpu::wake_all();
            0
        }
    }
}

/// The guest's AFFINITY_INFO for `mpidr` (level 0 only).
pub fn affinity_info(mpidr: u64, level: u64) -> u64 {
    if SPIN_TABLE.is_none() {
        // The firmware knows when a CPU that called CPU_OFF is really off (and CPU_ON may be
        // sent again); this CPU's state says OFF as soon as it asked.
        return cpu::smc(psci::AFFINITY_INFO, mpidr, level, 0);
    }
    match index(mpidr) {
        Some(idx) if level == 0 => STATE[idx].load(Ordering::Acquire) as u64,
        _ => psci::INVALID_PARAMETERS,
    }
}

/// The guest's CPU_OFF on this CPU: it leaves the guest until a later CPU_ON.
pub fn cpu_off() -> ! {
    let idx = cpu::cpu_id() as usize;
    STATE[idx].store(OFF, Ordering::Release);
    if SPIN_TABLE.is_none() {
        // The firmware powers the CPU down; CPU_ON starts it again at `secondary_entry`.
        cpu::smc(psci::CPU_OFF, 0, 0, 0);
    }
    // No firmware (or it refused): the CPU waits in the hypervisor.
    run_secondary(idx)
}

/// Enter the guest on secondary CPU `idx` once a CPU_ON names it; the CPU's EL2 (MMU, vectors)
/// is set up.
pub fn run_secondary(idx: usize) -> ! {
    while STATE[idx].load(Ordering::Acquire) != PENDING {
        aarch64_cpu::asm::wfe();
    }
    cpu::init_el2_for_guest(GUEST_VTTBR.load(Ordering::Acquire), mmu::VTCR_VALUE);
    cpu::tlbi_guest();
    let (entry, ctx) = (
        ENTRY[idx][0].load(Ordering::Relaxed),
        ENTRY[idx][1].load(Ordering::Relaxed),
    );
    STATE[idx].store(ON, Ordering::Release);
    // CPU `idx` runs, and takes its traps, on its own stack.
    cpu::enter_guest(entry, ctx, boot::cpu_stack(idx as u64).1)
}

/// Power the board off (the guest's SYSTEM_OFF, and the hypervisor's panic).
pub fn system_off() -> ! {
    if PM_WATCHDOG.is_some() {
        super::bcm::pm_reset(true);
    }
    cpu::smc(psci::SYSTEM_OFF, 0, 0, 0);
    halt()
}

/// Reset the board (the guest's SYSTEM_RESET).
pub fn system_reset() -> ! {
    if PM_WATCHDOG.is_some() {
        super::bcm::pm_reset(false);
    }
    cpu::smc(psci::SYSTEM_RESET, 0, 0, 0);
    halt()
}

fn halt() -> ! {
    loop {
        aarch64_cpu::asm::wfe();
    }
}
