//! Reading and editing the device tree the boot loader passes in `x0`.
//!
//! Edits are made in place, changing property values without changing their size, so no
//! allocator is needed and the blob's structure stays what the loader built. The edited blob is
//! what the guest boots with and what is measured (`docs/boot.md`).

// dtoolkit validates the whole blob in `Fdt::new` and is fuzzed upstream: a hostile tree (on the
// Raspberry Pis it sits on the SD card) gets an error, never a panic at EL2. (The `fdt` crate
// used before panicked on bad name offsets and tokens: `hostile_trees_never_panic`.)
use dtoolkit::{Node, Property, fdt::Fdt};

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
    /// The `/memory` `reg` value's offset, and its address and size widths in bytes.
    memory_reg: (usize, usize, usize),
    initrd_start: (usize, usize),
    initrd_end: (usize, usize),
}

/// Where property `name` of `node` sits in `blob`, if present.
fn prop_place<'b, N: Node>(blob: &[u8], node: &'b N, name: &str) -> Option<(usize, usize)>
where
    N::Property<'b>: Property,
{
    node.property(name).map(|p| locate(blob, p.value()))
}

/// Whether `node` is RAM (`device_type = "memory"`).
fn is_memory<'b, N: Node>(blob: &[u8], node: &'b N) -> bool
where
    N::Property<'b>: Property,
{
    prop_place(blob, node, "device_type").is_some_and(|(o, l)| &blob[o..o + l] == b"memory\0")
}

/// A node's `#address-cells` or `#size-cells` (1 or 2 here), or `default` when absent.
fn cells<'b, N: Node>(
    blob: &[u8],
    node: &'b N,
    name: &str,
    default: usize,
) -> Result<usize, DtbError>
where
    N::Property<'b>: Property,
{
    let n = match prop_place(blob, node, name) {
        Some((o, l)) => be(&blob[o..o + l])? as usize,
        None => default,
    };
    if (1..=2).contains(&n) {
        Ok(n)
    } else {
        Err(DtbError::BadProperty)
    }
}

fn places(blob: &[u8]) -> Result<(BootInfo, Places), DtbError> {
    let fdt = Fdt::new(blob).map_err(|_| DtbError::Invalid)?;
    let at = |(off, len): (usize, usize)| &blob[off..off + len];
    let root = fdt.root();
    // The root's cells give `/memory`'s widths (QEMU virt: 2 and 2; the Raspberry Pis: 2 and 1).
    let (ac, sc) = (
        cells(blob, &root, "#address-cells", 2)? * 4,
        cells(blob, &root, "#size-cells", 1)? * 4,
    );
    let mem = root
        .children()
        .find(|n| n.name().starts_with("memory") && is_memory(blob, n))
        .ok_or(DtbError::NoMemory)?;
    let reg = prop_place(blob, &mem, "reg").ok_or(DtbError::NoMemory)?;
    if reg.1 < ac + sc {
        return Err(DtbError::NoMemory);
    }
    let r = at(reg);
    let memory = (be(&r[0..ac])?, be(&r[ac..ac + sc])?);
    let chosen = fdt.find_node("/chosen").ok_or(DtbError::NoInitrd)?;
    let start = prop_place(blob, &chosen, "linux,initrd-start").ok_or(DtbError::NoInitrd)?;
    let end = prop_place(blob, &chosen, "linux,initrd-end").ok_or(DtbError::NoInitrd)?;
    let info = BootInfo {
        memory,
        initrd: (be(at(start))?, be(at(end))?),
        total_size: u32::from_be_bytes([blob[4], blob[5], blob[6], blob[7]]) as usize,
    };
    let places = Places {
        memory_reg: (reg.0, ac, sc),
        initrd_start: start,
        initrd_end: end,
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
    let Some((off, len)) = fdt
        .find_node("/chosen")
        .and_then(|c| prop_place(blob, &c, "bootargs"))
    else {
        return Ok(&[]);
    };
    let v = &blob[off..off + len];
    Ok(v.strip_suffix(&[0]).unwrap_or(v))
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
            *slot = prop_place(blob, &chosen, name).filter(|&(_, len)| len > 0);
        }
    }
    Ok(out)
}

/// Fill the loader's seeds in `blob` with `fill`'s bytes (a firmware's fresh seeds for one
/// boot, made by the host tools that stand in for it); how many seeds there were.
pub fn refill_seeds(blob: &mut [u8], mut fill: impl FnMut(&mut [u8])) -> Result<usize, DtbError> {
    let places = seed_places(blob)?;
    let mut n = 0;
    for (off, len) in places.into_iter().flatten() {
        fill(&mut blob[off..off + len]);
        n += 1;
    }
    Ok(n)
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

/// One token of the structure block: its kind (FDT_BEGIN_NODE 1, FDT_END_NODE 2, FDT_PROP 3,
/// FDT_NOP 4), where it starts, where its data ends and where the next token starts.
#[derive(Debug, Clone, Copy)]
struct Token {
    kind: usize,
    pos: usize,
    data_end: usize,
    next: usize,
}

fn be32_at(b: &[u8], at: usize) -> Result<usize, DtbError> {
    let bytes: [u8; 4] = b
        .get(at..at.checked_add(4).ok_or(DtbError::Invalid)?)
        .and_then(|s| s.try_into().ok())
        .ok_or(DtbError::Invalid)?;
    Ok(u32::from_be_bytes(bytes) as usize)
}

/// A cursor over the structure block's tokens; every bound is checked.
struct Tokens {
    pos: usize,
    end: usize,
}

impl Tokens {
    fn new(blob: &[u8]) -> Result<Self, DtbError> {
        let off = be32_at(blob, 8)?;
        let size = be32_at(blob, 36)?;
        let end = off.checked_add(size).ok_or(DtbError::Invalid)?;
        if be32_at(blob, 20)? < 17 || end > blob.len() {
            return Err(DtbError::Invalid);
        }
        Ok(Self { pos: off, end })
    }

    /// The next token, or `None` at FDT_END.
    fn next(&mut self, blob: &[u8]) -> Result<Option<Token>, DtbError> {
        let align = |x: usize| x.checked_next_multiple_of(4).ok_or(DtbError::Invalid);
        let (pos, end) = (self.pos, self.end);
        let kind = be32_at(blob, pos)?;
        let body = pos.checked_add(4).ok_or(DtbError::Invalid)?;
        let (data_end, next) = match kind {
            // FDT_BEGIN_NODE: a NUL-terminated name.
            1 => {
                let nul = blob
                    .get(body..end)
                    .and_then(|s| s.iter().position(|b| *b == 0))
                    .ok_or(DtbError::Invalid)?;
                let data_end = body + nul + 1;
                (data_end, align(data_end)?)
            }
            // FDT_END_NODE, FDT_NOP.
            2 | 4 => (body, body),
            // FDT_PROP: length, name offset, value.
            3 => {
                let len = be32_at(blob, body)?;
                let data_end = body
                    .checked_add(8)
                    .and_then(|v| v.checked_add(len))
                    .ok_or(DtbError::Invalid)?;
                (data_end, align(data_end)?)
            }
            // FDT_END.
            9 => return Ok(None),
            _ => return Err(DtbError::Invalid),
        };
        if next > end {
            return Err(DtbError::Invalid);
        }
        self.pos = next;
        Ok(Some(Token {
            kind,
            pos,
            data_end,
            next,
        }))
    }
}

/// Zero the alignment padding of the structure block (after each node name and property value,
/// up to the next 4-byte boundary).
///
/// Loaders leave whatever was in memory there: QEMU's padding holds fragments of the seeds it
/// generated before its reset, so two boots of one image differ in those bytes alone. Zeroed,
/// the tree (seeds taken out) measures the same on every boot.
pub fn zero_padding(blob: &mut [u8]) -> Result<(), DtbError> {
    let mut tokens = Tokens::new(blob)?;
    while let Some(t) = tokens.next(blob)? {
        blob[t.data_end..t.next].fill(0);
    }
    Ok(())
}

/// Properties that point the guest at the SMMU, which it is not given.
pub const IOMMU_PROPERTIES: [&str; 2] = ["iommu-map", "iommu-map-mask"];

/// One `ranges` entry of a bus: child address, parent address, size.
type Range = (u64, u64, u64);

/// A bus node's `ranges` (child cells `ac`, parent cells `pac`, size cells `sc`), at most 8
/// entries; an empty `ranges` is the identity (`None`).
fn bus_ranges(
    v: &[u8],
    ac: usize,
    pac: usize,
    sc: usize,
) -> Result<Option<heapless::Vec<Range, 8>>, DtbError> {
    if v.is_empty() {
        return Ok(None);
    }
    let entry = (ac + pac + sc) * 4;
    if !v.len().is_multiple_of(entry) {
        return Err(DtbError::BadProperty);
    }
    let mut out = heapless::Vec::new();
    for e in v.chunks_exact(entry) {
        let (c, rest) = e.split_at(ac * 4);
        let (p, size) = rest.split_at(pac * 4);
        out.push((be(c)?, be(p)?, be(size)?))
            .map_err(|_| DtbError::BadProperty)?;
    }
    Ok(Some(out))
}

/// Remove from the guest's tree every device it is not given: each node with a `reg` whose
/// first base lies in none of `devices` (base, size) and that is not RAM, whether a child of the
/// root or of a bus below it (a node with `ranges`, through which its children's addresses are
/// translated; a child no range covers is removed), and the [`IOMMU_PROPERTIES`]. The
/// reserved-memory node's children (RAM, not devices) stay. Removal is in place: the node's or
/// property's tokens become FDT_NOP, which every reader skips, so nothing moves. Returns how
/// many nodes were removed.
pub fn prune_for_guest(blob: &mut [u8], devices: &[(u64, u64)]) -> Result<usize, DtbError> {
    // Offsets of the `reg` values of nodes to remove, and of property values to remove.
    let mut drop_regs: heapless::Vec<usize, 256> = heapless::Vec::new();
    let mut drop_props: heapless::Vec<usize, 16> = heapless::Vec::new();
    {
        let fdt = Fdt::new(blob).map_err(|_| DtbError::Invalid)?;
        let root = fdt.root();
        let root_ac = cells(blob, &root, "#address-cells", 2)?;
        let given = |base: u64| {
            devices
                .iter()
                .any(|&(b, size)| base >= b && base - b < size)
        };
        // Whether a node with a `reg` is a device the guest is not given, its first base read
        // with `ac` cells and translated by `translate`.
        let doomed = |off: usize, len: usize, ac: usize, translate: &dyn Fn(u64) -> Option<u64>| {
            if len < ac * 4 {
                return Err(DtbError::BadProperty);
            }
            let base = be(&blob[off..off + ac * 4])?;
            Ok(!translate(base).is_some_and(given))
        };
        for n in root.children() {
            for name in IOMMU_PROPERTIES {
                if let Some((off, _)) = prop_place(blob, &n, name) {
                    drop_props.push(off).map_err(|_| DtbError::Invalid)?;
                }
            }
            if is_memory(blob, &n) || n.name() == "reserved-memory" {
                continue;
            }
            if let Some((off, len)) = prop_place(blob, &n, "reg") {
                if doomed(off, len, root_ac, &|b| Some(b))? {
                    drop_regs.push(off).map_err(|_| DtbError::Invalid)?;
                }
                continue;
            }
            // A bus: its children's addresses are translated by its `ranges`.
            let Some((roff, rlen)) = prop_place(blob, &n, "ranges") else {
                continue;
            };
            let (ac, sc) = (
                cells(blob, &n, "#address-cells", 2)?,
                cells(blob, &n, "#size-cells", 1)?,
            );
            let ranges = bus_ranges(&blob[roff..roff + rlen], ac, root_ac, sc)?;
            let translate = |b: u64| match &ranges {
                None => Some(b),
                Some(rs) => rs
                    .iter()
                    .find(|&&(c, _, size)| b >= c && b - c < size)
                    .map(|&(c, p, _)| p + (b - c)),
            };
            for child in n.children() {
                if let Some((off, len)) = prop_place(blob, &child, "reg")
                    && doomed(off, len, ac, &translate)?
                {
                    drop_regs.push(off).map_err(|_| DtbError::Invalid)?;
                }
            }
        }
    }
    // Spans to turn into FDT_NOP: whole nodes (children of the root or of a bus) holding a
    // dropped `reg`, and properties.
    let nop = |blob: &mut [u8], (a, b): (usize, usize)| {
        for w in blob[a..b].chunks_exact_mut(4) {
            w.copy_from_slice(&4u32.to_be_bytes());
        }
    };
    // The open nodes at depths 2 and 3 (the root is depth 1): where each began, and whether it
    // goes.
    let mut depth = 0usize;
    let mut open = [(0usize, false); 2];
    let mut tokens = Tokens::new(blob)?;
    while let Some(t) = tokens.next(blob)? {
        match t.kind {
            1 => {
                depth += 1;
                if let Some(slot) = open.get_mut(depth.wrapping_sub(2)) {
                    *slot = (t.pos, false);
                }
            }
            2 => {
                // A node's tokens all lie before its END_NODE: it is NOPed once it is whole.
                if let Some(&(start, true)) = open.get(depth.wrapping_sub(2)) {
                    nop(blob, (start, t.next));
                }
                depth = depth.saturating_sub(1);
            }
            3 => {
                let value = t.pos + 12;
                if drop_regs.contains(&value)
                    && let Some(slot) = open.get_mut(depth.wrapping_sub(2))
                {
                    slot.1 = true;
                }
                if drop_props.contains(&value) {
                    nop(blob, (t.pos, t.next));
                }
            }
            _ => {}
        }
    }
    Ok(drop_regs.len())
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
    let (off, ac, sc) = p.memory_reg;
    put(blob, (off, ac), memory.0)?;
    put(blob, (off + ac, sc), memory.1)?;
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
            assert!(
                chosen
                    .property(name)
                    .unwrap()
                    .value()
                    .iter()
                    .all(|b| *b == 0)
            );
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
    fn padding_is_zeroed_and_nothing_else_changes() {
        // dtc wrote the fixture with zero padding: nothing to change.
        let mut clean = QEMU.to_vec();
        zero_padding(&mut clean).unwrap();
        assert_eq!(clean, QEMU);
        // Dirty the padding after a property value (bootargs, 29 bytes) and after a node name
        // or value ending in "pl011@9000000\0", as a loader leaves it.
        let mut dirty = QEMU.to_vec();
        let fdt = Fdt::new(QEMU).unwrap();
        let args = fdt
            .find_node("/chosen")
            .unwrap()
            .property("bootargs")
            .unwrap();
        let (off, len) = locate(QEMU, args.value());
        let mut pads = (off + len..(off + len).next_multiple_of(4)).collect::<Vec<_>>();
        let name = QEMU
            .windows(14)
            .position(|w| w == b"pl011@9000000\0")
            .unwrap()
            + 14;
        pads.extend(name..name.next_multiple_of(4));
        assert!(pads.len() >= 4, "{pads:?}");
        for &i in &pads {
            dirty[i] = 0xa5;
        }
        assert_ne!(dirty, QEMU);
        zero_padding(&mut dirty).unwrap();
        assert_eq!(dirty, QEMU);
        // A truncated or corrupt structure block is refused, not walked past its end.
        let mut cut = QEMU.to_vec();
        cut.truncate(cut.len() / 2);
        assert_eq!(zero_padding(&mut cut), Err(DtbError::Invalid));
        let mut bad = QEMU.to_vec();
        let off = u32::from_be_bytes(bad[8..12].try_into().unwrap()) as usize;
        bad[off..off + 4].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(zero_padding(&mut bad), Err(DtbError::Invalid));
    }

    proptest::proptest! {
        /// A loader's (or an SD card's) tree with any bytes changed: every reader and editor
        /// answers, none panics or writes outside the blob.
        #[test]
        fn hostile_trees_never_panic(
            flips in proptest::collection::vec((0usize..8192, proptest::num::u8::ANY), 1..64),
            cut in 0usize..8192,
        ) {
            let mut blob = QEMU.to_vec();
            for (at, v) in flips {
                if let Some(b) = blob.get_mut(at) {
                    *b = v;
                }
            }
            blob.truncate(cut.max(40).min(blob.len()));
            let len = blob.len();
            let _ = inspect(&blob);
            let _ = bootargs(&blob);
            let _ = seed_places(&blob);
            let _ = take_seeds(&mut blob);
            let _ = zero_padding(&mut blob);
            let _ = prune_for_guest(&mut blob, &GIVEN);
            let _ = edit_for_guest(&mut blob, (0x4100_0000, 0x3f00_0000), (0x4810_0000, 0x4820_0000));
            proptest::prop_assert_eq!(blob.len(), len);
        }
    }

    /// The guest devices of boards/qemu-virt/board.toml.
    const GIVEN: [(u64, u64); 8] = {
        let d = crate::board::GUEST_DEVICES;
        let mut out = [(0, 0); 8];
        let mut i = 0;
        while i < 8 {
            out[i] = (d[i].1, d[i].2);
            i += 1;
        }
        out
    };

    fn root_children(blob: &[u8]) -> Vec<String> {
        let fdt = Fdt::new(blob).unwrap();
        fdt.root()
            .children()
            .map(|n| n.name().to_string())
            .collect()
    }

    #[test]
    fn the_guest_sees_only_its_devices() {
        assert_eq!(crate::board::GUEST_DEVICES.len(), GIVEN.len());
        let before = root_children(QEMU);
        for present in [
            "fw-cfg@9020000",
            "smmuv3@9050000",
            "virtio_mmio@a000000",
            "flash@0",
        ] {
            assert!(before.iter().any(|n| n == present), "fixture has {present}");
        }
        let mut blob = QEMU.to_vec();
        let removed = prune_for_guest(&mut blob, &GIVEN).unwrap();
        let after = root_children(&blob);
        // fw_cfg, the SMMU, 32 virtio-mmio transports and the flash. (The empty platform bus
        // has no `reg` and no children: it stays, describing nothing.)
        assert_eq!(removed, 1 + 1 + 32 + 1, "{after:?}");
        for gone in ["fw-cfg", "smmuv3", "virtio_mmio", "flash"] {
            assert!(
                !after.iter().any(|n| n.starts_with(gone)),
                "{gone} left: {after:?}"
            );
        }
        for kept in [
            "pcie@10000000",
            "pl011@9000000",
            "pl031@9010000",
            "pl061@9030000",
            "intc@8000000",
            "memory@40000000",
            "chosen",
            "cpus",
            "psci",
            "timer",
            "gpio-keys",
        ] {
            assert!(after.iter().any(|n| n == kept), "{kept} removed: {after:?}");
        }
        let fdt = Fdt::new(&blob).unwrap();
        let pcie = fdt.find_node("/pcie@10000000").unwrap();
        assert!(pcie.property("iommu-map").is_none());
        assert!(pcie.property("iommu-map-mask").is_none());
        assert!(pcie.property("reg").is_some(), "the rest of the node stays");
        // Still a tree the other edits read, of the same size; pruning twice removes nothing.
        assert_eq!(blob.len(), QEMU.len());
        assert_eq!(inspect(&blob).unwrap(), inspect(QEMU).unwrap());
        assert_eq!(prune_for_guest(&mut blob, &GIVEN).unwrap(), 0);
        // Given nothing, every device node goes; RAM stays.
        let mut bare = QEMU.to_vec();
        prune_for_guest(&mut bare, &[]).unwrap();
        let left = root_children(&bare);
        assert!(left.iter().any(|n| n == "memory@40000000"));
        assert!(!left.iter().any(|n| n.starts_with("pl011")), "{left:?}");
    }

    /// A tree shaped like the Raspberry Pi 4's: 2 address and 1 size cell at the root, devices
    /// on buses whose `ranges` move them (`/soc`: 0x7e.. to 0xfe..; `/emmc2bus`: 2-cell child
    /// addresses), reserved memory, and a root-level GIC.
    fn pi_like() -> Vec<u8> {
        use dtoolkit::model::{DeviceTree, DeviceTreeNode as N, DeviceTreeProperty as P};
        let p = |n: &str, v: &[u32]| {
            P::new_unchecked(
                n,
                v.iter().flat_map(|c| c.to_be_bytes()).collect::<Vec<u8>>(),
            )
        };
        let dev =
            |name: &str, reg: &[u32]| N::builder(name).unwrap().property(p("reg", reg)).build();
        let mut t = DeviceTree::new();
        t.root.add_property(p("#address-cells", &[2]));
        t.root.add_property(p("#size-cells", &[1]));
        t.root.add_child(
            N::builder("memory@0")
                .unwrap()
                .property(P::new_unchecked("device_type", "memory"))
                .property(p("reg", &[0, 0, 0x3c00_0000]))
                .build(),
        );
        t.root.add_child(
            N::builder("chosen")
                .unwrap()
                .property(p("linux,initrd-start", &[0, 0x0800_0000]))
                .property(p("linux,initrd-end", &[0, 0x0900_0000]))
                .build(),
        );
        t.root.add_child(
            N::builder("reserved-memory")
                .unwrap()
                .property(p("#address-cells", &[2]))
                .property(p("#size-cells", &[1]))
                .property(P::new_unchecked("ranges", Vec::<u8>::new()))
                .child(dev("nvram@0", &[0, 0, 0]))
                .build(),
        );
        t.root.add_child(
            N::builder("soc")
                .unwrap()
                .property(p("#address-cells", &[1]))
                .property(p("#size-cells", &[1]))
                .property(p(
                    "ranges",
                    &[
                        0x7e00_0000,
                        0,
                        0xfe00_0000,
                        0x180_0000,
                        0x4000_0000,
                        0,
                        0xff80_0000,
                        0x80_0000,
                    ],
                ))
                .child(dev("serial@7e215040", &[0x7e21_5040, 0x40]))
                .child(dev(
                    "watchdog@7e100000",
                    &[0x7e10_0000, 0x114, 0x7e00_a000, 0x24],
                ))
                .child(dev("rng@7e104000", &[0x7e10_4000, 0x28]))
                .child(dev(
                    "interrupt-controller@40041000",
                    &[0x4004_1000, 0x1000, 0x4004_4000, 0x2000],
                ))
                .child(dev("local_intc@40000000", &[0x4000_0000, 0x100]))
                .child(dev("nowhere@1000", &[0x1000, 0x100]))
                .child(N::builder("firmware").unwrap().build())
                .build(),
        );
        t.root.add_child(
            N::builder("emmc2bus")
                .unwrap()
                .property(p("#address-cells", &[2]))
                .property(p("#size-cells", &[1]))
                .property(p("ranges", &[0, 0x7e00_0000, 0, 0xfe00_0000, 0x180_0000]))
                .child(dev("mmc@7e340000", &[0, 0x7e34_0000, 0x100]))
                .build(),
        );
        t.root
            .add_child(dev("gpu@ff846000", &[0, 0xff84_6000, 0x1000]));
        t.to_dtb()
    }

    fn names_under(blob: &[u8], path: &str) -> Vec<String> {
        let fdt = Fdt::new(blob).unwrap();
        fdt.find_node(path)
            .unwrap()
            .children()
            .map(|n| n.name().to_string())
            .collect()
    }

    #[test]
    fn a_raspberry_pi_tree_keeps_exactly_the_given_devices_behind_its_buses() {
        let given = [
            (0xfe21_5000, 0x1000), // the mini-UART's page
            (0xfe34_0000, 0x1000), // EMMC2
            (0xff84_1000, 0x3000), // GIC distributor and CPU interface
        ];
        let mut blob = pi_like();
        let removed = prune_for_guest(&mut blob, &given).unwrap();
        // The watchdog and RNG (hypervisor-owned), the ARM-local block, a device no range
        // translates, and the root-level node at a kept address.
        assert_eq!(removed, 5);
        let soc = names_under(&blob, "/soc");
        assert_eq!(
            soc,
            [
                "serial@7e215040",
                "interrupt-controller@40041000",
                "firmware"
            ],
            "{soc:?}"
        );
        assert_eq!(names_under(&blob, "/emmc2bus"), ["mmc@7e340000"]);
        assert_eq!(names_under(&blob, "/reserved-memory"), ["nvram@0"]);
        assert!(!root_children(&blob).iter().any(|n| n.starts_with("gpu")));
        // Its benign twin: given everything, only the node no range translates goes.
        let mut all = pi_like();
        assert_eq!(prune_for_guest(&mut all, &[(0, u64::MAX)]).unwrap(), 1);
        assert_eq!(
            names_under(&all, "/soc"),
            [
                "serial@7e215040",
                "watchdog@7e100000",
                "rng@7e104000",
                "interrupt-controller@40041000",
                "local_intc@40000000",
                "firmware"
            ]
        );
    }

    #[test]
    fn memory_with_one_size_cell_is_read_and_edited_in_its_width() {
        let mut blob = pi_like();
        let i = inspect(&blob).unwrap();
        assert_eq!(i.memory, (0, 0x3c00_0000));
        assert_eq!(i.initrd, (0x0800_0000, 0x0900_0000));
        edit_for_guest(
            &mut blob,
            (0x100_0000, 0x3b00_0000),
            (0x0810_0000, 0x0910_0000),
        )
        .unwrap();
        let i = inspect(&blob).unwrap();
        assert_eq!(i.memory, (0x100_0000, 0x3b00_0000));
        assert_eq!(i.initrd, (0x0810_0000, 0x0910_0000));
        // A size that needs two cells does not fit one: refused, not truncated.
        assert_eq!(
            edit_for_guest(&mut blob, (0x100_0000, 1 << 32), (0, 1)),
            Err(DtbError::BadProperty)
        );
    }

    #[test]
    fn garbage_is_refused() {
        assert_eq!(inspect(&[0u8; 64]), Err(DtbError::Invalid));
        let mut cut = QEMU.to_vec();
        cut.truncate(100);
        assert!(inspect(&cut).is_err());
    }
}
