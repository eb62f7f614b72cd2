//! Building GRUB's images with `grub-mkimage` from a GRUB library directory
//! (Debian: /usr/lib/grub; Nix: `${pkgs.grub2}/lib/grub` and, for EFI,
//! `${pkgs.grub2_efi}/lib/grub`).
//!
//! Every module the scripts need is built into the image, so nothing is
//! loaded from the ESP at boot. The prefix names the ESP (`/abnix`), where
//! GRUB's normal mode finds `grub.cfg`.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::esp;

/// The ESP's GPT partition number (DESIGN §2).
pub const ESP_PARTITION: u32 = 2;

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

/// BIOS disk access.
const BIOS_MODULES: &[&str] = &["biosdisk"];

/// The UEFI framebuffer, handed on to the kernel.
const EFI_MODULES: &[&str] = &["efi_gop"];

/// Where to find `grub-mkimage` and GRUB's platform directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubTools {
    pub mkimage: PathBuf,
    /// Holds `i386-pc/` and `x86_64-efi/` (each may be missing if that
    /// image is not built).
    pub lib_dir: PathBuf,
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
    /// GRUB as Debian installs it (grub-pc-bin, grub-efi-amd64-bin).
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
        let dir = self.lib_dir.join("i386-pc");
        let boot_path = dir.join("boot.img");
        let boot_img = std::fs::read(&boot_path).map_err(|source| MkimageError::File {
            path: boot_path,
            source,
        })?;
        let prefix = format!("(,gpt{ESP_PARTITION}){}", esp::absolute(esp::ABNIX_DIR));
        let core_img = self.mkimage("i386-pc", &dir, &prefix, BIOS_MODULES)?;
        Ok(BiosImages { boot_img, core_img })
    }

    /// The x86_64 EFI image, for `EFI/BOOT/BOOTX64.EFI`. A prefix without a
    /// device means the partition the image was loaded from: the ESP.
    pub fn efi_image(&self) -> Result<Vec<u8>, MkimageError> {
        let dir = self.lib_dir.join("x86_64-efi");
        self.mkimage(
            "x86_64-efi",
            &dir,
            &esp::absolute(esp::ABNIX_DIR),
            EFI_MODULES,
        )
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
    use crate::boot::bios;

    // These run the real grub-mkimage (grub-common, grub-pc-bin,
    // grub-efi-amd64-bin): a missing tool fails the test.

    #[test]
    fn builds_a_bios_core_that_patches() {
        let images = GrubTools::system().bios_images().unwrap();
        assert_eq!(images.boot_img.len(), bios::SECTOR);
        let core = bios::patch_core(&images.core_img, 2048).unwrap();
        assert!(core.len() <= bios::MAX_CORE_SECTORS * bios::SECTOR);
    }

    #[test]
    fn builds_an_efi_application() {
        let image = GrubTools::system().efi_image().unwrap();
        assert_eq!(&image[..2], b"MZ");
        let pe = u32::from_le_bytes(image[0x3c..0x40].try_into().unwrap()) as usize;
        assert_eq!(&image[pe..pe + 4], b"PE\0\0");
        // Machine type x86-64 (PE/COFF spec: IMAGE_FILE_MACHINE_AMD64).
        assert_eq!(u16::from_le_bytes([image[pe + 4], image[pe + 5]]), 0x8664);
        let prefix = b"/abnix";
        assert!(image.windows(prefix.len()).any(|w| w == prefix));
    }

    #[test]
    fn failures_name_the_tool() {
        let missing = GrubTools {
            mkimage: "/nonexistent/grub-mkimage".into(),
            lib_dir: "/usr/lib/grub".into(),
        };
        let err = missing.efi_image().unwrap_err();
        assert!(err
            .to_string()
            .starts_with("running /nonexistent/grub-mkimage: "));

        let no_lib = GrubTools {
            lib_dir: "/nonexistent".into(),
            ..GrubTools::system()
        };
        assert!(matches!(
            no_lib.efi_image(),
            Err(MkimageError::Failed { .. })
        ));
        assert!(matches!(
            no_lib.bios_images(),
            Err(MkimageError::File { .. })
        ));
    }
}
