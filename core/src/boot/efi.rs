//! EFI applications: a bootloader binary checked to run on the machines a
//! disk is for, before it is written to their removable-media path.
//!
//! A binary for another architecture (systemd-boot of the build machine on
//! an aarch64 disk, say) would leave a disk that no firmware boots, so both
//! backends take an [`EfiApp`], which knows its architecture.

use std::fmt;

use abnix_formats::layout::Arch;

/// An EFI application (a PE/COFF image) for `arch`.
#[derive(Clone, PartialEq, Eq)]
pub struct EfiApp {
    arch: Arch,
    image: Vec<u8>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EfiAppError {
    #[error("not an EFI application (no PE/COFF header)")]
    NotPe,
    #[error("an EFI application for {}, not {expected}", machine_name(*found))]
    WrongArch { found: u16, expected: Arch },
}

fn machine_name(machine: u16) -> String {
    match Arch::from_pe_machine(machine) {
        Some(arch) => arch.to_string(),
        None => format!("machine type {machine:#06x}"),
    }
}

/// The machine type of a PE/COFF image (PE/COFF spec: the MS-DOS stub's
/// "MZ", at 0x3c the offset of the "PE\0\0" signature, the COFF header's
/// machine right after it); `None` when the bytes are not one.
pub fn pe_machine(image: &[u8]) -> Option<u16> {
    if !image.starts_with(b"MZ") {
        return None;
    }
    let offset = u32::from_le_bytes(image.get(0x3c..0x40)?.try_into().ok()?) as usize;
    let header = image.get(offset..offset.checked_add(6)?)?;
    if &header[..4] != b"PE\0\0" {
        return None;
    }
    Some(u16::from_le_bytes([header[4], header[5]]))
}

impl EfiApp {
    /// `image`, checked to be an EFI application for `arch`.
    pub(crate) fn new(arch: Arch, image: Vec<u8>) -> Result<EfiApp, EfiAppError> {
        let found = pe_machine(&image).ok_or(EfiAppError::NotPe)?;
        if found != arch.pe_machine() {
            return Err(EfiAppError::WrongArch {
                found,
                expected: arch,
            });
        }
        Ok(EfiApp { arch, image })
    }

    pub(crate) fn arch(&self) -> Arch {
        self.arch
    }

    pub(crate) fn image(&self) -> &[u8] {
        &self.image
    }

    /// Where on the ESP the firmware finds it (see [`super::esp::efi_boot`]).
    pub(crate) fn removable_path(&self) -> String {
        super::esp::efi_boot(self.arch)
    }
}

/// The architecture and size, not megabytes of bytes.
impl fmt::Debug for EfiApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EfiApp")
            .field("arch", &self.arch)
            .field("len", &self.image.len())
            .finish()
    }
}

/// The smallest image [`pe_machine`] reads as an EFI application for
/// `arch`: an MS-DOS header pointing at a PE signature and machine type.
/// A stand-in for a bootloader in tests that never boot it.
#[cfg(test)]
pub(crate) fn stand_in(arch: Arch, text: &str) -> Vec<u8> {
    let mut image = vec![0u8; 0x40];
    image[..2].copy_from_slice(b"MZ");
    image[0x3c..0x40].copy_from_slice(&0x40u32.to_le_bytes());
    image.extend_from_slice(b"PE\0\0");
    image.extend_from_slice(&arch.pe_machine().to_le_bytes());
    image.extend_from_slice(text.as_bytes());
    image
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_is_checked_for_its_architecture() {
        for arch in Arch::ALL {
            let app = EfiApp::new(arch, stand_in(arch, "loader")).unwrap();
            assert_eq!(app.arch(), arch);
            assert_eq!(pe_machine(app.image()), Some(arch.pe_machine()));
        }
        assert_eq!(
            EfiApp::new(Arch::Aarch64, stand_in(Arch::X86_64, ""))
                .unwrap_err()
                .to_string(),
            "an EFI application for x86_64, not aarch64"
        );
        let mut riscv = stand_in(Arch::X86_64, "");
        riscv[0x44..0x46].copy_from_slice(&0x5064u16.to_le_bytes());
        assert_eq!(
            EfiApp::new(Arch::X86_64, riscv).unwrap_err().to_string(),
            "an EFI application for machine type 0x5064, not x86_64"
        );
    }

    #[test]
    fn what_is_not_a_pe_image_is_refused() {
        let good = stand_in(Arch::X86_64, "");
        let mut no_signature = good.clone();
        no_signature[0x40] = b'X';
        let mut far_offset = good.clone();
        far_offset[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        for bad in [
            b"".to_vec(),
            b"MZ".to_vec(),
            b"#!/bin/sh\n".to_vec(),
            good[..0x44].to_vec(),
            no_signature,
            far_offset,
        ] {
            assert_eq!(pe_machine(&bad), None, "{bad:?}");
            assert_eq!(
                EfiApp::new(Arch::X86_64, bad).unwrap_err(),
                EfiAppError::NotPe
            );
        }
    }
}
