//! Fixture versions packed into signed bundles with the project's own
//! `pack`, as the installer and `publish` take them.

use std::path::Path;

use abnix_core::pack::{pack, PackInput};
use abnix_core::progress::NoProgress;
use abnix_formats::meta::SignedMeta;
use abnix_formats::sign::SecretKey;
use anyhow::{Context, Result};

use crate::version::FixtureVersion;

/// Packs `version` into the bundle directory `out` (created), signed with
/// `key`, for its kernel's architecture; its label is `fixture v<N>`.
pub fn pack_fixture(version: &FixtureVersion, key: &SecretKey, out: &Path) -> Result<SignedMeta> {
    let mut input = PackInput::new(
        &version.image,
        &version.kernel,
        &version.initrd,
        version.cmdline.as_str(),
        version.version,
        format!("fixture v{}", version.version),
        key,
    );
    input.arch = version.arch;
    pack(&input, out, &NoProgress)
        .with_context(|| format!("packing version {} into {}", version.version, out.display()))
}
