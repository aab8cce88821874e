//! Device DMA from a hostile guest kernel, in QEMU: `gwdma.ko` (guest-agents/kmod) takes over
//! each virtio PCI device the guest has (rng, block, network) and makes it DMA into its own
//! buffers (each must work: the benign twins) and at the hypervisor's physical memory: the
//! device secret as the source of disk writes and transmitted frames, hypervisor code as the
//! destination of random bytes, disk reads and received frames. It also aims the GIC's LPI
//! tables at the hypervisor and programs fw_cfg's DMA engine.
//!
//! From the host the test then reads the hypervisor's code and read-only data (secret
//! included) back through QEMU's monitor, the disk the device wrote and every frame the
//! network carried (QEMU's filter-dump): the benign bytes arrived, no byte of the secret left
//! the hypervisor and none of its bytes changed. The same attacks on main at 3342c0c (virtio-mmio,
//! fw_cfg mapped, no SMMU) read the secret and rewrote hypervisor code, as an independent review
//! showed.

use gw_tests::qemu::{Qemu, Qmp, image_args, image_dir};

/// The board's load address of `hv.bin` (boards/qemu-virt/board.toml).
const LOAD: u64 = 0x4008_0000;

/// Where QEMU virt's first GIC redistributor sits (boards/qemu-virt/board.toml, the mediated `gicv3-redistributor-control` device).
const GICR: u64 = 0x080a_0000;

/// The measured part of hv.bin (code, read-only data, the device secret), and where in it the
/// 32-byte secret starts.
fn measured() -> (Vec<u8>, usize) {
    let bin = std::fs::read(image_dir("qemu-virt").join("hv.bin")).unwrap();
    let size = u64::from_le_bytes(bin[32..40].try_into().unwrap()) as usize;
    let at = bin
        .windows(8)
        .position(|w| w == b"GWSECRT1")
        .expect("the device secret's marker in hv.bin")
        + 8;
    assert!(at + 32 <= size, "the secret is in the measured part");
    assert_ne!(bin[at..at + 32], [0; 32], "the image is provisioned");
    (bin[..size].to_vec(), at)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn no_device_reaches_hypervisor_memory_and_each_reaches_the_guests_own() {
    let dir = tempfile::tempdir().unwrap();
    let (code, secret_at) = measured();
    let secret = code[secret_at..secret_at + 32].to_vec();
    let secret_pa = LOAD + secret_at as u64;

    // The guest's own disk, writable here, and a record of every frame on the uplink.
    let disk = dir.path().join("disk.img");
    std::fs::copy(image_dir("qemu-virt").join("disk.img"), &disk).unwrap();
    let pcap = dir.path().join("uplink.pcap");
    let args: Vec<String> = image_args()
        .into_iter()
        .map(|a| {
            if a.contains("id=disk0") {
                format!("if=none,id=disk0,format=raw,file={}", disk.display())
            } else {
                a
            }
        })
        .collect();
    let sock = dir.path().join("qmp.sock");
    let mut extra: Vec<String> = Qmp::arg(&sock).into();
    extra.extend([
        "-object".into(),
        format!("filter-dump,id=gwdump,netdev=net0,file={}", pcap.display()),
    ]);
    let mut q = Qemu::boot_with_args(2, &args, &extra);
    let mut qmp = Qmp::connect(&sock);
    q.expect("SMMUv3 at ");
    q.expect("gatewarden-guest: up");
    q.expect("# ");

    let out = q.run(&format!(
        "for d in /sys/bus/pci/drivers/virtio-pci/0000:*; do echo ${{d##*/}} > /sys/bus/pci/drivers/virtio-pci/unbind; done; \
         insmod /lib/modules/extra/gwdma.ko hv_read={secret_pa:#x} hv_write={LOAD:#x} gicr={GICR:#x}; \
         dmesg | grep -o 'gwdma: .*'"
    ));
    // The benign twins: each device's DMA into the module's own buffers works.
    for want in [
        "gwdma: rng into own buffer: 64 bytes,",
        "gwdma: blk read into own buffer: 513, status 0, label GATEWARDEN-TEST-DISK",
        "gwdma: blk write from own buffer to sector 2: 1, status 0",
        "gwdma: net rx into own buffer: 76, ethertype 0806, arp op 2",
        "gwdma: done",
    ] {
        assert!(out.contains(want), "missing {want:?}:\n{out}");
    }
    let nonzero: usize = out
        .lines()
        .find_map(|l| l.split("64 bytes, ").nth(1))
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("the rng line counts nonzero bytes");
    assert!(nonzero > 48, "the rng device wrote random bytes: {out}");
    // Each attack was made (the device answered; where its bytes went is checked below).
    for tried in [
        format!("rng into hypervisor {LOAD:#x}"),
        format!("blk read into hypervisor {LOAD:#x}"),
        format!("blk write from hypervisor {secret_pa:#x} to sector 3"),
        format!("net rx into hypervisor {LOAD:#x}"),
        format!("net tx from hypervisor {secret_pa:#x}"),
    ] {
        assert!(out.contains(&tried), "attack {tried:?} not made:\n{out}");
    }
    // The LPI tables cannot be aimed at the hypervisor: no LPIs, the table registers read 0.
    assert!(
        out.contains("gwdma: gicr TYPER.PLPIS 0, PROPBASER 0x0, PENDBASER 0x0, EnableLPIs 0"),
        "{out}"
    );
    assert!(
        qmp.read_physical(LOAD, code.len()) == code,
        "device DMA changed the hypervisor's code or read-only data"
    );

    // fw_cfg is not mapped: programming its DMA engine aborts in the guest, and the hypervisor
    // says where.
    let out = q.run(&format!(
        "insmod /lib/modules/extra/gwdma.ko fwcfg=1 hv_write={LOAD:#x}; echo rc=$?"
    ));
    assert!(
        q.output().contains("guest write to IPA 0x9020010"),
        "the hypervisor names the refused fw_cfg access:\n{}",
        q.output()
    );
    assert!(out.contains("rc=139"), "the module's access aborted: {out}");
    assert!(!out.contains("fw_cfg DMA register written"), "{out}");
    assert!(
        qmp.read_physical(LOAD, code.len()) == code,
        "fw_cfg DMA changed the hypervisor's code"
    );
    // The hypervisor still answers the ABI from the guest kernel.
    let out = q.run(
        "insmod /lib/modules/extra/gwhvc.ko bench=10 malformed=0; dmesg | grep -o 'gwhvc: gatewarden-hv ABI.*'",
    );
    assert!(out.contains("gwhvc: gatewarden-hv ABI"), "{out}");
    drop(qmp);
    drop(q);

    // What the devices wrote outside the guest: the benign bytes, never the secret.
    let disk = std::fs::read(&disk).unwrap();
    assert!(
        disk[1024..1536].starts_with(b"GWDMA-BENIGN-MARKER blk"),
        "the block device wrote the module's own buffer to sector 2"
    );
    assert!(
        !contains(&disk, &secret[..16]),
        "the block device wrote the device secret to the disk"
    );
    let frames = std::fs::read(&pcap).unwrap();
    assert!(
        contains(&frames, b"GWDMA-BENIGN-MARKER net"),
        "the network device sent the module's own frame"
    );
    assert!(
        !contains(&frames, &secret[..16]),
        "the network device sent the device secret"
    );
}
