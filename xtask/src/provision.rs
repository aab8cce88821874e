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
use object::{Object, ObjectSegment, ObjectSymbol};

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

/// The program identity the hypervisor gives an EL0 caller of `elf`: SHA-256 of the 4 KiB
/// code page holding the store that traps into the call window (see `docs/abi.md`). Found
/// through the symbol of the window transport's call and the store's fixed encoding.
pub fn el0_program_id(elf: &[u8]) -> Result<[u8; 32]> {
    // `str x0, [x5]`: the trapping store the window transport's inline assembly emits.
    const STORE: [u8; 4] = 0xF900_00A0u32.to_le_bytes();
    let file = object::File::parse(elf).context("parsing the program's ELF")?;
    let sym = file
        .symbols()
        .find(|s| {
            s.name()
                .is_ok_and(|n| n.contains("WindowTransport") && n.contains("Transport$GT$4call"))
        })
        .context("the program has no window-transport call symbol (was it stripped?)")?;
    let (start, size) = (sym.address(), sym.size());
    let seg = file
        .segments()
        .find(|s| s.address() <= start && start + size <= s.address() + s.size())
        .context("window call outside any segment")?;
    let (seg_off, _) = seg.file_range();
    let file_at = |vaddr: u64| (vaddr - seg.address() + seg_off) as usize;
    let code = &elf[file_at(start)..file_at(start + size)];
    let hits: Vec<usize> = code
        .chunks_exact(4)
        .enumerate()
        .filter(|(_, w)| *w == STORE)
        .map(|(i, _)| i * 4)
        .collect();
    let [at] = hits[..] else {
        bail!(
            "expected one trapping store in the window call, found {}",
            hits.len()
        );
    };
    // The loader maps whole pages and file offsets are congruent to addresses modulo the page
    // size, so the page's bytes start at the store's offset rounded down.
    let store = start + at as u64;
    let from = file_at(store) - (store & 0xfff) as usize;
    let mut bytes = [0u8; 4096];
    let n = elf.len().saturating_sub(from).min(4096);
    bytes[..n].copy_from_slice(&elf[from..from + n]);
    Ok(vtpm::sha256(&bytes))
}
