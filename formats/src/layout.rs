//! The A/B disk layout (DESIGN §2) as a pure function of (disk size, sector
//! size, config).
//!
//! | # | name         | type               | size            |
//! |---|--------------|--------------------|-----------------|
//! | 1 | `abnix-bios` | BIOS boot          | 1 MiB           |
//! | 2 | `abnix-esp`  | EFI System         | `esp_size`      |
//! | 3 | `abnix-a`    | Linux root (arch)  | `slot_size`     |
//! | 4 | `abnix-b`    | Linux root (arch)  | `slot_size`     |
//! | 5 | `abnix-rw`   | Linux filesystem   | rest of the disk |
//!
//! Every disk has the same five partitions: on aarch64, which boots through
//! UEFI only, `abnix-bios` stays empty (see [`Arch::has_bios`]).
//!
//! Every partition starts and ends on a 1 MiB boundary; the first starts at
//! 1 MiB. `abnix-rw` ends at the last usable LBA rounded down to 1 MiB, so
//! it can grow when the disk does.
//!
//! Growing a template written to a bigger disk (`abnix-update grow`):
//! [`Gpt::read`], [`grow_gpt`], and [`Gpt::write`] when it reports a change;
//! then tell the kernel (`blockdev::resize_partition`) and grow the
//! filesystem.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::gpt::{Gpt, Guid, Partition, ENTRY_COUNT, ENTRY_SIZE};
use crate::slot::Slot;

pub const MIB: u64 = 1024 * 1024;
const GIB: u64 = 1024 * MIB;
/// Partition alignment: 1 MiB, a multiple of every erase block and RAID
/// stripe in common use, and what every partitioning tool defaults to.
pub(crate) const ALIGNMENT: u64 = MIB;
/// Size of `abnix-bios`: GRUB's core.img for BIOS needs well under 1 MiB.
pub(crate) const BIOS_SIZE: u64 = MIB;

pub(crate) const BIOS_NAME: &str = "abnix-bios";
pub(crate) const ESP_NAME: &str = "abnix-esp";
pub const RW_NAME: &str = "abnix-rw";

/// The CPU architecture of the machines a disk is for. Every fact abnix
/// keeps per architecture is a method here: the slots' root partition type,
/// the file names UEFI and the bootloaders use, GRUB's EFI platform and
/// serial port, and whether the machines have BIOS firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture this program was built for (x86-64 unless aarch64):
    /// the default, and what a device's own disk is for.
    pub fn native() -> Arch {
        if cfg!(target_arch = "aarch64") {
            Arch::Aarch64
        } else {
            Arch::X86_64
        }
    }

    /// The name on command lines and in config files (`uname -m`'s).
    fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    /// The Discoverable Partitions Specification root type for the
    /// architecture.
    pub fn root_type(self) -> Guid {
        match self {
            Arch::X86_64 => Guid::LINUX_ROOT_X86_64,
            Arch::Aarch64 => Guid::LINUX_ROOT_AARCH64,
        }
    }

    pub fn from_root_type(guid: Guid) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.root_type() == guid)
    }

    /// UEFI's short name of the architecture in file names (UEFI 2.10
    /// §3.5.1.1: `BOOTX64.EFI`, `BOOTAA64.EFI`); systemd-boot's binaries
    /// use it too, in lowercase (`systemd-bootaa64.efi`).
    pub fn uefi_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "X64",
            Arch::Aarch64 => "AA64",
        }
    }

    /// The machine type in the header of an EFI application for the
    /// architecture (PE/COFF: IMAGE_FILE_MACHINE_AMD64, _ARM64).
    pub fn pe_machine(self) -> u16 {
        match self {
            Arch::X86_64 => 0x8664,
            Arch::Aarch64 => 0xaa64,
        }
    }

    pub fn from_pe_machine(machine: u16) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.pe_machine() == machine)
    }

    /// GRUB's EFI platform: `grub-mkimage -O` and the name of its module
    /// directory.
    pub fn grub_efi_platform(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-efi",
            Arch::Aarch64 => "arm64-efi",
        }
    }

    /// Whether GRUB finds the serial console as the PC's first port
    /// (`serial --unit=0`, COM1). GRUB on arm64-efi has no such port ("serial
    /// port `com0' isn't found"): there the firmware's console, which GRUB's
    /// own `console` terminal writes to, is the serial port of a headless
    /// machine already.
    pub fn has_pc_serial_port(self) -> bool {
        match self {
            Arch::X86_64 => true,
            Arch::Aarch64 => false,
        }
    }

    /// Whether machines of the architecture may boot through BIOS (GRUB's
    /// i386-pc boot code in the MBR and `abnix-bios`). aarch64 machines
    /// boot through UEFI only: their `abnix-bios` stays empty, kept so that
    /// every abnix disk has one table.
    pub fn has_bios(self) -> bool {
        match self {
            Arch::X86_64 => true,
            Arch::Aarch64 => false,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// By its name, in signed metas.
impl serde::Serialize for Arch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Arch {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Arch, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown architecture {0:?} (expected \"x86_64\" or \"aarch64\")")]
pub struct UnknownArch(String);

impl FromStr for Arch {
    type Err = UnknownArch;

    fn from_str(s: &str) -> Result<Arch, UnknownArch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| UnknownArch(s.to_owned()))
    }
}

/// The sizes the layout is computed from, in bytes (multiples of 1 MiB).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayoutConfig {
    pub slot_size: u64,
    pub esp_size: u64,
    /// The least `abnix-rw` may get; a smaller disk is refused.
    pub min_rw_size: u64,
    pub arch: Arch,
}

impl LayoutConfig {
    pub const DEFAULT_ESP_SIZE: u64 = 512 * MIB;
    pub const DEFAULT_MIN_RW_SIZE: u64 = 64 * MIB;

    /// `slot_size` slots, the default ESP and minimum rw sizes, and the
    /// native architecture.
    pub fn new(slot_size: u64) -> LayoutConfig {
        LayoutConfig {
            slot_size,
            esp_size: LayoutConfig::DEFAULT_ESP_SIZE,
            min_rw_size: LayoutConfig::DEFAULT_MIN_RW_SIZE,
            arch: Arch::native(),
        }
    }
}

/// One partition of the layout, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartSpec {
    pub number: u32,
    pub name: &'static str,
    pub type_guid: Guid,
    pub start: u64,
    pub size: u64,
}

impl PartSpec {
    /// The first byte after the partition.
    fn end(&self) -> u64 {
        self.start + self.size
    }

    fn first_lba(&self, sector_size: u32) -> u64 {
        self.start / u64::from(sector_size)
    }

    /// Inclusive, as GPT counts.
    fn last_lba(&self, sector_size: u32) -> u64 {
        self.end() / u64::from(sector_size) - 1
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("disk too small: the layout needs {needed} bytes ({}), the disk has {have} ({})", human(*needed), human(*have))]
    DiskTooSmall { needed: u64, have: u64 },
    #[error("unsupported logical sector size {0} (abnix supports 512 and 4096)")]
    UnsupportedSectorSize(u32),
    #[error("{what} size {size} is not a multiple of 1 MiB")]
    NotMibMultiple { what: &'static str, size: u64 },
    #[error("{0} size is zero")]
    ZeroSize(&'static str),
    #[error("not an abnix disk: {0}")]
    NotAbnix(String),
}

/// The partitions of an abnix disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub disk_size: u64,
    pub sector_size: u32,
    pub bios: PartSpec,
    pub esp: PartSpec,
    pub slot_a: PartSpec,
    pub slot_b: PartSpec,
    pub rw: PartSpec,
}

fn check_sector_size(sector_size: u32) -> Result<(), LayoutError> {
    match sector_size {
        512 | 4096 => Ok(()),
        other => Err(LayoutError::UnsupportedSectorSize(other)),
    }
}

/// Bytes after the last usable LBA: the backup entry array (128 entries of
/// 128 bytes) and the backup header.
fn gpt_tail(sector_size: u32) -> u64 {
    (ENTRY_COUNT * ENTRY_SIZE) as u64 + u64::from(sector_size)
}

/// Where `abnix-rw` ends on a disk of `disk_size` bytes: the end of the last
/// usable LBA, rounded down to the alignment.
fn rw_end(disk_size: u64, sector_size: u32) -> u64 {
    let whole_sectors = disk_size / u64::from(sector_size) * u64::from(sector_size);
    whole_sectors.saturating_sub(gpt_tail(sector_size)) / ALIGNMENT * ALIGNMENT
}

fn check_size(what: &'static str, size: u64) -> Result<(), LayoutError> {
    if size == 0 {
        Err(LayoutError::ZeroSize(what))
    } else if !size.is_multiple_of(MIB) {
        Err(LayoutError::NotMibMultiple { what, size })
    } else {
        Ok(())
    }
}

/// The partitions before `abnix-rw`, laid out from 1 MiB.
fn fixed_partitions(cfg: &LayoutConfig) -> [PartSpec; 4] {
    let root = cfg.arch.root_type();
    let bios = PartSpec {
        number: 1,
        name: BIOS_NAME,
        type_guid: Guid::BIOS_BOOT,
        start: ALIGNMENT,
        size: BIOS_SIZE,
    };
    let esp = PartSpec {
        number: 2,
        name: ESP_NAME,
        type_guid: Guid::EFI_SYSTEM,
        start: bios.end(),
        size: cfg.esp_size,
    };
    let slot_a = PartSpec {
        number: 3,
        name: Slot::A.partition_name(),
        type_guid: root,
        start: esp.end(),
        size: cfg.slot_size,
    };
    let slot_b = PartSpec {
        number: 4,
        name: Slot::B.partition_name(),
        type_guid: root,
        start: slot_a.end(),
        size: cfg.slot_size,
    };
    [bios, esp, slot_a, slot_b]
}

/// The smallest disk `compute` accepts for `cfg`: everything up to
/// `abnix-rw`, `min_rw_size` of it, and the backup GPT.
pub fn min_disk_size(sector_size: u32, cfg: &LayoutConfig) -> u64 {
    let [.., slot_b] = fixed_partitions(cfg);
    slot_b.end() + cfg.min_rw_size + gpt_tail(sector_size)
}

/// The layout for a disk of `disk_size` bytes with `sector_size`-byte
/// logical sectors.
pub fn compute(
    disk_size: u64,
    sector_size: u32,
    cfg: &LayoutConfig,
) -> Result<Layout, LayoutError> {
    check_sector_size(sector_size)?;
    check_size("slot", cfg.slot_size)?;
    check_size("ESP", cfg.esp_size)?;
    check_size("minimum rw", cfg.min_rw_size)?;
    let needed = min_disk_size(sector_size, cfg);
    if disk_size < needed {
        return Err(LayoutError::DiskTooSmall {
            needed,
            have: disk_size,
        });
    }
    let [bios, esp, slot_a, slot_b] = fixed_partitions(cfg);
    let rw = PartSpec {
        number: 5,
        name: RW_NAME,
        type_guid: Guid::LINUX_FILESYSTEM,
        start: slot_b.end(),
        size: rw_end(disk_size, sector_size) - slot_b.end(),
    };
    Ok(Layout {
        disk_size,
        sector_size,
        bios,
        esp,
        slot_a,
        slot_b,
        rw,
    })
}

/// A GUID for `purpose` derived from the seed: SHA-256(seed ‖ purpose), first
/// 16 bytes, with the version-4 and variant bits set.
fn derived_guid(seed: &[u8; 32], purpose: &str) -> Guid {
    let hash = Sha256::new()
        .chain_update(seed)
        .chain_update(purpose.as_bytes())
        .finalize();
    Guid::v4_from_bytes(hash[..16].try_into().unwrap())
}

impl Layout {
    /// The five partitions in table order.
    pub fn partitions(&self) -> [&PartSpec; 5] {
        [&self.bios, &self.esp, &self.slot_a, &self.slot_b, &self.rw]
    }

    pub fn slot(&self, slot: Slot) -> &PartSpec {
        match slot {
            Slot::A => &self.slot_a,
            Slot::B => &self.slot_b,
        }
    }

    /// The partition table for the layout. Disk and partition GUIDs derive
    /// from `seed` (`derived_guid` with purposes "disk" and each partition
    /// name), so a template built twice from one seed is byte-identical; the
    /// installer passes a random seed for a real disk.
    pub fn to_gpt(&self, seed: &[u8; 32]) -> Gpt {
        let mut gpt = Gpt::new(self.disk_size, self.sector_size, derived_guid(seed, "disk"))
            .expect("a computed layout fits a GPT");
        for spec in self.partitions() {
            gpt.partitions[spec.number as usize - 1] = Some(Partition {
                type_guid: spec.type_guid,
                guid: derived_guid(seed, spec.name),
                first_lba: spec.first_lba(self.sector_size),
                last_lba: spec.last_lba(self.sector_size),
                attributes: 0,
                name: spec.name.to_owned(),
            });
        }
        gpt
    }

    /// Recognizes an abnix disk in a table read from a disk of `disk_size`
    /// bytes: partitions 1..=5 with abnix's names and types in that order on
    /// the disk, both slots of one root type and one size, and no other
    /// partition. Sizes and sector size come from the table.
    pub fn from_gpt(gpt: &Gpt, disk_size: u64) -> Result<Layout, LayoutError> {
        let not_abnix = |msg: String| LayoutError::NotAbnix(msg);
        check_sector_size(gpt.sector_size)?;
        let ss = u64::from(gpt.sector_size);
        let slot_type = match &gpt.partitions.get(2).and_then(Option::as_ref) {
            Some(p) => p.type_guid,
            None => return Err(not_abnix("partition 3 is missing".into())),
        };
        if Arch::from_root_type(slot_type).is_none() {
            return Err(not_abnix(format!(
                "partition 3 has type {slot_type}, not a Linux root type"
            )));
        }
        let expected = [
            (BIOS_NAME, Guid::BIOS_BOOT),
            (ESP_NAME, Guid::EFI_SYSTEM),
            (Slot::A.partition_name(), slot_type),
            (Slot::B.partition_name(), slot_type),
            (RW_NAME, Guid::LINUX_FILESYSTEM),
        ];
        let mut specs = Vec::with_capacity(5);
        for (i, (name, type_guid)) in expected.into_iter().enumerate() {
            let number = i as u32 + 1;
            let p = gpt
                .partitions
                .get(i)
                .and_then(Option::as_ref)
                .ok_or_else(|| not_abnix(format!("partition {number} ({name}) is missing")))?;
            if p.name != name {
                return Err(not_abnix(format!(
                    "partition {number} is named {:?}, expected {name:?}",
                    p.name
                )));
            }
            if p.type_guid != type_guid {
                return Err(not_abnix(format!(
                    "partition {number} ({name}) has type {}, expected {type_guid}",
                    p.type_guid
                )));
            }
            specs.push(PartSpec {
                number,
                name,
                type_guid,
                start: p.first_lba * ss,
                size: p.size_lbas() * ss,
            });
        }
        if let Some((i, p)) = gpt
            .partitions
            .iter()
            .enumerate()
            .skip(5)
            .find_map(|(i, p)| p.as_ref().map(|p| (i, p)))
        {
            return Err(not_abnix(format!(
                "unexpected partition {} ({:?})",
                i + 1,
                p.name
            )));
        }
        if specs.windows(2).any(|w| w[1].start < w[0].end()) {
            return Err(not_abnix(
                "partitions are not in abnix order on the disk".into(),
            ));
        }
        if specs[2].size != specs[3].size {
            return Err(not_abnix(format!(
                "slots differ in size ({} and {} bytes)",
                specs[2].size, specs[3].size
            )));
        }
        let [bios, esp, slot_a, slot_b, rw]: [PartSpec; 5] = specs.try_into().unwrap();
        Ok(Layout {
            disk_size,
            sector_size: gpt.sector_size,
            bios,
            esp,
            slot_a,
            slot_b,
            rw,
        })
    }

    /// The layout on a disk grown to `new_disk_size` bytes: `abnix-rw`
    /// extended to the new end. `None` when that would not make it bigger.
    fn grown(&self, new_disk_size: u64) -> Option<Layout> {
        let end = rw_end(new_disk_size, self.sector_size);
        if end <= self.rw.end() {
            return None;
        }
        let mut grown = self.clone();
        grown.disk_size = new_disk_size;
        grown.rw.size = end - grown.rw.start;
        Some(grown)
    }
}

/// Grows an abnix table read from a disk of `disk_size` bytes to fill it:
/// moves the backup GPT to the end and extends `abnix-rw` to the new end,
/// keeping every GUID. Returns the new layout, or `None` when the table
/// already fills the disk and there is nothing to write (so running it again
/// is a no-op).
pub fn grow_gpt(gpt: &mut Gpt, disk_size: u64) -> Result<Option<Layout>, LayoutError> {
    let layout = Layout::from_gpt(gpt, disk_size)?;
    let last_lba = disk_size / u64::from(gpt.sector_size) - 1;
    let backup_moves = gpt.backup_lba < last_lba;
    if backup_moves {
        gpt.move_backup_to_end(disk_size);
    }
    let grown = layout.grown(disk_size);
    if let Some(grown) = &grown {
        let rw = gpt.partitions[grown.rw.number as usize - 1]
            .as_mut()
            .expect("from_gpt found abnix-rw");
        rw.last_lba = grown.rw.last_lba(gpt.sector_size);
    }
    Ok(match grown {
        Some(grown) => Some(grown),
        None if backup_moves => Some(Layout {
            disk_size,
            ..layout
        }),
        None => None,
    })
}

/// `1 MiB`, `512 MiB`, `7.5 GiB`: sizes for people.
fn human(bytes: u64) -> String {
    if bytes >= GIB {
        format!("{:.1} GiB", bytes as f64 / GIB as f64)
    } else if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.2} MiB", bytes as f64 / MIB as f64)
    }
}

impl fmt::Display for Layout {
    /// A table for summaries: number, name, start and size.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "disk {} ({} bytes), {}-byte sectors",
            human(self.disk_size),
            self.disk_size,
            self.sector_size
        )?;
        writeln!(f, "  #  {:<11} {:>10}  {:>10}", "name", "start", "size")?;
        for p in self.partitions() {
            writeln!(
                f,
                "  {}  {:<11} {:>10}  {:>10}",
                p.number,
                p.name,
                human(p.start),
                human(p.size)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{sgdisk, sgdisk_agrees_with};
    use std::io::Cursor;

    const TIB: u64 = 1024 * GIB;

    fn cfg() -> LayoutConfig {
        LayoutConfig {
            slot_size: 128 * MIB,
            esp_size: 64 * MIB,
            min_rw_size: 64 * MIB,
            arch: Arch::X86_64,
        }
    }

    /// A layout that fits a few tens of MiB, for tests that hold a whole
    /// disk in memory.
    fn small_cfg() -> LayoutConfig {
        LayoutConfig {
            slot_size: 8 * MIB,
            esp_size: 8 * MIB,
            min_rw_size: 8 * MIB,
            arch: Arch::Aarch64,
        }
    }

    /// Everything DESIGN §2 promises about a layout.
    fn check_layout(layout: &Layout, cfg: &LayoutConfig) {
        let ss = layout.sector_size;
        let names = ["abnix-bios", "abnix-esp", "abnix-a", "abnix-b", "abnix-rw"];
        let gpt = layout.to_gpt(&[0; 32]);
        let usable_start = gpt.first_usable_lba * u64::from(ss);
        let usable_end = (gpt.last_usable_lba + 1) * u64::from(ss);
        let mut prev_end = usable_start;
        for (i, p) in layout.partitions().into_iter().enumerate() {
            assert_eq!(p.number, i as u32 + 1);
            assert_eq!(p.name, names[i]);
            assert_eq!(p.start % ALIGNMENT, 0, "{} start", p.name);
            assert_eq!(p.size % ALIGNMENT, 0, "{} size", p.name);
            assert!(p.start >= prev_end, "{} overlaps", p.name);
            assert!(p.end() <= usable_end, "{} beyond usable", p.name);
            prev_end = p.end();
        }
        assert_eq!(layout.bios.start, MIB);
        assert_eq!(layout.bios.size, BIOS_SIZE);
        assert_eq!(layout.esp.size, cfg.esp_size);
        assert_eq!(layout.slot_a.size, cfg.slot_size);
        assert_eq!(layout.slot_b.size, cfg.slot_size);
        assert!(layout.rw.size >= cfg.min_rw_size);
        // rw reaches the last whole MiB before the backup GPT.
        assert!(usable_end - layout.rw.end() < ALIGNMENT, "rw stops short");
        assert_eq!(layout.slot_a.type_guid, cfg.arch.root_type());
        assert_eq!(Layout::from_gpt(&gpt, layout.disk_size).unwrap(), *layout);
    }

    #[test]
    fn layouts_for_many_disks_and_sector_sizes() {
        let cfg = cfg();
        for ss in [512u32, 4096] {
            let min = min_disk_size(ss, &cfg);
            for size in [min, GIB, 8 * GIB, 2 * TIB, 8 * GIB + 12345] {
                let layout = compute(size, ss, &cfg).unwrap();
                check_layout(&layout, &cfg);
            }
            let at_min = compute(min, ss, &cfg).unwrap();
            assert_eq!(at_min.rw.size, cfg.min_rw_size);
            for short in [min - 1, min - u64::from(ss)] {
                match compute(short, ss, &cfg) {
                    Err(LayoutError::DiskTooSmall { needed, have }) => {
                        assert_eq!((needed, have), (min, short))
                    }
                    other => panic!("{short}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn bad_configurations_are_refused_by_name() {
        let cfg = cfg();
        assert!(matches!(
            compute(GIB, 1024, &cfg),
            Err(LayoutError::UnsupportedSectorSize(1024))
        ));
        let zero = LayoutConfig {
            slot_size: 0,
            ..cfg.clone()
        };
        assert_eq!(
            compute(GIB, 512, &zero).unwrap_err().to_string(),
            "slot size is zero"
        );
        let odd = LayoutConfig {
            esp_size: 100 * MIB + 512,
            ..cfg.clone()
        };
        assert_eq!(
            compute(GIB, 512, &odd).unwrap_err().to_string(),
            format!("ESP size {} is not a multiple of 1 MiB", 100 * MIB + 512)
        );
        let msg = compute(100 * MIB, 512, &cfg).unwrap_err().to_string();
        assert!(msg.starts_with("disk too small"), "{msg}");
    }

    #[test]
    fn defaults_follow_the_design() {
        let cfg = LayoutConfig::new(2 * GIB);
        assert_eq!(cfg.esp_size, 512 * MIB);
        assert_eq!(cfg.min_rw_size, 64 * MIB);
        assert_eq!(cfg.arch, Arch::native());
        let layout = compute(8 * GIB, 512, &cfg).unwrap();
        assert_eq!(layout.slot_a.start, 514 * MIB);
        assert_eq!(layout.rw.start, 514 * MIB + 4 * GIB);
    }

    /// Each architecture's facts tell it apart and read back.
    #[test]
    fn architectures_read_back_from_their_names_and_types() {
        for arch in Arch::ALL {
            assert_eq!(arch.name().parse::<Arch>().unwrap(), arch);
            assert_eq!(arch.to_string(), arch.name());
            assert_eq!(Arch::from_root_type(arch.root_type()), Some(arch));
            assert_eq!(Arch::from_pe_machine(arch.pe_machine()), Some(arch));
        }
        assert_eq!(Arch::Aarch64.root_type(), Guid::LINUX_ROOT_AARCH64);
        assert_eq!(Arch::X86_64.root_type(), Guid::LINUX_ROOT_X86_64);
        assert!(Arch::X86_64.has_bios() && !Arch::Aarch64.has_bios());
        assert!(Arch::X86_64.has_pc_serial_port() && !Arch::Aarch64.has_pc_serial_port());
        assert_eq!(Arch::from_root_type(Guid::LINUX_FILESYSTEM), None);
        assert_eq!(
            "arm64".parse::<Arch>().unwrap_err().to_string(),
            "unknown architecture \"arm64\" (expected \"x86_64\" or \"aarch64\")"
        );
    }

    #[test]
    fn gpt_guids_derive_from_the_seed() {
        let layout = compute(64 * MIB, 512, &small_cfg()).unwrap();
        let a = layout.to_gpt(&[1; 32]);
        assert_eq!(a, layout.to_gpt(&[1; 32]));
        let b = layout.to_gpt(&[2; 32]);
        assert_ne!(a.disk_guid, b.disk_guid);
        let guids: Vec<Guid> = a
            .partitions
            .iter()
            .flatten()
            .map(|p| p.guid)
            .chain([a.disk_guid])
            .collect();
        for (i, g) in guids.iter().enumerate() {
            assert_eq!(&g.to_string()[14..15], "4");
            assert!(!guids[..i].contains(g), "GUIDs are distinct");
        }
        let mut one = Cursor::new(vec![0u8; 64 * MIB as usize]);
        let mut two = Cursor::new(vec![0u8; 64 * MIB as usize]);
        a.write(&mut one).unwrap();
        layout.to_gpt(&[1; 32]).write(&mut two).unwrap();
        assert!(one.get_ref() == two.get_ref(), "same seed, same bytes");
    }

    #[test]
    fn foreign_tables_are_not_abnix() {
        let layout = compute(GIB, 512, &cfg()).unwrap();
        let gpt = layout.to_gpt(&[3; 32]);
        let reject = |edit: &dyn Fn(&mut Gpt), expect: &str| {
            let mut g = gpt.clone();
            edit(&mut g);
            let msg = Layout::from_gpt(&g, GIB).unwrap_err().to_string();
            assert!(msg.contains(expect), "{expect}: {msg}");
        };
        reject(
            &|g| g.partitions[1].as_mut().unwrap().name = "EFI".into(),
            "partition 2 is named \"EFI\"",
        );
        reject(
            &|g| g.partitions[4].as_mut().unwrap().type_guid = Guid::EFI_SYSTEM,
            "partition 5 (abnix-rw) has type",
        );
        reject(
            &|g| g.partitions[2].as_mut().unwrap().type_guid = Guid::LINUX_FILESYSTEM,
            "not a Linux root type",
        );
        reject(
            &|g| g.partitions[3].as_mut().unwrap().type_guid = Guid::LINUX_ROOT_AARCH64,
            "partition 4 (abnix-b) has type",
        );
        reject(
            &|g| g.partitions[0] = None,
            "partition 1 (abnix-bios) is missing",
        );
        reject(
            &|g| g.partitions[3].as_mut().unwrap().last_lba -= 2048,
            "slots differ in size",
        );
        reject(
            &|g| g.partitions.swap(0, 1),
            "partition 1 is named \"abnix-esp\"",
        );
        reject(
            &|g| {
                let mut extra = g.partitions[0].clone().unwrap();
                extra.name = "extra".into();
                g.partitions[9] = Some(extra);
            },
            "unexpected partition 10 (\"extra\")",
        );
        reject(
            &|g| {
                // rw before the slots on the disk, numbers unchanged.
                let (a, rw) = (
                    g.partitions[2].clone().unwrap(),
                    g.partitions[4].clone().unwrap(),
                );
                let p3 = g.partitions[2].as_mut().unwrap();
                p3.first_lba = rw.first_lba;
                p3.last_lba = rw.first_lba + a.size_lbas() - 1;
                let p5 = g.partitions[4].as_mut().unwrap();
                p5.first_lba = a.first_lba;
                p5.last_lba = a.last_lba;
            },
            "not in abnix order",
        );
    }

    #[test]
    fn growing_extends_rw_to_the_new_end() {
        let cfg = cfg();
        for ss in [512u32, 4096] {
            let layout = compute(GIB, ss, &cfg).unwrap();
            assert!(layout.grown(GIB).is_none());
            assert!(layout.grown(GIB + 4096).is_none(), "not a whole MiB more");
            let grown = layout.grown(2 * GIB).unwrap();
            assert_eq!(grown, compute(2 * GIB, ss, &cfg).unwrap());
            assert_eq!(grown.rw.start, layout.rw.start);
            assert!(grown.grown(2 * GIB).is_none());
        }
    }

    #[test]
    fn a_template_grows_to_fill_a_bigger_disk_once() {
        let (small, big) = (64 * MIB, 128 * MIB);
        for ss in [512u32, 4096] {
            let template = compute(small, ss, &small_cfg()).unwrap();
            let written = template.to_gpt(&[4; 32]);
            let mut disk = Cursor::new(vec![0u8; small as usize]);
            written.write(&mut disk).unwrap();
            disk.get_mut().resize(big as usize, 0);

            let mut gpt = Gpt::read(&mut disk, ss).unwrap();
            let grown = grow_gpt(&mut gpt, big).unwrap().unwrap();
            assert_eq!(grown, compute(big, ss, &small_cfg()).unwrap());
            gpt.write(&mut disk).unwrap();
            let read = Gpt::read(&mut disk, ss).unwrap();
            assert_eq!(Layout::from_gpt(&read, big).unwrap(), grown);
            for (before, after) in written.partitions.iter().zip(&read.partitions) {
                assert_eq!(
                    before.as_ref().map(|p| p.guid),
                    after.as_ref().map(|p| p.guid),
                    "GUIDs kept"
                );
            }
            let mut again = read.clone();
            assert_eq!(grow_gpt(&mut again, big).unwrap(), None, "idempotent");
            assert_eq!(again, read);
        }
    }

    #[test]
    fn a_disk_grown_by_less_than_a_mib_only_moves_the_backup() {
        let template = compute(64 * MIB, 512, &small_cfg()).unwrap();
        let mut gpt = template.to_gpt(&[4; 32]);
        let size = 64 * MIB + 4096;
        let layout = grow_gpt(&mut gpt, size).unwrap().unwrap();
        assert_eq!(layout.rw, template.rw);
        assert_eq!(layout.disk_size, size);
        assert_eq!(gpt.backup_lba, size / 512 - 1);
        let mut foreign = gpt.clone();
        foreign.partitions[4].as_mut().unwrap().name = "data".into();
        assert!(matches!(
            grow_gpt(&mut foreign, 2 * GIB),
            Err(LayoutError::NotAbnix(_))
        ));
    }

    #[test]
    fn display_lists_every_partition() {
        let layout = compute(8 * GIB, 512, &LayoutConfig::new(2 * GIB)).unwrap();
        let text = layout.to_string();
        for needle in [
            "disk 8.0 GiB (8589934592 bytes), 512-byte sectors",
            "1  abnix-bios       1 MiB       1 MiB",
            "2  abnix-esp        2 MiB     512 MiB",
            "3  abnix-a        514 MiB     2.0 GiB",
            "5  abnix-rw       4.5 GiB",
        ] {
            assert!(text.contains(needle), "{needle:?} in\n{text}");
        }
    }

    #[test]
    fn sgdisk_finds_written_layouts_clean() {
        for size in [min_disk_size(512, &cfg()), GIB, 2 * TIB] {
            let layout = compute(size, 512, &cfg()).unwrap();
            let file = tempfile::NamedTempFile::new().unwrap();
            file.as_file().set_len(size).unwrap();
            let gpt = layout.to_gpt(&[9; 32]);
            gpt.write(&mut file.reopen().unwrap()).unwrap();
            sgdisk_agrees_with(&gpt, file.path());
            let print = sgdisk(&["-p"], file.path());
            assert!(print.contains("abnix-rw"), "{print}");
            let mut read = Gpt::read(&mut file.reopen().unwrap(), 512).unwrap();
            assert_eq!(Layout::from_gpt(&read, size).unwrap(), layout);

            // The same image on a disk 3 GiB bigger, grown.
            file.as_file().set_len(size + 3 * GIB).unwrap();
            grow_gpt(&mut read, size + 3 * GIB).unwrap().unwrap();
            read.write(&mut file.reopen().unwrap()).unwrap();
            sgdisk_agrees_with(&read, file.path());
        }
    }
}
