//! Blank means provably blank, and the disk written is the disk checked:
//! the installer against what real disks hold.
//!
//! Each kind of content is made by its own tools where Debian has them
//! (xfsprogs, btrfs-progs, ntfs-3g, f2fs-tools, cryptsetup-bin, xorriso),
//! and otherwise crafted byte by byte from the on-disk format: ZFS
//! (OpenZFS is not in Debian main; see [`zfs_labels`]), bcache (see
//! [`bcache_backing_device`]), the MBRs, stray bytes. Every one is refused without `--wipe`, on a file
//! and on a loop device, its bytes unchanged; with `--wipe` it is installed
//! over and neither libblkid nor abnix's probe finds anything of it after.
//! Only the all-zero disk is accepted as it is. A missing tool fails the
//! test naming its package; the loop devices need root, as CI has.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::libblkid::Libblkid;
use super::tests::Fixture;
use super::*;
use crate::install::system::tests::FakeSystem;
use crate::probe::tests::write_at;
use crate::probe::SignatureKind;
use abnix_core::progress::NoProgress;
use abnix_core::testutil::FakeRoot;
use abnix_core::testutil::{file_sha256, require_root, run_tool, LoopDevice, Mounted};
use abnix_formats::layout::MIB;
use abnix_formats::testutil::pattern;

/// One kind of content: the disk's size, how it is made, and what the
/// refusal must name.
struct Kind {
    name: &'static str,
    size: u64,
    build: fn(&Path),
    /// In the refusal's text; `None` for the blank disk, which is accepted.
    named: Option<&'static str>,
}

fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Writes `iso` (a small image) at the start of the disk, as `dd` puts an
/// installer ISO onto a bigger USB stick.
fn hybrid_iso(disk: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    fs::write(tree.join("hello"), "world").unwrap();
    let efi = dir.path().join("efi.img");
    File::create(&efi).unwrap().set_len(2 * MIB).unwrap();
    run_tool("mkfs.fat", &["-n", "EFIBOOT", path_arg(&efi)]);
    let iso = dir.path().join("installer.iso");
    // An El Torito EFI image appended as MBR partition 2, the ISO itself
    // partition 1 from 32 KiB on: how Debian's and many live ISOs boot
    // from a USB stick.
    run_tool(
        "xorriso",
        &[
            "-as",
            "mkisofs",
            "-quiet",
            "-V",
            "ABNIX_TEST",
            "-o",
            path_arg(&iso),
            "-partition_offset",
            "16",
            "-append_partition",
            "2",
            "0xef",
            path_arg(&efi),
            "-e",
            "--interval:appended_partition_2:all::",
            "-no-emul-boot",
            path_arg(&tree),
        ],
    );
    write_at(disk, 0, &fs::read(&iso).unwrap());
}

/// A bcache backing device's superblock as `make-bcache -B` writes it
/// (the kernel's `struct cache_sb`, include/uapi/linux/bcache.h), crafted
/// rather than made: bcache-tools' udev rule registers every bcache device
/// the kernel sees with the bcache driver, which then holds it, and would
/// take the tests' loop devices.
fn bcache_backing_device(disk: &Path) {
    const MAGIC: [u8; 16] = [
        0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d,
        0x81,
    ];
    let mut sb = vec![0u8; 4096];
    sb[8..16].copy_from_slice(&8u64.to_le_bytes()); // offset: sector 8
    sb[16..24].copy_from_slice(&1u64.to_le_bytes()); // version: backing device
    sb[24..40].copy_from_slice(&MAGIC);
    sb[40..56].copy_from_slice(&[0x5a; 16]); // uuid
    sb[56..72].copy_from_slice(&[0xa5; 16]); // set_uuid
    sb[192..194].copy_from_slice(&8u16.to_le_bytes()); // block_size: 4 KiB
    sb[194..196].copy_from_slice(&1024u16.to_le_bytes()); // bucket_size
                                                          // csum: bcache's CRC-64 (ECMA-182, MSB first, inverted in and out)
                                                          // from the offset field to the end of the journal bucket keys (none).
    let crc = !sb[8..208].iter().fold(!0u64, |mut crc, &byte| {
        crc ^= u64::from(byte) << 56;
        for _ in 0..8 {
            crc = if crc >> 63 == 1 {
                (crc << 1) ^ 0x42f0_e1eb_a9ea_3693
            } else {
                crc << 1
            };
        }
        crc
    });
    sb[..8].copy_from_slice(&crc.to_le_bytes());
    write_at(disk, 4096, &sb);
}

/// ZFS labels, crafted from the on-disk format (OpenZFS's vdev_impl.h,
/// uberblock_impl.h, nvpair.c's XDR encoding, zio_checksum.c's label
/// checksums), because Debian main has no ZFS tools: what `zpool create
/// tank` writes on an unpartitioned device of this size, four labels of
/// 256 KiB (two at the start, two at the 256 KiB-aligned end), each with
/// the pool's configuration nvlist at 16 KiB and uberblocks of txgs 4..=7
/// in its ring at 128 KiB (4 KiB slots for ashift 12), every block with its
/// embedded SHA-256 label checksum. Only the objects behind the uberblocks'
/// root block pointer are missing: no one can import this pool, but
/// libblkid (and `zdb -l`) reads its labels.
fn zfs_labels(disk: &Path) {
    const LABEL: u64 = 256 * 1024;
    const PHYS_AT: u64 = 16 * 1024;
    const PHYS_SIZE: usize = 112 * 1024;
    const RING_AT: u64 = 128 * 1024;
    const SLOT: usize = 4096; // 1 << ashift
    const POOL_GUID: u64 = 0x1d5e_a1b0_0c4f_2a31;
    const GUID: u64 = 0x6b2a_9f10_3e7c_5d88;
    let size = fs::metadata(disk).unwrap().len();
    let psize = size / LABEL * LABEL;

    let mut tree = Nvlist::default();
    tree.string("type", "disk")
        .u64("id", 0)
        .u64("guid", GUID)
        .string("path", "/dev/sdb")
        .u64("whole_disk", 0)
        .u64("metaslab_array", 64)
        .u64("metaslab_shift", 24)
        .u64("ashift", 12)
        .u64("asize", psize - 4 * LABEL - 4 * MIB)
        .u64("is_log", 0)
        .u64("create_txg", 4);
    let mut config = Nvlist::default();
    config
        .u64("version", 5000)
        .string("name", "tank")
        .u64("state", 0)
        .u64("txg", 4)
        .u64("pool_guid", POOL_GUID)
        .u64("errata", 0)
        .string("hostname", "abnix-test")
        .u64("top_guid", GUID)
        .u64("guid", GUID)
        .u64("vdev_children", 1)
        .nvlist("vdev_tree", tree)
        .nvlist("features_for_read", Nvlist::default());
    // nvs_header_t: XDR encoding, little-endian host, two reserved bytes.
    let mut packed = vec![1u8, 1, 0, 0];
    packed.extend(config.encode());

    for l in 0..4u64 {
        let label = l * LABEL + if l < 2 { 0 } else { psize - 4 * LABEL };
        let mut phys = vec![0u8; PHYS_SIZE];
        phys[..packed.len()].copy_from_slice(&packed);
        seal(&mut phys, label + PHYS_AT);
        write_at(disk, label + PHYS_AT, &phys);
        for txg in 4..=7u64 {
            let at = label + RING_AT + (txg % 32) * SLOT as u64;
            let mut ub = vec![0u8; SLOT];
            let fields = [
                0x00ba_b10c,         // ub_magic
                5000,                // ub_version
                txg,                 // ub_txg
                POOL_GUID + GUID,    // ub_guid_sum: the root's and the disk's
                1_767_225_600 + txg, // ub_timestamp
            ];
            for (i, v) in fields.into_iter().enumerate() {
                ub[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
            }
            seal(&mut ub, at);
            write_at(disk, at, &ub);
        }
    }
}

/// Fills a block's embedded checksum (zio_eck_t, its last 40 bytes): the
/// magic, then SHA-256 of the block with the verifier (its offset on the
/// device) where the checksum goes, as four big-endian words stored in
/// the host's order.
fn seal(block: &mut [u8], offset: u64) {
    const ZEC_MAGIC: u64 = 0x0210_da7a_b10c_7a11;
    let eck = block.len() - 40;
    block[eck..eck + 8].copy_from_slice(&ZEC_MAGIC.to_le_bytes());
    block[eck + 8..eck + 16].copy_from_slice(&offset.to_le_bytes());
    block[eck + 16..].fill(0);
    let digest = Sha256::digest(&*block);
    for (i, word) in digest.chunks(8).enumerate() {
        let value = u64::from_be_bytes(word.try_into().unwrap());
        block[eck + 8 + i * 8..eck + 16 + i * 8].copy_from_slice(&value.to_le_bytes());
    }
}

/// An nvlist in OpenZFS's XDR encoding (nvpair.c): big-endian, every
/// field 4-byte aligned.
#[derive(Default)]
struct Nvlist {
    pairs: Vec<u8>,
}

fn xdr_string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u32).to_be_bytes());
    out.extend(s.as_bytes());
    out.resize(out.len().next_multiple_of(4), 0);
}

impl Nvlist {
    const UINT64: u32 = 8;
    const STRING: u32 = 9;
    const NVLIST: u32 = 19;

    /// One nvpair: its encoded and decoded sizes, name, type, one
    /// element, value.
    fn pair(&mut self, name: &str, kind: u32, value: &[u8], native_value: usize) -> &mut Self {
        let mut body = Vec::new();
        xdr_string(&mut body, name);
        body.extend(kind.to_be_bytes());
        body.extend(1u32.to_be_bytes());
        body.extend(value);
        let encoded = 8 + body.len();
        // nvpair_t (16 bytes) and the name, 8-aligned, then the value.
        let decoded = 16 + (name.len() + 1).next_multiple_of(8) + native_value;
        self.pairs.extend((encoded as u32).to_be_bytes());
        self.pairs.extend((decoded as u32).to_be_bytes());
        self.pairs.extend(body);
        self
    }

    fn u64(&mut self, name: &str, value: u64) -> &mut Self {
        self.pair(name, Self::UINT64, &value.to_be_bytes(), 8)
    }

    fn string(&mut self, name: &str, value: &str) -> &mut Self {
        let mut v = Vec::new();
        xdr_string(&mut v, value);
        self.pair(
            name,
            Self::STRING,
            &v,
            (value.len() + 1).next_multiple_of(8),
        )
    }

    fn nvlist(&mut self, name: &str, list: Nvlist) -> &mut Self {
        self.pair(name, Self::NVLIST, &list.encode(), 24)
    }

    /// Version 0, NV_UNIQUE_NAME, the pairs, the two zero words that end
    /// a list.
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(0u32.to_be_bytes());
        out.extend(1u32.to_be_bytes());
        out.extend(&self.pairs);
        out.extend([0u8; 8]);
        out
    }
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            name: "xfs",
            size: 320 * MIB,
            build: |p| {
                run_tool("mkfs.xfs", &["-q", "-L", "data01", path_arg(p)]);
            },
            named: Some("XFS filesystem labelled \"data01\""),
        },
        Kind {
            name: "btrfs",
            size: 256 * MIB,
            build: |p| {
                run_tool("mkfs.btrfs", &["-q", "-L", "pool", path_arg(p)]);
            },
            named: Some("btrfs filesystem labelled \"pool\""),
        },
        Kind {
            name: "ntfs",
            size: 128 * MIB,
            build: |p| {
                run_tool("mkntfs", &["-Q", "-F", "-q", "-L", "win", path_arg(p)]);
            },
            named: Some("NTFS filesystem labelled \"win\""),
        },
        Kind {
            name: "zfs",
            size: 128 * MIB,
            build: zfs_labels,
            named: Some("ZFS pool member labelled \"tank\""),
        },
        Kind {
            name: "f2fs",
            size: 128 * MIB,
            build: |p| {
                run_tool("mkfs.f2fs", &["-q", "-l", "flash", path_arg(p)]);
            },
            named: Some("F2FS filesystem labelled \"flash\""),
        },
        Kind {
            name: "bcache",
            size: 128 * MIB,
            build: bcache_backing_device,
            named: Some("bcache device"),
        },
        Kind {
            name: "bare MBR",
            size: 128 * MIB,
            build: |p| write_at(p, 510, &[0x55, 0xAA]),
            named: Some("MBR partition table without partitions"),
        },
        Kind {
            name: "protective MBR alone",
            size: 128 * MIB,
            build: |p| {
                let mut record = [0u8; 16];
                record[4] = 0xEE;
                record[8..12].copy_from_slice(&1u32.to_le_bytes());
                record[12..16].copy_from_slice(&((128 * MIB / 512 - 1) as u32).to_le_bytes());
                write_at(p, 446, &record);
                write_at(p, 510, &[0x55, 0xAA]);
            },
            named: Some("damaged GPT partition table"),
        },
        Kind {
            name: "hybrid ISO",
            size: 128 * MIB,
            build: hybrid_iso,
            named: Some("ISO 9660 filesystem labelled \"ABNIX_TEST\""),
        },
        Kind {
            name: "LUKS2",
            size: 128 * MIB,
            build: |p| {
                let key = p.with_extension("key");
                fs::write(&key, "not a secret").unwrap();
                run_tool(
                    "cryptsetup",
                    &[
                        "luksFormat",
                        "--batch-mode",
                        "--type",
                        "luks2",
                        "--label",
                        "vault",
                        // Fast key derivation: a test, not a secret.
                        "--pbkdf",
                        "pbkdf2",
                        "--pbkdf-force-iterations",
                        "1000",
                        "--key-file",
                        path_arg(&key),
                        path_arg(p),
                    ],
                );
            },
            named: Some("LUKS2 encrypted volume"),
        },
        Kind {
            name: "random bytes at 1 MiB",
            size: 128 * MIB,
            build: |p| write_at(p, MIB, &pattern(64 * 1024, 1)),
            named: Some("unknown non-zero data at offset 1 MiB"),
        },
        Kind {
            name: "random bytes at the end",
            size: 128 * MIB,
            build: |p| write_at(p, 128 * MIB - 4096, &pattern(4096, 2)),
            named: Some("unknown non-zero data at offset 131068 KiB (4 KiB before the end)"),
        },
        Kind {
            name: "random bytes at 64 MiB (a btrfs mirror)",
            size: 128 * MIB,
            build: |p| write_at(p, 64 * MIB, &pattern(4096, 3)),
            named: Some("unknown non-zero data at offset 64 MiB"),
        },
        Kind {
            name: "all zeros",
            size: 128 * MIB,
            build: |_| {},
            named: None,
        },
    ]
}

/// The fixture's request for `disk`: systemd-boot (no GRUB image to build),
/// no wiping.
fn request(f: &Fixture, target: TargetRequest) -> Request {
    let mut request = f.request(super::tests::systemd_boot());
    request.target = target;
    request
}

/// The image file of `kind`, made in `dir`.
fn build(kind: &Kind, dir: &Path) -> PathBuf {
    let path = dir.join(format!("{}.img", kind.name.replace(' ', "-")));
    File::create(&path).unwrap().set_len(kind.size).unwrap();
    (kind.build)(&path);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        kind.size,
        "{}",
        kind.name
    );
    path
}

/// `prepare` refuses `target` naming the kind, or accepts the blank disk.
fn check_refused(kind: &Kind, f: &Fixture, target: TargetRequest, system: &dyn System) {
    let what = format!("{} on {target:?}", kind.name);
    match (kind.named, prepare(&request(f, target), system)) {
        (Some(named), Err(InstallError::NotEmpty { found, .. })) => {
            assert!(found.contains(named), "{what}: {found}")
        }
        (None, Ok(plan)) => {
            assert!(plan.contents.is_blank(), "{what}: {}", plan.contents);
            assert!(
                plan.to_string()
                    .contains("which holds nothing: the first 8 MiB"),
                "{what}"
            );
        }
        (_, other) => panic!("{what}: {other:?}"),
    }
}

/// What libblkid finds on a disk, by type.
fn blkid_types(path: &Path) -> Vec<String> {
    Libblkid::default()
        .probe(path)
        .unwrap()
        .into_iter()
        .map(|s| s.kind)
        .collect()
}

/// Every kind on a file and on a loop device: refused, bytes unchanged.
#[test]
fn what_a_disk_holds_is_refused_without_wipe_on_files_and_loop_devices() {
    require_root("the loop devices of the matrix");
    let f = Fixture::new();
    for kind in kinds() {
        let image = build(&kind, f.tmp.path());
        let before = file_sha256(&image);
        let file = TargetRequest::File {
            path: image.clone(),
            size: kind.size,
        };
        check_refused(&kind, &f, file, &SysRoot::default());
        assert_eq!(
            file_sha256(&image),
            before,
            "{}: the file changed",
            kind.name
        );

        let device = LoopDevice::attach(&image, 512, false);
        check_refused(
            &kind,
            &f,
            TargetRequest::Disk(device.path.clone()),
            &SysRoot::default(),
        );
        drop(device);
        assert_eq!(
            file_sha256(&image),
            before,
            "{}: the device changed",
            kind.name
        );
        fs::remove_file(&image).unwrap();
    }
}

/// With --wipe each kind is installed over, and nothing of it is left for
/// libblkid or abnix's probe: not the btrfs mirror at 64 MiB, not ZFS's
/// labels at the end, not NTFS's backup boot sector, which no partition's
/// contents cover.
#[test]
fn with_wipe_nothing_of_what_was_there_is_left() {
    let f = Fixture::new();
    for kind in kinds().into_iter().filter(|k| k.named.is_some()) {
        let image = build(&kind, f.tmp.path());
        let mut wipe = request(
            &f,
            TargetRequest::File {
                path: image.clone(),
                size: kind.size,
            },
        );
        wipe.wipe = true;
        let plan = prepare(&wipe, &SysRoot::default()).unwrap();
        assert!(
            plan.to_string().contains("ERASING what it holds: "),
            "{}",
            kind.name
        );
        plan.install(&NoProgress).unwrap();
        let mut types = blkid_types(&image);
        types.sort();
        assert_eq!(types, ["PMBR", "gpt", "gpt"], "{}", kind.name);
        let found = crate::probe::probe_signatures(&mut File::open(&image).unwrap()).unwrap();
        assert!(
            matches!(found.as_slice(), [s] if matches!(s.kind, SignatureKind::Gpt(_))),
            "{}: {found:?}",
            kind.name
        );
        // The btrfs mirror at 64 MiB lies in slot B, which the installation
        // does not write: only the wipe cleared it.
        let mut mirror = vec![0u8; 4096];
        std::os::unix::fs::FileExt::read_exact_at(
            &File::open(&image).unwrap(),
            &mut mirror,
            64 * MIB,
        )
        .unwrap();
        assert!(plan.layout.slot_b.start <= 64 * MIB, "{}", kind.name);
        assert!(mirror.iter().all(|&b| b == 0), "{}: 64 MiB", kind.name);
        fs::remove_file(&image).unwrap();
    }
}

/// The old probe's kinds (ext2/3/4, FAT, swap, EROFS, MBR, ISO 9660, LVM2,
/// LUKS, md RAID) are named once each, libblkid agreeing with abnix's
/// probe rather than adding a second name.
#[test]
fn the_old_probes_kinds_are_named_once() {
    for (name, size, build, kind, _) in crate::probe::tests::cases() {
        let file = tempfile::NamedTempFile::new().unwrap();
        file.as_file().set_len(size).unwrap();
        build(file.path());
        let contents = Contents::examine(
            &mut File::open(file.path()).unwrap(),
            file.path(),
            &Libblkid::default(),
        )
        .unwrap();
        assert!(!contents.is_blank(), "{name}");
        assert_eq!(contents.to_string(), kind.to_string(), "{name}");
    }
}

/// Without wipefs nothing proves a disk blank: an all-zero file is refused
/// saying so, `--wipe` goes ahead and says plainly that libblkid could not
/// look, and a file the installer creates needs no proof.
#[test]
fn without_util_linux_a_disk_is_not_proven_blank() {
    let f = Fixture::new();
    let mut system = FakeSystem::new(FakeRoot::new());
    system.libblkid = Libblkid {
        program: "/nonexistent/wipefs".into(),
    };
    File::create(f.disk()).unwrap().set_len(128 * MIB).unwrap();
    let mut existing = request(
        &f,
        TargetRequest::File {
            path: f.disk(),
            size: 128 * MIB,
        },
    );
    let err = prepare(&existing, &system).unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "cannot prove {} blank: wipefs (util-linux) is not installed, so libblkid cannot look for what abnix's own probe does not know (XFS, btrfs, ZFS, NTFS, …); install util-linux, or pass --wipe to erase whatever it holds",
            f.disk().display()
        )
    );
    existing.wipe = true;
    let plan = prepare(&existing, &system).unwrap();
    assert!(
        plan.to_string().contains(
            "ERASING what it holds: nothing abnix's own probe can see (libblkid could not look: wipefs, from util-linux, is not installed)"
        ),
        "{plan}"
    );
    fs::remove_file(f.disk()).unwrap();
    existing.wipe = false;
    let plan = prepare(&existing, &system).unwrap();
    assert_eq!(plan.contents, Contents::new_file());
}

/// What a disk holds is read again just before the first write: a
/// filesystem made during the countdown stops the installation with
/// nothing written; so does a file appearing where a new one was to be.
#[test]
fn a_disk_written_to_during_the_countdown_is_not_touched() {
    let f = Fixture::new();
    File::create(f.disk()).unwrap().set_len(128 * MIB).unwrap();
    let plan = prepare(
        &request(
            &f,
            TargetRequest::File {
                path: f.disk(),
                size: 128 * MIB,
            },
        ),
        &SysRoot::default(),
    )
    .unwrap();
    run_tool(
        "mkfs.ext4",
        &["-q", "-F", "-L", "late", path_arg(&f.disk())],
    );
    let before = file_sha256(&f.disk());
    let err = plan.install(&NoProgress).unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, InstallError::Changed { .. }), "{text}");
    assert!(
        text.ends_with("changed since it was checked, nothing was written: it held nothing: the first 8 MiB, the last 2 MiB and btrfs's backup superblocks are zeros, and libblkid finds no signature, now it holds ext4 filesystem labelled \"late\""),
        "{text}"
    );
    assert_eq!(file_sha256(&f.disk()), before);

    fs::remove_file(f.disk()).unwrap();
    let plan = prepare(
        &f.request(super::tests::systemd_boot()),
        &SysRoot::default(),
    )
    .unwrap();
    fs::write(f.disk(), "someone else's").unwrap();
    let err = plan.install(&NoProgress).unwrap_err().to_string();
    assert!(
        err.ends_with("disk.img: it did not exist when it was checked, and now it does"),
        "{err}"
    );
    assert_eq!(fs::read(f.disk()).unwrap(), b"someone else's");
}

/// A loop device with a partitioned, formatted disk, allowed to be wiped:
/// a partition mounted during the countdown makes the kernel refuse the
/// exclusive open, and nothing is written; unmounted, the same plan
/// installs, through the one exclusive descriptor, mkfs.ext4 included.
#[test]
fn a_partition_mounted_during_the_countdown_stops_the_install() {
    require_root("the O_EXCL test");
    let f = Fixture::new();
    let image = f.disk();
    File::create(&image).unwrap().set_len(128 * MIB).unwrap();
    abnix_formats::testutil::sgdisk(&["-o", "-n", "1:0:+32M", "-c", "1:photos"], &image);
    let device = LoopDevice::attach(&image, 512, true);
    device.add_partitions();
    run_tool(
        "mkfs.ext4",
        &["-q", "-L", "photos", path_arg(&device.partition(1))],
    );

    let mut wipe = request(&f, TargetRequest::Disk(device.path.clone()));
    wipe.wipe = true;
    let plan = prepare(&wipe, &SysRoot::default()).unwrap();
    let text = plan.to_string();
    assert!(
        text.contains("ERASING what it holds: GPT partition table: 1 \"photos\""),
        "{text}"
    );
    assert!(
        text.contains(&format!("onto {} (128.0 MiB", device.path.display())),
        "{text}"
    );

    let before = file_sha256(&image);
    let mounted = Mounted::read_only(&device.partition(1));
    let err = plan.install(&NoProgress).unwrap_err();
    assert!(
        matches!(
            err,
            InstallError::Open {
                source: OpenError::Busy(_),
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("the kernel refuses exclusive access"),
        "{err}"
    );
    drop(mounted);
    assert_eq!(file_sha256(&image), before, "nothing written");

    plan.install(&NoProgress).unwrap();
    let mut disk = File::open(&device.path).unwrap();
    let gpt = abnix_formats::gpt::Gpt::read(&mut disk, 512).unwrap();
    assert_eq!(Layout::from_gpt(&gpt, 128 * MIB).unwrap(), plan.layout);
    let mut types = blkid_types(&device.path);
    types.sort();
    assert_eq!(types, ["PMBR", "gpt", "gpt"]);
    // abnix-rw, formatted by mkfs.ext4 through the installer's descriptor.
    super::tests::check_rw(&device.path, &plan.layout);
}

/// The device opened for writing must be the one examined: a loop device
/// grown during the countdown is refused by size, nothing written.
#[test]
fn a_device_that_changed_under_the_installer_is_not_written() {
    require_root("the loop device identity test");
    let f = Fixture::new();
    let image = f.disk();
    File::create(&image).unwrap().set_len(128 * MIB).unwrap();
    let device = LoopDevice::attach(&image, 512, false);
    let plan = prepare(
        &request(&f, TargetRequest::Disk(device.path.clone())),
        &SysRoot::default(),
    )
    .unwrap();
    assert!(plan.contents.is_blank(), "{}", plan.contents);

    File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .set_len(160 * MIB)
        .unwrap();
    run_tool("losetup", &["--set-capacity", path_arg(&device.path)]);
    let err = plan.install(&NoProgress).unwrap_err().to_string();
    assert!(
        err.ends_with(&format!(
            "{}: it is not the disk that was checked: the size was {}, now {}",
            device.path.display(),
            128 * MIB,
            160 * MIB
        )),
        "{err}"
    );
    let mut untouched = vec![0u8; (160 * MIB) as usize];
    std::io::Read::read_exact(&mut File::open(&image).unwrap(), &mut untouched).unwrap();
    assert!(untouched.iter().all(|&b| b == 0), "nothing written");
}
