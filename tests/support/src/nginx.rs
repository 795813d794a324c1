//! nginx (Debian's `nginx-light`) serving files from a temporary root on a free loopback
//! port: the floor the gateway's downloads are measured against. Stopped when dropped.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

pub struct Nginx {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Nginx {
    /// Starts nginx serving `files` (path under the root, bytes), two workers, sendfile on,
    /// and waits (up to 5 s) until it accepts connections. Says why when it cannot.
    pub fn serve(files: &[(&str, &[u8])]) -> Result<Self, String> {
        let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .ok_or("nginx is not installed (apt-get install nginx-light)")?;
        let io = |e: std::io::Error| e.to_string();
        let dir = tempfile::tempdir().map_err(io)?;
        let d = dir.path();
        for (path, bytes) in files {
            let file = d.join("www").join(path.trim_start_matches('/'));
            if let Some(parent) = file.parent() {
                std::fs::create_dir_all(parent).map_err(io)?;
            }
            std::fs::write(file, bytes).map_err(io)?;
        }
        std::fs::create_dir_all(d.join("tmp")).map_err(io)?;
        let port = free_port();
        let conf = format!(
            "daemon off; worker_processes 2; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;\n\
               client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n\
               uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
               server {{ listen 127.0.0.1:{port}; root {d}/www; }} }}\n",
            d = d.display()
        );
        std::fs::write(d.join("nginx.conf"), conf).map_err(io)?;
        let child = Command::new(nginx)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .arg("-p")
            .arg(d)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {nginx}: {e}"))?;
        let mut n = Self {
            port,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = n.child.try_wait() {
                return Err(format!("nginx exited: {status}"));
            }
            if Instant::now() > deadline {
                return Err("nginx did not listen within 5 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(n)
    }

    /// The URL of a file it serves.
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }
}

impl Drop for Nginx {
    /// SIGTERM, so that the master stops its workers (a SIGKILL of the master would leave
    /// them serving, orphaned); SIGKILL only if it has not exited within 5 s.
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let termed = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        let deadline = Instant::now() + Duration::from_secs(5);
        while termed && Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    #[test]
    fn nginx_serves_the_files_it_was_given_until_dropped() {
        let n = Nginx::serve(&[("exports/batch.zip", b"PK-not-really")]).expect("nginx");
        let get = |path: &str| {
            let mut s = TcpStream::connect(("127.0.0.1", n.port)).expect("connect");
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).unwrap();
            answer
        };
        let ok = get("/exports/batch.zip");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("PK-not-really"), "{ok}");
        assert!(get("/exports/other.zip").starts_with("HTTP/1.1 404"));
        assert!(n.url("exports/batch.zip").ends_with("/exports/batch.zip"));
        let port = n.port;
        drop(n);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "stopped");
    }
}
