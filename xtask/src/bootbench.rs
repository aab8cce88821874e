//! `cargo xtask bench boot`: guest boot time under the hypervisor vs the same kernel and
//! initramfs on bare QEMU, measured alternately in one run, and the null-hypercall cost from EL0
//! (the call window, `gw-hcall-fuzz`) and from EL1 (HVC, the `gwhvc.ko` kernel module).

use std::{
    fmt::Write as _,
    io::{Read, Write},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::{fetch, image};

const READY: &str = "gatewarden-guest: up";

/// Boot `q`, return the time until the guest's init prints READY, and optionally run a shell
/// command afterwards (after typing `keys`, which give the guest's console the keyboard) and
/// return its output.
fn boot(mut q: Command, keys: &str, then: Option<&str>) -> Result<(Duration, String)> {
    let started = Instant::now();
    let mut child = q
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting QEMU")?;
    let mut stdout = child.stdout.take().context("QEMU stdout")?;
    let mut stdin = child.stdin.take().context("QEMU stdin")?;
    let out = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&out);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let wait = |needle: &str, from: usize| -> Result<usize> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(i) = out.lock().unwrap()[from..].find(needle) {
                return Ok(from + i + needle.len());
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {needle:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let at = wait(READY, 0)?;
    let elapsed = started.elapsed();
    let mut result = String::new();
    if let Some(cmd) = then {
        wait("# ", at)?;
        stdin.write_all(keys.as_bytes())?;
        writeln!(stdin, "{cmd}; echo __bench_done__")?;
        let end = wait("__bench_done__", wait("__bench_done__", at)?)?;
        result = out.lock().unwrap()[at..end].to_owned();
    }
    let _ = child.kill();
    let _ = child.wait();
    Ok((elapsed, result))
}

/// The kernel module's timing line.
#[derive(Debug, PartialEq)]
struct El1Null {
    calls: u64,
    median: u64,
    p99: u64,
    hz: u64,
}

/// Parse `gwhvc: null HVC x<N>: median <M> p99 <P> min <m> ticks, counter <F> Hz`.
fn parse_el1(line: &str) -> Option<El1Null> {
    let rest = line.strip_prefix("gwhvc: null HVC x")?;
    let (calls, rest) = rest.split_once(':')?;
    let words: Vec<&str> = rest.split_whitespace().collect();
    let after = |key: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == key)?;
        words.get(i + 1)?.trim_end_matches(',').parse().ok()
    };
    Some(El1Null {
        calls: calls.parse().ok()?,
        median: after("median")?,
        p99: after("p99")?,
        hz: after("counter")?,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Run the boot benchmark on `board` and return the report section.
pub fn bench_boot(root: &Path, board: &str, runs: usize) -> Result<String> {
    crate::setup::qemu(image::board_qemu(root, board)?)?;
    let img = image::image(root, board, &image::ImageOptions::for_board(root, board))?;
    let b = image::board_data(root, board)?;
    let guest = fetch::fetch_guest(root, fetch::Arch::Arm64, b.kernel.flavour)?;
    let dir = root.join("target/gatewarden").join(board);
    let initramfs = dir.join("initramfs.cpio");
    let smp = img.fixed_cpus.unwrap_or(2);
    let bare = || {
        let mut q = Command::new("qemu-system-aarch64");
        if b.dtb.is_some() {
            // The board's own machine and devices, the kernel in place of the hypervisor, the
            // initramfs in place of the bundle, and the loader's spin table left in the tree.
            let mut args = img.qemu_args.clone();
            for (flag, with) in [
                ("-kernel", guest.kernel.clone()),
                ("-initrd", initramfs.clone()),
                ("-dtb", dir.join("qemu-bare.dtb")),
            ] {
                if let Some(i) = args.iter().position(|a| a == flag) {
                    args[i + 1] = with.display().to_string();
                }
            }
            q.args(args);
        } else {
            q.args([
                "-M",
                "virt,highmem=off,gic-version=3",
                "-cpu",
                "cortex-a72",
                "-m",
                "1G",
            ]);
            q.args(["-nographic", "-nic", "none", "-no-reboot"]);
            q.arg("-kernel")
                .arg(&guest.kernel)
                .arg("-initrd")
                .arg(&initramfs);
            q.args(["-append", "console=ttyAMA0 rdinit=/init panic=-1"]);
        }
        q.args(["-smp", &smp.to_string()]);
        q
    };
    let (mut t_bare, mut t_hv) = (Vec::new(), Vec::new());
    let (mut null, mut el1) = (String::new(), String::new());
    for i in 0..runs {
        eprintln!(
            "==> boot run {}/{runs}: bare QEMU, then under the hypervisor",
            i + 1
        );
        t_bare.push(boot(bare(), "", None)?.0.as_secs_f64());
        let then = (i == 0).then_some(
            "gw-hcall-fuzz --null-calls 10000; insmod /lib/modules/extra/gwhvc.ko bench=10000 malformed=0; dmesg | grep -o 'gwhvc: null HVC.*'",
        );
        let keys = b.qemu.as_ref().map(image::console_keys).unwrap_or_default();
        let (t, out) = boot(image::qemu_command(&img, 2)?, &keys, then)?;
        t_hv.push(t.as_secs_f64());
        if i == 0 {
            null = out
                .lines()
                .find(|l| l.trim_start().starts_with('{'))
                .unwrap_or("")
                .trim()
                .to_owned();
            el1 = out
                .lines()
                .find(|l| l.starts_with("gwhvc: null HVC"))
                .unwrap_or("")
                .trim()
                .to_owned();
        }
    }
    let (mb, mh) = (median(&mut t_bare), median(&mut t_hv));
    let nc: serde_json::Value =
        serde_json::from_str(&null).with_context(|| format!("null-call output {null:?}"))?;
    let hz = nc["counter_hz"].as_f64().unwrap_or(0.0);
    let ticks = |k: &str| nc[k].as_f64().unwrap_or(0.0);
    let mut s = String::new();
    writeln!(s, "## QEMU: boot time and null hypercall ({board}, TCG)\n")?;
    let machine = b.qemu.as_ref().map_or("", |q| q.machine.as_str());
    writeln!(
        s,
        "`cargo xtask bench boot --board {board}`: {runs} boots each, alternating, same kernel ({}) and initramfs, `-M {machine} -smp {smp}`; time from QEMU start to the guest's init line.\n",
        guest.release
    )?;
    writeln!(s, "| measurement | value |\n|---|---|")?;
    let bare_entry = if b.dtb.is_some() {
        "the loader enters the kernel at EL2"
    } else {
        "kernel at EL1"
    };
    writeln!(
        s,
        "| boot to init, bare QEMU ({bare_entry}) | {mb:.2} s (median) |"
    )?;
    writeln!(
        s,
        "| boot to init, under gatewarden-hv | {mh:.2} s (median) |"
    )?;
    writeln!(s, "| ratio (goal ≤ 1.10×) | {:.2}× |", mh / mb)?;
    writeln!(
        s,
        "| null hypercall from EL0 (call window, register-only VERSION), 10,000 calls | median {} ticks, p99 {} ticks ({:.1} µs median at {} MHz) |",
        ticks("median_ticks"),
        ticks("p99_ticks"),
        ticks("median_ticks") / hz * 1e6,
        hz / 1e6
    )?;
    let el1 = parse_el1(&el1).with_context(|| format!("gwhvc.ko output {el1:?}"))?;
    writeln!(
        s,
        "| null hypercall from EL1 (HVC from gwhvc.ko, register-only VERSION), {} calls | median {} ticks, p99 {} ticks ({:.1} µs median at {} MHz) |",
        el1.calls,
        el1.median,
        el1.p99,
        el1.median as f64 / el1.hz as f64 * 1e6,
        el1.hz as f64 / 1e6
    )?;
    writeln!(s, "\nRuns: bare {t_bare:.2?} s, hypervisor {t_hv:.2?} s.")?;
    std::io::stdout().flush()?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_module_timing_line() {
        assert_eq!(
            parse_el1(
                "gwhvc: null HVC x10000: median 812 p99 2050 min 700 ticks, counter 62500000 Hz"
            ),
            Some(El1Null {
                calls: 10000,
                median: 812,
                p99: 2050,
                hz: 62_500_000
            })
        );
        assert_eq!(parse_el1("gwhvc: null HVC x10: median"), None);
        assert_eq!(parse_el1(""), None);
    }
}
