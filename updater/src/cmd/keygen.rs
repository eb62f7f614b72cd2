//! `abnix-update keygen`: make a signing key in Nix's `name:base64` format.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use abnix_formats::sign::SecretKey;
use anyhow::Context;

#[derive(clap::Args)]
pub struct Args {
    /// Key name, e.g. "fleet-2026" (no ':' or whitespace); signatures carry it.
    #[arg(long)]
    name: String,
    /// Secret key file to create, mode 0600. An existing file is never overwritten.
    #[arg(long)]
    out: PathBuf,
    /// Also write the public key to this file (must not exist yet).
    #[arg(long)]
    public_out: Option<PathBuf>,
}

/// Creates a file that must not exist yet, with exactly `mode`: set at
/// creation so the secret is never readable by others, and again explicitly
/// because the umask may have narrowed it.
fn create_new(path: &Path, mode: u32) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_permissions(Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    Ok(file)
}

fn write_line(mut file: File, path: &Path, text: &str) -> anyhow::Result<()> {
    writeln!(file, "{text}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = SecretKey::generate(&args.name).context("generating the key")?;
    let public = key.public().to_string();

    // Both files are created before either is written, so a clash with an
    // existing public key file leaves no stray secret behind.
    let secret_file = create_new(&args.out, 0o600)?;
    let public_file = match &args.public_out {
        Some(path) => match create_new(path, 0o644) {
            Ok(file) => Some((file, path)),
            Err(err) => {
                let _ = fs::remove_file(&args.out);
                return Err(err);
            }
        },
        None => None,
    };
    write_line(secret_file, &args.out, &key.to_string())?;
    if let Some((file, path)) = public_file {
        write_line(file, path, &public)?;
    }
    tracing::info!("secret key written to {}", args.out.display());
    println!("{public}");
    Ok(ExitCode::SUCCESS)
}
