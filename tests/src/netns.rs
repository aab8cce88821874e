//! Network namespaces and veth pairs for data-path tests: real kernel networking, nothing
//! leaves the machine. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN); under `CI=true` a missing
//! capability is a failure, never a skip.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::time::Duration;

/// Whether this process may create network namespaces. Panics under `CI=true` when it may not.
pub fn available() -> bool {
    let probe = format!("gwprobe{}", std::process::id());
    let ok = ip(&["netns", "add", &probe]).status.success();
    if ok {
        ip(&["netns", "del", &probe]);
    }
    if !ok && std::env::var_os("CI").is_some() {
        panic!("CI=true but network namespaces cannot be created here (root and iproute2 needed)");
    }
    if !ok {
        eprintln!("skipping: network namespaces need root (CI runs this test)");
    }
    ok
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .output()
        .expect("run `ip` (iproute2)")
}

/// Run `ip …`, panicking with its stderr on failure.
pub fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// Its name (`ip netns` name).
    pub name: String,
}

impl Netns {
    /// Create `name` (replacing a leftover of a crashed run) with its loopback up.
    pub fn new(name: &str) -> Self {
        let _ = ip(&["netns", "del", name]);
        ip_ok(&["netns", "add", name]);
        ip_ok(&["-n", name, "link", "set", "lo", "up"]);
        Self { name: name.into() }
    }

    /// Run `ip -n <ns> …`.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip_ok(&all);
    }

    /// A command that runs inside this namespace (`ip netns exec`).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Run `f` on a thread that has entered this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        spawn_in(&self.name, f)
    }
}

/// Run `f` on a thread that has entered the namespace called `name`.
pub fn spawn_in<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    {
        let path = format!("/run/netns/{name}");
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open the namespace");
            rustix::thread::move_into_link_name_space(
                std::os::fd::AsFd::as_fd(&file),
                Some(rustix::thread::LinkNameSpaceType::Network),
            )
            .expect("setns");
            f()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// Connect `a`/`a_if` to `b`/`b_if` with a veth pair, both ends up, segmentation offloads off
/// (the data path carries frames as they are on the wire, never merged super-frames).
pub fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str) {
    ip_ok(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    for (ns, ifname) in [(a, a_if), (b, b_if)] {
        ns.ip(&["link", "set", ifname, "up"]);
        let off = ns
            .command("ethtool")
            .args([
                "-K", ifname, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
            ])
            .output()
            .expect("run ethtool");
        assert!(
            off.status.success(),
            "ethtool -K {ifname}: {}",
            String::from_utf8_lossy(&off.stderr)
        );
    }
}

/// A minimal HTTP/1.1 server (the simulated IoT device): answers every request with 200 and
/// `body`, records request lines. Runs on a thread inside `ns` until the process ends.
pub fn http_server(ns: &Netns, addr: SocketAddr, body: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    ns.spawn(move || {
        let listener = TcpListener::bind(addr).expect("bind the device's HTTP port");
        tx.send(()).expect("ready");
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                use std::io::{BufRead, BufReader, Write};
                let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                loop {
                    let mut line = String::new();
                    match reader.read_line(&mut line) {
                        Ok(0) | Err(_) => return,
                        Ok(_) if line == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("HTTP server started");
}

/// `GET path` from inside namespace `ns` with a timeout: the response body, or the error.
pub fn http_get(
    ns: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<String, String> {
    let path = path.to_string();
    spawn_in(ns, move || {
        use std::io::{Read, Write};
        let mut s =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: device\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| format!("send: {e}"))?;
        let mut resp = String::new();
        s.read_to_string(&mut resp)
            .map_err(|e| format!("read: {e}"))?;
        match resp.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
            _ => Err(format!("bad response {resp:?}")),
        }
    })
    .join()
    .expect("client thread")
}
