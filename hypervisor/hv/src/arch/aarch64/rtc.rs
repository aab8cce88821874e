//! The board's PL031 real-time clock, read once at boot for the quote's boot counter.

/// Data register: seconds since the epoch (as the board's clock keeps it).
const DR: u64 = 0x00;

/// Seconds on the PL031 at `base`.
pub fn pl031_seconds(base: u64) -> u32 {
    // SAFETY: `base` is the board's PL031 (board.toml), inside the device window that the EL2
    // identity map covers as device memory; DR is a read-only 32-bit register with no side
    // effects on read.
    unsafe { core::ptr::read_volatile((base + DR) as *const u32) }
}
