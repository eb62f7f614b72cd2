//! abnix-core: the formats and mechanisms of abnix.
//!
//! Every on-disk and on-wire format is pure parse/serialize code here, and all
//! disk I/O goes through [`disk::Disk`] (`Read + Write + Seek`), so the same
//! code runs on a block device and on a sparse disk-image file.

pub mod blockdev;
pub mod boot;
pub mod bundle;
pub mod channel;
pub mod chunking;
pub mod config;
pub mod delta;
pub mod digest;
pub mod disk;
pub mod errors;
pub mod fat;
pub mod fsid;
pub mod gpt;
pub mod grow;
pub mod host;
pub mod index;
pub mod install;
pub mod layout;
pub mod meta;
pub mod pack;
pub mod pipeline;
pub mod probe;
pub mod progress;
pub mod publish;
pub mod reboot;
pub mod remote;
pub mod sign;
pub mod slot;
pub mod state;
pub mod system_disk;
#[cfg(test)]
mod testutil;
pub mod units;
pub mod update;
