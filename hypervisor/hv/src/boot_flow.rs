//! The arch-neutral steps of the primary CPU's boot: the provisioned secrets read from the
//! image, the boot counter, the per-boot entropy, the monitor's creation and the measured boot.
//!
//! The architecture's `main` supplies what only it can (the image's bytes, the clock, the CPU's
//! random numbers, the device tree) and does the hardware steps between these; everything here is
//! host-tested, so the order and content of the measurements, and the refusal of a bad
//! provisioned key, do not depend on which architecture boots.

use gw_core::{Config, Monitor};
use vtpm::{
    BootEntropy, ComponentKind, DeviceSecret, Digest, KeyHierarchy, MonitorIdentity, MonitorKind,
    pcr::{
        PCR_GUEST_CMDLINE, PCR_GUEST_DTB, PCR_GUEST_INITRAMFS, PCR_GUEST_KERNEL, PCR_HYPERVISOR,
    },
};
use zeroize::Zeroize;

/// Why the boot stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootError {
    /// The provisioned controller key is not a valid, strong ed25519 key.
    BadControllerKey,
    /// A boot measurement could not be recorded.
    MeasurementFailed,
}

impl BootError {
    /// What the console says.
    pub const fn message(self) -> &'static str {
        match self {
            BootError::BadControllerKey => {
                "the provisioned controller key is not a valid ed25519 key"
            }
            BootError::MeasurementFailed => "measured boot failed",
        }
    }
}

/// The key hierarchy from a provisioned slot (`GWSECRT1` and 32 bytes, patched into the image
/// by `cargo xtask image`), and whether the image is unprovisioned (all-zero secret). The slot's
/// copy is wiped.
pub fn key_hierarchy(slot: &mut [u8; 40]) -> (KeyHierarchy, bool) {
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&slot[8..]);
    slot.zeroize();
    let found = keys_from(&DeviceSecret::new(secret));
    secret.zeroize();
    found
}

/// Bytes as lowercase hex, for the console.
pub struct Hex<'a>(pub &'a [u8]);

impl core::fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// Where this boot's device secret came from (`otp_secret`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOrigin {
    /// Read from the board's OTP.
    Otp,
    /// The OTP was blank: a secret was generated from this boot's entropy, programmed and read
    /// back (the board's first boot).
    Provisioned,
    /// No secret: the all-zero development secret, and why.
    Unprovisioned(&'static str),
}

/// Why the OTP could not be read or written (`arch` reports it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OtpFailed;

/// The device secret of a board that keeps it in OTP: `read` gives the stored rows (all zero
/// when blank); a blank store gets a secret generated from `entropy` and written with
/// `program` (which reads it back), but only when a source other than the counter
/// (`counter_label`) gave bytes, since an OTP secret is written once and for the board's life.
/// Anything else leaves the board unprovisioned (all-zero secret, announced by the caller).
pub fn otp_secret(
    read: impl FnOnce() -> Result<[u8; 32], OtpFailed>,
    entropy: &BootEntropy<'_>,
    counter_label: &str,
    program: impl FnOnce(&[u8; 32]) -> Result<(), OtpFailed>,
) -> (DeviceSecret, SecretOrigin) {
    let blank = || DeviceSecret::new([0; 32]);
    match read() {
        Err(OtpFailed) => (
            blank(),
            SecretOrigin::Unprovisioned("the OTP does not answer through the mailbox"),
        ),
        Ok(mut rows) if rows != [0; 32] => {
            let secret = DeviceSecret::new(rows);
            rows.zeroize();
            (secret, SecretOrigin::Otp)
        }
        Ok(_) if !entropy.has_unpredictable(counter_label) => (
            blank(),
            SecretOrigin::Unprovisioned(
                "the OTP is blank and this boot has no entropy source to generate a secret from",
            ),
        ),
        Ok(_) => {
            let fresh = entropy.fresh_device_secret();
            match program(fresh.as_bytes()) {
                Ok(()) => (fresh, SecretOrigin::Provisioned),
                Err(OtpFailed) => (
                    blank(),
                    SecretOrigin::Unprovisioned("programming the blank OTP failed"),
                ),
            }
        }
    }
}

/// The key hierarchy from a device secret, and whether it is the unprovisioned (all-zero) one.
pub fn keys_from(secret: &DeviceSecret) -> (KeyHierarchy, bool) {
    (KeyHierarchy::derive(secret), secret.is_blank())
}

/// The controller's command key from its provisioned slot (`GWCTRLK1` and 32 bytes): `None`
/// when all zero (not provisioned), refused when not a valid ed25519 point or a weak one.
pub fn controller_key(slot: &[u8; 40]) -> Result<Option<ed25519_dalek::VerifyingKey>, BootError> {
    let mut k = [0u8; 32];
    k.copy_from_slice(&slot[8..]);
    if k == [0; 32] {
        return Ok(None);
    }
    match ed25519_dalek::VerifyingKey::from_bytes(&k) {
        Ok(key) if !key.is_weak() => Ok(Some(key)),
        _ => Err(BootError::BadControllerKey),
    }
}

/// The quote's boot counter from the board clock's seconds at boot: it grows across reboots
/// without storage of its own. 0 without a running clock ([`vtpm::NO_BOOT_COUNTER`]:
/// the controller then takes a quote counter that starts over as a reboot;
/// docs/quote-format.md).
pub fn boot_counter(clock_seconds: Option<u32>) -> u64 {
    match clock_seconds {
        Some(s) if s > 0 => s as u64,
        _ => vtpm::NO_BOOT_COUNTER,
    }
}

/// Per-boot inputs, each possibly empty: the loader's seeds, the CPU's random number, the
/// counter.
#[derive(Debug, Clone, Copy)]
pub struct EntropyInputs<'a> {
    /// `/chosen/rng-seed`.
    pub rng_seed: &'a [u8],
    /// `/chosen/kaslr-seed`.
    pub kaslr_seed: &'a [u8],
    /// RNDR's output, if the CPU has it.
    pub rndr: &'a [u8],
    /// The SoC's random number generator's output (RNG200), if it has one and it answered.
    pub soc_rng: &'a [u8],
    /// The CPU's counter (predictable; always there).
    pub counter: &'a [u8],
}

/// What the board data says the board offers.
#[derive(Debug, Clone, Copy)]
pub struct ExpectedEntropy {
    /// The loader's seeds.
    pub dtb_seeds: bool,
    /// The CPU's RNDR.
    pub rndr: bool,
    /// The SoC's random number generator.
    pub soc_rng: bool,
}

/// The boot's entropy from every input present, and the console's warnings: each source the
/// board data expects but this boot lacks, and a boot with nothing unpredictable at all.
pub fn boot_entropy<'a>(
    i: &EntropyInputs<'a>,
    expected: ExpectedEntropy,
    mut warn: impl FnMut(&str),
) -> BootEntropy<'a> {
    let mut e = BootEntropy::default();
    e.add("dtb:rng-seed", i.rng_seed)
        .add("dtb:kaslr-seed", i.kaslr_seed)
        .add("rndr", i.rndr)
        .add("soc-rng", i.soc_rng)
        .add("cntpct", i.counter);
    // A source that gives nothing is a loader or CPU that is not what the board data describes.
    if expected.dtb_seeds && i.rng_seed.is_empty() && i.kaslr_seed.is_empty() {
        warn("the board data expects the loader's rng-seed/kaslr-seed, and this boot has none");
    }
    if expected.rndr && i.rndr.is_empty() {
        warn("the board data expects the CPU's RNDR, and this boot has none");
    }
    if expected.soc_rng && i.soc_rng.is_empty() {
        warn("the board data expects the SoC's random number generator, and it gave nothing");
    }
    if !e.has_unpredictable("cntpct") {
        warn(
            "no per-boot entropy source (no loader seeds, no RNDR, no SoC RNG): this boot's hop \
             keys differ from the last boot's only by the counter",
        );
    }
    e
}

/// The digests of what the boot measures.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// The hypervisor's measured image (code and read-only data).
    pub hypervisor: Digest,
    /// The guest kernel.
    pub kernel: Digest,
    /// The guest initramfs.
    pub initramfs: Digest,
    /// The guest's device tree (seeds taken out, padding zeroed).
    pub dtb: Digest,
    /// The guest kernel's command line.
    pub cmdline: Digest,
}

/// Create the monitor and record the measured boot into PCRs 1 and 3–6, in that order (the
/// event log the controller replays).
pub fn start_monitor<const LOG: usize, const SLOTS: usize>(
    keys: &KeyHierarchy,
    arch: &str,
    boot_counter: u64,
    controller_key: Option<ed25519_dalek::VerifyingKey>,
    hop_master: [u8; 32],
    d: &Measured,
) -> Result<Monitor<LOG, SLOTS>, BootError> {
    let version = env!("CARGO_PKG_VERSION");
    let mut name: heapless::String<64> = heapless::String::new();
    // "gatewarden-hv <version> <arch>"; a name too long for the buffer is cut, not refused.
    for part in ["gatewarden-hv ", version, " ", arch] {
        for c in part.chars() {
            let _ = name.push(c);
        }
    }
    let mut m = Monitor::new(Config {
        keys,
        identity: MonitorIdentity::new(MonitorKind::Hypervisor, &name, d.hypervisor),
        boot_counter,
        controller_key,
        hop_master,
    });
    let measured = [
        (
            PCR_HYPERVISOR,
            d.hypervisor,
            ComponentKind::Hypervisor,
            "gatewarden-hv",
            version,
        ),
        (
            PCR_GUEST_KERNEL,
            d.kernel,
            ComponentKind::GuestKernel,
            "kernel",
            "",
        ),
        (
            PCR_GUEST_INITRAMFS,
            d.initramfs,
            ComponentKind::GuestInitramfs,
            "initramfs",
            "",
        ),
        (
            PCR_GUEST_DTB,
            d.dtb,
            ComponentKind::GuestDtb,
            "device-tree",
            "",
        ),
        (
            PCR_GUEST_CMDLINE,
            d.cmdline,
            ComponentKind::GuestCmdline,
            "cmdline",
            "",
        ),
    ];
    for (pcr, digest, kind, what, ver) in measured {
        m.measure(pcr, &digest, kind, what, ver)
            .map_err(|_| BootError::MeasurementFailed)?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(marker: &[u8; 8], v: [u8; 32]) -> [u8; 40] {
        let mut s = [0u8; 40];
        s[..8].copy_from_slice(marker);
        s[8..].copy_from_slice(&v);
        s
    }

    #[test]
    fn provisioned_slots_are_read_and_wiped() {
        let mut s = slot(b"GWSECRT1", [7; 32]);
        let (a, unprovisioned) = key_hierarchy(&mut s);
        assert!(!unprovisioned);
        assert_eq!(s, [0; 40], "the image's copy is wiped");
        let (b, _) = key_hierarchy(&mut slot(b"GWSECRT1", [7; 32]));
        let (c, zero) = key_hierarchy(&mut slot(b"GWSECRT1", [0; 32]));
        assert!(zero);
        // The same secret gives the same hierarchy; another gives another.
        assert_eq!(
            a.attestation_key().verifying_key(),
            b.attestation_key().verifying_key()
        );
        assert_ne!(
            a.attestation_key().verifying_key(),
            c.attestation_key().verifying_key()
        );
    }

    #[test]
    fn a_bad_controller_key_stops_the_boot_and_a_good_one_is_taken() {
        assert_eq!(controller_key(&slot(b"GWCTRLK1", [0; 32])), Ok(None));
        let good = ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key();
        assert_eq!(
            controller_key(&slot(b"GWCTRLK1", good.to_bytes())),
            Ok(Some(good))
        );
        // The identity point (a weak key: every signature by a small-order key verifies).
        let mut weak = [0u8; 32];
        weak[0] = 1;
        assert_eq!(
            controller_key(&slot(b"GWCTRLK1", weak)),
            Err(BootError::BadControllerKey)
        );
    }

    #[test]
    fn a_blank_otp_is_provisioned_once_and_only_from_real_entropy() {
        use core::cell::RefCell;
        let otp = RefCell::new([0u8; 32]);
        let writes = RefCell::new(0);
        let read = || Ok(*otp.borrow());
        let program = |k: &[u8; 32]| {
            *writes.borrow_mut() += 1;
            // One-time programmable: bits only go from 0 to 1.
            let mut o = otp.borrow_mut();
            for (b, n) in o.iter_mut().zip(k) {
                *b |= n;
            }
            Ok(())
        };
        // Only the counter: refused, nothing written.
        let counter = 42u64.to_le_bytes();
        let mut weak = BootEntropy::default();
        weak.add("cntpct", &counter);
        let (s, o) = otp_secret(read, &weak, "cntpct", program);
        assert!(matches!(o, SecretOrigin::Unprovisioned(_)) && s.is_blank());
        assert_eq!(*writes.borrow(), 0);
        // A firmware seed: a secret is generated and written once.
        let seed = [7u8; 64];
        let mut strong = BootEntropy::default();
        strong.add("dtb:rng-seed", &seed).add("cntpct", &counter);
        let (first, o) = otp_secret(read, &strong, "cntpct", program);
        assert_eq!(o, SecretOrigin::Provisioned);
        assert!(!first.is_blank());
        assert_eq!(&*otp.borrow(), first.as_bytes());
        // Next boot, other entropy: the OTP's secret, nothing written again.
        let other = [9u8; 64];
        let mut next = BootEntropy::default();
        next.add("dtb:rng-seed", &other);
        let (again, o) = otp_secret(read, &next, "cntpct", program);
        assert_eq!((o, again.as_bytes()), (SecretOrigin::Otp, first.as_bytes()));
        assert_eq!(*writes.borrow(), 1);
        // The keys follow the secret.
        let (k1, blank1) = keys_from(&first);
        let (k2, _) = keys_from(&again);
        assert!(!blank1);
        assert_eq!(
            k1.attestation_key().verifying_key(),
            k2.attestation_key().verifying_key()
        );
        // Another board (blank OTP, other seed) gets another secret.
        let (other_board, _) = otp_secret(|| Ok([0; 32]), &next, "cntpct", |_| Ok(()));
        assert_ne!(other_board.as_bytes(), first.as_bytes());
        // A mailbox that does not answer, or a write that fails: unprovisioned.
        let (s, o) = otp_secret(|| Err(OtpFailed), &strong, "cntpct", |_| Ok(()));
        assert!(matches!(o, SecretOrigin::Unprovisioned(_)) && s.is_blank());
        let (s, o) = otp_secret(|| Ok([0; 32]), &strong, "cntpct", |_| Err(OtpFailed));
        assert!(matches!(o, SecretOrigin::Unprovisioned(_)) && s.is_blank());
    }

    #[test]
    fn the_boot_counter_is_the_clock_or_none() {
        assert_eq!(boot_counter(Some(1_764_000_000)), 1_764_000_000);
        assert_eq!(boot_counter(Some(0)), 0);
        assert_eq!(boot_counter(None), 0);
    }

    #[test]
    fn missing_entropy_is_warned_about() {
        let warnings = |i: EntropyInputs<'_>, e: ExpectedEntropy| {
            let mut w = Vec::new();
            boot_entropy(&i, e, |s| w.push(s.to_owned()));
            w
        };
        let counter = 5u64.to_le_bytes();
        let none = EntropyInputs {
            rng_seed: &[],
            kaslr_seed: &[],
            rndr: &[],
            soc_rng: &[],
            counter: &counter,
        };
        let seeds = EntropyInputs {
            rng_seed: &[1; 32],
            kaslr_seed: &[2; 8],
            ..none
        };
        let both = ExpectedEntropy {
            dtb_seeds: true,
            rndr: true,
            soc_rng: false,
        };
        let w = warnings(none, both);
        assert_eq!(w.len(), 3, "{w:?}");
        let w = warnings(seeds, both);
        assert!(w.len() == 1 && w[0].contains("RNDR"), "{w:?}");
        // A Raspberry Pi whose RNG200 gives nothing (QEMU does not model it) and whose loader
        // passes no seeds: both named, and the boot has only the counter.
        let pi = ExpectedEntropy {
            dtb_seeds: true,
            rndr: false,
            soc_rng: true,
        };
        let w = warnings(none, pi);
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w[1].contains("SoC's random number generator") && w[2].contains("only by the counter")
        );
        // Its benign twin: the RNG answered, so only the missing seeds are named.
        let rng = EntropyInputs {
            soc_rng: &[9; 32],
            ..none
        };
        let w = warnings(rng, pi);
        assert!(w.len() == 1 && w[0].contains("rng-seed"), "{w:?}");
        // The benign twin: what the board data expects is there, nothing to say.
        let w = warnings(
            seeds,
            ExpectedEntropy {
                dtb_seeds: true,
                rndr: false,
                soc_rng: false,
            },
        );
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn the_measured_boot_is_five_events_in_pcr_order() {
        let (keys, _) = key_hierarchy(&mut slot(b"GWSECRT1", [3; 32]));
        let d = Measured {
            hypervisor: [1; 32],
            kernel: [2; 32],
            initramfs: [3; 32],
            dtb: [4; 32],
            cmdline: [5; 32],
        };
        let m = start_monitor::<64, 4>(&keys, "aarch64", 7, None, [0; 32], &d).unwrap();
        let log = m.vtpm().log().entries();
        let pcrs: Vec<u16> = log.iter().map(|e| e.pcr.into()).collect();
        assert_eq!(
            pcrs,
            [
                PCR_HYPERVISOR,
                PCR_GUEST_KERNEL,
                PCR_GUEST_INITRAMFS,
                PCR_GUEST_DTB,
                PCR_GUEST_CMDLINE
            ]
        );
        let names: Vec<&str> = log.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "gatewarden-hv",
                "kernel",
                "initramfs",
                "device-tree",
                "cmdline"
            ]
        );
        assert_eq!(log[1].digest, [2; 32]);
        // A log too small for the five events stops the boot.
        assert!(matches!(
            start_monitor::<4, 4>(&keys, "aarch64", 7, None, [0; 32], &d),
            Err(BootError::MeasurementFailed)
        ));
    }
}
