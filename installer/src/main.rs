//! abnix-install: provision a disk or a disk-image file with the A/B layout.
//!
//! Flags and the config file ([`settings`]) become a request; the core
//! checks it without writing ([`install::prepare`]), the plan is shown and
//! counted down, then written ([`install::Plan::install`]).

use std::io;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use abnix_core::blockdev::SysRoot;
use abnix_core::errors::error_text;
use abnix_core::progress;
use abnix_installer::install::{self, InstallError};
use anyhow::Context;
use clap::Parser;

mod plan_report;
mod settings;

use plan_report::PlanReport;
use settings::{Args, Settings};

/// Exit status when writing failed and the partition table was wiped.
const EXIT_WRITE_FAILED: u8 = 3;

fn main() -> ExitCode {
    abnix_core::logging::init();
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            abnix_core::logging::report_error("abnix-install", &error_text(err.as_ref()));
            let wrote = err
                .downcast_ref::<InstallError>()
                .is_some_and(|e| matches!(e, InstallError::Failed { .. }));
            ExitCode::from(if wrote { EXIT_WRITE_FAILED } else { 1 })
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    if let Some(dir) = &args.generate_docs {
        abnix_core::cli_docs::write(<Args as clap::CommandFactory>::command(), dir)?;
        return Ok(());
    }
    let json = args.json;
    let settings = Settings::from_args(args)?;
    let plan = install::prepare(&settings.request, &SysRoot::default())?;
    // With --json, stdout holds the plan alone, and the summary joins the
    // text on stderr.
    if json {
        println!("{}", serde_json::to_string_pretty(&PlanReport::of(&plan))?);
    } else {
        eprintln!("{plan}");
    }
    countdown(settings.countdown);
    let summary = plan.install(progress::for_stderr().as_ref())?;
    if json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    if settings.poweroff {
        power_off().context("powering off")?;
    }
    Ok(())
}

/// Gives whoever watches the console time to stop an unattended install.
fn countdown(seconds: u64) {
    if seconds == 0 {
        return;
    }
    eprintln!("writing in {seconds} s; power off or press Ctrl-C to stop");
    for left in (1..=seconds).rev() {
        eprintln!("{left}");
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Under systemd (the installer ISO) through `systemctl poweroff`, which
/// stops the services and unmounts cleanly; elsewhere (a bare initramfs)
/// with the reboot(2) system call, after a sync.
fn power_off() -> anyhow::Result<()> {
    // sd_booted(3): systemd is PID 1 exactly when this directory exists.
    if Path::new("/run/systemd/system").exists() {
        let status = Command::new("systemctl")
            .arg("poweroff")
            .status()
            .context("running systemctl poweroff")?;
        anyhow::ensure!(status.success(), "systemctl poweroff: {status}");
        return Ok(());
    }
    // SAFETY: sync(2) and reboot(2) take no pointers; reboot returns only
    // on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    Err(io::Error::last_os_error().into())
}
