//! `cargo xtask demo`, the main job: build the image, start the controller with its embedded
//! SQLite store, boot the gateway in QEMU under the hypervisor, and print each attestation
//! result as it arrives, with the dashboard's address.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::image::{self, ImageOptions};

/// Children killed when the demo ends, however it ends.
struct Reaper(Vec<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Run the demo; stop after `epochs` results (`None`: until interrupted).
pub fn demo(root: &Path, board: &str, api: &str, epoch: &str, epochs: Option<usize>) -> Result<()> {
    // Installed first: a machine without QEMU learns it before the long first build.
    let qemu_bin = crate::setup::qemu(image::board_qemu(root, board)?)?;
    let opts = ImageOptions::for_board(root, board);
    let img = image::image(root, board, &opts)?;
    let mut b = crate::cargo();
    // The whole workspace's binaries, as `cargo xtask test` builds them (same features, so
    // the two share one build).
    b.args(["build", "--workspace", "--bins"]);
    crate::run("the controller and host tools", b)?;
    let ctl_bin = root.join("target/debug/gw-controller");
    let dir = root.join("target/gatewarden").join(board);
    let state = &opts.controller_dir;
    let vendor = std::fs::read_to_string(dir.join("vendor.pub"))?;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json"))?)?;
    // A board that makes its device secret on its first boot has no endorsement in its image:
    // the demo plays the vendor's part once the gateway has booted (`endorse_when_up`).
    let mut gateway = manifest["gateway_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut endorse = gateway.is_empty();

    eprintln!(
        "==> starting the controller (state and SQLite database in {})",
        state.display()
    );
    let mut controller = Command::new(&ctl_bin)
        .arg("--state-dir")
        .arg(state)
        .args([
            "serve",
            "--agent-listen",
            "127.0.0.1:0",
            "--api-listen",
            api,
        ])
        .args(["--epoch", epoch])
        .arg("--trust-vendor")
        .arg(format!("{}=development-vendor", vendor.trim()))
        .stdout(Stdio::piped())
        .spawn()
        .context("starting gw-controller")?;
    let stdout = controller.stdout.take().context("controller stdout")?;
    let mut children = Reaper(vec![controller]);
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(60))
        .context("the controller did not start (see its messages above)")?;
    let agent_addr = first
        .split("gateways on ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .with_context(|| format!("unexpected controller output {first:?}"))?
        .to_owned();
    // The address the API really listens on (`--api` may say port 0).
    let api = first
        .split("https://")
        .nth(1)
        .and_then(|s| s.split('/').next())
        .with_context(|| format!("unexpected controller output {first:?}"))?
        .to_owned();
    let api = api.as_str();
    println!("{first}");

    let mut import = Command::new(&ctl_bin);
    import
        .arg("--state-dir")
        .arg(state)
        .arg("--api")
        .arg(api)
        .arg("import-manifest")
        .arg(dir.join("reference.json"));
    crate::run("importing the image's signed reference manifest", import)?;

    let console = dir.join("demo-console.log");
    eprintln!(
        "==> booting gateway {gateway} in QEMU under the hypervisor (console in {})",
        console.display()
    );
    let netdev_fwd = format!(
        ",guestfwd=tcp:10.0.2.100:7443-cmd:{} relay {agent_addr}",
        ctl_bin.display()
    );
    let args: Vec<String> = crate::boarddtb::fresh_seeds(&img.qemu_args)?
        .iter()
        .map(|a| {
            if a.starts_with("user,") {
                format!("{a}{netdev_fwd}")
            } else {
                a.clone()
            }
        })
        .collect();
    let mut qemu = Command::new(qemu_bin)
        .args(&args)
        .args(["-smp", &img.fixed_cpus.unwrap_or(2).to_string()])
        .stdin(if endorse {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(std::fs::File::create(&console)?)
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {qemu_bin}"))?;
    let mut qemu_stdin = qemu.stdin.take();
    children.0.push(qemu);

    let token = state.join("operator.token");
    println!(
        "dashboard: https://{api}/  (sign in with the token in {}; the certificate is issued by {})",
        token.display(),
        state.join("ca.cert.pem").display()
    );
    println!(
        "operator CLI: {} --state-dir {} --api {api} gateways",
        ctl_bin.display(),
        state.display()
    );
    let started = Instant::now();
    let mut seen = 0usize;
    loop {
        if endorse && let Some(id) = endorse_when_up(root, board, &console, &dir, &mut qemu_stdin)?
        {
            eprintln!("==> endorsed gateway {id} (its secret was made on this first boot)");
            gateway = id;
            endorse = false;
        }
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => {
                println!("{line}");
                if line.starts_with("result ") && line.contains(&gateway) {
                    seen += 1;
                    if epochs.is_some_and(|n| seen >= n) {
                        eprintln!("==> {seen} attestation results of {gateway}; demo complete");
                        return Ok(());
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => bail!("the controller stopped"),
        }
        for (i, c) in children.0.iter_mut().enumerate() {
            if let Some(status) = c.try_wait()? {
                bail!(
                    "{} exited ({status})",
                    if i == 0 { "the controller" } else { "QEMU" }
                );
            }
        }
        if seen == 0 && started.elapsed() > Duration::from_secs(600) {
            bail!(
                "no attestation result within 10 minutes; see {} and the guest's /tmp/gw-agent.log",
                console.display()
            );
        }
    }
}

/// Once the gateway's console shows its public keys (the hypervisor prints them) and the
/// guest's shell, endorse them with the vendor key and type the endorsement into the guest,
/// where the agent waits for it. The gateway id, when done.
fn endorse_when_up(
    root: &Path,
    board: &str,
    console: &Path,
    dir: &Path,
    stdin: &mut Option<std::process::ChildStdin>,
) -> Result<Option<String>> {
    use std::io::Write;
    let text = std::fs::read_to_string(console).unwrap_or_default();
    let Some(line) = text
        .lines()
        .find(|l| l.contains("device identity: attestation key "))
    else {
        return Ok(None);
    };
    if !text.contains("gatewarden-guest: up") {
        return Ok(None);
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |w: &str| {
        words
            .windows(3)
            .find(|x| x[0] == w && x[1] == "key")
            .map(|x| x[2].to_owned())
    };
    let (Some(ak), Some(agent)) = (after("attestation"), after("agent")) else {
        bail!("unexpected identity line on the console: {line:?}");
    };
    let json = image::endorse(root, board, &ak, &agent, None)?;
    let e: serde_json::Value = serde_json::from_slice(&json)?;
    let id = e["gateway_id"].as_str().unwrap_or_default().to_owned();
    let compact = serde_json::to_string(&e)?;
    let keys = std::fs::read_to_string(dir.join("qemu.keys")).unwrap_or_default();
    let w = stdin.as_mut().context("QEMU's console input")?;
    write!(
        w,
        "{keys}\nprintf '%s' '{compact}' > /etc/gatewarden/endorsement.tmp && mv /etc/gatewarden/endorsement.tmp /etc/gatewarden/endorsement.json\n"
    )?;
    w.flush()?;
    Ok(Some(id))
}
