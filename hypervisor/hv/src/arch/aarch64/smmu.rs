//! The SMMUv3 in front of every guest device, owned by the hypervisor.
//!
//! Every stream the board describes is translated by the guest's own stage-2 tables (stage 1
//! bypassed), so a device reaches exactly what the guest's CPUs reach: guest RAM and the guest's
//! devices, never the hypervisor. Streams outside the table, and every transaction while the
//! SMMU is off, abort. The registers are never mapped for the guest, and the stream table and
//! command queue live in hypervisor memory (docs/dma-isolation.md).

use core::{
    cell::UnsafeCell,
    sync::atomic::{AtomicU64, Ordering},
};

use aarch64_cpu::asm::barrier;

use super::smmuv3::{self as enc, CMD_BYTES, CMDQ_LOG2, Features, STE_BYTES};

/// Most streams the table can describe (a linear table of 64-byte entries, 16 KiB).
const MAX_STREAMS: usize = 256;

#[repr(C, align(16384))]
struct StreamTable([[u64; STE_BYTES / 8]; MAX_STREAMS]);

#[repr(C, align(256))]
struct CommandQueue([[u64; CMD_BYTES / 8]; 1 << CMDQ_LOG2]);

struct State {
    strtab: StreamTable,
    cmdq: CommandQueue,
    /// Commands issued so far (the producer index, wrap flag included).
    issued: u64,
}

struct StateCell(UnsafeCell<State>);

// SAFETY: written by the primary CPU alone, during boot before any other CPU or the guest runs
// (`enable`); afterwards the stream table is only read (by the SMMU) and the command queue is
// written only with `COMMANDS` held (`invalidate_stage2`).
unsafe impl Sync for StateCell {}

/// The enabled SMMU's register base (0 until `enable`).
static BASE: AtomicU64 = AtomicU64::new(0);
/// Serialises runtime use of the command queue.
static COMMANDS: spin::Mutex<()> = spin::Mutex::new(());

static STATE: StateCell = StateCell(UnsafeCell::new(State {
    strtab: StreamTable([[0; STE_BYTES / 8]; MAX_STREAMS]),
    cmdq: CommandQueue([[0; CMD_BYTES / 8]; 1 << CMDQ_LOG2]),
    issued: 0,
}));

/// The SMMU's registers at `base` (identity-mapped device memory at EL2).
struct Regs(u64);

impl Regs {
    fn read32(&self, off: usize) -> u32 {
        // SAFETY: `base + off` is an SMMU register inside the board's SMMU frame, mapped as
        // device memory at EL2.
        unsafe { core::ptr::read_volatile((self.0 + off as u64) as *const u32) }
    }

    fn write32(&self, off: usize, v: u32) {
        // SAFETY: as in `read32`; the registers written are the ones this driver programs.
        unsafe { core::ptr::write_volatile((self.0 + off as u64) as *mut u32, v) }
    }

    fn write64(&self, off: usize, v: u64) {
        // SAFETY: as in `read32`; 64-bit registers take single 64-bit writes.
        unsafe { core::ptr::write_volatile((self.0 + off as u64) as *mut u64, v) }
    }

    /// Poll until `done`, or fail naming `what`.
    fn wait_until(&self, what: &str, done: impl Fn(&Self) -> bool) {
        for _ in 0..10_000_000u32 {
            if done(self) {
                return;
            }
            core::hint::spin_loop();
        }
        panic!("SMMU at {:#x}: timed out waiting for {what}", self.0);
    }

    /// Wait until `read32(off) & mask == want`, or fail with `what`.
    fn wait(&self, off: usize, mask: u32, want: u32, what: &str) {
        self.wait_until(what, |r| r.read32(off) & mask == want);
    }

    fn set_cr0(&self, v: u32) {
        self.write32(enc::CR0, v);
        self.wait(enc::CR0ACK, u32::MAX, v, "CR0ACK");
    }
}

/// Queue `cmds`, then a CMD_SYNC, and wait until the SMMU has consumed them all.
fn issue(regs: &Regs, st: &mut State, cmds: &[[u64; 2]]) {
    for cmd in cmds.iter().chain(core::iter::once(&enc::cmd_sync())) {
        let prod = enc::queue_index(st.issued, CMDQ_LOG2);
        regs.wait_until("room in the command queue", |r| {
            enc::queue_has_room(prod, r.read32(enc::CMDQ_CONS), CMDQ_LOG2)
        });
        st.cmdq.0[(st.issued % (1 << CMDQ_LOG2)) as usize] = *cmd;
        st.issued += 1;
        barrier::dsb(barrier::SY);
        regs.write32(enc::CMDQ_PROD, enc::queue_index(st.issued, CMDQ_LOG2));
    }
    let prod = enc::queue_index(st.issued, CMDQ_LOG2);
    regs.wait(
        enc::CMDQ_CONS,
        (2 << CMDQ_LOG2) - 1,
        prod,
        "the command queue",
    );
    let err = (regs.read32(enc::CMDQ_CONS) >> enc::CONS_ERR_SHIFT) & 0x7f;
    if err != 0 {
        panic!("SMMU refused a command: CMDQ_CONS.ERR {err:#x}");
    }
}

/// Take over the SMMU at `base` and translate the first `streams` stream ids by the stage-2
/// tables at `s2ttb` (`vtcr`, VMID 0). Primary CPU only, before the guest runs. A board whose
/// SMMU cannot do this does not boot: its devices' DMA would be unconfined.
pub fn enable(base: u64, streams: u32, s2ttb: u64, vtcr: u64) {
    let regs = Regs(base);
    let f = Features::decode(
        regs.read32(enc::IDR0),
        regs.read32(enc::IDR1),
        regs.read32(enc::IDR5),
    );
    let ps_bits = enc::pa_bits(vtcr >> 16);
    if let Some(why) = f.unsuitable(streams, ps_bits) {
        panic!("SMMU at {base:#x} cannot confine device DMA: {why}");
    }
    if streams as usize > MAX_STREAMS {
        panic!("board describes {streams} SMMU streams; the hypervisor holds {MAX_STREAMS}");
    }
    // Off, and aborting everything while off.
    regs.set_cr0(0);
    regs.write32(enc::GBPA, enc::GBPA_ABORT | enc::GBPA_UPDATE);
    regs.wait(enc::GBPA, enc::GBPA_UPDATE, 0, "GBPA update");

    // SAFETY: boot-time, single CPU, the SMMU off (see `StateCell`).
    let st = unsafe { &mut *STATE.0.get() };
    let ste = enc::ste_stage2(s2ttb, vtcr, 0);
    for e in st.strtab.0.iter_mut().take(streams as usize) {
        *e = ste;
    }
    barrier::dsb(barrier::SY);
    regs.write32(enc::CR1, enc::CR1_WB_IS);
    regs.write32(enc::CR2, enc::CR2_VALUE);
    let strtab = core::ptr::addr_of!(st.strtab) as u64;
    regs.write64(enc::STRTAB_BASE, strtab | enc::BASE_RA);
    regs.write32(
        enc::STRTAB_BASE_CFG,
        enc::strtab_cfg_linear(streams.trailing_zeros()),
    );
    let cmdq = core::ptr::addr_of!(st.cmdq) as u64;
    regs.write64(enc::CMDQ_BASE, enc::queue_base(cmdq, CMDQ_LOG2));
    regs.write32(enc::CMDQ_PROD, 0);
    regs.write32(enc::CMDQ_CONS, 0);
    st.issued = 0;
    regs.set_cr0(enc::CR0_CMDQEN);
    issue(
        &regs,
        st,
        &[
            enc::cmd_cfgi_all(),
            enc::cmd_tlbi_nsnh_all(),
            enc::cmd_tlbi_s12_vmall(0),
        ],
    );
    regs.set_cr0(enc::CR0_CMDQEN | enc::CR0_SMMUEN);
    if regs.read32(enc::GERROR) != 0 {
        panic!("SMMU global error {:#x}", regs.read32(enc::GERROR));
    }
    BASE.store(base, Ordering::Release);
    crate::println!(
        "SMMUv3 at {base:#x}: {streams} streams translated by the guest's stage 2, others abort"
    );
}

/// Make the SMMU forget its cached stage-2 translations (after an edit of the tables), and
/// wait until it has.
pub fn invalidate_stage2() {
    let base = BASE.load(Ordering::Acquire);
    if base == 0 {
        return;
    }
    let _g = COMMANDS.lock();
    // SAFETY: `COMMANDS` is held, so this CPU alone writes the command queue (see `StateCell`).
    let st = unsafe { &mut *STATE.0.get() };
    issue(&Regs(base), st, &[enc::cmd_tlbi_s12_vmall(0)]);
}
