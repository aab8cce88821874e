//! The guest kernel's vDSO, found in the kernel image the hypervisor loaded.
//!
//! Linux maps its vDSO (a small shared object inside the kernel image, page aligned) executable
//! into every process. It is the kernel's code, measured with the kernel, not the program's: the
//! code identity of a caller leaves out a run of executable pages that is exactly the vDSO
//! ([`Vdso::matches`]). At boot the kernel may patch the vDSO's alternative instruction sites
//! for the CPU it finds; those bytes (listed in its `.altinstructions`, a few words) are the
//! only ones allowed to differ. Pure code over the image's bytes, tested on the host.

use elf::{
    ElfBytes,
    abi::{EM_AARCH64, ET_DYN, SHT_NOBITS},
    endian::LittleEndian,
    file::Class,
};

/// Size of a page.
pub const PAGE: usize = 4096;
/// Most pages a vDSO may span (arm64's is one).
pub const MAX_PAGES: usize = 4;
/// Most alternative sites it may have.
pub const MAX_SITES: usize = 32;
/// Size of one `struct alt_instr` entry (arm64: two s32 offsets, a u16 feature, two u8 lengths).
const ALT_ENTRY: usize = 12;

/// The kernel's vDSO as the image holds it.
pub struct Vdso {
    bytes: [u8; MAX_PAGES * PAGE],
    pages: usize,
    /// Byte ranges the kernel may patch at boot: `(offset, length)`.
    sites: heapless::Vec<(u32, u8), MAX_SITES>,
}

impl Vdso {
    /// The first page-aligned 64-bit arm64 shared object in `image` (an arm64 kernel `Image`),
    /// if it has one small enough to be a vDSO.
    pub fn find(image: &[u8]) -> Option<Self> {
        (0..image.len())
            .step_by(PAGE)
            .filter(|&off| image[off..].starts_with(b"\x7fELF"))
            .find_map(|off| Self::parse(&image[off..]))
    }

    fn parse(elf: &[u8]) -> Option<Self> {
        let file = ElfBytes::<LittleEndian>::minimal_parse(elf).ok()?;
        let hdr = &file.ehdr;
        if hdr.class != Class::ELF64 || hdr.e_machine != EM_AARCH64 || hdr.e_type != ET_DYN {
            return None;
        }
        // The object's size: its section headers and the furthest section with file contents.
        let mut size =
            (hdr.e_shoff as usize).checked_add(hdr.e_shnum as usize * hdr.e_shentsize as usize)?;
        for s in file.section_headers()?.iter() {
            if s.sh_type != SHT_NOBITS {
                size = size.max((s.sh_offset as usize).checked_add(s.sh_size as usize)?);
            }
        }
        let alt = file.section_header_by_name(".altinstructions").ok()?;
        let pages = size.div_ceil(PAGE);
        if pages == 0 || pages > MAX_PAGES || size > elf.len() {
            return None;
        }
        let mut v = Vdso {
            bytes: [0; MAX_PAGES * PAGE],
            pages,
            sites: heapless::Vec::new(),
        };
        // After the object the image pads to the page with zeros (`.balign PAGE_SIZE`).
        v.bytes[..size].copy_from_slice(&elf[..size]);
        if let Some(s) = alt {
            // Offsets are relative to each entry's own field; the vDSO is mapped as its file,
            // so file offsets are its addresses (checked).
            let (off, len) = (s.sh_offset as usize, s.sh_size as usize);
            if s.sh_addr as usize != off || !len.is_multiple_of(ALT_ENTRY) {
                return None;
            }
            for entry in elf.get(off..off.checked_add(len)?)?.chunks_exact(ALT_ENTRY) {
                let at = off + (entry.as_ptr() as usize - elf[off..].as_ptr() as usize);
                let rel = i32::from_le_bytes(entry[0..4].try_into().ok()?);
                let site = (at as i64).checked_add(rel as i64)?;
                let orig_len = entry[10];
                if site < 0 || site as usize + orig_len as usize > pages * PAGE {
                    return None;
                }
                v.sites.push((site as u32, orig_len)).ok()?;
            }
        }
        Some(v)
    }

    /// Pages the vDSO spans.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Whether `page` is page `index` of the vDSO, up to the kernel's alternative patches.
    pub fn matches(&self, index: usize, page: &[u8; PAGE]) -> bool {
        if index >= self.pages {
            return false;
        }
        let base = index * PAGE;
        let want = &self.bytes[base..base + PAGE];
        page.iter().zip(want).enumerate().all(|(i, (got, want))| {
            got == want || {
                let at = (base + i) as u32;
                self.sites
                    .iter()
                    .any(|&(s, len)| at >= s && at < s + len as u32)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal arm64 ET_DYN object: ELF header, `.text` (8 words), `.altinstructions` (one
    /// entry patching text word 2), `.shstrtab`, section headers.
    fn tiny_vdso(machine: u16, kind: u16) -> Vec<u8> {
        let mut f = vec![0u8; 0x40];
        let text_off = 0x40usize;
        f.extend((0..8u32).flat_map(|i| (0xd503_201f + i).to_le_bytes()));
        let alt_off = f.len();
        let site = text_off + 8;
        f.extend(((site as i64 - alt_off as i64) as i32).to_le_bytes());
        f.extend(0i32.to_le_bytes());
        f.extend(7u16.to_le_bytes());
        f.extend([4u8, 4u8]);
        let str_off = f.len();
        let names = b"\0.text\0.altinstructions\0.shstrtab\0";
        f.extend(names);
        while !f.len().is_multiple_of(8) {
            f.push(0);
        }
        let shoff = f.len();
        let sh = |name: u32, kind: u32, addr: usize, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[16..24].copy_from_slice(&(addr as u64).to_le_bytes());
            h[24..32].copy_from_slice(&(off as u64).to_le_bytes());
            h[32..40].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        f.extend(sh(0, 0, 0, 0, 0));
        f.extend(sh(1, 1, text_off, text_off, 32));
        f.extend(sh(7, 1, alt_off, alt_off, 12));
        f.extend(sh(24, 3, 0, str_off, names.len()));
        let h = &mut f[..0x40];
        h[0..4].copy_from_slice(b"\x7fELF");
        h[4] = 2; // 64-bit
        h[5] = 1; // little endian
        h[6] = 1;
        h[16..18].copy_from_slice(&kind.to_le_bytes());
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h[20..24].copy_from_slice(&1u32.to_le_bytes());
        h[40..48].copy_from_slice(&(shoff as u64).to_le_bytes());
        h[52..54].copy_from_slice(&64u16.to_le_bytes());
        h[58..60].copy_from_slice(&64u16.to_le_bytes());
        h[60..62].copy_from_slice(&4u16.to_le_bytes());
        h[62..64].copy_from_slice(&3u16.to_le_bytes());
        f
    }

    /// A fake kernel image: code pages, then the vDSO at a page boundary, then more.
    fn image_with(vdso: &[u8]) -> Vec<u8> {
        let mut img = vec![0x11u8; 3 * PAGE];
        img[100..104].copy_from_slice(b"\x7fELF"); // not page aligned: ignored
        img.extend(vdso);
        img.resize(img.len().next_multiple_of(PAGE), 0);
        img.extend(vec![0x22u8; PAGE]);
        img
    }

    #[test]
    fn finds_the_vdso_and_tolerates_exactly_its_alternative_sites() {
        let elf = tiny_vdso(EM_AARCH64, ET_DYN);
        let v = Vdso::find(&image_with(&elf)).expect("found");
        assert_eq!(v.pages(), 1);
        let mut page = [0u8; PAGE];
        page[..elf.len()].copy_from_slice(&elf);
        assert!(v.matches(0, &page));
        assert!(!v.matches(1, &page));
        // The alternative site (text word 2) may be patched…
        page[0x48..0x4c].copy_from_slice(&0xd503_3fdfu32.to_le_bytes());
        assert!(v.matches(0, &page));
        // …nothing else may: not the word after it, not the zero padding.
        let mut p2 = page;
        p2[0x4c] ^= 1;
        assert!(!v.matches(0, &p2));
        let mut p3 = page;
        p3[PAGE - 1] = 0xc0;
        assert!(!v.matches(0, &p3));
    }

    #[test]
    fn other_objects_are_not_a_vdso() {
        // A 32-bit Arm (compat) object, an executable, and no object at all.
        assert!(Vdso::find(&image_with(&tiny_vdso(40, ET_DYN))).is_none());
        assert!(Vdso::find(&image_with(&tiny_vdso(EM_AARCH64, 2))).is_none());
        assert!(Vdso::find(&[0x11; 4 * PAGE]).is_none());
    }

    proptest::proptest! {
        /// Corrupt objects never panic the parser.
        #[test]
        fn corrupt_objects_are_handled(flips in proptest::collection::vec((0usize..400, proptest::num::u8::ANY), 1..8)) {
            let mut elf = tiny_vdso(EM_AARCH64, ET_DYN);
            for (at, b) in flips {
                let n = elf.len();
                elf[at % n] = b;
            }
            let _ = Vdso::find(&image_with(&elf));
        }
    }
}
