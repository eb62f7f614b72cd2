//! The systemd-boot backend: a slot's marker and state is its entry,
//! `loader/entries/abnix-<slot>[+LEFT-DONE].conf` (see [`super::bls`]).

use tracing::{info, warn};

use super::bls::{
    compare_entries, first_entry, loader_conf, slot_entry, BlsEntry, EntryName, SortEntry, SORT_KEY,
};
use super::state::TransitionError;
use super::{
    esp, files, BootControl, BootError, BootFiles, BootStatus, SlotInfo, SlotState, SlotStatus,
    MAX_TRIES,
};
use crate::disk::Disk;
use crate::fat::{FatError, FatFs, FormatOptions};
use crate::slot::Slot;

/// Boot control through systemd-boot, on the ESP.
pub struct SystemdBoot<D: Disk> {
    fs: FatFs<D>,
}

/// An abnix entry that systemd-boot lists.
#[derive(Debug, Clone)]
struct Entry {
    name: EntryName,
    file_name: String,
    version: Option<String>,
    sort_key: Option<String>,
    machine_id: Option<String>,
}

impl Entry {
    fn sort_entry(&self) -> SortEntry<'_> {
        SortEntry {
            file_name: &self.file_name,
            counter: self.name.counter,
            sort_key: self.sort_key.as_deref(),
            machine_id: self.machine_id.as_deref(),
            version: self.version.as_deref(),
        }
    }

    fn path(&self) -> String {
        format!("{}/{}", esp::ENTRIES_DIR, self.file_name)
    }
}

impl<D: Disk> SystemdBoot<D> {
    /// Boot control on an ESP set up by [`SystemdBoot::install`].
    pub fn open(esp: D) -> Result<Self, BootError> {
        Ok(SystemdBoot {
            fs: FatFs::open(esp)?,
        })
    }

    /// Formats the ESP and writes systemd-boot (`systemd-bootx64.efi`) as
    /// the default EFI loader, with `loader.conf` and no entries.
    pub fn install(esp: D, format: &FormatOptions, systemd_boot: &[u8]) -> Result<Self, BootError> {
        let mut fs = FatFs::format(esp, format)?;
        fs.create_dir_all(esp::EFI_BOOT_DIR)?;
        fs.write_file(esp::EFI_BOOT_X64, systemd_boot)?;
        fs.create_dir_all(esp::ENTRIES_DIR)?;
        fs.write_file(esp::LOADER_CONF, loader_conf().as_bytes())?;
        fs.create_dir_all(esp::ABNIX_DIR)?;
        info!("installed systemd-boot on the ESP");
        Ok(SystemdBoot { fs })
    }

    pub fn into_inner(self) -> D {
        self.fs.into_inner()
    }

    /// abnix's entries that systemd-boot lists: those whose kernel exists.
    /// Other systems' entries are ignored; a file named like ours that is
    /// not is logged and ignored.
    fn entries(&mut self) -> Result<Vec<Entry>, BootError> {
        let listing = match self.fs.list_dir(esp::ENTRIES_DIR) {
            Ok(listing) => listing,
            Err(FatError::NotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut entries = Vec::new();
        for item in listing.into_iter().filter(|item| !item.is_dir) {
            let name = match EntryName::parse(&item.name) {
                Ok(Some(name)) => name,
                Ok(None) => continue,
                Err(e) => {
                    warn!("{e}: ignored");
                    continue;
                }
            };
            let path = format!("{}/{}", esp::ENTRIES_DIR, item.name);
            let text =
                String::from_utf8(self.fs.read_file(&path)?).map_err(|_| BootError::Corrupt {
                    path: path.clone(),
                    reason: "not UTF-8".into(),
                })?;
            let entry = BlsEntry::parse(&text).map_err(|e| BootError::Corrupt {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let Some(kernel) = entry.linux.as_deref() else {
                continue;
            };
            if !self.fs.exists(kernel)? {
                continue;
            }
            entries.push(Entry {
                name,
                file_name: item.name,
                version: entry.version,
                sort_key: entry.sort_key,
                machine_id: entry.machine_id,
            });
        }
        Ok(entries)
    }

    /// The entries of `slot`, the one systemd-boot would pick first first.
    fn slot_entries(&mut self, slot: Slot) -> Result<Vec<Entry>, BootError> {
        let mut entries: Vec<Entry> = self
            .entries()?
            .into_iter()
            .filter(|e| e.name.slot == slot)
            .collect();
        entries.sort_by(|a, b| compare_entries(&a.sort_entry(), &b.sort_entry()));
        Ok(entries)
    }

    fn require_info(&mut self, slot: Slot) -> Result<SlotInfo, BootError> {
        if !self.fs.exists(&esp::kernel(slot))? {
            return Err(BootError::NotComplete(slot));
        }
        files::read_info(&mut self.fs, slot)?.ok_or(BootError::NotComplete(slot))
    }

    fn write_entry(&mut self, name: EntryName, info: &SlotInfo) -> Result<(), BootError> {
        let text = slot_entry(name.slot, info.version, &info.label, &info.cmdline).serialize()?;
        self.fs.write_file(&name.path(), text.as_bytes())?;
        Ok(())
    }

    /// Gives `slot` exactly one entry, named `name`: renames its first
    /// entry (or writes one from its slot file) and removes any duplicate
    /// an interrupted rename left.
    fn set_entry(&mut self, slot: Slot, name: EntryName, info: &SlotInfo) -> Result<(), BootError> {
        let mut existing = self.slot_entries(slot)?.into_iter();
        match existing.next() {
            Some(first) if first.name == name => {}
            Some(first) => self.fs.rename(&first.path(), &name.path())?,
            None => self.write_entry(name, info)?,
        }
        for duplicate in existing.filter(|e| e.name != name) {
            self.fs.remove(&duplicate.path())?;
        }
        Ok(())
    }

    /// Demotes the other slot's entry if it is good and would boot before
    /// `slot` once `slot` is good: it gets no tries left and none done
    /// (`+0-0`), so it sorts last but stays bootable. A trial of the other
    /// slot is left alone.
    fn demote_other_if_first(&mut self, slot: Slot, info: &SlotInfo) -> Result<(), BootError> {
        let Some(theirs) = self.slot_entries(slot.other())?.into_iter().next() else {
            return Ok(());
        };
        let file_name = EntryName::good(slot).file_name();
        let version = info.version.to_string();
        let mine = SortEntry {
            file_name: &file_name,
            counter: None,
            sort_key: Some(SORT_KEY),
            machine_id: None,
            version: Some(&version),
        };
        if theirs.name.counter.is_none() && compare_entries(&theirs.sort_entry(), &mine).is_lt() {
            self.fs
                .rename(&theirs.path(), &EntryName::demoted(slot.other()).path())?;
            info!(slot = %slot.other(), "demoted");
        }
        Ok(())
    }
}

impl<D: Disk> BootControl for SystemdBoot<D> {
    fn status(&mut self) -> Result<BootStatus, BootError> {
        let entries = self.entries()?;
        let mut slots = Vec::new();
        for slot in Slot::ALL {
            let info = files::read_info(&mut self.fs, slot)?;
            let first = entries
                .iter()
                .filter(|e| e.name.slot == slot)
                .min_by(|a, b| compare_entries(&a.sort_entry(), &b.sort_entry()));
            let state = match (&info, first) {
                (Some(_), Some(entry)) => entry.name.state(),
                _ => SlotState::Bad,
            };
            slots.push(SlotStatus { slot, state, info });
        }
        let sorted: Vec<SortEntry> = entries.iter().map(Entry::sort_entry).collect();
        let next = first_entry(&sorted).map(|first| {
            entries
                .iter()
                .find(|e| e.file_name == first.file_name)
                .expect("the first entry is one of them")
                .name
                .slot
        });
        Ok(BootStatus {
            next,
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
        slot_entry(slot, info.version, &info.label, &info.cmdline).serialize()?;
        let replaced: Vec<String> = self.slot_entries(slot)?.iter().map(Entry::path).collect();
        files::check_room(&mut self.fs, slot, kernel_len, initrd_len, &replaced, 2)
    }

    fn mark_bad(&mut self, slot: Slot) -> Result<(), BootError> {
        // The entries first (also ones whose kernel is already gone): from
        // here on systemd-boot does not list the slot.
        let listing = match self.fs.list_dir(esp::ENTRIES_DIR) {
            Ok(listing) => listing,
            Err(FatError::NotFound(_)) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        for item in listing {
            if let Ok(Some(name)) = EntryName::parse(&item.name) {
                if name.slot == slot {
                    self.fs
                        .remove(&format!("{}/{}", esp::ENTRIES_DIR, item.name))?;
                }
            }
        }
        files::remove_slot_files(&mut self.fs, slot)?;
        info!(%slot, "marked bad");
        Ok(())
    }

    fn write_boot_files(&mut self, slot: Slot, files: &mut BootFiles<'_>) -> Result<(), BootError> {
        if !self.slot_entries(slot)?.is_empty() {
            return Err(BootError::NotMarkedBad(slot));
        }
        self.check_boot_files(slot, &files.info, files.kernel_len, files.initrd_len)?;
        files::write_slot_files(&mut self.fs, slot, files)
    }

    fn activate(&mut self, slot: Slot, tries: u8) -> Result<(), BootError> {
        if !(1..=MAX_TRIES).contains(&tries) {
            return Err(TransitionError::InvalidTries(tries).into());
        }
        let info = self.require_info(slot)?;
        // Replace any entry of the slot: it boots as a fresh trial.
        for entry in self.slot_entries(slot)? {
            self.fs.remove(&entry.path())?;
        }
        self.write_entry(EntryName::trial(slot, u64::from(tries)), &info)?;
        info!(%slot, tries, "activated");
        Ok(())
    }

    fn mark_good(&mut self, slot: Slot) -> Result<(), BootError> {
        let info = self.require_info(slot)?;
        self.demote_other_if_first(slot, &info)?;
        self.set_entry(slot, EntryName::good(slot), &info)?;
        info!(%slot, "marked good");
        Ok(())
    }

    fn prefer(&mut self, slot: Slot) -> Result<(), BootError> {
        let info = self.require_info(slot)?;
        let status = self.status()?;
        if status.slot(slot).state != SlotState::Good {
            return Err(TransitionError::NotGood(slot).into());
        }
        if status.slot(slot.other()).state.is_pending_trial() {
            return Err(TransitionError::OtherOnTrial(slot.other()).into());
        }
        self.demote_other_if_first(slot, &info)?;
        self.set_entry(slot, EntryName::good(slot), &info)?;
        info!(%slot, "preferred");
        Ok(())
    }
}
