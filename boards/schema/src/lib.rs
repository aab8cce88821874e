//! The board schema: `boards/<board>/board.toml` as types, read by the hypervisor's build script
//! (constants and link symbols for the image) and by xtask (QEMU command line, reference values).
//!
//! One parser for both, with unknown keys refused (a misspelt key is an error, not a default)
//! and the board checked as a whole before anything is built from it ([`Board::check`]).

#![forbid(unsafe_code)]

use std::path::Path;

use serde::Deserialize;

/// Why a board file was refused.
#[derive(Debug, thiserror::Error)]
pub enum BoardError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or not this schema (an unknown or missing key, a wrong type).
    #[error("{0}")]
    Schema(#[from] toml::de::Error),
    /// Well-formed but inconsistent (overlaps, misaligned devices, bad counts).
    #[error("{0}")]
    Invalid(String),
}

/// The instruction set a board's hypervisor is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    /// Arm v8-A, EL2.
    Aarch64,
    /// x86_64 (AMD SVM, Intel VMX).
    X86_64,
}

impl Arch {
    /// The bare-metal Rust target the hypervisor builds for.
    pub fn bare_metal_target(self) -> &'static str {
        match self {
            Arch::Aarch64 => "aarch64-unknown-none-softfloat",
            Arch::X86_64 => "x86_64-unknown-none",
        }
    }
}

/// One board (`boards/<name>/board.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    /// Board name (the directory's name).
    pub name: String,
    /// Instruction set.
    pub arch: Arch,
    /// Where the loader places the hypervisor image.
    pub load_address: u64,
    /// Base of RAM.
    pub ram_base: u64,
    /// Bytes of RAM from `ram_base` the hypervisor keeps (never mapped for the guest).
    pub hv_reserved: u64,
    /// PL011 UART base (the console, shared).
    pub uart_pl011: u64,
    /// PL031 real-time clock, if any (the boot counter's source).
    #[serde(default)]
    pub rtc_pl031: Option<u64>,
    /// Most CPUs the image supports.
    pub max_cpus: u64,
    /// rustc target features the image may use (e.g. `+sha2`).
    #[serde(default)]
    pub target_features: Vec<String>,
    /// The device window the hypervisor maps for itself at EL2.
    pub device_base: u64,
    /// Size of that window.
    pub device_size: u64,
    /// The SMMUv3 the hypervisor owns, if any.
    #[serde(default)]
    pub smmu: Option<Smmu>,
    /// Redistributor control pages trapped and filtered by the hypervisor, if any.
    #[serde(default)]
    pub gicr_filter: Option<GicrFilter>,
    /// Devices the guest is given: stage 2 maps exactly these pages.
    #[serde(default)]
    pub guest_device: Vec<Device>,
    /// How QEMU emulates the board, if it does.
    #[serde(default)]
    pub qemu: Option<Qemu>,
}

/// An SMMUv3 owned by the hypervisor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Smmu {
    /// Register base.
    pub base: u64,
    /// Size of its registers.
    pub size: u64,
    /// Streams its stream table describes (a power of two up to 65,536).
    pub streams: u32,
}

/// GICv3 redistributor control pages the hypervisor filters (one per CPU).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GicrFilter {
    /// First redistributor.
    pub base: u64,
    /// Distance between redistributors.
    pub stride: u64,
}

/// A device the guest is given.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Name (for messages).
    pub name: String,
    /// Base (a whole page).
    pub base: u64,
    /// Size (whole pages).
    pub size: u64,
}

/// The QEMU machine for a board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Qemu {
    /// The system emulator, e.g. `qemu-system-aarch64`.
    pub binary: String,
    /// `-M`.
    pub machine: String,
    /// `-cpu`.
    pub cpu: String,
    /// `-m`.
    pub memory: String,
    /// The guest kernel's command line.
    pub append: String,
    /// Options every PCI device gets (`{pci}` in `devices`).
    #[serde(default)]
    pub pci_options: String,
    /// Further arguments; `{disk}` is the image's disk, `{pci}` the PCI options.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Kernel modules the guest loads at boot, in order (paths in Debian's kernel package).
    #[serde(default)]
    pub modules: Vec<String>,
}

impl Board {
    /// Parse and check a board file's text.
    pub fn parse(text: &str) -> Result<Self, BoardError> {
        let b: Board = toml::from_str(text)?;
        b.check().map_err(BoardError::Invalid)?;
        Ok(b)
    }

    /// Read, parse and check `boards/<name>/board.toml` under `root`.
    pub fn load(root: &Path, name: &str) -> Result<Self, BoardError> {
        let path = Self::path(root, name);
        let text = std::fs::read_to_string(&path).map_err(|source| BoardError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Where board `name`'s file is under the workspace `root`.
    pub fn path(root: &Path, name: &str) -> std::path::PathBuf {
        root.join("boards").join(name).join("board.toml")
    }

    /// Refuse board data that would map something twice, or map the hypervisor's own devices or
    /// RAM for the guest: found when the image is built, not at boot.
    pub fn check(&self) -> Result<(), String> {
        if self.max_cpus == 0 {
            return Err("max_cpus must be at least 1".into());
        }
        let window_end = self
            .device_base
            .checked_add(self.device_size)
            .ok_or("the device window overflows")?;
        let mut ranges: Vec<(&str, u64, u64)> = Vec::new();
        for d in &self.guest_device {
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
            if end > window_end || d.base < self.device_base {
                return Err(format!(
                    "guest device {} lies outside the device window",
                    d.name
                ));
            }
            ranges.push((&d.name, d.base, end));
        }
        if let Some(s) = &self.smmu {
            if !(1..=1 << 16).contains(&s.streams) || !s.streams.is_power_of_two() {
                return Err("smmu.streams must be a power of two up to 65536".into());
            }
            let end = s.base.checked_add(s.size).ok_or("smmu: overflows")?;
            ranges.push(("the hypervisor's SMMU", s.base, end));
        }
        if let Some(g) = &self.gicr_filter {
            if g.base % 4096 != 0 || g.stride % 4096 != 0 || g.stride < 4096 {
                return Err("gicr_filter: base and stride must be whole pages".into());
            }
            let end = g
                .stride
                .checked_mul(self.max_cpus)
                .and_then(|n| n.checked_add(g.base))
                .ok_or("gicr_filter: overflows")?;
            if !self
                .guest_device
                .iter()
                .any(|d| g.base >= d.base && end <= d.base + d.size)
            {
                return Err(
                    "gicr_filter: the redistributors must lie inside one guest device".into(),
                );
            }
        }
        let hv_end = self
            .ram_base
            .checked_add(self.hv_reserved)
            .ok_or("ram_base + hv_reserved overflows")?;
        ranges.push(("the hypervisor's RAM", self.ram_base, hv_end));
        ranges.sort_by_key(|r| r.1);
        for w in ranges.windows(2) {
            if w[1].1 < w[0].2 {
                return Err(format!("{} overlaps {}", w[0].0, w[1].0));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "t"
arch = "aarch64"
load_address = 0x4008_0000
ram_base = 0x4000_0000
hv_reserved = 0x100_0000
uart_pl011 = 0x0900_0000
max_cpus = 2
device_base = 0
device_size = 0x4000_0000
[[guest_device]]
name = "uart"
base = 0x0900_0000
size = 0x1000
"#;

    fn with(extra: &str) -> Result<Board, BoardError> {
        Board::parse(&format!("{MINIMAL}{extra}"))
    }

    #[test]
    fn every_board_in_the_tree_parses_and_checks() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut n = 0;
        for e in std::fs::read_dir(root.join("boards")).unwrap() {
            let e = e.unwrap();
            if e.path().join("board.toml").is_file() {
                let name = e.file_name().to_string_lossy().into_owned();
                let b = Board::load(&root, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(b.name, name);
                n += 1;
            }
        }
        assert!(n >= 1);
        let v = Board::load(&root, "qemu-virt").unwrap();
        assert_eq!(v.arch.bare_metal_target(), "aarch64-unknown-none-softfloat");
        let q = v.qemu.expect("qemu-virt runs under QEMU");
        assert_eq!(q.binary, "qemu-system-aarch64");
        assert!(q.modules.iter().any(|m| m.ends_with("virtio_pci.ko")));
    }

    #[test]
    fn a_minimal_board_parses_and_a_misspelt_key_is_refused() {
        let b = with("").unwrap();
        assert_eq!(
            (b.arch, b.max_cpus, b.guest_device.len()),
            (Arch::Aarch64, 2, 1)
        );
        assert!(b.qemu.is_none() && b.smmu.is_none());
        assert!(matches!(
            with("hv_reserve = 1\n"),
            Err(BoardError::Schema(_))
        ));
        assert!(matches!(
            with(
                "[qemu]\nbinary = \"q\"\nmachine = \"m\"\ncpu = \"c\"\nmemory = \"1G\"\nappend = \"\"\nmodule = []\n"
            ),
            Err(BoardError::Schema(_))
        ));
        assert!(matches!(
            Board::parse(&MINIMAL.replace("aarch64", "riscv64")),
            Err(BoardError::Schema(_))
        ));
    }

    #[test]
    fn inconsistent_boards_are_refused_with_the_reason() {
        let invalid = |extra: &str| match with(extra) {
            Err(BoardError::Invalid(why)) => why,
            other => panic!("{extra}: {other:?}"),
        };
        // The guest given the hypervisor's RAM, a device twice, a device off the page grid.
        assert!(
            invalid("[[guest_device]]\nname = \"ram\"\nbase = 0x3fff_f000\nsize = 0x2000\n")
                .contains("outside the device window")
        );
        assert!(
            invalid("[[guest_device]]\nname = \"again\"\nbase = 0x0900_0000\nsize = 0x1000\n")
                .contains("overlaps")
        );
        assert!(
            invalid("[[guest_device]]\nname = \"odd\"\nbase = 0x0900_1800\nsize = 0x1000\n")
                .contains("whole 4 KiB pages")
        );
        // The SMMU given to the guest, or with an impossible stream count.
        assert!(
            invalid("[smmu]\nbase = 0x0900_0000\nsize = 0x2_0000\nstreams = 256\n")
                .contains("overlaps")
        );
        assert!(
            invalid("[smmu]\nbase = 0x0905_0000\nsize = 0x2_0000\nstreams = 3\n")
                .contains("power of two")
        );
        // Redistributors outside every guest device.
        assert!(
            invalid("[gicr_filter]\nbase = 0x080a_0000\nstride = 0x2_0000\n")
                .contains("inside one guest device")
        );
        // Wrapping arithmetic is an error, not a small range.
        assert!(matches!(
            Board::parse(&MINIMAL.replace("hv_reserved = 0x100_0000", "hv_reserved = 0xffff_ffff_ffff_ffff")),
            Err(BoardError::Invalid(w)) if w.contains("overflows")
        ));
    }
}
