//! abnix-updater's library: what only the device agent and the operator
//! commands run (the update cycle, the device's config and state, the
//! bucket's S3 client, delta updates, publishing), on top of the
//! mechanisms in [`abnix_core`]. The `abnix-update` binary drives it;
//! the installer does not build it, nor the S3 stack it brings.

pub mod channel;
pub mod config;
pub mod delta;
pub mod fleet;
pub mod grow;
pub mod host;
pub mod publish;
pub mod reboot_policy;
pub mod remote;
pub mod report;
pub mod source;
pub mod state_dir;
pub mod update;
