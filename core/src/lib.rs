//! abnix-core: the mechanisms of abnix on top of its formats.
//!
//! The on-disk and on-wire formats live in [`abnix_formats`]; here is what
//! works with them: the image pipeline, boot control, updating and the S3
//! client; the installer's own code is in `abnix-installer`. All disk I/O goes through
//! [`abnix_formats::disk::Disk`] (`Read + Write + Seek`), so the same code
//! runs on a block device and on a sparse disk-image file.

pub mod blockdev;
pub mod boot;
pub mod bundle;
pub mod channel;
pub mod cli_docs;
pub mod config;
pub mod delta;
pub mod errors;
pub mod grow;
pub mod host;
pub mod logging;
pub mod pack;
pub mod pipeline;
pub mod progress;
pub mod publish;
pub mod reboot;
pub mod remote;
pub mod rwfs;
pub mod state;
pub mod system_disk;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
pub mod units;
pub mod update;
