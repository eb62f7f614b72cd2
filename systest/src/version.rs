//! Fixture versions: what Nix would build for a host, made here from Debian's
//! kernel and busybox plus our own binaries.
//!
//! A version is a root filesystem image (ext4, its UUID is the version id),
//! a kernel, an initrd and a kernel command line (DESIGN §3). Its `/init` is
//! `scripts/host-init.sh`, told by [`Behaviour`] how this version behaves.

use std::path::{Path, PathBuf};
use std::time::Duration;

use abnix_core::boot::SlotInfo;
use abnix_formats::layout::Arch;
use abnix_formats::slot::Slot;
use anyhow::{Context, Result};
use uuid::Uuid;

use crate::ext4;
use crate::initramfs;
use crate::kernel::Kernel;
use crate::platform::Platform;
use crate::shell::quote;
use crate::tree::Tree;
use crate::vm::Boot;

const HOST_INIT: &str = include_str!("../scripts/host-init.sh");

/// Seconds the kernel waits after a panic before it reboots; 0 would hang.
const PANIC_REBOOT_SECONDS: u32 = 1;

/// How a fixture version behaves once booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Mounts what a host mounts, brings the network up, runs `commands`
    /// (shell command lines) printing each exit code, then does `then`.
    Healthy {
        commands: Vec<String>,
        then: AfterCommands,
    },
    /// Comes up but never becomes healthy: runs nothing and reboots after
    /// `reboot_after`, as a failed health check would.
    NeverHealthy { reboot_after: Duration },
    /// The kernel panics right after the marker (PID 1 exits); the version's
    /// command line has `panic=N`, so the machine reboots.
    KernelPanic,
}

/// What a healthy host does once its commands ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCommands {
    PowerOff,
    Reboot,
    /// Stays up doing nothing (until a command reboots it or a test cuts
    /// the power).
    Idle,
}

impl Behaviour {
    /// A healthy host that runs `commands` and powers off.
    pub fn healthy<S: Into<String>>(commands: impl IntoIterator<Item = S>) -> Self {
        Behaviour::Healthy {
            commands: commands.into_iter().map(Into::into).collect(),
            then: AfterCommands::PowerOff,
        }
    }

    /// The behaviour's name, as the host's marker line reports it.
    pub fn name(&self) -> &'static str {
        match self {
            Behaviour::Healthy { .. } => "healthy",
            Behaviour::NeverHealthy { .. } => "never-healthy",
            Behaviour::KernelPanic => "kernel-panic",
        }
    }

    /// `/etc/abnix-fixture/fixture.env` for `scripts/host-init.sh`.
    fn env_file(&self, version: u64, id: Uuid) -> String {
        let then = match self {
            Behaviour::Healthy { then, .. } => match then {
                AfterCommands::PowerOff => "poweroff",
                AfterCommands::Reboot => "reboot",
                AfterCommands::Idle => "idle",
            },
            _ => "",
        };
        let reboot_after = match self {
            Behaviour::NeverHealthy { reboot_after } => reboot_after.as_secs().max(1),
            _ => 0,
        };
        format!(
            "VERSION={version}\nID={id}\nBEHAVIOUR={}\nTHEN={}\nREBOOT_AFTER={reboot_after}\n",
            quote(self.name()),
            quote(then),
        )
    }

    fn commands(&self) -> Result<String> {
        let Behaviour::Healthy { commands, .. } = self else {
            return Ok(String::new());
        };
        let mut lines = String::new();
        for command in commands {
            anyhow::ensure!(
                !command.contains('\n'),
                "fixture command {command:?} spans several lines"
            );
            lines.push_str(command);
            lines.push('\n');
        }
        Ok(lines)
    }
}

/// The root filesystem's label, also the version's label in boot menus.
pub(crate) fn image_label(version: u64) -> String {
    format!("abnix-v{version}")
}

/// What to build.
#[derive(Debug, Clone)]
pub struct VersionSpec {
    /// The version number (`version` in the meta).
    pub version: u64,
    /// The version id: the root filesystem's UUID.
    pub id: Uuid,
    pub behaviour: Behaviour,
    /// Host executables installed in `/bin` with their shared libraries
    /// (such as `abnix-update`).
    pub binaries: Vec<PathBuf>,
    /// Extra files, e.g. the abnix configuration under `/etc/abnix/`.
    pub files: Vec<FixtureFile>,
}

/// A file of a fixture's root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixtureFile {
    /// Absolute path in the image.
    pub path: String,
    pub mode: u32,
    pub contents: Vec<u8>,
}

impl FixtureFile {
    pub fn new(path: &str, mode: u32, contents: impl Into<Vec<u8>>) -> Self {
        FixtureFile {
            path: path.to_owned(),
            mode,
            contents: contents.into(),
        }
    }
}

impl VersionSpec {
    /// Version `version` with a fresh random id, no extra binaries or files.
    pub fn new(version: u64, behaviour: Behaviour) -> Self {
        VersionSpec {
            version,
            id: Uuid::new_v4(),
            behaviour,
            binaries: Vec::new(),
            files: Vec::new(),
        }
    }

    /// The root filesystem's tree, for machines of `arch`.
    fn tree(&self, arch: Arch) -> Result<Tree> {
        // Host executables run on the host's architecture only.
        anyhow::ensure!(
            self.binaries.is_empty() || arch == Arch::native(),
            "version {}: host binaries ({:?}) cannot run on {arch} machines",
            self.version,
            self.binaries
        );
        let mut tree = Tree::new();
        tree.busybox(arch)?;
        for binary in &self.binaries {
            tree.binary(binary, "bin")?;
        }
        tree.file("init", 0o755, HOST_INIT);
        tree.file(
            "etc/abnix-fixture/fixture.env",
            0o644,
            self.behaviour.env_file(self.version, self.id),
        );
        tree.file(
            "etc/abnix-fixture/commands",
            0o644,
            self.behaviour.commands()?,
        );
        tree.file("etc/passwd", 0o644, "root:x:0:0:root:/root:/bin/sh\n");
        tree.file("etc/group", 0o644, "root:x:0:\n");
        tree.file("etc/hosts", 0o644, "127.0.0.1 localhost\n");
        // Mount points: the rw partition's, and where its directories are
        // bound (scripts/host-init.sh).
        for directory in [
            "dev", "proc", "sys", "run", "tmp", "rw", "var", "home", "root",
        ] {
            tree.directory(directory);
        }
        for file in &self.files {
            tree.file(&file.path, file.mode, file.contents.as_slice());
        }
        Ok(tree)
    }
}

/// A built version: its artifacts on disk, ready to be packed, written into
/// a slot or booted directly.
#[derive(Debug, Clone)]
pub struct FixtureVersion {
    pub version: u64,
    pub id: Uuid,
    /// The machines it is for: its kernel's.
    pub arch: Arch,
    /// The root filesystem image (raw ext4; erofs or ext4 for a systemd
    /// host).
    pub image: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The version's kernel command line, without `abnix.slot=` (the
    /// bootloader adds that).
    pub cmdline: String,
}

impl FixtureVersion {
    /// Builds `spec` into `dir` (created if needed): `root.ext4`,
    /// `initrd.cpio`; the kernel is the cached one, and its architecture
    /// the version's.
    pub fn build(spec: &VersionSpec, kernel: &Kernel, dir: &Path) -> Result<FixtureVersion> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let image = dir.join("root.ext4");
        ext4::read_only_image(
            &spec.tree(kernel.arch)?,
            spec.id,
            &image_label(spec.version),
            &image,
            &dir.join("root.staging"),
        )
        .with_context(|| format!("building the root image of version {}", spec.version))?;
        let initrd = initramfs::boot_initramfs;
        FixtureVersion::assemble(spec.version, spec.id, image, kernel, initrd, dir)
    }

    /// Version `version` with root `image` (its UUID `id`), booting
    /// `kernel` with the fixtures' command line and the initrd `initrd`
    /// writes into `dir`.
    pub(crate) fn assemble(
        version: u64,
        id: Uuid,
        image: PathBuf,
        kernel: &Kernel,
        initrd: fn(&Kernel, &Path) -> Result<()>,
        dir: &Path,
    ) -> Result<FixtureVersion> {
        let initrd_path = dir.join("initrd.cpio");
        initrd(kernel, &initrd_path)?;
        Ok(FixtureVersion {
            version,
            id,
            arch: kernel.arch,
            image,
            kernel: kernel.image.clone(),
            initrd: initrd_path,
            cmdline: format!(
                "console={} quiet panic={PANIC_REBOOT_SECONDS} root=UUID={id}",
                Platform::of(kernel.arch).console,
            ),
        })
    }

    /// What boot control records for this version in a slot (the label is
    /// the root filesystem's, `abnix-v<N>`).
    pub fn slot_info(&self) -> SlotInfo {
        SlotInfo {
            version: self.version,
            id: self.id,
            label: image_label(self.version),
            cmdline: self.cmdline.clone(),
        }
    }

    /// Boots this version's kernel directly (no bootloader), as the
    /// bootloader would from `slot`.
    pub fn direct_boot(&self, slot: Slot) -> Boot {
        Boot::Kernel {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            cmdline: format!("{} abnix.slot={slot}", self.cmdline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_init_is_valid_shell() {
        crate::shell::assert_valid_shell(HOST_INIT);
    }

    /// The env file is valid shell and sets what the init reads.
    #[test]
    fn env_file_reads_back_in_the_shell() {
        let id = Uuid::new_v4();
        for (behaviour, expected) in [
            (
                Behaviour::Healthy {
                    commands: vec![],
                    then: AfterCommands::Idle,
                },
                "healthy idle 0",
            ),
            (
                Behaviour::NeverHealthy {
                    reboot_after: Duration::from_secs(3),
                },
                "never-healthy  3",
            ),
            (Behaviour::KernelPanic, "kernel-panic  0"),
        ] {
            let script = format!(
                "{}printf '%s %s %s %s %s' \"$VERSION\" \"$ID\" \"$BEHAVIOUR\" \"$THEN\" \"$REBOOT_AFTER\"",
                behaviour.env_file(7, id)
            );
            let output = std::process::Command::new(crate::tree::BUSYBOX)
                .args(["sh", "-c", &script])
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8(output.stdout).unwrap(),
                format!("7 {id} {expected}")
            );
        }
    }

    #[test]
    fn multi_line_commands_are_rejected() {
        let err = Behaviour::healthy(["echo a\necho b"])
            .commands()
            .unwrap_err();
        assert!(err.to_string().contains("spans several lines"), "{err}");
    }
}
