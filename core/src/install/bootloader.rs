//! The bootloader to install, and its files, made ready before anything is
//! written: a missing GRUB module directory or systemd-boot binary is an
//! error while the disk is still untouched.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::boot::grubcfg::GrubCfgOptions;
use crate::boot::mkimage::{BiosImages, GrubTools, MkimageError};
use crate::boot::{BootControl, BootError, GrubBoot, GrubInstall, SystemdBoot};
use crate::disk::Disk;
use crate::fat::FormatOptions;
use crate::system_disk::Bootloader;

/// The GRUB platform directories [`GrubTools`] builds images from.
const GRUB_BIOS_PLATFORM: &str = "i386-pc";
const GRUB_EFI_PLATFORM: &str = "x86_64-efi";

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootloaderSetup {
    /// GRUB for UEFI, and for BIOS when `bios_dir` is given (not on
    /// aarch64).
    Grub {
        mkimage: PathBuf,
        /// GRUB's `i386-pc` module directory.
        bios_dir: Option<PathBuf>,
        /// GRUB's `x86_64-efi` module directory.
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

    /// Builds GRUB's images or reads systemd-boot.
    pub fn prepare(&self) -> Result<BootPayload, BootloaderError> {
        match self {
            BootloaderSetup::Grub {
                mkimage,
                bios_dir,
                efi_dir,
            } => {
                let bios = match bios_dir {
                    Some(dir) => Some(
                        tools(mkimage, dir, GRUB_BIOS_PLATFORM, "--grub-bios-dir")?
                            .bios_images()
                            .map_err(BootloaderError::Mkimage)?,
                    ),
                    None => None,
                };
                let efi_image = tools(mkimage, efi_dir, GRUB_EFI_PLATFORM, "--grub-efi-dir")?
                    .efi_image()
                    .map_err(BootloaderError::Mkimage)?;
                Ok(BootPayload::Grub { bios, efi_image })
            }
            BootloaderSetup::SystemdBoot { efi } => {
                let bytes = std::fs::read(efi).map_err(|source| BootloaderError::Read {
                    path: efi.clone(),
                    source,
                })?;
                // Every PE/COFF image, EFI applications included, starts with
                // the DOS header's "MZ".
                if !bytes.starts_with(b"MZ") {
                    return Err(BootloaderError::NotEfi(efi.clone()));
                }
                Ok(BootPayload::SystemdBoot { efi: bytes })
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
        /// `EFI/BOOT/BOOTX64.EFI`.
        efi_image: Vec<u8>,
    },
    SystemdBoot {
        efi: Vec<u8>,
    },
}

impl fmt::Debug for BootPayload {
    /// Sizes, not megabytes of bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootPayload::Grub { bios, efi_image } => f
                .debug_struct("Grub")
                .field("bios_core_img", &bios.as_ref().map(|b| b.core_img.len()))
                .field("efi_image", &efi_image.len())
                .finish(),
            BootPayload::SystemdBoot { efi } => f
                .debug_struct("SystemdBoot")
                .field("efi", &efi.len())
                .finish(),
        }
    }
}

impl BootPayload {
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
                        serial_console: true,
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
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not an EFI application", .0.display())]
    NotEfi(PathBuf),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn debian_grub(bios: bool) -> BootloaderSetup {
        BootloaderSetup::Grub {
            mkimage: "grub-mkimage".into(),
            bios_dir: bios.then(|| "/usr/lib/grub/i386-pc".into()),
            efi_dir: "/usr/lib/grub/x86_64-efi".into(),
        }
    }

    // These run the real grub-mkimage and read Debian's systemd-boot
    // (grub-pc-bin, grub-efi-amd64-bin, systemd-boot-efi): a missing package
    // fails the test.

    #[test]
    fn grub_images_build_from_debian_module_directories() {
        let setup = debian_grub(true);
        assert!(setup.bios_boot());
        let payload = setup.prepare().unwrap();
        assert_eq!(payload.describe(), "grub (BIOS and UEFI)");
        let BootPayload::Grub {
            bios: Some(bios),
            efi_image,
        } = payload
        else {
            panic!("{payload:?}")
        };
        assert_eq!(bios.boot_img.len(), 512);
        assert!(efi_image.starts_with(b"MZ"));

        let uefi_only = debian_grub(false);
        assert!(!uefi_only.bios_boot());
        assert_eq!(uefi_only.prepare().unwrap().describe(), "grub (UEFI)");
    }

    #[test]
    fn systemd_boot_is_read_and_checked() {
        let setup = BootloaderSetup::SystemdBoot {
            efi: "/usr/lib/systemd/boot/efi/systemd-bootx64.efi".into(),
        };
        assert_eq!(setup.kind(), Bootloader::SystemdBoot);
        assert_eq!(setup.prepare().unwrap().describe(), "systemd-boot (UEFI)");
        let not_efi = BootloaderSetup::SystemdBoot {
            efi: "/etc/hostname".into(),
        };
        assert_eq!(
            not_efi.prepare().unwrap_err().to_string(),
            "/etc/hostname is not an EFI application"
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
            swapped.prepare().unwrap_err().to_string(),
            "--grub-bios-dir /usr/lib/grub/x86_64-efi: expected GRUB's i386-pc module directory (a directory named i386-pc)"
        );
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("x86_64-efi");
        std::fs::create_dir(&empty).unwrap();
        let no_modules = BootloaderSetup::Grub {
            mkimage: "grub-mkimage".into(),
            bios_dir: None,
            efi_dir: empty.clone(),
        };
        assert_eq!(
            no_modules.prepare().unwrap_err().to_string(),
            format!(
                "--grub-efi-dir {}: no GRUB modules there (modinfo.sh is missing)",
                empty.display()
            )
        );
    }
}
