//! abnix-formats: the pure formats of abnix.
//!
//! On-disk and on-wire formats (GPT, FAT32, the partition layout, release
//! metadata, the chunk index, signatures, digests, filesystem ids) as
//! parse/serialize code with no async runtime, no S3 SDK and no terminal UI,
//! so the fuzz targets build on this crate alone. The formats read and write
//! disks through [`disk::Disk`] (`Read + Write + Seek`), so the same code runs
//! on a block device, a sparse image file and an in-memory buffer.

pub mod chunking;
pub mod digest;
pub mod disk;
pub mod fat;
pub mod fsid;
pub mod gpt;
pub mod index;
pub mod layout;
pub mod machine_id;
pub mod meta;
pub mod report;
pub mod rollout;
pub mod sign;
pub mod slot;
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;
