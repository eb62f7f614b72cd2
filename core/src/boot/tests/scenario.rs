//! The A/B story on each backend, with simulated boots.

use std::io::Cursor;

use super::*;
use crate::boot::bios;
use crate::boot::grubcfg::grub_cfg;
use crate::boot::grubenv::STATE_BLOCK_SIZE;
use crate::boot::mkimage::GrubTools;
use crate::boot::state::{BootState, TransitionError};

const GOOD: SlotState = SlotState::Good;
const BAD: SlotState = SlotState::Bad;

fn trial(tries_left: u8) -> SlotState {
    SlotState::Trial { tries_left }
}

/// Installs version 1 into slot A and marks it good, as the installer does.
fn with_version_1(kind: Kind) -> Overlay {
    let (result, disk) = with_backend(kind, installed(kind), |b| {
        write_version(b, Slot::A, 1)?;
        b.mark_good(Slot::A)
    });
    result.unwrap();
    disk
}

#[track_caller]
fn assert_summary(kind: Kind, disk: Overlay, expected: Summary) -> Overlay {
    let (status, disk) = status(kind, disk);
    assert_eq!(summary(&status), expected, "{kind:?}");
    disk
}

fn boot(kind: Kind, disk: Overlay, expected: Slot) -> Overlay {
    let (slot, disk) = power_on(kind, disk);
    assert_eq!(slot, Some(expected), "{kind:?}");
    disk
}

#[test]
fn a_trial_that_never_turns_good_falls_back_and_is_reported() {
    for kind in KINDS {
        let disk = with_version_1(kind);
        let disk = assert_summary(
            kind,
            disk,
            Summary {
                slots: [(GOOD, Some(1)), (BAD, None)],
                next: Some(Slot::A),
            },
        );
        let (result, disk) = with_backend(kind, disk, |b| {
            write_version(b, Slot::B, 2)?;
            b.activate(Slot::B, 2)
        });
        result.unwrap();
        let disk = assert_summary(
            kind,
            disk,
            Summary {
                slots: [(GOOD, Some(1)), (trial(2), Some(2))],
                next: Some(Slot::B),
            },
        );
        let disk = boot(kind, disk, Slot::B);
        let disk = boot(kind, disk, Slot::B);
        let (running, disk) = status(kind, disk);
        assert_eq!(running.slot(Slot::B).state, trial(0));
        assert_eq!(running.failed_trial(Slot::B), None, "running its last try");
        let disk = boot(kind, disk, Slot::A);
        let (fell_back, _) = status(kind, disk);
        let failed = fell_back.failed_trial(Slot::A).expect("B failed");
        assert_eq!(failed.info.as_ref().map(|i| i.version), Some(2), "{kind:?}");
    }
}

#[test]
fn a_trial_that_turns_good_keeps_booting_and_rollback_prefers_the_old_slot() {
    for kind in KINDS {
        let (result, disk) = with_backend(kind, with_version_1(kind), |b| {
            write_version(b, Slot::B, 2)?;
            b.activate(Slot::B, 3)
        });
        result.unwrap();
        let disk = boot(kind, disk, Slot::B);
        let (result, disk) = with_backend(kind, disk, |b| b.mark_good(Slot::B));
        result.unwrap();
        let both_good = Summary {
            slots: [(GOOD, Some(1)), (GOOD, Some(2))],
            next: Some(Slot::B),
        };
        let mut disk = assert_summary(kind, disk, both_good.clone());
        for _ in 0..3 {
            disk = boot(kind, disk, Slot::B);
        }
        let disk = assert_summary(kind, disk, both_good.clone());

        let (result, disk) = with_backend(kind, disk, |b| b.prefer(Slot::A));
        result.unwrap();
        let rolled_back = Summary {
            next: Some(Slot::A),
            ..both_good.clone()
        };
        let disk = assert_summary(kind, disk, rolled_back.clone());
        let disk = boot(kind, disk, Slot::A);
        // mark-good runs on every boot; it must not undo the rollback.
        let (result, disk) = with_backend(kind, disk, |b| b.mark_good(Slot::A));
        result.unwrap();
        let disk = assert_summary(kind, disk, rolled_back);

        let (result, disk) = with_backend(kind, disk, |b| b.prefer(Slot::B));
        result.unwrap();
        let disk = assert_summary(kind, disk, both_good);
        boot(kind, disk, Slot::B);
    }
}

#[test]
fn mark_good_of_the_running_slot_leaves_a_pending_trial_alone() {
    for kind in KINDS {
        let (result, disk) = with_backend(kind, with_version_1(kind), |b| {
            write_version(b, Slot::B, 2)?;
            b.activate(Slot::B, 3)?;
            b.mark_good(Slot::A)
        });
        result.unwrap();
        assert_summary(
            kind,
            disk,
            Summary {
                slots: [(GOOD, Some(1)), (trial(3), Some(2))],
                next: Some(Slot::B),
            },
        );
    }
}

#[test]
fn refused_operations_change_nothing() {
    for kind in KINDS {
        let disk = with_version_1(kind);
        let before = disk.to_vec().unwrap();
        let ((), disk) = with_backend(kind, disk, |b| {
            let huge = 64 << 20;
            let err = b.check_boot_files(Slot::B, &info(2), huge, 1).unwrap_err();
            assert!(
                matches!(err, BootError::NoRoom { slot: Slot::B, .. }),
                "{err}"
            );
            let err = b.activate(Slot::B, 3).unwrap_err();
            assert!(matches!(err, BootError::NotComplete(Slot::B)), "{err}");
            let err = b.activate(Slot::A, 0).unwrap_err();
            assert!(
                matches!(err, BootError::Transition(TransitionError::InvalidTries(0))),
                "{err}"
            );
            let err = b.prefer(Slot::B).unwrap_err();
            assert!(matches!(err, BootError::NotComplete(Slot::B)), "{err}");
            let k = kernel(2);
            let err = write_files(b, Slot::A, info(2), &k, &k).unwrap_err();
            assert!(matches!(err, BootError::NotMarkedBad(Slot::A)), "{err}");
            let mut bad = info(2);
            bad.cmdline.push_str(" abnix.slot=a");
            let err = b.check_boot_files(Slot::B, &bad, 1, 1).unwrap_err();
            assert!(matches!(err, BootError::SlotInfo(_)), "{err}");
        });
        assert!(
            before == disk.to_vec().unwrap(),
            "{kind:?}: a refused operation wrote"
        );
    }
}

#[test]
fn grub_refuses_a_command_line_it_would_alter_and_systemd_boot_takes_it() {
    let mut quoted = info(2);
    quoted.cmdline = "init=/x/init x=it's".into();
    let (result, _) = with_backend(Kind::Grub, with_version_1(Kind::Grub), |b| {
        b.check_boot_files(Slot::B, &quoted, 1, 1)
    });
    assert!(matches!(result, Err(BootError::Cmdline(_))));
    let (result, _) = with_backend(Kind::SystemdBoot, with_version_1(Kind::SystemdBoot), |b| {
        b.check_boot_files(Slot::B, &quoted, 1, 1)
    });
    result.unwrap();
}

#[test]
fn prefer_refuses_while_the_other_slot_waits_for_its_trial() {
    for kind in KINDS {
        let (result, _) = with_backend(kind, with_version_1(kind), |b| {
            write_version(b, Slot::B, 2)?;
            b.activate(Slot::B, 3)?;
            b.prefer(Slot::A)
        });
        assert!(
            matches!(
                result,
                Err(BootError::Transition(TransitionError::OtherOnTrial(
                    Slot::B
                )))
            ),
            "{kind:?}: {result:?}"
        );
    }
}

#[test]
fn grub_status_reports_a_damaged_state_block_as_grub_reads_it() {
    let disk = with_version_1(Kind::Grub);
    let mut fs = FatFs::open(disk).unwrap();
    fs.overwrite_file(esp::GRUB_ENV, &[b'?'; 512]).unwrap();
    let disk = fs.into_inner();
    // GRUB falls back to the first complete slot; so does status.
    let disk = assert_summary(
        Kind::Grub,
        disk,
        Summary {
            slots: [(BAD, Some(1)), (BAD, None)],
            next: Some(Slot::A),
        },
    );
    // mark-good on the running slot writes a clean block again.
    let (result, disk) = with_backend(Kind::Grub, disk, |b| b.mark_good(Slot::A));
    result.unwrap();
    let mut fs = FatFs::open(disk).unwrap();
    let decoded = decode_state(&fs.read_file(esp::GRUB_ENV).unwrap());
    assert!(decoded.problems.is_empty());
    assert_eq!(decoded.state, BootState::FALLBACK.mark_good(Slot::A));
}

/// GRUB's rescue path (docs/boot.md, "The script"): with the state block
/// damaged or gone, GRUB boots the slot last proved good, not a failed trial
/// whose files still load; the booted slot's mark-good writes a clean block.
#[test]
fn grub_rescue_boots_the_last_good_slot_not_a_failed_trial() {
    let kind = Kind::Grub;
    // v2 good in B, then v3 into A, whose trial fails.
    let (result, disk) = with_backend(kind, with_version_1(kind), |b| {
        write_version(b, Slot::B, 2)?;
        b.activate(Slot::B, 3)
    });
    result.unwrap();
    let disk = boot(kind, disk, Slot::B);
    let (result, disk) = with_backend(kind, disk, |b| {
        b.mark_good(Slot::B)?;
        write_version(b, Slot::A, 3)?;
        b.activate(Slot::A, 2)
    });
    result.unwrap();
    let disk = boot(kind, disk, Slot::A);
    let disk = boot(kind, disk, Slot::A);
    let disk = boot(kind, disk, Slot::B);
    let failed = assert_summary(
        kind,
        disk,
        Summary {
            slots: [(trial(0), Some(3)), (GOOD, Some(2))],
            next: Some(Slot::B),
        },
    );
    let garbage = pattern(STATE_BLOCK_SIZE, 7);
    for damaged in [Some(&garbage), None] {
        let mut fs = FatFs::open(failed.clone()).unwrap();
        match damaged {
            Some(bytes) => fs.overwrite_file(esp::GRUB_ENV, bytes).unwrap(),
            None => fs.remove(esp::GRUB_ENV).unwrap(),
        }
        // GRUB reads both slots as bad; status says so, and that B boots.
        let disk = assert_summary(
            kind,
            fs.into_inner(),
            Summary {
                slots: [(BAD, Some(3)), (BAD, Some(2))],
                next: Some(Slot::B),
            },
        );
        let disk = boot(kind, disk, Slot::B);
        let disk = boot(kind, disk, Slot::B);
        let (result, disk) = with_backend(kind, disk, |b| b.mark_good(Slot::B));
        result.unwrap();
        // A's trial is forgotten with the block: bad, it is rewritten
        // before it boots again.
        let mut fs = FatFs::open(assert_summary(
            kind,
            disk,
            Summary {
                slots: [(BAD, Some(3)), (GOOD, Some(2))],
                next: Some(Slot::B),
            },
        ))
        .unwrap();
        let decoded = decode_state(&fs.read_file(esp::GRUB_ENV).unwrap());
        assert!(decoded.problems.is_empty(), "{:?}", decoded.problems);
    }
}

/// Files other systems (or people) put on the ESP: foreign boot entries, a
/// name that looks like abnix's but is not, other EFI loaders, notes in
/// abnix's own directories. Neither backend reads them into the state,
/// and a whole update, rollback and rewrite leaves every one as it was.
#[test]
fn unknown_files_on_the_esp_are_left_alone() {
    let foreign: [(&str, &[u8]); 7] = [
        (
            "loader/entries/debian.conf",
            b"title Debian\nlinux /vmlinuz\n",
        ),
        (
            "loader/entries/abnix-c.conf",
            b"title odd\nlinux /abnix/a/kernel\n",
        ),
        ("loader/entries/abnix-a.conf.bak", b"title backup\n"),
        ("EFI/debian/grubx64.efi", b"MZ someone else's loader"),
        ("abnix/notes.txt", b"not abnix's"),
        ("abnix/a/notes.txt", b"not abnix's either"),
        ("abnix/c/kernel", b"no slot c"),
    ];
    for kind in KINDS {
        let mut fs = FatFs::open(with_version_1(kind)).unwrap();
        for (path, data) in foreign {
            fs.create_dir_all(path.rsplit_once('/').unwrap().0).unwrap();
            fs.write_file(path, data).unwrap();
        }
        let disk = assert_summary(
            kind,
            fs.into_inner(),
            Summary {
                slots: [(GOOD, Some(1)), (BAD, None)],
                next: Some(Slot::A),
            },
        );
        let (result, disk) = with_backend(kind, disk, |b| {
            write_version(b, Slot::B, 2)?;
            b.activate(Slot::B, 2)
        });
        result.unwrap();
        let disk = boot(kind, disk, Slot::B);
        let (result, disk) = with_backend(kind, disk, |b| {
            b.mark_good(Slot::B)?;
            b.prefer(Slot::A)?;
            b.mark_bad(Slot::B)?;
            write_version(b, Slot::A, 3)?;
            b.activate(Slot::A, 2)
        });
        result.unwrap();
        let disk = boot(kind, disk, Slot::A);
        let (result, disk) = with_backend(kind, disk, |b| b.mark_good(Slot::A));
        result.unwrap();
        let mut fs = FatFs::open(assert_summary(
            kind,
            disk,
            Summary {
                slots: [(GOOD, Some(3)), (BAD, None)],
                next: Some(Slot::A),
            },
        ))
        .unwrap();
        for (path, data) in foreign {
            assert_eq!(fs.read_file(path).unwrap(), data, "{kind:?}: {path}");
        }
    }
}

/// An entry of abnix's that is damaged or changed (its slot B good and
/// running): status still works and never calls B good, and B's next
/// mark-good writes its entry afresh; activate and mark-bad replace it too.
#[test]
fn systemd_boot_takes_a_malformed_own_entry_as_no_entry() {
    let kind = Kind::SystemdBoot;
    let (result, disk) = with_backend(kind, with_version_1(kind), |b| {
        write_version(b, Slot::B, 2)?;
        b.activate(Slot::B, 3)
    });
    result.unwrap();
    let disk = boot(kind, disk, Slot::B);
    let (result, disk) = with_backend(kind, disk, |b| b.mark_good(Slot::B));
    result.unwrap();
    let good = flatten(&disk);
    let entry = "loader/entries/abnix-b.conf";
    let written = FatFs::open(good.clone()).unwrap().read_file(entry).unwrap();
    let text = String::from_utf8(written.clone()).unwrap();
    let with_line = |line: &str| format!("{text}{line}\n").into_bytes();
    // (content, whether systemd-boot still lists it: it names B's kernel)
    let malformed: [(Vec<u8>, bool); 6] = [
        (pattern(700, 3), false),
        (vec![0; 512], false),
        (with_line("stray-key-without-value"), true),
        (with_line("title \u{0}after a NUL"), true),
        (
            text.replace("/abnix/b/kernel", "/abnix/a/kernel")
                .into_bytes(),
            true,
        ),
        (
            text.replace("abnix.slot=b", "abnix.slot=a").into_bytes(),
            true,
        ),
    ];
    for (content, listed) in malformed {
        let mut fs = FatFs::open(good.clone()).unwrap();
        fs.remove(entry).unwrap();
        fs.write_file(entry, &content).unwrap();
        let broken = flatten(&fs.into_inner());
        let (status, _) = status(kind, broken.clone());
        let what = String::from_utf8_lossy(&content[..40.min(content.len())]).into_owned();
        assert_eq!(status.slot(Slot::B).state, BAD, "{what:?}");
        assert_eq!(status.slot(Slot::A).state, GOOD, "{what:?}");
        // systemd-boot boots the newer version's entry if it lists it.
        let next = if listed { Slot::B } else { Slot::A };
        assert_eq!(status.next, Some(next), "{what:?}");

        let (result, disk) = with_backend(kind, broken.clone(), |b| b.mark_good(Slot::B));
        result.unwrap();
        let disk = assert_summary(
            kind,
            disk,
            Summary {
                slots: [(GOOD, Some(1)), (GOOD, Some(2))],
                next: Some(Slot::B),
            },
        );
        let mut fs = FatFs::open(disk).unwrap();
        assert_eq!(fs.read_file(entry).unwrap(), written, "{what:?}");
        assert_eq!(fs.list_dir(esp::ENTRIES_DIR).unwrap().len(), 2, "{what:?}");

        let (result, disk) = with_backend(kind, broken.clone(), |b| b.activate(Slot::B, 2));
        result.unwrap();
        let disk = assert_summary(
            kind,
            disk,
            Summary {
                slots: [(GOOD, Some(1)), (trial(2), Some(2))],
                next: Some(Slot::B),
            },
        );
        boot(kind, disk, Slot::B);

        let (result, disk) = with_backend(kind, broken, |b| b.mark_bad(Slot::B));
        result.unwrap();
        let mut fs = FatFs::open(disk).unwrap();
        assert!(!fs.exists(entry).unwrap(), "{what:?}");
    }
}

/// mark-good (here the installer's, on a fresh ESP) rewrites a slot whose
/// two good entry names are both taken by unusable files, and leaves it one
/// entry.
#[test]
fn systemd_boot_mark_good_frees_names_held_by_unusable_entries() {
    let kind = Kind::SystemdBoot;
    let (result, disk) = with_backend(kind, installed(kind), |b| write_version(b, Slot::A, 1));
    result.unwrap();
    let mut fs = FatFs::open(disk).unwrap();
    let junk = b"linux /abnix/a/kernel\njunk\n";
    fs.write_file("loader/entries/abnix-a.conf", junk).unwrap();
    fs.write_file("loader/entries/abnix-a+0-0.conf", junk)
        .unwrap();
    let disk = assert_summary(
        kind,
        fs.into_inner(),
        Summary {
            slots: [(BAD, Some(1)), (BAD, None)],
            next: Some(Slot::A),
        },
    );
    let (result, disk) = with_backend(kind, disk, |b| b.mark_good(Slot::A));
    result.unwrap();
    let disk = assert_summary(
        kind,
        disk,
        Summary {
            slots: [(GOOD, Some(1)), (BAD, None)],
            next: Some(Slot::A),
        },
    );
    let mut fs = FatFs::open(disk).unwrap();
    let names: Vec<String> = fs
        .list_dir(esp::ENTRIES_DIR)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["abnix-a.conf"]);
}

#[test]
fn install_writes_the_bootloader_files() {
    let mut fs = FatFs::open(installed(Kind::Grub)).unwrap();
    assert_eq!(
        fs.read_file(esp::GRUB_CFG).unwrap(),
        grub_cfg(&GrubCfgOptions::default()).into_bytes()
    );
    assert_eq!(
        fs.read_file(esp::GRUB_ENV).unwrap(),
        encode_state(&BootState::FALLBACK)
    );

    let mut fs = FatFs::open(installed(Kind::SystemdBoot)).unwrap();
    assert_eq!(
        fs.read_file(esp::LOADER_CONF).unwrap(),
        crate::boot::bls::loader_conf().into_bytes()
    );
    assert_eq!(fs.list_dir(esp::ENTRIES_DIR).unwrap(), []);
}

/// Each backend writes its EFI binary to its architecture's removable-media
/// path, and nothing to the other's.
#[test]
fn install_writes_the_efi_binary_where_the_firmware_looks() {
    for kind in [Kind::Grub, Kind::SystemdBoot] {
        for arch in Arch::ALL {
            let mut fs = FatFs::open(installed_for(kind, arch)).unwrap();
            assert_eq!(
                fs.read_file(&esp::efi_boot(arch)).unwrap(),
                stand_in_loader(kind, arch).image(),
                "{kind:?} on {arch}"
            );
            let names: Vec<String> = fs
                .list_dir(esp::EFI_BOOT_DIR)
                .unwrap()
                .into_iter()
                .map(|item| item.name)
                .collect();
            let file = esp::efi_boot(arch).rsplit('/').next().unwrap().to_owned();
            assert_eq!(names, [file], "{kind:?} on {arch}");
        }
    }
}

#[test]
fn bios_install_writes_core_then_the_mbr_code() {
    let images = GrubTools::system().bios_images().unwrap();
    let mut disk = Cursor::new(vec![0u8; 4 << 20]);
    disk.get_mut()[510..512].copy_from_slice(&[0x55, 0xaa]);
    disk.get_mut()[0x1be..0x1c2].copy_from_slice(&[0, 0, 2, 0]);
    bios::install(&mut disk, 512, 2048, 2048, &images).unwrap();
    let bytes = disk.into_inner();
    let core = bios::patch_core(&images.core_img, 2048).unwrap();
    assert_eq!(&bytes[2048 * 512..2048 * 512 + core.len()], &core[..]);
    assert_eq!(
        u64::from_le_bytes(bytes[0x5c..0x64].try_into().unwrap()),
        2048
    );
    assert_eq!(&bytes[0x1be..0x1c2], &[0, 0, 2, 0], "partition table kept");

    let mut disk = Cursor::new(vec![0u8; 4 << 20]);
    let err = bios::install(&mut disk, 4096, 256, 256, &images).unwrap_err();
    assert_eq!(
        err.to_string(),
        "GRUB boots from BIOS only on disks with 512-byte sectors, not 4096"
    );
    let err = bios::install(&mut disk, 512, 2048, 16, &images).unwrap_err();
    assert!(
        err.to_string()
            .contains("more than the 16 of the BIOS boot partition"),
        "{err}"
    );
}
