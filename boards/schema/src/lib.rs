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
    /// Base of RAM (the first memory region's base).
    pub ram_base: u64,
    /// The board's RAM regions, lowest first: the guest gets the first, less the reservation
    /// (`[[memory]]`).
    pub memory: Vec<MemoryRegion>,
    /// Bytes of RAM from `ram_base` the hypervisor keeps (never mapped for the guest).
    pub hv_reserved: u64,
    /// Most CPUs the image supports.
    pub max_cpus: u64,
    /// The device window the hypervisor maps for itself at EL2.
    pub device_base: u64,
    /// Size of that window.
    pub device_size: u64,
    /// The bare-metal build: target triple and CPU features.
    pub target: Target,
    /// The console the hypervisor prints on.
    pub console: Console,
    /// The interrupt controller and how the hypervisor treats it.
    pub interrupt_controller: InterruptController,
    /// The timer the guest uses.
    pub timer: TimerKind,
    /// Per-boot entropy sources the hypervisor draws from, in order (the CPU's counter is always
    /// added, as a last and predictable input).
    pub entropy: Vec<EntropySource>,
    /// Where the quote's boot counter comes from.
    pub boot_counter: BootCounter,
    /// How secondary CPUs are started.
    pub smp: SmpMethod,
    /// With `smp = "spin-table"`: the release address of CPU 0; CPU `k`'s is 8·`k` above it
    /// (the loader's spin table, which must lie in the hypervisor's reservation so that only
    /// the hypervisor can release a CPU).
    #[serde(default)]
    pub spin_table: Option<u64>,
    /// How the board is reset and powered off (the hypervisor's panic powers it off).
    pub reset: ResetMethod,
    /// Where the device secret (the root of the key hierarchy) lives: written into the image
    /// (`image`, the default), or in the SoC's one-time-programmable memory (`bcm-otp`), for
    /// boards whose image sits on storage the guest owns (an SD card).
    #[serde(default)]
    pub secret: SecretSource,
    /// The SMMU the hypervisor owns, if any.
    #[serde(default)]
    pub iommu: Option<Iommu>,
    /// Every device in the device window the board data knows, with its owner.
    pub device: Vec<Device>,
    /// The guest kernel.
    pub kernel: Kernel,
    /// The device tree the board boots with, when the image ships one (a loader that makes its
    /// own, as QEMU's `virt` does, needs none).
    #[serde(default)]
    pub dtb: Option<Dtb>,
    /// How QEMU emulates the board, if it does.
    #[serde(default)]
    pub qemu: Option<Qemu>,
    /// The flashable SD card image, for a board whose firmware boots from one (needs `[dtb]`).
    #[serde(default)]
    pub sdcard: Option<SdCard>,
    /// The mediated legacy DMA engine's guest channels and FIFO allow-list (with a device whose
    /// `mediator = "bcm-dma"`).
    #[serde(default)]
    pub dma: Option<DmaEngine>,
}

/// The flashable SD card image (`cargo xtask image` writes `gatewarden-<board>.img`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SdCard {
    /// The Debian package with the board's boot firmware (its `usr/lib/<package>/` files go to
    /// the boot partition), from the archive's `non-free-firmware` component.
    pub firmware: String,
    /// The guest kernel's command line on the board (`cmdline.txt`).
    pub cmdline: String,
}

/// What the guest may do with the mediated legacy DMA engine (docs/dma-mediation.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DmaEngine {
    /// Channels 0..channels have the legacy register layout and belong to the guest (the
    /// BCM2711's channels 11-14 are DMA4 engines, kept from it).
    pub channels: u64,
    /// The ARM physical address of the peripherals' bus address 0x7e000000.
    pub peripherals: u64,
    /// The peripheral FIFO registers a control block may read or write (at a fixed address).
    #[serde(default)]
    pub fifos: Vec<DmaFifo>,
}

/// A peripheral data register DREQ-paced transfers use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DmaFifo {
    /// What it is (for messages).
    pub name: String,
    /// Its bus address (0x7e......).
    pub bus: u32,
}

/// A region of RAM.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryRegion {
    /// Base.
    pub base: u64,
    /// Most bytes of RAM the region holds (the device tree's `/memory` may say less).
    pub size: u64,
}

/// The bare-metal build.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Rust target triple (must be `arch`'s bare-metal target).
    pub triple: String,
    /// rustc target features the image may use (e.g. `+sha2`); only features the real SoC has.
    #[serde(default)]
    pub features: Vec<String>,
}

/// A console.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// Which UART.
    pub kind: ConsoleKind,
    /// Its register base (inside a device of the list).
    pub base: u64,
}

/// UARTs the schema knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConsoleKind {
    /// Arm PL011.
    Pl011,
    /// The BCM283x/BCM2711 auxiliary mini-UART.
    BcmMiniUart,
}

/// The interrupt controller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterruptController {
    /// Which GIC.
    pub kind: GicKind,
}

/// Interrupt controllers the schema knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GicKind {
    /// GICv3 (system-register CPU interface).
    Gicv3,
    /// GICv2 / GIC-400 (memory-mapped CPU interface).
    Gicv2,
    /// No GIC: the BCM2836 local interrupt controller (per core, at the ARM-local page) in
    /// front of the BCM2835 "armctrl" controller (in the VideoCore mailbox's page), both
    /// passed through to the guest (the Raspberry Pi 3).
    Bcm2836,
}

/// Timers the schema knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TimerKind {
    /// The Arm generic timer (the guest owns the EL1 physical and virtual timers).
    ArmGeneric,
}

/// Per-boot entropy sources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntropySource {
    /// The loader's `/chosen` `rng-seed` and `kaslr-seed` (taken out of the tree before it is
    /// measured).
    DtbSeeds,
    /// The CPU's RNDR (FEAT_RNG), where the CPU has it.
    Rndr,
    /// The BCM2711's iproc RNG200 (a hypervisor-owned device with `driver = "bcm-rng200"`).
    BcmRng200,
    /// The BCM2835/7's RNG (a hypervisor-owned device with `driver = "bcm2835-rng"`).
    Bcm2835Rng,
}

impl EntropySource {
    /// The hypervisor-owned device driver this source reads, if it is a device.
    pub fn driver(self) -> Option<Driver> {
        match self {
            EntropySource::BcmRng200 => Some(Driver::BcmRng200),
            EntropySource::Bcm2835Rng => Some(Driver::Bcm2835Rng),
            EntropySource::DtbSeeds | EntropySource::Rndr => None,
        }
    }
}

/// Where the boot counter comes from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootCounter {
    /// Which source.
    pub kind: BootCounterKind,
    /// Its register base, for a device source.
    #[serde(default)]
    pub base: Option<u64>,
}

/// Boot-counter sources the schema knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootCounterKind {
    /// An Arm PL031 real-time clock's seconds at boot.
    Pl031,
    /// None: the counter is 0 (`NO_BOOT_COUNTER`), and the controller takes a quote counter
    /// that starts over as a reboot.
    None,
}

/// Where the device secret lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretSource {
    /// In the hypervisor image (`cargo xtask image` writes it): the image's storage must be out
    /// of the guest's reach.
    #[default]
    Image,
    /// The BCM2711's OTP private-key rows (56-63), read through the VideoCore mailbox, which
    /// the hypervisor mediates (a `bcm-mailbox` device) so that the guest cannot ask for them;
    /// programmed on the first boot from the boot's entropy when blank.
    BcmOtp,
    /// As `bcm-otp`, in the eight customer OTP rows (36-43) instead: the BCM2837's firmware
    /// has no private-key rows (the Raspberry Pi 3).
    BcmCustomerOtp,
}

impl SecretSource {
    /// Whether the secret is in the SoC's OTP, through the mediated mailbox.
    pub fn in_otp(self) -> bool {
        matches!(self, SecretSource::BcmOtp | SecretSource::BcmCustomerOtp)
    }
}

/// How secondary CPUs start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmpMethod {
    /// PSCI CPU_ON through the firmware.
    Psci,
    /// The loader's spin table (release addresses in the device tree).
    SpinTable,
}

/// How the board resets and powers off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ResetMethod {
    /// PSCI SYSTEM_RESET / SYSTEM_OFF.
    Psci,
    /// The BCM283x/BCM2711 power-management watchdog.
    BcmPmWatchdog,
}

/// An SMMUv3 owned by the hypervisor.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Iommu {
    /// Which IOMMU.
    pub kind: IommuKind,
    /// The name of its entry in the device list (owned by the hypervisor).
    pub device: String,
    /// Streams its stream table describes (a power of two up to 65,536).
    pub streams: u32,
}

/// IOMMUs the schema knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IommuKind {
    /// Arm SMMUv3.
    Smmuv3,
}

/// Who a device belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Owner {
    /// Mapped for the guest by stage 2, page by page (the only owner stage 2 maps).
    Guest,
    /// Used by the hypervisor; never mapped for the guest.
    Hypervisor,
    /// Kept out of stage 2 and emulated or filtered by the hypervisor (`mediator`); may lie
    /// inside a guest device, whose stage-2 map then has holes for it.
    Mediated,
    /// Nobody's: neither mapped for the guest nor used (for example, devices whose DMA would
    /// bypass the IOMMU); listed so that no later change hands it out unnoticed.
    Withheld,
}

/// The hypervisor's own driver for a device it owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// The BCM283x/BCM2711 power-management block's watchdog: reset and power-off.
    BcmPmWatchdog,
    /// The BCM2711's iproc RNG200.
    BcmRng200,
    /// The BCM2835/7's RNG.
    Bcm2835Rng,
}

/// How the hypervisor mediates a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mediator {
    /// GICv3 redistributor control pages: accesses trap and are filtered so that LPIs stay off
    /// (one page per CPU, `count` = `max_cpus`, `stride` apart).
    GicrControl,
    /// The BCM283x/BCM2711 VideoCore mailbox page (the ARM control block at 0x7e00b000):
    /// the guest's property-channel messages are copied into hypervisor memory, their tags
    /// checked against an allow-list (never the OTP private key), and the answers copied
    /// back; every other register of the page is refused. One 4 KiB page inside a guest
    /// device, so that the guest's tree keeps the mailbox node.
    BcmMailbox,
    /// The BCM283x/BCM2711 legacy DMA engine's register page (channels 0-14 at 0x7e007000):
    /// a control block address the guest writes makes the hypervisor copy the chain into its
    /// own memory and check every block's reach (`[dma]`). One 4 KiB page inside a guest
    /// device.
    BcmDma,
    /// The dwc2 USB host controller's first register page (global, host and host-channel
    /// registers): a channel's DMA address and size are kept by the hypervisor and checked
    /// against guest RAM when the channel starts; descriptor DMA and device mode refused. One
    /// 4 KiB page inside a guest device (the FIFO windows above it stay mapped).
    Dwc2,
    /// The BCM2836 ARM-local page (the Raspberry Pi 3's per-core interrupt routing, timers and
    /// mailboxes): the guest routes its interrupts and sends its IPIs through mailbox 0; the
    /// counter's source, prescaler and value, and the other mailboxes (which a loader may use to
    /// release a core), are refused. One 4 KiB page inside a guest device.
    Bcm2836Local,
}

/// The mediators of a single 4 KiB page inside a guest device.
pub const SINGLE_PAGE_MEDIATORS: [Mediator; 4] = [
    Mediator::BcmMailbox,
    Mediator::BcmDma,
    Mediator::Dwc2,
    Mediator::Bcm2836Local,
];

/// A device (or `count` identical ones, `stride` apart).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// Name (for messages, and for references such as `iommu.device`).
    pub name: String,
    /// Who it belongs to.
    pub owner: Owner,
    /// Base (a whole page).
    pub base: u64,
    /// Size (whole pages).
    pub size: u64,
    /// How many, for a repeated device.
    #[serde(default = "one")]
    pub count: u64,
    /// Distance between repeats (required when `count` > 1).
    #[serde(default)]
    pub stride: u64,
    /// For a mediated device: how the hypervisor mediates it.
    #[serde(default)]
    pub mediator: Option<Mediator>,
    /// For a hypervisor-owned device: the hypervisor's driver for it.
    #[serde(default)]
    pub driver: Option<Driver>,
}

fn one() -> u64 {
    1
}

impl Device {
    /// Each instance's `(base, end)`; `None` when the arithmetic overflows.
    pub fn ranges(&self) -> Option<Vec<(u64, u64)>> {
        (0..self.count)
            .map(|k| {
                let base = self.stride.checked_mul(k)?.checked_add(self.base)?;
                Some((base, base.checked_add(self.size)?))
            })
            .collect()
    }
}

/// The guest kernel.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kernel {
    /// Which Debian kernel package.
    pub flavour: KernelFlavour,
    /// Kernel modules the guest loads at boot, in order (paths in Debian's kernel package).
    #[serde(default)]
    pub modules: Vec<String>,
}

/// Debian kernel flavours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelFlavour {
    /// `linux-image-cloud-<arch>`: virtual machines (virtio, no SoC drivers).
    Cloud,
    /// `linux-image-<arch>`: the generic kernel with SoC drivers and device trees.
    Generic,
}

impl KernelFlavour {
    /// The name of Debian's metapackage for this flavour on Debian architecture `arch`
    /// (`arm64`, `amd64`).
    pub fn debian_metapackage(self, arch: &str) -> String {
        match self {
            KernelFlavour::Cloud => format!("linux-image-cloud-{arch}"),
            KernelFlavour::Generic => format!("linux-image-{arch}"),
        }
    }

    /// The suffix of the versioned kernel release, e.g. `-cloud-arm64` in `6.1.0-56-cloud-arm64`.
    pub fn release_suffix(self, arch: &str) -> String {
        match self {
            KernelFlavour::Cloud => format!("-cloud-{arch}"),
            KernelFlavour::Generic => format!("-{arch}"),
        }
    }
}

/// The device tree an image ships: one from Debian's kernel package, edited.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dtb {
    /// Path of the tree in the kernel package's `usr/lib/linux-image-<release>/`.
    pub source: String,
    /// Edits for every boot of the board (QEMU's own come on top: `[qemu] dtb_edits`).
    #[serde(default)]
    pub edits: Vec<DtbEdit>,
}

/// One edit of one device-tree node.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DtbEdit {
    /// The node's full path, e.g. `/soc/usb@7e980000`.
    pub node: String,
    /// Set `status = "disabled"` (the kernel then ignores the device).
    #[serde(default)]
    pub disable: bool,
    /// Properties to delete.
    #[serde(default)]
    pub delete: Vec<String>,
    /// String properties to set.
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
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
    /// The serial ports, as `-serial` values in order; `console` is the terminal. Empty: the
    /// first port is the terminal (`-nographic`). Where several ports name `console` (the
    /// hypervisor and the guest on different UARTs) they share it: their output is merged and
    /// the keyboard goes to the one `console_input` names.
    #[serde(default)]
    pub serial: Vec<String>,
    /// Which serial port (index in `serial`) takes the keyboard when several share the terminal.
    #[serde(default)]
    pub console_input: usize,
    /// CPUs the machine always has (`-smp` must say this many), for machines that fix it.
    #[serde(default)]
    pub fixed_cpus: Option<u64>,
    /// Edits of the board's device tree for QEMU's model of the board (blocks it does not
    /// model, and their dependencies), on top of `[dtb] edits`.
    #[serde(default)]
    pub dtb_edits: Vec<DtbEdit>,
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

    /// The devices stage 2 maps for the guest: `(name, base, size)` for each instance.
    pub fn guest_devices(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.instances()
            .filter(|(d, _, _)| d.owner == Owner::Guest)
            .map(|(d, base, end)| (d.name.as_str(), base, end - base))
    }

    /// Every device instance: the device, its base and its end.
    pub fn instances(&self) -> impl Iterator<Item = (&Device, u64, u64)> {
        self.device.iter().flat_map(|d| {
            d.ranges()
                .unwrap_or_default()
                .into_iter()
                .map(move |(b, e)| (d, b, e))
        })
    }

    /// Whether `[base, base + size)` lies inside one device the guest is given.
    pub fn inside_guest_device(&self, base: u64, size: u64) -> bool {
        self.instances()
            .any(|(g, b, e)| g.owner == Owner::Guest && base >= b && base + size <= e)
    }

    /// The single mediated pages' bases ([`SINGLE_PAGE_MEDIATORS`]).
    pub fn single_mediated_pages(&self) -> Vec<u64> {
        self.device
            .iter()
            .filter(|d| {
                d.mediator
                    .is_some_and(|m| SINGLE_PAGE_MEDIATORS.contains(&m))
            })
            .map(|d| d.base)
            .collect()
    }

    /// The first of the pages mediated by `m` and their stride, if the board has them.
    pub fn mediated(&self, m: Mediator) -> Option<(u64, u64)> {
        self.device
            .iter()
            .find(|d| d.mediator == Some(m))
            .map(|d| (d.base, d.stride))
    }

    /// The hypervisor's IOMMU: its kind, register base, size and stream count.
    pub fn iommu_registers(&self) -> Option<(IommuKind, u64, u64, u32)> {
        let i = self.iommu.as_ref()?;
        let d = self.device.iter().find(|d| d.name == i.device)?;
        Some((i.kind, d.base, d.size, i.streams))
    }

    /// The most RAM the guest's part of the first region can reach, from `ram_base`.
    pub fn max_ram(&self) -> u64 {
        self.memory.first().map_or(0, |m| m.size)
    }

    /// The register base of the hypervisor-owned device driven by `driver`, if the board has one.
    pub fn driven(&self, driver: Driver) -> Option<u64> {
        self.device
            .iter()
            .find(|d| d.driver == Some(driver))
            .map(|d| d.base)
    }

    /// The boot counter's clock base, when it is a device.
    pub fn boot_clock(&self) -> Option<u64> {
        match self.boot_counter.kind {
            BootCounterKind::Pl031 => self.boot_counter.base,
            BootCounterKind::None => None,
        }
    }

    /// Refuse board data that would map something twice, map the hypervisor's own devices or
    /// RAM for the guest, or refer to what is not there: found when the image is built, not at
    /// boot.
    pub fn check(&self) -> Result<(), String> {
        if self.max_cpus == 0 {
            return Err("max_cpus must be at least 1".into());
        }
        if self.target.triple != self.arch.bare_metal_target() {
            return Err(format!(
                "target.triple {} is not {:?}'s bare-metal target {}",
                self.target.triple,
                self.arch,
                self.arch.bare_metal_target()
            ));
        }
        let window_end = self
            .device_base
            .checked_add(self.device_size)
            .ok_or("the device window overflows")?;
        let first = self
            .memory
            .first()
            .ok_or("the board lists no [[memory]] region")?;
        if first.base != self.ram_base {
            return Err("ram_base must be the first memory region's base".into());
        }
        if self.hv_reserved == 0 || self.hv_reserved >= first.size {
            return Err("hv_reserved must leave the guest part of the first memory region".into());
        }
        if self.load_address < self.ram_base
            || self.load_address >= self.ram_base.saturating_add(self.hv_reserved)
        {
            return Err("load_address must lie in the hypervisor's reservation".into());
        }
        let mut regions: Vec<(u64, u64)> = Vec::new();
        for m in &self.memory {
            let end = m
                .base
                .checked_add(m.size)
                .filter(|_| m.size > 0 && m.base % 4096 == 0 && m.size % 4096 == 0)
                .ok_or("memory regions must be whole, non-empty pages")?;
            if regions.last().is_some_and(|&(_, e)| m.base < e) {
                return Err("memory regions must be sorted and must not overlap".into());
            }
            if m.base < window_end && self.device_base < end {
                return Err(format!(
                    "memory region {:#x}+{:#x} overlaps the device window",
                    m.base, m.size
                ));
            }
            regions.push((m.base, end));
        }
        let mut names = std::collections::BTreeSet::new();
        // Ranges nothing else may overlap, and mediated ranges (which may sit inside one guest
        // device).
        let mut exclusive: Vec<(String, u64, u64)> = Vec::new();
        let mut mediated: Vec<(String, u64, u64)> = Vec::new();
        for d in &self.device {
            if !names.insert(d.name.as_str()) {
                return Err(format!("device {} is listed twice", d.name));
            }
            let page = |v: u64| v.is_multiple_of(4096);
            if d.size == 0 || !page(d.base) || !page(d.size) || !page(d.stride) {
                return Err(format!(
                    "device {}: base, size and stride must be whole 4 KiB pages",
                    d.name
                ));
            }
            if d.count == 0 || (d.count > 1 && d.stride < d.size) {
                return Err(format!(
                    "device {}: count must be at least 1, and repeats must not overlap (stride >= size)",
                    d.name
                ));
            }
            if d.driver.is_some() && (d.owner != Owner::Hypervisor || d.count != 1) {
                return Err(format!(
                    "device {}: only a single device owned by the hypervisor has a driver",
                    d.name
                ));
            }
            if d.driver.is_some() && self.device.iter().filter(|o| o.driver == d.driver).count() > 1
            {
                return Err(format!("device {}: its driver is named twice", d.name));
            }
            if (d.owner == Owner::Mediated) != d.mediator.is_some() {
                return Err(format!(
                    "device {}: a mediated device names its mediator, and only a mediated device does",
                    d.name
                ));
            }
            let ranges = d.ranges().ok_or(format!("device {}: overflows", d.name))?;
            for (k, &(base, end)) in ranges.iter().enumerate() {
                if base < self.device_base || end > window_end {
                    return Err(format!("device {} lies outside the device window", d.name));
                }
                let name = if d.count > 1 {
                    format!("{} #{k}", d.name)
                } else {
                    d.name.clone()
                };
                match d.owner {
                    Owner::Mediated => mediated.push((name, base, end)),
                    _ => exclusive.push((name, base, end)),
                }
            }
            if d.mediator == Some(Mediator::GicrControl) {
                if d.count != self.max_cpus || d.size != 4096 {
                    return Err(format!(
                        "device {}: one 4 KiB redistributor control page per CPU (count = max_cpus)",
                        d.name
                    ));
                }
                if self.interrupt_controller.kind != GicKind::Gicv3 {
                    return Err(format!("device {}: redistributors are GICv3's", d.name));
                }
            }
        }
        if self
            .device
            .iter()
            .filter(|d| d.mediator == Some(Mediator::GicrControl))
            .count()
            > 1
        {
            return Err("only one device may list the redistributor control pages".into());
        }
        for m in SINGLE_PAGE_MEDIATORS {
            match self
                .device
                .iter()
                .filter(|d| d.mediator == Some(m))
                .collect::<Vec<_>>()
                .as_slice()
            {
                [] => {}
                [d] => {
                    if d.count != 1 || d.size != 4096 || !self.inside_guest_device(d.base, d.size) {
                        return Err(format!(
                            "device {}: a {m:?} mediator covers one 4 KiB page inside a guest device",
                            d.name
                        ));
                    }
                }
                _ => return Err(format!("only one device may have the {m:?} mediator")),
            }
        }
        let engines: Vec<&Device> = self
            .device
            .iter()
            .filter(|d| d.mediator == Some(Mediator::BcmDma))
            .collect();
        match (engines.as_slice(), &self.dma) {
            ([], None) => {}
            ([_], Some(dma)) => {
                if !(1..=15).contains(&dma.channels) {
                    return Err("dma.channels: 1 to 15 legacy channels".into());
                }
                for f in &dma.fifos {
                    let pa = (f.bus as u64)
                        .checked_sub(0x7e00_0000)
                        .filter(|o| *o < 0x0100_0000 && f.bus % 4 == 0)
                        .map(|o| dma.peripherals + o);
                    let mediated = self.device.iter().any(|m| {
                        m.owner == Owner::Mediated
                            && pa.is_some_and(|pa| pa >= m.base && pa < m.base + m.size)
                    });
                    if !pa.is_some_and(|pa| self.inside_guest_device(pa, 4)) || mediated {
                        return Err(format!(
                            "dma.fifos {}: {:#x} is not a register of a device the guest is given",
                            f.name, f.bus
                        ));
                    }
                }
            }
            ([], Some(_)) => {
                return Err("[dma] needs a device with mediator = \"bcm-dma\"".into());
            }
            _ => return Err("a mediated DMA engine needs [dma]".into()),
        }
        if self.sdcard.is_some() && self.dtb.is_none() {
            return Err("[sdcard] needs [dtb]: the firmware loads the tree from the card".into());
        }
        if self.secret.in_otp() && self.mediated(Mediator::BcmMailbox).is_none() {
            return Err(
                "secret = \"bcm-otp\" needs the mailbox mediated by the hypervisor (mediator = \"bcm-mailbox\")"
                    .into(),
            );
        }
        if let Some(i) = &self.iommu {
            if !(1..=1 << 16).contains(&i.streams) || !i.streams.is_power_of_two() {
                return Err("iommu.streams must be a power of two up to 65536".into());
            }
            match self.device.iter().find(|d| d.name == i.device) {
                Some(d) if d.owner == Owner::Hypervisor && d.count == 1 => {}
                Some(_) => {
                    return Err(format!(
                        "iommu.device {}: the IOMMU must be one device owned by the hypervisor",
                        i.device
                    ));
                }
                None => {
                    return Err(format!(
                        "iommu.device {} is not in the device list",
                        i.device
                    ));
                }
            }
        }
        let covered = |what: &str, base: u64, owners: &[Owner]| -> Result<(), String> {
            if self
                .instances()
                .any(|(d, b, e)| owners.contains(&d.owner) && base >= b && base < e)
            {
                Ok(())
            } else {
                Err(format!(
                    "{what} at {base:#x} is not inside a device of the list owned by {owners:?}"
                ))
            }
        };
        covered(
            "the console",
            self.console.base,
            &[Owner::Guest, Owner::Hypervisor],
        )?;
        match (self.boot_counter.kind, self.boot_counter.base) {
            (BootCounterKind::Pl031, Some(base)) => covered(
                "the boot counter's clock",
                base,
                &[Owner::Guest, Owner::Hypervisor],
            )?,
            (BootCounterKind::Pl031, None) => return Err("boot_counter: pl031 needs a base".into()),
            (BootCounterKind::None, Some(_)) => {
                return Err("boot_counter: kind none takes no base".into());
            }
            (BootCounterKind::None, None) => {}
        }
        let mut seen = Vec::new();
        for e in &self.entropy {
            if seen.contains(e) {
                return Err(format!("entropy: {e:?} is listed twice"));
            }
            if let Some(driver) = e.driver()
                && self.driven(driver).is_none()
            {
                return Err(format!(
                    "entropy: {e:?} needs a hypervisor-owned device with driver {driver:?}"
                ));
            }
            seen.push(*e);
        }
        if self.reset == ResetMethod::BcmPmWatchdog && self.driven(Driver::BcmPmWatchdog).is_none()
        {
            return Err(
                "reset: bcm-pm-watchdog needs a hypervisor-owned device with driver bcm-pm-watchdog"
                    .into(),
            );
        }
        match (self.smp, self.spin_table) {
            (SmpMethod::SpinTable, Some(base)) => {
                let last = base
                    .checked_add(8 * self.max_cpus)
                    .ok_or("spin_table overflows")?;
                if !base.is_multiple_of(8)
                    || base < self.ram_base
                    || last > self.ram_base.saturating_add(self.hv_reserved)
                {
                    return Err(
                        "spin_table: 8-byte release addresses, one per CPU, inside the hypervisor's reservation (so only it can release a CPU)"
                            .into(),
                    );
                }
            }
            (SmpMethod::SpinTable, None) => {
                return Err(
                    "smp = \"spin-table\" needs spin_table (CPU 0's release address)".into(),
                );
            }
            (SmpMethod::Psci, Some(_)) => {
                return Err("spin_table is only for smp = \"spin-table\"".into());
            }
            (SmpMethod::Psci, None) => {}
        }
        let hv_end = self
            .ram_base
            .checked_add(self.hv_reserved)
            .ok_or("ram_base + hv_reserved overflows")?;
        exclusive.push(("the hypervisor's RAM".into(), self.ram_base, hv_end));
        exclusive.sort_by_key(|r| r.1);
        for w in exclusive.windows(2) {
            if w[1].1 < w[0].2 {
                return Err(format!("{} overlaps {}", w[0].0, w[1].0));
            }
        }
        // A mediated page lies wholly inside one guest device (which gets a hole for it) or
        // outside every exclusive range.
        for (name, base, end) in &mediated {
            for (other, b, e) in &exclusive {
                let overlaps = base < e && b < end;
                let inside_guest = base >= b
                    && end <= e
                    && self
                        .guest_devices()
                        .any(|(_, gb, gs)| gb == *b && gb + gs == *e);
                if overlaps && !inside_guest {
                    return Err(format!("mediated {name} overlaps {other}"));
                }
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
memory = [{ base = 0x4000_0000, size = 0xc000_0000 }]
hv_reserved = 0x100_0000
max_cpus = 2
device_base = 0
device_size = 0x4000_0000
timer = "arm-generic"
entropy = ["dtb-seeds"]
smp = "psci"
reset = "psci"
[target]
triple = "aarch64-unknown-none-softfloat"
[console]
kind = "pl011"
base = 0x0900_0000
[interrupt_controller]
kind = "gicv3"
[boot_counter]
kind = "none"
[kernel]
flavour = "cloud"
[[device]]
name = "uart"
owner = "guest"
base = 0x0900_0000
size = 0x1000
[[device]]
name = "gicr"
owner = "guest"
base = 0x080a_0000
size = 0x4_0000
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
        let q = v.qemu.as_ref().expect("qemu-virt runs under QEMU");
        assert_eq!(q.binary, "qemu-system-aarch64");
        assert!(
            v.kernel
                .modules
                .iter()
                .any(|m| m.ends_with("virtio_pci.ko"))
        );
        assert_eq!(v.iommu_registers().map(|i| i.3), Some(256));
        assert_eq!(v.boot_clock(), Some(0x0901_0000));
        assert_eq!(
            v.mediated(Mediator::GicrControl),
            Some((0x080a_0000, 0x2_0000))
        );
    }

    #[test]
    fn a_minimal_board_parses_and_a_misspelt_key_is_refused() {
        let b = with("").unwrap();
        assert_eq!((b.arch, b.max_cpus, b.device.len()), (Arch::Aarch64, 2, 2));
        assert!(b.qemu.is_none() && b.iommu.is_none() && b.boot_clock().is_none());
        assert_eq!(b.guest_devices().count(), 2);
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
        for (from, to) in [
            ("aarch64\"", "riscv64\""),
            ("owner = \"guest\"", "owner = \"root\""),
            ("kind = \"pl011\"", "kind = \"ns16550\""),
            ("smp = \"psci\"", "smp = \"acpi\""),
        ] {
            assert!(
                matches!(
                    Board::parse(&MINIMAL.replacen(from, to, 1)),
                    Err(BoardError::Schema(_))
                ),
                "{to}"
            );
        }
    }

    #[test]
    fn the_raspberry_pi_4_board_names_its_drivers_and_spin_table() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let b = Board::load(&root, "rpi4").unwrap();
        assert_eq!(b.smp, SmpMethod::SpinTable);
        assert_eq!(b.spin_table, Some(0xd8));
        assert_eq!(b.driven(Driver::BcmPmWatchdog), Some(0xfe10_0000));
        assert_eq!(b.driven(Driver::BcmRng200), Some(0xfe10_4000));
        assert!(
            b.target.features.is_empty(),
            "the BCM2711 has no crypto instructions"
        );
        assert_eq!(b.kernel.flavour, KernelFlavour::Generic);
        assert_eq!(
            b.dtb.as_ref().unwrap().source,
            "broadcom/bcm2711-rpi-4-b.dtb"
        );
        assert_eq!(b.qemu.as_ref().unwrap().fixed_cpus, Some(4));
    }

    #[test]
    fn drivers_spin_tables_and_their_sources_are_checked() {
        let invalid = |text: String| match Board::parse(&text) {
            Err(BoardError::Invalid(why)) => why,
            other => panic!("{text}: {other:?}"),
        };
        let wdog = "[[device]]\nname = \"pm\"\nowner = \"hypervisor\"\ndriver = \"bcm-pm-watchdog\"\nbase = 0x0a00_0000\nsize = 0x1000\n";
        // The benign twins: each source or method with its device builds.
        let ok =
            format!("{MINIMAL}{wdog}").replace("reset = \"psci\"", "reset = \"bcm-pm-watchdog\"");
        Board::parse(&ok).unwrap();
        let spin = MINIMAL.replace(
            "smp = \"psci\"",
            "smp = \"spin-table\"\nspin_table = 0x4000_00d8",
        );
        assert_eq!(Board::parse(&spin).unwrap().spin_table, Some(0x4000_00d8));
        // A watchdog reset with no watchdog, or the watchdog given to the guest.
        assert!(
            invalid(MINIMAL.replace("reset = \"psci\"", "reset = \"bcm-pm-watchdog\""))
                .contains("needs a hypervisor-owned device")
        );
        assert!(
            invalid(format!(
                "{MINIMAL}{}",
                wdog.replace("\"hypervisor\"", "\"guest\"")
            ))
            .contains("only a single device owned by the hypervisor has a driver")
        );
        // The RNG200 as a source without the device.
        assert!(
            invalid(MINIMAL.replace("[\"dtb-seeds\"]", "[\"bcm-rng200\"]"))
                .contains("needs a hypervisor-owned device with driver")
        );
        // A spin table missing, outside the reservation (the guest could release a CPU), or
        // named for a PSCI board.
        assert!(
            invalid(MINIMAL.replace("smp = \"psci\"", "smp = \"spin-table\""))
                .contains("needs spin_table")
        );
        assert!(
            invalid(MINIMAL.replace(
                "smp = \"psci\"",
                "smp = \"spin-table\"\nspin_table = 0x5000_0000"
            ))
            .contains("inside the hypervisor's reservation")
        );
        assert!(
            invalid(MINIMAL.replace("smp = \"psci\"", "smp = \"psci\"\nspin_table = 0x4000_00d8"))
                .contains("only for smp")
        );
    }

    #[test]
    fn repeated_and_mediated_devices() {
        let b = with(
            "[[device]]\nname = \"ctl\"\nowner = \"mediated\"\nmediator = \"gicr-control\"\n\
             base = 0x080a_0000\nsize = 0x1000\ncount = 2\nstride = 0x2_0000\n",
        )
        .unwrap();
        assert_eq!(
            b.mediated(Mediator::GicrControl),
            Some((0x080a_0000, 0x2_0000))
        );
        let ctl = b.device.iter().find(|d| d.name == "ctl").unwrap();
        assert_eq!(
            ctl.ranges().unwrap(),
            [(0x080a_0000, 0x080a_1000), (0x080c_0000, 0x080c_1000)]
        );
        // Mediated pages are not guest devices.
        assert_eq!(b.guest_devices().count(), 2);
    }

    #[test]
    fn the_otp_secret_needs_the_mediated_mailbox_inside_a_guest_device() {
        let invalid = |extra: &str| match with(extra) {
            Err(BoardError::Invalid(why)) => why,
            other => panic!("{extra}: {other:?}"),
        };
        let mailbox = |base: u64| {
            format!(
                "[[device]]\nname = \"mbox\"\nowner = \"mediated\"\nmediator = \"bcm-mailbox\"\n\
                 base = {base:#x}\nsize = 0x1000\n"
            )
        };
        // Benign: the mailbox page inside the guest's UART device range is accepted.
        let guest =
            "[[device]]\nname = \"soc\"\nowner = \"guest\"\nbase = 0x0c00_0000\nsize = 0x10_0000\n";
        let b = with(&format!("{guest}{}", mailbox(0x0c00_b000))).unwrap();
        assert_eq!(b.secret, SecretSource::Image);
        assert_eq!(b.mediated(Mediator::BcmMailbox), Some((0x0c00_b000, 0)));
        assert!(invalid(&mailbox(0x0c00_b000)).contains("inside a guest device"));
        let toml = format!("secret = \"bcm-otp\"\n{MINIMAL}");
        match Board::parse(&toml) {
            Err(BoardError::Invalid(why)) => assert!(why.contains("bcm-mailbox"), "{why}"),
            other => panic!("{other:?}"),
        }
        let toml = format!(
            "secret = \"bcm-otp\"\n{MINIMAL}{guest}{}",
            mailbox(0x0c00_b000)
        );
        assert_eq!(Board::parse(&toml).unwrap().secret, SecretSource::BcmOtp);
    }

    #[test]
    fn the_mediated_dma_engine_needs_its_page_its_channels_and_guest_fifos() {
        let invalid = |extra: &str| match with(extra) {
            Err(BoardError::Invalid(why)) => why,
            other => panic!("{extra}: {other:?}"),
        };
        // The device window (0x0800_0000-) as a Pi's peripherals: bus 0x7e000000 at 0x0c000000.
        let guest =
            "[[device]]\nname = \"soc\"\nowner = \"guest\"\nbase = 0x0c00_0000\nsize = 0x30_0000\n";
        let engine = "[[device]]\nname = \"dma\"\nowner = \"mediated\"\nmediator = \"bcm-dma\"\n\
             base = 0x0c00_7000\nsize = 0x1000\n";
        let dma = |channels: u64, fifo: u32| {
            format!(
                "[dma]\nchannels = {channels}\nperipherals = 0x0c00_0000\n\
                 fifos = [{{ name = \"sdhost\", bus = {fifo:#x} }}]\n"
            )
        };
        // Benign: the engine page inside the guest's device, a FIFO of that device.
        let b = with(&format!("{}{guest}{engine}", dma(11, 0x7e20_2040))).unwrap();
        assert_eq!(b.mediated(Mediator::BcmDma), Some((0x0c00_7000, 0)));
        assert_eq!(b.dma.as_ref().unwrap().fifos[0].bus, 0x7e20_2040);
        // A FIFO outside the guest's devices, on the mediated page itself, or misaligned.
        for fifo in [0x7ef0_0000, 0x7e00_7004, 0x7e20_2042] {
            assert!(
                invalid(&format!("{}{guest}{engine}", dma(11, fifo))).contains("dma.fifos"),
                "{fifo:#x}"
            );
        }
        assert!(invalid(&format!("{}{guest}{engine}", dma(16, 0x7e20_2040))).contains("1 to 15"));
        assert!(invalid(&format!("{guest}{engine}")).contains("needs [dma]"));
        assert!(invalid(&format!("{}{guest}", dma(11, 0x7e20_2040))).contains("bcm-dma"));
        assert!(
            invalid(&format!("{}{engine}", dma(11, 0x7e20_2040))).contains("inside a guest device")
        );
        // The USB host's page: inside the guest's device, once.
        let usb = "[[device]]\nname = \"usb\"\nowner = \"mediated\"\nmediator = \"dwc2\"\n\
             base = 0x0c09_8000\nsize = 0x1000\n";
        let b = with(&format!("{guest}{usb}")).unwrap();
        assert_eq!(b.single_mediated_pages(), [0x0c09_8000]);
        assert!(invalid(usb).contains("inside a guest device"));
        assert!(
            invalid(&format!(
                "{guest}{usb}{}",
                usb.replace("\"usb\"", "\"usb2\"")
            ))
            .contains("only one device")
        );
    }

    #[test]
    fn inconsistent_boards_are_refused_with_the_reason() {
        let invalid = |extra: &str| match with(extra) {
            Err(BoardError::Invalid(why)) => why,
            other => panic!("{extra}: {other:?}"),
        };
        let dev = |name: &str, owner: &str, base: u64, size: u64| {
            format!(
                "[[device]]\nname = \"{name}\"\nowner = \"{owner}\"\nbase = {base:#x}\nsize = {size:#x}\n"
            )
        };
        // The guest given the hypervisor's RAM, a device twice, a device off the page grid.
        assert!(
            invalid(&dev("ram", "guest", 0x3fff_f000, 0x2000))
                .contains("outside the device window")
        );
        assert!(invalid(&dev("again", "guest", 0x0900_0000, 0x1000)).contains("overlaps"));
        assert!(invalid(&dev("uart", "withheld", 0x0a00_0000, 0x1000)).contains("listed twice"));
        assert!(invalid(&dev("odd", "guest", 0x0900_1800, 0x1000)).contains("whole 4 KiB pages"));
        // A hypervisor or withheld device inside a guest one.
        assert!(invalid(&dev("smmu", "hypervisor", 0x080b_0000, 0x1000)).contains("overlaps"));
        assert!(invalid(&dev("fwcfg", "withheld", 0x0900_0000, 0x1000)).contains("overlaps"));
        // Mediated pages over a withheld device, without a mediator, or not one per CPU.
        let med = |base: u64, count: u64| {
            format!(
                "[[device]]\nname = \"ctl\"\nowner = \"mediated\"\nmediator = \"gicr-control\"\n\
                 base = {base:#x}\nsize = 0x1000\ncount = {count}\nstride = 0x2_0000\n"
            )
        };
        assert!(
            invalid(&format!(
                "{}{}",
                med(0x080c_0000, 2),
                dev("w", "withheld", 0x080e_0000, 0x1000)
            ))
            .contains("mediated ctl #1 overlaps w")
        );
        assert!(
            invalid(&med(0x080a_0000, 3)).contains("one 4 KiB redistributor control page per CPU")
        );
        assert!(invalid(&dev("m", "mediated", 0x0a00_0000, 0x1000)).contains("names its mediator"));
        // Repeats that overlap each other.
        assert!(invalid(
            "[[device]]\nname = \"r\"\nowner = \"guest\"\nbase = 0x0a00_0000\nsize = 0x2000\ncount = 2\nstride = 0x1000\n"
        )
        .contains("must not overlap"));
        // The IOMMU given to the guest, missing, or with an impossible stream count.
        let iommu = |device: &str, streams: u32| {
            format!("[iommu]\nkind = \"smmuv3\"\ndevice = \"{device}\"\nstreams = {streams}\n")
        };
        assert!(invalid(&iommu("uart", 256)).contains("owned by the hypervisor"));
        assert!(invalid(&iommu("smmu", 256)).contains("not in the device list"));
        assert!(
            invalid(&format!(
                "{}{}",
                iommu("smmu", 3),
                dev("smmu", "hypervisor", 0x0905_0000, 0x2_0000)
            ))
            .contains("power of two")
        );
        with(&format!(
            "{}{}",
            iommu("smmu", 256),
            dev("smmu", "hypervisor", 0x0905_0000, 0x2_0000)
        ))
        .unwrap();
        // The console or the boot clock where the list has no device.
        assert!(
            Board::parse(&MINIMAL.replace(
                "base = 0x0900_0000\n[interrupt",
                "base = 0x0a00_0000\n[interrupt"
            ))
            .is_err_and(|e| e.to_string().contains("the console"))
        );
        assert!(
            Board::parse(
                &MINIMAL.replace("kind = \"none\"", "kind = \"pl031\"\nbase = 0x0901_0000")
            )
            .is_err_and(|e| e.to_string().contains("boot counter"))
        );
        assert!(
            Board::parse(&MINIMAL.replace("kind = \"none\"", "kind = \"pl031\""))
                .is_err_and(|e| e.to_string().contains("needs a base"))
        );
        // A target that is not the arch's, a source twice.
        assert!(
            Board::parse(&MINIMAL.replace("aarch64-unknown-none-softfloat", "x86_64-unknown-none"))
                .is_err_and(|e| e.to_string().contains("bare-metal target"))
        );
        assert!(
            Board::parse(&MINIMAL.replace("[\"dtb-seeds\"]", "[\"rndr\", \"rndr\"]"))
                .is_err_and(|e| e.to_string().contains("listed twice"))
        );
        // RAM that is not where the board says, over the device window, or too small.
        let mem = |m: &str| MINIMAL.replace("[{ base = 0x4000_0000, size = 0xc000_0000 }]", m);
        for (m, why) in [
            ("[]", "no [[memory]]"),
            (
                "[{ base = 0x8000_0000, size = 0x1000_0000 }]",
                "first memory region's base",
            ),
            (
                "[{ base = 0x4000_0000, size = 0x100_0000 }]",
                "leave the guest part",
            ),
            (
                "[{ base = 0x4000_0000, size = 0x4000_0000 }, { base = 0x4000_0000, size = 0x1000 }]",
                "sorted",
            ),
        ] {
            let got = Board::parse(&mem(m));
            assert!(
                matches!(&got, Err(BoardError::Invalid(w)) if w.contains(why)),
                "{m}: {got:?}"
            );
        }
        assert!(
            Board::parse(
                &MINIMAL.replace("device_size = 0x4000_0000", "device_size = 0x5000_0000")
            )
            .is_err_and(|e| e.to_string().contains("overlaps the device window"))
        );
        assert!(
            Board::parse(
                &MINIMAL.replace("load_address = 0x4008_0000", "load_address = 0x5000_0000")
            )
            .is_err_and(|e| e.to_string().contains("load_address"))
        );
        assert_eq!(with("").unwrap().max_ram(), 0xc000_0000);
        // Wrapping arithmetic is an error, not a small range.
        assert!(matches!(
            Board::parse(&MINIMAL.replace("device_base = 0\n", "device_base = 0x1000\n").replace("device_size = 0x4000_0000", "device_size = 0xffff_ffff_ffff_ffff")),
            Err(BoardError::Invalid(w)) if w.contains("overflows")
        ));
    }
}
