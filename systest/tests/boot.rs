//! Machine-level proof of boot control (issue 3, item 6; docs/boot.md): GRUB
//! on SeaBIOS, GRUB on OVMF and systemd-boot on OVMF boot disks written by
//! the product's own code from the host side, through the A/B story.
//!
//! Each scenario starts from a disk the installer's own code installed
//! ([`AbnixDisk`]: version 1 in slot A marked good, the ESP with the
//! bootloader), writes versions into a slot with the updater's own
//! executor (from a fleet's bucket; cut short by a power cut in one of its
//! steps), and changes the boot state between (or during) QEMU runs
//! through `BootControl`, as the updater does. Every start of a machine is
//! one boot (`OnReboot::Exit`), so the state each boot left on the disk is
//! read back in between, through `SystemDisk::boot_control()`. The fixture
//! hosts mount what a host mounts and run the real `abnix-update
//! mark-good`, which finds its disk behind `/` and its slot on the kernel
//! command line.
//!
//! The versions:
//!
//! | fixture | in | behaviour |
//! |---------|----|-----------|
//! | v1 | A | marks good, stays up (the test cuts the power once it is done) |
//! | v2 | B | never healthy: reboots after a delay, never marks good |
//! | v2 | B, A | kernel panic (`panic=1` reboots) |
//! | v3 | B | marks good, reboots |
//!
//! This file has its own harness (`harness = false`, `runner`): the cases
//! run on worker threads as libtest's would, share fixtures built once,
//! print each boot and case with its duration, and end with a table of
//! scenario × boot path. Arguments: name filters (substrings of
//! `boot-path/scenario`), `--exact`, `--skip FILTER`, `--list`,
//! `--test-threads N`; libtest's other options are accepted and ignored.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use abnix_core::boot::Bootloader;
use abnix_core::boot::{grub, BootState, BootStatus, SlotInfo, SlotState};
use abnix_formats::layout::Arch;
use abnix_formats::meta::SignedMeta;
use abnix_formats::sign::SecretKey;
use abnix_formats::slot::Slot;
use abnix_systest::fleet::{Fleet, Policy, Release};
use abnix_systest::kernel::Kernel;
use abnix_systest::runner::{self, Case};
use abnix_systest::story::BootPath;
use abnix_systest::system_disk::{AbnixDisk, DiskSpec, PowerCut};
use abnix_systest::version::{AfterCommands, Behaviour, FixtureFile, FixtureVersion, VersionSpec};
use abnix_systest::vm::{Boot, Machine, MachineSpec, OnReboot, Vm};
use abnix_systest::{paths, workspace};
use abnix_updater::config::Config;
use abnix_updater::update::machine::Step;
use anyhow::{anyhow, ensure, Context, Result};

/// Boot attempts of a trial version (the device config's `tries`).
const TRIES: u8 = 2;
/// Switch-on to the host's marker: firmware, bootloader, kernel and initrd
/// under TCG, on a machine busy with other work. A boot takes 5–20 s.
const BOOT: Duration = Duration::from_secs(240);
/// A step of a running host (a command, a reboot).
const STEP: Duration = Duration::from_secs(120);
const MIB: u64 = 1 << 20;
const MARK_GOOD: &str = "abnix-update mark-good";

/// A fixture version, packed and published, and what it does once booted.
struct Fixture {
    release: Release,
    /// Its meta as the channel signed it, which the updater installs.
    signed: SignedMeta,
    behaviour: Behaviour,
}

impl Fixture {
    fn version(&self) -> &FixtureVersion {
        &self.release.version
    }

    /// What its slot file says once installed.
    fn slot_info(&self) -> SlotInfo {
        SlotInfo::of(self.signed.meta())
    }
}

/// What every scenario shares, built once per run of this file.
struct Fixtures {
    /// The bucket the versions are published in, which the updater's
    /// executor installs them from.
    fleet: Fleet,
    /// v1, installed in A: marks good, then stays up.
    good_a: Fixture,
    /// v2: up, never healthy, reboots.
    unhealthy_b: Fixture,
    /// v2: its kernel panics.
    panicking_b: Fixture,
    /// v3: marks good, then reboots.
    good_b: Fixture,
}

/// The fixtures, built by the first case that asks; `main` drops them
/// (and so stops the bucket's server) before the process exits.
#[derive(Default)]
struct Shared(OnceLock<Result<Fixtures, String>>);

impl Shared {
    fn fixtures(&self) -> Result<&Fixtures> {
        self.0
            .get_or_init(|| {
                let started = Instant::now();
                let built =
                    build_fixtures().map_err(|err| format!("building the fixtures: {err:#}"));
                println!(
                    "fixtures (kernel, versions published, abnix-update) ready in {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                built
            })
            .as_ref()
            .map_err(|err| anyhow!("{err}"))
    }
}

fn build_fixtures() -> Result<Fixtures> {
    let dir = paths::run_dir("boot-fixtures")?;
    let kernel = Kernel::debian_cloud(Arch::native())?;
    let updater = workspace::release_binary("abnix-updater", "abnix-update")?;
    let config = device_config(&dir)?;
    let fleet = Fleet::start(
        &dir.join("fleet"),
        "boot",
        Policy {
            tries: TRIES.into(),
        },
    )?;
    let build = |version: u64, behaviour: Behaviour, name: &str| -> Result<Fixture> {
        let mut spec = VersionSpec::new(version, behaviour.clone());
        spec.binaries.push(updater.clone());
        spec.files.push(FixtureFile::new(
            "/etc/abnix/config.toml",
            0o644,
            config.clone(),
        ));
        let dir = dir.join(name);
        let release = fleet.pack(FixtureVersion::build(&spec, &kernel, &dir)?, &dir)?;
        // Over whatever came before: which version is the channel's latest
        // matters to no one here.
        fleet.publish(&release, true)?;
        Ok(Fixture {
            signed: fleet.channel_meta()?,
            release,
            behaviour,
        })
    };
    let marks_good = |then| Behaviour::Healthy {
        commands: vec![MARK_GOOD.to_owned()],
        then,
    };
    let good_a = build(1, marks_good(AfterCommands::Idle), "v1-good")?;
    let unhealthy_b = build(
        2,
        Behaviour::NeverHealthy {
            reboot_after: Duration::from_secs(1),
        },
        "v2-unhealthy",
    )?;
    let panicking_b = build(2, Behaviour::KernelPanic, "v2-panicking")?;
    let good_b = build(3, marks_good(AfterCommands::Reboot), "v3-good")?;
    Ok(Fixtures {
        fleet,
        good_a,
        unhealthy_b,
        panicking_b,
        good_b,
    })
}

/// `/etc/abnix/config.toml` of every fixture: a complete device config
/// (mark-good reads it), checked with the parser the updater uses. Nothing
/// here reaches a bucket.
fn device_config(dir: &Path) -> Result<Vec<u8>> {
    let key = SecretKey::generate("abnix-systest")?;
    let text = format!(
        "endpoint = \"http://10.0.2.2:9\"\n\
         region = \"us-east-1\"\n\
         bucket = \"abnix-systest\"\n\
         channel = \"boot\"\n\
         path_style = true\n\
         credentials = \"anonymous\"\n\
         trusted_keys = [\"{}\"]\n\
         tries = {TRIES}\n\
         reboot = \"never\"\n\
         state_dir = \"/var/lib/abnix\"\n",
        key.public()
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
    Config::load(&path)?;
    Ok(text.into_bytes())
}

/// One scenario on one boot path: its disk, its machine, its boots.
struct Bench<'a> {
    fixtures: &'a Fixtures,
    path: BootPath,
    name: String,
    disk: AbnixDisk,
    machine: Machine,
    boots: u32,
}

impl<'a> Bench<'a> {
    fn new(shared: &'a Shared, path: BootPath, scenario: &str) -> Result<Bench<'a>> {
        let fixtures = shared.fixtures()?;
        let name = format!("{}/{scenario}", path.name());
        let dir = paths::run_dir(&format!("boot-{}-{scenario}", path.name()))?;
        let spec = DiskSpec {
            bootloader: path.bootloader(),
            slot_size: 32 * MIB,
            esp_size: 64 * MIB,
            rw_size: 64 * MIB,
        };
        let disk = AbnixDisk::create(&dir.join("disk.img"), &spec, &fixtures.good_a.release)?;
        let machine = Machine::new(
            "machine",
            MachineSpec::new(path.firmware()).disk(disk.path()),
            &dir,
        )?;
        Ok(Bench {
            fixtures,
            path,
            name,
            disk,
            machine,
            boots: 0,
        })
    }

    /// After a passed scenario: frees its disk, keeping the consoles.
    fn keep_only_logs(&self) -> Result<()> {
        paths::keep_only_logs(self.disk.path().parent().expect("a run directory"))
    }

    /// Writes `fixture` into `slot` and activates it with `tries`, from the
    /// host side, by the updater's executor.
    fn update(&self, slot: Slot, fixture: &Fixture, tries: u8) -> Result<()> {
        let config = self.fixtures.fleet.host_config()?;
        self.disk.update(&config, slot, &fixture.signed, tries)
    }

    /// [`Bench::update`] of slot B with [`TRIES`].
    fn update_b(&self, fixture: &Fixture) -> Result<()> {
        self.update(Slot::B, fixture, TRIES)
    }

    /// Switches the machine on and waits until the host of `expected`
    /// reports from `slot`.
    fn power_on(&mut self, expected: &Fixture, slot: Slot) -> Result<Vm> {
        self.boots += 1;
        let mut vm = self.machine.start(&Boot::Firmware, OnReboot::Exit)?;
        let marker = vm.expect("ABNIX-FIXTURE version=", BOOT)?;
        let booted = format!(
            "slot {} version {}",
            marker.field("slot").unwrap_or("?"),
            marker.field("version").unwrap_or("?")
        );
        println!(
            "{}: boot {}: {booted} up after {:.1} s",
            self.name,
            self.boots,
            marker.at.as_secs_f64()
        );
        let version = expected.version();
        ensure!(
            marker.field("slot") == Some(slot.name())
                && marker.field("id") == Some(version.id.to_string().as_str()),
            "boot {}: expected slot {slot} version {} ({}), got {booted}: {marker}\n(console: {})",
            self.boots,
            version.version,
            expected.behaviour.name(),
            vm.log_path().display()
        );
        Ok(vm)
    }

    /// One whole boot of `expected` from `slot`: the host comes up, does
    /// what its behaviour says, and the boot ends (QEMU exits as the host
    /// reboots; a host that stays up has its power cut once it is done).
    /// Returns the console transcript of the boot.
    fn boot(&mut self, expected: &Fixture, slot: Slot) -> Result<PathBuf> {
        let mut vm = self.power_on(expected, slot)?;
        match &expected.behaviour {
            Behaviour::Healthy { then, .. } => {
                expect_mark_good(&mut vm)?;
                vm.expect("ABNIX-FIXTURE done then=", STEP)?;
                match then {
                    AfterCommands::Idle => vm.power_cut()?,
                    AfterCommands::Reboot | AfterCommands::PowerOff => wait_clean_exit(&mut vm)?,
                }
            }
            Behaviour::NeverHealthy { .. } => {
                vm.expect("ABNIX-FIXTURE never healthy", STEP)?;
                wait_clean_exit(&mut vm)?;
            }
            Behaviour::KernelPanic => {
                vm.expect("Kernel panic - not syncing", STEP)?;
                wait_clean_exit(&mut vm)?;
            }
        }
        Ok(vm.log_path().to_owned())
    }

    fn status(&self) -> Result<BootStatus> {
        self.disk.status()
    }

    /// Checks the state and version of `slot` as read from the disk.
    fn expect_slot(&self, slot: Slot, state: SlotState, version: Option<&Fixture>) -> Result<()> {
        let status = self.status()?;
        let found = status.slot(slot);
        let version = version.map(Fixture::slot_info);
        ensure!(
            found.state == state && found.info == version,
            "after boot {}: slot {slot} should be {state:?} with {:?}; status: {status:#?}",
            self.boots,
            version.map(|info| info.version),
        );
        Ok(())
    }

    fn expect_next(&self, slot: Slot) -> Result<()> {
        let status = self.status()?;
        ensure!(
            status.next == Some(slot),
            "after boot {}: slot {slot} should boot next; status: {status:#?}",
            self.boots
        );
        Ok(())
    }
}

/// The host ran `abnix-update mark-good` (its first command) and it
/// succeeded.
fn expect_mark_good(vm: &mut Vm) -> Result<()> {
    vm.expect(&format!("command=1 run: {MARK_GOOD}"), STEP)?;
    let done = vm.expect("ABNIX-FIXTURE command=1 exit=", STEP)?;
    ensure!(
        done.field("exit") == Some("0"),
        "mark-good failed: {done}\n(console: {})",
        vm.log_path().display()
    );
    Ok(())
}

/// QEMU exits by itself: the guest rebooted or powered off.
fn wait_clean_exit(vm: &mut Vm) -> Result<()> {
    let status = vm.wait_exit(STEP)?;
    ensure!(status.success(), "QEMU exited with {status}");
    Ok(())
}

// The scenarios.

/// The installed disk boots slot A, whose host runs mark-good on its
/// already good slot (exit 0, nothing changes).
fn boots_a(bench: &mut Bench) -> Result<()> {
    let fixtures = bench.fixtures;
    bench.boot(&fixtures.good_a, Slot::A)?;
    bench.expect_slot(Slot::A, SlotState::Good, Some(&fixtures.good_a))?;
    bench.expect_slot(Slot::B, SlotState::Bad, None)?;
    bench.expect_next(Slot::A)
}

/// After activate(B), B boots on trial: its host comes up from slot B and
/// the bootloader has counted one try.
fn activated_b_boots_on_trial(bench: &mut Bench) -> Result<()> {
    let fixtures = bench.fixtures;
    bench.update_b(&fixtures.unhealthy_b)?;
    bench.boot(&fixtures.unhealthy_b, Slot::B)?;
    bench.expect_slot(
        Slot::B,
        SlotState::Trial {
            tries_left: TRIES - 1,
        },
        Some(&fixtures.unhealthy_b),
    )?;
    bench.expect_next(Slot::B)
}

/// B whose kernel panics at every boot uses up its tries, then A boots
/// again, and the status read from the disk names B's version as the
/// failed trial.
fn failing_b_falls_back_to_a(bench: &mut Bench) -> Result<()> {
    let fixtures = bench.fixtures;
    let b = &fixtures.panicking_b;
    bench.update_b(b)?;
    for used in 1..=TRIES {
        bench.boot(b, Slot::B)?;
        bench.expect_slot(
            Slot::B,
            SlotState::Trial {
                tries_left: TRIES - used,
            },
            Some(b),
        )?;
    }
    bench.boot(&fixtures.good_a, Slot::A)?;
    let status = bench.status()?;
    let failed = status
        .failed_trial(Slot::A)
        .ok_or_else(|| anyhow!("no failed trial reported on A; status: {status:#?}"))?;
    ensure!(
        failed.slot == Slot::B && failed.info == Some(b.slot_info()),
        "the failed trial should be slot B version 2: {failed:?}"
    );
    bench.expect_slot(Slot::A, SlotState::Good, Some(&fixtures.good_a))?;
    bench.expect_next(Slot::A)
}

/// B that runs mark-good becomes good and keeps booting: two more boots
/// come up on B, where a trial with [`TRIES`] tries would be used up by
/// then. B comes from its bundle, as an offline update (`install
/// --bundle`) takes it: the same trial and mark-good as from the bucket.
fn good_b_keeps_booting(bench: &mut Bench) -> Result<()> {
    let fixtures = bench.fixtures;
    let b = &fixtures.good_b;
    let config = fixtures.fleet.host_config()?;
    bench
        .disk
        .install_bundle(&config, Slot::B, &b.release.bundle, TRIES)?;
    bench.expect_slot(Slot::B, SlotState::Trial { tries_left: TRIES }, Some(b))?;
    bench.expect_next(Slot::B)?;
    bench.boot(b, Slot::B)?;
    bench.expect_slot(Slot::B, SlotState::Good, Some(b))?;
    for _ in 0..TRIES {
        bench.boot(b, Slot::B)?;
    }
    bench.expect_slot(Slot::B, SlotState::Good, Some(b))?;
    bench.expect_slot(Slot::A, SlotState::Good, Some(&fixtures.good_a))?;
    bench.expect_next(Slot::B)
}

/// While A runs, B is written and activated on its disk (as the updater in
/// A would), and the power is cut right after activate returns: the
/// machine comes up on B's trial, which marks itself good.
fn power_cut_right_after_activate(bench: &mut Bench) -> Result<()> {
    let fixtures = bench.fixtures;
    let b = &fixtures.good_b;
    let mut vm = bench.power_on(&fixtures.good_a, Slot::A)?;
    expect_mark_good(&mut vm)?;
    vm.expect("ABNIX-FIXTURE done then=idle", STEP)?;
    bench.update_b(b)?;
    vm.power_cut()?;
    bench.expect_slot(Slot::B, SlotState::Trial { tries_left: TRIES }, Some(b))?;
    bench.boot(b, Slot::B)?;
    bench.expect_slot(Slot::B, SlotState::Good, Some(b))?;
    bench.expect_next(Slot::B)
}

/// The power is cut during B's first trial boot, the moment its host starts
/// mark-good: whether or not mark-good got to write, the attempt the
/// bootloader counted survives and B has a try left, so the next boot is B
/// again, which marks itself good.
fn power_cut_during_first_trial(bench: &mut Bench) -> Result<()> {
    let fixtures = bench.fixtures;
    let b = &fixtures.good_b;
    bench.update_b(b)?;
    let mut vm = bench.power_on(b, Slot::B)?;
    vm.power_cut_when(&format!("command=1 run: {MARK_GOOD}"), STEP)?;
    let state = bench.status()?.slot(Slot::B).state;
    println!(
        "{}: power cut as mark-good started; B is then {state:?}",
        bench.name
    );
    ensure!(
        state == SlotState::Trial {
            tries_left: TRIES - 1
        } || state == SlotState::Good,
        "after a power cut during B's first trial, B should have {} tries left or be good, not {state:?}",
        TRIES - 1
    );
    bench.expect_next(Slot::B)?;
    bench.boot(b, Slot::B)?;
    bench.expect_slot(Slot::B, SlotState::Good, Some(b))?;
    bench.expect_next(Slot::B)
}

/// While A runs, the update of B is cut short three times, as an updater
/// that retries after each power cut meets it: halfway through the image,
/// halfway through the kernel file, and inside activate's state write (in
/// GRUB's state block after `abnix_primary=b` and before B's tries, a
/// mixed state; in systemd-boot before the entry file is complete). After
/// each cut status predicts A, and the real bootloader boots A. Then a
/// complete update boots B on trial.
fn power_cut_during_update(bench: &mut Bench) -> Result<()> {
    let fixtures = bench.fixtures;
    let (a, b) = (&fixtures.good_a, &fixtures.good_b);
    let len = |path: &Path| -> Result<u64> { Ok(std::fs::metadata(path)?.len()) };
    let cuts = [
        PowerCut {
            step: Step::WriteImage,
            after_bytes: len(&b.version().image)? / 2,
        },
        PowerCut {
            step: Step::WriteBootFiles,
            after_bytes: len(&b.version().kernel)? / 2,
        },
        PowerCut {
            step: Step::Activate,
            after_bytes: grubenv_offset_of_slot_b(),
        },
    ];
    let mut vm = bench.power_on(a, Slot::A)?;
    for cut in cuts {
        expect_mark_good(&mut vm)?;
        vm.expect("ABNIX-FIXTURE done then=idle", STEP)?;
        bench.disk.update_with_power_cut(
            &fixtures.fleet.host_config()?,
            Slot::B,
            &b.signed,
            TRIES,
            cut,
        )?;
        vm.power_cut()?;
        println!(
            "{}: power cut {} bytes into {:?}; B is then {:?}",
            bench.name,
            cut.after_bytes,
            cut.step,
            bench.status()?.slot(Slot::B).state
        );
        if cut.step == Step::Activate && bench.path.bootloader() == Bootloader::Grub {
            expect_torn_grub_state(&bench.disk)?;
        }
        bench.expect_next(Slot::A)?;
        vm = bench.power_on(a, Slot::A)?;
    }
    expect_mark_good(&mut vm)?;
    vm.expect("ABNIX-FIXTURE done then=idle", STEP)?;
    bench.update_b(b)?;
    vm.power_cut()?;
    bench.boot(b, Slot::B)?;
    bench.expect_slot(Slot::B, SlotState::Good, Some(b))
}

/// The state block torn before B's line: the new primary (B) landed, B's
/// new tries did not, so B is still bad, and GRUB must boot A.
fn expect_torn_grub_state(disk: &AbnixDisk) -> Result<()> {
    let grub = disk.grub_state()?;
    ensure!(
        grub.problems.is_empty()
            && grub.state.primary == Slot::B
            && grub.state.slot(Slot::B) == SlotState::Bad,
        "the torn state block should read primary=b with B bad: {:?}",
        grub
    );
    Ok(())
}

/// Where B's line starts in GRUB's state block: every block abnix writes
/// has its keys at the same offsets (docs/boot.md, "The state block").
fn grubenv_offset_of_slot_b() -> u64 {
    let block = grub::env::encode_state(&BootState::FALLBACK);
    let key = format!("{}=", grub::env::slot_key(Slot::B));
    block
        .windows(key.len())
        .position(|window| window == key.as_bytes())
        .expect("the state block names slot b") as u64
}

/// GRUB's rescue path (docs/boot.md, "The script"): B holds a good
/// version, A one whose trial failed (its files still load), and the state
/// block is damaged (random bytes). GRUB finds no slot eligible, says so,
/// and boots B, the slot with the last-good mark, not A; B's mark-good
/// writes a clean block.
fn rescue_boots_last_good(bench: &mut Bench) -> Result<()> {
    let fixtures = bench.fixtures;
    let (a, b) = (&fixtures.panicking_b, &fixtures.good_b);
    bench.update_b(b)?;
    bench.boot(b, Slot::B)?;
    bench.expect_slot(Slot::B, SlotState::Good, Some(b))?;
    // One try, which the panic uses up.
    bench.update(Slot::A, a, 1)?;
    bench.boot(a, Slot::A)?;
    bench.expect_slot(Slot::A, SlotState::Trial { tries_left: 0 }, Some(a))?;
    let garbage = abnix_testkit::images::seeded_random(grub::env::STATE_BLOCK_SIZE, 3);
    bench.disk.overwrite_grub_state(&garbage)?;
    bench.expect_next(Slot::B)?;
    let console = bench.boot(b, Slot::B)?;
    let transcript = std::fs::read_to_string(&console)
        .with_context(|| format!("reading {}", console.display()))?;
    ensure!(
        transcript.contains(grub::cfg::RESCUE_MESSAGE),
        "GRUB should have taken the rescue path, saying {:?} (console: {})",
        grub::cfg::RESCUE_MESSAGE,
        console.display()
    );
    let grub = bench.disk.grub_state()?;
    ensure!(
        grub.problems.is_empty(),
        "mark-good should have written a clean state block: {grub:?}"
    );
    bench.expect_slot(Slot::B, SlotState::Good, Some(b))?;
    bench.expect_slot(Slot::A, SlotState::Bad, Some(a))?;
    bench.expect_next(Slot::B)
}

struct Scenario {
    name: &'static str,
    run: fn(&mut Bench<'_>) -> Result<()>,
    /// The boot paths it runs on.
    paths: &'static [BootPath],
}

const GRUB_PATHS: &[BootPath] = &[BootPath::GrubSeaBios, BootPath::GrubOvmf];

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "boots-a",
        run: boots_a,
        paths: &BootPath::ALL,
    },
    Scenario {
        name: "activated-b-boots-on-trial",
        run: activated_b_boots_on_trial,
        paths: &BootPath::ALL,
    },
    Scenario {
        name: "failing-b-falls-back-to-a",
        run: failing_b_falls_back_to_a,
        paths: &BootPath::ALL,
    },
    Scenario {
        name: "good-b-keeps-booting",
        run: good_b_keeps_booting,
        paths: &BootPath::ALL,
    },
    Scenario {
        name: "power-cut-right-after-activate",
        run: power_cut_right_after_activate,
        paths: &BootPath::ALL,
    },
    Scenario {
        name: "power-cut-during-update",
        run: power_cut_during_update,
        paths: &BootPath::ALL,
    },
    Scenario {
        name: "power-cut-during-first-trial",
        run: power_cut_during_first_trial,
        paths: &BootPath::ALL,
    },
    Scenario {
        name: "rescue-boots-last-good",
        run: rescue_boots_last_good,
        paths: GRUB_PATHS,
    },
];

fn main() {
    let fixtures = Shared::default();
    let shared = &fixtures;
    // Scenario by scenario, so the boot paths of one scenario run side by
    // side and a partial run still covers every bootloader.
    let cases = SCENARIOS
        .iter()
        .flat_map(|scenario| {
            scenario.paths.iter().map(move |&path| Case {
                row: scenario.name,
                column: path.name(),
                run: Box::new(move || {
                    let mut bench = Bench::new(shared, path, scenario.name)?;
                    (scenario.run)(&mut bench)?;
                    bench.keep_only_logs()
                }),
            })
        })
        .collect();
    println!("a trial gets {TRIES} tries");
    // A failure to build the fixtures is reported by every case.
    let code = runner::run_cases(cases, &|| drop(shared.fixtures()));
    // Stops the bucket's server.
    drop(fixtures);
    std::process::exit(code);
}
