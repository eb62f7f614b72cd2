//! The executor of the update cycle: performs each [`Action`] the
//! [`Machine`] asks for on the real disk, bucket and state directory, and
//! turns the result into the [`Event`] the machine advances on.
//!
//! Ordering on disk is boot control's and the pipeline's: every boot
//! control method syncs the ESP before it returns, and the pipeline syncs
//! the slot after the image, so `mark_bad` is durable before the first
//! byte of the image is written, and the image before the boot files.

use std::ops::ControlFlow;

use anyhow::Context;
use chrono::Utc;

use super::machine::{failed_trial_record, Action, Event, Machine, Outcome, Plan, Step};
use super::notify::Notifier;
use super::records;
use crate::channel::Channel;
use crate::config::Config;
use crate::delta::{ActiveSlot, DeltaOptions, IndexStore, LocalChunks, Reopen};
use crate::remote::Remote;
use crate::source::{LocalBundle, OfferError, Source};
use crate::state_dir::{FailedVersion, State, StateDir};
use abnix_core::boot::BootFiles;
use abnix_core::errors::error_text;
use abnix_core::pipeline::{VerifiedImage, WriteOptions};
use abnix_core::progress::Progress;
use abnix_core::system_disk::SystemDisk;
use abnix_formats::disk::{Disk, Region};
use abnix_formats::fat::FatFs;
use abnix_formats::index::Index;
use abnix_formats::sign::TrustedKeys;

/// What the actions work on.
pub struct Executor<'a, D: Disk> {
    disk: &'a mut SystemDisk<D>,
    config: &'a Config,
    state_dir: &'a StateDir,
    /// The loaded state; failed trials are added and saved as they are met.
    state: &'a mut State,
    progress: &'a dyn Progress,
    notifier: &'a Notifier,
    write_options: WriteOptions,
    /// The config's keys with the revocations recorded on the ESP, from the
    /// first action on.
    keys: TrustedKeys,
    /// Where the version comes from: the bucket (connected on first use)
    /// unless [`Executor::from_bundle`] set a bundle.
    source: Option<Source>,
    /// The index of the version being installed, from its FetchIndex step.
    index: Option<Index>,
    /// The proof that the target slot holds the image, from WriteImage.
    image: Option<VerifiedImage>,
}

impl<'a, D: Reopen> Executor<'a, D> {
    pub fn new(
        disk: &'a mut SystemDisk<D>,
        config: &'a Config,
        state_dir: &'a StateDir,
        state: &'a mut State,
        progress: &'a dyn Progress,
        notifier: &'a Notifier,
    ) -> Self {
        Executor {
            disk,
            config,
            state_dir,
            state,
            progress,
            notifier,
            write_options: WriteOptions {
                // The slot is read back and every chunk checked once it is
                // synced: a trial that would boot a corrupt root costs a
                // reboot, reading the slot costs seconds.
                verify_readback: true,
                ..WriteOptions::default()
            },
            keys: config.trusted_keys.clone(),
            source: None,
            index: None,
            image: None,
        }
    }

    /// Takes the version from the bundle in `dir` instead of the channel
    /// (`install --bundle`; run the machine in [`super::machine::Mode::Bundle`]):
    /// the same decisions, verification and steps.
    pub fn from_bundle(mut self, dir: std::path::PathBuf) -> Self {
        self.source = Some(Source::Bundle(LocalBundle::new(dir, self.keys.clone())));
        self
    }

    /// Runs the machine to its outcome, logging each action and putting it
    /// in the unit's status line.
    pub fn run(&mut self, machine: Machine) -> Outcome {
        match self.run_until(machine, |_, _| ControlFlow::Continue(())) {
            ControlFlow::Continue(outcome) => outcome,
            ControlFlow::Break(()) => unreachable!("the run is never stopped"),
        }
    }

    /// [`Executor::run`], with `before` called ahead of each action it
    /// performs, on the disk the action is about to change: a test arms a
    /// fault there, or stops the run between two steps (`Break`, as if the
    /// power went out), in the order the machine keeps.
    pub fn run_until(
        &mut self,
        mut machine: Machine,
        mut before: impl FnMut(&Action, &mut SystemDisk<D>) -> ControlFlow<()>,
    ) -> ControlFlow<(), Outcome> {
        loop {
            let action = machine.action();
            let line = match (&action, &self.source) {
                (Action::FetchLatest, Some(source)) => source.describe_offer(),
                _ => None,
            }
            .unwrap_or_else(|| action.describe());
            self.notifier.status(&line);
            if let Action::Finish(outcome) = action {
                return ControlFlow::Continue(outcome);
            }
            before(&action, self.disk)?;
            tracing::info!("{line}");
            let event = self.perform(action);
            machine = machine.advance(event);
        }
    }

    fn perform(&mut self, action: Action) -> Event {
        match action {
            Action::ReadDisk => match records::read_disk(self.disk, &self.config.trusted_keys) {
                Ok((disk, keys)) => {
                    if let Some(source) = &mut self.source {
                        source.set_keys(keys.clone());
                    }
                    self.keys = keys;
                    Event::Disk(Box::new(disk))
                }
                Err(e) => Event::Failed(e.to_string()),
            },
            Action::RecordFailedTrial { trial, info } => {
                let record = failed_trial_record(trial, &info, Utc::now());
                tracing::warn!(
                    "version {} \"{}\" {}; it is never installed again",
                    record.version,
                    record.label,
                    record.reason
                );
                match self.record_failed(&record) {
                    Ok(()) => Event::Recorded(Box::new(record)),
                    Err(e) => Event::Failed(error_text(e.as_ref())),
                }
            }
            Action::RecordRevocations(keys) => {
                let recorded = FatFs::open(self.disk.esp()).and_then(|mut fs| {
                    keys.iter()
                        .try_for_each(|key| records::record_revoked(&mut fs, key))
                });
                match recorded {
                    Ok(()) => {
                        for key in keys {
                            tracing::warn!("key {key} is revoked by a recovery key");
                            self.keys.revoke(key);
                        }
                        // The same bucket (and deadline), the keys as they
                        // are now.
                        if let Some(source) = &mut self.source {
                            source.set_keys(self.keys.clone());
                        }
                        Event::Revoked
                    }
                    Err(e) => Event::Failed(format!("recording on the ESP: {e}")),
                }
            }
            Action::FetchLatest => self.fetch_latest(),
            Action::Wait(delay) => {
                std::thread::sleep(delay);
                Event::Waited
            }
            Action::Install { plan, step } => match self.install_step(&plan, step) {
                Ok(()) => Event::StepDone,
                Err(e) => Event::Failed(error_text(e.as_ref())),
            },
            Action::Finish(outcome) => {
                unreachable!("run returns on Finish, it is never performed: {outcome}")
            }
        }
    }

    /// Records a failed version on the ESP, then in the state file.
    fn record_failed(&mut self, record: &FailedVersion) -> anyhow::Result<()> {
        let mut fs = FatFs::open(self.disk.esp()).context("the ESP")?;
        records::record_failed(&mut fs, record).context("recording on the ESP")?;
        self.state.record_failed(record.clone());
        self.state_dir
            .save(self.state)
            .with_context(|| format!("saving the state in {}", self.state_dir.path().display()))
    }

    fn fetch_latest(&mut self) -> Event {
        let source = match connected(&mut self.source, self.config, &self.keys) {
            Ok(source) => source,
            Err(e) => return Event::Failed(error_text(e.as_ref())),
        };
        let whose = match source {
            Source::Bucket(_) => "the channel's latest version",
            Source::Bundle(_) => "the bundle's version",
        };
        match source.offer() {
            Ok(signed) => {
                let meta = signed.meta();
                tracing::info!(
                    "{whose} is {} \"{}\" (signed by {})",
                    meta.version,
                    meta.label,
                    signed.signer()
                );
                Event::Latest(Box::new(signed))
            }
            Err(OfferError::Unreachable(e)) => Event::Unreachable(e),
            Err(OfferError::Failed(e)) => Event::Failed(e),
        }
    }

    fn install_step(&mut self, plan: &Plan, step: Step) -> anyhow::Result<()> {
        let slot = plan.target;
        let meta = plan.meta();
        match step {
            Step::FetchIndex => {
                let index = connected(&mut self.source, self.config, &self.keys)?.index(meta)?;
                self.index = Some(index);
            }
            Step::CheckBootFiles => self.disk.boot_control()?.check_boot_files(
                slot,
                &plan.slot_info(),
                meta.kernel.size,
                meta.initrd.size,
            )?,
            Step::MarkBad => self.disk.boot_control()?.mark_bad(slot)?,
            Step::WriteImage => self.write_image(plan)?,
            Step::WriteBootFiles => {
                let source = connected(&mut self.source, self.config, &self.keys)?;
                let image = self
                    .image
                    .as_ref()
                    .expect("WriteImage comes before WriteBootFiles");
                // Checked against the meta as they are written: a kernel or
                // initrd that differs never gets its slot file.
                let mut kernel = source.open_object(meta, &meta.kernel)?;
                let mut initrd = source.open_object(meta, &meta.initrd)?;
                let files = BootFiles::of_version(&plan.signed, image, &mut kernel, &mut initrd)?;
                self.disk.boot_control()?.write_boot_files(slot, files)?;
            }
            Step::Activate => self.disk.boot_control()?.activate(slot, plan.tries)?,
        }
        Ok(())
    }
}

impl<D: Reopen> Executor<'_, D> {
    /// Writes the image into the target slot by a delta update
    /// (docs/delta.md): chunks are taken from the active slot, by the index
    /// of its version (kept in the state dir, else fetched from the bucket),
    /// and from the target itself when an earlier attempt at this version
    /// was interrupted; the rest is downloaded.
    fn write_image(&mut self, plan: &Plan) -> anyhow::Result<()> {
        let (slot, meta) = (plan.target, plan.meta());
        let source = connected(&mut self.source, self.config, &self.keys)?;
        let index = self
            .index
            .as_ref()
            .expect("FetchIndex comes before WriteImage");
        let store = IndexStore::new(self.state_dir.path());
        let active = slot.other();
        let active_version = self
            .disk
            .boot_control()?
            .status()?
            .slot(active)
            .info
            .as_ref()
            .map(|info| (info.version, info.id));
        let active_index =
            active_version.and_then(|(version, id)| source.active_index(&store, version, id));
        // The new version's index is kept before the first byte is written:
        // finding it at the next attempt means this one may have left chunks
        // in the target. Were it lost, that attempt would only download more.
        let resumed = matches!(store.load(meta.version, meta.id), Ok(Some(_)));
        if let Err(e) = store.save(meta.version, meta.id, index) {
            tracing::warn!("cannot keep the index of version {}: {e}", meta.version);
        }
        let part = self.disk.layout().slot(active).clone();
        let active_disk = Region::new(
            self.disk
                .disk()
                .reopen()
                .context("opening the active slot")?,
            part.start,
            part.size,
        );
        let options = DeltaOptions {
            write: WriteOptions {
                target_name: format!("slot {slot}"),
                ..self.write_options.clone()
            },
            ..DeltaOptions::default()
        };
        let report = source.write_image_delta(
            meta,
            index,
            &mut self.disk.slot_region(slot),
            LocalChunks {
                active: active_index.as_ref().map(|index| ActiveSlot {
                    disk: active_disk,
                    index,
                }),
                target_may_hold_image: resumed,
            },
            &options,
            self.progress,
        )?;
        tracing::info!(
            "wrote {} bytes ({} chunks) into slot {slot} in {:.1?}, verified; {report}",
            report.bytes,
            report.chunks,
            report.elapsed
        );
        let keep: Vec<(u64, uuid::Uuid)> = active_version
            .into_iter()
            .chain([(meta.version, meta.id)])
            .collect();
        if let Err(e) = store.retain(&keep) {
            tracing::warn!(
                "cannot remove old indexes from {}: {e}",
                self.state_dir.path().display()
            );
        }
        self.image = report.verified;
        Ok(())
    }
}

/// The source: a bundle set beforehand, or the channel, made on first use,
/// so a run that ends before its first fetch sends no request and loads
/// no credentials.
fn connected<'c>(
    source: &'c mut Option<Source>,
    config: &Config,
    keys: &TrustedKeys,
) -> anyhow::Result<&'c mut Source> {
    if source.is_none() {
        let remote = Remote::new(config.bucket()?.clone()).context("the bucket")?;
        *source = Some(Source::Bucket(Channel::new(remote, keys.clone())));
    }
    Ok(source.as_mut().expect("just made"))
}

#[cfg(test)]
mod tests {
    use std::fs::File;
    use std::path::Path;

    use super::*;
    use crate::update::machine::{Clock, Device, Failure, Mode, NetworkWait, Setup, Stage};
    use abnix_core::progress::NoProgress;
    use abnix_formats::layout::{self, Arch, LayoutConfig};
    use abnix_formats::sign::SecretKey;
    use abnix_formats::slot::Slot;

    /// A disk-image file with the abnix table and nothing in its
    /// partitions: its boot state cannot be read.
    fn bare_disk(dir: &Path) -> SystemDisk<File> {
        let config = LayoutConfig::new(8 << 20);
        let size = layout::min_disk_size(512, &config);
        let layout = layout::compute(size, 512, &config).unwrap();
        let mut file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(dir.join("disk.img"))
            .unwrap();
        file.set_len(size).unwrap();
        layout.to_gpt(&[7; 32]).write(&mut file).unwrap();
        SystemDisk::open(file, 512).unwrap()
    }

    fn config(dir: &Path) -> Config {
        let key = SecretKey::generate("run-test").unwrap().public();
        let text = format!(
            "endpoint = \"http://127.0.0.1:9\"\nregion = \"us-east-1\"\nbucket = \"b\"\n\
             channel = \"c\"\npath_style = true\ncredentials = \"anonymous\"\n\
             trusted_keys = [\"{key}\"]\nstate_dir = \"{}\"\n",
            dir.join("state").display()
        );
        Config::parse(&text, &dir.join("config.toml")).unwrap()
    }

    fn setup() -> Setup {
        Setup {
            mode: Mode::Update,
            booted: Slot::A,
            failed: Vec::new(),
            slot_size: 8 << 20,
            tries: 3,
            network: NetworkWait::DEFAULT,
            machine_id: None,
            device: Device {
                channel: Some("c".into()),
                arch: Arch::X86_64,
            },
            clock: Clock {
                now: Utc::now(),
                trusted: true,
                newest_signed: None,
            },
        }
    }

    #[test]
    fn run_until_sees_each_action_before_it_is_performed_and_stops_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut disk = bare_disk(dir.path());
        let config = config(dir.path());
        let state_dir = StateDir::new(&config.state_dir);
        let mut state = State::default();
        let notifier = Notifier::silent();
        let mut executor = Executor::new(
            &mut disk,
            &config,
            &state_dir,
            &mut state,
            &NoProgress,
            &notifier,
        );

        let mut seen = Vec::new();
        let stopped = executor.run_until(Machine::new(setup()), |action, _| {
            seen.push(action.clone());
            ControlFlow::Break(())
        });
        assert_eq!(stopped, ControlFlow::Break(()));
        assert_eq!(seen, [Action::ReadDisk]);

        // Not stopped, the action is performed: this disk's ESP holds
        // nothing to read, and the run ends there.
        seen.clear();
        let ended = executor.run_until(Machine::new(setup()), |action, _| {
            seen.push(action.clone());
            ControlFlow::Continue(())
        });
        assert_eq!(seen, [Action::ReadDisk]);
        assert!(
            matches!(
                ended,
                ControlFlow::Continue(Outcome::Failed(Failure {
                    stage: Stage::Disk,
                    ..
                }))
            ),
            "{ended:?}"
        );
    }
}
