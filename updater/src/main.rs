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
    /// Show the booted slot, both slots, the last check, failed versions and any pending reboot.
    Status(cmd::status::Args),
    /// Mark the booted slot good (run once the host is healthy).
    MarkGood(cmd::mark_good::Args),
}

fn main() -> ExitCode {
    cmd::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => cmd::keygen::run(args),
        Command::Pack(args) => cmd::pack::run(args),
        Command::Publish(args) => cmd::publish::run(args),
        Command::Fetch(args) => cmd::fetch::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::MarkGood(args) => cmd::mark_good::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("abnix-update: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
