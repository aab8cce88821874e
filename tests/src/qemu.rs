//! Boot the built image in QEMU and talk to the guest over its serial console.

use std::{
    io::{Read, Write},
    path::PathBuf,
    process::{Child, ChildStdin, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// How long any single expectation may take (TCG on a loaded 2-core CI machine is slow).
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// Where `cargo xtask image --board <board>` leaves the image.
pub fn image_dir(board: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let dir = root.join("target/gatewarden").join(board);
    assert!(
        dir.join("hv.bin").exists()
            && dir.join("bundle.bin").exists()
            && dir.join("qemu.args").exists(),
        "no image in {}: run `cargo xtask image --board {board}` (cargo xtask test does)",
        dir.display()
    );
    dir
}

/// The qemu-virt image's own QEMU arguments (from boards/qemu-virt/board.toml via `cargo xtask
/// image`), one per element.
pub fn image_args() -> Vec<String> {
    board_args("qemu-virt")
}

/// Board `board`'s image's QEMU arguments (all but `-smp`), one per element.
pub fn board_args(board: &str) -> Vec<String> {
    let dir = image_dir(board);
    std::fs::read_to_string(dir.join("qemu.args"))
        .expect("qemu.args next to the image")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A `-device` value for one more guest network port like the image's uplink (the same virtio
/// PCI device and options: behind the SMMU), on `netdev` with `mac`.
pub fn net_device(netdev: &str, mac: &str) -> String {
    board_net_device("qemu-virt", netdev, mac)
}

/// [`net_device`] for board `board`'s image (the Raspberry Pis' are QEMU's usb-net).
pub fn board_net_device(board: &str, netdev: &str, mac: &str) -> String {
    let uplink = board_args(board)
        .into_iter()
        .find(|a| a.contains("netdev=net0,"))
        .expect("the image's arguments have the uplink's -device");
    uplink
        .replace("netdev=net0", &format!("netdev={netdev}"))
        .replace("mac=52:54:00:12:34:56", &format!("mac={mac}"))
}

/// `args` with the value after `-initrd` (the guest bundle) replaced by `bundle`.
pub fn with_bundle(args: &[String], bundle: &std::path::Path) -> Vec<String> {
    let mut out = args.to_vec();
    let at = out
        .iter()
        .position(|a| a == "-initrd")
        .expect("the image's arguments pass the bundle as -initrd");
    out[at + 1] = bundle.display().to_string();
    out
}

/// A QMP connection to a QEMU started with `-qmp unix:PATH,server=on,wait=off`.
pub struct Qmp {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

impl Qmp {
    /// The `-qmp` argument for a socket at `path`.
    pub fn arg(path: &std::path::Path) -> [String; 2] {
        [
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", path.display()),
        ]
    }

    /// Connect (retrying while QEMU starts) and leave capabilities negotiation.
    pub fn connect(path: &std::path::Path) -> Self {
        let deadline = Instant::now() + TIMEOUT;
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "QMP socket {}: {e}",
                        path.display()
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        let mut q = Self {
            reader: std::io::BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        q.execute("qmp_capabilities", serde_json::json!({}));
        q
    }

    /// Run a QMP command and return its `return` value (events in between are skipped); a QMP
    /// error fails the test.
    pub fn execute(&mut self, command: &str, arguments: serde_json::Value) -> serde_json::Value {
        use std::io::BufRead;
        let msg = serde_json::json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{msg}").unwrap();
        loop {
            let mut line = String::new();
            assert!(
                self.reader.read_line(&mut line).unwrap() > 0,
                "QMP closed during {command}"
            );
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if let Some(r) = v.get("return") {
                return r.clone();
            }
            assert!(v.get("error").is_none(), "QMP {command}: {v}");
        }
    }

    /// `len` bytes of guest-physical memory at `addr` (QMP `pmemsave` into a temporary file).
    pub fn read_physical(&mut self, addr: u64, len: usize) -> Vec<u8> {
        let file = tempfile::NamedTempFile::new().unwrap();
        self.execute(
            "pmemsave",
            serde_json::json!({ "val": addr, "size": len, "filename": file.path() }),
        );
        std::fs::read(file.path()).unwrap()
    }
}

/// A user-network `-netdev` value with the guest's controller address forwarded to `addr`.
pub fn forward_to(netdev: &str, addr: std::net::SocketAddr) -> String {
    format!(
        "{netdev},guestfwd=tcp:10.0.2.100:7443-cmd:{} relay {addr}",
        crate::bin("gw-controller").display()
    )
}

/// A running QEMU with the guest's serial console captured.
pub struct Qemu {
    child: Child,
    stdin: ChildStdin,
    out: Arc<Mutex<Vec<u8>>>,
    /// Bytes of output already consumed by `expect`.
    seen: usize,
    /// Private copies of the machine's writable files (removed when QEMU is).
    _scratch: tempfile::TempDir,
}

impl Qemu {
    /// Boot the qemu-virt image with `smp` CPUs.
    pub fn boot_virt(smp: u32) -> Self {
        Self::boot(smp, None, &[])
    }

    /// Boot the qemu-virt image with `smp` CPUs, its agent's connections to 10.0.2.100:7443
    /// forwarded to the controller at `controller` on the host (through `gw-controller relay`;
    /// the guest reaches nothing else).
    pub fn boot_virt_with_controller(smp: u32, controller: std::net::SocketAddr) -> Self {
        Self::boot(smp, Some(controller), &[])
    }

    /// [`Qemu::boot_virt_with_controller`] with more QEMU arguments (extra NICs).
    pub fn boot_virt_with(smp: u32, controller: std::net::SocketAddr, extra: &[String]) -> Self {
        Self::boot(smp, Some(controller), extra)
    }

    fn boot(smp: u32, controller: Option<std::net::SocketAddr>, extra: &[String]) -> Self {
        let args: Vec<String> = image_args()
            .into_iter()
            .map(|l| match controller {
                Some(addr) if l.starts_with("user,") => forward_to(&l, addr),
                _ => l,
            })
            .collect();
        Self::boot_with_args(smp, &args, extra)
    }

    /// Boot board `board`'s image with `smp` CPUs, its agent's connections forwarded to
    /// `controller` when given (as [`Qemu::boot_virt_with_controller`]).
    pub fn boot_board(board: &str, smp: u32, controller: Option<std::net::SocketAddr>) -> Self {
        Self::boot_board_with(board, smp, controller, &[])
    }

    /// [`Qemu::boot_board`] with more QEMU arguments (extra NICs).
    pub fn boot_board_with(
        board: &str,
        smp: u32,
        controller: Option<std::net::SocketAddr>,
        extra: &[String],
    ) -> Self {
        let args: Vec<String> = board_args(board)
            .into_iter()
            .map(|l| match controller {
                Some(addr) if l.starts_with("user,") => forward_to(&l, addr),
                _ => l,
            })
            .collect();
        let mut q = Self::boot_with_args(smp, &args, extra);
        // Where the hypervisor and the guest print on different UARTs sharing the terminal,
        // the keys that give the guest's the keyboard (`cargo xtask image` writes them).
        let keys = std::fs::read_to_string(image_dir(board).join("qemu.keys")).unwrap_or_default();
        if !keys.is_empty() {
            q.stdin.write_all(keys.as_bytes()).unwrap();
            q.stdin.flush().unwrap();
        }
        q
    }

    /// Boot board `board`'s image with `smp` CPUs and wait for the guest's shell (the
    /// hypervisor entered the guest, the guest's init came up).
    pub fn boot_to_shell(board: &str, smp: u32) -> Self {
        let mut q = Self::boot_board(board, smp, None);
        q.expect("gatewarden-hv: entering the guest kernel");
        q.expect("gatewarden-guest: up");
        q.expect("# ");
        q
    }

    /// Endorse the running gateway as its vendor does after a board's first boot (a board
    /// whose device secret is made on the board, `secret = "bcm-otp"`): read its public keys
    /// with `gwctl version`, sign them with the development vendor key (.cache/vendor.key, as
    /// `cargo xtask endorse` does) and put the endorsement where the waiting agent reads it.
    /// Returns the gateway id.
    pub fn endorse_in_guest(&mut self, board: &str) -> String {
        let out = self.run("gwctl --json --transport hypervisor version");
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON from gwctl version:\n{out}"));
        let v: serde_json::Value = serde_json::from_str(line.trim()).expect("gwctl version JSON");
        let key = |k: &str| {
            let b: [u8; 32] = hex::decode(v[k].as_str().expect("a key"))
                .expect("hex")
                .try_into()
                .expect("32 bytes");
            ed25519_dalek::VerifyingKey::from_bytes(&b).expect("an ed25519 key")
        };
        let (ak, agent) = (key("attestation_key"), key("agent_key"));
        let root = image_dir(board).join("../../..");
        let vendor_hex = std::fs::read_to_string(root.join(".cache/vendor.key"))
            .expect("the development vendor key (.cache/vendor.key, made by cargo xtask image)");
        let vendor = ed25519_dalek::SigningKey::from_bytes(
            &gw_proto::hex32(vendor_hex.trim()).expect("vendor key hex"),
        );
        let id = format!("{board}-{}", &hex::encode(ak.to_bytes())[..8]);
        let e = gw_proto::endorse::Endorsement::sign(&vendor, &id, &ak, &agent).expect("signed");
        let json = serde_json::to_string(&e).unwrap();
        assert!(!json.contains('\''));
        let r = self.run(&format!(
            "printf '%s' '{json}' > /etc/gatewarden/endorsement.tmp && mv /etc/gatewarden/endorsement.tmp /etc/gatewarden/endorsement.json; echo rc=$?"
        ));
        assert!(r.contains("rc=0"), "{r}");
        id
    }

    /// The guest's arch-timer interrupts so far, summed over every CPU: with NO_HZ an idle CPU
    /// may take no tick for a while, so a single column can stand still while the timer works.
    pub fn timer_ticks(&mut self) -> u64 {
        self.run("grep -m1 arch_timer /proc/interrupts")
            .split_whitespace()
            .skip(1)
            .map_while(|n| n.parse::<u64>().ok())
            .sum()
    }

    /// Boot QEMU with exactly `args` (an image's, edited by the caller), `-smp` and `extra`.
    /// A writable SD card (QEMU refuses a read-only one) is booted from a private copy, so that
    /// tests running at once do not share it.
    pub fn boot_with_args(smp: u32, args: &[String], extra: &[String]) -> Self {
        let scratch = tempfile::tempdir().expect("a scratch directory");
        let mut args = args.to_vec();
        // A board's tree carries the loader's seeds: each boot gets its own, as from a
        // firmware (`cargo xtask run` does the same).
        if let Some(i) = args.iter().position(|a| a == "-dtb")
            && i + 1 < args.len()
        {
            let mut blob = std::fs::read(&args[i + 1]).expect("the board's device tree");
            gatewarden_hv::dtb::refill_seeds(&mut blob, |seed| {
                rand::RngCore::fill_bytes(&mut rand::rng(), seed)
            })
            .expect("a device tree");
            let copy = scratch.path().join("boot.dtb");
            std::fs::write(&copy, &blob).expect("writing the boot's device tree");
            args[i + 1] = copy.display().to_string();
        }
        let args: Vec<String> = args
            .iter()
            .map(|a| match a.split_once(",file=") {
                Some((opts, file)) if a.starts_with("if=sd,") => {
                    let copy = scratch.path().join("sd.img");
                    std::fs::copy(file, &copy)
                        .unwrap_or_else(|e| panic!("copying the SD card {file}: {e}"));
                    format!("{opts},file={}", copy.display())
                }
                _ => a.clone(),
            })
            .collect();
        let mut child = Command::new("qemu-system-aarch64")
            .args(&args)
            .args(["-smp", &smp.to_string()])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect(
                "start qemu-system-aarch64 (QEMU 10: `cargo xtask test` installs it, docs/qemu.md)",
            );
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&out);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Self {
            child,
            stdin,
            out,
            seen: 0,
            _scratch: scratch,
        }
    }

    /// Everything the console printed so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Wait until `needle` appears after what earlier calls consumed; returns the text up to
    /// and including it.
    pub fn expect(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            {
                let out = self.out.lock().unwrap();
                let hay = String::from_utf8_lossy(&out[self.seen..]).into_owned();
                if let Some(i) = hay.find(needle) {
                    let upto = hay[..i + needle.len()].to_owned();
                    self.seen += upto.len();
                    return upto;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "QEMU exited ({status}) before {needle:?} appeared; console:\n{}",
                    self.output()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {needle:?}; console:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Type a command line into the guest shell.
    pub fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Run `cmd` in the guest shell and return what it printed before the end marker.
    pub fn run(&mut self, cmd: &str) -> String {
        let n = self.seen;
        // The shell echoes the typed line (wrapped at its idea of the terminal width), so the
        // markers are typed with quotes inside: only their output matches.
        self.send(&format!("echo __beg''in_{n}__; {cmd}; echo __do''ne_{n}__"));
        self.expect(&format!("__begin_{n}__"));
        let done = format!("__done_{n}__");
        let out = self.expect(&done);
        // Kernel messages (`[    3.33] eth0: link becomes ready`) may land between the
        // markers whenever the guest kernel prints; they are not the command's output.
        out.trim_end_matches(&done)
            .split_inclusive('\n')
            .filter(|l| !is_kernel_message(l))
            .collect::<String>()
            .trim_start_matches(['\r', '\n'])
            .to_owned()
    }

    /// Wait for QEMU to exit on its own.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "QEMU did not exit; console:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A kernel log line on the console: `[ seconds.micros] text`.
fn is_kernel_message(line: &str) -> bool {
    line.strip_prefix('[')
        .and_then(|r| r.split_once(']'))
        .is_some_and(|(t, _)| t.trim().parse::<f64>().is_ok())
}
