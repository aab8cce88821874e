//! EL2 exception vectors and the handlers for guest traps: hypercalls (HVC), PSCI (trapped
//! SMC), and stage-2 faults, which are logged and answered with an abort injected into the guest.

use aarch64_cpu::registers::*;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::{
    arch::aarch64::{
        cpu,
        exception::{self, Mode},
        gicr,
    },
    board::{DMA_ENGINE, GICR_FILTER, LOCAL_PAGE, MAILBOX, MAX_CPUS, USB_HOST},
    exit::{Conduit, Exit, FaultAccess, MemoryFault},
    println,
};

/// Guest registers saved on a trap: the general-purpose part the handlers read and write. The
/// vectors also save q0-q31, FPSR and FPCR above it (at +272, 528 bytes) and restore them on the
/// way back, so the hypervisor's own use of the vector registers never leaks into the guest
/// (`gw-hcall-fuzz --fp-check`).
#[repr(C)]
pub struct TrapFrame {
    /// x0-x30.
    pub x: [u64; 31],
    /// ELR_EL2: where the guest resumes.
    pub elr: u64,
    /// SPSR_EL2: the guest's PSTATE.
    pub spsr: u64,
    _pad: u64,
}

core::arch::global_asm!(
    r#"
// The vectors save and restore the FP/SIMD registers whatever features the image is built with.
.arch_extension fp
.arch_extension simd

.macro SAVE_FRAME
    sub     sp, sp, #800
    stp     x0, x1, [sp, #0]
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    mrs     x0, elr_el2
    mrs     x1, spsr_el2
    stp     x30, x0, [sp, #240]
    str     x1, [sp, #256]
    // The guest's FP/SIMD state: the hypervisor's own code uses the vector registers (copies,
    // the SHA-2 instructions), and a trap from EL0 arrives with the process's live values in
    // them. 32 q registers, then FPSR and FPCR, above the general frame.
    add     x0, sp, #272
    stp     q0, q1, [x0, #0]
    stp     q2, q3, [x0, #32]
    stp     q4, q5, [x0, #64]
    stp     q6, q7, [x0, #96]
    stp     q8, q9, [x0, #128]
    stp     q10, q11, [x0, #160]
    stp     q12, q13, [x0, #192]
    stp     q14, q15, [x0, #224]
    stp     q16, q17, [x0, #256]
    stp     q18, q19, [x0, #288]
    stp     q20, q21, [x0, #320]
    stp     q22, q23, [x0, #352]
    stp     q24, q25, [x0, #384]
    stp     q26, q27, [x0, #416]
    stp     q28, q29, [x0, #448]
    stp     q30, q31, [x0, #480]
    mrs     x1, fpsr
    mrs     x2, fpcr
    str     x1, [x0, #512]
    str     x2, [x0, #520]
.endm

.macro RESTORE_FRAME
    add     x0, sp, #272
    ldp     q0, q1, [x0, #0]
    ldp     q2, q3, [x0, #32]
    ldp     q4, q5, [x0, #64]
    ldp     q6, q7, [x0, #96]
    ldp     q8, q9, [x0, #128]
    ldp     q10, q11, [x0, #160]
    ldp     q12, q13, [x0, #192]
    ldp     q14, q15, [x0, #224]
    ldp     q16, q17, [x0, #256]
    ldp     q18, q19, [x0, #288]
    ldp     q20, q21, [x0, #320]
    ldp     q22, q23, [x0, #352]
    ldp     q24, q25, [x0, #384]
    ldp     q26, q27, [x0, #416]
    ldp     q28, q29, [x0, #448]
    ldp     q30, q31, [x0, #480]
    ldr     x1, [x0, #512]
    ldr     x2, [x0, #520]
    msr     fpsr, x1
    msr     fpcr, x2
    ldp     x30, x0, [sp, #240]
    ldr     x1, [sp, #256]
    msr     elr_el2, x0
    msr     spsr_el2, x1
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    add     sp, sp, #800
.endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global hv_vectors
hv_vectors:
    .balign 0x80
    b       hv_vec_unexpected       // current EL, SP0: sync
    .balign 0x80
    b       hv_vec_unexpected
    .balign 0x80
    b       hv_vec_unexpected
    .balign 0x80
    b       hv_vec_unexpected
    .balign 0x80
    b       hv_vec_el2_sync         // current EL, SPx: sync (a hypervisor fault)
    .balign 0x80
    b       hv_vec_unexpected
    .balign 0x80
    b       hv_vec_unexpected
    .balign 0x80
    b       hv_vec_unexpected
    .balign 0x80
    b       hv_vec_lower_sync       // lower EL, AArch64: sync (guest trap)
    .balign 0x80
    b       hv_vec_unexpected
    .balign 0x80
    b       hv_vec_unexpected
    .balign 0x80
    b       hv_vec_unexpected
    .balign 0x80
    b       hv_vec_lower_sync       // lower EL, AArch32: sync (an AArch32 process's trap)
    .balign 0x80
    b       hv_vec_unexpected
    .balign 0x80
    b       hv_vec_unexpected
    .balign 0x80
    b       hv_vec_unexpected

hv_vec_lower_sync:
    SAVE_FRAME
    mov     x0, sp
    bl      hv_lower_sync
    RESTORE_FRAME
    eret

hv_vec_el2_sync:
    SAVE_FRAME
    mov     x0, sp
    bl      hv_el2_sync
    RESTORE_FRAME
    eret

hv_vec_unexpected:
    SAVE_FRAME
    mov     x0, sp
    bl      hv_unexpected
1:
    wfe
    b       1b
"#
);

unsafe extern "C" {
    static hv_vectors: u8;
}

/// Point VBAR_EL2 at the vectors (every CPU).
pub fn install() {
    let v = core::ptr::addr_of!(hv_vectors) as u64;
    VBAR_EL2.set(v);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// SMCCC "not supported".
const NOT_SUPPORTED: u64 = -1i64 as u64;

/// Every trap from the guest must run on the trapping CPU's own stack: one CPU's trap frames on
/// another's stack corrupt it (the secondary CPUs once entered the guest on their neighbour's).
fn check_own_stack(f: &TrapFrame) {
    let sp = core::ptr::from_ref(f) as u64;
    let idx = cpu::cpu_id();
    let (low, top) = super::boot::cpu_stack(idx);
    if sp < low || sp >= top {
        panic!(
            "CPU {idx} took a trap on a stack not its own (sp {sp:#x}, its stack {low:#x}..{top:#x})"
        );
    }
}

/// Stage-2 faults seen (the first few are logged, then every 1024th).
static FAULTS: AtomicU64 = AtomicU64::new(0);

#[unsafe(no_mangle)]
extern "C" fn hv_lower_sync(f: &mut TrapFrame) {
    check_own_stack(f);
    // The syndrome decoded into the arch-neutral exit (`exception::decode`, host-tested).
    match exception::decode(ESR_EL2.get(), FAR_EL2.get(), HPFAR_EL2.get()) {
        Exit::Call {
            conduit: Conduit::Hvc,
            imm,
        } => {
            if imm != 0 {
                f.x[0] = NOT_SUPPORTED;
            } else {
                call(f);
            }
        }
        Exit::Call {
            conduit: Conduit::Smc,
            ..
        } => {
            // ELR points at the SMC itself: resume after it.
            f.elr += 4;
            call(f);
        }
        Exit::Memory(m) => memory_fault(f, m),
        Exit::DebugRegister { read, reg } => {
            // MDCR_EL2 traps the guest's PMU and debug registers (`cpu::MDCR_GUEST`): they read
            // as zero and ignore writes, so the guest neither counts the hypervisor's work nor
            // sets breakpoints and watchpoints on it.
            if read && reg != 31 {
                f.x[reg as usize] = 0;
            }
            f.elr += 4;
        }
        Exit::Other(esr) => {
            println!(
                "unhandled guest trap EC {:#x} ESR {esr:#x} at PC {:#x}; undefined instruction injected",
                (esr >> 26) & 0x3f,
                f.elr
            );
            inject_undef(f);
        }
    }
}

/// A guest access stage 2 stopped: an EL0 call, a write to held code or tables, a mediated
/// redistributor register, or a fault the guest gets back as an abort.
fn memory_fault(f: &mut TrapFrame, m: MemoryFault) {
    let data = m.access != FaultAccess::Fetch;
    let write = m.access == FaultAccess::Write;
    // A store of a 64-bit register to the EL0 call window, from EL0: a hypercall.
    if data
        && m.ipa & !0xfff == gw_abi::regs::aarch64::EL0_WINDOW
        && Mode::from_spsr(f.spsr).may_use_call_window()
    {
        if write && m.mmio.is_some_and(|a| a.size == 8) {
            f.elr += 4;
            f.x[0] = super::hypercall::dispatch_el0(f);
        } else {
            // Anything else on the window (loads, narrow stores) is a caller bug.
            inject_abort(f, true, m.va);
        }
        return;
    }
    // A write to a page of measured code, held read-only (`code`): the measurements holding it
    // end and the write goes ahead. HPFAR is not reliable for permission faults, so the address
    // comes from the guest's own translation of FAR.
    if write
        && m.permission
        && !m.walk
        && let Some(pa) = super::hypercall::guest_pa(m.va, Mode::from_spsr(f.spsr).is_el0())
        && super::code::write_fault(pa)
    {
        return;
    }
    // The guest's MMU updating a flag in a held table page (hardware access/dirty flags): the
    // same, at the table's address.
    if m.permission && m.walk && super::code::write_fault(m.ipa) {
        return;
    }
    if data
        && let Some((page, off)) = GICR_FILTER
            .and_then(|(b, stride)| gicr::control_page(m.ipa, b, stride, MAX_CPUS as u64))
    {
        emulate_gicr(f, &m, page, off);
        return;
    }
    if data
        && let Some(page) = MAILBOX
        && m.ipa & !0xfff == page
    {
        emulate_mmio(f, &m, super::bcm::mbox::guest_access);
        return;
    }
    if data
        && let Some(page) = DMA_ENGINE
        && m.ipa & !0xfff == page
    {
        emulate_mmio(f, &m, super::bcm::dma::guest_access);
        return;
    }
    if data
        && let Some(page) = LOCAL_PAGE
        && m.ipa & !0xfff == page
    {
        emulate_mmio(f, &m, super::bcm::local::guest_access);
        return;
    }
    if data
        && let Some(page) = USB_HOST
        && m.ipa & !0xfff == page
    {
        emulate_mmio(f, &m, super::bcm::usb::guest_access);
        return;
    }
    let n = FAULTS.fetch_add(1, Ordering::Relaxed);
    if n < 16 || n.is_multiple_of(1024) {
        println!(
            "stage-2 fault #{n}: guest {} IPA {:#x} (VA {:#x}) at PC {:#x} on CPU {}; abort injected",
            match m.access {
                FaultAccess::Write => "write to",
                FaultAccess::Read => "read of",
                FaultAccess::Fetch => "fetch from",
            },
            m.ipa,
            m.va,
            f.elr,
            cpu::cpu_id()
        );
    }
    inject_abort(f, data, m.va);
}

/// Do a guest's access to a redistributor control page as `gicr::filter` allows (LPIs off).
fn emulate_gicr(f: &mut TrapFrame, m: &MemoryFault, page: u64, off: u64) {
    // Only single-register loads and stores carry a syndrome (ISV); the GIC's registers are
    // never accessed otherwise.
    let Some(access) = m.mmio else {
        inject_abort(f, true, m.va);
        return;
    };
    let size = access.size as u64;
    let srt = access.reg as usize;
    let value = if srt == 31 { 0 } else { f.x[srt] };
    let write = m.access == FaultAccess::Write;
    let addr = page + off;
    let read = match gicr::filter(off, size, write.then_some(value)) {
        gicr::Action::Refuse => {
            inject_abort(f, true, m.va);
            return;
        }
        gicr::Action::Ignore => None,
        gicr::Action::ReadZero => Some(0),
        gicr::Action::Write(v) => {
            // SAFETY: `addr` is an aligned register of a redistributor control page inside the
            // board's device window, which the EL2 map covers as device memory; the filter
            // allowed this write.
            unsafe {
                if size == 8 {
                    core::ptr::write_volatile(addr as *mut u64, v);
                } else {
                    core::ptr::write_volatile(addr as *mut u32, v as u32);
                }
            }
            None
        }
        gicr::Action::Read { clear } => {
            // SAFETY: as for the write above: an aligned register the EL2 map covers.
            let v = unsafe {
                if size == 8 {
                    core::ptr::read_volatile(addr as *const u64)
                } else {
                    core::ptr::read_volatile(addr as *const u32) as u64
                }
            };
            Some(v & !clear)
        }
    };
    if let Some(v) = read
        && srt != 31
    {
        f.x[srt] = v;
    }
    // Past the access: 4 bytes, or 2 for a 16-bit Thumb instruction.
    f.elr += m.instruction_len as u64;
}

/// Do a guest's access to a mediated register page with `handler` (offset in the page, size,
/// the value for a write): a read gets the handler's value, a refusal an abort.
fn emulate_mmio(
    f: &mut TrapFrame,
    m: &MemoryFault,
    handler: fn(u64, u8, Option<u64>) -> super::bcm::Answer,
) {
    use super::bcm::Answer;
    // Only single-register loads and stores carry a syndrome (ISV); drivers use nothing else.
    let Some(access) = m.mmio else {
        inject_abort(f, true, m.va);
        return;
    };
    let srt = access.reg as usize;
    let value = if srt == 31 { 0 } else { f.x[srt] };
    let write = m.access == FaultAccess::Write;
    match handler(m.ipa & 0xfff, access.size, write.then_some(value)) {
        Answer::Abort => {
            inject_abort(f, true, m.va);
            return;
        }
        Answer::Value(v) if srt != 31 => f.x[srt] = v as u64,
        Answer::Value(_) | Answer::Done => {}
    }
    f.elr += m.instruction_len as u64;
}

/// Aborts the hypervisor took while translating a guest buffer (and answered BAD_ADDRESS).
static WALK_ABORTS: AtomicU64 = AtomicU64::new(0);

/// A synchronous exception at EL2. The only ones expected are an abort during the walk of a
/// guest buffer's translation (`hypercall::at_fixup`), which resumes where the translation
/// answers "fault", and an abort of a device probe (`bcm::probe_fixup`). Anything else is a hypervisor bug and stops the machine.
#[unsafe(no_mangle)]
extern "C" fn hv_el2_sync(f: &mut TrapFrame) {
    let esr = ESR_EL2.get();
    if (esr >> 26) & 0x3f == exception::ec::DABT_CUR
        && let Some(resume) = super::bcm::probe_fixup(f.elr)
    {
        // A probe of a device the board data names and the machine lacks (`bcm::rng200`).
        println!(
            "no device answers at {:#x} (ESR {esr:#x}): taken as absent",
            FAR_EL2.get()
        );
        f.elr = resume;
        return;
    }
    if (esr >> 26) & 0x3f == exception::ec::DABT_CUR
        && let Some(resume) = super::hypercall::at_fixup(f.elr)
    {
        let n = WALK_ABORTS.fetch_add(1, Ordering::Relaxed);
        if n < 16 || n.is_multiple_of(1024) {
            println!(
                "abort #{n} walking a guest buffer's page tables (FAR {:#x}, ESR {esr:#x}); answered BAD_ADDRESS",
                FAR_EL2.get()
            );
        }
        f.elr = resume;
        return;
    }
    hv_unexpected(f)
}

#[unsafe(no_mangle)]
extern "C" fn hv_unexpected(f: &mut TrapFrame) -> ! {
    panic!(
        "unexpected exception at EL2: ESR {:#x} ELR {:#x} FAR {:#x} SPSR {:#x}",
        ESR_EL2.get(),
        f.elr,
        FAR_EL2.get(),
        f.spsr
    );
}

/// SMCCC dispatch for HVC and trapped SMC: PSCI, SMCCC and Gatewarden calls.
fn call(f: &mut TrapFrame) {
    let fid = f.x[0] & 0xffff_ffff;
    f.x[0] = match fid {
        0x8000_0000 => 0x1_0001, // SMCCC_VERSION 1.1
        0x8400_0000..=0x8400_001f | 0xc400_0000..=0xc400_001f => psci(fid, f),
        _ => super::hypercall::dispatch(f),
    };
}

/// The guest's PSCI calls, answered by the hypervisor (`power`), whatever the board has below.
fn psci(fid: u64, f: &mut TrapFrame) -> u64 {
    use super::power::{self, psci::*};
    match fid {
        VERSION => 0x1_0000,
        FEATURES => match f.x[1] & 0xffff_ffff {
            VERSION | CPU_OFF | MIGRATE_INFO_TYPE | SYSTEM_OFF | SYSTEM_RESET | FEATURES
            | CPU_ON | AFFINITY_INFO | 0x8000_0000 => 0,
            _ => NOT_SUPPORTED,
        },
        CPU_ON => power::cpu_on(f.x[1], f.x[2], f.x[3]),
        CPU_OFF => power::cpu_off(),
        AFFINITY_INFO => power::affinity_info(f.x[1], f.x[2]),
        MIGRATE_INFO_TYPE => 2, // no trusted OS to migrate
        SYSTEM_OFF => {
            println!("guest requested SYSTEM_OFF");
            power::system_off()
        }
        SYSTEM_RESET => {
            println!("guest requested SYSTEM_RESET");
            power::system_reset()
        }
        _ => NOT_SUPPORTED,
    }
}

/// Make the guest take a synchronous exception with syndrome `esr` at EL1.
fn inject(f: &mut TrapFrame, esr: u64, far: u64) {
    ESR_EL1.set(esr);
    FAR_EL1.set(far);
    ELR_EL1.set(f.elr);
    SPSR_EL1.set(f.spsr);
    f.elr = VBAR_EL1.get() + Mode::from_spsr(f.spsr).el1_sync_vector();
    f.spsr = cpu::SPSR_EL1H_MASKED;
}

fn inject_abort(f: &mut TrapFrame, data: bool, far: u64) {
    let from_el0 = Mode::from_spsr(f.spsr).is_el0();
    let ec = match (data, from_el0) {
        (true, true) => 0x24,
        (true, false) => 0x25,
        (false, true) => 0x20,
        (false, false) => 0x21,
    };
    // FSC 0x10: synchronous external abort; the trapped instruction's length (IL: a 16-bit
    // Thumb instruction from AArch32 has IL clear); for data, keep WnR.
    let esr = ESR_EL2.get();
    let wnr = if data { esr & (1 << 6) } else { 0 };
    inject(f, (ec << 26) | (esr & (1 << 25)) | wnr | 0x10, far);
}

fn inject_undef(f: &mut TrapFrame) {
    inject(f, 1 << 25, 0);
}
