//! The program identity of a guest process under the hypervisor: its executable code.
//!
//! The hypervisor walks the caller's stage-1 tables, takes every page user space may execute
//! (except the kernel's vDSO), and groups them into *runs* of pages contiguous in virtual
//! memory. Each run is hashed page by page; the identity hashes the sorted run digests, so it
//! does not depend on where address-space randomisation put each run. The image builder
//! computes the same value from a program's ELF file (`xtask::provision::el0_program_id`), which
//! is what the reference manifest carries. Layout in `docs/abi.md` ("Program identity").
//!
//! ```text
//! run      = SHA-256(CODE_CONTEXT || "run\0" || page_0 || … || page_{n-1} || u32le(n))
//! identity = SHA-256(CODE_CONTEXT || "identity\0" || u32le(runs) || sort(run digests))
//! ```

use sha2::Digest as _;

use crate::Digest;

/// Domain separation for code identities (format version 1).
pub const CODE_CONTEXT: &[u8] = b"gatewarden/code/v1\0";

/// Size of a page of code.
pub const PAGE: usize = 4096;

/// Hashes one run of code pages, in address order.
#[derive(Clone)]
pub struct RunHasher {
    sha: sha2::Sha256,
    pages: u32,
}

impl Default for RunHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl RunHasher {
    /// An empty run.
    pub fn new() -> Self {
        let mut sha = sha2::Sha256::new();
        sha.update(CODE_CONTEXT);
        sha.update(b"run\0");
        Self { sha, pages: 0 }
    }

    /// Add the next page of the run.
    pub fn page(&mut self, page: &[u8; PAGE]) {
        self.sha.update(page);
        self.pages += 1;
    }

    /// Pages added so far.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// The run's digest.
    pub fn finish(mut self) -> Digest {
        self.sha.update(self.pages.to_le_bytes());
        self.sha.finalize().into()
    }
}

/// The identity of a program whose code is `runs` (one digest per run, any order: they are
/// sorted in place).
pub fn identity(runs: &mut [Digest]) -> Digest {
    runs.sort_unstable();
    let mut sha = sha2::Sha256::new();
    sha.update(CODE_CONTEXT);
    sha.update(b"identity\0");
    sha.update((runs.len() as u32).to_le_bytes());
    for r in runs.iter() {
        sha.update(r);
    }
    sha.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pages: &[u8]) -> Digest {
        let mut h = RunHasher::new();
        for &b in pages {
            h.page(&[b; PAGE]);
        }
        h.finish()
    }

    /// Known answer: pins the format, so a change to it is a deliberate version bump.
    #[test]
    fn known_answer() {
        let mut runs = [run(&[0x11, 0x22]), run(&[0x33])];
        let id = identity(&mut runs);
        // SHA-256 over the byte strings of the layout in the module docs, computed independently:
        // Python's hashlib over pages of 0x11, 0x22 (one run) and 0x33 (another).
        assert_eq!(
            hex(&id),
            "21d5ef5769b6ec89e67e8633b4647552956f7ef20b77e9f0281aa0fcf30b6459"
        );
    }

    #[test]
    fn order_of_runs_does_not_matter_but_order_of_pages_does() {
        let (a, b) = (run(&[1, 2]), run(&[3]));
        assert_eq!(identity(&mut [a, b]), identity(&mut [b, a]));
        assert_ne!(run(&[1, 2]), run(&[2, 1]));
        // Splitting a run changes the identity: runs are not just concatenated.
        assert_ne!(
            identity(&mut [run(&[1, 2])]),
            identity(&mut [run(&[1]), run(&[2])])
        );
        // One byte anywhere changes it.
        let mut h = RunHasher::new();
        let mut p = [1u8; PAGE];
        p[PAGE - 1] = 0;
        h.page(&p);
        assert_ne!(h.finish(), run(&[1]));
    }

    fn hex(d: &Digest) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }
}
