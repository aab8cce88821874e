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
    use gw_board::{ConsoleKind, Driver, EntropySource, GicKind, Mediator};
    // Every kind the schema knows has a driver here (console, interrupt controller, SMP,
    // reset, entropy, boot counter, IOMMU); a kind added to the schema first must be added here.
    let device_list = |owner: gw_board::Owner| -> String {
        b.instances()
            .filter(|(d, _, _)| d.owner == owner)
            .map(|(d, base, end)| format!("    ({:?}, {base:#x}, {:#x}),\n", d.name, end - base))
            .collect()
    };
    let devices = device_list(gw_board::Owner::Guest);
    let kept: String = [gw_board::Owner::Hypervisor, gw_board::Owner::Withheld]
        .into_iter()
        .map(device_list)
        .collect();
    let gicr = match b.mediated(Mediator::GicrControl) {
        Some((base, stride)) => format!("Some(({base:#x}, {stride:#x}))"),
        None => "None".into(),
    };
    let smmu = match b.iommu_registers() {
        Some((_, base, size, streams)) => format!("Some(({base:#x}, {size:#x}, {streams}))"),
        None => "None".into(),
    };
    let expects = |e: EntropySource| b.entropy.contains(&e);
    let opt = |v: Option<u64>| match v {
        Some(v) => format!("Some({v:#x})"),
        None => "None".into(),
    };
    // The schema checked that a spin table, a watchdog reset and an RNG200 source come with
    // what they need; these are the drivers' register bases.
    let spin_table = opt(b.spin_table);
    let pm_watchdog = opt(b.driven(Driver::BcmPmWatchdog));
    let rng200 = opt(b.driven(Driver::BcmRng200));
    let bcm2835_rng = opt(b.driven(Driver::Bcm2835Rng));
    let local_page = opt(b.mediated(Mediator::Bcm2836Local).map(|(base, _)| base));
    let legacy_irq = b.interrupt_controller.kind == GicKind::Bcm2836;
    let gicv3 = b.interrupt_controller.kind == GicKind::Gicv3;
    let mailbox = opt(b.mediated(Mediator::BcmMailbox).map(|(base, _)| base));
    let dma_engine = opt(b.mediated(Mediator::BcmDma).map(|(base, _)| base));
    let usb_host = opt(b.mediated(Mediator::Dwc2).map(|(base, _)| base));
    let pages: String = b
        .single_mediated_pages()
        .iter()
        .map(|p| format!("{p:#x}, "))
        .collect();
    let (dma_channels, dma_fifos) = match &b.dma {
        Some(d) => (
            d.channels,
            d.fifos
                .iter()
                .map(|f| format!("    {:#x}, // {}\n", f.bus, f.name))
                .collect::<String>(),
        ),
        None => (0, String::new()),
    };
    let secret_otp = b.secret.in_otp();
    let otp_rows = if b.secret == gw_board::SecretSource::BcmCustomerOtp {
        "Customer"
    } else {
        "PrivateKey"
    };
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    fs::write(
        out.join("board.rs"),
        format!(
            "/// Board name.\npub const NAME: &str = {:?};\n\
             /// Load address of the image.\npub const LOAD_ADDRESS: u64 = {:#x};\n\
             /// Base of RAM.\npub const RAM_BASE: u64 = {:#x};\n\
             /// Bytes of RAM the hypervisor keeps for itself, from RAM_BASE.\npub const HV_RESERVED: u64 = {:#x};\n\
             /// Size of the first memory region (from RAM_BASE): the most RAM the guest's part can reach.\npub const RAM_REGION_SIZE: u64 = {:#x};\n\
             /// The console UART's base.\npub const UART_BASE: u64 = {:#x};\n\
             /// Whether the console is the BCM mini-UART (else a PL011).\npub const CONSOLE_MINI_UART: bool = {};\n\
             /// Maximum CPUs.\npub const MAX_CPUS: usize = {};\n\
             /// Device window passed through to the guest.\npub const DEVICE_BASE: u64 = {:#x};\n\
             /// Size of the device window.\npub const DEVICE_SIZE: u64 = {:#x};\n\
             /// PL031 real-time clock base, if the board has one.\npub const RTC_PL031: Option<u64> = {:?};\n\
             /// The hypervisor's SMMUv3, if any: base, size of its registers, streams described.\npub const SMMU: Option<(u64, u64, u32)> = {smmu};\n\
             /// Redistributor control pages filtered by the hypervisor: base, stride (one per CPU).\npub const GICR_FILTER: Option<(u64, u64)> = {gicr};\n\
             /// Devices the guest is given: name, base, size (whole pages).\npub const GUEST_DEVICES: &[(&str, u64, u64)] = &[\n{devices}];\n\
             /// Devices kept from the guest (the hypervisor's own, and withheld ones): name, base, size.\npub const KEPT_DEVICES: &[(&str, u64, u64)] = &[\n{kept}];\n\
             /// Whether the board's loader puts rng-seed/kaslr-seed in the device tree.\npub const EXPECTS_DTB_SEEDS: bool = {};\n\
             /// Whether the board's CPUs have RNDR.\npub const EXPECTS_RNDR: bool = {};\n\
             /// Whether the board's SoC RNG is a source.\npub const EXPECTS_SOC_RNG: bool = {};\n\
             /// Whether the interrupt controller is a GICv3 (system-register CPU interface); else a GICv2.\npub const GICV3: bool = {gicv3};\n\
             /// The loader's spin table (CPU 0's release address; CPU k's 8*k above), when secondaries start from it rather than through PSCI firmware.\npub const SPIN_TABLE: Option<u64> = {spin_table};\n\
             /// The BCM PM watchdog the hypervisor resets and powers off through, in place of PSCI firmware.\npub const PM_WATCHDOG: Option<u64> = {pm_watchdog};\n\
             /// The BCM2711 RNG200 the hypervisor draws entropy from.\npub const RNG200: Option<u64> = {rng200};\n\
             /// The BCM2835/7 RNG the hypervisor draws entropy from.\npub const BCM2835_RNG: Option<u64> = {bcm2835_rng};\n\
             /// The BCM2836 ARM-local page the hypervisor mediates (interrupt routing and IPIs pass; the counter's set-up and the loader's mailboxes do not).\npub const LOCAL_PAGE: Option<u64> = {local_page};\n\
             /// Whether the mailbox page also holds the guest's interrupt controller (the BCM2835 armctrl at +0x200, passed through).\npub const MAILBOX_LEGACY_IRQ: bool = {legacy_irq};\n\
             /// The VideoCore mailbox page the hypervisor mediates (the guest's property messages pass through it).\npub const MAILBOX: Option<u64> = {mailbox};\n\
             /// The legacy DMA engine's register page the hypervisor mediates (control-block chains copied and checked).\npub const DMA_ENGINE: Option<u64> = {dma_engine};\n\
             /// The dwc2 USB host's first register page the hypervisor mediates (host channels' DMA addresses checked).\npub const USB_HOST: Option<u64> = {usb_host};\n\
             /// Every single mediated page (stage-2 holes): mailbox, DMA engine, USB host.\npub const MEDIATED_PAGES: &[u64] = &[{pages}];\n\
             /// The engine's channels the guest may use (0..DMA_CHANNELS, legacy layout).\npub const DMA_CHANNELS: usize = {dma_channels};\n\
             /// Peripheral FIFO registers (bus addresses) a control block may reach.\npub const DMA_FIFOS: &[u32] = &[\n{dma_fifos}];\n\
             /// Whether the device secret is the SoC's OTP private key (read through the mailbox) rather than the image's slot.\npub const SECRET_OTP: bool = {secret_otp};\n\
             /// Which OTP rows hold the secret.\npub const OTP_ROWS: crate::mailbox::OtpRows = crate::mailbox::OtpRows::{otp_rows};\n",
            b.name, b.load_address, b.ram_base, b.hv_reserved, b.max_ram(), b.console.base, b.console.kind == ConsoleKind::BcmMiniUart, b.max_cpus, b.device_base, b.device_size, b.boot_clock(),
            expects(EntropySource::DtbSeeds), expects(EntropySource::Rndr), expects(EntropySource::BcmRng200) || expects(EntropySource::Bcm2835Rng),
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
