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
            eprintln!("abnix-update: error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// `context: cause: …` with each message once: many errors embed their
/// source in their own message, which `{:#}` would print twice.
fn error_chain(err: &anyhow::Error) -> String {
    let mut out = String::new();
    let mut outer = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !outer.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        outer = text;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("reading x: {source}")]
    struct Embeds {
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("opening y")]
    struct Wraps(#[source] std::io::Error);

    #[test]
    fn each_message_of_the_chain_appears_once() {
        let embedded = anyhow::Error::new(Embeds {
            source: std::io::Error::other("disk on fire"),
        })
        .context("fetching");
        assert_eq!(error_chain(&embedded), "fetching: reading x: disk on fire");

        let wrapped =
            anyhow::Error::new(Wraps(std::io::Error::other("disk on fire"))).context("fetching");
        assert_eq!(error_chain(&wrapped), "fetching: opening y: disk on fire");
    }
}
