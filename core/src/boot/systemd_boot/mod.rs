//! The systemd-boot backend: a slot's marker and state is its entry,
//! `loader/entries/abnix-<slot>[+LEFT-DONE].conf` (see [`bls`]).
//!
//! A file named like an abnix entry whose content is not one abnix wrote for
//! that slot (damaged: a NUL byte, bytes that are not UTF-8, a line without
//! a value; or loading another kernel, initrd or `abnix.slot=`) is
//! *unusable*: `status()` logs it with the reason, it gives its slot no
//! state (the slot reads as bad, never good), and the next operation that
//! writes the slot's entry replaces it. If systemd-boot would still list it, it still counts
//! for which slot boots next, because systemd-boot boots it.

pub mod bls;
pub(crate) mod install;

use tracing::{info, warn};

use super::state::TransitionError;
use super::{
    esp, files, BootControl, BootError, BootFiles, BootStatus, EfiApp, SlotInfo, SlotState,
    SlotStatus, MAX_TRIES,
};
use abnix_formats::disk::Disk;
use abnix_formats::fat::{FatError, FatFs, FormatOptions};
use abnix_formats::slot::Slot;
use bls::{
    compare_entries, first_entry, loader_conf, slot_entry, BlsEntry, EntryName, SortEntry, SORT_KEY,
};

/// Boot control through systemd-boot, on the ESP.
pub struct SystemdBoot<D: Disk> {
    fs: FatFs<D>,
}

/// A file in `loader/entries` named as an abnix entry.
#[derive(Debug, Clone)]
struct Entry {
    name: EntryName,
    file_name: String,
    version: Option<String>,
    sort_key: Option<String>,
    machine_id: Option<String>,
    /// systemd-boot lists it: its `linux` file exists.
    listed: bool,
    /// Why it is not an entry abnix wrote for its slot.
    unusable: Option<String>,
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

    /// An entry abnix wrote, which systemd-boot lists: it gives its slot
    /// its state.
    fn is_usable(&self) -> bool {
        self.listed && self.unusable.is_none()
    }

    fn is_named(&self, name: EntryName) -> bool {
        self.file_name.eq_ignore_ascii_case(&name.file_name())
    }
}

/// Why `entry`, named as `slot`'s, does not boot that slot the way abnix
/// writes it: another kernel or initrd, or no `abnix.slot=<slot>` last on
/// its command line.
fn not_for_slot(slot: Slot, entry: &BlsEntry) -> Option<String> {
    let expected = slot_entry(slot, 0, "", "");
    if entry.linux != expected.linux {
        return Some(format!(
            "it loads the kernel {:?}, not {:?}",
            entry.linux,
            expected.linux.unwrap_or_default()
        ));
    }
    if entry.initrd != expected.initrd {
        return Some(format!(
            "it loads the initrds {:?}, not {:?}",
            entry.initrd, expected.initrd
        ));
    }
    let cmdline = entry.cmdline();
    let tail = expected.cmdline();
    if cmdline != tail && !cmdline.ends_with(&format!(" {tail}")) {
        return Some(format!("its command line does not end in {tail}"));
    }
    None
}

impl<D: Disk> SystemdBoot<D> {
    /// Boot control on an ESP set up by [`SystemdBoot::install`].
    pub(crate) fn open(esp: D) -> Result<Self, BootError> {
        Ok(SystemdBoot {
            fs: FatFs::open(esp)?,
        })
    }

    /// Formats the ESP and writes systemd-boot (`systemd-bootx64.efi`,
    /// `systemd-bootaa64.efi`) as the default EFI loader of its
    /// architecture, with `loader.conf` and no entries.
    pub(crate) fn install(
        esp: D,
        format: &FormatOptions,
        systemd_boot: &EfiApp,
    ) -> Result<Self, BootError> {
        let mut fs = FatFs::format(esp, format)?;
        fs.create_dir_all(esp::EFI_BOOT_DIR)?;
        fs.write_file(&systemd_boot.removable_path(), systemd_boot.image())?;
        fs.create_dir_all(esp::ENTRIES_DIR)?;
        fs.write_file(esp::LOADER_CONF, loader_conf().as_bytes())?;
        fs.create_dir_all(esp::ABNIX_DIR)?;
        info!("installed systemd-boot on the ESP");
        Ok(SystemdBoot { fs })
    }

    #[cfg(test)]
    pub(crate) fn into_inner(self) -> D {
        self.fs.into_inner()
    }

    /// The files named as abnix's entries, read as systemd-boot reads them.
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
            let (entry, unusable) = match self.fs.read_file(&path) {
                Ok(bytes) => {
                    let (entry, problems) = BlsEntry::read(&bytes);
                    let unusable = problems
                        .first()
                        .map(ToString::to_string)
                        .or_else(|| not_for_slot(name.slot, &entry));
                    (entry, unusable)
                }
                // Its clusters do not read as a file: systemd-boot cannot
                // list it either.
                Err(FatError::Corrupt(reason)) => (
                    BlsEntry::default(),
                    Some(format!("it cannot be read: {reason}")),
                ),
                Err(e) => return Err(e.into()),
            };
            let listed = match entry.linux.as_deref() {
                Some(kernel) => match self.fs.exists(kernel) {
                    Ok(exists) => exists,
                    Err(FatError::InvalidName(_)) => false,
                    Err(e) => return Err(e.into()),
                },
                None => false,
            };
            entries.push(Entry {
                name,
                file_name: item.name,
                version: entry.version,
                sort_key: entry.sort_key,
                machine_id: entry.machine_id,
                listed,
                unusable,
            });
        }
        Ok(entries)
    }

    /// The files named as `slot`'s entries, the one systemd-boot would
    /// pick first first.
    fn slot_entries(&mut self, slot: Slot) -> Result<Vec<Entry>, BootError> {
        let mut entries: Vec<Entry> = self
            .entries()?
            .into_iter()
            .filter(|e| e.name.slot == slot)
            .collect();
        entries.sort_by(|a, b| compare_entries(&a.sort_entry(), &b.sort_entry()));
        Ok(entries)
    }

    /// Removes every file named as `slot`'s entry, usable or not.
    fn remove_entries(&mut self, slot: Slot) -> Result<(), BootError> {
        for entry in self.slot_entries(slot)? {
            self.fs.remove(&entry.path())?;
        }
        Ok(())
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

    /// Gives `slot` exactly one entry, named `name`, and removes its other
    /// files: duplicates an interrupted rename left, unusable entries. The
    /// entry kept is its first usable one, renamed; without one, a fresh
    /// one from its slot file, written first under a name no file holds, so
    /// that whatever may boot the slot now stays until it exists.
    fn set_entry(&mut self, slot: Slot, name: EntryName, info: &SlotInfo) -> Result<(), BootError> {
        let mut others = self.slot_entries(slot)?;
        let kept = match others.iter().position(Entry::is_usable) {
            Some(first) => others.remove(first).file_name,
            None => {
                let demoted = EntryName::demoted(slot);
                let fresh = if !others.iter().any(|e| e.is_named(name)) {
                    name
                } else {
                    // Both names taken by unusable files: the one named
                    // `name` stays until the fresh entry exists.
                    if let Some(i) = others.iter().position(|e| e.is_named(demoted)) {
                        self.fs.remove(&others.remove(i).path())?;
                    }
                    demoted
                };
                self.write_entry(fresh, info)?;
                fresh.file_name()
            }
        };
        if !kept.eq_ignore_ascii_case(&name.file_name()) {
            // The kept entry boots the slot while the name is freed.
            if let Some(i) = others.iter().position(|e| e.is_named(name)) {
                self.fs.remove(&others.remove(i).path())?;
            }
            self.fs
                .rename(&format!("{}/{kept}", esp::ENTRIES_DIR), &name.path())?;
        }
        for other in others {
            self.fs.remove(&other.path())?;
            if let Some(reason) = &other.unusable {
                info!(%slot, path = other.path(), reason, "removed an unusable entry");
            }
        }
        Ok(())
    }

    /// Demotes the other slot's entry if it is good and would boot before
    /// `slot` once `slot` is good: it gets no tries left and none done
    /// (`+0-0`), so it sorts last but stays bootable. A trial of the other
    /// slot is left alone. An unusable entry of the other slot that would
    /// boot first is removed: it gives that slot no state to keep.
    fn demote_other_if_first(&mut self, slot: Slot, info: &SlotInfo) -> Result<(), BootError> {
        let file_name = EntryName::good(slot).file_name();
        let version = info.version.to_string();
        let mine = SortEntry {
            file_name: &file_name,
            counter: None,
            sort_key: Some(SORT_KEY),
            machine_id: None,
            version: Some(&version),
        };
        let before_mine = |e: &Entry| e.listed && compare_entries(&e.sort_entry(), &mine).is_lt();
        let (unusable_first, mut theirs): (Vec<Entry>, Vec<Entry>) = self
            .slot_entries(slot.other())?
            .into_iter()
            .partition(|e| !e.is_usable() && before_mine(e));
        for unusable in unusable_first {
            self.fs.remove(&unusable.path())?;
            info!(slot = %slot.other(), path = unusable.path(), "removed an unusable entry");
        }
        let Some(first) = theirs.iter().position(Entry::is_usable) else {
            return Ok(());
        };
        if theirs[first].name.counter.is_some() || !before_mine(&theirs[first]) {
            return Ok(());
        }
        let first = theirs.remove(first);
        let demoted = EntryName::demoted(slot.other());
        // A file already holding the name (unusable, sorting last) goes
        // first; the entry being demoted still boots meanwhile.
        if let Some(holder) = theirs.iter().find(|e| e.is_named(demoted)) {
            self.fs.remove(&holder.path())?;
        }
        self.fs.rename(&first.path(), &demoted.path())?;
        info!(slot = %slot.other(), "demoted");
        Ok(())
    }
}

impl<D: Disk> BootControl for SystemdBoot<D> {
    fn status(&mut self) -> Result<BootStatus, BootError> {
        let entries = self.entries()?;
        for entry in &entries {
            if let Some(reason) = &entry.unusable {
                warn!(
                    "{}: {reason}: unusable, so slot {} reads as bad until its entry is written again",
                    entry.path(),
                    entry.name.slot
                );
            }
        }
        let mut slots = Vec::new();
        for slot in Slot::ALL {
            let info = files::read_info(&mut self.fs, slot)?;
            let first = entries
                .iter()
                .filter(|e| e.name.slot == slot && e.is_usable())
                .min_by(|a, b| compare_entries(&a.sort_entry(), &b.sort_entry()));
            let state = match (&info, first) {
                (Some(_), Some(entry)) => entry.name.state(),
                _ => SlotState::Bad,
            };
            slots.push(SlotStatus { slot, state, info });
        }
        // What systemd-boot boots: the first entry it lists, usable or not.
        let entries: Vec<Entry> = entries.into_iter().filter(|e| e.listed).collect();
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
        // The entry is the marker.
        let small_files = files::SLOT_SMALL_FILES + 1;
        files::check_room(
            &mut self.fs,
            slot,
            kernel_len,
            initrd_len,
            &replaced,
            small_files,
        )
    }

    fn mark_bad(&mut self, slot: Slot) -> Result<(), BootError> {
        // The entries first (also unusable ones, and ones whose kernel is
        // already gone): from here on systemd-boot does not list the slot.
        self.remove_entries(slot)?;
        files::remove_slot_files(&mut self.fs, slot)?;
        info!(%slot, "marked bad");
        Ok(())
    }

    fn write_boot_files(&mut self, slot: Slot, files: BootFiles<'_>) -> Result<(), BootError> {
        if !self.slot_entries(slot)?.is_empty() {
            return Err(BootError::NotMarkedBad(slot));
        }
        self.check_boot_files(slot, files.info(), files.kernel_len(), files.initrd_len())?;
        // The entry, written by activate, is the marker.
        files::write_slot_files(&mut self.fs, slot, files).map(drop)
    }

    fn activate(&mut self, slot: Slot, tries: u8) -> Result<(), BootError> {
        if !(1..=MAX_TRIES).contains(&tries) {
            return Err(TransitionError::InvalidTries(tries).into());
        }
        let info = self.require_info(slot)?;
        // Replace any entry of the slot: it boots as a fresh trial.
        self.remove_entries(slot)?;
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
