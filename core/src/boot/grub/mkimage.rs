//! Building GRUB's images with `grub-mkimage` from a GRUB library directory
//! (Debian: /usr/lib/grub; Nix: `${pkgs.grub2}/lib/grub` and, for EFI,
//! `${pkgs.grub2_efi}/lib/grub`). One `grub-mkimage` builds for every
//! platform whose modules it is given, so an x86_64 build machine makes
//! aarch64's image from `arm64-efi` modules.
//!
//! Every module the scripts need is built into the image, so nothing is
//! loaded from the ESP at boot. The prefix names the ESP (`/abnix`), where
//! GRUB's normal mode finds `grub.cfg`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::boot::esp;
use abnix_formats::layout::Arch;

/// The ESP's GPT partition number (DESIGN §2).
pub(crate) const ESP_PARTITION: u32 = 2;

/// Modules both images need: the ESP (GPT, FAT), the script (normal,
/// `source` from configfile, `[` from test, `echo`, `sleep`, `reboot`), the
/// state (loadenv), booting Linux (linux, boot) and a serial console.
const COMMON_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "normal",
    "configfile",
    "test",
    "echo",
    "sleep",
    "reboot",
    "loadenv",
    "linux",
    "boot",
    "serial",
    "terminal",
];

/// GRUB's platform for BIOS machines (x86 only, see [`Arch::has_bios`]).
pub(crate) const BIOS_PLATFORM: &str = "i386-pc";

/// BIOS disk access.
const BIOS_MODULES: &[&str] = &["biosdisk"];

/// The UEFI framebuffer, handed on to the kernel.
const EFI_MODULES: &[&str] = &["efi_gop"];

/// Where to find `grub-mkimage` and GRUB's platform directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubTools {
    pub(crate) mkimage: PathBuf,
    /// Holds `i386-pc/` and the EFI platforms' directories (`x86_64-efi/`,
    /// `arm64-efi/`; each may be missing if that image is not built).
    pub(crate) lib_dir: PathBuf,
}

/// boot.img and core.img, unpatched (see [`super::bios`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiosImages {
    pub boot_img: Vec<u8>,
    pub core_img: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum MkimageError {
    #[error("{path}: {source}")]
    File { path: PathBuf, source: io::Error },
    #[error("running {program}: {source}")]
    Spawn { program: PathBuf, source: io::Error },
    #[error("{program} failed ({status}): {stderr}")]
    Failed {
        program: PathBuf,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

impl GrubTools {
    /// GRUB as Debian installs it (grub-pc-bin, grub-efi-amd64-bin,
    /// grub-efi-arm64-bin).
    pub fn system() -> GrubTools {
        GrubTools {
            mkimage: "grub-mkimage".into(),
            lib_dir: "/usr/lib/grub".into(),
        }
    }

    /// boot.img from the library and a core.img whose prefix is the ESP of
    /// the disk the BIOS booted from (`(,gpt2)`: GRUB fills in the boot
    /// drive).
    pub fn bios_images(&self) -> Result<BiosImages, MkimageError> {
        let dir = self.lib_dir.join(BIOS_PLATFORM);
        let boot_path = dir.join("boot.img");
        let boot_img = std::fs::read(&boot_path).map_err(|source| MkimageError::File {
            path: boot_path,
            source,
        })?;
        let prefix = format!("(,gpt{ESP_PARTITION}){}", esp::absolute(esp::ABNIX_DIR));
        let core_img = self.mkimage(BIOS_PLATFORM, &dir, &prefix, BIOS_MODULES)?;
        Ok(BiosImages { boot_img, core_img })
    }

    /// The EFI image for `arch`, for its removable-media path
    /// ([`esp::efi_boot`]). A prefix without a device means the partition
    /// the image was loaded from: the ESP.
    pub(crate) fn efi_image(&self, arch: Arch) -> Result<Vec<u8>, MkimageError> {
        let platform = arch.grub_efi_platform();
        let dir = self.lib_dir.join(platform);
        self.mkimage(platform, &dir, &esp::absolute(esp::ABNIX_DIR), EFI_MODULES)
    }

    fn mkimage(
        &self,
        format: &str,
        dir: &Path,
        prefix: &str,
        extra: &[&str],
    ) -> Result<Vec<u8>, MkimageError> {
        // grub-mkimage fsyncs its output file, which fails on a pipe.
        let tmp = tempfile::tempdir().map_err(|source| MkimageError::File {
            path: std::env::temp_dir(),
            source,
        })?;
        let image = tmp.path().join("image");
        let out = Command::new(&self.mkimage)
            .args(["-O", format, "-o"])
            .arg(&image)
            .arg("-d")
            .arg(dir)
            .args(["-p", prefix])
            .args(COMMON_MODULES)
            .args(extra)
            .output()
            .map_err(|source| MkimageError::Spawn {
                program: self.mkimage.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(MkimageError::Failed {
                program: self.mkimage.clone(),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        std::fs::read(&image).map_err(|source| MkimageError::File {
            path: image,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::grub::bios;

    // These run the real grub-mkimage (grub-common, grub-pc-bin,
    // grub-efi-amd64-bin, grub-efi-arm64-bin): a missing tool fails the
    // test.

    #[test]
    fn builds_a_bios_core_that_patches() {
        let images = GrubTools::system().bios_images().unwrap();
        assert_eq!(images.boot_img.len(), bios::SECTOR);
        let core = bios::patch_core(&images.core_img, 2048).unwrap();
        assert!(core.len() <= bios::MAX_CORE_SECTORS * bios::SECTOR);
    }

    #[test]
    fn builds_an_efi_application_for_each_architecture() {
        for (arch, machine) in [
            // PE/COFF spec: IMAGE_FILE_MACHINE_AMD64, IMAGE_FILE_MACHINE_ARM64.
            (Arch::X86_64, 0x8664),
            (Arch::Aarch64, 0xaa64),
        ] {
            let image = GrubTools::system().efi_image(arch).unwrap();
            assert_eq!(
                crate::boot::efi::pe_machine(&image),
                Some(machine),
                "{arch}"
            );
            let prefix = b"/abnix";
            assert!(image.windows(prefix.len()).any(|w| w == prefix));
        }
    }

    #[test]
    fn failures_name_the_tool() {
        let missing = GrubTools {
            mkimage: "/nonexistent/grub-mkimage".into(),
            lib_dir: "/usr/lib/grub".into(),
        };
        let err = missing.efi_image(Arch::X86_64).unwrap_err();
        assert!(err
            .to_string()
            .starts_with("running /nonexistent/grub-mkimage: "));

        let no_lib = GrubTools {
            lib_dir: "/nonexistent".into(),
            ..GrubTools::system()
        };
        assert!(matches!(
            no_lib.efi_image(Arch::Aarch64),
            Err(MkimageError::Failed { .. })
        ));
        assert!(matches!(
            no_lib.bios_images(),
            Err(MkimageError::File { .. })
        ));
    }
}
