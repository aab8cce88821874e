//! The hypervisor on the Raspberry Pi 4 board (`boards/rpi4`), booted in QEMU 10's `-M raspi4b`
//! with Debian's generic arm64 kernel: four CPUs released from the loader's spin table by the
//! hypervisor and started by the guest through the hypervisor's PSCI, the GIC-400 passed
//! through, USB networking, the PM watchdog for power-off, the RNG200 the machine lacks.

use gw_tests::pi::{self, wait_enrolled};
use gw_tests::qemu::{Qemu, image_dir};

const BOARD: &str = "rpi4";

fn booted() -> Qemu {
    Qemu::boot_to_shell(BOARD, 4)
}

#[test]
fn boots_debians_kernel_on_four_cpus_under_the_hypervisor() {
    let mut q = booted();
    let out = q.output();
    assert!(
        out.contains("gatewarden-hv ") && out.contains("on rpi4 at EL2"),
        "{out}"
    );
    assert!(
        out.contains("psci: PSCIv1.0 detected in firmware"),
        "the guest did not find the hypervisor's PSCI:\n{out}"
    );
    assert_eq!(q.run("cat /sys/devices/system/cpu/online").trim(), "0-3");
    assert!(q.output().contains("gatewarden-guest: up, 4 CPUs online"));
    // The GIC-400's distributor and CPU interface are the guest's: interrupts arrive.
    let before = q.timer_ticks();
    q.run("sleep 1");
    assert!(
        q.timer_ticks() > before,
        "timer interrupts are not arriving"
    );
    // The GIC-400 (Linux's GICv2 driver) delivers the timer's PPI 27 and the PL011's SPI.
    let irqs = q.run("cat /proc/interrupts");
    assert!(
        irqs.contains("GIC-0  27") && irqs.contains("uart-pl011"),
        "{irqs}"
    );
    // USB networking (dwc2 host, QEMU's usb-net) and the SD card.
    assert!(
        !q.output().contains("cannot load"),
        "a kernel module failed to load:\n{}",
        q.output()
    );
    // QEMU's usb-net gives the guest the board's MAC with 0x40 as its first octet.
    assert!(
        q.run("cat /sys/class/net/*/address")
            .contains("40:54:00:12:34:56"),
        "no USB network interface"
    );
    // The SD card is the flashable image: its FAT32 boot partition and ext4 state partition.
    // (Its number follows the SD hosts' probe order.)
    let parts = q.run("cat /proc/partitions");
    assert!(parts.contains("p1") && parts.contains("p2"), "{parts}");
    assert!(
        q.run("head -c 90 /dev/mmcblk*p1 | tail -c 8")
            .contains("FAT32"),
        "SD card boot partition not readable"
    );
    assert!(
        q.run("head -c 1160 /dev/mmcblk*p2 | tail -c 16")
            .contains("gw-state"),
        "SD card state partition not readable"
    );
    // The boot partition is mounted read-only, with the card's files.
    assert!(
        q.run("ls /boot/firmware").contains("hv.bin"),
        "the boot partition is not mounted"
    );
    // The guest sees only its own RAM: the hypervisor's 16 MiB at 0 are not in /proc/iomem.
    let iomem = q.run("cat /proc/iomem");
    assert!(iomem.contains("01000000-"), "{iomem}");
    assert!(
        !iomem
            .lines()
            .any(|l| l.trim_start().starts_with("00000000-")),
        "hypervisor memory visible to the guest:\n{iomem}"
    );
    // Entropy: QEMU models no RNG200 (named as missing); the tree's rng-seed, which the
    // harness renews on each boot as the Pi firmware does, is taken, so the boot's keys do
    // not rest on the counter alone.
    assert!(
        out.contains("no device answers at 0xfe104000"),
        "the RNG200 probe did not report the missing device:\n{out}"
    );
    assert!(out.contains("WARNING: the board data expects the SoC's random number generator"));
    assert!(!out.contains("only by the counter"), "{out}");
    assert!(!out.contains("expects the loader's rng-seed"), "{out}");
}

#[test]
fn the_guest_cannot_reach_hypervisor_memory_or_its_devices_and_guest_devices_work() {
    let mut q = booted();
    // The hypervisor image at 0x80000, its spin table at 0xd8, the PM watchdog and the RNG200:
    // stage 2 maps none of them; each access is logged and the guest gets an abort.
    for (addr, what) in [
        ("0x80000", "read of IPA 0x80000"),
        ("0xd8", "read of IPA 0xd8"),
        ("0xfe100024", "read of IPA 0xfe100024"),
        ("0xfe104020", "read of IPA 0xfe104020"),
    ] {
        let r = q.run(&format!("devmem {addr} 32; echo rc=$?"));
        assert!(
            r.contains("rc=135") || r.contains("Bus error"),
            "{addr}: {r}"
        );
        assert!(q.output().contains(what), "fault at {addr} not logged");
    }
    let w = q.run("devmem 0xe0 64 0x80000; echo rc=$?");
    assert!(
        w.contains("rc=135") || w.contains("Bus error"),
        "spin-table write: {w}"
    );
    // The benign twins: guest devices answer (GICD_TYPER's CPU count field says 4 CPUs, the
    // system timer counts).
    let typer = q.run("devmem 0xff841004 32");
    let typer = u32::from_str_radix(typer.trim().trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| panic!("GICD_TYPER {typer:?}: {e}"));
    assert_eq!((typer >> 5) & 7, 3, "GICD_TYPER {typer:#x}");
    let t1 = q.run("devmem 0xfe003004 32");
    let t2 = q.run("devmem 0xfe003004 32");
    assert_ne!(t1.trim(), t2.trim(), "the system timer does not count");
    // All four CPUs are still in the guest.
    assert_eq!(q.run("cat /sys/devices/system/cpu/online").trim(), "0-3");
}

#[test]
fn hypercalls_from_user_space_and_the_kernel_are_answered_and_malformed_ones_refused() {
    let mut q = booted();
    let v = q.run("gwctl --transport hypervisor version; echo rc=$?");
    assert!(v.contains("gatewarden-hv") && v.contains("rc=0"), "{v}");
    // Buffers on the hypervisor's image, and on the RNG200, the ARM-local block, the GIC's
    // virtualisation pages and the PCIe root complex, none of which stage 2 maps.
    let out = q.run(
        "gw-hcall-fuzz --count 10000 --seed 11 --hv-phys 0x80000 \
         --device-pages 0xfe104000,0xff800000,0xff844000,0xfd500000; echo rc=$?",
    );
    let summary: serde_json::Value = out
        .lines()
        .find_map(|l| serde_json::from_str(l.trim()).ok())
        .unwrap_or_else(|| panic!("no summary in {out}"));
    assert_eq!(summary["calls"], 10_000);
    assert_eq!(summary["unexpected"], 0, "{summary}");
    assert!(out.contains("rc=0"), "{out}");
    // From the guest kernel by HVC, with buffers on hypervisor memory (RAM at 0).
    let k = q.run(
        "insmod /lib/modules/extra/gwhvc.ko bench=200 malformed=2000 hv_phys=0x0 \
         walk_at=0xfe104000,0xff800000,0xff844000; echo rc=$?; dmesg | grep -o 'gwhvc:.*'",
    );
    assert!(k.contains("rc=0"), "{k}");
    let line = k
        .lines()
        .find(|l| l.starts_with("gwhvc: malformed HVC x2000:"))
        .unwrap_or_else(|| panic!("no malformed-call summary in {k}"));
    assert!(
        line.contains("2000 refused, 0 accepted, 0 refused with another code"),
        "{line}"
    );
    let again = q.run("gwctl --transport hypervisor version; echo rc=$?");
    assert!(again.contains("rc=0"), "{again}");
}

#[test]
fn cpus_taken_offline_come_back_through_the_hypervisor() {
    let mut q = booted();
    // CPU_OFF parks the CPU in the hypervisor (there is no firmware to power it down);
    // CPU_ON sends it back into the guest at the new entry.
    let r = q.run(
        "echo 0 > /sys/devices/system/cpu/cpu2/online; cat /sys/devices/system/cpu/online; \
         echo 1 > /sys/devices/system/cpu/cpu2/online; cat /sys/devices/system/cpu/online",
    );
    let lines: Vec<&str> = r.lines().map(str::trim).collect();
    assert!(
        lines.contains(&"0-1,3") && lines.last() == Some(&"0-3"),
        "{r}"
    );
    assert_eq!(q.run("taskset -c 2 echo on-cpu2").trim(), "on-cpu2");
}

#[test]
fn power_off_goes_through_the_pm_watchdog_and_ends_qemu() {
    let mut q = booted();
    q.send("poweroff -f");
    q.expect("gatewarden-hv: guest requested SYSTEM_OFF");
    let status = q.wait_exit();
    assert!(status.success(), "QEMU exit status {status}");
}

#[test]
fn a_hypervisor_panic_ends_qemu() {
    // A bundle that is not one stops the boot with a panic, which powers the board off
    // through the watchdog (the board has no PSCI firmware to call).
    let dir = image_dir(BOARD);
    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(bad.path(), vec![0x5a; 4096]).unwrap();
    let args = gw_tests::qemu::with_bundle(&gw_tests::qemu::board_args(BOARD), bad.path());
    let mut q = Qemu::boot_with_args(4, &args, &[]);
    q.expect("gatewarden-hv: PANIC on CPU 0");
    q.expect("cannot boot the guest: initrd is not a Gatewarden guest bundle");
    q.expect("gatewarden-hv: stopping all CPUs");
    let status = q.wait_exit();
    assert!(status.success(), "QEMU exit status {status}");
    assert!(dir.join("hv.bin").exists());
}

/// The BCM2711 has no Crypto Extension (QEMU's raspi4b CPU does): a Pi image built with `+sha2`
/// would boot in QEMU and stop with an undefined instruction on the board. The scan finds
/// SHA-2 instructions in the qemu-virt image (built with them: the benign twin that shows the
/// scan can fail) and none, nor AES, SHA-1 or SHA-512 ones, in the Pi's.
#[test]
fn the_pi_image_uses_no_crypto_instructions_the_soc_lacks() {
    let crypto = |board: &str| -> Vec<(u64, &'static str)> {
        let elf = std::fs::read(image_dir(board).join("hv.elf")).unwrap();
        gw_tests::a64::crypto_instructions(&elf).unwrap()
    };
    let pi = crypto(BOARD);
    assert!(
        pi.is_empty(),
        "crypto instructions in the rpi4 image: {:x?}",
        &pi[..pi.len().min(8)]
    );
    let virt = crypto("qemu-virt");
    assert!(
        virt.iter().any(|(_, k)| *k == "sha256"),
        "the scan found no SHA-256 instruction in the qemu-virt image, built with +sha2"
    );
}

/// The agent on the Pi enrols over USB networking once endorsed and the controller attests
/// the gateway against the board's signed reference manifest (`gw_tests::pi`).
#[test]
fn the_controller_attests_the_pi_over_usb_networking() {
    pi::controller_attests_over_usb(BOARD);
}

/// The legacy DMA engine cannot reach the hypervisor; copies inside guest RAM work
/// (`gw_tests::pi`).
#[test]
fn the_dma_engine_cannot_reach_the_hypervisor() {
    pi::dma_engine_cannot_reach_the_hypervisor(BOARD, 0xfe00_7000);
}

/// A dwc2 USB transfer cannot reach the hypervisor; one into guest RAM works (`gw_tests::pi`).
/// The NIC sits on the root port.
#[test]
fn a_usb_transfer_cannot_reach_the_hypervisor() {
    pi::usb_transfer_cannot_reach_the_hypervisor(BOARD, 0xfe98_0000, "1-1");
}

/// The hypervisor's "device identity" line: the attestation and agent public keys it printed
/// last in `out`.
fn identity(out: &str) -> String {
    out.lines()
        .rfind(|l| l.contains("device identity: attestation key "))
        .unwrap_or_else(|| panic!("no identity line:\n{out}"))
        .split("device identity: ")
        .nth(1)
        .unwrap()
        .trim()
        .to_owned()
}

/// The device secret is not in the image: a blank board (QEMU's OTP starts blank) makes one on
/// its first boot from the boot's entropy and programs it into the OTP; after a reset the
/// hypervisor reads the same secret back (same identity); another board booted from the very
/// same files makes another; the image's secret slot is empty.
#[test]
fn the_device_secret_is_made_on_the_board_kept_in_otp_and_not_in_the_image() {
    let hv = std::fs::read(image_dir(BOARD).join("hv.bin")).unwrap();
    let at = hv
        .windows(8)
        .position(|w| w == b"GWSECRT1")
        .expect("the secret slot");
    assert_eq!(
        hv[at + 8..at + 40],
        [0; 32],
        "the rpi4 image carries a secret"
    );

    let args: Vec<String> = gw_tests::qemu::board_args(BOARD)
        .into_iter()
        .filter(|a| a != "-no-reboot")
        .collect();
    let mut q = Qemu::boot_with_args(4, &args, &[]);
    let keys = std::fs::read_to_string(image_dir(BOARD).join("qemu.keys")).unwrap();
    q.expect("gatewarden-guest: up");
    let first = q.output();
    assert!(
        first.contains("device secret: the OTP was blank; generated from this boot's entropy and programmed into it"),
        "{first}"
    );
    assert!(!first.contains("unprovisioned"), "{first}");
    let id = identity(&first);
    q.send(&keys);
    q.expect("# ");
    // The vendor's endorsement of this board goes onto the card's boot partition, as at the
    // factory (docs/flashing.md).
    q.endorse_in_guest(BOARD);
    let r = q.run(
        "mount -o remount,rw /boot/firmware && cp /etc/gatewarden/endorsement.json /boot/firmware/gatewarden/ && sync; echo rc=$?",
    );
    assert!(r.contains("rc=0"), "{r}");
    // A reset keeps the OTP (QEMU keeps it until it exits, as the SoC keeps it for ever).
    q.send("reboot -f");
    q.expect("device secret: read from the SoC's OTP");
    q.expect("gatewarden-guest: up");
    assert_eq!(identity(&q.output()), id);
    // The agent starts endorsed, from the card.
    q.expect("gatewarden-guest: endorsement from the boot partition");
    drop(q);

    // Another board (a fresh QEMU: blank OTP), the same SD card files: another identity.
    let mut other = Qemu::boot_with_args(4, &args, &[]);
    other.expect("gatewarden-hv: entering the guest kernel");
    let out = other.output();
    assert!(out.contains("programmed into it"), "{out}");
    assert_ne!(
        identity(&out),
        id,
        "two boards from one image share a secret"
    );
}

/// The VideoCore mailbox is mediated: no OTP rows through it, no message at a hypervisor
/// address; the firmware revision is answered (`gw_tests::pi`).
#[test]
fn the_guest_cannot_reach_the_otp_secret_through_the_mailbox() {
    pi::mailbox_keeps_the_otp_secret(BOARD, 0xfe00_b880);
}

/// The flashable image (`gatewarden-rpi4.img`), read with mtools as a vendor's tools would:
/// an MBR with a FAT32 boot partition and an ext4 state partition; the Pi firmware, its
/// `config.txt` booting the hypervisor with the bundle as its initramfs and the board's tree;
/// and the files QEMU boots in these tests are the very files on the card (QEMU's `-dtb`
/// differs only by QEMU's own edits: its model lacks some of the board's blocks).
#[test]
fn the_sd_card_image_holds_the_firmware_and_the_booted_files() {
    let dir = image_dir(BOARD);
    let img = dir.join("gatewarden-rpi4.img");
    let raw = std::fs::read(&img).expect("cargo xtask image --board rpi4 writes the SD card");
    assert!(
        raw.len().is_power_of_two(),
        "QEMU needs a power-of-two SD card"
    );
    assert_eq!(raw[510..512], [0x55, 0xaa], "no MBR");
    let entry = |i: usize| {
        let e = &raw[446 + 16 * i..446 + 16 * (i + 1)];
        let lba = u32::from_le_bytes(e[8..12].try_into().unwrap()) as usize * 512;
        let len = u32::from_le_bytes(e[12..16].try_into().unwrap()) as usize * 512;
        (e[4], lba, len)
    };
    let (boot_type, boot_at, boot_len) = entry(0);
    let (state_type, state_at, state_len) = entry(1);
    assert_eq!((boot_type, state_type), (0x0c, 0x83));
    assert!(boot_at + boot_len <= state_at && state_at + state_len <= raw.len());
    // ext4's magic and the label the guest mounts it by.
    assert_eq!(raw[state_at + 1080..state_at + 1082], [0x53, 0xef]);
    assert_eq!(&raw[state_at + 1144..state_at + 1152], b"gw-state");
    drop(raw);

    let fat = format!("{}@@{boot_at}", img.display());
    let mtool = |args: &[&str]| {
        let o = std::process::Command::new(args[0])
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e} (mtools; cargo xtask test installs it)", args[0]));
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o.stdout
    };
    let info = String::from_utf8_lossy(&mtool(&["minfo", "-i", &fat, "::"])).into_owned();
    assert!(info.contains("FAT32") || info.contains("fat32"), "{info}");
    let listing = String::from_utf8_lossy(&mtool(&["mdir", "-b", "-i", &fat, "::"])).into_owned();
    for f in [
        "start4.elf",
        "fixup4.dat",
        "bootcode.bin",
        "COPYING.raspi-firmware",
        "config.txt",
        "cmdline.txt",
        "hv.bin",
        "bundle.bin",
        "bcm2711-rpi-4-b.dtb",
        "gatewarden",
    ] {
        assert!(
            listing.contains(&format!("::/{f}")),
            "{f} missing:\n{listing}"
        );
    }
    let read = |f: &str| mtool(&["mtype", "-i", &fat, &format!("::{f}")]);
    let config = String::from_utf8(read("config.txt")).unwrap();
    for line in [
        "arm_64bit=1",
        "kernel=hv.bin",
        "initramfs bundle.bin followkernel",
        "device_tree=bcm2711-rpi-4-b.dtb",
        "enable_uart=1",
    ] {
        assert!(config.lines().any(|l| l == line), "{line}:\n{config}");
    }
    // QEMU boots these very files, and the card itself as its SD card.
    let args = gw_tests::qemu::board_args(BOARD).join(" ");
    for (on_card, booted) in [("hv.bin", "hv.bin"), ("bundle.bin", "bundle.bin")] {
        assert!(
            args.contains(&dir.join(booted).display().to_string()),
            "{args}"
        );
        assert!(
            read(on_card) == std::fs::read(dir.join(booted)).unwrap(),
            "{on_card} on the card is not the file QEMU boots"
        );
    }
    assert!(read("bcm2711-rpi-4-b.dtb") == std::fs::read(dir.join("bcm2711-rpi-4-b.dtb")).unwrap());
    assert!(
        args.contains(&format!("file={}", img.display())),
        "QEMU does not boot the card: {args}"
    );
    // The block map for bmaptool.
    let bmap = std::fs::read_to_string(dir.join("gatewarden-rpi4.img.bmap")).unwrap();
    assert!(bmap.contains("<bmap version"), "{bmap}");
}

/// The data path on the Pi: QEMU gives raspi4b two more usb-net devices (behind a hub it adds
/// to the dwc2 port) as the LAN and WAN ports; the camera's traffic passes through the vSwitch
/// and the hypervisor-signed middlebox chain, the MUD-disallowed and IDS-matched requests are
/// dropped (`camera::check_traffic`: each attack has its benign twin).
#[test]
fn the_data_path_carries_device_traffic_through_the_signed_chain_over_usb() {
    use gw_tests::camera;
    use gw_tests::fleet::ImageController;
    assert!(
        gw_tests::netns::available(),
        "the data-path test needs network namespaces and tap devices (root)"
    );
    let img = image_dir(BOARD);
    let ImageController { state, ctl, .. } = ImageController::start_endorsed(&img, "3s");
    let camera::DatapathVm { mut q, dev, cli } =
        camera::DatapathVm::boot_board(BOARD, 4, ctl.agent_addr);
    let id = q.endorse_in_guest(BOARD);
    wait_enrolled(&ctl, &id, &mut q);
    let r = camera::set_camera_policy(&ctl, state.path(), &id).unwrap();
    assert_ne!(r["status"], "contraindicated", "{r:#}");
    let stats = format!(
        "/run/gatewarden/datapath/stats/{}.json",
        camera::stage("firewall")
    );
    let deadline = std::time::Instant::now() + gw_tests::fleet::WAIT;
    while !q.run(&format!("cat {stats}")).contains('{') {
        assert!(
            std::time::Instant::now() < deadline,
            "the camera's chain never started:\n{}",
            q.run("tail -n 40 /tmp/gw-vswitch.log")
        );
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    camera::check_traffic(&dev, &cli, std::time::Duration::from_secs(60), || {
        String::new()
    });
}
