//! The program identity of EL0 callers: the code of their whole address space, measured and
//! held read-only in stage 2 (`docs/abi.md`, "Program identity").
//!
//! On a call through the window the hypervisor walks the caller's stage-1 tables (`stage1`)
//! for every page EL0 may execute. If an address space it measured before still executes
//! exactly the same physical pages, its identity stands: those pages have been read-only in
//! stage 2 since they were measured (and to the SMMU, which walks the same tables), so their
//! bytes are the bytes that were hashed. Otherwise it holds the new set read-only, hashes it
//! (`vtpm::code`, leaving out the kernel's vDSO) and remembers it. The call must come from a
//! program page (not the vDSO). A guest write to a held page ends every measurement holding
//! that page before the write goes ahead, so the next call is measured afresh: code patched
//! after registration gives another identity, which the monitor refuses for the slot.
//!
//! The walk's tables are held read-only too, once a second walk under the hold sees the same
//! result: while none of them is written the walk cannot change, so the next call from that
//! address space skips it. A guest write to one of them (the kernel mapping or unmapping
//! anything in that process) only drops the shortcut; the next call walks again.

use aarch64_cpu::registers::*;
use core::sync::atomic::{AtomicU64, Ordering};

use gw_abi::AbiError;
use vtpm::{
    Digest,
    code::{self, RunHasher},
};

use super::{
    hypercall::in_guest_ram,
    mmu,
    stage1::{self, CodePage, GuestRam, WalkError},
    vdso::{self, Vdso},
};

/// Most executable pages a caller's address space may have (8 MiB of code).
const MAX_CODE: usize = 2048;
/// Address spaces remembered (each holds its pages): a gateway runs a dozen callers.
const SPACES: usize = 12;
/// Most runs of code (contiguous executable ranges) a caller may have.
const MAX_RUNS: usize = 64;

/// The guest kernel's vDSO, from the kernel image (primary CPU, at boot).
static VDSO: spin::Once<Option<Vdso>> = spin::Once::new();

/// Find the vDSO in the guest kernel image `kernel` (primary CPU, at boot, before the guest).
pub fn set_kernel(kernel: &[u8]) {
    let v = VDSO.call_once(|| Vdso::find(kernel));
    match v {
        Some(v) => crate::println!(
            "program identity: a caller's executable pages, less the kernel's {}-page vDSO",
            v.pages()
        ),
        None => crate::println!(
            "warning: no vDSO found in the guest kernel: it counts as the caller's code"
        ),
    }
}

/// A measured address space (kept in place: its page list is 32 KiB).
struct Space {
    live: bool,
    /// TTBR0_EL1 of the measurement (table base and ASID).
    ttbr0: u64,
    /// Its executable pages in address order, each held read-only.
    pages: heapless::Vec<CodePage, MAX_CODE>,
    identity: Digest,
    /// When it was last used (for eviction).
    used: u64,
    /// TCR_EL1 of the walk (its regime decides the walk too).
    tcr: u64,
    /// The walk's tables, held read-only while `tables_held`: the walk stands without
    /// repeating it.
    tables: heapless::Vec<u64, { stage1::MAX_TABLES }>,
    tables_held: bool,
}

impl Space {
    fn is(&self, ttbr0: u64, walk: &[CodePage]) -> bool {
        self.live && self.ttbr0 == ttbr0 && self.pages[..] == *walk
    }

    /// Forget the measurement and release its pages.
    fn end(&mut self) {
        self.drop_tables();
        if self.live {
            self.live = false;
            mmu::release(self.pages.iter().map(|p| p.pa));
            self.pages.clear();
        }
    }

    /// Release the walk's tables: the next call walks again.
    fn drop_tables(&mut self) {
        if self.tables_held {
            self.tables_held = false;
            mmu::release(self.tables.iter().copied());
        }
        self.tables.clear();
    }
}

struct Spaces {
    spaces: [Space; SPACES],
    clock: u64,
    /// The walk of the current call, and the tables it read.
    walk: heapless::Vec<CodePage, MAX_CODE>,
    walk_tables: heapless::Vec<u64, { stage1::MAX_TABLES }>,
    page: [u8; vdso::PAGE],
}

static STATE: spin::Mutex<Spaces> = spin::Mutex::new(Spaces {
    spaces: [const {
        Space {
            live: false,
            ttbr0: 0,
            pages: heapless::Vec::new(),
            identity: [0; 32],
            used: 0,
            tcr: 0,
            tables: heapless::Vec::new(),
            tables_held: false,
        }
    }; SPACES],
    clock: 0,
    walk: heapless::Vec::new(),
    walk_tables: heapless::Vec::new(),
    page: [0; vdso::PAGE],
});

/// Guest writes to held pages so far (each ended the measurements holding the page).
static WRITES_TO_HELD: AtomicU64 = AtomicU64::new(0);

/// Guest RAM, read through the EL2 identity map.
struct Ram;

impl GuestRam for Ram {
    fn read_u64(&self, ipa: u64) -> Option<u64> {
        if !ipa.is_multiple_of(8) || !in_guest_ram(ipa) {
            return None;
        }
        // SAFETY: `ipa` is an aligned word of guest RAM (checked), identity-mapped at EL2 and
        // never hypervisor memory; the guest may change it meanwhile, hence a volatile read
        // of a plain integer.
        Some(unsafe { core::ptr::read_volatile(ipa as *const u64) })
    }

    fn is_ram(&self, ipa: u64) -> bool {
        in_guest_ram(ipa)
    }
}

fn copy_page(pa: u64, out: &mut [u8; vdso::PAGE]) {
    // SAFETY: `pa` is a page of guest RAM (the walk keeps only such pages), identity-mapped at
    // EL2; it is held read-only in stage 2 before it is read here, so the guest cannot change
    // it, and `out` is ours.
    unsafe { core::ptr::copy_nonoverlapping(pa as *const u8, out.as_mut_ptr(), vdso::PAGE) };
}

/// The address space and identity of the EL0 caller whose store to the window is at `pc`
/// (the current TTBR0_EL1 / TCR_EL1).
pub fn identity(pc: u64) -> Result<(u64, Digest), AbiError> {
    let (ttbr0, tcr) = (TTBR0_EL1.get(), TCR_EL1.get());
    let mut guard = STATE.lock();
    let st = &mut *guard;
    st.clock += 1;
    let now = st.clock;
    // The shortcut: this address space's tables are held and unwritten since its last walk.
    let cached = st
        .spaces
        .iter()
        .position(|s| s.live && s.tables_held && s.ttbr0 == ttbr0 && s.tcr == tcr);
    let i = match cached {
        Some(i) => i,
        None => {
            walk(st, ttbr0, tcr)?;
            let i = match st.spaces.iter().position(|s| s.is(ttbr0, &st.walk)) {
                Some(i) => i,
                None => measure(st, ttbr0)?,
            };
            hold_tables(st, i, ttbr0, tcr);
            i
        }
    };
    st.spaces[i].used = now;
    // The call must come from the program's own code, not from the vDSO.
    let pc_page = pc & !0xfff;
    let (space, buf) = (&st.spaces[i], &mut st.page);
    let from_program =
        runs(&space.pages).any(|run| run.iter().any(|p| p.va == pc_page) && !is_vdso(run, buf));
    if !from_program {
        return Err(AbiError::Denied);
    }
    Ok((ttbr0, space.identity))
}

/// Walk the caller's tables into `st.walk` and `st.walk_tables`.
fn walk(st: &mut Spaces, ttbr0: u64, tcr: u64) -> Result<(), AbiError> {
    st.walk.clear();
    st.walk_tables.clear();
    let (walk, tables) = (&mut st.walk, &mut st.walk_tables);
    stage1::el0_code_and_tables(
        &Ram,
        ttbr0,
        tcr,
        MAX_CODE,
        // Cannot fail: the walk stops at MAX_CODE pages and MAX_TABLES tables.
        |p| {
            let _ = walk.push(p);
        },
        |t| {
            let _ = tables.push(t);
        },
    )
    .map_err(|e| match e {
        WalkError::Unsupported => AbiError::NotSupported,
        WalkError::BadTable => AbiError::BadAddress,
        WalkError::TooMuchCode | WalkError::TooManyTables => AbiError::Exhausted,
    })?;
    Ok(())
}

/// Hold the tables of the walk just made for space `i`, then walk once more: if the second walk
/// (which the guest can no longer change under us) reads the same tables and finds the same
/// pages, keep the hold, so the next call skips the walk. Otherwise (the guest changed its
/// tables meanwhile, or the hold failed) the next call simply walks again.
fn hold_tables(st: &mut Spaces, i: usize, ttbr0: u64, tcr: u64) {
    st.spaces[i].drop_tables();
    if mmu::hold(st.walk_tables.iter().copied()).is_err() {
        return;
    }
    let (mut pages, mut tables, mut same_pages, mut same_tables) = (0usize, 0usize, true, true);
    let again = stage1::el0_code_and_tables(
        &Ram,
        ttbr0,
        tcr,
        MAX_CODE,
        |p| {
            same_pages &= st.walk.get(pages) == Some(&p);
            pages += 1;
        },
        |t| {
            same_tables &= st.walk_tables.get(tables) == Some(&t);
            tables += 1;
        },
    );
    let same = same_pages && same_tables;
    if again.is_err() || !same || pages != st.walk.len() || tables != st.walk_tables.len() {
        mmu::release(st.walk_tables.iter().copied());
        return;
    }
    let s = &mut st.spaces[i];
    // Cannot fail: both hold at most MAX_TABLES tables.
    let _ = s.tables.extend_from_slice(&st.walk_tables);
    s.tcr = tcr;
    s.tables_held = true;
}

/// The runs of `pages`: maximal ranges of consecutive virtual pages.
fn runs(pages: &[CodePage]) -> impl Iterator<Item = &[CodePage]> {
    pages.chunk_by(|a, b| b.va == a.va + stage1::PAGE)
}

/// Whether `run` is the kernel's vDSO (its pages are held, so their bytes are stable).
fn is_vdso(run: &[CodePage], buf: &mut [u8; vdso::PAGE]) -> bool {
    let Some(Some(v)) = VDSO.get() else {
        return false;
    };
    run.len() == v.pages()
        && run.iter().enumerate().all(|(i, p)| {
            copy_page(p.pa, buf);
            v.matches(i, buf)
        })
}

/// Hold and hash the current walk as the address space `ttbr0`, in place of whatever was
/// remembered for it (or of a free or the least recently used space); returns its index.
fn measure(st: &mut Spaces, ttbr0: u64) -> Result<usize, AbiError> {
    mmu::hold(st.walk.iter().map(|p| p.pa)).map_err(|_| AbiError::Exhausted)?;
    let mut digests = heapless::Vec::<Digest, MAX_RUNS>::new();
    let mut too_many = false;
    for run in runs(&st.walk) {
        if is_vdso(run, &mut st.page) {
            continue;
        }
        let mut h = RunHasher::new();
        for p in run {
            copy_page(p.pa, &mut st.page);
            h.page(&st.page);
        }
        too_many |= digests.push(h.finish()).is_err();
    }
    if too_many {
        mmu::release(st.walk.iter().map(|p| p.pa));
        return Err(AbiError::Exhausted);
    }
    let identity = code::identity(&mut digests);
    let i = st
        .spaces
        .iter()
        .position(|s| s.live && s.ttbr0 == ttbr0)
        .or_else(|| st.spaces.iter().position(|s| !s.live))
        .unwrap_or_else(|| {
            let lru = st.spaces.iter().map(|s| s.used).min().unwrap_or(0);
            st.spaces.iter().position(|s| s.used == lru).unwrap_or(0)
        });
    let s = &mut st.spaces[i];
    s.end();
    s.live = true;
    s.ttbr0 = ttbr0;
    // Cannot fail: both hold at most MAX_CODE pages.
    let _ = s.pages.extend_from_slice(&st.walk);
    s.identity = identity;
    Ok(i)
}

/// A guest write faulted on the page at `pa`: if a measurement holds it, end every measurement
/// holding it (their pages become writable unless another holds them) and return true, so the
/// write is retried; otherwise false (a fault of another kind).
pub fn write_fault(pa: u64) -> bool {
    let page = pa & !0xfff;
    if !in_guest_ram(page) || !mmu::is_held(page) {
        return false;
    }
    let mut st = STATE.lock();
    let (mut ended, mut walks) = (0, 0);
    for s in st.spaces.iter_mut() {
        if s.live && s.pages.iter().any(|p| p.pa == page) {
            s.end();
            ended += 1;
        } else if s.tables_held && s.tables.contains(&page) {
            // The kernel edits this process's tables: the next call walks again.
            s.drop_tables();
            walks += 1;
        }
    }
    if ended + walks == 0 {
        // Held by no remembered measurement (cannot happen): release it rather than fault
        // forever.
        mmu::release(core::iter::once(page));
    }
    if ended == 0 {
        return true;
    }
    let n = WRITES_TO_HELD.fetch_add(1, Ordering::Relaxed);
    if n < 16 || n.is_multiple_of(1024) {
        crate::println!(
            "code write #{n}: the guest wrote held code page {page:#x}; {ended} measurement(s) ended, \
             their next call is measured afresh"
        );
    }
    true
}
