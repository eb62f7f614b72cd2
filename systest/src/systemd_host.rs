//! The systemd-host fixture: versions whose root is a Debian system with
//! systemd as PID 1 ([`debian_root`]), running the units of the
//! repository's `systemd/` as they are, as a host built by the Nix side
//! runs the same units from `nix/modules/host.nix`.
//!
//! A version holds, on top of the Debian root:
//! - `/usr/bin/abnix-update` (the release build), its man pages (which the
//!   units' `Documentation=` names) and the unit files of `systemd/`,
//!   copied in at build time into `/etc/systemd/system/` and enabled as
//!   systemd/README.md installs them;
//! - the fixture's own files (`systest/systemd-host/`): the success unit
//!   `fixture-health.service` that `boot-complete.target` requires, the
//!   reports the test reads on the console (`fixture-report.service`,
//!   `fixture-verify.service`), the deadline probe ([`Host`]), journald
//!   forwarding to the console, systemd-networkd on QEMU's user network,
//!   `/tmp` on tmpfs;
//! - drop-ins with the fixture's short timings (the units themselves are
//!   never edited): [`TIMER_FIRST_CHECK`], [`CHECK_INTERVAL`] without jitter,
//!   [`HEALTH_DEADLINE`];
//! - the device config and credentials the caller gives (a fleet's).
//!
//! Its initrd ([`initramfs::systemd_host_initramfs`]) finds the root (erofs
//! or ext4) by UUID, prints the version's marker line, makes the mounts the
//! host module makes in stage 1 (`/etc` overlay on tmpfs, abnix-rw at `/rw`
//! with `/var`, `/home`, `/root` bound from it, the machine id) and starts
//! systemd.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use abnix_formats::layout::Arch;
use anyhow::{ensure, Context, Result};
use uuid::Uuid;

use crate::kernel::Kernel;
use crate::shell::quote;
use crate::tree::Tree;
use crate::version::{image_label, FixtureFile, FixtureVersion};
use crate::{debian_root, erofs, ext4, initramfs, tool, workspace};

/// The unit files under test: the repository's `systemd/`.
const UNITS_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd");
/// The fixture's own files, copied over the Debian root.
const FIXTURE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd-host");

/// `abnix-update.timer`'s first check, counted from boot (the unit says
/// a minute).
pub const TIMER_FIRST_CHECK: Duration = Duration::from_secs(10);
/// The timer's interval, and `check_interval` in the device config, which
/// must agree (systemd/README.md): the shortest the config accepts.
pub const CHECK_INTERVAL: &str = "1min";
/// `abnix-health-deadline.timer`'s deadline for `boot-complete.target`
/// (the unit says 15 minutes): long enough for a healthy trial under TCG
/// on a busy machine to get there first.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(60);

/// Units of Debian's that only cost a TCG machine time: periodic jobs, a
/// getty on a screen that does not exist, and what rebuilds caches into an
/// `/etc` that starts empty at every boot.
const DISABLED: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "getty@tty1.service",
    "man-db.timer",
];
const MASKED: &[&str] = &[
    "getty-static.service",
    "systemd-hwdb-update.service",
    "ldconfig.service",
];
/// The fixture's units and systemd's network, enabled with the abnix units.
const ENABLED: &[&str] = &[
    "fixture-deadline-probe.service",
    "fixture-report.service",
    "fixture-verify.service",
    "systemd-networkd.service",
    "systemd-networkd-wait-online.service",
];
const GENERATORS_MASKED: &[&str] = &[
    // systemd/README.md: abnix-mark-good renames the counted entries.
    "systemd-bless-boot-generator",
    // No login prompt on the console the test reads.
    "systemd-getty-generator",
];

/// The root filesystem's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootFs {
    /// The Nix side's default.
    Erofs,
    Ext4,
}

impl RootFs {
    pub fn name(self) -> &'static str {
        match self {
            RootFs::Erofs => "erofs",
            RootFs::Ext4 => "ext4",
        }
    }
}

/// Whether the version's success unit succeeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// `fixture-health.service` fails: `boot-complete.target` is never
    /// reached, abnix-mark-good never runs.
    Unhealthy,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        }
    }
}

/// How a version of a systemd host is made and behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Host {
    pub fs: RootFs,
    pub health: Health,
    /// `fixture-deadline-probe.service`: starts abnix-health-deadline.service
    /// the moment abnix-update.service starts, so the deadline is checked
    /// while an update runs.
    pub deadline_probe: bool,
}

impl Host {
    pub fn new(fs: RootFs, health: Health) -> Host {
        Host {
            fs,
            health,
            deadline_probe: false,
        }
    }

    /// What the host is, in words.
    pub fn describe(&self) -> String {
        format!(
            "{}, {} root{}",
            self.health.name(),
            self.fs.name(),
            if self.deadline_probe {
                ", the deadline probed during its update"
            } else {
                ""
            }
        )
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct HostSpec {
    pub version: u64,
    /// The version id: the root filesystem's UUID.
    pub id: Uuid,
    pub host: Host,
    /// Files of the host's own: `/etc/abnix/config.toml` and its
    /// credentials.
    pub files: Vec<FixtureFile>,
}

impl HostSpec {
    /// Version `version` with a fresh random id and no files of its own.
    pub fn new(version: u64, host: Host) -> HostSpec {
        HostSpec {
            version,
            id: Uuid::new_v4(),
            host,
            files: Vec::new(),
        }
    }
}

/// The names of the unit files under test (`abnix-update.service`, …).
pub fn units_under_test() -> Result<Vec<String>> {
    let mut units = Vec::new();
    for entry in fs::read_dir(UNITS_DIR).with_context(|| format!("reading {UNITS_DIR}"))? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".service") || name.ends_with(".timer") {
            units.push(name.into_owned());
        }
    }
    units.sort();
    Ok(units)
}

/// Builds `spec` into `dir` (created if needed): `root.erofs` or
/// `root.ext4`, `initrd.cpio`; the kernel is the cached one.
pub fn build(spec: &HostSpec, kernel: &Kernel, dir: &Path) -> Result<FixtureVersion> {
    ensure!(
        kernel.arch == Arch::native(),
        "systemd hosts run the harness's own binaries: {} machines only",
        Arch::native()
    );
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let staging = dir.join("root.staging");
    if staging.exists() {
        fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    }
    let debian = debian_root::systemd_root()?;
    tool::run(
        Command::new("cp")
            .args(["-a", "--reflink=auto"])
            .arg(&debian)
            .arg(&staging),
    )?;
    // A host never sees the root's /var (abnix-rw's is bound over it) nor
    // its /dev (devtmpfs), which are empty in a Nix-built root too: the
    // image writers take no device nodes.
    for dir in ["var", "dev"] {
        empty(&staging.join(dir))?;
    }
    fixture_tree(spec, dir)?.write_over(&staging)?;
    // Proves the binary finds every library it needs in the Debian root.
    tool::run(
        Command::new("chroot")
            .arg(&staging)
            .args(["/usr/bin/abnix-update", "--version"]),
    )
    .context("running abnix-update in the Debian root")?;
    configure_units(&staging)?;

    let image = dir.join(format!("root.{}", spec.host.fs.name()));
    match spec.host.fs {
        RootFs::Erofs => erofs::read_only_image_of(&staging, spec.id, &image)?,
        RootFs::Ext4 => {
            ext4::read_only_image_of(&staging, spec.id, &image_label(spec.version), &image)?
        }
    }
    fs::remove_dir_all(&staging).with_context(|| format!("removing {}", staging.display()))?;
    let initrd = initramfs::systemd_host_initramfs;
    FixtureVersion::assemble(spec.version, spec.id, image, kernel, initrd, dir)
}

/// Removes everything in `dir`, keeping `dir`.
fn empty(dir: &Path) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() && !path.is_symlink() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        }
        .with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// What goes over the Debian root; `work` is a directory to build in.
fn fixture_tree(spec: &HostSpec, work: &Path) -> Result<Tree> {
    let mut tree = Tree::new();
    for entry in fs::read_dir(FIXTURE_DIR).with_context(|| format!("reading {FIXTURE_DIR}"))? {
        let entry = entry?;
        let name = entry.file_name();
        tree.host_directory(&name.to_string_lossy(), &entry.path())?;
    }
    for unit in units_under_test()? {
        tree.host_file(
            &format!("etc/systemd/system/{unit}"),
            &Path::new(UNITS_DIR).join(&unit),
        )?;
    }
    let updater = workspace::release_binary("abnix-updater", "abnix-update")?;
    tree.host_file("usr/bin/abnix-update", &updater)?;
    // Where man(1) finds them: `systemd-analyze verify` runs it for every
    // `Documentation=man:` link.
    let docs = work.join("cli-docs");
    tool::run(Command::new(&updater).arg("generate-docs").arg(&docs))?;
    for entry in fs::read_dir(&docs).with_context(|| format!("reading {}", docs.display()))? {
        let path = entry?.path();
        if let Some(page) = path.file_name().and_then(|name| name.to_str()) {
            if page.ends_with(".8") {
                let contents =
                    fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                tree.file(&format!("usr/share/man/man8/{page}"), 0o644, contents);
            }
        }
    }
    fs::remove_dir_all(&docs).with_context(|| format!("removing {}", docs.display()))?;
    tree.file(
        "etc/systemd/system/abnix-update.timer.d/fixture.conf",
        0o644,
        format!(
            "# The fixture's timings (systest/src/systemd_host.rs): the first check soon\n\
             # after boot, then every check_interval, to the second. The empty\n\
             # assignment resets every trigger of the unit, so both are restated.\n\
             [Timer]\n\
             OnBootSec=\n\
             OnBootSec={}s\n\
             OnUnitActiveSec={CHECK_INTERVAL}\n\
             RandomizedDelaySec=0\n\
             AccuracySec=1s\n",
            TIMER_FIRST_CHECK.as_secs()
        ),
    );
    tree.file(
        "etc/systemd/system/abnix-health-deadline.timer.d/fixture.conf",
        0o644,
        format!(
            "# The fixture's deadline (systest/src/systemd_host.rs).\n\
             [Timer]\n\
             OnBootSec=\n\
             OnBootSec={}s\n",
            HEALTH_DEADLINE.as_secs()
        ),
    );
    for generator in GENERATORS_MASKED {
        tree.symlink(
            &format!("etc/systemd/system-generators/{generator}"),
            "/dev/null",
        );
    }
    tree.file(
        "etc/abnix-fixture/fixture.env",
        0o644,
        format!(
            "VERSION={}\nID={}\nBEHAVIOUR={}\n",
            spec.version,
            spec.id,
            quote(spec.host.health.name())
        ),
    );
    if spec.host.deadline_probe {
        tree.file("etc/abnix-fixture/deadline-probe", 0o644, "");
    }
    // The root read-only, as nix/modules/host.nix's fileSystems."/" says,
    // before the fixture's own lines (/tmp). Without it systemd-remount-fs
    // (Debian 12's) tries to remount it read-write, which an ext4 root with
    // the read-only feature (as the Nix side writes them) refuses: a failed
    // unit on every boot.
    let fstab = Path::new(FIXTURE_DIR).join("etc/fstab");
    let fixture_lines =
        fs::read_to_string(&fstab).with_context(|| format!("reading {}", fstab.display()))?;
    tree.file(
        "etc/fstab",
        0o644,
        format!(
            "UUID={} / {} ro 0 0\n{fixture_lines}",
            spec.id,
            spec.host.fs.name()
        ),
    );
    // Mount points on the read-only root: the /etc overlay's upper layer,
    // abnix-rw.
    tree.directory(".rw-etc");
    tree.directory("rw");
    for file in &spec.files {
        tree.file(&file.path, file.mode, file.contents.as_slice());
    }
    Ok(tree)
}

/// Enables the units as systemd/README.md installs them (those with an
/// `[Install]` section), the fixture's own and networkd; disables and
/// masks Debian's that are of no use here.
fn configure_units(root: &Path) -> Result<()> {
    let mut enable: Vec<String> = ENABLED.iter().map(|unit| unit.to_string()).collect();
    for unit in units_under_test()? {
        let path = Path::new(UNITS_DIR).join(&unit);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        if text.lines().any(|line| line.trim() == "[Install]") {
            enable.push(unit);
        }
    }
    // systemctl fails on a root path with `..` in it ("Channel number out
    // of range").
    let root = root
        .canonicalize()
        .with_context(|| format!("resolving {}", root.display()))?;
    let systemctl = |args: &[&str]| -> Result<()> {
        tool::run(
            Command::new("systemctl")
                .arg(format!("--root={}", root.display()))
                .args(args),
        )
        .map(drop)
    };
    systemctl(
        &[
            &["enable"],
            &enable.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ]
        .concat(),
    )?;
    systemctl(&[&["disable"], DISABLED].concat())?;
    systemctl(&[&["mask"], MASKED].concat())?;
    systemctl(&["set-default", "multi-user.target"])
}
