//! abnix-core: the mechanisms of abnix on top of its formats.
//!
//! The on-disk and on-wire formats live in [`abnix_formats`]; here is what
//! works with them: the image pipeline, boot control and block devices; the
//! installer's own code is in `abnix-installer`, the updater's in
//! `abnix-updater`. All disk I/O goes through [`abnix_formats::disk::Disk`]
//! (`Read + Write + Seek`), so the same code runs on a block device and on a
//! sparse disk-image file.

pub mod blockdev;
pub mod boot;
pub mod bundle;
pub mod cli_docs;
pub mod errors;
pub mod logging;
pub mod pack;
pub mod pipeline;
pub mod progress;
pub mod rwfs;
pub mod system_disk;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
pub mod units;
