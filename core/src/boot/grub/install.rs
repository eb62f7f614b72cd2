//! GRUB's install side: its images built from the module directories the
//! installer was given, checked before anything is written, and what a
//! fresh ESP gets.

use std::path::Path;

use super::cfg::GrubCfgOptions;
use super::mkimage::{self, BiosImages, GrubTools};
use super::GrubInstall;
use crate::boot::efi::EfiApp;
use crate::boot::BootloaderError;
use abnix_formats::fat::FormatOptions;
use abnix_formats::layout::Arch;

/// GRUB's BIOS images (when `bios_dir` is given) and its EFI image, for
/// machines of `arch`.
pub(crate) fn images(
    mkimage: &Path,
    bios_dir: Option<&Path>,
    efi_dir: &Path,
    arch: Arch,
) -> Result<(Option<BiosImages>, EfiApp), BootloaderError> {
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
    let efi_image = EfiApp::new(arch, image).map_err(|source| BootloaderError::NotForArch {
        what: format!("grub-mkimage's image from {}", efi_dir.display()),
        source,
    })?;
    Ok((bios, efi_image))
}

/// What [`super::GrubBoot::install`] puts on a fresh ESP, with GRUB's EFI
/// image `efi_image`.
pub(crate) fn options(format: FormatOptions, efi_image: &EfiApp) -> GrubInstall {
    GrubInstall {
        format,
        efi_image: Some(efi_image.clone()),
        // Headless machines and VMs show GRUB on their serial port; without
        // one GRUB keeps the screen.
        cfg: GrubCfgOptions {
            serial_console: efi_image.arch().has_pc_serial_port(),
        },
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
