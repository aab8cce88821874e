//! aarch64 at EL2: entry, console, EL2 MMU, stage 2, exception vectors, PSCI, guest entry, and
//! the boot-time clock read.

pub mod boot;
pub mod code;
pub mod console;
pub mod cpu;
pub mod hypercall;
pub mod mmu;
pub mod rtc;
pub mod smmu;
pub mod trap;
