//! Root image writers (issue 27, docs/delta.md "Decision and phase B: what was done"):
//! a Nix store tree as an erofs or ext4 image laid out store path after
//! store path, with inode numbers homed by store-path hash, so that a store
//! path that did not change keeps its bytes, metadata included.

pub mod erofs;
pub mod ext4;
pub mod output;
pub mod tree;
