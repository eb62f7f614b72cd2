//! One machine of a fleet, told as a story: the scenarios of
//! `tests/scenarios.rs` and the demo (`abnix-demo`) drive a [`Story`].
//!
//! A story owns a [`Fleet`] (bucket, key, channel), one disk and the
//! machine it sits in; more machines of the fleet, each on its own disk,
//! when a scenario asks ([`Story::another_machine`], [`Story::follow`]).
//! The machine runs with [`OnReboot::Restart`], as
//! hardware does: when the updater inside reboots it into a new version,
//! the next boot shows on the same console, and so does every fallback the
//! bootloader makes by itself. The test only switches the machine on, cuts
//! its power, and publishes.
//!
//! Every healthy version of the fleet runs, once up, `abnix-update
//! mark-good` and then, every two seconds, `abnix-update update` followed
//! by `abnix-update status --json` on one console line (`ABNIX-STATUS
//! {…}`): what the host itself says about its slots, its last check and
//! its failed versions is what the scenarios assert.
//!
//! Narration (`say`) goes to stdout with the seconds since the story began;
//! console transcripts are kept in the story's run directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use abnix_core::boot::BootStatus;
use abnix_core::boot::Bootloader;
use abnix_formats::layout::Arch;
use abnix_formats::slot::Slot;
use abnix_updater::state_dir::{CheckRecord, ErrorRecord, FailedVersion};
use anyhow::{anyhow, bail, ensure, Context, Result};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::fleet::{Fleet, Policy, Release};
use crate::initramfs::{self, InstallerEnv};
use crate::kernel::Kernel;
use crate::system_disk::AbnixDisk;
use crate::systemd_host::{Host, HostSpec};
use crate::tree::Tree;
use crate::version::{AfterCommands, Behaviour, VersionSpec};
use crate::vm::{Boot, ConsoleLine, Firmware, Machine, MachineSpec, OnReboot, Vm, VmError};
use crate::{ext4, paths, workspace};

/// Switch-on (or reset) to the host's marker: firmware, bootloader, kernel
/// and initrd under TCG, on a machine busy with other work.
pub const BOOT: Duration = Duration::from_secs(240);
/// A step of a running host: a command, a check of the bucket.
pub const STEP: Duration = Duration::from_secs(120);
/// A whole update: the image written and read back under TCG.
pub const UPDATE: Duration = Duration::from_secs(420);

/// The size of a story's disk and of its slots and ESP (`abnix-install`'s
/// `--size`, `--slot-size`, `--esp-size`); the rest is `abnix-rw`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSize {
    pub bytes: u64,
    pub slot: &'static str,
    pub esp: &'static str,
}

impl DiskSize {
    /// For busybox hosts: two 48 MiB slots, a 64 MiB ESP, 256 MiB in all.
    pub const BUSYBOX: DiskSize = DiskSize {
        bytes: 256 << 20,
        slot: "48M",
        esp: "64M",
    };
}
const MARK_GOOD: &str = "abnix-update mark-good";
/// What precedes the status a fleet host prints on one line (after each
/// update run; a systemd host at each boot).
const STATUS: &str = "ABNIX-STATUS ";
const UPDATE_EXIT: &str = "ABNIX-UPDATE exit=";
const SYSTEMD_BOOT_EFI_DIR: &str = "/usr/lib/systemd/boot/efi";
const GRUB_LIB: &str = "/usr/lib/grub";

/// A firmware and the bootloader it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootPath {
    GrubSeaBios,
    GrubOvmf,
    SystemdBootOvmf,
}

impl BootPath {
    pub const ALL: [BootPath; 3] = [
        BootPath::GrubSeaBios,
        BootPath::GrubOvmf,
        BootPath::SystemdBootOvmf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BootPath::GrubSeaBios => "grub-seabios",
            BootPath::GrubOvmf => "grub-ovmf",
            BootPath::SystemdBootOvmf => "systemd-boot-ovmf",
        }
    }

    pub fn firmware(self) -> Firmware {
        match self {
            BootPath::GrubSeaBios => Firmware::SeaBios,
            BootPath::GrubOvmf | BootPath::SystemdBootOvmf => Firmware::Ovmf,
        }
    }

    pub fn bootloader(self) -> Bootloader {
        match self {
            BootPath::GrubSeaBios | BootPath::GrubOvmf => Bootloader::Grub,
            BootPath::SystemdBootOvmf => Bootloader::SystemdBoot,
        }
    }

    /// `--bootloader` of `abnix-install`.
    fn installer_name(self) -> &'static str {
        match self.bootloader() {
            Bootloader::Grub => "grub",
            Bootloader::SystemdBoot => "systemd-boot",
        }
    }
}

/// What a version of the fleet does once booted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Marks itself good, then checks for updates every two seconds.
    Good,
    /// Comes up, never becomes healthy, reboots after three seconds.
    NeverHealthy,
    /// Its kernel panics (and reboots) at every boot.
    KernelPanic,
}

impl Kind {
    pub fn name(self) -> &'static str {
        self.behaviour().name()
    }

    fn behaviour(self) -> Behaviour {
        match self {
            Kind::Good => Behaviour::Healthy {
                commands: vec![
                    MARK_GOOD.to_owned(),
                    format!(
                        "while :; do {{ abnix-update update; echo \"{UPDATE_EXIT}$?\"; }}; \
                         echo \"{STATUS}$(abnix-update status --json | tr -d '\\n')\"; sleep 2; done"
                    ),
                ],
                then: AfterCommands::Idle,
            },
            Kind::NeverHealthy => Behaviour::NeverHealthy {
                reboot_after: Duration::from_secs(3),
            },
            Kind::KernelPanic => Behaviour::KernelPanic,
        }
    }
}

/// A slot as `abnix-update status --json` reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct SlotReport {
    pub slot: String,
    pub state: String,
    pub tries_left: Option<u8>,
    pub version: Option<u64>,
    pub booted: bool,
    pub boots_next: bool,
}

/// `abnix-update status --json`, as the host printed it.
#[derive(Debug, Clone, Deserialize)]
pub struct HostStatus {
    pub booted: Option<String>,
    pub slots: Vec<SlotReport>,
    pub pending_reboot: Option<u64>,
    pub latest_known: Option<u64>,
    /// When the channel's meta the host last verified was signed.
    pub latest_signed_at: Option<DateTime<Utc>>,
    pub last_check: Option<CheckRecord>,
    pub last_error: Option<ErrorRecord>,
    pub failed_versions: Vec<FailedVersion>,
}

impl HostStatus {
    pub fn slot(&self, slot: Slot) -> Result<&SlotReport> {
        self.slots
            .iter()
            .find(|report| report.slot == slot.name())
            .ok_or_else(|| anyhow!("the status has no slot {slot}: {self:?}"))
    }

    /// What the last check concluded ("" before the first).
    pub fn check_result(&self) -> &str {
        self.last_check.as_ref().map_or("", |check| &check.result)
    }

    /// The last error ("" if none).
    pub fn error(&self) -> &str {
        self.last_error.as_ref().map_or("", |error| &error.message)
    }

    pub fn has_failed(&self, version: u64) -> bool {
        self.failed_versions.iter().any(|f| f.version == version)
    }

    /// The host says `slot` is booted and good, with `version`.
    pub fn ensure_booted_good(&self, slot: Slot, version: u64) -> Result<()> {
        let booted = self.slot(slot)?;
        ensure!(
            self.booted.as_deref() == Some(slot.name())
                && booted.state == "good"
                && booted.version == Some(version),
            "the host should say slot {slot} is booted and good with version {version}: {self:?}"
        );
        Ok(())
    }
}

/// What the host does at boot, as a story expects it.
#[derive(Debug, Clone, Copy)]
pub struct Running {
    pub version: u64,
    pub slot: Slot,
}

/// What an update reported when it wrote its image.
#[derive(Debug, Clone)]
pub struct Written {
    /// The updater's line: "wrote … bytes … into slot b in …; reused …".
    pub line: String,
}

impl Written {
    /// "reused N of M chunks" → N, if the update reused any.
    pub fn reused_chunks(&self) -> Option<u64> {
        self.number_after("reused ")
    }

    /// "wrote … (M chunks)" → M.
    pub fn chunks(&self) -> Option<u64> {
        self.number_after("bytes (")
    }

    /// "(K kept in the target, …" → K: chunks an interrupted attempt had
    /// already written.
    pub fn kept_chunks(&self) -> Option<u64> {
        let (before, _) = self.line.split_once(" kept in the target")?;
        before.rsplit('(').next()?.parse().ok()
    }

    /// ": N bytes downloaded" → N: what came from the bucket.
    pub fn downloaded_bytes(&self) -> Option<u64> {
        let (before, _) = self.line.split_once(" bytes downloaded")?;
        before.rsplit(' ').next()?.parse().ok()
    }

    /// The number that follows `prefix` in the line.
    fn number_after(&self, prefix: &str) -> Option<u64> {
        let (_, after) = self.line.split_once(prefix)?;
        after.split(' ').next()?.parse().ok()
    }
}

/// A console line to wait for or look for: one containing every part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needle {
    parts: Vec<String>,
}

impl Needle {
    pub fn new(part: impl Into<String>) -> Needle {
        Needle {
            parts: vec![part.into()],
        }
    }

    /// The same line, which must also contain `part`.
    pub fn and(mut self, part: impl Into<String>) -> Needle {
        self.parts.push(part.into());
        self
    }

    pub fn matches(&self, text: &str) -> bool {
        self.parts.iter().all(|part| text.contains(part.as_str()))
    }
}

impl std::fmt::Display for Needle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.parts.join("…"))
    }
}

/// A point of an update (or of the boot after it) to cut the power at:
/// `delay` after a console line matching `line`.
#[derive(Debug, Clone)]
pub struct Cut {
    pub line: Needle,
    pub delay: Duration,
}

impl Cut {
    /// The moment a line matches (a few ms later: the time to kill QEMU).
    pub fn at(line: Needle) -> Cut {
        Cut {
            line,
            delay: Duration::ZERO,
        }
    }

    pub fn after(line: Needle, delay: Duration) -> Cut {
        Cut { line, delay }
    }

    pub fn describe(&self) -> String {
        if self.delay.is_zero() {
            format!("at {}", self.line)
        } else {
            format!("{:.1} s after {}", self.delay.as_secs_f64(), self.line)
        }
    }
}

/// The console around a power cut: the line the cut went by (its own, or
/// a later one that came first), and every line the machine printed after
/// it until QEMU died.
#[derive(Debug, Clone)]
pub struct CutConsole {
    pub line: ConsoleLine,
    pub after: Vec<ConsoleLine>,
}

impl CutConsole {
    /// The first line, from the one the cut went by, that matches `needle`.
    pub fn shows(&self, needle: &Needle) -> Option<&ConsoleLine> {
        std::iter::once(&self.line)
            .chain(&self.after)
            .find(|line| needle.matches(&line.text))
    }

    /// The last line the machine printed before it died.
    pub fn last(&self) -> &ConsoleLine {
        self.after.last().unwrap_or(&self.line)
    }
}

/// One chapter of a story, for the summary table.
#[derive(Debug, Clone)]
pub struct Chapter {
    pub name: String,
    pub result: Result<String, String>,
    pub duration: Duration,
}

/// A machine of the story's fleet: its disk, and once installed the
/// machine and what it runs. The story follows one at a time
/// ([`Story::follow`]); the others run on unwatched, their consoles kept
/// until read.
pub struct FleetMachine {
    name: String,
    /// Its SMBIOS UUID: the machine id of a reporting fleet's host.
    uuid: Option<Uuid>,
    disk: PathBuf,
    machine: Option<Machine>,
    vm: Option<Vm>,
    /// What the host runs (or boots next) as the story knows it.
    running: Option<Running>,
}

impl FleetMachine {
    /// A machine with an empty disk `disk`, not installed yet.
    fn new(name: &str, uuid: Option<Uuid>, disk: PathBuf) -> FleetMachine {
        FleetMachine {
            name: name.to_owned(),
            uuid,
            disk,
            machine: None,
            vm: None,
            running: None,
        }
    }
}

/// A fleet of machines, one followed at a time, and what has happened to
/// them (see the module docs).
pub struct Story {
    pub path: BootPath,
    pub fleet: Fleet,
    name: String,
    dir: PathBuf,
    kernel: Kernel,
    disk_size: DiskSize,
    /// The machine the story follows.
    host: FleetMachine,
    /// The highest version number released so far.
    last_version: u64,
    started: Instant,
    chapters: Vec<Chapter>,
}

impl Story {
    /// A story called `name` on `path`: a fleet (bucket, key, channel) and
    /// an empty disk, in a fresh run directory.
    pub fn new(path: BootPath, name: &str, policy: Policy) -> Result<Story> {
        let full_name = format!("{}/{name}", path.name());
        let dir = paths::run_dir(&format!("story-{}-{name}", path.name()))?;
        let fleet = Fleet::start(&dir.join("fleet"), name, policy)?;
        Ok(Story {
            path,
            fleet,
            name: full_name,
            host: FleetMachine::new("host", None, dir.join("disk.raw")),
            disk_size: DiskSize::BUSYBOX,
            dir,
            kernel: Kernel::debian_cloud(Arch::native())?,
            last_version: 0,
            started: Instant::now(),
            chapters: Vec::new(),
        })
    }

    /// The same story with disks of `size` (before anything is installed).
    pub fn with_disk_size(mut self, size: DiskSize) -> Story {
        self.disk_size = size;
        self
    }

    /// From now on the fleet's hosts write reports and take their machine
    /// ids from their SMBIOS UUIDs ([`Fleet::report_hosts`]); the machine
    /// the story follows, not yet installed, has `uuid`.
    pub fn report_as(&mut self, uuid: Uuid) -> Result<()> {
        ensure!(
            self.host.machine.is_none(),
            "a machine gets its UUID before it is installed"
        );
        self.fleet.report_hosts();
        self.host.uuid = Some(uuid);
        Ok(())
    }

    /// Another machine of the fleet, called `name`, with its own empty
    /// disk and SMBIOS UUID; [`Story::follow`] turns the story to it.
    pub fn another_machine(&self, name: &str, uuid: Uuid) -> FleetMachine {
        FleetMachine::new(name, Some(uuid), self.dir.join(format!("{name}-disk.raw")))
    }

    /// Follows `other` from now on, handing back the machine the story
    /// followed so far in its place.
    pub fn follow(&mut self, other: &mut FleetMachine) {
        std::mem::swap(&mut self.host, other);
        self.say(format!("following machine {}", self.host.name));
    }

    /// The machine id of the machine the story follows (its SMBIOS UUID
    /// without dashes), if it has one.
    pub fn machine_id(&self) -> Option<String> {
        self.host.uuid.map(|uuid| uuid.simple().to_string())
    }

    /// After a passed story: frees its disks and bucket, keeping the
    /// console transcripts ([`paths::keep_only_logs`]).
    pub fn keep_only_logs(&self) -> Result<()> {
        paths::keep_only_logs(&self.dir)
    }

    /// Narrates one line (naming the machine followed, unless it is the
    /// first one, "host").
    pub fn say(&self, text: impl AsRef<str>) {
        let machine = match self.host.name.as_str() {
            "host" => String::new(),
            name => format!(" {name}"),
        };
        println!(
            "[{}{machine} {:6.1} s] {}",
            self.name,
            self.started.elapsed().as_secs_f64(),
            text.as_ref()
        );
    }

    /// Runs `chapter` and records it for [`Story::summary`]; its `Ok`
    /// value is the chapter's one-line result.
    pub fn chapter(
        &mut self,
        name: &str,
        chapter: impl FnOnce(&mut Story) -> Result<String>,
    ) -> Result<()> {
        self.say(format!("== {name}"));
        let started = Instant::now();
        let result = chapter(self);
        let duration = started.elapsed();
        let recorded = match &result {
            Ok(line) => Ok(line.clone()),
            Err(err) => Err(format!("{err:#}")),
        };
        self.chapters.push(Chapter {
            name: name.to_owned(),
            result: recorded,
            duration,
        });
        result
            .map(drop)
            .with_context(|| format!("{}: {name}", self.name))
    }

    /// Whether `chapters` chapters ran and all passed.
    pub fn passed(&self, chapters: usize) -> bool {
        self.chapters.len() == chapters && self.chapters.iter().all(|c| c.result.is_ok())
    }

    /// The story's run directory: disk, console transcripts, fleet files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The chapters as a table: name, result, duration.
    pub fn summary(&self) -> String {
        let width = self
            .chapters
            .iter()
            .map(|chapter| chapter.name.len())
            .max()
            .unwrap_or(0)
            .max(7)
            + 2;
        let mut table = format!(
            "\n{:width$}{:8}{:>9}  what happened\n",
            "chapter", "result", "time"
        );
        for chapter in &self.chapters {
            let (result, what) = match &chapter.result {
                Ok(line) => ("pass", line.as_str()),
                Err(err) => ("FAIL", err.lines().next().unwrap_or("")),
            };
            table.push_str(&format!(
                "{:width$}{result:8}{:>7.1} s  {what}\n",
                chapter.name,
                chapter.duration.as_secs_f64()
            ));
        }
        table
    }

    /// The number [`Story::release`] gives the next version.
    pub fn next_version(&self) -> u64 {
        self.last_version + 1
    }

    /// Builds the next version of the fleet (one higher than any before).
    pub fn release(&mut self, kind: Kind) -> Result<Release> {
        self.release_numbered(self.last_version + 1, kind)
    }

    /// Builds version `number` of the fleet, e.g. one older than the last.
    pub fn release_numbered(&mut self, number: u64, kind: Kind) -> Result<Release> {
        self.last_version = self.last_version.max(number);
        let release = self
            .fleet
            .release(VersionSpec::new(number, kind.behaviour()), &self.kernel)?;
        self.say(format!(
            "built version {number} ({}): image {} bytes, packed and signed",
            kind.name(),
            release.meta.meta().image.size
        ));
        Ok(release)
    }

    /// Builds the next version of the fleet as a systemd host
    /// ([`crate::systemd_host`]).
    pub fn release_systemd_host(&mut self, host: Host) -> Result<Release> {
        let number = self.last_version + 1;
        self.last_version = number;
        let release = self
            .fleet
            .release_systemd_host(HostSpec::new(number, host), &self.kernel)?;
        self.say(format!(
            "built version {number} (systemd host: {}): image {} bytes, packed and signed",
            host.describe(),
            release.meta.meta().image.size
        ));
        Ok(release)
    }

    /// Publishes `release` on the channel with `abnix-update publish`.
    pub fn publish(&mut self, release: &Release, force: bool) -> Result<()> {
        self.fleet.publish(release, force)?;
        self.say(format!(
            "published version {} on channel {}{}",
            release.meta.meta().version,
            self.fleet.channel(),
            if force { " (--force)" } else { "" }
        ));
        Ok(())
    }

    /// Writes the disk on the build machine with `abnix-install --file`,
    /// as a cloud template is made: `first` in slot A.
    pub fn install_file(&mut self, first: &Release) -> Result<()> {
        let installer = workspace::release_binary("abnix-installer", "abnix-install")?;
        let output = Command::new(&installer)
            .arg("--bundle")
            .arg(&first.bundle)
            .arg("--file")
            .arg(&self.host.disk)
            .args(["--size", &self.disk_size.bytes.to_string()])
            .args(["--slot-size", self.disk_size.slot])
            .args(["--esp-size", self.disk_size.esp])
            .args(["--bootloader", self.path.installer_name()])
            .args(["--trusted-key", &first.signer.to_string()])
            .output()
            .with_context(|| format!("running {}", installer.display()))?;
        ensure!(
            output.status.success(),
            "abnix-install --file failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        self.say(format!(
            "abnix-install --file wrote version {} into slot a of a {} MiB disk ({})",
            first.meta.meta().version,
            self.disk_size.bytes >> 20,
            self.path.installer_name()
        ));
        self.installed(first)
    }

    /// Boots an installer environment (a busybox initramfs with
    /// `abnix-install`) with the bundle on its medium, mounted on `/iso`,
    /// and the empty disk beside it. `--auto` must skip the medium and take
    /// the empty disk; the installer counts down, writes, installs the
    /// bootloader and powers the machine off.
    pub fn install_in_guest(&mut self, first: &Release) -> Result<()> {
        let mut medium_tree = Tree::new();
        medium_tree.host_directory("bundle", &first.bundle)?;
        let medium = self.dir.join("medium.ext4");
        ext4::read_only_image(
            &medium_tree,
            Uuid::new_v4(),
            "abnix-medium",
            &medium,
            &self.dir.join("medium.staging"),
        )?;
        fs::File::create(&self.host.disk)
            .and_then(|file| file.set_len(self.disk_size.bytes))
            .with_context(|| format!("creating {}", self.host.disk.display()))?;

        let version = first.meta.meta().version;
        let mut command = format!(
            "until [ -b /dev/vdb ]; do sleep 1; done; mkdir /iso && mount -o ro /dev/vda /iso && \
             abnix-install --auto --bundle /iso/bundle --slot-size {} \
             --esp-size {} --trusted-key {} --bootloader {} --countdown 2 --poweroff",
            self.disk_size.slot,
            self.disk_size.esp,
            first.signer,
            self.path.installer_name()
        );
        let mut env = InstallerEnv {
            binaries: vec![
                workspace::release_binary("abnix-installer", "abnix-install")?,
                "/usr/sbin/mkfs.ext4".into(),
                "/usr/sbin/debugfs".into(),
                // libblkid's view, without which no disk is proven blank.
                "/usr/sbin/wipefs".into(),
            ],
            ..InstallerEnv::default()
        };
        match self.path.bootloader() {
            Bootloader::Grub => {
                command.push_str(
                    " --grub-mkimage /bin/grub-mkimage --grub-bios-dir /grub/i386-pc \
                     --grub-efi-dir /grub/x86_64-efi",
                );
                env.binaries.push("/usr/bin/grub-mkimage".into());
                for platform in ["i386-pc", "x86_64-efi"] {
                    env.directories.push((
                        Path::new(GRUB_LIB).join(platform),
                        format!("grub/{platform}"),
                    ));
                }
            }
            Bootloader::SystemdBoot => {
                command.push_str(" --systemd-boot-efi /systemd-boot/systemd-bootx64.efi");
                env.directories
                    .push((SYSTEMD_BOOT_EFI_DIR.into(), "systemd-boot".to_owned()));
            }
        }
        env.command = command;
        let initrd = self.dir.join("installer.cpio");
        initramfs::installer_initramfs(&self.kernel, &env, &initrd)?;
        let mut installer = Machine::new(
            "installer",
            MachineSpec::new(self.path.firmware())
                .disk(&medium)
                .disk(&self.host.disk),
            &self.dir,
        )?;
        let boot = Boot::Kernel {
            kernel: self.kernel.image.clone(),
            initrd,
            cmdline: "console=ttyS0 quiet panic=1".to_owned(),
        };
        self.say("switched on the installer (the medium is vda, the empty disk vdb)");
        let mut vm = installer.start(&boot, OnReboot::Exit)?;
        let chose = vm.expect("chose /dev/vdb", BOOT)?;
        self.say(format!("installer: {}", plain_message(&chose.text)));
        let skipped = vm.expect("skipped vda", STEP)?;
        ensure!(
            skipped
                .text
                .contains("it holds the installer itself (/dev/vda is mounted on /iso)"),
            "the installer should skip its own medium: {skipped}"
        );
        self.say(format!("installer: {}", plain_message(&skipped.text)));
        // Proven blank on the real virtio disk: zeros and libblkid's word.
        let blank = vm.expect("which holds nothing: the first 8 MiB", STEP)?;
        self.say(format!("installer: {}", plain_message(&blank.text)));
        vm.expect("writing in 2 s", STEP)?;
        let done = vm.expect(&format!("installed version {version}"), BOOT)?;
        self.say(format!(
            "installer: {} ({:.1} s after switch-on)",
            plain_message(&done.text),
            done.at.as_secs_f64()
        ));
        let status = vm.wait_exit(STEP)?;
        ensure!(
            status.success(),
            "the installer's machine exited with {status}"
        );
        let transcript = fs::read_to_string(vm.log_path())?;
        ensure!(
            !transcript.contains("ABNIX-INSTALLER exit="),
            "the installer returned to its shell instead of powering off"
        );
        self.say("the installer powered the machine off");
        self.installed(first)
    }

    /// Makes the disk `bytes` long, as if its image had been written to a
    /// bigger disk: the machine must be off.
    pub fn enlarge_disk(&mut self, bytes: u64) -> Result<()> {
        ensure!(
            self.host.vm.is_none(),
            "the disk grows only while the machine is off"
        );
        fs::OpenOptions::new()
            .write(true)
            .open(&self.host.disk)
            .and_then(|file| file.set_len(bytes))
            .with_context(|| format!("enlarging {}", self.host.disk.display()))?;
        self.say(format!("the disk is now {} MiB", bytes >> 20));
        Ok(())
    }

    /// The disk now holds `first` in slot A: the machine is this disk.
    fn installed(&mut self, first: &Release) -> Result<()> {
        AbnixDisk::existing(&self.host.disk)?;
        self.host.machine = Some(Machine::new(
            &self.host.name,
            MachineSpec::new(self.path.firmware())
                .disk(&self.host.disk)
                .uuid(self.host.uuid),
            &self.dir,
        )?);
        self.host.running = Some(Running {
            version: first.meta.meta().version,
            slot: Slot::A,
        });
        Ok(())
    }

    /// What the host runs, as the story knows it.
    pub fn running(&self) -> Result<Running> {
        self.host
            .running
            .ok_or_else(|| anyhow!("nothing is installed yet"))
    }

    /// Switches the machine on.
    pub fn switch_on(&mut self) -> Result<()> {
        let machine = self
            .host
            .machine
            .as_mut()
            .ok_or_else(|| anyhow!("no disk installed yet"))?;
        self.host.vm = Some(machine.start(&Boot::Firmware, OnReboot::Restart)?);
        self.say(format!("switched the machine on ({})", self.path.name()));
        Ok(())
    }

    /// Pulls the plug; returns the console lines the machine printed
    /// before it died that were not read yet.
    pub fn power_cut(&mut self) -> Result<Vec<ConsoleLine>> {
        let mut vm = self
            .host
            .vm
            .take()
            .ok_or_else(|| anyhow!("the machine is switched off"))?;
        vm.power_cut()?;
        // QEMU is gone; what it printed before is still on its way through
        // the console thread, which ends when it reads the end of QEMU's
        // output.
        let mut rest = Vec::new();
        loop {
            match vm.next_line(STEP) {
                Ok(line) => rest.push(line),
                Err(VmError::Exited { .. }) => return Ok(rest),
                Err(err) => return Err(err).context("reading the console of a killed machine"),
            }
        }
    }

    fn vm(&mut self) -> Result<&mut Vm> {
        self.host
            .vm
            .as_mut()
            .ok_or_else(|| anyhow!("the machine is switched off"))
    }

    /// Waits for a console line containing `needle`.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<ConsoleLine> {
        Ok(self.vm()?.expect(needle, timeout)?)
    }

    /// The next console line, whatever it says.
    pub fn expect_line(&mut self, timeout: Duration) -> Result<ConsoleLine> {
        Ok(self.vm()?.next_line(timeout)?)
    }

    /// Waits for a console line matching one of `needles`; returns which
    /// and the line.
    pub fn expect_first(
        &mut self,
        needles: &[&Needle],
        timeout: Duration,
    ) -> Result<(usize, ConsoleLine)> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.vm()?.next_line(left).with_context(|| {
                let names: Vec<String> = needles.iter().map(ToString::to_string).collect();
                format!("waiting for a line {}", names.join(" or "))
            })?;
            if let Some(found) = needles.iter().position(|needle| needle.matches(&line.text)) {
                return Ok((found, line));
            }
        }
    }

    /// Waits for the next boot's marker and checks it is `version` in
    /// `slot`; returns the marker's behaviour.
    pub fn expect_boot(&mut self, version: u64, slot: Slot) -> Result<String> {
        let (booted, behaviour) = self.next_boot()?;
        ensure!(
            booted.version == version && booted.slot == slot,
            "expected version {version} to boot from slot {slot}, but version {} came up from slot {}",
            booted.version,
            booted.slot
        );
        Ok(behaviour)
    }

    /// Waits for the next boot's marker: what came up, and how it behaves.
    pub fn next_boot(&mut self) -> Result<(Running, String)> {
        let marker = self.expect("ABNIX-FIXTURE version=", BOOT)?;
        let field = |key| {
            marker
                .field(key)
                .ok_or_else(|| anyhow!("the marker has no {key}: {marker}"))
        };
        let version = field("version")?.parse().context("the marker's version")?;
        let slot: Slot = field("slot")?
            .parse()
            .map_err(|e| anyhow!("the marker's slot: {e}"))?;
        let behaviour = field("behaviour")?.to_owned();
        let booted = Running { version, slot };
        self.say(format!(
            "slot {slot} booted version {version} ({behaviour}); console at {:.1} s since switch-on",
            marker.at.as_secs_f64()
        ));
        self.host.running = Some(booted);
        Ok((booted, behaviour))
    }

    /// The booted host ran `abnix-update mark-good` successfully.
    pub fn expect_marked_good(&mut self) -> Result<()> {
        self.expect(&format!("command=1 run: {MARK_GOOD}"), STEP)?;
        let done = self.expect("ABNIX-FIXTURE command=1 exit=", STEP)?;
        ensure!(done.field("exit") == Some("0"), "mark-good failed: {done}");
        self.say("the host is healthy: abnix-update mark-good succeeded");
        Ok(())
    }

    /// Waits for `version` to boot from `slot` and mark itself good, and
    /// for its first status line.
    pub fn expect_healthy(&mut self, version: u64, slot: Slot) -> Result<HostStatus> {
        self.expect_boot(version, slot)?;
        self.expect_good(version, slot)
    }

    /// `version`, booted from `slot`, marks itself good, and its first
    /// status line says so.
    pub fn expect_good(&mut self, version: u64, slot: Slot) -> Result<HostStatus> {
        self.expect_marked_good()?;
        let (status, _) = self.next_status()?;
        status.ensure_booted_good(slot, version)?;
        Ok(status)
    }

    /// Reads console lines up to the host's next status line; returns the
    /// status and the lines before it.
    pub fn next_status(&mut self) -> Result<(HostStatus, Vec<String>)> {
        let mut lines = Vec::new();
        let deadline = Instant::now() + UPDATE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.vm()?.next_line(left)?;
            // The JSON object, not the line announcing the command, which
            // quotes the command; a systemd host's journal puts its own
            // prefix before it.
            if let Some(json) = line
                .text
                .find(&format!("{STATUS}{{"))
                .map(|at| &line.text[at + STATUS.len()..])
            {
                let status: HostStatus = serde_json::from_str(json)
                    .with_context(|| format!("parsing the host's status line: {json}"))?;
                return Ok((status, lines));
            }
            if line.text.contains("ABNIX-FIXTURE version=") {
                bail!("the machine rebooted (into {line}) before its next status");
            }
            lines.push(line.text);
        }
    }

    /// Reads status lines until one satisfies `until` (at most `limit`),
    /// failing if any console line on the way contains one of `never`.
    pub fn await_status(
        &mut self,
        what: &str,
        limit: usize,
        never: &[String],
        until: impl Fn(&HostStatus) -> bool,
    ) -> Result<HostStatus> {
        for _ in 0..limit {
            let (status, lines) = self.next_status()?;
            if let Some(line) = lines
                .iter()
                .find(|line| never.iter().any(|needle| line.contains(needle.as_str())))
            {
                bail!("while waiting for {what}, the host printed: {line}");
            }
            if until(&status) {
                return Ok(status);
            }
        }
        bail!("no status of the host showed {what} within {limit} checks")
    }

    /// Follows the running host as it installs `version` into `slot`: the
    /// updater's steps in order, ending with the reboot it announces.
    pub fn expect_update(&mut self, version: u64, slot: Slot) -> Result<Written> {
        self.expect(&format!("marking slot {slot} bad"), UPDATE)?;
        self.say(format!(
            "the host found version {version}: marking slot {slot} bad"
        ));
        self.expect(
            &format!("writing the image of version {version} into slot {slot}"),
            STEP,
        )?;
        self.say(format!("writing version {version} into slot {slot}"));
        let wrote = self.expect(&format!("into slot {slot} in"), UPDATE)?;
        let written = Written {
            line: plain_message(&wrote.text),
        };
        self.say(format!("updater: {}", written.line));
        self.expect(
            &format!("writing the boot files of version {version} for slot {slot}"),
            STEP,
        )?;
        self.expect(&format!("activating slot {slot} as the trial"), STEP)?;
        self.expect(
            &format!("rebooting into version {version} (slot {slot})"),
            STEP,
        )?;
        self.say(format!(
            "slot {slot} is the trial that boots next; the host reboots into it"
        ));
        Ok(written)
    }

    /// Cuts the power at `cut`; the machine must be on. Should a line of
    /// `later` come first (the machine went past the cut's point without
    /// printing its line), the power is cut at once. Returns what the
    /// console showed from the line the cut went by to the end.
    pub fn power_cut_at(&mut self, cut: &Cut, later: &[Needle]) -> Result<CutConsole> {
        let needles: Vec<&Needle> = [&cut.line].into_iter().chain(later).collect();
        let (found, line) = self.expect_first(&needles, UPDATE)?;
        if found == 0 {
            std::thread::sleep(cut.delay);
        }
        let after = self.power_cut()?;
        self.say(match found {
            0 => format!("power cut {}", cut.describe()),
            _ => format!(
                "power cut at once: {} came before {}",
                needles[found], cut.line
            ),
        });
        Ok(CutConsole { line, after })
    }

    /// The boot state on the disk, read from outside as the bootloader
    /// will: the machine must be off.
    pub fn disk_status(&self) -> Result<BootStatus> {
        self.disk()?.status()
    }

    /// The disk, to read from outside: the machine must be off.
    pub fn disk(&self) -> Result<AbnixDisk> {
        ensure!(
            self.host.vm.is_none(),
            "the disk is read only while the machine is off"
        );
        AbnixDisk::existing(&self.host.disk)
    }
}

/// A tracing line without its colours, timestamp and level.
pub fn plain_message(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    match ["INFO ", "WARN ", "ERROR "]
        .iter()
        .find_map(|level| plain.split_once(level).map(|(_, rest)| rest.trim()))
    {
        Some(message) => message.to_owned(),
        None => plain.trim().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_message_drops_colours_time_and_level() {
        let line =
            "\u{1b}[2m2026-12-03T11:40:48Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m installed version 1";
        assert_eq!(plain_message(line), "installed version 1");
        assert_eq!(plain_message("  chose /dev/vdb "), "chose /dev/vdb");
    }

    #[test]
    fn reused_chunks_of_the_write_report() {
        let written = Written {
            line:
                "wrote 1 bytes (440 chunks) into slot b in 2.2s, verified; reused 423 of 440 chunks"
                    .into(),
        };
        assert_eq!(written.reused_chunks(), Some(423));
        assert_eq!(written.downloaded_bytes(), None);
        assert_eq!(written.chunks(), Some(440));
        let resumed = Written {
            line: "wrote 40894464 bytes (440 chunks) into slot b in 2.2s, verified; reused 440 of \
                   440 chunks (431 kept in the target, 9 copied from the active slot: 40894464 \
                   bytes), fetched 0 (0 refetched after a bad local copy): 0 bytes downloaded in \
                   0 requests"
                .into(),
        };
        assert_eq!(resumed.kept_chunks(), Some(431));
        assert_eq!(resumed.downloaded_bytes(), Some(0));
        assert_eq!(written.kept_chunks(), None);
    }

    #[test]
    fn needles_match_lines_holding_every_part() {
        let written = Needle::new("writing slot b: ").and(" in ");
        assert!(written.matches(" INFO writing slot b: 39 MiB in 2.1 s, 19 MiB/s"));
        assert!(!written.matches(" INFO writing slot b: 12 MiB of 39 MiB (30%), 8.0 MiB/s"));
        assert_eq!(written.to_string(), "\"writing slot b: … in \"");
    }
}
