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
    let unprovisioned = secret == [0; 32];
    let keys = KeyHierarchy::derive(&DeviceSecret::new(secret));
    secret.zeroize();
    (keys, unprovisioned)
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
/// without storage of its own. 1 without a running clock (every reboot then reads as a counter
/// rollback to the controller; docs/quote-format.md).
pub fn boot_counter(clock_seconds: Option<u32>) -> u64 {
    match clock_seconds {
        Some(s) if s > 0 => s as u64,
        _ => 1,
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
    fn the_boot_counter_is_the_clock_or_one() {
        assert_eq!(boot_counter(Some(1_764_000_000)), 1_764_000_000);
        assert_eq!(boot_counter(Some(0)), 1);
        assert_eq!(boot_counter(None), 1);
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
