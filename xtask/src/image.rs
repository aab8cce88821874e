//! `cargo xtask image` and `cargo xtask run`: the bootable image for a board, and QEMU.
//!
//! Output in `target/gatewarden/<board>/`: `hv.bin` (the hypervisor, provisioned with a fresh
//! per-image device secret), `bundle.bin` (guest kernel + initramfs, passed as the initrd),
//! `initramfs.cpio` and `manifest.json` (SHA-256 of every measured component and the image's
//! attestation public key).

use std::{
    io::Cursor,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use serde_json::json;

use crate::{cargo, fetch, run, setup};

/// Paths of a built image.
pub struct Image {
    /// QEMU arguments (all but `-smp`), as also written to `qemu.args`.
    pub qemu_args: Vec<String>,
    /// CPUs the board's QEMU machine always has (`-smp` must say so), if it fixes them.
    pub fixed_cpus: Option<u64>,
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /lib/modules/order); do insmod /lib/modules/$m || echo "gatewarden-guest: cannot load $m"; done
echo "gatewarden-guest: up, $(grep -c ^processor /proc/cpuinfo) CPUs online"
# A board without a clock (the Raspberry Pis) starts in 1970, when no certificate is valid yet:
# as systemd does with its build time, the clock is advanced to no earlier than this release
# (2026-12-01); a later time from the network corrects it.
[ "$(date +%s)" -lt 1764547200 ] && date -s @1764547200 >/dev/null
# Locked pages stay where they are: the hypervisor holds a caller's code pages read-only and
# measures them once (docs/abi.md, "Program identity"); compaction would move them.
echo 0 > /proc/sys/vm/compact_unevictable_allowed
# Network ports by MAC address (probe order need not follow the command line):
# the uplink 52:54:00:12:34:56, the data path's LAN 52:54:00:77:00:01 and WAN 52:54:00:77:00:02.
# Matched without the first octet: QEMU's usb-net (the Raspberry Pis' uplink) tells the guest
# its MAC with 0x40 in place of 0x52.
port() { for d in /sys/class/net/*; do [ "$(cut -c3- $d/address)" = "${1#??}" ] && echo ${d##*/}; done; }
# A USB uplink (the Raspberry Pis' usb-net) appears a moment after its driver loads.
for i in $(seq 1 50); do UPLINK=$(port 52:54:00:12:34:56); [ -n "$UPLINK" ] && break; sleep 0.2; done
LAN=$(port 52:54:00:77:00:01)
WAN=$(port 52:54:00:77:00:02)
# USB ports (the Raspberry Pis' usb-net LAN and WAN) enumerate one after another behind a hub:
# with a USB uplink, give the rest up to 3 s once it is there.
if [ -n "$UPLINK" ] && readlink -f /sys/class/net/$UPLINK/device | grep -q /usb; then
    for i in $(seq 1 15); do
        LAN=$(port 52:54:00:77:00:01); WAN=$(port 52:54:00:77:00:02)
        [ -n "$LAN" ] && [ -n "$WAN" ] && break
        sleep 0.2
    done
fi
# A board that boots from an SD card (the Raspberry Pis): its boot partition, read-only, holds
# the vendor's endorsement of this board once it is provisioned (docs/flashing.md).
# The card's number depends on the SD hosts' probe order: the first partition 1 that mounts.
if [ -d /sys/class/mmc_host ] && grep -q vfat /proc/filesystems; then
    for i in $(seq 1 25); do ls /dev/mmcblk*p1 >/dev/null 2>&1 && break; sleep 0.2; done
    mkdir -p /boot/firmware
    for p in /dev/mmcblk*p1; do mount -t vfat -o ro $p /boot/firmware 2>/dev/null && break; done
    if [ -d /boot/firmware/gatewarden ] \
        && [ -e /boot/firmware/gatewarden/endorsement.json ] \
        && [ ! -e /etc/gatewarden/endorsement.json ]; then
        cp /boot/firmware/gatewarden/endorsement.json /etc/gatewarden/endorsement.json
        echo "gatewarden-guest: endorsement from the boot partition"
    fi
fi
if [ -e /etc/gatewarden/agent.conf ] && [ -n "$UPLINK" ]; then
    . /etc/gatewarden/agent.conf
    # QEMU user networking; the controller is reached through the host's forward.
    ip link set lo up
    ip link set $UPLINK up
    ip addr add 10.0.2.15/24 dev $UPLINK
    ip route add default via 10.0.2.2
    # A USB link takes a moment to pass traffic; the agent's reconnect backoff would otherwise
    # grow while it does.
    for i in $(seq 1 20); do ping -c 1 -W 1 10.0.2.2 >/dev/null 2>&1 && break; done
    mkdir -p /var/lib/gatewarden-agent /run/gatewarden
    gw-agent --controller "$GW_CONTROLLER" --server-name "$GW_SERVER_NAME" --transport hypervisor >/tmp/gw-agent.log 2>&1 &
    echo "gatewarden-guest: agent started for controller $GW_CONTROLLER"
fi
# The data path: with a LAN and a WAN port, the vSwitch bridges them through the per-device
# middlebox chains (docs/datapath.md). The ports carry no address of their own.
if [ -n "$LAN" ] && [ -n "$WAN" ]; then
    ip link set $LAN up
    ip link set $WAN up
    mkdir -p /run/gatewarden/datapath
    gw-vswitch --lan $LAN --wan $WAN --transport hypervisor >/tmp/gw-vswitch.log 2>&1 &
    echo "gatewarden-guest: vSwitch started (LAN $LAN, WAN $WAN)"
fi
exec /bin/sh
"#;

/// How an image is provisioned for its fleet.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Controller state directory (CA, command key); created with `gw-controller init` if
    /// missing.
    pub controller_dir: PathBuf,
    /// `IP:PORT` the gateway agent dials from inside the guest.
    pub controller_addr: String,
    /// Name in the controller's certificate.
    pub server_name: String,
    /// Gateway id (default: board name and the start of the attestation key).
    pub gateway_id: Option<String>,
}

impl ImageOptions {
    /// Defaults for `board`: the controller in `target/gatewarden/<board>/controller`,
    /// reached at 10.0.2.100:7443 (QEMU's guest forward).
    pub fn for_board(root: &Path, board: &str) -> Self {
        Self {
            controller_dir: crate::provision::default_controller_dir(root, board),
            controller_addr: "10.0.2.100:7443".into(),
            server_name: "localhost".into(),
            gateway_id: None,
        }
    }
}

fn llvm_objcopy() -> Result<PathBuf> {
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()?;
    let sysroot = String::from_utf8(sysroot.stdout)?.trim().to_owned();
    let host = Command::new("rustc").args(["-vV"]).output()?;
    let host = String::from_utf8(host.stdout)?
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .context("rustc -vV has no host line")?;
    let p = Path::new(&sysroot)
        .join("lib/rustlib")
        .join(host)
        .join("bin/llvm-objcopy");
    if !p.exists() {
        bail!(
            "{} missing: the llvm-tools component comes from rust-toolchain.toml (rustup toolchain install)",
            p.display()
        );
    }
    Ok(p)
}

/// The guest kernel modules in `guest-agents/kmod`: `gwhvc.ko` (hypercalls by HVC from EL1),
/// `gwdma.ko` (DMA attacks from the guest kernel), `gwmbox.ko` (the Pis' mailbox asked for
/// the OTP secret), `gwbcmdma.ko` (the Pis' legacy DMA engine aimed at the hypervisor) and
/// `gwusbdma.ko` (a dwc2 USB transfer aimed at it), for the isolation tests.
pub const KMODS: [&str; 5] = ["gwhvc", "gwdma", "gwmbox", "gwbcmdma", "gwusbdma"];

/// Build the guest kernel modules ([`KMODS`]) against Debian's headers for the guest kernel,
/// with debug info stripped. Kbuild writes its output next to the sources, so they are copied to
/// `target/gatewarden/kmod/` first. Returns each module's file name and stripped path.
pub fn build_kmod(root: &Path, guest: &fetch::GuestFiles) -> Result<Vec<(String, PathBuf)>> {
    let headers = guest
        .headers
        .as_ref()
        .context("no kernel headers were fetched for this architecture")?;
    setup::ensure(&[setup::CROSS_CC, setup::MAKE])?;
    let src = root.join("guest-agents/kmod");
    let out = root.join("target/gatewarden/kmod");
    std::fs::create_dir_all(&out)?;
    let sources = KMODS.iter().map(|m| format!("{m}.c"));
    for f in std::iter::once("Kbuild".to_string()).chain(sources) {
        let (from, to) = (src.join(&f), out.join(&f));
        let data = std::fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        if std::fs::read(&to).ok().as_deref() != Some(&data[..]) {
            std::fs::write(&to, data)?;
        }
    }
    let mut make = Command::new("make");
    make.arg("-s")
        .arg("-C")
        .arg(headers)
        .arg(format!("M={}", out.display()))
        .args(["ARCH=arm64", "CROSS_COMPILE=aarch64-linux-gnu-", "modules"]);
    run(
        &format!(
            "guest kernel modules {} (Debian's {} headers)",
            KMODS.map(|m| format!("{m}.ko")).join(", "),
            guest.release
        ),
        make,
    )?;
    let mut built = Vec::new();
    for m in KMODS {
        let stripped = out.join(format!("{m}.stripped.ko"));
        let mut strip = Command::new("aarch64-linux-gnu-strip");
        strip
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(out.join(format!("{m}.ko")));
        run(&format!("strip {m}.ko"), strip)?;
        built.push((format!("{m}.ko"), stripped));
    }
    Ok(built)
}

/// A newc initramfs with busybox (and the 32-bit one as /bin/busybox32), the guest programs
/// (into /bin), the kernel modules loaded at boot (in order), modules loaded on demand (into
/// /lib/modules/extra) and /init.
pub fn initramfs(
    busybox: &Path,
    busybox32: Option<&Path>,
    programs: &[PathBuf],
    modules: &[PathBuf],
    extra_modules: &[(&str, PathBuf)],
    etc: &[(&str, Vec<u8>)],
) -> Result<Vec<u8>> {
    let busybox =
        std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let dir = |n: &str| {
        (
            cpio::newc::Builder::new(n).mode(0o040755).nlink(2),
            Cursor::new(Vec::new()),
        )
    };
    let file = |n: &str, mode: u32, data: Vec<u8>| {
        (
            cpio::newc::Builder::new(n).mode(0o100000 | mode).nlink(1),
            Cursor::new(data),
        )
    };
    let mut entries = vec![
        dir("bin"),
        dir("dev"),
        dir("proc"),
        dir("sys"),
        dir("tmp"),
        dir("etc"),
        file("init", 0o755, INIT.as_bytes().to_vec()),
        file("bin/busybox", 0o755, busybox),
    ];
    if let Some(b) = busybox32 {
        let data = std::fs::read(b).with_context(|| format!("reading {}", b.display()))?;
        entries.push(file("bin/busybox32", 0o755, data));
    }
    entries.push(dir("etc/gatewarden"));
    for (name, data) in etc {
        entries.push(file(&format!("etc/gatewarden/{name}"), 0o644, data.clone()));
    }
    entries.push(dir("lib"));
    entries.push(dir("lib/modules"));
    let mut order = String::new();
    for m in modules {
        let name = m
            .file_name()
            .and_then(|n| n.to_str())
            .context("module without a file name")?;
        let data = std::fs::read(m).with_context(|| format!("reading {}", m.display()))?;
        entries.push(file(&format!("lib/modules/{name}"), 0o644, data));
        order.push_str(name);
        order.push('\n');
    }
    entries.push(file("lib/modules/order", 0o644, order.into_bytes()));
    entries.push(dir("lib/modules/extra"));
    for (name, path) in extra_modules {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        entries.push(file(&format!("lib/modules/extra/{name}"), 0o644, data));
    }
    for p in programs {
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .context("program without a file name")?;
        let data = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        entries.push(file(&format!("bin/{name}"), 0o755, data));
    }
    let entries = entries
        .into_iter()
        .enumerate()
        .map(|(i, (b, c))| (b.ino(i as u32 + 1), c));
    Ok(cpio::write_cpio(entries, Vec::new())?)
}

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `boards/<board>/board.toml`, parsed and checked (`gw-board`).
pub fn board_data(root: &Path, board: &str) -> Result<gw_board::Board> {
    gw_board::Board::load(root, board).with_context(|| {
        format!(
            "board {board}: {}",
            gw_board::Board::path(root, board).display()
        )
    })
}

/// The board's `[qemu]` table (an error for a board QEMU does not emulate).
fn board_qemu_data(b: &gw_board::Board) -> Result<&gw_board::Qemu> {
    b.qemu
        .as_ref()
        .with_context(|| format!("boards/{}/board.toml has no [qemu] table", b.name))
}

/// The QEMU system emulator a board runs under (its data's `[qemu] binary`).
pub fn board_qemu(root: &Path, board: &str) -> Result<setup::QemuSystem> {
    let b = board_data(root, board)?;
    setup::QemuSystem::for_binary(&board_qemu_data(&b)?.binary)
}

/// Every board under `boards/` with the bare-metal target its hypervisor builds for (from the
/// board's `arch`), sorted by name.
pub fn bare_metal_boards(root: &Path) -> Result<Vec<(String, &'static str)>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root.join("boards")).context("reading boards/")? {
        let e = e?;
        if !e.path().join("board.toml").is_file() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        let target = board_data(root, &name)?.arch.bare_metal_target();
        out.push((name, target));
    }
    out.sort();
    Ok(out)
}

/// The aarch64 boards QEMU emulates (a `[qemu]` table), the ones the tests boot: every other
/// board first, `qemu-virt` last (its image is the default the other tasks leave behind).
pub fn qemu_boards(root: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (name, target) in bare_metal_boards(root)? {
        let b = board_data(root, &name)?;
        if b.qemu.is_some() && target.starts_with("aarch64") {
            out.push(name);
        }
    }
    out.sort_by_key(|n| n == "qemu-virt");
    Ok(out)
}

/// What to type first so that the keyboard reaches the port `console_input` names: QEMU's
/// multiplexer starts on the last port that joined it and Ctrl-A c moves to the next.
pub fn console_keys(q: &gw_board::Qemu) -> String {
    let ports: Vec<usize> = (0..q.serial.len())
        .filter(|&i| q.serial[i] == "console")
        .collect();
    if ports.len() < 2 {
        return String::new();
    }
    let want = ports
        .iter()
        .position(|&i| i == q.console_input)
        .unwrap_or(0);
    let presses = (want + ports.len() - (ports.len() - 1)) % ports.len();
    "\u{1}c".repeat(presses)
}

/// QEMU arguments for the image (all but `-smp`), from the board's `[qemu]` table.
fn qemu_args(board: &gw_board::Board, dir: &Path) -> Result<Vec<String>> {
    let q = board_qemu_data(board)?;
    let path = |f: &str| dir.join(f).display().to_string();
    let mut args = vec![
        "-M".into(),
        q.machine.clone(),
        "-cpu".into(),
        q.cpu.clone(),
        "-m".into(),
        q.memory.clone(),
    ];
    let shared = q.serial.iter().filter(|s| *s == "console").count();
    if q.serial.is_empty() {
        args.push("-nographic".into());
    } else {
        args.extend(["-display", "none"].map(String::from));
        if shared > 1 {
            // One terminal for several UARTs (QEMU's multiplexer): Ctrl-A c moves the keyboard
            // between them, Ctrl-A x quits.
            args.extend(
                [
                    "-chardev",
                    "stdio,id=console,mux=on,signal=off",
                    "-monitor",
                    "none",
                ]
                .map(String::from),
            );
        }
        for s in &q.serial {
            args.push("-serial".into());
            args.push(match (s.as_str(), shared) {
                ("console", 1) => "mon:stdio".into(),
                ("console", _) => "chardev:console".into(),
                _ => s.clone(),
            });
        }
    }
    args.extend(["-nic", "none", "-no-reboot"].map(String::from));
    args.extend([
        "-kernel".into(),
        path("hv.bin"),
        "-initrd".into(),
        path("bundle.bin"),
    ]);
    if board.dtb.is_some() {
        // The board's tree as QEMU's model of the board needs it (`board_dtb`).
        args.extend(["-dtb".into(), path("qemu.dtb")]);
    }
    args.extend(["-append".into(), q.append.clone()]);
    args.extend(q.devices.iter().map(|a| {
        a.replace("{disk}", &path(&disk_file(board)))
            .replace("{pci}", &q.pci_options)
    }));
    Ok(args)
}

/// The gateway id an image or an endorsement gets by default: the board and the start of the
/// attestation key.
pub fn default_gateway_id(board: &str, ak: &ed25519_dalek::VerifyingKey) -> String {
    format!("{board}-{}", &hex(&ak.to_bytes())[..8])
}

/// The vendor's endorsement of a gateway whose public keys are `ak` (attestation) and `agent`
/// (control channel), as the agent reads it (`/etc/gatewarden/endorsement.json`).
pub fn endorse(
    root: &Path,
    board: &str,
    ak: &str,
    agent: &str,
    gateway_id: Option<String>,
) -> Result<Vec<u8>> {
    let key = |what: &str, h: &str| -> Result<ed25519_dalek::VerifyingKey> {
        let b = gw_proto::hex32(h.trim())
            .with_context(|| format!("the {what} key must be 64 hex digits (gwctl version)"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&b)
            .with_context(|| format!("the {what} key is not an ed25519 public key"))
    };
    let (ak, agent) = (key("attestation", ak)?, key("agent", agent)?);
    let id = gateway_id.unwrap_or_else(|| default_gateway_id(board, &ak));
    gw_proto::endorse::check_id(&id)?;
    let vendor = crate::provision::vendor_key(root)?;
    let e = gw_proto::endorse::Endorsement::sign(&vendor, &id, &ak, &agent)?;
    Ok(serde_json::to_vec_pretty(&e)?)
}

/// Build the image for `board`.
pub fn image(root: &Path, board: &str, opts: &ImageOptions) -> Result<Image> {
    let board_t = board_data(root, board)?;
    if board_t.arch != gw_board::Arch::Aarch64 {
        bail!(
            "board {board}: only aarch64 boards build a bootable image so far ({:?} is planned)",
            board_t.arch
        );
    }
    let guest = fetch::fetch_guest(root, fetch::Arch::Arm64, board_t.kernel.flavour)?;
    let triple = board_t.target.triple.as_str();
    let mut c = cargo();
    c.args([
        "build",
        "--release",
        "-p",
        "gatewarden-hv",
        "--features",
        "bare-metal",
        "--target",
        triple,
    ]);
    c.env("GW_BOARD", board);
    let features = &board_t.target.features;
    if !features.is_empty() {
        c.env(
            "RUSTFLAGS",
            format!("-C target-feature={}", features.join(",")),
        );
    }
    run(&format!("hypervisor ({triple})"), c)?;
    crate::guest_target("aarch64-unknown-linux-musl")?;

    let dir = root.join("target/gatewarden").join(board);
    std::fs::create_dir_all(&dir)?;
    board_dtb(&board_t, &guest, &dir)?;
    let elf = root
        .join("target")
        .join(triple)
        .join("release/gatewarden-hv");
    // The ELF beside the image (symbols and sections for the tests: the instruction scan).
    std::fs::copy(&elf, dir.join("hv.elf")).context("copying the hypervisor's ELF")?;
    let hv = dir.join("hv.bin");
    let status = Command::new(llvm_objcopy()?)
        .args(["-O", "binary"])
        .arg(&elf)
        .arg(&hv)
        .status()?;
    if !status.success() {
        bail!("llvm-objcopy failed");
    }
    // Provision a fresh per-image device secret after the marker, unless the board keeps its
    // secret in the SoC (the Pis' OTP, made on the board's first boot): then the image's slot
    // stays zero, and the hypervisor never reads it.
    let mut bin = std::fs::read(&hv)?;
    let at = bin
        .windows(8)
        .position(|w| w == b"GWSECRT1")
        .context("device-secret marker not found in hv.bin")?;
    let secret_in_image = board_t.secret == gw_board::SecretSource::Image;
    let mut secret = [0u8; 32];
    if secret_in_image {
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("random device secret: {e}"))?;
    }
    bin[at + 8..at + 40].copy_from_slice(&secret);
    std::fs::write(&hv, &bin)?;
    // The image header's res2 field says how many bytes the hypervisor measures of itself.
    let measured = u64::from_le_bytes(bin[32..40].try_into()?) as usize;
    if measured == 0 || measured > bin.len() || measured <= at + 40 {
        bail!(
            "hv.bin header gives a measured size of {measured} bytes, which does not cover the image's code and secret"
        );
    }
    // The controller this gateway obeys: its command key goes into the (measured) image.
    let controller = crate::provision::controller(root, &opts.controller_dir)?;
    let at = bin
        .windows(8)
        .position(|w| w == b"GWCTRLK1")
        .context("controller-key marker not found in hv.bin")?;
    if measured <= at + 40 {
        bail!("the controller key at {at:#x} is outside the measured part of hv.bin");
    }
    bin[at + 8..at + 40].copy_from_slice(&controller.command_key);
    std::fs::write(&hv, &bin)?;
    let vendor = crate::provision::vendor_key(root)?;
    // The gateway's identity is known here only when the image carries its secret; a board
    // that makes its own is endorsed after its first boot (`cargo xtask endorse`).
    let identity = if secret_in_image {
        let keys = vtpm::KeyHierarchy::derive(&vtpm::DeviceSecret::new(secret));
        let (ak, agent) = (
            keys.attestation_key().verifying_key(),
            keys.control_key().verifying_key(),
        );
        let gateway_id = opts
            .gateway_id
            .clone()
            .unwrap_or_else(|| default_gateway_id(board, &ak));
        let endorsement = gw_proto::endorse::Endorsement::sign(&vendor, &gateway_id, &ak, &agent)?;
        Some((
            gateway_id,
            hex(&ak.to_bytes()),
            hex(&agent.to_bytes()),
            serde_json::to_vec_pretty(&endorsement)?,
        ))
    } else {
        eprintln!(
            "==> board {board} makes its device secret on its first boot (OTP): the image carries no secret and no endorsement; endorse each board with `cargo xtask endorse` (docs/flashing.md)"
        );
        None
    };
    let agent_conf = format!(
        "GW_CONTROLLER={}\nGW_SERVER_NAME={}\n",
        opts.controller_addr, opts.server_name
    );

    let kernel = std::fs::read(&guest.kernel)?;
    let programs: Vec<PathBuf> = crate::GUEST_BINARIES
        .iter()
        .map(|b| {
            root.join("target/aarch64-unknown-linux-musl/release")
                .join(b)
        })
        .collect();
    let modules_dir = guest.kernel_root.join("lib/modules").join(&guest.release);
    let modules: Vec<PathBuf> = board_t
        .kernel
        .modules
        .iter()
        .map(|m| modules_dir.join(m))
        .collect();
    let kmods = build_kmod(root, &guest)?;
    let extra: Vec<(&str, PathBuf)> = kmods.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
    let initrd = initramfs(
        &guest.busybox,
        guest.busybox32.as_deref(),
        &programs,
        &modules,
        &extra,
        &identity
            .as_ref()
            .map(|(_, _, _, e)| ("endorsement.json", e.clone()))
            .into_iter()
            .chain([
                ("controller-ca.pem", controller.ca_pem.clone()),
                ("agent.conf", agent_conf.into_bytes()),
            ])
            .collect::<Vec<_>>(),
    )?;
    // A small disk for the guest's block device, with a label the tests read back (a board
    // with an SD card image boots that instead).
    if board_t.sdcard.is_none() {
        let mut disk = vec![0u8; 1 << 20];
        disk[..20].copy_from_slice(b"GATEWARDEN-TEST-DISK");
        std::fs::write(dir.join("disk.img"), &disk)?;
    }
    let qemu_args = qemu_args(&board_t, &dir)?;
    std::fs::write(dir.join("qemu.args"), qemu_args.join("\n") + "\n")?;
    std::fs::write(
        dir.join("qemu.keys"),
        console_keys(board_qemu_data(&board_t)?),
    )?;
    std::fs::write(dir.join("initramfs.cpio"), &initrd)?;
    let bundle = gatewarden_hv::bundle::build(&kernel, &initrd);
    let bundle_path = dir.join("bundle.bin");
    std::fs::write(&bundle_path, &bundle)?;
    if let Some(sd) = &board_t.sdcard {
        sd_image(root, board, &board_t, sd, &dir, &bin, &bundle)?;
    }
    let (d_hv, d_kernel, d_initrd) = (
        vtpm::sha256(&bin[..measured]),
        vtpm::sha256(&kernel),
        vtpm::sha256(&initrd),
    );
    // Signed reference values for the controller (what the hypervisor measures, as components).
    let agent_elf = std::fs::read(root.join("target/aarch64-unknown-linux-musl/release/gw-agent"))?;
    let append = board_qemu_data(&board_t)?.append.as_str();
    let mut reference = gw_proto::manifest::ReferenceManifest::new(
        &format!("gatewarden-{board}"),
        &format!("{}+{}", env!("CARGO_PKG_VERSION"), hex(&d_hv[..4])),
        board,
    );
    reference
        .allow("hypervisor", &d_hv)
        .allow("kernel", &d_kernel)
        .allow("initramfs", &d_initrd)
        .allow("cmdline", &vtpm::sha256(append.as_bytes()))
        .allow("agent", &crate::provision::el0_program_id(&agent_elf)?);
    if let Some(sd) = &board_t.sdcard {
        // The board's own command line (the SD card's cmdline.txt).
        reference.allow("cmdline", &vtpm::sha256(sd.cmdline.as_bytes()));
    }
    // The boot chain the hypervisor always measures (PCRs 1 and 3-6): every quote must cover
    // them, so a log that hid one would be named.
    use vtpm::pcr::{
        PCR_GUEST_CMDLINE, PCR_GUEST_DTB, PCR_GUEST_INITRAMFS, PCR_GUEST_KERNEL, PCR_HYPERVISOR,
    };
    reference.quoted_pcrs = vec![
        PCR_HYPERVISOR,
        PCR_GUEST_KERNEL,
        PCR_GUEST_INITRAMFS,
        PCR_GUEST_DTB,
        PCR_GUEST_CMDLINE,
    ];
    // The device tree as the hypervisor measures it, for each CPU count the board allows.
    for d in dtb_references(root, board, &board_t, &qemu_args, &bundle)? {
        reference.allow("dtb", &d);
    }
    // The data path's programs, as HOP_KEY_REGISTER measures them (docs/datapath.md).
    for (component, bin) in [
        ("vswitch", "gw-vswitch"),
        ("middlebox:firewall", "gw-firewall"),
        ("middlebox:ids", "gw-ids"),
        ("middlebox:monitor", "gw-monitor"),
    ] {
        let elf = std::fs::read(
            root.join("target/aarch64-unknown-linux-musl/release")
                .join(bin),
        )?;
        let id = crate::provision::el0_program_id(&elf)
            .with_context(|| format!("program identity of {bin}"))?;
        reference.allow(component, &id);
    }
    let signed = reference.sign(&vendor);
    std::fs::write(
        dir.join("reference.json"),
        serde_json::to_vec_pretty(&signed)?,
    )?;
    let endorsement_file = dir.join("endorsement.json");
    match &identity {
        Some((_, _, _, e)) => std::fs::write(&endorsement_file, e)?,
        None => match std::fs::remove_file(&endorsement_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        },
    }
    std::fs::write(
        dir.join("vendor.pub"),
        hex(&vendor.verifying_key().to_bytes()) + "\n",
    )?;
    let manifest = json!({
        "board": board,
        "gateway_id": identity.as_ref().map(|i| i.0.clone()),
        "controller_dir": opts.controller_dir,
        "version": env!("CARGO_PKG_VERSION"),
        "attestation_key": identity.as_ref().map(|i| i.1.clone()),
        "agent_key": identity.as_ref().map(|i| i.2.clone()),
        "secret": if secret_in_image { "image" } else { "bcm-otp" },
        "components": {
            "hypervisor": { "pcr": 1, "sha256": hex(&d_hv) },
            "kernel": { "pcr": 3, "sha256": hex(&d_kernel), "release": guest.release },
            "initramfs": { "pcr": 4, "sha256": hex(&d_initrd) },
        },
        // Each boot PCR holds one extend from zero. PCRs 5 (device tree) and 6 (command line)
        // depend on what the loader passes at boot and are appraised from the event log.
        "expected_pcrs": {
            "1": hex(&vtpm::pcr::extend_value(&[0; 32], &d_hv)),
            "3": hex(&vtpm::pcr::extend_value(&[0; 32], &d_kernel)),
            "4": hex(&vtpm::pcr::extend_value(&[0; 32], &d_initrd)),
        },
    });
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?,
    )?;
    eprintln!(
        "==> image in {}: hv.bin ({} KiB), bundle.bin ({} MiB), manifest.json, reference.json (signed), gateway {}",
        dir.display(),
        bin.len() / 1024,
        bundle.len() >> 20,
        identity
            .as_ref()
            .map_or("endorsed after its first boot", |i| i.0.as_str()),
    );
    Ok(Image {
        qemu_args,
        fixed_cpus: board_qemu_data(&board_t)?.fixed_cpus,
    })
}

/// The SD card file QEMU boots for a board: the flashable image where the board has one (the
/// tests boot the very card a vendor flashes), else a small test disk.
pub fn disk_file(board: &gw_board::Board) -> String {
    match board.sdcard {
        Some(_) => format!("gatewarden-{}.img", board.name),
        None => "disk.img".into(),
    }
}

/// Write `gatewarden-<board>.img` (`sdimage`): the firmware package's files, `config.txt`,
/// `cmdline.txt`, the hypervisor `hv` (as provisioned), the guest `bundle` and the board's
/// device tree on the boot partition; an empty state partition.
fn sd_image(
    root: &Path,
    board: &str,
    b: &gw_board::Board,
    sd: &gw_board::SdCard,
    dir: &Path,
    hv: &[u8],
    bundle: &[u8],
) -> Result<()> {
    let (firmware, copyright) = crate::fetch::fetch_firmware(root, &sd.firmware)?;
    let dtb_source = &b.dtb.as_ref().context("[sdcard] needs [dtb]")?.source;
    let dtb_name = Path::new(dtb_source)
        .file_name()
        .and_then(|n| n.to_str())
        .context("[dtb] source names no file")?
        .to_owned();
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut names: Vec<PathBuf> = std::fs::read_dir(&firmware)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for p in names.iter().filter(|p| p.is_file()) {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        files.push((name.to_owned(), std::fs::read(p)?));
    }
    files.push((
        format!("COPYING.{}", sd.firmware),
        std::fs::read(&copyright).with_context(|| format!("reading {}", copyright.display()))?,
    ));
    files.extend([
        (
            "config.txt".to_owned(),
            crate::sdimage::config_txt(board, &dtb_name).into_bytes(),
        ),
        ("cmdline.txt".to_owned(), format!("{}\n", sd.cmdline).into_bytes()),
        ("hv.bin".to_owned(), hv.to_vec()),
        ("bundle.bin".to_owned(), bundle.to_vec()),
        (dtb_name.clone(), std::fs::read(dir.join(&dtb_name))?),
        (
            "gatewarden/README.txt".to_owned(),
            b"Gatewarden: put this board's endorsement here as endorsement.json (cargo xtask endorse; docs/flashing.md).\r\n"
                .to_vec(),
        ),
    ]);
    crate::setup::ensure(&[crate::setup::MKE2FS, crate::setup::BMAPTOOL])?;
    let out = dir.join(disk_file(b));
    crate::sdimage::write(&out, &files)?;
    // The block map: `bmaptool copy` writes only the blocks the image uses.
    let bmap = out.with_extension("img.bmap");
    let mut c = Command::new("bmaptool");
    c.arg("create").arg("-o").arg(&bmap).arg(&out);
    crate::run("the SD card image's block map (bmaptool create)", c)?;
    eprintln!(
        "==> SD card image {} ({} MiB: boot partition with {} files, state partition)",
        out.display(),
        crate::sdimage::IMAGE_SIZE >> 20,
        files.len()
    );
    Ok(())
}

/// For a board that boots with a device tree from a file: Debian's tree from the kernel
/// package with the board's edits, as `<dtb file name>` (what the SD card carries), and with
/// QEMU's edits on top as `qemu.dtb` (what `-dtb` passes). Where the hypervisor releases the
/// secondaries from the spin table, the guest starts them through its PSCI.
fn board_dtb(b: &gw_board::Board, guest: &fetch::GuestFiles, dir: &Path) -> Result<()> {
    let Some(d) = &b.dtb else { return Ok(()) };
    let src = guest
        .kernel_root
        .join("usr/lib")
        .join(format!("linux-image-{}", guest.release))
        .join(&d.source);
    let blob = std::fs::read(&src)
        .with_context(|| format!("the board's device tree {}", src.display()))?;
    let psci = b.smp == gw_board::SmpMethod::SpinTable;
    let board_edits: Vec<&gw_board::DtbEdit> = d.edits.iter().collect();
    let name = Path::new(&d.source)
        .file_name()
        .context("[dtb] source names no file")?;
    let on_board = crate::boarddtb::edited(&blob, &board_edits, psci)
        .with_context(|| format!("editing {}", src.display()))?;
    std::fs::write(dir.join(name), on_board)?;
    let mut all = board_edits;
    if let Some(q) = &b.qemu {
        all.extend(q.dtb_edits.iter());
    }
    let for_qemu = crate::boarddtb::edited(&blob, &all, psci)
        .and_then(|t| crate::boarddtb::with_rng_seed(&t))
        .with_context(|| format!("editing {} for QEMU", src.display()))?;
    std::fs::write(dir.join("qemu.dtb"), for_qemu)?;
    // The same kernel bare on the machine (`bench boot`) keeps the loader's spin table.
    let bare = crate::boarddtb::edited(&blob, &all, false)
        .with_context(|| format!("editing {} for QEMU", src.display()))?;
    std::fs::write(dir.join("qemu-bare.dtb"), bare)?;
    Ok(())
}

/// The digests the hypervisor measures into PCR 5 for this image's device tree under QEMU, one
/// per CPU count from 1 to the board's `max_cpus`: QEMU's own tree for the image's command line
/// (`dumpdtb`), prepared as the hypervisor prepares it (`/memory` and the initrd edited for the
/// guest, the devices it is not given removed, the loader's seeds and the structure block's
/// padding zeroed).
fn dtb_references(
    root: &Path,
    board: &str,
    board_t: &gw_board::Board,
    qemu_args: &[String],
    bundle: &[u8],
) -> Result<Vec<[u8; 32]>> {
    use gatewarden_hv::{dtb, layout};
    let qemu = setup::qemu(board_qemu(root, board)?)?;
    let (ram_base, reserved, max_cpus) = (board_t.ram_base, board_t.hv_reserved, board_t.max_cpus);
    // As the hypervisor computes it (`plan::BoardMap::max_ram`): the first memory region, no
    // more than its own map covers.
    let max_ram = board_t.max_ram().min(layout::MAX_RAM);
    let devices: Vec<(u64, u64)> = board_t
        .guest_devices()
        .map(|(_, base, size)| (base, size))
        .collect();
    let parts = gatewarden_hv::bundle::parse(bundle)
        .map_err(|e| anyhow::anyhow!("the image's own bundle does not parse: {e:?}"))?;
    let tmp = root
        .join("target/gatewarden")
        .join(board)
        .join("dumpdtb.dtb");
    let mut out = Vec::new();
    let cpus = match board_qemu_data(board_t)?.fixed_cpus {
        Some(n) => n..=n,
        None => 1..=max_cpus,
    };
    for smp in cpus {
        let _ = std::fs::remove_file(&tmp);
        let status = Command::new(qemu)
            .args(qemu_args)
            .args(["-smp", &smp.to_string()])
            .arg("-machine")
            .arg(format!("dumpdtb={}", tmp.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .with_context(|| format!("running {qemu} to dump its device tree"))?;
        let mut blob = std::fs::read(&tmp)
            .with_context(|| format!("{qemu} dumpdtb wrote no tree ({status})"))?;
        let fail = |e: dtb::DtbError| anyhow::anyhow!("QEMU's device tree (-smp {smp}): {e:?}");
        let info = dtb::inspect(&blob).map_err(fail)?;
        let guest = layout::guest_ram(info.memory, ram_base, reserved, max_ram)
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        let kernel = &bundle[parts.kernel.clone()];
        let plan = layout::plan(guest, info.initrd, &parts, kernel, blob.len())
            .map_err(|e| anyhow::anyhow!("{}", e.message()))?;
        dtb::edit_for_guest(&mut blob, guest, plan.initrd).map_err(fail)?;
        dtb::prune_for_guest(&mut blob, &devices).map_err(fail)?;
        dtb::take_seeds(&mut blob).map_err(fail)?;
        dtb::zero_padding(&mut blob).map_err(fail)?;
        out.push(vtpm::sha256(&blob));
    }
    let _ = std::fs::remove_file(&tmp);
    Ok(out)
}

/// The QEMU command line for `image` with `smp` CPUs (arguments from `qemu.args`).
pub fn qemu_command(image: &Image, smp: u32) -> Result<Command> {
    let smp = image.fixed_cpus.unwrap_or(smp as u64);
    let mut q = Command::new("qemu-system-aarch64");
    q.args(crate::boarddtb::fresh_seeds(&image.qemu_args)?)
        .args(["-smp", &smp.to_string()]);
    Ok(q)
}

/// Boot the image in QEMU with the serial console on this terminal.
pub fn run_qemu(root: &Path, board: &str, smp: u32) -> Result<()> {
    setup::qemu(board_qemu(root, board)?)?;
    let image = image(root, board, &ImageOptions::for_board(root, board))?;
    eprintln!("==> booting {board} in QEMU (exit: Ctrl-A X, or `poweroff -f` in the guest)");
    if let Some(q) = &board_data(root, board)?.qemu
        && !console_keys(q).is_empty()
    {
        eprintln!(
            "    the hypervisor and the guest print on different UARTs of this board, sharing this terminal: press Ctrl-A c to type to the guest"
        );
    }
    let status = qemu_command(&image, smp)?.status()?;
    if !status.success() {
        bail!("QEMU exited with {status}");
    }
    Ok(())
}
