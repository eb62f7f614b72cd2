//! `abnix-update pack`: turn an image, kernel, initrd and cmdline into a
//! signed bundle directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use abnix_core::layout::Arch;
use abnix_core::pack::{pack, PackInput, DEFAULT_ZSTD_LEVEL};
use abnix_core::progress;
use abnix_core::sign::SecretKey;
use anyhow::Context;
use clap::ArgGroup;
use uuid::Uuid;

#[derive(clap::Args)]
#[command(group(ArgGroup::new("cmdline_source").required(true).args(["cmdline", "cmdline_file"])))]
pub struct Args {
    /// Raw root filesystem image (ext4 or erofs); its UUID becomes the version id.
    #[arg(long)]
    image: PathBuf,
    /// Kernel image.
    #[arg(long)]
    kernel: PathBuf,
    /// Initrd.
    #[arg(long)]
    initrd: PathBuf,
    /// Kernel command line (without abnix.slot=, which boot control adds).
    #[arg(long)]
    cmdline: Option<String>,
    /// File holding the kernel command line (one line).
    #[arg(long)]
    cmdline_file: Option<PathBuf>,
    /// Version number: must increase with every version of a channel.
    #[arg(long)]
    version: u64,
    /// The architecture of the machines the version is for (signed in its
    /// meta) [default: this machine's].
    #[arg(long, value_name = "x86_64|aarch64")]
    arch: Option<Arch>,
    /// Human-readable label.
    #[arg(long)]
    label: String,
    /// Expected version id: refuse the image unless its filesystem UUID is this.
    #[arg(long)]
    id: Option<Uuid>,
    /// Secret key file (Nix's name:base64 format, e.g. from `abnix-update keygen`).
    #[arg(long)]
    key: PathBuf,
    /// Output directory (created if missing; must be empty).
    #[arg(long)]
    out: PathBuf,
    /// zstd compression level.
    #[arg(long, default_value_t = DEFAULT_ZSTD_LEVEL, allow_negative_numbers = true)]
    level: i32,
    /// Compression threads [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,
}

/// Reads a secret key file, warning when others can read it.
pub fn read_key(path: &Path) -> anyhow::Result<SecretKey> {
    let context = || format!("reading the secret key {}", path.display());
    let text = fs::read_to_string(path).with_context(context)?;
    if let Ok(meta) = fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "secret key {} is readable by others (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    SecretKey::parse(&text).with_context(context)
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let key = read_key(&args.key)?;
    let cmdline = match (args.cmdline, &args.cmdline_file) {
        (Some(cmdline), _) => cmdline,
        (None, Some(path)) => fs::read_to_string(path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim_end()
            .to_owned(),
        (None, None) => unreachable!("clap requires --cmdline or --cmdline-file"),
    };
    let mut input = PackInput::new(
        args.image,
        args.kernel,
        args.initrd,
        cmdline,
        args.version,
        args.label,
        &key,
    );
    input.expected_id = args.id;
    if let Some(arch) = args.arch {
        input.arch = arch;
    }
    input.level = args.level;
    if let Some(threads) = args.threads {
        input.threads = threads;
    }

    let signed = pack(&input, &args.out, progress::for_stderr().as_ref())
        .with_context(|| format!("packing into {}", args.out.display()))?;
    let meta = signed.meta();
    println!("version {}", meta.version);
    println!("id {}", meta.id);
    println!("arch {}", meta.arch);
    println!("objects in {}:", args.out.display());
    for name in meta.object_names() {
        println!("  {name}");
    }
    Ok(ExitCode::SUCCESS)
}
