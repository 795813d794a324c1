//! The `hotaru` binary as whole-system tests run it: found, started with quiet defaults,
//! its `serve` awaited until it listens.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// The `hotaru` binary: `$HOTARU_BIN`, else `target/<profile>/hotaru` beside the running
/// test (`cargo test` and `cargo nextest run` build it there for hotaru-ops's own tests:
/// run the workspace's tests, or `cargo build -p hotaru-ops`, before one crate's).
pub fn hotaru_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HOTARU_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test>-<hash>, so the profile's directory is two up.
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join(format!("hotaru{}", std::env::consts::EXE_SUFFIX)))
        .expect("a test binary lives in target/<profile>/deps");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p hotaru-ops` (the workspace's tests \
         build it), or set HOTARU_BIN",
        bin.display()
    );
    bin
}

/// `hotaru` with warnings only and no data directory or NATS URL from the environment.
pub fn hotaru() -> Command {
    let mut c = Command::new(hotaru_bin());
    c.env("HOTARU_LOG", "warn")
        .env_remove("HOTARU_DATA_DIR")
        .env_remove("HOTARU_NATS");
    c
}

/// Runs `hotaru` with `args` to its end.
pub fn run(args: &[&str]) -> Output {
    hotaru().args(args).output().expect("run hotaru")
}

/// Its standard output, as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Starts `hotaru serve` (the `cmd` given) with its diagnostics piped; the lines arrive on
/// the receiver, read by a thread that keeps draining them.
pub fn spawn_serve(mut cmd: Command) -> (Child, Receiver<String>) {
    use std::io::BufRead;
    let mut child = cmd
        .env("HOTARU_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hotaru serve");
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Waits (up to 30 s) for serve to say it is running: its listener is bound by then.
pub fn wait_until_serving(lines: &Receiver<String>) {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.contains("server running") => return,
            Ok(l) => seen.push(l),
            Err(e) => panic!("serve did not start ({e}): {seen:?}"),
        }
    }
}

/// A small deterministic generator (xorshift64*), seeded from `HOTARU_TEST_SEED` or the
/// time, and saying which so that a failure can be rerun.
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> Self {
        let seed = std::env::var("HOTARU_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            });
        eprintln!("seed {seed} (rerun with HOTARU_TEST_SEED={seed})");
        Self(seed | 1)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}
