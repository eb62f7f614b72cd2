//! The fixture initramfs: busybox, the kernel modules the machine needs, and
//! `scripts/initramfs-init.sh` as `/init`.
//!
//! Three variants share everything but their mode:
//! - [`boot_initramfs`]: a host's initrd: finds `root=UUID=…`, mounts it
//!   read-only and `switch_root`s into it;
//! - [`systemd_host_initramfs`]: the same for an erofs or ext4 root, with
//!   the mounts a NixOS host's stage 1 makes, then systemd;
//! - [`installer_initramfs`]: an installer environment: runs one command
//!   (e.g. `abnix-install …`), prints its exit code and powers off.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::kernel::Kernel;
use crate::shell::quote;
use crate::tree::Tree;

const INIT: &str = include_str!("../scripts/initramfs-init.sh");

/// The modules every fixture machine loads: the virtio PCI transport, the
/// disks, the network, and the entropy source (which makes getrandom() ready
/// at once instead of after seconds of jitter collection under TCG).
pub const MODULES: &[&str] = &["virtio_pci", "virtio_blk", "virtio_net", "virtio_rng"];

/// What a systemd host loads besides: erofs roots, and the `/etc` overlay.
const SYSTEMD_HOST_MODULES: &[&str] = &["erofs", "overlay"];

/// Where Debian's systemd is: a systemd host's init.
const SYSTEMD: &str = "/lib/systemd/systemd";

/// What the installer environment runs, and what it needs to run it.
#[derive(Debug, Clone, Default)]
pub struct InstallerEnv {
    /// A shell command line, run by `sh -c` with `/bin` on the PATH.
    pub command: String,
    /// Host executables copied into `/bin` with their shared libraries.
    pub binaries: Vec<PathBuf>,
    /// Host directories copied in: (host directory, path in the initramfs).
    pub directories: Vec<(PathBuf, String)>,
}

/// Writes the initrd of a fixture host to `out`.
pub fn boot_initramfs(kernel: &Kernel, out: &Path) -> Result<()> {
    let tree = base_tree(kernel, "boot", MODULES, "/init")?;
    write(&tree, out)
}

/// Writes the initrd of a systemd host ([`crate::systemd_host`]) to `out`.
pub fn systemd_host_initramfs(kernel: &Kernel, out: &Path) -> Result<()> {
    let modules = [MODULES, SYSTEMD_HOST_MODULES].concat();
    let tree = base_tree(kernel, "systemd-host", &modules, SYSTEMD)?;
    write(&tree, out)
}

/// Writes an installer environment running `env.command` to `out`.
pub fn installer_initramfs(kernel: &Kernel, env: &InstallerEnv, out: &Path) -> Result<()> {
    let mut tree = base_tree(kernel, "installer", MODULES, "")?;
    tree.file("etc/fixture/installer-command", 0o644, env.command.as_str());
    for binary in &env.binaries {
        tree.binary(binary, "bin")?;
    }
    for (host, path) in &env.directories {
        tree.host_directory(path, host)?;
    }
    write(&tree, out)
}

/// The tree every variant shares: busybox, `modules` (with what they need),
/// the init script, told its mode and the root's `init` to start.
fn base_tree(kernel: &Kernel, mode: &str, modules: &[&str], init: &str) -> Result<Tree> {
    let mut tree = Tree::new();
    tree.busybox(kernel.arch)?;
    tree.file("init", 0o755, INIT);
    // The kernel opens /dev/console for init's output before /init mounts
    // devtmpfs.
    tree.char_device("dev/console", 5, 1);
    for directory in ["proc", "sys", "tmp", "run"] {
        tree.directory(directory);
    }
    let modules = kernel.modules_in_load_order(modules)?;
    for module in &modules {
        tree.host_file(&format!("lib/modules/{}.ko", module.name), &module.file)?;
    }
    let names: Vec<&str> = modules.iter().map(|module| module.name.as_str()).collect();
    tree.file(
        "etc/fixture/initramfs.env",
        0o644,
        format!(
            "MODE={}\nMODULES={}\nINIT={}\n",
            quote(mode),
            quote(&names.join(" ")),
            quote(init)
        ),
    );
    Ok(tree)
}

fn write(tree: &Tree, out: &Path) -> Result<()> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    tree.write_cpio(BufWriter::new(file))
        .with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_script_is_valid_shell() {
        crate::shell::assert_valid_shell(INIT);
    }
}
