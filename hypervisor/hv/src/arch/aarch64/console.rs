//! Polled console on the board's UART: a PL011, or the BCM283x/BCM2711 mini-UART (board.toml
//! `[console]`). Shared with the guest, so the hypervisor only writes before the guest runs, on
//! faults it logs, and on panic. The loader (the Pi firmware with `enable_uart=1`, QEMU) has
//! set the UART up; the hypervisor only waits for room and writes.

use core::fmt;

use crate::board::{CONSOLE_MINI_UART, UART_BASE};

/// PL011: data register, flag register and its "transmit FIFO full" bit.
mod pl011 {
    pub const DR: u64 = 0x00;
    pub const FR: u64 = 0x18;
    pub const FR_TXFF: u32 = 1 << 5;
}

/// Mini-UART (from `AUX_MU_IO`): I/O register, line status register and its "transmitter
/// can accept a byte" bit.
mod mini {
    pub const IO: u64 = 0x00;
    pub const LSR: u64 = 0x14;
    pub const LSR_TX_EMPTY: u32 = 1 << 5;
}

/// The console; writes are serialised by [`LOCK`].
pub struct Console;

/// Serialises console output between CPUs.
pub static LOCK: spin::Mutex<()> = spin::Mutex::new(());

impl Console {
    fn putc(b: u8) {
        // (status register, the bits that say "room", the bits' value then, data register)
        let (status, mask, room, data) = if CONSOLE_MINI_UART {
            (mini::LSR, mini::LSR_TX_EMPTY, mini::LSR_TX_EMPTY, mini::IO)
        } else {
            (pl011::FR, pl011::FR_TXFF, 0, pl011::DR)
        };
        // SAFETY: UART_BASE is the board's UART of the kind named, inside the device window the
        // EL2 map covers as device memory; its status and data registers are 32-bit, accessed
        // with volatile 32-bit loads and stores.
        unsafe {
            while core::ptr::read_volatile((UART_BASE + status) as *const u32) & mask != room {}
            core::ptr::write_volatile((UART_BASE + data) as *mut u32, b as u32);
        }
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Self::putc(b'\r');
            }
            Self::putc(b);
        }
        Ok(())
    }
}

/// Print to the console with a `gatewarden-hv:` prefix.
#[macro_export]
macro_rules! println {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _guard = $crate::arch::aarch64::console::LOCK.lock();
        let _ = write!($crate::arch::aarch64::console::Console, "gatewarden-hv: ");
        let _ = writeln!($crate::arch::aarch64::console::Console, $($arg)*);
    }};
}
