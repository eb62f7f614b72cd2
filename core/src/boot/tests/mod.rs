//! File-level tests of both backends on an ESP in memory: the update
//! scenario with simulated boots ([`scenario`]), refused operations, and
//! power cuts at many byte offsets of every operation ([`power_cut`]).

mod power_cut;
mod scenario;

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use uuid::Uuid;

use super::grubcfg::GrubCfgOptions;
use super::grubenv::{decode_state, encode_state};
use super::{
    efi, esp, model, BootControl, BootError, BootFiles, BootStatus, EfiApp, GrubBoot, GrubInstall,
    SlotInfo, SlotState, SystemdBoot,
};
use crate::digest::{Digest, Expected, Mismatch, VerifyingReader};
use crate::disk::Disk;
use crate::fat::{FatFs, FormatOptions};
use crate::layout::Arch;
use crate::slot::Slot;
use crate::system_disk::Bootloader;
use crate::testutil::pattern;

/// Room for FAT32 with 512-byte clusters (at least 65525 of them).
const ESP_SIZE: usize = 40 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Grub,
    SystemdBoot,
}

const KINDS: [Kind; 2] = [Kind::Grub, Kind::SystemdBoot];

/// An ESP image in memory whose writes stay in its own pages, so each
/// power-cut run starts from the same image for free.
type Overlay = crate::disk::Overlay<Arc<Vec<u8>>>;

/// A fresh overlay whose base is this disk's current contents.
fn flatten(disk: &Overlay) -> Overlay {
    Overlay::new(Arc::new(disk.to_vec().expect("in memory")))
}

/// A disk that logs where each write lands, for choosing cut points.
struct Recording<D> {
    inner: D,
    /// (disk offset, length) of each write, in order.
    writes: Vec<(u64, usize)>,
}

impl<D: Disk> Read for Recording<D> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<D: Disk> Write for Recording<D> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let pos = self.inner.stream_position()?;
        let n = self.inner.write(buf)?;
        self.writes.push((pos, n));
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<D: Disk> Seek for Recording<D> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<D: Disk> Disk for Recording<D> {
    fn sync(&mut self) -> io::Result<()> {
        self.inner.sync()
    }

    fn size(&mut self) -> io::Result<u64> {
        self.inner.size()
    }
}

fn format_options() -> FormatOptions {
    FormatOptions {
        label: "ABNIX-ESP".into(),
        volume_id: 0x0abc_0001,
        sector_size: 512,
    }
}

/// A fresh ESP with the bootloader of `kind` installed.
fn installed(kind: Kind) -> Overlay {
    installed_for(kind, Arch::X86_64)
}

/// The stand-in for a bootloader's EFI binary.
fn stand_in_loader(kind: Kind, arch: Arch) -> EfiApp {
    EfiApp::new(arch, efi::stand_in(arch, &format!("{kind:?}"))).unwrap()
}

/// A fresh ESP with the bootloader of `kind` installed for `arch`.
fn installed_for(kind: Kind, arch: Arch) -> Overlay {
    let disk = Overlay::new(Arc::new(vec![0; ESP_SIZE]));
    let loader = stand_in_loader(kind, arch);
    match kind {
        Kind::Grub => GrubBoot::install(
            disk,
            &GrubInstall {
                format: format_options(),
                efi_image: Some(loader),
                cfg: GrubCfgOptions::default(),
            },
        )
        .unwrap()
        .into_inner(),
        Kind::SystemdBoot => SystemdBoot::install(disk, &format_options(), &loader)
            .unwrap()
            .into_inner(),
    }
}

/// Runs `op` on the backend of `kind` over `disk`; gives the disk back.
fn with_backend<D: Disk, R>(
    kind: Kind,
    disk: D,
    op: impl FnOnce(&mut dyn BootControl) -> R,
) -> (R, D) {
    match kind {
        Kind::Grub => {
            let mut boot = GrubBoot::open(disk).expect("the ESP opens");
            let result = op(&mut boot);
            (result, boot.into_inner())
        }
        Kind::SystemdBoot => {
            let mut boot = SystemdBoot::open(disk).expect("the ESP opens");
            let result = op(&mut boot);
            (result, boot.into_inner())
        }
    }
}

fn status(kind: Kind, disk: Overlay) -> (BootStatus, Overlay) {
    let (status, disk) = with_backend(kind, disk, |b| b.status());
    (status.expect("status"), disk)
}

fn kernel(version: u64) -> Vec<u8> {
    pattern(5000 + version as usize * 7, version)
}

fn initrd(version: u64) -> Vec<u8> {
    pattern(9000 + version as usize * 3, 100 + version)
}

fn info(version: u64) -> SlotInfo {
    SlotInfo {
        version,
        id: Uuid::from_u128(u128::from(version)),
        label: format!("test v{version}"),
        cmdline: format!("init=/nix/store/v{version}/init quiet"),
    }
}

/// Boot files of `info` whose kernel and initrd are expected to be
/// `kernel` and `initrd`, read from `kernel_source` and `initrd_source`.
fn boot_files_from<'a>(
    info: SlotInfo,
    (kernel, kernel_source): (&[u8], &'a mut dyn Read),
    (initrd, initrd_source): (&[u8], &'a mut dyn Read),
) -> BootFiles<'a> {
    let expected =
        |what: &str, data: &[u8]| Expected::new(what, data.len() as u64, Digest::of(data));
    BootFiles::new(
        info,
        VerifyingReader::new(kernel_source, expected("kernel", kernel)),
        VerifyingReader::new(initrd_source, expected("initrd", initrd)),
    )
}

/// Writes `info`'s boot files, `k` and `i`, into `slot`.
fn write_files(
    boot: &mut dyn BootControl,
    slot: Slot,
    info: SlotInfo,
    k: &[u8],
    i: &[u8],
) -> Result<(), BootError> {
    let (mut kernel, mut initrd) = (k, i);
    boot.write_boot_files(
        slot,
        boot_files_from(info, (k, &mut kernel), (i, &mut initrd)),
    )
}

/// Writes version `version` into `slot` the way an update does.
fn write_version(boot: &mut dyn BootControl, slot: Slot, version: u64) -> Result<(), BootError> {
    let (k, i) = (kernel(version), initrd(version));
    boot.check_boot_files(slot, &info(version), k.len() as u64, i.len() as u64)?;
    boot.mark_bad(slot)?;
    write_files(boot, slot, info(version), &k, &i)
}

/// What the bootloader does at power-on ([`model::power_on`]), checked to
/// pick the slot `status().next` names. Returns the slot after checking
/// that its files are intact.
fn power_on(kind: Kind, disk: Overlay) -> (Option<Slot>, Overlay) {
    let (status, disk) = status(kind, disk);
    let Some(slot) = status.next else {
        return (None, disk);
    };
    let bootloader = match kind {
        Kind::Grub => Bootloader::Grub,
        Kind::SystemdBoot => Bootloader::SystemdBoot,
    };
    let mut disk = disk;
    let booted = model::power_on(&mut disk, bootloader, &status).unwrap();
    assert_eq!(
        booted,
        Some(slot),
        "the bootloader's model agrees with status"
    );
    let mut fs = FatFs::open(disk).unwrap();
    let version = status
        .slot(slot)
        .info
        .as_ref()
        .expect("a booted slot is complete")
        .version;
    assert_eq!(
        fs.read_file(&esp::kernel(slot)).unwrap(),
        kernel(version),
        "kernel of slot {slot}"
    );
    assert_eq!(
        fs.read_file(&esp::initrd(slot)).unwrap(),
        initrd(version),
        "initrd of slot {slot}"
    );
    (Some(slot), fs.into_inner())
}

/// Each slot's state and version, and the slot that boots next.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Summary {
    slots: [(SlotState, Option<u64>); 2],
    next: Option<Slot>,
}

fn summary(status: &BootStatus) -> Summary {
    Summary {
        slots: Slot::ALL.map(|s| {
            let slot = status.slot(s);
            (slot.state, slot.info.as_ref().map(|i| i.version))
        }),
        next: status.next,
    }
}

#[test]
fn failed_trial_is_the_other_slot_without_tries() {
    let status = |a, b| BootStatus {
        next: Some(Slot::A),
        slots: [
            super::SlotStatus {
                slot: Slot::A,
                state: a,
                info: None,
            },
            super::SlotStatus {
                slot: Slot::B,
                state: b,
                info: None,
            },
        ],
    };
    let failed = status(SlotState::Good, SlotState::Trial { tries_left: 0 });
    assert_eq!(failed.failed_trial(Slot::A).map(|s| s.slot), Some(Slot::B));
    // Running the last try of the trial is not a failure (yet).
    assert_eq!(failed.failed_trial(Slot::B), None);
    let pending = status(SlotState::Good, SlotState::Trial { tries_left: 2 });
    assert_eq!(pending.failed_trial(Slot::A), None);
}

/// Slot A good with version 1, slot B marked bad: ready for version 2.
fn b_marked_bad(kind: Kind) -> Overlay {
    let (result, disk) = with_backend(kind, installed(kind), |b| {
        write_version(b, Slot::A, 1)?;
        b.mark_good(Slot::A)?;
        b.mark_bad(Slot::B)
    });
    result.unwrap();
    flatten(&disk)
}

/// A kernel or initrd of the right length whose bytes are not the ones
/// expected: written as it is read (a writer of a known size stops at
/// that size), then refused by the check, so the slot gets no slot file,
/// no marker, and keeps none of the files.
#[test]
fn boot_files_that_differ_from_what_is_expected_never_make_the_slot_complete() {
    for kind in KINDS {
        for tampered in ["kernel", "initrd"] {
            let (k, i) = (kernel(2), initrd(2));
            let mut bad = if tampered == "kernel" {
                k.clone()
            } else {
                i.clone()
            };
            let middle = bad.len() / 2;
            bad[middle] ^= 0x01;
            let (mut kernel_source, mut initrd_source) = match tampered {
                "kernel" => (&bad[..], &i[..]),
                _ => (&k[..], &bad[..]),
            };
            let (result, disk) = with_backend(kind, b_marked_bad(kind), |b| {
                b.write_boot_files(
                    Slot::B,
                    boot_files_from(info(2), (&k, &mut kernel_source), (&i, &mut initrd_source)),
                )
            });
            let err = result.unwrap_err();
            assert!(
                matches!(&err, BootError::Unverified(Mismatch::Hash { what, .. }) if what == tampered),
                "{kind:?}, {tampered}: {err}"
            );
            let (status, disk) = status(kind, disk);
            assert_eq!(
                summary(&status).slots,
                [(SlotState::Good, Some(1)), (SlotState::Bad, None)],
                "{kind:?}, {tampered}"
            );
            let (activated, disk) = with_backend(kind, disk, |b| b.activate(Slot::B, 3));
            assert!(
                matches!(activated, Err(BootError::NotComplete(Slot::B))),
                "{kind:?}: {activated:?}"
            );
            let mut fs = FatFs::open(disk).unwrap();
            for path in [
                esp::kernel(Slot::B),
                esp::initrd(Slot::B),
                esp::slot_info(Slot::B),
            ] {
                assert!(!fs.exists(&path).unwrap(), "{kind:?}: {path} was left");
            }
        }
    }
}

/// The files of a signed version: its meta and signatures are kept
/// beside its kernel and initrd, and they are written only with the proof
/// that the slot holds the meta's image.
#[test]
fn a_signed_version_keeps_its_meta_beside_its_boot_files() {
    let key = crate::sign::SecretKey::generate("boot-test").unwrap();
    let (k, i) = (kernel(2), initrd(2));
    let artifact = |name: &str, data: &[u8]| crate::meta::Artifact {
        object: name.into(),
        size: data.len() as u64,
        sha256: Digest::of(data),
    };
    let image = crate::pipeline::VerifiedImage::of(b"root filesystem");
    let meta = crate::meta::Meta {
        format: crate::meta::FORMAT_VERSION,
        version: 2,
        id: info(2).id,
        label: info(2).label,
        arch: Arch::X86_64,
        published: None,
        image: crate::meta::Image {
            object: "2.img.zst".into(),
            compressed_size: 10,
            size: image.size(),
            sha256: image.sha256(),
            fs: crate::meta::FsType::Ext4,
        },
        index: artifact("2.index", b"index"),
        kernel: artifact("2.kernel", &k),
        initrd: artifact("2.initrd", &i),
        cmdline: info(2).cmdline,
    };
    let signed = crate::meta::SignedMeta::sign(meta, &[&key]).unwrap();
    let other_image = crate::pipeline::VerifiedImage::of(b"another root");
    for kind in KINDS {
        let (mut kernel_source, mut initrd_source) = (&k[..], &i[..]);
        let err = BootFiles::of_version(
            &signed,
            &other_image,
            &mut kernel_source,
            &mut initrd_source,
        )
        .err()
        .unwrap();
        assert!(
            matches!(err, BootError::ImageNotVerified { version: 2 }),
            "{err}"
        );
        let (result, disk) = with_backend(kind, b_marked_bad(kind), |b| {
            let files =
                BootFiles::of_version(&signed, &image, &mut kernel_source, &mut initrd_source)?;
            b.write_boot_files(Slot::B, files)
        });
        result.unwrap();
        let mut fs = FatFs::open(disk).unwrap();
        assert_eq!(
            fs.read_file(&esp::slot_meta(Slot::B)).unwrap(),
            signed.bytes()
        );
        assert_eq!(
            fs.read_file(&esp::slot_signatures(Slot::B)).unwrap(),
            signed.signatures()
        );
        assert_eq!(fs.read_file(&esp::kernel(Slot::B)).unwrap(), k);
    }
}
