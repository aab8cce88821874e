//! Provisioning an image for a fleet: the vendor key that endorses gateways and signs
//! reference manifests, the controller a gateway trusts, and the reference values of what the
//! hypervisor measures at run time.

use std::{
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, bail};
use ed25519_dalek::SigningKey;
use object::{Object, ObjectSegment};

/// The vendor's signing key (`.cache/vendor.key`, created on first use, mode 0600). A real
/// vendor keeps this key offline; this one is the development fleet's.
pub fn vendor_key(root: &Path) -> Result<SigningKey> {
    let path = root.join(".cache/vendor.key");
    if !path.exists() {
        std::fs::create_dir_all(root.join(".cache"))?;
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| anyhow::anyhow!("random vendor key: {e}"))?;
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(crate::image::hex(&secret).as_bytes())?;
        eprintln!("==> created the development vendor key {}", path.display());
    }
    let text = std::fs::read_to_string(&path)?;
    let secret = gw_proto::hex32(&text)
        .with_context(|| format!("{} is not 64 hex digits", path.display()))?;
    Ok(SigningKey::from_bytes(&secret))
}

/// What an image needs to know about the controller it reports to.
pub struct ControllerInfo {
    /// Fleet CA certificate (PEM).
    pub ca_pem: Vec<u8>,
    /// The controller's policy/command public key.
    pub command_key: [u8; 32],
}

/// The controller state in `dir`, created with `gw-controller init` if missing.
pub fn controller(root: &Path, dir: &Path) -> Result<ControllerInfo> {
    if !dir.join("ca.cert.pem").exists() {
        let mut b = crate::cargo();
        b.args(["build", "--workspace", "--bins"]);
        crate::run("the controller (for its keys)", b)?;
        let mut init = Command::new(root.join("target/debug/gw-controller"));
        init.arg("--state-dir").arg(dir).arg("init");
        crate::run("controller keys and fleet CA", init)?;
    }
    let ca_pem = std::fs::read(dir.join("ca.cert.pem"))
        .with_context(|| format!("reading {}", dir.join("ca.cert.pem").display()))?;
    let secret = std::fs::read_to_string(dir.join("command.key"))?;
    let key = SigningKey::from_bytes(
        &gw_proto::hex32(&secret).context("command.key is not 64 hex digits")?,
    );
    Ok(ControllerInfo {
        ca_pem,
        command_key: key.verifying_key().to_bytes(),
    })
}

/// Default controller state directory for a board's image.
pub fn default_controller_dir(root: &Path, board: &str) -> PathBuf {
    root.join("target/gatewarden")
        .join(board)
        .join("controller")
}

/// The program identity the hypervisor gives a process running `elf` (`docs/abi.md`, "Program
/// identity"): its executable pages as the loader maps them (whole pages of the file, zero past
/// its end), grouped into runs of consecutive pages and hashed by `vtpm::code`. The kernel's
/// vDSO is not the program's and is left out, as the hypervisor leaves it out. For the static
/// executables of the image (no interpreter, no shared libraries) this is all of their code.
pub fn el0_program_id(elf: &[u8]) -> Result<[u8; 32]> {
    use object::SegmentFlags;
    const PAGE: u64 = vtpm::code::PAGE as u64;
    let file = object::File::parse(elf).context("parsing the program's ELF")?;
    // Executable segments as (first page, end page, file offset of the first page).
    let mut segs: Vec<(u64, u64, u64)> = file
        .segments()
        .filter(|s| {
            matches!(s.flags(), SegmentFlags::Elf { p_flags, .. } if p_flags.0 & object::elf::PF_X.0 != 0)
        })
        .map(|s| {
            let (off, _) = s.file_range();
            let start = s.address() & !(PAGE - 1);
            let end = (s.address() + s.size()).div_ceil(PAGE) * PAGE;
            (start, end, off - (s.address() - start))
        })
        .collect();
    if segs.is_empty() {
        bail!("the program has no executable segment");
    }
    if file.section_by_name(".interp").is_some() {
        bail!("the program is dynamically linked; the image's programs are static");
    }
    segs.sort();
    let page_at = |off: u64| {
        let mut p = [0u8; vtpm::code::PAGE];
        let from = (off as usize).min(elf.len());
        let n = (elf.len() - from).min(p.len());
        p[..n].copy_from_slice(&elf[from..from + n]);
        p
    };
    let mut runs = Vec::new();
    let mut run: Option<(vtpm::code::RunHasher, u64)> = None;
    for (start, end, off) in segs {
        for (k, va) in (start..end).step_by(PAGE as usize).enumerate() {
            match &mut run {
                Some((_, next)) if *next == va => {}
                Some((_, next)) if *next > va => bail!("executable segments overlap at {va:#x}"),
                _ => {
                    if let Some((h, _)) = run.take() {
                        runs.push(h.finish());
                    }
                    run = Some((vtpm::code::RunHasher::new(), va));
                }
            }
            let (h, next) = run.as_mut().expect("a run is open");
            h.page(&page_at(off + k as u64 * PAGE));
            *next = va + PAGE;
        }
    }
    if let Some((h, _)) = run {
        runs.push(h.finish());
    }
    Ok(vtpm::code::identity(&mut runs))
}
