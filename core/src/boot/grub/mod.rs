//! The GRUB backend: state in `abnix/grubenv`, a slot's marker is its
//! `slot.cfg`.
//!
//! Besides the state block, each slot may carry a last-good mark,
//! `abnix/<slot>/good` (empty: created or removed by one directory-sector
//! write). Only GRUB's rescue path reads it, to boot the version last proved
//! good when the block is damaged or names no eligible slot. The rule it
//! keeps: a mark only ever sits on boot files that passed mark-good.
//! So it is created only by [`mark_good`](BootControl::mark_good), on the
//! running slot's complete files, before the block says good (a cut in
//! between leaves a marked slot still on trial, whose next boot runs
//! mark-good again); and it goes before anything that ends that: in
//! `mark_bad` right after `slot.cfg` and before the block and the files, in
//! `activate` before the block makes the slot a trial (a trial that fails
//! must not be rescued). `write_boot_files` refuses a slot that still has
//! one. docs/boot.md works through every cut.

pub mod bios;
pub mod cfg;
pub mod env;
pub(crate) mod install;
pub mod mkimage;

use tracing::{info, warn};

use super::state::{slot_index, BootState, SlotFiles};
use super::{
    esp, files, BootControl, BootError, BootFiles, BootStatus, EfiApp, SlotInfo, SlotState,
    SlotStatus,
};
use abnix_formats::disk::Disk;
use abnix_formats::fat::{FatError, FatFs, FormatOptions};
use abnix_formats::slot::Slot;
use cfg::{grub_cfg, slot_cfg, GrubCfgOptions};
use env::{decode_state, encode_state, DecodedState, STATE_BLOCK_SIZE};

/// Boot control through GRUB, on the ESP.
pub struct GrubBoot<D: Disk> {
    fs: FatFs<D>,
}

/// What `GrubBoot::install` puts on a fresh ESP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrubInstall {
    pub(crate) format: FormatOptions,
    /// GRUB's EFI image (see [`mkimage::GrubTools::efi_image`]),
    /// for machines that boot through UEFI; `None` for BIOS only.
    pub(crate) efi_image: Option<EfiApp>,
    pub(crate) cfg: GrubCfgOptions,
}

impl<D: Disk> GrubBoot<D> {
    /// Boot control on an ESP set up by `GrubBoot::install`.
    pub(crate) fn open(esp: D) -> Result<Self, BootError> {
        Ok(GrubBoot {
            fs: FatFs::open(esp)?,
        })
    }

    /// Formats the ESP and writes GRUB's files: the EFI image if any,
    /// `grub.cfg`, and a state block in which no slot is eligible. The BIOS
    /// boot code goes outside the ESP ([`bios::install`]).
    pub(crate) fn install(esp: D, options: &GrubInstall) -> Result<Self, BootError> {
        let mut fs = FatFs::format(esp, &options.format)?;
        if let Some(app) = &options.efi_image {
            fs.create_dir_all(esp::EFI_BOOT_DIR)?;
            fs.write_file(&app.removable_path(), app.image())?;
        }
        fs.create_dir_all(esp::ABNIX_DIR)?;
        fs.write_file(esp::GRUB_CFG, grub_cfg(&options.cfg).as_bytes())?;
        fs.write_file(esp::GRUB_ENV, &encode_state(&BootState::FALLBACK))?;
        info!("installed GRUB on the ESP");
        Ok(GrubBoot { fs })
    }

    #[cfg(test)]
    pub(crate) fn into_inner(self) -> D {
        self.fs.into_inner()
    }

    /// The state GRUB will act on (see [`decode_state`]); what is wrong with
    /// the block is logged.
    fn read_state(&mut self) -> Result<BootState, BootError> {
        let bytes = match self.fs.read_file(esp::GRUB_ENV) {
            Ok(bytes) => bytes,
            Err(FatError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let DecodedState { state, problems } = decode_state(&bytes);
        for problem in problems {
            warn!("{}: {problem}", esp::GRUB_ENV);
        }
        Ok(state)
    }

    /// Rewrites the state block in place: one sector, so the change is one
    /// sector write. A missing block or one of another size is replaced;
    /// until the new one exists GRUB falls back to the first complete slot.
    fn write_state(&mut self, state: &BootState) -> Result<(), BootError> {
        let bytes = encode_state(state);
        match self.fs.overwrite_file(esp::GRUB_ENV, &bytes) {
            Ok(()) => return Ok(()),
            Err(FatError::NotFound(_)) => {}
            Err(FatError::SizeMismatch { file, .. }) => {
                warn!(
                    "{} is {file} bytes, not {STATE_BLOCK_SIZE}: replacing it",
                    esp::GRUB_ENV
                );
                self.fs.remove(esp::GRUB_ENV)?;
            }
            Err(e) => return Err(e.into()),
        }
        self.fs.write_file(esp::GRUB_ENV, &bytes)?;
        Ok(())
    }

    fn change_state(
        &mut self,
        change: impl FnOnce(BootState) -> Result<BootState, BootError>,
    ) -> Result<(), BootError> {
        let old = self.read_state()?;
        let new = change(old)?;
        if new != old {
            self.write_state(&new)?;
        }
        Ok(())
    }

    /// A slot is complete when its `slot.cfg` exists.
    fn complete(&mut self, slot: Slot) -> Result<bool, BootError> {
        Ok(self.fs.exists(&esp::grub_slot_cfg(slot))?)
    }

    fn marked_good(&mut self, slot: Slot) -> Result<bool, BootError> {
        Ok(self.fs.exists(&esp::grub_good_mark(slot))?)
    }

    /// What GRUB finds of the slot's files.
    fn files(&mut self, slot: Slot) -> Result<SlotFiles, BootError> {
        Ok(SlotFiles {
            complete: self.complete(slot)?,
            marked_good: self.marked_good(slot)?,
        })
    }

    fn remove_good_mark(&mut self, slot: Slot) -> Result<(), BootError> {
        files::remove_if_exists(&mut self.fs, &esp::grub_good_mark(slot))?;
        Ok(())
    }

    fn require_complete(&mut self, slot: Slot) -> Result<(), BootError> {
        if self.complete(slot)? {
            Ok(())
        } else {
            Err(BootError::NotComplete(slot))
        }
    }
}

impl<D: Disk> BootControl for GrubBoot<D> {
    fn status(&mut self) -> Result<BootStatus, BootError> {
        let state = self.read_state()?;
        let mut files = [SlotFiles::default(); 2];
        let mut slots = Vec::new();
        for slot in Slot::ALL {
            files[slot_index(slot)] = self.files(slot)?;
            let info = if files[slot_index(slot)].complete {
                Some(
                    files::read_info(&mut self.fs, slot)?.ok_or_else(|| BootError::Corrupt {
                        path: esp::grub_slot_cfg(slot),
                        reason: format!("exists without {}", esp::slot_info(slot)),
                    })?,
                )
            } else {
                None
            };
            slots.push(SlotStatus {
                slot,
                state: if info.is_some() {
                    state.slot(slot)
                } else {
                    SlotState::Bad
                },
                info,
            });
        }
        Ok(BootStatus {
            next: state.next_boot(files).map(|next| next.slot),
            slots: slots.try_into().expect("two slots"),
        })
    }

    fn check_boot_files(
        &mut self,
        slot: Slot,
        info: &SlotInfo,
        kernel_len: u64,
        initrd_len: u64,
    ) -> Result<(), BootError> {
        info.validate()?;
        slot_cfg(slot, &info.cmdline)?;
        files::check_room(
            &mut self.fs,
            slot,
            kernel_len,
            initrd_len,
            &[esp::grub_slot_cfg(slot)],
            // slot.cfg is the marker; the last-good mark takes no cluster.
            files::SLOT_SMALL_FILES + 1,
        )
    }

    fn mark_bad(&mut self, slot: Slot) -> Result<(), BootError> {
        // slot.cfg first: from here on GRUB cannot load the slot, whatever
        // the state block or the last-good mark says. Then the mark,
        // which must be gone before the files change.
        files::remove_if_exists(&mut self.fs, &esp::grub_slot_cfg(slot))?;
        self.remove_good_mark(slot)?;
        self.change_state(|state| Ok(state.mark_bad(slot)))?;
        files::remove_slot_files(&mut self.fs, slot)?;
        info!(%slot, "marked bad");
        Ok(())
    }

    fn write_boot_files(&mut self, slot: Slot, files: BootFiles<'_>) -> Result<(), BootError> {
        // A last-good mark left by a mark_bad cut short must not end up
        // on new files.
        let present = self.files(slot)?;
        if present.complete || present.marked_good {
            return Err(BootError::NotMarkedBad(slot));
        }
        self.check_boot_files(slot, files.info(), files.kernel_len(), files.initrd_len())?;
        let cfg = slot_cfg(slot, &files.info().cmdline)?;
        let written = files::write_slot_files(&mut self.fs, slot, files)?;
        // The marker last: it exists only once everything it loads does.
        files::write_marker(
            &mut self.fs,
            &esp::grub_slot_cfg(slot),
            cfg.as_bytes(),
            written,
        )
    }

    fn activate(&mut self, slot: Slot, tries: u8) -> Result<(), BootError> {
        self.require_complete(slot)?;
        let old = self.read_state()?;
        let activated = old.activate(slot, tries)?;
        // A trial may fail, so it carries no last-good mark: the mark
        // goes before the block makes the slot a trial. (A slot written by
        // write_boot_files has none; this is for one activated again.)
        self.remove_good_mark(slot)?;
        if activated != old {
            self.write_state(&activated)?;
        }
        info!(%slot, tries, "activated");
        Ok(())
    }

    fn mark_good(&mut self, slot: Slot) -> Result<(), BootError> {
        self.require_complete(slot)?;
        // The mark before the block: the running slot's files passed
        // mark-good whether or not the block gets to say so.
        if !self.marked_good(slot)? {
            self.fs.write_file(&esp::grub_good_mark(slot), &[])?;
        }
        self.change_state(|state| Ok(state.mark_good(slot)))?;
        info!(%slot, "marked good");
        Ok(())
    }

    fn prefer(&mut self, slot: Slot) -> Result<(), BootError> {
        self.require_complete(slot)?;
        self.change_state(|state| Ok(state.prefer(slot)?))?;
        info!(%slot, "preferred");
        Ok(())
    }
}
