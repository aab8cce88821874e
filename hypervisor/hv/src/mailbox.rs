//! The VideoCore mailbox's property channel on the Raspberry Pis, as the hypervisor uses and
//! mediates it (board `mediator = "bcm-mailbox"`, `secret = "bcm-otp"`).
//!
//! The ARM hands the VideoCore firmware a message buffer by writing its bus address (low four
//! bits: the channel) to the mailbox; the firmware answers in the same buffer and posts the
//! address back. Among the firmware's tags are the OTP's private-key rows, which hold the
//! device secret on a Pi, and tags that make the VideoCore run code or touch ARM memory. So the
//! guest never talks to the mailbox directly: its page is out of stage 2, and the hypervisor
//! copies each message into its own memory, forwards only allow-listed tags, and copies the
//! answers back into the guest's buffer. A refused tag is answered as the firmware answers one
//! it does not know: its response bit stays clear.
//!
//! Pure and host-tested: the register policy, the message walk, the allow-list and the
//! hypervisor's own OTP messages. `arch::aarch64::bcm` does the register accesses.
//! Wire format: docs/mailbox.md.

use heapless::Vec;

/// Register offsets in the mediated 4 KiB page (the ARM control block at bus 0x7e00b000).
pub mod reg {
    /// Mailbox 0 (VideoCore to ARM): read pops the oldest answer.
    pub const MAIL0_READ: u64 = 0x880;
    /// Mailbox 0: the oldest answer, without popping it.
    pub const MAIL0_PEEK: u64 = 0x890;
    /// Mailbox 0: status (`STATUS_EMPTY`).
    pub const MAIL0_STATUS: u64 = 0x898;
    /// Mailbox 0: configuration (interrupt enables).
    pub const MAIL0_CONFIG: u64 = 0x89c;
    /// Mailbox 1 (ARM to VideoCore): write posts a message.
    pub const MAIL1_WRITE: u64 = 0x8a0;
    /// Mailbox 1: status (`STATUS_FULL`).
    pub const MAIL1_STATUS: u64 = 0x8b8;
    /// The BCM2835 armctrl interrupt controller's registers (IRQ basic pending at `+0x200` to
    /// disable basic IRQs at `+0x224`).
    pub const LEGACY_IRQ_START: u64 = 0x200;
    /// End of the armctrl registers.
    pub const LEGACY_IRQ_END: u64 = 0x228;
}

/// Mailbox status: no room to post.
pub const STATUS_FULL: u32 = 1 << 31;
/// Mailbox status: nothing to read.
pub const STATUS_EMPTY: u32 = 1 << 30;
/// The property channel (ARM to VideoCore), the only one the guest may use.
pub const CHANNEL_PROPERTY: u32 = 8;
/// A message's or tag's "answered" bit.
pub const RESPONSE: u32 = 1 << 31;
/// The largest guest message the hypervisor forwards (Linux's firmware driver sends far less).
pub const MAX_MESSAGE: usize = 2048;
/// Most tags in one message.
pub const MAX_TAGS: usize = 32;

/// What the hypervisor does with a trapped access to the mailbox page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Register {
    /// Read the register and give the guest its value.
    Read,
    /// Write the guest's value to the register.
    Write,
    /// Pop (or, with `peek`, look at) the oldest answer, translating the hypervisor's copy of
    /// the guest's message back to the guest's own buffer.
    Receive {
        /// MAIL0_PEEK rather than MAIL0_READ.
        peek: bool,
    },
    /// The guest posts a message: check, copy and forward it.
    Send,
    /// Anything else on the page (VCHIQ doorbells, the legacy interrupt controller, the other
    /// mailbox registers, a narrow or unaligned access): the guest gets an abort.
    Refuse,
}

/// The action for a `size`-byte access at `offset` into the mailbox page.
pub fn register(offset: u64, size: u8, write: bool, legacy_irq: bool) -> Register {
    if size != 4 || !offset.is_multiple_of(4) {
        return Register::Refuse;
    }
    match (offset, write) {
        // The BCM2835 armctrl interrupt controller, on a board where it is the guest's
        // (pending, FIQ control, enables and disables: no addresses, nothing of the
        // hypervisor's, which takes no interrupts).
        (reg::LEGACY_IRQ_START..reg::LEGACY_IRQ_END, false) if legacy_irq => Register::Read,
        (reg::LEGACY_IRQ_START..reg::LEGACY_IRQ_END, true) if legacy_irq => Register::Write,
        (reg::MAIL0_READ, false) => Register::Receive { peek: false },
        (reg::MAIL0_PEEK, false) => Register::Receive { peek: true },
        (reg::MAIL0_STATUS | reg::MAIL0_CONFIG | reg::MAIL1_STATUS, false) => Register::Read,
        (reg::MAIL0_CONFIG, true) => Register::Write,
        (reg::MAIL1_WRITE, true) => Register::Send,
        _ => Register::Refuse,
    }
}

/// The ARM physical address of a VideoCore bus address: the VideoCore sees the first GiB of
/// ARM RAM four times (cached and uncached aliases at 0, 0x4000_0000, 0x8000_0000,
/// 0xc000_0000).
pub const fn bus_to_phys(bus: u32) -> u64 {
    (bus & 0x3fff_ffff) as u64
}

/// The VideoCore's uncached-alias bus address of ARM RAM at `pa` (below 1 GiB), as the
/// device trees' `dma-ranges` give it.
pub const fn phys_to_bus(pa: u64) -> u32 {
    (pa as u32 & 0x3fff_ffff) | 0xc000_0000
}

/// Property tags the guest may use: what Linux's firmware drivers ask (firmware and board
/// information, clocks, voltages, temperatures, power domains, the firmware GPIO expander, the
/// PoE HAT fan, reboot notice) and the read-only framebuffer queries. Not on the list, among
/// others: the OTP private key and customer rows (read and write), code execution, GPU
/// memory allocation and locking, peripheral register access through the firmware, VCHIQ's
/// shared-memory set-up and the VL805 reset notice (all of which hand the VideoCore an address
/// to read or write, or reach the hypervisor's secret).
pub const ALLOWED_TAGS: &[u32] = &[
    0x0000_0001, // firmware revision
    0x0000_0002, // firmware variant
    0x0000_0003, // firmware hash
    0x0001_0001, // board model
    0x0001_0002, // board revision
    0x0001_0003, // board MAC address
    0x0001_0004, // board serial
    0x0001_0005, // ARM memory
    0x0001_0006, // VideoCore memory
    0x0001_0007, // clocks
    0x0002_0001, // get power state
    0x0002_0002, // get timing
    0x0002_8001, // set power state
    0x0003_0001, // get clock state
    0x0003_0002, // get clock rate
    0x0003_0003, // get voltage
    0x0003_0004, // get max clock rate
    0x0003_0005, // get max voltage
    0x0003_0006, // get temperature
    0x0003_0007, // get min clock rate
    0x0003_0008, // get min voltage
    0x0003_0009, // get turbo
    0x0003_000a, // get max temperature
    0x0003_0020, // get EDID block
    0x0003_0030, // get domain state
    0x0003_0041, // get GPIO state (firmware expander)
    0x0003_0043, // get GPIO config
    0x0003_0046, // get throttled
    0x0003_0047, // get measured clock rate
    0x0003_0048, // notify reboot
    0x0003_0049, // get PoE HAT value
    0x0003_0050, // set PoE HAT value
    0x0003_8001, // set clock state
    0x0003_8002, // set clock rate
    0x0003_8003, // set voltage
    0x0003_8009, // set turbo
    0x0003_8030, // set domain state
    0x0003_8041, // set GPIO state
    0x0003_8043, // set GPIO config
    0x0004_0002, // framebuffer: blank screen
    0x0004_0003, // framebuffer: get physical size
    0x0004_0004, // framebuffer: get virtual size
    0x0004_0005, // framebuffer: get depth
    0x0004_0006, // framebuffer: get pixel order
    0x0004_0007, // framebuffer: get alpha mode
    0x0004_0008, // framebuffer: get pitch
    0x0004_0009, // framebuffer: get virtual offset
    0x0004_000a, // framebuffer: get overscan
    0x0004_0013, // framebuffer: get number of displays
    0x0005_0001, // get command line
    0x0006_0001, // get DMA channels
];

/// The OTP private-key rows (56-63): read.
pub const TAG_GET_PRIVATE_KEY: u32 = 0x0003_0081;
/// The OTP private-key rows: program (one-time: bits only ever go from 0 to 1).
pub const TAG_SET_PRIVATE_KEY: u32 = 0x0003_8081;
/// The customer OTP rows (36-43): read (`start, count` then the rows).
pub const TAG_GET_CUSTOMER_OTP: u32 = 0x0003_0021;
/// The customer OTP rows: program.
pub const TAG_SET_CUSTOMER_OTP: u32 = 0x0003_8021;

/// Whether the guest may use `tag`.
pub fn allowed(tag: u32) -> bool {
    ALLOWED_TAGS.contains(&tag)
}

/// Why a guest's message is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageError {
    /// Its size word is not a multiple of 4 between 12 bytes and [`MAX_MESSAGE`], or disagrees
    /// with the bytes given.
    BadSize,
    /// Its code word is not 0 (a request).
    NotARequest,
    /// A tag runs past the end, or no end tag.
    Malformed,
    /// More than [`MAX_TAGS`] tags.
    TooManyTags,
}

/// One forwarded tag: where it sits in the guest's message and in the copy, and its value
/// buffer's size (rounded up to whole words).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Forward {
    guest: usize,
    copy: usize,
    value: usize,
}

/// A message as forwarded: the copy's length and where each allowed tag went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// Bytes of the copy (its size word).
    pub len: usize,
    tags: Vec<Forward, MAX_TAGS>,
    /// Tags refused (left unanswered in the guest's buffer).
    pub refused: usize,
}

fn word(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn put(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The size word of a message whose first bytes are `head`, if it is acceptable.
pub fn message_size(head: [u8; 4]) -> Result<usize, MessageError> {
    let size = u32::from_le_bytes(head) as usize;
    if !(12..=MAX_MESSAGE).contains(&size) || !size.is_multiple_of(4) {
        return Err(MessageError::BadSize);
    }
    Ok(size)
}

/// Copy the guest's message `msg` (exactly its size word's bytes, already in hypervisor
/// memory) into `out` with only the allowed tags, ending with the end tag. `out` must hold
/// [`MAX_MESSAGE`] bytes.
pub fn sanitize(msg: &[u8], out: &mut [u8]) -> Result<Forwarded, MessageError> {
    let size = message_size(
        msg.get(..4)
            .ok_or(MessageError::BadSize)?
            .try_into()
            .unwrap(),
    )?;
    if size != msg.len() || out.len() < MAX_MESSAGE {
        return Err(MessageError::BadSize);
    }
    if word(msg, 4) != Some(0) {
        return Err(MessageError::NotARequest);
    }
    let mut f = Forwarded {
        len: 0,
        tags: Vec::new(),
        refused: 0,
    };
    let (mut at, mut to) = (8, 8);
    loop {
        let id = word(msg, at).ok_or(MessageError::Malformed)?;
        if id == 0 {
            break;
        }
        let declared = word(msg, at + 4).ok_or(MessageError::Malformed)? as usize;
        let value = declared.div_ceil(4) * 4;
        let end = at
            .checked_add(12)
            .and_then(|a| a.checked_add(value))
            .filter(|&e| e <= size)
            .ok_or(MessageError::Malformed)?;
        if allowed(id) {
            // Room for this tag and the end tag is guaranteed: the copy is never longer than
            // the message.
            out[to..to + (end - at)].copy_from_slice(&msg[at..end]);
            // The request/response word starts as "request".
            put(out, to + 8, 0);
            f.tags
                .push(Forward {
                    guest: at,
                    copy: to,
                    value,
                })
                .map_err(|_| MessageError::TooManyTags)?;
            to += end - at;
        } else {
            f.refused += 1;
        }
        at = end;
    }
    put(out, to, 0);
    f.len = to + 4;
    put(out, 0, f.len as u32);
    put(out, 4, 0);
    Ok(f)
}

/// Copy the firmware's answers from the forwarded `copy` back into the guest's message
/// `guest` (the bytes the guest sent): the message's code word, and each forwarded tag's
/// response word and value; a refused tag keeps its request, unanswered.
pub fn complete(guest: &mut [u8], copy: &[u8], f: &Forwarded) {
    guest[4..8].copy_from_slice(&copy[4..8]);
    for t in &f.tags {
        let n = 4 + t.value;
        guest[t.guest + 8..t.guest + 8 + n].copy_from_slice(&copy[t.copy + 8..t.copy + 8 + n]);
    }
}

/// Words of the hypervisor's own OTP messages.
pub const OTP_MESSAGE_WORDS: usize = 16;

/// Which eight OTP rows hold the device secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpRows {
    /// The private-key rows 56-63 (BCM2711 firmware).
    PrivateKey,
    /// The customer rows 36-43 (every Pi's firmware; the BCM2837 has no private-key rows).
    Customer,
}

impl OtpRows {
    /// The property tags reading and programming the rows.
    pub const fn tags(self) -> (u32, u32) {
        match self {
            OtpRows::PrivateKey => (TAG_GET_PRIVATE_KEY, TAG_SET_PRIVATE_KEY),
            OtpRows::Customer => (TAG_GET_CUSTOMER_OTP, TAG_SET_CUSTOMER_OTP),
        }
    }
}

/// The message reading (`write` None) or programming the eight rows of `rows`.
pub fn otp_message(rows: OtpRows, write: Option<&[u8; 32]>) -> [u32; OTP_MESSAGE_WORDS] {
    let mut m = [0u32; OTP_MESSAGE_WORDS];
    m[0] = (OTP_MESSAGE_WORDS * 4) as u32;
    let (get, set) = rows.tags();
    m[2] = if write.is_some() { set } else { get };
    // Value buffer: first row, row count, the rows.
    m[3] = 40;
    m[5] = 0;
    m[6] = 8;
    if let Some(key) = write {
        for (w, c) in m[7..15].iter_mut().zip(key.chunks(4)) {
            *w = u32::from_le_bytes(c.try_into().unwrap());
        }
    }
    m
}

/// Why an OTP message failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtpError {
    /// The firmware did not answer the message (no mailbox, or a parse error).
    NoAnswer,
    /// The firmware does not know the tag (its response bit is clear): no OTP key support.
    Unsupported,
}

/// The eight rows from the answer to `otp_message(_, None)`.
pub fn otp_key(answer: &[u32; OTP_MESSAGE_WORDS]) -> Result<[u8; 32], OtpError> {
    if answer[1] != RESPONSE {
        return Err(OtpError::NoAnswer);
    }
    if answer[4] & RESPONSE == 0 || answer[4] & !RESPONSE < 40 || answer[6] != 8 {
        return Err(OtpError::Unsupported);
    }
    let mut key = [0u8; 32];
    for (c, w) in key.chunks_mut(4).zip(&answer[7..15]) {
        c.copy_from_slice(&w.to_le_bytes());
    }
    Ok(key)
}

/// Whether the firmware accepted a programming message.
pub fn otp_written(answer: &[u32; OTP_MESSAGE_WORDS]) -> Result<(), OtpError> {
    if answer[1] != RESPONSE {
        return Err(OtpError::NoAnswer);
    }
    if answer[4] & RESPONSE == 0 {
        return Err(OtpError::Unsupported);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A message of `(tag, value words)` in the firmware's layout, with `pad` spare bytes.
    fn message(tags: &[(u32, &[u32])]) -> std::vec::Vec<u8> {
        let mut w: std::vec::Vec<u32> = vec![0, 0];
        for (id, v) in tags {
            w.extend([*id, (v.len() * 4) as u32, 0]);
            w.extend_from_slice(v);
        }
        w.push(0);
        w[0] = (w.len() * 4) as u32;
        w.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn words(b: &[u8]) -> std::vec::Vec<u32> {
        b.chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn the_private_key_tags_are_never_forwarded_and_benign_tags_are() {
        assert!(!allowed(TAG_GET_PRIVATE_KEY) && !allowed(TAG_SET_PRIVATE_KEY));
        for refused in [
            0x0003_8021,
            0x0003_0010,
            0x0003_000c,
            0x0003_000d,
            0x0004_8010,
        ] {
            assert!(!allowed(refused), "{refused:#x}");
        }
        let msg = message(&[
            (0x0000_0001, &[0]),
            (TAG_GET_PRIVATE_KEY, &[0, 8, 0, 0, 0, 0, 0, 0, 0, 0]),
            (0x0001_0004, &[0, 0]),
        ]);
        let mut copy = [0u8; MAX_MESSAGE];
        let f = sanitize(&msg, &mut copy).unwrap();
        assert_eq!(f.refused, 1);
        // Header, firmware revision (3+1 words), serial (3+2), end tag.
        assert_eq!(
            words(&copy[..f.len]),
            [48, 0, 1, 4, 0, 0, 0x0001_0004, 8, 0, 0, 0, 0]
        );
        // The firmware answers the forwarded tags; the copy-back leaves the key tag unanswered.
        let mut answered = copy;
        put(&mut answered, 4, RESPONSE);
        put(&mut answered, 16, RESPONSE | 4);
        put(&mut answered, 20, 0x5f00_0000);
        put(&mut answered, 32, RESPONSE | 8);
        put(&mut answered, 36, 0x1234_5678);
        let mut guest = msg.clone();
        complete(&mut guest, &answered, &f);
        let g = words(&guest);
        assert_eq!(g[1], RESPONSE);
        assert_eq!((g[4], g[5]), (RESPONSE | 4, 0x5f00_0000));
        // The key tag: request word still 0, its rows untouched (zero).
        assert_eq!(g[6], TAG_GET_PRIVATE_KEY);
        assert_eq!(g[8], 0);
        assert!(g[9..19].iter().all(|&w| w == 0 || w == 8));
        assert_eq!(g[19], 0x0001_0004);
        assert_eq!((g[21], g[22]), (RESPONSE | 8, 0x1234_5678));
    }

    #[test]
    fn malformed_messages_are_refused() {
        let mut copy = [0u8; MAX_MESSAGE];
        let ok = message(&[(1, &[0])]);
        assert!(sanitize(&ok, &mut copy).is_ok());
        // Size word that disagrees, odd, too small, too big.
        let mut m = ok.clone();
        put(&mut m, 0, 32);
        assert_eq!(sanitize(&m, &mut copy), Err(MessageError::BadSize));
        assert_eq!(message_size(8u32.to_le_bytes()), Err(MessageError::BadSize));
        assert_eq!(
            message_size(4096u32.to_le_bytes()),
            Err(MessageError::BadSize)
        );
        assert_eq!(
            message_size(30u32.to_le_bytes()),
            Err(MessageError::BadSize)
        );
        // A response posted as a request.
        let mut m = ok.clone();
        put(&mut m, 4, RESPONSE);
        assert_eq!(sanitize(&m, &mut copy), Err(MessageError::NotARequest));
        // A tag whose value runs past the end; no end tag.
        let mut m = ok.clone();
        put(&mut m, 12, 0x100);
        assert_eq!(sanitize(&m, &mut copy), Err(MessageError::Malformed));
        let mut m = ok;
        put(&mut m, 24, 1);
        assert_eq!(sanitize(&m, &mut copy), Err(MessageError::Malformed));
    }

    #[test]
    fn the_register_policy_allows_only_the_property_mailbox() {
        assert_eq!(
            register(reg::MAIL0_READ, 4, false, false),
            Register::Receive { peek: false }
        );
        assert_eq!(register(reg::MAIL1_WRITE, 4, true, false), Register::Send);
        assert_eq!(register(reg::MAIL0_STATUS, 4, false, false), Register::Read);
        assert_eq!(register(reg::MAIL0_CONFIG, 4, true, false), Register::Write);
        // Writes to mailbox 0, reads of MAIL1_WRITE, VCHIQ doorbells, the legacy interrupt
        // controller, narrow accesses.
        assert_eq!(register(reg::MAIL0_READ, 4, true, false), Register::Refuse);
        assert_eq!(register(0x840, 4, true, false), Register::Refuse);
        assert_eq!(register(0x200, 4, false, false), Register::Refuse);
        // On the Pi 3 the page also holds the guest's interrupt controller: passed through.
        assert_eq!(register(0x200, 4, false, true), Register::Read);
        assert_eq!(register(0x218, 4, true, true), Register::Write);
        assert_eq!(register(0x228, 4, true, true), Register::Refuse);
        assert_eq!(register(0x840, 4, true, true), Register::Refuse);
        assert_eq!(
            register(reg::MAIL0_STATUS, 1, false, false),
            Register::Refuse
        );
        assert_eq!(
            register(reg::MAIL0_STATUS + 2, 4, false, false),
            Register::Refuse
        );
    }

    #[test]
    fn otp_messages_known_answer() {
        let key: [u8; 32] = core::array::from_fn(|i| i as u8);
        let m = otp_message(OtpRows::PrivateKey, Some(&key));
        assert_eq!(
            m,
            [
                64,
                0,
                0x0003_8081,
                40,
                0,
                0,
                8,
                0x0302_0100,
                0x0706_0504,
                0x0b0a_0908,
                0x0f0e_0d0c,
                0x1312_1110,
                0x1716_1514,
                0x1b1a_1918,
                0x1f1e_1d1c,
                0
            ]
        );
        let mut answer = m;
        answer[1] = RESPONSE;
        answer[4] = RESPONSE | 40;
        assert_eq!(otp_key(&answer), Ok(key));
        assert_eq!(otp_written(&answer), Ok(()));
        // Unanswered: no firmware, or a firmware without the tag.
        answer[4] = 0;
        assert_eq!(otp_key(&answer), Err(OtpError::Unsupported));
        answer[1] = 0x8000_0001;
        assert_eq!(otp_key(&answer), Err(OtpError::NoAnswer));
        let read = otp_message(OtpRows::PrivateKey, None);
        assert_eq!(read[2], TAG_GET_PRIVATE_KEY);
        assert!(read[7..].iter().all(|&w| w == 0));
        // The Pi 3's rows: the customer OTP tags, the same layout.
        let c = otp_message(OtpRows::Customer, Some(&key));
        assert_eq!((c[2], c[7]), (0x0003_8021, 0x0302_0100));
        assert_eq!(otp_message(OtpRows::Customer, None)[2], 0x0003_0021);
        assert!(!ALLOWED_TAGS.contains(&TAG_GET_CUSTOMER_OTP));
        assert_eq!(bus_to_phys(phys_to_bus(0x0012_3440)), 0x0012_3440);
        assert_eq!(phys_to_bus(0x0012_3440), 0xc012_3440);
    }

    proptest! {
        /// Any bytes: never a panic; what is forwarded is well formed, no longer than the
        /// message, holds only allowed tags, and the copy-back stays in the guest's bytes.
        #[test]
        fn any_message_is_refused_or_forwarded_well_formed(
            body in proptest::collection::vec(any::<u32>(), 0..64),
            tags in proptest::collection::vec((0usize..ALLOWED_TAGS.len() + 3, 0u32..24), 0..8),
        ) {
            let mut copy = [0u8; MAX_MESSAGE];
            let mut raw: std::vec::Vec<u8> = body.iter().flat_map(|x| x.to_le_bytes()).collect();
            raw.truncate(MAX_MESSAGE);
            if raw.len() >= 4 {
                let n = raw.len() as u32;
                raw[..4].copy_from_slice(&n.to_le_bytes());
            }
            let _ = sanitize(&raw, &mut copy);
            let built: std::vec::Vec<(u32, std::vec::Vec<u32>)> = tags
                .iter()
                .map(|&(i, n)| {
                    let id = ALLOWED_TAGS.get(i).copied().unwrap_or(TAG_GET_PRIVATE_KEY + i as u32);
                    (id, vec![7; n as usize])
                })
                .collect();
            let refs: std::vec::Vec<(u32, &[u32])> =
                built.iter().map(|(i, v)| (*i, v.as_slice())).collect();
            let msg = message(&refs);
            let f = sanitize(&msg, &mut copy).unwrap();
            prop_assert!(f.len <= msg.len());
            let mut at = 8;
            while word(&copy, at) != Some(0) {
                let id = word(&copy, at).unwrap();
                prop_assert!(allowed(id));
                at += 12 + word(&copy, at + 4).unwrap() as usize;
            }
            prop_assert_eq!(at + 4, f.len);
            let mut guest = msg.clone();
            complete(&mut guest, &copy, &f);
            prop_assert_eq!(guest.len(), msg.len());
        }
    }
}
