//! Per-CPU EL2 configuration, cache maintenance, firmware calls and guest entry.

use aarch64_cpu::registers::*;

/// HCR_EL2 for the guest: stage 2 on (VM), set/way invalidation as clean+invalidate (SWIO),
/// stage-1 walks through device memory fault at stage 2 (PTW: a guest cannot aim its page
/// tables at a device, and the hypervisor's `AT` of a buffer then reports a fault rather than
/// reading a device), guest SMCs trapped (TSC) so PSCI runs here, EL1 in AArch64 (RW). IRQ/FIQ are not routed to
/// EL2 (IMO/FMO clear): interrupts pass straight through to the guest (`docs/boot.md`).
pub const HCR_GUEST: u64 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 19) | (1 << 31);

/// MDCR_EL2 for the guest: PMU registers trapped (TPM, TPMCR) and debug registers trapped
/// (TDA, TDOSA, TDRA). The hypervisor answers them read-as-zero, write-ignored (`trap`): on
/// ARMv8.0 (no MDCR_EL2.HPMD) a guest with the PMU could count events at EL2, and a guest with
/// the debug registers could aim breakpoints and watchpoints at the hypervisor's work.
pub const MDCR_GUEST: u64 = (1 << 5) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11);

/// SPSR for entering the guest: EL1h with D, A, I, F masked (arm64 boot protocol).
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// Configure this CPU's EL2 for running the guest (everything except the MMU, see `mmu`).
pub fn init_el2_for_guest(vttbr: u64, vtcr: u64) {
    HCR_EL2.set(HCR_GUEST);
    MDCR_EL2.set(MDCR_GUEST);
    VTCR_EL2.set(vtcr);
    VTTBR_EL2.set(vttbr);
    // The guest uses the physical counter and timer directly; no virtual offset.
    CNTHCTL_EL2.set(0b11);
    CNTVOFF_EL2.set(0);
    // Guest may use FP/SIMD (TFP clear); RES1 bits set.
    CPTR_EL2.set(0x33ff);
    if crate::board::GICV3 {
        // Guest reaches the GICv3 CPU interface through system registers. (On a GICv2 the
        // register is UNDEFINED: the guest's CPU interface is memory-mapped, in stage 2.)
        ICC_SRE_EL2.set(0b1001);
    }
    VMPIDR_EL2.set(MPIDR_EL1.get());
    let midr = MIDR_EL1.get();
    // SAFETY: VPIDR_EL2 is an EL2 register we run at; writing it only changes what the guest
    // reads as MIDR_EL1.
    unsafe { core::arch::asm!("msr vpidr_el2, {}", in(reg) midr) };
    // The arm64 boot protocol needs the EL1 MMU and caches off.
    SCTLR_EL1.set(0x30d0_0800);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// Invalidate all stage-1 and stage-2 TLB entries of the guest (VMID 0).
pub fn tlbi_guest() {
    // SAFETY: TLB maintenance has no memory-safety effect; barriers order it.
    unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb") };
}

/// Data-cache line size in bytes.
fn dcache_line() -> usize {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr) };
    4 << ((ctr >> 16) & 0xf)
}

/// Run `op` on the address of every data-cache line of `[addr, addr + len)`.
fn by_line(addr: u64, len: u64, op: impl Fn(u64)) {
    let line = dcache_line() as u64;
    let mut a = addr & !(line - 1);
    while a < addr + len {
        op(a);
        a += line;
    }
}

/// Clean `[addr, addr + len)` to the point of coherency and invalidate the instruction cache,
/// so a guest started with its caches off sees what the hypervisor copied.
pub fn clean_for_guest(addr: u64, len: u64) {
    // SAFETY: `dc cvac` on an identity-mapped address only writes a dirty line back.
    by_line(addr, len, |a| unsafe {
        core::arch::asm!("dc cvac, {}", in(reg) a)
    });
    // SAFETY: barrier and instruction-cache invalidation have no memory-safety effect.
    unsafe { core::arch::asm!("dsb sy", "ic iallu", "dsb sy", "isb") };
}

/// Clean and invalidate `[addr, addr + len)` to the point of coherency: for a CPU about to read
/// it with its caches off.
pub fn clean_invalidate(addr: u64, len: u64) {
    // SAFETY: `dc civac` on an identity-mapped address writes a dirty line back and drops it.
    by_line(addr, len, |a| unsafe {
        core::arch::asm!("dc civac, {}", in(reg) a)
    });
    // SAFETY: a barrier has no memory-safety effect.
    unsafe { core::arch::asm!("dsb sy") };
}

/// Wake every CPU waiting in `wfe` (after a store it should see).
pub fn wake_all() {
    // SAFETY: barrier and event have no memory-safety effect.
    unsafe { core::arch::asm!("dsb sy", "sev") };
}

/// Call the platform firmware (PSCI through SMC from EL2).
pub fn smc(fid: u64, a1: u64, a2: u64, a3: u64) -> u64 {
    let ret: u64;
    // SAFETY: an SMCCC call; the firmware preserves x4-x17 in SMCCC 1.1 and we declare x0-x3
    // (and the rest conservatively) clobbered.
    unsafe {
        core::arch::asm!(
            "smc #0",
            inout("x0") fid => ret,
            inout("x1") a1 => _,
            inout("x2") a2 => _,
            inout("x3") a3 => _,
            out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _,
            out("x12") _, out("x13") _, out("x14") _, out("x15") _,
            out("x16") _, out("x17") _,
        )
    };
    ret
}

/// This CPU's affinity-0 number.
pub fn cpu_id() -> u64 {
    MPIDR_EL1.get() & 0xff
}

/// The physical counter (CNTPCT_EL0).
pub fn counter() -> u64 {
    let cnt: u64;
    // SAFETY: reading the physical counter has no side effects.
    unsafe { core::arch::asm!("isb", "mrs {}, cntpct_el0", out(reg) cnt) };
    cnt
}

/// The counter's frequency in Hz (CNTFRQ_EL0, set by the loader).
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// 32 bytes from the CPU's random number generator (RNDR, FEAT_RNG), or `None` when the CPU
/// has none or it reports failure (PSTATE.Z set) four times in a row.
pub fn rndr() -> Option<[u8; 32]> {
    let isar0: u64;
    // SAFETY: reading an ID register has no side effects.
    unsafe { core::arch::asm!("mrs {}, id_aa64isar0_el1", out(reg) isar0) };
    if (isar0 >> 60) & 0xf == 0 {
        return None;
    }
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        let mut got = None;
        for _ in 0..4 {
            let (r, fail): (u64, u64);
            // SAFETY: RNDR exists (ID_AA64ISAR0_EL1.RNDR != 0); it only returns random bits
            // and sets NZCV (Z on failure).
            unsafe {
                core::arch::asm!("mrs {r}, s3_3_c2_c4_0", "cset {f}, eq", r = out(reg) r, f = out(reg) fail)
            };
            if fail == 0 {
                got = Some(r);
                break;
            }
        }
        chunk.copy_from_slice(&got?.to_le_bytes());
    }
    Some(out)
}

/// Enter the guest at EL1 at `entry` with `x0 = arg`, on a clean hypervisor stack `stack_top`.
///
/// Every other general-purpose and FP/SIMD register is zeroed first: the hypervisor's own work
/// (key derivation, SHA-2 with the vector registers) must leave no residue for the guest.
pub fn enter_guest(entry: u64, arg: u64, stack_top: u64) -> ! {
    // SAFETY: ELR/SPSR_EL2 name the guest entry at EL1 with interrupts masked; stage 2 and HCR
    // are configured, so the guest runs confined. SP_EL2 is reset to this CPU's stack top, so
    // the next trap starts on a clean stack. The inputs are consumed before the registers
    // holding them are zeroed. Never returns.
    unsafe {
        core::arch::asm!(
            ".arch_extension fp",
            ".arch_extension simd",
            "msr elr_el2, {entry}",
            "msr spsr_el2, {spsr}",
            "mov sp, {stack}",
            "mov x1, xzr", "mov x2, xzr", "mov x3, xzr", "mov x4, xzr", "mov x5, xzr", "mov x6, xzr", "mov x7, xzr", "mov x8, xzr", "mov x9, xzr", "mov x10, xzr", "mov x11, xzr", "mov x12, xzr", "mov x13, xzr", "mov x14, xzr", "mov x15, xzr", "mov x16, xzr", "mov x17, xzr", "mov x18, xzr", "mov x19, xzr", "mov x20, xzr", "mov x21, xzr", "mov x22, xzr", "mov x23, xzr", "mov x24, xzr", "mov x25, xzr", "mov x26, xzr", "mov x27, xzr", "mov x28, xzr", "mov x29, xzr", "mov x30, xzr",
            "movi v0.2d, #0", "movi v1.2d, #0", "movi v2.2d, #0", "movi v3.2d, #0", "movi v4.2d, #0", "movi v5.2d, #0", "movi v6.2d, #0", "movi v7.2d, #0", "movi v8.2d, #0", "movi v9.2d, #0", "movi v10.2d, #0", "movi v11.2d, #0", "movi v12.2d, #0", "movi v13.2d, #0", "movi v14.2d, #0", "movi v15.2d, #0", "movi v16.2d, #0", "movi v17.2d, #0", "movi v18.2d, #0", "movi v19.2d, #0", "movi v20.2d, #0", "movi v21.2d, #0", "movi v22.2d, #0", "movi v23.2d, #0", "movi v24.2d, #0", "movi v25.2d, #0", "movi v26.2d, #0", "movi v27.2d, #0", "movi v28.2d, #0", "movi v29.2d, #0", "movi v30.2d, #0", "movi v31.2d, #0",
            "msr fpsr, xzr",
            "msr fpcr, xzr",
            "eret",
            entry = in(reg) entry,
            spsr = in(reg) SPSR_EL1H_MASKED,
            stack = in(reg) stack_top,
            in("x0") arg,
            options(noreturn)
        )
    }
}
