//! The Raspberry Pis' legacy DMA engine (BCM2835 "DMA", channels 0-14 at bus 0x7e007000) as
//! the hypervisor mediates it (board `mediator = "bcm-dma"`, docs/dma-mediation.md).
//!
//! The engine is a bus master with no IOMMU in front of it: a guest that hands it a control
//! block can copy any RAM, the hypervisor's included, to anywhere. So the guest never writes
//! its registers directly. Its register page is out of stage 2; a write of a control-block
//! address makes the hypervisor copy the whole chain the guest built into hypervisor memory
//! (each block read once), check every block there, and point the engine at the copy, whose
//! next-block links it rewrites to the copy's own blocks. The engine therefore only ever
//! fetches blocks the hypervisor checked and the guest cannot change. A block passes when each
//! end of its transfer, with 2-D rows and strides, lies inside guest RAM through one of the four
//! bus aliases of RAM, or is one allow-listed peripheral FIFO register.
//!
//! Pure and host-tested: the register policy, the block check and the chain copy.
//! `arch::aarch64::bcm::dma` does the register accesses.

/// Registers of one channel (offsets in its 0x100-byte block) and of the page.
pub mod reg {
    /// Control and status.
    pub const CS: u64 = 0x00;
    /// Address of the control block to load on activation (`CONBLK_AD`).
    pub const CONBLK_AD: u64 = 0x04;
    /// The current block's transfer information (read-only, as the next four).
    pub const TI: u64 = 0x08;
    /// The current source address.
    pub const SOURCE_AD: u64 = 0x0c;
    /// The current destination address.
    pub const DEST_AD: u64 = 0x10;
    /// What is left of the current block's length.
    pub const TXFR_LEN: u64 = 0x14;
    /// The current block's 2-D strides.
    pub const STRIDE: u64 = 0x18;
    /// The next block's address, as loaded from the current block.
    pub const NEXTCONBK: u64 = 0x1c;
    /// Error flags (write 1 to clear) and the channel's kind.
    pub const DEBUG: u64 = 0x20;
    /// Distance between channels.
    pub const CHANNEL_STRIDE: u64 = 0x100;
    /// Every channel's interrupt flag (read-only).
    pub const INT_STATUS: u64 = 0xfe0;
    /// Every channel's enable bit.
    pub const ENABLE: u64 = 0xff0;
}

/// Bits of `CS`.
pub mod cs {
    /// The channel runs (or resumes) its chain.
    pub const ACTIVE: u32 = 1 << 0;
    /// DMA error (the mediator also shows a refused chain so).
    pub const ERROR: u32 = 1 << 8;
    /// Resets the channel: its block address becomes 0.
    pub const RESET: u32 = 1 << 31;
}

/// Bits of a control block's transfer information (`TI`).
pub mod ti {
    /// 2-D mode: `TXFR_LEN` holds YLENGTH (29:16) and XLENGTH (15:0), `STRIDE` the strides.
    pub const TDMODE: u32 = 1 << 1;
    /// The destination address increments.
    pub const DEST_INC: u32 = 1 << 4;
    /// 128-bit destination writes.
    pub const DEST_WIDTH: u32 = 1 << 5;
    /// No writes at all.
    pub const DEST_IGNORE: u32 = 1 << 7;
    /// The source address increments.
    pub const SRC_INC: u32 = 1 << 8;
    /// 128-bit source reads.
    pub const SRC_WIDTH: u32 = 1 << 9;
    /// No reads at all (the destination gets zeros).
    pub const SRC_IGNORE: u32 = 1 << 11;
}

/// Bytes of a control block (and its required alignment).
pub const BLOCK_BYTES: u64 = 32;

/// Most blocks in one chain the hypervisor copies (Linux's longest, an SD request of 128
/// segments split at the lite channels' 64 KiB, stays well below).
pub const MAX_BLOCKS: usize = 256;

/// The peripherals' window in the engine's bus addresses (0x7c000000-0x7fffffff on the
/// BCM2711, 0x7e000000- on the BCM2835/7): never RAM, whatever the alias arithmetic says.
const PERIPHERAL_WINDOW: core::ops::Range<u64> = 0x7c00_0000..0x8000_0000;

/// What the hypervisor does with a trapped access to the engine's register page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// Read the register and give the guest its value.
    Read,
    /// Write the guest's value to the register.
    Write,
    /// A channel's `CS`: reads show a refused chain as an error; writes go to the engine (an
    /// activation with no block loaded does nothing: the engine stays idle at address 0).
    Status(usize),
    /// A channel's `CONBLK_AD` (or, with `next`, `NEXTCONBK`): reads give the guest its own
    /// block's address back for the hypervisor's copy; a write of `CONBLK_AD` copies and checks
    /// the chain.
    BlockAddress {
        /// The channel.
        channel: usize,
        /// `NEXTCONBK` (read-only to the guest) rather than `CONBLK_AD`.
        next: bool,
    },
    /// Refused: the guest gets an abort.
    Refuse,
}

/// What to do with the guest's `size`-byte access at `offset` into the page, on an engine whose
/// first `channels` channels have the legacy layout and belong to the guest (the BCM2711's
/// channels 11-14 are "DMA4" engines with another layout and 40-bit addresses: kept from it).
pub fn register(offset: u64, size: u8, write: bool, channels: usize) -> Register {
    if size != 4 || !offset.is_multiple_of(4) {
        return Register::Refuse;
    }
    match offset {
        reg::INT_STATUS if !write => Register::Read,
        reg::ENABLE => {
            if write {
                Register::Write
            } else {
                Register::Read
            }
        }
        o if o < 15 * reg::CHANNEL_STRIDE => {
            let channel = (o / reg::CHANNEL_STRIDE) as usize;
            let r = o % reg::CHANNEL_STRIDE;
            if channel >= channels {
                return if write || r > reg::DEBUG {
                    Register::Refuse
                } else {
                    Register::Read
                };
            }
            match (r, write) {
                (reg::CS, _) => Register::Status(channel),
                (reg::CONBLK_AD, _) => Register::BlockAddress {
                    channel,
                    next: false,
                },
                (reg::NEXTCONBK, false) => Register::BlockAddress {
                    channel,
                    next: true,
                },
                (reg::TI..=reg::STRIDE, false) => Register::Read,
                (reg::DEBUG, _) => {
                    if write {
                        Register::Write
                    } else {
                        Register::Read
                    }
                }
                // The current block's fields are loaded from the (checked) block only.
                _ => Register::Refuse,
            }
        }
        _ => Register::Refuse,
    }
}

/// One control block, as the engine reads it (eight little-endian words, the last two
/// reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    /// Transfer information (`ti`).
    pub ti: u32,
    /// Source bus address.
    pub source: u32,
    /// Destination bus address.
    pub dest: u32,
    /// Length: bytes, or YLENGTH and XLENGTH in 2-D mode.
    pub len: u32,
    /// 2-D mode: destination (31:16) and source (15:0) strides, signed, added after each row.
    pub stride: u32,
    /// The next block's bus address (0: the last block).
    pub next: u32,
}

impl Block {
    /// The block in the engine's words.
    pub fn from_words(w: [u32; 8]) -> Self {
        Block {
            ti: w[0],
            source: w[1],
            dest: w[2],
            len: w[3],
            stride: w[4],
            next: w[5],
        }
    }

    /// The engine's words (reserved words zero).
    pub fn words(&self) -> [u32; 8] {
        [
            self.ti,
            self.source,
            self.dest,
            self.len,
            self.stride,
            self.next,
            0,
            0,
        ]
    }
}

/// Why a chain was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A block address (the first, or a next link) is not 32-byte aligned.
    Misaligned(u32),
    /// A block lies outside guest RAM (it would be fetched from hypervisor memory).
    BlockOutsideRam(u32),
    /// The chain has more than [`MAX_BLOCKS`] distinct blocks.
    TooLong,
    /// A length is not a whole number of 32-bit words, or of 128-bit beats with a wide end (the
    /// engine moves whole beats; QEMU's model runs on past the end of such a block).
    Length(u32),
    /// The block at this address reads outside guest RAM and the FIFO allow-list.
    Source(u32),
    /// The block at this address writes outside guest RAM and the FIFO allow-list.
    Dest(u32),
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Refusal::Misaligned(a) => write!(f, "block address {a:#x} not 32-byte aligned"),
            Refusal::BlockOutsideRam(a) => write!(f, "block at {a:#x} outside guest RAM"),
            Refusal::TooLong => write!(f, "more than {MAX_BLOCKS} blocks"),
            Refusal::Length(a) => write!(f, "block at {a:#x}: length not whole words"),
            Refusal::Source(a) => write!(f, "block at {a:#x} reads outside guest RAM"),
            Refusal::Dest(a) => write!(f, "block at {a:#x} writes outside guest RAM"),
        }
    }
}

/// What a transfer may reach: guest RAM (ARM physical `[start, end)`, below 1 GiB) and the
/// bus addresses of the peripheral FIFO registers DREQ-paced transfers use.
#[derive(Debug, Clone, Copy)]
pub struct Reach<'a> {
    /// Guest RAM.
    pub ram: (u64, u64),
    /// Allowed FIFO registers (bus addresses), each reached at a fixed address.
    pub fifos: &'a [u32],
}

impl Reach<'_> {
    /// The ARM physical address of `[bus, bus + len)` when the whole range is guest RAM through
    /// one alias window (a range that crosses into the next window would wrap to RAM's start).
    pub fn ram(&self, bus: u64, len: u64) -> Option<u64> {
        let end = bus.checked_add(len)?;
        if len == 0
            || end > 1 << 32
            || bus >> 30 != (end - 1) >> 30
            || (bus < PERIPHERAL_WINDOW.end && end > PERIPHERAL_WINDOW.start)
        {
            return None;
        }
        let pa = bus & 0x3fff_ffff;
        (pa >= self.ram.0 && pa + len <= self.ram.1).then_some(pa)
    }

    /// Whether one end of a transfer stays inside what it may reach.
    fn end_ok(&self, e: End) -> bool {
        if e.ignore || e.rows_bytes == 0 {
            return true;
        }
        let width: u64 = if e.wide { 16 } else { 4 };
        if !e.inc && e.advance == 0 && !e.wide && self.fifos.contains(&e.addr) {
            return true;
        }
        // Each row starts `advance` after the last (linear in the row), so the first and the
        // last row bound them all; a row covers XLENGTH bytes (rounded up to the width), or one
        // beat at a fixed address.
        let extent = if e.inc { e.rows_bytes } else { width };
        let first = e.addr as i64;
        let last = first + e.advance * e.last_row as i64;
        let lo = first.min(last);
        let hi = first.max(last) + extent as i64;
        lo >= 0 && self.ram(lo as u64, (hi - lo) as u64).is_some()
    }

    /// Check one block (at bus address `at`, for the messages).
    pub fn check(&self, at: u32, b: &Block) -> Result<(), Refusal> {
        let two_d = b.ti & ti::TDMODE != 0;
        // 1-D: the whole register is the length (QEMU's model takes all 32 bits). 2-D: XLENGTH
        // bytes per row, YLENGTH + 1 rows (QEMU's model does YLENGTH; the bounds cover both).
        let (xlen, last_row, strides) = if two_d {
            (
                (b.len & 0xffff) as u64,
                ((b.len >> 16) & 0x3fff) as u64,
                (b.stride as i16 as i64, (b.stride >> 16) as i16 as i64),
            )
        } else {
            (b.len as u64, 0, (0, 0))
        };
        // Whole words; whole 128-bit beats for a wide end (where a row's last beat would end,
        // and so where the next row starts, is not documented otherwise).
        let beat = if b.ti & (ti::SRC_WIDTH | ti::DEST_WIDTH) != 0 {
            16
        } else {
            4
        };
        if !xlen.is_multiple_of(beat) {
            return Err(Refusal::Length(at));
        }
        let end = |addr, inc_bit, width_bit, ignore_bit, stride: i64| {
            let inc = b.ti & inc_bit != 0;
            End {
                addr,
                inc,
                wide: b.ti & width_bit != 0,
                ignore: b.ti & ignore_bit != 0,
                rows_bytes: xlen,
                advance: if inc { xlen as i64 } else { 0 } + stride,
                last_row,
            }
        };
        if !self.end_ok(end(
            b.source,
            ti::SRC_INC,
            ti::SRC_WIDTH,
            ti::SRC_IGNORE,
            strides.0,
        )) {
            return Err(Refusal::Source(at));
        }
        if !self.end_ok(end(
            b.dest,
            ti::DEST_INC,
            ti::DEST_WIDTH,
            ti::DEST_IGNORE,
            strides.1,
        )) {
            return Err(Refusal::Dest(at));
        }
        Ok(())
    }

    /// Where the block at bus address `at` lies (ARM physical), if the engine may fetch it from
    /// there.
    pub fn block(&self, at: u32) -> Result<u64, Refusal> {
        if !(at as u64).is_multiple_of(BLOCK_BYTES) {
            return Err(Refusal::Misaligned(at));
        }
        self.ram(at as u64, BLOCK_BYTES)
            .ok_or(Refusal::BlockOutsideRam(at))
    }
}

/// One end of a transfer.
#[derive(Debug, Clone, Copy)]
struct End {
    addr: u32,
    inc: bool,
    wide: bool,
    ignore: bool,
    /// Bytes per row (XLENGTH, or the 1-D length).
    rows_bytes: u64,
    /// From one row's start to the next's.
    advance: i64,
    /// The last row's index (0 in 1-D mode).
    last_row: u64,
}

/// The hypervisor's copy of a chain: the blocks the engine runs, their links rewritten to the
/// copy, and where each came from (for the guest's reads of the block registers). Aligned so
/// that every block is (the engine needs 32-byte aligned blocks).
#[repr(C, align(32))]
pub struct Chain {
    /// The checked blocks, in the engine's words.
    pub blocks: [[u32; 8]; MAX_BLOCKS],
    /// The guest's bus address of each block.
    pub origin: [u32; MAX_BLOCKS],
    /// Blocks in use.
    pub len: usize,
}

impl Chain {
    /// An empty chain.
    pub const fn new() -> Self {
        Chain {
            blocks: [[0; 8]; MAX_BLOCKS],
            origin: [0; MAX_BLOCKS],
            len: 0,
        }
    }

    /// Copy the chain starting at the guest's bus address `first`, reading each block once with
    /// `read` (ARM physical address) and checking the copy; `copy_bus(i)` is the bus address
    /// the engine finds copy block `i` at. Links back into the chain (cyclic transfers) become
    /// links to the copy. On refusal the chain is left empty.
    pub fn copy(
        &mut self,
        first: u32,
        reach: &Reach,
        mut read: impl FnMut(u64) -> [u32; 8],
        copy_bus: impl Fn(usize) -> u32,
    ) -> Result<(), Refusal> {
        self.len = 0;
        let r = self.walk(first, reach, &mut read);
        if r.is_err() {
            self.clear();
            return r;
        }
        for i in 0..self.len {
            let next = self.blocks[i][5];
            if next != 0 {
                let j = self.index_of(next).expect("walked");
                self.blocks[i][5] = copy_bus(j);
            }
        }
        Ok(())
    }

    fn walk(
        &mut self,
        first: u32,
        reach: &Reach,
        read: &mut impl FnMut(u64) -> [u32; 8],
    ) -> Result<(), Refusal> {
        let mut at = first;
        while at != 0 && self.index_of(at).is_none() {
            if self.len == MAX_BLOCKS {
                return Err(Refusal::TooLong);
            }
            let pa = reach.block(at)?;
            // Checked on the copy: the guest may change its block while (or after) it is read.
            let b = Block::from_words(read(pa));
            reach.check(at, &b)?;
            self.blocks[self.len] = b.words();
            self.origin[self.len] = at;
            self.len += 1;
            at = b.next;
        }
        Ok(())
    }

    /// The copy's index of the guest block at bus address `at` (any alias of it).
    fn index_of(&self, at: u32) -> Option<usize> {
        self.origin[..self.len]
            .iter()
            .position(|&o| o & 0x3fff_ffff == at & 0x3fff_ffff)
    }

    /// What the guest sees in a block-address register that holds `hw`, when the copy's first
    /// block is at bus address `first`: its own block's address for a block of the copy.
    pub fn guest_view(&self, hw: u32, first: u32) -> u32 {
        let i = hw.wrapping_sub(first) as u64 / BLOCK_BYTES;
        if hw >= first
            && ((hw - first) as u64).is_multiple_of(BLOCK_BYTES)
            && (i as usize) < self.len
        {
            self.origin[i as usize]
        } else {
            hw
        }
    }

    /// Forget the chain.
    pub fn clear(&mut self) {
        self.blocks[..self.len].fill([0; 8]);
        self.origin[..self.len].fill(0);
        self.len = 0;
    }
}

impl Default for Chain {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Guest RAM as on the Pi 4 (the hypervisor keeps the first 16 MiB).
    const RAM: (u64, u64) = (0x0100_0000, 0x3c00_0000);
    const FIFO: u32 = 0x7e20_2040;
    const REACH: Reach = Reach {
        ram: RAM,
        fifos: &[FIFO],
    };
    /// Guest RAM up to the top of the first GiB, where a range can cross into the next alias.
    const TOP: (u64, u64) = (0x0100_0000, 0x4000_0000);
    /// The hypervisor's image.
    const HV: u32 = 0x0008_0000;
    const BUF: u32 = 0x0200_0000;

    fn copy(src: u32, dst: u32, len: u32) -> Block {
        Block {
            ti: ti::SRC_INC | ti::DEST_INC,
            source: src,
            dest: dst,
            len,
            stride: 0,
            next: 0,
        }
    }

    #[test]
    fn registers_follow_the_channel_layout() {
        assert_eq!(register(0x000, 4, true, 11), Register::Status(0));
        assert_eq!(
            register(0x504, 4, true, 11),
            Register::BlockAddress {
                channel: 5,
                next: false
            }
        );
        assert_eq!(
            register(0x51c, 4, false, 11),
            Register::BlockAddress {
                channel: 5,
                next: true
            }
        );
        assert_eq!(register(0x51c, 4, true, 11), Register::Refuse);
        assert_eq!(register(0x508, 4, false, 11), Register::Read);
        assert_eq!(register(0x508, 4, true, 11), Register::Refuse);
        assert_eq!(register(0x520, 4, true, 11), Register::Write);
        assert_eq!(register(0x524, 4, false, 11), Register::Refuse);
        // The BCM2711's DMA4 channels: readable, never written.
        assert_eq!(register(0xb04, 4, true, 11), Register::Refuse);
        assert_eq!(register(0xb00, 4, false, 11), Register::Read);
        assert_eq!(
            register(0xb04, 4, true, 15),
            Register::BlockAddress {
                channel: 11,
                next: false
            }
        );
        assert_eq!(register(reg::ENABLE, 4, true, 11), Register::Write);
        assert_eq!(register(reg::INT_STATUS, 4, true, 11), Register::Refuse);
        assert_eq!(register(reg::INT_STATUS, 4, false, 11), Register::Read);
        assert_eq!(register(0xf00, 4, false, 11), Register::Refuse);
        assert_eq!(register(0x004, 8, true, 11), Register::Refuse);
        assert_eq!(register(0x006, 4, true, 11), Register::Refuse);
    }

    #[test]
    fn a_copy_inside_guest_ram_passes_through_each_alias() {
        for alias in [0, 0x4000_0000, 0x8000_0000, 0xc000_0000] {
            assert_eq!(
                REACH.check(0, &copy(alias | BUF, alias | (BUF + 0x1000), 4096)),
                Ok(())
            );
        }
    }

    #[test]
    fn a_copy_from_or_to_the_hypervisor_is_refused_through_each_alias() {
        for alias in [0, 0x4000_0000, 0x8000_0000, 0xc000_0000] {
            assert_eq!(
                REACH.check(0x40, &copy(alias | HV, BUF, 64)),
                Err(Refusal::Source(0x40))
            );
            assert_eq!(
                REACH.check(0x40, &copy(BUF, alias | HV, 64)),
                Err(Refusal::Dest(0x40))
            );
        }
        // Starting in guest RAM and running past its end, or just below its start.
        assert!(REACH.check(0, &copy(BUF, (RAM.1 - 32) as u32, 64)).is_err());
        assert!(REACH.check(0, &copy((RAM.0 - 4) as u32, BUF, 8)).is_err());
        // Crossing from one alias window into the next wraps to the hypervisor at 0, even
        // where guest RAM reaches the top of the window.
        let top = Reach { ram: TOP, ..REACH };
        assert_eq!(top.check(0, &copy(0x3fff_ffe0, BUF, 32)), Ok(()));
        assert!(top.check(0, &copy(0x3fff_fff0, BUF, 32)).is_err());
        assert!(top.check(0, &copy(BUF, 0xbfff_fff0, 32)).is_err());
    }

    #[test]
    fn two_d_rows_and_strides_are_bounded() {
        // 16 rows of 256 bytes, 256 apart (stride 0): inside.
        let mut b = copy(BUF, BUF + 0x10_0000, (15 << 16) | 256);
        b.ti |= ti::TDMODE;
        assert_eq!(REACH.check(0, &b), Ok(()));
        // The same rows walking back 32 KiB each: from the bottom of guest RAM into the
        // hypervisor below it.
        b.source = (RAM.0 + 0x1000) as u32;
        b.stride = (-32768i16) as u16 as u32;
        b.len = (1000 << 16) | 256;
        assert_eq!(REACH.check(0, &b), Err(Refusal::Source(0)));
        // The destination's stride (high half) checked as well.
        b.source = BUF;
        b.dest = (RAM.1 - 0x10_0000) as u32;
        b.stride = 0x7fff << 16;
        assert_eq!(REACH.check(0, &b), Err(Refusal::Dest(0)));
        // Without TDMODE the same length register is one 1-D length: 65 MB, refused from the
        // top of RAM.
        b.ti &= !ti::TDMODE;
        b.stride = 0;
        b.dest = (RAM.1 - 0x1000) as u32;
        assert_eq!(REACH.check(0, &b), Err(Refusal::Dest(0)));
    }

    #[test]
    fn peripherals_only_through_the_fifo_allow_list() {
        // SDHOST's data FIFO, fixed address, into guest RAM: passes.
        let mut b = copy(FIFO, BUF, 512);
        b.ti = ti::DEST_INC;
        assert_eq!(REACH.check(0, &b), Ok(()));
        // Incrementing through the FIFO's neighbours, or any other peripheral register (the
        // mailbox, the DMA engine itself, the watchdog): refused.
        b.ti |= ti::SRC_INC;
        assert!(REACH.check(0, &b).is_err());
        for reg in [0x7e00_b880u32, 0x7e00_7004, 0x7e10_0024] {
            let mut b = copy(BUF, reg, 4);
            b.ti = ti::SRC_INC;
            assert!(REACH.check(0, &b).is_err(), "{reg:#x}");
        }
        // A 128-bit beat at the FIFO would touch its neighbours.
        let mut b = copy(FIFO, BUF, 512);
        b.ti = ti::DEST_INC | ti::SRC_WIDTH;
        assert!(REACH.check(0, &b).is_err());
    }

    #[test]
    fn ignored_ends_and_odd_lengths() {
        let mut b = copy(HV, BUF, 64);
        b.ti |= ti::SRC_IGNORE;
        assert_eq!(REACH.check(0, &b), Ok(()));
        assert_eq!(
            REACH.check(0, &copy(BUF, BUF + 64, 6)),
            Err(Refusal::Length(0))
        );
    }

    /// Guest memory for the chain tests: blocks by ARM physical address.
    fn memory(blocks: &[(u32, Block)]) -> HashMap<u64, [u32; 8]> {
        blocks
            .iter()
            .map(|(at, b)| ((at & 0x3fff_ffff) as u64, b.words()))
            .collect()
    }

    fn copy_bus(i: usize) -> u32 {
        0xc000_1000 + 32 * i as u32
    }

    #[test]
    fn a_chain_is_copied_with_its_links_rewritten() {
        let a = 0xc100_0000;
        let b = 0xc100_0040;
        let mut first = copy(BUF, BUF + 0x1000, 64);
        first.next = b;
        let second = copy(BUF, BUF + 0x2000, 64);
        let mem = memory(&[(a, first), (b, second)]);
        let mut c = Chain::new();
        c.copy(a, &REACH, |pa| mem[&pa], copy_bus).unwrap();
        assert_eq!(c.len, 2);
        assert_eq!(c.origin[..2], [a, b]);
        assert_eq!(c.blocks[0][5], copy_bus(1));
        assert_eq!(c.blocks[1][5], 0);
        // The guest reads its own addresses back from the block registers.
        assert_eq!(c.guest_view(copy_bus(1), copy_bus(0)), b);
        assert_eq!(c.guest_view(copy_bus(0), copy_bus(0)), a);
        assert_eq!(c.guest_view(0, copy_bus(0)), 0);
        assert_eq!(c.guest_view(copy_bus(2), copy_bus(0)), copy_bus(2));
        // A cycle (audio), closed through another alias of the first block.
        let mut second = second;
        second.next = a & 0x3fff_ffff;
        let mem = memory(&[(a, first), (b, second)]);
        c.copy(a, &REACH, |pa| mem[&pa], copy_bus).unwrap();
        assert_eq!((c.len, c.blocks[1][5]), (2, copy_bus(0)));
    }

    #[test]
    fn a_chain_through_hypervisor_memory_is_refused() {
        let a = 0xc100_0000;
        let mut first = copy(BUF, BUF + 0x1000, 64);
        first.next = 0xc000_0000 | HV;
        let mem = memory(&[(a, first)]);
        let mut c = Chain::new();
        assert_eq!(
            c.copy(a, &REACH, |pa| mem[&pa], copy_bus),
            Err(Refusal::BlockOutsideRam(0xc000_0000 | HV))
        );
        assert_eq!(c.len, 0);
        // The first block itself in the hypervisor, or misaligned.
        assert_eq!(
            c.copy(HV, &REACH, |_| unreachable!(), copy_bus),
            Err(Refusal::BlockOutsideRam(HV))
        );
        assert_eq!(
            c.copy(a + 8, &REACH, |_| unreachable!(), copy_bus),
            Err(Refusal::Misaligned(a + 8))
        );
        // A second bad block after a good one; and a chain too long.
        let mut mem = HashMap::new();
        for i in 0..=MAX_BLOCKS as u32 {
            let mut b = copy(BUF, BUF + 0x1000, 64);
            b.next = a + 32 * (i + 1);
            mem.insert(((a + 32 * i) & 0x3fff_ffff) as u64, b.words());
        }
        assert_eq!(
            c.copy(a, &REACH, |pa| mem[&pa], copy_bus),
            Err(Refusal::TooLong)
        );
    }

    /// What the engine touches for one block: every bus address read or written. `hardware`:
    /// beats of the configured width, YLENGTH + 1 rows; else QEMU's model: 32-bit words
    /// whatever the width, YLENGTH rows. Each end moves on its own.
    fn touched(b: &Block, hardware: bool) -> Vec<u64> {
        let two_d = b.ti & ti::TDMODE != 0;
        let (xlen, rows, strides) = if two_d {
            (
                (b.len & 0xffff) as i64,
                ((b.len >> 16) & 0x3fff) as i64 + hardware as i64,
                [b.stride as i16 as i64, (b.stride >> 16) as i16 as i64],
            )
        } else {
            (b.len as i64, 1, [0, 0])
        };
        let ends = [
            (
                b.source,
                ti::SRC_INC,
                ti::SRC_WIDTH,
                ti::SRC_IGNORE,
                strides[0],
            ),
            (
                b.dest,
                ti::DEST_INC,
                ti::DEST_WIDTH,
                ti::DEST_IGNORE,
                strides[1],
            ),
        ];
        let mut out = Vec::new();
        for (addr, inc, wide, ignore, stride) in ends {
            if b.ti & ignore != 0 {
                continue;
            }
            let w: i64 = if hardware && b.ti & wide != 0 { 16 } else { 4 };
            let mut p = addr as i64;
            for _ in 0..rows {
                let mut x = 0;
                while x < xlen {
                    out.extend((p..p + w).map(|a| a as u64));
                    if b.ti & inc != 0 {
                        p += w;
                    }
                    x += w;
                }
                p += stride;
            }
        }
        out
    }

    fn in_guest_ram(bus: u64, ram: (u64, u64)) -> bool {
        !PERIPHERAL_WINDOW.contains(&bus)
            && bus < 1 << 32
            && (ram.0..ram.1).contains(&(bus & 0x3fff_ffff))
    }

    fn addr() -> impl Strategy<Value = u32> {
        let near = |edge: u64| {
            (
                0u32..4,
                (edge as u32).saturating_sub(0x400)..edge as u32 + 0x400,
            )
                .prop_map(|(alias, o)| (alias << 30) | o)
        };
        prop_oneof![
            near(RAM.0),
            near(RAM.1),
            near(TOP.1),
            Just(FIFO),
            any::<u32>()
        ]
    }

    /// Strides that move rows a little either way (or anything).
    fn stride() -> impl Strategy<Value = u32> {
        prop_oneof![
            (-64i16..64, -64i16..64).prop_map(|(d, s)| ((d as u16 as u32) << 16) | s as u16 as u32),
            any::<u32>(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// A block that passes touches guest RAM and the allowed FIFO only, however its words
        /// are set (the engine's own behaviour simulated byte by byte).
        #[test]
        fn a_passing_block_touches_only_guest_ram_and_allowed_fifos(
            ti_bits in prop_oneof![any::<u32>(), 0u32..0x1000],
            top in any::<bool>(),
            source in addr(),
            dest in addr(),
            xlen in 0u32..64,
            ylen in 0u32..16,
            stride in stride(),
            two_d in any::<bool>(),
        ) {
            let mut b = Block { ti: ti_bits & !ti::TDMODE, source, dest, len: xlen * 4, stride, next: 0 };
            if two_d {
                b.ti |= ti::TDMODE;
                b.len = (ylen << 16) | (xlen * 4);
            }
            let (reach, ram) = if top {
                (Reach { ram: TOP, ..REACH }, TOP)
            } else {
                (REACH, RAM)
            };
            if reach.check(0, &b).is_ok() {
                for hardware in [false, true] {
                    for a in touched(&b, hardware) {
                        prop_assert!(in_guest_ram(a, ram) || (a as u32 & !3) == FIFO, "{b:x?} touches {a:#x}");
                    }
                }
            }
        }

        /// Any chain of random words: a copy either is refused and empty, or every block in it
        /// passes the check and every link points into the copy.
        #[test]
        fn any_chain_is_refused_or_copied_checked(
            words in proptest::collection::vec(any::<[u32; 8]>(), 1..6),
            links in proptest::collection::vec(0usize..7, 6),
        ) {
            let base = 0xc100_0000u32;
            let mut mem = HashMap::new();
            for (i, w) in words.iter().enumerate() {
                let mut w = *w;
                // Link to another block of the set, to 0, or leave the random word.
                w[5] = match links[i] {
                    k if k < words.len() => base + 32 * k as u32,
                    6 => 0,
                    _ => w[5],
                };
                mem.insert(((base + 32 * i as u32) & 0x3fff_ffff) as u64, w);
            }
            let mut c = Chain::new();
            let read = |pa: u64| mem.get(&pa).copied().unwrap_or([0; 8]);
            match c.copy(base, &REACH, read, copy_bus) {
                Err(_) => prop_assert_eq!(c.len, 0),
                Ok(()) => {
                    for i in 0..c.len {
                        let b = Block::from_words(c.blocks[i]);
                        prop_assert!(b.next == 0 || (0..c.len).any(|j| copy_bus(j) == b.next));
                        let original = Block { next: 0, ..b };
                        prop_assert!(REACH.check(0, &original).is_ok());
                    }
                }
            }
        }
    }
}
