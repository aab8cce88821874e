//! Per-boot keys in QEMU. The hypervisor derives each boot's hop master from the device secret
//! and the board's per-boot sources (docs/keys.md), and takes the loader's device-tree seeds,
//! from which those keys are derived, out of every tree the guest can reach: they are read from
//! QEMU's memory before the hypervisor runs (`-S`) and searched for in all of guest RAM once the
//! guest is up. Two boots of one image tag the same packet on the same (chain, hop) with
//! different tags, each of which checks.

use gatewarden_hv::dtb;
use gw_tests::qemu::{Qemu, Qmp, image_args};

/// Guest RAM of the qemu-virt image with 1 GiB (RAM base + the 16 MiB reservation, to 2 GiB).
const GUEST_RAM: (u64, usize) = (0x4100_0000, 0x3f00_0000);
/// RAM, from its base (the loader puts its device tree somewhere here).
const RAM: (u64, usize) = (0x4000_0000, 0x4000_0000);

const TAG: &str = "gwctl --transport hypervisor hop tag --chain 7 --stage 0 --hops 2";
const CHECK: &str = "gwctl --transport hypervisor hop check --chain 7 --stage 1 --hops 2";
/// An Ethernet frame's worth of bytes to tag (hex).
const PACKET: &str = "52540077000152540077000208004500001c000140004011f97ec0a84d14c0a84d0a";

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// The loader's device tree in `ram` (at `base`): the first FDT header whose tree has
/// `/chosen` seeds; returns its address and the seed values.
fn loader_seeds(ram: &[u8], base: u64) -> (u64, Vec<Vec<u8>>) {
    for off in (0..ram.len() - 8).step_by(8) {
        if ram[off..off + 4] != [0xd0, 0x0d, 0xfe, 0xed] {
            continue;
        }
        let size = u32::from_be_bytes(ram[off + 4..off + 8].try_into().unwrap()) as usize;
        let Some(blob) = ram.get(off..off + size) else {
            continue;
        };
        if let Ok([Some(a), Some(b)]) = dtb::seed_places(blob) {
            let seeds = [a, b]
                .iter()
                .map(|(o, l)| blob[*o..*o + *l].to_vec())
                .collect();
            return (base + off as u64, seeds);
        }
    }
    panic!("no device tree with /chosen seeds in RAM before the hypervisor ran");
}

/// Tag the packet in the guest and check the frame as the next stage: returns the frame.
fn tag_and_check(q: &mut Qemu) -> String {
    let frame = q.run(&format!("{TAG} {PACKET}")).trim().to_owned();
    assert!(
        frame.starts_with(PACKET) && frame.len() > PACKET.len(),
        "tagging failed: {frame}"
    );
    // The next stage's check answers the frame's sequence number (the first of this slot).
    let seq = q.run(&format!("{CHECK} {frame}"));
    assert_eq!(seq.trim(), "1", "the tag does not check: {seq}");
    frame
}

#[test]
fn each_boot_has_its_own_hop_keys_and_the_guest_never_sees_the_loaders_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let mut extra: Vec<String> = Qmp::arg(&sock).into();
    // Stopped after QEMU's reset put its device tree (with this boot's seeds) into RAM, before
    // the hypervisor's first instruction.
    extra.push("-S".into());
    let mut q = Qemu::boot_with_args(2, &image_args(), &extra);
    let mut qmp = Qmp::connect(&sock);
    let before = qmp.read_physical(RAM.0, RAM.1);
    let (at, seeds) = loader_seeds(&before, RAM.0);
    drop(before);
    assert_eq!(seeds[0].len(), 32, "QEMU's rng-seed");
    assert_eq!(seeds[1].len(), 8, "QEMU's kaslr-seed");
    qmp.execute("cont", serde_json::json!({}));
    q.expect(&format!("DTB at {at:#x}"));
    q.expect("gatewarden-guest: up");
    q.expect("# ");
    let first = tag_and_check(&mut q);

    let ram = qmp.read_physical(GUEST_RAM.0, GUEST_RAM.1);
    // The search sees guest RAM: the kernel command line the guest booted with is there.
    assert!(
        find(&ram, b"console=ttyAMA0 rdinit=/init").is_some(),
        "the guest RAM read back does not hold the guest's command line"
    );
    for (name, seed) in dtb::SEED_PROPERTIES.iter().zip(&seeds) {
        assert!(
            find(&ram, seed).is_none(),
            "the loader's {name} is in guest RAM at {:#x}",
            GUEST_RAM.0 + find(&ram, seed).unwrap() as u64
        );
    }
    drop(ram);
    drop(q);

    let mut q = Qemu::boot_virt(2);
    q.expect("gatewarden-guest: up");
    q.expect("# ");
    let second = tag_and_check(&mut q);
    assert_ne!(
        first, second,
        "two boots tagged the same packet on the same hop alike: the hop keys did not change"
    );
}
