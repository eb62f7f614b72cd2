//! Test helpers for abnix, used as a dev-dependency by every crate's tests:
//!
//! - [`S3Server`]: a real S3 server (`s3s-fs`) on 127.0.0.1 with a bucket
//!   in a temporary directory;
//! - [`FaultProxy`]: an HTTP/1.1 proxy in front of it that records requests
//!   and injects faults (cut or stalled bodies, 500s, latency);
//! - [`credentials_file`]: a 0600 credentials file for the server;
//! - [`images`]: realistic ext4 images (`mkfs.ext4 -d` of real files).
//!
//! Nothing here skips: a missing `s3s-fs` is a panic that says how to
//! install it.

pub mod images;
mod proxy;
mod s3server;

pub use proxy::{FaultProxy, InjectedError, RecordedRequest};
pub use s3server::{S3Server, S3S_FS_INSTALL};

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes `dir/s3-credentials.toml` with `server`'s keys, mode 0600, in the
/// format `abnix_updater::remote::CredentialSource::File` reads.
pub fn credentials_file(dir: &Path, server: &S3Server) -> PathBuf {
    let path = dir.join("s3-credentials.toml");
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    write!(
        file,
        "access_key_id = \"{}\"\nsecret_access_key = \"{}\"\n",
        server.access_key(),
        server.secret_key()
    )
    .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    path
}
