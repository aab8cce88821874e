//! Polled PL011 console. Shared with the guest, so the hypervisor only writes before the guest
//! runs, on faults it logs, and on panic.

use core::fmt;

use crate::board::UART_PL011;

const DR: u64 = 0x00;
const FR: u64 = 0x18;
const FR_TXFF: u32 = 1 << 5;

/// The console; writes are serialised by [`LOCK`].
pub struct Console;

/// Serialises console output between CPUs.
pub static LOCK: spin::Mutex<()> = spin::Mutex::new(());

impl Console {
    fn putc(b: u8) {
        // SAFETY: UART_PL011 is the board's PL011, mapped as device memory at EL2; FR and DR
        // are 32-bit registers, accessed with volatile 32-bit loads and stores.
        unsafe {
            while core::ptr::read_volatile((UART_PL011 + FR) as *const u32) & FR_TXFF != 0 {}
            core::ptr::write_volatile((UART_PL011 + DR) as *mut u32, b as u32);
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
