//! What every device command takes: the config file and the overrides of
//! the disk and the kernel command line (crate::host).

use std::path::PathBuf;

use abnix_core::blockdev::SysRoot;
use abnix_formats::machine_id::MACHINE_ID_PATH;
use abnix_formats::slot::Slot;
use abnix_updater::config::{self, Config};
use abnix_updater::host::{Host, HostOverrides};
use abnix_updater::report::Reporter;
use abnix_updater::state_dir::{Lock, StateDir};
use abnix_updater::update::LOCK_WAIT;

#[derive(clap::Args)]
pub struct DeviceArgs {
    /// The device config, then its drop-ins (config.d/*.toml beside it).
    #[arg(long, default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// The disk (or disk-image file) holding the slots, instead of the disk
    /// behind /. The booted slot is then not checked against /.
    #[arg(long)]
    pub disk: Option<PathBuf>,
    /// The kernel command line to read abnix.slot= from, instead of
    /// /proc/cmdline. The booted slot is then not checked against /.
    #[arg(long)]
    pub cmdline: Option<String>,
    /// The file holding this host's machine id, which gives its place in
    /// staged rollouts.
    #[arg(long, value_name = "FILE", default_value = MACHINE_ID_PATH)]
    pub machine_id: PathBuf,
}

impl DeviceArgs {
    pub fn load_config(&self) -> anyhow::Result<Config> {
        Ok(Config::load(&self.config)?)
    }

    /// Whether the disk or the command line is not the running host's.
    pub fn overridden(&self) -> bool {
        self.disk.is_some() || self.cmdline.is_some()
    }

    /// What writes this host's reports (when the config turns them on).
    pub fn reporter<'a>(&'a self, config: &'a Config, state_dir: &'a StateDir) -> Reporter<'a> {
        Reporter {
            config,
            state_dir,
            machine_id_file: &self.machine_id,
        }
    }

    pub fn open_host(&self) -> anyhow::Result<Host> {
        let overrides = HostOverrides {
            disk: self.disk.clone(),
            cmdline: self.cmdline.clone(),
        };
        Ok(Host::open(&overrides, &SysRoot::default())?)
    }
}

/// What a command that changes the boot state holds: the config, the host
/// and its booted slot, and the update lock (the ESP is written by one
/// process at a time).
pub struct BootedDevice {
    pub config: Config,
    pub host: Host,
    pub slot: Slot,
    pub state_dir: StateDir,
    /// Held until the command is done.
    pub lock: Lock,
}

impl DeviceArgs {
    /// Opens the host, refusing when its booted slot is not known, and
    /// takes the update lock.
    pub fn open_booted(&self) -> anyhow::Result<BootedDevice> {
        let config = self.load_config()?;
        let host = self.open_host()?;
        let slot = booted(&host)?;
        let (state_dir, lock) = lock(&config)?;
        Ok(BootedDevice {
            config,
            host,
            slot,
            state_dir,
            lock,
        })
    }
}

/// The booted slot, for commands that change the boot state: they refuse
/// to guess.
fn booted(host: &Host) -> anyhow::Result<Slot> {
    host.booted
        .clone()
        .map_err(|e| anyhow::anyhow!("refusing: the booted slot is not known: {e}"))
}

/// Takes the update lock, waiting briefly for another run to finish.
pub fn lock(config: &Config) -> anyhow::Result<(StateDir, Lock)> {
    let dir = StateDir::new(&config.state_dir);
    let lock = dir.lock(LOCK_WAIT)?;
    Ok((dir, lock))
}
