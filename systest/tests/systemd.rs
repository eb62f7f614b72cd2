//! The systemd hosts (issue 22): a Debian system with systemd as PID 1
//! running the units of `systemd/` as they are, with the mounts of the host
//! module, booted through GRUB on SeaBIOS and systemd-boot on OVMF. One
//! machine life per boot path (`abnix_systest::systemd_scenarios`): the
//! template grows, the timer updates, an unhealthy version falls back, a
//! power cut mid-write. The template's root is ext4 on GRUB, erofs on
//! systemd-boot; every later version's is erofs.
//!
//! Own harness (`runner`): name filters (`boot-path/life`), `--exact`,
//! `--skip`, `--list`, `--test-threads N`; each life prints its chapters'
//! table, and the run ends with one of boot paths.

use abnix_systest::fleet::Policy;
use abnix_systest::runner::{self, Case};
use abnix_systest::story::{BootPath, Story};
use abnix_systest::systemd_host::RootFs;
use abnix_systest::systemd_scenarios::{self, TEMPLATE_DISK};
use anyhow::Result;

const LIVES: [(BootPath, RootFs); 2] = [
    (BootPath::GrubSeaBios, RootFs::Ext4),
    (BootPath::SystemdBootOvmf, RootFs::Erofs),
];

fn life(path: BootPath, first_fs: RootFs) -> Result<()> {
    let mut story =
        Story::new(path, "systemd-host", Policy { tries: 1 })?.with_disk_size(TEMPLATE_DISK);
    let result = systemd_scenarios::life(&mut story, first_fs);
    println!("{}{}", path.name(), story.summary());
    result?;
    story.keep_only_logs()
}

fn main() {
    let cases = LIVES
        .iter()
        .map(|&(path, first_fs)| Case {
            row: "life",
            column: path.name(),
            run: Box::new(move || life(path, first_fs)),
        })
        .collect();
    runner::main(cases, &|| {});
}
