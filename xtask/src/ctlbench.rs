//! `cargo xtask bench controller`: the controller under simulated fleets (gw-loadgen), release
//! builds, SQLite, everything on this machine.
//!
//! 1. Throughput: many gateways at a short epoch offer more quotes than the controller can
//!    take; the sustained rate of committed results (each: batch-verified quote with a 50-entry
//!    event log, appraisal, SQLite write) is the figure.
//! 2. Scale: a large fleet at a realistic epoch held for minutes; missed challenges (must be
//!    0), and controller memory per connected gateway.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Bench parameters.
pub struct Params {
    /// Gateways in the scale run.
    pub gateways: usize,
    /// Epoch of the scale run.
    pub epoch: String,
    /// Steady-state duration of the scale run.
    pub hold: String,
    /// Gateways in the throughput run.
    pub tp_gateways: usize,
    /// Epoch of the throughput run.
    pub tp_epoch: String,
    /// Steady-state duration of the throughput run.
    pub tp_hold: String,
}

struct Controller {
    child: Child,
    dir: PathBuf,
    agents: String,
    api: String,
    bin: PathBuf,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Controller {
    fn start(root: &Path, name: &str, epoch: &str) -> Result<Self> {
        let bin = root.join("target/release/gw-controller");
        let dir = root.join("target/bench").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let mut child = Command::new(&bin)
            .arg("--state-dir")
            .arg(&dir)
            .args([
                "serve",
                "--agent-listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
            ])
            .args(["--epoch", epoch, "--unreachable-after", "3"])
            .env("GW_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .context("starting gw-controller")?;
        let mut first = String::new();
        let mut reader = BufReader::new(child.stdout.take().context("stdout")?);
        reader.read_line(&mut first)?;
        // Keep draining its result lines.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        let field = |after: &str, until: char| {
            first
                .split(after)
                .nth(1)
                .and_then(|s| s.split(until).next())
                .map(str::to_owned)
                .with_context(|| format!("unexpected controller output {first:?}"))
        };
        Ok(Self {
            agents: field("gateways on ", ',')?,
            api: field("https://", '/')?,
            child,
            dir,
            bin,
        })
    }

    fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new(&self.bin)
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("--api")
            .arg(&self.api)
            .args(args)
            .output()?;
        if !out.status.success() {
            bail!(
                "gw-controller {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Results stored so far.
    fn results(&self) -> Result<u64> {
        let s = self.cli(&["summary"])?;
        // "N gateways, P pending, R results"
        s.lines()
            .next()
            .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" results")))
            .and_then(|n| n.trim().parse().ok())
            .with_context(|| format!("unexpected summary {s:?}"))
    }

    fn metric(&self, name: &str) -> Result<f64> {
        let m = self.cli(&["metrics"])?;
        Ok(m.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }

    /// CPU seconds (user + system) the controller has used.
    fn cpu_s(&self) -> Result<f64> {
        cpu_seconds(self.child.id())
    }

    fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmRSS")
    }
}

/// CPU seconds (user + system) process `pid` has used, from /proc (clock ticks of 1/100 s).
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = &stat[stat.rfind(')').context("bad /proc stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn loadgen(root: &Path, c: &Controller, gateways: usize, ramp: usize, hold: &str) -> Result<Child> {
    let state = c.dir.join("loadgen");
    Command::new(root.join("target/release/gw-loadgen"))
        .args(["--controller", &c.agents, "--api", &c.api])
        .arg("--controller-dir")
        .arg(&c.dir)
        .args([
            "--gateways",
            &gateways.to_string(),
            "--ramp",
            &ramp.to_string(),
        ])
        .args(["--duration", hold])
        .arg("--state-dir")
        .arg(&state)
        .spawn()
        .context("starting gw-loadgen")
}

fn secs(s: &str) -> Result<f64> {
    let s = s.trim();
    let (n, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = n.parse().with_context(|| format!("duration {s:?}"))?;
    Ok(n * match unit {
        "ms" => 0.001,
        "s" | "" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => bail!("duration {s:?}: use ms, s, m or h"),
    })
}

/// Run the parts asked for (a part with 0 gateways is skipped); returns `(section, report)`
/// pairs for docs/benchmarks.md.
pub fn bench(root: &Path, p: &Params) -> Result<Vec<(&'static str, String)>> {
    let mut b = crate::cargo();
    b.args([
        "build",
        "--release",
        "-p",
        "gw-controller",
        "-p",
        "gw-loadgen",
    ]);
    crate::run("release builds of the controller and the load generator", b)?;
    let head = |title: &str| {
        format!(
            "## Controller: {title} (gw-loadgen)\n\nMeasured by `cargo xtask bench controller` on: {}. \
             The controller (release, SQLite) and the load generator share the machine's cores. \
             Each simulated gateway is the real agent over the real monitor core in process (own \
             keys, 50-entry event log, mutual TLS).\n\n",
            crate::machine()
        )
    };
    let mut out = Vec::new();

    // 1. Throughput.
    if p.tp_gateways > 0 {
        let mut report = head("verification throughput");
        let c = Controller::start(root, "throughput", &p.tp_epoch)?;
        let ramp = 1000;
        let mut lg = loadgen(root, &c, p.tp_gateways, ramp, &p.tp_hold)?;
        let ramp_s = p.tp_gateways as f64 / ramp as f64;
        eprintln!(
            "==> throughput: {} gateways at a {} epoch",
            p.tp_gateways, p.tp_epoch
        );
        std::thread::sleep(Duration::from_secs_f64(ramp_s + 10.0));
        let (t0, r0) = (Instant::now(), c.results()?);
        let (c0, l0) = (c.cpu_s()?, cpu_seconds(lg.id())?);
        let window = (secs(&p.tp_hold)? - 15.0).max(10.0);
        std::thread::sleep(Duration::from_secs_f64(window));
        let (r1, dt) = (c.results()?, t0.elapsed().as_secs_f64());
        let ctl_cpu = c.cpu_s()? - c0;
        let lg_cpu = cpu_seconds(lg.id())? - l0;
        let offered = p.tp_gateways as f64 / secs(&p.tp_epoch)?;
        let rate = (r1 - r0) as f64 / dt;
        let _ = lg.wait();
        let per_core = (r1 - r0) as f64 / ctl_cpu.max(0.001);
        writeln!(
            report,
            "| throughput run | value |\n|---|---|\n| gateways × epoch | {} × {} (offers {offered:.0} quotes/s) |\n| committed results (verify + appraise + SQLite) | **{rate:.0}/s** over {dt:.0} s (goal ≥ 5,000/s: {:.2}× the goal) |\n| CPU used in the window | controller {:.0} %, load generator {:.0} % (of one core) |\n| results per controller CPU-second | {per_core:.0} (so {:.0}/s if the controller had both cores) |\n",
            p.tp_gateways,
            p.tp_epoch,
            rate / 5000.0,
            100.0 * ctl_cpu / dt,
            100.0 * lg_cpu / dt,
            per_core * 2.0
        )?;
        out.push(("controller-throughput", report));
    }

    // 2. Scale.
    if p.gateways > 0 {
        let mut report = head("a fleet held at its epoch");
        let c = Controller::start(root, "scale", &p.epoch)?;
        std::thread::sleep(Duration::from_secs(2));
        let idle = c.rss_kib()?;
        let ramp = 500;
        eprintln!(
            "==> scale: {} gateways at a {} epoch for {} (plus {} s of ramp)",
            p.gateways,
            p.epoch,
            p.hold,
            p.gateways / ramp
        );
        let mut lg = loadgen(root, &c, p.gateways, ramp, &p.hold)?;
        let ramp_s = p.gateways as f64 / ramp as f64;
        std::thread::sleep(Duration::from_secs_f64(ramp_s + secs(&p.epoch)? * 2.0));
        let missed0 = c.metric("gatewarden_missed_challenges_total")?;
        let results0 = c.results()?;
        let t0 = Instant::now();
        let hold = secs(&p.hold)? - secs(&p.epoch)? * 2.0;
        std::thread::sleep(Duration::from_secs_f64(hold.max(1.0)));
        let connected = c.metric("gatewarden_connected_gateways")?;
        let rss = c.rss_kib()?;
        let missed = c.metric("gatewarden_missed_challenges_total")? - missed0;
        let results = c.results()? - results0;
        let dt = t0.elapsed().as_secs_f64();
        let expected = p.gateways as f64 * dt / secs(&p.epoch)?;
        let _ = lg.wait();
        writeln!(
            report,
            "| scale run | value |\n|---|---|\n| gateways × epoch | {} × {}, steady state held {dt:.0} s |\n| connected at the end | {connected:.0} |\n| missed challenges in steady state | **{missed:.0}** |\n| results committed in steady state | {results} (one per gateway per epoch would be {expected:.0}: {:.3}×) |\n| controller RSS idle → loaded | {} MiB → {} MiB |\n| memory per connected gateway | **{:.1} KiB** |\n",
            p.gateways,
            p.epoch,
            results as f64 / expected,
            idle / 1024,
            rss / 1024,
            (rss.saturating_sub(idle)) as f64 / connected.max(1.0)
        )?;
        out.push(("controller-scale", report));
    }
    Ok(out)
}
