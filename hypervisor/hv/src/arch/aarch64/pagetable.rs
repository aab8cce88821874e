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

/// Stage-2 level-3 page mapping guest RAM.
pub const fn s2_ram_page(pa: u64) -> u64 {
    pa | TABLE | AF | SH_INNER | S2_NORMAL | S2AP_RW
}

/// Stage-2 level-3 page mapping a device: device memory, read/write, never executable.
pub const fn s2_device_page(pa: u64) -> u64 {
    pa | TABLE | AF | S2_DEVICE | S2AP_RW | XN
}

/// Size of a level-3 page.
pub const PAGE: u64 = 1 << 12;
/// Input addresses stage 2 covers (VTCR_EL2.T0SZ = 24).
pub const IPA_LIMIT: u64 = 1 << 40;

/// What a stage-2 mapping holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S2Kind {
    /// Guest RAM: normal write-back memory, executable.
    Ram,
    /// A device the guest is given: device memory, never executable.
    Device,
}

/// Why a stage-2 mapping was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// Start or size is not a multiple of 4 KiB, or the size is zero.
    Unaligned,
    /// The range leaves the 40-bit input address space.
    OutOfRange,
    /// Part of the range is mapped already.
    Overlap,
    /// The table pool is used up.
    NoTables,
    /// Nothing maps the address.
    NotMapped,
    /// The page already has [`MAX_HOLDS`] holds.
    TooManyHolds,
}

/// Stage-2 write permission (S2AP[1]).
const S2AP_W: u64 = 1 << 7;
/// Software bits [58:55] of a stage-2 page descriptor count the holds that keep it read-only.
const HOLDS_SHIFT: u32 = 55;
const HOLDS_MASK: u64 = 0xf << HOLDS_SHIFT;
/// Most holds one page can take.
pub const MAX_HOLDS: u64 = 15;

/// One 4 KiB translation table.
pub type TableWords = [u64; 512];

/// Builds identity stage-2 tables (IPA = PA) from a list of ranges, with the largest blocks
/// that fit each range (1 GiB, 2 MiB, 4 KiB) and nothing outside them.
///
/// The root is level 1: for stage 2 two concatenated tables (40-bit IPA), for the hypervisor's
/// own map ([`Stage2::map_el2`]) one (39-bit VA); lower tables come from `pool`, whose first
/// table lies at physical address `pool_pa`. Pure code over plain
/// arrays, so the hypervisor's tables are checked on the host ([`Stage2::translate`]).
pub struct Stage2<'a> {
    root: &'a mut [u64],
    pool: &'a mut [TableWords],
    pool_pa: u64,
    used: usize,
}

impl<'a> Stage2<'a> {
    /// Empty tables: nothing is mapped.
    pub fn new(root: &'a mut [u64], pool: &'a mut [TableWords], pool_pa: u64) -> Self {
        root.fill(0);
        for t in pool.iter_mut() {
            t.fill(0);
        }
        Self {
            root,
            pool,
            pool_pa,
            used: 0,
        }
    }

    /// Go on adding to tables built earlier with `used` pool tables taken (nothing is cleared:
    /// the tables may be live).
    pub fn resume(
        root: &'a mut [u64],
        pool: &'a mut [TableWords],
        pool_pa: u64,
        used: usize,
    ) -> Self {
        Self {
            root,
            pool,
            pool_pa,
            used,
        }
    }

    /// Tables taken from the pool so far.
    pub fn tables_used(&self) -> usize {
        self.used
    }

    /// The pool table a table descriptor points at.
    fn table_index(&self, desc: u64) -> usize {
        ((output_address(desc) - self.pool_pa) / PAGE) as usize
    }

    /// The next-level table under `desc` (creating it when `desc` is empty).
    fn child(&mut self, desc: u64) -> Result<(usize, u64), MapError> {
        match desc & 0b11 {
            0 => {
                let i = self.used;
                if i >= self.pool.len() {
                    return Err(MapError::NoTables);
                }
                self.used += 1;
                Ok((i, table(self.pool_pa + i as u64 * PAGE)))
            }
            TABLE => Ok((self.table_index(desc), desc)),
            _ => Err(MapError::Overlap),
        }
    }

    /// Map `[base, base + size)` to itself as `kind`.
    pub fn map(&mut self, base: u64, size: u64, kind: S2Kind) -> Result<(), MapError> {
        let block = |pa| match kind {
            S2Kind::Ram => s2_ram_block(pa),
            S2Kind::Device => s2_device_block(pa),
        };
        let page = |pa| match kind {
            S2Kind::Ram => s2_ram_page(pa),
            S2Kind::Device => s2_device_page(pa),
        };
        self.map_with(base, size, true, block, page)
    }

    /// Map `[base, base + size)` to itself in the EL2 stage-1 format as `kind` (these tables
    /// are then the hypervisor's own translation, rooted at one level-1 table).
    pub fn map_el2(&mut self, base: u64, size: u64, kind: El2Kind) -> Result<(), MapError> {
        // Code is mapped page by page even where a block would fit: its bounds are the
        // linker's, and a block would make the data beside it executable.
        let blocks = kind != El2Kind::Code;
        self.map_with(
            base,
            size,
            blocks,
            |pa| el2_desc(pa, kind, BLOCK),
            |pa| el2_desc(pa, kind, TABLE),
        )
    }

    /// The input address space the root covers (1 GiB per entry).
    fn limit(&self) -> u64 {
        self.root.len() as u64 * L1_BLOCK
    }

    fn map_with(
        &mut self,
        base: u64,
        size: u64,
        blocks: bool,
        block: impl Fn(u64) -> u64,
        page: impl Fn(u64) -> u64,
    ) -> Result<(), MapError> {
        if size == 0 || !base.is_multiple_of(PAGE) || !size.is_multiple_of(PAGE) {
            return Err(MapError::Unaligned);
        }
        let end = base.checked_add(size).ok_or(MapError::OutOfRange)?;
        if end > self.limit() {
            return Err(MapError::OutOfRange);
        }
        let mut at = base;
        while at < end {
            let left = end - at;
            let i1 = (at / L1_BLOCK) as usize;
            if blocks && at.is_multiple_of(L1_BLOCK) && left >= L1_BLOCK && self.root[i1] == 0 {
                self.root[i1] = block(at);
                at += L1_BLOCK;
                continue;
            }
            let (t2, d1) = self.child(self.root[i1])?;
            self.root[i1] = d1;
            let i2 = ((at / L2_BLOCK) % 512) as usize;
            let slot = self.pool[t2][i2];
            if blocks && at.is_multiple_of(L2_BLOCK) && left >= L2_BLOCK && slot == 0 {
                self.pool[t2][i2] = block(at);
                at += L2_BLOCK;
                continue;
            }
            let (t3, d2) = self.child(slot)?;
            self.pool[t2][i2] = d2;
            let i3 = ((at / PAGE) % 512) as usize;
            if self.pool[t3][i3] != 0 {
                return Err(MapError::Overlap);
            }
            self.pool[t3][i3] = page(at);
            at += PAGE;
        }
        Ok(())
    }

    /// Map `[base, base + size)` to itself as `kind`, except the `holes` (base, size), which
    /// stay unmapped: each hole must be whole pages, sorted, and inside the range.
    pub fn map_with_holes(
        &mut self,
        base: u64,
        size: u64,
        kind: S2Kind,
        holes: impl IntoIterator<Item = (u64, u64)>,
    ) -> Result<(), MapError> {
        let end = base.checked_add(size).ok_or(MapError::OutOfRange)?;
        let mut at = base;
        for (h, len) in holes {
            let h_end = h.checked_add(len).ok_or(MapError::OutOfRange)?;
            if h < at || h_end > end {
                return Err(MapError::Overlap);
            }
            if h > at {
                self.map(at, h - at, kind)?;
            }
            at = h_end;
        }
        if end > at {
            self.map(at, end - at, kind)?;
        }
        Ok(())
    }

    /// Hold the RAM page at `ipa` read-only for one more holder (it stays readable and
    /// executable); a block mapping it is split into pages first, with the same output and
    /// attributes. The caller invalidates the TLBs (the MMU's and the SMMU's) after its edits.
    pub fn hold(&mut self, ipa: u64) -> Result<(), MapError> {
        let (t, i) = self.page_slot(ipa)?;
        let d = self.pool[t][i];
        let n = (d & HOLDS_MASK) >> HOLDS_SHIFT;
        if n == MAX_HOLDS {
            return Err(MapError::TooManyHolds);
        }
        self.pool[t][i] = (d & !HOLDS_MASK & !S2AP_W) | ((n + 1) << HOLDS_SHIFT);
        Ok(())
    }

    /// Drop one hold of the page at `ipa`; returns whether it is writable again (no holds left).
    pub fn release(&mut self, ipa: u64) -> Result<bool, MapError> {
        let (t, i) = self.page_slot(ipa)?;
        let d = self.pool[t][i];
        let n = ((d & HOLDS_MASK) >> HOLDS_SHIFT).saturating_sub(1);
        let mut next = (d & !HOLDS_MASK) | (n << HOLDS_SHIFT);
        if n == 0 {
            next |= S2AP_W;
        }
        self.pool[t][i] = next;
        Ok(n == 0)
    }

    /// How many holds keep the page at `ipa` read-only (0 for a page in a block, or unmapped).
    pub fn holds(&self, ipa: u64) -> u64 {
        match self.translate(ipa) {
            Some((d, PAGE)) => (d & HOLDS_MASK) >> HOLDS_SHIFT,
            _ => 0,
        }
    }

    /// The level-3 table and index that map `ipa`, splitting the blocks above it.
    fn page_slot(&mut self, ipa: u64) -> Result<(usize, usize), MapError> {
        if ipa >= self.limit() {
            return Err(MapError::OutOfRange);
        }
        let i1 = (ipa / L1_BLOCK) as usize;
        let d1 = self.split(self.root[i1], ipa & !(L1_BLOCK - 1), L2_BLOCK)?;
        self.root[i1] = d1;
        let t2 = self.table_index(d1);
        let i2 = ((ipa / L2_BLOCK) % 512) as usize;
        let d2 = self.split(self.pool[t2][i2], ipa & !(L2_BLOCK - 1), PAGE)?;
        self.pool[t2][i2] = d2;
        let t3 = self.table_index(d2);
        let i3 = ((ipa / PAGE) % 512) as usize;
        if self.pool[t3][i3] & 0b11 != TABLE {
            return Err(MapError::NotMapped);
        }
        Ok((t3, i3))
    }

    /// `desc` as a table descriptor: a table already, or a block at `base` replaced by a new
    /// table of 512 entries of `child` size that map the same addresses with the same
    /// attributes. (The entry changes from a valid block to a valid table of the same
    /// translation; the caller's TLB invalidation follows.)
    fn split(&mut self, desc: u64, base: u64, child: u64) -> Result<u64, MapError> {
        match desc & 0b11 {
            TABLE => Ok(desc),
            BLOCK => {
                let i = self.used;
                if i >= self.pool.len() {
                    return Err(MapError::NoTables);
                }
                self.used += 1;
                let attrs = desc & !0x0000_ffff_ffff_f000 & !0b11;
                let valid = if child == PAGE { TABLE } else { BLOCK };
                for (k, e) in self.pool[i].iter_mut().enumerate() {
                    *e = (base + k as u64 * child) | attrs | valid;
                }
                Ok(table(self.pool_pa + i as u64 * PAGE))
            }
            _ => Err(MapError::NotMapped),
        }
    }

    /// The descriptor that maps `ipa`, and the size of the block or page it maps: what the
    /// MMU's walk (and the SMMU's, which shares these tables) finds.
    pub fn translate(&self, ipa: u64) -> Option<(u64, u64)> {
        if ipa >= self.limit() {
            return None;
        }
        let d1 = self.root[(ipa / L1_BLOCK) as usize];
        match d1 & 0b11 {
            BLOCK => return Some((d1, L1_BLOCK)),
            TABLE => {}
            _ => return None,
        }
        let d2 = self.pool[self.table_index(d1)][((ipa / L2_BLOCK) % 512) as usize];
        match d2 & 0b11 {
            BLOCK => return Some((d2, L2_BLOCK)),
            TABLE => {}
            _ => return None,
        }
        let d3 = self.pool[self.table_index(d2)][((ipa / PAGE) % 512) as usize];
        (d3 & 0b11 == TABLE).then_some((d3, PAGE))
    }
}

/// What the hypervisor's own (EL2 stage-1) mapping of a range allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum El2Kind {
    /// The hypervisor's code: read-only, executable.
    Code,
    /// Read-only data: read-only, never executable.
    ReadOnly,
    /// Data, stacks, tables and guest RAM: read/write, never executable.
    ReadWrite,
    /// Device registers: device memory, read/write, never executable.
    Device,
}

/// AP[2]: read-only (EL2 stage 1).
pub const AP_RO: u64 = 1 << 7;

/// An EL2 stage-1 descriptor of `kind` for `pa`; `valid` is BLOCK (levels 1, 2) or TABLE (a
/// level-3 page). Only code is executable, and nothing executable is writable.
pub const fn el2_desc(pa: u64, kind: El2Kind, valid: u64) -> u64 {
    let normal = pa | valid | AF | SH_INNER | (MAIR_NORMAL << 2);
    match kind {
        El2Kind::Code => normal | AP_RO,
        El2Kind::ReadOnly => normal | AP_RO | XN,
        El2Kind::ReadWrite => normal | XN,
        El2Kind::Device => pa | valid | AF | XN | (MAIR_DEVICE << 2),
    }
}

/// Whether a stage-2 descriptor maps device memory (never executable).
pub const fn is_device(desc: u64) -> bool {
    (desc >> 2) & 0xf == 0b0001 && desc & XN != 0
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
        let code = el2_desc(0x4008_0000, El2Kind::Code, TABLE);
        assert_eq!(code & (0b111 << 2), MAIR_NORMAL << 2);
        assert!(
            code & AP_RO != 0 && code & XN == 0,
            "code: read-only, executable"
        );
        let dev = el2_desc(0x900_0000, El2Kind::Device, BLOCK);
        assert_eq!(dev & (0b111 << 2), MAIR_DEVICE << 2);
        assert!(dev & XN != 0);
        assert_eq!(table(0x1000) & 0b11, 0b11);
        assert!(is_device(s2_device_page(0x900_0000)));
        assert!(!is_device(s2_ram_page(0x4100_0000)));
    }

    const POOL_PA: u64 = 0x4080_0000;

    /// QEMU virt's guest devices (boards/qemu-virt/board.toml) and 1 GiB of RAM above the
    /// hypervisor's 16 MiB.
    const VIRT: [(u64, u64, S2Kind); 9] = [
        (0x0800_0000, 0x1_0000, S2Kind::Device),
        (0x080a_0000, 0x8_0000, S2Kind::Device),
        (0x0900_0000, 0x1000, S2Kind::Device),
        (0x0901_0000, 0x1000, S2Kind::Device),
        (0x0903_0000, 0x1000, S2Kind::Device),
        (0x1000_0000, 0x2eff_0000, S2Kind::Device),
        (0x3eff_0000, 0x1_0000, S2Kind::Device),
        (0x3f00_0000, 0x100_0000, S2Kind::Device),
        (0x4100_0000, 0x3f00_0000, S2Kind::Ram),
    ];

    #[test]
    fn maps_exactly_the_listed_pages() {
        let mut root = [0u64; 1024];
        let mut pool = [[0u64; 512]; 8];
        let mut s2 = Stage2::new(&mut root, &mut pool, POOL_PA);
        for (base, size, kind) in VIRT {
            s2.map(base, size, kind).unwrap();
        }
        assert!(s2.tables_used() <= 8);
        for (base, size, kind) in VIRT {
            for ipa in [base, (base + size / 2) & !(PAGE - 1), base + size - PAGE] {
                let (d, size) = s2.translate(ipa).unwrap();
                assert_eq!(output_address(d), ipa & !(size - 1), "{ipa:#x}");
                assert_eq!(is_device(d), kind == S2Kind::Device, "{ipa:#x}");
            }
        }
        // Holes: fw_cfg, the SMMU, virtio-mmio, flash, the hypervisor and its tables, past RAM.
        for ipa in [
            0x0,
            0x0902_0000,
            0x0905_0000,
            0x0a00_0000,
            0x0801_0000,
            0x0812_0000,
            0x4000_0000,
            POOL_PA,
            0x40ff_f000,
            0x8000_0000,
        ] {
            assert_eq!(s2.translate(ipa), None, "{ipa:#x} must be unmapped");
        }
    }

    #[test]
    fn held_pages_are_read_only_and_splits_keep_every_translation() {
        let mut root = [0u64; 1024];
        let mut pool = [[0u64; 512]; 8];
        let mut s2 = Stage2::new(&mut root, &mut pool, POOL_PA);
        // Two GiB of RAM from 1 GiB: 1 GiB blocks, which a hold splits twice.
        s2.map(0x4000_0000, 0x8000_0000, S2Kind::Ram).unwrap();
        let before: Vec<_> = (0..0x800u64)
            .map(|k| 0x4000_0000 + k * 0x10_0000 + 0x3000)
            .map(|ipa| {
                (
                    ipa,
                    s2.translate(ipa)
                        .map(|(d, sz)| (output_address(d) + (ipa & (sz - 1)), d & 0xfc)),
                )
            })
            .collect();
        let page = 0x7654_3000;
        s2.hold(page).unwrap();
        s2.hold(page).unwrap();
        assert_eq!(s2.tables_used(), 2);
        let (d, size) = s2.translate(page).unwrap();
        assert_eq!((size, output_address(d), d & S2AP_W), (PAGE, page, 0));
        assert_eq!(s2.holds(page), 2);
        // Every other address translates as before, with the same attributes.
        for (ipa, was) in &before {
            let now = s2
                .translate(*ipa)
                .map(|(d, sz)| (output_address(d) + (ipa & (sz - 1)), d & 0xfc));
            if *ipa & !(PAGE - 1) != page {
                assert_eq!(&now, was, "{ipa:#x}");
            }
        }
        let (n, _) = s2.translate(page + PAGE).unwrap();
        assert_ne!(n & S2AP_W, 0, "the neighbour stays writable");
        assert_eq!(s2.release(page), Ok(false));
        assert_eq!(s2.release(page), Ok(true));
        assert_ne!(s2.translate(page).unwrap().0 & S2AP_W, 0);
        assert_eq!(s2.holds(page), 0);
        // Counted up to the limit, and only where something is mapped.
        for _ in 0..MAX_HOLDS {
            s2.hold(page).unwrap();
        }
        assert_eq!(s2.hold(page), Err(MapError::TooManyHolds));
        assert_eq!(s2.hold(0x1000), Err(MapError::NotMapped));
        assert_eq!(s2.hold(IPA_LIMIT), Err(MapError::OutOfRange));
    }

    #[test]
    fn holes_stay_unmapped() {
        let mut root = [0u64; 1024];
        let mut pool = [[0u64; 512]; 4];
        let mut s2 = Stage2::new(&mut root, &mut pool, POOL_PA);
        let holes = (0..4).map(|k| (0x080a_0000 + k * 0x2_0000, PAGE));
        s2.map_with_holes(0x080a_0000, 0x8_0000, S2Kind::Device, holes)
            .unwrap();
        for k in 0..4u64 {
            let frame = 0x080a_0000 + k * 0x2_0000;
            assert_eq!(s2.translate(frame), None);
            assert_eq!(s2.translate(frame + 0x78), None);
            assert!(s2.translate(frame + PAGE).is_some());
            assert!(s2.translate(frame + 0x1_0000).is_some(), "SGI_base frame");
        }
        assert_eq!(s2.translate(0x0812_0000), None);
        let mut root = [0u64; 1024];
        let mut pool = [[0u64; 512]; 4];
        let mut s2 = Stage2::new(&mut root, &mut pool, POOL_PA);
        assert_eq!(
            s2.map_with_holes(0x1000_0000, 0x2000, S2Kind::Device, [(0x1000_2000, PAGE)]),
            Err(MapError::Overlap),
            "a hole outside the range"
        );
    }

    #[test]
    fn refuses_bad_ranges() {
        let mut root = [0u64; 1024];
        let mut pool = [[0u64; 512]; 2];
        let mut s2 = Stage2::new(&mut root, &mut pool, POOL_PA);
        assert_eq!(s2.map(0x1000, 0, S2Kind::Device), Err(MapError::Unaligned));
        assert_eq!(
            s2.map(0x1001, 0x1000, S2Kind::Device),
            Err(MapError::Unaligned)
        );
        assert_eq!(
            s2.map(IPA_LIMIT - PAGE, 2 * PAGE, S2Kind::Ram),
            Err(MapError::OutOfRange)
        );
        assert_eq!(
            s2.map(!(PAGE - 1), PAGE, S2Kind::Ram),
            Err(MapError::OutOfRange)
        );
        s2.map(0x0900_0000, 0x1000, S2Kind::Device).unwrap();
        assert_eq!(
            s2.map(0x0900_0000, 0x1000, S2Kind::Device),
            Err(MapError::Overlap)
        );
        assert_eq!(
            s2.map(0x0880_0000, 0x100_0000, S2Kind::Device),
            Err(MapError::Overlap)
        );
        // A 1 GiB block, then a page inside it.
        s2.map(0x8000_0000, L1_BLOCK, S2Kind::Ram).unwrap();
        assert_eq!(
            s2.map(0x8000_0000, PAGE, S2Kind::Ram),
            Err(MapError::Overlap)
        );
        assert_eq!(
            s2.map(0x1_0000_1000, PAGE, S2Kind::Ram),
            Err(MapError::NoTables)
        );
    }

    #[test]
    fn el2_map_is_write_xor_execute() {
        // The hypervisor's own map: one level-1 root (39-bit VA), code page by page.
        let mut root = [0u64; 512];
        let mut pool = [[0u64; 512]; 8];
        let mut m = Stage2::new(&mut root, &mut pool, POOL_PA);
        m.map_el2(0x0, L1_BLOCK, El2Kind::Device).unwrap();
        m.map_el2(0x4008_0000, 0x20_0000, El2Kind::Code).unwrap();
        m.map_el2(0x4028_0000, 0x1_0000, El2Kind::ReadOnly).unwrap();
        m.map_el2(0x4029_0000, 0x60_0000, El2Kind::ReadWrite)
            .unwrap();
        m.map_el2(0x4100_0000, 0x3f00_0000, El2Kind::ReadWrite)
            .unwrap();
        let mut ipa = 0;
        while ipa < 2 * L1_BLOCK {
            if let Some((d, size)) = m.translate(ipa) {
                let writable = d & AP_RO == 0;
                let executable = d & XN == 0;
                assert!(
                    !(writable && executable),
                    "{ipa:#x} is writable and executable"
                );
                assert_eq!(
                    executable,
                    (0x4008_0000..0x4028_0000).contains(&ipa),
                    "{ipa:#x}"
                );
                if executable {
                    assert_eq!(size, PAGE, "code is mapped by pages");
                }
            }
            ipa += PAGE;
        }
        // The hole below the image (reservation start) and past the image stay unmapped.
        assert_eq!(m.translate(0x4000_0000), None);
        assert_eq!(m.translate(0x4089_0000), None);
        assert_eq!(m.translate(2 * L1_BLOCK), None);
        assert_eq!(
            m.map_el2(0x4008_0000, PAGE, El2Kind::ReadWrite),
            Err(MapError::Overlap)
        );
    }

    proptest::proptest! {
        /// Random disjoint ranges: every page inside one is mapped as its kind, every other page
        /// of the span is unmapped.
        #[test]
        fn translation_matches_the_ranges(
            spans in proptest::collection::vec((0u64..64, 1u64..600, proptest::bool::ANY), 1..6)
        ) {
            let mut root = [0u64; 1024];
            let mut pool = vec![[0u64; 512]; 64];
            let mut s2 = Stage2::new(&mut root, &mut pool, POOL_PA);
            let mut ranges = Vec::new();
            let mut at = 0x3fe0_0000u64;
            for (gap, pages, dev) in spans {
                at += gap * 37 * PAGE;
                let kind = if dev { S2Kind::Device } else { S2Kind::Ram };
                s2.map(at, pages * 7 * PAGE, kind).unwrap();
                ranges.push((at, at + pages * 7 * PAGE, kind));
                at += pages * 7 * PAGE;
            }
            let mut ipa = 0x3fe0_0000u64 - 4 * PAGE;
            while ipa < at + 4 * PAGE {
                let want = ranges.iter().find(|(s, e, _)| (*s..*e).contains(&ipa));
                match (s2.translate(ipa), want) {
                    (None, None) => {}
                    (Some((d, size)), Some((_, _, kind))) => {
                        proptest::prop_assert_eq!(output_address(d), ipa & !(size - 1));
                        proptest::prop_assert_eq!(is_device(d), *kind == S2Kind::Device);
                    }
                    (got, want) => proptest::prop_assert!(false, "{ipa:#x}: {got:?} vs {want:?}"),
                }
                ipa += PAGE;
            }
        }
    }
}
