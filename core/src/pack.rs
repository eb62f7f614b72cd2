//! Packing a version: raw image + kernel + initrd + cmdline → a signed bundle
//! directory (DESIGN §3).
//!
//! The bundle holds, all named `<version>-<id>.<suffix>`:
//! - `img.zst`: the image cut into content-defined chunks
//!   ([`abnix_formats::chunking`]), each compressed as an independent zstd frame that
//!   records its content size. Concatenated frames are one valid zstd stream,
//!   so `zstd -dc` restores the image; the index lets a reader take frames
//!   one by one (parallel decompression, resumption, later deltas).
//! - `index`: the chunk index ([`abnix_formats::index`]).
//! - `kernel`, `initrd`: copies.
//! - `meta` and `meta.sig`: the meta and its signature, written last, so a
//!   directory with a `.meta` holds everything the meta names.
//!
//! Compression runs on worker threads; a reader thread chunks the image, a
//! hasher thread computes the whole-image SHA-256, and the calling thread
//! writes the frames in order. A fixed number of chunks is in flight at any
//! time, so memory is bounded whatever the image size.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use crate::progress::Progress;
use abnix_formats::chunking::{self, BadChunkParams, ChunkParams};
use abnix_formats::digest::Digest;
use abnix_formats::fsid::{self, FsIdError};
use abnix_formats::index::Index;
use abnix_formats::layout::Arch;
use abnix_formats::meta::{
    self, object_name, Artifact, Image, Meta, MetaError, ObjectKind, SignedMeta, FORMAT_VERSION,
};
use abnix_formats::sign::SecretKey;

/// The default zstd level: 9.
///
/// Measured on a 1.3 GiB ext4 image of Debian's /usr/bin and /usr/share
/// (1.1 GB of files), default chunking, 2 cores; CPU seconds (user), since
/// wall time was skewed by other load:
///
/// | level | image object | pack CPU | `zstd -dc` CPU | pack peak RSS |
/// |-------|--------------|----------|----------------|---------------|
/// | 3     | 421.6 MB     | 18.5 s   | 0.77 s         | 15 MB         |
/// | 9     | 404.1 MB     | 30.3 s   | 0.74 s         | 48 MB         |
/// | 19    | 377.6 MB     | 288.6 s  | 1.00 s         | 72 MB         |
///
/// A version is packed once and downloaded by every device, so 4% less to
/// download is worth 1.6x the packing CPU; decompression is as fast as at
/// level 3, and device memory does not grow (a frame's window never exceeds
/// its chunk). Level 19 saves another 7% for 10x the CPU and 30% slower
/// decompression: `--level 19` for fleets on metered links.
pub const DEFAULT_ZSTD_LEVEL: i32 = 9;

/// Everything a version is made of.
#[derive(Debug, Clone)]
pub struct PackInput<'a> {
    /// The raw root filesystem image (ext4 or erofs); its UUID is the id.
    pub image: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub cmdline: String,
    pub version: u64,
    pub label: String,
    /// The architecture of the machines the version is for (signed in the
    /// meta; devices and the installer refuse another).
    pub arch: Arch,
    /// If given, the image's UUID must be this.
    pub expected_id: Option<Uuid>,
    pub key: &'a SecretKey,
    /// zstd level ([`DEFAULT_ZSTD_LEVEL`]).
    pub level: i32,
    /// Compression threads (at least 1).
    pub threads: usize,
    pub chunking: ChunkParams,
}

impl<'a> PackInput<'a> {
    /// An input for this machine's architecture, with the default level,
    /// chunking and one thread per CPU.
    pub fn new(
        image: impl Into<PathBuf>,
        kernel: impl Into<PathBuf>,
        initrd: impl Into<PathBuf>,
        cmdline: impl Into<String>,
        version: u64,
        label: impl Into<String>,
        key: &'a SecretKey,
    ) -> PackInput<'a> {
        PackInput {
            image: image.into(),
            kernel: kernel.into(),
            initrd: initrd.into(),
            cmdline: cmdline.into(),
            version,
            label: label.into(),
            arch: Arch::native(),
            expected_id: None,
            key,
            level: DEFAULT_ZSTD_LEVEL,
            threads: thread::available_parallelism().map_or(1, |n| n.get()),
            chunking: ChunkParams::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{what} is invalid: {reason}")]
    Invalid { what: &'static str, reason: String },
    #[error(transparent)]
    ChunkParams(#[from] BadChunkParams),
    #[error("cannot read the version id from {}: {source}", image.display())]
    Id { image: PathBuf, source: FsIdError },
    #[error("the image's filesystem UUID is {found}, not the expected {expected}")]
    IdMismatch { expected: Uuid, found: Uuid },
    #[error("output directory {} is not empty", .0.display())]
    OutDirNotEmpty(PathBuf),
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("setting up zstd: {0}")]
    Zstd(io::Error),
    #[error("compressing chunk {chunk}: {source}")]
    Compress { chunk: usize, source: io::Error },
    #[error("the packed meta is invalid: {0}")]
    Meta(#[from] MetaError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> PackError {
    let path = path.to_owned();
    move |source| PackError::Io { what, path, source }
}

fn invalid(what: &'static str, reason: impl Into<String>) -> PackError {
    PackError::Invalid {
        what,
        reason: reason.into(),
    }
}

/// Packs a version into `out_dir` (created if missing, refused if not empty)
/// and returns the signed meta. On failure the files written so far are
/// removed.
pub fn pack(
    input: &PackInput,
    out_dir: &Path,
    progress: &dyn Progress,
) -> Result<SignedMeta, PackError> {
    check_input(input)?;
    let mut image = File::open(&input.image).map_err(io_err("opening", &input.image))?;
    let (fs, id) = fsid::read_fs_uuid(&mut image).map_err(|source| PackError::Id {
        image: input.image.clone(),
        source,
    })?;
    if let Some(expected) = input.expected_id {
        if expected != id {
            return Err(PackError::IdMismatch {
                expected,
                found: id,
            });
        }
    }
    image
        .seek(SeekFrom::Start(0))
        .map_err(io_err("reading", &input.image))?;

    let mut out = Outputs::create(out_dir)?;
    let name = |kind| object_name(input.version, id, kind);

    let image_object = name(ObjectKind::Image);
    let image_path = out.new_file(&image_object);
    let image_file = create_new(&image_path)?;
    let compressed = compress_image(
        image,
        &input.image,
        image_file,
        &image_path,
        input,
        progress,
    )?;
    let index_object = name(ObjectKind::Index);
    let index_bytes = compressed.index.to_bytes();
    out.write(&index_object, &index_bytes)?;
    let kernel = out.copy(&input.kernel, &name(ObjectKind::Kernel))?;
    let initrd = out.copy(&input.initrd, &name(ObjectKind::Initrd))?;

    let meta = Meta {
        format: FORMAT_VERSION,
        version: input.version,
        id,
        label: input.label.clone(),
        arch: input.arch,
        published: None,
        image: Image {
            object: image_object,
            compressed_size: compressed.index.compressed_size(),
            size: compressed.size,
            sha256: compressed.sha256,
            fs,
        },
        index: Artifact {
            object: index_object,
            size: index_bytes.len() as u64,
            sha256: Digest::of(&index_bytes),
        },
        kernel,
        initrd,
        cmdline: input.cmdline.clone(),
    };
    let signed = SignedMeta::sign(meta, &[input.key])?;
    // The signature first and the meta last: a bundle is complete once its
    // .meta exists.
    out.write(&name(ObjectKind::MetaSig), signed.signatures())?;
    out.write(&name(ObjectKind::Meta), signed.bytes())?;
    out.keep();
    let meta = signed.meta();
    tracing::info!(
        version = input.version,
        %id,
        image = compressed.size,
        compressed = meta.image.compressed_size,
        chunks = compressed.index.chunks.len(),
        "packed"
    );
    Ok(signed)
}

/// Refuses bad values before any work: the meta would refuse them too, but
/// only after the image is compressed.
fn check_input(input: &PackInput) -> Result<(), PackError> {
    if input.version == 0 {
        return Err(invalid("version", "must be at least 1"));
    }
    meta::check_label(&input.label).map_err(|r| invalid("label", r))?;
    meta::check_cmdline(&input.cmdline).map_err(|r| invalid("cmdline", r))?;
    let levels = zstd::compression_level_range();
    if !levels.contains(&input.level) {
        return Err(invalid(
            "zstd level",
            format!("{} is not in {levels:?}", input.level),
        ));
    }
    if input.threads == 0 {
        return Err(invalid("thread count", "must be at least 1"));
    }
    input.chunking.check()?;
    Ok(())
}

fn create_new(path: &Path) -> Result<File, PackError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_err("creating", path))
}

/// The files of a bundle being written; removed again unless [`Outputs::keep`]
/// is called, so a failed pack leaves no half bundle behind.
struct Outputs {
    dir: PathBuf,
    created_dir: bool,
    files: Vec<PathBuf>,
    kept: bool,
}

impl Outputs {
    fn create(dir: &Path) -> Result<Outputs, PackError> {
        let created_dir = match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(PackError::OutDirNotEmpty(dir.to_owned()));
                }
                false
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
                true
            }
            Err(e) => return Err(io_err("reading", dir)(e)),
        };
        Ok(Outputs {
            dir: dir.to_owned(),
            created_dir,
            files: Vec::new(),
            kept: false,
        })
    }

    /// Registers a file about to be created, for removal on failure.
    fn new_file(&mut self, name: &str) -> PathBuf {
        let path = self.dir.join(name);
        self.files.push(path.clone());
        path
    }

    fn write(&mut self, name: &str, bytes: &[u8]) -> Result<(), PackError> {
        let path = self.new_file(name);
        let mut file = create_new(&path)?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(io_err("writing", &path))
    }

    /// Copies `src` into the bundle as `name`, hashing it on the way.
    fn copy(&mut self, src: &Path, name: &str) -> Result<Artifact, PackError> {
        let mut reader = File::open(src).map_err(io_err("opening", src))?;
        let path = self.new_file(name);
        let mut writer = create_new(&path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_err("reading", src)(e)),
            };
            hasher.update(&buf[..n]);
            writer
                .write_all(&buf[..n])
                .map_err(io_err("writing", &path))?;
            size += n as u64;
        }
        writer.sync_all().map_err(io_err("writing", &path))?;
        Ok(Artifact {
            object: name.to_owned(),
            size,
            sha256: Digest(hasher.finalize().into()),
        })
    }

    fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Outputs {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        for file in &self.files {
            let _ = fs::remove_file(file);
        }
        if self.created_dir {
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

/// The compressed image: its index, and the raw image's size and hash.
struct CompressedImage {
    index: Index,
    size: u64,
    sha256: Digest,
}

/// A raw chunk on its way to a compression worker: its sequence number and
/// bytes (shared with the hasher).
type Job = (usize, Arc<Vec<u8>>);

/// A compressed chunk on its way to the writer.
struct Frame {
    seq: usize,
    len: u32,
    sha256: Digest,
    bytes: Vec<u8>,
}

/// Chunks `image`, compresses the chunks on `input.threads` workers and
/// writes the frames to `out` in order.
///
/// Memory: the reader takes a token per chunk and the writer gives it back
/// once the frame is written, so at most `tokens` chunks (and their frames)
/// are between the two, plus at most `tokens` waiting for the hasher.
fn compress_image(
    image: File,
    image_path: &Path,
    out: File,
    out_path: &Path,
    input: &PackInput,
    progress: &dyn Progress,
) -> Result<CompressedImage, PackError> {
    let tokens = 2 * input.threads + 2;
    let image_size = image.metadata().ok().map(|m| m.len()).filter(|&n| n > 0);
    let (token_tx, token_rx) = mpsc::channel::<()>();
    for _ in 0..tokens {
        token_tx.send(()).expect("receiver alive");
    }
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Mutex::new(job_rx);
    let (frame_tx, frame_rx) = mpsc::channel::<Result<Frame, PackError>>();
    let (hash_tx, hash_rx) = mpsc::sync_channel::<Arc<Vec<u8>>>(tokens);

    let compressors = (0..input.threads)
        .map(|_| zstd::bulk::Compressor::new(input.level))
        .collect::<io::Result<Vec<_>>>()
        .map_err(PackError::Zstd)?;

    progress.start("compressing image", image_size);
    let result = thread::scope(|s| {
        let reader = s.spawn(move || -> Result<(), PackError> {
            let chunks = chunking::chunks(image, input.chunking)?;
            for (seq, chunk) in chunks.enumerate() {
                let chunk = Arc::new(chunk.map_err(io_err("reading", image_path))?.data);
                // No token: the writer has stopped, and reports why.
                if token_rx.recv().is_err()
                    || hash_tx.send(chunk.clone()).is_err()
                    || job_tx.send((seq, chunk)).is_err()
                {
                    break;
                }
            }
            Ok(())
        });
        let hasher = s.spawn(move || {
            let mut sha = Sha256::new();
            let mut size = 0u64;
            for chunk in hash_rx {
                sha.update(chunk.as_slice());
                size += chunk.len() as u64;
            }
            (size, Digest(sha.finalize().into()))
        });
        for compressor in compressors {
            let frame_tx = frame_tx.clone();
            let job_rx = &job_rx;
            s.spawn(move || compress_worker(compressor, job_rx, frame_tx));
        }
        drop(frame_tx);

        let written = write_frames(frame_rx, token_tx, out, out_path, progress);
        let read = reader.join().expect("reader thread panicked");
        let (size, sha256) = hasher.join().expect("hasher thread panicked");
        // The writer's error first: when it stops, the reader stops too.
        let index = written?;
        read?;
        assert_eq!(size, index.image_size(), "hashed and indexed bytes agree");
        Ok(CompressedImage {
            index,
            size,
            sha256,
        })
    });
    progress.finish();
    result
}

fn compress_worker(
    mut compressor: zstd::bulk::Compressor<'static>,
    jobs: &Mutex<mpsc::Receiver<Job>>,
    frames: mpsc::Sender<Result<Frame, PackError>>,
) {
    loop {
        // The lock is held only while waiting for the next job.
        let job = jobs.lock().expect("job queue lock").recv();
        let Ok((seq, chunk)) = job else { return };
        // bulk compression knows the input size up front, so the frame
        // header records the content size (zstd's default
        // ZSTD_c_contentSizeFlag=1), which lets readers size their buffers.
        let frame = compressor
            .compress(&chunk)
            .map(|bytes| Frame {
                seq,
                len: u32::try_from(chunk.len()).expect("chunks are at most MAX_CHUNK_LEN"),
                sha256: Digest::of(&chunk),
                bytes,
            })
            .map_err(|source| PackError::Compress { chunk: seq, source });
        if frames.send(frame).is_err() {
            return;
        }
    }
}

/// Writes frames in sequence order, returning a token per written frame.
fn write_frames(
    frames: mpsc::Receiver<Result<Frame, PackError>>,
    tokens: mpsc::Sender<()>,
    out: File,
    out_path: &Path,
    progress: &dyn Progress,
) -> Result<Index, PackError> {
    let mut out = BufWriter::with_capacity(1 << 20, out);
    let mut index = Index::default();
    let mut waiting = BTreeMap::new();
    for frame in frames {
        let frame = frame?;
        waiting.insert(frame.seq, frame);
        while let Some(frame) = waiting.remove(&index.chunks.len()) {
            out.write_all(&frame.bytes)
                .map_err(io_err("writing", out_path))?;
            let compressed_len =
                u32::try_from(frame.bytes.len()).expect("a frame of a chunk fits in u32");
            index.push(frame.len, compressed_len, frame.sha256);
            progress.advance(frame.len.into());
            // The reader may have finished and gone: nothing to give back.
            let _ = tokens.send(());
        }
    }
    if !waiting.is_empty() {
        // Frames after a gap: a worker died without reporting.
        return Err(PackError::Compress {
            chunk: index.chunks.len(),
            source: io::Error::other("a compression worker stopped"),
        });
    }
    let file = out
        .into_inner()
        .map_err(|e| io_err("writing", out_path)(e.into_error()))?;
    file.sync_all().map_err(io_err("writing", out_path))?;
    Ok(index)
}

/// Real images and bundles for tests here, in [`crate::bundle`] and in
/// the installer's (feature `testutil`).
#[cfg(any(test, feature = "testutil"))]
pub mod test_support {
    use super::*;
    #[cfg(test)]
    use crate::progress::NoProgress;
    use rand::{RngExt, SeedableRng};

    pub(crate) const UUID: &str = "3d9a6c1e-0b7f-4e21-9a35-5c2f8e7d1b40";

    /// An ext4 image of a small tree (random and compressible files), made
    /// by the real mkfs.ext4 with the given UUID.
    fn ext4_image(dir: &Path, uuid: &str) -> PathBuf {
        let tree = dir.join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut noise = vec![0u8; 3 << 20];
        rng.fill(&mut noise[..]);
        fs::write(tree.join("noise.bin"), &noise).unwrap();
        let text: String = (0..60_000)
            .map(|i| format!("line {i} of a config file\n"))
            .collect();
        fs::write(tree.join("etc/config.txt"), text).unwrap();
        abnix_testkit::images::ext4_image(&tree, uuid, 12 << 20, &dir.join("root.ext4"))
    }

    pub struct Sample {
        pub key: SecretKey,
        pub image: PathBuf,
        pub kernel: PathBuf,
        pub initrd: PathBuf,
    }

    impl Sample {
        pub fn new(dir: &Path) -> Sample {
            let kernel = dir.join("bzImage");
            let initrd = dir.join("initrd");
            fs::write(&kernel, b"MZ not really a kernel".repeat(1000)).unwrap();
            fs::write(&initrd, b"070701 not really a cpio".repeat(5000)).unwrap();
            Sample {
                key: SecretKey::generate("test-fleet").unwrap(),
                image: ext4_image(dir, UUID),
                kernel,
                initrd,
            }
        }

        pub fn input(&self) -> PackInput<'_> {
            PackInput::new(
                &self.image,
                &self.kernel,
                &self.initrd,
                "init=/nix/store/x-nixos-system/init quiet",
                5,
                "sample",
                &self.key,
            )
        }

        #[cfg(test)]
        pub(crate) fn pack_into(&self, out: &Path) -> SignedMeta {
            pack(&self.input(), out, &NoProgress).unwrap()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::{Sample, UUID};
    use super::*;
    use crate::bundle::Bundle;
    use crate::progress::NoProgress;
    use abnix_formats::meta::FsType;
    use abnix_formats::sign::TrustedKeys;
    use std::process::Command;

    fn files_in(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    #[test]
    fn packed_bundle_verifies_and_restores_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        let sample = Sample::new(tmp.path());
        let out = tmp.path().join("bundle");
        let signed = sample.pack_into(&out);
        let meta = signed.meta();
        let raw = fs::read(&sample.image).unwrap();

        assert_eq!(meta.id.to_string(), UUID);
        assert_eq!(meta.image.fs, FsType::Ext4);
        assert_eq!(meta.image.size, raw.len() as u64);
        assert_eq!(meta.image.sha256, Digest::of(&raw));
        assert_eq!(
            meta.kernel.sha256,
            Digest::of(&fs::read(&sample.kernel).unwrap())
        );
        let prefix = format!("5-{UUID}");
        let names: Vec<String> = files_in(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["img.zst", "index", "initrd", "kernel", "meta", "meta.sig"]
                .map(|s| format!("{prefix}.{s}"))
        );

        let keys: TrustedKeys = [sample.key.public()].into_iter().collect();
        let bundle = Bundle::open(&out, &keys).unwrap();
        assert_eq!(bundle.signed, signed);
        assert!(
            bundle.index.chunks.len() > 5,
            "{} chunks",
            bundle.index.chunks.len()
        );

        // Every frame stands alone, records its content size and restores
        // its chunk.
        let object = fs::read(bundle.image_path()).unwrap();
        for chunk in &bundle.index.chunks {
            let start = chunk.compressed_offset as usize;
            let frame = &object[start..start + chunk.compressed_len as usize];
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(frame).ok(),
                Some(Some(u64::from(chunk.len)))
            );
            let data = zstd::bulk::decompress(frame, chunk.len as usize).unwrap();
            assert_eq!(Digest::of(&data), chunk.sha256);
            let offset = chunk.offset as usize;
            assert_eq!(&raw[offset..offset + data.len()], &data[..]);
        }

        // The real zstd CLI reads the concatenated frames as one stream.
        let out = Command::new("zstd")
            .arg("-dc")
            .arg(bundle.image_path())
            .output()
            .expect("running zstd (install zstd)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.stdout == raw, "zstd -dc does not restore the image");
    }

    #[test]
    fn erofs_image_packs_with_its_uuid() {
        let tmp = tempfile::tempdir().unwrap();
        let sample = Sample::new(tmp.path());
        let erofs = tmp.path().join("root.erofs");
        let uuid = "a7c3e9f1-2b4d-4e6f-8a1c-3e5f7a9b1d2f";
        let out = Command::new("mkfs.erofs")
            .arg("--quiet")
            .arg(format!("-U{uuid}"))
            .arg(&erofs)
            .arg(tmp.path().join("tree"))
            .output()
            .expect("running mkfs.erofs (install erofs-utils)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let input = PackInput {
            image: erofs.clone(),
            ..sample.input()
        };
        let signed = pack(&input, &tmp.path().join("bundle"), &NoProgress).unwrap();
        assert_eq!(signed.meta().image.fs, FsType::Erofs);
        assert_eq!(signed.meta().id.to_string(), uuid);
        assert_eq!(
            signed.meta().image.sha256,
            Digest::of(&fs::read(&erofs).unwrap())
        );
    }

    #[test]
    fn packing_is_deterministic_whatever_the_thread_count() {
        let tmp = tempfile::tempdir().unwrap();
        let sample = Sample::new(tmp.path());
        let one = tmp.path().join("one");
        let many = tmp.path().join("many");
        pack(
            &PackInput {
                threads: 1,
                ..sample.input()
            },
            &one,
            &NoProgress,
        )
        .unwrap();
        pack(
            &PackInput {
                threads: 5,
                ..sample.input()
            },
            &many,
            &NoProgress,
        )
        .unwrap();
        assert!(files_in(&one) == files_in(&many), "bundles differ");
    }

    #[test]
    fn expected_id_must_match_the_image() {
        let tmp = tempfile::tempdir().unwrap();
        let sample = Sample::new(tmp.path());
        let out = tmp.path().join("bundle");
        let other: Uuid = "00112233-4455-6677-8899-aabbccddeeff".parse().unwrap();
        let err = pack(
            &PackInput {
                expected_id: Some(other),
                ..sample.input()
            },
            &out,
            &NoProgress,
        )
        .unwrap_err();
        assert!(
            matches!(err, PackError::IdMismatch { expected, found } if expected == other && found.to_string() == UUID),
            "{err}"
        );
        assert!(!out.exists(), "nothing is written for a refused image");
        let same = PackInput {
            expected_id: Some(UUID.parse().unwrap()),
            ..sample.input()
        };
        pack(&same, &out, &NoProgress).unwrap();
    }

    #[test]
    fn image_without_a_readable_uuid_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let sample = Sample::new(tmp.path());
        let garbage = tmp.path().join("garbage.img");
        fs::write(&garbage, vec![0x42u8; 1 << 20]).unwrap();
        let err = pack(
            &PackInput {
                image: garbage.clone(),
                ..sample.input()
            },
            &tmp.path().join("bundle"),
            &NoProgress,
        )
        .unwrap_err();
        assert!(
            matches!(&err, PackError::Id { image, source: FsIdError::Unrecognized } if *image == garbage)
        );
        assert!(err.to_string().contains("garbage.img"), "{err}");
    }

    #[test]
    fn non_empty_out_dir_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let sample = Sample::new(tmp.path());
        let out = tmp.path().join("bundle");
        fs::create_dir(&out).unwrap();
        fs::write(out.join("stray"), b"x").unwrap();
        let err = pack(&sample.input(), &out, &NoProgress).unwrap_err();
        assert!(
            matches!(err, PackError::OutDirNotEmpty(ref d) if *d == out),
            "{err}"
        );
        // An existing empty directory is fine.
        fs::remove_file(out.join("stray")).unwrap();
        sample.pack_into(&out);
    }

    #[test]
    fn bad_values_are_refused_before_any_work() {
        let tmp = tempfile::tempdir().unwrap();
        let sample = Sample::new(tmp.path());
        let out = tmp.path().join("bundle");
        let cases: [(PackInput, &str); 6] = [
            (
                PackInput {
                    version: 0,
                    ..sample.input()
                },
                "version",
            ),
            (
                PackInput {
                    label: "two\nlines".into(),
                    ..sample.input()
                },
                "label",
            ),
            (
                PackInput {
                    cmdline: "quiet abnix.slot=b".into(),
                    ..sample.input()
                },
                "cmdline",
            ),
            (
                PackInput {
                    level: 99,
                    ..sample.input()
                },
                "zstd level",
            ),
            (
                PackInput {
                    threads: 0,
                    ..sample.input()
                },
                "thread count",
            ),
            (
                PackInput {
                    chunking: ChunkParams {
                        min: 1,
                        avg: 2,
                        max: 3,
                    },
                    ..sample.input()
                },
                "chunk sizes",
            ),
        ];
        for (input, what) in cases {
            let err = pack(&input, &out, &NoProgress).unwrap_err();
            assert!(err.to_string().starts_with(what), "{err}");
            assert!(!out.exists());
        }
    }

    #[test]
    fn a_failed_pack_leaves_nothing_behind() {
        let tmp = tempfile::tempdir().unwrap();
        let sample = Sample::new(tmp.path());
        let out = tmp.path().join("bundle");
        let missing = tmp.path().join("no-such-initrd");
        let err = pack(
            &PackInput {
                initrd: missing.clone(),
                ..sample.input()
            },
            &out,
            &NoProgress,
        )
        .unwrap_err();
        assert!(
            matches!(&err, PackError::Io { path, .. } if *path == missing),
            "{err}"
        );
        assert!(!out.exists(), "the partial bundle is removed");
        // In a directory the caller made, the directory itself stays.
        fs::create_dir(&out).unwrap();
        pack(
            &PackInput {
                initrd: missing,
                ..sample.input()
            },
            &out,
            &NoProgress,
        )
        .unwrap_err();
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0);
    }
}
