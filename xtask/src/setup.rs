//! What the tasks need from the machine, installed by the task that needs it.
//!
//! - The pinned Rust toolchain with the components and targets of `rust-toolchain.toml`
//!   ([`toolchain`]): rustup installs the toolchain file's toolchain on first use, but adds
//!   nothing to a toolchain that is already there, so every task checks and adds what is missing
//!   in one `rustup` call.
//! - Debian packages ([`ensure`]): each [`Need`] names a command and the packages that provide
//!   it. Missing ones are installed through apt in one call, with a progress line; without root
//!   or apt the task stops with the exact command to run.
//! - QEMU ([`qemu`]): the project's QEMU is 10 or newer. On Debian 12 that is bookworm-backports
//!   (bookworm's own 7.2 cannot even be installed beside the machine's qemu-utils 10), whose
//!   source is added to apt when it is absent (docs/qemu.md).
//!
//! `.ci/run` reaches all of this through the same tasks, so CI installs exactly what a new user's
//! machine gets.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicBool, Ordering},
};

use anyhow::{Context, Result, bail};

/// A command a task runs, and the Debian packages that provide it.
#[derive(Debug, Clone, Copy)]
pub struct Need {
    /// The program looked up on PATH (or an absolute path that must exist).
    pub command: &'static str,
    /// Debian packages that provide it (installed together).
    pub packages: &'static [&'static str],
    /// What it is for, shown when it is installed.
    pub why: &'static str,
}

/// Debian's aarch64 cross compiler: the guest agent's TLS library (ring) has C and assembly
/// parts (`.cargo/config.toml` points the aarch64 musl build at it), and the guest kernel module
/// is compiled with it.
pub const CROSS_CC: Need = Need {
    command: "aarch64-linux-gnu-gcc",
    packages: &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"],
    why: "the aarch64 cross compiler (ring's C parts, the guest kernel module)",
};
/// Debian's kbuild drives the guest kernel module's build.
pub const MAKE: Need = Need {
    command: "make",
    packages: &["make"],
    why: "make (the guest kernel module's build)",
};
/// Network namespaces, veth pairs and tap devices of the data-path tests and benchmarks.
pub const IPROUTE2: Need = Need {
    command: "ip",
    packages: &["iproute2"],
    why: "ip (network namespaces and tap devices of the data-path tests)",
};
/// Offloads turned off on test interfaces.
pub const ETHTOOL: Need = Need {
    command: "ethtool",
    packages: &["ethtool"],
    why: "ethtool (offloads off on the data-path test interfaces)",
};
/// Reads back the flow monitor's pcap export.
pub const TCPDUMP: Need = Need {
    command: "tcpdump",
    packages: &["tcpdump"],
    why: "tcpdump (reads back the flow monitor's pcap export)",
};
/// Throughput through the gateway VM (`bench pktsign`).
pub const IPERF3: Need = Need {
    command: "iperf3",
    packages: &["iperf3"],
    why: "iperf3 (throughput through the gateway VM)",
};
/// The PostgreSQL server for the controller's PostgreSQL tests.
pub const POSTGRES: Need = Need {
    command: "pg_ctlcluster",
    packages: &["postgresql"],
    why: "the PostgreSQL server (the controller's PostgreSQL store tests)",
};
/// psql creates a database per test.
pub const PSQL: Need = Need {
    command: "psql",
    packages: &["postgresql-client"],
    why: "psql (a fresh database per PostgreSQL test)",
};
/// Debian's Chromium, for the dashboard test.
pub const CHROMIUM: Need = Need {
    command: "chromium",
    packages: &["chromium"],
    why: "Chromium (the dashboard test, headless)",
};
/// ChromeDriver, which drives it.
pub const CHROMEDRIVER: Need = Need {
    command: "chromedriver",
    packages: &["chromium-driver"],
    why: "ChromeDriver (drives Chromium in the dashboard test)",
};

/// Lists and reads the SD card image's FAT boot partition in the tests.
pub const MTOOLS: Need = Need {
    command: "mdir",
    packages: &["mtools"],
    why: "mtools (the SD card image test reads its boot partition)",
};
/// Formats the SD card image's state partition.
pub const MKE2FS: Need = Need {
    command: "mke2fs",
    packages: &["e2fsprogs"],
    why: "mke2fs (the SD card image's ext4 state partition)",
};
/// Writes the SD card image's block map (`bmaptool copy` flashes only the used blocks).
pub const BMAPTOOL: Need = Need {
    command: "bmaptool",
    packages: &["bmap-tools"],
    why: "bmaptool (the SD card image's block map)",
};

/// The oldest QEMU the project runs on: raspi4b, SMMUv3 stage 2 and the facts in docs/qemu.md
/// are 10.0's.
pub const QEMU_MIN_MAJOR: u32 = 10;

/// A QEMU system emulator the project uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuSystem {
    /// `qemu-system-aarch64` (qemu-virt, the Raspberry Pis), Debian's `qemu-system-arm`.
    Aarch64,
    /// `qemu-system-x86_64` (x86-pc), Debian's `qemu-system-x86`.
    X86_64,
}

impl QemuSystem {
    /// The emulator a board's data names (`[qemu] binary` in its board.toml).
    pub fn for_binary(binary: &str) -> Result<Self> {
        match binary {
            "qemu-system-aarch64" => Ok(QemuSystem::Aarch64),
            "qemu-system-x86_64" => Ok(QemuSystem::X86_64),
            other => {
                bail!("unknown QEMU binary {other:?} (qemu-system-aarch64 or qemu-system-x86_64)")
            }
        }
    }

    /// The emulator's command.
    pub fn command(self) -> &'static str {
        match self {
            QemuSystem::Aarch64 => "qemu-system-aarch64",
            QemuSystem::X86_64 => "qemu-system-x86_64",
        }
    }

    /// The Debian package that ships it.
    pub fn package(self) -> &'static str {
        match self {
            QemuSystem::Aarch64 => "qemu-system-arm",
            QemuSystem::X86_64 => "qemu-system-x86",
        }
    }
}

/// Everything `cargo xtask test` runs besides QEMU (which [`qemu`] checks for its version).
pub const TEST_TOOLS: &[Need] = &[
    CROSS_CC,
    MAKE,
    IPROUTE2,
    ETHTOOL,
    TCPDUMP,
    POSTGRES,
    PSQL,
    CHROMIUM,
    CHROMEDRIVER,
    MTOOLS,
];

static TOOLCHAIN_CHECKED: AtomicBool = AtomicBool::new(false);
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

/// The toolchain file's pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toolchain {
    /// `channel`, e.g. `1.95.0`.
    pub channel: String,
    /// `profile` (default `minimal`).
    pub profile: String,
    /// `components`.
    pub components: Vec<String>,
    /// `targets`.
    pub targets: Vec<String>,
}

impl Toolchain {
    /// Parse `rust-toolchain.toml`.
    pub fn parse(text: &str) -> Result<Self> {
        let t: toml::Table = text.parse().context("rust-toolchain.toml is not TOML")?;
        let tc = t
            .get("toolchain")
            .and_then(|v| v.as_table())
            .context("rust-toolchain.toml has no [toolchain] table")?;
        let list = |key: &str| -> Result<Vec<String>> {
            match tc.get(key) {
                None => Ok(Vec::new()),
                Some(v) => v
                    .as_array()
                    .with_context(|| format!("toolchain.{key} is not a list"))?
                    .iter()
                    .map(|s| {
                        s.as_str()
                            .map(str::to_owned)
                            .with_context(|| format!("toolchain.{key} holds a non-string"))
                    })
                    .collect(),
            }
        };
        Ok(Self {
            channel: tc
                .get("channel")
                .and_then(|v| v.as_str())
                .context("rust-toolchain.toml names no channel")?
                .to_owned(),
            profile: tc
                .get("profile")
                .and_then(|v| v.as_str())
                .unwrap_or("minimal")
                .to_owned(),
            components: list("components")?,
            targets: list("targets")?,
        })
    }

    /// The single rustup call that installs the toolchain with everything it pins (it adds
    /// what is missing to a toolchain that exists, and changes nothing else).
    pub fn install_args(&self) -> Vec<String> {
        let mut a = vec![
            "toolchain".into(),
            "install".into(),
            self.channel.clone(),
            "--profile".into(),
            self.profile.clone(),
        ];
        if !self.components.is_empty() {
            a.push("--component".into());
            a.push(self.components.join(","));
        }
        if !self.targets.is_empty() {
            a.push("--target".into());
            a.push(self.targets.join(","));
        }
        a
    }

    /// What of the pins is missing from rustup's lists of installed components and targets
    /// (`rustup component list --installed` names components with the host suffix).
    pub fn missing(&self, components: &str, targets: &str) -> Vec<String> {
        let comps: Vec<&str> = components.lines().map(str::trim).collect();
        let tgts: Vec<&str> = targets.lines().map(str::trim).collect();
        let mut m = Vec::new();
        for c in &self.components {
            // `<name>-<host triple>`, or an older `<name>-preview-<host triple>`.
            let have = comps.iter().any(|l| {
                *l == c
                    || l.strip_prefix(c.as_str())
                        .is_some_and(|rest| rest.starts_with('-') && rest[1..].contains('-'))
            });
            if !have {
                m.push(format!("component {c}"));
            }
        }
        for t in &self.targets {
            if !tgts.contains(&t.as_str()) {
                m.push(format!("target {t}"));
            }
        }
        m
    }
}

/// Make sure the toolchain, components and targets of `rust-toolchain.toml` are installed:
/// checked once per run, installed by one `rustup` call shown as a step.
pub fn toolchain(root: &Path) -> Result<()> {
    if TOOLCHAIN_CHECKED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let file = root.join("rust-toolchain.toml");
    let tc = Toolchain::parse(
        &std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?,
    )?;
    let install = format!("rustup {}", tc.install_args().join(" "));
    if which("rustup").is_none() {
        // Without rustup the compiler may still carry everything (a distribution's Rust with
        // the targets installed by hand): look in its sysroot before giving up.
        let missing = sysroot_missing(&tc)?;
        if missing.is_empty() {
            return Ok(());
        }
        bail!(
            "rustup is not installed, and the compiler lacks {}. Install rustup (see rustup.rs), \
             then run: {install}",
            missing.join(", ")
        );
    }
    let list = |what: &str| -> Result<String> {
        let out = Command::new("rustup")
            .args([&format!("+{}", tc.channel), what, "list", "--installed"])
            .output()
            .context("running rustup")?;
        // A toolchain that is not installed at all lists nothing: everything is missing.
        Ok(if out.status.success() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            String::new()
        })
    };
    let missing = tc.missing(&list("component")?, &list("target")?);
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "==> Rust toolchain {}: installing {} (from rust-toolchain.toml)",
        tc.channel,
        missing.join(", ")
    );
    let mut c = Command::new("rustup");
    c.args(tc.install_args());
    crate::run("rustup: the pinned toolchain's components and targets", c).with_context(|| {
        format!("installing the pinned toolchain failed; run it by hand to see why: {install}")
    })
}

/// Targets and components the active compiler's sysroot lacks (no rustup to ask).
fn sysroot_missing(tc: &Toolchain) -> Result<Vec<String>> {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .context("running rustc --print sysroot")?;
    let sysroot = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(tc
        .targets
        .iter()
        .filter(|t| !sysroot.join("lib/rustlib").join(t).join("lib").is_dir())
        .map(|t| format!("target {t}"))
        .collect())
}

/// Install whatever of `needs` is missing, in one apt call with a progress line. Without root
/// or apt it fails naming the packages and the command to run.
pub fn ensure(needs: &[Need]) -> Result<()> {
    let missing: Vec<&Need> = needs.iter().filter(|n| !present(n.command)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut packages: Vec<&str> = missing.iter().flat_map(|n| n.packages).copied().collect();
    packages.dedup();
    for n in &missing {
        eprintln!(
            "==> {} is missing: installing {}",
            n.why,
            n.packages.join(" ")
        );
    }
    apt_install(&packages, None)?;
    let still: Vec<&str> = missing
        .iter()
        .filter(|n| !present(n.command))
        .map(|n| n.command)
        .collect();
    if !still.is_empty() {
        bail!(
            "apt installed {} but {} is still not on PATH",
            packages.join(" "),
            still.join(", ")
        );
    }
    Ok(())
}

/// Make sure QEMU `system` at version 10 or newer is installed (from bookworm-backports on
/// Debian 12) and return its command.
pub fn qemu(system: QemuSystem) -> Result<&'static str> {
    let cmd = system.command();
    let installed = qemu_version(cmd);
    if installed.is_some_and(|(major, _, _)| major >= QEMU_MIN_MAJOR) {
        return Ok(cmd);
    }
    let why = match installed {
        Some((a, b, c)) => {
            format!("{cmd} is QEMU {a}.{b}.{c}; the project needs {QEMU_MIN_MAJOR} or newer")
        }
        None => format!("{cmd} is missing"),
    };
    eprintln!("==> {why}: installing {}", system.package());
    let release = backports_release()?;
    apt_install(&[system.package()], release.as_deref())?;
    match qemu_version(cmd) {
        Some((a, b, c)) if a >= QEMU_MIN_MAJOR => {
            eprintln!("    {cmd}: QEMU {a}.{b}.{c}");
            Ok(cmd)
        }
        Some((a, b, c)) => bail!(
            "apt installed QEMU {a}.{b}.{c} for {cmd}; the project needs {QEMU_MIN_MAJOR} or newer \
             (docs/qemu.md)"
        ),
        None => bail!("apt installed {} but {cmd} does not run", system.package()),
    }
}

/// The installed version of a QEMU binary, if it runs.
fn qemu_version(cmd: &str) -> Option<(u32, u32, u32)> {
    let out = Command::new(cmd).arg("--version").output().ok()?;
    parse_qemu_version(&String::from_utf8_lossy(&out.stdout))
}

/// `QEMU emulator version 10.0.2 (Debian …)` → (10, 0, 2).
pub fn parse_qemu_version(text: &str) -> Option<(u32, u32, u32)> {
    let line = text.lines().find(|l| l.contains("version"))?;
    let v = line.split("version").nth(1)?.split_whitespace().next()?;
    let mut it = v.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
    });
    let major = it.next()?.ok()?;
    let minor = it.next().and_then(Result::ok).unwrap_or(0);
    let patch = it.next().and_then(Result::ok).unwrap_or(0);
    Some((major, minor, patch))
}

/// The apt release QEMU 10 comes from on this machine (`bookworm-backports` on Debian 12, whose
/// source is added when absent), or `None` where the distribution's own release has it.
fn backports_release() -> Result<Option<String>> {
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os_codename(&os);
    if codename.as_deref() != Some("bookworm") {
        // Debian 13 and later ship QEMU 10 in their own release; elsewhere apt's own choice is
        // tried and the version checked afterwards.
        return Ok(None);
    }
    let suite = "bookworm-backports";
    let sources = read_apt_sources();
    if sources.iter().any(|(_, text)| has_suite(text, suite)) {
        return Ok(Some(suite.into()));
    }
    let (uri, signed_by) = sources
        .iter()
        .find_map(|(_, text)| debian_source(text, "bookworm"))
        .context(
            "apt's sources have no Debian bookworm entry to take the archive's address from; \
             add bookworm-backports to apt's sources by hand",
        )?;
    let path = Path::new(BACKPORTS_FILE);
    eprintln!(
        "==> adding {suite} to apt's sources ({}, archive {uri}): the project's QEMU 10 comes from there",
        path.display()
    );
    require_root(&format!(
        "add {suite} to apt's sources, then: apt-get install -t {suite} qemu-system-arm"
    ))?;
    std::fs::write(path, backports_stanza(&uri, signed_by.as_deref(), suite))
        .with_context(|| format!("writing {}", path.display()))?;
    APT_UPDATED.store(false, Ordering::SeqCst);
    Ok(Some(suite.into()))
}

/// Where the `non-free-firmware` source goes when xtask adds it (removed again by
/// `fresh-check`): the Raspberry Pis' boot firmware (`raspi-firmware`) is there.
pub const NON_FREE_FIRMWARE_FILE: &str =
    "/etc/apt/sources.list.d/gatewarden-non-free-firmware.sources";

/// Make apt able to download `package` from Debian's `non-free-firmware` component: when apt
/// knows no such package, add the component for this release (the archive's address taken
/// from the existing Debian entry) and update.
pub fn non_free_firmware(package: &str) -> Result<()> {
    let known = Command::new("apt-cache")
        .args(["show", "-q", package])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
    if known {
        return Ok(());
    }
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os_codename(&os).context("no VERSION_CODENAME in /etc/os-release")?;
    let (uri, signed_by) = read_apt_sources()
        .iter()
        .find_map(|(_, text)| debian_source(text, &codename))
        .with_context(|| {
            format!(
                "apt's sources have no Debian {codename} entry to take the archive's address from; add the non-free-firmware component by hand"
            )
        })?;
    eprintln!(
        "==> adding Debian's non-free-firmware component to apt's sources ({NON_FREE_FIRMWARE_FILE}): {package} (the board's boot firmware) is there"
    );
    require_root(&format!(
        "add {codename} non-free-firmware to apt's sources, then: apt-get download {package}"
    ))?;
    let mut stanza = format!(
        "# Added by `cargo xtask` (xtask/src/setup.rs): the Raspberry Pi boot firmware comes from here.\n\
         Types: deb\nURIs: {uri}\nSuites: {codename}\nComponents: non-free-firmware\n"
    );
    if let Some(k) = signed_by {
        stanza.push_str(&format!("Signed-By: {k}\n"));
    }
    std::fs::write(NON_FREE_FIRMWARE_FILE, stanza)
        .with_context(|| format!("writing {NON_FREE_FIRMWARE_FILE}"))?;
    let status = Command::new("apt-get").args(["update", "-q"]).status()?;
    if !status.success() {
        bail!("apt-get update failed");
    }
    Ok(())
}

/// Where the backports source goes when xtask adds it (removed again by `fresh-check`).
pub const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/gatewarden-bookworm-backports.sources";

/// `VERSION_CODENAME` from `/etc/os-release`.
pub fn os_codename(os_release: &str) -> Option<String> {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .filter(|v| !v.is_empty())
}

/// Every apt source file: `sources.list` and `sources.list.d/*.list|*.sources`.
fn read_apt_sources() -> Vec<(PathBuf, String)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect()
}

/// One source entry, from either of apt's formats.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct SourceEntry {
    uris: Vec<String>,
    suites: Vec<String>,
    signed_by: Option<String>,
    enabled: bool,
}

/// The entries of a source file: one-line `deb [opts] URI SUITE COMPONENTS…` lines, or deb822
/// stanzas (`Types:`, `URIs:`, `Suites:`, blank-line separated).
fn source_entries(text: &str) -> Vec<SourceEntry> {
    let mut out = Vec::new();
    let deb822 = text
        .lines()
        .any(|l| l.trim_start().to_ascii_lowercase().starts_with("types:"));
    if deb822 {
        for stanza in text.split("\n\n") {
            let mut e = SourceEntry {
                enabled: true,
                ..Default::default()
            };
            let mut is_deb = false;
            for l in stanza.lines() {
                let l = l.trim();
                if l.starts_with('#') {
                    continue;
                }
                let Some((k, v)) = l.split_once(':') else {
                    continue;
                };
                let v = v.trim();
                match k.trim().to_ascii_lowercase().as_str() {
                    "types" => is_deb = v.split_whitespace().any(|t| t == "deb"),
                    "uris" => e.uris = v.split_whitespace().map(str::to_owned).collect(),
                    "suites" => e.suites = v.split_whitespace().map(str::to_owned).collect(),
                    "signed-by" => e.signed_by = Some(v.to_owned()),
                    "enabled" => e.enabled = !v.eq_ignore_ascii_case("no"),
                    _ => {}
                }
            }
            if is_deb && !e.uris.is_empty() {
                out.push(e);
            }
        }
    } else {
        for l in text.lines() {
            let l = l.trim();
            let Some(rest) = l.strip_prefix("deb ") else {
                continue;
            };
            let mut rest = rest.trim_start();
            let mut signed_by = None;
            if let Some(opts) = rest.strip_prefix('[') {
                let (o, r) = opts.split_once(']').unwrap_or((opts, ""));
                signed_by = o
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix("signed-by="))
                    .map(str::to_owned);
                rest = r.trim_start();
            }
            let mut words = rest.split_whitespace();
            if let (Some(uri), Some(suite)) = (words.next(), words.next()) {
                out.push(SourceEntry {
                    uris: vec![uri.to_owned()],
                    suites: vec![suite.to_owned()],
                    signed_by,
                    enabled: true,
                });
            }
        }
    }
    out
}

/// Whether a source file has an enabled entry for `suite`.
fn has_suite(text: &str, suite: &str) -> bool {
    source_entries(text)
        .iter()
        .any(|e| e.enabled && e.suites.iter().any(|s| s == suite))
}

/// The archive address (and keyring) of the first enabled Debian entry for `suite`.
fn debian_source(text: &str, suite: &str) -> Option<(String, Option<String>)> {
    source_entries(text)
        .into_iter()
        .filter(|e| e.enabled && e.suites.iter().any(|s| s == suite))
        .find_map(|e| {
            let uri = e.uris.iter().find(|u| u.contains("debian"))?.clone();
            Some((uri, e.signed_by))
        })
}

/// The deb822 stanza for a backports source beside the machine's own archive.
fn backports_stanza(uri: &str, signed_by: Option<&str>, suite: &str) -> String {
    let mut s = format!(
        "# Added by `cargo xtask` (xtask/src/setup.rs): the project's QEMU 10 comes from here.\n\
         Types: deb\nURIs: {uri}\nSuites: {suite}\nComponents: main\n"
    );
    if let Some(k) = signed_by {
        s.push_str(&format!("Signed-By: {k}\n"));
    }
    s
}

/// Whether this process runs as root (apt and the system directories need it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn require_root(command: &str) -> Result<()> {
    if !is_root() {
        bail!("installing needs root: run as root, or by hand: sudo {command}");
    }
    Ok(())
}

/// `apt-get install` of `packages` (from `release` when given), after one `apt-get update`
/// per run.
fn apt_install(packages: &[&str], release: Option<&str>) -> Result<()> {
    let target = release.map(|r| format!("-t {r} ")).unwrap_or_default();
    let by_hand = format!(
        "apt-get install -y --no-install-recommends {target}{}",
        packages.join(" ")
    );
    if which("apt-get").is_none() {
        bail!(
            "there is no apt-get on this machine: install the packages {} (or what your \
             distribution calls them) by hand",
            packages.join(", ")
        );
    }
    require_root(&by_hand)?;
    if !APT_UPDATED.swap(true, Ordering::SeqCst) {
        let mut u = Command::new("apt-get");
        u.args(["update", "-q"]);
        crate::run("apt-get update", u)?;
    }
    let mut c = Command::new("apt-get");
    c.args(["install", "-y", "-q", "--no-install-recommends"]);
    if let Some(r) = release {
        c.args(["-t", r]);
    }
    c.args(packages).env("DEBIAN_FRONTEND", "noninteractive");
    crate::run(&format!("installing {}", packages.join(" ")), c).with_context(|| {
        format!(
            "apt could not install {}; by hand: {by_hand}",
            packages.join(" ")
        )
    })
}

/// Whether `command` (a name on PATH or an absolute path) exists.
fn present(command: &str) -> bool {
    if command.starts_with('/') {
        return Path::new(command).exists();
    }
    which(command).is_some()
}

/// The path of `cmd` on PATH, or in the system directories a user's PATH may lack (`ip` and
/// `ethtool` live in /usr/sbin), if any.
pub fn which(cmd: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|p| p.join(cmd))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOOLCHAIN: &str = r#"
[toolchain]
channel = "1.95.0"
components = ["clippy", "rustfmt", "llvm-tools"]
targets = ["aarch64-unknown-none-softfloat", "x86_64-unknown-none"]
profile = "minimal"
"#;

    #[test]
    fn the_toolchain_file_gives_one_rustup_call() {
        let tc = Toolchain::parse(TOOLCHAIN).unwrap();
        assert_eq!(
            tc.install_args().join(" "),
            "toolchain install 1.95.0 --profile minimal --component clippy,rustfmt,llvm-tools \
             --target aarch64-unknown-none-softfloat,x86_64-unknown-none"
        );
        // The real file parses and pins every target the tasks build for.
        let real = Toolchain::parse(include_str!("../../rust-toolchain.toml")).unwrap();
        for t in crate::BARE_METAL_TARGETS.iter().chain(crate::GUEST_TARGETS) {
            assert!(real.targets.iter().any(|x| x == t), "{t} is not pinned");
        }
        assert!(Toolchain::parse("[other]\n").is_err());
        assert!(Toolchain::parse("[toolchain]\ncomponents = [1]\nchannel = \"x\"").is_err());
    }

    #[test]
    fn missing_components_and_targets_are_found() {
        let tc = Toolchain::parse(TOOLCHAIN).unwrap();
        let comps = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n\
                     rustfmt-x86_64-unknown-linux-gnu\nllvm-tools-x86_64-unknown-linux-gnu\n";
        let tgts =
            "x86_64-unknown-linux-gnu\naarch64-unknown-none-softfloat\nx86_64-unknown-none\n";
        assert!(tc.missing(comps, tgts).is_empty());
        // A fresh machine's pinned toolchain: host target and base components only.
        assert_eq!(
            tc.missing(
                "cargo-x86_64-unknown-linux-gnu\nrustc-x86_64-unknown-linux-gnu\n",
                "x86_64-unknown-linux-gnu\n"
            ),
            [
                "component clippy",
                "component rustfmt",
                "component llvm-tools",
                "target aarch64-unknown-none-softfloat",
                "target x86_64-unknown-none"
            ]
        );
        // `rustfmt-preview`-like prefixes of another component do not count.
        assert_eq!(
            tc.missing("clippy-x86_64-unknown-linux-gnu\nllvm-tools-preview-x86_64-unknown-linux-gnu\nrustfmtx\n", tgts),
            ["component rustfmt"]
        );
        // A toolchain that is not installed lists nothing.
        assert_eq!(tc.missing("", "").len(), 5);
    }

    #[test]
    fn qemu_versions_parse() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
            ),
            Some((10, 0, 2))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)"),
            Some((7, 2, 22))
        );
        assert_eq!(
            parse_qemu_version("QEMU emulator version 9.2.0\n"),
            Some((9, 2, 0))
        );
        assert_eq!(parse_qemu_version(""), None);
        assert_eq!(parse_qemu_version("no such thing"), None);
    }

    #[test]
    fn boards_name_their_emulator() {
        for q in [QemuSystem::Aarch64, QemuSystem::X86_64] {
            assert_eq!(QemuSystem::for_binary(q.command()).unwrap(), q);
        }
        assert_eq!(QemuSystem::X86_64.package(), "qemu-system-x86");
        assert!(QemuSystem::for_binary("qemu-system-riscv64").is_err());
        // Every board's data names an emulator xtask can install.
        let root = crate::workspace_root();
        for (board, _) in crate::image::bare_metal_boards(&root).unwrap() {
            let b = crate::image::board_data(&root, &board).unwrap();
            QemuSystem::for_binary(&b.qemu.unwrap().binary).unwrap();
        }
    }

    #[test]
    fn codename_from_os_release() {
        let os = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(os_codename(os).as_deref(), Some("bookworm"));
        assert_eq!(os_codename("ID=arch\n"), None);
        assert_eq!(os_codename("VERSION_CODENAME=\n"), None);
    }

    /// This machine's own sources (deb822, as Debian 12 images ship them).
    const DEB822: &str = "Types: deb\n# a snapshot comment\nURIs: http://archive.example/debian\n\
        Suites: bookworm bookworm-updates\nComponents: main\n\
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
        Types: deb\nURIs: http://archive.example/debian-security\nSuites: bookworm-security\n\
        Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n";

    #[test]
    fn backports_source_from_the_machines_archive() {
        assert!(!has_suite(DEB822, "bookworm-backports"));
        let (uri, key) = debian_source(DEB822, "bookworm").unwrap();
        assert_eq!(uri, "http://archive.example/debian");
        let stanza = backports_stanza(&uri, key.as_deref(), "bookworm-backports");
        // What xtask writes is found again by the same check, so it is added once.
        assert!(has_suite(&stanza, "bookworm-backports"));
        assert!(stanza.contains("Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg"));

        let one_line = "# deb http://old/debian bookworm-backports main\n\
                        deb [arch=amd64 signed-by=/k.gpg] http://mirror/debian bookworm main\n\
                        deb http://other/ubuntu jammy main\n";
        assert!(
            !has_suite(one_line, "bookworm-backports"),
            "comments do not count"
        );
        assert_eq!(
            debian_source(one_line, "bookworm"),
            Some(("http://mirror/debian".into(), Some("/k.gpg".into())))
        );
        assert!(has_suite(
            "deb http://mirror/debian bookworm-backports main\n",
            "bookworm-backports"
        ));
        let disabled =
            "Types: deb\nURIs: http://m/debian\nSuites: bookworm-backports\nEnabled: no\n";
        assert!(!has_suite(disabled, "bookworm-backports"));
        // A third-party source for the same suite name is not Debian's archive.
        let third = "deb https://packages.vendor/apt bookworm main\n";
        assert_eq!(debian_source(third, "bookworm"), None);
    }
}
