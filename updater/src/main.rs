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
    /// Grow abnix-rw to the end of a larger disk (at every boot; a no-op when there is nothing to grow).
    Grow(cmd::grow::Args),
}

fn main() -> ExitCode {
    cmd::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen(args) => cmd::keygen::run(args),
        Command::Pack(args) => cmd::pack::run(args),
        Command::Publish(args) => cmd::publish::run(args),
        Command::Fetch(args) => cmd::fetch::run(args),
        Command::Grow(args) => cmd::grow::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("abnix-update: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
