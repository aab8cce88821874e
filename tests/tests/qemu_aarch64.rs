//! The aarch64 hypervisor on QEMU `virt`, booting Debian's kernel: SMP, isolation, power-off.

use gw_tests::{hex32, qemu::Qemu};

fn booted() -> Qemu {
    Qemu::boot_to_shell("qemu-virt", 2)
}

#[test]
fn boots_to_a_shell_on_two_vcpus_under_the_hypervisor() {
    let mut q = booted();
    let out = q.output();
    assert!(
        out.contains("at EL2"),
        "hypervisor did not report EL2:\n{out}"
    );
    assert!(out.contains("measured hypervisor, kernel, initramfs, device tree and command line"));
    assert!(
        out.contains("psci: PSCIv1.0 detected in firmware"),
        "the guest did not find our PSCI"
    );
    assert!(
        out.contains("CPU1: Booted secondary processor")
            || out.contains("SMP: Total of 2 processors activated")
    );
    assert_eq!(q.run("cat /sys/devices/system/cpu/online").trim(), "0-1");
    // Console, timers and interrupts work (we are typing into a shell); the virtio PCI network,
    // block and random-number devices (behind the hypervisor's SMMU) are driven by Debian's
    // modules.
    assert!(
        !q.output().contains("cannot load"),
        "a kernel module failed to load"
    );
    assert!(
        q.run("ls /sys/class/net").contains("eth0"),
        "no virtio network interface"
    );
    assert!(
        q.run("head -c 20 /dev/vda")
            .contains("GATEWARDEN-TEST-DISK"),
        "virtio disk not readable"
    );
    assert!(
        q.run("cat /sys/class/misc/hw_random/rng_current")
            .contains("virtio_rng"),
        "no virtio RNG"
    );
    let before = q.timer_ticks();
    q.run("sleep 1");
    let after = q.timer_ticks();
    assert!(
        after > before,
        "timer interrupts are not arriving ({before} then {after})"
    );
    // The guest sees only its own RAM: the hypervisor's reservation is not in /proc/iomem.
    let iomem = q.run("cat /proc/iomem");
    assert!(iomem.contains("41000000-7fffffff : System RAM"), "{iomem}");
    assert!(
        !iomem.contains("40000000-"),
        "hypervisor memory visible to the guest:\n{iomem}"
    );
}

#[test]
fn guest_access_to_hypervisor_memory_faults_and_the_hypervisor_keeps_running() {
    let mut q = booted();
    // Read the hypervisor image through /dev/mem: stage 2 has no mapping, the hypervisor logs
    // the fault and injects an abort, which the kernel turns into SIGBUS for devmem.
    let r = q.run("devmem 0x40080000 32; echo rc=$?");
    assert!(
        r.contains("rc=135") || r.contains("Bus error"),
        "read was not refused: {r}"
    );
    assert!(
        q.output()
            .contains("stage-2 fault #0: guest read of IPA 0x40080000"),
        "fault not logged"
    );
    // Writing (e.g. to overwrite PCRs or keys) is refused the same way.
    let w = q.run("devmem 0x40100000 32 0xdeadbeef; echo rc=$?");
    assert!(
        w.contains("rc=135") || w.contains("Bus error"),
        "write was not refused: {w}"
    );
    assert!(
        q.output()
            .contains("stage-2 fault #1: guest write to IPA 0x40100000"),
        "fault not logged"
    );
    // Guest and hypervisor go on: the shell answers on both CPUs.
    assert_eq!(
        q.run("taskset 2 echo alive-on-cpu1").trim(),
        "alive-on-cpu1"
    );
    assert_eq!(q.run("cat /sys/devices/system/cpu/online").trim(), "0-1");
}

/// Four CPUs, taken offline and brought back by the guest (PSCI CPU_OFF and CPU_ON through the
/// hypervisor), each then making hypercalls pinned to it: every trap must run on the trapping
/// CPU's own hypervisor stack, which the hypervisor checks on every trap (secondary CPU `k` once
/// entered the guest on CPU `k+1`'s boot stack, so its traps corrupted a CPU coming up).
#[test]
fn four_cpus_hot_plugged_take_their_traps_on_their_own_stacks() {
    let mut q = Qemu::boot_virt(4);
    q.expect("gatewarden-hv: entering the guest kernel");
    q.expect("gatewarden-guest: up, 4 CPUs online");
    q.expect("# ");
    for round in 0..3 {
        for cpu in 1..4 {
            q.run(&format!("echo 0 > /sys/devices/system/cpu/cpu{cpu}/online"));
        }
        assert_eq!(
            q.run("cat /sys/devices/system/cpu/online").trim(),
            "0",
            "round {round}: CPUs 1-3 did not go offline"
        );
        for cpu in 1..4 {
            q.run(&format!("echo 1 > /sys/devices/system/cpu/cpu{cpu}/online"));
        }
        assert_eq!(
            q.run("cat /sys/devices/system/cpu/online").trim(),
            "0-3",
            "round {round}: CPUs 1-3 did not come back"
        );
        for cpu in 0..4 {
            let v = json_line(&q.run(&format!(
                "taskset -c {cpu} gwctl --json --transport hypervisor version"
            )));
            assert_eq!(v["kind"], "Hypervisor", "round {round}, CPU {cpu}");
        }
    }
    // All four at once, while the others call too.
    let out = q.run(
        "for c in 0 1 2 3; do taskset -c $c gw-hcall-fuzz --count 300 --seed $c >/tmp/fuzz$c 2>&1 & done; wait; cat /tmp/fuzz0 /tmp/fuzz1 /tmp/fuzz2 /tmp/fuzz3",
    );
    let summaries: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l.trim()).ok())
        .collect();
    assert_eq!(summaries.len(), 4, "one summary per CPU:\n{out}");
    for s in &summaries {
        assert_eq!(s["calls"], 300, "{s}");
        assert_eq!(s["unexpected"], 0, "{s}");
    }
    assert_still_serving(&mut q);
}

#[test]
fn the_guest_sees_no_pmu_counters_and_no_devices_it_is_not_given() {
    let mut q = booted();
    // MDCR_EL2 traps the PMU and the hypervisor answers zero: Linux's PMU driver finds no event
    // counters (QEMU's cortex-a72 has 6: before 2026-12-02 the guest had all of them), only the
    // cycle counter it assumes, which never counts.
    let pmu = q.run("dmesg | grep -o 'hw perfevents: .*'");
    assert!(pmu.contains("1 counters available"), "{pmu}");
    // The benign twin: the guest's own timer and counter still run (CNTPCT is not trapped).
    let t = q.run("cat /proc/uptime; sleep 1; cat /proc/uptime");
    let up: Vec<f64> = t
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(up.len() == 2 && up[1] > up[0], "{t}");
    // The devices the guest is not given are not in its tree, and their addresses fault.
    let dt = q.run("ls /proc/device-tree");
    for gone in ["fw-cfg", "virtio_mmio", "smmuv3", "flash"] {
        assert!(
            !dt.contains(gone),
            "{gone} in the guest's device tree:
{dt}"
        );
    }
    assert!(
        dt.contains("pcie@10000000") && dt.contains("pl011@9000000"),
        "{dt}"
    );
}

#[test]
fn psci_system_off_ends_qemu_cleanly() {
    let mut q = booted();
    q.send("poweroff -f");
    q.expect("gatewarden-hv: guest requested SYSTEM_OFF");
    let status = q.wait_exit();
    assert!(status.success(), "QEMU exit status {status}");
}

/// Guest and hypervisor are still up: a call from user space is answered, nothing panicked.
/// How many times `needle` is on the console so far.
fn console_count(q: &Qemu, needle: &str) -> usize {
    q.output().matches(needle).count()
}

fn assert_still_serving(q: &mut Qemu) {
    let v = json_line(&q.run("gwctl --json --transport hypervisor version"));
    assert_eq!(v["kind"], "Hypervisor");
    assert!(
        !q.output().contains("PANIC"),
        "hypervisor panicked:\n{}",
        q.output()
    );
}

/// The first JSON object line in a console transcript.
fn json_line(out: &str) -> serde_json::Value {
    let line = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in guest output:\n{out}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}"))
}

#[test]
fn a_quote_taken_in_the_guest_verifies_on_the_host_against_the_manifest() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(gw_tests::qemu::image_dir("qemu-virt").join("manifest.json"))
            .unwrap(),
    )
    .unwrap();
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(&hex32(&manifest["attestation_key"])).unwrap();
    let mut q = booted();

    // gwctl in guest user space reaches the hypervisor through the EL0 call window.
    let v = json_line(&q.run("gwctl --json --transport hypervisor version"));
    assert_eq!(v["kind"], "Hypervisor");
    assert_eq!(v["insecure"], false);
    assert_eq!(
        v["attestation_key"], manifest["attestation_key"],
        "the image's provisioned key"
    );

    // A fresh nonce chosen by the host, as a verifier would.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let nonce: [u8; 32] = vtpm::sha256(&nanos.to_le_bytes());
    let quote = json_line(&q.run(&format!(
        "gwctl --json --transport hypervisor quote --nonce {} --pcrs 1,3-6",
        hex::encode(nonce)
    )));
    let log = json_line(&q.run("gwctl --json --transport hypervisor log"));

    let quote_bytes = hex::decode(quote["quote"].as_str().unwrap()).unwrap();
    let pcrs: Vec<[u8; 32]> = quote["pcrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| hex32(&p["value"]))
        .collect();
    let events = gw_tests::events_from_json(&log);
    let sel = vtpm::PcrSelection::from_indices([1, 3, 4, 5, 6]).unwrap();
    let verified = vtpm::verify(
        &vtpm::Evidence {
            quote: &quote_bytes,
            pcrs: &pcrs,
            log: &events,
        },
        &vtpm::Expectation {
            key: &key,
            nonce: &nonce,
            selection: &sel,
            last: None,
            accept_format1: false,
        },
    )
    .expect("quote from the guest verifies on the host");
    assert!(!verified.is_insecure_software_monitor());
    assert_eq!(verified.body.identity.kind, vtpm::MonitorKind::Hypervisor);

    // Reference values: each boot component's measurement is the manifest's digest, and the
    // quoted PCR is that single extend from zero.
    for (component, pcr) in [("hypervisor", 1u16), ("kernel", 3), ("initramfs", 4)] {
        let want = hex32(&manifest["components"][component]["sha256"]);
        let e = events
            .iter()
            .find(|e| e.pcr.get() == pcr)
            .unwrap_or_else(|| panic!("no event for PCR {pcr}"));
        assert_eq!(
            e.digest, want,
            "{component} measurement differs from the manifest"
        );
        let quoted = verified
            .pcrs
            .iter()
            .find(|(i, _)| i.get() == pcr)
            .unwrap()
            .1;
        assert_eq!(
            quoted,
            hex32(&manifest["expected_pcrs"][pcr.to_string()]),
            "PCR {pcr} differs from the manifest's expected value"
        );
    }
}

#[test]
fn ten_thousand_random_and_malformed_hypercalls_each_get_an_answer() {
    let mut q = booted();
    let out = q.run("gw-hcall-fuzz --count 10000 --seed 7; echo rc=$?");
    let summary = json_line(&out);
    assert_eq!(summary["calls"], 10_000);
    assert_eq!(summary["unexpected"], 0, "unexpected answers: {summary}");
    assert_eq!(summary["version_after"], 0);
    assert!(out.contains("rc=0"), "{out}");
    // The hypervisor uses the vector registers itself (copies, SHA-2): a caller's are given
    // back as they were.
    let fp = json_line(&q.run("gw-hcall-fuzz --fp-check 1000"));
    assert_eq!(fp["fp_clobbered"], 0, "{fp}");
    assert_still_serving(&mut q);
}

#[test]
fn malformed_hypercalls_from_the_guest_kernel_are_refused() {
    let mut q = booted();
    // gwhvc.ko makes its calls by HVC from EL1: 10,000 malformed ones (some with buffers mapped
    // onto hypervisor memory: the board's ram_base, boards/qemu-virt/board.toml; some behind page
    // tables whose next level is a device address: the flash, fw_cfg, virtio-mmio and platform-bus
    // holes, which stage 2 leaves unmapped, and the UART and an empty part of the PCIe window,
    // which it maps as devices), each of which must be refused, or insmod fails. Before
    // 2026-12-02 a walk through the platform-bus hole stopped the gateway.
    let out = q.run(
        "insmod /lib/modules/extra/gwhvc.ko bench=1000 malformed=10000 hv_phys=0x40000000 \
         walk_at=0x0,0x9020000,0xa000000,0xc000000,0x9000000,0x10100000; echo rc=$?; dmesg | grep -o 'gwhvc:.*'",
    );
    assert!(out.contains("rc=0"), "{out}");
    assert!(out.contains("gwhvc: gatewarden-hv ABI "), "{out}");
    assert!(out.contains("gwhvc: null HVC x1000: median "), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("gwhvc: malformed HVC x10000:"))
        .unwrap_or_else(|| panic!("no malformed-call summary in {out}"));
    assert!(
        line.contains("10000 refused, 0 accepted, 0 refused with another code"),
        "{line}"
    );
    // Every kind of malformed call was made.
    for kind in [
        "unknown function",
        "null request",
        "guard-page crossing",
        "read-only response",
        "overlapping buffers",
        "oversized",
        "wrapping",
        "hypervisor memory",
        "page tables at a device",
    ] {
        let n: u32 = line
            .split(&format!("{kind} "))
            .nth(1)
            .and_then(|r| r.split([',', ')']).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count for {kind} in {line}"));
        assert!(n > 0, "no {kind} calls in {line}");
    }
    assert!(
        out.contains("gwhvc: VERSION with buffers after the malformed calls"),
        "{out}"
    );
    // The hypervisor still serves user space too.
    assert_still_serving(&mut q);
}

/// A program's identity is its whole executable code, held read-only while it is measured:
/// `gw-dp-rogue --patch` registers a stage, tags a packet, changes one byte of its own code (in
/// a function it never runs, so it keeps working) and tags again. Unchanged (the benign
/// twin), the second tag works; changed in place by the guest kernel (the write traps on the
/// stage-2 hold and ends the measurement) or copied on write through `/proc/self/mem`, the code
/// measures differently and the hypervisor refuses the call. Before 2026-12-02 only the
/// call-site page was measured, once, and both patches kept their slot.
#[test]
fn a_process_whose_code_changes_after_it_registered_is_refused() {
    let mut q = booted();
    // Each run's summary, and how many trapped writes to held code it caused.
    let writes = |q: &Qemu| console_count(q, "gatewarden-hv: code write #");
    let mut patch = |how: &str| {
        let mark = writes(&q);
        let out = q.run(&format!("gw-dp-rogue --patch {how}; echo rc=$?"));
        assert!(out.contains("rc=0"), "{how}: {out}");
        let s = json_line(&out);
        assert_eq!(s["how"], how, "{out}");
        assert_eq!(s["before"], "tagged", "{how}: the first tag failed: {s}");
        (s, writes(&q) - mark)
    };
    let (none, _) = patch("none");
    assert_eq!(none["patched"], false, "{none}");
    assert_eq!(
        none["after"], "tagged",
        "the unchanged program lost its slot: {none}"
    );
    for how in ["kernel", "cow"] {
        let (s, trapped) = patch(how);
        assert_eq!(s["patched"], true, "{how}: the code did not change: {s}");
        assert!(
            s["after"].as_str().unwrap_or("").contains("denied"),
            "{how}: the changed program kept its slot: {s}"
        );
        // The kernel's write went through the hold: the hypervisor ended the measurement.
        assert_eq!(
            trapped > 0,
            how == "kernel",
            "{how}: {trapped} trapped writes"
        );
    }
    assert_still_serving(&mut q);
}

/// An AArch32 process (Debian's armhf busybox, run by the guest kernel's compat support) takes
/// its aborts like an AArch64 one: a read of hypervisor memory and any store to the EL0 call
/// window fault in stage 2, and the hypervisor injects the abort at the AArch32 lower-EL vector,
/// which the kernel turns into SIGBUS. The window serves AArch64 callers only: the same 64-bit
/// store from AArch64 busybox is taken as a call (the benign twin) and the process goes on.
#[test]
fn aarch32_processes_take_their_aborts_and_get_no_call_window() {
    let mut q = booted();
    let faults = |q: &Qemu| console_count(q, "gatewarden-hv: stage-2 fault #");
    // An AArch32 process runs (its personality switched to 32-bit: armv8l).
    let r = q.run("busybox32 linux32 busybox32 uname -m; echo rc=$?");
    assert!(r.contains("armv8l") && r.contains("rc=0"), "{r}");
    for (what, cmd) in [
        (
            "a read of hypervisor memory",
            "busybox32 devmem 0x40080000 32",
        ),
        (
            "a 32-bit store to the window",
            "busybox32 devmem 0xF000000000 32 0",
        ),
        (
            "a 64-bit store to the window",
            "busybox32 devmem 0xF000000000 64 0",
        ),
    ] {
        let before = faults(&q);
        let r = q.run(&format!("{cmd}; echo rc=$?"));
        assert!(
            r.contains("rc=135"),
            "{what} from AArch32 was not refused: {r}"
        );
        assert_eq!(faults(&q), before + 1, "{what}: not one stage-2 fault");
    }
    // The AArch32 faults were logged at 32-bit PCs (Thumb: odd halfword addresses, low).
    let pcs: Vec<u64> = q
        .output()
        .lines()
        .filter_map(|l| l.split(" at PC 0x").nth(1))
        .filter_map(|t| u64::from_str_radix(t.split_whitespace().next()?, 16).ok())
        .collect();
    assert!(
        pcs.len() >= 3 && pcs.iter().all(|pc| *pc < 1 << 32),
        "{pcs:x?}"
    );
    // The benign twin: the same 64-bit store from an AArch64 process is a call.
    let before = faults(&q);
    let r = q.run("busybox devmem 0xF000000000 64 0; echo rc=$?");
    assert!(
        r.contains("rc=0"),
        "the AArch64 call window did not answer: {r}"
    );
    assert_eq!(faults(&q), before, "the AArch64 call faulted");
    // The guest kernel took every injected abort in stride.
    let log = q.run("dmesg | grep -c -E 'Internal error|Oops|BUG:|Unable to handle'");
    assert!(
        log.trim_end().ends_with('0'),
        "kernel errors after the aborts: {log}"
    );
    assert_still_serving(&mut q);
}
