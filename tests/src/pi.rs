//! The Raspberry Pi boards' shared end-to-end checks (`tests/tests/qemu_rpi3.rs`,
//! `qemu_rpi4.rs`): enrolment and attestation over USB networking, and the DMA attacks the
//! hypervisor's mediators must refuse, each beside its benign twin.

use crate::fleet::{self, ControllerProc, ImageController, reasons};
use crate::qemu::{Qemu, Qmp, image_dir};

/// The hypervisor's image on both Pis (its load address): what the attacks aim at.
pub const HV: u64 = 0x8_0000;

/// Guest RAM's start on both Pis (the hypervisor keeps the first 16 MiB).
pub const GUEST_RAM_START: u64 = 0x100_0000;

/// Wait until gateway `id` (booted in `q`) has enrolled with `ctl`.
pub fn wait_enrolled(ctl: &ControllerProc, id: &str, q: &mut Qemu) {
    let deadline = std::time::Instant::now() + fleet::WAIT;
    while ctl
        .request(hyper::Method::GET, &format!("/api/v1/gateways/{id}"), None)
        .0
        != 200
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the gateway never enrolled; guest agent log:\n{}",
            q.run("cat /tmp/gw-agent.log; ip addr")
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
}

/// The agent on the Pi waits for the vendor's endorsement (the board made its secret on this
/// first boot), enrols over USB networking once endorsed, and the controller attests the
/// gateway against the board's signed reference manifest: every measured component affirming
/// (the hypervisor built without the SHA-2 instructions, Debian's generic kernel, the Pi's
/// device tree as the hypervisor edits it). Attack twin: a rogue process loads a firewall
/// configuration the controller never sent, and the controller names it.
pub fn controller_attests_over_usb(board: &str) {
    let img = image_dir(board);
    // The state directory lives as long as the controller (a `..` would drop it at once).
    let ImageController {
        ctl, state: _state, ..
    } = ImageController::start_endorsed(&img, "3s");
    let mut q = Qemu::boot_board(board, 4, Some(ctl.agent_addr));
    q.expect("gatewarden-guest: agent started");
    q.expect("# ");
    let deadline = std::time::Instant::now() + fleet::WAIT;
    while !q
        .run("cat /tmp/gw-agent.log")
        .contains("no endorsement yet")
    {
        assert!(std::time::Instant::now() < deadline, "{}", q.output());
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let id = q.endorse_in_guest(board);
    wait_enrolled(&ctl, &id, &mut q);
    let r = fleet::wait_boot_chain_affirmed(&ctl, &id, &mut q);
    assert_eq!(
        r["status"],
        "affirming",
        "{r:#}\nevent log and agent log:\n{}",
        q.run("gwctl --transport hypervisor log; cat /tmp/gw-agent.log")
    );
    assert!(reasons(&r).is_empty(), "{r:#}");
    let r = fleet::rogue_firewall_config(&mut q, &ctl, &id);
    assert!(
        reasons(&r)
            .iter()
            .any(|x| x == "config:firewall: measured, but this controller sent no policy"),
        "{r:#}"
    );
}

/// A booted Pi with a QMP connection, to read the hypervisor's memory from the host.
fn booted_with_qmp(board: &str) -> (Qemu, Qmp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("qmp.sock");
    let extra: Vec<String> = Qmp::arg(&sock).into();
    let mut q = Qemu::boot_board_with(board, 4, None, &extra);
    let qmp = Qmp::connect(&sock);
    q.expect("gatewarden-guest: up");
    q.expect("# ");
    (q, qmp, dir)
}

/// The lines `module: step: …` of a test module's output, by step.
fn step_line(out: &str, module: &str, step: &str) -> String {
    out.lines()
        .find(|l| l.starts_with(&format!("{module}: {step}: ")))
        .unwrap_or_else(|| panic!("no {step} line:\n{out}"))
        .to_owned()
}

/// The guest kernel programs the legacy DMA engine at `regs` (gwbcmdma.ko): copies between its
/// own buffers work through each of the four RAM aliases, in 1-D, 2-D and as a two-block chain;
/// every block aimed at the hypervisor (reads and writes, 1-D and 2-D, through each alias, rows
/// whose stride walks out of guest RAM, a chain whose first or next block lies in hypervisor
/// memory) is refused: the engine never runs it, the channel shows an error, the destination is
/// untouched, and the hypervisor's image reads the same from the host before and after.
pub fn dma_engine_cannot_reach_the_hypervisor(board: &str, regs: u64) {
    let (mut q, mut qmp, _dir) = booted_with_qmp(board);
    let before = qmp.read_physical(HV, 4096);
    let r = q.run(&format!(
        "insmod /lib/modules/extra/gwbcmdma.ko regs={regs:#x} chan=6 hv={HV:#x} ram_start={GUEST_RAM_START:#x}; \
         dmesg | grep -o 'gwbcmdma: .*'"
    ));
    assert!(r.contains("gwbcmdma: done"), "{r}\n{}", q.output());
    let line = |step: &str| step_line(&r, "gwbcmdma", step);
    let untouched = "dst eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee src-match 0";
    let mut benign = vec!["benign-2d".to_owned(), "benign-chain".to_owned()];
    let mut attacks = vec![
        "hv-read-2d-stride".to_owned(),
        "hv-next-block".to_owned(),
        "hv-first-block".to_owned(),
    ];
    for alias in ["00000000", "40000000", "80000000", "c0000000"] {
        benign.push(format!("benign-1d-{alias}"));
        for a in ["hv-read-1d", "hv-write-1d", "hv-read-2d", "hv-write-2d"] {
            attacks.push(format!("{a}-{alias}"));
        }
    }
    // The channel's CS as the step left it: END (0x2), ERROR (0x100).
    let cs = |l: &str| {
        let v = l.split(" cs ").nth(1).unwrap().split(' ').next().unwrap();
        u32::from_str_radix(v.trim_start_matches("0x"), 16).unwrap()
    };
    for step in &benign {
        let l = line(step);
        // Ran to the end (block address back to 0, no error), the bytes copied.
        assert!(
            l.contains(": finished cs ") && l.ends_with("src-match 1") && cs(&l) & 0x102 == 0x2,
            "{l}"
        );
    }
    for step in &attacks {
        let l = line(step);
        assert!(cs(&l) & 0x102 == 0x100, "not refused: {l}");
        if step.starts_with("hv-read") || step.contains("block") {
            assert!(l.ends_with(untouched), "{l}");
        }
    }
    let log = q.output();
    for why in [
        "reads outside guest RAM".to_owned(),
        "writes outside guest RAM".to_owned(),
        format!("(block at {:#x} outside guest RAM)", 0xc000_0000 | HV),
    ] {
        assert!(
            log.contains(&why),
            "the hypervisor says why ({why}):\n{log}"
        );
    }
    assert_eq!(
        qmp.read_physical(HV, 4096),
        before,
        "the DMA engine changed the hypervisor's image"
    );
    // The hypervisor still answers.
    let v = q.run("gwctl --json --transport hypervisor version");
    assert!(v.contains("\"attestation_key\""), "{v}");
}

/// The guest kernel drives a host channel of the dwc2 USB controller at `regs` itself
/// (gwusbdma.ko, with the drivers of the NIC at USB path `device` and of any hub above it
/// unbound, so that Linux's dwc2 driver starts no transfer meanwhile): GET_DESCRIPTOR into
/// its own buffer works before and after; the data stage aimed at the hypervisor (the device's
/// bytes over its image) and the setup stage read from it (its bytes to the device) never
/// start, and the hypervisor's image reads the same from the host.
pub fn usb_transfer_cannot_reach_the_hypervisor(board: &str, regs: u64, device: &str) {
    let (mut q, mut qmp, _dir) = booted_with_qmp(board);
    let before = qmp.read_physical(HV, 4096);
    let r = q.run(&format!(
        "a=$(cat /sys/bus/usb/devices/{device}/devnum); \
         for i in /sys/bus/usb/devices/{device}:* /sys/bus/usb/devices/1-1:*; do [ -e $i/driver ] && echo ${{i##*/}} > $i/driver/unbind; done; \
         insmod /lib/modules/extra/gwusbdma.ko regs={regs:#x} chan=7 hv={HV:#x} devaddr=$a; \
         dmesg | grep -o 'gwusbdma: .*'"
    ));
    assert!(r.contains("gwusbdma: done"), "{r}\n{}", q.output());
    let line = |step: &str| step_line(&r, "gwusbdma", step);
    // The device descriptor (length 18, type 1), every stage completed.
    for step in ["benign", "benign-after"] {
        let l = line(step);
        assert!(l.contains("setup 3 data 3 status 3 buffer 1201"), "{l}");
    }
    // The stage aimed at the hypervisor never started (timeout); nothing reached the buffer.
    assert!(
        line("hv-write").contains(" data -1 "),
        "{}",
        line("hv-write")
    );
    let read = line("hv-read");
    assert!(
        read.contains("setup -1 ") && read.ends_with(&"ee".repeat(18)),
        "{read}"
    );
    let log = q.output();
    for len in [64, 8] {
        let want = format!(
            "usb: channel 7: transfer of {len} bytes at {:#x} outside guest RAM refused",
            0xc000_0000u64 | HV
        );
        assert!(log.contains(&want), "{want}:\n{log}");
    }
    assert_eq!(
        qmp.read_physical(HV, 4096),
        before,
        "a USB transfer changed the hypervisor's image"
    );
    let v = q.run("gwctl --json --transport hypervisor version");
    assert!(v.contains("\"attestation_key\""), "{v}");
}

/// The VideoCore mailbox (its property channel at `mbox`) is mediated. The guest kernel, as an
/// attacker (gwmbox.ko), posts raw property messages: neither the OTP private-key rows nor the
/// customer rows (where the Pis keep the device secret) are read or written (each tag comes back
/// unanswered, its rows zero), and a message at a hypervisor address is dropped; the benign
/// twin, the firmware revision through the same registers, is answered. Linux's own firmware
/// driver works through the mediation (its probe asks the revision).
pub fn mailbox_keeps_the_otp_secret(board: &str, mbox: u64) {
    let mut q = Qemu::boot_to_shell(board, 4);
    let boot = q.output();
    assert!(
        boot.contains("raspberrypi-firmware soc:firmware: Attached to firmware"),
        "{boot}"
    );
    let r = q.run(&format!(
        "insmod /lib/modules/extra/gwmbox.ko mbox={mbox:#x} hv_write={HV:#x}; dmesg | grep 'gwmbox: mbox' | sed 's/^\\[[^]]*\\] //'"
    ));
    let line = |what: &str| {
        r.lines()
            .find(|l| l.contains(&format!("gwmbox: mbox {what}:")))
            .unwrap_or_else(|| panic!("no {what} line:\n{r}"))
            .trim_end()
            .to_owned()
    };
    let benign = line("benign");
    // Answered: the message's code and the tag's response bit set, the posted word back.
    assert!(
        benign.contains("code 0x80000000 tag 0x80000004"),
        "{benign}"
    );
    let posted = benign
        .split("(posted ")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    assert!(benign.contains(&format!("got {posted} ")), "{benign}");
    // The OTP tags unanswered (their request/response word still 0, no response bit), the
    // rows zero.
    for get in ["otp-get", "cotp-get"] {
        let l = line(get);
        assert!(l.contains("code 0x80000000 tag 0x0 rows"), "{l}");
        assert!(
            l.ends_with(
                "rows 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000"
            ),
            "{l}"
        );
    }
    for set in ["otp-set", "cotp-set"] {
        assert!(line(set).ends_with("code 0x80000000 tag 0x0"), "{r}");
    }
    assert!(line("hv-buffer").ends_with("got 0x0"), "{r}");
    let log = q.output();
    assert!(
        log.contains("tags outside the allow-list left unanswered")
            && log.contains("refused (buffer outside guest RAM)"),
        "{log}"
    );
    // The guest still works (a hypercall answers).
    let v = q.run("gwctl --json --transport hypervisor version");
    assert!(v.contains("\"attestation_key\""), "{v}");
}
