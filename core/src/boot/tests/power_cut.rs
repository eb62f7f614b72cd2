//! Power cuts during every operation of both backends (issue 3, item 5):
//! each operation runs once, recording its writes, then again with a power
//! cut at each sector boundary inside each of its writes (the write is torn
//! there, everything after it is lost). Sectors are the unit the FAT layer
//! relies on landing whole (see `crate::fat`); the GRUB state block is even
//! safe against byte tears, which `grubenv`'s tests check at every byte.
//! After each cut the ESP must open, `status()` must show each slot's state
//! and version as they were before or after the operation, and the
//! bootloader must boot a slot whose kernel and initrd are intact. GRUB's
//! last-good marks must be as before or after too, and sit only on boot
//! files that were good before or after: what the rescue path boots.

use super::*;
use crate::disk::{Fault, FaultyDisk};

/// Runs `op` with a power cut at every sector boundary of every write it
/// makes, checking what is left against the states before and after.
fn cut_everywhere(kind: Kind, start: &Overlay, op: impl Fn(&mut dyn BootControl)) {
    let (before, _) = status(kind, start.clone());
    let before = summary(&before);
    let marks_before = good_marks(start.clone());
    let recording = Recording {
        inner: start.clone(),
        writes: Vec::new(),
    };
    let (_, done) = with_backend(kind, recording, &op);
    let marks_after = good_marks(done.inner.clone());
    let (after, _) = status(kind, done.inner);
    let after = summary(&after);
    assert!(
        before != after || marks_before != marks_after,
        "{kind:?}: the operation changes something"
    );

    // Budgets in bytes written so far, as FaultyDisk counts them. Writes of
    // the GRUB state block are also torn inside the sector, every 7 bytes
    // (grubenv's own tests tear it at every byte).
    let state_block = state_block_offset(start);
    let mut budgets = Vec::new();
    let mut written = 0;
    for &(offset, len) in &done.writes {
        if Some(offset) == state_block {
            budgets.extend((written..written + len as u64).step_by(7));
        } else {
            let first_boundary = (512 - offset % 512) % 512;
            budgets.extend(
                (first_boundary..len as u64)
                    .step_by(512)
                    .map(|k| written + k),
            );
        }
        written += len as u64;
    }
    budgets.push(written);
    let total = written;
    for budget in budgets {
        let faulty = FaultyDisk::failing_after(start.clone(), budget, Fault::PowerCut);
        let (_, faulty) = with_backend(kind, faulty, &op);
        let disk = faulty.into_inner();
        let (status, disk) = with_backend(kind, disk, |b| b.status());
        let status = status.unwrap_or_else(|e| {
            panic!("{kind:?}, cut after {budget} of {total} bytes: status: {e}")
        });
        let now = summary(&status);
        // Each field is as before or as after: a slot's state and the
        // version of its complete files change in separate steps.
        for (i, slot) in Slot::ALL.iter().enumerate() {
            let (state, version) = now.slots[i];
            assert!(
                [before.slots[i].0, after.slots[i].0].contains(&state)
                    && [before.slots[i].1, after.slots[i].1].contains(&version),
                "{kind:?}, cut after {budget} of {total} bytes: slot {slot} is {:?}, \
                 before {:?}, after {:?}",
                now.slots[i],
                before.slots[i],
                after.slots[i]
            );
        }
        assert!(
            now.next == before.next || now.next == after.next,
            "{kind:?}, cut after {budget} of {total} bytes: next boot {:?}, before {:?}, after {:?}",
            now.next,
            before.next,
            after.next
        );
        let marks = good_marks(disk.clone());
        for (i, slot) in Slot::ALL.iter().enumerate() {
            assert!(
                marks[i] == marks_before[i] || marks[i] == marks_after[i],
                "{kind:?}, cut after {budget} of {total} bytes: slot {slot} marked good: {}",
                marks[i]
            );
            // A mark on complete files: a good slot on its way down
            // (still good), or files that mark_good is making good.
            let (state, version) = now.slots[i];
            let good = (SlotState::Good, version);
            assert!(
                !marks[i]
                    || version.is_none()
                    || (state == SlotState::Good && before.slots[i] == good)
                    || after.slots[i] == good,
                "{kind:?}, cut after {budget} of {total} bytes: slot {slot} is marked good \
                 as {:?}; before {:?}, after {:?}",
                now.slots[i],
                before.slots[i],
                after.slots[i]
            );
        }
        // (Before the installer's mark-good, systemd-boot has no entry.)
        let (booted, _) = power_on(kind, disk);
        assert!(
            booted.is_some() || before.next.is_none(),
            "{kind:?}, cut after {budget} of {total} bytes: nothing boots"
        );
    }
}

/// Which slots carry GRUB's last-good mark (none with systemd-boot).
fn good_marks(disk: Overlay) -> [bool; 2] {
    let mut fs = FatFs::open(disk).expect("the ESP opens");
    Slot::ALL.map(|slot| fs.exists(&esp::grub_good_mark(slot)).unwrap())
}

/// Where the GRUB state block lies on the ESP, if there is one.
fn state_block_offset(disk: &Overlay) -> Option<u64> {
    let image = disk.to_vec().expect("in memory");
    let signature = b"# GRUB Environment Block\nabnix_format=";
    (0..image.len())
        .step_by(512)
        .find(|&at| image[at..].starts_with(signature))
        .map(|at| at as u64)
}

/// Version 1 good in A, version 2 good in B and booting.
fn both_good(kind: Kind) -> Overlay {
    let disk = installed(kind);
    let (result, disk) = with_backend(kind, disk, |b| {
        write_version(b, Slot::A, 1)?;
        b.mark_good(Slot::A)?;
        write_version(b, Slot::B, 2)?;
        b.activate(Slot::B, 3)?;
        b.mark_good(Slot::B)
    });
    result.unwrap();
    flatten(&disk)
}

fn files(version: u64) -> (SlotInfo, Vec<u8>, Vec<u8>) {
    (info(version), kernel(version), initrd(version))
}

#[test]
fn mark_bad_survives_power_cuts() {
    for kind in KINDS {
        cut_everywhere(kind, &both_good(kind), |b| {
            let _ = b.mark_bad(Slot::A);
        });
    }
}

#[test]
fn write_boot_files_survives_power_cuts() {
    for kind in KINDS {
        let (result, disk) = with_backend(kind, both_good(kind), |b| b.mark_bad(Slot::A));
        result.unwrap();
        let (info, k, i) = files(3);
        cut_everywhere(kind, &flatten(&disk), |b| {
            let _ = write_files(b, Slot::A, info.clone(), &k, &i);
        });
    }
}

/// Version 3 written into A, not yet activated.
fn written(kind: Kind) -> Overlay {
    let (result, disk) = with_backend(kind, both_good(kind), |b| write_version(b, Slot::A, 3));
    result.unwrap();
    flatten(&disk)
}

#[test]
fn activate_survives_power_cuts() {
    for kind in KINDS {
        cut_everywhere(kind, &written(kind), |b| {
            let _ = b.activate(Slot::A, 3);
        });
    }
}

/// The installer's last step: version 1 complete in A, marked good from
/// the state block of a fresh install (no slot eligible).
#[test]
fn first_mark_good_survives_power_cuts() {
    for kind in KINDS {
        let disk = installed(kind);
        let (result, disk) = with_backend(kind, disk, |b| write_version(b, Slot::A, 1));
        result.unwrap();
        cut_everywhere(kind, &flatten(&disk), |b| {
            let _ = b.mark_good(Slot::A);
        });
    }
}

/// GRUB: activating a slot that is marked good (its version activated
/// again) takes the mark away before the block makes it a trial.
#[test]
fn activate_of_a_slot_marked_good_survives_power_cuts() {
    let start = both_good(Kind::Grub);
    assert_eq!(good_marks(start.clone()), [true, true]);
    cut_everywhere(Kind::Grub, &start, |b| {
        let _ = b.activate(Slot::A, 3);
    });
}

/// systemd-boot: mark-good of a slot whose only entry is unusable but
/// listed (it loads the slot's kernel, with a line systemd-boot skips):
/// the entry is replaced, and at every cut something lists the slot.
#[test]
fn mark_good_over_an_unusable_entry_survives_power_cuts() {
    let kind = Kind::SystemdBoot;
    let (result, disk) = with_backend(kind, installed(kind), |b| write_version(b, Slot::A, 1));
    result.unwrap();
    let mut fs = FatFs::open(disk).unwrap();
    fs.write_file(
        "loader/entries/abnix-a.conf",
        b"linux /abnix/a/kernel\ninitrd /abnix/a/initrd\noptions abnix.slot=a\njunk\n",
    )
    .unwrap();
    let start = flatten(&fs.into_inner());
    let (status, _) = status(kind, start.clone());
    assert_eq!(
        (status.slot(Slot::A).state, status.next),
        (SlotState::Bad, Some(Slot::A))
    );
    cut_everywhere(kind, &start, |b| {
        let _ = b.mark_good(Slot::A);
    });
}

#[test]
fn mark_good_survives_power_cuts() {
    for kind in KINDS {
        let (result, disk) = with_backend(kind, written(kind), |b| b.activate(Slot::A, 3));
        result.unwrap();
        let (booted, disk) = power_on(kind, disk);
        assert_eq!(booted, Some(Slot::A));
        cut_everywhere(kind, &flatten(&disk), |b| {
            let _ = b.mark_good(Slot::A);
        });
    }
}

#[test]
fn prefer_survives_power_cuts() {
    for kind in KINDS {
        cut_everywhere(kind, &both_good(kind), |b| {
            let _ = b.prefer(Slot::A);
        });
    }
}
