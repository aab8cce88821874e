//! aarch64 at EL2.
//!
//! Portable, host-tested encodings and walkers: VMSAv8 descriptors and the stage-2/EL2 table
//! builder (`pagetable`), the guest stage-1 walker (`stage1`), exception routing
//! (`exception`), the GICv3 redistributor filter (`gicr`), SMMUv3 formats (`smmuv3`) and the
//! vDSO finder (`vdso`). The hardware modules (entry, console, EL2 MMU, exception vectors,
//! PSCI and the board's power (`power`), the Broadcom watchdog and RNG (`bcm`), guest entry, the
//! SMMU driver, the boot-time clock read) build only for bare-metal
//! aarch64, and hold every `unsafe` of the hypervisor.

pub mod exception;
pub mod gicr;
pub mod pagetable;
pub mod smmuv3;
pub mod stage1;
pub mod vdso;

#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod bcm;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod boot;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod code;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod console;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod cpu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod hypercall;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod mmu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod power;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod rtc;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod smmu;
#[cfg(all(target_arch = "aarch64", target_os = "none"))]
pub mod trap;
