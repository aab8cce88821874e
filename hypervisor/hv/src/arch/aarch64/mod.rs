//! aarch64 at EL2: entry, console, EL2 MMU, stage 2, exception vectors, PSCI, guest entry.

pub mod boot;
pub mod console;
pub mod cpu;
pub mod hypercall;
pub mod mmu;
pub mod trap;
