//! Running the external tools the fixtures are built with (apt-get, dpkg-deb,
//! depmod, mkfs.ext4, debugfs, sgdisk, ldd, mmdebstrap,
//! systemctl, qemu).
//!
//! A missing tool is an error naming the Debian package that provides it, so a
//! machine without it fails loudly instead of skipping tests.

use std::ffi::OsStr;
use std::io;
use std::process::{Command, Output};

use abnix_formats::layout::Arch;
use anyhow::{bail, Context, Result};

use crate::platform::Platform;

/// The Debian package that provides `program`, for error messages.
fn package_of(program: &str) -> &'static str {
    match program {
        "apt-get" | "apt-cache" => "apt",
        "dpkg-deb" => "dpkg",
        "depmod" => "kmod",
        "mkfs.ext4" | "debugfs" | "tune2fs" => "e2fsprogs",
        "mmdebstrap" => "mmdebstrap",
        "systemctl" => "systemd",
        "sgdisk" => "gdisk",
        "ldd" => "libc-bin",
        _ => Arch::ALL
            .into_iter()
            .map(Platform::of)
            .find(|platform| platform.qemu == program)
            .map_or("the package that provides it", |platform| {
                platform.qemu_package
            }),
    }
}

/// Starts `program`, turning "not found" into an error that says what to install.
pub(crate) fn spawn_error(program: &str, err: io::Error) -> anyhow::Error {
    if err.kind() == io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "{program} is not installed (apt-get install {})",
            package_of(program)
        )
    } else {
        anyhow::Error::new(err).context(format!("starting {program}"))
    }
}

/// Runs a command to completion and returns its output; fails with its stderr
/// if it exits non-zero.
pub(crate) fn run(command: &mut Command) -> Result<Output> {
    let output = run_unchecked(command)?;
    if !output.status.success() {
        bail!(
            "{} failed ({}): {}",
            describe(command),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(output)
}

/// Runs a command to completion whatever its exit status (for tools such as
/// `ldd` whose non-zero exit carries meaning).
pub(crate) fn run_unchecked(command: &mut Command) -> Result<Output> {
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .output()
        .map_err(|err| spawn_error(&program, err))
        .with_context(|| format!("running {}", describe(command)))
}

/// `program arg arg…` for messages.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}
