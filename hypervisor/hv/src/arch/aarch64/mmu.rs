//! EL2 translation (identity map for the hypervisor itself) and the guest's stage-2 tables.
//!
//! Stage 2 maps the board's device window and guest RAM, which starts above the hypervisor's
//! reservation. Hypervisor code, data, keys, PCRs and these tables are never mapped, so any
//! guest access to them takes a stage-2 fault to EL2 (`trap`).

use aarch64_cpu::{asm::barrier, registers::*};
use core::cell::UnsafeCell;

use crate::{
    board::{DEVICE_BASE, DEVICE_SIZE, HV_RESERVED, RAM_BASE},
    pagetable::{self, L1_BLOCK, L2_BLOCK},
};

#[repr(C, align(4096))]
struct Table([u64; 512]);

/// Stage 2 starts at level 1 with a 40-bit IPA space: two concatenated level-1 tables.
#[repr(C, align(8192))]
struct Stage2Root([u64; 1024]);

/// Most GiB of RAM the tables describe.
const MAX_RAM_GIB: usize = (crate::layout::MAX_RAM >> 30) as usize;

struct Tables {
    el2: Table,
    s2_root: Stage2Root,
    s2_l2: Table,
}

struct TablesCell(UnsafeCell<Tables>);

// SAFETY: the tables are written only by the primary CPU during boot, before any secondary CPU
// starts or the guest runs; afterwards they are only read (by the MMUs).
unsafe impl Sync for TablesCell {}

static TABLES: TablesCell = TablesCell(UnsafeCell::new(Tables {
    el2: Table([0; 512]),
    s2_root: Stage2Root([0; 1024]),
    s2_l2: Table([0; 512]),
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

/// Guest RAM handed to the guest: from above the hypervisor's reservation to the end of RAM.
pub fn guest_ram(ram: (u64, u64)) -> (u64, u64) {
    let start = RAM_BASE + HV_RESERVED;
    (start, ram.0 + ram.1 - start)
}

/// Build stage 2: the device window and guest RAM `[start, end)`; returns VTTBR_EL2.
pub fn build_stage2(guest: (u64, u64)) -> u64 {
    // SAFETY: boot-time, single CPU (see `TablesCell`).
    let t = unsafe { &mut *TABLES.0.get() };
    let mut gib = DEVICE_BASE / L1_BLOCK;
    while gib * L1_BLOCK < DEVICE_BASE + DEVICE_SIZE {
        t.s2_root.0[gib as usize] = pagetable::s2_device_block(gib * L1_BLOCK);
        gib += 1;
    }
    let (start, size) = guest;
    let end = start + size;
    // The GiB holding the reservation is split into 2 MiB blocks; later GiBs are whole blocks.
    let first_gib = start / L1_BLOCK;
    let l2_base = first_gib * L1_BLOCK;
    for (i, e) in t.s2_l2.0.iter_mut().enumerate() {
        let pa = l2_base + i as u64 * L2_BLOCK;
        if pa >= start && pa + L2_BLOCK <= end {
            *e = pagetable::s2_ram_block(pa);
        }
    }
    let l2 = core::ptr::addr_of!(t.s2_l2) as u64;
    t.s2_root.0[first_gib as usize] = pagetable::table(l2);
    let mut g = first_gib + 1;
    while (g + 1) * L1_BLOCK <= end && (g as usize) < t.s2_root.0.len() {
        t.s2_root.0[g as usize] = pagetable::s2_ram_block(g * L1_BLOCK);
        g += 1;
    }
    core::ptr::addr_of!(t.s2_root) as u64
}
