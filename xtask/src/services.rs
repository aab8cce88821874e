//! Services `cargo xtask test` starts for the tests and stops afterwards: a PostgreSQL server of
//! its own (the controller's PostgreSQL store, replicas and migrations are tested against it).
//!
//! The server is a throwaway cluster in a temporary directory, listening on a free loopback port
//! with trust authentication for one role: nothing of the machine's own PostgreSQL clusters or
//! configuration is touched. As root it runs as the `postgres` user (PostgreSQL refuses root).

use std::{
    hash::{Hash, Hasher},
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

use crate::setup;

/// The test role and database.
const ROLE: &str = "gatewarden";

/// A running test PostgreSQL server; stopped and removed on drop.
pub struct TestPostgres {
    bin: PathBuf,
    data: PathBuf,
    run_as: Option<&'static str>,
    /// `postgres://gatewarden@127.0.0.1:PORT/gatewarden`.
    pub url: String,
}

/// The newest PostgreSQL installed under `/usr/lib/postgresql/<version>/bin`.
fn server_bin() -> Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql: the PostgreSQL server is not installed")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, b)| b)
        .context("no PostgreSQL server binary under /usr/lib/postgresql/*/bin")
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl TestPostgres {
    /// Install (if needed) and start a PostgreSQL server for the tests of the workspace at
    /// `root`; one directory per workspace, so a server left by an interrupted run is stopped
    /// and replaced.
    pub fn start(root: &Path) -> Result<Self> {
        setup::ensure(&[setup::POSTGRES, setup::PSQL])?;
        let bin = server_bin()?;
        let run_as = setup::is_root().then_some("postgres");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        root.hash(&mut h);
        let data = std::env::temp_dir().join(format!("gatewarden-pg-{:016x}", h.finish()));
        let mut pg = Self {
            bin,
            data,
            run_as,
            url: String::new(),
        };
        if pg.data.join("postmaster.pid").exists() {
            eprintln!(
                "==> stopping a test PostgreSQL left in {}",
                pg.data.display()
            );
            let _ = pg.ctl(&["stop", "-m", "immediate"]).output();
        }
        let _ = std::fs::remove_dir_all(&pg.data);
        let port = free_port()?;
        let started = Instant::now();
        eprintln!(
            "==> PostgreSQL for the tests ({}, port {port}, data in {})",
            pg.bin.display(),
            pg.data.display()
        );
        let mut init = pg.command("initdb");
        init.arg("-D")
            .arg(&pg.data)
            .args(["-U", ROLE, "--auth=trust", "-E", "UTF8", "--no-sync"]);
        quiet(init, "initdb")?;
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=300",
            pg.data.display()
        );
        let log = pg.data.join("server.log");
        let mut start = pg.ctl(&["start", "-w", "-t", "60"]);
        start.arg("-o").arg(opts).arg("-l").arg(&log);
        quiet(start, "pg_ctl start").with_context(|| format!("see {}", log.display()))?;
        let url_base = format!("postgres://{ROLE}@127.0.0.1:{port}");
        // Running from here on: a failure below still stops it (drop).
        pg.url = format!("{url_base}/{ROLE}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = Command::new("psql")
                .arg(format!("{url_base}/postgres"))
                .args(["-qAtc", &format!("CREATE DATABASE {ROLE}")])
                .output()
                .context("running psql")?;
            if out.status.success() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "creating the test database: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!(
            "    ok ({:.1} s): GW_TEST_POSTGRES_URL={}",
            started.elapsed().as_secs_f64(),
            pg.url
        );
        Ok(pg)
    }

    /// A server program, run as the cluster's owner.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(path);
                c
            }
            None => Command::new(path),
        }
    }

    fn ctl(&self, args: &[&str]) -> Command {
        let mut c = self.command("pg_ctl");
        c.arg("-D").arg(&self.data).args(args);
        c
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if self.url.is_empty() {
            return;
        }
        eprintln!("==> stopping the tests' PostgreSQL");
        let _ = self.ctl(&["stop", "-m", "fast", "-w"]).output();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Run `cmd`, showing its output only when it fails.
fn quiet(mut cmd: Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
