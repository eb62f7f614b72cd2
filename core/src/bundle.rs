//! A bundle: a directory holding one version's objects (DESIGN §3), as
//! written by [`crate::pack`], read by the installer and by `publish`.
//!
//! [`Bundle::open`] trusts nothing it has not checked: the meta's signature
//! is verified before anything else is read, then every object the meta
//! names is checked against it. The image object is only checked for its
//! size here; its content is verified chunk by chunk against the index (and
//! as a whole against the meta) when it is written into a slot, and by the
//! installer before it overwrites anything (see `abnix_installer::install`).

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use abnix_formats::digest::Digest;
use abnix_formats::index::{Index, IndexError};
use abnix_formats::meta::{verify_meta, Artifact, SignedMeta, VerifyError, MAX_META_BYTES};
use abnix_formats::sign::{TrustedKeys, MAX_SIGNATURE_FILE_BYTES};

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
    #[error("{} is not a regular file", .0.display())]
    NotRegular(PathBuf),
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

/// Opens a file of the bundle for reading, refusing anything but a regular
/// file: opening a FIFO would otherwise wait for a writer forever (fifo(7)),
/// hence `O_NONBLOCK`, which changes nothing for a regular file.
fn open_regular(path: &Path) -> Result<File, BundleError> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_error(path))?;
    if !file.metadata().map_err(io_error(path))?.is_file() {
        return Err(BundleError::NotRegular(path.to_owned()));
    }
    Ok(file)
}

/// Reads a whole small file, refusing one above `max` bytes without reading
/// it all.
fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, BundleError> {
    let file = open_regular(path)?;
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
    let mut file = open_regular(path)?;
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
        let meta = signed.meta();

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
        self.dir.join(&self.signed.meta().image.object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::test_support::{Sample, UUID};
    use abnix_formats::meta::{object_name, ObjectKind};
    use abnix_formats::sign::{signature_file, SecretKey, SignatureError};
    use std::io::Write;

    struct Fixture {
        _tmp: tempfile::TempDir,
        dir: PathBuf,
        keys: TrustedKeys,
        key: SecretKey,
    }

    fn packed() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let sample = Sample::new(tmp.path());
        let dir = tmp.path().join("bundle");
        sample.pack_into(&dir);
        Fixture {
            dir,
            keys: [sample.key.public()].into_iter().collect(),
            key: sample.key,
            _tmp: tmp,
        }
    }

    impl Fixture {
        fn path(&self, kind: ObjectKind) -> PathBuf {
            self.dir.join(object_name(5, UUID.parse().unwrap(), kind))
        }

        fn open(&self) -> Result<Bundle, BundleError> {
            Bundle::open(&self.dir, &self.keys)
        }

        /// Flips one byte of an object, keeping its size.
        fn flip_byte(&self, kind: ObjectKind, at: usize) {
            let path = self.path(kind);
            let mut bytes = fs::read(&path).unwrap();
            bytes[at] ^= 0x01;
            fs::write(&path, bytes).unwrap();
        }

        /// Replaces the meta with an edited, correctly re-signed one.
        fn resign_meta(&self, edit: impl FnOnce(&mut abnix_formats::meta::Meta)) {
            let path = self.path(ObjectKind::Meta);
            let mut meta = abnix_formats::meta::Meta::parse(&fs::read(&path).unwrap()).unwrap();
            edit(&mut meta);
            let bytes = meta.to_bytes();
            fs::write(&path, &bytes).unwrap();
            let sig = signature_file(&[self.key.sign(&bytes)]);
            fs::write(self.path(ObjectKind::MetaSig), sig).unwrap();
        }
    }

    #[test]
    fn a_packed_bundle_opens() {
        let f = packed();
        let bundle = f.open().unwrap();
        let meta = bundle.signed.meta();
        assert_eq!(bundle.path_of(&meta.kernel), f.path(ObjectKind::Kernel));
        assert_eq!(bundle.image_path(), f.path(ObjectKind::Image));
        assert_eq!(bundle.index.image_size(), meta.image.size);
        assert_eq!(bundle.signed.signer(), "test-fleet");
    }

    #[test]
    fn no_meta_or_several_metas() {
        let f = packed();
        let meta = f.path(ObjectKind::Meta);
        let copy = f.dir.join("4-other.meta");
        fs::copy(&meta, &copy).unwrap();
        match f.open().unwrap_err() {
            BundleError::SeveralMetas { names, .. } => assert_eq!(names.len(), 2),
            other => panic!("{other}"),
        }
        fs::remove_file(&copy).unwrap();
        fs::remove_file(&meta).unwrap();
        assert!(matches!(f.open(), Err(BundleError::NoMeta(d)) if d == f.dir));
    }

    #[test]
    fn missing_signature_file_is_named() {
        let f = packed();
        let sig = f.path(ObjectKind::MetaSig);
        fs::remove_file(&sig).unwrap();
        let err = f.open().unwrap_err();
        assert!(
            matches!(&err, BundleError::Missing(p) if *p == sig),
            "{err}"
        );
        assert!(err.to_string().ends_with(".meta.sig is missing"), "{err}");
    }

    #[test]
    fn untrusted_key_or_tampered_meta_is_a_bad_signature() {
        let f = packed();
        let stranger: TrustedKeys = [SecretKey::generate("test-fleet").unwrap().public()]
            .into_iter()
            .collect();
        let err = Bundle::open(&f.dir, &stranger).unwrap_err();
        assert!(
            matches!(
                &err,
                BundleError::BadSignature {
                    source: VerifyError::Signature(SignatureError::BadSignature { .. }),
                    ..
                }
            ),
            "{err}"
        );
        f.flip_byte(ObjectKind::Meta, 30);
        let err = f.open().unwrap_err();
        assert!(
            matches!(err, BundleError::BadSignature { ref path, .. } if *path == f.path(ObjectKind::Meta)),
            "{err}"
        );
    }

    #[test]
    fn signature_is_checked_before_objects_are_read() {
        let f = packed();
        fs::remove_file(f.path(ObjectKind::Kernel)).unwrap();
        fs::write(f.path(ObjectKind::MetaSig), "").unwrap();
        assert!(matches!(
            f.open(),
            Err(BundleError::BadSignature {
                source: VerifyError::Signature(SignatureError::NoSignature),
                ..
            })
        ));
    }

    #[test]
    fn kernel_and_initrd_are_checked() {
        let f = packed();
        let kernel = f.path(ObjectKind::Kernel);
        f.flip_byte(ObjectKind::Kernel, 100);
        let err = f.open().unwrap_err();
        assert!(
            matches!(&err, BundleError::HashMismatch { path, .. } if *path == kernel),
            "{err}"
        );

        let initrd = f.path(ObjectKind::Initrd);
        let len = fs::metadata(&initrd).unwrap().len();
        fs::OpenOptions::new()
            .append(true)
            .open(&initrd)
            .unwrap()
            .write_all(b"x")
            .unwrap();
        fs::copy(f.dir.join("../bzImage"), &kernel).unwrap();
        let err = f.open().unwrap_err();
        assert!(
            matches!(&err, BundleError::WrongSize { path, expected, actual } if *path == initrd && *expected == len && *actual == len + 1),
            "{err}"
        );

        fs::remove_file(&initrd).unwrap();
        assert!(matches!(f.open(), Err(BundleError::Missing(p)) if p == initrd));
    }

    #[test]
    fn index_is_checked() {
        let f = packed();
        let index = f.path(ObjectKind::Index);
        f.flip_byte(ObjectKind::Index, 20);
        assert!(matches!(f.open(), Err(BundleError::HashMismatch { path, .. }) if path == index));
        fs::write(&index, b"short").unwrap();
        assert!(matches!(f.open(), Err(BundleError::WrongSize { path, .. }) if path == index));
    }

    #[test]
    fn signed_but_inconsistent_index_is_refused() {
        let f = packed();
        let index = f.path(ObjectKind::Index);
        // A correctly hashed and signed index that is not an index.
        let junk = vec![0u8; 56];
        fs::write(&index, &junk).unwrap();
        f.resign_meta(|m| {
            m.index.size = 56;
            m.index.sha256 = Digest::of(&junk);
        });
        assert!(
            matches!(f.open(), Err(BundleError::BadIndex { path, source: IndexError::BadMagic { .. } }) if path == index)
        );

        // A valid index that covers a different image size than the meta.
        let f = packed();
        f.resign_meta(|m| m.image.size += 1);
        let err = f.open().unwrap_err();
        assert!(matches!(err, BundleError::IndexMismatch { .. }), "{err}");
        assert!(err.to_string().contains("its chunks cover"), "{err}");
    }

    /// Opens the bundle on another thread: a FIFO that made `open` wait for
    /// a writer fails the test instead of hanging it.
    fn open_within_a_minute(f: &Fixture) -> Result<Bundle, BundleError> {
        let (dir, keys) = (f.dir.clone(), f.keys.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        // The receiver is gone only after a timeout, which fails the test.
        std::thread::spawn(move || tx.send(Bundle::open(&dir, &keys)).ok());
        rx.recv_timeout(std::time::Duration::from_secs(60))
            .expect("Bundle::open blocked on a FIFO")
    }

    fn replace_with_fifo(path: &Path) {
        use std::os::unix::ffi::OsStrExt;
        fs::remove_file(path).unwrap();
        let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        for kind in [ObjectKind::Meta, ObjectKind::MetaSig] {
            let f = packed();
            let path = f.path(kind);
            replace_with_fifo(&path);
            let err = open_within_a_minute(&f).unwrap_err();
            assert!(
                matches!(&err, BundleError::NotRegular(p) if *p == path),
                "{kind:?}: {err}"
            );
            assert!(err.to_string().ends_with("is not a regular file"), "{err}");
        }
    }

    #[test]
    fn an_oversized_meta_or_signature_is_refused_unread() {
        for (kind, max) in [
            (ObjectKind::Meta, MAX_META_BYTES as u64),
            (ObjectKind::MetaSig, MAX_SIGNATURE_FILE_BYTES as u64),
        ] {
            let f = packed();
            let path = f.path(kind);
            // Sparse: a huge file on a stick costs no disk here.
            let huge = 1 << 40;
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(huge)
                .unwrap();
            let err = f.open().unwrap_err();
            assert!(
                matches!(&err, BundleError::TooLarge { path: p, actual, max: m } if *p == path && *actual == huge && *m == max),
                "{kind:?}: {err}"
            );
        }
    }

    #[test]
    fn image_object_size_is_checked() {
        let f = packed();
        let image = f.path(ObjectKind::Image);
        let file = fs::OpenOptions::new().write(true).open(&image).unwrap();
        let len = file.metadata().unwrap().len();
        file.set_len(len - 1).unwrap();
        let err = f.open().unwrap_err();
        assert!(
            matches!(&err, BundleError::WrongSize { path, expected, actual } if *path == image && *expected == len && *actual == len - 1),
            "{err}"
        );
    }
}
