//! The bootable hypervisor image (`cargo xtask image`).
#![no_std]
#![no_main]

use core::panic::PanicInfo;

use gatewarden_hv::{
    VERSION,
    arch::aarch64::{
        bcm, boot, code,
        cpu::{self, enter_guest},
        hypercall::{self, HvMonitor, MONITOR},
        mmu, power, smmu, trap,
    },
    board, boot_flow, bundle, dtb, layout, println,
};

/// The quote's boot counter (`boot_flow::boot_counter`), from the board's clock when it has one.
fn boot_counter() -> u64 {
    let seconds = board::RTC_PL031.map(gatewarden_hv::arch::aarch64::rtc::pl031_seconds);
    let counter = boot_flow::boot_counter(seconds);
    if seconds.is_some_and(|s| s > 0) {
        println!("boot counter {counter} (PL031 clock seconds)");
    } else {
        println!(
            "WARNING: no running clock on this board: boot counter 0, none (the controller takes a quote counter that starts over as a reboot)"
        );
    }
    counter
}

/// Per-image device secret, written into the image by `cargo xtask image` after the marker.
/// All zero means an unprovisioned development image (announced on the console).
#[unsafe(no_mangle)]
#[used]
static GW_DEVICE_SECRET: [u8; 40] =
    *b"GWSECRT1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// The controller's policy/command public key, written by `cargo xtask image` after the marker
/// (measured with the image: it decides which policy the gateway accepts). All zero: none,
/// and AGENT_VERIFY / POLICY_SET answer NOT_PROVISIONED.
#[unsafe(no_mangle)]
#[used]
static GW_CONTROLLER_KEY: [u8; 40] =
    *b"GWCTRLK1\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

unsafe extern "C" {
    static __measured_end: u8;
}

/// The board's guest devices as (base, size).
fn guest_devices() -> [(u64, u64); board::GUEST_DEVICES.len()] {
    core::array::from_fn(|i| (board::GUEST_DEVICES[i].1, board::GUEST_DEVICES[i].2))
}

fn fail(what: &str) -> ! {
    panic!("cannot boot the guest: {what}");
}

/// The measured part of the loaded image: code and read-only data (secret included).
fn image_bytes() -> &'static [u8] {
    // SAFETY: [__image_start, __measured_end) is the loaded code and read-only data,
    // identity-mapped and never written.
    unsafe {
        let start = core::ptr::addr_of!(boot::__image_start);
        let end = core::ptr::addr_of!(__measured_end);
        core::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

#[unsafe(no_mangle)]
extern "C" fn hv_primary_main(dtb_pa: u64) -> ! {
    mmu::build_el2_map();
    mmu::enable_el2_mmu();
    trap::install();
    println!("{VERSION} on {} at EL2, DTB at {dtb_pa:#x}", board::NAME);

    // SAFETY: the loader put a flattened device tree at `dtb_pa` (arm64 boot protocol); its
    // header's totalsize bounds the blob, which lies in RAM the EL2 map covers.
    let blob = unsafe {
        let size = u32::from_be(core::ptr::read_volatile((dtb_pa + 4) as *const u32)) as usize;
        if size > 2 << 20 {
            fail("device tree larger than 2 MiB");
        }
        core::slice::from_raw_parts_mut(dtb_pa as *mut u8, size)
    };
    let info = dtb::inspect(blob).unwrap_or_else(|e| {
        fail(match e {
            dtb::DtbError::Invalid => "invalid device tree",
            dtb::DtbError::NoMemory => "no /memory node",
            dtb::DtbError::NoInitrd => "no initrd in /chosen: pass the guest bundle as the initrd",
            dtb::DtbError::BadProperty => "malformed device tree property",
        })
    });
    let guest = layout::guest_ram(
        info.memory,
        board::RAM_BASE,
        board::HV_RESERVED,
        gatewarden_hv::plan::BOARD.max_ram(),
    )
    .unwrap_or_else(|e| fail(e.message()));
    let guest_end = guest.0 + guest.1;
    mmu::extend_el2_map(((guest_end - board::RAM_BASE).div_ceil(1 << 30)) as usize);
    println!(
        "RAM {:#x}+{:#x}; guest gets {:#x}..{guest_end:#x}",
        info.memory.0, info.memory.1, guest.0
    );

    // The bundle must lie in guest RAM (the loader placed it there); `layout::plan` checks
    // that and every placement rule without overflow before anything is read or copied.
    let (b_start, b_end) = info.initrd;
    layout::bundle_in_guest(guest, info.initrd).unwrap_or_else(|e| fail(e.message()));
    // SAFETY: [b_start, b_end) is inside guest RAM (checked just above), identity-mapped at EL2.
    let bundle_bytes =
        unsafe { core::slice::from_raw_parts(b_start as *const u8, (b_end - b_start) as usize) };
    let parts = bundle::parse(bundle_bytes)
        .unwrap_or_else(|_| fail("initrd is not a Gatewarden guest bundle"));
    let kernel = &bundle_bytes[parts.kernel.clone()];
    let plan = layout::plan(guest, info.initrd, &parts, kernel, blob.len())
        .unwrap_or_else(|e| fail(e.message()));
    let (load, initrd, dtb_dst) = (plan.load, plan.initrd, plan.dtb);

    // Measure before anything of the guest runs.
    let digest_hv = vtpm::sha256(image_bytes());
    let digest_kernel = vtpm::sha256(kernel);
    code::set_kernel(kernel);
    let digest_initrd = vtpm::sha256(&bundle_bytes[parts.initrd.clone()]);
    // SAFETY: `load..plan.kernel_end` (which holds the kernel's bytes) is guest RAM below the
    // bundle (layout::plan).
    unsafe { core::ptr::copy_nonoverlapping(kernel.as_ptr(), load as *mut u8, kernel.len()) };
    cpu::clean_for_guest(load, kernel.len() as u64);
    dtb::edit_for_guest(blob, guest, initrd)
        .unwrap_or_else(|_| fail("cannot edit the device tree"));
    let removed = dtb::prune_for_guest(blob, &guest_devices()).unwrap_or_else(|_| {
        fail("cannot take the devices the guest is not given out of the device tree")
    });
    println!("device tree: {removed} device nodes the guest is not given removed");

    // Per-boot keys from the device secret and every per-boot source the board has: the
    // loader's seeds (taken out of the tree, which then measures the same on every boot), the
    // CPU's RNDR where present, the SoC's generator, and the counter. The guest gets seeds
    // derived for it instead.
    let mut seeds =
        dtb::take_seeds(blob).unwrap_or_else(|_| fail("cannot read the device tree's seeds"));
    dtb::zero_padding(blob).unwrap_or_else(|_| fail("malformed device tree structure block"));
    let digest_dtb = vtpm::sha256(blob);
    let digest_cmdline = vtpm::sha256(dtb::bootargs(blob).unwrap_or(&[]));
    let soc_rng = match bcm::soc_rng(cpu::counter, cpu::counter_frequency()) {
        Ok(r) => Some(r),
        Err(bcm::RngAbsent::NotOnBoard) => None,
        Err(why) => {
            println!("the SoC's RNG gives nothing: {why:?}");
            None
        }
    };
    let (rndr, counter) = (cpu::rndr(), cpu::counter().to_le_bytes());
    let inputs = boot_flow::EntropyInputs {
        rng_seed: seeds.value(0),
        kaslr_seed: seeds.value(1),
        rndr: rndr.as_ref().map_or(&[][..], |r| &r[..]),
        soc_rng: soc_rng.as_ref().map_or(&[][..], |r| &r[..]),
        counter: &counter,
    };
    let expected = boot_flow::ExpectedEntropy {
        dtb_seeds: board::EXPECTS_DTB_SEEDS,
        rndr: board::EXPECTS_RNDR,
        soc_rng: board::EXPECTS_SOC_RNG,
    };
    let entropy = boot_flow::boot_entropy(&inputs, expected, |w| println!("WARNING: {w}"));

    let (keys, unprovisioned) = if board::SECRET_OTP {
        // The SD card is the guest's: the secret is the SoC's OTP, read before the guest runs
        // (the mailbox is mediated from then on, and never forwards these tags).
        let (secret, origin) = boot_flow::otp_secret(
            || bcm::mbox::otp_key().map_err(|_| boot_flow::OtpFailed),
            &entropy,
            "cntpct",
            |k| bcm::mbox::otp_program(k).map_err(|_| boot_flow::OtpFailed),
        );
        match origin {
            boot_flow::SecretOrigin::Otp => println!("device secret: read from the SoC's OTP"),
            boot_flow::SecretOrigin::Provisioned => println!(
                "device secret: the OTP was blank; generated from this boot's entropy and programmed into it (first boot)"
            ),
            boot_flow::SecretOrigin::Unprovisioned(why) => println!("WARNING: {why}"),
        }
        boot_flow::keys_from(&secret)
    } else {
        // Volatile: the bytes are patched into the image after linking, so the compiler must
        // not fold the all-zero initialiser.
        // SAFETY: reading a static of plain bytes.
        let mut stored: [u8; 40] =
            unsafe { core::ptr::read_volatile(core::ptr::addr_of!(GW_DEVICE_SECRET)) };
        boot_flow::key_hierarchy(&mut stored)
    };
    if unprovisioned {
        println!(
            "WARNING: unprovisioned (all-zero device secret): its keys are public; provision it (docs/flashing.md, cargo xtask image)"
        );
    }
    // Public: what the vendor endorses after a board's first boot (`cargo xtask endorse`).
    println!(
        "device identity: attestation key {} agent key {}",
        boot_flow::Hex(&keys.attestation_key().verifying_key().to_bytes()),
        boot_flow::Hex(&keys.control_key().verifying_key().to_bytes())
    );

    let boot_keys = keys.boot_keys(&entropy);
    // Once the keys are derived the copies of the loader's seeds are wiped.
    seeds.wipe();
    for (place, name) in seeds.places.iter().zip(dtb::SEED_PROPERTIES) {
        if let Some((off, len)) = *place {
            boot_keys.guest_seed(name, &mut blob[off..off + len]);
        }
    }
    // SAFETY: the DTB destination is 2 MiB of guest RAM above the bundle and holds the blob
    // (layout::plan).
    unsafe { core::ptr::copy_nonoverlapping(blob.as_ptr(), dtb_dst as *mut u8, blob.len()) };
    cpu::clean_for_guest(dtb_dst, blob.len() as u64);

    // SAFETY: reading a static of plain bytes (patched after linking, as above).
    let stored: [u8; 40] =
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!(GW_CONTROLLER_KEY)) };
    let controller_key = boot_flow::controller_key(&stored).unwrap_or_else(|e| fail(e.message()));
    let measured = boot_flow::Measured {
        hypervisor: digest_hv,
        kernel: digest_kernel,
        initramfs: digest_initrd,
        dtb: digest_dtb,
        cmdline: digest_cmdline,
    };
    let monitor: HvMonitor = boot_flow::start_monitor(
        &keys,
        "aarch64",
        boot_counter(),
        controller_key,
        boot_keys.hop_master(),
        &measured,
    )
    .unwrap_or_else(|e| fail(e.message()));
    MONITOR.call_once(|| spin::Mutex::new(monitor));
    hypercall::set_guest(guest, digest_kernel);
    println!(
        "measured hypervisor, kernel, initramfs, device tree and command line into PCRs 1, 3-6"
    );

    let vttbr = mmu::build_stage2(guest);
    power::set_guest_vttbr(vttbr);
    match board::SMMU {
        Some((base, _, streams)) => smmu::enable(base, streams, vttbr, mmu::VTCR_VALUE),
        None => println!(
            "WARNING: no SMMU on this board: guest devices' DMA is not confined by the hypervisor"
        ),
    }
    cpu::init_el2_for_guest(vttbr, mmu::VTCR_VALUE);
    cpu::tlbi_guest();
    println!("entering the guest kernel at {load:#x} (EL1), device tree at {dtb_dst:#x}");
    // The monitor holds what it needs: this frame's key hierarchy and boot keys are wiped (their
    // Drop zeroizes), since this function never returns and its frame would keep them.
    drop(boot_keys);
    drop(keys);
    enter_guest(load, dtb_dst, boot::cpu_stack(0).1)
}

#[unsafe(no_mangle)]
extern "C" fn hv_secondary_main(idx: u64) -> ! {
    mmu::enable_el2_mmu();
    trap::install();
    // Enters the guest at the entry the guest's CPU_ON named, on this CPU's own stack.
    power::run_secondary(idx as usize)
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    println!("PANIC on CPU {}: {info}", cpu::cpu_id());
    println!("stopping all CPUs");
    // Power-off (PSCI SYSTEM_OFF, or the board's watchdog) stops every CPU; never return into
    // the guest.
    power::system_off()
}
