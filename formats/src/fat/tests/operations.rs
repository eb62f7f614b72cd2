//! Operations on fresh volumes: every kind of file, directories, renames,
//! removal, space accounting and the errors callers branch on.

use std::io::Cursor;

use super::*;
use crate::disk::Region;
use crate::fat::{DirEntry, FatError};

/// Files of every awkward size, checked after writing and after reopening.
fn exercise<D: Disk>(mut fs: FatFs<D>) -> D {
    let cluster = u64::from(fs.cluster_size());
    let initial_free = fs.free_bytes().unwrap();
    fs.create_dir_all("EFI/BOOT").unwrap();
    fs.create_dir_all("/loader/entries/").unwrap();
    assert_eq!(
        fs.free_bytes().unwrap(),
        initial_free - 4 * cluster,
        "a cluster per directory"
    );
    let files: Vec<(String, Vec<u8>)> = vec![
        (
            "EFI/BOOT/BOOTX64.EFI".into(),
            pattern(3 * MIB as usize + 17, 1),
        ),
        ("loader/loader.conf".into(), b"timeout 0\n".to_vec()),
        ("loader/entries/abnix-a+3.conf".into(), Vec::new()),
        ("one-byte".into(), vec![0x5A]),
        ("exactly-a-cluster".into(), pattern(cluster as usize, 2)),
        (
            "a-cluster-and-a-byte".into(),
            pattern(cluster as usize + 1, 3),
        ),
        ("Mixed Case Name.TXT".into(), pattern(1000, 4)),
    ];
    for (path, data) in &files {
        fs.write_file(path, data).unwrap();
    }
    let in_clusters = |len: usize| (len as u64).div_ceil(cluster) * cluster;
    let used: u64 = files.iter().map(|(_, data)| in_clusters(data.len())).sum();
    assert_eq!(fs.free_bytes().unwrap(), initial_free - 4 * cluster - used);
    for (path, data) in &files {
        assert_eq!(&fs.read_file(path).unwrap(), data, "{path}");
    }
    assert_eq!(
        fs.list_dir("").unwrap(),
        vec![
            DirEntry {
                name: "EFI".into(),
                is_dir: true,
                size: 0
            },
            DirEntry {
                name: "loader".into(),
                is_dir: true,
                size: 0
            },
            DirEntry {
                name: "one-byte".into(),
                is_dir: false,
                size: 1
            },
            DirEntry {
                name: "exactly-a-cluster".into(),
                is_dir: false,
                size: cluster
            },
            DirEntry {
                name: "a-cluster-and-a-byte".into(),
                is_dir: false,
                size: cluster + 1
            },
            DirEntry {
                name: "Mixed Case Name.TXT".into(),
                is_dir: false,
                size: 1000
            },
        ]
    );
    let mut copied = Vec::new();
    assert_eq!(
        fs.copy_file_to("efi/boot/bootx64.efi", &mut copied)
            .unwrap(),
        files[0].1.len() as u64
    );
    assert_eq!(copied, files[0].1);

    fs.rename(
        "loader/entries/abnix-a+3.conf",
        "loader/entries/abnix-a.conf",
    )
    .unwrap();
    fs.rename("one-byte", "a much longer name for the one byte file")
        .unwrap();
    assert_eq!(
        fs.read_file("A MUCH LONGER NAME FOR THE ONE BYTE FILE")
            .unwrap(),
        vec![0x5A]
    );
    assert!(!fs.exists("one-byte").unwrap());
    assert!(fs.exists("loader/entries/abnix-a.conf").unwrap());

    let before_remove = fs.free_bytes().unwrap();
    fs.remove("EFI/BOOT/BOOTX64.EFI").unwrap();
    fs.remove("EFI/BOOT").unwrap();
    assert_eq!(fs.list_dir("EFI").unwrap(), vec![]);
    let after_remove = fs.free_bytes().unwrap();
    assert_eq!(
        after_remove,
        before_remove + in_clusters(files[0].1.len()) + cluster
    );
    let disk = fs.into_inner();

    let mut fs = FatFs::open(disk).unwrap();
    assert_eq!(fs.read_file("a-cluster-and-a-byte").unwrap(), files[5].1);
    assert_eq!(
        fs.read_file("loader/entries/abnix-a.conf").unwrap(),
        Vec::<u8>::new()
    );
    assert_eq!(fs.free_bytes().unwrap(), after_remove);
    fs.into_inner()
}

#[test]
fn a_64_mib_volume_in_memory_holds_every_kind_of_file() {
    exercise(memory_volume(64 * MIB, 512));
}

#[test]
fn a_600_mib_volume_in_a_sparse_file_region_holds_every_kind_of_file() {
    let (_dir, _path, mut file) = sparse_file(602 * MIB);
    let fs = FatFs::format(Region::new(&mut file, MIB, 600 * MIB), &options(512)).unwrap();
    assert_eq!(fs.cluster_size(), 4096);
    exercise(fs);
    let mut before = [0u8; 4096];
    crate::fat::read_at(&mut file, 0, &mut before).unwrap();
    assert_eq!(before, [0u8; 4096], "nothing was written before the region");
}

#[test]
fn a_600_mib_volume_with_4k_sectors_holds_every_kind_of_file() {
    let (_dir, _path, file) = sparse_file(600 * MIB);
    let fs = FatFs::format(file, &options(4096)).unwrap();
    assert_eq!(fs.geometry.bytes_per_sector, 4096);
    exercise(fs);
}

#[test]
fn names_keep_their_case_and_lookups_ignore_it() {
    let mut fs = memory_volume(64 * MIB, 512);
    fs.create_dir_all("Loader/Entries").unwrap();
    fs.write_file("LOADER/entries/Abnix-B.conf", b"x").unwrap();
    assert_eq!(fs.list_dir("loader").unwrap()[0].name, "Entries");
    assert_eq!(
        fs.list_dir("loader/ENTRIES").unwrap()[0].name,
        "Abnix-B.conf"
    );
    assert!(
        matches!(fs.write_file("loader/entries/ABNIX-b.CONF", b"y"), Err(FatError::AlreadyExists(p)) if p == "loader/entries/ABNIX-b.CONF")
    );
    fs.rename("loader/entries/abnix-b.conf", "loader/entries/ABNIX-B.conf")
        .unwrap();
    assert_eq!(
        fs.list_dir("loader/entries").unwrap()[0].name,
        "ABNIX-B.conf"
    );
}

#[test]
fn errors_name_the_problem() {
    let mut fs = memory_volume(64 * MIB, 512);
    fs.create_dir_all("dir/sub").unwrap();
    fs.write_file("dir/file", b"12345").unwrap();
    assert!(
        matches!(fs.read_file("dir/missing"), Err(FatError::NotFound(p)) if p == "dir/missing")
    );
    assert!(matches!(fs.read_file("nope/deeper"), Err(FatError::NotFound(p)) if p == "nope"));
    assert!(matches!(fs.write_file("nope/x", b""), Err(FatError::NotFound(p)) if p == "nope"));
    assert!(
        matches!(fs.write_file("dir/file", b""), Err(FatError::AlreadyExists(p)) if p == "dir/file")
    );
    assert!(matches!(
        fs.write_file("dir/sub", b""),
        Err(FatError::AlreadyExists(_))
    ));
    assert!(matches!(fs.list_dir("dir/file"), Err(FatError::NotADirectory(p)) if p == "dir/file"));
    assert!(matches!(
        fs.write_file("dir/file/x", b""),
        Err(FatError::NotADirectory(_))
    ));
    assert!(
        matches!(fs.create_dir_all("dir/file/x"), Err(FatError::NotADirectory(p)) if p == "dir/file")
    );
    assert!(matches!(fs.read_file("dir/sub"), Err(FatError::IsADirectory(p)) if p == "dir/sub"));
    assert!(matches!(fs.read_file("/"), Err(FatError::IsADirectory(_))));
    assert!(matches!(fs.remove("dir"), Err(FatError::DirectoryNotEmpty(p)) if p == "dir"));
    assert!(
        matches!(fs.write_file("dir/a*b", b""), Err(FatError::InvalidName(m)) if m.contains("'*'"))
    );
    assert!(matches!(fs.remove("/"), Err(FatError::InvalidName(_))));
    assert!(matches!(
        fs.overwrite_file("dir/file", b"1234"),
        Err(FatError::SizeMismatch { path, file: 5, data: 4 }) if path == "dir/file"
    ));
    assert!(
        matches!(fs.rename("dir/file", "dir/sub"), Err(FatError::AlreadyExists(p)) if p == "dir/sub")
    );
    assert!(
        matches!(fs.rename("dir/file", "elsewhere"), Err(FatError::InvalidName(m)) if m.contains("within a directory"))
    );
    assert!(!fs.exists("dir/file/x").unwrap());
    assert!(fs.exists("").unwrap());
    assert!(matches!(fs.exists("a:b"), Err(FatError::InvalidName(_))));
    // 196 UTF-16 units need 16 long entries: with the short entry, more
    // than a 512-byte sector holds.
    let long = "n".repeat(196);
    assert!(
        matches!(fs.write_file(&long, b""), Err(FatError::InvalidName(m)) if m.contains("at most 195"))
    );
    fs.write_file(&"n".repeat(195), b"ok").unwrap();
    assert!(matches!(
        FatFs::format(Cursor::new(vec![0u8; 20 * MIB as usize]), &options(512)),
        Err(FatError::TooSmall { size, min }) if size == 20 * MIB && min > 32 * MIB
    ));
    let mut bad_label = options(512);
    bad_label.label = "much too long label".into();
    assert!(matches!(
        FatFs::format(Cursor::new(vec![0u8; 64 * MIB as usize]), &bad_label),
        Err(FatError::InvalidName(_))
    ));
}

#[test]
fn no_space_is_found_before_anything_is_written() {
    let mut fs = memory_volume(40 * MIB, 512);
    let free = fs.free_bytes().unwrap();
    let image_before = fs.disk.get_ref().clone();
    let too_big = free + 1;
    let mut endless = std::io::repeat(7);
    match fs.create_file("big", &mut endless, too_big) {
        Err(FatError::NoSpace {
            path,
            needed,
            free: reported,
        }) => {
            assert_eq!(path, "big");
            assert_eq!(needed, too_big.div_ceil(512) * 512);
            assert_eq!(reported, free);
        }
        other => panic!("{other:?}"),
    }
    assert!(
        fs.disk.get_ref() == &image_before,
        "a refused create writes nothing"
    );
    // Exactly the free space fits.
    fs.create_file("big", &mut endless, free).unwrap();
    assert_eq!(fs.free_bytes().unwrap(), 0);
    assert!(matches!(
        fs.create_dir_all("d"),
        Err(FatError::NoSpace { .. })
    ));
    fs.remove("big").unwrap();
    assert_eq!(fs.free_bytes().unwrap(), free);
}

#[test]
fn short_data_fails_without_leaving_a_file() {
    let mut fs = memory_volume(40 * MIB, 512);
    let free = fs.free_bytes().unwrap();
    let err = fs
        .create_file("short", &mut &b"only this"[..], 5000)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("the data ended before the promised 5000 bytes"),
        "{err}"
    );
    assert!(!fs.exists("short").unwrap());
    assert_eq!(fs.free_bytes().unwrap(), free);
}

#[test]
fn directories_grow_past_one_cluster() {
    let mut fs = memory_volume(40 * MIB, 512);
    fs.create_dir_all("many").unwrap();
    let names: Vec<String> = (0..150)
        .map(|i| format!("entry number {i:03}.conf"))
        .collect();
    for (i, name) in names.iter().enumerate() {
        fs.write_file(&format!("many/{name}"), &pattern(i, i as u64))
            .unwrap();
    }
    let dir = fs.dir_at(&["many"]).unwrap();
    assert!(dir.clusters.len() > 10, "512-byte clusters hold 16 slots");
    let listed: Vec<String> = fs
        .list_dir("many")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(listed, names);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            fs.read_file(&format!("many/{name}")).unwrap(),
            pattern(i, i as u64)
        );
    }
    let short_names = dir.short_names();
    assert_eq!(short_names.len(), dir.items.len(), "short names are unique");
}

#[test]
fn entry_sets_never_straddle_sectors() {
    let mut fs = memory_volume(40 * MIB, 512);
    // Names of 3, 2 and 4 slots, interleaved: a naive allocator would
    // straddle the 16-slot sectors.
    for i in 0..40 {
        let name = match i % 3 {
            0 => format!("twenty-something name {i}"),
            1 => format!("short {i}"),
            _ => format!("a name that needs four slots in all {i}"),
        };
        fs.write_file(&name, b"").unwrap();
    }
    let dir = fs.dir_at(&[]).unwrap();
    for item in dir.visible().map(|(_, item)| item) {
        assert_eq!(item.first_slot / 16, item.short_slot / 16, "{}", item.name);
    }
    // Readers that stop at the first never-used slot still see everything.
    assert_eq!(fs.list_dir("").unwrap().len(), 40);
}

/// The slots of the item called `name` in directory `dir`.
fn slots_of<D: Disk>(fs: &mut FatFs<D>, dir: &[&str], name: &str) -> (usize, usize, [u8; 11]) {
    let dir = fs.dir_at(dir).unwrap();
    let item = &dir.items[dir.find(name).unwrap()];
    (item.first_slot, item.short_slot, item.short.name)
}

#[test]
fn renames_keep_the_short_entry_when_the_sector_allows() {
    let mut fs = memory_volume(40 * MIB, 512);
    fs.create_dir_all("e").unwrap();
    fs.write_file("e/abnix-a-0123456789+3.conf", b"entry a")
        .unwrap();
    let (first, short_slot, short) = slots_of(&mut fs, &["e"], "abnix-a-0123456789+3.conf");
    assert_eq!(
        (first, short_slot),
        (2, 4),
        "after . and .., two long entries"
    );

    // Shorter, still two long entries: in place, same slots.
    fs.rename("e/abnix-a-0123456789+3.conf", "e/abnix-a-0123456789.conf")
        .unwrap();
    assert_eq!(
        slots_of(&mut fs, &["e"], "abnix-a-0123456789.conf"),
        (first, short_slot, short)
    );
    // Shorter, one long entry: the set shrinks onto its tail.
    fs.rename("e/abnix-a-0123456789.conf", "e/a.conf").unwrap();
    assert_eq!(
        slots_of(&mut fs, &["e"], "a.conf"),
        (short_slot - 1, short_slot, short)
    );
    // Longer, with room in the sector: moves within it, same short entry.
    fs.rename("e/a.conf", "e/a name needing three long entries")
        .unwrap();
    let (_, _, kept) = slots_of(&mut fs, &["e"], "a name needing three long entries");
    assert_eq!(kept, short);
    assert_eq!(
        fs.read_file("e/A NAME NEEDING THREE LONG ENTRIES").unwrap(),
        b"entry a"
    );
    assert_eq!(fs.list_dir("e").unwrap().len(), 1);
}

#[test]
fn a_rename_that_outgrows_a_full_sector_writes_a_new_set() {
    let mut fs = memory_volume(40 * MIB, 512);
    fs.create_dir_all("full").unwrap();
    // ". .." and seven two-slot sets fill the first 16-slot sector.
    for i in 0..7 {
        fs.write_file(&format!("full/file {i}"), &pattern(700, i))
            .unwrap();
    }
    let free = fs.free_bytes().unwrap();
    let (first, _, short) = slots_of(&mut fs, &["full"], "file 3");
    assert!(first < 16);
    fs.rename("full/file 3", "full/file 3 with a much longer name")
        .unwrap();
    let (new_first, _, new_short) = slots_of(&mut fs, &["full"], "file 3 with a much longer name");
    assert!(new_first >= 16, "the set moved to the next sector");
    assert_ne!(new_short, short, "a new set has its own short name");
    assert!(!fs.exists("full/file 3").unwrap());
    assert_eq!(
        fs.read_file("full/file 3 with a much longer name").unwrap(),
        pattern(700, 3)
    );
    // The directory needed a second cluster.
    assert_eq!(fs.free_bytes().unwrap(), free - 512);
}

#[test]
fn removing_one_of_two_names_keeps_the_shared_clusters() {
    // The state an interrupted rename by a new set leaves: two entries
    // starting at the same cluster.
    let mut fs = memory_volume(40 * MIB, 512);
    fs.write_file("original", &pattern(2000, 9)).unwrap();
    let mut dir = fs.dir_at(&[]).unwrap();
    let item = dir.items[dir.find("original").unwrap()].clone();
    let mut twin = item.short.clone();
    twin.name = *b"TWIN       ";
    let placement = fs.place(&dir, 1).unwrap();
    fs.write_set(&mut dir, placement.slot, &[twin.to_bytes()])
        .unwrap();
    let free = fs.free_bytes().unwrap();

    fs.remove("original").unwrap();
    assert_eq!(
        fs.free_bytes().unwrap(),
        free,
        "the clusters still belong to TWIN"
    );
    assert_eq!(fs.reclaim_lost_clusters().unwrap(), 0);
    assert_eq!(fs.read_file("TWIN").unwrap(), pattern(2000, 9));
    fs.remove("twin").unwrap();
    assert_eq!(fs.free_bytes().unwrap(), free + 4 * 512);
}

#[test]
fn overwrite_replaces_contents_in_place() {
    let mut fs = memory_volume(40 * MIB, 512);
    fs.create_dir_all("grub").unwrap();
    let old = pattern(1024, 1);
    fs.write_file("grub/grubenv", &old).unwrap();
    let (_, short_slot, _) = slots_of(&mut fs, &["grub"], "grubenv");
    let entry_before = fs.dir_at(&["grub"]).unwrap().slot(short_slot);
    let new = pattern(1024, 2);
    fs.overwrite_file("GRUB/GRUBENV", &new).unwrap();
    assert_eq!(fs.read_file("grub/grubenv").unwrap(), new);
    assert_eq!(
        fs.dir_at(&["grub"]).unwrap().slot(short_slot),
        entry_before,
        "the entry is untouched"
    );
    fs.write_file("empty", b"").unwrap();
    fs.overwrite_file("empty", b"").unwrap();
    assert!(matches!(
        fs.overwrite_file("grub", b""),
        Err(FatError::IsADirectory(_))
    ));
}

#[test]
fn lost_clusters_are_reclaimed() {
    let mut fs = memory_volume(40 * MIB, 512);
    fs.write_file("kept", &pattern(5000, 1)).unwrap();
    let free = fs.free_bytes().unwrap();
    // What a cut before the entry lands leaves: a linked chain, no entry.
    let orphan = fs.fat.find_free(7).unwrap();
    fs.fat.link(&orphan);
    fs.fat.flush(&mut fs.disk, &fs.geometry).unwrap();
    let mut fs = FatFs::open(fs.into_inner()).unwrap();
    assert_eq!(fs.free_bytes().unwrap(), free - 7 * 512);
    assert_eq!(fs.reclaim_lost_clusters().unwrap(), 7 * 512);
    assert_eq!(fs.free_bytes().unwrap(), free);
    assert_eq!(fs.read_file("kept").unwrap(), pattern(5000, 1));
    assert_eq!(fs.reclaim_lost_clusters().unwrap(), 0);
}

#[test]
fn an_io_error_leaves_a_sound_volume_and_a_fresh_fat() {
    use crate::disk::{Fault, FaultyDisk};
    let mut fs = memory_volume(40 * MIB, 512);
    fs.write_file("before", b"safe").unwrap();
    let image = fs.into_inner();
    // The disk fails partway through a 64 KiB create.
    let mut fs = FatFs::open(FaultyDisk::failing_after(image, 40_000, Fault::Error)).unwrap();
    assert!(matches!(
        fs.write_file("doomed", &pattern(65536, 1)),
        Err(FatError::Io(_))
    ));
    assert!(
        fs.stale,
        "the in-memory FAT is read again before the next operation"
    );
    assert_eq!(fs.read_file("before").unwrap(), b"safe");
    assert!(!fs.stale);
    let mut fs = FatFs::open(fs.into_inner().into_inner()).unwrap();
    assert!(!fs.exists("doomed").unwrap());
    assert_eq!(fs.read_file("before").unwrap(), b"safe");
}
