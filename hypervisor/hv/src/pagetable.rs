//! VMSAv8-64 descriptors for the EL2 stage-1 and the stage-2 tables (4 KiB granule).
//!
//! Pure functions, so the bit layouts are checked on the host.

/// Valid block descriptor (levels 1 and 2).
pub const BLOCK: u64 = 0b01;
/// Valid table descriptor / level-3 page.
pub const TABLE: u64 = 0b11;
/// Access flag.
pub const AF: u64 = 1 << 10;
/// Inner shareable.
pub const SH_INNER: u64 = 0b11 << 8;
/// Execute never (EL2 stage 1: XN; stage 2: XN[1] = never for any EL).
pub const XN: u64 = 1 << 54;

/// Size covered by a level-1 block.
pub const L1_BLOCK: u64 = 1 << 30;
/// Size covered by a level-2 block.
pub const L2_BLOCK: u64 = 1 << 21;

/// MAIR index of Device-nGnRE at EL2.
pub const MAIR_DEVICE: u64 = 0;
/// MAIR index of Normal write-back at EL2.
pub const MAIR_NORMAL: u64 = 1;
/// MAIR_EL2 value matching the indices above.
pub const MAIR_EL2: u64 = 0x04 | (0xff << 8);

/// EL2 stage-1 block: normal memory, read/write, executable.
pub const fn el2_normal(pa: u64) -> u64 {
    pa | BLOCK | AF | SH_INNER | (MAIR_NORMAL << 2)
}

/// EL2 stage-1 block: device memory, never executable.
pub const fn el2_device(pa: u64) -> u64 {
    pa | BLOCK | AF | XN | (MAIR_DEVICE << 2)
}

/// Stage-2 MemAttr for Device-nGnRE.
const S2_DEVICE: u64 = 0b0001 << 2;
/// Stage-2 MemAttr for Normal, inner and outer write-back.
const S2_NORMAL: u64 = 0b1111 << 2;
/// Stage-2 read and write access.
const S2AP_RW: u64 = 0b11 << 6;

/// Stage-2 block mapping guest RAM: normal memory, read/write, executable.
pub const fn s2_ram_block(pa: u64) -> u64 {
    pa | BLOCK | AF | SH_INNER | S2_NORMAL | S2AP_RW
}

/// Stage-2 block mapping pass-through devices: device memory, read/write, never executable.
pub const fn s2_device_block(pa: u64) -> u64 {
    pa | BLOCK | AF | S2_DEVICE | S2AP_RW | XN
}

/// Stage-2 table descriptor.
pub const fn table(pa: u64) -> u64 {
    pa | TABLE
}

/// Output address of a descriptor.
pub const fn output_address(desc: u64) -> u64 {
    desc & 0x0000_ffff_ffff_f000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_bits() {
        let d = s2_ram_block(0x4120_0000);
        assert_eq!(d & 0b11, BLOCK);
        assert_eq!(output_address(d), 0x4120_0000);
        assert_eq!((d >> 2) & 0xf, 0b1111, "normal write-back");
        assert_eq!((d >> 6) & 0b11, 0b11, "read/write");
        assert_eq!(d & XN, 0, "guest RAM is executable");
        let dev = s2_device_block(0);
        assert_eq!((dev >> 2) & 0xf, 0b0001);
        assert_ne!(dev & XN, 0, "devices never executable");
        assert_eq!(el2_normal(0x4000_0000) & (0b111 << 2), MAIR_NORMAL << 2);
        assert_eq!(table(0x1000) & 0b11, 0b11);
    }
}
