//! The guest bundle: guest kernel and initramfs in one blob.
//!
//! Boot loaders hand over one kernel and one initrd. The hypervisor is the "kernel"; the
//! bundle travels as the "initrd" (QEMU `-initrd`, Raspberry Pi `initramfs … followkernel`).
//! The hypervisor measures both parts, copies the kernel to its load address and gives the
//! guest the initramfs part, which stays where the loader put it. Layout: `docs/boot.md`.

use zerocopy::{
    FromBytes, Immutable, IntoBytes, KnownLayout,
    byteorder::little_endian::{U32, U64},
};

/// Magic at the start of a bundle.
pub const MAGIC: [u8; 8] = *b"GWBUNDL1";
/// Header size; the kernel follows at a 4 KiB-aligned offset.
pub const HEADER_LEN: usize = 64;

/// Bundle header (64 bytes, little-endian).
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Header {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// Format version (1).
    pub version: U32,
    /// Flags (0).
    pub flags: U32,
    /// Offset of the kernel image from the bundle start.
    pub kernel_offset: U64,
    /// Kernel image length.
    pub kernel_len: U64,
    /// Offset of the initramfs.
    pub initrd_offset: U64,
    /// Initramfs length.
    pub initrd_len: U64,
    /// Reserved, zero.
    pub reserved: [u8; 16],
}

/// Why a bundle was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleError {
    /// Shorter than a header, wrong magic or version.
    BadHeader,
    /// A part lies outside the bundle or the parts overlap.
    BadLayout,
}

/// A parsed bundle: byte ranges of the parts, relative to the bundle start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    /// Kernel range.
    pub kernel: core::ops::Range<usize>,
    /// Initramfs range.
    pub initrd: core::ops::Range<usize>,
}

fn range(off: u64, len: u64, total: usize) -> Result<core::ops::Range<usize>, BundleError> {
    let end = off.checked_add(len).ok_or(BundleError::BadLayout)?;
    if end > total as u64 || off < HEADER_LEN as u64 {
        return Err(BundleError::BadLayout);
    }
    Ok(off as usize..end as usize)
}

/// Parse and bounds-check a bundle.
pub fn parse(bytes: &[u8]) -> Result<Parts, BundleError> {
    let (h, _) = Header::read_from_prefix(bytes).map_err(|_| BundleError::BadHeader)?;
    if h.magic != MAGIC || h.version.get() != 1 {
        return Err(BundleError::BadHeader);
    }
    let kernel = range(h.kernel_offset.get(), h.kernel_len.get(), bytes.len())?;
    let initrd = range(h.initrd_offset.get(), h.initrd_len.get(), bytes.len())?;
    if kernel.is_empty() || (kernel.start < initrd.end && initrd.start < kernel.end) {
        return Err(BundleError::BadLayout);
    }
    Ok(Parts { kernel, initrd })
}

/// Build a bundle (used by `cargo xtask image` and tests).
#[cfg(not(target_os = "none"))]
pub fn build(kernel: &[u8], initrd: &[u8]) -> Vec<u8> {
    let align = |n: usize| n.div_ceil(4096) * 4096;
    let kernel_offset = 4096;
    let initrd_offset = align(kernel_offset + kernel.len());
    let header = Header {
        magic: MAGIC,
        version: U32::new(1),
        flags: U32::new(0),
        kernel_offset: U64::new(kernel_offset as u64),
        kernel_len: U64::new(kernel.len() as u64),
        initrd_offset: U64::new(initrd_offset as u64),
        initrd_len: U64::new(initrd.len() as u64),
        reserved: [0; 16],
    };
    let mut out = vec![0u8; initrd_offset + initrd.len()];
    out[..HEADER_LEN].copy_from_slice(header.as_bytes());
    out[kernel_offset..kernel_offset + kernel.len()].copy_from_slice(kernel);
    out[initrd_offset..].copy_from_slice(initrd);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let b = build(b"KERNEL", b"INITRD");
        let p = parse(&b).unwrap();
        assert_eq!(&b[p.kernel.clone()], b"KERNEL");
        assert_eq!(&b[p.initrd.clone()], b"INITRD");
        assert_eq!(p.initrd.start % 4096, 0);
        assert_eq!(parse(&b[..10]), Err(BundleError::BadHeader));
        let mut bad = b.clone();
        bad[0] = b'X';
        assert_eq!(parse(&bad), Err(BundleError::BadHeader));
        // Truncated: the initramfs runs past the end.
        assert_eq!(parse(&b[..b.len() - 1]), Err(BundleError::BadLayout));
        // Overlapping parts.
        let mut ov = b.clone();
        ov[32..40].copy_from_slice(&4096u64.to_le_bytes());
        assert_eq!(parse(&ov), Err(BundleError::BadLayout));
        // Offset overflow.
        let mut of = b.clone();
        of[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(parse(&of), Err(BundleError::BadLayout));
    }
}
