//! abnix-update: the device agent and the operator commands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

#[derive(Parser)]
#[command(
    name = "abnix-update",
    version,
    about = "abnix updater and operator tool"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a signing key (Nix's name:base64 format) and print its public key.
    Keygen(cmd::keygen::Args),
    /// Turn an image, kernel, initrd and cmdline into a signed bundle directory.
    Pack(cmd::pack::Args),
    /// Upload a bundle to the bucket: artifacts first, the channel's meta last.
    Publish(cmd::publish::Args),
    /// Fetch and verify the channel's latest version and stream its image into a file.
    Fetch(cmd::fetch::Args),
    /// Show the channel's hosts as their reports tell: versions, trials, failures, silent hosts.
    Fleet(cmd::fleet::Args),
    /// Show the booted slot, both slots, the last check, failed versions and any pending reboot.
    Status(cmd::status::Args),
    /// Say what an update would do (exit 0: an update is available, 3: nothing to do).
    Check(cmd::check::Args),
    /// Install the channel's newest version into the other slot, then reboot per policy.
    Update(cmd::update::Args),
    /// Install a bundle directory's version into the other slot (offline), on trial at the next reboot.
    Install(cmd::install::Args),
    /// Mark the booted slot good (run once the host is healthy).
    MarkGood(cmd::mark_good::Args),
    /// Make the other slot, if it holds a good version, boot next.
    Rollback(cmd::rollback::Args),
    /// Grow abnix-rw to the end of a larger disk (at every boot; a no-op when there is nothing to grow).
    Grow(cmd::grow::Args),
    /// Write the man pages and shell completions into DIR (for packagers).
    #[command(hide = true)]
    GenerateDocs {
        #[arg(value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

fn generate_docs(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    abnix_core::cli_docs::write(<Cli as clap::CommandFactory>::command(), dir)?;
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    abnix_core::logging::init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => cmd::keygen::run(args),
        Command::Pack(args) => cmd::pack::run(args),
        Command::Publish(args) => cmd::publish::run(args),
        Command::Fetch(args) => cmd::fetch::run(args),
        Command::Fleet(args) => cmd::fleet::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Check(args) => cmd::check::run(args),
        Command::Update(args) => cmd::update::run(args),
        Command::Install(args) => cmd::install::run(args),
        Command::MarkGood(args) => cmd::mark_good::run(args),
        Command::Rollback(args) => cmd::rollback::run(args),
        Command::Grow(args) => cmd::grow::run(args),
        Command::GenerateDocs { dir } => generate_docs(&dir),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            abnix_core::logging::report_error(
                "abnix-update",
                &abnix_core::errors::error_text(err.as_ref()),
            );
            ExitCode::FAILURE
        }
    }
}
