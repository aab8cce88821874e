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

/// How a guest access to a mediated register page ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A read: the guest's register gets the value.
    Value(u32),
    /// A write, done.
    Done,
    /// Refused: the guest gets an abort.
    Abort,
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

/// BCM2835/7 RNG registers (Linux `bcm2835-rng.c`, QEMU `bcm2835_rng.c`).
mod rng2835 {
    pub const CTRL: u64 = 0x00;
    pub const STATUS: u64 = 0x04;
    pub const DATA: u64 = 0x08;
    /// `CTRL`: generator on.
    pub const RBGEN: u32 = 1;
    /// `STATUS`: the first words to throw away (Linux's warm-up count).
    pub const WARMUP_COUNT: u32 = 0x40000;
}

/// 32 bytes from the BCM2835/7's RNG (`counter`, `freq`: as for [`rng200`]).
pub fn bcm2835_rng(counter: impl Fn() -> u64, freq: u64) -> Result<[u8; 32], RngAbsent> {
    let base = crate::board::BCM2835_RNG.ok_or(RngAbsent::NotOnBoard)?;
    let ctrl = probe_read32(base + rng2835::CTRL).ok_or(RngAbsent::NoResponse)?;
    if ctrl & rng2835::RBGEN == 0 {
        write32(base + rng2835::STATUS, rng2835::WARMUP_COUNT);
        write32(base + rng2835::CTRL, rng2835::RBGEN);
    }
    let deadline = counter() + freq / 20;
    let mut out = [0u8; 32];
    for word in out.chunks_mut(4) {
        // The top byte of STATUS counts the words ready.
        while read32(base + rng2835::STATUS) >> 24 == 0 {
            if counter() > deadline {
                return Err(RngAbsent::Failed);
            }
        }
        word.copy_from_slice(&read32(base + rng2835::DATA).to_le_bytes());
    }
    Ok(out)
}

/// The SoC's generator, whichever the board has.
pub fn soc_rng(counter: impl Fn() -> u64 + Copy, freq: u64) -> Result<[u8; 32], RngAbsent> {
    match rng200(counter, freq) {
        Err(RngAbsent::NotOnBoard) => bcm2835_rng(counter, freq),
        r => r,
    }
}

/// The BCM2836 ARM-local page, mediated (`crate::local_page`).
pub mod local {
    use crate::board::LOCAL_PAGE;
    use crate::local_page::{Register, register};

    use super::Answer;

    /// Do a guest's access at `offset` into the page.
    pub fn guest_access(offset: u64, size: u8, value: Option<u64>) -> Answer {
        let Some(base) = LOCAL_PAGE else {
            return Answer::Abort;
        };
        match register(offset, size, value.is_some()) {
            Register::Read => Answer::Value(super::read32(base + offset)),
            Register::Write => {
                super::write32(base + offset, value.unwrap_or(0) as u32);
                Answer::Done
            }
            Register::Ignore => Answer::Done,
            Register::Refuse => Answer::Abort,
        }
    }
}

/// The VideoCore mailbox: the hypervisor's own OTP messages at boot, and the guest's property
/// messages, mediated (`crate::mailbox` has the policy; docs/mailbox.md the format).
pub mod mbox {
    use crate::board::MAILBOX;
    use crate::mailbox::{
        self, CHANNEL_PROPERTY, Forwarded, MAX_MESSAGE, OTP_MESSAGE_WORDS, OtpError, Register,
        STATUS_EMPTY, STATUS_FULL, reg,
    };

    use super::super::{cpu, hypercall::in_guest_ram};
    use super::Answer;
    use crate::println;

    /// The hypervisor's copy of a message: what the VideoCore reads and answers into, in
    /// hypervisor memory (never a guest-writable buffer). The slack after the largest message
    /// takes any answer a firmware writes past a tag's declared size.
    #[repr(C, align(64))]
    struct Copy([u8; 2 * MAX_MESSAGE]);

    /// A guest message the firmware has not answered yet.
    struct InFlight {
        /// The guest's buffer (ARM physical) and its size.
        guest: u64,
        len: usize,
        /// The guest's posted word (bus address and channel), given back on receipt.
        posted: u32,
        forwarded: Forwarded,
    }

    struct State {
        copy: Copy,
        in_flight: Option<InFlight>,
        refused: u64,
    }

    static STATE: spin::Mutex<State> = spin::Mutex::new(State {
        copy: Copy([0; 2 * MAX_MESSAGE]),
        in_flight: None,
        refused: 0,
    });

    fn read(off: u64) -> u32 {
        super::read32(MAILBOX.unwrap_or(0) + off)
    }

    fn write(off: u64, v: u32) {
        super::write32(MAILBOX.unwrap_or(0) + off, v)
    }

    /// The property-channel word posting the copy.
    fn posted_copy(c: &Copy) -> u32 {
        mailbox::phys_to_bus(c.0.as_ptr() as u64) | CHANNEL_PROPERTY
    }

    /// Send the hypervisor's own message and wait (about a second) for its answer. Only before
    /// the guest runs: nobody else uses the mailbox then.
    fn call(words: &mut [u32; OTP_MESSAGE_WORDS]) -> Result<(), OtpError> {
        let Some(base) = MAILBOX else {
            return Err(OtpError::NoAnswer);
        };
        let mut s = STATE.lock();
        let bytes = &mut s.copy.0[..OTP_MESSAGE_WORDS * 4];
        for (b, w) in bytes.chunks_mut(4).zip(words.iter()) {
            b.copy_from_slice(&w.to_le_bytes());
        }
        let addr = s.copy.0.as_ptr() as u64;
        cpu::clean_invalidate(addr, (OTP_MESSAGE_WORDS * 4) as u64);
        let deadline = cpu::counter() + cpu::counter_frequency();
        // Answers left from the loader are dropped first.
        while super::probe_read32(base + reg::MAIL0_STATUS).ok_or(OtpError::NoAnswer)?
            & STATUS_EMPTY
            == 0
        {
            read(reg::MAIL0_READ);
        }
        while read(reg::MAIL1_STATUS) & STATUS_FULL != 0 {
            if cpu::counter() > deadline {
                return Err(OtpError::NoAnswer);
            }
        }
        let posted = posted_copy(&s.copy);
        write(reg::MAIL1_WRITE, posted);
        loop {
            if read(reg::MAIL0_STATUS) & STATUS_EMPTY == 0 && read(reg::MAIL0_READ) == posted {
                break;
            }
            if cpu::counter() > deadline {
                return Err(OtpError::NoAnswer);
            }
        }
        cpu::clean_invalidate(addr, (OTP_MESSAGE_WORDS * 4) as u64);
        for (w, b) in words.iter_mut().zip(s.copy.0.chunks(4)) {
            *w = u32::from_le_bytes(b.try_into().unwrap());
        }
        s.copy.0[..OTP_MESSAGE_WORDS * 4].fill(0);
        Ok(())
    }

    /// The OTP's private-key rows (all zero on a board never provisioned).
    pub fn otp_key() -> Result<[u8; 32], OtpError> {
        let mut m = mailbox::otp_message(crate::board::OTP_ROWS, None);
        call(&mut m)?;
        let key = mailbox::otp_key(&m);
        m.fill(0);
        key
    }

    /// Program the OTP's private-key rows with `key` and read them back.
    pub fn otp_program(key: &[u8; 32]) -> Result<(), OtpError> {
        let mut m = mailbox::otp_message(crate::board::OTP_ROWS, Some(key));
        let answered = call(&mut m).and_then(|()| mailbox::otp_written(&m));
        m.fill(0);
        answered?;
        match otp_key() {
            Ok(k) if k == *key => Ok(()),
            _ => Err(OtpError::Unsupported),
        }
    }

    /// Do a guest's `size`-byte access at `offset` into the mailbox page (`value` for a
    /// write).
    pub fn guest_access(offset: u64, size: u8, value: Option<u64>) -> Answer {
        match mailbox::register(
            offset,
            size,
            value.is_some(),
            crate::board::MAILBOX_LEGACY_IRQ,
        ) {
            Register::Refuse => Answer::Abort,
            Register::Read => Answer::Value(read(offset)),
            Register::Write => {
                write(offset, value.unwrap_or(0) as u32);
                Answer::Done
            }
            Register::Receive { peek } => Answer::Value(receive(offset, peek)),
            Register::Send => {
                send(value.unwrap_or(0) as u32);
                Answer::Done
            }
        }
    }

    /// Refusals, reported on the console (the first few, then every 1024th).
    fn refuse(s: &mut State, why: &str, posted: u32) {
        s.refused += 1;
        if s.refused <= 8 || s.refused.is_multiple_of(1024) {
            println!(
                "mailbox: guest message {posted:#x} refused ({why}); {} refused so far",
                s.refused
            );
        }
    }

    /// The guest posts `posted`: a property message in guest RAM is copied, its allowed tags
    /// forwarded from the hypervisor's copy. Anything else is dropped (the guest's driver then
    /// times out, as with a firmware that never answers).
    fn send(posted: u32) {
        let mut s = STATE.lock();
        if posted & 0xf != CHANNEL_PROPERTY {
            return refuse(&mut s, "not the property channel", posted);
        }
        if s.in_flight.is_some() {
            return refuse(&mut s, "another message is in flight", posted);
        }
        let guest = mailbox::bus_to_phys(posted & !0xf);
        if !in_guest_ram(guest) || !in_guest_ram(guest + 3) {
            return refuse(&mut s, "buffer outside guest RAM", posted);
        }
        // The guest's buffer may be mapped non-cacheable on its side: read it from memory.
        cpu::clean_invalidate(guest, 4);
        // SAFETY: `guest` is 16-byte aligned guest RAM (checked above), identity-mapped at EL2.
        let head = unsafe { core::ptr::read_volatile(guest as *const [u8; 4]) };
        let Ok(len) = mailbox::message_size(head) else {
            return refuse(&mut s, "bad size", posted);
        };
        if !in_guest_ram(guest + len as u64 - 1) {
            return refuse(&mut s, "buffer outside guest RAM", posted);
        }
        cpu::clean_invalidate(guest, len as u64);
        let mut msg = [0u8; MAX_MESSAGE];
        // SAFETY: [guest, guest + len) is guest RAM (both ends checked; guest RAM is one
        // range), identity-mapped at EL2; read once, so a guest CPU changing it meanwhile
        // cannot make the checked and the forwarded bytes differ.
        unsafe {
            core::ptr::copy_nonoverlapping(guest as *const u8, msg.as_mut_ptr(), len);
        }
        let copy = &mut s.copy.0[..MAX_MESSAGE];
        copy.fill(0);
        let forwarded = match mailbox::sanitize(&msg[..len], copy) {
            Ok(f) => f,
            Err(e) => {
                let why = match e {
                    mailbox::MessageError::BadSize => "bad size",
                    mailbox::MessageError::NotARequest => "not a request",
                    mailbox::MessageError::Malformed => "malformed tags",
                    mailbox::MessageError::TooManyTags => "too many tags",
                };
                return refuse(&mut s, why, posted);
            }
        };
        if forwarded.refused > 0 {
            refuse(
                &mut s,
                "tags outside the allow-list left unanswered",
                posted,
            );
        }
        let addr = s.copy.0.as_ptr() as u64;
        cpu::clean_invalidate(addr, s.copy.0.len() as u64);
        let ours = posted_copy(&s.copy);
        s.in_flight = Some(InFlight {
            guest,
            len,
            posted,
            forwarded,
        });
        write(reg::MAIL1_WRITE, ours);
    }

    /// The guest reads (or peeks at) mailbox 0: the answer to its message is copied back into
    /// its buffer and reads as the word it posted.
    fn receive(offset: u64, peek: bool) -> u32 {
        let mut s = STATE.lock();
        let v = read(offset);
        if v != posted_copy(&s.copy) {
            return v;
        }
        let Some(f) = s.in_flight.as_ref() else {
            return v;
        };
        let posted = f.posted;
        if peek {
            return posted;
        }
        let f = s.in_flight.take().unwrap();
        let addr = s.copy.0.as_ptr() as u64;
        cpu::clean_invalidate(addr, s.copy.0.len() as u64);
        // SAFETY: the buffer was checked to be guest RAM when the message was posted, and
        // guest RAM never changes; identity-mapped at EL2.
        let guest = unsafe { core::slice::from_raw_parts_mut(f.guest as *mut u8, f.len) };
        mailbox::complete(guest, &s.copy.0, &f.forwarded);
        cpu::clean_invalidate(f.guest, f.len as u64);
        s.copy.0.fill(0);
        posted
    }
}

/// The legacy DMA engine, mediated (`crate::dma_engine`): the guest's control-block chains are
/// copied into hypervisor memory and checked before the engine sees them.
pub mod dma {
    use crate::board::{DMA_CHANNELS, DMA_ENGINE, DMA_FIFOS};
    use crate::dma_engine::{BLOCK_BYTES, Chain, Reach, Register, cs, reg, register};
    use crate::mailbox::phys_to_bus;
    use crate::println;

    use super::super::{cpu, hypercall::guest_ram};
    use super::Answer;

    /// Channels 0-14 (the page's); the board's `DMA_CHANNELS` are the guest's.
    const CHANNELS: usize = 15;

    struct State {
        /// Each channel's copy of the chain it runs (the engine fetches nothing else).
        chains: [Chain; CHANNELS],
        /// A channel whose last chain was refused: its `CS` shows an error until a reset or
        /// an accepted chain.
        refused: [bool; CHANNELS],
        refusals: u64,
    }

    static STATE: spin::Mutex<State> = spin::Mutex::new(State {
        chains: [const { Chain::new() }; CHANNELS],
        refused: [false; CHANNELS],
        refusals: 0,
    });

    /// Do a guest's `size`-byte access at `offset` into the engine's page (`value` for a
    /// write).
    pub fn guest_access(offset: u64, size: u8, value: Option<u64>) -> Answer {
        let Some(base) = DMA_ENGINE else {
            return Answer::Abort;
        };
        let at = base + offset;
        let v = value.unwrap_or(0) as u32;
        match register(offset, size, value.is_some(), DMA_CHANNELS) {
            Register::Refuse => Answer::Abort,
            Register::Read => Answer::Value(super::read32(at)),
            Register::Write => {
                super::write32(at, v);
                Answer::Done
            }
            Register::Status(ch) => {
                let mut s = STATE.lock();
                if value.is_none() {
                    let error = if s.refused[ch] { cs::ERROR } else { 0 };
                    return Answer::Value(super::read32(at) | error);
                }
                if v & cs::RESET != 0 {
                    s.refused[ch] = false;
                }
                // Forwarded as written: an activation with no block loaded (address 0) leaves
                // the engine idle, and only the hypervisor writes a block address.
                super::write32(at, v);
                Answer::Done
            }
            Register::BlockAddress { channel, next } => {
                let mut s = STATE.lock();
                let first = first_bus(&s.chains[channel]);
                if value.is_none() {
                    let hw = super::read32(at);
                    return Answer::Value(s.chains[channel].guest_view(hw, first));
                }
                debug_assert!(!next);
                load(
                    &mut s,
                    base + channel as u64 * reg::CHANNEL_STRIDE,
                    channel,
                    v,
                );
                Answer::Done
            }
        }
    }

    /// The bus address the engine fetches a chain's first copied block from.
    fn first_bus(c: &Chain) -> u32 {
        phys_to_bus(c.blocks.as_ptr() as u64)
    }

    /// The guest writes `guest` to a channel's block address: copy and check its chain, and
    /// point the engine at the copy; a refused chain leaves the engine's address 0, so an
    /// activation does nothing.
    fn load(s: &mut State, channel_regs: u64, ch: usize, guest: u32) {
        if super::read32(channel_regs + reg::CONBLK_AD) != 0 {
            // The engine still runs (or is paused in) the copy: it cannot be rewritten.
            return refuse(s, ch, guest, "the channel is busy");
        }
        if guest == 0 {
            s.chains[ch].clear();
            s.refused[ch] = false;
            return;
        }
        let reach = Reach {
            ram: guest_ram(),
            fifos: DMA_FIFOS,
        };
        let chain = &mut s.chains[ch];
        let first = first_bus(chain);
        match chain.copy(guest, &reach, read_block, |i| {
            first + (i as u64 * BLOCK_BYTES) as u32
        }) {
            Ok(()) => {
                // The engine reads memory, not the caches.
                cpu::clean_invalidate(chain.blocks.as_ptr() as u64, chain.len as u64 * BLOCK_BYTES);
                s.refused[ch] = false;
                super::write32(channel_regs + reg::CONBLK_AD, first);
            }
            Err(e) => {
                s.refused[ch] = true;
                let mut why = heapless::String::<96>::new();
                let _ = core::fmt::write(&mut why, format_args!("{e}"));
                refuse(s, ch, guest, &why);
            }
        }
    }

    /// One guest control block at `pa` (checked by `Reach::block`: 32-byte aligned, in guest
    /// RAM), read once from memory.
    fn read_block(pa: u64) -> [u32; 8] {
        // The guest's blocks are normally in non-cacheable memory on its side.
        cpu::clean_invalidate(pa, BLOCK_BYTES);
        // SAFETY: [pa, pa + 32) is aligned guest RAM (`Reach::block`), identity-mapped at EL2.
        unsafe { core::ptr::read_volatile(pa as *const [u32; 8]) }
    }

    /// Refusals, reported on the console (the first 64, then every 1024th).
    fn refuse(s: &mut State, ch: usize, guest: u32, why: &str) {
        s.refusals += 1;
        if s.refusals <= 64 || s.refusals.is_multiple_of(1024) {
            println!(
                "dma: channel {ch}: chain at {guest:#x} refused ({why}); {} refused so far",
                s.refusals
            );
        }
    }
}

/// The dwc2 USB host, mediated (`crate::dwc2`): a host channel starts only with a DMA address
/// and size the hypervisor checked.
pub mod usb {
    use crate::board::USB_HOST;
    use crate::dma_engine::Reach;
    use crate::dwc2::{self, CHANNELS, CHENA, Register, reg, register};
    use crate::println;

    use super::super::hypercall::guest_ram;
    use super::Answer;

    /// The guest's `HCDMA` and `HCTSIZ` of each channel.
    #[derive(Clone, Copy)]
    struct Kept {
        dma: u32,
        size: u32,
    }

    struct State {
        kept: [Kept; CHANNELS],
        refusals: u64,
    }

    static STATE: spin::Mutex<State> = spin::Mutex::new(State {
        kept: [Kept { dma: 0, size: 0 }; CHANNELS],
        refusals: 0,
    });

    fn channel_reg(base: u64, ch: usize, r: u64) -> u64 {
        base + reg::HOST_CHANNELS + ch as u64 * reg::CHANNEL_STRIDE + r
    }

    /// Do a guest's `size`-byte access at `offset` into the controller's first page (`value`
    /// for a write).
    pub fn guest_access(offset: u64, size: u8, value: Option<u64>) -> Answer {
        let Some(base) = USB_HOST else {
            return Answer::Abort;
        };
        let at = base + offset;
        let v = value.unwrap_or(0) as u32;
        match register(offset, size, value.is_some()) {
            Register::Refuse => Answer::Abort,
            Register::Read => Answer::Value(super::read32(at)),
            Register::Write => {
                super::write32(at, v);
                Answer::Done
            }
            Register::WriteMasked(m) => {
                super::write32(at, v & !m);
                Answer::Done
            }
            Register::Keep { channel, size } => {
                let mut s = STATE.lock();
                let k = &mut s.kept[channel];
                if size {
                    k.size = v;
                } else {
                    k.dma = v;
                }
                // An idle channel's registers read back as written; a running one's are the
                // controller's until its next start.
                if super::read32(channel_reg(base, channel, reg::HCCHAR)) & CHENA == 0 {
                    super::write32(at, v);
                }
                Answer::Done
            }
            Register::Characteristics(ch) => {
                let mut s = STATE.lock();
                if !dwc2::starts(v) {
                    // Other fields, or a halt request (CHENA with CHDIS).
                    super::write32(at, v);
                    return Answer::Done;
                }
                if super::read32(channel_reg(base, ch, reg::HCCHAR)) & CHENA != 0 {
                    // Enabling a running channel changes nothing, but the transfer may end
                    // between this read and the write: without its enable bit the write cannot
                    // start an unchecked one.
                    super::write32(at, v & !CHENA);
                    return Answer::Done;
                }
                let k = s.kept[ch];
                let reach = Reach {
                    ram: guest_ram(),
                    fifos: &[],
                };
                if dwc2::may_start(v, k.size, k.dma, &reach) {
                    super::write32(channel_reg(base, ch, reg::HCTSIZ), k.size);
                    super::write32(channel_reg(base, ch, reg::HCDMA), k.dma);
                    super::write32(at, v);
                } else {
                    // The rest of the write goes ahead; the channel stays idle.
                    super::write32(at, v & !CHENA);
                    s.refusals += 1;
                    if s.refusals <= 64 || s.refusals.is_multiple_of(1024) {
                        println!(
                            "usb: channel {ch}: transfer of {} bytes at {:#x} outside guest RAM refused; {} refused so far",
                            dwc2::transfer_len(v, k.size),
                            k.dma,
                            s.refusals
                        );
                    }
                }
                Answer::Done
            }
        }
    }
}
