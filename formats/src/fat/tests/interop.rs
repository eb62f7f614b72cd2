//! Interoperability with dosfstools and mtools on sparse image files:
//! `fsck.fat -n` is clean after every kind of operation, mtools reads what
//! abnix wrote, and abnix reads (and extends) what mkfs.fat and mtools wrote.

use std::path::Path;

use super::*;
use crate::fat::fs::runs;
use crate::fat::FatError;

/// Runs an mtools command on `image`, which must succeed; returns stdout.
fn mtools(program: &str, image: &Path, args: &[&str]) -> Vec<u8> {
    let mut all = vec!["-i", image.to_str().unwrap()];
    all.extend_from_slice(args);
    let out = run_tool(program, &all);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn mdir(image: &Path, dir: &str) -> String {
    String::from_utf8(mtools("mdir", image, &[&format!("::/{dir}")])).unwrap()
}

/// A file's contents as mtools reads them.
fn mcopy_out(image: &Path, path: &str) -> Vec<u8> {
    let out = tempfile::NamedTempFile::new().unwrap();
    mtools(
        "mcopy",
        image,
        &["-n", &format!("::/{path}"), out.path().to_str().unwrap()],
    );
    std::fs::read(out.path()).unwrap()
}

fn mcopy_in(image: &Path, data: &[u8], path: &str) {
    let src = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(src.path(), data).unwrap();
    mtools(
        "mcopy",
        image,
        &[src.path().to_str().unwrap(), &format!("::/{path}")],
    );
}

fn mkfs(image: &Path, args: &[&str]) {
    let mut all = args.to_vec();
    all.push(image.to_str().unwrap());
    let out = run_tool("mkfs.fat", &all);
    assert!(
        out.status.success(),
        "mkfs.fat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fsck_is_clean_after_every_operation_and_mtools_reads_our_files() {
    let (_dir, image, file) = sparse_file(64 * MIB);
    let mut fs = FatFs::format(file, &options(512)).unwrap();
    assert_fsck_clean(&image, "format");

    fs.create_dir_all("EFI/BOOT").unwrap();
    fs.create_dir_all("loader/entries").unwrap();
    assert_fsck_clean(&image, "create_dir_all");
    let kernel = pattern(2 * MIB as usize + 3, 1);
    fs.write_file("EFI/BOOT/BOOTX64.EFI", &kernel).unwrap();
    fs.write_file("loader/loader.conf", b"default abnix-*\ntimeout 0\n")
        .unwrap();
    fs.write_file("loader/entries/abnix-a-1-0123456789+3.conf", b"title a\n")
        .unwrap();
    fs.write_file("empty", b"").unwrap();
    fs.write_file("grubenv", &pattern(512, 2)).unwrap();
    assert_fsck_clean(&image, "create_file");

    fs.rename(
        "loader/entries/abnix-a-1-0123456789+3.conf",
        "loader/entries/abnix-a-1-0123456789.conf",
    )
    .unwrap();
    assert_fsck_clean(&image, "rename in place");
    fs.rename("empty", "empty file with a longer name").unwrap();
    assert_fsck_clean(&image, "rename within the sector");
    fs.create_dir_all("full").unwrap();
    for i in 0..7 {
        fs.write_file(&format!("full/file {i}"), &pattern(100, i))
            .unwrap();
    }
    fs.rename("full/file 2", "full/file 2 with a much longer name")
        .unwrap();
    assert_fsck_clean(&image, "rename by a new set");

    fs.overwrite_file("grubenv", &pattern(512, 3)).unwrap();
    assert_fsck_clean(&image, "overwrite_file");

    for i in 0..60 {
        fs.write_file(
            &format!("loader/entries/entry number {i:02} of many.conf"),
            &pattern(i, i as u64),
        )
        .unwrap();
    }
    assert_fsck_clean(&image, "growing a directory over many clusters");

    fs.remove("full/file 4").unwrap();
    fs.remove("EFI/BOOT/BOOTX64.EFI").unwrap();
    fs.remove("EFI/BOOT").unwrap();
    assert_fsck_clean(&image, "remove");
    assert!(
        matches!(fs.write_file("EFI/BOOT/reused", b""), Err(FatError::NotFound(p)) if p == "EFI/BOOT")
    );
    fs.create_dir_all("EFI/BOOT").unwrap();
    fs.write_file("EFI/BOOT/BOOTX64.EFI", &kernel).unwrap();
    assert_fsck_clean(&image, "reuse of freed space and slots");
    assert_eq!(fs.reclaim_lost_clusters().unwrap(), 0);
    assert_fsck_clean(&image, "reclaim_lost_clusters");

    // mtools sees the names and the bytes.
    let root = mdir(&image, "");
    for name in [
        "EFI",
        "loader",
        "grubenv",
        "empty file with a longer name",
        "full",
    ] {
        assert!(root.contains(name), "mdir lacks {name}:\n{root}");
    }
    let entries = mdir(&image, "loader/entries");
    assert!(entries.contains("abnix-a-1-0123456789.conf"), "{entries}");
    assert!(
        entries.contains("entry number 59 of many.conf"),
        "{entries}"
    );
    assert_eq!(mcopy_out(&image, "EFI/BOOT/BOOTX64.EFI"), kernel);
    assert_eq!(mcopy_out(&image, "grubenv"), pattern(512, 3));
    assert_eq!(
        mcopy_out(&image, "full/file 2 with a much longer name"),
        pattern(100, 2)
    );
    assert_eq!(
        mcopy_out(&image, "loader/entries/entry number 33 of many.conf"),
        pattern(33, 33)
    );
    let typed = mtools("mtype", &image, &["::/loader/loader.conf"]);
    assert_eq!(typed, b"default abnix-*\ntimeout 0\n");
}

#[test]
fn we_read_and_extend_what_mkfs_fat_and_mtools_wrote() {
    let (_dir, image, file) = sparse_file(64 * MIB);
    drop(file);
    mkfs(&image, &["-F", "32", "-n", "FOREIGN"]);
    mtools(
        "mmd",
        &image,
        &["::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"],
    );
    // Lower case 8.3 names: short entries only, with the NT case bits.
    mcopy_in(&image, b"efi binary", "EFI/BOOT/bootx64.efi");
    mcopy_in(&image, &pattern(3000, 1), "loader/random-seed");
    // Many three-slot names: more than a cluster of entries, and with
    // 16 slots per sector some sets straddle sectors.
    for i in 0..40 {
        mcopy_in(
            &image,
            &pattern(i * 10, i as u64),
            &format!("loader/entries/mtools entry {i:02}.conf"),
        );
    }
    mtools(
        "mren",
        &image,
        &[
            "::/loader/entries/mtools entry 05.conf",
            "::/loader/entries/renamed by mtools.conf",
        ],
    );
    mtools("mdel", &image, &["::/loader/entries/mtools entry 06.conf"]);
    // A fragmented file: with the volume full but for holes, mtools has
    // to spread "d" over them.
    for i in 0..10 {
        mcopy_in(&image, &pattern(4096, 50 + i), &format!("hole {i}"));
    }
    let free = FatFs::open(File::open(&image).unwrap())
        .unwrap()
        .free_bytes()
        .unwrap();
    // A few clusters spare, in case the root directory needs another.
    mcopy_in(&image, &vec![0xF1; (free - 4096) as usize], "filler");
    for i in (0..10).step_by(2) {
        mtools("mdel", &image, &[&format!("::/hole {i}")]);
    }
    mcopy_in(&image, &pattern(20000, 53), "d");

    let mut fs = FatFs::open(File::options().read(true).write(true).open(&image).unwrap()).unwrap();
    assert_eq!(fs.read_file("efi/boot/BOOTX64.EFI").unwrap(), b"efi binary");
    assert_eq!(
        fs.list_dir("EFI/BOOT").unwrap()[0].name,
        "bootx64.efi",
        "case bits apply"
    );
    assert_eq!(
        fs.read_file("loader/random-seed").unwrap(),
        pattern(3000, 1)
    );
    assert_eq!(fs.read_file("d").unwrap(), pattern(20000, 53));
    let d = fs.dir_at(&[]).unwrap();
    let d_first = d.items[d.find("d").unwrap()].short.first_cluster;
    assert!(
        runs(&fs.fat.chain(d_first, None, "d").unwrap()).len() > 1,
        "d is fragmented"
    );
    let entries: Vec<String> = fs
        .list_dir("loader/entries")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(entries.len(), 39);
    assert!(entries.contains(&"renamed by mtools.conf".to_string()));
    assert!(!entries.contains(&"mtools entry 06.conf".to_string()));
    for i in (0..40).filter(|&i| i != 5 && i != 6) {
        let path = format!("loader/entries/mtools entry {i:02}.conf");
        assert_eq!(
            fs.read_file(&path).unwrap(),
            pattern(i * 10, i as u64),
            "{path}"
        );
    }
    let dir = fs.dir_at(&["loader", "entries"]).unwrap();
    assert!(dir.clusters.len() > 1);
    let straddling: Vec<String> = dir
        .visible()
        .filter(|(_, item)| item.first_slot / 16 != item.short_slot / 16)
        .map(|(_, item)| item.name.clone())
        .collect();
    assert!(
        straddling.len() >= 2,
        "mtools wrote sets across sectors: {straddling:?}"
    );
    // bootx64.efi, random-seed, 39 entries, 5 holes, filler and d.
    assert_eq!(read_tree(&mut fs, "").unwrap(), 48);

    // Change their files and add ours.
    fs.rename(
        &format!("loader/entries/{}", straddling[0]),
        "loader/entries/renamed by abnix.conf",
    )
    .unwrap();
    fs.remove(&format!("loader/entries/{}", straddling[1]))
        .unwrap();
    fs.rename("EFI/BOOT/bootx64.efi", "EFI/BOOT/BOOTX64.EFI")
        .unwrap();
    fs.remove("d").unwrap();
    fs.remove("filler").unwrap();
    fs.write_file("loader/entries/abnix-b+3.conf", b"title b\n")
        .unwrap();
    fs.write_file("written by abnix.bin", &pattern(70000, 60))
        .unwrap();
    fs.overwrite_file("loader/random-seed", &pattern(3000, 2))
        .unwrap();
    assert_fsck_clean(&image, "changes to an mtools volume");
    assert_eq!(
        mcopy_out(&image, "written by abnix.bin"),
        pattern(70000, 60)
    );
    assert_eq!(
        mcopy_out(&image, "loader/entries/abnix-b+3.conf"),
        b"title b\n"
    );
    assert_eq!(mcopy_out(&image, "loader/random-seed"), pattern(3000, 2));
    let entries = mdir(&image, "loader/entries");
    assert!(entries.contains("renamed by abnix.conf"), "{entries}");
    assert!(!entries.contains(&straddling[1]), "{entries}");
}

#[test]
fn a_mkfs_fat_volume_with_4k_sectors_opens_and_works() {
    let (_dir, image, file) = sparse_file(300 * MIB);
    drop(file);
    mkfs(&image, &["-F", "32", "-S", "4096"]);
    let mut fs = FatFs::open(File::options().read(true).write(true).open(&image).unwrap()).unwrap();
    assert_eq!(fs.geometry.bytes_per_sector, 4096);
    fs.create_dir_all("abnix/a").unwrap();
    fs.write_file("abnix/a/kernel", &pattern(MIB as usize, 7))
        .unwrap();
    fs.write_file(
        "abnix/a/cmdline with a long name",
        b"init=/nix/store/x/init",
    )
    .unwrap();
    fs.rename("abnix/a/cmdline with a long name", "abnix/a/cmdline")
        .unwrap();
    assert_eq!(
        fs.read_file("abnix/a/kernel").unwrap(),
        pattern(MIB as usize, 7)
    );
    assert_fsck_clean(&image, "writes to a 4K-sector volume");
    assert_eq!(
        mcopy_out(&image, "abnix/a/kernel"),
        pattern(MIB as usize, 7)
    );
    assert_eq!(
        mcopy_out(&image, "abnix/a/cmdline"),
        b"init=/nix/store/x/init"
    );
}

#[test]
fn our_4k_sector_volume_passes_fsck() {
    let (_dir, image, file) = sparse_file(300 * MIB);
    let mut fs = FatFs::format(file, &options(4096)).unwrap();
    fs.create_dir_all("loader/entries").unwrap();
    fs.write_file("loader/entries/abnix-a+3.conf", b"title a\n")
        .unwrap();
    fs.rename(
        "loader/entries/abnix-a+3.conf",
        "loader/entries/abnix-a.conf",
    )
    .unwrap();
    fs.write_file("big", &pattern(3 * MIB as usize, 8)).unwrap();
    assert_fsck_clean(&image, "operations on a 4K-sector volume");
    assert_eq!(
        mcopy_out(&image, "loader/entries/abnix-a.conf"),
        b"title a\n"
    );
    assert_eq!(mcopy_out(&image, "big"), pattern(3 * MIB as usize, 8));
}

#[test]
fn fat16_volumes_are_refused() {
    let (_dir, image, file) = sparse_file(64 * MIB);
    drop(file);
    mkfs(&image, &["-F", "16"]);
    match FatFs::open(File::open(&image).unwrap()) {
        Err(FatError::Corrupt(msg)) => assert!(msg.contains("not FAT32"), "{msg}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}
