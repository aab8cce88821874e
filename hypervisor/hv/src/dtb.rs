//! Reading and editing the device tree the boot loader passes in `x0`.
//!
//! Edits are made in place, changing property values without changing their size, so no
//! allocator is needed and the blob's structure stays what the loader built. The edited blob is
//! what the guest boots with and what is measured (`docs/boot.md`).

use fdt::Fdt;

/// Why the device tree was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DtbError {
    /// Not a valid flattened device tree.
    Invalid,
    /// No `/memory` node with a 2-cell address and size.
    NoMemory,
    /// No `/chosen` initrd properties.
    NoInitrd,
    /// A property has an unexpected size.
    BadProperty,
}

/// What the hypervisor needs from the loader's device tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootInfo {
    /// First RAM region: base and size.
    pub memory: (u64, u64),
    /// Initrd range from `/chosen` (the guest bundle).
    pub initrd: (u64, u64),
    /// Total size of the blob.
    pub total_size: usize,
}

fn be(v: &[u8]) -> Result<u64, DtbError> {
    match v.len() {
        4 => Ok(u32::from_be_bytes(v.try_into().map_err(|_| DtbError::BadProperty)?) as u64),
        8 => Ok(u64::from_be_bytes(
            v.try_into().map_err(|_| DtbError::BadProperty)?,
        )),
        _ => Err(DtbError::BadProperty),
    }
}

/// Byte offset and length of a property value inside `blob`.
fn locate(blob: &[u8], value: &[u8]) -> (usize, usize) {
    (
        value.as_ptr() as usize - blob.as_ptr() as usize,
        value.len(),
    )
}

struct Places {
    memory_reg: (usize, usize),
    initrd_start: (usize, usize),
    initrd_end: (usize, usize),
}

fn places(blob: &[u8]) -> Result<(BootInfo, Places), DtbError> {
    let fdt = Fdt::new(blob).map_err(|_| DtbError::Invalid)?;
    let mem = fdt
        .all_nodes()
        .find(|n| {
            n.name.starts_with("memory")
                && n.property("device_type").and_then(|p| p.as_str()) == Some("memory")
        })
        .ok_or(DtbError::NoMemory)?;
    let reg = mem.property("reg").ok_or(DtbError::NoMemory)?;
    if reg.value.len() < 16 {
        return Err(DtbError::NoMemory);
    }
    let memory = (be(&reg.value[0..8])?, be(&reg.value[8..16])?);
    let chosen = fdt.find_node("/chosen").ok_or(DtbError::NoInitrd)?;
    let start = chosen
        .property("linux,initrd-start")
        .ok_or(DtbError::NoInitrd)?;
    let end = chosen
        .property("linux,initrd-end")
        .ok_or(DtbError::NoInitrd)?;
    let info = BootInfo {
        memory,
        initrd: (be(start.value)?, be(end.value)?),
        total_size: fdt.total_size(),
    };
    let places = Places {
        memory_reg: locate(blob, &reg.value[..16]),
        initrd_start: locate(blob, start.value),
        initrd_end: locate(blob, end.value),
    };
    Ok((info, places))
}

/// Read the memory and initrd layout.
pub fn inspect(blob: &[u8]) -> Result<BootInfo, DtbError> {
    places(blob).map(|(i, _)| i)
}

/// The kernel command line from `/chosen/bootargs` (empty if absent).
pub fn bootargs(blob: &[u8]) -> Result<&[u8], DtbError> {
    let fdt = Fdt::new(blob).map_err(|_| DtbError::Invalid)?;
    Ok(fdt
        .find_node("/chosen")
        .and_then(|c| c.property("bootargs"))
        .map(|p| p.value.strip_suffix(&[0]).unwrap_or(p.value))
        .unwrap_or(&[]))
}

/// The loader's per-boot seeds in `/chosen`, which the guest must never see (the hypervisor's
/// per-boot keys are derived from them) and which make the tree differ on every boot.
pub const SEED_PROPERTIES: [&str; 2] = ["rng-seed", "kaslr-seed"];

/// Where each of [`SEED_PROPERTIES`] sits in `blob` (byte offset and length), if present.
pub fn seed_places(blob: &[u8]) -> Result<[Option<(usize, usize)>; 2], DtbError> {
    let fdt = Fdt::new(blob).map_err(|_| DtbError::Invalid)?;
    let mut out = [None; 2];
    if let Some(chosen) = fdt.find_node("/chosen") {
        for (slot, name) in out.iter_mut().zip(SEED_PROPERTIES) {
            *slot = chosen
                .property(name)
                .filter(|p| !p.value.is_empty())
                .map(|p| locate(blob, p.value));
        }
    }
    Ok(out)
}

/// The loader's seeds, taken out of a tree: their places and (up to 64 bytes of) their values.
pub struct TakenSeeds {
    /// Where each of [`SEED_PROPERTIES`] was (offset and length), if present.
    pub places: [Option<(usize, usize)>; 2],
    values: [[u8; 64]; 2],
    lens: [usize; 2],
}

impl TakenSeeds {
    /// The bytes taken for seed `i` (of [`SEED_PROPERTIES`]).
    pub fn value(&self, i: usize) -> &[u8] {
        &self.values[i][..self.lens[i]]
    }

    /// Wipe the copies.
    pub fn wipe(&mut self) {
        self.values = [[0; 64]; 2];
    }
}

/// Copy the loader's seeds out of `blob` and zero them there, so the tree reads the same on
/// every boot (it is measured so) and the guest never sees them. Both the hypervisor and the
/// image build's reference value (`cargo xtask image`) prepare the measured tree this way.
pub fn take_seeds(blob: &mut [u8]) -> Result<TakenSeeds, DtbError> {
    let mut t = TakenSeeds {
        places: seed_places(blob)?,
        values: [[0; 64]; 2],
        lens: [0; 2],
    };
    for (i, place) in t.places.iter().enumerate() {
        if let Some((off, len)) = *place {
            let n = len.min(64);
            t.values[i][..n].copy_from_slice(&blob[off..off + n]);
            t.lens[i] = n;
            blob[off..off + len].fill(0);
        }
    }
    Ok(t)
}

fn put(blob: &mut [u8], (off, len): (usize, usize), v: u64) -> Result<(), DtbError> {
    match len {
        4 => blob[off..off + 4]
            .copy_from_slice(&(u32::try_from(v).map_err(|_| DtbError::BadProperty)?).to_be_bytes()),
        8 => blob[off..off + 8].copy_from_slice(&v.to_be_bytes()),
        _ => return Err(DtbError::BadProperty),
    }
    Ok(())
}

/// Give the guest RAM `[base, base + size)` and the initrd `[start, end)`.
pub fn edit_for_guest(
    blob: &mut [u8],
    memory: (u64, u64),
    initrd: (u64, u64),
) -> Result<(), DtbError> {
    let (_, p) = places(blob)?;
    let (off, _) = p.memory_reg;
    put(blob, (off, 8), memory.0)?;
    put(blob, (off + 8, 8), memory.1)?;
    put(blob, p.initrd_start, initrd.0)?;
    put(blob, p.initrd_end, initrd.1)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 10's tree: 64-bit initrd cells.
    const QEMU: &[u8] = include_bytes!("../testdata/qemu-virt.dtb");
    /// QEMU 7.2's tree: 32-bit initrd cells (as other loaders still write them).
    const CELLS32: &[u8] = include_bytes!("../testdata/qemu-virt-7.2.dtb");

    #[test]
    fn reads_qemus_tree() {
        for blob in [QEMU, CELLS32] {
            let i = inspect(blob).unwrap();
            assert_eq!(i.memory, (0x4000_0000, 0x4000_0000));
            assert_eq!(i.initrd, (0x4800_0000, 0x4800_000a));
            assert_eq!(bootargs(blob).unwrap(), b"console=ttyAMA0 rdinit=/init");
        }
    }

    #[test]
    fn edits_in_place() {
        for original in [QEMU, CELLS32] {
            let mut blob = original.to_vec();
            edit_for_guest(
                &mut blob,
                (0x4100_0000, 0x3f00_0000),
                (0x4810_0000, 0x4820_0000),
            )
            .unwrap();
            let i = inspect(&blob).unwrap();
            assert_eq!(i.memory, (0x4100_0000, 0x3f00_0000));
            assert_eq!(i.initrd, (0x4810_0000, 0x4820_0000));
            assert_eq!(blob.len(), original.len());
            // Everything else is untouched.
            assert_eq!(bootargs(&blob).unwrap(), b"console=ttyAMA0 rdinit=/init");
        }
    }

    #[test]
    fn initrd_cells_keep_their_width() {
        // 64-bit cells (QEMU 10) take an address above 4 GiB.
        let mut blob = QEMU.to_vec();
        edit_for_guest(&mut blob, (0x4100_0000, 1), (1 << 33, 1 << 34)).unwrap();
        assert_eq!(inspect(&blob).unwrap().initrd, (1 << 33, 1 << 34));
        // 32-bit cells cannot: refused, not truncated.
        let mut blob = CELLS32.to_vec();
        assert_eq!(
            edit_for_guest(&mut blob, (0x4100_0000, 1), (1 << 33, 1 << 34)),
            Err(DtbError::BadProperty)
        );
    }

    #[test]
    fn finds_the_loaders_seeds() {
        let places = seed_places(QEMU).unwrap();
        let [Some(rng), Some(kaslr)] = places else {
            panic!("QEMU 10 passes both seeds: {places:?}");
        };
        assert_eq!(rng.1, 32);
        assert_eq!(kaslr.1, 8);
        // What is found is the property value itself: zeroing it leaves a valid tree whose
        // seeds read as zeros, and nothing else changes.
        let mut blob = QEMU.to_vec();
        for (off, len) in [rng, kaslr] {
            blob[off..off + len].fill(0);
        }
        let fdt = Fdt::new(&blob).unwrap();
        let chosen = fdt.find_node("/chosen").unwrap();
        for name in SEED_PROPERTIES {
            assert!(chosen.property(name).unwrap().value.iter().all(|b| *b == 0));
        }
        assert_eq!(inspect(&blob).unwrap(), inspect(QEMU).unwrap());
        // take_seeds gives the same tree and the values it zeroed.
        let mut taken = QEMU.to_vec();
        let t = take_seeds(&mut taken).unwrap();
        assert_eq!(taken, blob);
        assert_eq!(t.value(0), &QEMU[rng.0..rng.0 + 32]);
        assert_eq!(t.value(1), &QEMU[kaslr.0..kaslr.0 + 8]);
        // A tree without seeds has none to scrub.
        let mut no_seeds = QEMU.to_vec();
        let at = no_seeds
            .windows(9)
            .position(|w| w == b"rng-seed\0")
            .unwrap();
        no_seeds[at] = b'x';
        let at = no_seeds
            .windows(11)
            .position(|w| w == b"kaslr-seed\0")
            .unwrap();
        no_seeds[at] = b'x';
        assert_eq!(seed_places(&no_seeds).unwrap(), [None, None]);
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(inspect(&[0u8; 64]), Err(DtbError::Invalid));
        let mut cut = QEMU.to_vec();
        cut.truncate(100);
        assert!(inspect(&cut).is_err());
    }
}
