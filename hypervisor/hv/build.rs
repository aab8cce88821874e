//! Turns `boards/<board>/board.toml` (the `gw-board` schema) into constants for the image and
//! picks the linker script.

use std::{env, fs, path::PathBuf};

fn main() {
    let board = env::var("GW_BOARD").unwrap_or_else(|_| "qemu-virt".into());
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().parent().unwrap();
    let path = gw_board::Board::path(root, &board);
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rerun-if-env-changed=GW_BOARD");
    // Parsed and checked by the one board schema (boards/schema): overlaps and misaligned
    // devices stop the build here, not the boot.
    let b = gw_board::Board::load(root, &board)
        .unwrap_or_else(|e| panic!("board {board}: {}: {e}", path.display()));
    let devices: String = b
        .guest_device
        .iter()
        .map(|d| format!("    ({:?}, {:#x}, {:#x}),\n", d.name, d.base, d.size))
        .collect();
    let gicr = match &b.gicr_filter {
        Some(g) => format!("Some(({:#x}, {:#x}))", g.base, g.stride),
        None => "None".into(),
    };
    let smmu = match &b.smmu {
        Some(s) => format!("Some(({:#x}, {:#x}, {}))", s.base, s.size, s.streams),
        None => "None".into(),
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::write(
        out.join("board.rs"),
        format!(
            "/// Board name.\npub const NAME: &str = {:?};\n\
             /// Load address of the image.\npub const LOAD_ADDRESS: u64 = {:#x};\n\
             /// Base of RAM.\npub const RAM_BASE: u64 = {:#x};\n\
             /// Bytes of RAM the hypervisor keeps for itself, from RAM_BASE.\npub const HV_RESERVED: u64 = {:#x};\n\
             /// PL011 UART base.\npub const UART_PL011: u64 = {:#x};\n\
             /// Maximum CPUs.\npub const MAX_CPUS: usize = {};\n\
             /// Device window passed through to the guest.\npub const DEVICE_BASE: u64 = {:#x};\n\
             /// Size of the device window.\npub const DEVICE_SIZE: u64 = {:#x};\n\
             /// PL031 real-time clock base, if the board has one.\npub const RTC_PL031: Option<u64> = {:?};\n\
             /// The hypervisor's SMMUv3, if any: base, size of its registers, streams described.\npub const SMMU: Option<(u64, u64, u32)> = {smmu};\n\
             /// Redistributor control pages filtered by the hypervisor: base, stride (one per CPU).\npub const GICR_FILTER: Option<(u64, u64)> = {gicr};\n\
             /// Devices the guest is given: name, base, size (whole pages).\npub const GUEST_DEVICES: &[(&str, u64, u64)] = &[\n{devices}];\n",
            b.name, b.load_address, b.ram_base, b.hv_reserved, b.uart_pl011, b.max_cpus, b.device_base, b.device_size, b.rtc_pl031
        ),
    )
    .unwrap();
    let target_os = env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if target_os == "none" {
        let script = manifest.join("link.ld");
        println!("cargo:rerun-if-changed={}", script.display());
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!(
            "cargo:rustc-link-arg-bins=--defsym=LOAD_ADDR={:#x}",
            b.load_address
        );
        println!("cargo:rustc-link-arg-bins=--defsym=MAX_CPUS={}", b.max_cpus);
        // The end of the reservation: link.ld refuses an image that does not fit below it.
        println!(
            "cargo:rustc-link-arg-bins=--defsym=HV_RESERVED_END={:#x}",
            b.ram_base + b.hv_reserved
        );
    }
}
