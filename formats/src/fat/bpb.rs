//! The boot sector (BIOS parameter block), the FSInfo sector, and the volume
//! geometry derived from them; the geometry `format` chooses.
//!
//! Format facts from the Microsoft FAT specification (fatgen103), "Boot
//! Sector and BPB", "FAT32 FSInfo Sector Structure" and "FAT Type
//! Determination":
//! - BS_jmpBoot @0, BS_OEMName @3, BPB_BytsPerSec @11, BPB_SecPerClus @13,
//!   BPB_RsvdSecCnt @14, BPB_NumFATs @16, BPB_RootEntCnt @17 (0 on FAT32),
//!   BPB_TotSec16 @19, BPB_Media @21, BPB_FATSz16 @22 (0 on FAT32),
//!   BPB_SecPerTrk @24, BPB_NumHeads @26, BPB_HiddSec @28, BPB_TotSec32 @32;
//!   FAT32: BPB_FATSz32 @36, BPB_ExtFlags @40 (bit 7 set: only the FAT
//!   numbered in bits 0-3 is live, else all FATs mirror each other),
//!   BPB_FSVer @42 (must be 0.0), BPB_RootClus @44, BPB_FSInfo @48,
//!   BPB_BkBootSec @50, BS_DrvNum @64, BS_BootSig @66 = 0x29, BS_VolID @67,
//!   BS_VolLab @71, BS_FilSysType @82; 0x55 0xAA at bytes 510 and 511 of
//!   sector 0 whatever the sector size.
//! - The FAT type follows from the cluster count alone: fewer than 65525
//!   clusters is FAT12/16, so FAT32 needs at least 65525.
//! - FSInfo: FSI_LeadSig @0 = 0x41615252, FSI_StrucSig @484 = 0x61417272,
//!   FSI_Free_Count @488, FSI_Nxt_Free @492 (both hints, 0xFFFFFFFF =
//!   unknown), FSI_TrailSig @508 = 0xAA550000.

use super::FatError;

/// FAT32 needs at least this many clusters (fatgen103).
pub(super) const MIN_CLUSTERS: u32 = 65_525;
/// Cluster numbers run from 2 to 0x0FFFFFF6; 0x0FFFFFF7 marks a bad cluster.
const MAX_CLUSTERS: u32 = 0x0FFF_FFF5;

/// 32 reserved sectors, as Windows and mkfs.fat use for FAT32, leaves room
/// for the boot sector, FSInfo and their backups at 6 and 7.
const RESERVED_SECTORS: u32 = 32;
const FSINFO_SECTOR: u32 = 1;
const BACKUP_BOOT_SECTOR: u32 = 6;
const NUM_FATS: u32 = 2;
/// Media descriptor of a fixed disk; FAT[0] repeats it.
pub(super) const MEDIA_FIXED_DISK: u8 = 0xF8;

const OEM_NAME: &[u8; 8] = b"MSWIN4.1";
/// Some FAT drivers only accept volumes whose jump is EB xx 90 or E9 xx xx;
/// EB 58 90 jumps over the FAT32 BPB to offset 0x5A.
const JUMP: [u8; 3] = [0xEB, 0x58, 0x90];
/// Boot code at 0x5A for a BIOS that boots this partition by mistake:
/// `int 0x18` (try the next boot device), then `hlt; jmp $-1`.
const BOOT_CODE: [u8; 5] = [0xCD, 0x18, 0xF4, 0xEB, 0xFD];
const BOOT_CODE_AT: usize = 0x5A;

const FSINFO_LEAD_SIG: u32 = 0x4161_5252;
const FSINFO_STRUC_SIG: u32 = 0x6141_7272;
const FSINFO_TRAIL_SIG: u32 = 0xAA55_0000;

/// Where everything lies in a FAT32 volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Geometry {
    pub(crate) bytes_per_sector: u32,
    pub(crate) sectors_per_cluster: u32,
    pub(crate) reserved_sectors: u32,
    pub(crate) num_fats: u32,
    pub(crate) fat_sectors: u32,
    pub(crate) total_sectors: u32,
    pub(crate) root_cluster: u32,
    pub(crate) fsinfo_sector: Option<u32>,
    pub(crate) backup_boot_sector: Option<u32>,
    /// `None`: every FAT mirrors the first; `Some(n)`: only FAT `n` is live.
    pub(crate) active_fat: Option<u32>,
    pub(crate) media: u8,
}

impl Geometry {
    pub(crate) fn cluster_size(&self) -> u32 {
        self.bytes_per_sector * self.sectors_per_cluster
    }

    fn data_start_sector(&self) -> u32 {
        self.reserved_sectors + self.num_fats * self.fat_sectors
    }

    /// The number of data clusters; they are numbered 2 ..= count + 1.
    pub(crate) fn cluster_count(&self) -> u32 {
        (self.total_sectors - self.data_start_sector()) / self.sectors_per_cluster
    }

    pub(crate) fn sector_offset(&self, sector: u32) -> u64 {
        u64::from(sector) * u64::from(self.bytes_per_sector)
    }

    /// Byte offset of FAT copy `copy`.
    pub(crate) fn fat_offset(&self, copy: u32) -> u64 {
        self.sector_offset(self.reserved_sectors + copy * self.fat_sectors)
    }

    pub(crate) fn fat_bytes(&self) -> usize {
        self.fat_sectors as usize * self.bytes_per_sector as usize
    }

    /// The sectors of a FAT that map clusters, in bytes: a FAT may be
    /// longer than the clusters need, and the rest is never read.
    pub(crate) fn fat_bytes_used(&self) -> usize {
        let bps = self.bytes_per_sector as usize;
        ((self.cluster_count() as usize + 2) * 4).div_ceil(bps) * bps
    }

    /// Byte offset of data cluster `cluster` (>= 2).
    pub(crate) fn cluster_offset(&self, cluster: u32) -> u64 {
        self.sector_offset(self.data_start_sector())
            + u64::from(cluster - 2) * u64::from(self.cluster_size())
    }

    /// The FAT copies every FAT change goes to, live one first.
    pub(crate) fn fat_copies(&self) -> Vec<u32> {
        match self.active_fat {
            Some(active) => vec![active],
            None => (0..self.num_fats).collect(),
        }
    }

    /// The geometry `format` gives a region of `region_size` bytes.
    ///
    /// The cluster size follows fatgen103's FAT32 table (512 bytes up to
    /// 260 MiB, 4 KiB up to 8 GiB, 8/16/32 KiB beyond), never below a
    /// sector; if that leaves fewer than 65525 clusters it halves down to one
    /// sector per cluster before giving up with `TooSmall`. Reserved sectors
    /// are padded so that the data area starts on a cluster boundary.
    pub(crate) fn plan(region_size: u64, bytes_per_sector: u32) -> Result<Self, FatError> {
        if bytes_per_sector != 512 && bytes_per_sector != 4096 {
            return Err(FatError::Unsupported(format!(
                "sector size {bytes_per_sector} (only 512 and 4096 are supported)"
            )));
        }
        let total = u32::try_from(region_size / u64::from(bytes_per_sector)).unwrap_or(u32::MAX);
        const MIB: u64 = 1 << 20;
        let preferred: u32 = match region_size {
            s if s <= 260 * MIB => 512,
            s if s <= 8 * 1024 * MIB => 4096,
            s if s <= 16 * 1024 * MIB => 8192,
            s if s <= 32 * 1024 * MIB => 16384,
            _ => 32768,
        };
        let mut cluster_size = preferred.max(bytes_per_sector);
        loop {
            if let Some(geometry) =
                Self::layout(total, bytes_per_sector, cluster_size / bytes_per_sector)
            {
                let count = geometry.cluster_count();
                if count > MAX_CLUSTERS {
                    return Err(FatError::Unsupported(format!(
                        "a region of {region_size} bytes is larger than FAT32 can address"
                    )));
                }
                if count >= MIN_CLUSTERS {
                    return Ok(geometry);
                }
            }
            if cluster_size == bytes_per_sector {
                return Err(FatError::TooSmall {
                    size: region_size,
                    min: Self::min_size(bytes_per_sector),
                });
            }
            cluster_size /= 2;
        }
    }

    /// Lays out `total` sectors with `spc` sectors per cluster, if they hold
    /// the reserved sectors, two FATs and at least one cluster.
    fn layout(total: u32, bytes_per_sector: u32, spc: u32) -> Option<Self> {
        let entries_per_sector = bytes_per_sector / 4;
        // The FAT must map every cluster plus the two reserved entries, and
        // the clusters are what the FATs leave. The sectors a FAT of
        // `fat_sectors` needs shrink as it grows: start from the estimate
        // and settle on the smallest FAT that suffices.
        let needed = |fat_sectors: u32| -> Option<u32> {
            let data = total.checked_sub(RESERVED_SECTORS + NUM_FATS * fat_sectors)?;
            Some((data / spc + 2).div_ceil(entries_per_sector))
        };
        let fits = |fat_sectors: u32| needed(fat_sectors).is_some_and(|n| n <= fat_sectors);
        let estimate = (u64::from(total.checked_sub(RESERVED_SECTORS)?) + 2 * u64::from(spc))
            .div_ceil(u64::from(entries_per_sector * spc + NUM_FATS));
        let mut fat_sectors = u32::try_from(estimate).ok()?.max(1);
        while !fits(fat_sectors) {
            needed(fat_sectors)?;
            fat_sectors += 1;
        }
        while fat_sectors > 1 && fits(fat_sectors - 1) {
            fat_sectors -= 1;
        }
        // Fewer data sectors after padding: the FAT still covers them all.
        let padding = (spc - (RESERVED_SECTORS + NUM_FATS * fat_sectors) % spc) % spc;
        let geometry = Geometry {
            bytes_per_sector,
            sectors_per_cluster: spc,
            reserved_sectors: RESERVED_SECTORS + padding,
            num_fats: NUM_FATS,
            fat_sectors,
            total_sectors: total,
            root_cluster: 2,
            fsinfo_sector: Some(FSINFO_SECTOR),
            backup_boot_sector: Some(BACKUP_BOOT_SECTOR),
            active_fat: None,
            media: MEDIA_FIXED_DISK,
        };
        (total > geometry.data_start_sector() && geometry.cluster_count() >= 1).then_some(geometry)
    }

    /// The smallest region FAT32 fits in with this sector size: one sector
    /// per cluster, 65525 clusters.
    pub(crate) fn min_size(bytes_per_sector: u32) -> u64 {
        let fat_sectors = (MIN_CLUSTERS + 2).div_ceil(bytes_per_sector / 4);
        u64::from(RESERVED_SECTORS + NUM_FATS * fat_sectors + MIN_CLUSTERS)
            * u64::from(bytes_per_sector)
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn corrupt(what: impl Into<String>) -> FatError {
    FatError::Corrupt(what.into())
}

/// The parts of sector 0 abnix reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct BootSector {
    pub(crate) geometry: Geometry,
    pub(crate) volume_id: u32,
    /// BS_VolLab, space padded; "NO NAME    " when there is none.
    pub(crate) label: [u8; 11],
}

impl BootSector {
    /// Parses and validates the first 512 bytes of a region of
    /// `region_size` bytes.
    pub(crate) fn parse(b: &[u8; 512], region_size: u64) -> Result<Self, FatError> {
        if b[510..512] != [0x55, 0xAA] {
            return Err(corrupt("no boot sector: bytes 510-511 are not 55 AA"));
        }
        let bytes_per_sector = u32::from(le16(b, 11));
        if ![512, 1024, 2048, 4096].contains(&bytes_per_sector) {
            return Err(corrupt(format!(
                "{bytes_per_sector} bytes per sector (must be 512, 1024, 2048 or 4096)"
            )));
        }
        let sectors_per_cluster = u32::from(b[13]);
        if !sectors_per_cluster.is_power_of_two() {
            return Err(corrupt(format!(
                "{sectors_per_cluster} sectors per cluster (must be a power of two)"
            )));
        }
        let reserved_sectors = u32::from(le16(b, 14));
        let num_fats = u32::from(b[16]);
        if reserved_sectors == 0 || num_fats == 0 {
            return Err(corrupt(format!(
                "{reserved_sectors} reserved sectors and {num_fats} FATs"
            )));
        }
        let root_entries = le16(b, 17);
        let fat16_sectors = le16(b, 22);
        if root_entries != 0 || fat16_sectors != 0 {
            return Err(corrupt(format!(
                "not FAT32: the BPB has a FAT12/16 layout ({root_entries} root entries, \
                 {fat16_sectors} sectors per FAT)"
            )));
        }
        let total_sectors = match le16(b, 19) {
            0 => le32(b, 32),
            small => u32::from(small),
        };
        let volume_bytes = u64::from(total_sectors) * u64::from(bytes_per_sector);
        if total_sectors == 0 || volume_bytes > region_size {
            return Err(corrupt(format!(
                "the boot sector gives {volume_bytes} bytes but the region holds {region_size}"
            )));
        }
        let fat_sectors = le32(b, 36);
        let ext_flags = le16(b, 40);
        let version = le16(b, 42);
        if version != 0 {
            return Err(corrupt(format!(
                "FAT32 version {}.{} (only 0.0 exists)",
                version >> 8,
                version & 0xFF
            )));
        }
        let active_fat = (ext_flags & 0x80 != 0).then_some(u32::from(ext_flags & 0x0F));
        if active_fat.is_some_and(|n| n >= num_fats) {
            return Err(corrupt(format!(
                "active FAT {} of {num_fats}",
                ext_flags & 0x0F
            )));
        }
        let special_sector = |at: usize| match u32::from(le16(b, at)) {
            0 | 0xFFFF => None,
            s if s < reserved_sectors => Some(s),
            _ => None,
        };
        let fat_area = u64::from(reserved_sectors) + u64::from(num_fats) * u64::from(fat_sectors);
        if fat_sectors == 0 || fat_area >= u64::from(total_sectors) {
            return Err(corrupt(format!(
                "{fat_sectors} sectors per FAT leave no data area in {total_sectors} sectors"
            )));
        }
        let geometry = Geometry {
            bytes_per_sector,
            sectors_per_cluster,
            reserved_sectors,
            num_fats,
            fat_sectors,
            total_sectors,
            root_cluster: le32(b, 44),
            fsinfo_sector: special_sector(48),
            backup_boot_sector: special_sector(50),
            active_fat,
            media: b[21],
        };
        let clusters = geometry.cluster_count();
        if clusters < MIN_CLUSTERS {
            return Err(corrupt(format!(
                "not FAT32: {clusters} clusters (FAT32 has at least {MIN_CLUSTERS})"
            )));
        }
        if clusters > MAX_CLUSTERS {
            return Err(corrupt(format!(
                "{clusters} clusters, more than FAT32 can number"
            )));
        }
        let fat_entries = geometry.fat_bytes() as u64 / 4;
        if fat_entries < u64::from(clusters) + 2 {
            return Err(corrupt(format!(
                "a FAT of {fat_entries} entries cannot map {clusters} clusters"
            )));
        }
        if !(2..clusters + 2).contains(&geometry.root_cluster) {
            return Err(corrupt(format!(
                "root directory cluster {} out of range",
                geometry.root_cluster
            )));
        }
        let mut label = [0u8; 11];
        label.copy_from_slice(&b[71..82]);
        Ok(BootSector {
            geometry,
            volume_id: le32(b, 67),
            label,
        })
    }

    /// Sector 0 (and its backup), `bytes_per_sector` long.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let g = &self.geometry;
        let mut b = vec![0u8; g.bytes_per_sector as usize];
        b[..3].copy_from_slice(&JUMP);
        b[3..11].copy_from_slice(OEM_NAME);
        b[11..13].copy_from_slice(&(g.bytes_per_sector as u16).to_le_bytes());
        b[13] = g.sectors_per_cluster as u8;
        b[14..16].copy_from_slice(&(g.reserved_sectors as u16).to_le_bytes());
        b[16] = g.num_fats as u8;
        b[21] = g.media;
        // CHS geometry is meaningless for LBA disks; 63 sectors and 255 heads
        // are the values every LBA-era tool writes.
        b[24..26].copy_from_slice(&63u16.to_le_bytes());
        b[26..28].copy_from_slice(&255u16.to_le_bytes());
        b[32..36].copy_from_slice(&g.total_sectors.to_le_bytes());
        b[36..40].copy_from_slice(&g.fat_sectors.to_le_bytes());
        let ext_flags = g.active_fat.map_or(0, |n| 0x80 | n as u16);
        b[40..42].copy_from_slice(&ext_flags.to_le_bytes());
        b[44..48].copy_from_slice(&g.root_cluster.to_le_bytes());
        b[48..50].copy_from_slice(&(g.fsinfo_sector.unwrap_or(0xFFFF) as u16).to_le_bytes());
        b[50..52].copy_from_slice(&(g.backup_boot_sector.unwrap_or(0) as u16).to_le_bytes());
        b[64] = 0x80;
        b[66] = 0x29;
        b[67..71].copy_from_slice(&self.volume_id.to_le_bytes());
        b[71..82].copy_from_slice(&self.label);
        b[82..90].copy_from_slice(b"FAT32   ");
        b[BOOT_CODE_AT..BOOT_CODE_AT + BOOT_CODE.len()].copy_from_slice(&BOOT_CODE);
        b[510] = 0x55;
        b[511] = 0xAA;
        b
    }
}

/// The hints of an FSInfo sector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FsInfo {
    pub(crate) free_count: u32,
    pub(crate) next_free: u32,
}

impl FsInfo {
    /// The hints, if `sector` carries all three FSInfo signatures.
    pub(crate) fn parse(sector: &[u8]) -> Option<Self> {
        let signed = le32(sector, 0) == FSINFO_LEAD_SIG
            && le32(sector, 484) == FSINFO_STRUC_SIG
            && le32(sector, 508) == FSINFO_TRAIL_SIG;
        signed.then(|| FsInfo {
            free_count: le32(sector, 488),
            next_free: le32(sector, 492),
        })
    }

    /// Writes the signatures and hints into `sector`, leaving its reserved
    /// bytes as they are.
    pub(crate) fn write_into(&self, sector: &mut [u8]) {
        sector[0..4].copy_from_slice(&FSINFO_LEAD_SIG.to_le_bytes());
        sector[484..488].copy_from_slice(&FSINFO_STRUC_SIG.to_le_bytes());
        sector[488..492].copy_from_slice(&self.free_count.to_le_bytes());
        sector[492..496].copy_from_slice(&self.next_free.to_le_bytes());
        sector[508..512].copy_from_slice(&FSINFO_TRAIL_SIG.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn first_512(sector: &[u8]) -> [u8; 512] {
        sector[..512].try_into().unwrap()
    }

    #[test]
    fn planned_geometries_round_trip_through_the_boot_sector() {
        for (size, bps) in [
            (64 * MIB, 512),
            (600 * MIB, 512),
            (600 * MIB, 4096),
            (512 * MIB, 512),
            (40 * MIB, 512),
        ] {
            let geometry = Geometry::plan(size, bps).unwrap();
            let boot = BootSector {
                geometry: geometry.clone(),
                volume_id: 0x1234_5678,
                label: *b"ABNIX-ESP  ",
            };
            let bytes = boot.to_bytes();
            assert_eq!(bytes.len(), bps as usize);
            assert_eq!(
                BootSector::parse(&first_512(&bytes), size).unwrap(),
                boot,
                "{size} {bps}"
            );
            assert!(geometry.cluster_count() >= MIN_CLUSTERS);
            assert_eq!(
                (geometry.reserved_sectors + 2 * geometry.fat_sectors)
                    % geometry.sectors_per_cluster,
                0,
                "the data area starts on a cluster boundary"
            );
            assert!(geometry.fat_bytes() as u64 / 4 >= u64::from(geometry.cluster_count()) + 2);
        }
    }

    #[test]
    fn cluster_size_follows_the_region_size() {
        assert_eq!(Geometry::plan(64 * MIB, 512).unwrap().cluster_size(), 512);
        assert_eq!(Geometry::plan(512 * MIB, 512).unwrap().cluster_size(), 4096);
        assert_eq!(
            Geometry::plan(600 * MIB, 4096).unwrap().cluster_size(),
            4096
        );
        assert_eq!(
            Geometry::plan(20 * 1024 * MIB, 512).unwrap().cluster_size(),
            16384
        );
        // 300 MiB with 4 KiB sectors: 4 KiB clusters give ~76000 clusters.
        assert_eq!(
            Geometry::plan(300 * MIB, 4096).unwrap().cluster_size(),
            4096
        );
    }

    #[test]
    fn too_small_regions_are_refused_with_the_minimum() {
        for bps in [512u32, 4096] {
            let min = Geometry::min_size(bps);
            assert!(
                Geometry::plan(min, bps).is_ok(),
                "{bps}: the minimum itself fits"
            );
            match Geometry::plan(min - u64::from(bps), bps) {
                Err(FatError::TooSmall {
                    size,
                    min: reported,
                }) => {
                    assert_eq!((size, reported), (min - u64::from(bps), min))
                }
                other => panic!("{bps}: {other:?}"),
            }
        }
        assert!(matches!(
            Geometry::plan(64 * MIB, 4096),
            Err(FatError::TooSmall { .. })
        ));
        assert!(matches!(
            Geometry::plan(64 * MIB, 1000),
            Err(FatError::Unsupported(_))
        ));
    }

    fn valid_sector() -> [u8; 512] {
        let geometry = Geometry::plan(64 * MIB, 512).unwrap();
        first_512(
            &BootSector {
                geometry,
                volume_id: 1,
                label: *b"NO NAME    ",
            }
            .to_bytes(),
        )
    }

    fn rejection(mutate: impl FnOnce(&mut [u8; 512])) -> String {
        let mut b = valid_sector();
        mutate(&mut b);
        match BootSector::parse(&b, 64 * MIB) {
            Err(FatError::Corrupt(msg)) => msg,
            other => panic!("accepted: {other:?}"),
        }
    }

    #[test]
    fn bad_boot_sectors_are_rejected_with_the_reason() {
        assert!(rejection(|b| b[511] = 0).contains("55 AA"));
        assert!(
            rejection(|b| b[11..13].copy_from_slice(&1000u16.to_le_bytes()))
                .contains("bytes per sector")
        );
        assert!(rejection(|b| b[13] = 3).contains("sectors per cluster"));
        assert!(rejection(|b| b[16] = 0).contains("0 FATs"));
        assert!(rejection(|b| b[17] = 2).contains("not FAT32"));
        assert!(rejection(|b| b[22] = 9).contains("not FAT32"));
        assert!(
            rejection(|b| b[32..36].copy_from_slice(&u32::MAX.to_le_bytes()))
                .contains("region holds")
        );
        assert!(rejection(|b| b[42] = 1).contains("version"));
        assert!(
            rejection(|b| b[36..40].copy_from_slice(&0u32.to_le_bytes())).contains("no data area")
        );
        assert!(
            rejection(|b| b[44..48].copy_from_slice(&0u32.to_le_bytes()))
                .contains("root directory cluster")
        );
        assert!(rejection(|b| b[40] = 0x85).contains("active FAT"));
        // Eight sectors per cluster on 64 MiB: about 16000 clusters, FAT16 land.
        assert!(rejection(|b| b[13] = 8).contains("not FAT32: "));
        assert!(
            rejection(|b| b[36..40].copy_from_slice(&4u32.to_le_bytes())).contains("cannot map")
        );
    }

    #[test]
    fn garbage_is_never_a_boot_sector() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..500 {
            let mut b = [0u8; 512];
            for byte in b.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *byte = seed as u8;
            }
            b[510] = 0x55;
            b[511] = 0xAA;
            assert!(BootSector::parse(&b, 1 << 40).is_err());
        }
    }

    #[test]
    fn fsinfo_round_trips_and_needs_its_signatures() {
        let mut sector = vec![0u8; 512];
        assert_eq!(FsInfo::parse(&sector), None);
        let info = FsInfo {
            free_count: 1234,
            next_free: 99,
        };
        info.write_into(&mut sector);
        assert_eq!(FsInfo::parse(&sector), Some(info));
        assert_eq!(&sector[0..4], b"RRaA");
        assert_eq!(&sector[508..512], &[0, 0, 0x55, 0xAA]);
        sector[484] ^= 1;
        assert_eq!(FsInfo::parse(&sector), None);
    }
}
