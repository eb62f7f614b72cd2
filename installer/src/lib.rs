//! abnix-installer's library: the installer's mechanism (DESIGN §7), which
//! the `abnix-install` binary drives from its flags and config file, and
//! which the updater's tests use to make system disks.

pub mod install;
mod probe;
