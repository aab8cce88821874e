//! The memory plan: what stage 2 and the hypervisor's own EL2 map contain, computed from the
//! board's device lists and the guest's RAM, and checked after it is built.
//!
//! Pure: `arch::aarch64::mmu` applies it to the live tables at boot, and the host tests apply it
//! to tables in memory for every `boards/*/board.toml` (property tests below). Either way the
//! same [`BoardMap::build_stage2`] refuses a result in which any page of the hypervisor's RAM,
//! of a device the hypervisor keeps, or of a mediated page translates for the guest.

use crate::layout::MAX_RAM;

use crate::arch::aarch64::pagetable::{El2Kind, L1_BLOCK, MapError, PAGE, S2Kind, Stage2};

/// The board facts the plan needs (generated constants on the target, parsed board files in the
/// host tests).
#[derive(Debug, Clone, Copy)]
pub struct BoardMap<'a> {
    /// Base of RAM.
    pub ram_base: u64,
    /// Bytes of RAM from `ram_base` the hypervisor keeps.
    pub hv_reserved: u64,
    /// Size of the first memory region, from `ram_base`.
    pub ram_region: u64,
    /// The device window the hypervisor maps for itself (device memory).
    pub device_window: (u64, u64),
    /// CPUs (one mediated redistributor control page each).
    pub max_cpus: u64,
    /// Devices the guest is given: name, base, size.
    pub guest_devices: &'a [(&'a str, u64, u64)],
    /// Devices kept from the guest (the hypervisor's and withheld ones): name, base, size.
    pub kept_devices: &'a [(&'a str, u64, u64)],
    /// Mediated redistributor control pages: the first, and the stride (one per CPU).
    pub gicr_control: Option<(u64, u64)>,
    /// The single mediated pages: the VideoCore mailbox, the legacy DMA engine, the USB host.
    pub pages: &'a [u64],
    /// The loader's spin table (CPU 0's release address), inside the reservation: the EL2 map
    /// gives the hypervisor its page so that it can release the secondaries.
    pub spin_table: Option<u64>,
}

/// Most mediated pages inside one guest device (one redistributor page per CPU, the mailbox).
pub const MAX_HOLES: usize = 128;

/// Why the plan could not be built, or was built wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanError<'a> {
    /// Mapping `what` failed.
    Map(&'static str, MapError),
    /// Mapping the named guest device failed.
    Device(&'a str, MapError),
    /// Guest RAM starts inside the hypervisor's reservation.
    GuestRamInReservation,
    /// The device window overlaps RAM, so the EL2 map would alias device and normal memory.
    DeviceWindowAliasesRam,
    /// After building, this address (of the reservation, a kept device or a mediated page)
    /// translates for the guest.
    Exposed(u64),
}

/// The hypervisor image's parts, each `[start, end)`, for its EL2 map.
#[derive(Debug, Clone, Copy)]
pub struct ImageMap {
    /// Code (read-only, executable).
    pub code: (u64, u64),
    /// Read-only data.
    pub rodata: (u64, u64),
    /// Data and bss, up to the stacks.
    pub data: (u64, u64),
}

impl<'a> BoardMap<'a> {
    /// The most RAM, from the RAM base, the guest's part may reach: the first memory region,
    /// and no more than the hypervisor's own map covers ([`MAX_RAM`]).
    pub const fn max_ram(&self) -> u64 {
        if self.ram_region < MAX_RAM {
            self.ram_region
        } else {
            MAX_RAM
        }
    }

    /// Every mediated page `(base, PAGE)`: the redistributor control pages, one per CPU, and
    /// the single mediated pages.
    fn mediated(&self) -> impl Iterator<Item = (u64, u64)> + Clone + 'a {
        let cpus = self.max_cpus;
        self.gicr_control
            .into_iter()
            .flat_map(move |(g, stride)| {
                (0..cpus).map(move |k| (g.wrapping_add(k.wrapping_mul(stride)), PAGE))
            })
            .chain(self.pages.iter().map(|&p| (p, PAGE)))
    }

    /// The mediated pages inside `[base, base + size)`, sorted: holes in that device's map.
    pub fn holes(&self, base: u64, size: u64) -> heapless::Vec<(u64, u64), MAX_HOLES> {
        let end = base.saturating_add(size);
        let mut h: heapless::Vec<(u64, u64), MAX_HOLES> = self
            .mediated()
            .filter(move |&(p, _)| p >= base && p < end)
            .take(MAX_HOLES)
            .collect();
        h.sort_unstable();
        h
    }

    /// Every page stage 2 must never map, as ranges: the reservation, the kept devices and
    /// the mediated pages.
    pub fn forbidden(&self) -> impl Iterator<Item = (u64, u64)> + 'a {
        core::iter::once((self.ram_base, self.hv_reserved))
            .chain(self.kept_devices.iter().map(|&(_, b, s)| (b, s)))
            .chain(self.mediated())
    }

    /// Map the guest devices (page by page, mediated pages left out) and guest RAM
    /// `(start, size)` into `s2`, then check that nothing [`forbidden`](Self::forbidden)
    /// translates.
    pub fn build_stage2(
        &self,
        s2: &mut Stage2<'_>,
        guest: (u64, u64),
    ) -> Result<(), PlanError<'a>> {
        if guest.0 < self.ram_base.saturating_add(self.hv_reserved) && guest.0 >= self.ram_base {
            return Err(PlanError::GuestRamInReservation);
        }
        for &(name, base, size) in self.guest_devices {
            s2.map_with_holes(base, size, S2Kind::Device, self.holes(base, size))
                .map_err(|e| PlanError::Device(name, e))?;
        }
        s2.map(guest.0, guest.1, S2Kind::Ram)
            .map_err(|e| PlanError::Map("guest RAM", e))?;
        for (base, size) in self.forbidden() {
            let mut at = base;
            while at < base.saturating_add(size) {
                if s2.translate(at).is_some() {
                    return Err(PlanError::Exposed(at));
                }
                at += PAGE;
            }
        }
        Ok(())
    }

    /// Build the hypervisor's identity map: the device window (device memory), the image's
    /// code, read-only data and data, each CPU's `stacks` (guard pages below them stay
    /// unmapped), and guest RAM from the end of the reservation to the end of the first GiB.
    /// Refused when the device window overlaps RAM (up to [`max_ram`](Self::max_ram) from the
    /// RAM base).
    pub fn build_el2(
        &self,
        m: &mut Stage2<'_>,
        image: &ImageMap,
        stacks: impl Iterator<Item = (u64, u64)>,
    ) -> Result<(), PlanError<'a>> {
        let (dev, dev_size) = self.device_window;
        let ram_end = self.ram_base.saturating_add(self.max_ram());
        if dev < ram_end && self.ram_base < dev.saturating_add(dev_size) {
            return Err(PlanError::DeviceWindowAliasesRam);
        }
        let map = |m: &mut Stage2<'_>, (s, e): (u64, u64), kind, what| {
            m.map_el2(s, e.saturating_sub(s), kind)
                .map_err(|err| PlanError::Map(what, err))
        };
        map(
            m,
            (dev, dev + dev_size),
            El2Kind::Device,
            "the device window",
        )?;
        map(m, image.code, El2Kind::Code, "code")?;
        map(m, image.rodata, El2Kind::ReadOnly, "read-only data")?;
        map(m, image.data, El2Kind::ReadWrite, "data and bss")?;
        for s in stacks {
            map(m, s, El2Kind::ReadWrite, "a CPU's stack")?;
        }
        if let Some(t) = self.spin_table {
            let page = t & !(PAGE - 1);
            map(m, (page, page + PAGE), El2Kind::ReadWrite, "the spin table")?;
        }
        // The first GiB of guest RAM, or less where the board's first region ends sooner (the
        // Pi 3's peripherals sit at 0x3f00_0000, inside that GiB).
        let guest = self.ram_base + self.hv_reserved;
        map(
            m,
            (guest, self.ram_base + L1_BLOCK.min(self.ram_region)),
            El2Kind::ReadWrite,
            "guest RAM",
        )
    }
}

/// This image's board.
pub const BOARD: BoardMap<'static> = BoardMap {
    ram_base: crate::board::RAM_BASE,
    hv_reserved: crate::board::HV_RESERVED,
    ram_region: crate::board::RAM_REGION_SIZE,
    device_window: (crate::board::DEVICE_BASE, crate::board::DEVICE_SIZE),
    max_cpus: crate::board::MAX_CPUS as u64,
    guest_devices: crate::board::GUEST_DEVICES,
    kept_devices: crate::board::KEPT_DEVICES,
    gicr_control: crate::board::GICR_FILTER,
    pages: crate::board::MEDIATED_PAGES,
    spin_table: crate::board::SPIN_TABLE,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::aarch64::pagetable::{self, TableWords, is_device};
    use proptest::prelude::*;
    use std::path::Path;

    const POOL_PA: u64 = 0x4_0000_0000;

    /// Every board in the tree, as the plan sees it (names leaked: the tests' boards live
    /// for the whole run).
    fn boards() -> Vec<(gw_board::Board, BoardMap<'static>)> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut out = Vec::new();
        for e in std::fs::read_dir(root.join("boards")).unwrap() {
            let e = e.unwrap();
            if !e.path().join("board.toml").is_file() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let b = gw_board::Board::load(&root, &name).unwrap();
            let list = |owners: &[gw_board::Owner]| -> &'static [(&'static str, u64, u64)] {
                let v: Vec<(&'static str, u64, u64)> = b
                    .instances()
                    .filter(|(d, _, _)| owners.contains(&d.owner))
                    .map(|(d, base, end)| (&*String::leak(d.name.clone()), base, end - base))
                    .collect();
                Vec::leak(v)
            };
            let map = BoardMap {
                ram_base: b.ram_base,
                hv_reserved: b.hv_reserved,
                ram_region: b.max_ram(),
                device_window: (b.device_base, b.device_size),
                max_cpus: b.max_cpus,
                guest_devices: list(&[gw_board::Owner::Guest]),
                kept_devices: list(&[gw_board::Owner::Hypervisor, gw_board::Owner::Withheld]),
                gicr_control: b.mediated(gw_board::Mediator::GicrControl),
                pages: Vec::leak(b.single_mediated_pages()),
                spin_table: b.spin_table,
            };
            out.push((b, map));
        }
        assert!(!out.is_empty());
        out
    }

    struct Tables {
        root: Vec<u64>,
        pool: Vec<TableWords>,
    }

    impl Tables {
        fn new(root_words: usize) -> Self {
            Tables {
                root: vec![0; root_words],
                pool: vec![[0; 512]; 64],
            }
        }
        fn s2(&mut self) -> Stage2<'_> {
            Stage2::new(&mut self.root, &mut self.pool, POOL_PA)
        }
    }

    /// Guest RAM for a `/memory` of `ram` bytes, as the boot computes it.
    fn guest_ram(b: &BoardMap<'_>, ram: u64) -> (u64, u64) {
        crate::layout::guest_ram((b.ram_base, ram), b.ram_base, b.hv_reserved, b.max_ram()).unwrap()
    }

    #[test]
    fn this_image_s_board_is_a_board_in_the_tree() {
        let all = boards();
        let (_, m) = all
            .iter()
            .find(|(b, _)| b.name == crate::board::NAME)
            .unwrap();
        assert_eq!(m.guest_devices, BOARD.guest_devices);
        assert_eq!(m.kept_devices, BOARD.kept_devices);
        assert_eq!(m.gicr_control, BOARD.gicr_control);
        assert_eq!(m.pages, BOARD.pages);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// For every board and any guest RAM size the device tree may claim: no page of the
        /// hypervisor's RAM, of a device it keeps or of a mediated page translates; every other
        /// page of a guest device translates as device memory, and guest RAM as RAM.
        #[test]
        fn stage2_never_maps_what_the_hypervisor_keeps(
            ram_mib in 17u64..=8192,
            probe in any::<u64>(),
        ) {
            for (b, map) in boards() {
                let ram = ram_mib << 20;
                let guest = guest_ram(&map, ram);
                let mut t = Tables::new(1024);
                let mut s2 = t.s2();
                map.build_stage2(&mut s2, guest).unwrap();
                // A random page of each forbidden range, its first and its last.
                for (base, size) in map.forbidden() {
                    let pages = size / PAGE;
                    for p in [0, pages - 1, probe % pages] {
                        prop_assert!(s2.translate(base + p * PAGE).is_none(), "{}: {:#x}", b.name, base + p * PAGE);
                    }
                }
                for &(name, base, size) in map.guest_devices {
                    let pages = size / PAGE;
                    for p in [0, pages - 1, probe % pages] {
                        let at = base + p * PAGE;
                        let hole = map.holes(base, size).iter().any(|&(h, _)| h == at);
                        let got = s2.translate(at);
                        prop_assert_eq!(got.is_none(), hole, "{} {} {:#x}", b.name, name, at);
                        if let Some((d, _)) = got {
                            prop_assert!(is_device(d), "{} {} {:#x}", b.name, name, at);
                        }
                    }
                }
                let at = guest.0 + (probe % (guest.1 / PAGE)) * PAGE;
                let (d, _) = s2.translate(at).unwrap();
                prop_assert!(!is_device(d) && pagetable::output_address(d) <= at);
                // Just below and just past guest RAM: nothing (unless a device sits there).
                prop_assert!(s2.translate(guest.0 - PAGE).is_none());
            }
        }
    }

    #[test]
    fn a_plan_that_would_expose_a_kept_page_is_refused() {
        for (b, map) in boards() {
            // Guest RAM starting inside the reservation.
            let mut t = Tables::new(1024);
            let r = map.build_stage2(&mut t.s2(), (map.ram_base + PAGE, 1 << 30));
            assert_eq!(r, Err(PlanError::GuestRamInReservation), "{}", b.name);
            // A kept device that a guest device also covers (a board file the schema would
            // refuse; the plan catches it on its own).
            let Some(&(_, base, _)) = map.kept_devices.first() else {
                continue;
            };
            let leaked: &'static [(&'static str, u64, u64)] = Vec::leak(
                map.guest_devices
                    .iter()
                    .copied()
                    .chain([("overlap", base, PAGE)])
                    .collect(),
            );
            let bad = BoardMap {
                guest_devices: leaked,
                ..map
            };
            let mut t = Tables::new(1024);
            let guest = guest_ram(&map, 1 << 30);
            assert_eq!(
                bad.build_stage2(&mut t.s2(), guest),
                Err(PlanError::Exposed(base)),
                "{}",
                b.name
            );
            // Its benign twin: the board as it is builds.
            let mut t = Tables::new(1024);
            map.build_stage2(&mut t.s2(), guest).unwrap();
        }
    }

    /// The EL2 map of every board: device window as device memory, RAM as normal memory, and
    /// no address both; a window over RAM is refused.
    #[test]
    fn el2_map_never_aliases_device_and_ram() {
        for (b, map) in boards() {
            let mut t = Tables::new(512);
            let mut m = t.s2();
            let img = map.ram_base + 0x8_0000;
            let image = ImageMap {
                code: (img, img + 0x4_0000),
                rodata: (img + 0x4_0000, img + 0x6_0000),
                data: (img + 0x6_0000, img + 0x8_0000),
            };
            let stacks = (0..map.max_cpus).map(|k| {
                let low = img + 0x9_0000 + k * 0x2_0000;
                (low, low + 0x1_0000)
            });
            map.build_el2(&mut m, &image, stacks).unwrap();
            let (dev, dev_size) = map.device_window;
            let attr = |d: u64| (d >> 2) & 0b111;
            for at in (dev..dev + dev_size).step_by(1 << 21) {
                let (d, _) = m.translate(at).unwrap();
                assert_eq!(attr(d), pagetable::MAIR_DEVICE, "{}: {at:#x}", b.name);
            }
            let guest_end = map.ram_base + L1_BLOCK.min(map.ram_region);
            for at in (map.ram_base + map.hv_reserved..guest_end).step_by(1 << 21) {
                let (d, _) = m.translate(at).unwrap();
                assert_eq!(attr(d), pagetable::MAIR_NORMAL, "{}: {at:#x}", b.name);
            }
            // The reservation beyond the image is unmapped, and so are the guard pages.
            assert!(m.translate(img + 0x8_0000).is_none());
            assert!(m.translate(map.ram_base + map.hv_reserved - PAGE).is_none());
            // A window that reaches into RAM is refused.
            let bad = BoardMap {
                device_window: (map.ram_base + map.hv_reserved, PAGE),
                ..map
            };
            let mut t = Tables::new(512);
            assert_eq!(
                bad.build_el2(&mut t.s2(), &image, core::iter::empty()),
                Err(PlanError::DeviceWindowAliasesRam)
            );
        }
    }
}
