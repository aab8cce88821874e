//! Turns `boards/<board>/board.toml` into constants for the image and picks the linker script.

use std::{env, fs, path::PathBuf};

#[derive(serde::Deserialize)]
struct Board {
    name: String,
    load_address: u64,
    ram_base: u64,
    hv_reserved: u64,
    uart_pl011: u64,
    max_cpus: u64,
    device_base: u64,
    device_size: u64,
    /// PL031 real-time clock, if the board has one (the boot counter's source).
    #[serde(default)]
    rtc_pl031: Option<u64>,
}

fn main() {
    let board = env::var("GW_BOARD").unwrap_or_else(|_| "qemu-virt".into());
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap().parent().unwrap();
    let path = root.join("boards").join(&board).join("board.toml");
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rerun-if-env-changed=GW_BOARD");
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("board {board}: {}: {e}", path.display()));
    let b: Board = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
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
             /// PL031 real-time clock base, if the board has one.\npub const RTC_PL031: Option<u64> = {:?};\n",
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
    }
}
