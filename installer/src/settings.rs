//! The command line and the config file (docs/cli.md), merged into one
//! [`abnix_installer::install::Request`].
//!
//! The config file has the same settings as the flags, keys spelled with
//! `_` for `-`; a flag overrides the file's value, `--trusted-key` adds to
//! the file's keys, and a target given by flags (`--disk`, `--file`,
//! `--auto`) replaces the file's, with its `size` (`--file` alone keeps the
//! file's `size`). Both are parsed strictly: an unknown key or a bad value
//! is an error naming the flag or the file and key, and the file is checked
//! on its own first (a `size` with a `disk` or `auto` target in the file is
//! an error whatever the flags).

use std::fmt;
use std::path::{Path, PathBuf};

use abnix_core::boot::Bootloader;
use abnix_core::boot::BootloaderSetup;
use abnix_core::units::parse_size;
use abnix_formats::layout::{Arch, LayoutConfig};
use abnix_formats::sign::{PublicKey, TrustedKeys};
use abnix_installer::install::{Request, TargetRequest};
use serde::Deserialize;

/// Debian's GRUB and systemd-boot (grub-common, grub-pc-bin,
/// grub-efi-amd64-bin or grub-efi-arm64-bin, systemd-boot-efi), where the
/// target architecture's files are; Nix passes its own paths.
const DEFAULT_GRUB_MKIMAGE: &str = "grub-mkimage";
const DEFAULT_GRUB_BIOS_DIR: &str = "/usr/lib/grub/i386-pc";
const DEBIAN_GRUB_LIB_DIR: &str = "/usr/lib/grub";
const DEBIAN_SYSTEMD_BOOT_DIR: &str = "/usr/lib/systemd/boot/efi";
const DEFAULT_ESP_SIZE: &str = "512M";

/// Debian's GRUB module directory for `arch`'s EFI platform.
fn default_grub_efi_dir(arch: Arch) -> PathBuf {
    Path::new(DEBIAN_GRUB_LIB_DIR).join(arch.grub_efi_platform())
}

/// Debian's systemd-boot for `arch` (`systemd-bootx64.efi`, `systemd-bootaa64.efi`).
fn default_systemd_boot_efi(arch: Arch) -> PathBuf {
    Path::new(DEBIAN_SYSTEMD_BOOT_DIR).join(format!(
        "systemd-boot{}.efi",
        arch.uefi_name().to_ascii_lowercase()
    ))
}

/// Every setting of `abnix-install`, declared once (docs/cli.md): clap
/// reads it from the flags and serde from the config file, whose keys are
/// the field names (`slot_size` for `--slot-size`); [`Settings::merge`]
/// fills the file's values in where a flag is absent. Values stay text
/// here so that a bad one is reported naming the flag or the file and key.
#[derive(Debug, Default, clap::Parser, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[command(
    name = "abnix-install",
    version,
    about = "Install a signed abnix version onto a disk or into a disk-image file",
    after_help = "Exit status: 0 installed; 1 nothing written (bad input, target refused); \
                  3 failed while writing (the partition table was wiped)."
)]
pub struct Args {
    /// The bundle directory (one signed version).
    #[arg(long, value_name = "DIR")]
    pub bundle: Option<PathBuf>,
    /// Install onto this whole disk.
    #[arg(long, value_name = "DEV")]
    pub disk: Option<PathBuf>,
    /// Install into this disk-image file (created or extended, sparse).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Size of the --file image (K, M, G, T suffixes or bytes).
    #[arg(long, value_name = "SIZE")]
    pub size: Option<String>,
    /// Install onto the first eligible disk.
    #[arg(long)]
    pub auto: bool,
    /// A TOML file with the same settings (keys with `_` for `-`).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Size of each OS slot.
    #[arg(long, value_name = "SIZE")]
    pub slot_size: Option<String>,
    /// Size of the ESP [default: 512M].
    #[arg(long, value_name = "SIZE")]
    pub esp_size: Option<String>,
    /// The machines' architecture, x86_64 or aarch64: the slots' partition type, the EFI binaries [default: this program's].
    #[arg(long, value_name = "ARCH")]
    pub arch: Option<String>,
    /// grub (BIOS and UEFI; UEFI only on aarch64) or systemd-boot (UEFI) [default: grub].
    #[arg(long, value_name = "NAME")]
    pub bootloader: Option<String>,
    /// Erase a target that is not provably blank, an earlier abnix installation included.
    #[arg(long)]
    pub wipe: bool,
    /// Let --auto choose removable disks.
    #[arg(long)]
    pub allow_removable: bool,
    /// A public key (name:base64) the bundle may be signed with; repeatable.
    #[arg(long, value_name = "KEY")]
    pub trusted_key: Vec<String>,
    /// A file of public keys, one per line (# starts a comment).
    #[arg(long, value_name = "FILE")]
    pub trusted_keys_file: Option<PathBuf>,
    /// grub-mkimage to build GRUB's images with [default: grub-mkimage].
    #[arg(long, value_name = "PATH")]
    pub grub_mkimage: Option<PathBuf>,
    /// GRUB's i386-pc module directory, x86_64 only [default: /usr/lib/grub/i386-pc on x86_64].
    #[arg(long, value_name = "DIR")]
    pub grub_bios_dir: Option<PathBuf>,
    /// GRUB's x86_64-efi or arm64-efi module directory [default: /usr/lib/grub/x86_64-efi or arm64-efi].
    #[arg(long, value_name = "DIR")]
    pub grub_efi_dir: Option<PathBuf>,
    /// systemd-boot's EFI binary [default: /usr/lib/systemd/boot/efi/systemd-bootx64.efi or -bootaa64.efi].
    #[arg(long, value_name = "FILE")]
    pub systemd_boot_efi: Option<PathBuf>,
    /// 64 hex digits: GPT GUIDs and filesystem ids derive from it [default: random].
    #[arg(long, value_name = "HEX")]
    pub seed: Option<String>,
    /// Show what will happen and wait this many seconds before writing [default: 0].
    #[arg(long, value_name = "SECS")]
    pub countdown: Option<u64>,
    /// Power the machine off after a successful installation.
    #[arg(long)]
    pub poweroff: bool,
    /// Print the plan as JSON on stdout (the summary then goes to stderr).
    #[arg(long)]
    #[serde(skip)]
    pub json: bool,
    /// Write the man page and shell completions into DIR (for packagers).
    #[arg(long, value_name = "DIR", hide = true, exclusive = true)]
    #[serde(skip)]
    pub generate_docs: Option<PathBuf>,
}

/// Where a value came from, for errors.
#[derive(Debug, Clone)]
enum Origin {
    Flag(&'static str),
    File(PathBuf, &'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(key) => write!(f, "--{}", key.replace('_', "-")),
            Origin::File(path, key) => write!(f, "{}: `{key}`", path.display()),
        }
    }
}

/// A settings error: what is wrong, naming the flag or the file and key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    #[error("{origin}: {reason}")]
    Invalid { origin: String, reason: String },
    #[error("{0}")]
    Missing(String),
}

fn invalid(origin: &Origin, reason: impl fmt::Display) -> SettingsError {
    SettingsError::Invalid {
        origin: origin.to_string(),
        reason: reason.to_string(),
    }
}

/// What the binary does: the request for the core, and its own settings.
#[derive(Debug)]
pub struct Settings {
    pub request: Request,
    pub countdown: u64,
    pub poweroff: bool,
}

/// Picks the flag's value over the file's, remembering which it was.
struct Merge<'a> {
    path: &'a Path,
}

impl Merge<'_> {
    fn pick<T>(&self, key: &'static str, flag: Option<T>, file: Option<T>) -> Option<(T, Origin)> {
        match (flag, file) {
            (Some(v), _) => Some((v, Origin::Flag(key))),
            (None, Some(v)) => Some((v, Origin::File(self.path.to_owned(), key))),
            (None, None) => None,
        }
    }

    fn size(
        &self,
        key: &'static str,
        flag: Option<String>,
        file: Option<String>,
    ) -> Result<Option<u64>, SettingsError> {
        self.pick(key, flag, file)
            .map(|(text, origin)| parse_size(&text).map_err(|e| invalid(&origin, e)))
            .transpose()
    }
}

/// The target given by one source: at most one of disk, file, auto.
fn target_of(
    origin: impl Fn(&'static str) -> Origin,
    disk: Option<PathBuf>,
    file: Option<PathBuf>,
    auto: bool,
) -> Result<Option<(TargetKind, Origin)>, SettingsError> {
    let mut given = Vec::new();
    if let Some(disk) = disk {
        given.push((TargetKind::Disk(disk), origin("disk")));
    }
    if let Some(file) = file {
        given.push((TargetKind::File(file), origin("file")));
    }
    if auto {
        given.push((TargetKind::Auto, origin("auto")));
    }
    if given.len() > 1 {
        let names: Vec<String> = given.iter().map(|(_, o)| o.to_string()).collect();
        return Err(SettingsError::Missing(format!(
            "{} exclude each other: give one target",
            names.join(", ")
        )));
    }
    Ok(given.pop())
}

enum TargetKind {
    Disk(PathBuf),
    File(PathBuf),
    Auto,
}

/// Public keys, one per line, `#` comments and blank lines skipped.
fn keys_from_file(path: &Path, keys: &mut TrustedKeys) -> Result<(), SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: path.to_owned(),
        source,
    })?;
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let key = PublicKey::parse(line).map_err(|e| SettingsError::Invalid {
            origin: format!("{} line {}", path.display(), i + 1),
            reason: e.to_string(),
        })?;
        keys.insert(key);
    }
    Ok(())
}

fn parse_seed(text: &str, origin: &Origin) -> Result<[u8; 32], SettingsError> {
    let bytes = hex::decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| invalid(origin, format!("{text:?} is not 64 hex digits")))?;
    Ok(bytes.try_into().expect("32 bytes"))
}

impl Settings {
    /// Reads `--config` if given and merges it with the flags.
    pub fn from_args(args: Args) -> Result<Settings, SettingsError> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
                    path: path.clone(),
                    source,
                })?;
                Some((path.clone(), text))
            }
            None => None,
        };
        Settings::merge(args, file.as_ref().map(|(p, t)| (p.as_path(), t.as_str())))
    }

    /// Merges the flags with a config file's `(path, text)`.
    pub fn merge(flags: Args, config: Option<(&Path, &str)>) -> Result<Settings, SettingsError> {
        let (path, file) = match config {
            Some((path, text)) => {
                let file: Args = toml::from_str(text).map_err(|e| SettingsError::Syntax {
                    path: path.to_owned(),
                    message: e.message().to_owned()
                        + &e.span()
                            .map(|s| format!(" (at byte {})", s.start))
                            .unwrap_or_default(),
                })?;
                (path.to_owned(), file)
            }
            None => (PathBuf::new(), Args::default()),
        };
        let m = Merge { path: &path };
        // A setting's value from the flag, else from the file, with where it
        // came from. The key is the field's own name, so the name an error
        // gives is the flag's and the file's key alike.
        macro_rules! pick {
            ($key:ident) => {
                m.pick(stringify!($key), flags.$key, file.$key)
            };
            (size $key:ident) => {
                m.size(stringify!($key), flags.$key, file.$key)
            };
        }

        let (bundle, _) = pick!(bundle)
            .ok_or_else(|| SettingsError::Missing("no bundle: pass --bundle DIR".into()))?;

        let flag_target = target_of(Origin::Flag, flags.disk, flags.file, flags.auto)?;
        let file_target = target_of(
            |key| Origin::File(path.clone(), key),
            file.disk,
            file.file,
            file.auto,
        )?;
        // The file's own target and size must agree, whatever the flags: a
        // `size` goes with a `file` target or none.
        let file_size_origin = Origin::File(path.clone(), "size");
        let file_size = match (&file_target, file.size) {
            (_, None) => None,
            (Some((TargetKind::Disk(_) | TargetKind::Auto, _)), Some(_)) => {
                return Err(invalid(&file_size_origin, "only goes with --file"))
            }
            (_, Some(text)) => Some(parse_size(&text).map_err(|e| invalid(&file_size_origin, e))?),
        };
        let flag_size = flags
            .size
            .map(|text| parse_size(&text).map_err(|e| invalid(&Origin::Flag("size"), e)))
            .transpose()?;
        // The file's `size` goes with the file's target, so a flag target
        // replacing it drops it too, except that `--file` alone keeps it.
        let keeps_file_size = match &flag_target {
            None => true,
            Some((kind, _)) => matches!(kind, TargetKind::File(_)),
        };
        let size = m.pick("size", flag_size, file_size.filter(|_| keeps_file_size));
        let target = match (flag_target.or(file_target), size) {
            (None, _) => {
                return Err(SettingsError::Missing(
                    "no target: pass --disk DEV, --file PATH --size SIZE or --auto".into(),
                ))
            }
            (Some((TargetKind::File(file), _)), Some((size, _))) => {
                TargetRequest::File { path: file, size }
            }
            (Some((TargetKind::File(_), origin)), None) => {
                return Err(invalid(&origin, "needs a size (--size SIZE)"))
            }
            (Some((_, _)), Some((_, origin))) => {
                return Err(invalid(&origin, "only goes with --file"))
            }
            (Some((TargetKind::Disk(disk), _)), None) => TargetRequest::Disk(disk),
            (Some((TargetKind::Auto, _)), None) => TargetRequest::Auto,
        };

        let slot_size = pick!(size slot_size)?
            .ok_or_else(|| SettingsError::Missing("no slot size: pass --slot-size SIZE".into()))?;
        let esp_size =
            pick!(size esp_size)?.unwrap_or(parse_size(DEFAULT_ESP_SIZE).expect("a valid default"));
        let arch = match pick!(arch) {
            Some((name, origin)) => name.parse::<Arch>().map_err(|e| invalid(&origin, e))?,
            None => Arch::native(),
        };
        let layout = LayoutConfig {
            slot_size,
            esp_size,
            arch,
            ..LayoutConfig::new(slot_size)
        };

        let bootloader = match pick!(bootloader) {
            Some((name, origin)) => name
                .parse::<Bootloader>()
                .map_err(|e| invalid(&origin, e))?,
            None => Bootloader::Grub,
        };
        let bootloader = match bootloader {
            Bootloader::Grub => BootloaderSetup::Grub {
                mkimage: pick!(grub_mkimage)
                    .map_or_else(|| DEFAULT_GRUB_MKIMAGE.into(), |(p, _)| p),
                // BIOS boot code exists for x86 only: elsewhere (aarch64)
                // GRUB is installed for UEFI alone, and a BIOS directory
                // given there is refused by the core.
                bios_dir: pick!(grub_bios_dir)
                    .map(|(p, _)| p)
                    .or_else(|| arch.has_bios().then(|| DEFAULT_GRUB_BIOS_DIR.into())),
                efi_dir: pick!(grub_efi_dir).map_or_else(|| default_grub_efi_dir(arch), |(p, _)| p),
            },
            Bootloader::SystemdBoot => BootloaderSetup::SystemdBoot {
                efi: pick!(systemd_boot_efi)
                    .map_or_else(|| default_systemd_boot_efi(arch), |(p, _)| p),
            },
        };

        // Keys add up: the file's, the flags', a keys file's.
        let mut trusted_keys = TrustedKeys::new();
        for (i, text) in file.trusted_key.iter().enumerate() {
            let key = PublicKey::parse(text).map_err(|e| SettingsError::Invalid {
                origin: format!("{}: `trusted_key`[{i}]", path.display()),
                reason: e.to_string(),
            })?;
            trusted_keys.insert(key);
        }
        for text in &flags.trusted_key {
            let key =
                PublicKey::parse(text).map_err(|e| invalid(&Origin::Flag("trusted_key"), e))?;
            trusted_keys.insert(key);
        }
        if let Some((keys_file, _)) = pick!(trusted_keys_file) {
            keys_from_file(&keys_file, &mut trusted_keys)?;
        }

        let seed = pick!(seed)
            .map(|(text, origin)| parse_seed(&text, &origin))
            .transpose()?;

        // A switch is on if the flag or the file turns it on.
        Ok(Settings {
            request: Request {
                bundle,
                trusted_keys,
                target,
                layout,
                bootloader,
                wipe: flags.wipe || file.wipe,
                allow_removable: flags.allow_removable || file.allow_removable,
                seed,
            },
            countdown: pick!(countdown).map_or(0, |(n, _)| n),
            poweroff: flags.poweroff || file.poweroff,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const NIX_CONFIG: &str = include_str!("../../nix/testdata/install.toml");
    const NIX_SYSTEMD_BOOT_CONFIG: &str =
        include_str!("../../nix/testdata/install-systemd-boot.toml");
    const NIX_AARCH64_GRUB_CONFIG: &str = include_str!("../../nix/testdata/install-aarch64.toml");
    const KEY: &str = "abnix-test:tpREIUigjfOYfBehsogk4+ZDL7tjppLJU1UUyeJpkdc=";

    fn args(flags: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("abnix-install").chain(flags.iter().copied())).unwrap()
    }

    fn merge(flags: &[&str], config: Option<&str>) -> Result<Settings, SettingsError> {
        Settings::merge(
            args(flags),
            config.map(|text| (Path::new("install.toml"), text)),
        )
    }

    fn error(flags: &[&str], config: Option<&str>) -> String {
        merge(flags, config).unwrap_err().to_string()
    }

    /// The file the Nix side writes for the installer ISO, with the flags
    /// the ISO's service adds.
    #[test]
    fn the_nix_generated_config_parses() {
        let settings = merge(&["--auto", "--poweroff"], Some(NIX_CONFIG)).unwrap();
        let r = &settings.request;
        assert_eq!(r.bundle, Path::new("/iso/abnix/bundle"));
        assert_eq!(r.target, TargetRequest::Auto);
        assert_eq!(r.layout.arch, Arch::X86_64);
        assert_eq!(r.layout.slot_size, 4 << 30);
        assert_eq!(r.layout.esp_size, 512 << 20);
        let nix = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-grub-2.12";
        assert_eq!(
            r.bootloader,
            BootloaderSetup::Grub {
                mkimage: format!("{nix}/bin/grub-mkimage").into(),
                bios_dir: Some(format!("{nix}/lib/grub/i386-pc").into()),
                efi_dir: format!("{nix}/lib/grub/x86_64-efi").into(),
            }
        );
        assert!(!r.wipe && !r.allow_removable);
        assert_eq!(r.trusted_keys.len(), 1);
        assert_eq!(r.trusted_keys.iter().next().unwrap().to_string(), KEY);
        assert_eq!(r.seed, None);
        assert_eq!((settings.countdown, settings.poweroff), (10, true));
    }

    /// The file the Nix side writes for a systemd-boot host: its EFI binary
    /// from the store, not the default path, and the switches it turns on.
    #[test]
    fn the_nix_generated_systemd_boot_config_parses() {
        let settings = merge(&["--auto", "--poweroff"], Some(NIX_SYSTEMD_BOOT_CONFIG)).unwrap();
        let r = &settings.request;
        assert_eq!(r.bundle, Path::new("/iso/abnix/bundle"));
        assert_eq!(r.target, TargetRequest::Auto);
        assert_eq!(r.layout.slot_size, 2 << 30);
        assert_eq!(r.layout.esp_size, 256 << 20);
        assert_eq!(r.layout.arch, Arch::Aarch64);
        assert_eq!(
            r.bootloader,
            BootloaderSetup::SystemdBoot {
                efi: "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-systemd-257.9/lib/systemd/boot/efi/systemd-bootaa64.efi".into()
            }
        );
        assert!(r.wipe && r.allow_removable);
        assert_eq!(r.trusted_keys.len(), 2);
        assert_eq!((settings.countdown, settings.poweroff), (0, true));
    }

    /// The file the Nix side writes for an aarch64 host with GRUB, as the
    /// template build of an x86_64 machine reads it: the arch from the file,
    /// not this program's, and GRUB for UEFI only, from arm64-efi modules.
    #[test]
    fn the_nix_generated_aarch64_grub_config_parses() {
        let settings = merge(
            &["--file", "/build/disk.raw", "--size", "9G"],
            Some(NIX_AARCH64_GRUB_CONFIG),
        )
        .unwrap();
        let r = &settings.request;
        assert_eq!(r.layout.arch, Arch::Aarch64);
        let nix = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-grub-2.12";
        assert_eq!(
            r.bootloader,
            BootloaderSetup::Grub {
                mkimage:
                    "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-grub-x86_64-2.12/bin/grub-mkimage"
                        .into(),
                bios_dir: None,
                efi_dir: format!("{nix}/lib/grub/arm64-efi").into(),
            }
        );
        assert!(!r.bootloader.bios_boot());
    }

    /// --arch picks Debian's files for the architecture; the flag overrides
    /// the file's key; an unknown name is refused naming where it came from.
    #[test]
    fn the_architecture_picks_the_default_bootloader_files() {
        let base = ["--bundle", "b", "--slot-size", "1G", "--auto"];
        let with = |extra: &[&str]| merge(&[&base[..], extra].concat(), None);
        let grub = with(&["--arch", "aarch64"]).unwrap().request;
        assert_eq!(grub.layout.arch, Arch::Aarch64);
        assert_eq!(
            grub.bootloader,
            BootloaderSetup::Grub {
                mkimage: DEFAULT_GRUB_MKIMAGE.into(),
                bios_dir: None,
                efi_dir: "/usr/lib/grub/arm64-efi".into(),
            }
        );
        let grub = with(&["--arch", "x86_64"]).unwrap().request;
        assert_eq!(
            grub.bootloader,
            BootloaderSetup::Grub {
                mkimage: DEFAULT_GRUB_MKIMAGE.into(),
                bios_dir: Some("/usr/lib/grub/i386-pc".into()),
                efi_dir: "/usr/lib/grub/x86_64-efi".into(),
            }
        );
        for (arch, file) in [
            ("x86_64", "systemd-bootx64.efi"),
            ("aarch64", "systemd-bootaa64.efi"),
        ] {
            let request = with(&["--arch", arch, "--bootloader", "systemd-boot"])
                .unwrap()
                .request;
            assert_eq!(
                request.bootloader,
                BootloaderSetup::SystemdBoot {
                    efi: Path::new("/usr/lib/systemd/boot/efi").join(file)
                }
            );
        }

        let file = "bundle = \"b\"\nslot_size = \"1G\"\nauto = true\narch = \"aarch64\"\n";
        let from_file = merge(&[], Some(file)).unwrap().request;
        assert_eq!(from_file.layout.arch, Arch::Aarch64);
        let flag_wins = merge(&["--arch", "x86_64"], Some(file)).unwrap().request;
        assert_eq!(flag_wins.layout.arch, Arch::X86_64);

        assert_eq!(
            with(&["--arch", "arm64"]).unwrap_err().to_string(),
            "--arch: unknown architecture \"arm64\" (expected \"x86_64\" or \"aarch64\")"
        );
        assert_eq!(
            error(&[], Some(&file.replace("aarch64", "riscv64"))),
            "install.toml: `arch`: unknown architecture \"riscv64\" (expected \"x86_64\" or \"aarch64\")"
        );
    }

    /// The template build: the same file, a file target and a seed.
    #[test]
    fn flags_override_the_file() {
        let seed = "ab".repeat(32);
        let settings = merge(
            &[
                "--file",
                "/out/disk.raw",
                "--size",
                "6G",
                "--seed",
                &seed,
                "--slot-size",
                "2G",
                "--countdown",
                "0",
                "--bootloader",
                "systemd-boot",
                "--wipe",
            ],
            Some(NIX_CONFIG),
        )
        .unwrap();
        let r = &settings.request;
        assert_eq!(
            r.target,
            TargetRequest::File {
                path: "/out/disk.raw".into(),
                size: 6 << 30
            }
        );
        assert_eq!(r.seed, Some([0xab; 32]));
        assert_eq!(r.layout.slot_size, 2 << 30);
        assert_eq!(
            r.bootloader,
            BootloaderSetup::SystemdBoot {
                efi: default_systemd_boot_efi(Arch::native())
            }
        );
        assert!(r.wipe);
        assert_eq!(settings.countdown, 0);
        assert!(!settings.poweroff);
    }

    #[test]
    fn flags_alone_with_defaults() {
        let settings = merge(
            &[
                "--bundle",
                "b",
                "--disk",
                "/dev/vda",
                "--slot-size",
                "1G",
                "--trusted-key",
                KEY,
            ],
            None,
        )
        .unwrap();
        let r = &settings.request;
        assert_eq!(r.target, TargetRequest::Disk("/dev/vda".into()));
        assert_eq!(r.layout.esp_size, 512 << 20);
        assert_eq!(r.layout.arch, Arch::native());
        assert_eq!(r.bootloader.kind(), Bootloader::Grub);
        assert_eq!(r.bootloader.bios_boot(), Arch::native() == Arch::X86_64);
        assert_eq!(settings.countdown, 0);
    }

    #[test]
    fn keys_add_up_from_the_file_the_flags_and_a_keys_file() {
        let tmp = tempfile::tempdir().unwrap();
        let keys_file = tmp.path().join("keys");
        let other = abnix_formats::sign::SecretKey::generate("other")
            .unwrap()
            .public();
        let third = abnix_formats::sign::SecretKey::generate("third")
            .unwrap()
            .public();
        std::fs::write(&keys_file, format!("# fleet keys\n\n{other}  # current\n")).unwrap();
        let settings = merge(
            &[
                "--auto",
                "--trusted-key",
                &third.to_string(),
                "--trusted-keys-file",
                keys_file.to_str().unwrap(),
            ],
            Some(NIX_CONFIG),
        )
        .unwrap();
        assert_eq!(settings.request.trusted_keys.len(), 3);

        std::fs::write(&keys_file, "one:two\n").unwrap();
        let err = error(
            &["--auto", "--trusted-keys-file", keys_file.to_str().unwrap()],
            Some(NIX_CONFIG),
        );
        assert!(
            err.starts_with(&format!("{} line 1: ", keys_file.display())),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_flag_or_the_key() {
        fn with<'a>(extra: &[&'a str]) -> Vec<&'a str> {
            [&["--bundle", "b", "--slot-size", "1G"][..], extra].concat()
        }
        assert_eq!(
            error(&with(&["--auto", "--disk", "/dev/vda"]), None),
            "--disk, --auto exclude each other: give one target"
        );
        assert_eq!(
            error(&with(&["--file", "x.img"]), None),
            "--file: needs a size (--size SIZE)"
        );
        assert_eq!(
            error(&with(&["--auto", "--size", "1G"]), None),
            "--size: only goes with --file"
        );
        assert_eq!(
            error(&with(&["--auto", "--esp-size", "lots"]), None),
            "--esp-size: not a size: \"lots\" (expected a number with an optional K, M, G or T suffix)"
        );
        assert_eq!(
            error(&with(&["--auto", "--bootloader", "lilo"]), None),
            "--bootloader: unknown bootloader \"lilo\" (expected \"grub\" or \"systemd-boot\")"
        );
        assert_eq!(
            error(&with(&["--auto", "--seed", "abc"]), None),
            "--seed: \"abc\" is not 64 hex digits"
        );
        assert!(
            error(&with(&["--auto", "--trusted-key", "nope"]), None).starts_with("--trusted-key: ")
        );
        assert_eq!(error(&["--auto"], None), "no bundle: pass --bundle DIR");
        assert_eq!(
            error(&["--bundle", "b"], None),
            "no target: pass --disk DEV, --file PATH --size SIZE or --auto"
        );
        assert_eq!(
            error(&["--bundle", "b", "--auto"], None),
            "no slot size: pass --slot-size SIZE"
        );

        // The same mistakes in the file name the file and the key.
        assert_eq!(
            error(&["--auto"], Some("bundle = \"b\"\nslot_size = \"4X\"\n")),
            "install.toml: `slot_size`: not a size: \"4X\" (expected a number with an optional K, M, G or T suffix)"
        );
        assert_eq!(
            error(
                &[],
                Some("bundle = \"b\"\nslot_size = \"4G\"\ndisk = \"/dev/sda\"\nauto = true\n")
            ),
            "install.toml: `disk`, install.toml: `auto` exclude each other: give one target"
        );
        let key = error(
            &["--auto"],
            Some("bundle = \"b\"\nslot_size = \"4G\"\ntrusted_key = [\"x\"]\n"),
        );
        assert!(key.starts_with("install.toml: `trusted_key`[0]: "), "{key}");
        let unknown = error(&["--auto"], Some("bundle = \"b\"\nslot-size = \"4G\"\n"));
        assert!(
            unknown.starts_with("install.toml: unknown field `slot-size`"),
            "{unknown}"
        );
        let wrong_type = error(&["--auto"], Some("bundle = \"b\"\nwipe = \"yes\"\n"));
        assert!(
            wrong_type.starts_with("install.toml: invalid type"),
            "{wrong_type}"
        );
    }

    /// `config` is a flag only: a file naming another file is refused, as
    /// any unknown key is.
    #[test]
    fn the_file_has_no_config_key() {
        let nested = error(
            &["--auto"],
            Some("bundle = \"b\"\nconfig = \"other.toml\"\n"),
        );
        assert!(
            nested.starts_with("install.toml: unknown field `config`"),
            "{nested}"
        );
    }

    /// A file whose target and size disagree is refused whatever the flags
    /// replace, naming the file and key: the same file would be refused
    /// without them.
    #[test]
    fn the_file_target_and_size_are_checked_on_their_own() {
        let with_disk = "bundle = \"b\"\nslot_size = \"4G\"\ndisk = \"/dev/sda\"\nsize = \"8G\"\n";
        let with_auto = "bundle = \"b\"\nslot_size = \"4G\"\nauto = true\nsize = \"8G\"\n";
        for config in [with_disk, with_auto] {
            for flags in [
                &[][..],
                &["--disk", "/dev/vdb"],
                &["--auto"],
                &["--file", "u.img"],
                &["--file", "u.img", "--size", "2G"],
            ] {
                assert_eq!(
                    error(flags, Some(config)),
                    "install.toml: `size`: only goes with --file",
                    "{flags:?} over {config:?}"
                );
            }
        }
        // A size that is not one, even where a flag would replace it.
        let bad_size = "bundle = \"b\"\nslot_size = \"4G\"\nfile = \"t.img\"\nsize = \"lots\"\n";
        assert!(error(&["--disk", "/dev/vdb"], Some(bad_size))
            .starts_with("install.toml: `size`: not a size: \"lots\""));
        // A size on its own in the file goes with a --file flag.
        let size_only = "bundle = \"b\"\nslot_size = \"4G\"\nsize = \"8G\"\n";
        assert_eq!(
            merge(&["--file", "u.img"], Some(size_only))
                .unwrap()
                .request
                .target,
            TargetRequest::File {
                path: "u.img".into(),
                size: 8 << 30
            }
        );
    }

    /// A target in the file is replaced by one on the command line.
    #[test]
    fn a_flag_target_replaces_the_file_target() {
        let config = "bundle = \"b\"\nslot_size = \"4G\"\nfile = \"t.img\"\nsize = \"8G\"\n";
        assert_eq!(
            merge(&[], Some(config)).unwrap().request.target,
            TargetRequest::File {
                path: "t.img".into(),
                size: 8 << 30
            }
        );
        assert_eq!(
            merge(&["--disk", "/dev/vda"], Some(config))
                .unwrap()
                .request
                .target,
            TargetRequest::Disk("/dev/vda".into())
        );
        assert_eq!(
            merge(&["--auto"], Some(config)).unwrap().request.target,
            TargetRequest::Auto
        );
        assert_eq!(
            error(&["--disk", "/dev/vda", "--size", "8G"], Some(config)),
            "--size: only goes with --file"
        );
        // A size in the file with the file's own disk target is a mistake.
        assert_eq!(
            error(
                &[],
                Some("bundle = \"b\"\nslot_size = \"4G\"\ndisk = \"/dev/sda\"\nsize = \"8G\"\n")
            ),
            "install.toml: `size`: only goes with --file"
        );
        assert_eq!(
            merge(&["--file", "u.img"], Some(config))
                .unwrap()
                .request
                .target,
            TargetRequest::File {
                path: "u.img".into(),
                size: 8 << 30
            }
        );
        assert_eq!(
            merge(&["--file", "u.img", "--size", "2G"], Some(config))
                .unwrap()
                .request
                .target,
            TargetRequest::File {
                path: "u.img".into(),
                size: 2 << 30
            }
        );
    }
}
