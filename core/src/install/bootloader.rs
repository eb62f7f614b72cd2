//! The bootloader to install, and its files, made ready before anything is
//! written: a missing GRUB module directory or systemd-boot binary, or one
//! for another architecture than the disk's, is an error while the disk is
//! still untouched.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::boot::efi::{EfiApp, EfiAppError};
use crate::boot::grubcfg::GrubCfgOptions;
use crate::boot::mkimage::{self, BiosImages, GrubTools, MkimageError};
use crate::boot::{BootControl, BootError, GrubBoot, GrubInstall, SystemdBoot};
use crate::system_disk::Bootloader;
use abnix_formats::disk::Disk;
use abnix_formats::fat::FormatOptions;
use abnix_formats::layout::Arch;

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
                let bios = match bios_dir {
                    Some(_) if !arch.has_bios() => {
                        return Err(BootloaderError::NoBios(arch));
                    }
                    Some(dir) => Some(
                        tools(mkimage, dir, mkimage::BIOS_PLATFORM, "--grub-bios-dir")?
                            .bios_images()
                            .map_err(BootloaderError::Mkimage)?,
                    ),
                    None => None,
                };
                let image = tools(mkimage, efi_dir, arch.grub_efi_platform(), "--grub-efi-dir")?
                    .efi_image(arch)
                    .map_err(BootloaderError::Mkimage)?;
                let efi_image =
                    EfiApp::new(arch, image).map_err(|source| BootloaderError::NotForArch {
                        what: format!("grub-mkimage's image from {}", efi_dir.display()),
                        source,
                    })?;
                Ok(BootPayload::Grub { bios, efi_image })
            }
            BootloaderSetup::SystemdBoot { efi } => {
                let bytes = std::fs::read(efi).map_err(|source| BootloaderError::Read {
                    path: efi.clone(),
                    source,
                })?;
                let efi =
                    EfiApp::new(arch, bytes).map_err(|source| BootloaderError::NotForArch {
                        what: efi.display().to_string(),
                        source,
                    })?;
                Ok(BootPayload::SystemdBoot { efi })
            }
        }
    }
}

/// [`GrubTools`] reads a platform's modules from `<lib_dir>/<platform>`;
/// Nix passes each platform's directory on its own (GRUB for BIOS and for
/// EFI are separate packages there), so the library directory is the
/// parent of the one given.
fn tools(
    mkimage: &Path,
    dir: &Path,
    platform: &'static str,
    flag: &'static str,
) -> Result<GrubTools, BootloaderError> {
    let wrong = || BootloaderError::PlatformDir {
        flag,
        dir: dir.to_owned(),
        platform,
    };
    if dir.file_name().and_then(|n| n.to_str()) != Some(platform) {
        return Err(wrong());
    }
    let lib_dir = dir.parent().ok_or_else(wrong)?;
    if !dir.join("modinfo.sh").is_file() {
        return Err(BootloaderError::NoModules {
            flag,
            dir: dir.to_owned(),
        });
    }
    Ok(GrubTools {
        mkimage: mkimage.to_owned(),
        lib_dir: lib_dir.to_owned(),
    })
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
                &GrubInstall {
                    format,
                    efi_image: Some(efi_image.clone()),
                    // Headless machines and VMs show GRUB on their serial
                    // port; without one GRUB keeps the screen.
                    cfg: GrubCfgOptions {
                        serial_console: efi_image.arch().has_pc_serial_port(),
                    },
                },
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
