//! A controller process and gateways (software monitor + agent processes) for the controller's
//! end-to-end tests.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ed25519_dalek::SigningKey;
use gw_controller::client::ApiClient;
use gw_proto::{endorse::Endorsement, manifest::ReferenceManifest};
use hyper::Method;

use crate::{SoftwareMonitor, bin};

/// How long a test waits for something that should happen within an epoch or two.
pub const WAIT: Duration = Duration::from_secs(60);

/// Log filter of the processes a test starts: `$GW_TEST_LOG`, else warnings only.
fn test_log() -> String {
    std::env::var("GW_TEST_LOG").unwrap_or_else(|_| "warn".into())
}

/// The database a controller test runs on.
#[derive(Debug, Clone)]
pub enum Db {
    /// A fresh SQLite file in the controller's state directory.
    Sqlite,
    /// A fresh schema-less database on the PostgreSQL server at this URL (the test drops and
    /// creates its tables by using a new database name).
    Postgres(String),
}

/// The PostgreSQL server tests use: `$GW_TEST_POSTGRES_URL`. Under `CI=true` it must be set
/// (`cargo xtask test` installs and starts a PostgreSQL server for the tests); elsewhere the PostgreSQL tests fail with a clear
/// message too, so nothing is silently skipped.
pub fn postgres_url() -> String {
    std::env::var("GW_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "GW_TEST_POSTGRES_URL is not set: start PostgreSQL and point it at a database the \
             test user may create databases on (`cargo xtask test` does this), e.g. \
             postgres://gatewarden@127.0.0.1/gatewarden"
        )
    })
}

/// A fresh PostgreSQL database for one test, created on the server `$GW_TEST_POSTGRES_URL`.
pub fn fresh_postgres(name: &str) -> String {
    let base = postgres_url();
    let db = format!("gw_test_{name}_{}", std::process::id());
    let out = Command::new("psql")
        .arg(&base)
        .args(["-v", "ON_ERROR_STOP=1", "-q", "-c"])
        .arg(format!("DROP DATABASE IF EXISTS {db}"))
        .arg("-c")
        .arg(format!("CREATE DATABASE {db}"))
        .output()
        .expect("run psql (install postgresql-client)");
    assert!(
        out.status.success(),
        "creating database {db}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (prefix, _) = base.rsplit_once('/').expect("URL ends in /DBNAME");
    format!("{prefix}/{db}")
}

/// A running `gw-controller serve`, killed on drop.
pub struct ControllerProc {
    child: Child,
    /// State directory.
    pub dir: PathBuf,
    /// Where gateways connect.
    pub agent_addr: SocketAddr,
    /// Operator API.
    pub api_addr: SocketAddr,
    /// Lines it printed on stdout.
    pub lines: Arc<Mutex<Vec<String>>>,
    rt: tokio::runtime::Runtime,
    client: ApiClient,
}

impl ControllerProc {
    /// Start a controller with state in `dir` on `db`, trusting `vendor`, with a short epoch.
    pub fn start(dir: &Path, db: &Db, vendor: &SigningKey, epoch: &str) -> Self {
        Self::start_trusting(
            dir,
            db,
            &hex::encode(vendor.verifying_key().as_bytes()),
            epoch,
        )
    }

    /// Start a controller trusting the vendor public key `vendor_hex`.
    pub fn start_trusting(dir: &Path, db: &Db, vendor_hex: &str, epoch: &str) -> Self {
        Self::start_with(dir, db, vendor_hex, epoch, &[])
    }

    /// Start a controller with extra `serve` arguments.
    pub fn start_with(dir: &Path, db: &Db, vendor_hex: &str, epoch: &str, extra: &[&str]) -> Self {
        let mut cmd = Command::new(bin("gw-controller"));
        cmd.arg("--state-dir")
            .arg(dir)
            .args([
                "serve",
                "--agent-listen",
                "127.0.0.1:0",
                "--api-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--epoch",
                epoch,
                "--unreachable-after",
                "3",
                "--jitter",
                "0.1",
            ])
            .arg("--trust-vendor")
            .arg(format!("{}=test-vendor", vendor_hex.trim()))
            .args(extra)
            .env("GW_LOG", test_log())
            .env_remove("RUST_BACKTRACE")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Db::Postgres(url) = db {
            cmd.arg("--database").arg(url);
        }
        let mut child = cmd.spawn().expect("spawn gw-controller");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = tx.send(line.clone());
                    lines.lock().unwrap().push(line);
                }
            });
        }
        let first = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("controller printed nothing (did it fail to start?)");
        // "gw-controller: gateways on A, dashboard and API on https://B/ , ..."
        let agent_addr: SocketAddr = first
            .split("gateways on ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let api_addr: SocketAddr = first
            .split("https://")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let token = std::fs::read_to_string(dir.join("operator.token")).expect("token");
        let client = ApiClient::new(
            api_addr,
            "localhost",
            &dir.join("ca.cert.pem"),
            token.trim(),
        )
        .expect("API client");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        Self {
            child,
            dir: dir.into(),
            agent_addr,
            api_addr,
            lines,
            rt,
            client,
        }
    }

    /// The controller's command (policy-signing) public key, hex.
    pub fn command_key(&self) -> String {
        let secret = std::fs::read_to_string(self.dir.join("command.key")).expect("command key");
        let key = SigningKey::from_bytes(&gw_proto::hex32(&secret).expect("hex"));
        hex::encode(key.verifying_key().as_bytes())
    }

    /// Run an operator command of the CLI against this controller.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(bin("gw-controller"))
            .arg("--state-dir")
            .arg(&self.dir)
            .arg("--api")
            .arg(self.api_addr.to_string())
            .args(args)
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("run gw-controller")
    }

    /// GET an API path as JSON (panics on errors).
    pub fn get(&self, path: &str) -> serde_json::Value {
        self.rt
            .block_on(self.client.get_json(path))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// Any request; returns status and body text.
    pub fn request(&self, method: Method, path: &str, body: Option<&str>) -> (u16, String) {
        let (s, b) = self
            .rt
            .block_on(
                self.client
                    .request(method, path, body.map(|b| b.as_bytes().to_vec())),
            )
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        (s.as_u16(), String::from_utf8_lossy(&b).into_owned())
    }

    /// The newest result of a gateway, if any.
    pub fn latest(&self, id: &str) -> Option<serde_json::Value> {
        self.get(&format!("/api/v1/gateways/{id}/results?limit=1"))
            .as_array()
            .and_then(|a| a.first().cloned())
    }

    /// Wait for a result of `id` newer than `after` (a result id) that satisfies `pred`;
    /// returns it. Panics with the history after [`WAIT`].
    pub fn wait_result(
        &self,
        id: &str,
        after: i64,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let path = format!("/api/v1/gateways/{id}/results?limit=50");
            let (code, text) = self.request(Method::GET, &path, None);
            // 404 until the gateway has enrolled.
            assert!(code == 200 || code == 404, "GET {path}: {code} {text}");
            let rows: serde_json::Value =
                serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
            if let Some(r) = rows
                .as_array()
                .into_iter()
                .flatten()
                .filter(|r| r["id"].as_i64().unwrap_or(0) > after)
                .find(|r| pred(r))
            {
                return r.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{id}: no result where {what} within {WAIT:?}; history:\n{}",
                serde_json::to_string_pretty(&rows).unwrap()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Id of the newest result of `id` (0 when none).
    pub fn last_result_id(&self, id: &str) -> i64 {
        self.latest(id).and_then(|r| r["id"].as_i64()).unwrap_or(0)
    }

    /// Stop the process with SIGKILL (no chance to clean up).
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ControllerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Reasons in a result, as `component: reason`.
pub fn reasons(result: &serde_json::Value) -> Vec<String> {
    gw_controller::appraise::problems_in(&result["ear"])
}

/// Wait for the first verified result of gateway `id` (booted in `q`) and check that every
/// component of its measured boot chain and its agent affirm; returns the result.
pub fn wait_boot_chain_affirmed(
    ctl: &ControllerProc,
    id: &str,
    q: &mut crate::qemu::Qemu,
) -> serde_json::Value {
    let r = ctl.wait_result(id, 0, "a verified result", |r| {
        r["ear"]["gw.counters"].is_array()
    });
    for c in [
        "monitor",
        "hypervisor",
        "kernel",
        "initramfs",
        "cmdline",
        "dtb",
        "agent",
    ] {
        assert_eq!(
            component(&r, c),
            "affirming",
            "{c}: {r:#}\nguest agent log:\n{}",
            q.run("cat /tmp/gw-agent.log")
        );
    }
    r
}

/// A rogue process in the guest of `q` loads a firewall configuration (extends the firewall's
/// config PCR with a digest of its own); returns the controller's next contraindicated result
/// for gateway `id`.
pub fn rogue_firewall_config(
    q: &mut crate::qemu::Qemu,
    ctl: &ControllerProc,
    id: &str,
) -> serde_json::Value {
    let bogus = hex::encode(vtpm::sha256(b"allow everything"));
    let out = q.run(&format!(
        "gwctl --transport hypervisor pcr extend 512 {bogus} --kind middlebox-config --name firewall; echo rc=$?"
    ));
    assert!(out.contains("rc=0"), "{out}");
    let after = ctl.last_result_id(id);
    ctl.wait_result(id, after, "the modified config", |r| {
        r["status"] == "contraindicated"
    })
}

/// Status of one component in a result.
pub fn component(result: &serde_json::Value, name: &str) -> String {
    result["ear"]["submods"][name]["ear.status"]
        .as_str()
        .unwrap_or("absent")
        .to_owned()
}

/// A simulated gateway: a software monitor and a `gw-agent` process.
pub struct Gateway {
    /// Gateway id.
    pub id: String,
    /// Its monitor.
    pub monitor: SoftwareMonitor,
    agent: Option<Child>,
    dir: tempfile::TempDir,
    /// The endorsement it presents.
    pub endorsement: Endorsement,
}

impl Gateway {
    /// A monitor provisioned with `controller_key`, and an endorsement of its keys by
    /// `vendor` under `id`. The agent is not started.
    pub fn new(id: &str, vendor: &SigningKey, controller_key: &str) -> Self {
        let monitor = SoftwareMonitor::with_controller_key(controller_key);
        let out = monitor.gwctl(&["--json", "version"]);
        assert!(out.status.success(), "gwctl version: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("version JSON");
        let key = |f: &str| {
            ed25519_dalek::VerifyingKey::from_bytes(&crate::hex32(&v[f])).expect("public key")
        };
        let endorsement = Endorsement::sign(vendor, id, &key("attestation_key"), &key("agent_key"))
            .expect("endorse");
        Self {
            id: id.into(),
            monitor,
            agent: None,
            dir: tempfile::tempdir().expect("temporary directory"),
            endorsement,
        }
    }

    /// Files of this gateway (endorsement, agent state, configs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Where the agent writes middlebox configs.
    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("config")
    }

    /// Start (or restart) the agent against `ctl`.
    pub fn start_agent(&mut self, ctl: &ControllerProc) {
        self.stop_agent();
        let endorsement = self.dir.path().join("endorsement.json");
        std::fs::write(
            &endorsement,
            serde_json::to_vec(&self.endorsement).expect("serialise"),
        )
        .expect("write endorsement");
        let child = Command::new(bin("gw-agent"))
            .arg("--controller")
            .arg(ctl.agent_addr.to_string())
            .arg("--ca")
            .arg(ctl.dir.join("ca.cert.pem"))
            .arg("--endorsement")
            .arg(&endorsement)
            .arg("--state-dir")
            .arg(self.dir.path().join("agent"))
            .arg("--config-dir")
            .arg(self.config_dir())
            .args(["--report-every", "1", "--transport", "socket"])
            .arg("--monitor")
            .arg(&self.monitor.socket)
            .env_remove("RUST_BACKTRACE")
            .env("GW_LOG", test_log())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn gw-agent");
        self.agent = Some(child);
    }

    /// Stop the agent.
    pub fn stop_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The agent's exit status, if it stopped by itself.
    pub fn agent_exited(&mut self) -> Option<std::process::ExitStatus> {
        self.agent
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop_agent();
    }
}

/// A reference manifest for software-monitor gateways on this host: the monitor, the agent
/// and `gwctl` as the `gwctl` middlebox.
pub fn host_manifest(version: &str) -> ReferenceManifest {
    let digest = |name: &str| vtpm::sha256(&std::fs::read(bin(name)).expect("binary"));
    let mut m = ReferenceManifest::new("gatewarden-host-test", version, "host");
    m.allow("hypervisor", &digest("gw-swmon"))
        .allow("agent", &digest("gw-agent"))
        .allow("middlebox:gwctl", &digest("gwctl"));
    m
}

/// Import a manifest through the CLI; returns its id.
pub fn import(ctl: &ControllerProc, signed: &gw_proto::manifest::SignedManifest) -> i64 {
    let file = ctl.dir.join(format!(
        "manifest-{}.json",
        hex::encode(&signed.digest()[..4])
    ));
    std::fs::write(&file, serde_json::to_vec(signed).unwrap()).unwrap();
    let out = ctl.cli(&["import-manifest", file.to_str().unwrap()]);
    assert!(out.status.success(), "import-manifest: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected import output {text:?}"))
}

/// A controller for the qemu-virt image in `img` (`target/gatewarden/qemu-virt`): a fresh state
/// directory holding the keys the image was provisioned with (CA, server, command key, operator
/// token) and an empty SQLite store.
pub struct ImageController {
    /// The state directory (removed on drop).
    pub state: tempfile::TempDir,
    /// The running controller.
    pub ctl: ControllerProc,
    /// The image's gateway id.
    pub gateway_id: String,
    /// The image vendor's public key (hex).
    pub vendor: String,
}

impl ImageController {
    /// Start it trusting `vendor_hex` for endorsements and manifests (`None`: the image's own
    /// vendor, so the gateway enrolls endorsed), with attestation epoch `epoch`.
    pub fn start(img: &Path, vendor_hex: Option<&str>, epoch: &str) -> Self {
        Self::launch(img, vendor_hex, epoch, None)
    }

    fn launch(
        img: &Path,
        vendor_hex: Option<&str>,
        epoch: &str,
        command_key: Option<&SigningKey>,
    ) -> Self {
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(img.join("manifest.json")).expect("manifest"))
                .expect("manifest JSON");
        // None for a board that makes its secret on its first boot: the test endorses it then
        // (`Qemu::endorse_in_guest`) and learns the id.
        let gateway_id = manifest["gateway_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let state = tempfile::tempdir().expect("state dir");
        for f in [
            "ca.key.pem",
            "ca.cert.pem",
            "server.key.pem",
            "server.cert.pem",
            "command.key",
            "operator.token",
        ] {
            std::fs::copy(img.join("controller").join(f), state.path().join(f))
                .expect("the image's controller keys");
        }
        if let Some(k) = command_key {
            std::fs::write(state.path().join("command.key"), hex::encode(k.to_bytes()))
                .expect("command key");
        }
        let vendor = std::fs::read_to_string(img.join("vendor.pub"))
            .expect("vendor.pub")
            .trim()
            .to_owned();
        let ctl = ControllerProc::start_trusting(
            state.path(),
            &Db::Sqlite,
            vendor_hex.unwrap_or(&vendor),
            epoch,
        );
        Self {
            state,
            ctl,
            gateway_id,
            vendor,
        }
    }

    /// [`ImageController::start`] trusting the image's own vendor, with the image's signed
    /// reference manifest imported: the gateway enrolls endorsed and is appraised at once.
    pub fn start_endorsed(img: &Path, epoch: &str) -> Self {
        Self::endorsed(img, epoch, None)
    }

    /// [`ImageController::start_endorsed`], but the controller signs policy with `command_key`
    /// instead of the key the image was provisioned with: an impostor controller (or a stolen
    /// operator login on one the gateway does not trust).
    pub fn start_endorsed_signing_with(img: &Path, epoch: &str, command_key: &SigningKey) -> Self {
        Self::endorsed(img, epoch, Some(command_key))
    }

    fn endorsed(img: &Path, epoch: &str, command_key: Option<&SigningKey>) -> Self {
        let c = Self::launch(img, None, epoch, command_key);
        let out = c.ctl.cli(&[
            "import-manifest",
            img.join("reference.json").to_str().expect("UTF-8 path"),
        ]);
        assert!(out.status.success(), "import-manifest: {out:?}");
        c
    }
}
