//! Corrupt input gives errors, never a panic or an endless loop.

use super::*;
use crate::fat::dirent::{lfn_checksum, ENTRY_SIZE};
use crate::fat::table::{END_OF_CHAIN, FREE};
use crate::fat::FatError;

fn corrupt_message<T>(result: Result<T, FatError>) -> String {
    match result {
        Err(FatError::Corrupt(msg)) => msg,
        Err(e) => panic!("expected Corrupt, got {e}"),
        Ok(_) => panic!("expected Corrupt, got success"),
    }
}

#[test]
fn garbage_boot_sectors_are_refused() {
    let msg = corrupt_message(FatFs::open(Cursor::new(vec![0u8; 40 * MIB as usize])));
    assert!(msg.contains("55 AA"), "{msg}");
    let mut garbage = pattern(40 * MIB as usize, 5);
    corrupt_message(FatFs::open(Cursor::new(garbage.clone())));
    garbage[510] = 0x55;
    garbage[511] = 0xAA;
    corrupt_message(FatFs::open(Cursor::new(garbage)));
    let msg = corrupt_message(FatFs::open(Cursor::new(vec![0u8; 100])));
    assert!(msg.contains("100 bytes"), "{msg}");
    // A valid boot sector on a region that is cut short.
    let image = memory_volume(40 * MIB, 512).into_inner().into_inner();
    let msg = corrupt_message(FatFs::open(Cursor::new(
        image[..20 * MIB as usize].to_vec(),
    )));
    assert!(msg.contains("region holds"), "{msg}");
}

/// A volume with a five-cluster file "f", and the clusters of its chain.
fn volume_with_chain() -> (FatFs<Cursor<Vec<u8>>>, Vec<u32>) {
    let mut fs = memory_volume(40 * MIB, 512);
    fs.write_file("f", &pattern(2500, 1)).unwrap();
    fs.write_file("other", b"fine").unwrap();
    let dir = fs.dir_at(&[]).unwrap();
    let first = dir.items[dir.find("f").unwrap()].short.first_cluster;
    let chain = fs.fat.chain(first, None, "f").unwrap();
    assert_eq!(chain.len(), 5);
    (fs, chain)
}

/// Sets a FAT entry on disk (both FATs) and reopens the volume.
fn with_fat_entry(fs: FatFs<Cursor<Vec<u8>>>, cluster: u32, value: u32) -> FatFs<Cursor<Vec<u8>>> {
    let mut fs = fs;
    fs.fat.set(cluster, value);
    fs.fat.flush(&mut fs.disk, &fs.geometry).unwrap();
    FatFs::open(fs.into_inner()).unwrap()
}

#[test]
fn broken_chains_are_errors() {
    let (fs, chain) = volume_with_chain();
    let mut fs = with_fat_entry(fs, chain[3], chain[1]);
    let msg = corrupt_message(fs.read_file("f"));
    assert!(
        msg.contains(&format!("loops back to cluster {}", chain[1])),
        "{msg}"
    );
    assert_eq!(
        fs.read_file("other").unwrap(),
        b"fine",
        "one bad chain spoils nothing else"
    );

    let (fs, chain) = volume_with_chain();
    let mut fs = with_fat_entry(fs, chain[1], 0x0FFF_FF00);
    assert!(corrupt_message(fs.read_file("f")).contains("points past the end"));

    let (fs, chain) = volume_with_chain();
    let mut fs = with_fat_entry(fs, chain[2], FREE);
    assert_eq!(
        corrupt_message(fs.read_file("f")),
        format!("cluster {} in the chain of f is free", chain[2])
    );
    assert!(matches!(
        fs.overwrite_file("f", &pattern(2500, 2)),
        Err(FatError::Corrupt(_))
    ));

    let (fs, chain) = volume_with_chain();
    let mut fs = with_fat_entry(fs, chain[2], END_OF_CHAIN);
    assert!(corrupt_message(fs.read_file("f")).contains("ends after 3 of 5 clusters"));
}

#[test]
fn a_file_with_a_looping_chain_can_still_be_removed() {
    let (fs, chain) = volume_with_chain();
    let mut fs = with_fat_entry(fs, chain[4], chain[0]);
    let free = fs.free_bytes().unwrap();
    fs.remove("f").unwrap();
    assert!(!fs.exists("f").unwrap());
    assert_eq!(
        fs.free_bytes().unwrap(),
        free,
        "the loop is left for reclaim"
    );
    assert_eq!(fs.reclaim_lost_clusters().unwrap(), 5 * 512);
    assert_eq!(fs.read_file("other").unwrap(), b"fine");
}

#[test]
fn directory_loops_are_errors() {
    let mut fs = memory_volume(40 * MIB, 512);
    fs.create_dir_all("d/sub").unwrap();
    let root = fs.dir_at(&[]).unwrap();
    let d = root.items[root.find("d").unwrap()].short.first_cluster;
    let mut fs = with_fat_entry(fs, d, d);
    assert!(corrupt_message(fs.list_dir("d")).contains("loops back"));
    assert!(corrupt_message(fs.reclaim_lost_clusters()).contains("directory d"));
    assert!(fs.list_dir("").is_ok());
}

#[test]
fn a_directory_that_contains_its_ancestor_ends_the_walk() {
    let mut fs = memory_volume(40 * MIB, 512);
    fs.create_dir_all("a/b").unwrap();
    fs.write_file("a/b/file", &pattern(1000, 3)).unwrap();
    // Point a/b's entry at "a" itself: a cycle in the tree.
    let mut a = fs.dir_at(&["a"]).unwrap();
    let index = a.find("b").unwrap();
    let slot = a.items[index].short_slot;
    let mut entry = a.items[index].short.clone();
    entry.first_cluster = a.first_cluster;
    let at = slot * ENTRY_SIZE;
    a.bytes[at..at + ENTRY_SIZE].copy_from_slice(&entry.to_bytes());
    let sector = slot / fs.slots_per_sector();
    fs.write_dir_sectors(&a, sector..sector + 1).unwrap();
    assert_eq!(fs.list_dir("a/b/b/b/b").unwrap().len(), 1);
    // The old a/b and its file are now lost, and nothing loops.
    assert_eq!(fs.reclaim_lost_clusters().unwrap(), 3 * 512);
}

#[test]
fn a_bad_long_name_checksum_leaves_the_short_name() {
    let mut fs = memory_volume(40 * MIB, 512);
    fs.write_file("a long file name.txt", b"contents").unwrap();
    let mut root = fs.dir_at(&[]).unwrap();
    let item = root.items[root.find("a long file name.txt").unwrap()].clone();
    assert_ne!(lfn_checksum(&item.short.name), 0x42);
    root.bytes[item.first_slot * ENTRY_SIZE + 13] = 0x42;
    fs.write_dir_sectors(&root, 0..1).unwrap();
    let names: Vec<String> = fs
        .list_dir("")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, vec!["ALONGF~1.TXT"]);
    assert_eq!(fs.read_file("alongf~1.txt").unwrap(), b"contents");
    assert!(!fs.exists("a long file name.txt").unwrap());
}

/// Damage at random places in the metadata, then every operation: each
/// may fail, none may panic or hang.
#[test]
fn random_metadata_damage_never_panics() {
    let (_dir, path, mut file) = sparse_file(40 * MIB);
    let mut fs = FatFs::format(&mut file, &options(512)).unwrap();
    fs.create_dir_all("loader/entries").unwrap();
    for i in 0..30 {
        fs.write_file(
            &format!("loader/entries/entry with a long name {i}.conf"),
            &pattern(i * 97, i as u64),
        )
        .unwrap();
    }
    fs.write_file("big", &pattern(200_000, 9)).unwrap();
    let geometry = fs.geometry.clone();
    drop(fs);
    let base = File::open(&path).unwrap();
    let fat_start = geometry.fat_offset(0);
    let data_start = geometry.cluster_offset(2);
    let mut seed = 0x51F1_5EED_u64;
    let mut next = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    for round in 0..150 {
        let mut disk = Cow::new(&base);
        for _ in 0..12 {
            // The FAT entries in use, the directories' clusters, or (rarely) anywhere in the reserved sectors.
            let offset = match next(8) {
                0 => next(fat_start),
                1..=4 => fat_start + next(2048),
                _ => data_start + next(64 * 512),
            };
            disk.seek(SeekFrom::Start(offset)).unwrap();
            disk.write_all(&[next(256) as u8]).unwrap();
        }
        let Ok(mut fs) = FatFs::open(disk) else {
            continue;
        };
        let _ = read_tree(&mut fs, "");
        let _ = fs.list_dir("loader/entries");
        let _ = fs.write_file("loader/entries/new.conf", &pattern(round, 1));
        let _ = fs.rename(
            "loader/entries/entry with a long name 3.conf",
            "loader/entries/e3.conf",
        );
        let _ = fs.rename("big", "big with a much much longer name than before");
        let _ = fs.remove("loader/entries/entry with a long name 7.conf");
        let _ = fs.overwrite_file(
            "loader/entries/entry with a long name 9.conf",
            &pattern(9 * 97, 0),
        );
        let _ = fs.reclaim_lost_clusters();
        let _ = read_tree(&mut fs, "");
    }
}

/// A FAT of random values: every chain is nonsense, yet every operation
/// ends with an answer.
#[test]
fn a_random_fat_never_hangs() {
    let mut fs = memory_volume(40 * MIB, 512);
    fs.create_dir_all("d").unwrap();
    fs.write_file("d/f", &pattern(5000, 1)).unwrap();
    let (start, len) = (
        fs.geometry.fat_offset(0) as usize,
        fs.geometry.fat_bytes_used(),
    );
    let mut image = fs.into_inner().into_inner();
    // Keep FAT[0] and FAT[1]; scramble the rest.
    image[start + 8..start + len].copy_from_slice(&pattern(len - 8, 77));
    let mut fs = FatFs::open(Cursor::new(image)).unwrap();
    assert!(fs.list_dir("").is_err());
    assert!(fs.write_file("x", b"y").is_err());
    assert!(fs.reclaim_lost_clusters().is_err());
    assert!(fs.free_bytes().unwrap() < 40 * MIB);
}
