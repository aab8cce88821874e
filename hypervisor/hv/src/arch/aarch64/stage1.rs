//! A walker for the guest's own stage-1 tables (the user half, TTBR0_EL1), to find every page a
//! guest process may execute: the code the hypervisor measures as the caller's identity.
//!
//! The walk reads the guest's descriptors through [`GuestRam`], which the hypervisor answers
//! only for guest RAM, so a table pointer aimed at a device or at the hypervisor ends the walk
//! with an error instead of a read. Pure code over that trait, tested on the host.

/// Size of a page (the 4 KiB granule, the only one Gatewarden's guests use).
pub const PAGE: u64 = 4096;

/// Reads 8-byte words of guest RAM by intermediate physical address.
pub trait GuestRam {
    /// The word at `ipa` (8-byte aligned), or `None` if `ipa` is not guest RAM.
    fn read_u64(&self, ipa: u64) -> Option<u64>;
    /// Whether the page at `ipa` is guest RAM (executable code can only be there).
    fn is_ram(&self, ipa: u64) -> bool;
}

/// Why a walk was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalkError {
    /// TCR_EL1 asks for a granule, size or format other than 4 KiB pages, 25..=48-bit VAs.
    Unsupported,
    /// A table lies outside guest RAM.
    BadTable,
    /// More executable pages than the caller's limit.
    TooMuchCode,
    /// More tables than [`MAX_TABLES`] (tables that point back at themselves, for one).
    TooManyTables,
}

/// Most tables one walk visits: bounds the work a guest can make the hypervisor do (a process
/// of a gateway uses a few dozen).
pub const MAX_TABLES: usize = 256;

/// An executable user page: its virtual and (intermediate) physical page address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CodePage {
    /// Virtual address of the page.
    pub va: u64,
    /// Guest-physical address of the page.
    pub pa: u64,
}

const VALID: u64 = 1;
const TABLE_OR_PAGE: u64 = 2;
const UXN: u64 = 1 << 54;
const UXN_TABLE: u64 = 1 << 60;
const OA: u64 = 0x0000_ffff_ffff_f000;

/// The translation parameters of TTBR0_EL1 from TCR_EL1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Regime {
    va_bits: u32,
    hpd: bool,
}

fn regime(tcr: u64) -> Result<Option<Regime>, WalkError> {
    let t0sz = (tcr & 0x3f) as u32;
    let epd0 = tcr & (1 << 7) != 0;
    let tg0 = (tcr >> 14) & 0b11;
    let ds = tcr & (1 << 59) != 0;
    if tg0 != 0 || ds || !(16..=39).contains(&t0sz) {
        return Err(WalkError::Unsupported);
    }
    if epd0 {
        // No walks for TTBR0: user space has no mappings at all.
        return Ok(None);
    }
    Ok(Some(Regime {
        va_bits: 64 - t0sz,
        hpd: tcr & (1 << 41) != 0,
    }))
}

/// Call `each` for every page EL0 may execute under `ttbr0` / `tcr` (TTBR0_EL1, TCR_EL1), in
/// ascending virtual address order; at most `limit` pages. Blocks count page by page.
pub fn el0_code(
    mem: &impl GuestRam,
    ttbr0: u64,
    tcr: u64,
    limit: usize,
    each: impl FnMut(CodePage),
) -> Result<usize, WalkError> {
    el0_code_and_tables(mem, ttbr0, tcr, limit, each, |_| {})
}

/// [`el0_code`], also calling `table` with the page address of every table the walk reads
/// (the root first): the pages whose contents decide the result.
pub fn el0_code_and_tables(
    mem: &impl GuestRam,
    ttbr0: u64,
    tcr: u64,
    limit: usize,
    mut each: impl FnMut(CodePage),
    mut table: impl FnMut(u64),
) -> Result<usize, WalkError> {
    let Some(r) = regime(tcr)? else {
        return Ok(0);
    };
    // Levels of 9 bits above the 12-bit page offset; the first may be narrower.
    let levels = (r.va_bits - 12).div_ceil(9);
    let start = 4 - levels;
    let top_bits = (r.va_bits - 12) - 9 * (levels - 1);
    let entries = 1u64 << top_bits;
    // BADDR, aligned to the start table's size (the ASID and CnP bits are not part of it).
    let base = (ttbr0 & 0x0000_ffff_ffff_fffe) & !(entries * 8 - 1);
    let mut w = Walk {
        mem,
        hpd: r.hpd,
        limit,
        found: 0,
        tables: 0,
        each: &mut each,
        table: &mut table,
    };
    w.table(base, entries, start, 0, false)?;
    Ok(w.found)
}

struct Walk<'a, M, F, T> {
    mem: &'a M,
    hpd: bool,
    limit: usize,
    found: usize,
    tables: usize,
    each: &'a mut F,
    table: &'a mut T,
}

impl<M: GuestRam, F: FnMut(CodePage), T: FnMut(u64)> Walk<'_, M, F, T> {
    /// Walk the `entries` descriptors of the level-`level` table at `base`, which maps from `va`.
    fn table(
        &mut self,
        base: u64,
        entries: u64,
        level: u32,
        va: u64,
        uxn_above: bool,
    ) -> Result<(), WalkError> {
        if self.tables == MAX_TABLES {
            return Err(WalkError::TooManyTables);
        }
        self.tables += 1;
        if !self.mem.is_ram(base) {
            return Err(WalkError::BadTable);
        }
        (self.table)(base & !(PAGE - 1));
        let span = 1u64 << (12 + 9 * (3 - level));
        for i in 0..entries {
            let d = self.mem.read_u64(base + i * 8).ok_or(WalkError::BadTable)?;
            if d & VALID == 0 {
                continue;
            }
            let at = va + i * span;
            let is_table = d & TABLE_OR_PAGE != 0;
            if level < 3 && is_table {
                let uxn = uxn_above || (!self.hpd && d & UXN_TABLE != 0);
                if uxn {
                    // Nothing below may execute at EL0: no need to look.
                    continue;
                }
                self.table(d & OA, 512, level + 1, at, uxn)?;
                continue;
            }
            // A leaf: a page at level 3, a block at levels 1 and 2 (level 0 has none, and a
            // level-3 descriptor without bit 1 is reserved: both are faults, not mappings).
            if (level == 3) != is_table || level == 0 || uxn_above || d & UXN != 0 {
                continue;
            }
            let pa = d & OA & !(span - 1);
            for p in 0..span / PAGE {
                let page = CodePage {
                    va: at + p * PAGE,
                    pa: pa + p * PAGE,
                };
                // Code can only run from RAM: stage 2 never lets the guest execute a device.
                if !self.mem.is_ram(page.pa) {
                    continue;
                }
                if self.found == self.limit {
                    return Err(WalkError::TooMuchCode);
                }
                self.found += 1;
                (self.each)(page);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    /// Guest RAM as a sparse map of words, RAM being `[lo, hi)`.
    struct Ram {
        words: BTreeMap<u64, u64>,
        lo: u64,
        hi: u64,
    }

    impl GuestRam for Ram {
        fn read_u64(&self, ipa: u64) -> Option<u64> {
            (self.lo..self.hi)
                .contains(&ipa)
                .then(|| self.words.get(&ipa).copied().unwrap_or(0))
        }
        fn is_ram(&self, ipa: u64) -> bool {
            (self.lo..self.hi).contains(&ipa)
        }
    }

    /// TCR_EL1 with T0SZ = 16 (48-bit VAs), 4 KiB granule.
    const TCR48: u64 = 16;
    const TCR39: u64 = 25;
    const RAM: (u64, u64) = (0x4000_0000, 0x8000_0000);
    const USER_CODE: u64 = 0b11 | (1 << 10) | (0b11 << 6) | (1 << 53); // RO, AF, PXN
    const USER_DATA: u64 = 0b11 | (1 << 10) | (0b01 << 6) | (1 << 53) | UXN;

    /// Builds 4-level tables from a list of (va, leaf descriptor, level).
    struct Builder {
        ram: Ram,
        next: u64,
        root: u64,
    }

    impl Builder {
        fn new() -> Self {
            let mut b = Self {
                ram: Ram {
                    words: BTreeMap::new(),
                    lo: RAM.0,
                    hi: RAM.1,
                },
                next: RAM.0 + 0x100_0000,
                root: 0,
            };
            b.root = b.alloc();
            b
        }
        fn alloc(&mut self) -> u64 {
            let t = self.next;
            self.next += PAGE;
            t
        }
        fn map(&mut self, va: u64, leaf: u64, level: u32, start: u32) {
            let mut table = self.root;
            for l in start..level {
                let i = (va >> (12 + 9 * (3 - l))) & 511;
                let d = self.ram.read_u64(table + i * 8).unwrap();
                table = if d & 1 == 0 {
                    let t = self.alloc();
                    self.ram.words.insert(table + i * 8, t | 0b11);
                    t
                } else {
                    d & OA
                };
            }
            let i = (va >> (12 + 9 * (3 - level))) & 511;
            self.ram.words.insert(table + i * 8, leaf);
        }
        fn walk(&self, tcr: u64) -> Result<Vec<CodePage>, WalkError> {
            let mut v = Vec::new();
            el0_code(&self.ram, self.root | (7 << 48), tcr, 4096, |p| v.push(p))?;
            Ok(v)
        }
    }

    #[test]
    fn reports_every_table_it_reads_and_only_those() {
        let mut b = Builder::new();
        b.map(0x40_0000, 0x4200_0000 | USER_CODE, 3, 0);
        b.map(0x7fff_f000_0000, 0x4300_0000 | USER_CODE, 3, 0);
        let mut tables = Vec::new();
        let n = el0_code_and_tables(
            &b.ram,
            b.root | (7 << 48),
            TCR48,
            16,
            |_| {},
            |t| tables.push(t),
        )
        .unwrap();
        assert_eq!(n, 2);
        // The root, then L1, L2, L3 down to each page: every table the builder made.
        assert_eq!(tables[0], b.root);
        assert_eq!(tables.len(), 7);
        let mut sorted = tables.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(
            sorted,
            (0..7).map(|i| b.root + i * PAGE).collect::<Vec<_>>()
        );
        // A subtree marked UXNTable is not read, so its table is not reported.
        let l0 = b.ram.read_u64(b.root).unwrap();
        b.ram.words.insert(b.root, l0 | UXN_TABLE);
        let mut tables = Vec::new();
        el0_code_and_tables(&b.ram, b.root, TCR48, 16, |_| {}, |t| tables.push(t)).unwrap();
        assert_eq!(tables.len(), 4);
    }

    #[test]
    fn finds_user_code_pages_and_nothing_else() {
        let mut b = Builder::new();
        b.map(0x40_0000, 0x4200_0000 | USER_CODE, 3, 0);
        b.map(0x40_1000, 0x4200_5000 | USER_CODE, 3, 0);
        b.map(0x40_2000, 0x4200_6000 | USER_DATA, 3, 0);
        // Executable but a reserved level-3 encoding (bit 1 clear): not a mapping.
        b.map(0x40_3000, 0x4200_7000 | (USER_CODE & !0b10), 3, 0);
        b.map(0x7fff_f000_0000, 0x4300_0000 | USER_CODE, 3, 0);
        let got = b.walk(TCR48).unwrap();
        assert_eq!(
            got,
            vec![
                CodePage {
                    va: 0x40_0000,
                    pa: 0x4200_0000
                },
                CodePage {
                    va: 0x40_1000,
                    pa: 0x4200_5000
                },
                CodePage {
                    va: 0x7fff_f000_0000,
                    pa: 0x4300_0000
                },
            ]
        );
    }

    #[test]
    fn blocks_count_page_by_page_and_uxn_table_hides_a_subtree() {
        let mut b = Builder::new();
        // A 2 MiB block of code at level 2.
        b.map(0x20_0000, 0x4040_0000 | (USER_CODE & !0b10), 2, 0);
        let got = b.walk(TCR48).unwrap();
        assert_eq!(got.len(), 512);
        assert_eq!(
            got[1],
            CodePage {
                va: 0x20_1000,
                pa: 0x4040_1000
            }
        );
        // UXNTable on the level-0 entry hides everything under it, unless HPD0 is set.
        let i = b.ram.words.get_mut(&b.root).unwrap();
        *i |= UXN_TABLE;
        assert!(b.walk(TCR48).unwrap().is_empty());
        assert_eq!(b.walk(TCR48 | (1 << 41)).unwrap().len(), 512);
    }

    #[test]
    fn three_level_regime_starts_at_level_1() {
        let mut b = Builder::new();
        b.map(0x55_0000_0000, 0x4200_0000 | USER_CODE, 3, 1);
        let got = b.walk(TCR39).unwrap();
        assert_eq!(
            got,
            vec![CodePage {
                va: 0x55_0000_0000,
                pa: 0x4200_0000
            }]
        );
    }

    #[test]
    fn refuses_tables_outside_ram_other_granules_and_too_much_code() {
        let mut b = Builder::new();
        b.map(0x40_0000, 0x4200_0000 | USER_CODE, 3, 0);
        b.map(0x40_1000, 0x4200_1000 | USER_CODE, 3, 0);
        // A level-0 entry pointing back at the root: bounded work.
        let mut l = Builder::new();
        for i in 0..512 {
            l.ram.words.insert(l.root + i * 8, l.root | 0b11 | UXN);
        }
        assert_eq!(l.walk(TCR48), Err(WalkError::TooManyTables));
        let mut v = 0;
        assert_eq!(
            el0_code(&b.ram, b.root, TCR48, 1, |_| v += 1),
            Err(WalkError::TooMuchCode)
        );
        assert_eq!(b.walk(TCR48 | (0b01 << 14)), Err(WalkError::Unsupported));
        assert_eq!(b.walk(12), Err(WalkError::Unsupported));
        // EPD0: no user mappings at all.
        assert_eq!(b.walk(TCR48 | (1 << 7)).unwrap(), vec![]);
        // A table pointer at a device address ends the walk.
        b.ram.words.insert(b.root + 8, 0x0900_0000 | 0b11);
        assert_eq!(b.walk(TCR48), Err(WalkError::BadTable));
        // A code page outside RAM is no code (the guest cannot execute it).
        let mut c = Builder::new();
        c.map(0x40_0000, 0x0900_0000 | USER_CODE, 3, 0);
        assert_eq!(c.walk(TCR48).unwrap(), vec![]);
    }

    proptest! {
        /// Any table contents: the walk ends, reads only RAM, and reports pages in ascending
        /// VA order, each in RAM.
        #[test]
        fn any_tables_are_walked_safely(words in proptest::collection::vec(any::<u64>(), 0..64),
                                        slots in proptest::collection::vec(0u64..512, 0..64),
                                        tcr in prop_oneof![Just(TCR48), Just(TCR39), any::<u64>()]) {
            let mut ram = Ram { words: BTreeMap::new(), lo: RAM.0, hi: RAM.0 + 0x10_0000 };
            for (w, s) in words.iter().zip(&slots) {
                // Point descriptors back into the small RAM most of the time, so walks go deep.
                let w = if w & 1 == 1 { (RAM.0 + (w & 0xf_f000)) | (w & !OA) } else { *w };
                ram.words.insert(RAM.0 + s * 8, w);
            }
            let (mut seen, mut tables) = (Vec::new(), Vec::new());
            let r = el0_code_and_tables(&ram, RAM.0, tcr, 2048, |p| seen.push(p), |t| tables.push(t));
            if let Ok(n) = r {
                prop_assert_eq!(n, seen.len());
            }
            prop_assert!(tables.len() <= MAX_TABLES);
            prop_assert!(tables.iter().all(|t| ram.is_ram(*t) && t % PAGE == 0));
            prop_assert!(seen.windows(2).all(|w| w[0].va < w[1].va));
            prop_assert!(seen.iter().all(|p| ram.is_ram(p.pa)));
        }
    }
}
