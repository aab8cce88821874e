//! Why the guest left, in terms every architecture shares: each architecture decodes its own
//! syndrome into an [`Exit`] (aarch64: `arch::aarch64::exception::decode`), and its trap
//! handler acts on that, so the handling reads the same whatever decoded it.

/// Why the guest left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// The guest called the hypervisor (Arm: `HVC #imm` or `SMC`).
    Call {
        /// The instruction that called.
        conduit: Conduit,
        /// Its immediate (only `HVC #0` is a Gatewarden or PSCI call).
        imm: u16,
    },
    /// A guest memory access the second-stage tables did not allow.
    Memory(MemoryFault),
    /// A trapped access to a debug or performance-monitor register (answered read-as-zero,
    /// write-ignored).
    DebugRegister {
        /// A read (into `reg`), or a write.
        read: bool,
        /// The guest register read into or written from (31: the zero register).
        reg: u8,
    },
    /// Anything else, with the architecture's raw syndrome.
    Other(u64),
}

/// How the guest called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conduit {
    /// Arm HVC (the PC is already past it).
    Hvc,
    /// Arm SMC (the PC is on it: the handler steps past).
    Smc,
}

/// What the faulting access was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultAccess {
    /// A data read.
    Read,
    /// A data write.
    Write,
    /// An instruction fetch.
    Fetch,
}

/// A guest memory access stopped by the second stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryFault {
    /// The guest physical address (for a permission fault on Arm, only its page is reliable).
    pub ipa: u64,
    /// The guest virtual address.
    pub va: u64,
    /// Read, write or fetch.
    pub access: FaultAccess,
    /// A permission fault (the page is mapped, but not for this access) rather than a
    /// translation fault.
    pub permission: bool,
    /// Taken by the guest's own stage-1 table walk (its tables are then what is at `ipa`).
    pub walk: bool,
    /// The access decoded, when the hardware describes it (single-register loads and stores).
    pub mmio: Option<MmioAccess>,
    /// The length of the faulting instruction in bytes.
    pub instruction_len: u8,
}

/// A single-register load or store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioAccess {
    /// Access size in bytes (1, 2, 4 or 8).
    pub size: u8,
    /// The guest register (31: the zero register).
    pub reg: u8,
}
