//! Where the version an update installs comes from: the channel in the
//! bucket, or a bundle directory on this host (`install --bundle`: an
//! offline update from a USB stick). The executor ([`crate::update::run`])
//! asks either for the same things (the version on offer, verified; its
//! index; its image, whole or by ranges; its kernel and initrd), so the
//! same decisions and the same verification run for both.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context};
use uuid::Uuid;

use crate::channel::{image_spec, Channel, ChannelError};
use crate::delta::{self, DeltaOptions, DeltaReport, ImageObject, IndexStore, LocalChunks};
use crate::remote::RemoteError;
use abnix_core::bundle::Bundle;
use abnix_core::progress::Progress;
use abnix_formats::disk::Disk;
use abnix_formats::index::Index;
use abnix_formats::meta::{Artifact, Meta, SignedMeta};
use abnix_formats::sign::TrustedKeys;

/// The channel in the bucket, or a local bundle.
pub enum Source {
    Bucket(Channel),
    Bundle(LocalBundle),
}

/// Why the version on offer could not be had.
#[derive(Debug, thiserror::Error)]
pub enum OfferError {
    /// The bucket could not be reached (network down, DNS, refused): worth
    /// waiting for.
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Failed(String),
}

impl Source {
    /// What the executor's "fetch the latest meta" step does with this
    /// source, for logs and STATUS=.
    pub fn describe_offer(&self) -> Option<String> {
        match self {
            Source::Bucket(_) => None,
            Source::Bundle(bundle) => Some(format!(
                "reading and verifying the bundle {}",
                bundle.dir.display()
            )),
        }
    }

    /// The version on offer: the channel's latest meta, or the bundle's,
    /// verified against the keys of this source.
    pub fn offer(&mut self) -> Result<SignedMeta, OfferError> {
        match self {
            Source::Bucket(channel) => channel.latest().map_err(|e| match e.remote() {
                Some(RemoteError::Unreachable { .. }) => OfferError::Unreachable(e.to_string()),
                _ => OfferError::Failed(e.to_string()),
            }),
            Source::Bundle(bundle) => bundle
                .open()
                .map(|bundle| bundle.signed.clone())
                .map_err(|e| OfferError::Failed(format!("{e:#}"))),
        }
    }

    /// The keys as they are now, after a recovery key revoked some.
    pub fn set_keys(&mut self, keys: TrustedKeys) {
        match self {
            Source::Bucket(channel) => {
                *channel = Channel::new(channel.remote().clone(), keys);
            }
            // Verified when it was opened, as the channel's meta was.
            Source::Bundle(bundle) => bundle.keys = keys,
        }
    }

    /// The version's chunk index, checked against its meta.
    pub fn index(&self, meta: &Meta) -> anyhow::Result<Index> {
        match self {
            Source::Bucket(channel) => Ok(channel.index(meta)?),
            Source::Bundle(bundle) => Ok(bundle.opened(meta)?.index.clone()),
        }
    }

    /// The index of the active slot's version, for a delta update: kept in
    /// the state directory, else (from the bucket only) fetched and kept.
    pub fn active_index(&self, store: &IndexStore, version: u64, id: Uuid) -> Option<Index> {
        match self {
            Source::Bucket(channel) => store.active_index(channel, version, id),
            // A bundle holds its own version only.
            Source::Bundle(_) => store.load(version, id).ok().flatten(),
        }
    }

    /// Writes the version's image into `target` by a delta update
    /// ([`crate::delta`]): chunks `local` holds are copied, the rest read
    /// from the source; every chunk checked against the signed index.
    pub fn write_image_delta<D: Disk, A: Disk + Send>(
        &self,
        meta: &Meta,
        index: &Index,
        target: &mut D,
        local: LocalChunks<'_, A>,
        opts: &DeltaOptions,
        progress: &dyn Progress,
    ) -> anyhow::Result<DeltaReport> {
        match self {
            Source::Bucket(channel) => {
                Ok(channel.write_image_delta(meta, index, target, local, opts, progress)?)
            }
            Source::Bundle(bundle) => {
                let bundle = bundle.opened(meta)?;
                let image = LocalImage {
                    path: bundle.image_path(),
                    len: meta.image.compressed_size,
                };
                let spec = image_spec(meta, index);
                delta::write_image_delta(&image, &spec, target, local, opts, progress)
                    .map_err(|source| ChannelError::Image {
                        object: image.path.display().to_string(),
                        source,
                    })
                    .map_err(Into::into)
            }
        }
    }

    /// A reader of a kernel or initrd, refused unless it has the meta's
    /// size; its content is checked by whoever writes it
    /// ([`abnix_core::boot::BootFiles::of_version`]).
    pub fn open_object(&self, meta: &Meta, artifact: &Artifact) -> anyhow::Result<Box<dyn Read>> {
        match self {
            Source::Bucket(channel) => Ok(Box::new(channel.open_object(artifact)?)),
            Source::Bundle(bundle) => {
                let path = bundle.opened(meta)?.path_of(artifact);
                let file = open_regular(&path)?;
                let size = file.metadata().map_err(io_context(&path))?.len();
                ensure!(
                    size == artifact.size,
                    "{} is {size} bytes, the meta says {}",
                    path.display(),
                    artifact.size
                );
                Ok(Box::new(file.take(artifact.size)))
            }
        }
    }
}

/// A bundle directory on this host, opened and verified when the executor
/// asks for the version on offer (with the keys as the ESP's revocations
/// leave them).
pub struct LocalBundle {
    dir: PathBuf,
    keys: TrustedKeys,
    /// Boxed: a bundle (its index) is large beside a channel.
    opened: Option<Box<Bundle>>,
}

impl LocalBundle {
    pub fn new(dir: PathBuf, keys: TrustedKeys) -> LocalBundle {
        LocalBundle {
            dir,
            keys,
            opened: None,
        }
    }

    /// Opens and verifies the bundle (`Bundle::open`: the signature first,
    /// then the index, kernel and initrd, and the image object's size),
    /// refusing one whose files are not its own: a symbolic link or a
    /// special file (a FIFO, a device) in the directory is refused before
    /// anything is read.
    fn open(&mut self) -> anyhow::Result<&Bundle> {
        let dir = &self.dir;
        let meta = fs::metadata(dir).with_context(|| format!("the bundle {}", dir.display()))?;
        ensure!(
            meta.is_dir(),
            "the bundle {} is not a directory",
            dir.display()
        );
        for entry in fs::read_dir(dir).map_err(io_context(dir))? {
            let path = entry.map_err(io_context(dir))?.path();
            let kind = fs::symlink_metadata(&path)
                .map_err(io_context(&path))?
                .file_type();
            if kind.is_symlink() {
                bail!(
                    "{} is a symbolic link: a bundle holds its files itself (copy it with cp -L)",
                    path.display()
                );
            }
            ensure!(
                kind.is_file() || kind.is_dir(),
                "{} is not a regular file",
                path.display()
            );
        }
        let bundle = Bundle::open(dir, &self.keys)?;
        Ok(self.opened.insert(Box::new(bundle)))
    }

    /// The bundle as opened, which must hold `meta`'s version.
    fn opened(&self, meta: &Meta) -> anyhow::Result<&Bundle> {
        let bundle = self
            .opened
            .as_ref()
            .context("the bundle was not opened before its version was installed")?;
        let held = bundle.signed.meta();
        ensure!(
            (held.version, held.id) == (meta.version, meta.id),
            "the bundle {} holds version {} ({}), not {} ({})",
            self.dir.display(),
            held.version,
            held.id,
            meta.version,
            meta.id
        );
        Ok(bundle)
    }
}

/// Opens a file of the bundle, refusing anything but a regular file (a
/// symbolic link put there after the bundle was checked, a FIFO).
fn open_regular(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io_context(path))?;
    ensure!(
        file.metadata().map_err(io_context(path))?.is_file(),
        "{} is not a regular file",
        path.display()
    );
    Ok(file)
}

fn io_context(path: &Path) -> impl FnOnce(io::Error) -> anyhow::Error + '_ {
    move |e| anyhow::Error::new(e).context(format!("reading {}", path.display()))
}

/// A bundle's compressed image object, read whole or by ranges.
struct LocalImage {
    path: PathBuf,
    len: u64,
}

impl ImageObject for LocalImage {
    type Reader = io::Take<File>;

    fn open(&self) -> io::Result<Self::Reader> {
        self.open_range(0, self.len)
    }

    fn open_range(&self, start: u64, end: u64) -> io::Result<Self::Reader> {
        let mut file = open_regular(&self.path).map_err(io::Error::other)?;
        file.seek(SeekFrom::Start(start))?;
        Ok(file.take(end.saturating_sub(start)))
    }
}
