//! EL2 translation (identity map for the hypervisor itself) and the guest's stage-2 tables.
//!
//! Stage 2 maps exactly the board's guest devices (`owner = "guest"`, page by page) and guest
//! RAM, which starts above the hypervisor's reservation. Hypervisor code, data, keys, PCRs,
//! these tables, the SMMU and every device not given are never mapped, so any guest access to
//! them takes a stage-2 fault to EL2 (`trap`). The SMMU walks the same tables for every DMA
//! (`smmu`), so devices reach no more than the guest's CPUs do.

use aarch64_cpu::{asm::barrier, registers::*};
use core::cell::UnsafeCell;

use crate::{
    arch::aarch64::pagetable::{self, El2Kind, L1_BLOCK, Stage2, TableWords},
    board::{GUEST_DEVICES, MAX_CPUS, RAM_BASE},
    plan,
};

#[repr(C, align(4096))]
struct Table([u64; 512]);

/// Stage 2 starts at level 1 with a 40-bit IPA space: two concatenated level-1 tables.
#[repr(C, align(8192))]
struct Stage2Root([u64; 1024]);

/// Most GiB of RAM the tables describe.
const MAX_RAM_GIB: usize = (crate::layout::MAX_RAM >> 30) as usize;

/// Lower-level stage-2 tables: QEMU virt's devices take 2 level-2 and 3 level-3 tables, guest
/// RAM one level-2 table; 16 are headroom for other boards' lists, and the rest take the splits
/// of guest RAM blocks into pages when programs' code and page tables are held read-only
/// (`code`): one per 2 MiB block touched, so 512 (2 MiB of tables) split a 1 GiB guest entirely
/// and holds never fail for want of a table.
const S2_POOL: usize = 16 + 512;

#[repr(C, align(4096))]
struct Pool([TableWords; S2_POOL]);

/// Lower-level tables of the hypervisor's own map: a level-2 table for the first GiB of RAM
/// and level-3 tables for the 2 MiB regions the image spans (pages: code, read-only data,
/// data and stacks each with their own permissions, guard pages unmapped).
const EL2_POOL: usize = 8;

#[repr(C, align(4096))]
struct El2Pool([TableWords; EL2_POOL]);

struct Tables {
    el2: Table,
    el2_pool: El2Pool,
    el2_used: usize,
    s2_root: Stage2Root,
    s2_pool: Pool,
    s2_used: usize,
}

struct TablesCell(UnsafeCell<Tables>);

// SAFETY: the tables are written by the primary CPU during boot, before any secondary CPU
// starts or the guest runs; afterwards only the stage-2 tables change, and only with `S2_EDIT`
// held (`hold`, `release`); everything else only reads them (the MMUs and the SMMU).
unsafe impl Sync for TablesCell {}

/// Serialises edits of the live stage-2 tables.
static S2_EDIT: spin::Mutex<()> = spin::Mutex::new(());

static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables {
    el2: Table([0; 512]),
    el2_pool: El2Pool([[0; 512]; EL2_POOL]),
    el2_used: 0,
    s2_root: Stage2Root([0; 1024]),
    s2_pool: Pool([[0; 512]; S2_POOL]),
    s2_used: 0,
}));

/// TCR_EL2: 39-bit VA, 4 KiB granule, write-back walks, inner shareable, 40-bit PA.
const TCR_EL2_VALUE: u64 =
    25 | (1 << 8) | (1 << 10) | (3 << 12) | (2 << 16) | (1 << 23) | (1 << 31);
/// SCTLR_EL2: RES1 bits, MMU, data and instruction caches on, alignment checks off, and WXN:
/// whatever is writable is never executable, whatever the tables say.
const SCTLR_EL2_VALUE: u64 = 0x30c5_0830 | (1 << 0) | (1 << 2) | (1 << 12) | (1 << 19);
/// VTCR_EL2: 40-bit IPA, start at level 1, 4 KiB granule, write-back walks, 40-bit PA.
pub const VTCR_VALUE: u64 =
    24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (2 << 16) | (1 << 31);

unsafe extern "C" {
    static __image_start: u8;
    static __text_end: u8;
    static __measured_end: u8;
    static __data_start: u8;
    static __stacks_start: u8;
}

/// The address of a linker symbol.
macro_rules! sym {
    ($s:ident) => {
        core::ptr::addr_of!($s) as u64
    };
}

/// Build the hypervisor's own identity map (`plan::BoardMap::build_el2`): the device window
/// (device memory), its code (read-only, executable, page by page), read-only data (read-only),
/// data, bss and each CPU's stack (read/write) with an unmapped guard page below every stack, and
/// the first GiB of guest RAM (read/write); nothing executable is writable (also SCTLR_EL2.WXN).
/// The rest of the reservation is unmapped. Primary CPU only, before the MMU is on.
pub fn build_el2_map() {
    // SAFETY: boot-time, single CPU (see `TablesCell`).
    let t = unsafe { &mut *TABLES.0.get() };
    let pool_pa = core::ptr::addr_of!(t.el2_pool) as u64;
    let mut m = Stage2::new(&mut t.el2.0, &mut t.el2_pool.0, pool_pa);
    let image = plan::ImageMap {
        code: (sym!(__image_start), sym!(__text_end)),
        rodata: (sym!(__text_end), sym!(__measured_end)),
        // Up to the stacks: .bss ends inside the page before them.
        data: (sym!(__data_start), sym!(__stacks_start)),
    };
    let stacks = (0..MAX_CPUS as u64).map(super::boot::cpu_stack);
    if let Err(e) = plan::BOARD.build_el2(&mut m, &image, stacks) {
        panic!("EL2 map: {e:?}");
    }
    t.el2_used = m.tables_used();
}

/// Add guest RAM past the first GiB, up to `ram_gib` GiB from RAM_BASE, to the live EL2 map.
pub fn extend_el2_map(ram_gib: usize) {
    // SAFETY: boot-time, single CPU (see `TablesCell`); only invalid entries become valid, so
    // the live map needs no break-before-make.
    let t = unsafe { &mut *TABLES.0.get() };
    let pool_pa = core::ptr::addr_of!(t.el2_pool) as u64;
    let mut m = Stage2::resume(&mut t.el2.0, &mut t.el2_pool.0, pool_pa, t.el2_used);
    let gib = ram_gib.clamp(1, MAX_RAM_GIB) as u64;
    if gib > 1 {
        let (base, size) = (RAM_BASE + L1_BLOCK, (gib - 1) * L1_BLOCK);
        if let Err(e) = m.map_el2(base, size, El2Kind::ReadWrite) {
            panic!("EL2 map: cannot map guest RAM {base:#x}+{size:#x}: {e:?}");
        }
    }
    t.el2_used = m.tables_used();
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}

/// Turn on the EL2 MMU with the identity map (every CPU).
pub fn enable_el2_mmu() {
    // SAFETY: only the address of the table is taken.
    let root = unsafe { core::ptr::addr_of!((*TABLES.0.get()).el2) } as u64;
    MAIR_EL2.set(pagetable::MAIR_EL2);
    TCR_EL2.set(TCR_EL2_VALUE);
    TTBR0_EL2.set(root);
    barrier::dsb(barrier::SY);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating EL2 TLB entries before enabling translation.
    unsafe { core::arch::asm!("tlbi alle2", "dsb sy", "isb") };
    SCTLR_EL2.set(SCTLR_EL2_VALUE);
    barrier::isb(barrier::SY);
}

/// Build stage 2: the board's guest devices and guest RAM `(start, size)`; returns VTTBR_EL2
/// (VMID 0), whose table address the SMMU's stream table entries take too.
pub fn build_stage2(guest: (u64, u64)) -> u64 {
    // SAFETY: boot-time, single CPU (see `TablesCell`).
    let t = unsafe { &mut *TABLES.0.get() };
    let root = core::ptr::addr_of!(t.s2_root) as u64;
    let pool_pa = core::ptr::addr_of!(t.s2_pool) as u64;
    let mut s2 = Stage2::new(&mut t.s2_root.0, &mut t.s2_pool.0, pool_pa);
    // The plan maps the guest devices (mediated pages left out) and guest RAM, then checks that
    // no page of the reservation, of a kept device or of a mediated page translates.
    if let Err(e) = plan::BOARD.build_stage2(&mut s2, guest) {
        panic!("stage 2 for guest RAM {:#x}+{:#x}: {e:?}", guest.0, guest.1);
    }
    crate::println!(
        "stage 2: {} guest devices page by page, guest RAM, {} tables",
        GUEST_DEVICES.len(),
        s2.tables_used() + 2
    );
    t.s2_used = s2.tables_used();
    barrier::dsb(barrier::ISH);
    root
}

/// Edit the live stage-2 tables with `edit`, then make every CPU's TLB and the SMMU's forget
/// the old translations.
fn edit_stage2<R>(edit: impl FnOnce(&mut Stage2<'_>) -> R) -> R {
    let _g = S2_EDIT.lock();
    // SAFETY: `S2_EDIT` is held, so no other CPU edits the tables (see `TablesCell`); the MMUs
    // and the SMMU only read them, and each edit is a single-word store of a valid descriptor.
    let t = unsafe { &mut *TABLES.0.get() };
    let pool_pa = core::ptr::addr_of!(t.s2_pool) as u64;
    let mut s2 = Stage2::resume(&mut t.s2_root.0, &mut t.s2_pool.0, pool_pa, t.s2_used);
    let r = edit(&mut s2);
    t.s2_used = s2.tables_used();
    barrier::dsb(barrier::ISHST);
    // SAFETY: TLB maintenance for the guest's VMID (the only one), from EL2.
    unsafe { core::arch::asm!("tlbi vmalls12e1is", "dsb ish", "isb") };
    super::smmu::invalidate_stage2();
    r
}

/// Hold each guest RAM page of `pages` read-only in stage 2 for one more holder; on failure
/// none of them is held and the error says why.
pub fn hold(pages: impl Iterator<Item = u64> + Clone) -> Result<(), pagetable::MapError> {
    edit_stage2(|s2| {
        for (n, pa) in pages.clone().enumerate() {
            if let Err(e) = s2.hold(pa) {
                for pa in pages.take(n) {
                    let _ = s2.release(pa);
                }
                return Err(e);
            }
        }
        Ok(())
    })
}

/// Drop one hold of each page of `pages` (those without holds left become writable again).
pub fn release(pages: impl Iterator<Item = u64>) {
    edit_stage2(|s2| {
        for pa in pages {
            let _ = s2.release(pa);
        }
    })
}

/// Whether the guest RAM page at `pa` is held read-only.
pub fn is_held(pa: u64) -> bool {
    let _g = S2_EDIT.lock();
    // SAFETY: as in `edit_stage2`; this only reads.
    let t = unsafe { &mut *TABLES.0.get() };
    let pool_pa = core::ptr::addr_of!(t.s2_pool) as u64;
    let s2 = Stage2::resume(&mut t.s2_root.0, &mut t.s2_pool.0, pool_pa, t.s2_used);
    s2.holds(pa & !0xfff) > 0
}
