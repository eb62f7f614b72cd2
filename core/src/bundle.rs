//! A bundle: a directory holding one version's objects (DESIGN §3), as
//! written by [`crate::pack`], read by the installer and by `publish`.
//!
//! [`Bundle::open`] trusts nothing it has not checked: the meta's signature
//! is verified before anything else is read, then every object the meta
//! names is checked against it. The image object is only checked for its
//! size here; its content is verified chunk by chunk against the index (and
//! as a whole against the meta) when it is written into a slot.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::index::{Index, IndexError};
use crate::meta::{verify_meta, Artifact, SignedMeta, VerifyError, MAX_META_BYTES};
use crate::sign::{TrustedKeys, MAX_SIGNATURE_FILE_BYTES};

/// A verified bundle directory.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub signed: SignedMeta,
    pub index: Index,
}

/// What is wrong with a bundle; every error names the file.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("no *.meta file in {}", .0.display())]
    NoMeta(PathBuf),
    #[error("several *.meta files in {}: {}", dir.display(), names.join(", "))]
    SeveralMetas { dir: PathBuf, names: Vec<String> },
    #[error("{} is missing", .0.display())]
    Missing(PathBuf),
    #[error("reading {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{} is {actual} bytes, more than the {max} allowed", path.display())]
    TooLarge {
        path: PathBuf,
        actual: u64,
        max: u64,
    },
    #[error("{} does not verify: {source}", path.display())]
    BadSignature { path: PathBuf, source: VerifyError },
    #[error("{} is {actual} bytes, the meta says {expected}", path.display())]
    WrongSize {
        path: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error("{} has SHA-256 {actual}, the meta says {expected}", path.display())]
    HashMismatch {
        path: PathBuf,
        expected: Digest,
        actual: Digest,
    },
    #[error("{} is not a valid index: {source}", path.display())]
    BadIndex { path: PathBuf, source: IndexError },
    #[error("{} does not match the meta: {reason}", path.display())]
    IndexMismatch { path: PathBuf, reason: String },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> BundleError {
    let path = path.to_owned();
    move |source| match source.kind() {
        io::ErrorKind::NotFound => BundleError::Missing(path),
        _ => BundleError::Io { path, source },
    }
}

/// Reads a whole small file, refusing one above `max` bytes without reading
/// it all.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, BundleError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    if bytes.len() as u64 > max {
        let actual = fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(BundleError::TooLarge {
            path: path.to_owned(),
            actual,
            max,
        });
    }
    Ok(bytes)
}

fn file_size(path: &Path) -> Result<u64, BundleError> {
    Ok(fs::metadata(path).map_err(io_error(path))?.len())
}

fn check_size(path: &Path, expected: u64, actual: u64) -> Result<(), BundleError> {
    if actual != expected {
        return Err(BundleError::WrongSize {
            path: path.to_owned(),
            expected,
            actual,
        });
    }
    Ok(())
}

fn check_hash(path: &Path, expected: Digest, actual: Digest) -> Result<(), BundleError> {
    if actual != expected {
        return Err(BundleError::HashMismatch {
            path: path.to_owned(),
            expected,
            actual,
        });
    }
    Ok(())
}

/// Checks a file's size, then streams it through SHA-256.
fn check_artifact(path: &Path, artifact: &Artifact) -> Result<(), BundleError> {
    check_size(path, artifact.size, file_size(path)?)?;
    let mut file = File::open(path).map_err(io_error(path))?;
    let mut sha = Sha256::new();
    // Read exactly the size the meta names: a file growing meanwhile is
    // caught as a mismatch, not read forever.
    let copied =
        io::copy(&mut (&mut file).take(artifact.size), &mut sha).map_err(io_error(path))?;
    check_size(path, artifact.size, copied)?;
    check_hash(path, artifact.sha256, Digest(sha.finalize().into()))
}

/// The single `*.meta` file of a directory.
fn find_meta(dir: &Path) -> Result<PathBuf, BundleError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(".meta") && !name.starts_with('.') {
            names.push(name.to_owned());
        }
    }
    names.sort();
    match names.len() {
        0 => Err(BundleError::NoMeta(dir.to_owned())),
        1 => Ok(dir.join(&names[0])),
        _ => Err(BundleError::SeveralMetas {
            dir: dir.to_owned(),
            names,
        }),
    }
}

impl Bundle {
    /// Opens and verifies a bundle: the meta's signature (`<meta>.sig`)
    /// against `keys` before anything else is read; then the index (size,
    /// hash, parse, and agreement with the meta's image), kernel and initrd
    /// (size, hash), and the image object's size.
    pub fn open(dir: &Path, keys: &TrustedKeys) -> Result<Bundle, BundleError> {
        let meta_path = find_meta(dir)?;
        let mut sig_path = meta_path.clone().into_os_string();
        sig_path.push(".sig");
        let sig_path = PathBuf::from(sig_path);
        let meta_bytes = read_bounded(&meta_path, MAX_META_BYTES as u64)?;
        let sig_bytes = read_bounded(&sig_path, MAX_SIGNATURE_FILE_BYTES as u64)?;
        let signed = verify_meta(&meta_bytes, &sig_bytes, keys).map_err(|source| {
            BundleError::BadSignature {
                path: meta_path.clone(),
                source,
            }
        })?;
        let meta = &signed.meta;

        let index_path = dir.join(&meta.index.object);
        // The size is signed, so reading that much is safe.
        check_size(&index_path, meta.index.size, file_size(&index_path)?)?;
        let index_bytes = read_bounded(&index_path, meta.index.size)?;
        check_size(&index_path, meta.index.size, index_bytes.len() as u64)?;
        check_hash(&index_path, meta.index.sha256, Digest::of(&index_bytes))?;
        let index = Index::parse(&index_bytes).map_err(|source| BundleError::BadIndex {
            path: index_path.clone(),
            source,
        })?;
        let mismatch = |reason: String| BundleError::IndexMismatch {
            path: index_path.clone(),
            reason,
        };
        if index.image_size() != meta.image.size {
            return Err(mismatch(format!(
                "its chunks cover {} bytes, the image is {}",
                index.image_size(),
                meta.image.size
            )));
        }
        if index.compressed_size() != meta.image.compressed_size {
            return Err(mismatch(format!(
                "its frames cover {} bytes, the image object is {}",
                index.compressed_size(),
                meta.image.compressed_size
            )));
        }

        for artifact in [&meta.kernel, &meta.initrd] {
            check_artifact(&dir.join(&artifact.object), artifact)?;
        }
        let image_path = dir.join(&meta.image.object);
        check_size(
            &image_path,
            meta.image.compressed_size,
            file_size(&image_path)?,
        )?;

        Ok(Bundle {
            dir: dir.to_owned(),
            signed,
            index,
        })
    }

    /// Where an artifact of this bundle is stored.
    pub fn path_of(&self, artifact: &Artifact) -> PathBuf {
        self.dir.join(&artifact.object)
    }

    /// Where the compressed image object is stored.
    pub fn image_path(&self) -> PathBuf {
        self.dir.join(&self.signed.meta.image.object)
    }
}
