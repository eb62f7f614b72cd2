//! abnix disks written from the host side with core's own functions, the
//! way the installer and the updater write them: the GPT from
//! `core::layout`, version images in the slots, an ext4 `abnix-rw`, the ESP
//! with a bootloader and each slot's boot files (`core::boot`), and the boot
//! state changed through [`BootControl`].
//!
//! Every operation opens the disk-image file anew and syncs it before it
//! returns, so a test can change a disk between two starts of a machine, or
//! while the machine runs, as the updater inside it would.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use abnix_core::boot::grubenv::{self, DecodedState};
use abnix_core::boot::mkimage::{BiosImages, GrubTools};
use abnix_core::boot::{
    bios, esp, grubcfg::GrubCfgOptions, BootControl, BootError, BootFiles, BootStatus, EfiApp,
    GrubBoot, GrubInstall, SystemdBoot,
};
use abnix_core::digest::{Digest, Expected, VerifyingReader};
use abnix_core::disk::{Disk, Fault, FaultyDisk, Region};
use abnix_core::fat::{FatFs, FormatOptions};
use abnix_core::layout::{self, Arch, LayoutConfig};
use abnix_core::slot::Slot;
use abnix_core::system_disk::{open_disk_file, Bootloader, SystemDisk};
use anyhow::{Context, Result};
use uuid::Uuid;

use crate::ext4;
use crate::version::FixtureVersion;

/// Debian's systemd-boot-efi package.
const SYSTEMD_BOOT_EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";
/// GRUB's BIOS boot code needs 512-byte sectors (see `core::boot::bios`).
const SECTOR_SIZE: u32 = 512;

/// The bootloaders' binaries, built or read once and installed on any
/// number of disks.
pub struct BootloaderImages {
    grub_bios: BiosImages,
    grub_efi: EfiApp,
    systemd_boot: EfiApp,
}

impl BootloaderImages {
    /// GRUB's images from Debian's `grub-mkimage` (grub-pc-bin,
    /// grub-efi-amd64-bin) and Debian's systemd-boot (systemd-boot-efi).
    pub fn system() -> Result<BootloaderImages> {
        let grub = GrubTools::system();
        let grub_bios = grub
            .bios_images()
            .context("building GRUB's BIOS images (apt-get install grub-pc-bin)")?;
        let grub_efi = grub
            .efi_image(Arch::X86_64)
            .context("building GRUB's EFI image (apt-get install grub-efi-amd64-bin)")?;
        let systemd_boot = std::fs::read(SYSTEMD_BOOT_EFI).with_context(|| {
            format!("reading {SYSTEMD_BOOT_EFI} (apt-get install systemd-boot-efi)")
        })?;
        let grub_efi = EfiApp::new(Arch::X86_64, grub_efi)?;
        let systemd_boot = EfiApp::new(Arch::X86_64, systemd_boot)
            .with_context(|| format!("reading {SYSTEMD_BOOT_EFI}"))?;
        Ok(BootloaderImages {
            grub_bios,
            grub_efi,
            systemd_boot,
        })
    }
}

/// The shape of a disk.
#[derive(Debug, Clone)]
pub struct DiskSpec {
    /// GRUB is installed for both BIOS and UEFI, so one disk boots under
    /// SeaBIOS and OVMF.
    pub bootloader: Bootloader,
    pub slot_size: u64,
    pub esp_size: u64,
    /// `abnix-rw`'s size: the disk is the smallest the layout allows.
    pub rw_size: u64,
}

/// A disk-image file with the abnix layout.
#[derive(Debug, Clone)]
pub struct AbnixDisk {
    path: PathBuf,
}

impl AbnixDisk {
    /// Creates `path` as a freshly installed machine's disk: `first` in slot
    /// A, marked good; slot B empty; `abnix-rw` an empty ext4.
    pub fn create(
        path: &Path,
        spec: &DiskSpec,
        images: &BootloaderImages,
        first: &FixtureVersion,
    ) -> Result<AbnixDisk> {
        let config = LayoutConfig {
            slot_size: spec.slot_size,
            esp_size: spec.esp_size,
            min_rw_size: spec.rw_size,
            // The architecture the bootloader images are for.
            arch: images.grub_efi.arch(),
        };
        let size = layout::min_disk_size(SECTOR_SIZE, &config);
        let layout = layout::compute(size, SECTOR_SIZE, &config)?;
        // Read and write: writing the GPT reads the MBR sector it updates.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .and_then(|file| file.set_len(size).map(|()| file))
            .with_context(|| format!("creating {}", path.display()))?;
        layout
            .to_gpt(&random_seed())
            .write(&mut file)
            .with_context(|| format!("writing the partition table of {}", path.display()))?;

        let esp = Region::new(&mut file, layout.esp.start, layout.esp.size);
        let format = FormatOptions {
            label: "ABNIX-ESP".to_owned(),
            volume_id: u32::from_le_bytes(random_seed()[..4].try_into().expect("4 bytes")),
            sector_size: SECTOR_SIZE,
        };
        match spec.bootloader {
            Bootloader::Grub => {
                let install = GrubInstall {
                    format,
                    efi_image: Some(images.grub_efi.clone()),
                    cfg: GrubCfgOptions {
                        serial_console: true,
                    },
                };
                GrubBoot::install(esp, &install)?;
                bios::install(
                    &mut file,
                    SECTOR_SIZE,
                    layout.bios.first_lba(SECTOR_SIZE),
                    layout.bios.size / u64::from(SECTOR_SIZE),
                    &images.grub_bios,
                )?;
            }
            Bootloader::SystemdBoot => {
                SystemdBoot::install(esp, &format, &images.systemd_boot)?;
            }
        }
        file.sync()?;
        drop(file);
        ext4::empty_filesystem_in(
            path,
            layout.rw.start,
            layout.rw.size,
            Uuid::new_v4(),
            layout::RW_NAME,
        )?;

        let disk = AbnixDisk {
            path: path.to_owned(),
        };
        disk.update(Slot::A, first, 1)?;
        disk.boot_control(|boot| boot.mark_good(Slot::A))?;
        Ok(disk)
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

    /// Writes `version` into `slot` and activates it with `tries`, as the
    /// updater does (DESIGN §5): checks that its boot files fit, marks the
    /// slot bad, writes the image, then the boot files, then activates.
    pub fn update(&self, slot: Slot, version: &FixtureVersion, tries: u8) -> Result<()> {
        self.update_steps(slot, version, tries, None)
    }

    /// [`AbnixDisk::update`] with a power cut during one of its steps: the
    /// step's writes land up to `cut.after_bytes` (the write crossing it
    /// torn, later ones lost, as `FaultyDisk` simulates) and no later step
    /// runs. Fails if the step writes less than that, so a cut that never
    /// strikes is not mistaken for one that did.
    pub fn update_with_power_cut(
        &self,
        slot: Slot,
        version: &FixtureVersion,
        tries: u8,
        cut: PowerCut,
    ) -> Result<()> {
        self.update_steps(slot, version, tries, Some(cut))
    }

    fn update_steps(
        &self,
        slot: Slot,
        version: &FixtureVersion,
        tries: u8,
        cut: Option<PowerCut>,
    ) -> Result<()> {
        for step in UpdateStep::ALL {
            let budget = cut
                .filter(|cut| cut.step == step)
                .map(|cut| cut.after_bytes);
            let file = self.open_file()?;
            let disk = match budget {
                Some(budget) => FaultyDisk::failing_after(file, budget, Fault::PowerCut),
                None => FaultyDisk::counting(file),
            };
            let written = disk.counter();
            let mut disk = SystemDisk::open(disk, SECTOR_SIZE)
                .with_context(|| format!("reading {} as an abnix disk", self.path.display()))?;
            let result = update_step(&mut disk, step, slot, version, tries).with_context(|| {
                format!("updating slot {slot} of {}: {step:?}", self.path.display())
            });
            let Some(budget) = budget else {
                result?;
                continue;
            };
            // The power is gone: what the step did after the cut never
            // reached the disk, and nothing after it runs.
            let bytes = written.lock().expect("write counter").bytes;
            anyhow::ensure!(
                bytes > budget,
                "the power cut {budget} bytes into {step:?} never struck: the step wrote {bytes} bytes"
            );
            return Ok(());
        }
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
        Ok(grubenv::decode_state(&block))
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

/// The steps of an update, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateStep {
    /// `check_boot_files`, then `mark_bad`.
    MarkBad,
    /// The image into the slot.
    Image,
    /// `write_boot_files`: kernel, initrd, slot file, marker.
    BootFiles,
    Activate,
}

impl UpdateStep {
    pub const ALL: [UpdateStep; 4] = [
        UpdateStep::MarkBad,
        UpdateStep::Image,
        UpdateStep::BootFiles,
        UpdateStep::Activate,
    ];
}

/// Where [`AbnixDisk::update_with_power_cut`] cuts the power: this many
/// bytes into the writes of `step`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PowerCut {
    pub step: UpdateStep,
    pub after_bytes: u64,
}

fn update_step<D: Disk>(
    disk: &mut SystemDisk<D>,
    step: UpdateStep,
    slot: Slot,
    version: &FixtureVersion,
    tries: u8,
) -> Result<()> {
    let info = version.slot_info();
    let kernel_len = file_len(&version.kernel)?;
    let initrd_len = file_len(&version.initrd)?;
    match step {
        UpdateStep::MarkBad => {
            let mut boot = disk.boot_control()?;
            boot.check_boot_files(slot, &info, kernel_len, initrd_len)?;
            boot.mark_bad(slot)?;
        }
        UpdateStep::Image => {
            let mut region = disk.slot_region(slot);
            let image_len = file_len(&version.image)?;
            anyhow::ensure!(
                image_len <= region.size()?,
                "version {}'s image ({image_len} bytes) does not fit slot {slot} ({} bytes)",
                version.version,
                region.size()?
            );
            let mut image = File::open(&version.image)
                .with_context(|| format!("opening {}", version.image.display()))?;
            io::copy(&mut image, &mut region)?;
            region.flush()?;
            // The image is on the disk before the boot files that make the
            // slot bootable are written.
            region.sync()?;
        }
        UpdateStep::BootFiles => {
            let (mut kernel, kernel_expected) = open_expected(&version.kernel)?;
            let (mut initrd, initrd_expected) = open_expected(&version.initrd)?;
            let files = BootFiles::new(
                info,
                VerifyingReader::new(&mut kernel, kernel_expected),
                VerifyingReader::new(&mut initrd, initrd_expected),
            );
            disk.boot_control()?.write_boot_files(slot, files)?;
        }
        UpdateStep::Activate => disk.boot_control()?.activate(slot, tries)?,
    }
    Ok(())
}

/// A fixture's boot file, opened, and what it must be as written.
fn open_expected(path: &Path) -> Result<(File, Expected)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let expected = Expected::new(
        path.display().to_string(),
        bytes.len() as u64,
        Digest::of(&bytes),
    );
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    Ok((file, expected))
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len())
}

/// Fresh GUIDs and serial numbers for each disk, as the installer makes.
fn random_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(Uuid::new_v4().as_bytes());
    seed[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    seed
}

#[cfg(test)]
mod tests {
    use super::*;
    use abnix_core::boot::SlotState;

    /// A stand-in version: an ext4 image, a "kernel" and an "initrd" of
    /// recognisable bytes.
    fn version(dir: &Path, number: u64) -> FixtureVersion {
        let dir = dir.join(format!("v{number}"));
        std::fs::create_dir_all(&dir).unwrap();
        let id = Uuid::new_v4();
        let image = dir.join("root.ext4");
        ext4::empty_image(id, "root", 4 << 20, &image).unwrap();
        let kernel = dir.join("kernel");
        std::fs::write(&kernel, vec![number as u8; 300_000]).unwrap();
        let initrd = dir.join("initrd");
        std::fs::write(&initrd, vec![number as u8 + 100; 100_000]).unwrap();
        FixtureVersion {
            version: number,
            id,
            arch: Arch::X86_64,
            image,
            kernel,
            initrd,
            cmdline: format!("console=ttyS0 root=UUID={id}"),
        }
    }

    /// Both bootloaders: the created disk is an abnix disk with its
    /// bootloader, A good holding the first version (its image in slot A,
    /// the rw partition a clean ext4 with its label); installing a second
    /// version into B and activating it makes B the trial that boots next.
    #[test]
    fn created_disks_hold_the_first_version_and_take_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let images = BootloaderImages::system().unwrap();
        let (v1, v2) = (version(dir.path(), 1), version(dir.path(), 2));
        for bootloader in [Bootloader::Grub, Bootloader::SystemdBoot] {
            let spec = DiskSpec {
                bootloader,
                slot_size: 8 << 20,
                esp_size: 40 << 20,
                rw_size: 64 << 20,
            };
            let path = dir.path().join(format!("{bootloader}.img"));
            let disk = AbnixDisk::create(&path, &spec, &images, &v1).unwrap();

            let status = disk.status().unwrap();
            assert_eq!(status.next, Some(Slot::A));
            assert_eq!(status.slot(Slot::A).state, SlotState::Good);
            assert_eq!(status.slot(Slot::A).info, Some(v1.slot_info()));
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
            let image = std::fs::read(&v1.image).unwrap();
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

            disk.update(Slot::B, &v2, 2).unwrap();
            let status = disk.status().unwrap();
            assert_eq!(status.next, Some(Slot::B));
            assert_eq!(
                status.slot(Slot::B).state,
                SlotState::Trial { tries_left: 2 }
            );
            assert_eq!(status.slot(Slot::B).info, Some(v2.slot_info()));
        }
    }

    /// An update of the empty slot B cut short leaves slot A booting next,
    /// whichever step that writes the cut hits (marking an empty slot bad
    /// writes nothing), and a completed update afterwards activates B; a
    /// cut beyond the step's writes is reported rather than silently
    /// missed.
    #[test]
    fn updates_cut_short_leave_a_booting() {
        let dir = tempfile::tempdir().unwrap();
        let images = BootloaderImages::system().unwrap();
        let (v1, v2) = (version(dir.path(), 1), version(dir.path(), 2));
        for bootloader in [Bootloader::Grub, Bootloader::SystemdBoot] {
            let spec = DiskSpec {
                bootloader,
                slot_size: 8 << 20,
                esp_size: 40 << 20,
                rw_size: 64 << 20,
            };
            let path = dir.path().join(format!("{bootloader}.img"));
            let disk = AbnixDisk::create(&path, &spec, &images, &v1).unwrap();
            for step in [
                UpdateStep::Image,
                UpdateStep::BootFiles,
                UpdateStep::Activate,
            ] {
                let cut = PowerCut {
                    step,
                    after_bytes: 1,
                };
                disk.update_with_power_cut(Slot::B, &v2, 2, cut).unwrap();
                let status = disk.status().unwrap();
                assert_eq!(status.next, Some(Slot::A), "{bootloader}, {step:?}");
                assert_eq!(status.slot(Slot::A).state, SlotState::Good);
            }
            let never = PowerCut {
                step: UpdateStep::Activate,
                after_bytes: 1 << 30,
            };
            let err = disk
                .update_with_power_cut(Slot::B, &v2, 2, never)
                .unwrap_err();
            assert!(err.to_string().contains("never struck"), "{err:#}");
            disk.update(Slot::B, &v2, 2).unwrap();
            assert_eq!(disk.status().unwrap().next, Some(Slot::B));
        }
    }
}
