//! The image file both writers fill: created, written through a buffer,
//! synced to disk.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};

use crate::tree::{Tree, WalkError};

/// Why the image file could not be created or brought to disk.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path} to disk: {source}")]
    Sync {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Walks the directory `root` and lets `write` put its image into the file
/// `out` (created, or replaced: a new file reads as zeros), synced to disk.
pub(crate) fn write_image_file<T, E>(
    root: &Path,
    out: &Path,
    write: impl FnOnce(&Tree, &mut BufWriter<File>) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<WalkError> + From<OutputError>,
{
    let tree = Tree::walk(root)?;
    let file = File::create(out).map_err(|source| OutputError::Create {
        path: out.to_owned(),
        source,
    })?;
    let mut writer = BufWriter::with_capacity(1 << 20, file);
    let written = write(&tree, &mut writer)?;
    let sync_error = |source| OutputError::Sync {
        path: out.to_owned(),
        source,
    };
    let file = writer
        .into_inner()
        .map_err(|e| sync_error(e.into_error()))?;
    file.sync_all().map_err(sync_error)?;
    Ok(written)
}
