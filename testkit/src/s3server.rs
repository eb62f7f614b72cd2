//! A real S3 server for tests: `s3s-fs` serving a temporary directory.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How to install the server when it is missing.
pub const S3S_FS_INSTALL: &str = "cargo install --locked s3s-fs@0.14.1 --features binary";

const BUCKET: &str = "abnix-test";
const ACCESS_KEY: &str = "abnix-test-access";
const SECRET_KEY: &str = "abnix-test-secret-do-not-use";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `s3s-fs` on 127.0.0.1 with one bucket; killed on drop.
///
/// s3s-fs stores each object as a plain file, `<root>/<bucket>/<key>`
/// ([`S3Server::object_path`]), so tests can corrupt or truncate objects in
/// place. It needs path-style addressing unless started with `--domain`
/// (virtual-hosted style, `<bucket>.<domain>`), which these tests do not use.
pub struct S3Server {
    child: Child,
    addr: SocketAddr,
    root: TempDir,
}

impl S3Server {
    /// A server that requires SigV4 signatures with [`S3Server::access_key`]
    /// and [`S3Server::secret_key`].
    pub fn start() -> S3Server {
        S3Server::launch(true)
    }

    /// A server without authentication: anonymous (unsigned) requests are
    /// served, like a public bucket.
    pub fn start_public() -> S3Server {
        S3Server::launch(false)
    }

    fn launch(authenticated: bool) -> S3Server {
        let binary = find_s3s_fs();
        let root = tempfile::tempdir().expect("creating the s3s-fs root");
        // s3s-fs serves every directory under its root as a bucket.
        fs::create_dir(root.path().join(BUCKET)).expect("creating the bucket directory");
        let log_path = root.path().join("s3s-fs.log");
        // Another process may take the free port between our probe and the
        // server's bind; try a few ports.
        for _ in 0..3 {
            let addr = free_local_addr();
            let log = File::create(&log_path).expect("creating the s3s-fs log");
            let mut command = Command::new(&binary);
            command
                .arg("--host")
                .arg(addr.ip().to_string())
                .arg("--port")
                .arg(addr.port().to_string());
            if authenticated {
                command
                    .args(["--access-key", ACCESS_KEY])
                    .args(["--secret-key", SECRET_KEY]);
            }
            let mut child = command
                .arg(root.path())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("cloning the log handle"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
            if wait_until_listening(&mut child, addr) {
                return S3Server { child, addr, root };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!(
            "s3s-fs did not start listening; its log:\n{}",
            fs::read_to_string(&log_path).unwrap_or_default()
        );
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    /// The server's data directory (buckets are its subdirectories).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Where the object `key` of the bucket is stored.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    /// The server's own log (errors only unless `RUST_LOG` is set).
    pub fn log_path(&self) -> PathBuf {
        self.root.path().join("s3s-fs.log")
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `s3s-fs` on the PATH, else in cargo's bin directory; panics with the
/// install command when it is in neither.
fn find_s3s_fs() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>());
    let cargo_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .map(|cargo_home| cargo_home.join("bin"));
    on_path
        .chain(cargo_bin)
        .map(|dir| dir.join("s3s-fs"))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs not found on PATH nor in ~/.cargo/bin; install it with: {S3S_FS_INSTALL}"
            )
        })
}

fn free_local_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("finding a free port on 127.0.0.1")
}

/// Waits until `addr` accepts connections; false if the server exited first
/// or never listened.
fn wait_until_listening(child: &mut Child, addr: SocketAddr) -> bool {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            return true;
        }
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}
