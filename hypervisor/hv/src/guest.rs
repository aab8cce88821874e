//! Guest memory as the hypercall path sees it: typed guest addresses, a [`GuestMemory`] trait
//! each architecture implements (aarch64: `AT S12E*` walks and the EL2 identity map), and the
//! arch-neutral buffer call built on it.
//!
//! The call copies the request into hypervisor memory before anything decodes it (so the guest
//! cannot change it mid-call), checks that the response buffer is writable as far as the answer
//! can reach before the call runs (so a call with side effects never takes effect and then
//! reports BAD_ADDRESS), and copies the answer out. Everything here is host-tested with a fake
//! translator; the x86 port implements the same trait over its nested page tables.

use gw_abi::{AbiError, MAX_REQUEST, MAX_RESPONSE, regs::CallRegs};

/// Bytes in a translation granule.
pub const PAGE: u64 = 4096;

/// A guest virtual address (in the caller's translation regime).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestVirt(pub u64);

/// A guest physical address that lies in guest RAM (only [`GuestMemory::translate`] makes one
/// for the copy functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GuestPhys(pub u64);

/// What a translation is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The caller may read it.
    Read,
    /// The caller may write it.
    Write,
}

/// The guest's memory, as reached from the caller's translation regime.
pub trait GuestMemory {
    /// The guest RAM address `va` maps to, when the caller may make `access` there; `None` for
    /// unmapped pages, permissions the caller lacks, devices and anything outside guest RAM.
    fn translate(&self, va: GuestVirt, access: Access) -> Option<GuestPhys>;
    /// Read guest RAM at `pa` into `buf`; the range lies within one page of guest RAM.
    fn read(&self, pa: GuestPhys, buf: &mut [u8]);
    /// Write `buf` to guest RAM at `pa`; the range lies within one page of guest RAM.
    fn write(&mut self, pa: GuestPhys, buf: &[u8]);
}

/// The pieces of `[va, va + len)` that lie in one page each: `(address, offset in the
/// buffer, length)`. `None` when the range wraps the address space.
fn pages(va: u64, len: usize) -> Option<impl Iterator<Item = (u64, usize, usize)>> {
    if len > 0 {
        va.checked_add(len as u64 - 1)?;
    }
    let mut done = 0usize;
    Some(core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let at = va + done as u64;
        let n = ((PAGE - (at % PAGE)) as usize).min(len - done);
        let piece = (at, done, n);
        done += n;
        Some(piece)
    }))
}

/// Copy `buf.len()` bytes from the guest at `va`, page by page.
pub fn copy_from_guest(
    m: &impl GuestMemory,
    va: GuestVirt,
    buf: &mut [u8],
) -> Result<(), AbiError> {
    for (at, off, n) in pages(va.0, buf.len()).ok_or(AbiError::BadAddress)? {
        let pa = m
            .translate(GuestVirt(at), Access::Read)
            .ok_or(AbiError::BadAddress)?;
        m.read(pa, &mut buf[off..off + n]);
    }
    Ok(())
}

/// Copy `buf` to the guest at `va`, page by page.
pub fn copy_to_guest(m: &mut impl GuestMemory, va: GuestVirt, buf: &[u8]) -> Result<(), AbiError> {
    for (at, off, n) in pages(va.0, buf.len()).ok_or(AbiError::BadAddress)? {
        let pa = m
            .translate(GuestVirt(at), Access::Write)
            .ok_or(AbiError::BadAddress)?;
        m.write(pa, &buf[off..off + n]);
    }
    Ok(())
}

/// Check that every page of `[va, va + len)` translates for writing.
pub fn check_writable(m: &impl GuestMemory, va: GuestVirt, len: usize) -> Result<(), AbiError> {
    for (at, _, _) in pages(va.0, len).ok_or(AbiError::BadAddress)? {
        m.translate(GuestVirt(at), Access::Write)
            .ok_or(AbiError::BadAddress)?;
    }
    Ok(())
}

/// One buffer call: the request (already bounds-checked by [`gw_abi::regs::check_buffers`]) is
/// copied into `req`, the response buffer is checked writable up to `response_bound` bytes,
/// `handle` runs on the copy and writes its answer into `resp`, and the answer is copied out.
/// Returns the answer's length.
pub fn buffer_call(
    m: &mut impl GuestMemory,
    r: &CallRegs,
    response_bound: usize,
    req: &mut [u8; MAX_REQUEST],
    resp: &mut [u8; MAX_RESPONSE],
    handle: impl FnOnce(&[u8], &mut [u8]) -> Result<usize, AbiError>,
) -> Result<usize, AbiError> {
    gw_abi::regs::check_buffers(r)?;
    let req = &mut req[..r.req_len as usize];
    copy_from_guest(m, GuestVirt(r.req_addr), req)?;
    let cap = (r.resp_cap as usize).min(MAX_RESPONSE);
    check_writable(m, GuestVirt(r.resp_addr), cap.min(response_bound))?;
    let len = handle(req, &mut resp[..cap])?;
    if len > cap {
        return Err(AbiError::BufferTooSmall);
    }
    copy_to_guest(m, GuestVirt(r.resp_addr), &resp[..len])?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// A fake guest: a page table from guest-virtual pages to (guest RAM page, writable), over
    /// a small guest RAM.
    struct Fake {
        map: BTreeMap<u64, (u64, bool)>,
        ram: Vec<u8>,
    }

    const RAM_BASE: u64 = 0x4100_0000;

    impl Fake {
        fn new(pages: usize) -> Self {
            Fake {
                map: BTreeMap::new(),
                ram: vec![0; pages * PAGE as usize],
            }
        }
        /// Map virtual page `vpage` to RAM page `rpage`.
        fn map(&mut self, vpage: u64, rpage: u64, writable: bool) {
            self.map.insert(vpage, (RAM_BASE + rpage * PAGE, writable));
        }
        fn at(&self, pa: GuestPhys) -> usize {
            (pa.0 - RAM_BASE) as usize
        }
    }

    impl GuestMemory for Fake {
        fn translate(&self, va: GuestVirt, access: Access) -> Option<GuestPhys> {
            let &(page, writable) = self.map.get(&(va.0 / PAGE))?;
            if access == Access::Write && !writable {
                return None;
            }
            Some(GuestPhys(page + va.0 % PAGE))
        }
        fn read(&self, pa: GuestPhys, buf: &mut [u8]) {
            let a = self.at(pa);
            buf.copy_from_slice(&self.ram[a..a + buf.len()]);
        }
        fn write(&mut self, pa: GuestPhys, buf: &[u8]) {
            let a = self.at(pa);
            self.ram[a..a + buf.len()].copy_from_slice(buf);
        }
    }

    fn regs(req_addr: u64, req_len: u64, resp_addr: u64, resp_cap: u64) -> CallRegs {
        CallRegs {
            function: 0,
            req_addr,
            req_len,
            resp_addr,
            resp_cap,
        }
    }

    /// An echo handler that counts its runs (the side effect a call must not have when its
    /// answer cannot be delivered).
    fn call(m: &mut Fake, r: &CallRegs, runs: &mut u32) -> Result<usize, AbiError> {
        let (mut req, mut resp) = ([0; MAX_REQUEST], [0; MAX_RESPONSE]);
        buffer_call(m, r, MAX_RESPONSE, &mut req, &mut resp, |q, a| {
            *runs += 1;
            a[..q.len()].copy_from_slice(q);
            Ok(q.len())
        })
    }

    #[test]
    fn a_request_across_scattered_pages_is_read_and_answered() {
        let mut m = Fake::new(8);
        // Virtual pages 0x10, 0x11 are RAM pages 5, 2 (not contiguous); 0x20 is RAM page 7.
        m.map(0x10, 5, false);
        m.map(0x11, 2, false);
        m.map(0x20, 7, true);
        m.ram[5 * 4096 + 4090..5 * 4096 + 4096].copy_from_slice(b"abcdef");
        m.ram[2 * 4096..2 * 4096 + 4].copy_from_slice(b"ghij");
        let mut runs = 0;
        let r = regs(0x10 * PAGE + 4090, 10, 0x20 * PAGE + 100, 64);
        assert_eq!(call(&mut m, &r, &mut runs), Ok(10));
        assert_eq!(&m.ram[7 * 4096 + 100..7 * 4096 + 110], b"abcdefghij");
        assert_eq!(runs, 1);
    }

    #[test]
    fn an_unmapped_or_read_only_buffer_is_refused_before_the_call_runs() {
        let mut m = Fake::new(4);
        m.map(0x10, 0, false);
        m.map(0x20, 1, true);
        m.map(0x22, 2, true); // 0x21 unmapped
        m.map(0x30, 3, false);
        let mut runs = 0;
        // Request runs off its mapped page.
        let r = regs(0x10 * PAGE + 4000, 200, 0x20 * PAGE, 16);
        assert_eq!(call(&mut m, &r, &mut runs), Err(AbiError::BadAddress));
        // Response buffer with a hole, or read-only: refused before the handler runs.
        let r = regs(0x10 * PAGE, 8, 0x20 * PAGE + 4000, 200);
        assert_eq!(call(&mut m, &r, &mut runs), Err(AbiError::BadAddress));
        let r = regs(0x10 * PAGE, 8, 0x30 * PAGE, 16);
        assert_eq!(call(&mut m, &r, &mut runs), Err(AbiError::BadAddress));
        assert_eq!(runs, 0);
        // The benign twin: the same call with a writable response buffer runs once.
        let r = regs(0x10 * PAGE, 8, 0x22 * PAGE, 16);
        assert_eq!(call(&mut m, &r, &mut runs), Ok(8));
        assert_eq!(runs, 1);
    }

    #[test]
    fn wrapping_and_overlapping_buffers_are_refused() {
        let mut m = Fake::new(2);
        m.map(u64::MAX / PAGE, 0, true);
        m.map(0, 1, true);
        let mut runs = 0;
        // A request that would wrap from the top page to page 0.
        let r = regs(u64::MAX - 3, 8, 0x100, 8);
        assert_eq!(call(&mut m, &r, &mut runs), Err(AbiError::BadAddress));
        // Request and response overlapping.
        let r = regs(0x10, 16, 0x18, 16);
        assert_eq!(call(&mut m, &r, &mut runs), Err(AbiError::BadAddress));
        // Too long for the bounce buffer.
        let r = regs(0, MAX_REQUEST as u64 + 1, 0x2000, 8);
        assert_eq!(call(&mut m, &r, &mut runs), Err(AbiError::InvalidParameter));
        assert_eq!(runs, 0);
        // The top page on its own is fine.
        assert!(copy_from_guest(&m, GuestVirt(u64::MAX - 3), &mut [0; 4]).is_ok());
    }

    proptest! {
        /// Any buffer: the copy reads exactly the bytes a byte-by-byte walk would, or refuses
        /// when (and only when) some byte of it is unmapped.
        #[test]
        fn copies_match_a_byte_by_byte_walk(
            va in 0u64..8 * PAGE,
            len in 0usize..3 * PAGE as usize,
            holes in proptest::collection::btree_set(0u64..12, 0..4),
        ) {
            let mut m = Fake::new(12);
            for v in 0..12 {
                if !holes.contains(&v) {
                    m.map(v, 11 - v, true);
                }
            }
            for (i, b) in m.ram.iter_mut().enumerate() {
                *b = (i * 7 % 251) as u8;
            }
            let mut buf = vec![0; len];
            let got = copy_from_guest(&m, GuestVirt(va), &mut buf);
            let walk: Option<Vec<u8>> = (0..len as u64)
                .map(|i| {
                    let pa = m.translate(GuestVirt(va + i), Access::Read)?;
                    Some(m.ram[m.at(pa)])
                })
                .collect();
            match walk {
                Some(bytes) => {
                    prop_assert_eq!(got, Ok(()));
                    prop_assert_eq!(buf, bytes);
                }
                None => prop_assert_eq!(got, Err(AbiError::BadAddress)),
            }
        }
    }
}
