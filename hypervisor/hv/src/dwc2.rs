//! The Raspberry Pis' dwc2 USB host controller as the hypervisor mediates it (board
//! `mediator = "dwc2"`, docs/dma-mediation.md).
//!
//! In buffer-DMA mode each host channel moves a transfer between memory at its `HCDMA` address
//! and the bus: a guest that sets `HCDMA` to the hypervisor's memory and enables the channel has
//! the controller read or write it. So the controller's first register page (global, host and
//! host-channel registers) is out of stage 2: a channel's `HCDMA` and `HCTSIZ` the guest writes
//! are kept by the hypervisor (and reach the controller only while the channel is idle), and a
//! write that enables a channel first checks the whole transfer (`[HCDMA, HCDMA + length)`)
//! against guest RAM, then writes the checked values and enables it. Descriptor DMA (whose lists
//! the controller would fetch itself), device mode (whose endpoints have DMA addresses of their
//! own) and the periodic frame list's base are refused. The FIFO windows above the first page
//! carry no addresses and stay mapped.
//!
//! Pure and host-tested: the register policy and the transfer check. `arch::aarch64::bcm::usb`
//! does the register accesses.

use crate::dma_engine::Reach;

/// Register offsets in the mediated page.
pub mod reg {
    /// USB configuration (`FORCE_DEV_MODE`).
    pub const GUSBCFG: u64 = 0x00c;
    /// Host configuration (`DESC_DMA`).
    pub const HCFG: u64 = 0x400;
    /// The periodic frame list's base (descriptor DMA only).
    pub const HFLBADDR: u64 = 0x41c;
    /// The first host channel's registers; `CHANNEL_STRIDE` apart.
    pub const HOST_CHANNELS: u64 = 0x500;
    /// Distance between host channels.
    pub const CHANNEL_STRIDE: u64 = 0x20;
    /// Channel characteristics (in a channel's block): enable, direction, packet size.
    pub const HCCHAR: u64 = 0x00;
    /// Transfer size and packet count (in a channel's block).
    pub const HCTSIZ: u64 = 0x10;
    /// DMA address (in a channel's block).
    pub const HCDMA: u64 = 0x14;
    /// Current DMA buffer address (read-only, in a channel's block).
    pub const HCDMAB: u64 = 0x1c;
    /// Device-mode registers (`0x800`-`0xdff`): endpoints with DMA addresses.
    pub const DEVICE_MODE: core::ops::Range<u64> = 0x800..0xe00;
}

/// Most host channels a dwc2 has.
pub const CHANNELS: usize = 16;

/// `GUSBCFG`: force device mode.
pub const FORCE_DEV_MODE: u32 = 1 << 30;
/// `HCFG`: descriptor DMA.
pub const DESC_DMA: u32 = 1 << 23;
/// `HCCHAR`: enable.
pub const CHENA: u32 = 1 << 31;
/// `HCCHAR`: disable (halt) request.
pub const CHDIS: u32 = 1 << 30;
/// `HCCHAR`: IN endpoint.
pub const EPDIR_IN: u32 = 1 << 15;

/// What the hypervisor does with a trapped access to the controller's first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// Read the register and give the guest its value.
    Read,
    /// Write the guest's value to the register.
    Write,
    /// Write the guest's value less these bits.
    WriteMasked(u32),
    /// A channel's `HCDMA` (`size` false) or `HCTSIZ` (`size` true) written: kept, and given
    /// to the controller while the channel is idle.
    Keep {
        /// The channel.
        channel: usize,
        /// `HCTSIZ` rather than `HCDMA`.
        size: bool,
    },
    /// A channel's `HCCHAR` written: a start is checked first.
    Characteristics(usize),
    /// Refused: the guest gets an abort.
    Refuse,
}

/// What to do with the guest's `size`-byte access at `offset` into the first page.
pub fn register(offset: u64, size: u8, write: bool) -> Register {
    if size != 4 || !offset.is_multiple_of(4) {
        return Register::Refuse;
    }
    let channels_end = reg::HOST_CHANNELS + CHANNELS as u64 * reg::CHANNEL_STRIDE;
    if !write {
        return Register::Read;
    }
    match offset {
        reg::GUSBCFG => Register::WriteMasked(FORCE_DEV_MODE),
        reg::HCFG => Register::WriteMasked(DESC_DMA),
        reg::HFLBADDR => Register::Refuse,
        o if (reg::HOST_CHANNELS..channels_end).contains(&o) => {
            let channel = ((o - reg::HOST_CHANNELS) / reg::CHANNEL_STRIDE) as usize;
            match (o - reg::HOST_CHANNELS) % reg::CHANNEL_STRIDE {
                reg::HCCHAR => Register::Characteristics(channel),
                reg::HCTSIZ => Register::Keep {
                    channel,
                    size: true,
                },
                reg::HCDMA => Register::Keep {
                    channel,
                    size: false,
                },
                reg::HCDMAB => Register::Refuse,
                _ => Register::Write,
            }
        }
        o if reg::DEVICE_MODE.contains(&o) => Register::Refuse,
        _ => Register::Write,
    }
}

/// Bytes a transfer may move: `XferSize` out; in, also every packet at the maximum size
/// (the controller may write a whole packet).
pub fn transfer_len(hcchar: u32, hctsiz: u32) -> u64 {
    let xfer = (hctsiz & 0x7_ffff) as u64;
    if hcchar & EPDIR_IN == 0 {
        return xfer;
    }
    let packets = ((hctsiz >> 19) & 0x3ff) as u64;
    let mps = (hcchar & 0x7ff) as u64;
    xfer.max(packets * mps)
}

/// Whether a channel may start with these values: a transfer that moves no bytes, or one whose
/// every byte is guest RAM (through one bus alias).
pub fn may_start(hcchar: u32, hctsiz: u32, dma: u32, reach: &Reach) -> bool {
    let len = transfer_len(hcchar, hctsiz);
    len == 0 || reach.ram(dma as u64, len).is_some()
}

/// Whether an `HCCHAR` write starts the channel (enable without a halt request).
pub fn starts(hcchar: u32) -> bool {
    hcchar & CHENA != 0 && hcchar & CHDIS == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const REACH: Reach = Reach {
        ram: (0x0100_0000, 0x3c00_0000),
        fifos: &[],
    };
    const IN_EP: u32 = EPDIR_IN | 512;
    const OUT_EP: u32 = 512;

    fn tsiz(xfer: u32, packets: u32) -> u32 {
        xfer | (packets << 19)
    }

    #[test]
    fn registers_follow_the_controller_layout() {
        assert_eq!(register(0x500, 4, true), Register::Characteristics(0));
        assert_eq!(
            register(0x5f0, 4, true),
            Register::Keep {
                channel: 7,
                size: true
            }
        );
        assert_eq!(
            register(0x6f4, 4, true),
            Register::Keep {
                channel: 15,
                size: false
            }
        );
        assert_eq!(register(0x51c, 4, true), Register::Refuse);
        assert_eq!(register(0x508, 4, true), Register::Write);
        assert_eq!(register(0x514, 4, false), Register::Read);
        assert_eq!(
            register(reg::GUSBCFG, 4, true),
            Register::WriteMasked(FORCE_DEV_MODE)
        );
        assert_eq!(
            register(reg::HCFG, 4, true),
            Register::WriteMasked(DESC_DMA)
        );
        assert_eq!(register(reg::HFLBADDR, 4, true), Register::Refuse);
        // Device mode's endpoint DMA addresses (DIEPDMA0, DOEPDMA0).
        assert_eq!(register(0x914, 4, true), Register::Refuse);
        assert_eq!(register(0xb14, 4, true), Register::Refuse);
        assert_eq!(register(0x914, 4, false), Register::Read);
        assert_eq!(register(0xe00, 4, true), Register::Write);
        assert_eq!(register(0x500, 2, true), Register::Refuse);
        assert_eq!(register(0x502, 4, false), Register::Refuse);
    }

    #[test]
    fn transfers_into_guest_ram_start_and_into_the_hypervisor_do_not() {
        let buf = 0xc200_0000;
        assert!(may_start(IN_EP, tsiz(1536, 3), buf, &REACH));
        assert!(may_start(OUT_EP, tsiz(8, 1), buf, &REACH));
        for alias in [0, 0x4000_0000, 0x8000_0000, 0xc000_0000] {
            assert!(!may_start(IN_EP, tsiz(64, 1), alias | 0x8_0000, &REACH));
            assert!(!may_start(OUT_EP, tsiz(8, 1), alias | 0x8_0000, &REACH));
        }
        // Ending past guest RAM; an IN whose packets reach further than its size says.
        assert!(!may_start(OUT_EP, tsiz(4096, 8), 0xfbff_f800, &REACH));
        assert!(!may_start(IN_EP, tsiz(0, 2), 0xfbff_fe00, &REACH));
        assert!(may_start(OUT_EP, tsiz(0, 2), 0xfbff_fe00, &REACH));
        // A zero-length OUT (a status stage, a ping) moves nothing, wherever it points.
        assert!(may_start(OUT_EP, tsiz(0, 1), 0x8_0000, &REACH));
        assert!(starts(CHENA | IN_EP) && !starts(CHENA | CHDIS) && !starts(IN_EP));
    }

    proptest! {
        /// Whatever the registers say, a transfer that may start moves bytes of guest RAM only.
        #[test]
        fn a_transfer_that_starts_stays_in_guest_ram(
            hcchar in any::<u32>(),
            hctsiz in prop_oneof![any::<u32>(), 0u32..0x0100_0000],
            dma in prop_oneof![
                any::<u32>(),
                (0u32..4, 0x3bf0_0000u32..0x3c00_0100).prop_map(|(a, o)| (a << 30) | o),
                (0u32..4, 0x00ff_ff00u32..0x0100_1000).prop_map(|(a, o)| (a << 30) | o),
            ],
        ) {
            if may_start(hcchar, hctsiz, dma, &REACH) {
                let len = transfer_len(hcchar, hctsiz);
                prop_assume!(len > 0);
                let first = dma as u64 & 0x3fff_ffff;
                prop_assert!(first >= REACH.ram.0 && first + len <= REACH.ram.1);
                prop_assert_eq!(dma as u64 >> 30, (dma as u64 + len - 1) >> 30);
            }
        }
    }
}
