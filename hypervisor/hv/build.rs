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
    /// The SMMUv3 the hypervisor owns, if the board has one.
    #[serde(default)]
    smmu: Option<Smmu>,
    /// Devices the guest is given (stage 2 maps exactly these).
    #[serde(default)]
    guest_device: Vec<Device>,
    /// Redistributor control pages trapped and filtered (`src/gicr.rs`).
    #[serde(default)]
    gicr_filter: Option<GicrFilter>,
}

#[derive(serde::Deserialize)]
struct GicrFilter {
    base: u64,
    stride: u64,
}

#[derive(serde::Deserialize)]
struct Smmu {
    base: u64,
    size: u64,
    streams: u32,
}

#[derive(serde::Deserialize)]
struct Device {
    name: String,
    base: u64,
    size: u64,
}

/// Refuse board data that would map something twice, or map the hypervisor's own devices or
/// RAM for the guest: checked when the image is built, not found out at boot.
fn check(b: &Board) -> Result<(), String> {
    let mut ranges: Vec<(&str, u64, u64)> = Vec::new();
    for d in &b.guest_device {
        if d.size == 0 || d.base % 4096 != 0 || d.size % 4096 != 0 {
            return Err(format!(
                "guest device {}: base and size must be whole 4 KiB pages",
                d.name
            ));
        }
        let end = d
            .base
            .checked_add(d.size)
            .ok_or(format!("guest device {}: overflows", d.name))?;
        if end > b.device_base + b.device_size || d.base < b.device_base {
            return Err(format!(
                "guest device {} lies outside the device window",
                d.name
            ));
        }
        ranges.push((&d.name, d.base, end));
    }
    if let Some(s) = &b.smmu {
        ranges.push(("the hypervisor's SMMU", s.base, s.base + s.size));
        if !(1..=1 << 16).contains(&s.streams) || !s.streams.is_power_of_two() {
            return Err("smmu.streams must be a power of two up to 65536".into());
        }
    }
    if let Some(g) = &b.gicr_filter {
        let end = g.base + g.stride * b.max_cpus;
        if g.base % 4096 != 0 || g.stride % 4096 != 0 || g.stride < 4096 {
            return Err("gicr_filter: base and stride must be whole pages".into());
        }
        if !b
            .guest_device
            .iter()
            .any(|d| g.base >= d.base && end <= d.base + d.size)
        {
            return Err("gicr_filter: the redistributors must lie inside one guest device".into());
        }
    }
    ranges.push((
        "the hypervisor's RAM",
        b.ram_base,
        b.ram_base + b.hv_reserved,
    ));
    ranges.sort_by_key(|r| r.1);
    for w in ranges.windows(2) {
        if w[1].1 < w[0].2 {
            return Err(format!("{} overlaps {}", w[0].0, w[1].0));
        }
    }
    Ok(())
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
    if let Err(e) = check(&b) {
        panic!("{}: {e}", path.display());
    }
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
