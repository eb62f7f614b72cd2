//! abnix-install as a program, against disk-image files: a template built
//! by an unprivileged user (the Nix build sandbox), the config file with
//! flags, and the exit status telling "nothing written" from "the write
//! failed and the table was wiped".
//!
//! These run the real mkfs.ext4, debugfs, grub-mkimage and setpriv
//! (e2fsprogs, grub-pc-bin, grub-efi-amd64-bin, grub-efi-arm64-bin,
//! util-linux); the unprivileged tests need root to drop to `nobody`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use abnix_core::boot::efi::pe_machine;
use abnix_core::boot::{esp, SlotState};
use abnix_core::pack::{pack, PackInput};
use abnix_core::progress::NoProgress;
use abnix_core::rwfs;
use abnix_core::system_disk::SystemDisk;
use abnix_formats::fat::FatFs;
use abnix_formats::gpt::Gpt;
use abnix_formats::index::Index;
use abnix_formats::layout::Arch;
use abnix_formats::sign::SecretKey;
use abnix_formats::slot::Slot;

const BIN: &str = env!("CARGO_BIN_EXE_abnix-install");
const UUID: &str = "6a1d3c9e-2b4f-4c8a-9e17-0d5b3f2a7c61";

/// A signed bundle of a small ext4 image, in a world-readable directory.
struct Fixture {
    dir: tempfile::TempDir,
    key: String,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture::for_arch(Arch::X86_64)
    }

    /// A bundle of a version for `arch` machines.
    fn for_arch(arch: Arch) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        // Readable and writable by the unprivileged user of the sandbox test.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(tree.join("etc")).unwrap();
        fs::write(tree.join("etc/os-release"), "ID=abnix-test\n").unwrap();
        let image = dir.path().join("root.ext4");
        fs::File::create(&image).unwrap().set_len(4 << 20).unwrap();
        run_ok(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-U", UUID, "-d"])
                .arg(&tree)
                .arg(&image),
        );
        let kernel = dir.path().join("kernel");
        let initrd = dir.path().join("initrd");
        fs::write(&kernel, b"MZ kernel stand-in".repeat(100)).unwrap();
        fs::write(&initrd, b"070701 initrd stand-in".repeat(100)).unwrap();
        let secret = SecretKey::generate("cli-test").unwrap();
        let mut input = PackInput::new(&image, &kernel, &initrd, "quiet", 3, "cli test", &secret);
        input.arch = arch;
        pack(&input, &dir.path().join("bundle"), &NoProgress).unwrap();
        make_world_readable(&dir.path().join("bundle"));
        Fixture {
            key: secret.public().to_string(),
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Flags for a 192 MiB image file `name`.
    fn flags(&self, name: &str) -> Vec<String> {
        [
            "--bundle",
            self.path("bundle").to_str().unwrap(),
            "--file",
            self.path(name).to_str().unwrap(),
            "--size",
            "192M",
            "--slot-size",
            "16M",
            "--esp-size",
            "40M",
            "--trusted-key",
            &self.key,
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

fn make_world_readable(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    for entry in fs::read_dir(dir).unwrap() {
        fs::set_permissions(entry.unwrap().path(), fs::Permissions::from_mode(0o644)).unwrap();
    }
}

fn run_ok(command: &mut Command) -> Output {
    let out = command.output().expect("starting the command");
    assert!(
        out.status.success(),
        "{command:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn install(args: &[String]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// The disk boots slot A, good, with version 3; abnix-rw's directories are
/// root's.
fn check_disk(path: &Path) {
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut disk = SystemDisk::open(file, 512).unwrap();
    let status = disk.boot_control().unwrap().status().unwrap();
    assert_eq!(status.next, Some(Slot::A));
    assert_eq!(status.slot(Slot::A).state, SlotState::Good);
    assert_eq!(status.slot(Slot::A).info.as_ref().unwrap().version, 3);
    let rw = disk.layout().rw.start;
    let listing = run_ok(
        Command::new("debugfs")
            .args(["-R", "ls -l"])
            .arg(rwfs::at_offset(path, rw)),
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    for dir in ["var", "home", "root"] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" {dir}")))
            .unwrap_or_else(|| panic!("{dir} in {listing}"));
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            (fields[3], fields[4]),
            ("0", "0"),
            "{dir} owned by root: {line}"
        );
    }
}

/// What a Nix build sandbox does: no root, no loop device, a fixed seed.
/// The same seed twice gives the same partition table.
#[test]
fn an_unprivileged_user_builds_a_bootable_template() {
    let f = Fixture::new();
    let seed = "5e".repeat(32);
    for name in ["template.raw", "again.raw"] {
        let mut args = f.flags(name);
        args.extend(["--seed".to_owned(), seed.clone()]);
        let out = run_ok(
            Command::new("setpriv")
                .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
                .arg(BIN)
                .args(&args),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.starts_with("installed version 3 \"cli test\""),
            "{stdout}"
        );
        use std::os::unix::fs::MetadataExt;
        assert_eq!(fs::metadata(f.path(name)).unwrap().uid(), 65534);
        check_disk(&f.path(name));
    }
    let table = |name: &str| Gpt::read(&mut fs::File::open(f.path(name)).unwrap(), 512).unwrap();
    assert_eq!(table("template.raw"), table("again.raw"));
}

/// The template of an aarch64 host, built on this x86_64 machine as Nix's
/// cross build does: `--arch aarch64` alone picks Debian's arm64-efi GRUB,
/// and the disk gets aarch64's root type and `EFI/BOOT/BOOTAA64.EFI`.
#[test]
fn an_aarch64_template_is_built_on_an_x86_64_machine() {
    let f = Fixture::for_arch(Arch::Aarch64);
    let mut args = f.flags("aarch64.raw");
    args.extend(["--arch", "aarch64"].map(str::to_owned));
    let out = run_ok(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(BIN)
            .args(&args),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bootloader: grub (UEFI) for aarch64"),
        "{stderr}"
    );
    assert!(stderr.contains("abnix-bios stays empty"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("bootloader: grub (UEFI) for aarch64;"),
        "{stdout}"
    );

    let path = f.path("aarch64.raw");
    check_disk(&path);
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut disk = SystemDisk::open(file, 512).unwrap();
    assert_eq!(disk.layout().slot_a.type_guid, Arch::Aarch64.root_type());
    assert_eq!(disk.layout().slot_b.type_guid, Arch::Aarch64.root_type());
    let mut esp_fs = FatFs::open(disk.esp()).unwrap();
    let efi = esp_fs.read_file(&esp::efi_boot(Arch::Aarch64)).unwrap();
    assert_eq!(pe_machine(&efi), Some(Arch::Aarch64.pe_machine()));
    assert!(!esp_fs.exists(&esp::efi_boot(Arch::X86_64)).unwrap());
}

/// The config file the Nix side writes, with the flags a template build
/// adds; the plan is shown on stderr and the summary on stdout.
#[test]
fn config_file_and_flags_together() {
    let f = Fixture::new();
    let config = f.path("install.toml");
    fs::write(
        &config,
        format!(
            "bundle = {:?}\nslot_size = \"16M\"\nesp_size = \"40M\"\nbootloader = \"systemd-boot\"\n\
             wipe = false\nallow_removable = false\ntrusted_key = [{:?}]\ncountdown = 1\n",
            f.path("bundle"),
            f.key
        ),
    )
    .unwrap();
    let out = run_ok(
        Command::new(BIN)
            .arg("--config")
            .arg(&config)
            .arg("--file")
            .arg(f.path("disk.raw"))
            .args(["--size", "192M"]),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("installing version 3 \"cli test\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("bootloader: systemd-boot (UEFI)"),
        "{stderr}"
    );
    assert!(stderr.contains("writing in 1 s"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("bootloader: systemd-boot (UEFI)"));
    check_disk(&f.path("disk.raw"));
}

/// `--json`: the plan alone on stdout, as JSON; the summary on stderr.
#[test]
fn the_plan_in_json() {
    let f = Fixture::new();
    let mut args = f.flags("disk.raw");
    args.push("--json".to_owned());
    let out = run_ok(Command::new(BIN).args(&args));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["version"], 3, "{plan}");
    assert_eq!(plan["label"], "cli test", "{plan}");
    assert_eq!(plan["bundle"], f.path("bundle").to_str().unwrap(), "{plan}");
    assert_eq!(
        plan["target"],
        f.path("disk.raw").to_str().unwrap(),
        "{plan}"
    );
    assert!(plan["selection"].is_null(), "{plan}");
    assert_eq!(plan["erases"], false, "{plan}");
    assert_eq!(plan["image_checked_first"], false, "{plan}");
    assert_eq!(plan["bootloader"], "grub (BIOS and UEFI)", "{plan}");
    assert_eq!(plan["arch"], "x86_64", "{plan}");
    assert_eq!(plan["disk_size"], 192 << 20, "{plan}");
    assert_eq!(plan["sector_size"], 512, "{plan}");
    let names: Vec<&str> = plan["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["abnix-bios", "abnix-esp", "abnix-a", "abnix-b", "abnix-rw"],
        "{plan}"
    );
    assert_eq!(plan["partitions"][2]["size"], 16 << 20, "{plan}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("installed version 3 \"cli test\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains("installing version 3"),
        "the text plan: {stderr}"
    );
    check_disk(&f.path("disk.raw"));
}

/// Refused before writing: exit 1, no file. Failed while writing (an image
/// object corrupted after it was signed, found while streaming it): exit 3
/// and the partition table gone.
#[test]
fn exit_status_says_whether_anything_was_written() {
    let f = Fixture::new();
    let mut refused = f.flags("refused.raw");
    let key = refused.iter().position(|a| a == "--trusted-key").unwrap() + 1;
    refused[key] = SecretKey::generate("stranger")
        .unwrap()
        .public()
        .to_string();
    let out = install(&refused);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("abnix-install: error: the bundle: "),
        "{stderr}"
    );
    assert!(stderr.contains("does not verify"), "{stderr}");
    assert!(!f.path("refused.raw").exists());

    // An ESP below FAT32's minimum is found before anything is written.
    let mut small_esp = f.flags("small-esp.raw");
    let esp = small_esp.iter().position(|a| a == "--esp-size").unwrap() + 1;
    small_esp[esp] = "16M".to_owned();
    let out = install(&small_esp);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "abnix-install: error: an ESP of 16.0 MiB cannot hold FAT32 on 512-byte sectors"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("pass --esp-size 33M or more"), "{stderr}");
    assert!(!f.path("small-esp.raw").exists());

    corrupt_image(&f);
    let out = install(&f.flags("failed.raw"));
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .contains("the target is blank: the image is verified chunk by chunk as it is written"),
        "{stderr}"
    );
    assert!(stderr.contains("writing slot a: "), "{stderr}");
    assert!(
        stderr.contains("The partition table was wiped, so the disk cannot boot half-installed"),
        "{stderr}"
    );
    let mut disk = fs::File::open(f.path("failed.raw")).unwrap();
    assert!(Gpt::read(&mut disk, 512).is_err());
}

/// The bundle's object whose name ends in `suffix`.
fn object(f: &Fixture, suffix: &str) -> PathBuf {
    fs::read_dir(f.path("bundle"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .unwrap()
}

/// Flips a byte in the middle of the last chunk's frame in the bundle's
/// image object (not the first chunk, which `prepare` reads for the
/// superblock): the signed meta and index still verify.
fn corrupt_image(f: &Fixture) {
    let index = Index::parse(&fs::read(object(f, ".index")).unwrap()).unwrap();
    let last = index.chunks.last().unwrap();
    assert!(index.chunks.len() > 1, "the image has several chunks");
    let image = object(f, ".img.zst");
    let mut bytes = fs::read(&image).unwrap();
    bytes[(last.compressed_offset + u64::from(last.compressed_len) / 2) as usize] ^= 0x55;
    fs::write(&image, bytes).unwrap();
}

/// An earlier installation is not written over without --wipe (exit 1,
/// named). With --wipe, a corrupt image object is found before the first
/// write: exit 1, and the disk is byte for byte what it was (its table,
/// slot a, everything), so the earlier installation still boots.
#[test]
fn a_corrupt_image_leaves_an_earlier_installation_as_it_was() {
    let f = Fixture::new();
    let out = run_ok(Command::new(BIN).args(f.flags("disk.raw")));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the target is blank"),
        "the first installation skips the check"
    );
    let before = fs::read(f.path("disk.raw")).unwrap();

    let out = install(&f.flags("disk.raw"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("disk.raw holds an earlier abnix installation (its abnix-rw holds that machine's /var, /home and /root): pass --wipe to erase it"),
        "{stderr}"
    );

    corrupt_image(&f);
    let mut wipe = f.flags("disk.raw");
    wipe.push("--wipe".to_owned());
    let out = install(&wipe);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "the whole image is verified before the first write, so a bad bundle leaves the disk as it is"
        ),
        "the plan says so: {stderr}"
    );
    assert!(
        stderr.contains(
            "verifying the whole image before the first write: the target holds an earlier abnix installation"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("abnix-install: error: the bundle's image object does not verify, nothing was written: chunk "),
        "{stderr}"
    );
    assert!(
        fs::read(f.path("disk.raw")).unwrap() == before,
        "the disk changed"
    );
    check_disk(&f.path("disk.raw"));
}

/// `--generate-docs` writes the man page, naming every flag `--help`
/// lists, and the completions, which know every flag too.
#[test]
fn generated_docs_name_every_flag() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let help = String::from_utf8(help.stdout).unwrap();
    let flags: Vec<&str> = help
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("--"))
        .map(|flag| flag.trim_end_matches([',', '.']))
        .filter(|flag| !flag.is_empty() && flag.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect();
    assert!(
        flags.contains(&"slot-size") && flags.len() >= 20,
        "{flags:?}"
    );
    assert!(!flags.contains(&"generate-docs"), "hidden");

    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("--generate-docs")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = fs::read_to_string(dir.path().join("abnix-install.8"))
        .unwrap()
        .replace("\\-", "-");
    assert!(page.contains(".TH abnix-install 8 "), "{page}");
    for shell_file in ["abnix-install.bash", "_abnix-install", "abnix-install.fish"] {
        let script = fs::read_to_string(dir.path().join(shell_file)).unwrap();
        for flag in &flags {
            assert!(script.contains(flag), "{shell_file} lacks --{flag}");
        }
    }
    for flag in &flags {
        assert!(
            page.contains(&format!("--{flag}")),
            "abnix-install.8 lacks --{flag}"
        );
    }
    // Only alone: beside an installation's flags it is an error (exit 2).
    let mixed = Command::new(BIN)
        .arg("--generate-docs")
        .arg(dir.path())
        .args(["--auto", "--slot-size", "1G"])
        .output()
        .unwrap();
    assert_eq!(mixed.status.code(), Some(2));
}
