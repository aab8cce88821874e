//! `gw-swmon`: the Gatewarden hypercall ABI served by an ordinary host process.
//!
//! It runs the same [`gw_core::Monitor`] as the hypervisor, so guest agents, the controller and
//! their tests work before (and without) the hypervisor. Keys and PCRs live in this process,
//! never in the caller's, but nothing isolates this process from root: its quotes say
//! `InsecureSoftwareMonitor` and a verifier reports them as such. Never ship it in an image.
//!
//! Callers are identified by the kernel (`SO_PEERCRED`) and measured as SHA-256 of
//! `/proc/<pid>/exe`; the measurement is redone if the process executes another program.

use std::{
    fs,
    io::{self, Read, Write},
    os::unix::{
        fs::{MetadataExt, OpenOptionsExt, PermissionsExt},
        net::{UnixListener, UnixStream},
    },
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use anyhow::{Context, Result, bail};
use clap::Parser;
use ed25519_dalek::VerifyingKey;
use gw_abi::{AbiError, MAX_RESPONSE, frame};
use gw_core::{Caller, Config, Monitor};
use vtpm::{
    ComponentKind, DeviceSecret, KeyHierarchy, MonitorIdentity, MonitorKind, pcr::PCR_HYPERVISOR,
};

/// Event log entries and hop key slots of the software monitor.
type SwMonitor = Monitor<4096, 256>;

/// Serve the Gatewarden hypercall ABI on a Unix socket (INSECURE, development and tests only).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Unix socket to listen on.
    #[arg(long, env = "GATEWARDEN_MONITOR", default_value = gw_default_socket())]
    socket: PathBuf,
    /// Directory for the device secret and the boot counter (created if missing).
    #[arg(long, default_value = "/var/lib/gatewarden-swmon")]
    state_dir: PathBuf,
    /// The controller's command-signing public key: 64 hex digits, or a file holding them.
    /// Without it AGENT_VERIFY and POLICY_SET answer NOT_PROVISIONED.
    #[arg(long)]
    controller_key: Option<String>,
    /// Permissions of the socket file (octal).
    #[arg(long, default_value = "660", value_parser = parse_mode)]
    socket_mode: u32,
}

const fn gw_default_socket() -> &'static str {
    "/run/gatewarden/monitor.sock"
}

fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s, 8).map_err(|e| format!("not an octal mode: {e}"))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let secret = load_or_create_secret(&args.state_dir)?;
    let boot_counter = bump_boot_counter(&args.state_dir)?;
    let controller_key = args
        .controller_key
        .as_deref()
        .map(parse_controller_key)
        .transpose()?;
    let exe = fs::read("/proc/self/exe").context("reading own executable")?;
    let build = vtpm::sha256(&exe);
    let keys = KeyHierarchy::derive(&secret);
    let mut hop_master = [0u8; 32];
    getrandom::fill(&mut hop_master).map_err(|e| anyhow::anyhow!("random hop master: {e}"))?;
    let version = concat!("gw-swmon ", env!("CARGO_PKG_VERSION"));
    let mut monitor = Box::new(SwMonitor::new(Config {
        keys: &keys,
        identity: MonitorIdentity::new(MonitorKind::InsecureSoftwareMonitor, version, build),
        boot_counter,
        controller_key,
        hop_master,
    }));
    monitor
        .measure(
            PCR_HYPERVISOR,
            &build,
            ComponentKind::Hypervisor,
            "gw-swmon",
            env!("CARGO_PKG_VERSION"),
        )
        .context("measuring the monitor")?;
    let listener = bind(&args.socket, args.socket_mode)?;
    eprintln!("gw-swmon: INSECURE software monitor for development; never use it on a gateway");
    eprintln!(
        "gw-swmon: attestation key {}",
        hex::encode(monitor.vtpm().attestation_public_key().to_bytes())
    );
    eprintln!(
        "gw-swmon: agent key       {}",
        hex::encode(keys.control_key().verifying_key().to_bytes())
    );
    eprintln!(
        "gw-swmon: boot counter {boot_counter}, controller key {}",
        if controller_key.is_some() {
            "provisioned"
        } else {
            "not provisioned"
        }
    );
    eprintln!("gw-swmon: listening on {}", args.socket.display());
    drop(keys);

    let monitor = Arc::new(Mutex::new(monitor));
    for conn in listener.incoming() {
        let stream = match conn {
            Ok(s) => s,
            Err(e) => {
                eprintln!("gw-swmon: accept failed: {e}");
                continue;
            }
        };
        let monitor = Arc::clone(&monitor);
        std::thread::spawn(move || {
            if let Err(e) = serve(stream, &monitor)
                && e.kind() != io::ErrorKind::UnexpectedEof
            {
                eprintln!("gw-swmon: connection closed: {e}");
            }
        });
    }
    Ok(())
}

fn parse_controller_key(arg: &str) -> Result<VerifyingKey> {
    let text = if arg.len() == 64 && arg.chars().all(|c| c.is_ascii_hexdigit()) {
        arg.to_owned()
    } else {
        fs::read_to_string(arg).with_context(|| format!("reading controller key file {arg}"))?
    };
    let bytes: [u8; 32] = hex::decode(text.trim())
        .context("controller key is not hex")?
        .try_into()
        .map_err(|_| anyhow::anyhow!("controller key must be 32 bytes (64 hex digits)"))?;
    VerifyingKey::from_bytes(&bytes).context("controller key is not a valid ed25519 public key")
}

fn load_or_create_secret(dir: &Path) -> Result<DeviceSecret> {
    fs::create_dir_all(dir)
        .with_context(|| format!("creating state directory {}", dir.display()))?;
    let path = dir.join("device-secret");
    match fs::read(&path) {
        Ok(bytes) => {
            let bytes: [u8; 32] = bytes
                .try_into()
                .map_err(|_| anyhow::anyhow!("{} must hold exactly 32 bytes", path.display()))?;
            Ok(DeviceSecret::new(bytes))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes)
                .map_err(|e| anyhow::anyhow!("random device secret: {e}"))?;
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            Ok(DeviceSecret::new(bytes))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Read, increment and durably store the boot counter (write to a temporary file, fsync, rename).
fn bump_boot_counter(dir: &Path) -> Result<u64> {
    let path = dir.join("boot-counter");
    let current = match fs::read_to_string(&path) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{} is corrupt", path.display()))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let next = current.checked_add(1).context("boot counter exhausted")?;
    let tmp = dir.join("boot-counter.tmp");
    let mut f = fs::File::create(&tmp)?;
    writeln!(f, "{next}")?;
    f.sync_all()?;
    fs::rename(&tmp, &path)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(next)
}

fn bind(path: &Path, mode: u32) -> Result<UnixListener> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("another monitor is already listening on {}", path.display());
        }
        fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(listener)
}

/// Identity of a connected process, re-measured when its executable changes.
struct Peer {
    pid: u32,
    exe_id: (u64, u64),
    program: [u8; 32],
}

impl Peer {
    fn identify(stream: &UnixStream) -> io::Result<Self> {
        let cred = rustix::net::sockopt::socket_peercred(stream)?;
        let pid = cred.pid.as_raw_nonzero().get() as u32;
        let (exe_id, program) = measure(pid)?;
        Ok(Self {
            pid,
            exe_id,
            program,
        })
    }

    /// The caller for the next request; re-measures after an `execve`.
    fn caller(&mut self) -> io::Result<Caller> {
        let meta = fs::metadata(format!("/proc/{}/exe", self.pid))?;
        if (meta.dev(), meta.ino()) != self.exe_id {
            (self.exe_id, self.program) = measure(self.pid)?;
        }
        Ok(Caller {
            space: self.pid as u64,
            program: self.program,
        })
    }
}

fn measure(pid: u32) -> io::Result<((u64, u64), [u8; 32])> {
    let path = format!("/proc/{pid}/exe");
    let meta = fs::metadata(&path)?;
    let bytes = fs::read(&path)?;
    Ok(((meta.dev(), meta.ino()), vtpm::sha256(&bytes)))
}

fn serve(mut stream: UnixStream, monitor: &Mutex<Box<SwMonitor>>) -> io::Result<()> {
    let mut peer = Peer::identify(&stream)?;
    let mut payload = Vec::new();
    let mut out = vec![0u8; MAX_RESPONSE];
    loop {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len)?;
        let n = match frame::request_len(len) {
            Ok(n) => n,
            Err(e) => {
                // The stream cannot be resynchronised after a bad length: answer and close.
                stream.write_all(&frame::response_header(Err(e)))?;
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "bad request frame length",
                ));
            }
        };
        payload.resize(n, 0);
        stream.read_exact(&mut payload)?;
        let result = match frame::split_request(&payload) {
            Ok((function, body)) => {
                let caller = peer.caller()?;
                let mut m = monitor.lock().unwrap_or_else(|p| p.into_inner());
                m.handle_raw(&caller, function, body, &mut out)
            }
            Err(e) => Err::<usize, AbiError>(e),
        };
        let mut msg = frame::response_header(result).to_vec();
        if let Ok(len) = result {
            msg.extend_from_slice(&out[..len]);
        }
        stream.write_all(&msg)?;
    }
}
