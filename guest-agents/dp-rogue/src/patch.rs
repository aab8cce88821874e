//! `--patch`: a process's code changed after it registered a hop slot, as a compromised
//! kernel or root would change a genuine middlebox once the hypervisor has measured it.
//!
//! The process registers a stage of a chain of its own, tags a packet (which must work), then
//! changes one byte of a function it never runs (so it keeps working) and tags again:
//!
//! - `kernel`: the guest kernel writes the byte in place through its linear map (`gwhvc.ko
//!   poke=`, at the address `/proc/self/pagemap` gives). The page is held read-only in stage 2,
//!   so the write traps; the hypervisor ends the measurement and lets it complete.
//! - `cow`: a write through `/proc/self/mem`, as a debugger's breakpoint: the kernel copies the
//!   page, so the process runs from another physical page with other contents.
//! - `none`: nothing changes (the benign twin; the second tag must work too).
//!
//! Prints `{"before": .., "after": .., "patched": ..}`; the hypervisor must refuse the second
//! tag for `kernel` and `cow` (`tests/tests/qemu_aarch64.rs`).

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result, bail};

/// How the code changes between the two tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum How {
    /// No change (the benign twin).
    None,
    /// The kernel writes the physical page in place.
    Kernel,
    /// A write through `/proc/self/mem` (copy on write).
    Cow,
}

const PAGE: u64 = 4096;

/// Code this program never runs: the byte the patches change, so the process keeps working.
#[inline(never)]
fn never_called() -> u64 {
    std::hint::black_box(0x6761_7465_7761_7264)
}

/// A byte inside [`never_called`]'s code (past its first instruction).
fn patch_target() -> u64 {
    never_called as fn() -> u64 as usize as u64 + 4
}

/// The physical address behind `va` (root reads page frame numbers from the pagemap).
fn physical(va: u64) -> Result<u64> {
    let pagemap = File::open("/proc/self/pagemap")?;
    let mut e = [0u8; 8];
    pagemap.read_exact_at(&mut e, va / PAGE * 8)?;
    let e = u64::from_le_bytes(e);
    if e >> 63 == 0 || e & ((1 << 55) - 1) == 0 {
        bail!("{va:#x} is not resident or its frame is hidden (pagemap entry {e:#x})");
    }
    Ok((e & ((1 << 55) - 1)) * PAGE + va % PAGE)
}

fn read_byte(mem: &File, va: u64) -> Result<u8> {
    let mut b = [0u8; 1];
    mem.read_exact_at(&mut b, va)?;
    Ok(b[0])
}

fn run(cmd: &str) -> Result<()> {
    let st = std::process::Command::new("sh")
        .args(["-c", cmd])
        .status()?;
    if !st.success() {
        bail!("{cmd}: {st}");
    }
    Ok(())
}

/// Register, tag, change the code `how`, tag again; print the summary.
pub fn patch(
    how: How,
    transport: gw_hcall::TransportKind,
    monitor: &std::path::Path,
) -> Result<()> {
    let mut client = gw_hcall::open(transport, monitor)?;
    // A chain of our own (stage 1 of 2), so no real stage is disturbed.
    let chain = 0x7e57_0000 | (std::process::id() & 0xffff);
    let (slot, _pcr) = client
        .hop_register(chain, 1, 2, "rogue", env!("CARGO_PKG_VERSION"))
        .context("registering a stage")?;
    let answer = |r: gw_hcall::CallResult<_>| match r {
        Ok(_) => "tagged".to_owned(),
        Err(e) => e.to_string(),
    };
    let before = answer(client.hop_tag(slot, b"before the patch"));
    let va = patch_target();
    let mem = File::options()
        .read(true)
        .write(true)
        .open("/proc/self/mem")?;
    let old = read_byte(&mem, va)?;
    match how {
        How::None => {}
        How::Kernel => {
            let pa = physical(va)?;
            let _ = run("rmmod gwhvc 2>/dev/null");
            run(&format!("insmod /lib/modules/extra/gwhvc.ko poke={pa:#x}"))?;
            run("rmmod gwhvc")?;
        }
        How::Cow => mem.write_all_at(&[old ^ 1], va)?,
    }
    let now = read_byte(&mem, va)?;
    let after = answer(client.hop_tag(slot, b"after the patch"));
    println!(
        "{}",
        serde_json::json!({
            "how": format!("{how:?}").to_lowercase(),
            "before": before,
            "after": after,
            "patched": now != old,
            "va": format!("{va:#x}"),
        })
    );
    Ok(())
}
