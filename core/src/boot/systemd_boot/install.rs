//! systemd-boot's install side: its EFI binary, read and checked for the
//! disk's architecture before anything is written.

use std::path::Path;

use crate::boot::efi::EfiApp;
use crate::boot::BootloaderError;
use abnix_formats::layout::Arch;

/// systemd-boot's EFI binary at `efi`, for machines of `arch`.
pub(crate) fn read_efi(efi: &Path, arch: Arch) -> Result<EfiApp, BootloaderError> {
    let bytes = std::fs::read(efi).map_err(|source| BootloaderError::Read {
        path: efi.to_owned(),
        source,
    })?;
    let efi = EfiApp::new(arch, bytes).map_err(|source| BootloaderError::NotForArch {
        what: efi.display().to_string(),
        source,
    })?;
    Ok(efi)
}
