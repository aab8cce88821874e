//! Broadcom SoC blocks the hypervisor drives itself on the Raspberry Pis: the PM block's
//! watchdog (reset and power-off, there being no PSCI firmware) and the BCM2711's RNG200
//! (per-boot entropy). Both are hypervisor-owned devices (board.toml `driver`), never mapped
//! for the guest. A device the board data names but the machine lacks (QEMU models no RNG200)
//! is found by a probing read whose external abort is caught (`probe_read32`).

use crate::board::{PM_WATCHDOG, RNG200};

core::arch::global_asm!(
    r#"
    .section .text.gw_probe, "ax"
    .balign 4
    .global gw_probe_read32
// x0: device register address; x1: where to store its value. Returns 0, or 1 when the load
// took an external abort (`trap::hv_el2_sync` resumes at gw_probe_aborted).
gw_probe_read32:
    ldr     w2, [x0]
    str     w2, [x1]
    mov     x0, #0
    ret
    .global gw_probe_aborted
gw_probe_aborted:
    mov     x0, #1
    ret
"#
);

unsafe extern "C" {
    fn gw_probe_read32(addr: u64, out: *mut u32) -> u64;
    static gw_probe_aborted: u8;
}

/// Where an abort taken at EL2 resumes, if it was taken by the load in `gw_probe_read32`.
pub fn probe_fixup(elr: u64) -> Option<u64> {
    let start = gw_probe_read32 as *const () as usize as u64;
    let resume = core::ptr::addr_of!(gw_probe_aborted) as u64;
    (start..resume).contains(&elr).then_some(resume)
}

/// The 32-bit register at `addr`, or `None` when nothing answers there (an external abort).
fn probe_read32(addr: u64) -> Option<u32> {
    let mut v = 0u32;
    // SAFETY: `addr` is an aligned register of a hypervisor-owned device inside the device
    // window, which the EL2 map covers as device memory; an abort of the load resumes at
    // gw_probe_aborted (`probe_fixup`), and `v` is a live local the routine stores to.
    (unsafe { gw_probe_read32(addr, &mut v) } == 0).then_some(v)
}

fn read32(addr: u64) -> u32 {
    // SAFETY: an aligned register of a hypervisor-owned device the probe found, mapped as
    // device memory at EL2.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

fn write32(addr: u64, v: u32) {
    // SAFETY: as for `read32`.
    unsafe { core::ptr::write_volatile(addr as *mut u32, v) }
}

/// PM block registers (Linux `bcm2835_wdt.c`, QEMU `bcm2835_powermgt.c`).
mod pm {
    pub const RSTC: u64 = 0x1c;
    pub const RSTS: u64 = 0x20;
    pub const WDOG: u64 = 0x24;
    /// Every write carries the password in its top byte, or is ignored.
    pub const PASSWORD: u32 = 0x5a00_0000;
    pub const RSTC_WRCFG_CLR: u32 = 0xffff_ffcf;
    pub const RSTC_WRCFG_FULL_RESET: u32 = 0x20;
    /// The boot partition bits of RSTS; partition 63 (all set) tells the firmware to halt.
    pub const RSTS_PARTITION_CLR: u32 = 0xffff_faaa;
    pub const RSTS_HALT: u32 = 0x555;
}

/// Reset the board through the PM watchdog, or halt it (`power_off`: boot partition 63, which
/// the firmware, and QEMU, take as power-off). Returns only on a board without one.
pub fn pm_reset(power_off: bool) {
    let Some(base) = PM_WATCHDOG else { return };
    let mut rsts = read32(base + pm::RSTS) & pm::RSTS_PARTITION_CLR;
    if power_off {
        rsts |= pm::RSTS_HALT;
    }
    write32(base + pm::RSTS, pm::PASSWORD | rsts);
    // Fire after 10 ticks (about 150 us) with a full reset.
    write32(base + pm::WDOG, pm::PASSWORD | 10);
    let rstc = (read32(base + pm::RSTC) & pm::RSTC_WRCFG_CLR) | pm::RSTC_WRCFG_FULL_RESET;
    write32(base + pm::RSTC, pm::PASSWORD | rstc);
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// RNG200 registers (Linux `iproc-rng200.c`).
mod rng {
    pub const CTRL: u64 = 0x00;
    pub const RNG_SOFT_RESET: u64 = 0x04;
    pub const RBG_SOFT_RESET: u64 = 0x08;
    pub const INT_STATUS: u64 = 0x18;
    pub const FIFO_DATA: u64 = 0x20;
    pub const FIFO_COUNT: u64 = 0x24;
    pub const CTRL_RBGEN_MASK: u32 = 0x1fff;
    pub const CTRL_RBGEN_ENABLE: u32 = 0x1;
    pub const FIFO_COUNT_MASK: u32 = 0xff;
    /// The generator's self-test failed.
    pub const INT_MASTER_FAIL: u32 = 1 << 31;
}

/// Why the SoC's generator gave nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RngAbsent {
    /// The board data names none.
    NotOnBoard,
    /// Its registers do not answer (QEMU's raspi4b does not model it).
    NoResponse,
    /// It reported a self-test failure, or filled no FIFO word in time.
    Failed,
}

/// 32 bytes from the BCM2711's RNG200, enabled and reset first; `counter` is the CPU's counter
/// (for the deadline: about 50 ms at the counter's frequency `freq`).
pub fn rng200(counter: impl Fn() -> u64, freq: u64) -> Result<[u8; 32], RngAbsent> {
    let base = RNG200.ok_or(RngAbsent::NotOnBoard)?;
    let ctrl = probe_read32(base + rng::CTRL).ok_or(RngAbsent::NoResponse)?;
    // A clean start: generator off, both soft resets pulsed, then on.
    write32(base + rng::CTRL, ctrl & !rng::CTRL_RBGEN_MASK);
    for r in [rng::RNG_SOFT_RESET, rng::RBG_SOFT_RESET] {
        write32(base + r, 1);
        write32(base + r, 0);
    }
    write32(
        base + rng::CTRL,
        (ctrl & !rng::CTRL_RBGEN_MASK) | rng::CTRL_RBGEN_ENABLE,
    );
    let deadline = counter() + freq / 20;
    let mut out = [0u8; 32];
    for word in out.chunks_mut(4) {
        loop {
            if read32(base + rng::INT_STATUS) & rng::INT_MASTER_FAIL != 0 {
                return Err(RngAbsent::Failed);
            }
            if read32(base + rng::FIFO_COUNT) & rng::FIFO_COUNT_MASK > 0 {
                break;
            }
            if counter() > deadline {
                return Err(RngAbsent::Failed);
            }
        }
        word.copy_from_slice(&read32(base + rng::FIFO_DATA).to_le_bytes());
    }
    Ok(out)
}
