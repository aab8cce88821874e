//! Where a guest exception the hypervisor injects goes, from the trapped context's SPSR.
//!
//! Pure code, checked on the host; `arch::aarch64::trap` injects. The guest's EL1 is AArch64
//! (HCR_EL2.RW), so an AArch32 context is always EL0.

use crate::exit::{Conduit, Exit, FaultAccess, MemoryFault, MmioAccess};

/// The guest context a trap came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// EL0, AArch64.
    El0A64,
    /// EL0, AArch32 (SPSR.M[4] set).
    El0A32,
    /// EL1 with SP_EL0.
    El1t,
    /// EL1 with SP_EL1.
    El1h,
}

impl Mode {
    /// Decode SPSR_EL2.M.
    pub const fn from_spsr(spsr: u64) -> Self {
        if spsr & 0x10 != 0 {
            return Mode::El0A32;
        }
        match spsr & 0xf {
            0b0000 => Mode::El0A64,
            0b0101 => Mode::El1h,
            _ => Mode::El1t,
        }
    }

    /// Whether the context is EL0 (either state).
    pub const fn is_el0(self) -> bool {
        matches!(self, Mode::El0A64 | Mode::El0A32)
    }

    /// The synchronous-exception offset into VBAR_EL1 for an exception taken from this mode.
    pub const fn el1_sync_vector(self) -> u64 {
        match self {
            Mode::El1t => 0x000,
            Mode::El1h => 0x200,
            Mode::El0A64 => 0x400,
            Mode::El0A32 => 0x600,
        }
    }

    /// Whether this context may use the EL0 call window: AArch64 user space only (the ABI's
    /// register convention is AArch64's; an AArch32 caller gets an abort, as on any other
    /// unmapped page).
    pub const fn may_use_call_window(self) -> bool {
        matches!(self, Mode::El0A64)
    }
}

/// Whether a trapped MSR/MRS (EC 0x18, syndrome `esr`) is a debug register (Op0 = 2) or a PMU
/// register (Op0 = 3 with CRn = 9, CRm = 12..=14, or CRn = 14, CRm = 8..=15), the ones MDCR_EL2
/// traps and the hypervisor answers read-as-zero, write-ignored.
pub const fn debug_or_pmu_sysreg(esr: u64) -> bool {
    let op0 = (esr >> 20) & 0b11;
    let crn = (esr >> 10) & 0xf;
    let crm = (esr >> 1) & 0xf;
    op0 == 2 || (op0 == 3 && ((crn == 9 && matches!(crm, 12..=14)) || (crn == 14 && crm >= 8)))
}

/// Whether a data abort's syndrome `esr` is a stage-2 permission fault of the access itself
/// (DFSC 0b0011xx, any level; not one taken by the stage-1 walk, S1PTW).
pub const fn is_permission_fault(esr: u64) -> bool {
    let dfsc = esr & 0x3f;
    let s1ptw = esr & (1 << 7) != 0;
    dfsc & 0b11_1100 == 0b00_1100 && !s1ptw
}

/// Whether a data or instruction abort's syndrome `esr` is a stage-2 permission fault taken by
/// the stage-1 walk (S1PTW): the guest's MMU updating a descriptor's access or dirty flag in a
/// table page held read-only. HPFAR_EL2 holds its address.
pub const fn is_walk_permission_fault(esr: u64) -> bool {
    let dfsc = esr & 0x3f;
    let s1ptw = esr & (1 << 7) != 0;
    dfsc & 0b11_1100 == 0b00_1100 && s1ptw
}

/// Exception classes (ESR_EL2.EC) the hypervisor handles from the guest.
pub mod ec {
    /// HVC from AArch64.
    pub const HVC64: u64 = 0x16;
    /// SMC from AArch64.
    pub const SMC64: u64 = 0x17;
    /// MSR, MRS or system instruction from AArch64.
    pub const SYSREG: u64 = 0x18;
    /// Instruction abort from a lower EL.
    pub const IABT_LOW: u64 = 0x20;
    /// Data abort from a lower EL.
    pub const DABT_LOW: u64 = 0x24;
    /// Data abort at EL2 itself.
    pub const DABT_CUR: u64 = 0x25;
}

/// Decode a trap from the guest: the syndrome `esr` (ESR_EL2), `far` (FAR_EL2) and `hpfar`
/// (HPFAR_EL2, meaningful for aborts).
pub const fn decode(esr: u64, far: u64, hpfar: u64) -> Exit {
    let class = (esr >> 26) & 0x3f;
    let wnr = esr & (1 << 6) != 0;
    match class {
        ec::HVC64 => Exit::Call {
            conduit: Conduit::Hvc,
            imm: (esr & 0xffff) as u16,
        },
        ec::SMC64 => Exit::Call {
            conduit: Conduit::Smc,
            imm: (esr & 0xffff) as u16,
        },
        ec::SYSREG if debug_or_pmu_sysreg(esr) => Exit::DebugRegister {
            read: esr & 1 != 0,
            reg: ((esr >> 5) & 0x1f) as u8,
        },
        ec::DABT_LOW | ec::IABT_LOW => {
            let data = class == ec::DABT_LOW;
            // ISV: a single-register access, described by SAS and SRT (data aborts only).
            let mmio = if data && esr & (1 << 24) != 0 {
                Some(MmioAccess {
                    size: 1 << ((esr >> 22) & 0b11),
                    reg: ((esr >> 16) & 0x1f) as u8,
                })
            } else {
                None
            };
            Exit::Memory(MemoryFault {
                ipa: ((hpfar >> 4) << 12) | (far & 0xfff),
                va: far,
                access: match (data, wnr) {
                    (false, _) => FaultAccess::Fetch,
                    (true, true) => FaultAccess::Write,
                    (true, false) => FaultAccess::Read,
                },
                permission: (esr & 0x3f) & 0b11_1100 == 0b00_1100,
                walk: esr & (1 << 7) != 0,
                mmio,
                // IL: a 32-bit instruction, or a 16-bit Thumb one.
                instruction_len: if esr & (1 << 25) != 0 { 4 } else { 2 },
            })
        }
        _ => Exit::Other(esr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_faults() {
        // A write (WnR) permission fault at level 3, and at level 1.
        assert!(is_permission_fault((0x24 << 26) | (1 << 6) | 0x0f));
        assert!(is_permission_fault((0x24 << 26) | 0x0d));
        // Translation and access-flag faults, and a permission fault of the stage-1 walk.
        assert!(!is_permission_fault((0x24 << 26) | 0x07));
        assert!(!is_permission_fault((0x24 << 26) | 0x0b));
        assert!(!is_permission_fault((0x24 << 26) | (1 << 7) | 0x0f));
        // The walk's permission fault is the other kind.
        assert!(is_walk_permission_fault((0x24 << 26) | (1 << 7) | 0x0f));
        assert!(!is_walk_permission_fault((0x24 << 26) | 0x0f));
        assert!(!is_walk_permission_fault((0x24 << 26) | (1 << 7) | 0x07));
    }

    #[test]
    fn modes_and_vectors() {
        // AArch64 EL0t, EL1t, EL1h; AArch32 usr (0x10) and a Thumb usr (0x30).
        assert_eq!(Mode::from_spsr(0x0), Mode::El0A64);
        assert_eq!(Mode::from_spsr(0x3c4), Mode::El1t);
        assert_eq!(Mode::from_spsr(0x3c5), Mode::El1h);
        assert_eq!(Mode::from_spsr(0x10), Mode::El0A32);
        assert_eq!(Mode::from_spsr(0x30), Mode::El0A32);
        assert_eq!(Mode::El0A32.el1_sync_vector(), 0x600);
        assert_eq!(Mode::El0A64.el1_sync_vector(), 0x400);
        assert!(Mode::El0A32.is_el0() && Mode::El0A64.is_el0() && !Mode::El1h.is_el0());
        assert!(Mode::El0A64.may_use_call_window());
        assert!(
            !Mode::El0A32.may_use_call_window(),
            "AArch32 usr has M[3:0] = 0 too"
        );
        assert!(!Mode::El1h.may_use_call_window());
    }

    /// An EC 0x18 syndrome for MSR/MRS `op0, op1, crn, crm, op2`, register 3.
    fn sysreg(op0: u64, op1: u64, crn: u64, crm: u64, op2: u64, read: bool) -> u64 {
        (0x18 << 26)
            | (1 << 25)
            | (op0 << 20)
            | (op2 << 17)
            | (op1 << 14)
            | (crn << 10)
            | (3 << 5)
            | (crm << 1)
            | read as u64
    }

    #[test]
    fn pmu_and_debug_registers_are_recognised() {
        // PMCR_EL0 (3,3,9,12,0), PMCCNTR_EL0 (3,3,9,13,0), PMUSERENR_EL0 (3,3,9,14,0),
        // PMINTENSET_EL1 (3,0,9,14,1), PMEVCNTR0_EL0 (3,3,14,8,0), PMCCFILTR_EL0 (3,3,14,15,7).
        for (op0, op1, crn, crm, op2) in [
            (3, 3, 9, 12, 0),
            (3, 3, 9, 13, 0),
            (3, 3, 9, 14, 0),
            (3, 0, 9, 14, 1),
            (3, 3, 14, 8, 0),
            (3, 3, 14, 15, 7),
            // MDSCR_EL1 (2,0,0,2,2), OSLAR_EL1 (2,0,1,0,4), DBGBCR0_EL1 (2,0,0,0,5).
            (2, 0, 0, 2, 2),
            (2, 0, 1, 0, 4),
            (2, 0, 0, 0, 5),
        ] {
            assert!(debug_or_pmu_sysreg(sysreg(op0, op1, crn, crm, op2, true)));
        }
        // Not theirs: SCTLR_EL1 (3,0,1,0,0), CNTV_CTL_EL0 (3,3,14,3,1), ICC_SRE_EL1 (3,0,12,12,5).
        for (op0, op1, crn, crm, op2) in [(3, 0, 1, 0, 0), (3, 3, 14, 3, 1), (3, 0, 12, 12, 5)] {
            assert!(!debug_or_pmu_sysreg(sysreg(op0, op1, crn, crm, op2, false)));
        }
    }

    #[test]
    fn syndromes_decode_to_exits() {
        use crate::exit::*;
        assert_eq!(
            decode((0x16 << 26) | (1 << 25), 0, 0),
            Exit::Call {
                conduit: Conduit::Hvc,
                imm: 0
            }
        );
        assert_eq!(
            decode((0x16 << 26) | 0x1234, 0, 0),
            Exit::Call {
                conduit: Conduit::Hvc,
                imm: 0x1234
            }
        );
        assert_eq!(
            decode(0x17 << 26, 0, 0),
            Exit::Call {
                conduit: Conduit::Smc,
                imm: 0
            }
        );
        // STR x3, [..] to IPA 0x0902_0010 (fw_cfg), a level-3 translation fault, ISV set, 64-bit.
        let esr = (0x24 << 26) | (1 << 25) | (1 << 24) | (0b11 << 22) | (3 << 16) | (1 << 6) | 0x07;
        let Exit::Memory(m) = decode(esr, 0xffff_8000_1234_5010, (0x0902_0000 >> 12) << 4) else {
            panic!()
        };
        assert_eq!(
            m,
            MemoryFault {
                ipa: 0x0902_0010,
                va: 0xffff_8000_1234_5010,
                access: FaultAccess::Write,
                permission: false,
                walk: false,
                mmio: Some(MmioAccess { size: 8, reg: 3 }),
                instruction_len: 4,
            }
        );
        // A 16-bit Thumb LDRH (AArch32 EL0): IL clear, size 2.
        let esr = (0x24 << 26) | (1 << 24) | (0b01 << 22) | (5 << 16) | 0x06;
        let Exit::Memory(m) = decode(esr, 0x1000, 0x1 << 4) else {
            panic!()
        };
        assert_eq!(
            (m.access, m.instruction_len, m.mmio),
            (FaultAccess::Read, 2, Some(MmioAccess { size: 2, reg: 5 }))
        );
        // An instruction fetch; a permission fault of the stage-1 walk (S1PTW).
        let Exit::Memory(m) = decode((0x20 << 26) | (1 << 25) | 0x0f, 0, 0) else {
            panic!()
        };
        assert_eq!(
            (m.access, m.permission, m.walk, m.mmio),
            (FaultAccess::Fetch, true, false, None)
        );
        let Exit::Memory(m) = decode((0x24 << 26) | (1 << 25) | (1 << 7) | 0x0f, 0, 0) else {
            panic!()
        };
        assert!(m.permission && m.walk);
        // MRS x2, PMCCNTR_EL0 (Op0 3, CRn 9, CRm 13): a debug/PMU read; another sysreg is Other.
        let esr = (0x18 << 26) | (3 << 20) | (9 << 10) | (2 << 5) | (13 << 1) | 1;
        assert_eq!(
            decode(esr, 0, 0),
            Exit::DebugRegister { read: true, reg: 2 }
        );
        let esr = (0x18 << 26) | (3 << 20) | (1 << 10) | (2 << 5) | 1;
        assert_eq!(decode(esr, 0, 0), Exit::Other(esr));
        assert_eq!(decode(0x01 << 26, 0, 0), Exit::Other(0x01 << 26));
    }
}
