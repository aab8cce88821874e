//! `cargo xtask`: Gatewarden's build, test and benchmark tasks.
//!
//! One entry point for developers and CI, so the commands in the README are the commands CI
//! runs. Every step prints what it runs; any failure stops the task with a non-zero exit.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

mod boarddtb;
mod bootbench;
mod ctlbench;
mod demo;
mod fetch;
mod fresh;
mod image;
mod provision;
mod sdimage;
mod services;
mod setup;

/// Crates that must build without `std` for the hypervisor targets.
const NO_STD_CRATES: &[&str] = &["vtpm", "gw-abi", "gw-hoptag", "gw-core"];
/// Bare-metal targets of the hypervisor.
const BARE_METAL_TARGETS: &[&str] = &["aarch64-unknown-none-softfloat", "x86_64-unknown-none"];
/// Guest user-space programs, built as static musl binaries.
const GUEST_BINARIES: &[&str] = &[
    "gwctl",
    "gw-hcall-fuzz",
    "gw-agent",
    "gw-vswitch",
    "gw-firewall",
    "gw-ids",
    "gw-monitor",
    "gw-dp-rogue",
    "gw-agent-rogue",
];
/// Guest targets.
const GUEST_TARGETS: &[&str] = &["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];

/// Gatewarden build, test and benchmark tasks.
#[derive(Parser)]
#[command(about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Suite {
    /// Criterion micro-benchmarks on the host.
    Host,
    /// Boot time and null hypercall in QEMU.
    Boot,
    /// The controller under simulated fleets: verification throughput, 10,000 gateways held,
    /// memory per gateway.
    Controller,
    /// Per-packet signing through the gateway VM: HTTP GET latency and iperf3 throughput with
    /// hop signing off and on, one hop's hypercall cost (needs root and iperf3).
    Pktsign,
}

#[derive(Subcommand)]
enum Task {
    /// Run every test: build the qemu-virt image, host unit/property/integration tests, QEMU
    /// boot tests, no_std and guest builds. Installs what the tests need (QEMU 10, network
    /// tools, PostgreSQL, Chromium) and runs a PostgreSQL server of its own for them
    /// (or uses $GW_TEST_POSTGRES_URL when set).
    Test,
    /// Check the README's two commands on a fresh machine: remove what a fresh machine lacks
    /// (QEMU system emulators, iperf3, tcpdump, ethtool, the PostgreSQL server, Chromium, the
    /// cross compiler, the toolchain's targets, the guest package cache), then run `cargo xtask
    /// demo --epochs 3` and `cargo xtask test` (or `.ci/run` with --ci) from a clean clone of
    /// HEAD, and report their timings. Changes this machine: needs root, asks first.
    FreshCheck {
        /// Do not ask before removing packages.
        #[arg(long)]
        yes: bool,
        /// Run `.ci/run` (CI=true: lint, test, demo) in the clone instead of the two commands.
        #[arg(long)]
        ci: bool,
        /// Keep the clone (default: removed when everything passed).
        #[arg(long)]
        keep: bool,
        /// Only prepare the machine; do not clone and run.
        #[arg(long)]
        prepare_only: bool,
    },
    /// Check formatting and lints exactly as CI does: rustfmt, and clippy with warnings denied
    /// for the host workspace and for the hypervisor of every bare-metal board.
    Lint,
    /// Build the no_std crates for the bare-metal targets (proves they need no std).
    NoStd,
    /// Build the guest programs as static musl binaries for x86_64 and aarch64.
    Guest,
    /// The main job: build the image, start the controller (embedded SQLite), boot the gateway
    /// in QEMU under the hypervisor, print each attestation result and the dashboard address.
    Demo {
        /// Board folder under boards/ (one QEMU emulates).
        #[arg(long, default_value = "qemu-virt")]
        board: String,
        /// Operator API and dashboard address.
        #[arg(long, default_value = "127.0.0.1:8443")]
        api: String,
        /// Time between challenges.
        #[arg(long, default_value = "10s")]
        epoch: String,
        /// Stop after this many results of the gateway (default: run until Ctrl-C).
        #[arg(long)]
        epochs: Option<usize>,
    },
    /// Build the bootable image for a board (hypervisor, guest bundle, manifest), provisioned
    /// for a controller: its CA and command key go into the image, the vendor key
    /// (.cache/vendor.key) endorses the gateway and signs the reference manifest.
    Image {
        /// Board folder under boards/.
        #[arg(long, default_value = "qemu-virt")]
        board: String,
        /// Controller state directory (created with `gw-controller init` if missing).
        /// Default: target/gatewarden/<board>/controller.
        #[arg(long)]
        controller_dir: Option<PathBuf>,
        /// Address the gateway agent dials from inside the guest.
        #[arg(long, default_value = "10.0.2.100:7443")]
        controller_addr: String,
        /// Gateway id (default: board name and the start of the attestation key).
        #[arg(long)]
        gateway_id: Option<String>,
    },
    /// Endorse a gateway whose device secret was made on the board (a Raspberry Pi's OTP, on
    /// its first boot): sign its public keys, as `gwctl --json version` prints them on the
    /// gateway, with the vendor key (.cache/vendor.key), and write the endorsement the agent
    /// reads (copy it to the boot partition's gatewarden/endorsement.json; docs/flashing.md).
    Endorse {
        /// Board folder under boards/ (the default gateway id starts with it).
        #[arg(long)]
        board: String,
        /// The gateway's attestation public key (64 hex digits).
        #[arg(long)]
        attestation_key: String,
        /// The gateway's agent (control-channel) public key (64 hex digits).
        #[arg(long)]
        agent_key: String,
        /// Gateway id (default: board name and the start of the attestation key).
        #[arg(long)]
        gateway_id: Option<String>,
        /// Where to write the endorsement (default: standard output).
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Build the image and boot it in QEMU with the serial console here.
    Run {
        /// Board folder under boards/.
        #[arg(long, default_value = "qemu-virt")]
        board: String,
        /// Number of CPUs.
        #[arg(long, default_value_t = 2)]
        smp: u32,
    },
    /// Download Debian's guest kernel and busybox once into .cache/guest/ (needs apt).
    FetchGuest {
        /// Guest architecture.
        #[arg(long, value_enum, default_value = "arm64")]
        arch: fetch::Arch,
        /// Debian kernel flavour: `cloud` (linux-image-cloud-<arch>, virtual machines) or
        /// `generic` (linux-image-<arch>, with SoC drivers); boards name theirs in `[kernel]`.
        #[arg(long, default_value = "cloud", value_parser = ["cloud", "generic"])]
        flavour: String,
    },
    /// Run benchmarks and write docs/benchmarks.md: `host` (criterion micro-benchmarks), `boot`
    /// (QEMU boot time with and without the hypervisor, null hypercall), `controller`, or
    /// `pktsign` (per-packet signing overhead through the gateway VM).
    Bench {
        /// Which suite.
        #[arg(value_enum, default_value = "host")]
        suite: Suite,
        /// Suite `boot`: the board (one QEMU emulates).
        #[arg(long, default_value = "qemu-virt")]
        board: String,
        /// Boots per configuration (suite `boot`).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Seconds of measurement per benchmark.
        #[arg(long, default_value_t = 5)]
        seconds: u32,
        /// Do not rewrite docs/benchmarks.md; only print the table.
        #[arg(long)]
        no_write: bool,
        /// Suite `controller`: gateways in the scale run (0 skips it).
        #[arg(long, default_value_t = 10_000)]
        gateways: usize,
        /// Suite `controller`: epoch of the scale run.
        #[arg(long, default_value = "30s")]
        epoch: String,
        /// Suite `controller`: how long the scale run holds its fleet.
        #[arg(long, default_value = "10m")]
        hold: String,
        /// Suite `controller`: gateways in the throughput run (0 skips it).
        #[arg(long, default_value_t = 2_000)]
        tp_gateways: usize,
        /// Suite `controller`: epoch of the throughput run.
        #[arg(long, default_value = "250ms")]
        tp_epoch: String,
        /// Suite `controller`: how long the throughput run lasts after its ramp.
        #[arg(long, default_value = "60s")]
        tp_hold: String,
        /// Suite `pktsign`: HTTP GET requests per signing mode.
        #[arg(long, default_value_t = 1000)]
        requests: usize,
        /// Suite `pktsign`: seconds of each iperf3 run.
        #[arg(long, default_value_t = 10)]
        iperf_seconds: u32,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    std::env::set_current_dir(&root).context("entering the workspace root")?;
    // Every task but these builds for a pinned target (or lints with the pinned components).
    if !matches!(cli.task, Task::FetchGuest { .. } | Task::FreshCheck { .. }) {
        setup::toolchain(&root)?;
    }
    match cli.task {
        Task::Test => test(&root),
        Task::Lint => lint(&root),
        Task::FreshCheck {
            yes,
            ci,
            keep,
            prepare_only,
        } => fresh::fresh_check(
            &root,
            &fresh::Options {
                yes,
                ci,
                keep,
                prepare_only,
            },
        ),
        Task::NoStd => no_std(),
        Task::Guest => guest(),
        Task::Demo {
            board,
            api,
            epoch,
            epochs,
        } => demo::demo(&root, &board, &api, &epoch, epochs),
        Task::Image {
            board,
            controller_dir,
            controller_addr,
            gateway_id,
        } => {
            let mut opts = image::ImageOptions::for_board(&root, &board);
            if let Some(d) = controller_dir {
                opts.controller_dir = d;
            }
            opts.controller_addr = controller_addr;
            opts.gateway_id = gateway_id;
            image::image(&root, &board, &opts).map(drop)
        }
        Task::Run { board, smp } => image::run_qemu(&root, &board, smp),
        Task::Endorse {
            board,
            attestation_key,
            agent_key,
            gateway_id,
            output,
        } => {
            let json = image::endorse(&root, &board, &attestation_key, &agent_key, gateway_id)?;
            match output {
                Some(p) => {
                    std::fs::write(&p, &json)
                        .with_context(|| format!("writing {}", p.display()))?;
                    eprintln!("==> wrote {}", p.display());
                }
                None => println!("{}", String::from_utf8_lossy(&json)),
            }
            Ok(())
        }
        Task::FetchGuest { arch, flavour } => {
            let flavour = match flavour.as_str() {
                "generic" => gw_board::KernelFlavour::Generic,
                _ => gw_board::KernelFlavour::Cloud,
            };
            let g = fetch::fetch_guest(&root, arch, flavour)?;
            println!("kernel  {} ({})", g.kernel.display(), g.release);
            println!(
                "modules {}",
                g.kernel_root.join("lib/modules").join(&g.release).display()
            );
            println!("busybox {}", g.busybox.display());
            Ok(())
        }
        Task::Bench {
            suite: Suite::Host,
            seconds,
            no_write,
            ..
        } => bench(&root, seconds, no_write),
        Task::Bench {
            suite: Suite::Controller,
            no_write,
            gateways,
            epoch,
            hold,
            tp_gateways,
            tp_epoch,
            tp_hold,
            ..
        } => {
            let reports = ctlbench::bench(
                &root,
                &ctlbench::Params {
                    gateways,
                    epoch,
                    hold,
                    tp_gateways,
                    tp_epoch,
                    tp_hold,
                },
            )?;
            for (section, report) in reports {
                println!("{report}");
                if !no_write {
                    write_section(&root.join("docs/benchmarks.md"), section, &report)?;
                    eprintln!("==> wrote the {section} section of docs/benchmarks.md");
                }
            }
            Ok(())
        }
        Task::Bench {
            suite: Suite::Pktsign,
            no_write,
            requests,
            iperf_seconds,
            ..
        } => {
            setup::qemu(image::board_qemu(&root, "qemu-virt")?)?;
            setup::ensure(&[setup::IPERF3, setup::IPROUTE2, setup::ETHTOOL])?;
            image::image(
                &root,
                "qemu-virt",
                &image::ImageOptions::for_board(&root, "qemu-virt"),
            )?;
            let mut b = cargo();
            b.args(["build", "--workspace", "--bins"]);
            run("the host tools and the benchmark driver", b)?;
            eprintln!("==> gw-pktsign (progress below; the report follows)");
            let out = Command::new(root.join("target/debug/gw-pktsign"))
                .args(["--requests", &requests.to_string()])
                .args(["--iperf-seconds", &iperf_seconds.to_string()])
                .stderr(std::process::Stdio::inherit())
                .output()
                .context("running gw-pktsign")?;
            anyhow::ensure!(out.status.success(), "gw-pktsign failed ({})", out.status);
            let report = String::from_utf8(out.stdout).context("gw-pktsign output")?;
            println!("{report}");
            if !no_write {
                write_section(&root.join("docs/benchmarks.md"), "qemu-pktsign", &report)?;
                eprintln!("==> wrote the qemu-pktsign section of docs/benchmarks.md");
            }
            Ok(())
        }
        Task::Bench {
            suite: Suite::Boot,
            runs,
            no_write,
            board,
            ..
        } => {
            let report = bootbench::bench_boot(&root, &board, runs.max(1))?;
            println!("{report}");
            let section = match board.as_str() {
                "qemu-virt" => "qemu-boot".to_owned(),
                other => format!("qemu-boot-{other}"),
            };
            if !no_write {
                write_section(&root.join("docs/benchmarks.md"), &section, &report)?;
                eprintln!("==> wrote docs/benchmarks.md");
            }
            Ok(())
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Run `cmd`, echoing it, and fail with its exit status.
fn run(what: &str, mut cmd: Command) -> Result<()> {
    let started = Instant::now();
    eprintln!("==> {what}");
    eprintln!("    $ {}", describe(&cmd));
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", describe(&cmd)))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    eprintln!("    ok ({:.1} s)", started.elapsed().as_secs_f64());
    Ok(())
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn lint(root: &Path) -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    run("formatting", fmt)?;
    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    run("clippy (host)", clippy)?;
    for (board, target) in image::bare_metal_boards(root)? {
        let mut c = cargo();
        c.args(["clippy", "-p", "gatewarden-hv", "--features", "bare-metal"]);
        c.args(["--target", target, "--", "-D", "warnings"]);
        c.env("GW_BOARD", &board);
        run(&format!("clippy (hypervisor for {board}, {target})"), c)?;
    }
    Ok(())
}

fn no_std() -> Result<()> {
    for target in BARE_METAL_TARGETS {
        let mut c = cargo();
        c.args(["build", "--target", target]);
        for krate in NO_STD_CRATES {
            c.args(["-p", krate]);
        }
        run(&format!("no_std build for {target}"), c)?;
    }
    Ok(())
}

fn guest() -> Result<()> {
    GUEST_TARGETS.iter().try_for_each(|t| guest_target(t))
}

/// Build the guest programs for one musl target.
fn guest_target(target: &str) -> Result<()> {
    if target.starts_with("aarch64") {
        setup::ensure(&[setup::CROSS_CC])?;
    }
    let mut c = cargo();
    c.args(["build", "--release", "--target", target]);
    for bin in GUEST_BINARIES {
        c.args(["--bin", bin]);
    }
    // Linker and flags for the musl targets are in .cargo/config.toml.
    run(&format!("static guest programs for {target}"), c)
}

fn test(root: &Path) -> Result<()> {
    // Everything the tests run, installed before the long build so a machine that cannot
    // install it learns so at once. Under CI a missing tool fails here or in the tests,
    // never skips.
    setup::qemu(image::board_qemu(root, "qemu-virt")?)?;
    setup::ensure(setup::TEST_TOOLS)?;
    let postgres = match std::env::var("GW_TEST_POSTGRES_URL") {
        Ok(url) => {
            eprintln!("==> PostgreSQL for the tests: {url} (GW_TEST_POSTGRES_URL)");
            None
        }
        Err(_) => Some(services::TestPostgres::start(root)?),
    };
    // Every board QEMU emulates, each in target/gatewarden/<board>/ (the QEMU tests boot them).
    for board in image::qemu_boards(root)? {
        image::image(root, &board, &image::ImageOptions::for_board(root, &board))?;
    }
    // The end-to-end tests in tests/ run the workspace's binaries, which `cargo test` only
    // builds for packages that have integration tests of their own.
    let mut b = cargo();
    b.args(["build", "--workspace", "--bins"]);
    run("binaries for the end-to-end tests", b)?;
    let mut t = cargo();
    t.args(["test", "--workspace", "--all-targets"]);
    if let Some(pg) = &postgres {
        t.env("GW_TEST_POSTGRES_URL", &pg.url);
    }
    run("host tests", t)?;
    let mut d = cargo();
    d.args(["test", "--workspace", "--doc"]);
    run("doc tests", d)?;
    no_std()?;
    guest()?;
    drop(postgres);
    eprintln!("==> all tests passed");
    Ok(())
}

/// One row of the results table.
struct Row {
    id: &'static str,
    what: &'static str,
}

const ROWS: &[Row] = &[
    Row {
        id: "hop_tag_check/64",
        what: "HOP_TAG+HOP_CHECK primitive, 64 B",
    },
    Row {
        id: "hop_tag_check/512",
        what: "HOP_TAG+HOP_CHECK primitive, 512 B",
    },
    Row {
        id: "hop_tag_check/1500",
        what: "HOP_TAG+HOP_CHECK primitive, 1,500 B",
    },
    Row {
        id: "monitor_hop_tag_check/64",
        what: "HOP_TAG+HOP_CHECK through the monitor dispatcher, 64 B",
    },
    Row {
        id: "monitor_hop_tag_check/512",
        what: "HOP_TAG+HOP_CHECK through the monitor dispatcher, 512 B",
    },
    Row {
        id: "monitor_hop_tag_check/1500",
        what: "HOP_TAG+HOP_CHECK through the monitor dispatcher, 1,500 B",
    },
    Row {
        id: "pcr_extend",
        what: "PCR extend",
    },
    Row {
        id: "quote_sign",
        what: "quote sign (12 PCRs)",
    },
    Row {
        id: "quote_verify/single",
        what: "quote verify, one (12 PCRs, 50-entry log)",
    },
    Row {
        id: "quote_verify/batch64",
        what: "quote verify, batch of 64 (whole batch)",
    },
];

/// Median estimate in nanoseconds from criterion's output for `id`.
fn median_ns(root: &Path, id: &str) -> Result<f64> {
    let path = root
        .join("target/criterion")
        .join(id)
        .join("new/estimates.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)?;
    v["median"]["point_estimate"]
        .as_f64()
        .context("no median in criterion estimates")
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let rustc = Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {rustc}")
}

fn bench(root: &Path, seconds: u32, no_write: bool) -> Result<()> {
    let mut c = cargo();
    c.args(["bench", "-p", "gw-hoptag", "-p", "vtpm", "-p", "gw-core"]);
    c.args([
        "--bench", "hoptag", "--bench", "vtpm", "--bench", "dispatch", "--",
    ]);
    c.args([
        "--warm-up-time",
        "1",
        "--measurement-time",
        &seconds.to_string(),
    ]);
    run("criterion benchmarks (host)", c)?;

    let mut table = String::from("| benchmark | median |\n|---|---|\n");
    let mut m = std::collections::HashMap::new();
    for row in ROWS {
        let ns = median_ns(root, row.id)?;
        m.insert(row.id, ns);
        writeln!(table, "| {} | {} |", row.what, human(ns))?;
    }
    let tag1500 = m["hop_tag_check/1500"];
    let single = m["quote_verify/single"];
    let batch = m["quote_verify/batch64"] / 64.0;
    let mut summary = String::new();
    writeln!(summary, "| target | goal | measured |\n|---|---|---|")?;
    writeln!(
        summary,
        "| HOP_TAG+HOP_CHECK, 1,500 B | ≤ 3 µs | {} ({:.2}× the goal) |",
        human(tag1500),
        tag1500 / 3000.0
    )?;
    writeln!(
        summary,
        "| quote verification, one core, batched | ≥ 10,000/s | {:.0}/s (batched is {:.2}× single: {:.0}/s) |",
        1e9 / batch,
        single / batch,
        1e9 / single
    )?;
    writeln!(
        summary,
        "| monitor dispatch overhead, 1,500 B | — | {:.2}× the bare primitive |",
        m["monitor_hop_tag_check/1500"] / tag1500
    )?;
    let report = format!(
        "## Host micro-benchmarks (criterion)\n\nMeasured side by side in one `cargo xtask bench` run on: {}.\n\n{summary}\n{table}",
        machine()
    );
    println!("{report}");
    if !no_write {
        write_section(&root.join("docs/benchmarks.md"), "host-micro", &report)?;
        eprintln!("==> wrote docs/benchmarks.md");
    }
    Ok(())
}

/// Replace the generated section `name` in `path`, keeping everything else.
fn write_section(path: &Path, name: &str, body: &str) -> Result<()> {
    let begin = format!("<!-- BEGIN {name} (generated by cargo xtask bench) -->");
    let end = format!("<!-- END {name} -->");
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n".into());
    let block = format!("{begin}\n{body}\n{end}");
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => format!("{}{block}{}", &old[..b], &old[e + end.len()..]),
        _ => format!("{}\n{block}\n", old.trim_end()),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))
}
