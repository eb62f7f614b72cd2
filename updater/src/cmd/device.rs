//! What every device command takes: the config file and the overrides of
//! the disk and the kernel command line (core::host).

use std::path::PathBuf;

use abnix_core::blockdev::SysRoot;
use abnix_core::config::{self, Config};
use abnix_core::host::{Host, HostOverrides};
use abnix_core::state::{Lock, StateDir};
use abnix_core::update::LOCK_WAIT;
use abnix_formats::slot::Slot;

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
}

impl DeviceArgs {
    pub fn load_config(&self) -> anyhow::Result<Config> {
        Ok(Config::load(&self.config)?)
    }

    /// Whether the disk or the command line is not the running host's.
    pub fn overridden(&self) -> bool {
        self.disk.is_some() || self.cmdline.is_some()
    }

    pub fn open_host(&self) -> anyhow::Result<Host> {
        let overrides = HostOverrides {
            disk: self.disk.clone(),
            cmdline: self.cmdline.clone(),
        };
        Ok(Host::open(&overrides, &SysRoot::default())?)
    }
}

/// The booted slot, for commands that change the boot state: they refuse
/// to guess.
pub fn booted(host: &Host) -> anyhow::Result<Slot> {
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
