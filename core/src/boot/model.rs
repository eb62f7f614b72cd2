//! What the firmware and the bootloader do with the ESP at power-on, as a
//! model for file-level tests: which slot starts, and the state change the
//! bootloader itself makes (GRUB saves a trial's decremented tries in
//! grubenv; systemd-boot renames a counted entry). The real bootloaders are
//! checked against the same expectations in QEMU (systest/tests/boot.rs).

use super::Bootloader;
use abnix_formats::disk::Disk;
use abnix_formats::fat::FatFs;
use abnix_formats::slot::Slot;

use super::grub::env::{decode_state, encode_state};
use super::systemd_boot::bls::EntryName;
use super::{esp, BootError, BootStatus, SlotFiles};

/// One power-on of a machine whose ESP is `esp` and whose boot state is
/// `status` (read from the same ESP just before): returns the slot that
/// starts, `None` when none would. For GRUB the slot comes from the model of
/// its script, independently of `status.next`, so tests can compare the two.
pub fn power_on<D: Disk>(
    esp: D,
    bootloader: Bootloader,
    status: &BootStatus,
) -> Result<Option<Slot>, BootError> {
    let mut fat = FatFs::open(esp)?;
    match bootloader {
        Bootloader::Grub => {
            // GRUB starts from an empty environment when the file is gone.
            let bytes = fat.read_file(esp::GRUB_ENV).unwrap_or_default();
            let state = decode_state(&bytes).state;
            let mut files = [SlotFiles::default(); 2];
            for (slot, files) in Slot::ALL.into_iter().zip(&mut files) {
                *files = SlotFiles {
                    complete: status.slot(slot).info.is_some(),
                    marked_good: fat.exists(&esp::grub_good_mark(slot))?,
                };
            }
            let Some(next) = state.next_boot(files) else {
                return Ok(None);
            };
            if next.state_after != state {
                fat.overwrite_file(esp::GRUB_ENV, &encode_state(&next.state_after))?;
            }
            Ok(Some(next.slot))
        }
        Bootloader::SystemdBoot => {
            // systemd-boot starts the first entry in its sort order, which
            // is what status predicts (see boot/systemd_boot/mod.rs).
            let Some(slot) = status.next else {
                return Ok(None);
            };
            let counted = fat
                .list_dir(esp::ENTRIES_DIR)?
                .into_iter()
                .filter_map(|entry| EntryName::parse(&entry.name).ok().flatten())
                .find(|name| name.slot == slot && name.counter.is_some());
            if let Some(name) = counted {
                fat.rename(&name.path(), &name.after_boot_attempt().path())?;
            }
            Ok(Some(slot))
        }
    }
}
