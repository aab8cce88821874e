//! Hostile boot input in QEMU: a guest bundle whose kernel header asks to be placed over the
//! hypervisor (a `text_offset` that wraps the load address onto the hypervisor's own code, as an
//! independent review did) or whose size wraps is refused with a clear console message before a
//! byte is copied, and the hypervisor's code is unchanged, read back through QEMU's monitor. The
//! benign twin boots the image's own bundle and reads the same code back unchanged after the
//! guest is up.
//!
//! On the Raspberry Pis the bundle sits on the SD card, which guest root owns: without these
//! checks a compromised guest would plant code that runs at EL2 before any quote.

use gw_tests::qemu::{Qemu, Qmp, image_args, image_dir, with_bundle};

/// The board's load address of `hv.bin` (boards/qemu-virt/board.toml).
fn load_address() -> u64 {
    let board = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards/qemu-virt/board.toml"),
    )
    .unwrap();
    let v = board
        .lines()
        .find_map(|l| l.strip_prefix("load_address = "))
        .expect("load_address in board.toml");
    u64::from_str_radix(
        v.trim().trim_start_matches("0x").replace('_', "").as_str(),
        16,
    )
    .unwrap()
}

/// The part of `hv.bin` the hypervisor measures (code, read-only data, the device secret): it is
/// never written at run time, so what QEMU's memory holds there must equal the file.
fn measured_code() -> Vec<u8> {
    let bin = std::fs::read(image_dir("qemu-virt").join("hv.bin")).unwrap();
    let measured = u64::from_le_bytes(bin[32..40].try_into().unwrap()) as usize;
    assert!(measured > 4096 && measured <= bin.len());
    bin[..measured].to_vec()
}

/// The image's bundle with the kernel header's u64 at `field` (8: text_offset, 16: image_size)
/// set to `value`.
fn hostile_bundle(dir: &std::path::Path, field: usize, value: u64) -> std::path::PathBuf {
    let mut b = std::fs::read(image_dir("qemu-virt").join("bundle.bin")).unwrap();
    let kernel_offset = u64::from_le_bytes(b[16..24].try_into().unwrap()) as usize;
    assert_eq!(&b[kernel_offset + 56..kernel_offset + 60], b"ARM\x64");
    b[kernel_offset + field..kernel_offset + field + 8].copy_from_slice(&value.to_le_bytes());
    let path = dir.join(format!("hostile-{field}.bin"));
    std::fs::write(&path, b).unwrap();
    path
}

/// Boot `args` with a QMP socket; -no-shutdown keeps QEMU (and so its memory) after the
/// hypervisor powers off.
fn boot(args: &[String], dir: &std::path::Path) -> (Qemu, Qmp) {
    let sock = dir.join(format!("qmp-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&sock);
    let mut extra: Vec<String> = Qmp::arg(&sock).into();
    extra.push("-no-shutdown".into());
    let q = Qemu::boot_with_args(2, args, &extra);
    let qmp = Qmp::connect(&sock);
    (q, qmp)
}

#[test]
fn a_bundle_that_would_load_over_the_hypervisor_is_refused_and_nothing_of_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let code = measured_code();
    let at = load_address();
    // Guest RAM starts at 0x4100_0000 (RAM base + the 16 MiB reservation); this text_offset
    // wraps the load address to the hypervisor's first byte.
    let wrap_onto_hv = at.wrapping_sub(0x4100_0000);
    let cases = [
        (
            8,
            wrap_onto_hv,
            "cannot boot the guest: bundle kernel's text_offset is not a 4 KiB-aligned offset below 2 MiB",
        ),
        (
            16,
            u64::MAX - 0xfff,
            "cannot boot the guest: guest kernel would not end below the bundle",
        ),
    ];
    for (field, value, message) in cases {
        let bundle = hostile_bundle(dir.path(), field, value);
        let (mut q, mut qmp) = boot(&with_bundle(&image_args(), &bundle), dir.path());
        q.expect(message);
        q.expect("stopping all CPUs");
        assert!(
            !q.output().contains("entering the guest"),
            "the hostile bundle was started:\n{}",
            q.output()
        );
        let now = qmp.read_physical(at, code.len());
        assert!(
            now == code,
            "header field {field} = {value:#x}: the hypervisor's code changed ({} of {} bytes differ)",
            now.iter().zip(&code).filter(|(a, b)| a != b).count(),
            code.len()
        );
    }
}

#[test]
fn the_images_own_bundle_boots_and_the_hypervisors_code_reads_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let code = measured_code();
    let (mut q, mut qmp) = boot(&image_args(), dir.path());
    q.expect("entering the guest kernel");
    q.expect("gatewarden-guest: up");
    q.expect("# ");
    assert_eq!(q.run("echo booted").trim(), "booted");
    let now = qmp.read_physical(load_address(), code.len());
    assert!(
        now == code,
        "the hypervisor's code changed while the guest ran"
    );
}
