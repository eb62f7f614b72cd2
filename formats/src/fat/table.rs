//! The file allocation table, held in memory, written back sector by sector.
//!
//! Format facts from the Microsoft FAT specification (fatgen103), "FAT Data
//! Structure": a FAT32 entry is 32 bits of which the high 4 are reserved
//! (kept as found when an entry is written); 0 marks a free cluster,
//! 0x0FFFFFF7 a bad one, 0x0FFFFFF8 and above the end of a chain; entries 0
//! and 1 are reserved (FAT[0] holds the media byte). GRUB compares FAT32
//! entries without masking the reserved bits, so abnix never sets them.
//!
//! The whole live FAT is kept in memory (4 bytes per cluster: 512 KiB for a
//! 512 MiB ESP), which makes allocation and chain walks cheap.

use std::collections::BTreeSet;

use super::bpb::Geometry;
use super::{read_at, write_at, FatError};
use crate::disk::Disk;

const ENTRY_MASK: u32 = 0x0FFF_FFFF;
pub(super) const FREE: u32 = 0;
const BAD: u32 = 0x0FFF_FFF7;
const END_OF_CHAIN_MIN: u32 = 0x0FFF_FFF8;
/// The end-of-chain mark abnix writes.
pub(super) const END_OF_CHAIN: u32 = 0x0FFF_FFFF;

pub(super) struct FatTable {
    /// The live FAT, byte for byte as on disk.
    bytes: Vec<u8>,
    cluster_count: u32,
    free: u32,
    /// Where the next search for free clusters starts.
    next_free: u32,
    /// FAT sectors changed since the last flush.
    dirty: BTreeSet<usize>,
    bytes_per_sector: usize,
}

/// One bit per cluster number.
pub(super) struct ClusterSet(Vec<u64>);

impl ClusterSet {
    pub(crate) fn new(cluster_count: u32) -> Self {
        ClusterSet(vec![0; (cluster_count as usize + 2).div_ceil(64)])
    }

    /// Adds `cluster`; false if it was already there.
    pub(crate) fn insert(&mut self, cluster: u32) -> bool {
        let (word, bit) = (cluster as usize / 64, 1u64 << (cluster % 64));
        let fresh = self.0[word] & bit == 0;
        self.0[word] |= bit;
        fresh
    }

    pub(crate) fn contains(&self, cluster: u32) -> bool {
        self.0[cluster as usize / 64] & (1u64 << (cluster % 64)) != 0
    }
}

impl FatTable {
    /// Reads the live FAT.
    pub(crate) fn load<D: Disk>(disk: &mut D, geometry: &Geometry) -> Result<Self, FatError> {
        let mut bytes = vec![0u8; geometry.fat_bytes_used()];
        read_at(
            disk,
            geometry.fat_offset(geometry.active_fat.unwrap_or(0)),
            &mut bytes,
        )?;
        let mut table = FatTable {
            bytes,
            cluster_count: geometry.cluster_count(),
            free: 0,
            next_free: 2,
            dirty: BTreeSet::new(),
            bytes_per_sector: geometry.bytes_per_sector as usize,
        };
        table.free = (2..table.end()).filter(|&c| table.get(c) == FREE).count() as u32;
        Ok(table)
    }

    /// One past the highest cluster number.
    fn end(&self) -> u32 {
        self.cluster_count + 2
    }

    pub(crate) fn is_cluster(&self, cluster: u32) -> bool {
        (2..self.end()).contains(&cluster)
    }

    fn raw(&self, cluster: u32) -> u32 {
        let at = cluster as usize * 4;
        u32::from_le_bytes(self.bytes[at..at + 4].try_into().expect("4 bytes"))
    }

    /// The entry of `cluster` without its reserved bits.
    fn get(&self, cluster: u32) -> u32 {
        self.raw(cluster) & ENTRY_MASK
    }

    /// Whether `value` is something other than free or bad: a link or an end.
    fn in_use(value: u32) -> bool {
        value != FREE && value != BAD
    }

    pub(crate) fn set(&mut self, cluster: u32, value: u32) {
        let old = self.raw(cluster);
        match (old & ENTRY_MASK == FREE, value == FREE) {
            (true, false) => self.free -= 1,
            (false, true) => self.free += 1,
            _ => {}
        }
        let at = cluster as usize * 4;
        let new = (old & !ENTRY_MASK) | (value & ENTRY_MASK);
        self.bytes[at..at + 4].copy_from_slice(&new.to_le_bytes());
        self.dirty.insert(at / self.bytes_per_sector);
    }

    pub(crate) fn free_clusters(&self) -> u32 {
        self.free
    }

    pub(crate) fn next_free(&self) -> u32 {
        self.next_free
    }

    /// Takes the FSInfo hint, if it names a cluster.
    pub(crate) fn set_next_free(&mut self, hint: u32) {
        if self.is_cluster(hint) {
            self.next_free = hint;
        }
    }

    /// `n` free clusters, searched from the next-free hint onwards and
    /// wrapping around, so that a new file tends to be contiguous. Nothing is
    /// marked: the caller links them once their contents are on disk.
    pub(crate) fn find_free(&self, n: u32) -> Option<Vec<u32>> {
        if n > self.free {
            return None;
        }
        let start = self.next_free;
        let found: Vec<u32> = (start..self.end())
            .chain(2..start)
            .filter(|&c| self.get(c) == FREE)
            .take(n as usize)
            .collect();
        (found.len() == n as usize).then_some(found)
    }

    /// Links `clusters` into one chain ending in an end-of-chain mark.
    pub(crate) fn link(&mut self, clusters: &[u32]) {
        for pair in clusters.windows(2) {
            self.set(pair[0], pair[1]);
        }
        if let Some(&last) = clusters.last() {
            self.set(last, END_OF_CHAIN);
            self.next_free = if last + 1 < self.end() { last + 1 } else { 2 };
        }
    }

    /// The chain that starts at `start`, checked link by link.
    ///
    /// `max_len` stops the walk early (a file needs only as many clusters as
    /// its size); otherwise it runs to the end-of-chain mark. Every cluster
    /// reached must be in range and in use, and none may repeat, so a
    /// corrupt FAT gives an error naming `owner` instead of a wrong answer or
    /// an endless loop.
    pub(crate) fn chain(
        &self,
        start: u32,
        max_len: Option<usize>,
        owner: &str,
    ) -> Result<Vec<u32>, FatError> {
        if !self.is_cluster(start) {
            return Err(FatError::Corrupt(format!(
                "{owner} starts at cluster {start}, outside 2..={}",
                self.end() - 1
            )));
        }
        let mut seen = ClusterSet::new(self.cluster_count);
        let mut chain = Vec::new();
        let mut cluster = start;
        loop {
            if !seen.insert(cluster) {
                return Err(FatError::Corrupt(format!(
                    "the cluster chain of {owner} loops back to cluster {cluster}"
                )));
            }
            chain.push(cluster);
            let next = self.get(cluster);
            let problem = match next {
                FREE => Some("is free".to_string()),
                1 => Some("holds the reserved value 1".to_string()),
                BAD => Some("is marked bad".to_string()),
                n if n >= END_OF_CHAIN_MIN => return Ok(chain),
                n if !self.is_cluster(n) => Some(format!("points past the end, to {n}")),
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(FatError::Corrupt(format!(
                    "cluster {cluster} in the chain of {owner} {problem}"
                )));
            }
            if max_len == Some(chain.len()) {
                return Ok(chain);
            }
            cluster = next;
        }
    }

    /// Every cluster number that is allocated (linked or ending a chain).
    pub(crate) fn allocated(&self) -> impl Iterator<Item = u32> + '_ {
        (2..self.end()).filter(|&c| Self::in_use(self.get(c)))
    }

    /// Marks dirty every sector in which another FAT copy differs from the
    /// live one, so that the next flush makes the copies identical again.
    pub(crate) fn mark_differing_copies<D: Disk>(
        &mut self,
        disk: &mut D,
        geometry: &Geometry,
    ) -> Result<(), FatError> {
        let live = geometry.active_fat.unwrap_or(0);
        let mut copy = vec![0u8; self.bytes.len()];
        for other in geometry.fat_copies().into_iter().filter(|&c| c != live) {
            read_at(disk, geometry.fat_offset(other), &mut copy)?;
            let sectors = self
                .bytes
                .chunks(self.bytes_per_sector)
                .zip(copy.chunks(self.bytes_per_sector));
            for (index, (mine, theirs)) in sectors.enumerate() {
                if mine != theirs {
                    self.dirty.insert(index);
                }
            }
        }
        Ok(())
    }

    /// Writes the changed sectors to every FAT copy, the live one first.
    /// Runs of adjacent sectors go out as one write. No sync: the caller
    /// orders this against its other writes.
    pub(crate) fn flush<D: Disk>(
        &mut self,
        disk: &mut D,
        geometry: &Geometry,
    ) -> Result<(), FatError> {
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &sector in &self.dirty {
            match runs.last_mut() {
                Some((start, len)) if *start + *len == sector => *len += 1,
                _ => runs.push((sector, 1)),
            }
        }
        let bps = self.bytes_per_sector;
        for copy in geometry.fat_copies() {
            for &(start, len) in &runs {
                let bytes = &self.bytes[start * bps..(start + len) * bps];
                write_at(
                    disk,
                    geometry.fat_offset(copy) + (start * bps) as u64,
                    bytes,
                )?;
            }
        }
        self.dirty.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A geometry with 70000 clusters and a FAT table on a zeroed disk.
    fn table() -> (Cursor<Vec<u8>>, Geometry, FatTable) {
        let geometry = Geometry::plan(40 << 20, 512).unwrap();
        let mut disk = Cursor::new(vec![0u8; 40 << 20]);
        let table = FatTable::load(&mut disk, &geometry).unwrap();
        (disk, geometry, table)
    }

    #[test]
    fn linked_chains_read_back() {
        let (_, geometry, mut t) = table();
        assert_eq!(t.free_clusters(), geometry.cluster_count());
        let clusters = t.find_free(5).unwrap();
        assert_eq!(clusters, vec![2, 3, 4, 5, 6]);
        t.link(&clusters);
        assert_eq!(t.free_clusters(), geometry.cluster_count() - 5);
        assert_eq!(t.chain(2, None, "f").unwrap(), clusters);
        assert_eq!(t.chain(2, Some(3), "f").unwrap(), vec![2, 3, 4]);
        assert_eq!(
            t.find_free(2).unwrap(),
            vec![7, 8],
            "the search goes on after the last allocation"
        );
        t.set(4, FREE);
        assert!(
            matches!(t.chain(2, None, "f"), Err(FatError::Corrupt(m)) if m == "cluster 4 in the chain of f is free")
        );
    }

    #[test]
    fn corrupt_chains_are_errors() {
        let (_, geometry, mut t) = table();
        t.set(2, 3);
        t.set(3, 2);
        assert!(
            matches!(t.chain(2, None, "loop"), Err(FatError::Corrupt(m)) if m.contains("loops back to cluster 2"))
        );
        t.set(3, geometry.cluster_count() + 2);
        assert!(
            matches!(t.chain(2, None, "far"), Err(FatError::Corrupt(m)) if m.contains("points past the end"))
        );
        t.set(3, BAD);
        assert!(
            matches!(t.chain(2, None, "bad"), Err(FatError::Corrupt(m)) if m.contains("marked bad"))
        );
        t.set(3, 1);
        assert!(
            matches!(t.chain(2, None, "one"), Err(FatError::Corrupt(m)) if m.contains("reserved value 1"))
        );
        assert!(
            matches!(t.chain(0, None, "zero"), Err(FatError::Corrupt(m)) if m.contains("starts at cluster 0"))
        );
    }

    #[test]
    fn reserved_bits_survive_writes() {
        let (_, _, mut t) = table();
        t.bytes[8..12].copy_from_slice(&0xF000_0000u32.to_le_bytes());
        t.set(2, END_OF_CHAIN);
        assert_eq!(t.raw(2), 0xFFFF_FFFF);
        assert_eq!(t.get(2), END_OF_CHAIN);
    }

    #[test]
    fn flush_writes_changed_sectors_to_both_copies() {
        let (mut disk, geometry, mut t) = table();
        t.link(&[2, 3]);
        t.set(200, END_OF_CHAIN);
        t.flush(&mut disk, &geometry).unwrap();
        let reloaded = FatTable::load(&mut disk, &geometry).unwrap();
        assert_eq!(reloaded.chain(2, None, "f").unwrap(), vec![2, 3]);
        assert_eq!(reloaded.get(200), END_OF_CHAIN);
        let image = disk.get_ref();
        let fat = |copy| &image[geometry.fat_offset(copy) as usize..][..geometry.fat_bytes_used()];
        assert_eq!(fat(0), fat(1));
    }

    #[test]
    fn differing_copies_are_healed_by_the_next_flush() {
        let (mut disk, geometry, mut t) = table();
        let second = geometry.fat_offset(1) as usize;
        disk.get_mut()[second + 4 * 900..second + 4 * 901]
            .copy_from_slice(&END_OF_CHAIN.to_le_bytes());
        t.mark_differing_copies(&mut disk, &geometry).unwrap();
        t.flush(&mut disk, &geometry).unwrap();
        assert_eq!(
            &disk.get_ref()[second + 4 * 900..second + 4 * 901],
            &[0, 0, 0, 0]
        );
    }
}
