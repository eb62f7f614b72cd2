//! The choice of bootloader: which one a disk has ([`Bootloader`]), and the
//! one to install with its files, made ready before anything is written
//! (each bootloader's own part is its `install` module): a missing GRUB
//! module directory or systemd-boot binary, or one for another architecture
//! than the disk's, is an error while the disk is still untouched.

use std::fmt;
use std::path::PathBuf;

use super::efi::{EfiApp, EfiAppError};
use super::grub::mkimage::{BiosImages, MkimageError};
use super::{esp, grub, systemd_boot, BootControl, BootError, GrubBoot, SystemdBoot};
use abnix_formats::disk::Disk;
use abnix_formats::fat::{FatError, FatFs, FormatOptions};
use abnix_formats::layout::Arch;

/// Which bootloader an ESP carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootloader {
    Grub,
    SystemdBoot,
}

impl Bootloader {
    pub fn name(self) -> &'static str {
        match self {
            Bootloader::Grub => "grub",
            Bootloader::SystemdBoot => "systemd-boot",
        }
    }

    /// Which bootloader the ESP `fat` was set up for, from the files boot
    /// control writes at install; `None` when it holds neither.
    pub(crate) fn of_esp<D: Disk>(fat: &mut FatFs<D>) -> Result<Option<Bootloader>, FatError> {
        Ok(if fat.exists(&esp::absolute(esp::GRUB_CFG))? {
            Some(Bootloader::Grub)
        } else if fat.exists(&esp::absolute(esp::LOADER_CONF))? {
            Some(Bootloader::SystemdBoot)
        } else {
            None
        })
    }

    /// Boot control through this bootloader, on an ESP set up for it.
    pub(crate) fn open<'a, D: Disk + 'a>(
        self,
        esp: D,
    ) -> Result<Box<dyn BootControl + 'a>, BootError> {
        Ok(match self {
            Bootloader::Grub => Box::new(GrubBoot::open(esp)?),
            Bootloader::SystemdBoot => Box::new(SystemdBoot::open(esp)?),
        })
    }
}

impl fmt::Display for Bootloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Bootloader {
    type Err = String;

    fn from_str(s: &str) -> Result<Bootloader, String> {
        match s {
            "grub" => Ok(Bootloader::Grub),
            "systemd-boot" => Ok(Bootloader::SystemdBoot),
            other => Err(format!(
                "unknown bootloader {other:?} (expected \"grub\" or \"systemd-boot\")"
            )),
        }
    }
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootloaderSetup {
    /// GRUB for UEFI, and for BIOS when `bios_dir` is given (x86_64 only:
    /// see [`Arch::has_bios`]).
    Grub {
        mkimage: PathBuf,
        /// GRUB's `i386-pc` module directory.
        bios_dir: Option<PathBuf>,
        /// GRUB's module directory for the architecture's EFI platform
        /// (`x86_64-efi`, `arm64-efi`: [`Arch::grub_efi_platform`]).
        efi_dir: PathBuf,
    },
    /// systemd-boot (UEFI only), from its EFI binary.
    SystemdBoot { efi: PathBuf },
}

impl BootloaderSetup {
    pub fn kind(&self) -> Bootloader {
        match self {
            BootloaderSetup::Grub { .. } => Bootloader::Grub,
            BootloaderSetup::SystemdBoot { .. } => Bootloader::SystemdBoot,
        }
    }

    /// Whether GRUB's BIOS boot code goes into the MBR (then the disk needs
    /// 512-byte sectors).
    pub fn bios_boot(&self) -> bool {
        matches!(
            self,
            BootloaderSetup::Grub {
                bios_dir: Some(_),
                ..
            }
        )
    }

    /// Builds GRUB's images or reads systemd-boot, for machines of `arch`.
    pub fn prepare(&self, arch: Arch) -> Result<BootPayload, BootloaderError> {
        match self {
            BootloaderSetup::Grub {
                mkimage,
                bios_dir,
                efi_dir,
            } => {
                let (bios, efi_image) =
                    grub::install::images(mkimage, bios_dir.as_deref(), efi_dir, arch)?;
                Ok(BootPayload::Grub { bios, efi_image })
            }
            BootloaderSetup::SystemdBoot { efi } => {
                let efi = systemd_boot::install::read_efi(efi, arch)?;
                Ok(BootPayload::SystemdBoot { efi })
            }
        }
    }
}

/// The bootloader's files, ready to be written.
#[derive(Clone, PartialEq, Eq)]
pub enum BootPayload {
    Grub {
        /// boot.img and core.img for BIOS machines, if installed.
        bios: Option<BiosImages>,
        /// For the removable-media path (`EFI/BOOT/BOOTX64.EFI`,
        /// `BOOTAA64.EFI`).
        efi_image: EfiApp,
    },
    SystemdBoot {
        efi: EfiApp,
    },
}

impl fmt::Debug for BootPayload {
    /// Sizes, not megabytes of bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootPayload::Grub { bios, efi_image } => f
                .debug_struct("Grub")
                .field("bios_core_img", &bios.as_ref().map(|b| b.core_img.len()))
                .field("efi_image", efi_image)
                .finish(),
            BootPayload::SystemdBoot { efi } => {
                f.debug_struct("SystemdBoot").field("efi", efi).finish()
            }
        }
    }
}

impl BootPayload {
    /// The architecture of the machines it boots.
    pub fn arch(&self) -> Arch {
        match self {
            BootPayload::Grub { efi_image, .. } => efi_image.arch(),
            BootPayload::SystemdBoot { efi } => efi.arch(),
        }
    }

    /// For summaries: "grub (BIOS and UEFI)".
    pub fn describe(&self) -> &'static str {
        match self {
            BootPayload::Grub { bios: Some(_), .. } => "grub (BIOS and UEFI)",
            BootPayload::Grub { bios: None, .. } => "grub (UEFI)",
            BootPayload::SystemdBoot { .. } => "systemd-boot (UEFI)",
        }
    }

    /// Formats `esp` and installs the bootloader's files on it (GRUB's BIOS
    /// boot code goes outside the ESP): boot control over an ESP on which
    /// no slot is bootable yet.
    pub fn install<'a, D: Disk + 'a>(
        &self,
        esp: D,
        format: FormatOptions,
    ) -> Result<Box<dyn BootControl + 'a>, BootError> {
        Ok(match self {
            BootPayload::Grub { efi_image, .. } => Box::new(GrubBoot::install(
                esp,
                &grub::install::options(format, efi_image),
            )?),
            BootPayload::SystemdBoot { efi } => Box::new(SystemdBoot::install(esp, &format, efi)?),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootloaderError {
    #[error("{flag} {}: expected GRUB's {platform} module directory (a directory named {platform})", dir.display())]
    PlatformDir {
        flag: &'static str,
        dir: PathBuf,
        platform: &'static str,
    },
    #[error("{flag} {}: no GRUB modules there (modinfo.sh is missing)", dir.display())]
    NoModules { flag: &'static str, dir: PathBuf },
    #[error("building GRUB's images: {0}")]
    Mkimage(MkimageError),
    #[error("--grub-bios-dir: {0} machines boot through UEFI only, GRUB is installed for UEFI alone there (leave out the BIOS directory)")]
    NoBios(Arch),
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    NotForArch { what: String, source: EfiAppError },
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn debian_grub(arch: Arch, bios: bool) -> BootloaderSetup {
        BootloaderSetup::Grub {
            mkimage: "grub-mkimage".into(),
            bios_dir: bios.then(|| "/usr/lib/grub/i386-pc".into()),
            efi_dir: Path::new("/usr/lib/grub").join(arch.grub_efi_platform()),
        }
    }

    fn systemd_boot(file: &str) -> BootloaderSetup {
        BootloaderSetup::SystemdBoot {
            efi: Path::new("/usr/lib/systemd/boot/efi").join(file),
        }
    }

    // These run the real grub-mkimage and read Debian's systemd-boot
    // (grub-pc-bin, grub-efi-amd64-bin, grub-efi-arm64-bin,
    // systemd-boot-efi): a missing package fails the test.

    #[test]
    fn grub_images_build_from_debian_module_directories() {
        let setup = debian_grub(Arch::X86_64, true);
        assert!(setup.bios_boot());
        let payload = setup.prepare(Arch::X86_64).unwrap();
        assert_eq!(payload.describe(), "grub (BIOS and UEFI)");
        assert_eq!(payload.arch(), Arch::X86_64);
        let BootPayload::Grub {
            bios: Some(bios),
            efi_image,
        } = payload
        else {
            panic!("{payload:?}")
        };
        assert_eq!(bios.boot_img.len(), 512);
        assert_eq!(efi_image.arch(), Arch::X86_64);

        let uefi_only = debian_grub(Arch::X86_64, false);
        assert!(!uefi_only.bios_boot());
        assert_eq!(
            uefi_only.prepare(Arch::X86_64).unwrap().describe(),
            "grub (UEFI)"
        );
    }

    #[test]
    fn grub_for_aarch64_is_uefi_only_from_arm64_efi() {
        let payload = debian_grub(Arch::Aarch64, false)
            .prepare(Arch::Aarch64)
            .unwrap();
        assert_eq!(payload.describe(), "grub (UEFI)");
        assert_eq!(payload.arch(), Arch::Aarch64);

        assert_eq!(
            debian_grub(Arch::Aarch64, true)
                .prepare(Arch::Aarch64)
                .unwrap_err()
                .to_string(),
            "--grub-bios-dir: aarch64 machines boot through UEFI only, GRUB is installed for UEFI alone there (leave out the BIOS directory)"
        );
        // x86_64's modules for an aarch64 disk, and the other way round.
        assert_eq!(
            debian_grub(Arch::X86_64, false)
                .prepare(Arch::Aarch64)
                .unwrap_err()
                .to_string(),
            "--grub-efi-dir /usr/lib/grub/x86_64-efi: expected GRUB's arm64-efi module directory (a directory named arm64-efi)"
        );
        assert_eq!(
            debian_grub(Arch::Aarch64, false)
                .prepare(Arch::X86_64)
                .unwrap_err()
                .to_string(),
            "--grub-efi-dir /usr/lib/grub/arm64-efi: expected GRUB's x86_64-efi module directory (a directory named x86_64-efi)"
        );
    }

    #[test]
    fn systemd_boot_is_read_and_checked_for_its_architecture() {
        let setup = systemd_boot("systemd-bootx64.efi");
        assert_eq!(setup.kind(), Bootloader::SystemdBoot);
        let payload = setup.prepare(Arch::X86_64).unwrap();
        assert_eq!(payload.describe(), "systemd-boot (UEFI)");
        assert_eq!(payload.arch(), Arch::X86_64);
        assert_eq!(
            setup.prepare(Arch::Aarch64).unwrap_err().to_string(),
            "/usr/lib/systemd/boot/efi/systemd-bootx64.efi: an EFI application for x86_64, not aarch64"
        );
        let not_efi = BootloaderSetup::SystemdBoot {
            efi: "/etc/hostname".into(),
        };
        assert_eq!(
            not_efi.prepare(Arch::X86_64).unwrap_err().to_string(),
            "/etc/hostname: not an EFI application (no PE/COFF header)"
        );
    }

    #[test]
    fn wrong_directories_name_the_flag() {
        let swapped = BootloaderSetup::Grub {
            mkimage: "grub-mkimage".into(),
            bios_dir: Some("/usr/lib/grub/x86_64-efi".into()),
            efi_dir: "/usr/lib/grub/x86_64-efi".into(),
        };
        assert_eq!(
            swapped.prepare(Arch::X86_64).unwrap_err().to_string(),
            "--grub-bios-dir /usr/lib/grub/x86_64-efi: expected GRUB's i386-pc module directory (a directory named i386-pc)"
        );
        let tmp = tempfile::tempdir().unwrap();
        for arch in Arch::ALL {
            let empty = tmp.path().join(arch.grub_efi_platform());
            std::fs::create_dir(&empty).unwrap();
            let no_modules = BootloaderSetup::Grub {
                mkimage: "grub-mkimage".into(),
                bios_dir: None,
                efi_dir: empty.clone(),
            };
            assert_eq!(
                no_modules.prepare(arch).unwrap_err().to_string(),
                format!(
                    "--grub-efi-dir {}: no GRUB modules there (modinfo.sh is missing)",
                    empty.display()
                )
            );
        }
    }
}
