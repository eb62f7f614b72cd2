//! The indexes of the versions in the slots, kept on the rw partition so
//! that a delta update knows what the active slot holds without asking the
//! bucket: `<state dir>/index/<version>-<id>.index`, the same bytes as the
//! version's index object.
//!
//! A stored index is a hint, not a trusted fact: every chunk copied on its
//! word is checked against the new version's signed index, so a stale or
//! damaged file can only cost downloads, never a wrong image.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::channel::Channel;
use crate::state_dir::write_atomically;
use abnix_formats::index::{Index, IndexError};
use abnix_formats::meta::{object_name, ObjectKind};

/// The directory of stored indexes.
#[derive(Debug, Clone)]
pub struct IndexStore {
    dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Corrupt { path: PathBuf, source: IndexError },
}

impl IndexStore {
    /// The store under the updater's state directory: `<state_dir>/index`.
    pub(crate) fn new(state_dir: &Path) -> IndexStore {
        IndexStore {
            dir: state_dir.join("index"),
        }
    }

    /// Where the index of a version is kept.
    fn path(&self, version: u64, id: Uuid) -> PathBuf {
        self.dir.join(object_name(version, id, ObjectKind::Index))
    }

    /// Keeps `index` as the index of the version, atomically: call it once
    /// the version's image is written and verified.
    pub(crate) fn save(&self, version: u64, id: Uuid, index: &Index) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        write_atomically(&self.path(version, id), &index.to_bytes())
    }

    /// The stored index of the version, `None` if there is none.
    pub(crate) fn load(&self, version: u64, id: Uuid) -> Result<Option<Index>, StoreError> {
        let path = self.path(version, id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path, source }),
        };
        Index::parse(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { path, source })
    }

    /// Removes every stored index but those of `keep` (the versions in the
    /// slots), so the store does not grow with every update.
    pub(crate) fn retain(&self, keep: &[(u64, Uuid)]) -> io::Result<()> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let kept: Vec<PathBuf> = keep.iter().map(|&(v, id)| self.path(v, id)).collect();
        for entry in entries {
            let path = entry?.path();
            if !kept.contains(&path) {
                debug!(path = %path.display(), "removing a stored index");
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// The index of the version in the active slot: the stored one, else the
    /// one in the bucket (verified through the version's signed meta), which
    /// is then stored. `None` when neither is to be had; the reason is
    /// logged, as the update then downloads the whole image.
    pub(crate) fn active_index(&self, channel: &Channel, version: u64, id: Uuid) -> Option<Index> {
        match self.load(version, id) {
            Ok(Some(index)) => return Some(index),
            Ok(None) => {
                info!(version, %id, "no stored index of the active version; asking the bucket")
            }
            Err(error) => {
                warn!(%error, "the stored index of the active version is unusable; asking the bucket")
            }
        }
        match channel.version_index(version, id) {
            Ok(index) => {
                if let Err(error) = self.save(version, id, &index) {
                    warn!(%error, "cannot store the index of the active version");
                }
                Some(index)
            }
            Err(error) => {
                warn!(version, %id, %error, "the bucket has no usable index of the active version");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use abnix_formats::digest::Digest;

    fn sample() -> Index {
        let mut index = Index::default();
        index.push(4096, 100, Digest::of(b"one"));
        index.push(8192, 200, Digest::of(b"two"));
        index
    }

    #[test]
    fn save_and_load_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IndexStore::new(tmp.path());
        let id = Uuid::from_u128(7);
        assert!(store.load(7, id).unwrap().is_none(), "missing is None");
        store.save(7, id, &sample()).unwrap();
        assert_eq!(store.load(7, id).unwrap(), Some(sample()));
        assert_eq!(
            store.path(7, id),
            tmp.path()
                .join("index/7-00000000-0000-0000-0000-000000000007.index")
        );
    }

    #[test]
    fn a_damaged_index_is_an_error_naming_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IndexStore::new(tmp.path());
        let id = Uuid::from_u128(3);
        store.save(3, id, &sample()).unwrap();
        let path = store.path(3, id);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = store.load(3, id).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("3-00000000"), "{err}");
    }

    #[test]
    fn retain_removes_the_others() {
        let tmp = tempfile::tempdir().unwrap();
        let store = IndexStore::new(tmp.path());
        store.retain(&[]).unwrap();
        for v in 1..=3 {
            store.save(v, Uuid::from_u128(v.into()), &sample()).unwrap();
        }
        store
            .retain(&[(2, Uuid::from_u128(2)), (3, Uuid::from_u128(3))])
            .unwrap();
        assert!(store.load(1, Uuid::from_u128(1)).unwrap().is_none());
        assert!(store.load(2, Uuid::from_u128(2)).unwrap().is_some());
        assert!(store.load(3, Uuid::from_u128(3)).unwrap().is_some());
    }
}
