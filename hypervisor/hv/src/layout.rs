//! Where the guest goes in RAM: the guest's share of memory, and the arm64 boot protocol's
//! placement of its kernel, initramfs and device tree.
//!
//! Everything here comes from inputs the guest may control: the device tree's `/memory` node
//! and the guest bundle (on the Raspberry Pis both sit on the SD card, which guest root can
//! rewrite). So every sum is checked, and a placement is accepted only when each part lies
//! inside guest RAM, above the hypervisor's reservation, without overlapping another part.
//! A release build wraps on overflow; none of this code may rely on that not happening.

use crate::bundle::Parts;

/// The arm64 boot protocol's base alignment for the kernel image.
pub const ALIGN_2M: u64 = 2 << 20;
/// Most RAM, from the RAM base, the hypervisor maps for itself and so gives the guest.
pub const MAX_RAM: u64 = 8 << 30;
/// Room reserved for the guest's device tree at the top of guest RAM.
pub const DTB_ROOM: u64 = 2 << 20;
/// `text_offset` the boot protocol assumes when a header's `image_size` is 0 (kernels before
/// 3.17).
pub const LEGACY_TEXT_OFFSET: u64 = 0x80000;

/// Why the guest cannot be placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoadError {
    /// The first RAM region does not start at the board's RAM base or does not extend past the
    /// hypervisor's reservation.
    BadRam,
    /// The bundle does not lie inside guest RAM.
    BundleOutsideGuest,
    /// The bundle's kernel is not an arm64 `Image` (too short, or no `ARM\x64` magic).
    NotArm64Image,
    /// The header's `text_offset` is not below 2 MiB or not 4 KiB aligned.
    BadTextOffset,
    /// The kernel would not end below the bundle (it would overwrite it, or wrap).
    KernelOverlapsBundle,
    /// No 2 MiB-aligned room for the device tree above the bundle.
    NoRoomForDtb,
    /// The device tree is larger than its room.
    DtbTooLarge,
}

impl LoadError {
    /// What the console says.
    pub fn message(self) -> &'static str {
        match self {
            LoadError::BadRam => {
                "the device tree's /memory does not cover the hypervisor's reservation"
            }
            LoadError::BundleOutsideGuest => "guest bundle outside guest RAM",
            LoadError::NotArm64Image => "bundle kernel is not an arm64 Image",
            LoadError::BadTextOffset => {
                "bundle kernel's text_offset is not a 4 KiB-aligned offset below 2 MiB"
            }
            LoadError::KernelOverlapsBundle => {
                "guest kernel would not end below the bundle: place the bundle higher in RAM"
            }
            LoadError::NoRoomForDtb => "no room for the device tree above the bundle",
            LoadError::DtbTooLarge => "device tree larger than 2 MiB",
        }
    }
}

/// Guest RAM: the first RAM region less the hypervisor's reservation at its start, and no more
/// than `max_ram` bytes of RAM in all (what the hypervisor's own map covers; RAM beyond it is
/// not given to the guest).
///
/// `ram` is `/memory`'s base and size; it must start at `ram_base` (where the hypervisor was
/// loaded) and reach beyond `ram_base + reserved`.
pub fn guest_ram(
    ram: (u64, u64),
    ram_base: u64,
    reserved: u64,
    max_ram: u64,
) -> Result<(u64, u64), LoadError> {
    let start = ram_base.checked_add(reserved).ok_or(LoadError::BadRam)?;
    if ram.0 != ram_base {
        return Err(LoadError::BadRam);
    }
    let end = ram_base
        .checked_add(ram.1.min(max_ram))
        .ok_or(LoadError::BadRam)?;
    if end <= start {
        return Err(LoadError::BadRam);
    }
    Ok((start, end - start))
}

/// Where each part of the guest goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Kernel load address (2 MiB-aligned base + `text_offset`).
    pub load: u64,
    /// End of the kernel's effective image (`image_size`, BSS included).
    pub kernel_end: u64,
    /// The initramfs, where the loader put it (inside the bundle).
    pub initrd: (u64, u64),
    /// Where the device tree is copied (2 MiB-aligned, at the top of guest RAM).
    pub dtb: u64,
}

/// An arm64 `Image` header's `text_offset` and effective image size.
///
/// `image_size` 0 means a kernel older than 3.17: `text_offset` is then 0x80000 whatever the
/// field says. The effective size is never less than the bytes present.
pub fn arm64_header(kernel: &[u8]) -> Result<(u64, u64), LoadError> {
    let field = |at: usize| -> Result<u64, LoadError> {
        let b: [u8; 8] = kernel
            .get(at..at + 8)
            .and_then(|s| s.try_into().ok())
            .ok_or(LoadError::NotArm64Image)?;
        Ok(u64::from_le_bytes(b))
    };
    if kernel.len() < 64 || &kernel[56..60] != b"ARM\x64" {
        return Err(LoadError::NotArm64Image);
    }
    let (text_offset, image_size) = match field(16)? {
        0 => (LEGACY_TEXT_OFFSET, 0),
        size => (field(8)?, size),
    };
    if text_offset >= ALIGN_2M || text_offset % 4096 != 0 {
        return Err(LoadError::BadTextOffset);
    }
    Ok((text_offset, image_size.max(kernel.len() as u64)))
}

/// Check that the loader's bundle range `[start, end)` is non-empty and inside guest RAM, before
/// anything reads it; returns the end of guest RAM.
pub fn bundle_in_guest(guest: (u64, u64), bundle: (u64, u64)) -> Result<u64, LoadError> {
    let guest_end = guest
        .0
        .checked_add(guest.1)
        .ok_or(LoadError::BundleOutsideGuest)?;
    let (b_start, b_end) = bundle;
    if b_start < guest.0 || b_end > guest_end || b_end <= b_start {
        return Err(LoadError::BundleOutsideGuest);
    }
    Ok(guest_end)
}

/// Place the guest: `guest` is guest RAM, `bundle` the loader's initrd range (physical), `parts`
/// the bundle's parsed layout, `kernel` the bundle's kernel bytes and `dtb_len` the device
/// tree's size.
///
/// The kernel goes at the first 2 MiB-aligned address of guest RAM plus its `text_offset` and
/// must end at or below the bundle; the device tree goes into the top 2 MiB-aligned 2 MiB of
/// guest RAM, above the bundle. Every address is checked to lie in guest RAM.
pub fn plan(
    guest: (u64, u64),
    bundle: (u64, u64),
    parts: &Parts,
    kernel: &[u8],
    dtb_len: usize,
) -> Result<Plan, LoadError> {
    let guest_end = bundle_in_guest(guest, bundle)?;
    let (b_start, b_end) = bundle;
    let b_len = b_end - b_start;
    if parts.kernel.end as u64 > b_len || parts.initrd.end as u64 > b_len {
        return Err(LoadError::BundleOutsideGuest);
    }
    let (text_offset, image_size) = arm64_header(kernel)?;
    let base = guest
        .0
        .checked_next_multiple_of(ALIGN_2M)
        .ok_or(LoadError::KernelOverlapsBundle)?;
    let load = base
        .checked_add(text_offset)
        .ok_or(LoadError::KernelOverlapsBundle)?;
    let kernel_end = load
        .checked_add(image_size)
        .ok_or(LoadError::KernelOverlapsBundle)?;
    if kernel_end > b_start {
        return Err(LoadError::KernelOverlapsBundle);
    }
    // Parts are offsets inside the bundle (checked above), so these sums stay below b_end.
    let initrd = (
        b_start + parts.initrd.start as u64,
        b_start + parts.initrd.end as u64,
    );
    if dtb_len as u64 > DTB_ROOM {
        return Err(LoadError::DtbTooLarge);
    }
    let dtb = guest_end
        .checked_sub(DTB_ROOM)
        .ok_or(LoadError::NoRoomForDtb)?
        & !(ALIGN_2M - 1);
    if dtb < b_end || dtb < guest.0 {
        return Err(LoadError::NoRoomForDtb);
    }
    Ok(Plan {
        load,
        kernel_end,
        initrd,
        dtb,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const RAM_BASE: u64 = 0x4000_0000;
    const RESERVED: u64 = 0x0100_0000;
    /// The qemu-virt image's guest RAM with 1 GiB.
    const GUEST: (u64, u64) = (0x4100_0000, 0x3f00_0000);
    const MAX_RAM: u64 = 8 << 30;

    fn kernel(text_offset: u64, image_size: u64, len: usize) -> Vec<u8> {
        let mut k = vec![0u8; len.max(64)];
        k[8..16].copy_from_slice(&text_offset.to_le_bytes());
        k[16..24].copy_from_slice(&image_size.to_le_bytes());
        k[56..60].copy_from_slice(b"ARM\x64");
        k
    }

    fn parts(kernel_len: usize, initrd_len: usize) -> Parts {
        let k = 4096..4096 + kernel_len;
        let i_start = k.end.next_multiple_of(4096);
        Parts {
            kernel: k,
            initrd: i_start..i_start + initrd_len,
        }
    }

    #[test]
    fn the_demo_images_layout() {
        assert_eq!(
            guest_ram((RAM_BASE, 1 << 30), RAM_BASE, RESERVED, MAX_RAM),
            Ok(GUEST)
        );
        let k = kernel(0, 40 << 20, 30 << 20);
        let p = parts(k.len(), 8 << 20);
        let bundle = (0x4800_0000, 0x4800_0000 + p.initrd.end as u64);
        let plan = plan(GUEST, bundle, &p, &k, 8192).unwrap();
        assert_eq!(plan.load, 0x4100_0000);
        assert_eq!(plan.kernel_end, 0x4100_0000 + (40 << 20));
        assert_eq!(plan.initrd.0, 0x4800_0000 + p.initrd.start as u64);
        assert_eq!(plan.dtb, 0x7fe0_0000);
    }

    #[test]
    fn hostile_headers_are_refused() {
        let p = parts(1 << 20, 4096);
        let bundle = (0x4800_0000, 0x4800_0000 + p.initrd.end as u64);
        // The review's attack: a text_offset that wraps the load address below guest RAM
        // (onto the hypervisor).
        let wrap = 0u64.wrapping_sub(GUEST.0) + 0x4008_0000;
        assert_eq!(
            plan(GUEST, bundle, &p, &kernel(wrap, 1 << 20, 1 << 20), 8192),
            Err(LoadError::BadTextOffset)
        );
        // An image_size that wraps the end address.
        assert_eq!(
            plan(
                GUEST,
                bundle,
                &p,
                &kernel(0, u64::MAX - 4096, 1 << 20),
                8192
            ),
            Err(LoadError::KernelOverlapsBundle)
        );
        // Unaligned, or too large, text_offset.
        for t in [0x80001, ALIGN_2M, 1 << 40] {
            assert_eq!(
                plan(GUEST, bundle, &p, &kernel(t, 1 << 20, 1 << 20), 8192),
                Err(LoadError::BadTextOffset),
                "{t:#x}"
            );
        }
        // A kernel that reaches into the bundle.
        assert_eq!(
            plan(
                GUEST,
                bundle,
                &p,
                &kernel(0, 0x4800_0000 - GUEST.0 + 1, 1 << 20),
                8192
            ),
            Err(LoadError::KernelOverlapsBundle)
        );
        // Not an arm64 Image.
        let mut k = kernel(0, 1 << 20, 1 << 20);
        k[56] = b'X';
        assert_eq!(
            plan(GUEST, bundle, &p, &k, 8192),
            Err(LoadError::NotArm64Image)
        );
        assert_eq!(
            plan(GUEST, bundle, &p, &[0u8; 63], 8192),
            Err(LoadError::NotArm64Image)
        );
        // A legacy header (image_size 0) ignores its text_offset field.
        let plan0 = plan(GUEST, bundle, &p, &kernel(1 << 40, 0, 1 << 20), 8192).unwrap();
        assert_eq!(plan0.load, GUEST.0 + LEGACY_TEXT_OFFSET);
    }

    #[test]
    fn hostile_memory_nodes_are_refused() {
        // Smaller than the reservation, or at another base.
        for ram in [(RAM_BASE, RESERVED), (RAM_BASE, 0x10_0000), (0, 1 << 31)] {
            assert_eq!(
                guest_ram(ram, RAM_BASE, RESERVED, MAX_RAM),
                Err(LoadError::BadRam),
                "{ram:x?}"
            );
        }
        // A size that would wrap, or more RAM than the hypervisor maps, is cut to what it maps.
        assert_eq!(
            guest_ram((RAM_BASE, u64::MAX), RAM_BASE, RESERVED, MAX_RAM),
            Ok((RAM_BASE + RESERVED, MAX_RAM - RESERVED))
        );
    }

    #[test]
    fn bundles_and_trees_must_fit() {
        let k = kernel(0, 1 << 20, 1 << 20);
        let p = parts(k.len(), 4096);
        let len = p.initrd.end as u64;
        // Below guest RAM, past its end, empty, or wrapping.
        for b in [
            (RAM_BASE, RAM_BASE + len),
            (0x7fff_f000, 0x7fff_f000 + len),
            (0x4800_0000, 0x4800_0000),
            (u64::MAX - 10, 5),
        ] {
            assert_eq!(
                plan(GUEST, b, &p, &k, 8192),
                Err(LoadError::BundleOutsideGuest),
                "{b:x?}"
            );
        }
        // A bundle so high the device tree has no room above it.
        let high = (0x7fe0_1000, 0x7fe0_1000 + len);
        assert_eq!(
            plan(GUEST, high, &p, &k, 8192),
            Err(LoadError::NoRoomForDtb)
        );
        let ok = (0x4800_0000, 0x4800_0000 + len);
        assert_eq!(
            plan(GUEST, ok, &p, &k, 3 << 20),
            Err(LoadError::DtbTooLarge)
        );
        // Parts that claim more than the loader's range.
        let big = parts(k.len(), 1 << 30);
        assert_eq!(
            plan(GUEST, ok, &big, &k, 8192),
            Err(LoadError::BundleOutsideGuest)
        );
    }

    proptest! {
        /// Whatever the header, RAM and bundle say, an accepted plan keeps every part inside
        /// guest RAM, above the reservation, in order and without overlap.
        #[test]
        fn accepted_plans_stay_in_guest_ram(
            ram_size in prop_oneof![0u64..(4u64 << 30), any::<u64>()],
            text_offset in prop_oneof![Just(0u64), Just(0x80000u64), any::<u64>(), 0u64..(4 << 20)],
            image_size in prop_oneof![Just(0u64), 0u64..(2 << 30), any::<u64>()],
            b_start in prop_oneof![RAM_BASE..RAM_BASE + (2 << 30), any::<u64>()],
            b_len in prop_oneof![0u64..(64 << 20), any::<u64>()],
            dtb_len in 0usize..(3 << 20),
        ) {
            let Ok(guest) = guest_ram((RAM_BASE, ram_size), RAM_BASE, RESERVED, MAX_RAM) else {
                return Ok(());
            };
            prop_assert!(guest.0 >= RAM_BASE + RESERVED);
            prop_assert!(guest.0 + guest.1 <= RAM_BASE + MAX_RAM);
            let k = kernel(text_offset, image_size, 4096);
            let p = Parts { kernel: 64..64 + k.len(), initrd: 8192..8192 + (b_len as usize).min(1 << 20) };
            let bundle = (b_start, b_start.wrapping_add(b_len));
            if let Ok(plan) = plan(guest, bundle, &p, &k, dtb_len) {
                let guest_end = guest.0 + guest.1;
                prop_assert!(plan.load >= guest.0);
                prop_assert!(plan.load <= plan.kernel_end);
                prop_assert!(plan.kernel_end <= bundle.0);
                prop_assert!(bundle.0 <= plan.initrd.0 && plan.initrd.1 <= bundle.1);
                prop_assert!(bundle.1 <= plan.dtb);
                prop_assert!(plan.dtb + dtb_len as u64 <= guest_end);
                prop_assert_eq!(plan.dtb % ALIGN_2M, 0);
                prop_assert_eq!((plan.load - guest.0) % 4096, 0);
            }
        }
    }
}
