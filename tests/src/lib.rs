//! Helpers for Gatewarden's end-to-end tests: locate the workspace's binaries and run them,
//! boot images in QEMU.

pub mod a64;
pub mod camera;
pub mod fleet;
pub mod netns;
pub mod pi;
pub mod qemu;

/// A 32-byte value from a JSON hex string.
pub fn hex32(v: &serde_json::Value) -> [u8; 32] {
    hex::decode(v.as_str().expect("hex string"))
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

/// The event log printed by `gwctl --json log`.
pub fn events_from_json(log: &serde_json::Value) -> Vec<vtpm::Event> {
    log["events"]
        .as_array()
        .expect("events array")
        .iter()
        .map(|e| {
            vtpm::Event::new(
                vtpm::PcrIndex::new(e["pcr"].as_u64().expect("pcr") as u16).expect("PCR index"),
                hex32(&e["digest"]),
                serde_json::from_value(e["kind"].clone()).expect("component kind"),
                e["name"].as_str().expect("name"),
                e["version"].as_str().expect("version"),
            )
        })
        .collect()
}

use std::{
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// Path of a workspace binary built into the same target directory as this test.
///
/// `cargo xtask test` builds them first (`cargo build --workspace --bins`).
pub fn bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps, binaries (gw-pktsign) in
    // target/<profile>: the workspace's binaries are next to the latter.
    let exe = std::env::current_exe().expect("own path");
    let mut dir = exe.parent().expect("exe dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target/<profile>");
    }
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo xtask test`, or `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

/// A software monitor process in a private directory, killed on drop.
pub struct SoftwareMonitor {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl SoftwareMonitor {
    /// Start `gw-swmon` and wait until it accepts connections.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let child = Self::spawn(dir.path(), None);
        Self {
            child,
            socket: dir.path().join("monitor.sock"),
            _dir: dir,
        }
    }

    /// Start `gw-swmon` with the controller's command key (hex) provisioned.
    pub fn with_controller_key(key_hex: &str) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let child = Self::spawn(dir.path(), Some(key_hex));
        Self {
            child,
            socket: dir.path().join("monitor.sock"),
            _dir: dir,
        }
    }

    fn spawn(dir: &Path, controller_key: Option<&str>) -> Child {
        let socket = dir.join("monitor.sock");
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new(bin("gw-swmon"));
        cmd.arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .stderr(Stdio::null());
        if let Some(k) = controller_key {
            cmd.arg("--controller-key").arg(k);
        }
        let child = cmd.spawn().expect("spawn gw-swmon");
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "gw-swmon did not start listening"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// The monitor's state directory (device secret, boot counter).
    pub fn state_dir(&self) -> PathBuf {
        self._dir.path().join("state")
    }

    /// Stop the monitor and start it again on the same state (a reboot: the boot counter
    /// grows, PCRs and the event log start empty).
    pub fn restart(&mut self, controller_key: Option<&str>) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(self._dir.path(), controller_key);
    }

    /// Run `gwctl` against this monitor.
    pub fn gwctl(&self, args: &[&str]) -> Output {
        Command::new(bin("gwctl"))
            .env("GATEWARDEN_MONITOR", &self.socket)
            .env_remove("RUST_BACKTRACE")
            .args(args)
            .output()
            .expect("run gwctl")
    }
}

impl Drop for SoftwareMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
