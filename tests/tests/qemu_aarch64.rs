//! The aarch64 hypervisor on QEMU `virt`, booting Debian's kernel: SMP, isolation, power-off.

use gw_tests::qemu::Qemu;

fn booted() -> Qemu {
    let mut q = Qemu::boot_virt(2);
    q.expect("gatewarden-hv: entering the guest kernel");
    q.expect("gatewarden-guest: up");
    q.expect("# ");
    q
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

#[test]
fn psci_system_off_ends_qemu_cleanly() {
    let mut q = booted();
    q.send("poweroff -f");
    q.expect("gatewarden-hv: guest requested SYSTEM_OFF");
    let status = q.wait_exit();
    assert!(status.success(), "QEMU exit status {status}");
}
