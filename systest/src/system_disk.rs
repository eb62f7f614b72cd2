//! abnix disks made and changed by the product's own code: installed by
//! the installer's write sequence on a disk-image file
//! (`abnix_installer::install`), updated by the updater's executor
//! (`abnix_updater::update::run`, taking the version from a fleet's bucket,
//! or from a bundle directory as `install --bundle` does),
//! the boot state read and changed through [`BootControl`]. What is the
//! harness's own is what only a test needs: a power cut partway through
//! one of an update's steps, GRUB's state block read and overwritten.
//!
//! Every operation opens the disk-image file anew and syncs it before it
//! returns, so a test can change a disk between two starts of a machine, or
//! while the machine runs, as the updater inside it would.

use std::fs::File;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use abnix_core::boot::grub::env::DecodedState;
use abnix_core::boot::{
    esp, grub, BootControl, BootError, BootStatus, Bootloader, BootloaderSetup,
};
use abnix_core::progress::NoProgress;
use abnix_core::system_disk::{open_disk_file, SystemDisk};
use abnix_formats::disk::{Fault, FaultyDisk};
use abnix_formats::fat::FatFs;
use abnix_formats::layout::{self, Arch, LayoutConfig};
use abnix_formats::meta::SignedMeta;
use abnix_formats::sign::TrustedKeys;
use abnix_formats::slot::Slot;
use abnix_installer::install::{self, Request, TargetRequest};
use abnix_updater::config::Config;
use abnix_updater::delta::Reopen;
use abnix_updater::state_dir::{State, StateDir};
use abnix_updater::update::machine::{
    Action, Clock, Device, Machine, Mode, NetworkWait, Outcome, Plan, Setup, Step,
};
use abnix_updater::update::notify::Notifier;
use abnix_updater::update::run::Executor;
use anyhow::{bail, Context, Result};

use crate::fleet::Release;

/// GRUB's BIOS boot code needs 512-byte sectors (see `core::boot::grub::bios`),
/// and the installer gives a disk-image file 512-byte sectors.
const SECTOR_SIZE: u32 = 512;
/// Debian's GRUB (grub-pc-bin, grub-efi-*-bin) and systemd-boot
/// (systemd-boot-efi), where `abnix-install` looks by default.
const GRUB_LIB_DIR: &str = "/usr/lib/grub";
const SYSTEMD_BOOT_DIR: &str = "/usr/lib/systemd/boot/efi";

/// The shape of a disk.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    /// GRUB is installed for both BIOS and UEFI (on x86_64), so one disk
    /// boots under SeaBIOS and OVMF.
    pub bootloader: Bootloader,
    pub slot_size: u64,
    pub esp_size: u64,
    /// `abnix-rw`'s size: the disk is the smallest the layout allows.
    pub rw_size: u64,
}

impl DiskSpec {
    /// What `abnix-install --bootloader` installs from Debian's packages.
    fn bootloader_setup(&self, arch: Arch) -> BootloaderSetup {
        let grub = Path::new(GRUB_LIB_DIR);
        match self.bootloader {
            Bootloader::Grub => BootloaderSetup::Grub {
                mkimage: "grub-mkimage".into(),
                bios_dir: arch.has_bios().then(|| grub.join("i386-pc")),
                efi_dir: grub.join(arch.grub_efi_platform()),
            },
            Bootloader::SystemdBoot => BootloaderSetup::SystemdBoot {
                efi: Path::new(SYSTEMD_BOOT_DIR).join(format!(
                    "systemd-boot{}.efi",
                    arch.uefi_name().to_ascii_lowercase()
                )),
            },
        }
    }
}

/// A disk-image file with the abnix layout.
#[derive(Debug, Clone)]
pub struct AbnixDisk {
    path: PathBuf,
}

impl AbnixDisk {
    /// Installs `first` onto the new disk-image file `path` with the
    /// installer's own code (`install::prepare`, then its write sequence):
    /// slot A holds it, good; slot B is empty; `abnix-rw` is formatted.
    pub fn create(path: &Path, spec: &DiskSpec, first: &Release) -> Result<AbnixDisk> {
        let arch = first.version.arch;
        let layout = LayoutConfig {
            slot_size: spec.slot_size,
            esp_size: spec.esp_size,
            min_rw_size: spec.rw_size,
            arch,
        };
        let mut trusted_keys = TrustedKeys::new();
        trusted_keys.insert(first.signer.clone());
        let request = Request {
            bundle: first.bundle.clone(),
            trusted_keys,
            target: TargetRequest::File {
                path: path.to_owned(),
                size: layout::min_disk_size(SECTOR_SIZE, &layout),
            },
            layout,
            bootloader: spec.bootloader_setup(arch),
            wipe: false,
            allow_removable: false,
            seed: None,
        };
        install::prepare(&request, &abnix_core::blockdev::SysRoot::default())
            .and_then(|plan| plan.install(&NoProgress))
            .with_context(|| {
                format!(
                    "installing version {} onto {} (apt-get install grub-pc-bin grub-efi-amd64-bin systemd-boot-efi e2fsprogs)",
                    first.version.version,
                    path.display()
                )
            })?;
        Ok(AbnixDisk {
            path: path.to_owned(),
        })
    }

    /// A disk-image file written by someone else (`abnix-install --file`,
    /// or a machine's updater), read and changed through the same calls.
    pub fn existing(path: &Path) -> Result<AbnixDisk> {
        let disk = AbnixDisk {
            path: path.to_owned(),
        };
        disk.open()?;
        Ok(disk)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Installs `version` (a meta as its channel signed it) into `slot`
    /// and activates it with `tries`, by the updater's own executor with
    /// `config`'s bucket: each step of an install in the updater's order
    /// (DESIGN §5). The updater's state directory lies beside the disk.
    pub fn update(
        &self,
        config: &Config,
        slot: Slot,
        version: &SignedMeta,
        tries: u8,
    ) -> Result<()> {
        self.run_install(config, slot, version, tries, None)
    }

    /// [`AbnixDisk::update`] with a power cut during one of its steps: the
    /// step's writes land up to `cut.after_bytes` (the write crossing it
    /// torn, later ones lost, as `FaultyDisk` simulates) and no later step
    /// runs. Fails if the step writes less, so a cut that never strikes is
    /// not mistaken for one that did.
    pub fn update_with_power_cut(
        &self,
        config: &Config,
        slot: Slot,
        version: &SignedMeta,
        tries: u8,
        cut: PowerCut,
    ) -> Result<()> {
        self.run_install(config, slot, version, tries, Some(cut))
    }

    /// Installs the version of the bundle directory `bundle` into `slot`
    /// as `abnix-update install --bundle` does, with `slot`'s other slot
    /// booted: the executor's whole cycle from that bundle (the boot state
    /// read, the bundle verified, the decision, every step), with `config`'s
    /// keys and `tries`. Fails unless the run installs it.
    pub fn install_bundle(
        &self,
        config: &Config,
        slot: Slot,
        bundle: &Path,
        tries: u8,
    ) -> Result<()> {
        let mut disk = self.open()?;
        let arch = Arch::from_root_type(disk.layout().slot(slot).type_guid)
            .context("the slot's partition type")?;
        let setup = install_setup(Mode::Bundle, &disk, config, slot, arch, tries);
        let mut host = UpdaterHost::beside(&self.path);
        let outcome = host
            .executor(&mut disk, config)
            .from_bundle(bundle.to_owned())
            .run(Machine::new(setup));
        match outcome {
            Outcome::Installed(plan) if plan.target == slot => Ok(()),
            other => bail!(
                "installing {} into slot {slot} of {}: {other}",
                bundle.display(),
                self.path.display()
            ),
        }
    }

    /// The executor's install of `version` into `slot`; with `cut`, stopped
    /// where the power cut leaves it (the torn step may have failed on what
    /// it read back: the power was gone by then anyway).
    fn run_install(
        &self,
        config: &Config,
        slot: Slot,
        version: &SignedMeta,
        tries: u8,
        cut: Option<PowerCut>,
    ) -> Result<()> {
        let mut disk = SystemDisk::open(FaultyDisk::counting(self.open_file()?), SECTOR_SIZE)
            .with_context(|| format!("reading {} as an abnix disk", self.path.display()))?;
        let written = disk.disk().counter();
        let setup = install_setup(
            Mode::Update,
            &disk,
            config,
            slot,
            version.meta().arch,
            tries,
        );
        let plan = Plan {
            target: slot,
            signed: version.clone(),
            tries,
        };
        let mut host = UpdaterHost::beside(&self.path);
        let mut executor = host.executor(&mut disk, config);
        // Bytes written when the cut's step began.
        let mut cut_from = None;
        let run = executor.run_until(Machine::installing(setup, plan), |action, disk| {
            let Some(cut) = cut else {
                return ControlFlow::Continue(());
            };
            if cut_from.is_some() {
                // The power is gone: nothing after the cut's step runs.
                return ControlFlow::Break(());
            }
            if matches!(action, Action::Install { step, .. } if *step == cut.step) {
                cut_from = Some(disk.disk().written().bytes);
                disk.disk().arm(cut.after_bytes, Fault::PowerCut);
            }
            ControlFlow::Continue(())
        });
        let Some(cut) = cut else {
            return match run {
                ControlFlow::Continue(Outcome::Installed(_)) => Ok(()),
                ControlFlow::Continue(other) => {
                    bail!("updating slot {slot} of {}: {other}", self.path.display())
                }
                ControlFlow::Break(()) => unreachable!("a run without a cut is never stopped"),
            };
        };
        let Some(from) = cut_from else {
            bail!("the update never reached {:?}: {run:?}", cut.step);
        };
        let bytes = written.lock().expect("write counter").bytes - from;
        anyhow::ensure!(
            bytes > cut.after_bytes,
            "the power cut {} bytes into {:?} never struck: the step wrote {bytes} bytes",
            cut.after_bytes,
            cut.step
        );
        Ok(())
    }

    /// Runs `operation` on the disk's boot control.
    pub fn boot_control<T>(
        &self,
        operation: impl FnOnce(&mut dyn BootControl) -> Result<T, BootError>,
    ) -> Result<T> {
        let mut disk = self.open()?;
        let mut boot = disk.boot_control()?;
        operation(boot.as_mut()).with_context(|| format!("boot control of {}", self.path.display()))
    }

    /// The boot state as boot control reads it from the disk.
    pub fn status(&self) -> Result<BootStatus> {
        self.boot_control(|boot| boot.status())
    }

    /// GRUB's state block as GRUB reads it (with the primary slot, which
    /// [`BootStatus`] does not show), and what is wrong with it.
    pub fn grub_state(&self) -> Result<DecodedState> {
        let mut disk = self.open()?;
        let mut esp = FatFs::open(disk.esp())?;
        let block = esp
            .read_file(esp::GRUB_ENV)
            .with_context(|| format!("reading {} on the ESP", esp::GRUB_ENV))?;
        Ok(grub::env::decode_state(&block))
    }

    /// Overwrites GRUB's state block in place with `block`, which must
    /// have its size: what a damaged sector or a careless tool leaves.
    pub fn overwrite_grub_state(&self, block: &[u8]) -> Result<()> {
        let mut disk = self.open()?;
        let mut esp = FatFs::open(disk.esp())?;
        esp.overwrite_file(esp::GRUB_ENV, block)
            .with_context(|| format!("overwriting {} on the ESP", esp::GRUB_ENV))
    }

    fn open(&self) -> Result<SystemDisk<File>> {
        SystemDisk::open(self.open_file()?, SECTOR_SIZE)
            .with_context(|| format!("reading {} as an abnix disk", self.path.display()))
    }

    fn open_file(&self) -> Result<File> {
        let (file, sector_size) = open_disk_file(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        anyhow::ensure!(
            sector_size == SECTOR_SIZE,
            "{} has {sector_size}-byte sectors, not {SECTOR_SIZE}",
            self.path.display()
        );
        Ok(file)
    }
}

/// What the updater keeps on a host besides its disk, for one run on a
/// disk image: its state directory beside the image, a state with nothing
/// failed, no notifications.
struct UpdaterHost {
    state_dir: StateDir,
    state: State,
    notifier: Notifier,
}

impl UpdaterHost {
    fn beside(image: &Path) -> UpdaterHost {
        UpdaterHost {
            state_dir: StateDir::new(image.with_extension("updater-state")),
            state: State::default(),
            notifier: Notifier::silent(),
        }
    }

    fn executor<'a, D: Reopen>(
        &'a mut self,
        disk: &'a mut SystemDisk<D>,
        config: &'a Config,
    ) -> Executor<'a, D> {
        Executor::new(
            disk,
            config,
            &self.state_dir,
            &mut self.state,
            &NoProgress,
            &self.notifier,
        )
    }
}

/// What the executor's run into `slot` of `disk` starts from: the other
/// slot booted, nothing failed before, a trusted clock.
fn install_setup<D: abnix_formats::disk::Disk>(
    mode: Mode,
    disk: &SystemDisk<D>,
    config: &Config,
    slot: Slot,
    arch: Arch,
    tries: u8,
) -> Setup {
    Setup {
        mode,
        booted: slot.other(),
        failed: Vec::new(),
        slot_size: disk.layout().slot(slot).size,
        tries,
        network: NetworkWait::DEFAULT,
        machine_id: None,
        device: Device {
            channel: config.remote.as_ref().map(|r| r.channel.clone()),
            arch,
        },
        clock: Clock {
            now: chrono::Utc::now(),
            trusted: true,
            newest_signed: None,
        },
    }
}

/// Where [`AbnixDisk::update_with_power_cut`] cuts the power: this many
/// bytes into the writes of the updater's `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerCut {
    pub step: Step,
    pub after_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ext4;
    use crate::fleet::{Fleet, Policy};
    use crate::version::FixtureVersion;
    use abnix_core::boot::{SlotInfo, SlotState};
    use uuid::Uuid;

    /// A stand-in version: an ext4 image, a "kernel" and an "initrd" of
    /// recognisable bytes, packed and published on `fleet`'s channel.
    fn release(fleet: &Fleet, dir: &Path, number: u64) -> (Release, SignedMeta) {
        let dir = dir.join(format!("v{number}"));
        std::fs::create_dir_all(&dir).unwrap();
        let id = Uuid::new_v4();
        let image = dir.join("root.ext4");
        ext4::empty_image(id, "root", 4 << 20, &image).unwrap();
        let kernel = dir.join("kernel");
        std::fs::write(&kernel, vec![number as u8; 300_000]).unwrap();
        let initrd = dir.join("initrd");
        std::fs::write(&initrd, vec![number as u8 + 100; 100_000]).unwrap();
        let version = FixtureVersion {
            version: number,
            id,
            arch: Arch::X86_64,
            image,
            kernel,
            initrd,
            cmdline: format!("console=ttyS0 root=UUID={id}"),
        };
        let release = fleet.pack(version, &dir).unwrap();
        fleet.publish(&release, false).unwrap();
        (release, fleet.channel_meta().unwrap())
    }

    /// What both tests start from; the fleet's bucket serves the updates
    /// while it lives.
    struct Setting {
        dir: tempfile::TempDir,
        _fleet: Fleet,
        config: Config,
        v1: Release,
        v2: SignedMeta,
    }

    fn setting() -> Setting {
        let dir = tempfile::tempdir().unwrap();
        let fleet = Fleet::start(&dir.path().join("fleet"), "disks", Policy { tries: 2 }).unwrap();
        let config = fleet.host_config().unwrap();
        let (v1, _) = release(&fleet, dir.path(), 1);
        let (_, v2) = release(&fleet, dir.path(), 2);
        Setting {
            dir,
            _fleet: fleet,
            config,
            v1,
            v2,
        }
    }

    /// A disk of each bootloader with v1 installed, and its path.
    fn installed(setting: &Setting) -> Vec<(Bootloader, PathBuf, AbnixDisk)> {
        [Bootloader::Grub, Bootloader::SystemdBoot]
            .into_iter()
            .map(|bootloader| {
                let spec = DiskSpec {
                    bootloader,
                    slot_size: 8 << 20,
                    esp_size: 40 << 20,
                    rw_size: 64 << 20,
                };
                let path = setting.dir.path().join(format!("{bootloader}.img"));
                let disk = AbnixDisk::create(&path, &spec, &setting.v1).unwrap();
                (bootloader, path, disk)
            })
            .collect()
    }

    /// Both bootloaders: the installed disk is an abnix disk with its
    /// bootloader, A good holding the first version (its image in slot A,
    /// the rw partition a clean ext4 with its label); installing a second
    /// version into B and activating it makes B the trial that boots next.
    #[test]
    fn created_disks_hold_the_first_version_and_take_a_second() {
        let setting = setting();
        let (dir, config, v1, v2) = (&setting.dir, &setting.config, &setting.v1, &setting.v2);
        for (bootloader, path, disk) in installed(&setting) {
            let status = disk.status().unwrap();
            assert_eq!(status.next, Some(Slot::A));
            assert_eq!(status.slot(Slot::A).state, SlotState::Good);
            assert_eq!(
                status.slot(Slot::A).info,
                Some(SlotInfo::of(v1.meta.meta()))
            );
            match bootloader {
                Bootloader::Grub => {
                    let grub = disk.grub_state().unwrap();
                    assert!(grub.problems.is_empty(), "{:?}", grub.problems);
                    assert_eq!(grub.state.primary, Slot::A);
                    assert_eq!(grub.state.slot(Slot::A), SlotState::Good);
                }
                Bootloader::SystemdBoot => assert!(disk.grub_state().is_err()),
            }
            assert_eq!(status.slot(Slot::B).state, SlotState::Bad);
            let mut opened = disk.open().unwrap();
            assert_eq!(opened.bootloader().unwrap(), bootloader);
            let layout = opened.layout().clone();
            drop(opened);
            let bytes = std::fs::read(&path).unwrap();
            let image = std::fs::read(&v1.version.image).unwrap();
            let slot_a = layout.slot_a.start as usize;
            assert!(bytes[slot_a..slot_a + image.len()] == image[..]);

            let rw = dir.path().join("rw.ext4");
            let start = layout.rw.start as usize;
            std::fs::write(&rw, &bytes[start..start + layout.rw.size as usize]).unwrap();
            let fsck = std::process::Command::new("e2fsck")
                .args(["-f", "-n"])
                .arg(&rw)
                .output()
                .unwrap();
            assert!(fsck.status.success(), "{fsck:?}");
            let label = std::process::Command::new("e2label")
                .arg(&rw)
                .output()
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "abnix-rw");

            disk.update(config, Slot::B, v2, 2).unwrap();
            let status = disk.status().unwrap();
            assert_eq!(status.next, Some(Slot::B));
            assert_eq!(
                status.slot(Slot::B).state,
                SlotState::Trial { tries_left: 2 }
            );
            assert_eq!(status.slot(Slot::B).info, Some(SlotInfo::of(v2.meta())));
        }
    }

    /// An update of the empty slot B cut short leaves slot A booting next,
    /// whichever step that writes the cut hits (marking an empty slot bad
    /// writes nothing), and a completed update afterwards activates B; a
    /// cut beyond the step's writes is reported rather than silently
    /// missed.
    #[test]
    fn updates_cut_short_leave_a_booting() {
        let setting = setting();
        let (config, v2) = (&setting.config, &setting.v2);
        for (bootloader, _, disk) in installed(&setting) {
            for step in [Step::WriteImage, Step::WriteBootFiles, Step::Activate] {
                let cut = PowerCut {
                    step,
                    after_bytes: 1,
                };
                disk.update_with_power_cut(config, Slot::B, v2, 2, cut)
                    .unwrap();
                let status = disk.status().unwrap();
                assert_eq!(status.next, Some(Slot::A), "{bootloader}, {step:?}");
                assert_eq!(status.slot(Slot::A).state, SlotState::Good);
            }
            let never = PowerCut {
                step: Step::Activate,
                after_bytes: 1 << 30,
            };
            let err = disk
                .update_with_power_cut(config, Slot::B, v2, 2, never)
                .unwrap_err();
            assert!(err.to_string().contains("never struck"), "{err:#}");
            disk.update(config, Slot::B, v2, 2).unwrap();
            assert_eq!(disk.status().unwrap().next, Some(Slot::B));
        }
    }
}
