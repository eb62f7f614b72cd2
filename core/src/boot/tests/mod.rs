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

/// Writes version `version` into `slot` the way an update does.
fn write_version(boot: &mut dyn BootControl, slot: Slot, version: u64) -> Result<(), BootError> {
    let (k, i) = (kernel(version), initrd(version));
    boot.check_boot_files(slot, &info(version), k.len() as u64, i.len() as u64)?;
    boot.mark_bad(slot)?;
    boot.write_boot_files(
        slot,
        &mut BootFiles {
            info: info(version),
            kernel: &mut &k[..],
            kernel_len: k.len() as u64,
            initrd: &mut &i[..],
            initrd_len: i.len() as u64,
        },
    )
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
