//! What the guest may do to a GICv3 redistributor's control page (the first 4 KiB of its
//! RD_base frame): everything except LPIs.
//!
//! A redistributor's LPI configuration and pending tables (GICR_PROPBASER, GICR_PENDBASER) are
//! read and written by the GIC itself, not through the SMMU: a guest that pointed them at
//! hypervisor memory and enabled LPIs would read hypervisor bytes back as pending interrupts and
//! clear bits there as it acknowledged them. QEMU's GIC keeps LPIs even without an ITS, so
//! stage 2 leaves each control page unmapped and the hypervisor filters the accesses: LPIs read
//! as absent, the table registers read as zero and ignore writes, and EnableLPIs never sets.
//! Pure policy, checked on the host; the trap handler does the accesses.

/// GICR_CTLR.
pub const CTLR: u64 = 0x0;
/// GICR_TYPER (64-bit).
pub const TYPER: u64 = 0x8;
/// GICR_SETLPIR, GICR_CLRLPIR, GICR_PROPBASER, GICR_PENDBASER, GICR_INVLPIR, GICR_INVALLR.
const LPI_REGS: [u64; 6] = [0x40, 0x48, 0x70, 0x78, 0xa0, 0xb0];
/// GICR_CTLR.EnableLPIs.
const CTLR_ENABLE_LPIS: u64 = 1 << 0;
/// GICR_TYPER.PLPIS and DirectLPI.
const TYPER_LPIS: u64 = (1 << 0) | (1 << 3);

/// What the hypervisor does with a trapped access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read the register and give the guest the value with `clear` bits cleared.
    Read {
        /// Bits the guest must not see set.
        clear: u64,
    },
    /// Write `value` to the register.
    Write(u64),
    /// The guest reads zero.
    ReadZero,
    /// The write is dropped.
    Ignore,
    /// Not a register access the GIC architecture allows (unaligned or an odd size): the guest
    /// gets an abort, as from unmapped memory.
    Refuse,
}

/// The action for an access of `size` bytes at `offset` into the control page (`value` for a
/// write).
pub fn filter(offset: u64, size: u64, write: Option<u64>) -> Action {
    if !matches!(size, 4 | 8) || !offset.is_multiple_of(size) || offset >= 0x1000 {
        return Action::Refuse;
    }
    // The 8-byte register (or either half of it) the access touches.
    let reg = offset & !7;
    if LPI_REGS.contains(&reg) {
        return if write.is_some() {
            Action::Ignore
        } else {
            Action::ReadZero
        };
    }
    match (offset, write) {
        (CTLR, Some(v)) => Action::Write(v & !CTLR_ENABLE_LPIS),
        (TYPER, None) => Action::Read { clear: TYPER_LPIS },
        (_, Some(v)) => Action::Write(v),
        (_, None) => Action::Read { clear: 0 },
    }
}

/// The redistributor control page `ipa` falls in, if any: `(page base, offset)`, for
/// `count` redistributors from `base`, `stride` bytes apart.
pub fn control_page(ipa: u64, base: u64, stride: u64, count: u64) -> Option<(u64, u64)> {
    let rel = ipa.checked_sub(base)?;
    let k = rel / stride;
    let off = rel % stride;
    (k < count && off < 0x1000).then_some((base + k * stride, off))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpis_stay_off() {
        assert_eq!(
            filter(0x70, 8, Some(0x4000_0000)),
            Action::Ignore,
            "PROPBASER"
        );
        assert_eq!(
            filter(0x78, 8, Some(0x4000_0000)),
            Action::Ignore,
            "PENDBASER"
        );
        assert_eq!(
            filter(0x7c, 4, Some(0)),
            Action::Ignore,
            "PENDBASER high half"
        );
        assert_eq!(filter(0x70, 8, None), Action::ReadZero);
        assert_eq!(filter(0x40, 8, Some(1)), Action::Ignore, "SETLPIR");
        assert_eq!(
            filter(CTLR, 4, Some(0b11)),
            Action::Write(0b10),
            "EnableLPIs cleared"
        );
        assert_eq!(filter(TYPER, 8, None), Action::Read { clear: 0b1001 });
    }

    #[test]
    fn everything_else_passes() {
        // GICR_WAKER (power management at boot), IIDR, STATUSR, the high half of TYPER, SYNCR.
        assert_eq!(filter(0x14, 4, Some(0)), Action::Write(0));
        assert_eq!(filter(0x14, 4, None), Action::Read { clear: 0 });
        assert_eq!(filter(0x4, 4, None), Action::Read { clear: 0 });
        assert_eq!(filter(0xc, 4, None), Action::Read { clear: 0 });
        assert_eq!(filter(0xc0, 4, None), Action::Read { clear: 0 });
        assert_eq!(filter(CTLR, 4, None), Action::Read { clear: 0 });
    }

    #[test]
    fn odd_accesses_are_refused() {
        assert_eq!(filter(0x1, 4, None), Action::Refuse);
        assert_eq!(filter(0x14, 2, None), Action::Refuse);
        assert_eq!(filter(0x74, 8, None), Action::Refuse);
        assert_eq!(filter(0x1000, 4, None), Action::Refuse);
    }

    #[test]
    fn finds_each_cpus_control_page() {
        let (b, s) = (0x080a_0000, 0x2_0000);
        assert_eq!(
            control_page(0x080a_0014, b, s, 4),
            Some((0x080a_0000, 0x14))
        );
        assert_eq!(
            control_page(0x080e_0078, b, s, 4),
            Some((0x080e_0000, 0x78))
        );
        assert_eq!(control_page(0x080a_1000, b, s, 4), None, "rest of RD_base");
        assert_eq!(control_page(0x080b_0000, b, s, 4), None, "SGI_base frame");
        assert_eq!(
            control_page(0x0812_0000, b, s, 4),
            None,
            "past the last CPU"
        );
        assert_eq!(control_page(0x0809_ffff, b, s, 4), None);
    }
}
