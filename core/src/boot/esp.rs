//! Where abnix keeps things on the ESP.
//!
//! Paths are relative to the ESP root, '/'-separated and lowercase (FAT
//! lookups ignore case; GRUB and systemd-boot see the same names). The
//! bootloaders take them with a leading '/' (see [`absolute`]).
//!
//! ```text
//! EFI/BOOT/BOOTX64.EFI      GRUB's EFI image or systemd-boot (BOOTAA64.EFI on aarch64)
//! abnix/grub.cfg            GRUB: the boot script, written once at install
//! abnix/grubenv             GRUB: the boot state, one 512-byte block
//! abnix/<slot>/kernel       each slot's kernel,
//! abnix/<slot>/initrd       initrd,
//! abnix/<slot>/meta         the version's signed meta, as verified when it was written,
//! abnix/<slot>/meta.sig     and its signatures,
//! abnix/<slot>/slot.json    version, id, label and kernel command line,
//! abnix/<slot>/slot.cfg     GRUB: loads the slot (sourced by grub.cfg)
//! abnix/<slot>/good         GRUB: empty; the slot holds the last version proved good
//! abnix/failed/, revoked/   the updater's records (abnix_updater::update::records)
//! loader/loader.conf        systemd-boot: settings, written once at install
//! loader/entries/abnix-<slot>[+LEFT[-DONE]].conf   systemd-boot: one entry per activated slot
//! ```

use abnix_formats::layout::Arch;
use abnix_formats::slot::Slot;

pub(crate) const ABNIX_DIR: &str = "abnix";
pub const GRUB_CFG: &str = "abnix/grub.cfg";
pub const GRUB_ENV: &str = "abnix/grubenv";
pub(crate) const EFI_BOOT_DIR: &str = "EFI/BOOT";
pub(crate) const LOADER_CONF: &str = "loader/loader.conf";
pub(crate) const ENTRIES_DIR: &str = "loader/entries";

/// The removable-media path that `arch`'s firmware boots without any EFI
/// boot variable (UEFI 2.10 §3.5.1.1), so a disk written as a file boots
/// anywhere: `EFI/BOOT/BOOTX64.EFI`, `EFI/BOOT/BOOTAA64.EFI`.
pub fn efi_boot(arch: Arch) -> String {
    format!("{EFI_BOOT_DIR}/BOOT{}.EFI", arch.uefi_name())
}

pub(crate) fn slot_dir(slot: Slot) -> String {
    format!("{ABNIX_DIR}/{slot}")
}

pub fn kernel(slot: Slot) -> String {
    format!("{ABNIX_DIR}/{slot}/kernel")
}

pub fn initrd(slot: Slot) -> String {
    format!("{ABNIX_DIR}/{slot}/initrd")
}

pub fn slot_info(slot: Slot) -> String {
    format!("{ABNIX_DIR}/{slot}/slot.json")
}

/// The signed meta of the slot's version: what the rollback floor and the
/// failed versions are read from when the updater's state is lost.
pub fn slot_meta(slot: Slot) -> String {
    format!("{ABNIX_DIR}/{slot}/meta")
}

/// The signature file of the slot's meta.
pub fn slot_signatures(slot: Slot) -> String {
    format!("{ABNIX_DIR}/{slot}/meta.sig")
}

pub(crate) fn grub_slot_cfg(slot: Slot) -> String {
    format!("{ABNIX_DIR}/{slot}/slot.cfg")
}

/// The file name of GRUB's last-good mark in a slot's directory.
pub(crate) const GRUB_GOOD_MARK: &str = "good";

/// GRUB's last-good mark of a slot: an empty file, so creating or
/// removing it is one directory-sector write.
pub(crate) fn grub_good_mark(slot: Slot) -> String {
    format!("{ABNIX_DIR}/{slot}/{GRUB_GOOD_MARK}")
}

/// A path as the bootloaders name it: from the root of the ESP.
pub fn absolute(path: &str) -> String {
    format!("/{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_paths() {
        assert_eq!(kernel(Slot::A), "abnix/a/kernel");
        assert_eq!(initrd(Slot::B), "abnix/b/initrd");
        assert_eq!(slot_info(Slot::B), "abnix/b/slot.json");
        assert_eq!(slot_meta(Slot::A), "abnix/a/meta");
        assert_eq!(slot_signatures(Slot::A), "abnix/a/meta.sig");
        assert_eq!(absolute(&grub_slot_cfg(Slot::A)), "/abnix/a/slot.cfg");
        assert_eq!(absolute(&grub_good_mark(Slot::B)), "/abnix/b/good");
        assert_eq!(efi_boot(Arch::X86_64), "EFI/BOOT/BOOTX64.EFI");
        assert_eq!(efi_boot(Arch::Aarch64), "EFI/BOOT/BOOTAA64.EFI");
    }
}
