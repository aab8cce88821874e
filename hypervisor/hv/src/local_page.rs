//! The BCM2836 ARM-local page (the Raspberry Pi 3's per-core interrupt routing, core timers and
//! mailboxes at 0x40000000) as the hypervisor mediates it (board `mediator = "bcm2836-local"`).
//!
//! The guest's interrupt controller lives here (with the armctrl one in the mailbox page): it
//! routes interrupts to its cores and sends its IPIs through each core's mailbox 0, and all of
//! that passes, as the hypervisor takes no interrupts of its own (they go straight to EL1).
//! What does not pass: the counter's source, prescaler and value (the hypervisor's deadlines and
//! the quote's clock run on that counter; Linux writes the values the firmware set, which are
//! ignored), and mailboxes 1-3 (a loader may release a core to the address written there: cores
//! start only through the hypervisor).
//!
//! Pure and host-tested; `arch::aarch64::bcm::local` does the accesses.

/// What the hypervisor does with a trapped access to the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// Read the register and give the guest its value.
    Read,
    /// Write the guest's value to the register.
    Write,
    /// A write that is dropped (the register keeps the loader's value).
    Ignore,
    /// Refused: the guest gets an abort.
    Refuse,
}

/// Control (the counter's source and increment).
pub const CONTROL: u64 = 0x00;
/// The counter's prescaler.
pub const PRESCALER: u64 = 0x08;
/// The counter's value, low and high words.
pub const COUNTER: core::ops::RangeInclusive<u64> = 0x1c..=0x20;
/// Mailbox write-set registers (core `c`, mailbox `m` at `+0x10 * c + 4 * m`).
pub const MAILBOX_SET: core::ops::Range<u64> = 0x80..0xc0;
/// Mailbox read / write-clear registers.
pub const MAILBOX_CLEAR: core::ops::Range<u64> = 0xc0..0x100;

/// What to do with the guest's `size`-byte access at `offset` into the page.
pub fn register(offset: u64, size: u8, write: bool) -> Register {
    if size != 4 || !offset.is_multiple_of(4) || offset >= 0x100 {
        return Register::Refuse;
    }
    if !write {
        return Register::Read;
    }
    match offset {
        CONTROL | PRESCALER => Register::Ignore,
        o if COUNTER.contains(&o) => Register::Ignore,
        o if MAILBOX_SET.contains(&o) || MAILBOX_CLEAR.contains(&o) => {
            // Mailbox 0 of each core carries the guest's IPIs.
            if o % 0x10 == 0 {
                Register::Write
            } else {
                Register::Refuse
            }
        }
        // Interrupt routing and control, the local timer: the guest's own interrupts.
        0x0c..=0x18 | 0x24..=0x5c => Register::Write,
        // Read-only sources and the rest.
        _ => Register::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routing_and_ipis_pass_and_the_counter_and_loader_mailboxes_do_not() {
        // Benign: GPU interrupt routing, core 0's timer interrupt control, IPIs to core 2.
        assert_eq!(register(0x0c, 4, true), Register::Write);
        assert_eq!(register(0x40, 4, true), Register::Write);
        assert_eq!(register(0x34, 4, true), Register::Write);
        assert_eq!(register(0x80 + 0x20, 4, true), Register::Write);
        assert_eq!(register(0xc0 + 0x20, 4, true), Register::Write);
        assert_eq!(register(0x60, 4, false), Register::Read);
        // The counter's set-up, dropped; a core's mailbox 3 (a loader's release), refused.
        assert_eq!(register(CONTROL, 4, true), Register::Ignore);
        assert_eq!(register(PRESCALER, 4, true), Register::Ignore);
        assert_eq!(register(0x1c, 4, true), Register::Ignore);
        assert_eq!(register(0x20, 4, true), Register::Ignore);
        assert_eq!(register(0x80 + 0x10 + 0xc, 4, true), Register::Refuse);
        assert_eq!(register(0xc0 + 0x30 + 0x4, 4, true), Register::Refuse);
        assert_eq!(register(0x60, 4, true), Register::Refuse);
        assert_eq!(register(0x100, 4, false), Register::Refuse);
        assert_eq!(register(0x0c, 2, true), Register::Refuse);
    }
}
