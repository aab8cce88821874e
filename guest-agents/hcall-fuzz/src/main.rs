//! `gw-hcall-fuzz`: random and malformed hypercalls through the hypervisor's EL0 call window.
//!
//! Every call must come back (no hang, no crash of guest or hypervisor) with success or a
//! defined error code; calls malformed by construction must get the error the ABI specifies.
//! Prints a JSON summary and exits non-zero on any unexpected answer.

use anyhow::Result;
use clap::Parser;

/// Send random and malformed hypercalls and check the answers (aarch64 guests, needs root).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Number of calls.
    #[arg(long, default_value_t = 10_000)]
    count: u32,
    /// Random seed (the run is reproducible for a seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instead of fuzzing, time N null calls (register-only VERSION) in counter ticks.
    #[arg(long)]
    null_calls: Option<u32>,
    /// Instead of fuzzing, time N HOP_TAG + HOP_CHECK pairs per packet size (64, 512, 1,500
    /// bytes) on a benchmark chain (registers a hop slot: the quote shows it).
    #[arg(long)]
    hop_calls: Option<u32>,
    /// Instead of fuzzing, make N buffer calls with every FP/SIMD register loaded with a
    /// pattern, and count the calls after which any register differs (the hypervisor uses
    /// those registers itself and must give the guest's back).
    #[arg(long)]
    fp_check: Option<u32>,
    /// A physical address of hypervisor memory on this board (a buffer there must never be
    /// reached). Default: qemu-virt's image (boards/qemu-virt/board.toml).
    #[arg(long, value_parser = parse_address, default_value = "0x40080000")]
    hv_phys: u64,
    /// Physical pages of devices the guest is not given, or given but never RAM, comma
    /// separated (a buffer there is refused). Default: qemu-virt's fw_cfg, virtio-mmio and
    /// platform-bus holes and an empty part of its PCIe window (the UART and other claimed
    /// devices cannot be mapped through /dev/mem).
    #[arg(long, value_parser = parse_address, value_delimiter = ',',
          default_value = "0x9020000,0xa000000,0xc000000,0x10100000")]
    device_pages: Vec<u64>,
}

/// A physical address in hex (`0x…`) or decimal.
fn parse_address(s: &str) -> Result<u64, String> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .map_err(|e| format!("{s:?} is not an address: {e}"))
}

#[cfg(all(target_arch = "aarch64", target_os = "linux"))]
fn main() -> Result<()> {
    fuzz::run(Args::parse())
}

#[cfg(not(all(target_arch = "aarch64", target_os = "linux")))]
fn main() -> Result<()> {
    let _ = Args::parse();
    anyhow::bail!("gw-hcall-fuzz runs in aarch64 Linux guests under gatewarden-hv")
}

#[cfg(all(target_arch = "aarch64", target_os = "linux"))]
mod fuzz {
    use std::collections::BTreeMap;

    use anyhow::{Context, Result};
    use gw_abi::{AbiError, Function, MAX_REQUEST};
    use gw_hcall::window::WindowTransport;
    use rand::{Rng, SeedableRng, rngs::SmallRng};

    /// Arena size; one inaccessible guard page follows it.
    const ARENA: usize = 64 * 1024;

    fn ticks() -> u64 {
        let t: u64;
        // SAFETY: reading the virtual counter (enabled for EL0 by Linux) has no side effects.
        unsafe { core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) t) };
        t
    }

    /// `n` VERSION calls with buffers (the hypervisor copies and encodes, using vector
    /// registers), each with v0-v31 loaded with a fresh pattern before the trapping store and
    /// read back right after it, in one asm block so nothing else touches them; prints how many
    /// calls changed any of them.
    fn fp_check(t: &WindowTransport, n: u32) -> Result<()> {
        let version = Function::Version.aarch64_id() as u64;
        let req = [0u8; 1]; // Request::Version
        let mut resp = vec![1u8; 4096];
        let mut rng = SmallRng::seed_from_u64(n as u64);
        let mut clobbered = 0u32;
        let mut first = None;
        for i in 0..n {
            let mut before = [0u8; 512];
            rng.fill(&mut before[..]);
            let mut after = [0u8; 512];
            resp[0] = 1; // faulted in and writable
            let status: u64;
            // SAFETY: the call writes at most `resp.len()` bytes into `resp` (a buffer call into
            // our own memory); the asm reads `before` and writes `after` (512 bytes each) and
            // declares every vector register it loads as clobbered.
            unsafe {
                core::arch::asm!(
                    "ld1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{src}], #64",
                    "ld1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [{src}], #64",
                    "ld1 {{v8.16b, v9.16b, v10.16b, v11.16b}}, [{src}], #64",
                    "ld1 {{v12.16b, v13.16b, v14.16b, v15.16b}}, [{src}], #64",
                    "ld1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{src}], #64",
                    "ld1 {{v20.16b, v21.16b, v22.16b, v23.16b}}, [{src}], #64",
                    "ld1 {{v24.16b, v25.16b, v26.16b, v27.16b}}, [{src}], #64",
                    "ld1 {{v28.16b, v29.16b, v30.16b, v31.16b}}, [{src}], #64",
                    "str x0, [x5]",
                    "st1 {{v0.16b, v1.16b, v2.16b, v3.16b}}, [{dst}], #64",
                    "st1 {{v4.16b, v5.16b, v6.16b, v7.16b}}, [{dst}], #64",
                    "st1 {{v8.16b, v9.16b, v10.16b, v11.16b}}, [{dst}], #64",
                    "st1 {{v12.16b, v13.16b, v14.16b, v15.16b}}, [{dst}], #64",
                    "st1 {{v16.16b, v17.16b, v18.16b, v19.16b}}, [{dst}], #64",
                    "st1 {{v20.16b, v21.16b, v22.16b, v23.16b}}, [{dst}], #64",
                    "st1 {{v24.16b, v25.16b, v26.16b, v27.16b}}, [{dst}], #64",
                    "st1 {{v28.16b, v29.16b, v30.16b, v31.16b}}, [{dst}], #64",
                    src = inout(reg) before.as_ptr() => _,
                    dst = inout(reg) after.as_mut_ptr() => _,
                    inout("x0") version => status,
                    inout("x1") req.as_ptr() as u64 => _,
                    in("x2") req.len() as u64,
                    in("x3") resp.as_mut_ptr() as u64,
                    in("x4") resp.len() as u64,
                    in("x5") t.window_ptr(),
                    out("v0") _, out("v1") _, out("v2") _, out("v3") _,
                    out("v4") _, out("v5") _, out("v6") _, out("v7") _,
                    out("v8") _, out("v9") _, out("v10") _, out("v11") _,
                    out("v12") _, out("v13") _, out("v14") _, out("v15") _,
                    out("v16") _, out("v17") _, out("v18") _, out("v19") _,
                    out("v20") _, out("v21") _, out("v22") _, out("v23") _,
                    out("v24") _, out("v25") _, out("v26") _, out("v27") _,
                    out("v28") _, out("v29") _, out("v30") _, out("v31") _,
                    options(nostack)
                )
            };
            anyhow::ensure!(status == 0, "VERSION failed: {}", status as i64);
            if before != after {
                clobbered += 1;
                if first.is_none() {
                    let reg = (0..32)
                        .find(|r| before[r * 16..r * 16 + 16] != after[r * 16..r * 16 + 16])
                        .unwrap_or(0);
                    first = Some(format!("call {i}: v{reg}"));
                }
            }
        }
        println!(
            "{}",
            serde_json::json!({"fp_calls": n, "fp_clobbered": clobbered, "first": first})
        );
        anyhow::ensure!(
            clobbered == 0,
            "{clobbered} calls changed the FP/SIMD registers"
        );
        Ok(())
    }

    /// Median and 99th percentile of `n` null calls, in counter ticks, as JSON.
    fn null_calls(t: &WindowTransport, n: u32) -> Result<()> {
        let freq: u64;
        // SAFETY: reading the counter frequency has no side effects.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq) };
        let version = Function::Version.aarch64_id() as u64;
        let mut samples = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let t0 = ticks();
            // SAFETY: register-only call: no buffers.
            let (status, _) = unsafe { t.raw_call(version, 0, 0, 0, 0) };
            let t1 = ticks();
            anyhow::ensure!(status == 0, "null call failed: {}", status as i64);
            samples.push(t1 - t0);
        }
        samples.sort_unstable();
        let pick = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
        println!(
            "{}",
            serde_json::json!({"null_calls": n, "median_ticks": pick(0.5), "p99_ticks": pick(0.99), "counter_hz": freq})
        );
        Ok(())
    }

    /// Median and 99th percentile of `n` HOP_TAG + HOP_CHECK pairs (one hop's cost: the sender's
    /// tag and the receiver's check) per packet size, in counter ticks, as JSON.
    fn hop_calls(n: u32) -> Result<()> {
        let freq: u64;
        // SAFETY: reading the counter frequency has no side effects.
        unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq) };
        let mut client = gw_hcall::Client::new(WindowTransport::open()?);
        // A one-hop chain: its only stage tags and checks hop 0. The id is outside what
        // `gw_chain::chain_id` gives devices in practice and is documented as the bench chain.
        let (slot, _) = client
            .hop_register(u32::MAX - 1, 0, 1, "hop-bench", env!("CARGO_PKG_VERSION"))
            .context("registering the benchmark hop slot")?;
        let mut sizes = Vec::new();
        for size in [64usize, 512, 1500] {
            let packet: Vec<u8> = (0..size).map(|i| i as u8).collect();
            let mut frame = Vec::with_capacity(size + gw_hoptag::TRAILER_LEN);
            let mut samples = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let t0 = ticks();
                let trailer = client.hop_tag(slot, &packet)?;
                frame.clear();
                frame.extend_from_slice(&packet);
                frame.extend_from_slice(&trailer);
                client.hop_check(slot, &frame)?;
                let t1 = ticks();
                samples.push(t1 - t0);
            }
            samples.sort_unstable();
            let pick = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
            sizes.push(serde_json::json!({"bytes": size, "median_ticks": pick(0.5), "p99_ticks": pick(0.99)}));
        }
        println!(
            "{}",
            serde_json::json!({"hop_pairs": n, "counter_hz": freq, "sizes": sizes})
        );
        Ok(())
    }

    pub fn run(args: super::Args) -> Result<()> {
        if let Some(n) = args.hop_calls {
            return hop_calls(n.max(1));
        }
        let t = WindowTransport::open()?;
        if let Some(n) = args.null_calls {
            return null_calls(&t, n.max(1));
        }
        if let Some(n) = args.fp_check {
            return fp_check(&t, n.max(1));
        }
        // SAFETY: a fresh anonymous mapping of the arena plus a guard page, owned here alone.
        let arena = unsafe {
            rustix::mm::mmap_anonymous(
                core::ptr::null_mut(),
                ARENA + 4096,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE,
            )
        }
        .context("mapping the arena")?;
        let base = arena as u64;
        // SAFETY: the last page of our own mapping becomes inaccessible.
        unsafe {
            rustix::mm::mprotect(
                (base + ARENA as u64) as *mut _,
                4096,
                rustix::mm::MprotectFlags::empty(),
            )
        }
        .context("guard page")?;
        // SAFETY: `arena` is ARENA bytes of our own read/write memory.
        let buf = unsafe { core::slice::from_raw_parts_mut(arena as *mut u8, ARENA) };
        buf.fill(0);
        // A user mapping of hypervisor memory: passing its address must never reach it.
        // SAFETY: we never touch the page, only pass its address.
        let (_mem, hv) = unsafe { gw_hcall::window::map_phys_page(args.hv_phys) }
            .context("mapping hypervisor memory")?;
        let hv = hv as u64;
        let mut devices = Vec::new();
        for &pa in &args.device_pages {
            // SAFETY: as above: only the address is passed, the page is never touched.
            let (fd, p) = unsafe { gw_hcall::window::map_phys_page(pa) }
                .with_context(|| format!("mapping device page {pa:#x}"))?;
            devices.push((fd, p as u64));
        }

        let known: Vec<u64> = AbiError::ALL
            .iter()
            .map(|e| e.code() as i64 as u64)
            .collect();
        let mut rng = SmallRng::seed_from_u64(args.seed);
        let mut by_status: BTreeMap<i64, u32> = BTreeMap::new();
        let mut unexpected = Vec::new();
        let version = Function::Version.aarch64_id() as u64;
        for i in 0..args.count {
            let fid = Function::ALL[rng.random_range(0..Function::ALL.len())].aarch64_id() as u64;
            let off = rng.random_range(0..ARENA as u64 / 2);
            let len = rng.random_range(1..512u64);
            let resp = base + ARENA as u64 / 2;
            let resp_cap = ARENA as u64 / 2;
            let (case, call, expect): (&str, [u64; 5], Option<AbiError>) = match i % 10 {
                0 => (
                    "bad id",
                    [
                        rng.random::<u32>() as u64 | 0x1_0000_0000,
                        base,
                        8,
                        resp,
                        resp_cap,
                    ],
                    Some(AbiError::NotSupported),
                ),
                1 => (
                    "unknown call",
                    [
                        0xC600_0000 | rng.random_range(0x50..0xffffu64),
                        base,
                        8,
                        resp,
                        resp_cap,
                    ],
                    Some(AbiError::NotSupported),
                ),
                2 => (
                    "request in hypervisor memory",
                    [fid, hv + rng.random_range(0..4000), len, resp, resp_cap],
                    Some(AbiError::BadAddress),
                ),
                3 => (
                    "response in hypervisor memory",
                    [version, base, 1, hv + rng.random_range(0..4000), 256],
                    Some(AbiError::BadAddress),
                ),
                4 => {
                    let k = rng.random_range(1..64u64);
                    (
                        "request crossing into the guard page",
                        [
                            fid,
                            base + ARENA as u64 - k,
                            k + rng.random_range(1..64),
                            resp,
                            resp_cap,
                        ],
                        Some(AbiError::BadAddress),
                    )
                }
                5 => (
                    "overlapping buffers",
                    [fid, base + off, len + 16, base + off + len / 2, 256],
                    Some(AbiError::BadAddress),
                ),
                6 => (
                    "oversized request",
                    [
                        fid,
                        base,
                        MAX_REQUEST as u64 + rng.random_range(1..1 << 20),
                        resp,
                        resp_cap,
                    ],
                    Some(AbiError::InvalidParameter),
                ),
                7 => (
                    "unmapped address",
                    [
                        fid,
                        rng.random_range(1..0x1000u64) | 0xdead_0000_0000,
                        len,
                        resp,
                        resp_cap,
                    ],
                    Some(AbiError::BadAddress),
                ),
                8 => {
                    let dev = devices[rng.random_range(0..devices.len())].1;
                    if rng.random() {
                        (
                            "request on a device page",
                            [fid, dev + rng.random_range(0..4000), len, resp, resp_cap],
                            Some(AbiError::BadAddress),
                        )
                    } else {
                        (
                            "response on a device page",
                            [version, base, 1, dev + rng.random_range(0..4000), 256],
                            Some(AbiError::BadAddress),
                        )
                    }
                }
                _ => {
                    // Garbage body at a misaligned offset: any defined answer is fine.
                    rng.fill(&mut buf[off as usize..(off + len) as usize]);
                    ("garbage body", [fid, base + off, len, resp, resp_cap], None)
                }
            };
            // SAFETY: response ranges are the upper half of our own arena, or invalid.
            let (status, rlen) = unsafe { t.raw_call(call[0], call[1], call[2], call[3], call[4]) };
            *by_status.entry(status as i64).or_default() += 1;
            let ok = match expect {
                Some(e) => status == e.code() as i64 as u64,
                None => (status == 0 && rlen <= resp_cap) || known.contains(&status),
            };
            if !ok {
                unexpected.push(serde_json::json!({"call": i, "case": case, "regs": call.map(|r| format!("{r:#x}")), "status": status as i64}));
            }
        }
        // The hypervisor still serves well-formed calls.
        // SAFETY: the response range is our own arena.
        let (status, _) = unsafe { t.raw_call(version, 0, 0, 0, 0) };
        println!(
            "{}",
            serde_json::json!({
                "calls": args.count,
                "seed": args.seed,
                "unexpected": unexpected.len(),
                "examples": unexpected.iter().take(5).collect::<Vec<_>>(),
                "by_status": by_status.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
                "version_after": status as i64,
            })
        );
        anyhow::ensure!(
            unexpected.is_empty() && status == 0,
            "{} unexpected answers",
            unexpected.len()
        );
        Ok(())
    }
}
