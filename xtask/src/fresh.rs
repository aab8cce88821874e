//! `cargo xtask fresh-check`: the README's two commands on a machine made fresh again.
//!
//! CI runs on a machine where earlier sessions installed things by hand, so a green CI can hide
//! a missing install step. This task takes away what a fresh machine of the project's kind does
//! not have (docs/qemu.md lists it), then runs the README's commands from a clean clone of HEAD
//! with nothing of this shell's cargo environment, and reports how long each took.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context, Result, bail};

use crate::setup::{self, Toolchain};

/// Options of `fresh-check`.
pub struct Options {
    /// Do not ask before removing packages.
    pub yes: bool,
    /// Run `.ci/run` instead of the two commands.
    pub ci: bool,
    /// Keep the clone afterwards.
    pub keep: bool,
    /// Only prepare the machine.
    pub prepare_only: bool,
}

/// Debian packages a fresh machine lacks and the tasks install. The PostgreSQL server is on
/// the machine image, but removed too so the path that installs it is exercised.
const PACKAGES: &[&str] = &[
    "qemu-system-arm",
    "qemu-system-x86",
    "qemu-system-common",
    "qemu-system-data",
    "qemu-system-gui",
    "qemu-efi-aarch64",
    "iperf3",
    "libiperf0",
    "mtools",
    "bmap-tools",
    "tcpdump",
    "ethtool",
    "postgresql",
    "postgresql-15",
    "postgresql-contrib",
    "chromium",
    "chromium-common",
    "chromium-driver",
    "chromium-sandbox",
    "gcc-aarch64-linux-gnu",
    "gcc-12-aarch64-linux-gnu",
    "cpp-aarch64-linux-gnu",
    "binutils-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
];

/// Components of the pinned toolchain a fresh machine's toolchain has (everything else the
/// toolchain file pins is removed).
const FRESH_COMPONENTS: &[&str] = &["clippy", "rustfmt"];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// Run a command, echoing it, and fail with its status.
fn step(what: &str, cmd: Command) -> Result<f64> {
    let t = Instant::now();
    crate::run(what, cmd)?;
    Ok(t.elapsed().as_secs_f64())
}

/// Prepare the machine as a fresh one, then run the README's commands from a clone.
pub fn fresh_check(root: &Path, o: &Options) -> Result<()> {
    if !setup::is_root() {
        bail!("fresh-check removes system packages: run it as root");
    }
    let tc = Toolchain::parse(&std::fs::read_to_string(root.join("rust-toolchain.toml"))?)?;
    let packages: Vec<&str> = PACKAGES.iter().copied().filter(|p| installed(p)).collect();
    let components: Vec<&String> = tc
        .components
        .iter()
        .filter(|c| !FRESH_COMPONENTS.contains(&c.as_str()))
        .collect();
    eprintln!("fresh-check makes this machine fresh again. It removes:");
    eprintln!(
        "  packages:   {}",
        if packages.is_empty() {
            "(none installed)".into()
        } else {
            packages.join(" ")
        }
    );
    eprintln!(
        "  rustup:     targets {} and components {} of toolchain {}",
        tc.targets.join(" "),
        components
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" "),
        tc.channel
    );
    eprintln!(
        "  apt:        {} and {} (if xtask added them) and the arm64 architecture",
        setup::BACKPORTS_FILE,
        setup::NON_FREE_FIRMWARE_FILE
    );
    eprintln!("  caches:     {}/.cache/guest", root.display());
    if !o.yes {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() {
            bail!("not asking without a terminal: pass --yes");
        }
        eprint!("Go on? [y/N] ");
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !answer.trim().eq_ignore_ascii_case("y") {
            bail!("nothing changed");
        }
    }

    let started = Instant::now();
    let mut timings: Vec<(String, f64)> = Vec::new();
    if !packages.is_empty() {
        let mut c = Command::new("apt-get");
        c.args(["purge", "-y", "-q"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive");
        timings.push(("remove packages".into(), step("removing packages", c)?));
        let mut c = Command::new("apt-get");
        c.args(["autoremove", "--purge", "-y", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        step("removing what they pulled in", c)?;
    }
    // PostgreSQL's purge leaves the clusters' configuration when other versions' packages stay.
    let _ = std::fs::remove_dir_all("/etc/postgresql");
    let _ = std::fs::remove_dir_all("/var/lib/postgresql");
    for added in [setup::BACKPORTS_FILE, setup::NON_FREE_FIRMWARE_FILE] {
        if Path::new(added).exists() {
            std::fs::remove_file(added).with_context(|| format!("removing {added}"))?;
            eprintln!("==> removed {added}");
        }
    }
    let foreign = Command::new("dpkg")
        .arg("--print-foreign-architectures")
        .output()?;
    if String::from_utf8_lossy(&foreign.stdout)
        .lines()
        .any(|l| l.trim() == "arm64")
    {
        let mut c = Command::new("dpkg");
        c.args(["--remove-architecture", "arm64"]);
        step("removing the arm64 architecture from dpkg", c)?;
    }
    let mut c = Command::new("apt-get");
    c.args(["update", "-q"]);
    step(
        "apt-get update (the sources as a fresh machine has them)",
        c,
    )?;

    if setup::which("rustup").is_some() {
        // One by one: a target or component that is not installed makes rustup fail.
        eprintln!("==> removing the toolchain's targets and extra components");
        for t in &tc.targets {
            let _ = Command::new("rustup")
                .args(["target", "remove", "--toolchain", &tc.channel, t])
                .status();
        }
        for comp in &components {
            let _ = Command::new("rustup")
                .args(["component", "remove", "--toolchain", &tc.channel, comp])
                .status();
        }
    }
    let cache = root.join(".cache/guest");
    if cache.exists() {
        std::fs::remove_dir_all(&cache).with_context(|| format!("removing {}", cache.display()))?;
        eprintln!("==> removed {}", cache.display());
    }
    eprintln!(
        "==> machine prepared ({:.0} s)",
        started.elapsed().as_secs_f64()
    );
    if o.prepare_only {
        return Ok(());
    }

    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(root)
        .output()?;
    if !dirty.stdout.is_empty() {
        eprintln!("warning: the work tree has uncommitted changes; the clone checks HEAD only");
    }
    let clone = std::env::temp_dir().join(format!("gatewarden-fresh-{}", std::process::id()));
    let mut c = Command::new("git");
    c.args(["clone", "--quiet", "--no-hardlinks"])
        .arg(root)
        .arg(&clone);
    step("a clean clone of HEAD", c)?;

    let runs: Vec<(&str, Vec<&str>)> = if o.ci {
        vec![("bash .ci/run (CI=true)", vec!["bash", ".ci/run"])]
    } else {
        vec![
            (
                "cargo xtask demo --epochs 3",
                vec![
                    "cargo",
                    "xtask",
                    "demo",
                    "--epochs",
                    "3",
                    "--api",
                    "127.0.0.1:0",
                ],
            ),
            ("cargo xtask test", vec!["cargo", "xtask", "test"]),
        ]
    };
    for (what, argv) in runs {
        let mut c = Command::new(argv[0]);
        c.args(&argv[1..]).current_dir(&clone);
        clean_env(&mut c);
        if o.ci {
            c.env("CI", "true");
        }
        timings.push((what.to_owned(), step(what, c)?));
    }
    eprintln!("==> fresh-check passed:");
    for (what, s) in &timings {
        eprintln!("    {what}: {:.1} min", s / 60.0);
    }
    eprintln!(
        "    in all: {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    if o.keep {
        eprintln!("    clone kept in {}", clone.display());
    } else {
        std::fs::remove_dir_all(&clone).ok();
    }
    Ok(())
}

/// Drop what `cargo xtask` put into this process's environment (the toolchain rustup chose,
/// cargo's own variables, a test database), so the clone runs as from a new shell.
fn clean_env(c: &mut Command) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        let cargo_var = k.starts_with("CARGO") && k != "CARGO_HOME";
        if cargo_var
            || k.starts_with("RUSTUP_TOOLCHAIN")
            || k == "RUST_RECURSION_COUNT"
            || k == "RUSTC"
            || k == "RUSTDOC"
            || k == "GW_TEST_POSTGRES_URL"
            || k == "CI"
        {
            c.env_remove(&k);
        }
    }
}
