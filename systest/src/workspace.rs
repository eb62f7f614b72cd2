//! The project's own binaries, for installing into fixtures.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result};

use crate::{paths, tool};

/// Builds `binary` of the workspace package `package` with the release
/// profile and returns its path.
///
/// Release, because the guest runs under TCG, where unoptimised code is
/// painfully slow, and the release profile strips the file (small images).
/// A test's own `cargo test` holds the lock of the debug profile only, so
/// this nested cargo does not wait on it.
pub fn release_binary(package: &str, binary: &str) -> Result<PathBuf> {
    // One cargo at a time: parallel tests would only queue on cargo's lock.
    static BUILD: Mutex<()> = Mutex::new(());
    let _guard = BUILD
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    // Cargo tells the tests it runs where it is.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target = paths::target_dir();
    let mut build = Command::new(&cargo);
    build
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            package,
            "--bin",
            binary,
        ])
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    // Cargo gives the tests it runs the variables of this package and a
    // LD_LIBRARY_PATH into the debug profile; build scripts that watch such
    // variables would make this build redo what a plain `cargo build
    // --release` in a shell already did.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name == "LD_LIBRARY_PATH" || name == "OUT_DIR" || is_set_by_cargo_for_tests(&name) {
            build.env_remove(name.as_ref());
        }
    }
    tool::run(&mut build).with_context(|| format!("building {binary}"))?;
    Ok(target.join("release").join(binary))
}

/// The `CARGO_*` variables cargo sets for a package's tests (as opposed to
/// the user's cargo configuration, such as `CARGO_HOME`).
fn is_set_by_cargo_for_tests(name: &str) -> bool {
    ["CARGO_PKG_", "CARGO_BIN_"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
        || [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
        ]
        .contains(&name)
}
