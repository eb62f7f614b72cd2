//! The machine-level scenarios (DESIGN §8.3, issue 6): install, update,
//! fallback, power cuts and bad input, each on a fresh [`Story`] (its own
//! S3 server, signing key, disk and machine) per boot path, with the real
//! `abnix-install` and `abnix-update` inside QEMU machines that reach the
//! bucket over QEMU's network. What each scenario does and asserts is in
//! `abnix_systest::scenarios`.
//!
//! | scenario | boot paths | tries |
//! |----------|------------|-------|
//! | install | all three | 2 |
//! | update | all three | 2 |
//! | fallback | GRUB on SeaBIOS, systemd-boot on OVMF | 2 |
//! | power-cut | GRUB on SeaBIOS, systemd-boot on OVMF | 4: three cuts fall in the last round's trial boots, the fourth marks good |
//! | bad-input | GRUB on SeaBIOS, systemd-boot on OVMF | 2 |
//! | rollout | systemd-boot on OVMF (two machines) | 2 |
//!
//! Own harness (`runner`): name filters (`boot-path/scenario`), `--exact`,
//! `--skip`, `--list`, `--test-threads N`; it ends with a table of scenario
//! × boot path, pass/fail and duration.

use abnix_systest::fleet::Policy;
use abnix_systest::runner::{self, Case};
use abnix_systest::story::{BootPath, Story};
use abnix_systest::{rollout, scenarios};
use anyhow::Result;

struct Scenario {
    name: &'static str,
    paths: &'static [BootPath],
    tries: u32,
    /// The version a host written with `abnix-install --file` runs before
    /// the scenario starts; none: the scenario installs it.
    provisioned: Option<u64>,
    run: fn(&mut Story) -> Result<String>,
}

const BIOS_AND_SYSTEMD_BOOT: &[BootPath] = &[BootPath::GrubSeaBios, BootPath::SystemdBootOvmf];

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "install",
        paths: &BootPath::ALL,
        tries: 2,
        provisioned: None,
        run: scenarios::install,
    },
    Scenario {
        name: "update",
        paths: &BootPath::ALL,
        tries: 2,
        provisioned: Some(1),
        run: scenarios::update,
    },
    Scenario {
        name: "fallback",
        paths: BIOS_AND_SYSTEMD_BOOT,
        tries: 2,
        provisioned: Some(1),
        run: scenarios::fallback,
    },
    Scenario {
        name: "power-cut",
        paths: BIOS_AND_SYSTEMD_BOOT,
        tries: 4,
        provisioned: Some(1),
        run: scenarios::power_cuts,
    },
    Scenario {
        name: "bad-input",
        paths: BIOS_AND_SYSTEMD_BOOT,
        tries: 2,
        // So that version 1 is an older one.
        provisioned: Some(2),
        run: scenarios::bad_input,
    },
    Scenario {
        name: "rollout",
        // Two machines at once: one boot path is enough for the rollout.
        paths: &[BootPath::SystemdBootOvmf],
        tries: 2,
        provisioned: None,
        run: rollout::two_hosts,
    },
];

impl Scenario {
    fn run_on(&self, path: BootPath) -> Result<()> {
        let policy = Policy { tries: self.tries };
        let mut story = Story::new(path, self.name, policy)?;
        if let Some(version) = self.provisioned {
            story.chapter("provision", |story| scenarios::provision(story, version))?;
        }
        story.chapter(self.name, self.run)?;
        story.keep_only_logs()
    }
}

fn main() {
    let cases = SCENARIOS
        .iter()
        .flat_map(|scenario| {
            scenario.paths.iter().map(move |&path| Case {
                row: scenario.name,
                column: path.name(),
                run: Box::new(move || scenario.run_on(path)),
            })
        })
        .collect();
    runner::main(cases, &|| {});
}
