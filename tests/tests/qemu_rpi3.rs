//! The hypervisor on the Raspberry Pi 3 board (`boards/rpi3`), booted in QEMU 10's `-M raspi3b`
//! with Debian's generic arm64 kernel and the stock `bcm2837-rpi-3-b.dtb`: four CPUs released
//! from the loader's spin table by the hypervisor, no GIC (the BCM2836 local controller,
//! mediated, and the armctrl controller in the mailbox page, passed through), the SD card on
//! SDHOST whose data the mediated DMA engine moves, USB networking through the mediated dwc2,
//! the BCM2835 RNG for entropy.

use gw_tests::pi;
use gw_tests::qemu::{Qemu, image_dir};

const BOARD: &str = "rpi3";

/// The Pi 3's DMA engine and dwc2 register pages.
const DMA_ENGINE: u64 = 0x3f00_7000;
const USB_HOST: u64 = 0x3f98_0000;

fn booted() -> Qemu {
    Qemu::boot_to_shell(BOARD, 4)
}

/// Debian's kernel runs on four CPUs under the hypervisor, its interrupts and IPIs through the
/// passed-through and mediated controllers; the hypervisor drew entropy from the BCM2835 RNG
/// and made the device secret in the OTP; the SD card's partitions are read through SDHOST,
/// whose every transfer is a DMA-engine chain the hypervisor copied and checked (with the FIFO
/// on the allow-list): the boot partition's `hv.bin` reads back as the host's file.
#[test]
fn boots_on_four_cpus_with_the_sd_card_read_through_the_mediated_dma_engine() {
    let mut q = booted();
    let out = q.output();
    for want in [
        "on rpi3 at EL2",
        "device secret: the OTP was blank; generated from this boot's entropy",
        "device identity: attestation key ",
        "Root IRQ handler: bcm2836_arm_irqchip_handle_irq",
        "CPU3: Booted secondary processor",
        "sdhost-bcm2835 3f202000.mmc: loaded - DMA enabled",
        "mmcblk0: p1 p2",
        "gatewarden-guest: up, 4 CPUs online",
    ] {
        assert!(out.contains(want), "missing {want:?}:\n{out}");
    }
    for unwanted in [
        "RNG gives nothing",
        "stage-2 fault",
        "dma: channel",
        "usb: channel",
    ] {
        assert!(!out.contains(unwanted), "{unwanted:?}:\n{out}");
    }
    // Its digest, not its bytes, over the console (kernel messages may interleave).
    let want = hex::encode(vtpm::sha256(
        &std::fs::read(image_dir(BOARD).join("hv.bin")).unwrap(),
    ));
    let got = q.run("sha256sum /boot/firmware/hv.bin");
    assert!(
        got.contains(&format!("{want}  /boot/firmware/hv.bin")),
        "hv.bin read from the SD card differs: {got} (want {want})"
    );
    // IPIs (mailbox 0 of each core) carried the secondaries' bring-up and carry the guest's
    // cross-CPU calls: all four stay online.
    assert_eq!(q.run("cat /sys/devices/system/cpu/online").trim(), "0-3");
}

/// The guest cannot reach the hypervisor's memory, its devices (PM watchdog, RNG) or a
/// loader's core release through the ARM-local page: a write of core 1's mailbox 3 aborts, and
/// the counter's prescaler keeps the loader's value; the benign twins, the page's interrupt
/// routing (written back) and interrupt source and the system timer, answer.
#[test]
fn the_guest_cannot_reach_hypervisor_memory_its_devices_or_a_core_release() {
    let mut q = booted();
    for (addr, what) in [
        ("0x80000", "read of IPA 0x80000"),
        ("0xd8", "read of IPA 0xd8"),
        ("0x3f100024", "read of IPA 0x3f100024"),
        ("0x3f104008", "read of IPA 0x3f104008"),
    ] {
        let r = q.run(&format!("devmem {addr} 32; echo rc=$?"));
        assert!(
            r.contains("rc=135") || r.contains("Bus error"),
            "{addr}: {r}"
        );
        assert!(q.output().contains(what), "fault at {addr} not logged");
    }
    // Core 1's mailbox 3 (0x40000080 + 0x10 + 0xc): where a loader releases a core.
    let w = q.run("devmem 0x4000009c 32 0x80000; echo rc=$?");
    assert!(w.contains("rc=135") || w.contains("Bus error"), "{w}");
    let before = q.run("devmem 0x40000008 32");
    q.run("devmem 0x40000008 32 0x1");
    assert_eq!(q.run("devmem 0x40000008 32").trim(), before.trim());
    // Benign: the same page's interrupt routing, read and written back, and core 0's interrupt
    // source; the system timer.
    let routing = q.run("devmem 0x4000000c 32");
    let w = q.run(&format!(
        "devmem 0x4000000c 32 {}; echo rc=$?",
        routing.trim()
    ));
    assert!(w.contains("rc=0"), "{w}");
    assert_eq!(q.run("devmem 0x4000000c 32").trim(), routing.trim());
    let source = q.run("devmem 0x40000060 32; echo rc=$?");
    assert!(source.contains("rc=0"), "{source}");
    let t1 = q.run("devmem 0x3f003004 32");
    let t2 = q.run("devmem 0x3f003004 32");
    assert_ne!(t1.trim(), t2.trim(), "the system timer does not count");
    assert_eq!(q.run("cat /sys/devices/system/cpu/online").trim(), "0-3");
}

/// The mailbox keeps the OTP secret (the customer rows here) from the guest (`gw_tests::pi`).
#[test]
fn the_guest_cannot_reach_the_otp_secret_through_the_mailbox() {
    pi::mailbox_keeps_the_otp_secret(BOARD, 0x3f00_b880);
}

/// Attestation end to end, as on the Pi 4 (`gw_tests::pi`).
#[test]
fn the_controller_attests_the_pi_over_usb_networking() {
    pi::controller_attests_over_usb(BOARD);
}

/// The legacy DMA engine cannot reach the hypervisor; copies inside guest RAM work.
#[test]
fn the_dma_engine_cannot_reach_the_hypervisor() {
    pi::dma_engine_cannot_reach_the_hypervisor(BOARD, DMA_ENGINE);
}

/// A dwc2 USB transfer cannot reach the hypervisor; one into guest RAM works. QEMU's raspi3b
/// puts a hub on the root port: the NIC is 1-1.1.
#[test]
fn a_usb_transfer_cannot_reach_the_hypervisor() {
    pi::usb_transfer_cannot_reach_the_hypervisor(BOARD, USB_HOST, "1-1.1");
}
