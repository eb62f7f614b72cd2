//! abnix-systest: the machine-level harness (DESIGN §8.3).
//!
//! - [`platform`]: what differs between the machines of each architecture
//!   (x86_64; aarch64, which boots through UEFI only);
//! - [`kernel`]: Debian's cloud kernel, fetched once into a cache
//!   ([`debian`]);
//! - [`initramfs`]: busybox initramfs variants (a host's initrd, an
//!   installer environment);
//! - [`version`]: fixture versions: root filesystem image + kernel + initrd +
//!   command line, with a `/init` whose [`version::Behaviour`] the test
//!   chooses (healthy, never healthy, kernel panic);
//! - [`systemd_host`]: fixture versions with systemd as PID 1, built on a
//!   Debian root ([`debian_root`], `mmdebstrap`), running the units of
//!   `systemd/` with an erofs ([`erofs`]) or ext4 root;
//! - [`bundle`]: fixture versions packed into signed bundles;
//! - [`fleet`]: a bucket on a real S3 server, a signing key and a channel,
//!   with releases published by `abnix-update publish` for hosts that
//!   update themselves;
//! - [`disk`]: GPT disk-image files for booting fixtures without a bootloader;
//! - [`system_disk`]: abnix disks installed by the installer's own code,
//!   updated by the updater's own executor (with power cuts between and
//!   within its steps), their boot state read and changed;
//! - [`vm`]: QEMU machines (SeaBIOS or OVMF; AAVMF for aarch64; virtio
//!   disks, user network) driven over the serial console, with power cuts;
//! - [`workspace`]: the project's own binaries, built for fixtures;
//! - [`runner`]: the harness of scenario files, with their summary table;
//! - [`story`]: one machine of a fleet, driven and narrated: installed,
//!   switched on, watched over the console, its power cut;
//! - [`scenarios`]: the stories DESIGN §8.3 asks for (install, update,
//!   fallback, power cuts, bad input), shared by `tests/scenarios.rs` and
//!   the demo; [`systemd_scenarios`]: those of the systemd hosts
//!   (`tests/systemd.rs`).
//!
//! See `systest/README.md` for a walk through.

pub mod bundle;
pub mod cpio;
pub mod debian;
pub mod debian_root;
pub mod disk;
pub mod erofs;
pub mod ext4;
pub mod fleet;
pub mod initramfs;
pub mod kernel;
pub mod paths;
pub mod platform;
pub mod rollout;
pub mod runner;
pub mod scenarios;
mod shell;
pub mod story;
pub mod system_disk;
pub mod systemd_host;
pub mod systemd_scenarios;
mod tool;
pub mod tree;
pub mod version;
pub mod vm;
pub mod workspace;
