//! `cargo xtask fetch-guest`: Debian's own guest kernel and busybox, downloaded once into a cache,
//! and (for arm64) the kernel's headers, to build the guest kernel module against.
//!
//! The packages come from the machine's configured Debian archive through apt, so they are
//! Debian's signed, reproducible builds. Nothing fetched is committed: the cache lives under
//! `.cache/guest/<arch>/` (ignored by git).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};

use crate::setup::which;

/// A guest architecture as Debian names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Arch {
    /// 64-bit ARM (qemu-virt, Raspberry Pi 3/4).
    Arm64,
    /// x86_64 (x86-pc).
    Amd64,
}

impl Arch {
    /// Debian's name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Arm64 => "arm64",
            Arch::Amd64 => "amd64",
        }
    }
}

/// What `fetch-guest` leaves in the cache.
#[derive(Debug, Clone)]
pub struct GuestFiles {
    /// Uncompressed kernel image (arm64 `Image` / x86 `bzImage`).
    pub kernel: PathBuf,
    /// Kernel release, e.g. `6.1.0-56-cloud-arm64`.
    pub release: String,
    /// Static busybox.
    pub busybox: PathBuf,
    /// Debian's static 32-bit Arm (armhf) busybox, arm64 guests only: an AArch32 process for
    /// the tests (`/bin/busybox32` in the image).
    pub busybox32: Option<PathBuf>,
    /// Root of the extracted kernel package (modules under `lib/modules/<release>`).
    pub kernel_root: PathBuf,
    /// The kernel's build directory for out-of-tree modules (`make -C` here), arm64 only:
    /// Debian's headers with the host's kbuild tools.
    pub headers: Option<PathBuf>,
}

fn cache_dir(root: &Path, arch: Arch) -> PathBuf {
    root.join(".cache/guest").join(arch.debian())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd.get_program(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn host_arch() -> Result<String> {
    Ok(output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned())
}

/// Make apt able to download packages for `arch` (adds the foreign architecture if needed).
fn ensure_architecture(debian: &str) -> Result<()> {
    if host_arch()? == debian {
        return Ok(());
    }
    let foreign = output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if foreign.lines().any(|l| l.trim() == debian) {
        return Ok(());
    }
    eprintln!(
        "==> adding the {debian} architecture to apt (dpkg --add-architecture; apt-get update)"
    );
    let status = Command::new("dpkg")
        .args(["--add-architecture", debian])
        .status()?;
    if !status.success() {
        bail!("dpkg --add-architecture {debian} failed (are you root?)");
    }
    let status = Command::new("apt-get").args(["update", "-q"]).status()?;
    if !status.success() {
        bail!("apt-get update failed");
    }
    Ok(())
}

/// The packages `linux-headers-<release>` depends on by name (`<…>` and `:arch` stripped).
pub fn parse_dependencies(depends: &str) -> Vec<String> {
    depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|p| {
            let p = p.trim().trim_start_matches('<').trim_end_matches('>');
            p.split(':').next().unwrap_or("").to_owned()
        })
        .collect()
}

/// The versioned kernel package behind a Debian kernel metapackage (`linux-image-cloud-arm64`,
/// `linux-image-arm64`): the dependency named `linux-image-<version><suffix>`, where `suffix` is
/// the flavour's (`-cloud-arm64`, `-arm64`) and the version starts with a digit (so
/// `-arm64` does not also match `-cloud-arm64` or `-rt-arm64`).
pub fn parse_kernel_dependency(depends: &str, suffix: &str) -> Option<String> {
    depends
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|p| p.trim().split(':').next().unwrap_or("").to_owned())
        .find(|p| {
            p.strip_prefix("linux-image-")
                .and_then(|v| v.strip_suffix(suffix))
                .is_some_and(|v| {
                    v.starts_with(|c: char| c.is_ascii_digit())
                        && v.chars()
                            .all(|c| c.is_ascii_digit() || c == '.' || c == '-')
                })
        })
}

fn download(dir: &Path, package: &str) -> Result<PathBuf> {
    let (name, arch) = package.split_once(':').unwrap_or((package, ""));
    let prefix = format!("{name}_");
    // One package in two architectures (busybox for arm64 and armhf) are two files.
    let arch_ok = |file: &str| {
        arch.is_empty() || file.ends_with(&format!("_{arch}.deb")) || file.ends_with("_all.deb")
    };
    let find = || -> Result<Option<PathBuf>> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(&prefix) && name.ends_with(".deb") && arch_ok(name) {
                return Ok(Some(p));
            }
        }
        Ok(None)
    };
    if let Some(p) = find()? {
        eprintln!("    cached {}", p.display());
        return Ok(p);
    }
    eprintln!("==> downloading {package}");
    let status = Command::new("apt-get")
        .args(["download", package])
        .current_dir(dir)
        .status()?;
    if !status.success() {
        bail!("apt-get download {package} failed");
    }
    find()?.with_context(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            dir.display()
        )
    })
}

fn extract(deb: &Path, into: &Path) -> Result<()> {
    extract_all(&[deb.to_owned()], into)
}

/// Unpack `debs` into one tree at `into` (relative symlinks between them resolve there); a
/// partial unpack is never left at `into`.
fn extract_all(debs: &[PathBuf], into: &Path) -> Result<()> {
    if into.exists() {
        return Ok(());
    }
    let tmp = into.with_extension("partial");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    for deb in debs {
        let status = Command::new("dpkg-deb")
            .arg("-x")
            .arg(deb)
            .arg(&tmp)
            .status()?;
        if !status.success() {
            bail!("dpkg-deb -x {} failed", deb.display());
        }
    }
    std::fs::rename(&tmp, into)?;
    Ok(())
}

/// Debian's headers for `release` (arm64) with the host's kbuild tools, unpacked under `dir`:
/// the arch-specific headers, the common headers they include, and `linux-kbuild-<ver>` for the
/// host architecture (the headers' `scripts/` link to it; the arm64 package's tools would not
/// run here). Returns the directory to pass to `make -C`, its Makefile pointed at the cache.
fn fetch_headers(dir: &Path, debs: &Path, release: &str, arch: Arch) -> Result<PathBuf> {
    let pkg = format!("linux-headers-{release}:{}", arch.debian());
    let depends = output(Command::new("apt-cache").args(["depends", &pkg]))?;
    let deps = parse_dependencies(&depends);
    let common = deps
        .iter()
        .find(|d| d.starts_with("linux-headers-") && d.ends_with("-common"))
        .with_context(|| format!("{pkg} depends on no linux-headers-*-common"))?;
    let kbuild = deps
        .iter()
        .find(|d| d.starts_with("linux-kbuild-"))
        .with_context(|| format!("{pkg} depends on no linux-kbuild-*"))?;
    let files = vec![
        download(debs, &pkg)?,
        download(debs, common)?,
        download(debs, &format!("{kbuild}:{}", host_arch()?))?,
    ];
    // Per release: a kernel update unpacks its own headers next to the old ones.
    let root = dir.join(format!("headers-{release}"));
    extract_all(&files, &root)?;
    let build = root.join(format!("usr/src/linux-headers-{release}"));
    if !build.join("Module.symvers").exists() {
        bail!("{} has no Module.symvers", build.display());
    }
    // Debian's arch Makefile includes the common headers by absolute path (/usr/src/…):
    // point it at the unpacked copy (again each time: the cache may have moved), so the
    // directory returned is ready for `make -C`.
    let common = std::fs::read_to_string(build.join("Makefile"))?;
    let target = common
        .lines()
        .find_map(|l| l.strip_prefix("include "))
        .context("the headers' Makefile includes nothing")?
        .trim()
        .to_owned();
    let name = Path::new(&target)
        .parent()
        .and_then(|p| p.file_name())
        .context("unexpected include in the headers' Makefile")?;
    let local = build
        .parent()
        .context("headers directory without a parent")?
        .join(name)
        .join("Makefile");
    if Path::new(&target) != local {
        std::fs::write(
            build.join("Makefile"),
            format!("include {}\n", local.display()),
        )?;
    }
    Ok(build)
}

/// Download (once) and unpack the guest kernel of `flavour` (the board's `kernel.flavour`) and
/// busybox for `arch`.
/// The boot firmware of a board that boots from an SD card: Debian's `package` (from the
/// `non-free-firmware` component) unpacked once into `.cache/firmware/`; the directory with
/// its files (`usr/lib/<package>`) and its copyright file.
pub fn fetch_firmware(root: &Path, package: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = root.join(".cache/firmware");
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    let unpacked = dir.join(package);
    if !unpacked.exists() {
        crate::setup::non_free_firmware(package)?;
        let deb = download(&debs, package)?;
        extract(&deb, &unpacked)?;
    }
    let files = unpacked.join("usr/lib").join(package);
    let copyright = unpacked
        .join("usr/share/doc")
        .join(package)
        .join("copyright");
    if !files.is_dir() {
        bail!(
            "{package} has no usr/lib/{package}/ ({})",
            unpacked.display()
        );
    }
    Ok((files, copyright))
}

pub fn fetch_guest(
    root: &Path,
    arch: Arch,
    flavour: gw_board::KernelFlavour,
) -> Result<GuestFiles> {
    if which("apt-get").is_none() || which("dpkg-deb").is_none() {
        bail!(
            "fetch-guest needs apt-get and dpkg-deb (a Debian or Ubuntu host); install them or copy a cache from such a host into .cache/guest/"
        );
    }
    let dir = cache_dir(root, arch);
    let debs = dir.join("debs");
    std::fs::create_dir_all(&debs).with_context(|| format!("creating {}", debs.display()))?;
    ensure_architecture(arch.debian())?;
    let meta = format!(
        "{}:{}",
        flavour.debian_metapackage(arch.debian()),
        arch.debian()
    );
    let depends = output(Command::new("apt-cache").args(["depends", &meta]))?;
    let kernel_pkg = parse_kernel_dependency(&depends, &flavour.release_suffix(arch.debian()))
        .with_context(|| {
            format!(
                "cannot resolve the kernel behind {meta}; is the Debian archive in apt's sources?"
            )
        })?;
    let release = kernel_pkg.trim_start_matches("linux-image-").to_owned();
    let kernel_deb = download(&debs, &format!("{kernel_pkg}:{}", arch.debian()))?;
    let busybox_deb = download(&debs, &format!("busybox-static:{}", arch.debian()))?;
    // Per release, like the headers: a kernel update unpacks next to the old one.
    let kernel_root = dir.join(format!("kernel-{release}"));
    let busybox_root = dir.join("busybox");
    extract(&kernel_deb, &kernel_root)?;
    extract(&busybox_deb, &busybox_root)?;

    let vmlinuz = kernel_root.join(format!("boot/vmlinuz-{release}"));
    let kernel = dir.join(format!("Image-{release}"));
    if !kernel.exists() {
        let raw =
            std::fs::read(&vmlinuz).with_context(|| format!("reading {}", vmlinuz.display()))?;
        // arm64 kernels are shipped gzip-compressed (the boot protocol needs the raw Image);
        // x86 bzImage is self-decompressing and used as is.
        let image = if raw.starts_with(&[0x1f, 0x8b]) {
            let mut out = Vec::new();
            use std::io::Read;
            flate2::read::GzDecoder::new(&raw[..])
                .read_to_end(&mut out)
                .context("decompressing the kernel")?;
            out
        } else {
            raw
        };
        std::fs::write(&kernel, image)?;
    }
    let busybox = busybox_root.join("bin/busybox");
    if !busybox.exists() {
        bail!("busybox-static package has no bin/busybox");
    }
    // arm64 guests also get Debian's 32-bit (armhf) busybox, to test AArch32 processes.
    let busybox32 = match arch {
        Arch::Arm64 => {
            ensure_architecture("armhf")?;
            let deb = download(&debs, "busybox-static:armhf")?;
            let root = dir.join("busybox-armhf");
            extract(&deb, &root)?;
            let bin = root.join("bin/busybox");
            if !bin.exists() {
                bail!("busybox-static:armhf package has no bin/busybox");
            }
            Some(bin)
        }
        Arch::Amd64 => None,
    };
    let headers = match arch {
        Arch::Arm64 => Some(fetch_headers(&dir, &debs, &release, arch)?),
        Arch::Amd64 => None,
    };
    Ok(GuestFiles {
        kernel,
        release,
        busybox,
        busybox32,
        kernel_root,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_the_versioned_kernel() {
        use gw_board::KernelFlavour::{Cloud, Generic};
        let dep = |out: &str, f: gw_board::KernelFlavour, arch: &str| {
            parse_kernel_dependency(out, &f.release_suffix(arch))
        };
        let out =
            "linux-image-cloud-arm64:arm64\n  Depends: linux-image-6.1.0-56-cloud-arm64:arm64\n";
        assert_eq!(
            dep(out, Cloud, "arm64").as_deref(),
            Some("linux-image-6.1.0-56-cloud-arm64")
        );
        let out = "linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n";
        assert_eq!(
            dep(out, Cloud, "amd64").as_deref(),
            Some("linux-image-6.1.0-56-cloud-amd64")
        );
        // The generic flavour: the cloud and rt packages do not count as generic ones.
        let out = "linux-image-arm64:arm64\n  Depends: linux-image-6.1.0-56-cloud-arm64\n  \
                   Depends: linux-image-6.1.0-56-rt-arm64\n  Depends: linux-image-6.1.0-56-arm64:arm64\n";
        assert_eq!(
            dep(out, Generic, "arm64").as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
        assert_eq!(
            dep(
                "linux-image-arm64\n  Depends: linux-image-6.1.0-56-cloud-arm64\n",
                Generic,
                "arm64"
            ),
            None
        );
        assert_eq!(Generic.debian_metapackage("arm64"), "linux-image-arm64");
        assert_eq!(Cloud.debian_metapackage("arm64"), "linux-image-cloud-arm64");
        assert_eq!(dep("nothing here", Cloud, "arm64"), None);
    }

    #[test]
    fn lists_the_headers_dependencies() {
        let out = "linux-headers-6.1.0-56-cloud-arm64:arm64\n  Depends: <linux-headers-6.1.0-56-common:arm64>\n    linux-headers-6.1.0-56-common\n  Depends: linux-kbuild-6.1:arm64\n    linux-kbuild-6.1\n  Depends: gcc-12:arm64\n";
        assert_eq!(
            parse_dependencies(out),
            [
                "linux-headers-6.1.0-56-common",
                "linux-kbuild-6.1",
                "gcc-12"
            ]
        );
    }
}
