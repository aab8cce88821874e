//! SMMUv3 encodings: register offsets and fields, stream table entries and commands.
//!
//! Pure code, checked on the host; the EL2 driver that writes them is `arch::aarch64::smmu`.
//! Field positions are those of the Arm SMMUv3 architecture (IHI 0070), the subset a
//! stage-2-only configuration needs (docs/dma-isolation.md).

/// SMMU_IDR0: features.
pub const IDR0: usize = 0x0;
/// SMMU_IDR1: table and queue sizes.
pub const IDR1: usize = 0x4;
/// SMMU_IDR5: output address size and granules.
pub const IDR5: usize = 0x14;
/// SMMU_CR0: enables.
pub const CR0: usize = 0x20;
/// SMMU_CR0ACK: what CR0 took effect as.
pub const CR0ACK: usize = 0x24;
/// SMMU_CR1: table and queue memory attributes.
pub const CR1: usize = 0x28;
/// SMMU_CR2: PTM, RECINVSID.
pub const CR2: usize = 0x2c;
/// SMMU_GBPA: what transactions do while the SMMU is off.
pub const GBPA: usize = 0x44;
/// SMMU_GERROR: global errors.
pub const GERROR: usize = 0x60;
/// SMMU_STRTAB_BASE (64-bit).
pub const STRTAB_BASE: usize = 0x80;
/// SMMU_STRTAB_BASE_CFG.
pub const STRTAB_BASE_CFG: usize = 0x88;
/// SMMU_CMDQ_BASE (64-bit).
pub const CMDQ_BASE: usize = 0x90;
/// SMMU_CMDQ_PROD.
pub const CMDQ_PROD: usize = 0x98;
/// SMMU_CMDQ_CONS.
pub const CMDQ_CONS: usize = 0x9c;

/// CR0.SMMUEN.
pub const CR0_SMMUEN: u32 = 1 << 0;
/// CR0.CMDQEN.
pub const CR0_CMDQEN: u32 = 1 << 3;
/// CR1: queues and tables inner/outer write-back, inner shareable.
pub const CR1_WB_IS: u32 = 1 | (1 << 2) | (3 << 4) | (1 << 6) | (1 << 8) | (3 << 10);
/// CR2: RECINVSID (record invalid stream ids) and PTM (no broadcast TLB maintenance: the
/// hypervisor invalidates by command).
pub const CR2_VALUE: u32 = (1 << 1) | (1 << 2);
/// GBPA.ABORT: with the SMMU off, abort every transaction.
pub const GBPA_ABORT: u32 = 1 << 20;
/// GBPA.Update: set to apply a new value; clears when done.
pub const GBPA_UPDATE: u32 = 1 << 31;
/// *_BASE.RA: read-allocate hint.
pub const BASE_RA: u64 = 1 << 62;
/// CMDQ_CONS.ERR: the error code of a refused command.
pub const CONS_ERR_SHIFT: u32 = 24;

/// What the hypervisor needs of an SMMU, from its ID registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// Stage-2 translation (IDR0.S2P).
    pub stage2: bool,
    /// AArch64 translation tables (IDR0.TTF bit 1).
    pub aarch64_tables: bool,
    /// Stream id bits (IDR1.SIDSIZE).
    pub sid_bits: u32,
    /// log2 of the command queue's most entries (IDR1.CMDQS).
    pub cmdq_log2: u32,
    /// Output address bits (IDR5.OAS).
    pub oas_bits: u32,
    /// 4 KiB granule (IDR5.GRAN4K).
    pub gran4k: bool,
    /// Tables or queues preset by the implementation (IDR1 bits 29, 30).
    pub preset: bool,
}

/// Address bits of a 3-bit physical-address-size code: SMMU_IDR5.OAS and VTCR_EL2.PS (and so
/// STE.S2PS) share the encoding.
pub const fn pa_bits(code: u64) -> u32 {
    match code & 0b111 {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        5 => 48,
        _ => 52,
    }
}

impl Features {
    /// Decode IDR0, IDR1 and IDR5.
    pub fn decode(idr0: u32, idr1: u32, idr5: u32) -> Self {
        let oas_bits = pa_bits(idr5 as u64);
        Self {
            stage2: idr0 & 1 != 0,
            aarch64_tables: (idr0 >> 2) & 0b10 != 0,
            sid_bits: idr1 & 0x3f,
            cmdq_log2: (idr1 >> 21) & 0x1f,
            oas_bits,
            gran4k: (idr5 >> 4) & 1 != 0,
            preset: (idr1 >> 29) & 0b11 != 0,
        }
    }

    /// Why this SMMU cannot translate streams by the guest's stage 2 (`vtcr_ps_bits` of
    /// output address), if it cannot.
    pub fn unsuitable(&self, streams: u32, vtcr_ps_bits: u32) -> Option<&'static str> {
        if !self.stage2 {
            Some("no stage-2 translation (QEMU: -global arm-smmuv3.stage=2)")
        } else if !self.aarch64_tables || !self.gran4k {
            Some("no AArch64 4 KiB-granule tables")
        } else if self.preset {
            Some("preset stream table or queues")
        } else if streams > (1u64 << self.sid_bits.min(32)) as u32 {
            Some("fewer stream id bits than the board's streams")
        } else if self.oas_bits < vtcr_ps_bits {
            Some("output addresses narrower than stage 2's")
        } else if self.cmdq_log2 < CMDQ_LOG2 {
            Some("command queue smaller than 16 entries")
        } else {
            None
        }
    }
}

/// Bytes in a stream table entry.
pub const STE_BYTES: usize = 64;
/// STE.Config: stage 1 bypassed, stage 2 translates.
const STE_CFG_S2: u64 = 0b110;
/// STE.S2AA64: AArch64 stage-2 tables.
const STE_S2AA64: u64 = 1 << 51;

/// A stream table entry that translates a stream by the stage-2 tables at `s2ttb` with
/// VTCR_EL2 `vtcr` (T0SZ, SL0, IRGN0, ORGN0, SH0, TG0, PS: the same walk the CPUs do) and
/// VMID `vmid`. Faults are not recorded (S2R clear): the transaction is aborted.
pub const fn ste_stage2(s2ttb: u64, vtcr: u64, vmid: u16) -> [u64; 8] {
    let mut e = [0u64; 8];
    // Word 0: V and Config.
    e[0] = 1 | (STE_CFG_S2 << 1);
    // Word 2: S2VMID [15:0]; S2T0SZ..S2PS at [50:32] in VTCR_EL2's own [18:0] layout.
    e[2] = vmid as u64 | ((vtcr & 0x7_ffff) << 32) | STE_S2AA64;
    // Word 3: S2TTB [51:4].
    e[3] = s2ttb & 0x000f_ffff_ffff_fff0;
    e
}

/// log2 of the command queue's entries the hypervisor uses.
pub const CMDQ_LOG2: u32 = 4;
/// Bytes in a command.
pub const CMD_BYTES: usize = 16;

/// CMD_CFGI_ALL: forget every cached stream table entry and context descriptor.
pub const fn cmd_cfgi_all() -> [u64; 2] {
    [0x04, 31]
}

/// CMD_TLBI_S12_VMALL: forget every cached translation of VMID `vmid`.
pub const fn cmd_tlbi_s12_vmall(vmid: u16) -> [u64; 2] {
    [0x28 | ((vmid as u64) << 32), 0]
}

/// CMD_TLBI_NSNH_ALL: forget every non-secure, non-hypervisor cached translation.
pub const fn cmd_tlbi_nsnh_all() -> [u64; 2] {
    [0x30, 0]
}

/// CMD_SYNC, completion signalled by the queue's consumer index alone (CS = none).
pub const fn cmd_sync() -> [u64; 2] {
    [0x46, 0]
}

/// A queue's producer or consumer register value after `n` entries: the index in the low
/// `log2` bits and the wrap flag above them.
pub const fn queue_index(n: u64, log2: u32) -> u32 {
    (n & ((2 << log2) - 1)) as u32
}

/// Whether a queue with producer `prod` and consumer `cons` has room for one more entry.
pub const fn queue_has_room(prod: u32, cons: u32, log2: u32) -> bool {
    let mask = (1 << log2) - 1;
    (prod & mask) != (cons & mask) || (prod >> log2) & 1 == (cons >> log2) & 1
}

/// A queue's base register: address (aligned to its size), read-allocate, log2 entries.
pub const fn queue_base(addr: u64, log2: u32) -> u64 {
    (addr & 0x000f_ffff_ffff_ffe0) | BASE_RA | log2 as u64
}

/// STRTAB_BASE_CFG for a linear table of `2^log2` entries.
pub const fn strtab_cfg_linear(log2: u32) -> u32 {
    log2 & 0x3f
}

#[cfg(test)]
mod tests {
    use super::*;

    const VTCR: u64 = 24 | (1 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (2 << 16) | (1 << 31);

    #[test]
    fn stage2_ste_fields() {
        let e = ste_stage2(0x4080_2000, VTCR, 0);
        assert_eq!(e[0] & 1, 1, "valid");
        assert_eq!((e[0] >> 1) & 0b111, 0b110, "S1 bypass, S2 translate");
        assert_eq!(e[1], 0);
        assert_eq!((e[2] >> 32) & 0x3f, 24, "S2T0SZ: 40-bit IPA");
        assert_eq!((e[2] >> 38) & 0b11, 1, "S2SL0: start at level 1");
        assert_eq!((e[2] >> 40) & 0b11, 1, "S2IR0 write-back");
        assert_eq!((e[2] >> 42) & 0b11, 1, "S2OR0 write-back");
        assert_eq!((e[2] >> 44) & 0b11, 3, "S2SH0 inner shareable");
        assert_eq!((e[2] >> 46) & 0b11, 0, "S2TG 4 KiB");
        assert_eq!((e[2] >> 48) & 0b111, 2, "S2PS 40 bits");
        assert_eq!((e[2] >> 51) & 1, 1, "S2AA64");
        assert_eq!((e[2] >> 58) & 1, 0, "S2R: faults abort, unrecorded");
        assert_eq!(e[2] & 0xffff, 0, "VMID 0, as VTTBR_EL2");
        // VTCR_EL2 bit 31 (RES1) does not leak into the entry.
        assert_eq!(e[2] >> 53, STE_S2AA64 >> 53);
        assert_eq!(e[3], 0x4080_2000);
        assert!(e[4..].iter().all(|w| *w == 0));
    }

    #[test]
    fn commands_and_queues() {
        assert_eq!(cmd_cfgi_all()[0] & 0xff, 0x04);
        assert_eq!(cmd_cfgi_all()[1] & 0x1f, 31, "range: every stream");
        assert_eq!(cmd_tlbi_s12_vmall(7), [0x28 | (7 << 32), 0]);
        assert_eq!(cmd_sync()[0] & 0xff, 0x46);
        assert_eq!((cmd_sync()[0] >> 12) & 0b11, 0, "CS none");
        assert_eq!(queue_index(15, 4), 15);
        assert_eq!(queue_index(16, 4), 16, "wrapped once: flag set, index 0");
        assert_eq!(queue_index(32, 4), 0);
        assert!(queue_has_room(0, 0, 4));
        assert!(!queue_has_room(16, 0, 4), "full: same index, other wrap");
        assert!(queue_has_room(16, 16, 4));
        assert!(queue_has_room(3, 17, 4));
        assert_eq!(queue_base(0x4080_0100, 4), 0x4080_0100 | BASE_RA | 4);
    }

    #[test]
    fn features_from_qemus_stage2_smmu() {
        // QEMU 10 `arm-smmuv3` with stage=2: S2P, TTF AArch64; SIDSIZE 16, CMDQS 19; OAS 44.
        let f = Features::decode(1 | (0b10 << 2), 16 | (19 << 21), 4 | (1 << 4));
        assert_eq!(f.unsuitable(256, 40), None);
        assert!(f.unsuitable(1 << 17, 40).is_some());
        assert!(f.unsuitable(256, 48).is_some());
        assert_eq!(pa_bits(VTCR >> 16), 40, "VTCR_EL2.PS");
        let s1_only = Features::decode(0b10 | (0b10 << 2), 16 | (19 << 21), 4 | (1 << 4));
        assert!(s1_only.unsuitable(256, 40).unwrap().contains("stage=2"));
    }
}
