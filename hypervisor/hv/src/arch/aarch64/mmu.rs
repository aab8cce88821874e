//! EL2 translation (identity map for the hypervisor itself) and the guest's stage-2 tables.
//!
//! Stage 2 maps exactly the board's guest devices (`[[guest_device]]`, page by page) and guest
//! RAM, which starts above the hypervisor's reservation. Hypervisor code, data, keys, PCRs,
//! these tables, the SMMU and every device not given are never mapped, so any guest access to
//! them takes a stage-2 fault to EL2 (`trap`). The SMMU walks the same tables for every DMA
//! (`smmu`), so devices reach no more than the guest's CPUs do.

use aarch64_cpu::{asm::barrier, registers::*};
use core::cell::UnsafeCell;

use crate::{
    board::{DEVICE_BASE, DEVICE_SIZE, GICR_FILTER, GUEST_DEVICES, MAX_CPUS, RAM_BASE},
    pagetable::{self, L1_BLOCK, S2Kind, Stage2, TableWords},
};

#[repr(C, align(4096))]
struct Table([u64; 512]);

/// Stage 2 starts at level 1 with a 40-bit IPA space: two concatenated level-1 tables.
#[repr(C, align(8192))]
struct Stage2Root([u64; 1024]);

/// Most GiB of RAM the tables describe.
const MAX_RAM_GIB: usize = (crate::layout::MAX_RAM >> 30) as usize;

/// Lower-level stage-2 tables: QEMU virt's devices take 2 level-2 and 3 level-3 tables, guest
/// RAM one level-2 table; the rest is headroom for other boards' lists.
const S2_POOL: usize = 16;

#[repr(C, align(4096))]
struct Pool([TableWords; S2_POOL]);

struct Tables {
    el2: Table,
    s2_root: Stage2Root,
    s2_pool: Pool,
}

struct TablesCell(UnsafeCell<Tables>);

// SAFETY: the tables are written only by the primary CPU during boot, before any secondary CPU
// starts or the guest runs; afterwards they are only read (by the MMUs).
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables {
    el2: Table([0; 512]),
    s2_root: Stage2Root([0; 1024]),
    s2_pool: Pool([[0; 512]; S2_POOL]),
}));

/// TCR_EL2: 39-bit VA, 4 KiB granule, write-back walks, inner shareable, 40-bit PA.
const TCR_EL2_VALUE: u64 =
    25 | (1 << 8) | (1 << 10) | (3 << 12) | (2 << 16) | (1 << 23) | (1 << 31);
/// SCTLR_EL2: RES1 bits, MMU, data and instruction caches on, alignment checks off.
const SCTLR_EL2_VALUE: u64 = 0x30c5_0830 | (1 << 0) | (1 << 2) | (1 << 12);
/// VTCR_EL2: 40-bit IPA, start at level 1, 4 KiB granule, write-back walks, 40-bit PA.
pub const VTCR_VALUE: u64 =
    24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (2 << 16) | (1 << 31);

/// Build the EL2 identity map for the device window and `ram_gib` GiB of RAM from RAM_BASE.
/// Primary CPU only, before the MMU is on.
pub fn build_el2_map(ram_gib: usize) {
    // SAFETY: boot-time, single CPU (see `TablesCell`).
    let t = unsafe { &mut *TABLES.0.get() };
    let mut gib = DEVICE_BASE / L1_BLOCK;
    while gib * L1_BLOCK < DEVICE_BASE + DEVICE_SIZE {
        t.el2.0[gib as usize] = pagetable::el2_device(gib * L1_BLOCK);
        gib += 1;
    }
    let first = (RAM_BASE / L1_BLOCK) as usize;
    for g in first..first + ram_gib.clamp(1, MAX_RAM_GIB) {
        t.el2.0[g] = pagetable::el2_normal(g as u64 * L1_BLOCK);
    }
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
    // Each redistributor's control page stays unmapped: the trap handler filters it (gicr).
    let holes = |base: u64, size: u64| {
        GICR_FILTER
            .filter(move |&(g, _)| g >= base && g < base + size)
            .into_iter()
            .flat_map(|(g, stride)| (0..MAX_CPUS as u64).map(move |k| (g + k * stride, 0x1000)))
    };
    for &(name, base, size) in GUEST_DEVICES {
        if let Err(e) = s2.map_with_holes(base, size, S2Kind::Device, holes(base, size)) {
            panic!("stage 2: cannot map guest device {name} at {base:#x}: {e:?}");
        }
    }
    if let Err(e) = s2.map(guest.0, guest.1, S2Kind::Ram) {
        panic!(
            "stage 2: cannot map guest RAM {:#x}+{:#x}: {e:?}",
            guest.0, guest.1
        );
    }
    crate::println!(
        "stage 2: {} guest devices page by page, guest RAM, {} tables",
        GUEST_DEVICES.len(),
        s2.tables_used() + 2
    );
    barrier::dsb(barrier::ISH);
    root
}
