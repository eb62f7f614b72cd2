//! The installer at machine level (issue 4): what it writes boots through
//! real firmware and real bootloaders, for x86_64 machines and, written on
//! this x86_64 machine with `--arch aarch64`, for aarch64 ones; a template
//! written to a disk twice its size grows `abnix-rw` on its first boot. The
//! installer inside a guest (`--auto` skipping its own medium, powering
//! off) is the install scenario of `tests/scenarios.rs`.
//!
//! Times are printed: run with `-- --nocapture` to see them.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use abnix_formats::gpt::Gpt;
use abnix_formats::layout::{self, Arch, Layout, LayoutConfig, MIB};
use abnix_formats::sign::SecretKey;
use abnix_systest::bundle::pack_fixture;
use abnix_systest::kernel::Kernel;
use abnix_systest::version::{AfterCommands, Behaviour, FixtureVersion, VersionSpec};
use abnix_systest::vm::{Boot, Firmware, Machine, MachineSpec, OnReboot, Vm};
use abnix_systest::{paths, workspace};
use abnix_updater::grow::Ext4Size;

/// Generous for TCG on a loaded 2-core machine: firmware, GRUB or
/// systemd-boot, then the kernel.
const BOOT: Duration = Duration::from_secs(180);
const STEP: Duration = Duration::from_secs(60);
const SLOT_SIZE: &str = "48M";
const ESP_SIZE: &str = "64M";
const AARCH64_ESP_SIZE: &str = "160M";
const DISK_SIZE: u64 = 256 * MIB;

/// A fixture version's signed bundle and the key that signed it.
struct Version {
    bundle: PathBuf,
    key: String,
}

/// `spec` built for machines of `arch` and packed.
fn version(dir: &Path, spec: &VersionSpec, arch: Arch) -> Version {
    let kernel = Kernel::debian_cloud(arch).unwrap();
    let fixture = FixtureVersion::build(spec, &kernel, &dir.join("version")).unwrap();
    let secret = SecretKey::generate("systest").unwrap();
    let bundle = dir.join("medium").join("bundle");
    pack_fixture(&fixture, &secret, &bundle).unwrap();
    Version {
        bundle,
        key: secret.public().to_string(),
    }
}

/// A healthy host that shows abnix-rw's directories (mounted at /rw, as a
/// host mounts it) and powers off.
fn healthy_spec(number: u64) -> VersionSpec {
    VersionSpec::new(
        number,
        Behaviour::healthy(["ls -d /rw/var/lib/abnix /rw/home /rw/root"]),
    )
}

fn installer() -> PathBuf {
    workspace::release_binary("abnix-installer", "abnix-install").unwrap()
}

/// Runs abnix-install on the host into the file `disk` of `size` bytes,
/// with an ESP of `esp_size`.
fn install_file(
    v: &Version,
    disk: &Path,
    (size, esp_size): (u64, &str),
    bootloader: &str,
    extra: &[&str],
) {
    let started = Instant::now();
    let out = Command::new(installer())
        .arg("--bundle")
        .arg(&v.bundle)
        .arg("--file")
        .arg(disk)
        .args(["--size", &size.to_string()])
        .args(["--slot-size", SLOT_SIZE, "--esp-size", esp_size])
        .args(["--bootloader", bootloader, "--trusted-key", &v.key])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "abnix-install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!(
        "abnix-install --file ({bootloader}): {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// Boots the disk of `spec` through the firmware and checks the host comes
/// up from slot a of its version, with abnix-rw mounted and laid out.
fn boots_slot_a(dir: &Path, name: &str, spec: MachineSpec, version: u64) {
    let mut machine = Machine::new(name, spec, dir).unwrap();
    let mut vm = machine.start(&Boot::Firmware, OnReboot::Exit).unwrap();
    let marker = vm
        .expect(&format!("ABNIX-FIXTURE version={version}"), BOOT)
        .unwrap();
    assert_eq!(marker.field("slot"), Some("a"), "{marker}");
    println!("{name}: booted slot a in {:.1} s", marker.at.as_secs_f64());
    vm.expect("ABNIX-FIXTURE rw=/dev/vda5", STEP).unwrap();
    expect_success(&mut vm, 1);
    assert!(vm.wait_exit(STEP).unwrap().success());
}

fn expect_success(vm: &mut Vm, number: usize) {
    let done = vm.expect(&format!("command={number} exit="), STEP).unwrap();
    assert_eq!(done.field("exit"), Some("0"), "{done}");
}

/// A disk-image file written by abnix-install boots: GRUB through SeaBIOS
/// (the MBR boot code and core.img) and through OVMF (its EFI image), and
/// systemd-boot through OVMF.
#[test]
fn written_files_boot_through_grub_and_systemd_boot() {
    let dir = paths::run_dir("install-file-boots").unwrap();
    let v = version(&dir, &healthy_spec(1), Arch::native());
    let grub = dir.join("grub.raw");
    install_file(&v, &grub, (DISK_SIZE, ESP_SIZE), "grub", &[]);
    let machine = |firmware, disk: &Path| MachineSpec::new(firmware).disk(disk);
    boots_slot_a(&dir, "grub-seabios", machine(Firmware::SeaBios, &grub), 1);
    boots_slot_a(&dir, "grub-ovmf", machine(Firmware::Ovmf, &grub), 1);

    let sdboot = dir.join("systemd-boot.raw");
    install_file(&v, &sdboot, (DISK_SIZE, ESP_SIZE), "systemd-boot", &[]);
    boots_slot_a(
        &dir,
        "systemd-boot-ovmf",
        machine(Firmware::Ovmf, &sdboot),
        1,
    );
}

/// Disk-image files written here with `--arch aarch64` boot an aarch64
/// machine (qemu-system-aarch64, AAVMF) through GRUB (arm64-efi) and
/// through systemd-boot (systemd-bootaa64.efi), both from
/// `EFI/BOOT/BOOTAA64.EFI`: the host (Debian's arm64 kernel and busybox)
/// finds its root in slot a by `root=UUID=` and mounts abnix-rw by its GPT
/// name. The project's binaries do not run there (they cannot be
/// cross-compiled here: `src/platform.rs`), so this proves the layout and
/// the bootloaders, not the updater.
#[test]
fn aarch64_files_boot_through_grub_and_systemd_boot() {
    let dir = paths::run_dir("install-file-boots-aarch64").unwrap();
    let v = version(&dir, &healthy_spec(1), Arch::Aarch64);
    for bootloader in ["grub", "systemd-boot"] {
        let disk = dir.join(format!("{bootloader}.raw"));
        // arm64's kernel is an uncompressed Image (27 MiB): two slots'
        // boot files need a bigger ESP.
        install_file(
            &v,
            &disk,
            (2 * DISK_SIZE, AARCH64_ESP_SIZE),
            bootloader,
            &["--arch", "aarch64"],
        );
        let spec = MachineSpec {
            // AAVMF would try the network before the disk.
            network: false,
            ..MachineSpec::new(Firmware::Ovmf)
                .arch(Arch::Aarch64)
                .disk(&disk)
        };
        boots_slot_a(&dir, &format!("{bootloader}-aavmf"), spec, 1);
    }
}

/// A template (an image file built without root) written onto a disk twice
/// its size boots; `abnix-update grow` moves the backup GPT, extends
/// abnix-rw and grows its filesystem online; a second run finds nothing to
/// do. The host prints the filesystem's size with dumpe2fs.
#[test]
fn a_template_on_a_bigger_disk_grows_on_boot() {
    let dir = paths::run_dir("install-template-grows").unwrap();
    let mut spec = VersionSpec::new(
        3,
        Behaviour::Healthy {
            commands: vec![
                "abnix-update grow".to_owned(),
                "abnix-update grow".to_owned(),
                "dumpe2fs -h /dev/vda5 2>/dev/null | grep -E '^Block (count|size):'".to_owned(),
            ],
            then: AfterCommands::PowerOff,
        },
    );
    spec.binaries.extend([
        workspace::release_binary("abnix-updater", "abnix-update").unwrap(),
        "/usr/sbin/resize2fs".into(),
        "/usr/sbin/dumpe2fs".into(),
    ]);
    let v = version(&dir, &spec, Arch::native());
    let template = dir.join("template.raw");
    install_file(
        &v,
        &template,
        (DISK_SIZE, ESP_SIZE),
        "grub",
        &["--seed", &"07".repeat(32)],
    );
    let disk = dir.join("bigger.raw");
    fs::copy(&template, &disk).unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&disk)
        .unwrap()
        .set_len(2 * DISK_SIZE)
        .unwrap();

    let mut machine = Machine::new(
        "grows",
        MachineSpec::new(Firmware::SeaBios).disk(&disk),
        &dir,
    )
    .unwrap();
    let mut vm = machine.start(&Boot::Firmware, OnReboot::Exit).unwrap();
    vm.expect("ABNIX-FIXTURE version=3", BOOT).unwrap();
    vm.expect("ABNIX-FIXTURE rw=/dev/vda5", STEP).unwrap();
    let grew = vm.expect("/dev/vda: abnix-rw grew from", STEP).unwrap();
    assert!(grew.text.contains("; its filesystem from"), "{grew}");
    expect_success(&mut vm, 1);
    let again = vm.expect("/dev/vda: ", STEP).unwrap();
    assert!(
        again
            .text
            .ends_with("/dev/vda: abnix-rw already fills the disk"),
        "{again}"
    );
    expect_success(&mut vm, 2);
    let count = vm.expect("Block count:", STEP).unwrap();
    let size = vm.expect("Block size:", STEP).unwrap();
    expect_success(&mut vm, 3);
    assert!(vm.wait_exit(STEP).unwrap().success());

    let number = |line: &str| -> u64 { line.rsplit(' ').next().unwrap().parse().unwrap() };
    let fs_bytes = number(&count.text) * number(&size.text);
    let gpt = Gpt::read(&mut fs::File::open(&disk).unwrap(), 512).unwrap();
    let grown = Layout::from_gpt(&gpt, 2 * DISK_SIZE).unwrap();
    let config = LayoutConfig {
        slot_size: 48 * MIB,
        esp_size: 64 * MIB,
        ..LayoutConfig::new(48 * MIB)
    };
    assert_eq!(grown, layout::compute(2 * DISK_SIZE, 512, &config).unwrap());
    assert_eq!(gpt.backup_lba, 2 * DISK_SIZE / 512 - 1);
    // The on-disk superblock may still wait for its journal checkpoint;
    // the guest's dumpe2fs read the live one.
    let template_fs =
        Ext4Size::read(&mut fs::File::open(&template).unwrap(), grown.rw.start).unwrap();
    assert!(fs_bytes > template_fs.bytes(), "{fs_bytes} bytes");
    assert!(
        grown.rw.size - fs_bytes < template_fs.group_bytes(),
        "abnix-rw's filesystem ({fs_bytes} bytes) fills its partition ({} bytes)",
        grown.rw.size
    );
}
