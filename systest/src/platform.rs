//! What the harness needs to know about the machines of each architecture,
//! in one place: the emulator and its board, the UEFI firmware, the
//! kernel's console, Debian's name for the architecture. What abnix itself
//! knows per architecture is `abnix_formats::layout::Arch`'s.
//!
//! The harness runs on x86_64. Its aarch64 machines run under TCG like the
//! others, but nothing built here runs on them: the project's binaries
//! cannot be cross-compiled offline (no aarch64 Rust standard library), so
//! aarch64 fixtures hold Debian's arm64 kernel and busybox only, and prove
//! the disk layout and the bootloaders, not the updater.

use abnix_formats::layout::Arch;

/// The machines of one architecture, as QEMU and Debian provide them.
#[derive(Debug)]
pub struct Platform {
    pub arch: Arch,
    /// Debian's architecture: package names (`linux-image-cloud-arm64`)
    /// and `apt-get download PACKAGE:ARCH`.
    pub debian_arch: &'static str,
    pub qemu: &'static str,
    /// The Debian package of [`Platform::qemu`].
    pub qemu_package: &'static str,
    /// `-machine` and `-cpu` (QEMU's default CPU for `virt` is 32-bit).
    pub machine: &'static str,
    pub cpu: Option<&'static str>,
    /// edk2's firmware code (read-only, shared) and the template of its
    /// variable store (copied per machine), with their Debian package.
    /// Debian's 4M OVMF builds need no SMM, so they run on a plain q35
    /// under TCG.
    pub uefi_code: &'static str,
    pub uefi_vars: &'static str,
    pub uefi_package: &'static str,
    /// The serial console the kernel writes to (`console=`).
    pub console: &'static str,
}

const X86_64: Platform = Platform {
    arch: Arch::X86_64,
    debian_arch: "amd64",
    qemu: "qemu-system-x86_64",
    qemu_package: "qemu-system-x86",
    machine: "q35",
    cpu: None,
    uefi_code: "/usr/share/OVMF/OVMF_CODE_4M.fd",
    uefi_vars: "/usr/share/OVMF/OVMF_VARS_4M.fd",
    uefi_package: "ovmf",
    console: "ttyS0",
};

const AARCH64: Platform = Platform {
    arch: Arch::Aarch64,
    debian_arch: "arm64",
    qemu: "qemu-system-aarch64",
    qemu_package: "qemu-system-arm",
    machine: "virt",
    cpu: Some("max"),
    uefi_code: "/usr/share/AAVMF/AAVMF_CODE.fd",
    uefi_vars: "/usr/share/AAVMF/AAVMF_VARS.fd",
    uefi_package: "qemu-efi-aarch64",
    console: "ttyAMA0",
};

impl Platform {
    pub fn of(arch: Arch) -> &'static Platform {
        match arch {
            Arch::X86_64 => &X86_64,
            Arch::Aarch64 => &AARCH64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_architecture_has_its_platform_and_its_firmware_is_installed() {
        for arch in Arch::ALL {
            let platform = Platform::of(arch);
            assert_eq!(platform.arch, arch);
            for firmware in [platform.uefi_code, platform.uefi_vars] {
                assert!(
                    std::path::Path::new(firmware).is_file(),
                    "{firmware} (apt-get install {})",
                    platform.uefi_package
                );
            }
        }
    }
}
